#include "worker_main.hpp"

#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <typeinfo>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <cxxabi.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "futex.hpp"
#include "lane.hpp"
#include "log.hpp"
#include "modules.hpp"
#include "node_store.hpp"
#include "ref_codec.hpp"
#include "runtime.hpp"
#include "shm_arena.hpp"
#include "spill_store.hpp"
#include "store_ledger.hpp"
#include "stored_bytes.hpp"
#include "weft/array.hpp"
#include "weft/detail/task.hpp"
#include "weft/errors.hpp"
#include "weft/runtime.hpp"
#include "worker_protocol.hpp"

namespace weft::detail {

std::atomic<void (*)()> test_before_results_posted{nullptr};
std::atomic<void (*)()> test_after_results_posted{nullptr};
std::atomic<void (*)()> test_before_submissions_posted{nullptr};
std::atomic<void (*)()> test_on_driver_value{nullptr};

namespace {

std::atomic<bool> g_cancel{false};
std::atomic<std::uint64_t> g_running_seq{0};
/// Calls cancelled before they ran (the control actor fills it).
std::mutex g_cancelled_mtx;
std::unordered_set<std::uint64_t> g_cancelled;
/// Calls of the line the node runs elsewhere, because the call ahead of
/// them waits in get (under g_cancelled_mtx, as is the end of each call:
/// the control actor decides while that call still runs, so none of them
/// has started).
std::unordered_set<std::uint64_t> g_recalled;

/// The progress page shared with the driver (see worker_protocol.hpp).
std::atomic<std::uint64_t>* g_started = nullptr;

/// The lane to the driver (lane.hpp): calls come in, results and the rest
/// go out. Set before any other thread starts; lives until _Exit.
lane* g_lane = nullptr;
/// How long the lane's thread spins for the next message before it sleeps.
constexpr std::int64_t lane_spin_ns = 200'000;

/// The actor this worker hosts (if it was started for one).
struct hosted_actor {
  void* instance = nullptr;
  actor_destructor destroy = nullptr;
  worker_actor_info info;
  bool exited = false;           ///< exit_actor() ran: later calls are refused
  std::uint32_t concurrency = 1; ///< max_concurrency
};
hosted_actor g_actor;
thread_local bool tls_in_actor_call = false;
/// While a batch of calls runs on this thread: sends the results it holds.
thread_local std::function<void()>* tls_flush_results = nullptr;
/// Sends the results the batch running on this thread holds, if any.
void flush_batch_results() noexcept {
  if (tls_flush_results)
    (*tls_flush_results)();
}
thread_local bool tls_exit_requested = false; ///< exit_actor() ran in the call on this thread
/// True on the control actor's thread while a monitor callback runs: a
/// monitor() there must not wait for the answer that thread delivers.
thread_local bool tls_in_monitor_callback = false;

/// Nested tasks: what this worker submitted to its driver and waits for.
struct client_state {
  std::atomic<bool> active{false};
  caf::actor node;
  std::int32_t worker_id = 0;
  const std::vector<const module_table::module*>* map = nullptr; // driver's module index -> ours
  std::mutex mtx;
  std::unordered_map<std::uint64_t, task_base*> pending;
  std::unordered_map<std::uint64_t, std::unique_ptr<worker_actor_call>> calls; ///< actor calls, same numbering
  std::unordered_map<std::uint64_t, worker_monitor_fn> monitors;               ///< registered monitors, same numbering
  std::uint64_t next = 0;
  caf::actor ctl; ///< this worker's control actor
  /// Submissions not sent yet ((seq, record) pairs), and the cells their
  /// refs name, held until they are sent.
  std::string outbox;
  std::vector<object_ptr> outbox_holds;
};

client_state* g_client = nullptr; // lives until the process ends (with _Exit)

/// Held from taking the outbox until it is on the lane, so that whoever
/// flushes next sees it sent (see post_after_outbox).
std::mutex g_outbox_post_mtx;

/// Sends the submissions collected so far in one message.
void flush_submissions() {
  std::string batch;
  std::vector<object_ptr> holds;
  std::lock_guard<std::mutex> posting(g_outbox_post_mtx);
  {
    std::lock_guard<std::mutex> lock(g_client->mtx);
    batch.swap(g_client->outbox);
    holds.swap(g_client->outbox_holds);
  }
  if (batch.empty())
    return;
  if (auto* hook = test_before_submissions_posted.load(std::memory_order_relaxed))
    hook();
  g_lane->post_to_driver(lane_kind::submit, batch);
}

/// Posts results to the driver after whatever the calls behind them
/// queued (a kill, an actor call, a nested task): the driver then sees
/// those first, as the code that made them ran first.
void post_after_outbox(lane_kind kind, std::string_view out) {
  if (g_client && g_client->active.load(std::memory_order_acquire))
    flush_submissions();
  g_lane->post_to_driver(kind, out);
}

/// Where `addr` (code here) lies in the driver's module numbering.
std::optional<code_ref> driver_code_ref(const void* addr) {
  const auto a = reinterpret_cast<std::uintptr_t>(addr);
  const auto& map = *g_client->map;
  for (std::size_t i = 0; i < map.size(); ++i)
    if (const auto* m = map[i])
      for (auto [b, e] : m->code)
        if (a >= b && a < e)
          return code_ref{static_cast<std::uint32_t>(i), a - m->base};
  return std::nullopt;
}

// ---- object refs in this worker (see ref_codec.hpp) ----

/// What this worker knows of one object the node lent it.
struct lent_object {
  object_state* proxy = nullptr; ///< its live proxy cell (no reference held), or null
  ref_ops_fn ops = nullptr;
  std::int64_t count = 0; ///< how many of the node's sends of its id this worker read
  int reading = 0;        ///< records that carry it and are being read
  bool fetched = false;   ///< its proxy asked the node for the value
  /// Proxies whose value this worker could not take (take_handed): they
  /// keep their error, and the next ref to the object gets a new proxy,
  /// which asks again. Alive (no reference held) until dropped.
  std::vector<object_state*> untaken;
};

struct ref_registry {
  std::mutex mtx;
  std::unordered_map<std::uint64_t, lent_object> ids;
  std::string releases; ///< (id, count) pairs not sent yet
};
ref_registry g_refs;

/// Gives an object back to the node once no proxy and no record being read
/// needs it (g_refs.mtx held). The releases go out in one message, sent by
/// the control actor after the messages that named the object (those hold
/// its proxy until they are sent).
void maybe_release_locked(std::unordered_map<std::uint64_t, lent_object>::iterator it) {
  if (it->second.reading > 0 || it->second.proxy || !it->second.untaken.empty())
    return;
  const bool first = g_refs.releases.empty();
  const std::uint64_t id = it->first;
  const std::int64_t count = it->second.count;
  g_refs.releases.append(reinterpret_cast<const char*>(&id), sizeof id);
  g_refs.releases.append(reinterpret_cast<const char*>(&count), sizeof count);
  g_refs.ids.erase(it);
  if (first && g_client)
    caf::anon_send(g_client->ctl, wire::release_flush_atom::value);
}

/// A record from the node that carries the refs `ids` is about to be read.
void credit_refs(std::string_view ids) {
  if (ids.empty())
    return;
  std::lock_guard<std::mutex> lock(g_refs.mtx);
  for_each_packed_id(ids, [](std::uint64_t id) {
    auto& e = g_refs.ids[id];
    ++e.count;
    ++e.reading;
  });
}

/// ... and was read (its values and what they hold may have gone since).
void uncredit_refs(std::string_view ids) {
  if (ids.empty())
    return;
  std::lock_guard<std::mutex> lock(g_refs.mtx);
  for_each_packed_id(ids, [](std::uint64_t id) {
    if (auto it = g_refs.ids.find(id); it != g_refs.ids.end()) {
      --it->second.reading;
      maybe_release_locked(it);
    }
  });
}

void proxy_wanted(object_state& proxy) noexcept {
  // The object may be the result of a call before this one in its batch
  // (also when it is only polled: is_ready).
  flush_batch_results();
  std::uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(g_refs.mtx);
    auto it = g_refs.ids.find(proxy.id().value);
    if (it == g_refs.ids.end() || it->second.proxy != &proxy || it->second.fetched)
      return;
    it->second.fetched = true;
    id = it->first;
  }
  if (g_client)
    g_lane->post_to_driver(lane_kind::fetch, std::string_view(reinterpret_cast<const char*>(&id), sizeof id));
}

void proxy_dropped(object_state& proxy) noexcept {
  std::lock_guard<std::mutex> lock(g_refs.mtx);
  auto it = g_refs.ids.find(proxy.id().value);
  if (it == g_refs.ids.end())
    return;
  if (it->second.proxy == &proxy) {
    it->second.proxy = nullptr;
  } else if (auto& u = it->second.untaken; std::erase(u, &proxy) == 0) {
    return; // (a newer proxy took its place)
  }
  maybe_release_locked(it);
}

const proxy_hooks g_proxy_hooks{&proxy_wanted, &proxy_dropped};

/// Sends the releases collected so far (the control actor does it).
void flush_releases() {
  std::string out;
  {
    std::lock_guard<std::mutex> lock(g_refs.mtx);
    out.swap(g_refs.releases);
  }
  if (!out.empty())
    g_lane->post_to_driver(lane_kind::release, out);
}

std::optional<code_ref> driver_code_ref(const void* addr);

/// The ref codec of this worker, for the scope of one message: reads refs
/// the node lent (proxies), writes refs as a bundle. The cells it wrote
/// stay held until the message is sent (`holds`), so that a release never
/// reaches the node before the message that names the object.
class worker_codec final : public ref_codec {
public:
  std::string bundle;
  std::vector<object_ptr> holds;

