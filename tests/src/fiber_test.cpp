// Fibers (src/fiber.cpp): a body runs once per resume() round, yields back
// to the executor that resumed it, and quit() frees its stack, leaving no
// AddressSanitizer state behind on the freed pages (a later mapping there,
// a spill file say, would otherwise be reported as a stack overflow).
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "src/fiber.hpp"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

namespace {

using weft::detail::fiber;

std::vector<int> g_trace;

/// Records its rounds; yields once in the middle of each, with a local
/// whose address escapes (so the frame has redzones the sanitizer poisons).
void two_step_body(fiber& f) {
  volatile char scratch[64] = {};
  f.payload = const_cast<char*>(scratch);
  g_trace.push_back(1);
  f.yield();
  g_trace.push_back(2);
  scratch[0] = 1;
}

} // namespace

TEST_CASE("a fiber runs its body once per round and yields back to its executor") {
  g_trace.clear();
  fiber f(64 * 1024, &two_step_body);
  f.resume();
  CHECK(g_trace == std::vector<int>{1});
  CHECK(f.why == fiber::state::running); // yielded in the middle
  const auto* local = static_cast<const std::byte*>(f.payload);
  const auto* low = static_cast<const std::byte*>(f.stack_low());
  CHECK(local >= low);
  CHECK(local < low + f.stack_size()); // the body's frame is on the fiber's own stack
  f.resume();
  CHECK(g_trace == std::vector<int>{1, 2});
  CHECK(f.why == fiber::state::finished);
  f.resume(); // another round
  f.resume();
  CHECK(g_trace == std::vector<int>{1, 2, 1, 2});
  f.quit();
}

#if defined(__SANITIZE_ADDRESS__)
TEST_CASE("a freed fiber stack leaves no sanitizer poison on its pages") {
  // The frames that never return (the fiber's entry, Boost's trampoline)
  // poisoned their redzones; munmap alone leaves that shadow behind, and
  // the next mapping at those addresses would read as a stack overflow.
  const void* low = nullptr;
  std::size_t size = 0;
  {
    fiber f(64 * 1024, &two_step_body);
    f.resume(); // blocked in the middle of its body
    low = f.stack_low();
    size = f.stack_size();
    f.resume();
    f.quit();
  }
  CHECK(__asan_region_is_poisoned(const_cast<void*>(low), size) == nullptr);
}
#endif
