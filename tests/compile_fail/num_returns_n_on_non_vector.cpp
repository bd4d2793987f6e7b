// expect: num_returns.n. needs a function that returns a std::vector<T>
#include <weft/weft.hpp>

#include <tuple>

std::tuple<int, int> pair_of(int x) { return {x, x}; }

void make(int n) { weft::remote(pair_of).num_returns(n); }
