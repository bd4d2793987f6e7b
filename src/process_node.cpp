#include "process_node.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "futex.hpp"
#include "log.hpp"
#include "node_store.hpp"
#include "shm_arena.hpp"
#include "spill_store.hpp"
#include "store_ledger.hpp"
#include "stored_bytes.hpp"
#include "weft/array.hpp"
#include "weft/errors.hpp"
#include "worker_protocol.hpp"

extern char** environ;

namespace weft::detail {

namespace {

std::string random_token() {
  std::random_device rd;
  char buf[33];
  for (int i = 0; i < 4; ++i)
    std::snprintf(buf + 8 * i, 9, "%08x", rd());
  return std::string(buf, 32);
}

/// A ref bundle dropped unread gives back the store references its
/// exported values hand over.
void release_bundle(std::string_view bundle) {
  wire::reader r(bundle);
  wire::bundle_entry e;
  while (e.read(r))
    release_handed_references(e.handed);
}

/// A record dropped unread gives back the store references it hands over.
void release_dropped(const wire::done_record& d) {
  release_handed_references(d.handed);
  release_bundle(d.refs);
}

/// Store references a worker's message hands over (packed u64): the node
/// takes references of its own to them before anything reads the message,
/// and appends them to `acks`, for the worker to release its own. (The
/// worker keeps them in its ledger until then: a message lost with it,
/// never sent or never read, gives them back when it is reaped.) All or
/// none: false when they could not be taken (a spill file, out of file
/// descriptors); they are acknowledged all the same, and the message must
/// not be read (nothing holds what it names).
bool take_handed(std::string_view handed, std::string& acks) {
  if (handed.empty())
    return true;
  acks.append(handed);
  return add_handed_references(handed);
}

/// What the objects of a ref bundle hand over, appended to `out`.
void bundle_handed(std::string_view bundle, std::string& out) {
  wire::reader r(bundle);
  wire::bundle_entry e;
  while (e.read(r))
    out.append(e.handed);
}

/// take_handed for what the objects of a ref bundle hand over.
bool take_bundle(std::string_view bundle, std::string& acks) {
  if (bundle.empty())
    return true;
  std::string all;
  bundle_handed(bundle, all);
  return take_handed(all, acks);
}

/// take_handed for a result record: its own and its bundle's.
bool take_handed(const wire::done_record& d, std::string& acks) {
  if (d.refs.empty())
    return take_handed(d.handed, acks);
  std::string all(d.handed);
  bundle_handed(d.refs, all);
  return take_handed(all, acks);
}

/// Runs `f` on each result record of a batch from a worker, once the node
/// holds its own references to what the record hands over (take_handed).
template <class F>
void for_each_done(const std::string& batch, const char* who, std::string& acks, F&& f) {
  wire::reader records(batch);
  while (records.ok()) {
    auto rec = records.get_bytes();
    if (!records.ok())
      break;
    wire::done_record d;
    if (!d.read(rec)) {
      log().error("weft: {} sent a corrupted result record ({} bytes); ignored", who, rec.size());
      break;
    }
    if (!take_handed(d, acks)) {
      static const std::string dropped = untakeable_message("a result"); // (records are read after this loop)
      log().error("{} (from {})", dropped, who);
      d.st = wire::status::failed;
      d.payload = dropped;
      d.stored = false;
      d.handed = {};
      d.refs = {};
    } else if (d.st != wire::status::ok && d.st != wire::status::ok_exit) {
      // An error record hands over what a result encoded half-way had
      // raised (its own and its bundle's objects'): nothing reads it.
      release_dropped(d);
      d.handed = {};
      d.refs = {};
    }
    f(d);
  }
}

/// Whether the worker's retry_on type tests matched the exception an
/// exception record carries.
bool exception_matched(std::string_view payload) {
  std::string type, message;
  bool matched = false;
  try {
    decode_each(payload, type, message, matched);
  } catch (const serialization_error&) {
    return false;
  }
  return matched;
}

std::string describe_status(int status) {
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char* abbrev = ::sigabbrev_np(sig);
    return "was killed by signal " + std::to_string(sig) + (abbrev ? std::string(" (SIG") + abbrev + ")" : "");
  }
  if (WIFEXITED(status))
    return "exited with code " + std::to_string(WEXITSTATUS(status));
  return "ended (status " + std::to_string(status) + ")";
}

/// The command line this process was started with.
std::vector<std::string> own_command_line() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  std::size_t pos = 0;
  while (pos < all.size()) {
    auto end = all.find('\0', pos);
    if (end == std::string::npos)
      end = all.size();
    args.push_back(all.substr(pos, end - pos));
    pos = end + 1;
  }
  return args;
}

