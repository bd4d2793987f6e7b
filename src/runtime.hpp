// Private: the embedded local runtime. One instance exists between
// weft::init() and weft::shutdown(); both libraries stand on it.
//
// Executors are CAF event-based actors on CAF's work-sharing scheduler (one
// per logical CPU). Each runs tasks on pooled fibers: a task that blocks in
// get() yields its fiber, gives back its CPUs and frees the executor for
// other tasks; when the awaited objects are ready it is queued to resume.
// Futures complete through the object cells, never through CAF requests.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "blocking.hpp"
#include "fiber.hpp"
#include "scheduler.hpp"
#include "weft/config.hpp"
#include "weft/detail/task.hpp"

namespace caf {
class actor_system;
class actor_system_config;
class actor;
} // namespace caf

namespace weft::detail {

struct executor;

class runtime {
public:
  explicit runtime(const config& cfg);
  ~runtime();
  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;

  /// The running runtime, or null. Valid while the caller is inside a weft
  /// call that races with no shutdown.
  static runtime* current() noexcept;
  static void start(const config& cfg);
  static void stop();

  void submit(task_base* t);
  void cancel(task_base* t);
  bool stopping() const noexcept { return stopping_.load(std::memory_order_acquire); }
  const node_resources& node() const noexcept { return sched_.node(); }

  /// Suspends the current task's fiber until `b` is notified (or its
  /// deadline passes), giving back the task's CPUs meanwhile.
  void block_current_task(blocker& b, std::uint32_t seen_epoch, std::int64_t deadline_ns);
  /// Queues a blocked task to go on.
  void resume(task_base* t) { sched_.push_resume(t); }

  /// Runs tasks until none is left that can start, then parks. Called by
  /// the executor actor's behavior.
  void run_executor(executor& ex);

  /// Human-readable task name: task_options::name or the function symbol.
  static std::string task_name(const task_base& t);

private:
  void deps_ready(task_base* t);
  void enqueue(task_base* t);
  void fail(task_base* t, std::exception_ptr e);
  void execute(task_base* t);
  void wake_executor(void* ex);
  void schedule_timeout(blocker& b, std::int64_t deadline_ns);

  static void fiber_body(fiber& f);

  config cfg_;
  scheduler sched_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::int64_t> live_tasks_{0};
  std::unique_ptr<caf::actor_system_config> caf_cfg_;
  std::unique_ptr<caf::actor_system> caf_;
  std::vector<std::unique_ptr<executor>> executors_;
  std::unique_ptr<caf::actor> clock_;
  friend struct dep_waiter;
};

/// The task running on this thread's current fiber, or null.
task_base* current_task() noexcept;
/// The fiber this thread is running, or null (not inside a task).
fiber* current_fiber() noexcept;

} // namespace weft::detail
