// Private: the worker side of worker processes. A worker is the user's
// program started again with WEFT_WORKER_OF set; weft::init() sees that and
// calls run_worker(), which serves tasks until the driver goes away or
// retires it, then ends the process. It never returns into user code.
#pragma once

#include <cstdint>
#include <string>

namespace weft::detail {

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

/// True in a process started as a worker (the environment says so).
bool started_as_worker() noexcept;
/// Connects to the driver and runs its tasks; ends the process.
[[noreturn]] void run_worker();
/// Inside a worker: true once the driver cancelled the running task.
bool worker_cancel_requested() noexcept;

} // namespace weft::detail