int pidfd_open(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

void write_all(int fd, const std::string& s) {
  const char* p = s.data();
  std::size_t left = s.size();
  while (left > 0) {
    auto n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return;
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
}

caf::behavior node_behavior(caf::event_based_actor*, process_node* node) {
  return {
    [node](wire::hello_atom, const std::string& token, std::int32_t id, std::int32_t pid, const std::string& build_id,
           const caf::actor& who, const caf::actor& ctl) { node->on_hello(token, id, pid, build_id, who, ctl); },
    [node](wire::actor_flush_atom, std::int32_t worker) { node->flush_actor(worker); },
    [node](wire::result_flush_atom, std::int32_t worker) { node->flush_results(worker); },
  };
}

const int node_key = 0;
/// One reader of the lanes at a time: the reader thread, or a thread that
/// waits for a cell and reads meanwhile (help_read_lanes). The flag also
/// guards g_lane_node and g_lane_generation for the reader: a node stops
/// only after it took the flag, so whoever holds it may use the node.
/// 0: free; 1: held; 2: held, and a thread may sleep on it (lock_drain):
/// whoever holds it may handle a message for long (a large result to
/// read, the next task's arguments to write), and no one waits by spinning.
std::atomic<std::uint32_t> g_draining{0};
thread_local bool tls_draining = false; ///< this thread holds the flag
/// The node whose lanes waiting threads read (null once it stops), and its
/// generation (a node that starts later is another one, at any address).
std::atomic<process_node*> g_lane_node{nullptr};
std::uint64_t g_lane_generation = 0;
/// Guards g_lane_node and g_lane_generation (with the flag: a node starts
/// and stops holding both) for threads that begin or end helping, which
/// must not wait for the flag: their get would wait for whatever its
/// holder handles, past its timeout.
std::mutex g_lane_node_mtx;
/// The generation of the node this thread counts itself a helper of.
thread_local std::uint64_t tls_helping = 0;

bool try_drain() noexcept {
  std::uint32_t free = 0;
  if (g_draining.load(std::memory_order_relaxed) != 0 ||
      !g_draining.compare_exchange_strong(free, 1, std::memory_order_acquire, std::memory_order_relaxed))
    return false;
  tls_draining = true;
  return true;
}

void end_drain() noexcept {
  tls_draining = false;
  if (g_draining.exchange(0, std::memory_order_release) == 2)
    futex_wake_all(g_draining);
}

/// Takes the flag; sleeps while another thread holds it.
void lock_drain() noexcept {
  for (int i = 0; i < 64; ++i) {
    if (try_drain())
      return;
    cpu_relax();
  }
  while (g_draining.exchange(2, std::memory_order_acquire) != 0)
    futex_wait(g_draining, 2, 0);
  tls_draining = true;
}

// The wait helper. A thread that already reads the lanes (a message's
// handler waits for something) does nothing: the flag is not reentrant.

void help_read_lanes() noexcept {
  if (tls_draining || !try_drain())
    return;
  if (process_node* n = g_lane_node.load(std::memory_order_relaxed))
    n->drain_lanes();
  end_drain();
}

void begin_helping() noexcept {
  if (tls_draining)
    return;
  std::lock_guard<std::mutex> lock(g_lane_node_mtx);
  if (process_node* n = g_lane_node.load(std::memory_order_relaxed)) {
    n->helping(true);
    tls_helping = g_lane_generation;
  }
}

void end_helping() noexcept {
  if (tls_draining || tls_helping == 0)
    return;
  std::lock_guard<std::mutex> lock(g_lane_node_mtx);
  if (process_node* n = g_lane_node.load(std::memory_order_relaxed); n && g_lane_generation == tls_helping)
    n->helping(false);
  tls_helping = 0;
}

const wait_helper g_lane_helper{&begin_helping, &help_read_lanes, &end_helping};

} // namespace

namespace {

std::atomic<actor_call_forwarder> g_forwarder{nullptr};
std::atomic<const actor_maker*> g_maker{nullptr};
std::atomic<std::int64_t> g_worker_monitors{0};

/// A task that a task in a worker submitted: code refs and argument bytes
/// as the worker sent them (and the refs they carry); its one result stays
/// bytes and goes back to that worker.
class forwarded_task final : public task_base {
public:
  forwarded_task(const void* fn, remote_invoker inv, std::shared_ptr<const task_options> options, std::string args,
                 std::vector<carried_ref> arg_refs, std::shared_ptr<worker_ledger> submitter) :
    task_base(fn, std::move(options), std::span<object_ptr>(&ret_, 1), {}),
    inv_(inv),
    args_(std::move(args)),
    arg_refs_(std::move(arg_refs)),
    submitter_(std::move(submitter)),
    ret_(new value_object<forwarded_result>()) {}
  void invoke() override { throw error("weft: a task submitted in a worker process runs only in worker processes"); }
  remote_invoker invoker() const noexcept override { return inv_; }
  void encode_arguments(std::string& out) const override {
    out += args_;
    for (const auto& r : arg_refs_)
      encode_ref(r.cell.get(), r.ops); // the codec of the record collects them
  }
  /// Keeps the bytes, with the refs and store references of the record's
  /// codec, for the worker that submitted it.
  void decode_results(std::string_view in) override { store_forwarded_result(*ret_.get(), in); }
  const object_ptr& result() const noexcept { return ret_; }

private:
  remote_invoker inv_;
  std::string args_;
  std::vector<carried_ref> arg_refs_;
  /// The submitting worker's store references, which args_ may name
  /// without holding one: if it dies, they are released after this task.
  std::shared_ptr<worker_ledger> submitter_;
  object_ptr ret_;
};

/// Sends a forwarded task's end to the worker that submitted it.
struct forward_reply final : completion_waiter {
  process_node* node;
  int worker;
  std::uint64_t seq;
  object_ptr cell;
  forward_reply(process_node* n, int w, std::uint64_t s, object_ptr o) :
    node(n),
    worker(w),
    seq(s),
    cell(std::move(o)) {}
  void on_complete(object_state& obj) noexcept override {
    std::string payload;
    auto kind = wire::result_kind::ok;
    std::vector<carried_ref> refs;
    std::string handed;
    try {
      if (!obj.failed()) {
        const auto& r = static_cast<value_object<forwarded_result>&>(obj).value();
        payload = r.bytes;
        refs = r.refs;
        handed = r.handed;
        // A big result goes back in the store, its block handed over (the
        // last of the handed references: released with them if its worker is gone).
        std::string* before = collect_handed_references(&handed);
        const bool stored = !stash_big_bytes(payload, true).empty();
        collect_handed_references(before);
        if (stored)
          kind = wire::result_kind::ok_stored;
      } else {
        kind = static_cast<wire::result_kind>(encode_error(obj.error(), payload));
      }
    } catch (...) {
      kind = wire::result_kind::other;
      payload.clear();
      encode_each(payload, std::string("weft::error"), std::string("weft: the result could not be sent back"));
    }
    node->send_result(worker, seq, static_cast<std::uint8_t>(kind), std::move(payload), refs, handed);
    delete this;
  }
};

/// Sends an object's value to the worker whose proxy asked for it, once
/// the object is done.
struct fetch_reply final : completion_waiter {
  process_node* node;
  int worker;
  std::uint64_t id;
  carried_ref ref;
  fetch_reply(process_node* n, int w, std::uint64_t i, carried_ref r) : node(n), worker(w), id(i), ref(std::move(r)) {}
  void on_complete(object_state&) noexcept override {
    node->send_value(worker, id, ref);
    delete this;
  }
};

} // namespace

void set_actor_call_forwarder(actor_call_forwarder f) noexcept { g_forwarder.store(f, std::memory_order_release); }

void set_actor_maker(const actor_maker* m) noexcept { g_maker.store(m, std::memory_order_release); }

std::int64_t worker_monitors_registered() noexcept { return g_worker_monitors.load(std::memory_order_acquire); }

void count_worker_monitor(int delta) noexcept { g_worker_monitors.fetch_add(delta, std::memory_order_acq_rel); }

actor_reply::~actor_reply() {
  if (!taken)
    release_handed_references(refs.handed);
}

void store_forwarded_result(object_state& cell, std::string_view bytes) {
  forwarded_result r{std::string(bytes), {}, {}};
  if (auto* table = dynamic_cast<ref_table*>(current_ref_codec())) {
    for (const auto& [id, ref] : table->refs)
      r.refs.push_back(ref);
    r.handed = table->handed; // passed on with the bytes
  }
  static_cast<value_object<forwarded_result>&>(cell).emplace(std::move(r));
}

process_node& process_node::of(runtime& rt) {
  return static_cast<process_node&>(
    rt.service(&node_key, [](runtime& r) -> runtime_service* { return new process_node(r); }));
}

process_node::process_node(runtime& rt) :
  rt_(rt),
  token_(random_token()),
  modules_(module_table::loaded()),
  modules_wire_(modules_.encode()),
  start_timeout_(rt.cfg().worker_start_timeout) {
  if (modules_.main_build_id().empty())
    throw error("weft: worker processes need the executable to carry a GNU build id (link with "
                "-Wl,--build-id, the default of Debian's g++); it names the build workers must match");
  caf_spawn_scope spawn_scope; // the spawn and publish below run on a user thread
  node_ = std::make_unique<caf::actor>(rt.caf_system().spawn(node_behavior, this));
  auto port = rt.caf_system().middleman().publish(*node_, 0, "127.0.0.1", true);
  if (!port) {
    caf::anon_send_exit(*node_, caf::exit_reason::user_shutdown);
    throw error("weft: cannot listen for worker processes on 127.0.0.1: " + rt.caf_system().render(port.error()));
  }
  port_ = *port;
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  // The store goes to fd 4 of each worker. Its own fd may be a low number
  // that another of the spawn's dup2s overwrites first (the store is made
  // at init, before most other fds): spawn from a copy above them all.
  if (shm_arena* store = node_store())
    store_fd_ = ::fcntl(store->fd(), F_DUPFD_CLOEXEC, 64);
  bell_ = doorbell_map::create();
  reader_ = std::thread([this] { read_lanes(); });
  lock_drain();
  {
    std::lock_guard<std::mutex> lock(g_lane_node_mtx);
    g_lane_node.store(this, std::memory_order_relaxed);
    ++g_lane_generation;
  }
  end_drain();
  set_wait_helper(&g_lane_helper);
  io_ = std::thread([this] { io_loop(); });
  log().info("worker-process node listening on 127.0.0.1:{}", port_);
}

process_node::~process_node() { stop(); }

void process_node::wake_io() {
  std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

code_ref process_node::locate(const void* code, const task_base& t) {
  return locate_code(code, "task '" + runtime::task_name(t) + "'");
}

code_ref process_node::locate_code(const void* code, const std::string& what) {
  // Called with mtx_ held.
  if (auto it = code_cache_.find(code); it != code_cache_.end())
    return it->second;
  auto ref = modules_.locate(code);
  if (!ref) {
    modules_ = module_table::loaded(); // a library loaded since
    modules_wire_ = modules_.encode();
    ref = modules_.locate(code);
  }
  if (!ref)
    throw error("weft: " + what + " cannot run in a worker process: its code is in no module with a build id");
  code_cache_.emplace(code, *ref);
  return *ref;
}

void process_node::locate_job_code(job& j) {
  const task_base& t = *j.t;
  j.invoker = locate(reinterpret_cast<const void*>(t.invoker()), t);
  j.fn = locate(t.fn_id(), t);
  if (const auto& filter = t.options().retry_exceptions)
    for (auto m : filter->matchers())
      wire::put_code_ref(j.matchers, locate_code(reinterpret_cast<const void*>(m),
                                                 "a retry_on type test of task '" + runtime::task_name(t) + "'"));
}

void process_node::dispatch(task_base* t) {
  job j;
  j.t = t;
  try {
    {
      ref_collector refs;
      ref_codec_scope scope(&refs);
      t->encode_arguments(j.args);
      j.refs = std::move(refs.refs);
    }
    j.args_block = stash_big_bytes(j.args, false); // (a worker reads big ones in the store)
    std::lock_guard<std::mutex> lock(mtx_);
    locate_job_code(j);
    if (stopping_)
      throw runtime_shutdown_error("weft: task '" + runtime::task_name(*t) + "' did not run: the runtime shut down");
    const auto seq = ++next_seq_;
    jobs_.emplace(seq, std::move(j));
    pending_.push_back(seq);
    pump_locked();
    return;
  } catch (...) {
    // Not finish(): that would dispatch the next task from here, and a run
    // of tasks that cannot be sent would recurse. Executors pick it up.
    rt_.finish_remote(t, std::current_exception());
  }
}

void process_node::append_call(std::string& batch, std::uint64_t seq, const job& j, int worker) {
  std::string rec;
  const std::string ids = lend_locked(worker, j.refs);
  wire::call_record{seq, j.invoker, j.fn, j.args, j.matchers, ids, !j.args_block.empty()}.write(rec);
  wire::writer(batch).put_bytes(rec);
}

std::string process_node::lend_locked(int worker, const std::vector<carried_ref>& refs) {
  if (refs.empty())
    return {};
  auto& table = lent_[worker];
  for (const auto& r : refs) {
    auto& e = table[r.cell->id().value];
    if (!e.ref.cell)
      e.ref = r;
    ++e.count;
  }
  return packed_ids(refs);
}

const void* process_node::address_locked(code_ref c) const {
  const auto& mods = modules_.modules();
  if (c.module >= mods.size())
    return nullptr;
  const auto a = mods[c.module].base + c.offset;
  for (auto [b, e] : mods[c.module].code)
    if (a >= b && a < e)
      return reinterpret_cast<const void*>(a);
  return nullptr;
}

bool process_node::pin_locked(int worker, std::string_view bundle, ref_table& out) {
  if (bundle.empty())
    return true;
  auto table = lent_.find(worker);
  wire::reader r(bundle);
  wire::bundle_entry e;
  bool ok = true;
  while (e.read(r)) {
    if (!ok) { // after a refusal: only give back what the rest hands over
      release_handed_references(e.handed);
      continue;
    }
    if (e.k == wire::bundle_entry::kind::held) {
      const lent* found = nullptr;
      if (table != lent_.end())
        if (auto it = table->second.find(e.id); it != table->second.end())
          found = &it->second;
      if (!found) {
        log().error("weft: worker {} sent a ref to {}, which it does not hold", worker, to_string(object_id{e.id}));
        ok = false;
        continue;
      }
      out.refs[e.id] = found->ref;
      continue;
    }
    // An object of the worker's own: make the node's copy, with its id.
    auto ops = reinterpret_cast<ref_ops_fn>(const_cast<void*>(address_locked(e.ops)));
    if (!ops) {
      release_handed_references(e.handed);
      ok = false;
      continue;
    }
    object_ptr cell;
    try {
      if (e.k == wire::bundle_entry::kind::value) {
        ref_codec_scope scope(&out); // refs inside it come before it in the bundle
        cell = object_ptr(ops(ref_op::make_ready, nullptr, e.payload, nullptr));
      } else {
        cell = object_ptr(ops(ref_op::make_pending, nullptr, {}, nullptr));
        cell->complete_error(rebuild_error(static_cast<error_kind>(e.err), e.payload));
      }
    } catch (...) {
      // (The store references a value that failed half-way had adopted are
      // freed with it; the rest stay: a leak, never a double release.)
      cell = object_ptr(ops(ref_op::make_pending, nullptr, {}, nullptr));
      cell->complete_error(std::current_exception());
    }
    cell->assign_id(object_id{e.id});
    out.refs[e.id] = carried_ref{std::move(cell), ops};
  }
  return ok && r.ok();
}

void process_node::top_up_locked(worker& w, std::string& batch) {
  if (w.state != wstate::busy || w.blocked || w.assigned.empty() || w.last_run_us > pipeline_below_us)
    return;
  const task_base* front = jobs_.at(w.assigned.front()).t;
  if (front->options().max_calls.value_or(0) > 0)
    return;
  while (w.assigned.size() < pipeline_depth) {
    task_base* t = rt_.sched().take_follower(front->demand);
    if (!t)
      return;
    if (t->options().max_calls.value_or(0) > 0) { // counted per worker: never behind another task
      if (!rt_.sched().requeue_follower(t))
        orphans_.push_back(t);
      return;
    }
    job j;
    j.t = t;
    try {
      ref_collector refs;
      ref_codec_scope scope(&refs);
      t->encode_arguments(j.args);
      j.refs = std::move(refs.refs);
      locate_job_code(j);
    } catch (...) {
      failed_followers_.emplace_back(t, std::current_exception());
      continue;
    }
    const auto seq = ++next_seq_;
    j.worker = w.id;
    auto& placed = jobs_.emplace(seq, std::move(j)).first->second;
    w.assigned.push_back(seq);
    append_call(batch, seq, placed, w.id);
  }
}

void process_node::pump_locked() {
  while (!pending_.empty()) {
    worker* idle = nullptr;
    for (auto& [id, w] : workers_)
      if (w.state == wstate::idle) {
        idle = &w;
        break;
      }
    if (!idle)
      break;
    auto seq = pending_.front();
    pending_.pop_front();
    auto it = jobs_.find(seq);
    if (it == jobs_.end())
      continue;
    std::string batch;
    idle->state = wstate::busy;
    idle->assigned.push_back(seq);
    it->second.worker = idle->id;
    append_call(batch, seq, it->second, idle->id);
    top_up_locked(*idle, batch);
    idle->link->post_to_worker(lane_kind::call, std::move(batch));
  }
  const int want = static_cast<int>(pending_.size()) - starting_ - to_spawn_;
  if (want > 0 && !stopping_) {
    to_spawn_ += want;
    wake_io();
  }
}

void process_node::on_hello(const std::string& token, std::int32_t id, std::int32_t pid, const std::string& build_id,
                            const caf::actor& who, const caf::actor& ctl) {
  std::lock_guard<std::mutex> lock(mtx_);
  // The worker was recorded before it was started (spawn_one), so its
  // hello can come before posix_spawn returns: then its pid is not known
  // yet, and the id (from its environment) and the token vouch for it.
  worker* w = nullptr;
  if (auto it = workers_.find(id);
      it != workers_.end() && it->second.state == wstate::starting && (it->second.pid < 0 || it->second.pid == pid))
    w = &it->second;
  if (!w || token != token_) {
    log().warn("refused a worker connection from pid {}: not a worker this node started", pid);
    caf::anon_send(who, wire::refuse_atom::value, std::string("not a worker this driver started"));
    return;
  }
  if (build_id != modules_.main_build_id()) {
    w->refused = "worker process " + std::to_string(pid) + " runs a different build of the program (build id " +
                 build_id + "; the driver's is " + modules_.main_build_id() +
                 "): workers must run the driver's own executable";
    log().error("weft: {}", w->refused);
    caf::anon_send(who, wire::refuse_atom::value, w->refused);
    return;
  }
  w->actor = std::make_unique<caf::actor>(who);
  w->ctl = std::make_unique<caf::actor>(ctl);
  caf::anon_send(who, wire::welcome_atom::value, modules_wire_);
  if (w->for_actor) {
    // Its one job: build the actor's object (it takes no tasks).
    w->state = wstate::busy;
    w->link->post_to_worker(lane_kind::actor_create, std::exchange(w->create, std::string()));
    return;
  }
  w->state = wstate::idle;
  --starting_;
  pump_locked();
}

void process_node::on_done(std::int32_t from, const std::string& batch) {
  // (task, error, whether its resources go back) for each finished task
  struct finished {
    task_base* t;
    wire::done_record d;
    bool gives_back;
    ref_table refs;      ///< the refs its result carries
    bool refs_ok = true; ///< false: its bundle was refused
  };
  std::vector<finished> done;
  std::vector<std::pair<task_base*, std::exception_ptr>> failed;
  std::vector<task_base*> orphans;
  {
    std::lock_guard<std::mutex> lock(mtx_);
    std::unordered_map<int, std::string> top_ups;
    std::string acks;
    for_each_done(batch, "a worker", acks, [&](const wire::done_record& d) {
      if (auto held = cancelled_in_flight_.extract(d.seq); !held.empty()) {
        held.mapped().t->release(); // its worker is done with the arguments
        release_dropped(d);
        return;
      }
      auto it = jobs_.find(d.seq);
      if (it == jobs_.end()) {
        release_dropped(d); // its worker died meanwhile and the task was settled
        return;
      }
      job& j = it->second;
      task_base* t = j.t;
      auto wit = workers_.find(j.worker);
      if (j.worker != from || wit == workers_.end() || wit->second.assigned.empty() ||
          wit->second.assigned.front() != d.seq) {
        // Not this worker's current task any more (also: a result its dead
        // worker sent before dying, while the task runs again elsewhere).
        release_dropped(d);
        return;
      }
      worker& w = wit->second;
      w.assigned.pop_front();
      w.last_run_us = d.run_us;
      if (j.blocked) { // (it said it went on before it finished; this is only a safety net)
        rt_.sched().reacquire_cpu(t);
        j.blocked = false;
      }
      w.blocked = false;
      // An exception retried as the task's options say: true, or a
      // retry_on<E...>() list whose type tests the worker ran on the
      // exception itself. It goes to the back of the same worker's line,
      // which keeps holding the resources.
      if (d.st == wire::status::exception && !t->cancel_requested.load(std::memory_order_acquire) &&
          t->retries_left != 0 && t->options().retry_exceptions &&
          (t->options().retry_exceptions->retries_everything() || exception_matched(d.payload))) {
        if (t->retries_left > 0)
          --t->retries_left;
        w.assigned.push_back(d.seq);
        append_call(top_ups[w.id], d.seq, j, w.id);
        return;
      }
      const bool gives_back = w.assigned.empty();
      const int max_calls = t->options().max_calls.value_or(0);
      const int calls = ++w.calls[t->fn_id()];
      if (gives_back) {
        if (max_calls > 0 && calls >= max_calls) {
          w.state = wstate::retiring;
          caf::anon_send(*w.actor, wire::retire_atom::value);
        } else {
          w.state = wstate::idle;
        }
      }
      done.push_back({t, d, gives_back, {}, true});
      done.back().refs_ok = pin_locked(w.id, d.refs, done.back().refs);
      jobs_.erase(it);
    });
    acknowledge_locked(from, std::move(acks));
    for (auto& [id, w] : workers_)
      top_up_locked(w, top_ups[id]);
    for (auto& [id, b] : top_ups)
      if (!b.empty())
        if (auto wit = workers_.find(id); wit != workers_.end() && wit->second.actor)
          wit->second.link->post_to_worker(lane_kind::call, std::move(b));
    failed.swap(failed_followers_);
    orphans.swap(orphans_);
    pump_locked();
  }
  for (auto& f : done) {
    std::exception_ptr err;
    try {
      switch (f.d.st) {
      case wire::status::ok:
      case wire::status::ok_exit: { // (tasks never send it)
        if (!f.refs_ok) {
          release_handed_references(f.d.handed); // (nothing will read them)
          throw serialization_error("weft: the result of task '" + runtime::task_name(*f.t) +
                                    "' names objects its worker does not hold (corrupted input)");
        }
        std::string_view payload = f.d.payload, handed = f.d.handed;
        stored_blob block; // (a big result: decoded where it lies in the store)
        if (f.d.stored) {
          handed.remove_suffix(sizeof(std::uint64_t)); // the block's own, which the next line takes
          try {
            payload = take_stashed_bytes(payload, f.d.handed, block);
          } catch (...) {
            release_handed_references(handed);
            throw;
          }
        }
        f.refs.handed = handed; // (a forwarded task passes them on)
        ref_codec_scope scope(&f.refs);
        f.t->decode_results(payload);
        break;
      }
      case wire::status::exception: {
        std::string type, message;
        bool matched = false;
        decode_each(f.d.payload, type, message, matched);
        err = std::make_exception_ptr(task_error(type, message, {runtime::task_name(*f.t)}));
        break;
      }
      case wire::status::failed:
        err = std::make_exception_ptr(serialization_error(std::string(f.d.payload)));
        break;
      }
    } catch (...) {
      err = std::current_exception();
    }
    if (f.gives_back)
      finish(f.t, err);
    else
      finish_follower(f.t, err);
  }
  settle(failed, orphans);
}

void process_node::settle(std::vector<std::pair<task_base*, std::exception_ptr>>& failed,
                          std::vector<task_base*>& orphans) {
  for (auto& [t, e] : failed)
    finish_follower(t, e);
  for (task_base* t : orphans)
    finish_follower(t, std::make_exception_ptr(runtime_shutdown_error("weft: task '" + runtime::task_name(*t) +
                                                                      "' did not run: the runtime shut down")));
}

std::exception_ptr process_node::cancelled_error(task_base* t, std::exception_ptr err) {
  if (t->cancel_requested.load(std::memory_order_acquire))
    return std::make_exception_ptr(
      task_cancelled_error("weft: task '" + runtime::task_name(*t) + "' was cancelled while it ran"));
  return err;
}

void process_node::finish(task_base* t, std::exception_ptr err) {
  // The next task whose resources are now free goes straight to a worker
  // from here, without a round through an executor.
  if (task_base* next = rt_.finish_remote(t, cancelled_error(t, err), true))
    dispatch(next);
}

void process_node::finish_follower(task_base* t, std::exception_ptr err) {
  rt_.finish_remote_passing_resources(t, cancelled_error(t, err));
}

void process_node::cancel(task_base* t, bool force) {
  std::unique_lock<std::mutex> lock(mtx_);
  for (auto it = jobs_.begin(); it != jobs_.end(); ++it) {
    if (it->second.t != t)
      continue;
    auto wit = workers_.find(it->second.worker);
    if (wit == workers_.end()) {
      // Waiting for a worker: it never runs.
      std::erase(pending_, it->first);
      jobs_.erase(it);
      lock.unlock();
      rt_.finish_remote(t, std::make_exception_ptr(task_cancelled_error("weft: task '" + runtime::task_name(*t) +
                                                                        "' was cancelled before it ran")));
      return;
    }
    worker& w = wit->second;
    // The worker's control actor hears it even while a task runs: the
    // running task sees is_cancelled(), a queued one is skipped there.
    caf::anon_send(*w.ctl, wire::cancel_atom::value, it->first);
    if (!w.assigned.empty() && w.assigned.front() == it->first) {
      // The first in the worker's line is (or is about to be) running.
      if (force)
        ::kill(w.pid, SIGKILL); // on_exit finishes the task as cancelled
      return;
    }
    // Queued behind another task on that worker: it is done now; the
    // worker skips it, and its result record finds no job. The task
    // object (its arguments) lives until that record, or the worker's
    // end: the worker may be reading them right now (a weft::array in the
    // store must not be freed under it).
    std::erase(w.assigned, it->first);
    t->add_ref();
    cancelled_in_flight_.emplace(it->first, cancelled_job{w.id, t, std::move(it->second.args_block)});
    jobs_.erase(it);
    lock.unlock();
    finish_follower(t, std::make_exception_ptr(task_cancelled_error("weft: task '" + runtime::task_name(*t) +
                                                                    "' was cancelled before it ran")));
    return;
  }
}

std::vector<std::pair<task_base*, std::exception_ptr>> process_node::on_exit(worker& w, int status) {
  // Called with mtx_ held (by the I/O thread); the caller settles the tasks
  // returned once it has let go of mtx_. Followers come back separately
  // (they hold no resources): requeued, or in failed_followers_/orphans_.
  const auto before = w.state;
  w.state = wstate::dead;
  w.actor.reset();
  w.ctl.reset();
  drop_lane(w.id);   // (the I/O thread read it to the end before: a dead worker writes no more)
  lent_.erase(w.id); // what it borrowed is given back with it
  {
    // Store references handed to it in messages it never read (or never
    // said it took): the node's own go back now.
    std::string unread;
    for (auto [ref, count] : std::exchange(w.handed_out, {}))
      for (std::uint32_t i = 0; i < count; ++i)
        unread.append(reinterpret_cast<const char*>(&ref), sizeof ref);
    release_handed_references(unread);
  }
  nested_.erase(w.id); // its children still run; no one cancels them now
  if (auto m = monitors_.find(w.id); m != monitors_.end()) {
    // Its monitors go with it (dropped once mtx_ is let go).
    for (auto& [seq, registration] : m->second)
      if (registration)
        dropped_monitors_.push_back(std::move(registration));
    monitors_.erase(m);
  }
  std::erase_if(cancelled_in_flight_, [&w](auto& entry) {
    if (entry.second.worker != w.id)
      return false;
    entry.second.t->release();
    return true;
  });
  std::vector<std::pair<task_base*, std::exception_ptr>> done;
  if (w.for_actor) {
    // Told first, so that the actor fails (and may restart) before the
    // calls it waits for see an error.
    const std::string why =
      !w.refused.empty() ? w.refused : "worker process " + std::to_string(w.pid) + " " + describe_status(status);
    if (auto died = std::exchange(w.died, nullptr))
      died(why);
    std::exception_ptr e;
    if (before == wstate::starting)
      e = std::make_exception_ptr(worker_start_error("weft: an actor's worker could not start: " + why));
    else
      e = std::make_exception_ptr(worker_crashed_error("weft: an actor's " + why,
                                                       WIFSIGNALED(status) ? WTERMSIG(status) : 0,
                                                       WIFEXITED(status) ? WEXITSTATUS(status) : -1));
    fail_replies_locked(w, e);
    return done;
  }
  if (before == wstate::starting) {
    --starting_;
    // A worker that never got going: the tasks waiting for one fail
    // rather than wait for workers that cannot start.
    const std::string why = !w.refused.empty() ? w.refused
                                               : "worker process " + std::to_string(w.pid) + " " +
                                                   describe_status(status) + " before it connected";
    if (!stopping_) {
      for (auto seq : pending_) {
        auto it = jobs_.find(seq);
        if (it == jobs_.end())
          continue;
        done.emplace_back(
          it->second.t, std::make_exception_ptr(worker_start_error("weft: task '" + runtime::task_name(*it->second.t) +
                                                                   "' could not start a worker process: " + why)));
        jobs_.erase(it);
      }
      pending_.clear();
      log().error("weft: {}", why);
    }
  }
  // Which call was running: the worker wrote its seq to the progress page
  // before starting it. Calls ahead of it in the line finished, but their
  // results died with the worker; calls behind it never started. Both run
  // again, free of charge; only the running one counts a retry.
  const std::uint64_t crashed = w.started ? w.started->load(std::memory_order_acquire) : 0;
  const bool crashed_in_line = std::find(w.assigned.begin(), w.assigned.end(), crashed) != w.assigned.end();
  std::deque<std::uint64_t> line;
  line.swap(w.assigned);
  bool first = true;
  for (auto seq : line) {
    auto it = jobs_.find(seq);
    const bool holder = first;
    first = false;
    if (it == jobs_.end())
      continue;
    task_base* t = it->second.t;
    if (it->second.blocked) { // it died waiting in get: its CPUs come back before it is retried or finished
      rt_.sched().reacquire_cpu(t);
      it->second.blocked = false;
    }
    const bool cancelled = t->cancel_requested.load(std::memory_order_acquire);
    // No one is blamed when the worker died between calls (or the page
    // says nothing): the first in line is then the one charged, as before.
    const bool blamed = crashed_in_line ? seq == crashed : holder;
    std::exception_ptr err;
    bool again = !cancelled && !stopping_;
    if (blamed && again) {
      if (t->retries_left == 0) {
        again = false;
        const int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
        const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        const int max = t->options().max_retries.value_or(3);
        err = std::make_exception_ptr(
          worker_crashed_error("weft: task '" + runtime::task_name(*t) + "' failed: its worker process " +
                                 std::to_string(w.pid) + " " + describe_status(status) +
                                 " while running it, and no retries are left (max_retries=" + std::to_string(max) + ")",
                               sig, code));
      } else {
        if (t->retries_left > 0)
          --t->retries_left;
        log().warn("weft: worker process {} {} while running task '{}'; retrying ({} retries left)", w.pid,
                   describe_status(status), runtime::task_name(*t), t->retries_left);
      }
    } else if (!again && stopping_ && !cancelled) {
      err = std::make_exception_ptr(runtime_shutdown_error("weft: task '" + runtime::task_name(*t) +
                                                           "' did not finish: the runtime shut down while it ran"));
    }
    if (again) {
      if (holder) { // keeps the line's resources
        it->second.worker = 0;
        pending_.push_front(seq);
        continue;
      }
      jobs_.erase(it);
      if (!rt_.sched().requeue_follower(t))
        orphans_.push_back(t);
      continue;
    }
    jobs_.erase(it);
    if (holder)
      done.emplace_back(t, err); // gives the line's resources back
    else
      failed_followers_.emplace_back(t, err);
  }
  pump_locked();
  return done;
}

void process_node::on_submit(std::int32_t worker_id, std::uint64_t seq, const std::string& record) {
  const void* inv = nullptr;
  const void* fn = nullptr;
  auto options = std::make_shared<task_options>();
  wire::submit_record rec;
  ref_table refs;
  std::exception_ptr refused;
  std::shared_ptr<worker_ledger> submitter;
  {
    std::lock_guard<std::mutex> lock(mtx_);
    const worker* w = connected_locked(worker_id);
    if (!w) { // its worker is gone: no one waits for it
      if (rec.read(record))
        release_bundle(rec.refs);
      return;
    }
    submitter = w->ledger;
    if (!rec.read(record) || !(inv = address_locked(rec.invoker)) || !(fn = address_locked(rec.fn)) ||
        !pin_locked(worker_id, rec.refs, refs))
      refused = std::make_exception_ptr(serialization_error("weft: a worker sent a corrupted task submission"));
  }
  object_ptr cell;
  if (!refused) {
    try {
      bool filter = false, all = false;
      decode_each(rec.options, options->num_cpus, options->num_gpus, options->memory, options->resources,
                  options->max_retries, options->max_calls, options->name, filter, all);
      options->retry_exceptions.reset();
      if (filter) {
        std::vector<exception_filter::matcher> types;
        std::lock_guard<std::mutex> lock(mtx_);
        for (wire::reader r(rec.matchers); r.ok();) {
          code_ref c;
          if (!wire::get_code_ref(r, c))
            break;
          if (const void* m = address_locked(c))
            types.push_back(reinterpret_cast<exception_filter::matcher>(const_cast<void*>(m)));
        }
        options->retry_exceptions = all ? exception_filter(true) : exception_filter(std::move(types));
      }
      std::vector<carried_ref> arg_refs;
      arg_refs.reserve(refs.refs.size());
      for (auto& [id, r] : refs.refs)
        arg_refs.push_back(std::move(r));
      auto* t = new forwarded_task(fn, reinterpret_cast<remote_invoker>(const_cast<void*>(inv)), std::move(options),
                                   std::string(rec.args), std::move(arg_refs), std::move(submitter));
      cell = t->result();
      {
        // Found by seq for a cancel from that worker until it ends.
        std::lock_guard<std::mutex> lock(mtx_);
        if (auto w = workers_.find(worker_id); w != workers_.end() && w->second.ctl)
          nested_[worker_id].emplace(seq, cell);
      }
      auto* reply = new forward_reply(this, worker_id, seq, cell);
      if (!cell->add_waiter(reply))
        delete reply;
      rt_.submit(t, true); // depth-first, like a nested task in local mode; takes t (frees it if it throws)
    } catch (...) {
      if (cell)
        cell->complete_error(std::current_exception()); // its reply goes out from there
      else
        refused = std::current_exception();
    }
  }
  if (refused) {
    object_ptr cell(new value_object<forwarded_result>());
    auto* reply = new forward_reply(this, worker_id, seq, cell);
    if (cell->add_waiter(reply))
      cell->complete_error(refused);
    else
      delete reply;
  }
}

void process_node::on_actor_submit(std::int32_t worker_id, std::uint64_t seq, std::uint64_t holder,
                                   const std::string& record, const std::string& bundle) {
  forwarded_call call;
  call.result = object_ptr(new value_object<forwarded_result>());
  object_ptr holder_cell;
  std::exception_ptr refused;
  {
    std::lock_guard<std::mutex> lock(mtx_);
    const worker* w = connected_locked(worker_id);
    if (!w) { // its worker is gone: no one waits for it
      release_bundle(bundle);
      return;
    }
    call.submitter = w->ledger;
    wire::actor_call_record rec;
    ref_table refs;
    const void* inv = nullptr;
    const void* method = nullptr;
    if (!rec.read(record) || !(inv = address_locked(rec.invoker)) ||
        (!rec.is_virtual && !(method = address_locked(rec.method))) || !pin_locked(worker_id, bundle, refs)) {
      refused = std::make_exception_ptr(serialization_error("weft: a worker sent a corrupted actor call"));
    } else if (auto h = refs.refs.find(holder); h == refs.refs.end()) {
      refused = std::make_exception_ptr(serialization_error("weft: a worker called an actor it holds no handle of"));
    } else {
      // (It stays among the call's refs: the arguments may name it too.)
      holder_cell = h->second.cell;
      if (rec.in_driver)
        call.driver_builder = inv;
      else
        call.invoker = reinterpret_cast<actor_method_invoker>(const_cast<void*>(inv));
      call.method[0] =
        rec.is_virtual ? static_cast<std::uintptr_t>(rec.vword) : reinterpret_cast<std::uintptr_t>(method);
      call.method[1] = static_cast<std::uintptr_t>(rec.adjust);
      call.method_id = method;
      call.coroutine = rec.coroutine;
      call.args = rec.args;
      for (auto& [id, r] : refs.refs)
        call.arg_refs.push_back(std::move(r));
    }
  }
  auto* reply = new forward_reply(this, worker_id, seq, call.result);
  object_ptr result = call.result;
  if (!result->add_waiter(reply)) {
    delete reply;
    return;
  }
  if (!refused) {
    try {
      auto forward = g_forwarder.load(std::memory_order_acquire);
      if (!forward)
        throw error("weft: no actor runtime in the driver");
      forward(*holder_cell.get(), std::move(call));
    } catch (...) {
      refused = std::current_exception();
    }
  }
  if (refused)
    result->complete_error(refused);
}

bool process_node::worker_alive(int id) {
  std::lock_guard<std::mutex> lock(mtx_);
  auto it = workers_.find(id);
  return it != workers_.end() && it->second.state != wstate::dead;
}

process_node::worker* process_node::connected_locked(int worker_id) {
  auto it = workers_.find(worker_id);
  return it == workers_.end() || !it->second.ctl ? nullptr : &it->second;
}

void process_node::on_actor_make(std::int32_t worker_id, std::uint64_t seq, const std::string& record,
                                 const std::string& bundle) {
  forwarded_make make;
  std::exception_ptr refused;
  {
    std::lock_guard<std::mutex> lock(mtx_);
    if (!connected_locked(worker_id)) { // its worker is gone: no one waits for it
      release_bundle(bundle);
      return;
    }
    wire::actor_make_record rec;
    ref_table refs;
    const void* ctor = nullptr;
    const void* dtor = nullptr;
    const void* type = nullptr;
    const void* handle = nullptr;
    if (!rec.read(record) || !(ctor = address_locked(rec.constructor)) || !(dtor = address_locked(rec.destructor)) ||
        !(type = address_locked(rec.type)) || !(handle = address_locked(rec.handle)) ||
        !pin_locked(worker_id, bundle, refs)) {
      refused = std::make_exception_ptr(serialization_error("weft: a worker sent a corrupted actor creation"));
    } else {
      if (rec.in_driver) {
        make.driver_factory = ctor;
      } else {
        make.constructor = reinterpret_cast<actor_constructor>(const_cast<void*>(ctor));
        make.destructor = reinterpret_cast<actor_destructor>(const_cast<void*>(dtor));
      }
      make.type = reinterpret_cast<const std::type_info& (*)() noexcept>(const_cast<void*>(type));
      make.handle_ops = reinterpret_cast<ref_ops_fn>(const_cast<void*>(handle));
      make.args = rec.args;
      make.options = rec.options;
      for (auto& [id, r] : refs.refs)
        make.arg_refs.push_back(std::move(r));
    }
  }
  answer_worker(worker_id, seq, refused, [&make](const actor_maker& m) { return m.make(std::move(make)); });
}

void process_node::answer_worker(int worker_id, std::uint64_t seq, std::exception_ptr refused,
                                 const std::function<forwarded_result(const actor_maker&)>& produce) {
  object_ptr result(new value_object<forwarded_result>());
  auto* reply = new forward_reply(this, worker_id, seq, result);
  if (!result->add_waiter(reply)) {
    delete reply;
    return;
  }
  if (!refused) {
    try {
      const actor_maker* maker = g_maker.load(std::memory_order_acquire);
      if (!maker)
        throw error("weft: no actor runtime in the driver (link weft::weft)");
      static_cast<value_object<forwarded_result>&>(*result.get()).emplace(produce(*maker));
      result->complete_value();
      return;
    } catch (...) {
      refused = std::current_exception();
    }
  }
  result->complete_error(refused);
}

void process_node::on_actor_find(std::int32_t worker_id, std::uint64_t seq, const std::string& record) {
  std::string name, ns;
  const void* type = nullptr;
  const void* handle = nullptr;
  std::exception_ptr refused;
  {
    std::lock_guard<std::mutex> lock(mtx_);
    if (!connected_locked(worker_id))
      return; // its worker is gone: no one waits for it
    wire::reader r(record);
    name = r.get_bytes();
    ns = r.get_bytes();
    code_ref t, h;
    if (!wire::get_code_ref(r, t) || !wire::get_code_ref(r, h) || !r.at_end() || !(type = address_locked(t)) ||
        !(handle = address_locked(h)))
      refused = std::make_exception_ptr(serialization_error("weft: a worker sent a corrupted get_actor"));
  }
  answer_worker(worker_id, seq, refused, [&](const actor_maker& m) {
    const auto type_of = reinterpret_cast<const std::type_info& (*)() noexcept>(const_cast<void*>(type));
    return m.find(name, ns, type_of(), reinterpret_cast<ref_ops_fn>(const_cast<void*>(handle)));
  });
}

void process_node::on_actor_kill(std::int32_t worker_id, std::uint64_t holder, bool no_restart,
                                 const std::string& bundle) {
  object_ptr holder_cell;
  {
    std::lock_guard<std::mutex> lock(mtx_);
    ref_table refs;
    if (workers_.find(worker_id) == workers_.end() || !pin_locked(worker_id, bundle, refs)) {
      log().error("weft: worker {} sent a corrupted kill", worker_id);
      return;
    }
    auto h = refs.refs.find(holder);
    if (h == refs.refs.end()) {
      log().error("weft: worker {} killed an actor it holds no handle of", worker_id);
      return;
    }
    holder_cell = h->second.cell;
  }
  try {
    if (const actor_maker* maker = g_maker.load(std::memory_order_acquire))
      maker->kill(*holder_cell.get(), no_restart);
  } catch (const std::exception& e) {
    log().error("weft: a kill from worker {} failed: {}", worker_id, e.what());
  }
}

void process_node::on_actor_monitor(std::int32_t worker_id, std::uint64_t seq, std::uint64_t holder,
                                    const std::string& bundle) {
  object_ptr holder_cell;
  std::exception_ptr refused;
  {
    std::lock_guard<std::mutex> lock(mtx_);
    if (!connected_locked(worker_id)) { // its worker is gone: no one waits for it
      release_bundle(bundle);
      return;
    }
    ref_table refs;
    if (!pin_locked(worker_id, bundle, refs))
      refused = std::make_exception_ptr(serialization_error("weft: a worker sent a corrupted monitor"));
    else if (auto h = refs.refs.find(holder); h == refs.refs.end())
      refused = std::make_exception_ptr(serialization_error("weft: a worker monitored an actor it holds no handle of"));
    else
      holder_cell = h->second.cell;
    if (!refused)
      monitors_[worker_id].emplace(seq, nullptr); // (an end that comes at once finds it)
  }
  std::shared_ptr<void> registration;
  if (!refused) {
    try {
      const actor_maker* maker = g_maker.load(std::memory_order_acquire);
      if (!maker)
        throw error("weft: no actor runtime in the driver (link weft::weft)");
      registration = maker->watch(*holder_cell.get(),
                                  [this, worker_id, seq](std::uint64_t actor, bool normal, const std::string& cause) {
                                    monitor_fired(worker_id, seq, actor, normal, cause);
                                  });
    } catch (...) {
      refused = std::current_exception();
    }
  }
  {
    std::lock_guard<std::mutex> lock(mtx_);
    if (auto m = monitors_.find(worker_id); m != monitors_.end()) {
      if (auto it = m->second.find(seq); it != m->second.end()) {
        if (refused)
          m->second.erase(it);
        else
          it->second = std::move(registration); // else: it fired, or the worker died, meanwhile
        if (m->second.empty())
          monitors_.erase(m);
      }
    }
  }
  registration.reset(); // (unregisters one whose worker died meanwhile; takes the actor's lock)
  // The answer goes after an end that came at once: the worker has run the
  // callback when its monitor() returns, as in the driver.
  std::string payload;
  auto kind = wire::result_kind::ok;
  if (refused)
    kind = static_cast<wire::result_kind>(encode_error(refused, payload));
  send_result(worker_id, seq, static_cast<std::uint8_t>(kind), std::move(payload), {}, {});
}

void process_node::monitor_fired(int worker_id, std::uint64_t seq, std::uint64_t actor, bool normal,
                                 const std::string& cause) {
  std::shared_ptr<void> registration; // (let go after mtx_)
  {
    std::lock_guard<std::mutex> lock(mtx_);
    auto m = monitors_.find(worker_id);
    if (m == monitors_.end())
      return; // its worker died: no one to tell
    auto it = m->second.find(seq);
    if (it == m->second.end())
      return;
    registration = std::move(it->second);
    m->second.erase(it);
    if (m->second.empty())
      monitors_.erase(m);
  }
  std::string payload;
  wire::writer w(payload);
  w.put(actor);
  w.put(static_cast<std::uint8_t>(normal ? 1 : 0));
  w.put_bytes(cause);
  send_result(worker_id, seq, static_cast<std::uint8_t>(wire::result_kind::monitor_down), std::move(payload), {}, {});
}

void process_node::on_cancel(std::int32_t worker_id, std::uint64_t target, std::uint64_t holder, bool force,
                             const std::string& bundle) {
  object_ptr cell;
  {
    std::lock_guard<std::mutex> lock(mtx_);
    if (workers_.find(worker_id) == workers_.end()) {
      release_bundle(bundle);
      return;
    }
    if (target != 0) {
      // A task it submitted; not found: it ended (its end is on its way).
      if (auto n = nested_.find(worker_id); n != nested_.end())
        if (auto it = n->second.find(target); it != n->second.end())
          cell = it->second;
    } else {
      ref_table refs;
      if (!pin_locked(worker_id, bundle, refs)) {
        log().error("weft: worker {} sent a corrupted cancel", worker_id);
        return;
      }
      auto h = refs.refs.find(holder);
      if (h == refs.refs.end()) {
        log().error("weft: worker {} cancelled an object it does not hold", worker_id);
        return;
      }
      cell = h->second.cell;
    }
  }
  if (!cell)
    return;
  // As weft::cancel() in the driver: the task producing it, if any.
  if (task_base* t = cell->acquire_producer()) {
    rt_.cancel(t, force);
    t->release();
  }
}

void process_node::send_result(int worker_id, std::uint64_t seq, std::uint8_t kind, std::string payload,
                               const std::vector<carried_ref>& refs, const std::string& handed) {
  object_ptr ended; // (let go after mtx_)
  std::lock_guard<std::mutex> lock(mtx_);
  if (auto n = nested_.find(worker_id); n != nested_.end()) {
    if (auto it = n->second.find(seq); it != n->second.end()) {
      ended = std::move(it->second);
      n->second.erase(it);
      if (n->second.empty())
        nested_.erase(n);
    }
  }
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || !it->second.ctl || it->second.state == wstate::dead) {
    release_handed_references(handed); // its worker is gone: no one reads it
    return;
  }
  const std::string ids = lend_locked(worker_id, refs);
  worker& w = it->second;
  wire::writer out(w.results_out);
  out.put(seq);
  out.put(kind);
  out.put_bytes(payload);
  out.put_bytes(ids);
  out.put_bytes(handed);
  handed_to_locked(w, handed);
  // Results that end while others wait to leave go in the same message:
  // the node actor sends them when it next runs.
  if (!w.results_flush) {
    w.results_flush = true;
    caf::anon_send(*node_, wire::result_flush_atom::value, static_cast<std::int32_t>(worker_id));
  }
}

void process_node::flush_results(std::int32_t worker_id) {
  std::lock_guard<std::mutex> lock(mtx_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end())
    return;
  worker& w = it->second;
  w.results_flush = false;
  if (!w.results_out.empty() && w.ctl && w.state != wstate::dead)
    caf::anon_send(*w.ctl, wire::result_atom::value, std::exchange(w.results_out, std::string()));
}

void process_node::on_fetch(std::int32_t worker_id, std::uint64_t id) {
  carried_ref ref;
  {
    std::lock_guard<std::mutex> lock(mtx_);
    auto table = lent_.find(worker_id);
    if (table == lent_.end())
      return; // a worker that is gone, or that holds nothing
    auto it = table->second.find(id);
    if (it == table->second.end()) {
      log().error("weft: worker {} asked for {}, which it does not hold", worker_id, to_string(object_id{id}));
      return;
    }
    ref = it->second.ref;
  }
  auto* reply = new fetch_reply(this, worker_id, id, ref);
  if (!ref.cell->add_waiter(reply)) {
    delete reply;
    send_value(worker_id, id, ref);
  }
}

void process_node::send_value(int worker_id, std::uint64_t id, const carried_ref& r) {
  std::string payload, handed;
  auto kind = wire::result_kind::ok;
  ref_collector refs;
  if (r.cell->failed()) {
    kind = static_cast<wire::result_kind>(encode_error(r.cell->error(), payload));
  } else {
    std::string* before = collect_handed_references(&handed);
    try {
      ref_codec_scope scope(&refs);
      hand_over_references hand_over; // the worker's copy owns its own store references
      r.ops(ref_op::encode_value, r.cell.get(), {}, &payload);
      if (!stash_big_bytes(payload, true).empty()) // (a big value: the worker reads it in the store)
        kind = wire::result_kind::ok_stored;
    } catch (...) {
      collect_handed_references(before);
      release_handed_references(handed);
      handed.clear();
      refs.refs.clear();
      kind = static_cast<wire::result_kind>(encode_error(std::current_exception(), payload));
    }
    collect_handed_references(before);
  }
  std::lock_guard<std::mutex> lock(mtx_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || !it->second.ctl || it->second.state == wstate::dead) {
    release_handed_references(handed);
    return;
  }
  const std::string ids = lend_locked(worker_id, refs.refs);
  handed_to_locked(it->second, handed);
  caf::anon_send(*it->second.ctl, wire::value_atom::value, id, static_cast<std::uint8_t>(kind), std::move(payload), ids,
                 std::move(handed));
}

void process_node::on_release(std::int32_t worker_id, const std::string& pairs) {
  std::vector<carried_ref> dropped; // freed after the lock is let go
  std::lock_guard<std::mutex> lock(mtx_);
  auto table = lent_.find(worker_id);
  if (table == lent_.end())
    return;
  constexpr std::size_t pair_size = sizeof(std::uint64_t) + sizeof(std::int64_t);
  for (std::size_t i = 0; i + pair_size <= pairs.size(); i += pair_size) {
    std::uint64_t id = 0;
    std::int64_t count = 0;
    std::memcpy(&id, pairs.data() + i, sizeof id);
    std::memcpy(&count, pairs.data() + i + sizeof id, sizeof count);
    auto it = table->second.find(id);
    if (it == table->second.end())
      continue;
    it->second.count -= count;
    if (it->second.count <= 0) {
      dropped.push_back(std::move(it->second.ref));
      table->second.erase(it);
    }
  }
  if (table->second.empty())
    lent_.erase(table);
}

void process_node::on_blocked(std::int32_t worker_id, std::uint64_t job_seq, bool blocked) {
  std::lock_guard<std::mutex> lock(mtx_);
  auto jit = jobs_.find(job_seq);
  auto wit = workers_.find(worker_id);
  if (jit == jobs_.end() || wit == workers_.end() || jit->second.worker != worker_id || wit->second.assigned.empty() ||
      wit->second.assigned.front() != job_seq)
    return; // not that worker's running task (any more)
  job& j = jit->second;
  if (blocked == j.blocked)
    return;
  j.blocked = blocked;
  worker& w = wit->second;
  w.blocked = blocked;
  if (!blocked) {
    rt_.sched().reacquire_cpu(j.t);
    return;
  }
  rt_.sched().release_cpu(j.t); // other tasks (its nested ones) may start, on new workers if need be
  // The tasks sent ahead behind it in the worker's line may be what it
  // waits for (a producer for its queue.get()): asked back, they run
  // elsewhere. The worker grants it only while this task still runs.
  if (w.assigned.size() > 1 && w.ctl) {
    std::string seqs;
    for (auto it = std::next(w.assigned.begin()); it != w.assigned.end(); ++it)
      seqs.append(reinterpret_cast<const char*>(&*it), sizeof(std::uint64_t));
    caf::anon_send(*w.ctl, wire::recall_atom::value, job_seq, std::move(seqs));
  }
}

void process_node::on_recalled(std::int32_t worker_id, const std::string& seqs) {
  std::vector<std::pair<task_base*, std::exception_ptr>> failed;
  std::vector<task_base*> orphans;
  {
    std::lock_guard<std::mutex> lock(mtx_);
    auto wit = workers_.find(worker_id);
    if (wit == workers_.end())
      return;
    worker& w = wit->second;
    for_each_packed_id(seqs, [&](std::uint64_t seq) {
      if (auto held = cancelled_in_flight_.extract(seq); !held.empty()) {
        held.mapped().t->release(); // (cancelled meanwhile: the worker skips it without a word)
        return;
      }
      // Only one behind the first: a worker grants a recall while the
      // first runs, and says so before its result.
      auto pos =
        w.assigned.empty() ? w.assigned.end() : std::find(std::next(w.assigned.begin()), w.assigned.end(), seq);
      if (pos == w.assigned.end())
        return;
      w.assigned.erase(pos);
      auto it = jobs_.find(seq);
      if (it == jobs_.end())
        return;
      task_base* t = it->second.t;
      jobs_.erase(it);
      if (!rt_.sched().requeue_follower(t)) // (it holds no resources: the first one does)
        orphans_.push_back(t);
    });
    failed.swap(failed_followers_);
    orphans.swap(orphans_);
  }
  settle(failed, orphans);
}

void process_node::fail_replies_locked(worker& w, const std::exception_ptr& e) {
  auto replies = std::move(w.replies);
  w.replies.clear();
  w.call_blocks.clear();
  for (auto& [seq, cell] : replies)
    cell->complete_error(e);
}

int process_node::start_actor(const actor_start& s, object_ptr built, std::function<void(std::string)> died) {
  // Big constructor arguments: the worker reads them in the store.
  std::string big_args;
  stored_blob block;
  if (s.args.size() >= node_store_threshold()) {
    big_args = s.args;
    block = stash_big_bytes(big_args, false);
  }
  std::lock_guard<std::mutex> lock(mtx_);
  if (stopping_)
    throw runtime_shutdown_error("weft: actor " + s.what + " cannot start a worker process: the runtime shut down");
  wire::actor_create_record rec;
  rec.constructor = locate_code(reinterpret_cast<const void*>(s.constructor), "actor " + s.what);
  rec.destructor = locate_code(reinterpret_cast<const void*>(s.destructor), "actor " + s.what);
  rec.args = block.empty() ? std::string_view(s.args) : std::string_view(big_args);
  rec.stored = !block.empty();
  rec.actor_id = s.actor_id;
  rec.restarted = s.restarted;
  rec.name = s.name;
  rec.ns = s.ns;
  rec.concurrency = static_cast<std::uint32_t>(std::max(1, s.concurrency));
  worker w;
  w.id = ++next_worker_;
  const std::string ids = lend_locked(w.id, s.refs);
  rec.refs = ids;
  w.for_actor = true;
  w.start_deadline = std::chrono::steady_clock::now() + start_timeout_;
  rec.write(w.create);
  w.died = std::move(died);
  w.replies.emplace(0, std::move(built));
  if (!block.empty())
    w.call_blocks.emplace(0, std::move(block)); // (until the constructor's reply)
  const int id = w.id;
  workers_.emplace(id, std::move(w));
  actor_spawns_.push_back(id);
  wake_io();
  return id;
}

std::atomic<void (*)(object_state&)> test_after_actor_call_sent{nullptr};

bool process_node::call_actor(int worker_id, actor_method_invoker invoker, const void* method_bytes, bool coroutine,
                              std::string args, const std::vector<carried_ref>& refs, object_ptr reply,
                              const std::string& what) {
  std::uintptr_t words[2];
  std::memcpy(words, method_bytes, sizeof words);
  stored_blob block = stash_big_bytes(args, false); // (big arguments: the worker reads them in the store)
  std::unique_lock<std::mutex> lock(mtx_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || it->second.state == wstate::dead || it->second.ended || !it->second.actor)
    return false;
  worker& w = it->second;
  wire::actor_call_record rec;
  rec.seq = ++next_seq_;
  rec.invoker = locate_code(reinterpret_cast<const void*>(invoker), what);
  rec.is_virtual = (words[0] & 1) != 0;
  if (rec.is_virtual)
    rec.vword = words[0];
  else
    rec.method = locate_code(reinterpret_cast<const void*>(words[0]), what);
  rec.adjust = static_cast<std::int64_t>(words[1]);
  rec.coroutine = coroutine;
  rec.args = args;
  rec.stored = !block.empty();
  const std::string ids = lend_locked(worker_id, refs);
  rec.refs = ids;
  std::string one;
  rec.write(one);
  const bool idle = w.replies.empty();
  w.replies.emplace(rec.seq, std::move(reply));
  if (!block.empty())
    w.call_blocks.emplace(rec.seq, std::move(block));
  if (idle && w.outbox.empty()) {
    // Nothing in flight (a caller waiting for each result): send it now.
    std::string batch;
    wire::writer(batch).put_bytes(one);
    w.link->post_to_worker(lane_kind::actor_call, std::move(batch));
    return true;
  }
  // Calls in flight: collect this one with the calls made meanwhile, and
  // send them in one message when the node actor gets to it.
  wire::writer(w.outbox).put_bytes(one);
  if (!w.flush_scheduled) {
    w.flush_scheduled = true;
    caf::anon_send(*node_, wire::actor_flush_atom::value, static_cast<std::int32_t>(worker_id));
  }
  return true;
}

void process_node::handed_to_locked(worker& w, std::string_view refs) {
  for (std::size_t i = 0; i + sizeof(std::uint64_t) <= refs.size(); i += sizeof(std::uint64_t)) {
    std::uint64_t ref = 0;
    std::memcpy(&ref, refs.data() + i, sizeof ref);
    ++w.handed_out[ref];
  }
}

void process_node::on_taken(int worker_id, std::string_view refs) {
  std::string mine; // released after mtx_ is let go
  {
    std::lock_guard<std::mutex> lock(mtx_);
    auto it = workers_.find(worker_id);
    if (it == workers_.end())
      return;
    auto& out = it->second.handed_out;
    std::size_t unknown = 0;
    for (std::size_t i = 0; i + sizeof(std::uint64_t) <= refs.size(); i += sizeof(std::uint64_t)) {
      std::uint64_t ref = 0;
      std::memcpy(&ref, refs.data() + i, sizeof ref);
      auto h = out.find(ref);
      if (h == out.end()) {
        ++unknown;
        continue;
      }
      if (--h->second == 0)
        out.erase(h);
      mine.append(reinterpret_cast<const char*>(&ref), sizeof ref);
    }
    if (unknown != 0) // (once a message: a corrupt one must not flood the log)
      log().error("weft: worker {} says it took {} store reference(s) it was not handed; ignored", worker_id, unknown);
  }
  release_handed_references(mine);
}

void process_node::acknowledge_locked(int worker_id, std::string refs) {
  if (refs.empty())
    return;
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || !it->second.ctl || it->second.state == wstate::dead)
    return; // (its ledger lists them: released when it is reaped)
  caf::anon_send(*it->second.ctl, wire::ack_atom::value, std::move(refs));
}

