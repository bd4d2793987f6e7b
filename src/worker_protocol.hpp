// Private: what the driver's node and its worker processes say to each
// other. The handshake and what a worker's control actor hears go as CAF
// messages over io::middleman on 127.0.0.1; work and its results go through
// the worker's lane (lane.hpp: shared-memory rings, kinds in lane_kind).
//
// CAF:
//   worker -> node   (hello,   token, worker id, pid, build id, worker actor, control actor)
//   node   -> worker (welcome, module table)   or (refuse, reason)
//   node   -> control (cancel, seq)            running: is_cancelled() turns
//                                              true; queued: skipped (also
//                                              when the cancel overtakes the call)
//   node   -> worker (retire)                  exit (max_calls reached)
//   node   -> control (w_recall, seq, seqs)    the task `seq` waits in get:
//                                              if it still runs, the tasks
//                                              behind it in the worker's line
//                                              (packed u64) are skipped there,
//                                              and the worker says so (recalled)
//   node   -> control (w_result, (seq, result kind, payload, ref ids,
//                    handed) tuples) ends of nested tasks and actor calls
//                    made in the worker, and of actors it monitors
//                    (monitor_down); results that end together leave together
//   node   -> control (w_ack, handed) the node took references of its own
//                    to what the worker's results and submissions handed
//                    over (packed u64): the worker releases its own
//   node   -> control (w_value,  object id, kind, payload, ids, handed)
//                    the value of a lent object a proxy waits for
//   control -> itself (w_rflush / w_sflush)  send the releases / submissions
//                    collected meanwhile
//
// Lane, driver -> worker (the worker's lane thread runs them, in order; it
// starts once the welcome is read):
//   call         task call records
//   actor_create the create record of the actor a worker was started for
//   actor_call   actor call records
//   actor_quit   run the destructor, exit
// Lane, worker -> driver (one ring: everything a worker says after hello
// arrives in the order it was said):
//   done         task results, in the order of the calls
//   actor_done   actor call results (seq 0: the constructor)
//   submit       nested submissions and actor calls made one after another
//                (outbox entries tagged outbox_kind: (task, seq, submit
//                record) or (actor call, seq, actor call record, holder id,
//                ref bundle): a call through a handle the node lent, or
//                (actor make, seq, actor make record, ref bundle): an actor
//                created there (its handle comes back as the result), or
//                (actor kill, seq, holder id, u8 no_restart), or (actor
//                find, seq, (name, namespace, type code ref, handle ops code
//                ref), ref bundle): get_actor there (a handle, or none, back),
//                or (actor monitor, seq, holder id, ref bundle): monitor()
//                there (an empty result once registered; the actor's end
//                later comes as a result of kind monitor_down with the same
//                seq), or (cancel, seq, (nested task seq, holder id, u8
//                force), ref bundle): cancel() there of a task it submitted
//                (by its seq) or of an object the node lent it (holder id))
//   blocked      (job seq, blocked?) around a wait in get/wait: the job's
//                CPUs are lent meanwhile
//   fetch        object id: a proxy is waited for
//   release      (id, count) pairs: proxies let go
//   recalled     packed u64 seqs: tasks of its line it will not run (w_recall);
//                sent before the result of the task they waited behind
//   taken        packed u64 store references: the worker took references of
//                its own to what w_result / w_value handed it; the node
//                releases its own
//
// Object refs as themselves (see ref_codec.hpp): records from the node list
// the ids of the refs they carry, which the node counts as borrowed by
// that worker; records from a worker carry a ref bundle (held ids, and
// exported objects with their values).
//
// Batches are length-prefixed records one after the other. A worker runs
// the calls of a batch one at a time and sends the results it has after a
// call once 200 µs passed since it last sent, and before a call waits.
//
// Records are little packed strings (below); argument and result bytes in
// them come from the serializer facade.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include <caf/atom.hpp>

#include "modules.hpp"

