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
#include <mutex>
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

/// A subsystem that lives as long as the runtime (the actor system). Its
/// stop() runs first thing in shutdown, before queued tasks are dropped.
class runtime_service {
public:
  virtual ~runtime_service() = default;
  virtual void stop() = 0;
  /// Services stop in this order (then in creation order).
  virtual int stop_rank() const noexcept { return 0; }
};

/// Put around every CAF spawn from a thread that is not CAF's own. CAF 0.17
/// leaves a counted reference to the system's logger in a thread-local of
/// each thread that spawns an actor, and ~actor_system waits for every such
/// reference: a user thread that spawned (init, first actor, first process
/// task) would make shutdown() from any other thread hang. The scope clears
/// the reference again if the thread had none before.
class caf_spawn_scope {
public:
  caf_spawn_scope() noexcept;
  ~caf_spawn_scope();
  caf_spawn_scope(const caf_spawn_scope&) = delete;
  caf_spawn_scope& operator=(const caf_spawn_scope&) = delete;

private:
  bool had_logger_;
};

class runtime final : public fiber_host {
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

  /// `nested`: submitted from a task (also true when called from one);
  /// nested tasks are scheduled depth-first.
  void submit(task_base* t, bool nested = false);
  void cancel(task_base* t, bool force = false);
  /// Worker processes: a task a worker ran (or could not run) is done;
  /// publishes its results or `err` and gives back its resources. With
  /// `pop`, returns the next task that can start (its resources taken),
  /// for the caller to dispatch, or null.
  task_base* finish_remote(task_base* t, std::exception_ptr err, bool pop = false);
  /// Like finish_remote, but `t`'s resources pass on to the task that runs
  /// after it on the same worker (scheduler::take_follower) instead of
  /// going back.
  void finish_remote_passing_resources(task_base* t, std::exception_ptr err);
  bool stopping() const noexcept { return stopping_.load(std::memory_order_acquire); }
  const node_resources& node() const noexcept { return sched_.node(); }

  /// Suspends a task's fiber until `b` is notified (or its deadline
  /// passes), giving back the task's CPUs meanwhile.
  void block(fiber& f, blocker& b, std::uint32_t seen_epoch, std::int64_t deadline_ns) override;
  /// Notifies `b` once `deadline_ns` (steady clock) has passed.
  void schedule_timeout(blocker& b, std::int64_t deadline_ns);

  /// The CAF actor system everything runs on.
  caf::actor_system& caf_system() noexcept { return *caf_; }
  scheduler& sched() noexcept { return sched_; }
  const config& cfg() const noexcept { return cfg_; }
  /// config::workers == processes: tasks and actors run in worker processes.
  bool processes() const noexcept { return processes_; }

  /// The service stored under `key`, made by `make()` on first use.
  /// Thread-safe. Throws runtime_shutdown_error while stopping.
  runtime_service& service(const void* key, runtime_service* (*make)(runtime&));
  /// Queues a blocked task to go on.
  void resume(task_base* t) { sched_.push_resume(t); }

  /// Runs tasks until none is left that can start, then parks. Called by
  /// the executor actor's behavior.
  void run_executor(executor& ex);

  /// Human-readable task name: task_options::name or the function symbol.
  static std::string task_name(const task_base& t);

private:
  void deps_ready(task_base* t);
  /// Queues a task whose arguments are ready; `dispatch_here` (worker
  /// processes): also pops and dispatches what can start now, from here.
  void enqueue(task_base* t, bool dispatch_here = false);
  /// Sends `t` (resources held) to a worker; fails it if the node cannot start.
  void dispatch_remote(task_base* t);
  void fail(task_base* t, std::exception_ptr e);
  void execute(task_base* t);
  void wake_executor(void* ex);

  static void fiber_body(fiber& f);

  config cfg_;
  scheduler sched_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::int64_t> live_tasks_{0};
  std::unique_ptr<caf::actor_system_config> caf_cfg_;
  std::unique_ptr<caf::actor_system> caf_;
  std::vector<std::unique_ptr<executor>> executors_;
  std::unique_ptr<caf::actor> clock_;
  bool processes_ = false; ///< config::workers == processes
  std::mutex services_mtx_;
  std::vector<std::pair<const void*, std::unique_ptr<runtime_service>>> services_;
  friend struct dep_waiter;
};

/// The task running on this thread's current fiber, or null (also on an
/// actor call's fiber).
task_base* current_task() noexcept;
/// The fiber this thread is running, or null (not inside a task).
fiber* current_fiber() noexcept;
/// For fiber hosts other than the executors: the fiber about to run (null after).
void set_current_fiber(fiber* f) noexcept;

/// A demangled C++ type name.
std::string demangled(const char* mangled);
/// The failure as callers of task `name`'s result see it (a task_error).
std::exception_ptr to_task_error(const std::string& name, const std::exception_ptr& err);
/// The demangled name of the function whose code starts at `code`, without
/// its parameter list; "" if unknown.
std::string symbol_name(const void* code);

} // namespace weft::detail
