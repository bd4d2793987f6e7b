// Private: the node of worker-process mode, inside the driver.
//
// With config::workers = processes, every task the scheduler starts is
// handed to dispatch() instead of running on a fiber. The task keeps its
// resources; the node sends it (code refs + encoded arguments) to an idle
// worker process over CAF's io::middleman (127.0.0.1), and finishes it
// when the result comes back. Workers are started lazily (one more for
// each task waiting for one; the scheduler's resources bound how many run
// at once), reused, and killed only by cancel(force), max_calls retirement
// and shutdown. A worker that dies while running a task is seen through
// its pidfd: the task is retried on another worker (max_retries) or fails
// with worker_crashed_error naming the signal or exit code.
//
// Actors get a worker each (Ray's model: one process per actor), started
// by start_actor() for one incarnation and ended by end_actor(): that worker
// takes no tasks. Its death (seen the same way) is reported to the actor
// runtime, which restarts the actor as its options say.
//
// One I/O thread starts the workers (their parent-death signal is tied to
// it), forwards their stdout/stderr line by line prefixed "(pid=N) ", and
// reaps them. One CAF actor (the node) talks to them. State is under mtx_.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "lane.hpp"
#include "modules.hpp"
#include "ref_codec.hpp"
#include "runtime.hpp"
#include "stored_bytes.hpp"

namespace caf {
class actor;
}

namespace weft::detail {

class worker_ledger;

/// Fault injection for tests only: when set, called right after an actor
/// call went to its worker process, on the incarnation's thread, with the
/// cell its reply will fill. Lets a test hold that thread at the one spot
/// where a race with the worker's reply and death is possible.
extern std::atomic<void (*)(object_state& reply)> test_after_actor_call_sent;

/// Worker processes, actors: what a method call (or the constructor) of an
/// actor living in a worker gets back.
struct actor_reply {
  std::string payload; ///< the encoded result (when not in `block`)
  stored_blob block;   ///< a big encoded result, in the store (stored_bytes.hpp)
  bool exit_requested = false;
  /// The refs the payload carries (decode it with this codec installed);
  /// refs.handed: the store references it hands over.
  mutable ref_table refs;
  /// Set by whoever reads the payload (or passes it on): its store
  /// references are theirs from then on. A reply never read gives them back.
  mutable bool taken = false;