namespace weft::detail::wire {

using hello_atom = caf::atom_constant<caf::atom("w_hello")>;
using welcome_atom = caf::atom_constant<caf::atom("w_welcome")>;
using refuse_atom = caf::atom_constant<caf::atom("w_refuse")>;
using cancel_atom = caf::atom_constant<caf::atom("w_cancel")>;
using retire_atom = caf::atom_constant<caf::atom("w_retire")>;
using recall_atom = caf::atom_constant<caf::atom("w_recall")>;
using result_atom = caf::atom_constant<caf::atom("w_result")>;
using actor_flush_atom = caf::atom_constant<caf::atom("a_flush")>; ///< node to itself: send an actor's outbox
using value_atom = caf::atom_constant<caf::atom("w_value")>;
using release_flush_atom = caf::atom_constant<caf::atom("w_rflush")>;
/// driver to worker: the store references its results handed over (packed
/// u64s), which the driver now holds references of its own to
using ack_atom = caf::atom_constant<caf::atom("w_ack")>;
using submit_flush_atom = caf::atom_constant<caf::atom("w_sflush")>;   ///< control actor to itself
using result_flush_atom = caf::atom_constant<caf::atom("w_resflush")>; ///< node to itself

/// Environment of a worker process: where its driver listens, and the
/// secret that proves it was started by that driver.
inline constexpr const char* env_address = "WEFT_WORKER_OF";    // "127.0.0.1:port"
inline constexpr const char* env_token = "WEFT_WORKER_TOKEN";   // hex
inline constexpr const char* env_driver = "WEFT_WORKER_DRIVER"; // driver pid
inline constexpr const char* env_worker_id = "WEFT_WORKER_ID";  // the node's number for it, sent back in hello
/// fd 3 of a worker: a shared page whose first 8 bytes (an atomic u64) the
/// worker sets to each call's seq before it runs it.
inline constexpr int progress_fd = 3;
/// fd 4 of a worker: the node's shared-memory object store (weft::array),
/// and the threshold from which arrays go there, in its environment.
inline constexpr int store_fd = 4;
inline constexpr const char* env_store_threshold = "WEFT_WORKER_STORE";
/// fd 5 of a worker with a store: its ledger of the store references it
/// holds, which the driver releases when it dies (store_ledger.hpp).
inline constexpr int ledger_fd = 5;
/// A worker's spill directory (config::object_spilling), if it has one.
inline constexpr const char* env_spill_directory = "WEFT_WORKER_SPILL";
/// fd 6 of a worker: the node's doorbell page; fd 7: its lane (lane.hpp).
inline constexpr int doorbell_fd = 6;
inline constexpr int lane_fd = 7;
inline constexpr std::size_t progress_size = 4096;

/// ok_exit: ok, and the actor method called exit_actor().
enum class status : std::uint8_t { ok = 0, exception = 1, failed = 2, ok_exit = 3 };

class writer {
public:
  explicit writer(std::string& out) : out_(out) {}
  template <class T>
  void put(T v) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof v);
    out_.append(b, sizeof b);
  }
  void put_bytes(std::string_view s) {
    put(static_cast<std::uint32_t>(s.size()));
    out_.append(s);
  }

private:
  std::string& out_;
};

/// Reads a record; `ok()` turns false on any overrun (nothing is trusted).
class reader {
public:
  explicit reader(std::string_view in) : in_(in) {}
  template <class T>
  T get() {
    T v{};
    if (in_.size() < sizeof v) {
      ok_ = false;
      in_ = {};
      return v;
    }
    std::memcpy(&v, in_.data(), sizeof v);
    in_.remove_prefix(sizeof v);
    return v;
  }
  std::string_view get_bytes() {
    auto n = get<std::uint32_t>();
    if (in_.size() < n) {
      ok_ = false;
      in_ = {};
      return {};
    }
    auto s = in_.substr(0, n);
    in_.remove_prefix(n);
    return s;
  }
  bool ok() const noexcept { return ok_; }
  bool at_end() const noexcept { return in_.empty(); }
  void fail() noexcept {
    ok_ = false;
    in_ = {};
  }

private:
  std::string_view in_;
  bool ok_ = true;
};

