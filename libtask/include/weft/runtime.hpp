/// @file
/// Starting and stopping weft, and the calls that work on object refs:
/// get, put, wait, cancel, and what a running task can ask about itself.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "weft/config.hpp"
#include "weft/errors.hpp"
#include "weft/object_ref.hpp"

namespace weft {

/// Starts the embedded runtime. Throws invalid_argument_error for a bad
/// config, and weft::error if weft is already initialized. In a worker
/// process (see is_worker_process()) it serves the driver and never returns.
void init(const config& cfg = {});
/// Like init(cfg), with cfg read from `--weft-*` flags (which win) and
/// `WEFT_*` environment variables: --weft-num-cpus=N, --weft-num-gpus=N,
/// --weft-memory=BYTES, --weft-resources=name:amount,..., --weft-log-level=L.
/// Other arguments are ignored; an unknown --weft-* flag is an error.
void init(int argc, const char* const* argv);
/// Parses flags and environment into a config without starting anything.
config config_from(int argc, const char* const* argv);
/// Stops the runtime: tasks not yet started fail with runtime_shutdown_error,
/// running tasks are asked to stop (is_cancelled() turns true) and waited
/// for. Refs stay valid C++ objects (is_ready() still answers) but get(),
/// wait() and put() need a running runtime again; weft can be init()ed
/// again. Idempotent. Must not race with other threads' weft calls.
void shutdown();
/// Thread-safe.
bool is_initialized() noexcept;
/// True in a worker process (a copy of this program that weft started to
/// run tasks). There weft::init() serves the driver and never returns, so
/// a program that does work before init() can skip it in workers:
///     int main(int argc, char** argv) {
///       if (!weft::is_worker_process()) print_banner();
///       weft::init(argc, argv);   // a worker never comes back from here
bool is_worker_process() noexcept;

namespace detail {
using clock = std::chrono::steady_clock;
/// Blocks until every cell is done, or one failed, or the deadline passes
/// (0: no deadline). Throws the first error found, get_timeout_error, or
/// invalid_argument_error for an invalid ref. Works on threads and in tasks.
void await_all(std::span<object_state* const> cells, std::int64_t deadline_ns, const char* what);
/// Returns the indices (ascending) of up to num_returns done cells, waiting
/// until that many are done or the deadline passes.
std::vector<std::size_t> await_some(std::span<object_state* const> cells, int num_returns, std::int64_t deadline_ns);
std::int64_t deadline_after(std::chrono::nanoseconds timeout) noexcept;
void require_initialized(const char* what);
void cancel(object_state* cell, bool force);

template <class T>
object_state* cell_of(const object_ref<T>& r) {
  return r.cell();
}
template <class T>
const T& value_of(const object_ref<T>& r) {
  return static_cast<const value_object<T>*>(r.cell())->value();
}
template <class T>
std::vector<object_state*> cells_of(const std::vector<object_ref<T>>& refs) {
  std::vector<object_state*> cells;
  cells.reserve(refs.size());
  for (const auto& r : refs)
    cells.push_back(r.cell());
  return cells;
}
} // namespace detail

/// Blocks until the object is ready and returns a copy of its value; rethrows
/// the task's error (task_error, task_cancelled_error, ...). Inside a task,
/// a blocked get releases the task's CPUs (not its GPUs) until it returns and
/// holds no OS thread. Thread-safe.
template <class T>
T get(const object_ref<T>& ref) {
  detail::object_state* c = ref.cell();
  detail::await_all(std::span<detail::object_state* const>(&c, 1), 0, "get");
  if constexpr (!std::is_void_v<T>)
    return detail::value_of(ref);
}

/// Like get(ref), but throws get_timeout_error after `timeout`.
template <class T, class Rep, class Period>
T get(const object_ref<T>& ref, std::chrono::duration<Rep, Period> timeout) {
  detail::object_state* c = ref.cell();
  detail::await_all(std::span<detail::object_state* const>(&c, 1),
                    detail::deadline_after(std::chrono::duration_cast<std::chrono::nanoseconds>(timeout)), "get");
  if constexpr (!std::is_void_v<T>)
    return detail::value_of(ref);
}

/// Values of all refs, in input order. Throws the first error it finds as
/// soon as it is found, without waiting for the slower objects.
template <class T>
requires(!std::is_void_v<T>) std::vector<T> get(const std::vector<object_ref<T>>& refs) {
  auto cells = detail::cells_of(refs);
  detail::await_all(cells, 0, "get");
  std::vector<T> out;
  out.reserve(refs.size());
  for (const auto& r : refs)
    out.push_back(detail::value_of(r));
  return out;
}

template <class T, class Rep, class Period>
requires(!std::is_void_v<T>) std::vector<T> get(const std::vector<object_ref<T>>& refs,
                                                std::chrono::duration<Rep, Period> timeout) {
  auto cells = detail::cells_of(refs);
  detail::await_all(cells, detail::deadline_after(std::chrono::duration_cast<std::chrono::nanoseconds>(timeout)),
                    "get");
  std::vector<T> out;
  out.reserve(refs.size());
  for (const auto& r : refs)
    out.push_back(detail::value_of(r));
  return out;
}

/// Waits for a list of void refs; throws the first error.
inline void get(const std::vector<object_ref<void>>& refs) {
  auto cells = detail::cells_of(refs);
  detail::await_all(cells, 0, "get");
}

/// Places a value in the object store and returns its ref. Pass an rvalue
/// to move instead of copy. Thread-safe.
template <class T>
object_ref<std::remove_cvref_t<T>> put(T&& value) {
  using V = std::remove_cvref_t<T>;
  static_assert(!is_object_ref_v<V>, "weft::put of an object_ref is not allowed: the ref already names an object "
                                     "in the store. Pass the ref itself where it is needed.");
  static_assert(!std::is_pointer_v<V>, "weft::put needs a value, not a raw pointer");
  detail::require_initialized("put");
  auto* cell = new detail::value_object<V>();
  detail::object_ptr p(cell);
  cell->emplace(std::forward<T>(value));
  cell->complete_value();
  return object_ref<V>(std::move(p));
}

/// The result of wait(): structured bindings give the two lists.
///     auto [ready, not_ready] = weft::wait(refs, 2, 1s);
template <class T>
struct wait_result {
  std::vector<object_ref<T>> ready;     ///< in input order, at most num_returns
  std::vector<object_ref<T>> not_ready; ///< the rest, in input order
};

/// Waits until `num_returns` of `refs` are ready (holding a value or an
/// error), or until `timeout` passes (unset: no limit). Does not throw task
/// errors. Throws invalid_argument_error for duplicate refs, an invalid ref,
/// or num_returns outside 0..refs.size().
template <class T>
wait_result<T> wait(const std::vector<object_ref<T>>& refs, int num_returns = 1,
                    std::optional<std::chrono::nanoseconds> timeout = std::nullopt) {
  auto cells = detail::cells_of(refs);
  auto idx = detail::await_some(cells, num_returns, timeout ? detail::deadline_after(*timeout) : 0);
  wait_result<T> out;
  out.ready.reserve(idx.size());
  out.not_ready.reserve(refs.size() - idx.size());
  std::size_t k = 0;
  for (std::size_t i = 0; i < refs.size(); ++i) {
    if (k < idx.size() && idx[k] == i) {
      out.ready.push_back(refs[i]);
      ++k;
    } else {
      out.not_ready.push_back(refs[i]);
    }
  }
  return out;
}

/// Options of weft::cancel().
struct cancel_options {
  /// Kill the worker process running the task (worker processes only).
  bool force = false;
};

/// Cancels the task producing `ref`. A task not yet running is dropped and
/// its get() throws task_cancelled_error; a running task sees
/// is_cancelled() turn true and its result becomes task_cancelled_error.
/// Cancelled tasks are not retried. A finished task is unaffected.
template <class T>
void cancel(const object_ref<T>& ref, cancel_options opts = {}) {
  detail::cancel(ref.cell(), opts.force);
}

/// Inside a task: true once weft::cancel() was called on it (or the runtime
/// is shutting down). Outside a task: false.
bool is_cancelled() noexcept;

/// Inside a task: the ids of the GPUs it was given. Outside a task: empty.
std::vector<int> get_gpu_ids();

/// The number of cells (objects) alive in this process, for tests and leak checks.
std::int64_t live_objects() noexcept;

} // namespace weft
