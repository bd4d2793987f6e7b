// Private: thin wrappers over Linux futexes and a CPU pause, used to park
// OS threads on a 32-bit word.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>

namespace weft::detail {

/// Sleeps while `*word == expected`, at most until `deadline_ns` on the
/// steady clock (0: no limit). May return spuriously.
void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, std::int64_t deadline_ns) noexcept;
/// Wakes every thread sleeping on `word`.
void futex_wake_all(std::atomic<std::uint32_t>& word) noexcept;
/// The same for a word in memory shared between processes (MAP_SHARED).
void futex_wait_shared(std::atomic<std::uint32_t>& word, std::uint32_t expected, std::int64_t deadline_ns) noexcept;
void futex_wake_shared(std::atomic<std::uint32_t>& word) noexcept;

/// Current steady-clock time in nanoseconds.
std::int64_t now_ns() noexcept;

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

/// A mutex for critical sections of a few hundred nanoseconds: it spins a
/// little before it sleeps, so a brief overlap between two threads costs no
/// context switch (a plain std::mutex sleeps at the first contention).
class spin_then_block_mutex {
public:
  void lock() noexcept {
    for (int i = 0; i < 256; ++i) {
      if (!locked_.load(std::memory_order_relaxed) && m_.try_lock()) {
        locked_.store(true, std::memory_order_relaxed);
        return;
      }
      cpu_relax();
    }
    m_.lock();
    locked_.store(true, std::memory_order_relaxed);
  }
  bool try_lock() noexcept {
    if (!m_.try_lock())
      return false;
    locked_.store(true, std::memory_order_relaxed);
    return true;
  }
  void unlock() noexcept {
    locked_.store(false, std::memory_order_relaxed);
    m_.unlock();
  }

private:
  std::mutex m_;
  std::atomic<bool> locked_{false}; ///< hint only: spin on a read, not on try_lock
};

/// How long a thread spins on a word before it parks: a cross-core wake-up
/// costs tens of microseconds, a spin that catches the answer ~1 µs.
inline constexpr std::int64_t spin_before_park_ns = 50'000;

} // namespace weft::detail