void process_node::flush_actor(std::int32_t worker_id) {
  std::lock_guard<std::mutex> lock(mtx_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end())
    return;
  worker& w = it->second;
  w.flush_scheduled = false;
  if (!w.outbox.empty() && w.actor && w.state != wstate::dead && !w.ended)
    w.link->post_to_worker(lane_kind::actor_call, std::exchange(w.outbox, std::string()));
}

void process_node::end_actor(int worker_id, bool graceful) {
  std::lock_guard<std::mutex> lock(mtx_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end())
    return;
  worker& w = it->second;
  w.died = nullptr;
  w.ended = true;
  if (graceful && w.actor && w.state != wstate::dead) {
    w.link->post_to_worker(lane_kind::actor_quit, {});
  } else if (w.pid > 0 && w.state != wstate::dead) {
    ::kill(w.pid, SIGKILL); // (not started yet: spawn_one kills it once it is)
  }
  fail_replies_locked(w, std::make_exception_ptr(actor_died_error("weft: the actor's incarnation ended")));
}

void process_node::on_actor_done(std::int32_t worker_id, const std::string& batch) {
  std::lock_guard<std::mutex> lock(mtx_);
  auto wit = workers_.find(worker_id);
  if (wit == workers_.end() || !wit->second.for_actor)
    return;
  worker& w = wit->second;
  std::string acks;
  for_each_done(batch, "an actor's worker", acks, [&](const wire::done_record& d) {
    w.call_blocks.erase(d.seq);
    auto node = w.replies.extract(d.seq);
    if (node.empty()) {
      release_dropped(d); // its call was given up
      return;
    }
    object_ptr cell = std::move(node.mapped());
    std::exception_ptr err;
    try {
      switch (d.st) {
      case wire::status::ok:
      case wire::status::ok_exit: {
        actor_reply reply;
        std::string_view handed = d.handed;
        if (d.stored)
          handed.remove_suffix(sizeof(std::uint64_t)); // the block's own, which the decode below takes
        reply.refs.handed = handed;
        if (d.stored) // a big result: kept where it lies in the store
          (void)take_stashed_bytes(d.payload, d.handed, reply.block);
        else
          reply.payload = d.payload;
        reply.exit_requested = d.st == wire::status::ok_exit;
        if (!pin_locked(w.id, d.refs, reply.refs))
          throw serialization_error("weft: an actor's worker sent a result naming objects it does not hold");
        static_cast<value_object<actor_reply>*>(cell.get())->emplace(std::move(reply));
        break;
      }
      case wire::status::exception: {
        std::string type, message;
        bool matched = false;
        decode_each(d.payload, type, message, matched);
        err = std::make_exception_ptr(task_error(type, message, {}));
        break;
      }
      case wire::status::failed:
        err = std::make_exception_ptr(serialization_error(std::string(d.payload)));
        break;
      }
    } catch (...) {
      err = std::current_exception();
    }
    if (err)
      cell->complete_error(err);
    else
      cell->complete_value();
  });
  acknowledge_locked(worker_id, std::move(acks));
}

