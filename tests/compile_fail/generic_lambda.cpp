// expect: needs a function or a captureless, non-generic lambda
#include <weft/weft.hpp>

void make() {
  weft::remote([](auto x) { return x; });
}
