// expect: cannot take a raw pointer parameter
#include <weft/weft.hpp>

int length(const char* s) { return s ? 1 : 0; }

void make() { weft::remote(length); }