  std::uint64_t encode(object_state* cell, ref_ops_fn ops) override {
    const std::uint64_t id = cell->id().value;
    if (!written_.insert(id).second)
      return id; // already in this message
    wire::bundle_entry e;
    e.id = id;
    if (cell->is_proxy()) {
      e.k = wire::bundle_entry::kind::held;
      e.write(bundle);
      holds.emplace_back(cell);
      return id;
    }
    // An object of this worker: it travels with the message, so it must
    // have its value (a nested task's result may still be running).
    object_ptr keep(cell);
    if (!cell->done()) {
      try {
        await_all(std::span<object_state* const>(&cell, 1), 0, "send");
      } catch (...) {
        // its error travels below
      }
    }
    const auto ops_ref = driver_code_ref(reinterpret_cast<const void*>(ops));
    if (!ops_ref)
      throw serialization_error("weft: an object_ref's type code is in no module the driver knows");
    e.ops = *ops_ref;
    std::string payload, handed;
    if (cell->failed()) {
      e.k = wire::bundle_entry::kind::error;
      e.err = static_cast<std::uint8_t>(encode_error(cell->error(), payload));
    } else {
      e.k = wire::bundle_entry::kind::value;
      std::string* before = collect_handed_references(&handed);
      try {
        hand_over_references hand_over;                // the driver's copy owns its own store references
        keep_handed_in_ledger until_acknowledged;      // (the driver acknowledges what a bundle hands over)
        ops(ref_op::encode_value, cell, {}, &payload); // refs inside it enter the bundle first
      } catch (...) {
        collect_handed_references(before);
        release_handed_references(handed);
        throw;
      }
      collect_handed_references(before);
    }
    e.payload = payload;
    e.handed = handed;
    e.write(bundle);
    holds.push_back(std::move(keep));
    return id;
  }

  object_ptr decode(std::uint64_t id, ref_ops_fn ops) override {
    std::lock_guard<std::mutex> lock(g_refs.mtx);
    auto it = g_refs.ids.find(id);
    if (it == g_refs.ids.end())
      throw serialization_error("weft: corrupted input: an object_ref names " + to_string(object_id{id}) +
                                ", which the record does not carry");
    lent_object& e = it->second;
    if (e.proxy && e.ops != ops)
      throw serialization_error("weft: an object_ref names " + to_string(object_id{id}) +
                                ", an object of another type than the ref's");
    if (e.proxy && e.proxy->try_add_ref())
      return object_ptr(e.proxy, false);
    object_state* p = ops(ref_op::make_pending, nullptr, {}, nullptr);
    p->assign_id(object_id{id});
    p->set_proxy();
    e.proxy = p;
    e.ops = ops;
    e.fetched = false;
    return object_ptr(p);
  }

private:
  std::unordered_set<std::uint64_t> written_;
};

/// The control actor got the value (or error) of a proxy it asked for.
/// `untaken`: an error because this worker could not take what the value
/// hands over; it is this proxy's, not the object's, so the proxy leaves
/// the registry and a ref to the object read later fetches it anew.
void proxy_value(std::uint64_t id, std::uint8_t kind, const std::string& payload, const std::string& ids,
                 const std::string& handed, bool untaken = false) {
  credit_refs(ids);
  object_ptr cell;
  ref_ops_fn ops = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_refs.mtx);
    if (auto it = g_refs.ids.find(id); it != g_refs.ids.end() && it->second.proxy && it->second.proxy->try_add_ref()) {
      cell = object_ptr(it->second.proxy, false);
      ops = it->second.ops;
      if (untaken) {
        it->second.untaken.push_back(it->second.proxy);
        it->second.proxy = nullptr;
        it->second.fetched = false;
      }
    }
  }
  if (cell && !cell->done()) {
    worker_codec codec;
    ref_codec_scope scope(&codec);
    try {
      if (kind == static_cast<std::uint8_t>(wire::result_kind::ok)) {
        ops(ref_op::fill, cell.get(), payload, nullptr);
      } else if (kind == static_cast<std::uint8_t>(wire::result_kind::ok_stored)) {
        stored_blob block; // (a big value, decoded where it lies in the store)
        ops(ref_op::fill, cell.get(), stashed_bytes(payload, block), nullptr);
      } else {
        cell->complete_error(rebuild_error(static_cast<error_kind>(kind), payload));
      }
    } catch (...) {
      cell->complete_error(std::current_exception());
    }
  } else {
    release_taken_references(handed); // no one waits for it any more
  }
  cell = object_ptr();
  uncredit_refs(ids);
}

/// An actor this worker monitors ended: runs the monitor's callback here,
/// on the control actor's thread (as the driver runs its own on one of its
/// threads).
void monitor_down(std::uint64_t seq, std::string_view payload) {
  worker_monitor_fn fn;
  {
    std::lock_guard<std::mutex> lock(g_client->mtx);
    auto it = g_client->monitors.find(seq);
    if (it == g_client->monitors.end())
      return;
    fn = std::move(it->second);
    g_client->monitors.erase(it);
  }
  wire::reader r(payload);
  const auto id = r.get<std::uint64_t>();
  const auto normal = r.get<std::uint8_t>();
  const std::string cause(r.get_bytes());
  if (!r.ok()) {
    log().error("weft: the driver sent a corrupted actor end for a monitor");
    return;
  }
  tls_in_monitor_callback = true;
  try {
    fn(id, normal != 0, cause);
  } catch (const std::exception& e) {
    log().error("a monitor callback of actor#{:x} threw: {}", id, e.what());
  } catch (...) {
    log().error("a monitor callback of actor#{:x} threw", id);
  }
  tls_in_monitor_callback = false;
}

/// The control actor got the end of a task this worker submitted (or of an
/// actor call, or another entry of its outbox that has an answer).
/// A message from the driver hands over `handed` (packed u64 store
/// references): this worker takes references of its own before anything
/// reads it, and lists them in `taken` for the driver, which keeps its own
/// until told (so that a message this worker never reads is not a leak).
/// All or none: false when they could not be taken (a spill file, out of
/// file descriptors); they are listed all the same, and the message must
/// not be read (nothing here holds what it names).
bool take_handed(std::string_view handed, std::string& taken) {
  if (auto* hook = test_on_driver_value.load(std::memory_order_relaxed))
    hook();
  if (handed.empty())
    return true;
  taken.append(handed);
  return add_handed_references(handed);
}

