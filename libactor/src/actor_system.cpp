#include "actor_system.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>
#include <unordered_set>

#include <caf/all.hpp>

#include "../../src/blocking.hpp"
#include "../../src/futex.hpp"
#include "../../src/log.hpp"
#include "../../src/process_node.hpp"
#include "../../src/worker_main.hpp"
#include "weft/errors.hpp"
#include "weft/runtime.hpp"

namespace weft::detail {

/// Owns one reference to a call while it travels in a CAF message. A call
/// message destroyed undelivered (only at teardown) fails the call.
struct call_msg {
  actor_call* call = nullptr;
  call_msg() = default;
  explicit call_msg(actor_call* c) : call(c) {}
  call_msg(const call_msg& o) : call(o.call) {
    if (call)
      call->add_ref();
  }
  call_msg(call_msg&& o) noexcept : call(std::exchange(o.call, nullptr)) {}
  call_msg& operator=(const call_msg&) = delete;
  ~call_msg();
};

struct watch_msg {
  core_ptr core;
};

struct kill_msg {
  bool no_restart = true;
  std::string cause;
};

} // namespace weft::detail

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(weft::detail::call_msg)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(weft::detail::watch_msg)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(weft::detail::kill_msg)

namespace weft::detail {

using call_atom = caf::atom_constant<caf::atom("call")>;
using wake_atom = caf::atom_constant<caf::atom("wake")>;
using coro_atom = caf::atom_constant<caf::atom("coro")>;
using start_atom = caf::atom_constant<caf::atom("start")>;
using granted_atom = caf::atom_constant<caf::atom("granted")>;
using unref_atom = caf::atom_constant<caf::atom("unref")>;
using drained_atom = caf::atom_constant<caf::atom("drained")>;
using watch_atom = caf::atom_constant<caf::atom("watch")>;
using kill_atom = caf::atom_constant<caf::atom("kill")>;
using worker_died_atom = caf::atom_constant<caf::atom("wdied")>;

namespace {

/// actor_call::phase values.
enum call_phase : std::uint8_t {
  sent,      ///< in a CAF message, not delivered yet
  queued,    ///< delivered, waiting for a slot
  running,   ///< on a fiber, or about to be
  blocked,   ///< its fiber waits in get()
  suspended, ///< a coroutine waiting at co_await (holds no slot)
  ready,     ///< a coroutine whose object is ready, waiting for a slot
  done,
};

constexpr std::size_t max_cached_fibers = 64;
/// An idle actor spins this long for the next call...
constexpr std::int64_t idle_spin_ns = 30'000;
/// ...when the previous call came this soon after it went idle.
constexpr std::int64_t chatty_gap_ns = 100'000;

std::string method_name(const actor_core& core, const actor_call& c) {
  std::string s = symbol_name(c.method_id());
  return s.empty() ? core.class_name + "::<method>" : s;
}

std::exception_ptr died(const std::string& what) { return std::make_exception_ptr(actor_died_error(what)); }

void fail_call(actor_call* c, const std::exception_ptr& e) {
  c->phase = done;
  for (auto& r : c->returns())
    r->complete_error(e);
  c->target = actor_ref();
  c->release();
}

std::string describe_exception(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const task_error& te) {
    return te.type_name() + ": " + te.message();
  } catch (const std::exception& ex) {
    return demangled(typeid(ex).name()) + ": " + ex.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

} // namespace

call_msg::~call_msg() {
  if (!call)
    return;
  if (call->phase == sent)
    fail_call(call, died("weft: an actor call was dropped undelivered: the runtime shut down"));
  else
    call->release();
}

// ---------------------------------------------------------------- core ----

actor_core::~actor_core() = default;

std::string actor_core::describe() const {
  std::string s = class_name + " " + to_string(id);
  if (named)
    s += " '" + name + "'" + (ns.empty() ? std::string() : " in namespace '" + ns + "'");
  return s;
}

std::exception_ptr actor_core::death_error_locked() const {
  return died("weft: actor " + describe() + " is dead: " + cause);
}

// ---------------------------------------------------------- incarnation ----

/// One life of an actor; lives inside its CAF actor's behavior and is
/// touched only from that actor's handlers (and the fibers they resume).
struct incarnation final : fiber_host {
  actor_system* sys;
  core_ptr core;
  caf::event_based_actor* self = nullptr;
  caf::actor me; // strong self reference for wake-ups; dropped at the end
  void* instance = nullptr;
  bool restarted = false;

  enum class mode { created, waiting_resources, constructing, running, dying } md = mode::created;
  std::deque<actor_call*> queue;        // delivered, not started
  std::deque<actor_call*> ready_coros;  // suspended coroutines whose object is ready
  std::vector<actor_call*> in_progress; // started and not finished, in start order
  int active = 0;                       // in_progress minus suspended coroutines
  bool exit_requested = false;
  bool drained = false; // dying: the drain marker arrived
  // Dying: unfinished calls handed on, started ones first (in start order,
  // as they finish unwinding), then the ones that never started.
  std::vector<actor_call*> started_at_death; // in_progress when dying began
  std::vector<actor_call*> carry_started;
  std::vector<actor_call*> carry;

  // Spinning for the next call: a caller that waits for each result sends
  // its next call microseconds after the last one finished; waiting for it
  // here beats a CAF worker's sleep and wake-up (tens of microseconds).
  std::int64_t idle_since = 0;
  bool spin_when_idle = false;

  // Outcome of the fiber run that just yielded.
  call_status last_status = call_status::finished;
  std::exception_ptr last_error;

  actor_call* constructor_call = nullptr;

  // Worker processes (core->remote): the object lives in a worker of its
  // own; calls are sent there and wait for their replies like coroutines
  // at co_await (they hold no slot: the worker runs them one at a time, in
  // the order sent).
  process_node* node = nullptr;
  int worker = 0;

  incarnation(actor_system* s, actor_core* c, bool re) : sys(s), core(c), restarted(re) {}

  // ---- fiber_host ----
  void block(fiber& f, blocker& b, std::uint32_t seen, std::int64_t deadline_ns) override;

  // ---- handlers ----
  void on_start();
  void on_granted();
  void on_call(actor_call* c);
  void on_wake(actor_call* c);
  void on_coro_ready(actor_call* c);
  void on_kill(const kill_msg& k);
  void on_unreferenced();
  void on_drained();
  void on_worker_died(const std::string& why);

