// expect: must return by value .not a reference or pointer.
#include <weft/weft.hpp>

int g_value = 0;
const int& value() { return g_value; }

void make() { weft::remote(value); }
