// Shared helpers for weft's tests.
#pragma once

#include <weft/weft.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
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

/// Ends the test program with a message if it is still armed after
/// `limit`: a test that would hang fails instead (Catch cannot report from
/// another thread, so it says why on stderr and exits with status 1).
class watchdog {
public:
  watchdog(std::chrono::seconds limit, std::string what) :
    what_(std::move(what)),
    thread_([this, limit] {
      std::unique_lock<std::mutex> lock(mtx_);
      if (!cv_.wait_for(lock, limit, [this] { return disarmed_; })) {
        std::fprintf(stderr, "\nFAILED: %s did not return within %lld s\n", what_.c_str(),
                     static_cast<long long>(limit.count()));
        std::fflush(nullptr);
        std::_Exit(1);
      }
    }) {}
  ~watchdog() {
    {
      std::lock_guard<std::mutex> lock(mtx_);
      disarmed_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  watchdog(const watchdog&) = delete;
  watchdog& operator=(const watchdog&) = delete;

private:
  std::string what_;
  std::mutex mtx_;
  std::condition_variable cv_;
  bool disarmed_ = false;
  std::thread thread_;
};

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

/// The what() of the E that `f` throws, or "<no exception thrown>".
template <class E, class F>
std::string what_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "<no exception thrown>";
}

/// A gate that tasks block on until the test opens it.
inline std::atomic<bool> gate_open{false};

/// Blocks (a task) until the gate opens; gives up after a generous deadline
/// or when weft shuts down, so no test can hang for good.
inline void wait_for_gate() {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!gate_open.load() && !weft::is_cancelled() && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

/// A task body: returns `x` once the gate opens.
inline int gate_value(int x) {
  wait_for_gate();
  return x;
}

/// The what() of the actor_died_error that get(ref) throws (within `bound`).
template <class T>
std::string died_what(const weft::object_ref<T>& ref) {
  return what_of<weft::actor_died_error>([&] { weft::get(ref, bound); });
}

/// Closes the gate now and opens it when the test case ends, even on a
/// failed REQUIRE, so shutdown never waits on a task blocked at the gate.
/// Declare it after the runtime_guard.
struct open_gate_at_exit {
  open_gate_at_exit() { gate_open = false; }
  ~open_gate_at_exit() { gate_open = true; }
  open_gate_at_exit(const open_gate_at_exit&) = delete;
  open_gate_at_exit& operator=(const open_gate_at_exit&) = delete;
};

} // namespace weft_test
