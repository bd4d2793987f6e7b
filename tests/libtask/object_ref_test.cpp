#include <catch2/catch.hpp>
#include <weft/weft.hpp>

int add(int a, int b) { return a + b; }

TEST_CASE("a remote call returns a ref whose get gives the value") {
  weft::init({.num_cpus = 2});
  const auto add_r = weft::remote(add);
  auto r = add_r.remote(1, 2);
  CHECK(weft::get(r) == 3);
  weft::shutdown();
}