/// A task record: seq, invoker and function code refs, argument bytes, and
/// the code refs of retry_on<E...>()'s type tests (packed module, offset).
struct call_record {
  std::uint64_t seq = 0;
  code_ref invoker;
  code_ref fn;
  std::string_view args;
  std::string_view matchers;
  std::string_view refs; ///< ids of the refs the arguments carry (packed u64)
  bool stored = false;   ///< args is a reference to a block of the store (stored_bytes.hpp)

  void write(std::string& out) const {
    writer w(out);
    w.put(seq);
    w.put(invoker.module);
    w.put(invoker.offset);
    w.put(fn.module);
    w.put(fn.offset);
    w.put(static_cast<std::uint8_t>(stored ? 1 : 0));
    w.put_bytes(args);
    w.put_bytes(matchers);
    w.put_bytes(refs);
  }
  bool read(std::string_view in) {
    reader r(in);
    seq = r.get<std::uint64_t>();
    invoker.module = r.get<std::uint32_t>();
    invoker.offset = r.get<std::uint64_t>();
    fn.module = r.get<std::uint32_t>();
    fn.offset = r.get<std::uint64_t>();
    const auto flags = r.get<std::uint8_t>();
    stored = flags == 1;
    args = r.get_bytes();
    matchers = r.get_bytes();
    refs = r.get_bytes();
    return r.ok() && flags <= 1 && refs.size() % sizeof(std::uint64_t) == 0;
  }
};

/// Packs / unpacks a list of code refs (retry_on's type tests).
inline void put_code_ref(std::string& out, code_ref c) {
  writer w(out);
  w.put(c.module);
  w.put(c.offset);
}
inline bool get_code_ref(reader& r, code_ref& c) {
  c.module = r.get<std::uint32_t>();
  c.offset = r.get<std::uint64_t>();
  return r.ok();
}

/// A result record: seq, status, payload (result bytes, or the encoded
/// (type name, message, whether retry_on's type tests matched it) of an
/// exception, or a message).
struct done_record {
  std::uint64_t seq = 0;
  status st = status::ok;
  std::uint32_t run_us = 0; ///< how long the call ran in the worker
  std::string_view payload;
  /// Store blocks whose references the payload hands over (packed u64
  /// offsets): whoever drops the record undecoded releases them.
  std::string_view handed;
  /// The ref bundle of the refs the payload carries.
  std::string_view refs;
  /// The payload is a reference to a block of the store (stored_bytes.hpp),
  /// handed over: the last offset in `handed` is that block's.
  bool stored = false;

  void write(std::string& out) const {
    writer w(out);
    w.put(seq);
    w.put(static_cast<std::uint8_t>(static_cast<std::uint8_t>(st) | (stored ? 0x80 : 0)));
    w.put(run_us);
    w.put_bytes(payload);
    w.put_bytes(handed);
    w.put_bytes(refs);
  }
  bool read(std::string_view in) {
    reader r(in);
    seq = r.get<std::uint64_t>();
    const auto s = r.get<std::uint8_t>();
    st = static_cast<status>(s & 0x7f);
    stored = (s & 0x80) != 0;
    run_us = r.get<std::uint32_t>();
    payload = r.get_bytes();
    handed = r.get_bytes();
    refs = r.get_bytes();
    return r.ok() && static_cast<std::uint8_t>(st) <= 3 && handed.size() % sizeof(std::uint64_t) == 0 &&
           (!stored || ((st == status::ok || st == status::ok_exit) && !handed.empty()));
  }
};

/// What builds an actor's object in its worker: constructor and destructor
/// code refs, encoded constructor arguments, and what runtime_context()
/// tells the actor's methods there.
struct actor_create_record {
  code_ref constructor;
  code_ref destructor;
  std::string_view args;
  std::uint64_t actor_id = 0;
  bool restarted = false;
  std::string_view name;
  std::string_view ns;
  std::string_view refs;         ///< ids of the refs the arguments carry
  std::uint32_t concurrency = 1; ///< max_concurrency: calls in progress at once
  bool stored = false;           ///< args is a reference to a block of the store (stored_bytes.hpp)