  actor_reply() = default;
  actor_reply(actor_reply&& o) noexcept :
    payload(std::move(o.payload)),
    block(std::move(o.block)),
    exit_requested(o.exit_requested),
    refs(std::move(o.refs)),
    taken(std::exchange(o.taken, true)) {}
  actor_reply& operator=(actor_reply&&) = delete;
  ~actor_reply();
  /// The encoded result, wherever it lies.
  std::string_view bytes() const noexcept {
    return block.empty() ? std::string_view(payload)
                         : std::string_view(reinterpret_cast<const char*>(block.data()), block.size());
  }
};

/// What a task or actor call submitted by a worker ends with in the
/// driver: the result bytes as the worker that ran it sent them (the
/// driver never reads them), the refs they carry, and the store references
/// they hand over.
struct forwarded_result {
  std::string bytes;
  std::vector<carried_ref> refs;
  std::string handed;
};
/// Stores `bytes` (and the refs of the codec installed to read them) as the
/// value of `cell`, a value_object<forwarded_result>.
void store_forwarded_result(object_state& cell, std::string_view bytes);

/// A method call a worker made through a handle the driver lent it.
struct forwarded_call {
  actor_method_invoker invoker = nullptr;
  /// Instead, on an actor that stays in the driver: what builds the typed
  /// call here (libactor's driver_call_builder).
  const void* driver_builder = nullptr;
  std::uintptr_t method[2] = {0, 0}; ///< the member-function pointer's words, in this process
  const void* method_id = nullptr;   ///< for names in errors (null for a virtual method)
  bool coroutine = false;            ///< a weft::coro method
  std::string args;
  std::vector<carried_ref> arg_refs;
  object_ptr result; ///< a value_object<forwarded_result>
  /// The calling worker's store references, which args may name without
  /// holding one: if it dies, they are released after this call.
  std::shared_ptr<worker_ledger> submitter;
};
/// The actor runtime makes `call` on the actor whose handle `holder` (a
/// cell of the driver) holds. Throws when it cannot.
using actor_call_forwarder = void (*)(object_state& holder, forwarded_call call);
void set_actor_call_forwarder(actor_call_forwarder f) noexcept;

/// An actor a worker creates, as the driver makes it.
struct forwarded_make {
  actor_constructor constructor = nullptr;
  actor_destructor destructor = nullptr;
  /// Instead, for a class that stays in the driver: what builds its factory
  /// here from the arguments (libactor's driver_factory_builder).
  const void* driver_factory = nullptr;
  const std::type_info& (*type)() noexcept = nullptr;
  ref_ops_fn handle_ops = nullptr;
  std::string args;
  std::vector<carried_ref> arg_refs;
  std::string options; ///< encoded actor_options
};
/// What a monitor a worker asked for is told when its actor ends: (actor
/// id, normal exit, cause), as in weft::actor_exit.
using actor_down_fn = std::function<void(std::uint64_t, bool, const std::string&)>;

/// The actor runtime creates the actor and returns its handle as a result
/// for the worker (the holder it lends in `refs`). Throws what creating
/// it throws. `kill` kills the actor whose handle `holder` holds.
struct actor_maker {
  forwarded_result (*make)(forwarded_make m);
  void (*kill)(object_state& holder, bool no_restart);
  /// get_actor for a worker: the handle of the live actor named so, or
  /// none (holder 0). Throws when it is of another class.
  forwarded_result (*find)(const std::string& name, const std::string& ns, const std::type_info& type,
                           ref_ops_fn handle_ops);
  /// monitor() for a worker: `down` runs once when the actor whose handle
  /// `holder` holds is dead for good, as a monitor of the driver would.
  /// Returns the registration, which unregisters `down` when dropped; null
  /// when `down` ran at once (the actor was dead already). Does not keep
  /// the actor alive. Throws when `holder` holds no handle.
  std::shared_ptr<void> (*watch)(object_state& holder, actor_down_fn down);
};
void set_actor_maker(const actor_maker* m) noexcept;

/// Monitors registered on actors on behalf of workers and not yet fired or
/// unregistered (a worker that dies takes its own with it). For tests.
std::int64_t worker_monitors_registered() noexcept;
/// The actor runtime counts them: +1 when it registers one, -1 when it is
/// gone (fired or unregistered).
void count_worker_monitor(int delta) noexcept;

/// What start_actor() needs to build an actor's object in its worker.
struct actor_start {
  actor_constructor constructor = nullptr;
  actor_destructor destructor = nullptr;
  std::string args;              ///< encoded constructor arguments
  std::vector<carried_ref> refs; ///< the refs they carry
  std::uint64_t actor_id = 0;
  bool restarted = false;
  std::string name, ns;
  std::string what;    ///< "counter actor#3", for errors
  int concurrency = 1; ///< max_concurrency
};

class process_node final : public runtime_service {
public:
  explicit process_node(runtime& rt);
  ~process_node() override;

  /// The node of `rt`, started on first use.
  static process_node& of(runtime& rt);

  /// Runs `t` (phase running, resources held) in a worker.
  void dispatch(task_base* t);
  /// Cancels `t` if it is this node's: force kills its worker.
  void cancel(task_base* t, bool force);
  void stop() override;
  int stop_rank() const noexcept override { return 1; } // after the actors: they end their workers
  /// Reads what the workers wrote, one round (the caller is the one reader
  /// now). True if there was something.
  bool drain_lanes() noexcept;
  /// A thread that waits starts (true) or stops reading the lanes meanwhile.
  void helping(bool begin) noexcept;
  /// Whether worker `id` (the id space of the objects it makes, see
  /// object_id_space_of) is still a live process of this node: false once
  /// it was reaped (ids are never reused).
  bool worker_alive(int id);

  // ---- actors: one worker per incarnation ----
  /// Starts a worker for an actor incarnation and builds the object there.
  /// `built` (a value_object<actor_reply>) completes when the constructor
  /// returned, or with the error. If the worker dies before end_actor(),
  /// `died` is called once with why ("was killed by signal 9 (SIGKILL)"),
  /// before the replies still awaited fail. Returns the worker's number.
  /// Throws runtime_shutdown_error when the node is stopping.
  int start_actor(const actor_start& s, object_ptr built, std::function<void(std::string)> died);
  /// Sends one method call to the actor's worker; `reply` (a
  /// value_object<actor_reply>) completes with its result or error. False
  /// (and `reply` untouched) when the worker is already gone: the actor has
  /// failed, and the call belongs to its next incarnation.
  [[nodiscard]] bool call_actor(int worker, actor_method_invoker invoker, const void* method_bytes, bool coroutine,
                                std::string args, const std::vector<carried_ref>& refs, object_ptr reply,
                                const std::string& what);
  /// The incarnation is over: `graceful` runs the destructor in the worker
  /// (after the calls sent before), else the worker is killed. No `died`
  /// call after this.
  void end_actor(int worker, bool graceful);