  /// Ends every handler: starts what can start, ends the incarnation when
  /// it is done. May delete `this`; the caller returns right after.
  void settle();
  bool start_one();
  void construct();
  void run(actor_call* c);
  void after_run(actor_call* c, fiber* f);
  void finish_call(actor_call* c);
  void begin_death(std::string cause, bool can_restart);
  void check_dead();
  void end_gracefully();
  void destroy_instance();
  void set_home(actor_call* c);
  void* construct_remote();
  call_status start_remote_call(actor_call* c);
  call_status finish_remote_call(actor_call* c);
  bool is_constructor(const actor_call* c) const noexcept { return c == constructor_call; }
};

namespace {

/// The pseudo-call that runs the constructor on a fiber.
class construct_call final : public actor_call {
public:
  explicit construct_call(incarnation* inc) : actor_call({}, {}, nullptr), inc_(inc) {}
  call_status invoke(void*) override {
    inc_->instance = inc_->core->remote ? inc_->construct_remote() : inc_->core->factory->create();
    return call_status::finished;
  }

private:
  incarnation* inc_;
};

incarnation* incarnation_of(fiber* f) { return static_cast<incarnation*>(f->host); }

/// The incarnation whose call runs on this thread's fiber, or null.
incarnation* current_incarnation() {
  fiber* f = current_fiber();
  if (!f || f->what != fiber::kind::actor_call || !f->host)
    return nullptr;
  return incarnation_of(f);
}

void actor_fiber_body(fiber& f) {
  auto* c = static_cast<actor_call*>(f.payload);
  incarnation* inc = incarnation_of(&f);
  inc->last_error = nullptr;
  try {
    const bool remote = inc->core->remote && !inc->is_constructor(c);
    if (c->phase == ready) {
      c->phase = running;
      inc->last_status = remote ? inc->finish_remote_call(c) : c->resume_coroutine();
    } else {
      if (!c->deps().empty())
        await_all(c->deps(), 0, "actor call");
      inc->last_status = remote ? inc->start_remote_call(c) : c->invoke(inc->instance);
    }
  } catch (...) {
    inc->last_status = call_status::finished;
    inc->last_error = std::current_exception();
  }
}

void wake_call(void* p) noexcept {
  auto* c = static_cast<actor_call*>(p);
  auto* home = static_cast<caf::actor*>(c->home);
  c->add_ref();
  caf::anon_send(*home, wake_atom::value, call_msg(c));
}

struct coro_waiter final : completion_waiter {
  actor_call* call;
  // The incarnation the call was suspended on, fixed now: if that one dies
  // and the call is retried elsewhere, this stale wake-up must not reach
  // the retry (it is dropped with the dead actor's mailbox).
  caf::actor home;
  coro_waiter(actor_call* c, caf::actor h) : call(c), home(std::move(h)) { call->add_ref(); }
  void on_complete(object_state&) noexcept override {
    caf::anon_send(home, coro_atom::value, call_msg(call));
    delete this;
  }
};

} // namespace

void incarnation::set_home(actor_call* c) {
  if (c->home)
    return;
  c->home = new caf::actor(me);
  c->home_release = [](void* h) noexcept { delete static_cast<caf::actor*>(h); };
}

void incarnation::block(fiber& f, blocker& b, std::uint32_t seen, std::int64_t deadline_ns) {
  auto* c = static_cast<actor_call*>(f.payload);
  if (c->killed.load(std::memory_order_acquire))
    throw actor_died_error("weft: actor " + core->describe() + " is going away: " + core->cause);
  set_home(c);
  struct context {
    incarnation* inc;
    blocker* b;
    actor_call* c;
    std::uint32_t seen;
    std::int64_t deadline;
  } ctx{this, &b, c, seen, deadline_ns};
  f.after_yield = [](fiber& fb, void* p) {
    const context x = *static_cast<context*>(p);
    x.c->phase = blocked;
    fb.after_yield_arg = x.b; // the handler may need to force a wake-up
    x.b->add_ref();
    if (x.deadline != 0)
      x.inc->sys->rt().schedule_timeout(*x.b, x.deadline);
    x.b->arm_fiber(&wake_call, x.c, x.seen);
  };
  f.after_yield_arg = &ctx;
  f.why = fiber::state::blocked;
  f.yield();
  if (c->killed.load(std::memory_order_acquire))
    throw actor_died_error("weft: actor " + core->describe() + " is going away: " + core->cause);
}

void* incarnation::construct_remote() {
  node = &process_node::of(sys->rt());
  actor_start s;
  s.constructor = core->factory->remote_constructor();
  s.destructor = core->factory->remote_destructor();
  {
    ref_collector refs;
    ref_codec_scope scope(&refs);
    core->factory->encode_arguments(s.args);
    s.refs = std::move(refs.refs);
  }
  s.actor_id = core->id.value;
  s.restarted = restarted;
  s.name = core->name;
  s.ns = core->ns;
  s.what = core->describe();
  s.concurrency = core->max_concurrency;
  object_ptr built(new value_object<actor_reply>());
  object_state* cell = built.get();
  caf::actor target = me;
  worker = node->start_actor(
    s, built, [target](std::string why) { caf::anon_send(target, worker_died_atom::value, std::move(why)); });
  await_all(std::span<object_state* const>(&cell, 1), 0, "actor constructor"); // throws what the constructor threw
  if (static_cast<const value_object<actor_reply>*>(cell)->value().exit_requested)
    exit_requested = true; // exit_actor() in the constructor
  return this;             // the object itself is in the worker
}

call_status incarnation::start_remote_call(actor_call* c) {
  std::string args;
  ref_collector refs;
  {
    ref_codec_scope scope(&refs);
    c->encode_arguments(args);
  }
  object_ptr reply(new value_object<actor_reply>());
  object_state* cell = reply.get();
  c->remote_reply = reply;
  if (!node->call_actor(worker, c->remote_invoker(), c->method_bytes(), c->is_coroutine(), std::move(args), refs.refs,
                        std::move(reply), "method " + method_name(*core.get(), *c) + " of actor " + core->describe())) {
    // The worker died and the news is behind this call in the mailbox: the
    // actor fails now, and this call goes to the next incarnation (or
    // fails) as max_task_retries says, like the calls sent before it.
    c->remote_reply = object_ptr();
    begin_death("its worker process ended", true);
    throw actor_died_error("weft: actor " + core->describe() + " lost its worker process");
  }
  if (auto* hook = test_after_actor_call_sent.load(std::memory_order_relaxed))
    hook(*cell);
  if (suspend_actor_call_on(cell))
    return call_status::suspended;
  if (in_progress.size() > 1) {
    // The reply is here already, but so may be an earlier call's, whose
    // wake-up waits in the mailbox: results are taken in the order the
    // calls were sent, so this one queues behind it. (Taken first, it
    // could be kept while the earlier call is carried to a restart if the
    // worker's death is seen in between, and run again after it there.)
    c->add_ref();
    self->send(self, coro_atom::value, call_msg(c));
    return call_status::suspended;
  }
  return finish_remote_call(c);
}

call_status incarnation::finish_remote_call(actor_call* c) {
  object_ptr reply = std::move(c->remote_reply);
  if (reply->failed()) {
    try {
      std::rethrow_exception(reply->error());
    } catch (const worker_crashed_error& e) {
      // The worker died under this call before the news reached us (the
      // reply failed between sending and suspending): the actor fails now,
      // and the call is carried like the others.
      begin_death(
        std::string("its ") + (std::strncmp(e.what(), "weft: an actor's ", 17) == 0 ? e.what() + 17 : e.what()), true);
      throw actor_died_error("weft: actor " + core->describe() + " lost its worker process");
    }
  }
  const actor_reply& r = static_cast<const value_object<actor_reply>*>(reply.get())->value();
  if (r.exit_requested)
    exit_requested = true;
  ref_codec_scope scope(&r.refs);
  r.taken = true; // (before: a decode that fails half-way may leak, never release twice)
  c->decode_result(r.bytes());
  return call_status::finished;
}

void incarnation::on_worker_died(const std::string& why) {
  log().warn("actor {}: its {}", core->describe(), why);
  if (md == mode::dying) { // a call found the worker gone first: say why exactly
    std::lock_guard<std::mutex> lock(core->mtx);
    if (core->state == actor_state::failing)
      core->cause = "its " + why;
  }
  begin_death("its " + why, true);
  settle();
}

void incarnation::on_start() {
  if (md != mode::created) { // killed before it started
    settle();
    return;
  }
  bool granted = false;
  {
    std::lock_guard<std::mutex> lock(core->mtx);
    granted = core->resources_granted;
  }
  if (core->holds_resources && !granted) {
    md = mode::waiting_resources;
    actor_core* cr = core.get();
    actor_system* s = sys;
    caf::actor target = me;
    s->rt().sched().reserve(cr->demand, &cr->gpu_ids, [cr, s, target] {
      std::unique_lock<std::mutex> lock(cr->mtx);
      if (cr->finalized) {
        lock.unlock();
        s->rt().sched().unreserve(cr->demand, cr->gpu_ids);
        return;
      }
      cr->resources_granted = true;
      lock.unlock();
      caf::anon_send<caf::message_priority::high>(target, granted_atom::value);
    });
    return;
  }
  construct();
  settle();
}

void incarnation::on_granted() {
  if (md == mode::waiting_resources)
    construct();
  settle();
}

void incarnation::construct() {
  md = mode::constructing;
  constructor_call = new construct_call(this);
  constructor_call->phase = queued;
  in_progress.push_back(constructor_call);
  ++active;
  run(constructor_call);
}

void incarnation::on_call(actor_call* c) {
  ++core->received;
  if (idle_since != 0) {
    spin_when_idle = now_ns() - idle_since < chatty_gap_ns;
    idle_since = 0;
  }
  c->phase = queued;
  if (md == mode::dying) {
    carry.push_back(c);
    return;
  }
  queue.push_back(c);
  settle();
}

bool incarnation::start_one() {
  if (md != mode::running || exit_requested || active >= core->max_concurrency)
    return false;
  actor_call* c = nullptr;
  if (!ready_coros.empty()) {
    c = ready_coros.front();
    ready_coros.pop_front();
  } else if (!queue.empty()) {
    c = queue.front();
    queue.pop_front();
    c->phase = running;
    in_progress.push_back(c);
  } else {
    return false;
  }
  ++active;
  run(c);
  return true;
}

void incarnation::settle() {
  for (;;) {
    if (md == mode::dying) {
      check_dead();
      return;
    }
    if (exit_requested && md == mode::running) {
      exit_requested = false;
      {
        std::lock_guard<std::mutex> lock(core->mtx);
        core->normal_exit = true;
      }
      begin_death("it exited with weft::exit_actor()", false);
      continue;
    }
    if (!start_one())
      break;
  }
  if (md != mode::running || !queue.empty() || !in_progress.empty())
    return;
  if (!core->detached && core->handles.load(std::memory_order_acquire) == 0) {
    end_gracefully();
    return;
  }
  if (core->sent.load(std::memory_order_acquire) != core->received)
    return; // more calls are in the mailbox
  idle_since = now_ns();
  if (spin_when_idle) {
    // Leave the handler as soon as a call was sent: CAF then runs it
    // without parking this worker.
    while (core->sent.load(std::memory_order_acquire) == core->received && now_ns() - idle_since < idle_spin_ns)
      cpu_relax();
  }
}

void incarnation::run(actor_call* c) {
  fiber* f = sys->take_fiber();
  f->host = this;
  f->payload = c;
  f->interrupt.store(c->killed.load(std::memory_order_relaxed), std::memory_order_relaxed);
  f->gpu_ids = &core->gpu_ids;
  c->fiber = f;
  set_current_fiber(f);
  f->resume();
  set_current_fiber(nullptr);
  after_run(c, f);
}

void incarnation::after_run(actor_call* c, fiber* f) {
  if (f->why == fiber::state::blocked) {
    f->after_yield(*f, f->after_yield_arg); // arms the wake-up; leaves the blocker in after_yield_arg
    return;
  }
  // The fiber finished its round: the call finished or a coroutine suspended.
  c->fiber = nullptr;
  f->payload = nullptr;
  f->after_yield_arg = nullptr;
  sys->return_fiber(f);
  --active;
  if (last_status == call_status::suspended && !last_error) {
    c->phase = suspended;
    if (md == mode::dying) {
      c->drop_coroutine();
      finish_call(c);
    }
  } else {
    finish_call(c);
  }
}

void incarnation::finish_call(actor_call* c) {
  std::erase(in_progress, c);
  std::exception_ptr err = std::exchange(last_error, nullptr);
  if (is_constructor(c)) {
    constructor_call = nullptr;
    c->release();
    if (err) {
      begin_death("its constructor threw " + describe_exception(err), true);
      return;
    }
    if (md == mode::dying)
      return;
    md = mode::running;
    {
      std::lock_guard<std::mutex> lock(core->mtx);
      if (core->state == actor_state::starting)
        core->state = actor_state::alive;
    }
    return;
  }
  const bool interrupted =
    c->killed.load(std::memory_order_acquire) || md == mode::dying || core->killed_now.load(std::memory_order_acquire);
  if (interrupted) {
    // Its result (if any) is discarded; the supervisor retries or fails it.
    c->phase = running;
    carry_started.push_back(c);
    return;
  }
  if (!err) {
    c->phase = done;
    for (auto& r : c->returns())
      r->complete_value();
    c->target = actor_ref();
    c->release();
    return;
  }
  const std::string name = method_name(*core.get(), *c);
  const std::string what = describe_exception(err);
  fail_call(c, to_task_error(name, err));
  if (core->restart_on_exception)
    begin_death("method " + name + " threw " + what + " (restart_on_exception)", true);
}

void incarnation::on_wake(actor_call* c) {
  if (c->phase != blocked || !c->fiber)
    return; // stale: woken already
  auto* f = static_cast<fiber*>(c->fiber);
  if (auto* b = static_cast<blocker*>(f->after_yield_arg)) {
    f->after_yield_arg = nullptr;
    b->release();
  }
  c->phase = running;
  set_current_fiber(f);
  f->resume();
  set_current_fiber(nullptr);
  after_run(c, f);
  settle();
}

void incarnation::on_coro_ready(actor_call* c) {
  if (c->phase != suspended)
    return;
  c->phase = ready;
  ready_coros.push_back(c);
  settle();
}

void incarnation::on_kill(const kill_msg& k) {
  begin_death(k.cause, !k.no_restart);
  settle();
}

void incarnation::on_unreferenced() { settle(); }

void incarnation::begin_death(std::string cause, bool can_restart) {
  if (md == mode::dying) {
    if (!can_restart) {
      std::lock_guard<std::mutex> lock(core->mtx);
      core->final_kill = true;
    }
    return;
  }
  const bool was_waiting = md == mode::waiting_resources;
  md = mode::dying;
  {
    std::lock_guard<std::mutex> lock(core->mtx);
    if (core->state != actor_state::dead) {
      core->state = actor_state::failing;
      core->cause = cause;
    }
    if (!can_restart)
      core->final_kill = true;
    core->current = caf::actor(); // no more sends to this incarnation
  }
  if (was_waiting)
    sys->rt().sched().cancel_reservation(&core->gpu_ids);
  // Every message sent before the state change is ahead of this marker.
  self->send(self, drained_atom::value);
  // Calls not started stay in order behind the ones in progress.
  std::vector<actor_call*> started = in_progress;
  started_at_death = started;
  for (actor_call* c : started) {
    c->killed.store(true, std::memory_order_release);
    if (c->fiber)
      static_cast<fiber*>(c->fiber)->interrupt.store(true, std::memory_order_release);
  }
  for (actor_call* c : started) {
    if (c->phase == suspended || c->phase == ready) {
      c->drop_coroutine();
      std::erase(in_progress, c);
      if (c->phase == ready)
        std::erase(ready_coros, c);
      carry_started.push_back(c);
    } else if (c->phase == blocked && c->fiber) {
      // Wake it so it unwinds (get() throws actor_died_error); the wake-up
      // message arrives while this incarnation drains.
      auto* b = static_cast<blocker*>(static_cast<fiber*>(c->fiber)->after_yield_arg);
      if (b)
        b->notify();
    }
  }
  for (actor_call* c : queue)
    carry.push_back(c);
  queue.clear();
  ready_coros.clear();
}

void incarnation::on_drained() {
  drained = true;
  settle();
}

void incarnation::check_dead() {
  if (md != mode::dying || !drained || !in_progress.empty())
    return;
  destroy_instance();
  // Started calls in their start order (they finished unwinding in any order).
  auto rank = [this](actor_call* c) {
    auto it = std::find(started_at_death.begin(), started_at_death.end(), c);
    return it - started_at_death.begin();
  };
  std::stable_sort(carry_started.begin(), carry_started.end(),
                   [&](actor_call* a, actor_call* b) { return rank(a) < rank(b); });
  {
    std::lock_guard<std::mutex> lock(core->mtx);
    for (actor_call* c : carry_started)
      core->carried.push_back(c);
    for (actor_call* c : carry)
      core->carried.push_back(c);
  }
  carry_started.clear();
  carry.clear();
  self->quit(caf::make_error(caf::sec::runtime_error));
  delete this; // no handler runs after quit()
}

void incarnation::end_gracefully() {
  {
    std::lock_guard<std::mutex> lock(core->mtx);
    if (core->state != actor_state::dead) {
      core->state = actor_state::dead;
      core->cause = "its last handle was dropped";
      core->normal_exit = true;
    }
    core->final_kill = true;
    core->current = caf::actor();
  }
  destroy_instance();
  self->quit();
  delete this;
}

void incarnation::destroy_instance() {
  if (core->remote) {
    if (node && worker) {
      bool graceful = false;
      {
        std::lock_guard<std::mutex> lock(core->mtx);
        graceful = core->normal_exit; // else killed, failed or restarting: the worker is killed
      }
      node->end_actor(worker, graceful);
    }
    worker = 0;
    instance = nullptr;
    return;
  }
  if (instance) {
    core->factory->destroy(instance);
    instance = nullptr;
  }
}

namespace {

caf::behavior incarnation_behavior(caf::event_based_actor* self, incarnation* inc) {
  inc->self = self;
  inc->me = caf::actor_cast<caf::actor>(self);
  self->send<caf::message_priority::high>(self, start_atom::value);
  // Calls handed over from an earlier incarnation go first, in order.
  return {
    [inc](start_atom) { inc->on_start(); },
    [inc](granted_atom) { inc->on_granted(); },
    [inc](call_atom, const call_msg& m) {
      actor_call* c = std::exchange(const_cast<call_msg&>(m).call, nullptr);
      inc->on_call(c);
    },
    [inc](wake_atom, const call_msg& m) { inc->on_wake(m.call); },
    [inc](coro_atom, const call_msg& m) { inc->on_coro_ready(m.call); },
    [inc](kill_atom, const kill_msg& k) { inc->on_kill(k); },
    [inc](unref_atom) { inc->on_unreferenced(); },
    [inc](drained_atom) { inc->on_drained(); },
    [inc](worker_died_atom, const std::string& why) { inc->on_worker_died(why); },
  };
}

caf::behavior supervisor_behavior(caf::event_based_actor* self, actor_system* sys) {
  auto watched = std::make_shared<std::unordered_map<caf::actor_addr, core_ptr>>();
  self->set_down_handler([sys, watched](caf::down_msg& m) {
    auto it = watched->find(m.source);
    if (it == watched->end())
      return;
    core_ptr c = std::move(it->second);
    watched->erase(it);
    sys->incarnation_ended(c.get());
  });
  return {
    [self, watched](watch_atom, const watch_msg& w, const caf::actor& a) {
      (*watched)[a.address()] = w.core;
      self->monitor(a);
    },
  };
}

} // namespace

caf::actor actor_system::spawn_incarnation(actor_core* core, std::vector<actor_call*> initial, bool restarted) {
  auto* inc = new incarnation(this, core, restarted);
  for (actor_call* c : initial) {
    c->phase = queued;
    if (c->home) { // wake-ups went to the incarnation that died
      c->home_release(c->home);
      c->home = nullptr;
      c->home_release = nullptr;
    }
    inc->queue.push_back(c);
  }
  live_incarnations_.fetch_add(1, std::memory_order_acq_rel);
  caf::actor a;
  {
    caf_spawn_scope spawn_scope;
    a = rt_.caf_system().spawn(incarnation_behavior, inc);
  }
  caf::anon_send(supervisor_, watch_atom::value, watch_msg{core_ptr(core)}, a);
  return a;
}

// ------------------------------------------------------- actor_system ----

namespace {
std::atomic<std::uint64_t> g_generation{0};
thread_local std::uint64_t tls_pool_generation = 0;
thread_local std::vector<fiber*> tls_pool;
char service_key;
} // namespace

actor_system::actor_system(runtime& rt) : rt_(rt), generation_(g_generation.fetch_add(1) + 1) {
  caf_spawn_scope spawn_scope;
  supervisor_ = rt_.caf_system().spawn(supervisor_behavior, this);
}

actor_system::~actor_system() {
  caf::anon_send_exit(supervisor_, caf::exit_reason::user_shutdown);
  supervisor_ = caf::actor();
  // Every incarnation has ended (stop() waited), so every fiber is idle.
  std::lock_guard<std::mutex> lock(fibers_mtx_);
  for (auto& f : all_fibers_)
    f->quit();
  all_fibers_.clear();
}

actor_system& actor_system::get(const char* what) {
  runtime* rt = runtime::current();
  if (!rt && started_as_worker())
    throw not_initialized_error(std::string("weft::") + what +
                                ": not available inside a worker process yet; see docs/processes.md");
  if (!rt)
    throw not_initialized_error(std::string("weft::") + what +
                                ": weft is not initialized; call weft::init() first (or it was shut down)");
  return static_cast<actor_system&>(
    rt->service(&service_key, [](runtime& r) -> runtime_service* { return new actor_system(r); }));
}

fiber* actor_system::take_fiber() {
  if (tls_pool_generation != generation_) {
    tls_pool.clear(); // fibers of an earlier runtime, already freed
    tls_pool_generation = generation_;
  }
  if (!tls_pool.empty()) {
    fiber* f = tls_pool.back();
    tls_pool.pop_back();
    return f;
  }
  auto owned = std::make_unique<fiber>(rt_.cfg().fiber_stack_size, &actor_fiber_body);
  owned->what = fiber::kind::actor_call;
  fiber* f = owned.get();
  std::lock_guard<std::mutex> lock(fibers_mtx_);
  all_fibers_.push_back(std::move(owned));
  return f;
}

void actor_system::return_fiber(fiber* f) {
  if (tls_pool_generation != generation_) {
    tls_pool.clear();
    tls_pool_generation = generation_;
  }
  f->gpu_ids = nullptr;
  f->host = nullptr;
  if (tls_pool.size() < max_cached_fibers) {
    tls_pool.push_back(f);
    return;
  }
  std::unique_ptr<fiber> victim;
  {
    std::lock_guard<std::mutex> lock(fibers_mtx_);
    auto it = std::find_if(all_fibers_.begin(), all_fibers_.end(), [f](auto& p) { return p.get() == f; });
    if (it != all_fibers_.end()) {
      victim = std::move(*it);
      *it = std::move(all_fibers_.back());
      all_fibers_.pop_back();
    }
  }
  if (victim)
    victim->quit();
}

namespace {

int checked_count(const std::optional<int>& v, int dflt, int min, const char* field, const char* expected) {
  int x = v.value_or(dflt);
  if (x < min)
    throw invalid_argument_error(std::string("weft: actor option ") + field + " = " + std::to_string(x) +
                                 " is invalid; expected " + expected);
  return x;
}

} // namespace

actor_ref actor_system::create(std::unique_ptr<actor_factory> factory, const actor_options& o) {
  if (stopping_.load(std::memory_order_acquire) || rt_.stopping())
    throw runtime_shutdown_error("weft: cannot create an actor: the runtime is shutting down");
  auto* core = new actor_core(); // one reference: ours, until handed to live_
  core_ptr hold(core);
  core->release();
  core->sys = this;
  core->class_name = demangled(factory->type().name());
  core->max_restarts = checked_count(o.max_restarts, 0, -1, "max_restarts", "-1 (restart forever) or >= 0");
  core->max_task_retries = checked_count(o.max_task_retries, 0, -1, "max_task_retries", "-1 (retry forever) or >= 0");
  core->max_concurrency = checked_count(o.max_concurrency, 1, 1, "max_concurrency", ">= 1");
  if (core->max_task_retries != 0 && core->max_restarts == 0)
    throw invalid_argument_error("weft: actor option max_task_retries = " + std::to_string(core->max_task_retries) +
                                 " needs restarts: set max_restarts to -1 or > 0 (it is 0), or leave "
                                 "max_task_retries at 0");
  core->detached = o.lifetime.value_or(lifetime::owned) == lifetime::detached;
  core->restart_on_exception = o.restart_on_exception.value_or(false);
  if (o.name) {
    if (o.name->empty())
      throw invalid_argument_error("weft: actor option name is empty; expected a non-empty name (or leave it "
                                   "unset for an unnamed actor)");
    core->named = true;
    core->name = *o.name;
  } else if (o.get_if_exists.value_or(false)) {
    throw invalid_argument_error("weft: actor option get_if_exists needs a name");
  }
  core->ns = o.namespace_.value_or("");
  if (o.num_cpus || o.num_gpus || o.memory || !o.resources.empty()) {
    task_options as_task;
    as_task.num_cpus = o.num_cpus.value_or(0);
    as_task.num_gpus = o.num_gpus;
    as_task.memory = o.memory;
    as_task.resources = o.resources;
    core->demand = resolve_demand(as_task, rt_.node(), "actor " + core->class_name, "actor_options");
    core->holds_resources = core->demand.cpu || core->demand.gpu || core->demand.memory || !core->demand.custom.empty();
  }
  core->factory = std::move(factory);
  core->remote = rt_.processes() && core->factory->remote_constructor() != nullptr;

  // Owner: the actor whose method (or constructor) is creating this one.
  actor_core* owner = nullptr;
  if (incarnation* creator = current_incarnation())
    owner = creator->core.get();

  {
    std::lock_guard<std::mutex> lock(mtx_);
    if (core->named) {
      auto key = std::make_pair(core->ns, core->name);
      if (auto it = names_.find(key); it != names_.end()) {
        actor_core* other = it->second;
        if (o.get_if_exists.value_or(false)) {
          if (other->factory->type() != core->factory->type())
            throw invalid_argument_error("weft: get_if_exists: the actor named '" + core->name + "' is a " +
                                         other->class_name + ", not a " + core->class_name);
          other->handles.fetch_add(1, std::memory_order_relaxed);
          other->add_ref();
          return actor_ref::adopt(other);
        }
        throw invalid_argument_error("weft: an actor named '" + core->name + "' already exists in namespace '" +
                                     core->ns + "' (" + other->describe() +
                                     "); pick another name, or pass .get_if_exists = true to reuse it");
      }
      names_.emplace(std::move(key), core);
    }
    core->id = actor_id{next_id_.fetch_add(1, std::memory_order_relaxed)};
    core->add_ref(); // held by live_
    live_.emplace(core->id.value, core);
  }
  if (owner && !core->detached) {
    std::lock_guard<std::mutex> lock(owner->mtx);
    std::erase_if(owner->children, [](actor_core* ch) {
      bool dead = false;
      {
        std::lock_guard<std::mutex> child_lock(ch->mtx); // owner before child: no path nests them the other way
        dead = ch->finalized;
      }
      if (dead)
        ch->release();
      return dead;
    });
    core->add_ref();
    owner->children.push_back(core);
  }
  core->handles.store(1, std::memory_order_relaxed);
  core->add_ref(); // the handle's
  {
    std::lock_guard<std::mutex> lock(core->mtx);
    core->current = spawn_incarnation(core, {}, false);
  }
  log().debug("actor {} created", core->describe());
  return actor_ref::adopt(core);
}

void actor_system::submit(actor_call* c) {
  actor_core* core = c->target.get(); // non-null: checked by submit_call
  std::size_t index = 0;
  for (object_state* d : c->deps()) {
    ++index;
    if (!d) {
      c->release();
      throw invalid_argument_error("weft: argument of an actor method call is an invalid object_ref "
                                   "(default-constructed or moved-from); argument object_ref #" +
                                   std::to_string(index));
    }
  }
  c->retries_left = core->max_task_retries;
  c->phase = sent;
  std::unique_lock<std::mutex> lock(core->mtx);
  switch (core->state) {
  case actor_state::dead: {
    auto e = core->death_error_locked();
    lock.unlock();
    fail_call(c, e);
    return;
  }
  case actor_state::failing:
    c->phase = queued;
    core->parked.push_back(c);
    return;
  default:
    // Sent under the lock: an incarnation that starts dying after this
    // sees the call ahead of its drain marker.
    caf::anon_send(core->current, call_atom::value, call_msg(c));
  }
}

actor_ref actor_system::find(const std::string& name, const std::string& ns, const std::type_info& type) {
  if (name.empty())
    throw invalid_argument_error("weft::get_actor: the name is empty; expected the name the actor was created with");
  std::lock_guard<std::mutex> lock(mtx_);
  auto it = names_.find({ns, name});
  if (it == names_.end())
    return {};
  actor_core* core = it->second;
  if (core->factory->type() != type)
    throw invalid_argument_error("weft::get_actor: the actor named '" + name + "' is a " + core->class_name +
                                 ", not a " + demangled(type.name()));
  if (!core->detached) {
    // A non-detached actor whose last handle is gone is ending: not found.
    auto n = core->handles.load(std::memory_order_acquire);
    do {
      if (n == 0)
        return {};
    } while (!core->handles.compare_exchange_weak(n, n + 1, std::memory_order_acq_rel));
  } else {
    core->handles.fetch_add(1, std::memory_order_relaxed);
  }
  core->add_ref();
  return actor_ref::adopt(core);
}

void actor_system::erase_name_locked(actor_core* core) {
  if (!core->named)
    return;
  auto it = names_.find({core->ns, core->name});
  if (it != names_.end() && it->second == core)
    names_.erase(it);
}

void actor_system::kill(actor_core* core, bool no_restart, const std::string& cause) {
  caf::actor target;
  {
    std::lock_guard<std::mutex> lock(core->mtx);
    if (core->state == actor_state::dead)
      return;
    if (no_restart) {
      core->state = actor_state::dead;
      core->cause = cause;
      core->final_kill = true;
      core->killed_now.store(true, std::memory_order_release);
      std::lock_guard<std::mutex> names_lock(mtx_);
      erase_name_locked(core);
    } else if (core->state != actor_state::failing) {
      core->cause = cause;
    }
    target = core->current;
  }
  if (target)
    caf::anon_send<caf::message_priority::high>(target, kill_atom::value, kill_msg{no_restart, cause});
}

void actor_system::unreferenced(actor_core* core) {
  if (core->detached)
    return;
  caf::actor target;
  {
    std::lock_guard<std::mutex> lock(core->mtx);
    target = core->current;
  }
  if (target)
    caf::anon_send(target, unref_atom::value);
}

void actor_system::incarnation_ended(actor_core* core) {
  std::vector<actor_call*> to_fail;
  std::vector<actor_call*> again;
  bool restart = false;
  {
    std::lock_guard<std::mutex> lock(core->mtx);
    std::vector<actor_call*> carried = std::move(core->carried);
    core->carried.clear();
    const bool wanted = core->detached || core->handles.load(std::memory_order_acquire) > 0;
    const bool restarts_left = core->max_restarts == -1 || core->restarts < core->max_restarts;
    if (core->state == actor_state::failing && !core->final_kill && wanted && restarts_left &&
        !stopping_.load(std::memory_order_acquire)) {
      restart = true;
      ++core->restarts;
      for (actor_call* c : carried) {
        if (c->phase == queued) {
          again.push_back(c);
        } else if (c->retries_left != 0) {
          if (c->retries_left > 0)
            --c->retries_left;
          c->killed.store(false, std::memory_order_relaxed);
          again.push_back(c);
        } else {
          to_fail.push_back(c);
        }
      }
      for (actor_call* c : core->parked)
        again.push_back(c);
      core->parked.clear();
      core->state = actor_state::starting;
      log().info("actor {} restarts ({} of {}): {}", core->describe(), core->restarts,
                 core->max_restarts == -1 ? std::string("unlimited") : std::to_string(core->max_restarts), core->cause);
      core->current = spawn_incarnation(core, std::move(again), true);
    } else {
      if (core->state == actor_state::failing) {
        if (!wanted && !core->final_kill)
          core->cause += " (and no handle is left to restart it for)";
        else if (!restarts_left && !core->final_kill)
          core->cause += "; it was restarted " + std::to_string(core->restarts) +
                         " times (max_restarts = " + std::to_string(core->max_restarts) + ")";
        core->state = actor_state::dead;
      }
      for (actor_call* c : carried)
        to_fail.push_back(c);
      for (actor_call* c : core->parked)
        to_fail.push_back(c);
      core->parked.clear();
    }
  }
  live_incarnations_.fetch_sub(1, std::memory_order_acq_rel);
  if (restart) {
    if (!to_fail.empty()) {
      std::exception_ptr e;
      {
        std::lock_guard<std::mutex> lock(core->mtx);
        e = died("weft: actor " + core->describe() + " failed while the call was in progress (" + core->cause +
                 "); with max_task_retries = " + std::to_string(core->max_task_retries) + " it is not retried");
      }
      for (actor_call* c : to_fail)
        fail_call(c, e);
    }
    return;
  }
  finish_for_good(core, std::move(to_fail));
}

void actor_system::finish_for_good(actor_core* core, std::vector<actor_call*> to_fail) {
  std::exception_ptr e;
  std::vector<actor_core*> children;
  std::vector<std::pair<std::uint64_t, std::function<void(const actor_exit&)>>> monitors;
  actor_exit exit_info;
  bool granted = false;
  {
    std::lock_guard<std::mutex> lock(core->mtx);
    e = core->death_error_locked();
    monitors = std::move(core->monitors);
    core->monitors.clear();
    exit_info = actor_exit{core->id, core->normal_exit, core->cause};
    children = std::move(core->children);
    core->children.clear();
    core->finalized = true;
    granted = core->resources_granted;
    core->resources_granted = false;
    std::lock_guard<std::mutex> names_lock(mtx_);
    erase_name_locked(core);
  }
  for (actor_call* c : to_fail)
    fail_call(c, e);
  if (core->holds_resources) {
    if (granted)
      rt_.sched().unreserve(core->demand, core->gpu_ids);
    else
      rt_.sched().cancel_reservation(&core->gpu_ids);
  }
  log().debug("actor {} ended: {}", core->describe(), exit_info.cause);
  for (auto& [id, fn] : monitors) {
    try {
      fn(exit_info);
    } catch (const std::exception& ex) {
      log().error("a monitor callback of actor {} threw: {}", core->describe(), ex.what());
    } catch (...) {
      log().error("a monitor callback of actor {} threw", core->describe());
    }
  }
  for (actor_core* child : children) {
    if (!child->detached)
      kill(child, true, "its owner, actor " + core->describe() + ", died");
    child->release();
  }
  actor_core* held = nullptr;
  {
    std::lock_guard<std::mutex> lock(mtx_);
    if (auto it = live_.find(core->id.value); it != live_.end()) {
      held = it->second;
      live_.erase(it);
    }
  }
  if (held)
    held->release();
}

void actor_system::stop() {
  stopping_.store(true, std::memory_order_release);
  std::vector<core_ptr> all;
  {
    std::lock_guard<std::mutex> lock(mtx_);
    for (auto& [id, c] : live_)
      all.emplace_back(c);
  }
  for (auto& c : all)
    kill(c.get(), true, "the runtime shut down");
  auto last_report = now_ns();
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mtx_);
      if (live_.empty() && live_incarnations_.load(std::memory_order_acquire) == 0)
        break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    if (now_ns() - last_report > 2'000'000'000) {
      log().warn("shutdown is waiting for {} actor(s) to end (a method that never returns keeps its actor)",
                 live_incarnations_.load(std::memory_order_relaxed));
      last_report = now_ns();
    }
  }
}