  void write(std::string& out) const {
    writer w(out);
    for (const code_ref& r : {constructor, destructor}) {
      w.put(r.module);
      w.put(r.offset);
    }
    w.put_bytes(args);
    w.put(actor_id);
    w.put(static_cast<std::uint8_t>((restarted ? 1 : 0) | (stored ? 2 : 0)));
    w.put_bytes(name);
    w.put_bytes(ns);
    w.put_bytes(refs);
    w.put(concurrency);
  }
  bool read(std::string_view in) {
    reader r(in);
    for (code_ref* c : {&constructor, &destructor}) {
      c->module = r.get<std::uint32_t>();
      c->offset = r.get<std::uint64_t>();
    }
    args = r.get_bytes();
    actor_id = r.get<std::uint64_t>();
    const auto flags = r.get<std::uint8_t>();
    restarted = (flags & 1) != 0;
    stored = (flags & 2) != 0;
    name = r.get_bytes();
    ns = r.get_bytes();
    refs = r.get_bytes();
    concurrency = r.get<std::uint32_t>();
    return r.ok() && flags <= 3 && refs.size() % sizeof(std::uint64_t) == 0 && concurrency >= 1;
  }
};

/// One actor method call: seq, invoker, the member-function pointer (a
/// code ref for a non-virtual method; for a virtual one the raw first word,
/// 1 + vtable offset, which means the same in every process), its
/// this-adjustment, and the argument bytes. A worker's call on an actor
/// that stays in the driver (`in_driver`) names a driver_call_builder as
/// its invoker.
struct actor_call_record {
  std::uint64_t seq = 0;
  code_ref invoker;
  bool is_virtual = false;
  bool in_driver = false;
  bool coroutine = false;  ///< a weft::coro method: it gives up its turn at co_await
  bool stored = false;     ///< args is a reference to a block of the store (stored_bytes.hpp)
  code_ref method;         ///< non-virtual
  std::uint64_t vword = 0; ///< virtual
  std::int64_t adjust = 0;
  std::string_view args;
  std::string_view refs; ///< ids of the refs the arguments carry

  void write(std::string& out) const {
    writer w(out);
    w.put(seq);
    w.put(invoker.module);
    w.put(invoker.offset);
    w.put(
      static_cast<std::uint8_t>((is_virtual ? 1 : 0) | (in_driver ? 2 : 0) | (coroutine ? 4 : 0) | (stored ? 8 : 0)));
    w.put(method.module);
    w.put(method.offset);
    w.put(vword);
    w.put(adjust);
    w.put_bytes(args);
    w.put_bytes(refs);
  }
  bool read(std::string_view in) {
    reader r(in);
    seq = r.get<std::uint64_t>();
    invoker.module = r.get<std::uint32_t>();
    invoker.offset = r.get<std::uint64_t>();
    const auto flags = r.get<std::uint8_t>();
    is_virtual = (flags & 1) != 0;
    in_driver = (flags & 2) != 0;
    coroutine = (flags & 4) != 0;
    stored = (flags & 8) != 0;
    method.module = r.get<std::uint32_t>();
    method.offset = r.get<std::uint64_t>();
    vword = r.get<std::uint64_t>();
    adjust = r.get<std::int64_t>();
    args = r.get_bytes();
    refs = r.get_bytes();
    return r.ok() && flags <= 15 && refs.size() % sizeof(std::uint64_t) == 0;
  }
};

/// A task submitted by a task in a worker: invoker and function code refs,
/// argument bytes, task options (serializer bytes) and retry_on's type
/// tests (packed code refs).
struct submit_record {
  code_ref invoker;
  code_ref fn;
  std::string_view args;
  std::string_view options;
  std::string_view matchers;
  std::string_view refs; ///< the ref bundle of the refs the arguments carry

  void write(std::string& out) const {
    writer w(out);
    for (const code_ref& r : {invoker, fn}) {
      w.put(r.module);
      w.put(r.offset);
    }
    w.put_bytes(args);
    w.put_bytes(options);
    w.put_bytes(matchers);
    w.put_bytes(refs);
  }
  bool read(std::string_view in) {
    reader r(in);
    for (code_ref* c : {&invoker, &fn}) {
      c->module = r.get<std::uint32_t>();
      c->offset = r.get<std::uint64_t>();
    }
    args = r.get_bytes();
    options = r.get_bytes();
    matchers = r.get_bytes();
    refs = r.get_bytes();
    return r.ok();
  }
};

