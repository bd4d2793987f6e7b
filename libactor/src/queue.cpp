// weft::queue: the parts that do not depend on the item type.
#include "weft/queue.hpp"

#include <string>

#include "../../src/process_node.hpp"
#include "../../src/runtime.hpp"

namespace weft::detail {

namespace {

std::string describe(std::chrono::nanoseconds d) {
  using namespace std::chrono;
  if (d.count() % 1'000'000 == 0)
    return std::to_string(duration_cast<milliseconds>(d).count()) + " ms";
  if (d.count() % 1'000 == 0)
    return std::to_string(duration_cast<microseconds>(d).count()) + " us";
  return std::to_string(d.count()) + " ns";
}

} // namespace

std::uint64_t next_queue_ticket() noexcept {
  // An object id: unique on the node, and it names the process that made
  // it (its id space), so the queue can tell callers of different workers
  // apart and drop those whose worker is gone.
  return new_object_id().value;
}

bool queue_caller_alive(std::uint64_t ticket) noexcept {
  const std::uint64_t worker = object_id_space_of(ticket);
  if (worker == 0)
    return true; // the driver's (or local mode's)
  runtime* rt = runtime::current();
  if (!rt || !rt->processes())
    return true;
  try {
    return process_node::of(*rt).worker_alive(static_cast<int>(worker));
  } catch (...) { // stopping: every caller goes anyway
    return true;
  }
}

void check_queue_timeout(const char* what, const std::optional<std::chrono::nanoseconds>& timeout) {
  if (timeout && timeout->count() < 0)
    throw invalid_argument_error(std::string("weft::queue::") + what + ": timeout = " + describe(*timeout) +
                                 " is negative; expected >= 0, or no timeout to wait without limit");
}

void throw_queue_full(const char* what, std::size_t size, std::size_t maxsize) {
  throw queue_full_error(std::string("weft::queue::") + what + ": the queue is full (size " + std::to_string(size) +
                         ", maxsize " + std::to_string(maxsize) + "); the item was not added");
}

void throw_queue_full_timeout(std::size_t maxsize, std::chrono::nanoseconds timeout) {
  throw queue_full_error("weft::queue::put: timed out after " + describe(timeout) +
                         ": the queue stayed full (maxsize " + std::to_string(maxsize) + "); the item was not added");
}

void throw_queue_empty(const char* what) {
  throw queue_empty_error(std::string("weft::queue::") + what + ": the queue is empty (size 0)");
}

void throw_queue_empty_timeout(std::chrono::nanoseconds timeout) {
  throw queue_empty_error("weft::queue::get: timed out after " + describe(timeout) +
                          ": no item arrived (the queue stayed empty)");
}

} // namespace weft::detail
