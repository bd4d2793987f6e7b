// The non-template half of the public API: everything here forwards to the
// runtime in src/.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unordered_set>

#include "../../src/blocking.hpp"
#include "../../src/futex.hpp"
#include "../../src/runtime.hpp"
#include "../../src/worker_main.hpp"
#include "weft/remote_function.hpp"
#include "weft/runtime.hpp"

namespace weft {

namespace {

double parse_number(const std::string& text, const std::string& where) {
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || errno == ERANGE)
    throw invalid_argument_error("weft: " + where + " = '" + text + "' is not a number");
  return v;
}

std::map<std::string, double> parse_resources(const std::string& text, const std::string& where) {
  std::map<std::string, double> out;
  std::size_t pos = 0;
  while (pos <= text.size() && !text.empty()) {
    auto comma = text.find(',', pos);
    std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    auto colon = item.find(':');
    if (colon == std::string::npos || colon == 0)
      throw invalid_argument_error("weft: " + where + " = '" + text + "': item '" + item +
                                   "' is not of the form name:amount");
    out[item.substr(0, colon)] = parse_number(item.substr(colon + 1), where + " (" + item.substr(0, colon) + ")");
    if (comma == std::string::npos)
      break;
    pos = comma + 1;
  }
  return out;
}

void apply(config& cfg, const std::string& key, const std::string& value, const std::string& where) {
  if (key == "num-cpus")
    cfg.num_cpus = parse_number(value, where);
  else if (key == "num-gpus")
    cfg.num_gpus = parse_number(value, where);
  else if (key == "memory")
    cfg.memory = parse_number(value, where);
  else if (key == "resources")
    cfg.resources = parse_resources(value, where);
  else if (key == "log-level")
    cfg.log_level = value;
  else if (key == "workers") {
    if (value == "local")
      cfg.workers = worker_mode::local;
    else if (value == "processes")
      cfg.workers = worker_mode::processes;
    else
      throw invalid_argument_error("weft: " + where + " = '" + value + "'; expected local or processes");
  } else if (key == "worker-program")
    cfg.worker_program = value;
  else
    throw invalid_argument_error("weft: unknown option " + where +
                                 "; expected one of --weft-num-cpus, --weft-num-gpus, --weft-memory, "
                                 "--weft-resources, --weft-log-level, --weft-workers, --weft-worker-program");
}

} // namespace

config config_from(int argc, const char* const* argv) {
  config cfg;
  const std::pair<const char*, const char*> env_keys[] = {{"WEFT_NUM_CPUS", "num-cpus"},
                                                          {"WEFT_NUM_GPUS", "num-gpus"},
                                                          {"WEFT_MEMORY", "memory"},
                                                          {"WEFT_RESOURCES", "resources"},
                                                          {"WEFT_LOG_LEVEL", "log-level"},
                                                          {"WEFT_WORKERS", "workers"},
                                                          {"WEFT_WORKER_PROGRAM", "worker-program"}};
  for (auto [env, key] : env_keys)
    if (const char* v = std::getenv(env); v && *v)
      apply(cfg, key, v, std::string("$") + env);
  const std::string prefix = "--weft-";
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i] ? argv[i] : "";
    if (arg.rfind(prefix, 0) != 0)
      continue;
    std::string rest = arg.substr(prefix.size());
    std::string key;
    std::string value;
    if (auto eq = rest.find('='); eq != std::string::npos) {
      key = rest.substr(0, eq);
      value = rest.substr(eq + 1);
    } else {
      key = rest;
      if (i + 1 >= argc)
        throw invalid_argument_error("weft: option " + arg + " needs a value (" + arg + "=VALUE)");
      value = argv[++i];
    }
    apply(cfg, key, value, prefix + key);
  }
  return cfg;
}

void init(const config& cfg) {
  if (detail::started_as_worker())
    detail::run_worker(); // a worker process serves its driver and never returns here
  detail::runtime::start(cfg);
}

bool is_worker_process() noexcept { return detail::started_as_worker(); }

void init(int argc, const char* const* argv) { init(config_from(argc, argv)); }

void shutdown() { detail::runtime::stop(); }

bool is_initialized() noexcept {
  auto* rt = detail::runtime::current();
  return rt && !rt->stopping();
}

std::string to_string(object_id id) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "object#%llx", static_cast<unsigned long long>(id.value));
  return buf;
}