// ------------------------------------------------------ public entry ----

actor_ref::actor_ref(const actor_ref& o) noexcept : p_(o.p_) {
  if (p_) {
    p_->handles.fetch_add(1, std::memory_order_relaxed);
    p_->add_ref();
  }
}

actor_ref::~actor_ref() {
  if (!p_)
    return;
  if (p_->handles.fetch_sub(1, std::memory_order_acq_rel) == 1)
    actor_system::unreferenced(p_);
  p_->release();
}

namespace {

// ---- actors created in a worker process ----

std::string encode_options(const actor_options& o) {
  std::string out;
  std::optional<int> life;
  if (o.lifetime)
    life = static_cast<int>(*o.lifetime);
  encode_each(out, o.name, o.namespace_, o.max_restarts, o.max_task_retries, o.max_concurrency, life, o.num_cpus,
              o.num_gpus, o.memory, o.resources, o.restart_on_exception, o.get_if_exists);
  return out;
}

actor_options decode_options(std::string_view in) {
  actor_options o;
  std::optional<int> life;
  decode_each(in, o.name, o.namespace_, o.max_restarts, o.max_task_retries, o.max_concurrency, life, o.num_cpus,
              o.num_gpus, o.memory, o.resources, o.restart_on_exception, o.get_if_exists);
  if (life) {
    if (*life != static_cast<int>(lifetime::owned) && *life != static_cast<int>(lifetime::detached))
      throw serialization_error("weft: a worker sent an actor lifetime of " + std::to_string(*life) +
                                " (corrupted input)");
    o.lifetime = static_cast<lifetime>(*life);
  }
  return o;
}

/// The worker's side of an actor it creates: the driver's answer is the
/// handle's wire form (holder, actor id), read into `out`.
class make_reply final : public worker_actor_call {
public:
  struct answer {
    object_ptr via;
    actor_id id;
  };
  make_reply(object_ptr cell, std::shared_ptr<answer> out, ref_ops_fn ops, bool none_ok = false) :
    cell_(std::move(cell)),
    out_(std::move(out)),
    ops_(ops),
    none_ok_(none_ok) {}
  actor_method_invoker invoker() const noexcept override { return nullptr; }
  const void* method_bytes() const noexcept override { return nullptr; }
  std::span<object_state* const> deps() const noexcept override { return {}; }
  void encode_arguments(std::string&) const override {}
  void decode_result(std::string_view in) override {
    std::uint64_t holder = 0, id = 0;
    decode_each(in, holder, id);
    if (holder == 0 && none_ok_)
      return; // (get_actor: no such actor)
    actor_ref ref;
    decode_handle(holder, ops_, ref, out_->via);
    if (!out_->via || holder == 0)
      throw serialization_error("weft: the driver answered an actor creation without a handle");
    out_->id = actor_id{id};
  }
  object_state& result() noexcept override { return *cell_.get(); }

private:
  object_ptr cell_;
  std::shared_ptr<answer> out_;
  ref_ops_fn ops_;
  bool none_ok_;
};

created_actor create_in_driver(const actor_factory& factory, const actor_options& options, ref_ops_fn handle_ops) {
  worker_actor_make m;
  m.constructor = factory.remote_constructor();
  m.destructor = factory.remote_destructor();
  m.driver_factory = reinterpret_cast<const void*>(factory.driver_factory());
  m.class_name = demangled(factory.type().name());
  m.type = factory.type_function();
  m.handle_ops = handle_ops;
  m.encode_arguments = [&factory](std::string& out) { factory.encode_arguments(out); };
  m.options = encode_options(options);
  object_ptr cell(new value_object<int>());
  auto answer = std::make_shared<make_reply::answer>();
  worker_client_make_actor(m, std::make_unique<make_reply>(cell, answer, handle_ops));
  object_state* c = cell.get();
  await_all(std::span<object_state* const>(&c, 1), 0, "actor creation"); // throws what creating it threw
  return created_actor{{}, std::move(answer->via), answer->id};
}

/// The driver's side: an actor a worker created. Its object lives in a
/// worker process like any actor of the driver's (it is never built here).
class forwarded_actor_factory final : public actor_factory {
public:
  explicit forwarded_actor_factory(forwarded_make m) : m_(std::move(m)) {}
  void* create() const override {
    throw error("weft: an actor created in a worker process runs only in a worker process");
  }
  void destroy(void*) const noexcept override {}
  const std::type_info& type() const noexcept override { return m_.type(); }
  actor_constructor remote_constructor() const noexcept override { return m_.constructor; }
  actor_destructor remote_destructor() const noexcept override { return m_.destructor; }
  void encode_arguments(std::string& out) const override {
    out += m_.args;
    for (const auto& r : m_.arg_refs)
      encode_ref(r.cell.get(), r.ops); // the constructor's codec collects them
  }

private:
  forwarded_make m_;
};

/// The answer a worker reads with make_reply: the handle's wire form
/// (holder, actor id), the holder lent with it; (0, 0) for no actor.
forwarded_result handle_for_worker(const actor_ref& ref, ref_ops_fn ops) {
  forwarded_result out;
  if (!ref) {
    encode_each(out.bytes, std::uint64_t{0}, std::uint64_t{0});
    return out;
  }
  ref_collector refs;
  {
    ref_codec_scope scope(&refs);
    const std::uint64_t holder = encode_handle(ref, nullptr, ops);
    encode_each(out.bytes, holder, id_of(ref.get()).value);
  }
  out.refs = std::move(refs.refs);
  return out;
}

/// The refs a message from a worker carried, by id again (to decode its
/// bytes here).
ref_table table_of(const std::vector<carried_ref>& refs) {
  ref_table t;
  for (const auto& r : refs)
    t.refs.emplace(r.cell->id().value, r);
  return t;
}

forwarded_result make_for_worker(forwarded_make m) {
  const actor_options options = decode_options(m.options);
  const ref_ops_fn ops = m.handle_ops;
  std::unique_ptr<actor_factory> factory;
  if (m.driver_factory) {
    // A class that stays in the driver (weft::queue): built here, like
    // one the driver creates.
    ref_table refs = table_of(m.arg_refs);
    ref_codec_scope scope(&refs);
    factory.reset(reinterpret_cast<driver_factory_builder>(const_cast<void*>(m.driver_factory))(m.args));
    if (factory->remote_constructor() || factory->type() != m.type())
      throw serialization_error("weft: a worker created an actor of class " + demangled(m.type().name()) +
                                " as one that stays in the driver, which it is not (corrupted input)");
  } else {
    factory = std::make_unique<forwarded_actor_factory>(std::move(m));
  }
  return handle_for_worker(actor_system::get("remote<T>().remote").create(std::move(factory), options), ops);
}

void kill_for_worker(object_state& holder, bool no_restart) {
  auto* h = dynamic_cast<value_object<actor_ref>*>(&holder);
  if (!h || !h->done() || h->failed())
    throw serialization_error("weft: a worker killed an actor through " + to_string(holder.id()) +
                              ", which holds no actor_handle (corrupted input)");
  kill_actor(h->value(), nullptr, no_restart);
}

forwarded_result find_for_worker(const std::string& name, const std::string& ns, const std::type_info& type,
                                 ref_ops_fn ops) {
  return handle_for_worker(actor_system::get("get_actor").find(name, ns, type), ops);
}

/// A worker's monitor, counted while an actor holds it.
struct counted_monitor {
  actor_down_fn down;
  explicit counted_monitor(actor_down_fn d) : down(std::move(d)) { count_worker_monitor(1); }
  ~counted_monitor() { count_worker_monitor(-1); }
  counted_monitor(const counted_monitor&) = delete;
  counted_monitor& operator=(const counted_monitor&) = delete;
};

/// Unregisters a worker's monitor (one that has not fired) when the
/// driver drops it.
struct monitor_registration {
  core_ptr core;
  std::uint64_t id = 0;
  ~monitor_registration() {
    std::function<void(const actor_exit&)> gone; // destroyed after the lock
    std::lock_guard<std::mutex> lock(core->mtx);
    auto& m = core->monitors;
    if (auto it = std::find_if(m.begin(), m.end(), [this](const auto& e) { return e.first == id; }); it != m.end()) {
      gone = std::move(it->second);
      m.erase(it);
    }
  }
};

std::shared_ptr<void> watch_for_worker(object_state& holder, actor_down_fn down) {
  auto* h = dynamic_cast<value_object<actor_ref>*>(&holder);
  if (!h || !h->done() || h->failed() || !h->value())
    throw serialization_error("weft: a worker monitored an actor through " + to_string(holder.id()) +
                              ", which holds no actor_handle (corrupted input)");
  static std::atomic<std::uint64_t> next_id{0};
  actor_core* core = h->value().get();
  const std::uint64_t id = next_id.fetch_add(1, std::memory_order_relaxed) + 1;
  auto counted = std::make_shared<counted_monitor>(std::move(down));
  actor_exit now;
  {
    std::lock_guard<std::mutex> lock(core->mtx);
    if (!core->finalized) {
      core->monitors.emplace_back(id, [counted](const actor_exit& e) { counted->down(e.id.value, e.normal, e.cause); });
      auto r = std::make_shared<monitor_registration>();
      r->core = core_ptr(core);
      r->id = id;
      return r;
    }
    now = actor_exit{core->id, core->normal_exit, core->cause};
  }
  counted->down(now.id.value, now.normal, now.cause); // dead already: at once, as monitor() does
  return nullptr;
}

const actor_maker g_maker{&make_for_worker, &kill_for_worker, &find_for_worker, &watch_for_worker};
const bool maker_registered = (set_actor_maker(&g_maker), true);

} // namespace