void process_node::spawn_one(int actor_worker) {
  // Where the worker records the store references it holds (fd 5).
  const auto ledger = store_fd_ >= 0 ? worker_ledger::create() : nullptr;
  // Its lane (fd 7), made before the pipes so that nothing leaks on a throw.
  auto link = lane::create(bell_.get());
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0)
    throw error(std::string("weft: pipe: ") + std::strerror(errno));
  if (::pipe2(err, O_CLOEXEC) != 0) {
    ::close(out[0]);
    ::close(out[1]);
    throw error(std::string("weft: pipe: ") + std::strerror(errno));
  }
  // The progress page: created here, mapped here and in the worker.
  int progress = ::memfd_create("weft-worker-progress", MFD_CLOEXEC);
  void* page = MAP_FAILED;
  if (progress >= 0 && ::ftruncate(progress, wire::progress_size) == 0)
    page = ::mmap(nullptr, wire::progress_size, PROT_READ | PROT_WRITE, MAP_SHARED, progress, 0);
  if (page == MAP_FAILED) {
    if (progress >= 0)
      ::close(progress);
    ::close(out[0]);
    ::close(out[1]);
    ::close(err[0]);
    ::close(err[1]);
    throw error(std::string("weft: cannot create a worker's progress page: ") + std::strerror(errno));
  }
  const std::string program = rt_.cfg().worker_program.value_or("/proc/self/exe");
  auto args = own_command_line();
  if (args.empty())
    args.push_back(program);
  int id = actor_worker;
  if (id == 0) {
    std::lock_guard<std::mutex> lock(mtx_);
    id = ++next_worker_;
  }
  // (env_store and argv are built before the worker is recorded: nothing
  // below the record throws.)
  std::vector<std::string> env_store;
  for (char** e = environ; e && *e; ++e)
    if (std::strncmp(*e, "WEFT_WORKER_", 12) != 0)
      env_store.emplace_back(*e);
  env_store.push_back(std::string(wire::env_address) + "=127.0.0.1:" + std::to_string(port_));
  env_store.push_back(std::string(wire::env_token) + "=" + token_);
  env_store.push_back(std::string(wire::env_driver) + "=" + std::to_string(::getpid()));
  env_store.push_back(std::string(wire::env_worker_id) + "=" + std::to_string(id));
  const bool store = store_fd_ >= 0;
  if (store)
    env_store.push_back(std::string(wire::env_store_threshold) + "=" +
                        std::to_string(rt_.cfg().object_store_threshold));
  if (const spill_store* spill = store ? node_spill_store() : nullptr)
    env_store.push_back(std::string(wire::env_spill_directory) + "=" + spill->directory());
  std::vector<char*> argv, envp;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env_store)
    envp.push_back(e.data());
  envp.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  if (progress >= 0)
    posix_spawn_file_actions_adddup2(&fa, progress, wire::progress_fd);
  if (store)
    posix_spawn_file_actions_adddup2(&fa, store_fd_, wire::store_fd);
  if (ledger)
    posix_spawn_file_actions_adddup2(&fa, ledger->fd(), wire::ledger_fd);
  posix_spawn_file_actions_adddup2(&fa, bell_.fd(), wire::doorbell_fd);
  posix_spawn_file_actions_adddup2(&fa, link->fd(), wire::lane_fd);
  posix_spawn_file_actions_addclosefrom_np(&fa, wire::lane_fd + 1); // none of the driver's sockets leak
  pid_t pid = -1;
  {
    // Recorded before it starts: its hello may arrive before posix_spawn
    // returns, and must find it (on_hello matches it by id).
    std::lock_guard<std::mutex> lock(mtx_);
    if (actor_worker == 0) {
      worker w;
      w.id = id;
      w.start_deadline = std::chrono::steady_clock::now() + start_timeout_;
      w.ledger = ledger;
      w.link = link;
      --to_spawn_;
      ++starting_;
      workers_.emplace(id, std::move(w));
    } else {
      auto& w = workers_.at(id);
      w.start_deadline = std::chrono::steady_clock::now() + start_timeout_;
      w.ledger = ledger;
      w.link = link;
    }
    add_lane(id, link);
  }
  const int rc = ::posix_spawn(&pid, program.c_str(), &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  ::close(out[1]);
  ::close(err[1]);
  ::close(progress);
  if (rc != 0) {
    ::close(out[0]);
    ::close(err[0]);
    ::munmap(page, wire::progress_size);
    std::vector<std::pair<task_base*, std::exception_ptr>> done;
    {
      std::lock_guard<std::mutex> lock(mtx_);
      auto& w = workers_.at(id);
      w.refused = "cannot start worker program '" + program + "': " + std::strerror(rc);
      done = on_exit(w, 0);
      workers_.erase(id);
    }
    for (auto& [t, e] : done)
      finish(t, e);
    return;
  }
  std::lock_guard<std::mutex> lock(mtx_);
  auto& w = workers_.at(id); // only this thread erases workers
  w.pid = pid;
  w.out_fd = out[0];
  w.err_fd = err[0];
  w.pid_fd = pidfd_open(pid);
  w.progress_page = page;
  w.started = static_cast<const std::atomic<std::uint64_t>*>(page);
  if (stopping_ || w.ended || w.garbage)
    ::kill(pid, SIGKILL); // stop(), end_actor() or garbage on its lane came while it was being started
  log().debug("started worker process {} (worker {})", pid, id);
}