/// What a message whose store references could not be taken becomes: an
/// error for whoever waits for it (its result kind, and the payload).
std::uint8_t untakeable(std::string& payload) {
  payload.clear();
  return static_cast<std::uint8_t>(
    encode_error(std::make_exception_ptr(serialization_error(untakeable_message("a value from the driver"))), payload));
}

/// What this worker took of the messages the driver sent it (take_handed),
/// told to the driver at the end of the scope (also when reading throws:
/// the driver then releases its own).
struct taken_list {
  std::string refs;
  taken_list() = default;
  taken_list(const taken_list&) = delete;
  taken_list& operator=(const taken_list&) = delete;
  ~taken_list() {
    if (!refs.empty())
      g_lane->post_to_driver(lane_kind::taken, refs);
  }
  /// Calls `f(kind, payload, handed, false)` for a message once this
  /// worker took what it hands over, or `f(error kind, error, {}, true)`
  /// with the error saying why it could not.
  template <class F>
  void read(const std::string& handed, std::uint8_t kind, const std::string& payload, F&& f) {
    if (take_handed(handed, refs)) {
      f(kind, payload, handed, false);
      return;
    }
    std::string error;
    const std::uint8_t error_kind = untakeable(error);
    f(error_kind, error, std::string(), true);
  }
};

void client_result(std::uint64_t seq, std::uint8_t kind, const std::string& payload, const std::string& ids,
                   const std::string& handed) {
  if (kind == static_cast<std::uint8_t>(wire::result_kind::monitor_down)) {
    monitor_down(seq, payload);
    return;
  }
  credit_refs(ids);
  struct uncredit {
    const std::string& ids;
    ~uncredit() { uncredit_refs(ids); }
  } after{ids};
  task_base* t = nullptr;
  std::unique_ptr<worker_actor_call> call;
  {
    std::lock_guard<std::mutex> lock(g_client->mtx);
    if (auto it = g_client->pending.find(seq); it != g_client->pending.end()) {
      t = it->second;
      g_client->pending.erase(it);
    } else if (auto c = g_client->calls.find(seq); c != g_client->calls.end()) {
      call = std::move(c->second);
      g_client->calls.erase(c);
      if (kind != static_cast<std::uint8_t>(wire::result_kind::ok) &&
          kind != static_cast<std::uint8_t>(wire::result_kind::ok_stored))
        g_client->monitors.erase(seq); // (a monitor the driver refused)
    } else {
      release_taken_references(handed); // no one reads it (its arrays, its block)
      return;
    }
  }
  // A big result lies in the store (stored_bytes.hpp).
  stored_blob block;
  const bool stored = kind == static_cast<std::uint8_t>(wire::result_kind::ok_stored);
  auto bytes = [&]() -> std::string_view { return stored ? stashed_bytes(payload, block) : std::string_view(payload); };
  if (call) {
    try {
      worker_codec codec;
      ref_codec_scope scope(&codec);
      if (kind == static_cast<std::uint8_t>(wire::result_kind::ok) || stored) {
        call->decode_result(bytes());
        call->result().complete_value();
      } else {
        call->result().complete_error(rebuild_error(static_cast<error_kind>(kind), payload));
      }
    } catch (...) {
      call->result().complete_error(std::current_exception());
    }
    return;
  }
  std::exception_ptr err;
  try {
    worker_codec codec;
    ref_codec_scope scope(&codec);
    if (kind == static_cast<std::uint8_t>(wire::result_kind::ok) || stored)
      t->decode_results(bytes());
    else
      err = rebuild_error(static_cast<error_kind>(kind), payload);
  } catch (...) {
    err = std::current_exception();
  }
  for (auto& r : t->returns()) {
    if (err)
      r->complete_error(err);
    else
      r->complete_value();
  }
  t->release();
}

bool take_cancelled(std::uint64_t seq) {
  std::lock_guard<std::mutex> lock(g_cancelled_mtx);
  return g_cancelled.erase(seq) != 0;
}

bool take_recalled(std::uint64_t seq) {
  std::lock_guard<std::mutex> lock(g_cancelled_mtx);
  return g_recalled.erase(seq) != 0;
}

/// The node asks for the calls `seqs` behind `front` back, because `front`
/// waits in get and they might be what it waits for. Granted only while
/// `front` still runs (then none of them started); the answer goes on the
/// lane before front's result.
void recall(std::uint64_t front, const std::string& seqs) {
  std::lock_guard<std::mutex> lock(g_cancelled_mtx);
  if (g_running_seq.load(std::memory_order_acquire) != front)
    return; // it went on: its line runs here as sent
  for_each_packed_id(seqs, [](std::uint64_t seq) { g_recalled.insert(seq); });
  g_lane->post_to_driver(lane_kind::recalled, seqs);
}

[[noreturn]] void die(const std::string& why, int code) {
  std::fprintf(stderr, "weft worker %d: %s\n", static_cast<int>(::getpid()), why.c_str());
  std::fflush(stderr);
  std::_Exit(code);
}

const char* getenv_or_die(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v)
    die(std::string("missing environment variable ") + name, 2);
  return v;
}

/// Runs `body`; on an exception, replaces `payload` with what the driver
/// reports: serialization errors as failures, others as (type, message).
/// `matchers`: retry_on's type tests, run on the exception itself (the
/// driver only sees its type name).
template <class F>
wire::status run_guarded(F&& body, std::string& payload, const std::vector<exception_filter::matcher>& matchers = {}) {
  auto matched = [&matchers] {
    const auto e = std::current_exception();
    for (auto m : matchers)
      if (m(e))
        return true;
    return false;
  };
  try {
    body();
    return wire::status::ok;
  } catch (const serialization_error& e) {
    payload = e.what();
    return wire::status::failed;
  } catch (const std::exception& e) {
    payload.clear();
    encode_each(payload, demangled(typeid(e).name()), std::string(e.what()), matched());
  } catch (...) {
    payload.clear();
    auto* type = abi::__cxa_current_exception_type();
    encode_each(payload, type ? demangled(type->name()) : std::string("unknown"), std::string("(not a std::exception)"),
                matched());
  }
  return wire::status::exception;
}

const void* resolve(code_ref r, const std::vector<const module_table::module*>& map) {
  if (r.module >= map.size() || !map[r.module])
    return nullptr;
  const auto* m = map[r.module];
  auto addr = m->base + r.offset;
  for (auto [b, e] : m->code)
    if (addr >= b && addr < e)
      return reinterpret_cast<const void*>(addr);
  return nullptr;
}

std::string done(std::uint64_t seq, wire::status st, std::chrono::steady_clock::time_point started,
                 std::string_view payload, std::string_view handed = {}, std::string_view refs = {},
                 bool stored = false) {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started);
  std::string out;
  wire::done_record{
    seq, st, static_cast<std::uint32_t>(std::min<std::int64_t>(us.count(), 0xffffffff)), payload, handed, refs, stored}
    .write(out);
  return out;
}

/// For the scope of one record from the node: its refs are credited, and
/// the refs it reads and writes go through `codec`. A payload that did
/// not make it into the record gives back what its bundle handed over.
struct record_refs {
  std::string_view ids;
  worker_codec codec;
  ref_codec_scope scope{&codec};
  explicit record_refs(std::string_view carried) : ids(carried) { credit_refs(ids); }
  ~record_refs() { uncredit_refs(ids); }
  record_refs(const record_refs&) = delete;
  record_refs& operator=(const record_refs&) = delete;
  /// The refs the result names, kept until it is sent.
  void keep(std::vector<object_ptr>& holds) {
    for (auto& h : codec.holds)
      holds.push_back(std::move(h));
  }
};

/// A big result goes to the store, its reference to the driver (the last of
/// the handed ones, kept in the ledger until the driver acknowledges it).
bool stash_result(std::string& payload) {
  keep_handed_in_ledger until_acknowledged;
  return !stash_big_bytes(payload, true).empty();
}

