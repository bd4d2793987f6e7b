// expect: this argument of .remote..... does not convert to the remote function's parameter type
#include <weft/weft.hpp>

int increment(int x) { return x + 1; }

void submit() {
  const char* text = "1";
  weft::remote(increment).remote(text);
}
