// Shared helpers for weft's tests.
#pragma once

#include <weft/weft.hpp>

#include <chrono>
#include <thread>

namespace weft_test {

/// Starts weft for one test case and shuts it down at scope exit, so no
/// state leaks from one case into the next.
struct runtime_guard {
  explicit runtime_guard(const weft::config& cfg = {.num_cpus = 2}) { weft::init(cfg); }
  ~runtime_guard() { weft::shutdown(); }
  runtime_guard(const runtime_guard&) = delete;
  runtime_guard& operator=(const runtime_guard&) = delete;
};

/// How long a test waits for something that should happen at once, before
/// calling it a failure instead of hanging (generous: 2 noisy cores).
inline constexpr auto bound = std::chrono::seconds(20);

/// Polls `pred` every millisecond until it holds or `limit` passes.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= until)
      return pred();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

} // namespace weft_test