/// Collects, for the scope, the store references a result hands over.
struct collect_handed {
  std::string offsets;
  std::string* before = collect_handed_references(&offsets);
  collect_handed() = default;
  ~collect_handed() { collect_handed_references(before); }
  collect_handed(const collect_handed&) = delete;
  collect_handed& operator=(const collect_handed&) = delete;
};

/// Builds the hosted actor's object; returns the result record (seq 0).
std::string create_actor(std::string_view rec, const std::vector<const module_table::module*>& map) {
  wire::actor_create_record c;
  if (!c.read(rec))
    die("corrupted actor record from the driver", 5);
  const auto started = std::chrono::steady_clock::now();
  record_refs refs(c.refs);
  g_actor.info = worker_actor_info{c.actor_id, c.restarted, std::string(c.name), std::string(c.ns)};
  g_actor.concurrency = c.concurrency;
  const void* ctor = resolve(c.constructor, map);
  const void* dtor = resolve(c.destructor, map);
  std::string payload;
  auto st = wire::status::failed;
  if (!ctor || !dtor) {
    payload = "weft: the worker cannot find the actor's constructor (module " + std::to_string(c.constructor.module) +
              ", offset " + std::to_string(c.constructor.offset) + ")";
  } else {
    tls_exit_requested = false;
    tls_in_actor_call = true;
    stored_blob arguments; // (big arguments: read where they lie in the store)
    st = run_guarded(
      [&] {
        const std::string_view args = c.stored ? stashed_bytes(c.args, arguments) : c.args;
        g_actor.instance = reinterpret_cast<actor_constructor>(const_cast<void*>(ctor))(args);
        g_actor.destroy = reinterpret_cast<actor_destructor>(const_cast<void*>(dtor));
      },
      payload);
    tls_in_actor_call = false;
    if (tls_exit_requested && st == wire::status::ok) { // exit_actor() in the constructor
      g_actor.exited = true;
      st = wire::status::ok_exit;
    }
  }
  return done(0, st, started, payload);
}

/// Runs one actor call record on the hosted actor; returns the result record.
std::string run_actor_call(std::string_view rec, const std::vector<const module_table::module*>& map,
                           std::vector<object_ptr>& holds) {
  wire::actor_call_record call;
  if (!call.read(rec))
    die("corrupted actor call record from the driver", 5);
  record_refs refs(call.refs);
  const auto started = std::chrono::steady_clock::now();
  if (g_started)
    g_started->store(call.seq, std::memory_order_release);
  std::string payload;
  collect_handed handed;
  auto st = wire::status::failed;
  const void* inv = resolve(call.invoker, map);
  std::uintptr_t words[2] = {0, static_cast<std::uintptr_t>(call.adjust)};
  if (call.is_virtual)
    words[0] = static_cast<std::uintptr_t>(call.vword);
  else if (const void* m = resolve(call.method, map))
    words[0] = reinterpret_cast<std::uintptr_t>(m);
  if (!g_actor.instance) {
    payload = "weft: the actor has no object in this worker";
  } else if (g_actor.exited) {
    payload = "weft: the actor exited with weft::exit_actor()";
  } else if (!inv || words[0] == 0) {
    payload = "weft: the worker cannot find the method's code (module " + std::to_string(call.method.module) +
              ", offset " + std::to_string(call.method.offset) + ")";
  } else {
    tls_exit_requested = false;
    tls_in_actor_call = true;
    stored_blob arguments; // (big arguments: read where they lie in the store)
    st = run_guarded(
      [&] {
        const std::string_view args = call.stored ? stashed_bytes(call.args, arguments) : call.args;
        reinterpret_cast<actor_method_invoker>(const_cast<void*>(inv))(g_actor.instance, words, args, payload);
      },
      payload);
    tls_in_actor_call = false;
    if (tls_exit_requested) {
      g_actor.exited = true;
      if (st == wire::status::ok)
        st = wire::status::ok_exit;
    }
  }
  // A big result goes to the store (as for a task).
  const bool stored = (st == wire::status::ok || st == wire::status::ok_exit) && stash_result(payload);
  refs.keep(holds);
  return done(call.seq, st, started, payload, handed.offsets, refs.codec.bundle, stored);
}

/// The results of the batch the lane's thread runs, not sent yet. Results
/// of short calls leave together: at the batch's end, or 200 µs after the
/// last send. But a result must not wait for a long call after it: before
/// each call after the first, the lane's thread arms the flusher thread,
/// which sends what still waits once the oldest of it has waited 1 ms.
class pending_results {
public:
  /// (lane's thread) A batch whose results go out as `kind` begins.
  void begin(lane_kind kind) {
    std::lock_guard<std::mutex> lock(mtx_);
    kind_ = kind;
  }
  /// (lane's thread) Adds a result record and the cells it names.
  void add(std::string_view record, std::vector<object_ptr>& holds) {
    std::lock_guard<std::mutex> lock(mtx_);
    if (out_.empty())
      since_ = std::chrono::steady_clock::now();
    wire::writer(out_).put_bytes(record);
    for (auto& h : holds)
      holds_.push_back(std::move(h));
    holds.clear();
  }
  /// Sends what waits, now.
  void flush() {
    std::lock_guard<std::mutex> lock(mtx_);
    send_locked();
  }
  /// (lane's thread) The next call may run long: the flusher sends what
  /// waits if the lane's thread has not by the deadline.
  void arm() {
    std::lock_guard<std::mutex> lock(mtx_);
    if (out_.empty() || armed_)
      return;
    armed_ = true;
    if (!started_) {
      try {
        std::thread([this] { serve(); }).detach(); // (never ends: the process exits)
        started_ = true;
      } catch (const std::exception&) {
        armed_ = false; // (no flusher: results wait for the batch's end, as before it)
      }
    } else if (idle_) {
      wake_.notify_one();
    }
  }

private:
  void send_locked() {
    if (!out_.empty()) {
      if (auto* hook = test_before_results_posted.load(std::memory_order_relaxed))
        hook();
      post_after_outbox(kind_, std::exchange(out_, std::string()));
      if (auto* hook = test_after_results_posted.load(std::memory_order_relaxed))
        hook();
    }
    holds_.clear();
    armed_ = false;
  }
  void serve() {
    std::unique_lock<std::mutex> lock(mtx_);
    for (;;) {
      idle_ = true;
      wake_.wait(lock, [&] { return armed_; });
      idle_ = false;
      // Until what waits was sent by the lane's thread, or waited 1 ms.
      while (armed_) {
        const auto deadline = since_ + std::chrono::milliseconds(1);
        if (std::chrono::steady_clock::now() >= deadline) {
          send_locked();
          break;
        }
        wake_.wait_until(lock, deadline);
      }
    }
  }

  std::mutex mtx_;
  std::condition_variable wake_;
  lane_kind kind_ = lane_kind::done;
  std::string out_;
  std::vector<object_ptr> holds_;               ///< cells the results name, until they are sent
  std::chrono::steady_clock::time_point since_; ///< when the oldest result waiting came
  bool armed_ = false, started_ = false, idle_ = false;
};
pending_results g_pending;

/// Runs the records of a batch in order with `run` on the lane's thread;
/// their results go out as `kind` (see pending_results for when).
template <class Run>
void run_batch(const std::string& batch, Run&& run, lane_kind kind) {
  g_pending.begin(kind);
  std::vector<object_ptr> holds; // cells the result of one call names
  // A call that waits (get/wait) sends the results before it first: the
  // object it waits for may be one of them.
  std::function<void()> flush_fn = [] { g_pending.flush(); };
  auto* outer = std::exchange(tls_flush_results, &flush_fn);
  auto flushed = std::chrono::steady_clock::now();
  wire::reader calls(batch);
  for (bool first = true;; first = false) {
    auto rec = calls.get_bytes();
    if (!calls.ok())
      break;
    if (!first)
      g_pending.arm();
    if (std::string result = run(rec, holds); !result.empty()) // (empty: skipped, recalled)
      g_pending.add(result, holds);
    holds.clear();
    auto now = std::chrono::steady_clock::now();
    if (now - flushed > std::chrono::microseconds(200)) {
      g_pending.flush();
      flushed = now;
    }
  }
  tls_flush_results = outer;
  g_pending.flush();
}

