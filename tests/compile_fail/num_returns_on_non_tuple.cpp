// expect: num_returns<N>.. needs a function that returns a std::tuple or std::pair
#include <weft/weft.hpp>

int one(int x) { return x; }

void make() { weft::remote(one).num_returns<2>(); }
