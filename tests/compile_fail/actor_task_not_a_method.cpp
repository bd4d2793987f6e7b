// expect: needs a pointer to a member function of T
#include <weft/weft.hpp>

struct counter {
  int value = 0;
};
int free_function() { return 1; }

int main() {
  auto h = weft::remote<counter>().remote();
  h.task(&free_function);
}