  // ---- called by the node actor (hello) and the lane reader (the rest) ----
  void on_hello(const std::string& token, std::int32_t id, std::int32_t pid, const std::string& build_id,
                const caf::actor& who, const caf::actor& ctl);
  /// Results of tasks from worker `from`.
  void on_done(std::int32_t from, const std::string& batch);
  void on_actor_done(std::int32_t worker, const std::string& batch);
  void flush_actor(std::int32_t worker);
  /// Tells a worker that the node holds references of its own to the store
  /// references its results handed over (`refs`, packed u64s): it releases
  /// its own. Nothing to a worker that is gone (its ledger lists them).
  void acknowledge_locked(int worker, std::string refs);
  /// The worker took references of its own to `refs` (packed u64s) that
  /// the node handed it: the node releases its own.
  void on_taken(int worker, std::string_view refs);
  /// Sends the nested-task results collected for `worker`.
  void flush_results(std::int32_t worker);
  /// A task in worker `worker` submitted a task (nested tasks).
  void on_submit(std::int32_t worker, std::uint64_t seq, const std::string& record);
  /// A batch of submissions and actor calls from `worker` (its outbox).
  void on_submit_batch(std::int32_t worker, const std::string& batch);
  /// The task running in `worker` (job `job`) waits in get/wait, or goes on.
  void on_blocked(std::int32_t worker, std::uint64_t job, bool blocked);
  /// `worker` will not run the tasks `seqs` of its line (packed u64): they
  /// go back to the scheduler's queue.
  void on_recalled(std::int32_t worker, const std::string& seqs);
  /// A proxy in `worker` wants the value of object `id`, which the node lent it.
  void on_fetch(std::int32_t worker, std::uint64_t id);
  /// A task in `worker` calls a method of the actor whose handle the cell
  /// `holder` holds (lent to that worker).
  void on_actor_submit(std::int32_t worker, std::uint64_t seq, std::uint64_t holder, const std::string& record,
                       const std::string& bundle);
  /// A task in `worker` creates an actor; its handle goes back as result `seq`.
  void on_actor_make(std::int32_t worker, std::uint64_t seq, const std::string& record, const std::string& bundle);
  /// A task in `worker` looks up a named actor; the answer goes back as result `seq`.
  void on_actor_find(std::int32_t worker, std::uint64_t seq, const std::string& record);
  /// A task in `worker` kills the actor whose handle `holder` holds.
  void on_actor_kill(std::int32_t worker, std::uint64_t holder, bool no_restart, const std::string& bundle);
  /// A task in `worker` monitors the actor whose handle `holder` holds: the
  /// node registers the monitor for it and answers entry `seq`; the actor's
  /// end goes to the worker as a monitor_down result of `seq`.
  void on_actor_monitor(std::int32_t worker, std::uint64_t seq, std::uint64_t holder, const std::string& bundle);
  /// A task in `worker` cancels the task it submitted as `target` (non-zero),
  /// or the task producing the object `holder` it was lent.
  void on_cancel(std::int32_t worker, std::uint64_t target, std::uint64_t holder, bool force,
                 const std::string& bundle);
  /// `worker` let go of objects: packed (u64 id, i64 count) pairs.
  void on_release(std::int32_t worker, const std::string& pairs);
  /// Sends object `r`'s value (done) to `worker` (fetch_reply calls it).
  void send_value(int worker, std::uint64_t id, const carried_ref& r);
  /// Sends a nested task's end to the worker that submitted it, lending it
  /// the refs the result carries (`handed`: the store references it hands
  /// over, given back if that worker is gone).
  void send_result(int worker, std::uint64_t seq, std::uint8_t kind, std::string payload,
                   const std::vector<carried_ref>& refs, const std::string& handed);

private:
  enum class wstate { starting, idle, busy, retiring, dead };
  struct worker {
    int id = 0;
    pid_t pid = -1;
    int out_fd = -1, err_fd = -1, pid_fd = -1;
    /// A page shared with the worker: the seq of the call it started last
    /// (so that after a crash the node knows which call crashed it).
    const std::atomic<std::uint64_t>* started = nullptr;
    void* progress_page = nullptr;
    /// The store references it holds (fd 5 of it); they go back once it is
    /// dead and no task it submitted still runs (forwarded tasks share it).
    std::shared_ptr<worker_ledger> ledger;
    wstate state = wstate::starting;
    /// While starting: when it is killed if it has not said hello.
    std::chrono::steady_clock::time_point start_deadline{};
    std::unique_ptr<caf::actor> actor; ///< runs calls, in the order sent
    std::unique_ptr<caf::actor> ctl;   ///< hears cancel while a call runs
    std::shared_ptr<lane> link;        ///< calls go out, results come in (lane.hpp)
    /// Jobs sent and not finished, in run order. The first holds the
    /// resources of the whole line: the others were taken from the
    /// scheduler's queue without resources (take_follower) and inherit them
    /// one after the other.
    std::deque<std::uint64_t> assigned;
    std::uint32_t last_run_us = ~0u;            ///< run time of its last task (pipelining only short tasks)
    std::unordered_map<const void*, int> calls; ///< finished calls per function
    std::string out_line, err_line;
    std::string refused;  ///< why the node refused it, if it did
    bool garbage = false; ///< wrote garbage on its lane: killed as soon as its pid is known
    // ---- a worker started for an actor ----
    bool for_actor = false;
    bool ended = false;                          ///< end_actor() ran
    std::string create;                          ///< the create record, sent on hello
    std::function<void(std::string)> died;       ///< told when it dies first
    std::map<std::uint64_t, object_ptr> replies; ///< awaited, by seq (0: the constructor)
    /// Big arguments of the calls awaited, in the store, by seq: kept until
    /// the reply (the worker has its own reference by then).
    std::map<std::uint64_t, stored_blob> call_blocks;
    std::string outbox;      ///< calls not sent yet (one message for many)
    std::string results_out; ///< ends of its nested tasks and calls, not sent yet
    /// Store references handed to it in messages it has not said it took
    /// (lane_kind::taken), with their counts: released when it says so, or
    /// when it is dead (a message it never read).
    std::unordered_map<std::uint64_t, std::uint32_t> handed_out;
    bool results_flush = false; ///< a flush of results_out is on its way
    bool blocked = false;       ///< its running task waits in get: lent its CPUs, gets no more work
    bool flush_scheduled = false;
  };
  struct job {
    task_base* t = nullptr;
    code_ref invoker, fn;
    std::string args;
    /// Big arguments: their block in the store (args is its reference),
    /// kept until the task is done with them (stored_bytes.hpp).
    stored_blob args_block;
    std::string matchers;          ///< retry_on's type tests, packed code refs
    std::vector<carried_ref> refs; ///< refs the arguments carry (lent to its worker when sent)
    bool blocked = false;          ///< waits in get in its worker: its CPUs are lent
    int worker = 0;                ///< id of the worker it was sent to; 0: waiting in pending_ (holding resources)
  };

