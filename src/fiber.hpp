// Private: stackful fibers (Boost.Context) that tasks run on, so a task that
// blocks in weft::get() gives its OS thread back instead of holding it.
//
// A fiber is created once and reused: its body loops, running one task per
// resume()/yield() round. An executor calls resume() from its own stack; the
// fiber calls yield() to go back to whichever executor resumed it last. A
// blocked fiber may be resumed later by another executor on another thread,
// so code on a fiber must not keep thread-local addresses across yield().
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <boost/context/fiber.hpp>

namespace weft::detail {

class blocker;
class fiber;

/// Whoever runs code on a fiber (the task executors, an actor) decides how
/// a fiber that blocks in get() is suspended and later resumed.
class fiber_host {
public:
  /// Suspends `f` (the current fiber) until `b` is notified past `seen` or
  /// `deadline_ns` passes. May throw (an actor being killed unwinds).
  virtual void block(fiber& f, blocker& b, std::uint32_t seen, std::int64_t deadline_ns) = 0;

protected:
  ~fiber_host() = default;
};

class fiber {
public:
  using body_fn = void (*)(fiber&);

  /// A suspended fiber that will run `body` on each resume() until quit().
  fiber(std::size_t stack_size, body_fn body);
  ~fiber();
  fiber(const fiber&) = delete;
  fiber& operator=(const fiber&) = delete;

  /// Executor side: switches to the fiber; returns when it yields.
  void resume();
  /// Fiber side: switches back to the executor that resumed it.
  void yield();
  /// Executor side, on an idle fiber: lets its body loop end and frees it.
  void quit();

  /// What the fiber left for the executor when it last yielded.
  enum class state { idle, running, finished, blocked };
  state why = state::idle;
  /// Opaque slot for the host (the task or actor call being run).
  void* payload = nullptr;
  /// What runs on the fiber: a task (payload is its task_base) or an actor call.
  enum class kind : std::uint8_t { task, actor_call };
  kind what = kind::task;
  fiber_host* host = nullptr;
  /// Set by the host to ask the code on the fiber to stop (is_cancelled()).
  std::atomic<bool> interrupt{false};
  /// GPUs the code on the fiber holds (an actor's), or null.
  const std::vector<int>* gpu_ids = nullptr;
  /// Runs on the executor's stack right after a blocked fiber yields.
  void (*after_yield)(fiber&, void*) = nullptr;
  void* after_yield_arg = nullptr;

  /// Lowest usable address of the fiber's stack, and its usable size.
  const void* stack_low() const noexcept { return stack_bottom_; }
  std::size_t stack_size() const noexcept { return stack_size_; }

private:
  static boost::context::fiber entry(fiber* self, boost::context::fiber&& back);
  void start_switch(bool to_fiber, bool final = false) noexcept;
  void finish_switch(bool on_fiber) noexcept;

  boost::context::fiber self_;
  boost::context::fiber back_;
  body_fn body_;
  bool quit_ = false;
  // Stack bounds, for AddressSanitizer's fiber annotations.
  void* stack_bottom_ = nullptr;
  std::size_t stack_size_ = 0;
  const void* back_bottom_ = nullptr;
  std::size_t back_size_ = 0;
  void* exec_fake_stack_ = nullptr;
  void* fiber_fake_stack_ = nullptr;

  friend struct fiber_stack;
};

} // namespace weft::detail
