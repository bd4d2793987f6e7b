// expect: cannot take a non-const reference parameter
#include <weft/weft.hpp>

void bump(int& x) { ++x; }

void make() { weft::remote(bump); }