/// An actor with max_concurrency > 1, or one whose coroutine methods were
/// called, runs its calls on threads of their own, yet one at a time, as on
/// the fibers of an actor in the driver: the call that runs holds the baton
/// and lets go of it only while it waits in get, wait or co_await, so a call
/// that waits lets the next one in. Turns go in the order tickets were
/// taken: calls start in the order they came.
class call_baton {
public:
  std::uint64_t ticket() noexcept { return next_++; } // (under mutex())
  void take(std::uint64_t t) {
    std::unique_lock<std::mutex> lock(mtx_);
    turn_.wait(lock, [&] { return serving_ == t; });
  }
  /// Takes a turn behind those already waiting.
  void take() {
    std::unique_lock<std::mutex> lock(mtx_);
    const auto t = next_++;
    turn_.wait(lock, [&] { return serving_ == t; });
  }
  void give() {
    {
      std::lock_guard<std::mutex> lock(mtx_);
      ++serving_;
    }
    turn_.notify_all();
  }
  std::mutex& mutex() noexcept { return mtx_; }

private:
  std::mutex mtx_;
  std::condition_variable turn_;
  std::uint64_t next_ = 0, serving_ = 0;
};

/// The threads that run the calls of such an actor. Slots are the driver's
/// max_concurrency: a call holds one from its start to its end, also while
/// it waits in get, except while a coroutine waits at co_await; a coroutine
/// whose object is ready takes the next free slot before any call that has
/// not started (the driver's order).
class call_pool {
public:
  call_pool(std::uint32_t max, std::function<std::string(std::string_view, std::vector<object_ptr>&)> run) :
    max_(max),
    run_(std::move(run)) {}

  /// Queues the records of a batch, in order, and starts what may start.
  void add_batch(const std::string& batch) {
    wire::reader calls(batch);
    std::lock_guard<std::mutex> lock(mtx_);
    for (;;) {
      auto rec = calls.get_bytes();
      if (!calls.ok())
        break;
      queue_.emplace_back(rec);
    }
    start_more_locked();
  }

  /// Waits for the turn after every call in progress has finished or waits;
  /// no call runs after (the process exits holding it).
  void stop() { baton_.take(); }

  /// The calling thread runs a call and holds the baton: gives it up for
  /// a wait in get or wait, takes it back after (a coroutine waiting at
  /// co_await has given up more; see awaiting).
  static void waiting(bool begins) {
    if (!tls_pool || tls_awaiting)
      return;
    if (begins)
      tls_pool->baton_.give();
    else
      tls_pool->baton_.take();
  }

  /// A coroutine call of this thread starts (true) or ends a wait at
  /// co_await: it gives up its slot and the baton, then takes a slot
  /// (first among those waiting for one) and the baton back. False on a
  /// thread that runs no call of a pool.
  static bool awaiting(bool begins) {
    if (!tls_pool)
      return false;
    tls_awaiting = begins;
    if (begins)
      tls_pool->suspend();
    else
      tls_pool->resume();
    return true;
  }

private:
  bool can_start_locked() const noexcept { return !queue_.empty() && active_ < max_ && ready_ == 0; }

  /// A queued call may start: an idle thread takes it, else a new one.
  /// (Each call in progress, or waiting at co_await, has a thread; when no
  /// more can be made the call waits for one that ends.)
  void start_more_locked() noexcept {
    if (!can_start_locked())
      return;
    if (idle_ > 0) {
      more_.notify_one();
      return;
    }
    try {
      std::thread([this] { serve(); }).detach();
    } catch (const std::exception& e) {
      log().warn("weft: worker {}: no thread for the next actor call ({}); it waits for a running one to end",
                 ::getpid(), e.what());
    }
  }

  void suspend() {
    {
      std::lock_guard<std::mutex> lock(mtx_);
      --active_;
      if (ready_ > 0)
        slot_.notify_all();
      else
        start_more_locked();
    }
    baton_.give();
  }

  void resume() {
    std::uint64_t turn = 0;
    {
      std::unique_lock<std::mutex> lock(mtx_);
      const auto mine = ready_next_++;
      ++ready_;
      slot_.wait(lock, [&] { return ready_serving_ == mine && active_ < max_; });
      ++ready_serving_;
      --ready_;
      ++active_;
      if (ready_ > 0)
        slot_.notify_all(); // (the next one, if a slot is left)
      else
        start_more_locked();
      std::lock_guard<std::mutex> b(baton_.mutex());
      turn = baton_.ticket();
    }
    baton_.take(turn);
  }

  void serve() {
    std::vector<object_ptr> holds;
    for (;;) {
      std::string rec;
      std::uint64_t turn = 0;
      {
        std::unique_lock<std::mutex> lock(mtx_);
        while (!can_start_locked()) {
          ++idle_;
          more_.wait(lock);
          --idle_;
        }
        rec = std::move(queue_.front());
        queue_.pop_front();
        ++active_;
        start_more_locked(); // (max_concurrency > 1: the next may start too)
        std::lock_guard<std::mutex> b(baton_.mutex());
        turn = baton_.ticket(); // in the order the calls came
      }
      baton_.take(turn);
      tls_pool = this;
      std::string result = run_(rec, holds);
      tls_pool = nullptr;
      {
        std::lock_guard<std::mutex> lock(mtx_);
        --active_;
        if (ready_ > 0)
          slot_.notify_all(); // before the next call that has not started
      }
      baton_.give();
      std::string out;
      wire::writer(out).put_bytes(result);
      post_after_outbox(lane_kind::actor_done, out);
      holds.clear();
    }
  }

  static thread_local call_pool* tls_pool;
  static thread_local bool tls_awaiting;
  const std::uint32_t max_;
  std::function<std::string(std::string_view, std::vector<object_ptr>&)> run_;
  std::mutex mtx_;
  std::condition_variable more_; ///< idle threads
  std::condition_variable slot_; ///< coroutines whose object is ready
  std::deque<std::string> queue_;
  std::uint32_t active_ = 0; ///< calls in progress, less coroutines at co_await
  std::uint32_t idle_ = 0, ready_ = 0;
  std::uint64_t ready_next_ = 0, ready_serving_ = 0;
  call_baton baton_;
};
thread_local call_pool* call_pool::tls_pool = nullptr;
thread_local bool call_pool::tls_awaiting = false;

/// Whether a batch of actor calls holds a call of a coroutine method.
bool has_coroutine_call(const std::string& batch) {
  wire::reader calls(batch);
  for (;;) {
    auto rec = calls.get_bytes();
    if (!calls.ok())
      return false;
    wire::actor_call_record call;
    if (call.read(rec) && call.coroutine)
      return true;
  }
}

/// Runs one call record; returns the result record (none for a call the
/// node recalled).
std::string run_call(std::string_view rec, const std::vector<const module_table::module*>& map,
                     std::vector<object_ptr>& holds) {
  wire::call_record call;
  std::string payload;
  collect_handed handed;
  auto st = wire::status::ok;
  if (!call.read(rec))
    die("corrupted call record from the driver", 5);
  record_refs refs(call.refs);
  if (take_recalled(call.seq))
    return {}; // it runs elsewhere: no result from here
  const void* inv = resolve(call.invoker, map);
  const void* fn = resolve(call.fn, map);
  std::vector<exception_filter::matcher> matchers;
  for (wire::reader r(call.matchers); r.ok();) {
    code_ref c;
    if (!wire::get_code_ref(r, c))
      break;
    if (const void* m = resolve(c, map))
      matchers.push_back(reinterpret_cast<exception_filter::matcher>(const_cast<void*>(m)));
  }
  const auto started = std::chrono::steady_clock::now();
  if (g_started)
    g_started->store(call.seq, std::memory_order_release);
  if (take_cancelled(call.seq)) {
    st = wire::status::failed;
    payload = "weft: cancelled before it ran";
  } else if (!inv || !fn) {
    st = wire::status::failed;
    payload = "weft: the worker cannot find the task's code (module " + std::to_string(call.fn.module) + ", offset " +
              std::to_string(call.fn.offset) + "); is the function in a library loaded only in the driver?";
  } else {
    g_cancel.store(false, std::memory_order_relaxed);
    g_running_seq.store(call.seq, std::memory_order_release);
    stored_blob arguments; // (big arguments: read where they lie in the store)
    st = run_guarded(
      [&] {
        const std::string_view args = call.stored ? stashed_bytes(call.args, arguments) : call.args;
        reinterpret_cast<remote_invoker>(const_cast<void*>(inv))(fn, args, payload);
      },
      payload, matchers);
    std::lock_guard<std::mutex> lock(g_cancelled_mtx); // (after a recall that saw it run: see recall())
    g_running_seq.store(0, std::memory_order_release);
  }
  // A big result goes to the store, its reference to the driver (the last
  // of the handed ones).
  const bool stored = st == wire::status::ok && stash_result(payload);
  refs.keep(holds);
  return done(call.seq, st, started, payload, handed.offsets, refs.codec.bundle, stored);
}

} // namespace

