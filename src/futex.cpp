#include "futex.hpp"

#include <chrono>
#include <climits>
#include <ctime>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace weft::detail {

std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
    .count();
}

namespace {

void wait_on(std::atomic<std::uint32_t>& word, std::uint32_t expected, std::int64_t deadline_ns, int op) noexcept {
  timespec ts{};
  timespec* tsp = nullptr;
  if (deadline_ns != 0) {
    std::int64_t left = deadline_ns - now_ns();
    if (left <= 0)
      return;
    ts.tv_sec = static_cast<time_t>(left / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(left % 1'000'000'000);
    tsp = &ts;
  }
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), op, expected, tsp, nullptr, 0);
}

} // namespace

void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, std::int64_t deadline_ns) noexcept {
  wait_on(word, expected, deadline_ns, FUTEX_WAIT_PRIVATE);
}

void futex_wake_all(std::atomic<std::uint32_t>& word) noexcept {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}

void futex_wait_shared(std::atomic<std::uint32_t>& word, std::uint32_t expected, std::int64_t deadline_ns) noexcept {
  wait_on(word, expected, deadline_ns, FUTEX_WAIT);
}

void futex_wake_shared(std::atomic<std::uint32_t>& word) noexcept {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

} // namespace weft::detail
