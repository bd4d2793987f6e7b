// expect: this argument of .remote..... does not convert to the remote function's parameter type
#include <string>
#include <weft/weft.hpp>

struct counter {
  int add(int n) { return n; }
};

int main() {
  auto h = weft::remote<counter>().remote();
  h.task(&counter::add).remote(std::string("one"));
}