bool started_as_worker() noexcept {
  const char* v = std::getenv(wire::env_address);
  return v && *v;
}

bool worker_cancel_requested() noexcept { return g_cancel.load(std::memory_order_acquire); }

bool worker_client_active() noexcept { return g_client && g_client->active.load(std::memory_order_acquire); }

namespace {
/// Arguments that are refs resolved to values (this worker's own objects,
/// or proxies of the driver's) are sent as values: waits for them here.
/// Returns the error of one that failed (it fails the call, as in the
/// driver); throws for an invalid ref.
std::exception_ptr await_arguments(std::span<object_state* const> deps, const char* what) {
  for (object_state* d : deps)
    if (!d)
      throw invalid_argument_error(std::string("weft: an argument of ") + what +
                                   " is an invalid object_ref (default-constructed or moved-from)");
  try {
    if (!deps.empty())
      await_all(deps, 0, "remote");
  } catch (...) {
    return std::current_exception();
  }
  return nullptr;
}
} // namespace

void worker_client_submit(task_base* t) {
  struct guard {
    task_base* t;
    ~guard() {
      if (t)
        t->release();
    }
  } g{t};
  if (auto e = await_arguments(t->deps(), "a task submitted in a worker")) {
    for (auto& r : t->returns())
      r->complete_error(e);
    return;
  }
  std::string args, options, matchers, record;
  worker_codec codec; // holds the refs the arguments name until the record is sent
  {
    ref_codec_scope scope(&codec);
    t->encode_arguments(args);
  }
  const auto inv = driver_code_ref(reinterpret_cast<const void*>(t->invoker()));
  const auto fn = driver_code_ref(t->fn_id());
  if (!inv || !fn)
    throw error("weft: a task submitted in a worker process is in no module the driver knows");
  const task_options& o = t->options();
  const bool filter = o.retry_exceptions.has_value();
  const bool all = filter && o.retry_exceptions->retries_everything();
  encode_each(options, o.num_cpus, o.num_gpus, o.memory, o.resources, o.max_retries, o.max_calls, o.name, filter, all);
  if (filter)
    for (auto m : o.retry_exceptions->matchers())
      if (auto c = driver_code_ref(reinterpret_cast<const void*>(m)))
        wire::put_code_ref(matchers, *c);
  wire::submit_record{*inv, *fn, args, options, matchers, codec.bundle}.write(record);
  // Submissions made one after the other leave in one message: the first
  // asks the control actor to send the outbox, which the later ones join
  // meanwhile (a wait in get/wait sends it at once).
  bool first = false;
  {
    std::lock_guard<std::mutex> lock(g_client->mtx);
    const auto seq = ++g_client->next;
    g_client->pending.emplace(seq, t);
    first = g_client->outbox.empty();
    wire::writer w(g_client->outbox);
    w.put(wire::outbox_kind::task);
    w.put(seq);
    w.put_bytes(record);
    for (auto& h : codec.holds)
      g_client->outbox_holds.push_back(std::move(h));
  }
  g.t = nullptr; // pending holds it now
  if (first)
    caf::anon_send(g_client->ctl, wire::submit_flush_atom::value);
}

void worker_client_call_actor(object_state* via, std::unique_ptr<worker_actor_call> call) {
  if (!via || !via->is_proxy())
    throw invalid_argument_error("weft: actor method call through an invalid actor_handle");
  // An actor that stays in the driver (weft::queue) runs the call there:
  // the record names what builds it in the driver instead of an invoker.
  const void* code = call->invoker() ? reinterpret_cast<const void*>(call->invoker()) : call->driver_builder();
  if (!code)
    throw error("weft: this method of an actor that stays in the driver cannot be called from a worker process: "
                "its parameters or result are not serializable (see weft::is_serializable_v); call it in the driver");
  if (auto e = await_arguments(call->deps(), "an actor method call made in a worker")) {
    call->result().complete_error(e);
    return;
  }
  std::uintptr_t words[2];
  std::memcpy(words, call->method_bytes(), sizeof words);
  wire::actor_call_record rec;
  const auto inv = driver_code_ref(code);
  rec.in_driver = !call->invoker();
  rec.coroutine = call->is_coroutine();
  rec.is_virtual = (words[0] & 1) != 0;
  std::optional<code_ref> method;
  if (rec.is_virtual)
    rec.vword = words[0];
  else
    method = driver_code_ref(reinterpret_cast<const void*>(words[0]));
  if (!inv || (!rec.is_virtual && !method))
    throw error("weft: an actor method called in a worker process is in no module the driver knows");
  rec.invoker = *inv;
  if (method)
    rec.method = *method;
  rec.adjust = static_cast<std::int64_t>(words[1]);
  std::string args, record;
  worker_codec codec; // holds the handle's proxy and the refs the arguments name until sent
  std::uint64_t holder = 0;
  {
    ref_codec_scope scope(&codec);
    call->encode_arguments(args);
    holder = codec.encode(via, nullptr);
  }
  rec.args = args;
  // Like submissions: calls made one after another leave in one message.
  bool first = false;
  {
    std::lock_guard<std::mutex> lock(g_client->mtx);
    const auto seq = ++g_client->next;
    rec.seq = seq;
    rec.write(record);
    g_client->calls.emplace(seq, std::move(call));
    first = g_client->outbox.empty();
    wire::writer w(g_client->outbox);
    w.put(wire::outbox_kind::actor_call);
    w.put(seq);
    w.put_bytes(record);
    w.put(holder);
    w.put_bytes(codec.bundle);
    for (auto& h : codec.holds)
      g_client->outbox_holds.push_back(std::move(h));
  }
  if (first)
    caf::anon_send(g_client->ctl, wire::submit_flush_atom::value);
}

namespace {
/// Queues an outbox entry (kind, seq, record, bundle) for the driver;
/// `reply` (if any) gets its answer, read like an actor call's result.
/// `holds`: cells the record names, kept until it is sent. `monitor` (if
/// any) is registered under the entry's seq before it can be answered.
void queue_outbox(wire::outbox_kind kind, std::string_view record, std::string_view bundle,
                  std::vector<object_ptr>& holds, std::unique_ptr<worker_actor_call> reply,
                  worker_monitor_fn monitor = nullptr) {
  bool first = false;
  {
    std::lock_guard<std::mutex> lock(g_client->mtx);
    const auto seq = ++g_client->next;
    if (reply)
      g_client->calls.emplace(seq, std::move(reply));
    if (monitor)
      g_client->monitors.emplace(seq, std::move(monitor));
    first = g_client->outbox.empty();
    wire::writer w(g_client->outbox);
    w.put(kind);
    w.put(seq);
    w.put_bytes(record);
    w.put_bytes(bundle);
    for (auto& h : holds)
      g_client->outbox_holds.push_back(std::move(h));
  }
  if (first)
    caf::anon_send(g_client->ctl, wire::submit_flush_atom::value);
}
} // namespace

