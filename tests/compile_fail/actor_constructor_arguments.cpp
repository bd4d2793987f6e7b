// expect: T cannot be constructed from these arguments
#include <string>
#include <weft/weft.hpp>

struct counter {
  explicit counter(int start) : value(start) {}
  int value;
};

int main() { weft::remote<counter>().remote(std::string("ten")); }