void process_node::forward(worker& w, int& fd, std::string& line, int target, bool final) {
  char buf[65536];
  while (fd >= 0) {
    auto n = ::read(fd, buf, sizeof buf);
    if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
      // The worker closed it (or exited): stop watching it, or poll would
      // report it forever.
      ::close(fd);
      fd = -1;
      final = true;
      break;
    }
    if (n < 0)
      break;
    line.append(buf, static_cast<std::size_t>(n));
    if (n < static_cast<ssize_t>(sizeof buf))
      break;
  }
  std::string out;
  const std::string prefix = "(pid=" + std::to_string(w.pid) + ") ";
  std::size_t start = 0;
  for (auto nl = line.find('\n'); nl != std::string::npos; nl = line.find('\n', start)) {
    out += prefix;
    out.append(line, start, nl - start + 1);
    start = nl + 1;
  }
  line.erase(0, start);
  if (final && !line.empty()) {
    out += prefix + line + "\n";
    line.clear();
  }
  if (!out.empty())
    write_all(target, out);
}

void process_node::io_loop() {
  std::vector<pollfd> fds;
  std::vector<std::pair<int, int>> who; // (worker id, which: 0 out, 1 err, 2 pid)
  for (;;) {
    int spawns = 0;
    std::vector<int> actor_spawns;
    bool polling_pids = false;
    fds.clear();
    who.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    who.emplace_back(0, -1);
    {
      std::lock_guard<std::mutex> lock(mtx_);
      if (stopping_ && workers_.empty())
        break;
      spawns = stopping_ ? 0 : to_spawn_; // spawn_one() moves each from to_spawn_ to starting_
      actor_spawns.swap(actor_spawns_);
      for (auto& [id, w] : workers_) {
        if (w.out_fd >= 0) {
          fds.push_back({w.out_fd, POLLIN, 0});
          who.emplace_back(id, 0);
        }
        if (w.err_fd >= 0) {
          fds.push_back({w.err_fd, POLLIN, 0});
          who.emplace_back(id, 1);
        }
        if (w.pid_fd >= 0) {
          fds.push_back({w.pid_fd, POLLIN, 0});
          who.emplace_back(id, 2);
        } else if (w.pid > 0) {
          polling_pids = true;
        }
      }
    }
    for (int i = 0; i < spawns; ++i) {
      try {
        spawn_one();
      } catch (const std::exception& e) {
        log().error("{}", e.what());
        std::lock_guard<std::mutex> lock(mtx_);
        --to_spawn_;
      }
    }
    for (int id : actor_spawns) {
      try {
        spawn_one(id);
      } catch (const std::exception& e) {
        log().error("{}", e.what());
        std::lock_guard<std::mutex> lock(mtx_);
        if (auto it = workers_.find(id); it != workers_.end()) {
          if (auto died = std::exchange(it->second.died, nullptr))
            died(e.what());
          fail_replies_locked(it->second, std::make_exception_ptr(worker_start_error(
                                            std::string("weft: an actor's worker could not start: ") + e.what())));
          workers_.erase(it);
        }
      }
    }
    if (spawns > 0 || !actor_spawns.empty())
      continue; // poll the new workers' pipes too
    ::poll(fds.data(), fds.size(), polling_pids ? 20 : 200);
    if (fds[0].revents & POLLIN) {
      std::uint64_t v;
      [[maybe_unused]] auto n = ::read(wake_fd_, &v, sizeof v);
    }
    // A worker that exited wrote all it will: read what is on its lane
    // first, so that the results it sent before it died count (and the
    // store references they hand over are not lost with the lane).
    bool someone_exited = polling_pids;
    for (std::size_t i = 1; i < fds.size(); ++i)
      someone_exited = someone_exited || (who[i].second == 2 && (fds[i].revents & POLLIN));
    if (someone_exited) {
      // Rounds enough to empty a full ring of the smallest fragments (8
      // bytes each, 64 a round): a dead worker's lane ends empty, and live
      // workers that keep writing cannot keep this thread here forever.
      constexpr std::size_t rounds = lane::ring_bytes / 8 / 64 + 1;
      lock_drain();
      for (std::size_t i = 0; i < rounds && drain_lanes(); ++i) {
      }
      end_drain();
    }
    std::vector<std::pair<task_base*, std::exception_ptr>> done;
    std::vector<std::shared_ptr<worker_ledger>> dead_ledgers;
    std::unique_lock<std::mutex> lock(mtx_);
    std::vector<int> exited;
    for (std::size_t i = 1; i < fds.size(); ++i) {
      auto it = workers_.find(who[i].first);
      if (it == workers_.end())
        continue;
      worker& w = it->second;
      if (who[i].second == 0 && (fds[i].revents & (POLLIN | POLLHUP)))
        forward(w, w.out_fd, w.out_line, 1, false);
      else if (who[i].second == 1 && (fds[i].revents & (POLLIN | POLLHUP)))
        forward(w, w.err_fd, w.err_line, 2, false);
      else if (who[i].second == 2 && (fds[i].revents & POLLIN))
        exited.push_back(w.id);
    }
    if (polling_pids)
      for (auto& [id, w] : workers_)
        if (w.pid_fd < 0 && w.pid > 0)
          exited.push_back(id);
    for (int id : exited) {
      auto it = workers_.find(id);
      if (it == workers_.end())
        continue;
      worker& w = it->second;
      int status = 0;
      if (::waitpid(w.pid, &status, WNOHANG) != w.pid)
        continue;
      forward(w, w.out_fd, w.out_line, 1, true);
      forward(w, w.err_fd, w.err_line, 2, true);
      for (int* fd : {&w.out_fd, &w.err_fd, &w.pid_fd})
        if (*fd >= 0) {
          ::close(*fd);
          *fd = -1;
        }
      log().debug("worker process {} {}", w.pid, describe_status(status));
      auto finished = on_exit(w, status);
      done.insert(done.end(), finished.begin(), finished.end());
      if (w.progress_page)
        ::munmap(w.progress_page, wire::progress_size);
      dead_ledgers.push_back(std::move(w.ledger)); // released below, without mtx_
      workers_.erase(it);
    }
    // A worker that started but has not said hello in time is killed; its
    // exit (above, next round) fails the tasks waiting for a worker.
    const auto now = std::chrono::steady_clock::now();
    for (auto& [id, w] : workers_)
      if (w.state == wstate::starting && w.pid > 0 && w.refused.empty() && now >= w.start_deadline) {
        w.refused = "worker process " + std::to_string(w.pid) + " did not connect to the driver within " +
                    std::to_string(start_timeout_.count()) + " ms (config.worker_start_timeout)";
        ::kill(w.pid, SIGKILL);
      }
    std::vector<std::pair<task_base*, std::exception_ptr>> failed;
    std::vector<task_base*> orphans;
    failed.swap(failed_followers_);
    orphans.swap(orphans_);
    std::vector<std::shared_ptr<void>> dead_monitors;
    dead_monitors.swap(dropped_monitors_);
    lock.unlock();
    // The store references the dead held go back (unless a task one of them
    // submitted still runs on its arguments: then when that task ends).
    dead_ledgers.clear();
    dead_monitors.clear(); // unregistered from their actors
    for (auto& [t, e] : done)
      finish(t, e);
    settle(failed, orphans);
  }
}