void worker_client_make_actor(const worker_actor_make& m, std::unique_ptr<worker_actor_call> reply) {
  // A class that stays in the driver (weft::queue) is built there: the
  // record names what rebuilds its factory instead of a constructor.
  const bool in_driver = !m.constructor;
  if (in_driver && !m.driver_factory)
    throw error("weft: an actor of class " + m.class_name +
                ", which stays in the driver, cannot be created in a worker process: its constructor arguments are "
                "not serializable (see weft::is_serializable_v); create it in the driver and pass its handle");
  const auto ctor = driver_code_ref(in_driver ? m.driver_factory : reinterpret_cast<const void*>(m.constructor));
  // (The destructor is unused for a class of the driver: name the factory.)
  const auto dtor = driver_code_ref(in_driver ? m.driver_factory : reinterpret_cast<const void*>(m.destructor));
  const auto type = driver_code_ref(reinterpret_cast<const void*>(m.type));
  const auto handle = driver_code_ref(reinterpret_cast<const void*>(m.handle_ops));
  if (!ctor || !dtor || !type || !handle)
    throw error("weft: an actor class created in a worker process is in no module the driver knows");
  std::string args, record;
  worker_codec codec; // holds the refs the arguments name until sent
  {
    ref_codec_scope scope(&codec);
    m.encode_arguments(args);
  }
  wire::actor_make_record{*ctor, *dtor, *type, *handle, args, m.options, in_driver}.write(record);
  queue_outbox(wire::outbox_kind::actor_make, record, codec.bundle, codec.holds, std::move(reply));
}

void worker_client_find_actor(const std::string& name, const std::string& ns, const std::type_info& (*type)() noexcept,
                              ref_ops_fn handle_ops, std::unique_ptr<worker_actor_call> reply) {
  const auto t = driver_code_ref(reinterpret_cast<const void*>(type));
  const auto h = driver_code_ref(reinterpret_cast<const void*>(handle_ops));
  if (!t || !h)
    throw error("weft::get_actor: the actor class is in no module the driver knows");
  std::string record;
  wire::writer r(record);
  r.put_bytes(name);
  r.put_bytes(ns);
  wire::put_code_ref(record, *t);
  wire::put_code_ref(record, *h);
  std::vector<object_ptr> none;
  queue_outbox(wire::outbox_kind::actor_find, record, {}, none, std::move(reply));
}

namespace {
/// The holder number of the handle `via` in an outbox entry of `what`
/// (weft::kill, ...); `codec` keeps the handle's proxy until it is sent.
std::uint64_t encode_handle_for_outbox(object_state* via, const char* what, worker_codec& codec) {
  if (!via || !via->is_proxy())
    throw invalid_argument_error(std::string(what) +
                                 ": the actor_handle is invalid (default-constructed or moved-from)");
  ref_codec_scope scope(&codec);
  return codec.encode(via, nullptr);
}
} // namespace

void worker_client_kill_actor(object_state* via, bool no_restart) {
  worker_codec codec;
  const std::uint64_t holder = encode_handle_for_outbox(via, "weft::kill", codec);
  std::string record;
  wire::writer k(record);
  k.put(holder);
  k.put(static_cast<std::uint8_t>(no_restart ? 1 : 0));
  queue_outbox(wire::outbox_kind::actor_kill, record, codec.bundle, codec.holds, nullptr);
}

namespace {
/// The driver's answer to an entry that returns nothing: done, or failed
/// with what the driver threw.
class ack_reply final : public worker_actor_call {
public:
  explicit ack_reply(object_ptr cell) : cell_(std::move(cell)) {}
  actor_method_invoker invoker() const noexcept override { return nullptr; }
  const void* method_bytes() const noexcept override { return nullptr; }
  std::span<object_state* const> deps() const noexcept override { return {}; }
  void encode_arguments(std::string&) const override {}
  void decode_result(std::string_view) override { static_cast<value_object<int>&>(*cell_.get()).emplace(0); }
  object_state& result() noexcept override { return *cell_.get(); }

private:
  object_ptr cell_;
};
} // namespace

void worker_client_monitor_actor(object_state* via, worker_monitor_fn fn) {
  worker_codec codec;
  const std::uint64_t holder = encode_handle_for_outbox(via, "weft::monitor", codec);
  std::string record;
  wire::writer(record).put(holder);
  object_ptr cell(new value_object<int>());
  queue_outbox(wire::outbox_kind::actor_monitor, record, codec.bundle, codec.holds, std::make_unique<ack_reply>(cell),
               std::move(fn));
  if (tls_in_monitor_callback)
    return; // this thread delivers the answer; a refusal drops the monitor
  // Registered once this returns: an actor already dead has run `fn` (its
  // end comes before the answer), as monitor() does in the driver.
  object_state* c = cell.get();
  await_all(std::span<object_state* const>(&c, 1), 0, "monitor");
}

void worker_client_cancel(object_state* cell, bool force) {
  if (cell->done())
    return; // finished: nothing to cancel, as in the driver
  std::uint64_t target = 0;
  std::uint64_t holder = 0;
  worker_codec codec; // holds a lent object's proxy until sent
  if (cell->is_proxy()) {
    ref_codec_scope scope(&codec);
    holder = codec.encode(cell, nullptr);
  } else {
    // A task this worker submitted: the driver knows it by its seq.
    std::lock_guard<std::mutex> lock(g_client->mtx);
    for (const auto& [seq, t] : g_client->pending) {
      const auto r = t->returns();
      if (std::any_of(r.begin(), r.end(), [cell](const object_ptr& p) { return p.get() == cell; })) {
        target = seq;
        break;
      }
    }
    if (target == 0)
      return; // made by put() or an actor call: no task to cancel
  }
  std::string record;
  wire::writer w(record);
  w.put(target);
  w.put(holder);
  w.put(static_cast<std::uint8_t>(force ? 1 : 0));
  queue_outbox(wire::outbox_kind::cancel, record, codec.bundle, codec.holds, nullptr);
}

void worker_client_flush_results() noexcept {
  flush_batch_results();
  if (worker_client_active())
    flush_submissions(); // what it waits for may be among them
}

void worker_client_blocked(bool blocked) noexcept {
  if (blocked)
    worker_client_flush_results();
  call_pool::waiting(blocked); // (a concurrent actor's call lets the next one in)
  const auto job = g_running_seq.load(std::memory_order_acquire);
  if (!worker_client_active() || job == 0)
    return; // (an actor's worker holds no CPUs of a task)
  std::string body;
  wire::writer w(body);
  w.put(job);
  w.put(static_cast<std::uint8_t>(blocked ? 1 : 0));
  g_lane->post_to_driver(lane_kind::blocked, body);
}

bool worker_coroutine_awaits(bool begins) noexcept { return call_pool::awaiting(begins); }

const worker_actor_info* worker_current_actor() noexcept { return tls_in_actor_call ? &g_actor.info : nullptr; }

bool worker_request_actor_exit() noexcept {
  if (!tls_in_actor_call)
    return false;
  tls_exit_requested = true;
  return true;
}