  void pump_locked();
  void append_call(std::string& batch, std::uint64_t seq, const job& j, int worker);
  /// Counts `refs` as lent to `worker` (they go to it in a record) and
  /// returns their packed ids, for the record to list.
  std::string lend_locked(int worker, const std::vector<carried_ref>& refs);
  /// Resolves the ref bundle of a record from `worker` into `out`: cells
  /// it borrowed, and cells made for the objects it exported. False when
  /// the bundle is corrupt or names an object the worker does not hold.
  bool pin_locked(int worker, std::string_view bundle, ref_table& out);
  /// The address of `c` in this process, or null if it is no code here.
  const void* address_locked(code_ref c) const;
  /// Names the job's function, invoker and retry_on type tests (mtx_ held).
  void locate_job_code(job& j);
  void top_up_locked(worker& w, std::string& batch);
  void finish_follower(task_base* t, std::exception_ptr err);
  void settle(std::vector<std::pair<task_base*, std::exception_ptr>>& failed, std::vector<task_base*>& orphans);
  static std::exception_ptr cancelled_error(task_base* t, std::exception_ptr err);
  void io_loop();
  void spawn_one(int actor_worker = 0);
  code_ref locate_code(const void* code, const std::string& what);
  void fail_replies_locked(worker& w, const std::exception_ptr& e);
  /// The worker that connected and whose messages someone still waits for;
  /// null once it is gone.
  worker* connected_locked(int worker_id);
  void forward(worker& w, int& fd, std::string& line, int target, bool final);
  std::vector<std::pair<task_base*, std::exception_ptr>> on_exit(worker& w, int status);
  code_ref locate(const void* code, const task_base& t);
  void finish(task_base* t, std::exception_ptr err);
  void wake_io();
  /// Answers entry `seq` of `worker` with what `produce` makes with the
  /// actor runtime (or `refused`, or what it throws).
  void answer_worker(int worker, std::uint64_t seq, std::exception_ptr refused,
                     const std::function<forwarded_result(const actor_maker&)>& produce);
  /// The lane reader's thread: reads every worker's lane.
  void read_lanes();
  void on_lane_message(int worker, lane_kind k, const std::string& body);
  void add_lane(int worker, std::shared_ptr<lane> l);
  void drop_lane(int worker);
  /// The actor of monitor `seq` of `worker` ended: tells the worker, and
  /// forgets the registration.
  void monitor_fired(int worker, std::uint64_t seq, std::uint64_t actor, bool normal, const std::string& cause);

