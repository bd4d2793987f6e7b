// expect: cannot take a lambda that captures
#include <weft/weft.hpp>

void make() {
  int k = 3;
  weft::remote([k](int x) { return x + k; });
}