/// How a nested task ended, for the worker that submitted it. Payloads:
/// ok: result bytes; task_error: (type, message, chain); crashed: (message,
/// signal, exit code); other: (weft error class name, message).
/// monitor_down: an actor a worker monitors ended; payload (u64 actor id,
/// u8 normal, cause bytes), seq: the monitor's.
/// (ok_stored: the payload is a reference to a store block handed over, the
/// last of the handed ones; see stored_bytes.hpp.)
enum class result_kind : std::uint8_t {
  ok = 0,
  task_error = 1,
  crashed = 2,
  other = 3,
  monitor_down = 4,
  ok_stored = 5
};

/// What an entry of a worker's w_submit batch is.
enum class outbox_kind : std::uint8_t {
  task = 0,
  actor_call = 1,
  actor_make = 2,
  actor_kill = 3,
  actor_find = 4,
  actor_monitor = 5,
  cancel = 6
};

/// An actor created in a worker (outbox entry actor_make: seq, this
/// record, ref bundle): the driver creates it and answers with a handle
/// (the holder it lends, and the actor's id) as the entry's result. For a
/// class that stays in the driver (`in_driver`), `constructor` names a
/// driver_factory_builder and `destructor` is unused.
struct actor_make_record {
  code_ref constructor;
  code_ref destructor;
  code_ref type;   ///< a function returning the class's std::type_info (same binary: same type)
  code_ref handle; ///< the ref ops of the class's handles (handle_ops<T>)
  std::string_view args;
  std::string_view options; ///< encoded actor_options
  bool in_driver = false;

  void write(std::string& out) const {
    writer w(out);
    for (const code_ref& r : {constructor, destructor, type, handle}) {
      w.put(r.module);
      w.put(r.offset);
    }
    w.put_bytes(args);
    w.put_bytes(options);
    w.put(static_cast<std::uint8_t>(in_driver));
  }
  bool read(std::string_view in) {
    reader r(in);
    for (code_ref* c : {&constructor, &destructor, &type, &handle}) {
      c->module = r.get<std::uint32_t>();
      c->offset = r.get<std::uint64_t>();
    }
    args = r.get_bytes();
    options = r.get_bytes();
    const auto flag = r.get<std::uint8_t>();
    in_driver = flag != 0;
    return r.ok() && r.at_end() && flag <= 1;
  }
};

/// One entry of a ref bundle (records from a worker): a ref to an object
/// the worker borrowed from the node (`held`: only its id), or to one of
/// its own, exported with the message: its value (encoded by the type's
/// ref_ops, named by `ops`; `handed`: the store references the value hands
/// over) or its error (`err`, with the payload of rebuild_error). Entries
/// come in dependency order: the refs inside an exported value before it.
struct bundle_entry {
  enum class kind : std::uint8_t { held = 0, value = 1, error = 2 };
  kind k = kind::held;
  std::uint64_t id = 0;
  code_ref ops;
  std::uint8_t err = 0;
  std::string_view payload;
  std::string_view handed;

  void write(std::string& out) const {
    writer w(out);
    w.put(static_cast<std::uint8_t>(k));
    w.put(id);
    if (k == kind::held)
      return;
    w.put(ops.module);
    w.put(ops.offset);
    w.put(err);
    w.put_bytes(payload);
    w.put_bytes(handed);
  }
  /// Reads the next entry from `r`; false at the end or on corrupt input
  /// (then r.ok() is false).
  bool read(reader& r) {
    if (r.at_end())
      return false;
    k = static_cast<kind>(r.get<std::uint8_t>());
    id = r.get<std::uint64_t>();
    if (k == kind::held)
      return r.ok();
    ops.module = r.get<std::uint32_t>();
    ops.offset = r.get<std::uint64_t>();
    err = r.get<std::uint8_t>();
    payload = r.get_bytes();
    handed = r.get_bytes();
    if (static_cast<std::uint8_t>(k) > 2 || handed.size() % sizeof(std::uint64_t) != 0)
      r.fail();
    return r.ok();
  }
};

} // namespace weft::detail::wire