void process_node::on_submit_batch(std::int32_t worker, const std::string& batch) {
  // What the objects of the worker's own that the records carry hand over:
  // the node takes references of its own before anything reads a record,
  // then acknowledges them, for the worker to release its own (it keeps
  // them in its ledger until then: a record lost with it gives them back).
  std::string acks;
  struct acknowledge {
    process_node& node;
    std::int32_t worker;
    std::string& acks;
    ~acknowledge() {
      if (!acks.empty()) {
        std::lock_guard<std::mutex> lock(node.mtx_);
        node.acknowledge_locked(worker, std::move(acks));
      }
    }
  } at_end{*this, worker, acks};
  // A record whose store references could not be taken is not read; the
  // worker's call gets the error (none waits for a kill or a cancel).
  auto taken = [&](bool ok, std::uint64_t seq, const char* what) {
    if (ok)
      return true;
    const std::string why = untakeable_message(what);
    log().error("{} (from worker {})", why, worker);
    if (seq != 0) {
      std::string payload;
      const auto kind = encode_error(std::make_exception_ptr(serialization_error(why)), payload);
      send_result(worker, seq, static_cast<std::uint8_t>(kind), std::move(payload), {}, {});
    }
    return false;
  };
  for (wire::reader r(batch); !r.at_end();) {
    const auto kind = r.get<wire::outbox_kind>();
    const auto seq = r.get<std::uint64_t>();
    const std::string record(r.get_bytes());
    if (kind == wire::outbox_kind::task && r.ok()) {
      if (wire::submit_record s; s.read(record) && !taken(take_bundle(s.refs, acks), seq, "a nested task's argument"))
        continue;
      on_submit(worker, seq, record);
      continue;
    }
    if (kind == wire::outbox_kind::actor_make) {
      const std::string bundle(r.get_bytes());
      if (!r.ok()) {
        log().error("weft: worker {} sent a corrupted submission batch", worker);
        break;
      }
      if (!taken(take_bundle(bundle, acks), seq, "an actor's constructor argument"))
        continue;
      on_actor_make(worker, seq, record, bundle);
      continue;
    }
    if (kind == wire::outbox_kind::actor_find) {
      (void)r.get_bytes(); // (no refs)
      if (!r.ok()) {
        log().error("weft: worker {} sent a corrupted submission batch", worker);
        break;
      }
      on_actor_find(worker, seq, record);
      continue;
    }
    if (kind == wire::outbox_kind::actor_monitor) {
      // (the record is the holder's id)
      wire::reader m(record);
      const auto holder = m.get<std::uint64_t>();
      const std::string bundle(r.get_bytes());
      if (!r.ok() || !m.ok() || !m.at_end()) {
        log().error("weft: worker {} sent a corrupted submission batch", worker);
        break;
      }
      if (!taken(take_bundle(bundle, acks), seq, "a monitor request"))
        continue;
      on_actor_monitor(worker, seq, holder, bundle);
      continue;
    }
    if (kind == wire::outbox_kind::cancel) {
      // (the record is the task's seq or the object's id, and the force flag)
      wire::reader c(record);
      const auto target = c.get<std::uint64_t>();
      const auto holder = c.get<std::uint64_t>();
      const auto force = c.get<std::uint8_t>();
      const std::string bundle(r.get_bytes());
      if (!r.ok() || !c.ok() || !c.at_end()) {
        log().error("weft: worker {} sent a corrupted submission batch", worker);
        break;
      }
      if (!taken(take_bundle(bundle, acks), 0, "a cancel request"))
        continue;
      on_cancel(worker, target, holder, force != 0, bundle);
      continue;
    }
    if (kind == wire::outbox_kind::actor_kill) {
      // (the record is the holder's id and the no_restart flag)
      wire::reader k(record);
      const auto holder = k.get<std::uint64_t>();
      const auto no_restart = k.get<std::uint8_t>();
      const std::string bundle(r.get_bytes());
      if (!r.ok() || !k.ok()) {
        log().error("weft: worker {} sent a corrupted submission batch", worker);
        break;
      }
      if (!taken(take_bundle(bundle, acks), 0, "a kill request"))
        continue;
      on_actor_kill(worker, holder, no_restart != 0, bundle);
      continue;
    }
    const auto holder = r.get<std::uint64_t>();
    const std::string bundle(r.get_bytes());
    if (kind != wire::outbox_kind::actor_call || !r.ok()) {
      log().error("weft: worker {} sent a corrupted submission batch", worker);
      break;
    }
    if (!taken(take_bundle(bundle, acks), seq, "an actor call's argument"))
      continue;
    on_actor_submit(worker, seq, holder, record, bundle);
  }
}

