// Private: the worker side of worker processes. A worker is the user's
// program started again with WEFT_WORKER_OF set; weft::init() sees that and
// calls run_worker(), which serves tasks until the driver goes away or
// retires it, then ends the process. It never returns into user code.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <typeinfo>

#include "weft/detail/task.hpp"

namespace weft::detail {

/// Fault injection for tests only: when set in a worker (by a task running
/// there), called right before the worker posts a batch of results to the
/// driver, on the thread that posts it.
extern std::atomic<void (*)()> test_before_results_posted;
/// Fault injection for tests only: the same, right after the worker posted
/// a batch of results (before the driver's acknowledgement can arrive).
extern std::atomic<void (*)()> test_after_results_posted;
/// Fault injection for tests only: when set in a worker, called right
/// before the worker posts a batch of submissions (nested tasks, actor
/// calls, kills, monitors, cancels) to the driver, on the posting thread.
extern std::atomic<void (*)()> test_before_submissions_posted;
/// Fault injection for tests only: when set in a worker, called when a
/// value or result message from the driver arrives, before it is read.
extern std::atomic<void (*)()> test_on_driver_value;

/// The actor a worker process hosts, as runtime_context() reports it there.
struct worker_actor_info {
  std::uint64_t id = 0;
  bool restarted = false;
  std::string name;
  std::string ns;
};
/// In a worker hosting an actor, while one of its methods (or its
/// constructor) runs: that actor. Null elsewhere.
const worker_actor_info* worker_current_actor() noexcept;
/// exit_actor() inside an actor method in a worker: the actor ends once
/// the call returns. False outside one.
bool worker_request_actor_exit() noexcept;
/// A coroutine method of the actor in this worker starts (true) or ends a
/// wait at co_await: it lets the actor's next calls run meanwhile. False
/// when the call runs on the lane's thread (it then waits like get).
bool worker_coroutine_awaits(bool begins) noexcept;

class task_base;
/// True in a worker connected to its driver: tasks there may submit tasks
/// and use put/get/wait (their objects live in this worker).
bool worker_client_active() noexcept;
/// Sends a task submitted in this worker to the driver (takes the
/// caller's reference); its results come back to this worker.
void worker_client_submit(task_base* t);
/// Around a wait in get/wait inside a worker's task: the driver lends the
/// task's CPUs to other tasks meanwhile (and starts workers for them).
void worker_client_blocked(bool blocked) noexcept;
/// A call in this worker is about to wait (also a poll that lends no CPUs):
/// the results of the calls before it in its batch go out first.
void worker_client_flush_results() noexcept;

/// A method call made in this worker through a handle the driver lent it
/// (libactor implements it over its typed call).
class worker_actor_call {
public:
  virtual ~worker_actor_call() = default;
  /// Null for an actor class that stays in the driver.
  virtual actor_method_invoker invoker() const noexcept = 0;
  /// For an actor class that stays in the driver: the code that builds the
  /// call there (a driver_call_builder), null when the call cannot cross.
  virtual const void* driver_builder() const noexcept { return nullptr; }
  virtual const void* method_bytes() const noexcept = 0;
  /// A weft::coro method (it gives up its turn at co_await).
  virtual bool is_coroutine() const noexcept { return false; }
  virtual std::span<object_state* const> deps() const noexcept = 0;
  virtual void encode_arguments(std::string& out) const = 0;
  /// Stores (does not publish) the result.
  virtual void decode_result(std::string_view in) = 0;
  virtual object_state& result() noexcept = 0;
};
/// Sends `call` to the driver, which makes it on the actor whose handle
/// the driver holds in the cell `via` (a proxy here) stands for. Its end
/// comes back to this worker's result cell.
void worker_client_call_actor(object_state* via, std::unique_ptr<worker_actor_call> call);

/// An actor created in this worker: what the driver needs to create it.
struct worker_actor_make {
  actor_constructor constructor = nullptr; ///< null: a class that stays in the driver
  /// A class that stays in the driver: what builds its factory there (a
  /// driver_factory_builder), null when its arguments cannot cross.
  const void* driver_factory = nullptr;
  std::string class_name; ///< for errors
  actor_destructor destructor = nullptr;
  const std::type_info& (*type)() noexcept = nullptr; ///< the class's type (same binary there)
  ref_ops_fn handle_ops = nullptr;                    ///< the ref ops of its handles (handle_ops<T>)
  std::function<void(std::string&)> encode_arguments;
  std::string options; ///< encoded actor_options
};
/// Asks the driver to create the actor and waits for the answer, which
/// `reply` decodes (the handle's bytes). Throws what creating it threw in
/// the driver (a name already taken, bad options).
void worker_client_make_actor(const worker_actor_make& m, std::unique_ptr<worker_actor_call> reply);
/// Asks the driver for the live actor named `name` in `ns` of the class
/// `type` names; `reply` decodes the answer (a handle, or none). Throws
/// what looking it up threw there (the actor is of another class).
void worker_client_find_actor(const std::string& name, const std::string& ns, const std::type_info& (*type)() noexcept,
                              ref_ops_fn handle_ops, std::unique_ptr<worker_actor_call> reply);
/// Kills the actor whose handle the driver lent as `via` (after the calls
/// this worker made before).
void worker_client_kill_actor(object_state* via, bool no_restart);
/// What a worker's monitor is told when its actor ends: (actor id, normal
/// exit, cause).
using worker_monitor_fn = std::function<void(std::uint64_t, bool, const std::string&)>;
/// Monitors the actor whose handle the driver lent as `via`: the driver
/// registers the monitor, and `fn` runs on this worker's control thread
/// when the actor ends (before this returns if it already has). Blocks
/// for the driver's answer, except inside a monitor callback (which must
/// not block).
void worker_client_monitor_actor(object_state* via, worker_monitor_fn fn);
/// Cancels, through the driver, the task producing `cell`: a task this
/// worker submitted, or one of the driver's whose ref it was lent. Nothing
/// for an object that is done or that no task produces (put(), an actor
/// call's result), as in the driver. Does not block.
void worker_client_cancel(object_state* cell, bool force);

/// True in a process started as a worker (the environment says so).
bool started_as_worker() noexcept;
/// Connects to the driver and runs its tasks; ends the process.
[[noreturn]] void run_worker();
/// Inside a worker: true once the driver cancelled the running task.
bool worker_cancel_requested() noexcept;

} // namespace weft::detail
