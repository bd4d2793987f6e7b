// Remote function basics: a call returns an object_ref at once; get() waits for the value.
#include <weft/weft.hpp>

#include <cstdio>

int increment(int n) { return n + 1; }

int main(int argc, char** argv) {
  weft::init(argc, argv);
  const auto increment_r = weft::remote(increment);

  weft::object_ref<int> x = increment_r.remote(1); // returns at once
  std::printf("increment(1) = %d\n", weft::get(x));

  // Refs are arguments too: the second task waits for the first's value.
  auto y = increment_r.remote(increment_r.remote(41));
  std::printf("increment(increment(41)) = %d\n", weft::get(y));

  weft::shutdown();
}