void process_node::on_lane_message(int worker, lane_kind k, const std::string& body) {
  switch (k) {
  case lane_kind::done:
    on_done(worker, body);
    return;
  case lane_kind::actor_done:
    on_actor_done(worker, body);
    return;
  case lane_kind::submit:
    on_submit_batch(worker, body);
    return;
  case lane_kind::blocked: {
    wire::reader r(body);
    const auto job = r.get<std::uint64_t>();
    const auto blocked = r.get<std::uint8_t>();
    if (r.ok() && r.at_end())
      on_blocked(worker, job, blocked != 0);
    else
      log().error("weft: worker {} sent a corrupted blocked message", worker);
    return;
  }
  case lane_kind::fetch: {
    wire::reader r(body);
    const auto id = r.get<std::uint64_t>();
    if (r.ok() && r.at_end())
      on_fetch(worker, id);
    else
      log().error("weft: worker {} sent a corrupted fetch message", worker);
    return;
  }
  case lane_kind::release:
    on_release(worker, body);
    return;
  case lane_kind::recalled:
    if (body.size() % sizeof(std::uint64_t) == 0)
      on_recalled(worker, body);
    else
      log().error("weft: worker {} sent a corrupted recalled message", worker);
    return;
  case lane_kind::taken:
    if (body.size() % sizeof(std::uint64_t) == 0)
      on_taken(worker, body);
    else
      log().error("weft: worker {} sent a corrupted taken message", worker);
    return;
  default:
    log().error("weft: worker {} sent a message of kind {} on its lane", worker, static_cast<int>(k));
  }
}

