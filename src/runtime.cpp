#include "runtime.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cxxabi.h>
#include <dlfcn.h>
#include <filesystem>
#include <memory>
#include <mutex>
#include <thread>

#include <unistd.h>

#include <caf/all.hpp>
#include <caf/io/middleman.hpp>

#include "futex.hpp"
#include "log.hpp"
#include "node_store.hpp"
#include "process_node.hpp"
#include "shm_arena.hpp"
#include "spill_store.hpp"
#include "weft/errors.hpp"

namespace weft::detail {

/// Keeps a blocker alive inside a delayed CAF message; dropping the message
/// (e.g. at shutdown) releases it.
struct timeout_ref {
  blocker* b = nullptr;
  timeout_ref() = default;
  explicit timeout_ref(blocker* p) : b(p) { b->add_ref(); }
  timeout_ref(const timeout_ref& o) : b(o.b) {
    if (b)
      b->add_ref();
  }
  timeout_ref& operator=(const timeout_ref&) = delete;
  ~timeout_ref() {
    if (b)
      b->release();
  }
};

} // namespace weft::detail

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(weft::detail::timeout_ref)

namespace weft::detail {

using run_atom = caf::atom_constant<caf::atom("run")>;
using timeout_atom = caf::atom_constant<caf::atom("timeout")>;

struct executor {
  runtime* rt = nullptr;
  std::optional<caf::actor> self;
  std::vector<fiber*> pool; // idle fibers, touched only by this executor's behavior
};

namespace {

/// The driver's shared-memory object store, for an init in worker-process
/// mode. It stays mapped after shutdown (arrays may outlive the runtime); a
/// later init gets a new one unless arrays still live in the old one.
shm_arena& driver_store(const config& cfg) {
  static std::mutex mtx;
  static std::unique_ptr<shm_arena> arena;
  std::lock_guard<std::mutex> lock(mtx);
  if (arena && arena->blocks_in_use() != 0) {
    // Arrays of an earlier runtime (or references a killed worker left)
    // still live in it: it stays, with its capacity.
    if (cfg.object_store_memory && *cfg.object_store_memory != arena->capacity())
      log().warn("weft: config.object_store_memory = {} is not applied: the object store of an earlier init still "
                 "holds {} array(s); it keeps its capacity of {} bytes",
                 *cfg.object_store_memory, arena->blocks_in_use(), arena->capacity());
    return *arena;
  }
  std::size_t capacity = 0;
  if (cfg.object_store_memory) {
    capacity = *cfg.object_store_memory;
  } else {
    const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
    capacity = pages > 0 && page > 0 ? static_cast<std::size_t>(pages) * static_cast<std::size_t>(page) / 10 * 3
                                     : std::size_t{1} << 30;
  }
  arena = shm_arena::create(capacity); // sparse: costs nothing until arrays fill it
  return *arena;
}

/// The driver's spill directory, for an init in worker-process mode with
/// spilling on; named at the first such init, made at the first spill. Like
/// the arena it outlives a runtime while arrays spilled to it live: a
/// runtime's shutdown removes it only when it is empty, else the process's
/// exit does. Never deleted while in use (spilled arrays may be released
/// during exit).
std::mutex g_spill_mtx;
spill_store* g_driver_spill = nullptr;

spill_store* driver_spill(const config& cfg) {
  if (!cfg.object_spilling)
    return nullptr;
  std::lock_guard<std::mutex> lock(g_spill_mtx);
  if (g_driver_spill)
    return g_driver_spill; // (arrays of an earlier runtime still live in it)
  std::string parent = cfg.object_spill_directory.value_or("");
  if (parent.empty()) {
    std::error_code ec;
    parent = std::filesystem::temp_directory_path(ec).string();
    if (ec)
      parent = "/tmp";
  }
  g_driver_spill = spill_store::create(parent).release();
  static const bool at_exit = [] {
    std::atexit([] {
      std::lock_guard<std::mutex> lock(g_spill_mtx);
      if (g_driver_spill)
        g_driver_spill->remove_directory();
    });
    return true;
  }();
  (void)at_exit;
  return g_driver_spill;
}

/// At shutdown (no worker left): removes the spill directory if no array
/// lives in it; a later init makes a new one.
void retire_driver_spill() noexcept {
  std::lock_guard<std::mutex> lock(g_spill_mtx);
  try {
    if (!g_driver_spill || g_driver_spill->files() != 0)
      return;
  } catch (...) {
    return;
  }
  forget_spill_store();
  delete g_driver_spill;
  g_driver_spill = nullptr;
}

std::atomic<runtime*> g_runtime{nullptr};
std::mutex g_lifecycle;
thread_local fiber* tls_fiber = nullptr;

constexpr std::size_t max_idle_fibers = 16;
constexpr std::int64_t executor_spin_ns = 50'000;
constexpr std::int64_t executor_time_slice_ns = 2'000'000;

caf::behavior executor_behavior(caf::event_based_actor*, executor* ex) {
  return {[ex](run_atom) { ex->rt->run_executor(*ex); }};
}

// Takes an argument only because CAF 0.17 dereferences a null tuple pointer
// (UBSan reports it) when a spawned function takes none.
caf::behavior clock_behavior(caf::event_based_actor*, runtime*) {
  return {[](timeout_atom, const timeout_ref& r) { r.b->notify(); }};
}

std::string demangle(const char* name) {
  int status = 0;
  char* out = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  if (status != 0 || !out)
    return name;
  std::string s(out);
  std::free(out);
  return s;
}

/// The failure of `t`, as callers of its result see it.
std::exception_ptr as_task_error(const std::string& name, const std::exception_ptr& err) {
  try {
    std::rethrow_exception(err);
  } catch (const task_error& e) {
    return std::make_exception_ptr(e.passed_through(name));
  } catch (const std::exception& e) {
    return std::make_exception_ptr(task_error(demangle(typeid(e).name()), e.what(), {name}, err));
  } catch (...) {
    auto* type = abi::__cxa_current_exception_type();
    return std::make_exception_ptr(
      task_error(type ? demangle(type->name()) : "unknown", "(not a std::exception)", {name}, err));
  }
}

void complete_returns_with(task_base* t, const std::exception_ptr& e) {
  for (auto& r : t->returns())
    r->complete_error(e);
}

} // namespace

std::string demangled(const char* name) { return demangle(name); }

std::exception_ptr to_task_error(const std::string& name, const std::exception_ptr& err) {
  return as_task_error(name, err);
}

std::string symbol_name(const void* code) {
  Dl_info info{};
  if (code && ::dladdr(code, &info) && info.dli_sname && info.dli_saddr == code) {
    std::string s = demangle(info.dli_sname);
    // "ns::f(int)" -> "ns::f"; "describe[abi:cxx11](int)" -> "describe"
    if (auto cut = s.find_first_of("(["); cut != std::string::npos)
      s.erase(cut);
    return s;
  }
  return {};
}

void set_current_fiber(fiber* f) noexcept { tls_fiber = f; }

__attribute__((noinline)) fiber* current_fiber() noexcept {
  asm volatile("" ::: "memory");
  return tls_fiber;
}

task_base* current_task() noexcept {
  fiber* f = current_fiber();
  return f && f->what == fiber::kind::task ? static_cast<task_base*>(f->payload) : nullptr;
}

runtime* runtime::current() noexcept { return g_runtime.load(std::memory_order_acquire); }

void runtime::start(const config& cfg) {
  std::lock_guard<std::mutex> lock(g_lifecycle);
  if (g_runtime.load())
    throw error("weft::init: weft is already initialized; call weft::shutdown() first");
  auto* rt = new runtime(cfg);
  g_runtime.store(rt, std::memory_order_release);
}

void runtime::stop() {
  std::lock_guard<std::mutex> lock(g_lifecycle);
  runtime* rt = g_runtime.load();
  if (!rt)
    return;
  delete rt; // waits for running tasks; g_runtime stays set meanwhile so they can finish
  g_runtime.store(nullptr, std::memory_order_release);
}

caf_spawn_scope::caf_spawn_scope() noexcept : had_logger_(caf::logger::current_logger() != nullptr) {}

caf_spawn_scope::~caf_spawn_scope() {
  if (!had_logger_)
    caf::logger::set_current_actor_system(nullptr);
}

runtime::runtime(const config& cfg) :
  cfg_(cfg),
  sched_(node_resources::from_config(cfg), [this](void* ex) { wake_executor(ex); }) {
  set_log_level(cfg.log_level);
  if (cfg.worker_start_timeout <= std::chrono::milliseconds::zero())
    throw invalid_argument_error(
      "weft: config.worker_start_timeout = " + std::to_string(cfg.worker_start_timeout.count()) +
      " ms must be positive: it is how long a worker process has to connect");
  if (cfg.object_store_memory && *cfg.object_store_memory < (std::size_t{1} << 20))
    throw invalid_argument_error("weft: config.object_store_memory = " + std::to_string(*cfg.object_store_memory) +
                                 " bytes is too small; expected at least 1048576 (1 MiB)");
  if (cfg.object_spill_directory && cfg.object_spill_directory->empty())
    throw invalid_argument_error("weft: config.object_spill_directory is empty; expected a directory path, or unset "
                                 "for the system's temporary directory");
  if (cfg.fiber_stack_size < 16 * 1024)
    throw invalid_argument_error("weft: config.fiber_stack_size = " + std::to_string(cfg.fiber_stack_size) +
                                 " is too small; expected at least 16384 bytes");
  const auto cpus = static_cast<std::size_t>((sched_.node().cpu + resource_unit - 1) / resource_unit);
  const std::size_t n_exec = std::max<std::size_t>(1, cpus);
  caf_cfg_ = std::make_unique<caf::actor_system_config>();
  // Work sharing parks idle workers on a condition variable, so a task
  // submitted after a quiet spell starts in microseconds, not after the
  // work-stealing scheduler's 10 ms relaxed sleep.
  caf_cfg_->set("scheduler.policy", caf::atom("sharing"));
  // One thread more than executors: executors can hold at most n_exec
  // threads (a task computing, or blocking its thread), so actors always
  // have a thread to run on.
  caf_cfg_->set("scheduler.max-threads", n_exec + 1);
  processes_ = cfg.workers == worker_mode::processes;
  if (processes_)
    set_node_store(&driver_store(cfg), cfg.object_store_threshold, driver_spill(cfg));
  if (processes_)
    caf_cfg_->load<caf::io::middleman>(); // worker processes connect over 127.0.0.1
  if (processes_)
    caf_cfg_->set("middleman.workers", 0); // deserialize on the I/O thread: one hop less per message
  caf_spawn_scope spawn_scope;             // the system's constructor and the spawns below set this thread's logger
  caf_ = std::make_unique<caf::actor_system>(*caf_cfg_);
  for (std::size_t i = 0; i < n_exec; ++i) {
    auto ex = std::make_unique<executor>();
    ex->rt = this;
    ex->self = caf_->spawn(executor_behavior, ex.get());
    sched_.park(ex.get());
    executors_.push_back(std::move(ex));
  }
  clock_ = std::make_unique<caf::actor>(caf_->spawn(clock_behavior, this));
  log().info("runtime started: {} executors, node {}", n_exec, sched_.node().describe());
}

runtime_service& runtime::service(const void* key, runtime_service* (*make)(runtime&)) {
  std::lock_guard<std::mutex> lock(services_mtx_);
  for (auto& [k, svc] : services_)
    if (k == key)
      return *svc;
  if (stopping())
    throw runtime_shutdown_error("weft: the runtime is shutting down");
  services_.emplace_back(key, std::unique_ptr<runtime_service>(make(*this)));
  return *services_.back().second;
}

runtime::~runtime() {
  stopping_.store(true, std::memory_order_release);
  {
    // Services (actors) end first: their calls may wait on tasks, and
    // tasks on them; killing them unblocks both sides.
    std::vector<runtime_service*> svcs;
    {
      std::lock_guard<std::mutex> lock(services_mtx_);
      for (auto& [k, svc] : services_)
        svcs.push_back(svc.get());
    }
    std::stable_sort(svcs.begin(), svcs.end(),
                     [](runtime_service* a, runtime_service* b) { return a->stop_rank() < b->stop_rank(); });
    for (auto* svc : svcs)
      svc->stop();
  }
  for (task_base* t : sched_.drain()) {
    auto expected = task_phase::queued;
    if (t->phase.compare_exchange_strong(expected, task_phase::dropped)) {
      complete_returns_with(t, std::make_exception_ptr(runtime_shutdown_error("weft: task '" + task_name(*t) +
                                                                              "' did not run: the runtime shut down")));
      live_tasks_.fetch_sub(1, std::memory_order_acq_rel);
    }
    t->release();
  }
  auto last_report = now_ns();
  while (live_tasks_.load(std::memory_order_acquire) > 0) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    if (now_ns() - last_report > 2'000'000'000) {
      log().warn("shutdown is waiting for {} running task(s) to return", live_tasks_.load(std::memory_order_relaxed));
      last_report = now_ns();
    }
  }
  for (auto& ex : executors_)
    caf::anon_send_exit(*ex->self, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(*clock_, caf::exit_reason::user_shutdown);
  for (auto& ex : executors_)
    ex->self.reset();
  clock_.reset();
  services_.clear();
  caf_.reset(); // joins CAF's threads once every actor is gone
  for (auto& ex : executors_)
    for (fiber* f : ex->pool) {
      f->quit();
      delete f;
    }
  if (processes_) {
    set_node_store(nullptr, cfg_.object_store_threshold); // new arrays go to the heap; old ones stay readable
    retire_driver_spill();
  }
  log().info("runtime stopped");
}

std::string runtime::task_name(const task_base& t) {
  if (t.options().name)
    return *t.options().name;
  if (std::string s = symbol_name(t.fn_id()); !s.empty())
    return s;
  char buf[32];
  std::snprintf(buf, sizeof buf, "task@%p", t.fn_id());
  return buf;
}

struct dep_waiter final : completion_waiter {
  runtime* rt;
  task_base* task;
  dep_waiter(runtime* r, task_base* t) : rt(r), task(t) {}
  void on_complete(object_state&) noexcept override {
    if (task->pending_deps.fetch_sub(1, std::memory_order_acq_rel) == 1)
      rt->deps_ready(task);
    delete this;
  }
};

void runtime::submit(task_base* t, bool nested) {
  struct guard {
    task_base* t;
    ~guard() {
      if (t)
        t->release();
    }
  } g{t};
  if (stopping())
    throw runtime_shutdown_error("weft: cannot submit task '" + task_name(*t) + "': the runtime is shutting down");
  const auto& o = t->options();
  validate_task_options(o);
  // Fast path: default options on a node with a CPU need no validation.
  const bool defaults = !o.num_cpus && !o.num_gpus && !o.memory && o.resources.empty();
  if (defaults && sched_.node().cpu >= resource_unit)
    t->demand.cpu = resource_unit;
  else
    t->demand = resolve_demand(o, sched_.node(), "task '" + task_name(*t) + "'");
  std::size_t index = 0;
  for (object_state* d : t->deps()) {
    ++index;
    if (!d)
      throw invalid_argument_error("weft: argument for task '" + task_name(*t) +
                                   "' is an invalid object_ref (default-constructed or moved-from); argument "
                                   "object_ref #" +
                                   std::to_string(index));
  }
  t->retries_left = o.max_retries.value_or(3);
  t->nested = nested || current_task() != nullptr; // from an actor call: in submission order
  g.t = nullptr;                                   // from here on the runtime owns the task
  live_tasks_.fetch_add(1, std::memory_order_relaxed);
  for (auto& r : t->returns())
    r->set_producer(t);
  auto deps = t->deps();
  if (deps.empty()) {
    enqueue(t, processes_ && !t->nested);
    return;
  }
  t->pending_deps.store(static_cast<std::uint32_t>(deps.size()) + 1, std::memory_order_relaxed);
  for (object_state* d : deps) {
    auto* w = new dep_waiter(this, t);
    if (!d->add_waiter(w)) {
      delete w;
      t->pending_deps.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  if (t->pending_deps.fetch_sub(1, std::memory_order_acq_rel) == 1)
    deps_ready(t);
}

void runtime::deps_ready(task_base* t) {
  for (object_state* d : t->deps()) {
    if (d->failed()) {
      auto expected = task_phase::waiting_deps;
      if (!t->phase.compare_exchange_strong(expected, task_phase::finished)) {
        t->release(); // cancelled meanwhile
        return;
      }
      std::exception_ptr e = d->error();
      try {
        std::rethrow_exception(e);
      } catch (const task_error& te) {
        e = std::make_exception_ptr(te.passed_through(task_name(*t)));
      } catch (...) {
      }
      fail(t, e);
      return;
    }
  }
  enqueue(t);
}

void runtime::enqueue(task_base* t, bool dispatch_here) {
  auto expected = task_phase::waiting_deps;
  if (!t->phase.compare_exchange_strong(expected, task_phase::queued, std::memory_order_acq_rel)) {
    t->release(); // cancelled before its arguments were ready
    return;
  }
  // dispatch_here (worker processes, a task from outside any task): if its
  // resources are free it goes to a worker from this thread, without
  // waking an executor (a thread wake-up is tens of µs here: a third of a
  // synchronous call).
  bool pushed = false;
  auto w = sched_.push_and_pop(t, pushed, dispatch_here);
  if (!pushed) {
    expected = task_phase::queued;
    if (t->phase.compare_exchange_strong(expected, task_phase::finished))
      fail(t, std::make_exception_ptr(
                runtime_shutdown_error("weft: task '" + task_name(*t) + "' did not run: the runtime shut down")));
    else
      t->release();
    return;
  }
  if (!w)
    return;
  if (w.resume) { // (nothing blocks in the driver in process mode; hand it to an executor)
    sched_.push_resume(w.task);
    return;
  }
  dispatch_remote(w.task);
}

void runtime::dispatch_remote(task_base* t) {
  process_node* node = nullptr;
  try {
    node = &process_node::of(*this);
  } catch (...) {
    // The node cannot start (shutdown began, no build id, no port): the
    // task fails with that error instead of being lost.
    finish_remote(t, std::current_exception());
  }
  if (node)
    node->dispatch(t);
}

void runtime::fail(task_base* t, std::exception_ptr e) {
  complete_returns_with(t, e);
  live_tasks_.fetch_sub(1, std::memory_order_acq_rel);
  t->release();
}

task_base* runtime::finish_remote(task_base* t, std::exception_ptr err, bool pop) {
  if (err)
    complete_returns_with(t, err);
  else
    for (auto& r : t->returns())
      r->complete_value();
  sched_.announce_finishing();
  auto w = sched_.finish_and_pop(t, pop && !stopping());
  live_tasks_.fetch_sub(1, std::memory_order_acq_rel);
  t->release();
  if (w && w.resume) { // cannot happen: nothing blocks in process mode; hand it back to be safe
    sched_.push_resume(w.task);
    return nullptr;
  }
  return w.task;
}

void runtime::finish_remote_passing_resources(task_base* t, std::exception_ptr err) {
  if (err)
    complete_returns_with(t, err);
  else
    for (auto& r : t->returns())
      r->complete_value();
  live_tasks_.fetch_sub(1, std::memory_order_acq_rel);
  t->release();
}

void runtime::cancel(task_base* t, bool force) {
  t->cancel_requested.store(true, std::memory_order_release);
  auto p = t->phase.load(std::memory_order_acquire);
  while (p == task_phase::waiting_deps || p == task_phase::queued) {
    if (t->phase.compare_exchange_weak(p, task_phase::dropped, std::memory_order_acq_rel)) {
      // Whoever holds the task (a queue, a dependency) releases it later.
      complete_returns_with(t, std::make_exception_ptr(task_cancelled_error("weft: task '" + task_name(*t) +
                                                                            "' was cancelled before it ran")));
      live_tasks_.fetch_sub(1, std::memory_order_acq_rel);
      return;
    }
  }
  // Running or blocked: it sees is_cancelled(), and its result becomes
  // task_cancelled_error when it returns. In a worker process, the worker
  // is told (or, with force, killed).
  if (processes_ && p == task_phase::running) {
    try {
      process_node::of(*this).cancel(t, force);
    } catch (const runtime_shutdown_error&) {
      // shutting down: the node's stop() settles the task
    }
  }
}

void runtime::execute(task_base* t) {
  const auto& o = t->options();
  for (;;) {
    std::exception_ptr err;
    try {
      t->invoke();
    } catch (...) {
      err = std::current_exception();
    }
    const bool cancelled = t->cancel_requested.load(std::memory_order_acquire);
    const bool retry = err && !cancelled && t->retries_left != 0 && !stopping() && o.retry_exceptions &&
                       o.retry_exceptions->matches(err);
    if (retry) {
      if (t->retries_left > 0)
        --t->retries_left;
      log().debug("task '{}' threw; retrying ({} retries left)", task_name(*t), t->retries_left);
      continue;
    }
    sched_.announce_finishing(); // this executor pops again right after publishing
    if (cancelled) {
      complete_returns_with(t, std::make_exception_ptr(task_cancelled_error("weft: task '" + task_name(*t) +
                                                                            "' was cancelled while it ran")));
    } else if (!err) {
      for (auto& r : t->returns())
        r->complete_value();
    } else {
      complete_returns_with(t, as_task_error(task_name(*t), err));
    }
    return;
  }
}

void runtime::fiber_body(fiber& f) {
  auto* t = static_cast<task_base*>(f.payload);
  runtime::current()->execute(t);
}

void runtime::run_executor(executor& ex) {
  const auto started = now_ns();
  auto w = sched_.pop();
  for (;;) {
    while (w) {
      task_base* t = w.task;
      fiber* f = nullptr;
      if (w.resume) {
        f = static_cast<fiber*>(t->fiber);
        t->phase.store(task_phase::running, std::memory_order_relaxed);
      } else if (processes_) {
        // Worker processes: the task runs there and keeps its resources
        // until its result comes back (process_node::finish).
        dispatch_remote(t);
        w = sched_.pop();
        continue;
      } else {
        if (ex.pool.empty()) {
          f = new fiber(cfg_.fiber_stack_size, &runtime::fiber_body);
          f->host = this;
        } else {
          f = ex.pool.back();
          ex.pool.pop_back();
        }
        f->payload = t;
        t->fiber = f;
      }
      tls_fiber = f;
      f->resume();
      tls_fiber = nullptr;
      if (f->why == fiber::state::blocked) {
        f->after_yield(*f, f->after_yield_arg);
        w = sched_.pop();
        continue;
      }
      t->fiber = nullptr;
      f->payload = nullptr;
      if (ex.pool.size() < max_idle_fibers) {
        ex.pool.push_back(f);
      } else {
        f->quit();
        delete f;
      }
      const bool slice_over = now_ns() - started > executor_time_slice_ns;
      w = sched_.finish_and_pop(t, !slice_over);
      live_tasks_.fetch_sub(1, std::memory_order_acq_rel);
      t->release();
      if (slice_over) {
        // Let other CAF actors on this thread run; come back for more.
        caf::anon_send(*ex.self, run_atom::value);
        return;
      }
    }
    if (sched_.try_start_spinning()) {
      // Spin for the whole window: an epoch change may be another
      // executor's bookkeeping rather than work for this one.
      auto seen = sched_.epoch();
      const auto until = now_ns() + executor_spin_ns;
      while (!w && now_ns() < until) {
        cpu_relax();
        if (auto e = sched_.epoch(); e != seen) {
          seen = e;
          w = sched_.pop();
        }
      }
      sched_.stop_spinning();
      if (w) {
        // Work pushed while this executor still counted as the spinner
        // woke nobody; hand it to a parked executor now if it can start.
        sched_.wake_if_needed();
        continue;
      }
    }
    if (sched_.park(&ex))
      return;
    w = sched_.pop();
  }
}

void runtime::wake_executor(void* ex) { caf::anon_send(*static_cast<executor*>(ex)->self, run_atom::value); }

void runtime::schedule_timeout(blocker& b, std::int64_t deadline_ns) {
  auto left = std::max<std::int64_t>(0, deadline_ns - now_ns());
  caf::delayed_anon_send(*clock_, std::chrono::nanoseconds(left), timeout_atom::value, timeout_ref(&b));
}

void runtime::block(fiber& fb, blocker& b, std::uint32_t seen_epoch, std::int64_t deadline_ns) {
  fiber* f = &fb;
  auto* t = static_cast<task_base*>(f->payload);
  struct context {
    runtime* rt;
    blocker* b;
    task_base* t;
    std::uint32_t seen;
    std::int64_t deadline;
  } ctx{this, &b, t, seen_epoch, deadline_ns};
  f->after_yield = [](fiber&, void* p) {
    // Copy the context and pin the blocker: once armed, the fiber may be
    // resumed elsewhere at once, which ends `ctx` and may drop the blocker.
    const context c = *static_cast<context*>(p);
    c.b->add_ref();
    c.t->phase.store(task_phase::blocked, std::memory_order_relaxed);
    c.rt->sched_.release_cpu(c.t);
    if (c.deadline != 0)
      c.rt->schedule_timeout(*c.b, c.deadline);
    c.b->arm_fiber([](void* task) noexcept { runtime::current()->resume(static_cast<task_base*>(task)); }, c.t, c.seen);
    c.b->release();
  };
  f->after_yield_arg = &ctx;
  f->why = fiber::state::blocked;
  f->yield();
  // Resumed by an executor (perhaps on another thread) with the CPUs back.
}

} // namespace weft::detail