void run_worker() {
  // Die with the driver, even when it is killed with SIGKILL. The death
  // signal is tied to the thread that started us: the driver starts
  // workers from one long-lived thread.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  const std::string address = getenv_or_die(wire::env_address);
  const std::string token = getenv_or_die(wire::env_token);
  const auto worker_id = static_cast<std::int32_t>(std::strtol(getenv_or_die(wire::env_worker_id), nullptr, 10));
  const long driver = std::strtol(getenv_or_die(wire::env_driver), nullptr, 10);
  if (::getppid() != driver)
    die("the driver is already gone", 0);
  // Object ids unique on the node: each worker numbers its objects in a
  // range of its own (the driver's start at 1).
  set_object_id_space((static_cast<std::uint64_t>(worker_id) << object_id_space_shift) + 1);
  set_proxy_hooks(&g_proxy_hooks);
  std::setvbuf(stdout, nullptr, _IOLBF, 0); // lines reach the driver as they are printed
  if (void* page = ::mmap(nullptr, wire::progress_size, PROT_READ | PROT_WRITE, MAP_SHARED, wire::progress_fd, 0);
      page != MAP_FAILED)
    g_started = static_cast<std::atomic<std::uint64_t>*>(page);
  ::close(wire::progress_fd);
  if (const char* t = std::getenv(wire::env_store_threshold); t && *t) {
    try {
      // Kept for the life of the process, like the driver's.
      static std::unique_ptr<shm_arena> store = shm_arena::attach(wire::store_fd);
      // Never unmapped: an array destroyed at exit still forgets its slot.
      set_store_ledger(store_ledger::attach(wire::ledger_fd).release());
      // Kept too: spilled arrays may be released at exit.
      spill_store* spill = nullptr;
      if (const char* dir = std::getenv(wire::env_spill_directory); dir && *dir)
        spill = spill_store::open(dir).release();
      set_node_store(store.get(), static_cast<std::size_t>(std::strtoull(t, nullptr, 10)), spill);
    } catch (const std::exception& e) {
      die(std::string("cannot map the node's object store: ") + e.what(), 2);
    }
  }

  try {
    static doorbell_map bell = doorbell_map::attach(wire::doorbell_fd); // (never unmapped: _Exit ends us)
    g_lane = lane::attach(wire::lane_fd, bell.get()).release();
  } catch (const std::exception& e) {
    die(std::string("cannot map the lane to the driver: ") + e.what(), 2);
  }

  const auto colon = address.rfind(':');
  const std::string host = address.substr(0, colon);
  const auto port = static_cast<std::uint16_t>(std::strtoul(address.c_str() + colon + 1, nullptr, 10));

  caf::actor_system_config cfg;
  cfg.load<caf::io::middleman>();
  // Work sharing wakes a parked thread at once; the default work stealing
  // sleeps up to 10 ms between polls when idle.
  cfg.set("scheduler.policy", caf::atom("sharing"));
  cfg.set("scheduler.max-threads", 1); // the control actor's (tasks run on the lane's thread)
  cfg.set("middleman.workers", 0);     // deserialize on the I/O thread: one thread hop less per message
  caf::actor_system sys(cfg);
  auto node = sys.middleman().remote_actor(host, port);
  if (!node)
    die("cannot reach the driver at " + address + ": " + sys.render(node.error()), 3);

  // Tasks run right in the actor's handler, one at a time, in arrival
  // order: no hand-over to another thread on the way in or out.
  struct state {
    module_table mine = module_table::loaded();
    std::vector<const module_table::module*> map;
    std::int32_t id = 0;
  };
  auto st = std::make_shared<state>();
  st->id = worker_id;
  g_client = new client_state;
  g_client->node = *node;
  g_client->worker_id = worker_id;
  // The control actor: hears cancel messages while a call runs.
  // (Spawned functions take an argument: CAF 0.17 dereferences a null
  // tuple pointer when a spawned function takes none; UBSan reports it.)
  auto ctl = sys.spawn(
    [](caf::event_based_actor*, int) -> caf::behavior {
      return {
        [](wire::result_atom, const std::string& batch) {
          taken_list taken;
          for (wire::reader r(batch);;) {
            const auto seq = r.get<std::uint64_t>();
            const auto kind = r.get<std::uint8_t>();
            const std::string payload(r.get_bytes());
            const std::string ids(r.get_bytes());
            const std::string handed(r.get_bytes());
            if (!r.ok() || handed.size() % sizeof(std::uint64_t) != 0)
              break;
            taken.read(handed, kind, payload, [&](std::uint8_t k, const std::string& p, const std::string& h, bool) {
              client_result(seq, k, p, ids, h);
            });
          }
        },
        [](wire::submit_flush_atom) { flush_submissions(); },
        [](wire::value_atom, std::uint64_t id, std::uint8_t kind, const std::string& payload, const std::string& ids,
           const std::string& handed) {
          if (handed.size() % sizeof(std::uint64_t) != 0)
            return;
          taken_list taken;
          taken.read(handed, kind, payload,
                     [&](std::uint8_t k, const std::string& p, const std::string& h, bool untaken) {
                       proxy_value(id, k, p, ids, h, untaken);
                     });
        },
        [](wire::release_flush_atom) { flush_releases(); },
        // The driver took its own references to what results handed over.
        [](wire::ack_atom, const std::string& refs) { release_handed_references(refs); },
        [](wire::recall_atom, std::uint64_t front, const std::string& seqs) { recall(front, seqs); },
        [](wire::cancel_atom, std::uint64_t seq) {
          if (g_running_seq.load(std::memory_order_acquire) == seq) {
            g_cancel.store(true, std::memory_order_release);
            return;
          }
          std::lock_guard<std::mutex> lock(g_cancelled_mtx);
          g_cancelled.insert(seq);
        },
      };
    },
    0);
  g_client->ctl = ctl;
  // Work arrives on the lane and runs on its thread, one message at a
  // time, in the order sent; the actor below only hears the handshake.
  auto serve_lane = [st] {
    lane_kind k{};
    std::string body;
    std::unique_ptr<call_pool> pool; // (never freed: the process exits)
    while (g_lane->take_from_driver(k, body, lane_spin_ns)) {
      switch (k) {
      case lane_kind::call:
        run_batch(
          body, [&](std::string_view rec, std::vector<object_ptr>& holds) { return run_call(rec, st->map, holds); },
          lane_kind::done);
        break;
      case lane_kind::actor_create: {
        std::string out;
        wire::writer(out).put_bytes(create_actor(body, st->map));
        post_after_outbox(lane_kind::actor_done, out);
        break;
      }
      case lane_kind::actor_call:
        // Calls run on the lane's thread, one after another, until the
        // actor needs turns: max_concurrency > 1, or a coroutine method
        // (it lets the next calls run while it waits at co_await).
        if (!pool && (g_actor.concurrency > 1 || has_coroutine_call(body)))
          pool = std::make_unique<call_pool>(
            std::max<std::uint32_t>(g_actor.concurrency, 1),
            [st](std::string_view rec, std::vector<object_ptr>& holds) { return run_actor_call(rec, st->map, holds); });
        if (pool) {
          pool->add_batch(body);
          break;
        }
        run_batch(
          body,
          [&](std::string_view rec, std::vector<object_ptr>& holds) { return run_actor_call(rec, st->map, holds); },
          lane_kind::actor_done);
        break;
      case lane_kind::actor_quit:
        if (pool)
          pool->stop(); // (the calls in progress have finished or wait; none runs after)
        if (g_actor.instance && g_actor.destroy) {
          tls_in_actor_call = true;
          g_actor.destroy(g_actor.instance);
          tls_in_actor_call = false;
        }
        std::fflush(nullptr);
        std::_Exit(0);
      default:
        die("a message of unknown kind " + std::to_string(static_cast<int>(k)) + " on the lane from the driver", 5);
      }
    }
    die("corrupted lane from the driver", 5);
  };
  auto self = sys.spawn(
    [st, serve_lane](caf::event_based_actor* self, caf::actor n) -> caf::behavior {
      self->monitor(n);
      self->set_down_handler([](caf::down_msg&) { std::_Exit(0); }); // the driver is gone
      return {
        [st, serve_lane](wire::welcome_atom, const std::string& modules) {
          if (auto missing = st->mine.match(modules, st->map); !missing.empty())
            die(missing, 4);
          g_client->map = &st->map;
          g_client->active.store(true, std::memory_order_release); // tasks here may submit tasks now
          std::thread(serve_lane).detach();
        },
        [](wire::refuse_atom, const std::string& why) { die("refused by the driver: " + why, 4); },
        [](wire::retire_atom) {
          std::fflush(nullptr);
          std::_Exit(0);
        },
      };
    },
    *node);
  caf::anon_send(*node, wire::hello_atom::value, token, worker_id, static_cast<std::int32_t>(::getpid()),
                 st->mine.main_build_id(), self, ctl);
  for (;;)
    ::pause(); // the actor ends the process
}

} // namespace weft::detail
