// expect: put needs a value, not a raw pointer
#include <weft/weft.hpp>

void store(int* p) { weft::put(p); }
