// expect: wrong number of arguments in .remote
#include <weft/weft.hpp>

int add(int a, int b) { return a + b; }

void submit() { weft::remote(add).remote(1); }
