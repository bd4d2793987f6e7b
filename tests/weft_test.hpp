// Shared helpers for weft's tests.
#pragma once

#include <weft/weft.hpp>

namespace weft_test {

/// Starts weft for one test case and shuts it down at scope exit, so no
/// state leaks from one case into the next.
struct runtime_guard {
  explicit runtime_guard(const weft::config& cfg = {.num_cpus = 2}) { weft::init(cfg); }
  ~runtime_guard() { weft::shutdown(); }
  runtime_guard(const runtime_guard&) = delete;
  runtime_guard& operator=(const runtime_guard&) = delete;
};

} // namespace weft_test