created_actor create_actor(std::unique_ptr<actor_factory> factory, const actor_options& options,
                           ref_ops_fn handle_ops) {
  if (!runtime::current() && worker_client_active())
    return create_in_driver(*factory, options, handle_ops);
  return created_actor{actor_system::get("remote<T>().remote").create(std::move(factory), options), {}, {}};
}

namespace {

/// A call made in a worker through a lent handle, as the worker's side of
/// it sees it (over the typed call; owns one reference).
class worker_call_adapter final : public worker_actor_call {
public:
  explicit worker_call_adapter(actor_call* c) noexcept : c_(c) {}
  ~worker_call_adapter() override { c_->release(); }
  actor_method_invoker invoker() const noexcept override { return c_->remote_invoker(); }
  const void* driver_builder() const noexcept override { return reinterpret_cast<const void*>(c_->driver_builder()); }
  const void* method_bytes() const noexcept override { return c_->method_bytes(); }
  bool is_coroutine() const noexcept override { return c_->is_coroutine(); }
  std::span<object_state* const> deps() const noexcept override { return c_->deps(); }
  void encode_arguments(std::string& out) const override { c_->encode_arguments(out); }
  void decode_result(std::string_view in) override { c_->decode_result(in); }
  object_state& result() noexcept override { return *c_->returns()[0].get(); }

private:
  actor_call* c_;
};

/// A call a worker made through a handle the driver lent it: the method's
/// code, argument bytes and refs as the worker sent them; its result stays
/// bytes and goes back to that worker.
class forwarded_actor_call final : public actor_call {
public:
  explicit forwarded_actor_call(forwarded_call f) :
    actor_call(std::span<object_ptr>(&ret_, 1), {}, f.method_id),
    f_(std::move(f)),
    ret_(f_.result) {}
  call_status invoke(void*) override {
    throw error("weft: a call made in a worker process runs only on an actor that lives in a worker process");
  }
  actor_method_invoker remote_invoker() const noexcept override { return f_.invoker; }
  bool is_coroutine() const noexcept override { return f_.coroutine; }
  const void* method_bytes() const noexcept override { return f_.method; }
  void encode_arguments(std::string& out) const override {
    out += f_.args;
    for (const auto& r : f_.arg_refs)
      encode_ref(r.cell.get(), r.ops); // the call's codec collects them
  }
  void decode_result(std::string_view in) override { store_forwarded_result(*ret_.get(), in); }

private:
  forwarded_call f_;
  object_ptr ret_;
};

/// The end of a worker's call on an actor that stays in the driver: its
/// value, encoded, becomes the forwarded result that goes back.
struct driver_call_reply final : completion_waiter {
  object_ptr result; ///< a value_object<forwarded_result>
  ref_ops_fn ops;
  driver_call_reply(object_ptr r, ref_ops_fn o) : result(std::move(r)), ops(o) {}
  void on_complete(object_state& obj) noexcept override {
    if (obj.failed()) {
      result->complete_error(obj.error());
    } else {
      forwarded_result out;
      std::string* before = collect_handed_references(&out.handed);
      try {
        ref_collector refs; // the refs the value carries are lent with it
        {
          ref_codec_scope scope(&refs);
          hand_over_references hand_over; // the worker's copy owns its own store references
          ops(ref_op::encode_value, &obj, {}, &out.bytes);
        }
        collect_handed_references(before);
        out.refs = std::move(refs.refs);
        static_cast<value_object<forwarded_result>&>(*result.get()).emplace(std::move(out));
        result->complete_value();
      } catch (...) {
        collect_handed_references(before);
        release_handed_references(out.handed);
        result->complete_error(std::current_exception());
      }
    }
    delete this;
  }
};

void forward_call(object_state& holder, forwarded_call f) {
  // (The worker names the holder: it may be any object lent to it.)
  auto* h = dynamic_cast<value_object<actor_ref>*>(&holder);
  if (!h || !h->done() || h->failed())
    throw serialization_error("weft: a worker called an actor through " + to_string(holder.id()) +
                              ", which holds no actor_handle (corrupted input)");
  const actor_ref& target = h->value();
  // Where the actor lives decides how the call runs; the worker's record
  // must agree (it names a builder for the driver, or an invoker).
  if (target.get()->remote == (f.driver_builder != nullptr))
    throw serialization_error("weft: a worker called " + target.get()->describe() + " as one that " +
                              (f.driver_builder ? "stays in the driver" : "lives in a worker") +
                              ", which it does not (corrupted input)");
  if (!f.driver_builder) {
    auto* c = new forwarded_actor_call(std::move(f));
    c->target = target;
    submit_call(c);
    return;
  }
  // An actor that stays in the driver (weft::queue): the call is built and
  // made here as if the driver had made it; its value goes back encoded.
  ref_ops_fn ops = nullptr;
  actor_call* c = nullptr;
  {
    ref_table refs = table_of(f.arg_refs);
    ref_codec_scope scope(&refs);
    c = reinterpret_cast<driver_call_builder>(const_cast<void*>(f.driver_builder))(f.method, f.args, &ops);
  }
  c->target = target;
  object_ptr value = c->returns()[0];
  auto* reply = new driver_call_reply(f.result, ops);
  if (!value->add_waiter(reply))
    delete reply; // (a new cell: not done)
  try {
    submit_call(c);
  } catch (...) {
    value->complete_error(std::current_exception()); // the reply goes with it
    throw;
  }
}

const bool forwarder_registered = (set_actor_call_forwarder(&forward_call), true);

} // namespace

