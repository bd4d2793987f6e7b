/// @file
/// weft::task_options: per-call and per-function options of remote functions,
/// the C++ face of Ray's `@ray.remote(...)` / `.options(...)` keywords.
///
/// Every field is optional: an unset field keeps the value from the level
/// below (per-call `.options()` over per-function `weft::remote(f, {...})`
/// over the defaults listed here). Field order for designated initializers:
/// num_cpus, num_gpus, memory, resources, max_retries, retry_exceptions,
/// max_calls, name.
///
///     add_r.options({.num_cpus = 2, .max_retries = 3}).remote(1, 2);
///     weft::task_options o; o.max_retries = 3;   // reads as well
#pragma once

#include <exception>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace weft {

/// Which exceptions thrown by a task are retried (Ray's `retry_exceptions`):
/// `true` (every exception), `false` (none) or a list of types built with
/// weft::retry_on<E...>() (an exception is retried when it is, or derives
/// from, one of them).
class exception_filter {
public:
  using matcher = bool (*)(const std::exception_ptr&);

  exception_filter(bool all = false) : all_(all) {} // NOLINT: implicit by design
  explicit exception_filter(std::vector<matcher> types) : types_(std::move(types)) {}

  /// True when the exception `e` should be retried.
  bool matches(const std::exception_ptr& e) const;
  bool retries_nothing() const noexcept { return !all_ && types_.empty(); }
  /// True for `true`: every exception is retried.
  bool retries_everything() const noexcept { return all_; }
  /// The type tests of a list (worker processes run them on the exception
  /// where it was thrown: they are code, named like remote functions).
  const std::vector<matcher>& matchers() const noexcept { return types_; }

private:
  bool all_ = false;
  std::vector<matcher> types_;
};

namespace detail {
template <class E>
bool exception_is(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const E&) {
    return true;
  } catch (...) {
    return false;
  }
}
} // namespace detail

/// Retry application exceptions of these types (and types derived from them).
template <class... Exceptions>
exception_filter retry_on() {
  static_assert(sizeof...(Exceptions) > 0, "weft::retry_on<...>() needs at least one exception type");
  return exception_filter{std::vector<exception_filter::matcher>{&detail::exception_is<Exceptions>...}};
}

struct task_options {
  /// Logical CPUs the task holds while it runs. Default 1. Fractions up to 1
  /// (0.5) share a CPU; above 1 only whole numbers.
  std::optional<double> num_cpus{};
  /// GPUs the task holds; weft::get_gpu_ids() tells which. Default 0.
  std::optional<double> num_gpus{};
  /// Bytes of node memory the task reserves. Default 0.
  std::optional<double> memory{};
  /// Custom resources, e.g. {{"disk", 1}}. Default none. Unlike the other
  /// fields, an empty map means "unset": options() cannot clear resources
  /// that the per-function defaults set, only replace them.
  std::map<std::string, double> resources{};
  /// Reruns after a system failure (and, with retry_exceptions, after an
  /// exception). Default 3; -1 retries forever; 0 never.
  std::optional<int> max_retries{};
  /// Whether exceptions thrown by the task are retried too. Default false.
  std::optional<exception_filter> retry_exceptions{};
  /// Calls of this function after which a worker process exits (worker
  /// processes only; no effect in local mode). Default 0: unlimited.
  std::optional<int> max_calls{};
  /// Name used in errors and logs. Default: the function's symbol name.
  std::optional<std::string> name{};
};

/// Fields set in `over` replace those of `base`.
task_options merge(const task_options& base, const task_options& over);

} // namespace weft
