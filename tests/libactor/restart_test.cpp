// Failures and restarts: constructor failures, max_restarts,
// max_task_retries (at-most-once / at-least-once), restart_on_exception,
// owner fate-sharing and weft::monitor.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "weft_test.hpp"

using namespace std::chrono_literals;
using weft_test::bound;
using weft_test::died_what;
using weft_test::eventually;
using weft_test::gate_value;
using weft_test::runtime_guard;
using weft_test::what_of;

namespace {

// ------------------------------------------------------ constructor failures

/// Its constructor throws on its first `fail_first` attempts.
struct fragile {
  static inline std::atomic<int> attempts{0};
  static inline std::atomic<int> fail_first{0};
  fragile() {
    if (++attempts <= fail_first)
      throw std::runtime_error("constructor attempt failed");
  }
  int ping() const { return 1; }
  bool restarted() const { return weft::runtime_context().was_current_actor_restarted(); }
};

// ------------------------------------------------------------ call journal

/// Records which calls started and which finished, across incarnations.
struct journal_log {
  std::mutex mtx;
  std::map<int, int> starts;
  std::vector<int> finished;
  void reset() {
    std::lock_guard<std::mutex> lock(mtx);
    starts.clear();
    finished.clear();
  }
  void start(int x) {
    std::lock_guard<std::mutex> lock(mtx);
    ++starts[x];
  }
  void finish(int x) {
    std::lock_guard<std::mutex> lock(mtx);
    finished.push_back(x);
  }
  int starts_of(int x) {
    std::lock_guard<std::mutex> lock(mtx);
    return starts.count(x) ? starts[x] : 0;
  }
  std::vector<int> finished_calls() {
    std::lock_guard<std::mutex> lock(mtx);
    return finished;
  }
};
journal_log g_journal;
std::atomic<int> g_blocked_entries{0};

/// A second gate, for the first execution of a call that is retried.
std::atomic<bool> g_first_gate_open{false};
weft::object_ref<int> g_first_gate_ref; // written before g_blocked_entries counts it

int first_gate_value(int x) {
  const auto give_up = std::chrono::steady_clock::now() + 30s;
  while (!g_first_gate_open.load() && !weft::is_cancelled() && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(1ms);
  return x;
}

/// Opens the first gate when the test case ends.
struct open_first_gate_at_exit {
  open_first_gate_at_exit() { g_first_gate_open = false; }
  ~open_first_gate_at_exit() {
    g_first_gate_open = true;
    g_first_gate_ref = {};
  }
  open_first_gate_at_exit(const open_first_gate_at_exit&) = delete;
  open_first_gate_at_exit& operator=(const open_first_gate_at_exit&) = delete;
};

/// Records the start of call `x`; its first execution waits for the first
/// gate, a re-execution for the shared gate.
weft::object_ref<int> gate_for_execution(int x) {
  g_journal.start(x);
  weft::object_ref<int> r;
  if (g_journal.starts_of(x) == 1) {
    r = weft::remote(first_gate_value).remote(x);
    g_first_gate_ref = r;
  } else {
    r = weft::remote(gate_value).remote(x);
  }
  ++g_blocked_entries;
  return r;
}

struct journal {
  int step(int x) {
    g_journal.start(x);
    g_journal.finish(x);
    return x;
  }
  /// Waits for the gate: its first execution blocked in weft::get, a
  /// re-execution (after a restart) by polling the gate, so that these
  /// tests do not depend on a retried call being woken from get() (that
  /// has its own test below).
  int gated_step(int x) {
    g_journal.start(x);
    ++g_blocked_entries;
    if (g_journal.starts_of(x) == 1)
      weft::get(weft::remote(gate_value).remote(x));
    else
      weft_test::wait_for_gate(); // returns early when the call is interrupted
    g_journal.finish(x);
    return x;
  }
  /// Blocks in weft::get on every execution: the first on the first gate,
  /// a re-execution on the (shared) gate.
  int always_blocking_step(int x) {
    const int v = weft::get(gate_for_execution(x));
    g_journal.finish(x);
    return v;
  }
  /// The same, waiting at a co_await instead.
  weft::coro<int> awaiting_step(int x) {
    const auto gate_ref = gate_for_execution(x);
    const int v = co_await gate_ref;
    g_journal.finish(x);
    co_return v;
  }
  int ping() const { return 1; }
  bool restarted() const { return weft::runtime_context().was_current_actor_restarted(); }
};

/// When `ref` is still not ready after `bound`, the runtime has lost the
/// wake-up of a call blocked in get(): its fiber never ends, and shutdown()
/// would wait for it forever. Report the failure and end the process then,
/// so that the test stops by itself.
template <class T>
void exit_if_stuck(const weft::object_ref<T>& ref, const char* what) {
  auto [ready, not_ready] = weft::wait(std::vector<weft::object_ref<T>>{ref}, 1, bound);
  if (!ready.empty())
    return;
  FAIL_CHECK(what << " (the process ends now: shutdown() would wait for the stuck call forever)");
  std::cout.flush();
  std::cerr.flush();
  std::_Exit(EXIT_FAILURE);
}

// ------------------------------------------------------------ exceptions

struct stateful {
  int value = 0;
  int add(int n) { return value += n; }
  int get_value() const { return value; }
  int boom() { throw std::runtime_error("boom"); }
  bool restarted() const { return weft::runtime_context().was_current_actor_restarted(); }
  void quit() { weft::exit_actor(); }
};

// ---------------------------------------------------------------- owners

struct child {
  int value = 0;
  int add(int n) { return value += n; }
};

struct parent {
  weft::actor_handle<child> make_child() { return weft::remote<child>().remote(); }
  weft::actor_handle<child> make_detached_child() {
    return weft::remote<child>().options({.lifetime = weft::lifetime::detached}).remote();
  }
  int ping() const { return 1; }
};

/// Creates a child in its constructor (so it owns it) and keeps its handle.
struct builder {
  weft::actor_handle<child> kid = weft::remote<child>().remote();
  weft::actor_handle<child> get_kid() const { return kid; }
};

weft::actor_handle<child> child_from_task() {
  auto h = weft::remote<child>().remote();
  weft::get(h.task(&child::add).remote(10), bound);
  return h;
}

/// Collects what a monitor callback reports.
struct exit_probe {
  std::mutex mtx;
  std::optional<weft::actor_exit> seen;
  std::atomic<int> calls{0};
  std::function<void(const weft::actor_exit&)> callback() {
    return [this](const weft::actor_exit& e) {
      {
        std::lock_guard<std::mutex> lock(mtx);
        seen = e;
      }
      ++calls;
    };
  }
  bool fired() { return calls.load() > 0; }
  weft::actor_exit get() {
    std::lock_guard<std::mutex> lock(mtx);
    return *seen;
  }
};

} // namespace

TEST_CASE("a constructor that always throws is restarted max_restarts times, then the actor is dead") {
  runtime_guard rt;
  fragile::attempts = 0;
  fragile::fail_first = 1000;
  auto h = weft::remote<fragile>().options({.max_restarts = 2}).remote();
  const std::string what = died_what(h.task(&fragile::ping).remote());
  CHECK_THAT(what, Catch::Contains("restarted 2 times"));
  CHECK_THAT(what, Catch::Contains("constructor"));
  CHECK_THAT(what, Catch::Contains("constructor attempt failed"));
  CHECK_THAT(what, Catch::Contains(weft::to_string(h.id())));
  CHECK(fragile::attempts == 3); // the first try and two restarts
}

TEST_CASE("a constructor that throws with max_restarts = 0 leaves the actor dead at once") {
  runtime_guard rt;
  fragile::attempts = 0;
  fragile::fail_first = 1000;
  auto h = weft::remote<fragile>().remote();
  const std::string what = died_what(h.task(&fragile::ping).remote());
  CHECK_THAT(what, Catch::Contains("constructor attempt failed"));
  CHECK(fragile::attempts == 1);
}

TEST_CASE("with max_restarts = -1 a constructor that fails its first attempts is restarted until it succeeds") {
  runtime_guard rt;
  fragile::attempts = 0;
  fragile::fail_first = 3;
  auto h = weft::remote<fragile>().options({.max_restarts = -1}).remote();
  CHECK(weft::get(h.task(&fragile::ping).remote(), bound) == 1);
  CHECK(weft::get(h.task(&fragile::restarted).remote(), bound));
  CHECK(fragile::attempts == 4);
}

TEST_CASE("max_task_retries = 0: the call in flight at a failure fails, calls made later run on the new incarnation") {
  runtime_guard rt;
  weft_test::open_gate_at_exit gate;
  g_journal.reset();
  g_blocked_entries = 0;
  auto h = weft::remote<journal>().options({.max_restarts = 1}).remote();
  auto in_flight = h.task(&journal::gated_step).remote(1);
  REQUIRE(eventually([] { return g_blocked_entries.load() == 1; }));
  weft::kill(h, {.no_restart = false});
  auto later = h.task(&journal::step).remote(2);
  const std::string what = died_what(in_flight);
  CHECK_THAT(what, Catch::Contains("max_task_retries"));
  CHECK(weft::get(later, bound) == 2);
  CHECK(weft::get(h.task(&journal::restarted).remote(), bound));
  weft_test::gate_open = true;
  CHECK(g_journal.starts_of(1) == 1); // at most once: never rerun
  CHECK(g_journal.finished_calls() == std::vector<int>{2});
}

namespace {

/// Calls 1 (finished), 2 (in flight, blocked), 3 and 4 (queued), then a
/// failure; checks that 2, 3, 4 run again in order and 1 never does.
void check_at_least_once(int max_task_retries) {
  runtime_guard rt;
  weft_test::open_gate_at_exit gate;
  g_journal.reset();
  g_blocked_entries = 0;
  auto h = weft::remote<journal>().options({.max_restarts = 1, .max_task_retries = max_task_retries}).remote();
  auto first = h.task(&journal::step).remote(1);
  REQUIRE(weft::get(first, bound) == 1);
  auto second = h.task(&journal::gated_step).remote(2);
  REQUIRE(eventually([] { return g_blocked_entries.load() == 1; }));
  auto third = h.task(&journal::step).remote(3);
  auto fourth = h.task(&journal::step).remote(4);
  weft::kill(h, {.no_restart = false});
  // The interrupted call runs again on the new incarnation, where it blocks
  // at the (still closed) gate a second time.
  REQUIRE(eventually([] { return g_blocked_entries.load() == 2; }));
  weft_test::gate_open = true;
  CHECK(weft::get(second, bound) == 2);
  CHECK(weft::get(third, bound) == 3);
  CHECK(weft::get(fourth, bound) == 4);
  CHECK(weft::get(h.task(&journal::restarted).remote(), bound));
  CHECK(g_journal.starts_of(1) == 1); // finished before the failure: never rerun
  CHECK(g_journal.starts_of(2) == 2);
  CHECK(g_journal.starts_of(3) == 1);
  CHECK(g_journal.starts_of(4) == 1);
  CHECK(g_journal.finished_calls() == std::vector<int>{1, 2, 3, 4}); // original order
}

} // namespace

TEST_CASE("max_task_retries > 0: unfinished calls are resubmitted in their original order, finished ones are not") {
  check_at_least_once(2);
}

TEST_CASE("max_task_retries = -1: unfinished calls are resubmitted in their original order, finished ones are not") {
  check_at_least_once(-1);
}

namespace {

/// A call waits on the first gate; the actor fails and the call is retried,
/// now waiting on the second gate; then the first gate opens. The object the
/// first execution waited for must not wake the retry: it goes on only when
/// its own object is ready.
template <class M>
void check_retry_waits_for_its_own_object(M method) {
  runtime_guard rt;
  weft_test::open_gate_at_exit gate;
  open_first_gate_at_exit first_gate;
  g_journal.reset();
  g_blocked_entries = 0;
  auto h = weft::remote<journal>().options({.max_restarts = 1, .max_task_retries = 1, .max_concurrency = 2}).remote();
  auto call = h.task(method).remote(1);
  REQUIRE(eventually([] { return g_blocked_entries.load() == 1; }));
  weft::kill(h, {.no_restart = false});
  REQUIRE(eventually([] { return g_blocked_entries.load() == 2; })); // the retry waits on the second gate
  g_first_gate_open = true;
  REQUIRE(weft::get(g_first_gate_ref, bound) == 1);
  // A call made after the first gate's object is ready: when it returns, a
  // stray wake-up sent for that object has been handled.
  CHECK(weft::get(h.task(&journal::ping).remote(), bound) == 1);
  CHECK_FALSE(call.is_ready());
  weft_test::gate_open = true;
  exit_if_stuck(call, "the retried call was never woken after its object became ready");
  CHECK(weft::get(call, bound) == 1);
  CHECK(g_journal.finished_calls() == std::vector<int>{1});
}

} // namespace

TEST_CASE("a call retried after a restart that blocks in get again is woken by its own object only") {
  check_retry_waits_for_its_own_object(&journal::always_blocking_step);
}

TEST_CASE("a coroutine call retried after a restart is resumed by its own awaited object only") {
  check_retry_waits_for_its_own_object(&journal::awaiting_step);
}

TEST_CASE("max_task_retries = 1: a call interrupted twice fails the second time") {
  runtime_guard rt;
  weft_test::open_gate_at_exit gate;
  open_first_gate_at_exit first_gate;
  g_journal.reset();
  g_blocked_entries = 0;
  auto h = weft::remote<journal>().options({.max_restarts = 2, .max_task_retries = 1}).remote();
  auto call = h.task(&journal::always_blocking_step).remote(1);
  REQUIRE(eventually([] { return g_blocked_entries.load() == 1; }));
  weft::kill(h, {.no_restart = false});
  REQUIRE(eventually([] { return g_blocked_entries.load() == 2; })); // the retry, blocked in get()
  weft::kill(h, {.no_restart = false});
  exit_if_stuck(call, "the retried call blocked in get() was never interrupted by the second failure");
  CHECK_THAT(died_what(call), Catch::Contains("max_task_retries = 1"));
  CHECK(weft::get(h.task(&journal::step).remote(7), bound) == 7); // restart 2 of 2 took the later call
  CHECK(g_journal.starts_of(1) == 2);
}

TEST_CASE("restart_on_exception: the throwing call gets task_error and the actor restarts with fresh state") {
  runtime_guard rt;
  auto h = weft::remote<stateful>().options({.max_restarts = 1, .restart_on_exception = true}).remote();
  CHECK(weft::get(h.task(&stateful::add).remote(5), bound) == 5);
  auto bad = h.task(&stateful::boom).remote();
  auto after = h.task(&stateful::get_value).remote(); // queued behind the throwing call
  try {
    weft::get(bad, bound);
    FAIL("expected task_error");
  } catch (const weft::task_error& e) {
    CHECK(e.type_name() == "std::runtime_error");
    CHECK(e.message() == "boom");
  }
  CHECK(weft::get(after, bound) == 0); // fresh state
  CHECK(weft::get(h.task(&stateful::restarted).remote(), bound));
}

TEST_CASE("restart_on_exception without restarts left: the actor is dead after the throwing call") {
  runtime_guard rt;
  auto h = weft::remote<stateful>().options({.restart_on_exception = true}).remote();
  CHECK_THROWS_AS(weft::get(h.task(&stateful::boom).remote(), bound), weft::task_error);
  const std::string what = died_what(h.task(&stateful::get_value).remote());
  CHECK_THAT(what, Catch::Contains("boom"));
  CHECK_THAT(what, Catch::Contains("restart_on_exception"));
}

TEST_CASE("without restart_on_exception a throwing method keeps the actor and its state, even with restarts allowed") {
  runtime_guard rt;
  auto h = weft::remote<stateful>().options({.max_restarts = 3}).remote();
  CHECK(weft::get(h.task(&stateful::add).remote(5), bound) == 5);
  CHECK_THROWS_AS(weft::get(h.task(&stateful::boom).remote(), bound), weft::task_error);
  CHECK(weft::get(h.task(&stateful::add).remote(1), bound) == 6);
  CHECK_FALSE(weft::get(h.task(&stateful::restarted).remote(), bound));
}

TEST_CASE("killing an owner ends its non-detached children even while handles to them are held") {
  runtime_guard rt;
  auto owner = weft::remote<parent>().options({.name = "the-owner"}).remote();
  weft::actor_handle<child> kid = weft::get(owner.task(&parent::make_child).remote(), bound);
  weft::actor_handle<child> free_kid = weft::get(owner.task(&parent::make_detached_child).remote(), bound);
  CHECK(weft::get(kid.task(&child::add).remote(1), bound) == 1);
  CHECK(weft::get(free_kid.task(&child::add).remote(1), bound) == 1);
  exit_probe kid_end;
  weft::monitor(kid, kid_end.callback());
  weft::kill(owner);
  REQUIRE(eventually([&] { return kid_end.fired(); }));
  CHECK_FALSE(kid_end.get().normal);
  CHECK_THAT(kid_end.get().cause, Catch::Contains("owner"));
  const std::string what = died_what(kid.task(&child::add).remote(1));
  CHECK_THAT(what, Catch::Contains("owner"));
  CHECK_THAT(what, Catch::Contains("parent"));
  CHECK_THAT(what, Catch::Contains("the-owner"));
  // The detached child does not share its creator's fate.
  CHECK(weft::get(free_kid.task(&child::add).remote(1), bound) == 2);
  weft::kill(free_kid);
}

TEST_CASE("an owner that ends when its last handle is dropped takes its children with it") {
  runtime_guard rt;
  weft::actor_handle<child> kid;
  exit_probe owner_end;
  {
    auto owner = weft::remote<parent>().remote();
    kid = weft::get(owner.task(&parent::make_child).remote(), bound);
    weft::monitor(owner, owner_end.callback());
  }
  REQUIRE(eventually([&] { return owner_end.fired(); }));
  CHECK(owner_end.get().normal);
  exit_probe kid_end;
  weft::monitor(kid, kid_end.callback());
  REQUIRE(eventually([&] { return kid_end.fired(); }));
  CHECK_THAT(died_what(kid.task(&child::add).remote(1)), Catch::Contains("owner"));
}

TEST_CASE("an actor created in a constructor is owned by the actor being constructed") {
  runtime_guard rt;
  auto owner = weft::remote<builder>().remote();
  weft::actor_handle<child> kid = weft::get(owner.task(&builder::get_kid).remote(), bound);
  CHECK(weft::get(kid.task(&child::add).remote(1), bound) == 1);
  exit_probe kid_end;
  weft::monitor(kid, kid_end.callback());
  weft::kill(owner);
  REQUIRE(eventually([&] { return kid_end.fired(); }));
  CHECK_THAT(died_what(kid.task(&child::add).remote(1)), Catch::Contains("owner"));
}

TEST_CASE("an actor created by a task and returned keeps working after the task ended") {
  runtime_guard rt;
  auto ref = weft::remote(child_from_task).remote();
  weft::actor_handle<child> h = weft::get(ref, bound);
  ref = {}; // the task is long over and its result is gone; h is the only handle
  CHECK(weft::get(h.task(&child::add).remote(1), bound) == 11);
  CHECK(weft::get(h.task(&child::add).remote(1), bound) == 12);
}

TEST_CASE("monitor reports a normal end for exit_actor") {
  runtime_guard rt;
  auto h = weft::remote<stateful>().options({.max_restarts = 2}).remote();
  exit_probe probe;
  weft::monitor(h, probe.callback());
  weft::get(h.task(&stateful::quit).remote(), bound);
  REQUIRE(eventually([&] { return probe.fired(); }));
  const auto e = probe.get();
  CHECK(e.normal);
  CHECK(e.id == h.id());
  CHECK_THAT(e.cause, Catch::Contains("exit_actor"));
  CHECK(probe.calls == 1);
}

TEST_CASE("monitor reports a normal end when the last handle is dropped") {
  runtime_guard rt;
  exit_probe probe;
  weft::actor_id id;
  {
    auto h = weft::remote<stateful>().remote();
    id = h.id();
    weft::monitor(h, probe.callback());
    weft::get(h.task(&stateful::add).remote(1), bound);
  }
  REQUIRE(eventually([&] { return probe.fired(); }));
  const auto e = probe.get();
  CHECK(e.normal);
  CHECK(e.id == id);
}

TEST_CASE("monitor reports an abnormal end for kill, and not for a restart") {
  runtime_guard rt;
  auto h = weft::remote<stateful>().options({.max_restarts = 1}).remote();
  exit_probe probe;
  weft::monitor(h, probe.callback());
  weft::get(h.task(&stateful::add).remote(1), bound); // constructed
  weft::kill(h, {.no_restart = false});
  CHECK(weft::get(h.task(&stateful::restarted).remote(), bound));
  CHECK_FALSE(probe.fired()); // a restart is not an end
  weft::kill(h);
  REQUIRE(eventually([&] { return probe.fired(); }));
  const auto e = probe.get();
  CHECK_FALSE(e.normal);
  CHECK(e.id == h.id());
  CHECK_THAT(e.cause, Catch::Contains("killed by kill()"));
  CHECK(probe.calls == 1);
}

TEST_CASE("monitor on an actor that is already dead reports at once") {
  runtime_guard rt;
  auto h = weft::remote<stateful>().remote();
  exit_probe first;
  weft::monitor(h, first.callback());
  weft::kill(h);
  REQUIRE(eventually([&] { return first.fired(); }));
  exit_probe late;
  weft::monitor(h, late.callback());
  CHECK(late.fired()); // called before monitor() returned
  CHECK_FALSE(late.get().normal);
}