bool is_cancelled() noexcept {
  auto* f = detail::current_fiber();
  if (!f)
    return detail::started_as_worker() && detail::worker_cancel_requested();
  auto* rt = detail::runtime::current();
  if (rt && rt->stopping())
    return true;
  if (f->interrupt.load(std::memory_order_acquire))
    return true;
  auto* t = detail::current_task();
  return t && t->cancel_requested.load(std::memory_order_acquire);
}

std::vector<int> get_gpu_ids() {
  if (auto* t = detail::current_task())
    return t->gpu_ids;
  auto* f = detail::current_fiber();
  return f && f->gpu_ids ? *f->gpu_ids : std::vector<int>{};
}

std::int64_t live_objects() noexcept { return detail::live_object_count(); }

namespace detail {

namespace {
/// A task in a worker process that waits for objects lends its CPUs to
/// the driver meanwhile (Ray's "blocked in get"): else nested tasks could
/// wait for CPUs their waiting parents hold.
struct lend_cpus_while_waiting {
  bool lent;
  /// A wait of a millisecond or less (a poll) lends nothing.
  explicit lend_cpus_while_waiting(std::int64_t deadline_ns) :
    lent(!runtime::current() && worker_client_active() && (deadline_ns == 0 || deadline_ns - now_ns() > 1'000'000)) {
    if (lent)
      worker_client_blocked(true);
    else if (!runtime::current())
      worker_client_flush_results(); // a poll: what it polls for may be a result of its own batch
  }
  ~lend_cpus_while_waiting() {
    if (lent)
      worker_client_blocked(false);
  }
  lend_cpus_while_waiting(const lend_cpus_while_waiting&) = delete;
  lend_cpus_while_waiting& operator=(const lend_cpus_while_waiting&) = delete;
};
} // namespace

void require_initialized(const char* what) {
  if (!runtime::current() && started_as_worker()) {
    // A task in a worker may submit tasks and use put/get/wait/cancel there.
    if (worker_client_active())
      return;
    throw not_initialized_error(std::string("weft::") + what +
                                ": not available inside a worker process yet; see docs/processes.md");
  }
  if (!runtime::current())
    throw not_initialized_error(std::string("weft::") + what +
                                ": weft is not initialized; call weft::init() first (or it was shut down)");
}

void submit(task_base* t) {
  runtime* rt = runtime::current();
  if (!rt && worker_client_active()) {
    worker_client_submit(t); // a task in a worker process submits through its driver
    return;
  }
  if (!rt) {
    t->release();
    throw not_initialized_error("weft: .remote(): weft is not initialized; call weft::init() first (or it was "
                                "shut down)");
  }
  rt->submit(t);
}

void check_return_count(std::size_t expected, std::size_t actual) {
  if (actual != expected)
    throw num_returns_error("weft: the function returned a std::vector of " + std::to_string(actual) +
                            " elements, but num_returns(" + std::to_string(expected) + ") expects exactly " +
                            std::to_string(expected));
}

void check_decoded_return_count(std::size_t expected, std::size_t actual) {
  if (actual != expected)
    throw serialization_error("weft: the result of a num_returns(" + std::to_string(expected) + ") call holds " +
                              std::to_string(actual) + " elements (corrupted input)");
}

void throw_negative_num_returns(long long n, const void* fn, const task_options& options) {
  std::string name = options.name ? *options.name : symbol_name(fn);
  if (name.empty()) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "task@%p", fn);
    name = buf;
  }
  throw invalid_argument_error("weft: num_returns(n) of remote function '" + name + "' is " + std::to_string(n) +
                               "; expected n >= 0 (the number of refs each call returns)");
}

std::int64_t deadline_after(std::chrono::nanoseconds timeout) noexcept {
  if (timeout.count() < 0)
    timeout = std::chrono::nanoseconds(0);
  auto d = now_ns() + timeout.count();
  return d == 0 ? 1 : d;
}

namespace {

void check_cells(std::span<object_state* const> cells, const char* what) {
  for (std::size_t i = 0; i < cells.size(); ++i)
    if (!cells[i])
      throw invalid_argument_error(std::string("weft::") + what + ": object_ref " +
                                   (cells.size() == 1 ? std::string() : "#" + std::to_string(i) + " ") +
                                   "is invalid (default-constructed or moved-from)");
}

[[noreturn]] void throw_timeout(std::span<object_state* const> cells, const char* what) {
  std::size_t not_ready = 0;
  object_state* first = nullptr;
  for (auto* c : cells)
    if (!c->done()) {
      ++not_ready;
      if (!first)
        first = c;
    }
  throw get_timeout_error(std::string("weft::") + what + ": timed out with " + std::to_string(not_ready) + " of " +
                          std::to_string(cells.size()) + " object(s) not ready" +
                          (first ? " (first: " + to_string(first->id()) + ")" : std::string()));
}

} // namespace