object_state* handle_holder_ops(ref_op op, const std::type_info& type) {
  if (op == ref_op::make_pending)
    return new value_object<actor_ref>();
  throw serialization_error("weft: an actor_handle<" + demangled(type.name()) + "> has no value to send");
}

std::uint64_t encode_handle(const actor_ref& ref, object_state* via, ref_ops_fn ops) {
  if (via)
    return encode_ref(via, ops); // a worker's handle: the driver's holder it borrowed
  auto* holder = new value_object<actor_ref>();
  object_ptr keep(holder); // the message's codec adds its own reference
  holder->emplace(ref);
  holder->complete_value();
  return encode_ref(holder, ops);
}

void decode_handle(std::uint64_t holder, ref_ops_fn ops, actor_ref& ref, object_ptr& via) {
  object_ptr cell = decode_ref(holder, ops);
  if (!cell)
    return;
  if (cell->is_proxy()) {
    via = std::move(cell); // in a worker
    return;
  }
  if (!cell->done() || cell->failed()) // (an "exported" holder from a corrupt worker)
    throw serialization_error("weft: an actor_handle names " + to_string(cell->id()) +
                              ", which holds no handle (corrupted input)");
  ref = static_cast<value_object<actor_ref>*>(cell.get())->value();
}

void submit_call(actor_call* call) {
  runtime* rt = runtime::current();
  if (!rt && call->via && worker_client_active()) {
    object_state* via = call->via.get();
    worker_client_call_actor(via, std::make_unique<worker_call_adapter>(call)); // owns the call now
    return;
  }
  if (!rt) {
    call->release();
    if (started_as_worker())
      throw not_initialized_error("weft: actor method .remote(): actors cannot be called from a worker process "
                                  "yet; see docs/processes.md");
    throw not_initialized_error("weft: actor method .remote(): weft is not initialized; call weft::init() first "
                                "(or it was shut down)");
  }
  actor_core* core = call->target.get();
  if (!core) {
    call->release();
    throw invalid_argument_error(
      "weft: actor method call through an invalid actor_handle (default-constructed or moved-from)");
  }
  actor_system::submit(call);
}