void process_node::add_lane(int worker, std::shared_ptr<lane> l) {
  std::lock_guard<std::mutex> lock(lanes_mtx_);
  lanes_.emplace_back(worker, std::move(l));
  lanes_version_.fetch_add(1, std::memory_order_release);
}

void process_node::drop_lane(int worker) {
  std::lock_guard<std::mutex> lock(lanes_mtx_);
  std::erase_if(lanes_, [worker](const auto& e) { return e.first == worker; });
  lanes_version_.fetch_add(1, std::memory_order_release);
}

bool process_node::drain_lanes() noexcept {
  {
    if (drain_version_ != lanes_version_.load(std::memory_order_acquire)) {
      std::lock_guard<std::mutex> lock(lanes_mtx_);
      draining_ = lanes_;
      drain_version_ = lanes_version_.load(std::memory_order_relaxed);
    }
  }
  bool any = false;
  for (auto& [id, l] : draining_) {
    if (l->has_overflow())
      l->pump();
    // (a bounded number per lane per round: one busy worker does not hold
    // back the others)
    bool refused = false;
    try {
      for (int n = 0; n < 64 && l->take_from_worker(drain_kind_, drain_body_); ++n) {
        any = true;
        try {
          on_lane_message(id, drain_kind_, drain_body_);
        } catch (const std::exception& e) {
          log().error("weft: a message from worker {} failed: {}", id, e.what());
        }
        if (drain_body_.capacity() > lane::ring_bytes) // (not kept while the node idles)
          std::string().swap(drain_body_);
      }
    } catch (const std::bad_alloc&) {
      refused = true; // a message too large to hold: treated like garbage
    }
    if (refused || l->corrupt()) {
      log().error("weft: worker {} wrote garbage (or more than fits in memory) on its lane; it is killed", id);
      {
        std::lock_guard<std::mutex> lock(mtx_);
        if (auto it = workers_.find(id); it != workers_.end()) {
          it->second.garbage = true; // (its hello can come before spawn_one records its pid)
          if (it->second.pid > 0)
            ::kill(it->second.pid, SIGKILL);
        }
      }
      drop_lane(id);
    }
  }
  return any;
}

void process_node::helping(bool begin) noexcept {
  // (Stored, not added to: a worker may have written anything there.)
  doorbell* bell = bell_.get();
  if (begin) {
    bell->helpers.store(++helpers_, std::memory_order_seq_cst);
    return;
  }
  bell->helpers.store(--helpers_, std::memory_order_seq_cst);
  // A worker may have written after this thread last read, and not woken
  // the reader because it counted on this thread: wake it now.
  std::lock_guard<std::mutex> lock(lanes_mtx_);
  for (auto& [id, l] : lanes_)
    if (l->readable_from_worker() || l->has_overflow()) { // (room it made may not be used yet)
      bell_.ring(true);
      return;
    }
}

void process_node::read_lanes() {
  doorbell* bell = bell_.get();
  while (!reader_stop_.load(std::memory_order_acquire)) {
    // (It never spins: on 2 cores a spinning reader takes the core a
    // worker or the waiting caller needs. When it runs out it sleeps on the
    // bell; while another thread reads, perhaps busy with one message for
    // long, it sleeps on the flag.)
    if (!try_drain()) {
      // A thread waiting in get reads now: nap (1 ms at most, or until the
      // flag moves) rather than queue for it. Queuing would make every
      // release of the flag a wake-up, and a waiting thread polls often.
      if (const auto seen = g_draining.load(std::memory_order_relaxed); seen != 0)
        futex_wait(g_draining, seen, now_ns() + 1'000'000);
      continue;
    }
    const bool any = drain_lanes();
    end_drain();
    if (any)
      continue;
    // Sleep until a worker rings (checked once more after saying so).
    bell->sleeping.store(1, std::memory_order_seq_cst);
    const auto seen = bell->seq.load(std::memory_order_seq_cst);
    bool ready = false;
    {
      std::lock_guard<std::mutex> lock(lanes_mtx_);
      for (auto& [id, l] : lanes_) {
        if (l->has_overflow())
          l->pump();
        ready = ready || l->readable_from_worker();
      }
    }
    if (!ready && !reader_stop_.load(std::memory_order_acquire))
      futex_wait_shared(bell->seq, seen, now_ns() + 200'000'000);
    bell->sleeping.store(0, std::memory_order_relaxed);
  }
}

void process_node::stop() {
  std::vector<task_base*> never_ran;
  {
    std::lock_guard<std::mutex> lock(mtx_);
    if (stopping_)
      return;
    stopping_ = true;
    for (auto& [id, w] : workers_)
      if (w.pid > 0)
        ::kill(w.pid, SIGKILL);
    // Tasks waiting for a worker never run.
    for (auto seq : pending_) {
      auto it = jobs_.find(seq);
      if (it == jobs_.end())
        continue;
      never_ran.push_back(it->second.t);
      jobs_.erase(it);
    }
    pending_.clear();
  }
  for (task_base* t : never_ran)
    rt_.finish_remote(t, std::make_exception_ptr(runtime_shutdown_error("weft: task '" + runtime::task_name(*t) +
                                                                        "' did not run: the runtime shut down")));
  wake_io();
  if (io_.joinable())
    io_.join(); // reaps every worker; tasks they ran fail in on_exit
  {
    // (Every worker is gone, so these are empty but for one registering now.)
    std::vector<std::shared_ptr<void>> monitors;
    std::unordered_map<int, std::unordered_map<std::uint64_t, object_ptr>> nested;
    {
      std::lock_guard<std::mutex> lock(mtx_);
      monitors.swap(dropped_monitors_);
      for (auto& [id, table] : monitors_)
        for (auto& [seq, registration] : table)
          if (registration)
            monitors.push_back(std::move(registration));
      monitors_.clear();
      nested.swap(nested_);
    }
  }
  if (reader_.joinable()) {
    reader_stop_.store(true, std::memory_order_release);
    bell_.ring(true); // (even while a waiting thread helps)
    reader_.join();
    // No waiting thread reads the lanes from now on (one that does now
    // holds the flag: taking it waits for it).
    lock_drain();
    {
      std::lock_guard<std::mutex> lock(g_lane_node_mtx);
      g_lane_node.store(nullptr, std::memory_order_relaxed);
      ++g_lane_generation;
    }
    end_drain();
    set_wait_helper(nullptr);
  }
  if (node_) {
    caf::anon_send_exit(*node_, caf::exit_reason::user_shutdown);
    node_.reset();
  }
  if (wake_fd_ >= 0) {
    ::close(wake_fd_);
    wake_fd_ = -1;
  }
  if (store_fd_ >= 0) {
    ::close(store_fd_);
    store_fd_ = -1;
  }
}

} // namespace weft::detail
