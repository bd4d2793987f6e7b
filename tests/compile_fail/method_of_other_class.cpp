// expect: this method belongs to another class
#include <weft/weft.hpp>

struct counter {
  int increment() { return 1; }
};
struct other {
  int increment() { return 2; }
};

int main() {
  auto h = weft::remote<counter>().remote();
  h.task(&other::increment).remote();
}