created_actor find_actor(const std::string& name, const std::string& ns, const std::type_info& type,
                         actor_type_fn type_fn, ref_ops_fn handle_ops) {
  if (!runtime::current() && worker_client_active()) {
    object_ptr cell(new value_object<int>());
    auto answer = std::make_shared<make_reply::answer>();
    worker_client_find_actor(name, ns, type_fn, handle_ops,
                             std::make_unique<make_reply>(cell, answer, handle_ops, /*none_ok=*/true));
    object_state* c = cell.get();
    await_all(std::span<object_state* const>(&c, 1), 0, "get_actor"); // throws what the lookup threw
    return created_actor{{}, std::move(answer->via), answer->id};
  }
  return created_actor{actor_system::get("get_actor").find(name, ns, type), {}, {}};
}

void kill_actor(const actor_ref& ref, object_state* via, bool no_restart) {
  if (!ref && via && !runtime::current() && worker_client_active()) {
    worker_client_kill_actor(via, no_restart);
    return;
  }
  if (!ref)
    throw invalid_argument_error("weft::kill: the actor_handle is invalid (default-constructed or moved-from)");
  require_initialized("kill");
  actor_core* core = ref.get();
  {
    std::lock_guard<std::mutex> lock(core->mtx);
    if (core->state == actor_state::dead)
      return; // also covers a handle that outlived its runtime
  }
  core->sys->kill(ref.get(), no_restart, no_restart ? "killed by kill()" : "killed by kill(no_restart = false)");
}