void await_all(std::span<object_state* const> cells, std::int64_t deadline_ns, const char* what) {
  require_initialized(what);
  check_cells(cells, what);
  std::size_t pending = 0;
  for (auto* c : cells) {
    if (c->done()) {
      if (c->failed())
        std::rethrow_exception(c->error());
    } else {
      ++pending;
      c->want(); // a proxy in a worker: ask the driver for the value
    }
  }
  if (pending == 0)
    return;
  lend_cpus_while_waiting lend(deadline_ns);
  if (cells.size() == 1 && !current_fiber()) {
    if (!cells[0]->wait_thread(deadline_ns))
      throw_timeout(cells, what);
    if (cells[0]->failed())
      std::rethrow_exception(cells[0]->error());
    return;
  }
  auto* b = new blocker(pending);
  struct holder {
    blocker* b;
    ~holder() { b->release(); }
  } hold{b};
  std::uint32_t expected = 0;
  bool failed_now = false;
  for (auto* c : cells) {
    if (c->done())
      continue;
    if (b->watch(c))
      ++expected;
    else if (c->failed())
      failed_now = true;
  }
  while (!failed_now) {
    const auto seen = b->epoch();
    if (b->any_failed() || b->completed() >= expected)
      break;
    if (deadline_ns != 0 && now_ns() >= deadline_ns)
      throw_timeout(cells, what);
    b->park(seen, deadline_ns);
  }
  for (auto* c : cells)
    if (c->done() && c->failed())
      std::rethrow_exception(c->error());
}

std::vector<std::size_t> await_some(std::span<object_state* const> cells, int num_returns, std::int64_t deadline_ns) {
  require_initialized("wait");
  check_cells(cells, "wait");
  if (num_returns < 0 || static_cast<std::size_t>(num_returns) > cells.size())
    throw invalid_argument_error("weft::wait: num_returns = " + std::to_string(num_returns) +
                                 " is invalid; expected 0.." + std::to_string(cells.size()) +
                                 " (the number of refs given)");
  {
    std::unordered_set<object_state*> seen;
    seen.reserve(cells.size());
    for (std::size_t i = 0; i < cells.size(); ++i)
      if (!seen.insert(cells[i]).second)
        throw invalid_argument_error("weft::wait: the list holds " + to_string(cells[i]->id()) +
                                     " more than once (again at index " + std::to_string(i) +
                                     "); expected distinct refs");
  }
  const auto want = static_cast<std::size_t>(num_returns);
  auto collect = [&] {
    std::vector<std::size_t> idx;
    for (std::size_t i = 0; i < cells.size() && idx.size() < want; ++i)
      if (cells[i]->done())
        idx.push_back(i);
    return idx;
  };
  std::size_t done_now = 0;
  for (auto* c : cells) {
    done_now += c->done() ? 1 : 0;
    if (!c->done())
      c->want();
  }
  if (done_now >= want)
    return collect();
  lend_cpus_while_waiting lend(deadline_ns);
  auto* b = new blocker(cells.size() - done_now);
  struct holder {
    blocker* b;
    ~holder() { b->release(); }
  } hold{b};
  std::size_t already = 0;
  for (auto* c : cells)
    if (c->done() || !b->watch(c))
      ++already;
  for (;;) {
    const auto seen = b->epoch();
    if (already + b->completed() >= want)
      break;
    if (deadline_ns != 0 && now_ns() >= deadline_ns)
      break;
    b->park(seen, deadline_ns);
  }
  return collect();
}

void cancel(object_state* cell, bool force) {
  require_initialized("cancel"); // force kills a worker process; local tasks cannot be killed
  if (!cell)
    throw invalid_argument_error("weft::cancel: object_ref is invalid (default-constructed or moved-from)");
  if (!runtime::current() && worker_client_active()) {
    worker_client_cancel(cell, force); // in a worker process: the driver cancels it
    return;
  }
  task_base* t = cell->acquire_producer();
  if (!t)
    return; // already finished, or made by put()
  if (auto* rt = runtime::current())
    rt->cancel(t, force);
  t->release();
}

} // namespace detail
} // namespace weft
