// Built by scripts/weft test against the installed tree: proves the installed
// headers, libraries and weftConfig.cmake are enough for a user.
#include <weft/weft.hpp>

#include <cstdio>

int square(int x) { return x * x; }

int main() {
  weft::init({.num_cpus = 1});
  int v = weft::get(weft::remote(square).remote(7));
  weft::shutdown();
  if (v != 49) {
    std::fprintf(stderr, "installed weft computed square(7) = %d\n", v);
    return 1;
  }
  std::puts("installed weft works: square(7) = 49");
  return 0;
}
