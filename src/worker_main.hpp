// Private: the worker side of worker processes. A worker is the user's
// program started again with WEFT_WORKER_OF set; weft::init() sees that and
// calls run_worker(), which serves tasks until the driver goes away or
// retires it, then ends the process. It never returns into user code.
#pragma once

namespace weft::detail {

/// True in a process started as a worker (the environment says so).
bool started_as_worker() noexcept;
/// Connects to the driver and runs its tasks; ends the process.
[[noreturn]] void run_worker();
/// Inside a worker: true once the driver cancelled the running task.
bool worker_cancel_requested() noexcept;

} // namespace weft::detail