  runtime& rt_;
  std::unique_ptr<caf::actor> node_;
  std::uint16_t port_ = 0;
  std::string token_;
  module_table modules_;
  std::string modules_wire_;
  std::chrono::milliseconds start_timeout_;
  int store_fd_ = -1; ///< the object store's fd, copied above the fds a spawn writes

  std::mutex mtx_;
  bool stopping_ = false;
  /// The node hands `refs` (packed u64s) to worker `w` in a message: it
  /// keeps them until the worker says it took its own (on_taken) or dies.
  void handed_to_locked(worker& w, std::string_view refs);
  std::map<int, worker> workers_; // by id
  int next_worker_ = 0;
  int starting_ = 0;              ///< workers started and not yet welcomed
  int to_spawn_ = 0;              ///< spawn requests for the I/O thread
  std::vector<int> actor_spawns_; ///< actor workers recorded, for the I/O thread to start
  std::uint64_t next_seq_ = 0;
  std::map<std::uint64_t, job> jobs_;
  std::deque<std::uint64_t> pending_;
  /// Followers cancelled while in a worker's line, by seq: the worker, and
  /// the task and its argument block, kept until the worker is done with
  /// its arguments.
  struct cancelled_job {
    int worker = 0;
    task_base* t = nullptr;
    stored_blob args_block;
  };
  std::unordered_map<std::uint64_t, cancelled_job> cancelled_in_flight_;
  std::unordered_map<const void*, code_ref> code_cache_;
  /// Objects lent to each worker (by worker id, then object id): the cell
  /// stays alive until the worker gives back as many sends as it got, or
  /// dies.
  struct lent {
    carried_ref ref;
    std::int64_t count = 0;
  };
  std::unordered_map<int, std::unordered_map<std::uint64_t, lent>> lent_;
  /// Followers that could not be encoded, or not be requeued (shutdown),
  /// to be settled once mtx_ is let go.
  std::vector<std::pair<task_base*, std::exception_ptr>> failed_followers_;
  std::vector<task_base*> orphans_;
  /// The tasks each worker submitted and that have not ended, by the
  /// worker's seq: their result cells (which find the task, for cancel).
  std::unordered_map<int, std::unordered_map<std::uint64_t, object_ptr>> nested_;
  /// The monitors each worker asked for, by its seq: the registrations,
  /// which unregister when dropped (null while being registered).
  std::unordered_map<int, std::unordered_map<std::uint64_t, std::shared_ptr<void>>> monitors_;
  /// Registrations of dead workers, dropped once mtx_ is let go (they take
  /// an actor's lock).
  std::vector<std::shared_ptr<void>> dropped_monitors_;
  /// Tasks in flight per worker when they are short (pipelining).
  static constexpr std::size_t pipeline_depth = 64;
  static constexpr std::uint32_t pipeline_below_us = 1000;

  int wake_fd_ = -1;
  std::thread io_;
  /// The lanes of live workers, for the reader (it copies the list when
  /// the version changes).
  doorbell_map bell_;
  std::atomic<bool> reader_stop_{false}; ///< the reader ends (not in bell_: workers write there)
  std::uint32_t helpers_ = 0;            ///< what bell_'s helpers says (its callers take turns)
  std::mutex lanes_mtx_;
  std::vector<std::pair<int, std::shared_ptr<lane>>> lanes_;
  std::atomic<std::uint64_t> lanes_version_{0};
  std::thread reader_;
  // the reader's own (whoever reads now): its copy of lanes_, and buffers
  std::vector<std::pair<int, std::shared_ptr<lane>>> draining_;
  std::uint64_t drain_version_ = ~std::uint64_t{0};
  lane_kind drain_kind_{};
  std::string drain_body_;
};

} // namespace weft::detail
