// expect: num_returns<N>.. must equal the number of elements of the returned tuple
#include <string>
#include <tuple>

#include <weft/weft.hpp>

std::tuple<int, std::string> two(int x) { return {x, "x"}; }

void make() { weft::remote(two).num_returns<3>(); }