actor_id id_of(const actor_core* core) noexcept { return core->id; }

void monitor_actor(const actor_ref& ref, object_state* via, std::function<void(const actor_exit&)> fn) {
  if (!fn)
    throw invalid_argument_error("weft::monitor: the callback is empty");
  if (!ref && via && !runtime::current() && worker_client_active()) {
    // In a worker: the driver watches the actor, and fn runs here.
    worker_client_monitor_actor(via, [fn = std::move(fn)](std::uint64_t id, bool normal, const std::string& cause) {
      fn(actor_exit{actor_id{id}, normal, cause});
    });
    return;
  }
  if (!ref && started_as_worker())
    throw not_initialized_error("weft::monitor: not available inside a worker process that is not connected to its "
                                "driver; see docs/processes.md");
  if (!ref)
    throw invalid_argument_error("weft::monitor: the actor_handle is invalid (default-constructed or moved-from)");
  actor_core* core = ref.get();
  actor_exit now;
  {
    std::lock_guard<std::mutex> lock(core->mtx);
    if (!core->finalized) {
      core->monitors.emplace_back(0, std::move(fn));
      return;
    }
    now = actor_exit{core->id, core->normal_exit, core->cause};
  }
  fn(now);
}

bool suspend_actor_call_on(object_state* cell) {
  incarnation* inc = current_incarnation();
  if (!inc && worker_current_actor()) {
    // An actor in a worker process runs each coroutine call on a thread of
    // its own: the call waits there, like get, but gives up its slot while
    // it waits, so the actor's next calls run meanwhile (its error, if any,
    // is thrown where it resumes).
    const bool turns = worker_coroutine_awaits(true);
    try {
      await_all(std::span<object_state* const>(&cell, 1), 0, "co_await");
    } catch (...) {
      if (turns)
        worker_coroutine_awaits(false);
      if (!cell->done())
        throw;
      return false;
    }
    if (turns)
      worker_coroutine_awaits(false);
    return false;
  }
  if (!inc)
    throw error("weft: co_await on an object_ref works only inside a weft::coro actor method run by weft");
  auto* c = static_cast<actor_call*>(current_fiber()->payload);
  auto* w = new coro_waiter(c, inc->me);
  if (cell->add_waiter(w))
    return true;
  c->release();
  delete w;
  return false;
}

} // namespace weft::detail

