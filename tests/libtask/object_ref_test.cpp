#include <catch2/catch.hpp>

#include "weft_test.hpp"

namespace {
int add(int a, int b) { return a + b; }
} // namespace

TEST_CASE("a remote call returns a ref whose get gives the value") {
  weft_test::runtime_guard rt;
  const auto add_r = weft::remote(add);
  auto r = add_r.remote(1, 2);
  CHECK(weft::get(r) == 3);
}