namespace weft {

std::string to_string(actor_id id) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "actor#%llx", static_cast<unsigned long long>(id.value));
  return buf;
}

actor_options merge(const actor_options& base, const actor_options& over) {
  actor_options r = base;
  if (over.name)
    r.name = over.name;
  if (over.namespace_)
    r.namespace_ = over.namespace_;
  if (over.max_restarts)
    r.max_restarts = over.max_restarts;
  if (over.max_task_retries)
    r.max_task_retries = over.max_task_retries;
  if (over.max_concurrency)
    r.max_concurrency = over.max_concurrency;
  if (over.lifetime)
    r.lifetime = over.lifetime;
  if (over.num_cpus)
    r.num_cpus = over.num_cpus;
  if (over.num_gpus)
    r.num_gpus = over.num_gpus;
  if (over.memory)
    r.memory = over.memory;
  if (!over.resources.empty())
    r.resources = over.resources;
  if (over.restart_on_exception)
    r.restart_on_exception = over.restart_on_exception;
  if (over.get_if_exists)
    r.get_if_exists = over.get_if_exists;
  return r;
}

void exit_actor() {
  auto* inc = detail::current_incarnation();
  if (!inc && detail::worker_request_actor_exit())
    return; // an actor in a worker process: the driver ends it after this call
  if (!inc)
    throw error("weft::exit_actor: called outside an actor method; it ends the actor whose method calls it");
  inc->exit_requested = true;
}

bool current_context::was_current_actor_restarted() const {
  if (auto* w = detail::worker_current_actor())
    return w->restarted;
  auto* inc = detail::current_incarnation();
  return inc && inc->restarted;
}

std::optional<actor_id> current_context::actor() const {
  if (auto* w = detail::worker_current_actor())
    return actor_id{w->id};
  auto* inc = detail::current_incarnation();
  if (!inc)
    return std::nullopt;
  return inc->core->id;
}

std::string current_context::actor_name() const {
  if (auto* w = detail::worker_current_actor())
    return w->name;
  auto* inc = detail::current_incarnation();
  return inc ? inc->core->name : std::string();
}

std::string current_context::actor_namespace() const {
  if (auto* w = detail::worker_current_actor())
    return w->ns;
  auto* inc = detail::current_incarnation();
  return inc ? inc->core->ns : std::string();
}

current_context runtime_context() { return {}; }

} // namespace weft
