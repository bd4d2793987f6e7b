// kill() and exit_actor(): ending an actor from outside and from inside.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <memory>
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

std::atomic<bool> g_entered{false};

struct victim {
  static inline std::atomic<int> constructed{0};
  static inline std::atomic<int> destroyed{0};
  static void reset_counters() {
    constructed = 0;
    destroyed = 0;
  }

  victim() { ++constructed; }
  ~victim() { ++destroyed; }
  victim(const victim&) = delete;
  victim& operator=(const victim&) = delete;

  /// Blocks in weft::get until the gate opens.
  int block() {
    g_entered = true;
    return weft::get(weft::remote(gate_value).remote(1));
  }
  int add(int n) { return value += n; }
  int get_value() const { return value; }
  bool restarted() const { return weft::runtime_context().was_current_actor_restarted(); }
  int quit(int result) {
    weft::exit_actor();
    return result;
  }

  int value = 0;
};

/// Its constructor blocks in weft::get until the gate opens.
struct slow_starter {
  static inline std::atomic<int> constructions_begun{0};
  static inline std::atomic<int> constructed{0};
  static inline std::atomic<int> destroyed{0};
  slow_starter() {
    ++constructions_begun;
    weft::get(weft::remote(gate_value).remote(1));
    ++constructed;
  }
  ~slow_starter() { ++destroyed; }
  slow_starter(const slow_starter&) = delete;
  slow_starter& operator=(const slow_starter&) = delete;
  bool restarted() const { return weft::runtime_context().was_current_actor_restarted(); }
};

/// The what() of the actor_died_error that get(ref) throws (bounded).
std::atomic<bool> g_stall_open{false};
std::atomic<int> g_stalling{0};

/// Holds its thread without any weft call (so without yielding it) until
/// the stall opens; gives up after a generous deadline.
int hold_thread() {
  ++g_stalling;
  const auto give_up = std::chrono::steady_clock::now() + 30s;
  while (!g_stall_open.load() && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(1ms);
  return 0;
}

struct staller {
  int hold() { return hold_thread(); }
};

/// Keeps every thread that runs weft's actors busy while it exists: on a
/// 2-CPU runtime CAF has 3 threads, held here by two tasks and one actor
/// call. An actor created meanwhile cannot begin to start before the stall
/// ends, so a kill() sent meanwhile reaches it first.
struct stalled_threads {
  std::vector<weft::object_ref<int>> holders;
  weft::actor_handle<staller> holder_actor;
  stalled_threads() {
    g_stall_open = false;
    g_stalling = 0;
    holders.push_back(weft::remote(hold_thread).remote());
    holders.push_back(weft::remote(hold_thread).remote());
    holder_actor = weft::remote<staller>().remote();
    holders.push_back(holder_actor.task(&staller::hold).remote());
    if (!eventually([] { return g_stalling.load() == 3; })) {
      g_stall_open = true;
      FAIL("the threads could not all be held");
    }
  }
  ~stalled_threads() { g_stall_open = true; }
  stalled_threads(const stalled_threads&) = delete;
  stalled_threads& operator=(const stalled_threads&) = delete;
};

/// Kills `h` for good and waits (bounded) until it has ended. When it never
/// does, its incarnation is lost to the runtime and shutdown() would wait for
/// it forever: report that and end the process, so that the test stops.
template <class T>
void end_or_exit(const weft::actor_handle<T>& h, const char* what) {
  auto ended = std::make_shared<std::atomic<bool>>(false);
  weft::monitor(h, [ended](const weft::actor_exit&) { *ended = true; });
  weft::kill(h);
  if (eventually([&] { return ended->load(); }))
    return;
  FAIL_CHECK(what << " (the process ends now: shutdown() would wait for the actor forever)");
  std::cout.flush();
  std::cerr.flush();
  std::_Exit(EXIT_FAILURE);
}

int call_exit_actor_in_task() {
  weft::exit_actor();
  return 0;
}

} // namespace

TEST_CASE("kill fails the running call, the queued calls and later calls with actor_died_error") {
  runtime_guard rt;
  weft_test::open_gate_at_exit gate;
  victim::reset_counters();
  g_entered = false;
  auto h = weft::remote<victim>().options({.name = "kill-victim"}).remote();
  auto running = h.task(&victim::block).remote();
  REQUIRE(eventually([] { return g_entered.load(); }));
  std::vector<weft::object_ref<int>> queued;
  for (int i = 0; i < 3; ++i)
    queued.push_back(h.task(&victim::add).remote(1));
  weft::kill(h);
  auto later = h.task(&victim::add).remote(1);

  const std::string id = weft::to_string(h.id());
  auto names_everything = [&](const std::string& what) {
    CHECK_THAT(what, Catch::Contains("victim"));
    CHECK_THAT(what, Catch::Contains(id));
    CHECK_THAT(what, Catch::Contains("kill-victim"));
    CHECK_THAT(what, Catch::Contains("killed by kill()"));
  };
  // The running call is blocked in get() on a gate that is still closed: it
  // must fail without the gate opening.
  names_everything(died_what(running));
  for (const auto& q : queued)
    names_everything(died_what(q));
  names_everything(died_what(later));
  CHECK(eventually([] { return victim::destroyed == 1; }));
  CHECK(victim::constructed == 1);
}

TEST_CASE("a call made after kill fails at once and never hangs") {
  runtime_guard rt;
  auto h = weft::remote<victim>().remote();
  weft::get(h.task(&victim::add).remote(1), bound);
  weft::kill(h);
  CHECK_THAT(died_what(h.task(&victim::get_value).remote()), Catch::Contains("killed by kill()"));
  // Once the death is known, a further call is failed before remote() returns.
  auto r = h.task(&victim::get_value).remote();
  CHECK(r.is_ready());
  CHECK_THAT(died_what(r), Catch::Contains("killed by kill()"));
}

TEST_CASE("killing an actor right after creating it ends it and fails the call already made") {
  runtime_guard rt;
  weft_test::open_gate_at_exit gate;
  victim::reset_counters();
  weft::actor_handle<victim> h;
  weft::object_ref<int> early;
  {
    stalled_threads stall; // the new actor cannot start before the kill reaches it
    h = weft::remote<victim>().remote();
    early = h.task(&victim::block).remote(); // cannot finish before the kill: the gate is closed
    weft::kill(h);
  }
  CHECK_THAT(died_what(early), Catch::Contains("killed by kill()"));
  end_or_exit(h, "an actor killed before it started never ended");
  CHECK(victim::destroyed == victim::constructed); // no instance outlives its actor
}

TEST_CASE("kill with no_restart = false right after creating an actor restarts it") {
  runtime_guard rt;
  victim::reset_counters();
  weft::actor_handle<victim> h;
  {
    stalled_threads stall; // the new actor cannot start before the kill reaches it
    h = weft::remote<victim>().options({.max_restarts = 1}).remote();
    weft::kill(h, {.no_restart = false});
  }
  CHECK(weft::get(h.task(&victim::restarted).remote(), bound));
  end_or_exit(h, "an actor killed before it started never ended");
}

TEST_CASE("kill fails a call that waits for its object_ref arguments") {
  runtime_guard rt;
  weft_test::open_gate_at_exit gate;
  auto h = weft::remote<victim>().remote();
  weft::get(h.task(&victim::add).remote(1), bound);
  auto pending = h.task(&victim::add).remote(weft::remote(gate_value).remote(5)); // argument not ready
  auto behind = h.task(&victim::add).remote(1);
  weft::kill(h);
  CHECK_THAT(died_what(pending), Catch::Contains("killed by kill()"));
  CHECK_THAT(died_what(behind), Catch::Contains("killed by kill()"));
}

TEST_CASE("kill during a constructor that blocks in get ends the actor without a destructor") {
  runtime_guard rt;
  weft_test::open_gate_at_exit gate;
  slow_starter::constructions_begun = 0;
  slow_starter::constructed = 0;
  slow_starter::destroyed = 0;
  auto h = weft::remote<slow_starter>().remote();
  auto call = h.task(&slow_starter::restarted).remote();
  REQUIRE(eventually([] { return slow_starter::constructions_begun.load() == 1; }));
  weft::kill(h);
  CHECK_THAT(died_what(call), Catch::Contains("killed by kill()"));
  end_or_exit(h, "an actor killed in its constructor never ended");
  CHECK(slow_starter::constructed == 0);
  CHECK(slow_starter::destroyed == 0); // no object was ever complete
}

TEST_CASE("kill with no_restart = false during a constructor restarts the actor") {
  runtime_guard rt;
  weft_test::open_gate_at_exit gate;
  slow_starter::constructions_begun = 0;
  slow_starter::constructed = 0;
  slow_starter::destroyed = 0;
  auto h = weft::remote<slow_starter>().options({.max_restarts = 1}).remote();
  auto call = h.task(&slow_starter::restarted).remote(); // not started: goes to the next incarnation
  REQUIRE(eventually([] { return slow_starter::constructions_begun.load() == 1; }));
  weft::kill(h, {.no_restart = false});
  REQUIRE(eventually([] { return slow_starter::constructions_begun.load() == 2; }));
  weft_test::gate_open = true;
  CHECK(weft::get(call, bound));
  CHECK(slow_starter::constructed == 1);
  end_or_exit(h, "a restarted actor never ended");
  CHECK(slow_starter::destroyed == 1);
}

TEST_CASE("the name of a killed actor is free again as soon as kill returns") {
  runtime_guard rt;
  victim::reset_counters();
  auto first = weft::remote<victim>().options({.name = "reused"}).remote();
  weft::get(first.task(&victim::add).remote(5), bound);
  weft::kill(first);
  weft::actor_handle<victim> second;
  REQUIRE_NOTHROW(second = weft::remote<victim>().options({.name = "reused"}).remote());
  CHECK(second.id() != first.id());
  CHECK(weft::get(second.task(&victim::get_value).remote(), bound) == 0);
  auto found = weft::get_actor<victim>("reused");
  REQUIRE(found.has_value());
  CHECK(*found == second);
}

TEST_CASE("killing an actor twice is harmless") {
  runtime_guard rt;
  victim::reset_counters();
  auto h = weft::remote<victim>().remote();
  weft::get(h.task(&victim::add).remote(1), bound);
  weft::kill(h);
  REQUIRE_NOTHROW(weft::kill(h));
  CHECK_THAT(died_what(h.task(&victim::get_value).remote()), Catch::Contains("killed by kill()"));
  REQUIRE_NOTHROW(weft::kill(h)); // also once it is known dead
  REQUIRE_NOTHROW(weft::kill(h, {.no_restart = false}));
  CHECK(eventually([] { return victim::destroyed == 1; }));
  CHECK(victim::constructed == 1); // not revived by the later kills
}

TEST_CASE("kill with no_restart = false restarts an actor with restarts left, with fresh state") {
  runtime_guard rt;
  victim::reset_counters();
  auto h = weft::remote<victim>().options({.max_restarts = 1}).remote();
  CHECK(weft::get(h.task(&victim::add).remote(5), bound) == 5);
  CHECK_FALSE(weft::get(h.task(&victim::restarted).remote(), bound));
  const auto id = h.id();
  weft::kill(h, {.no_restart = false});
  CHECK(weft::get(h.task(&victim::get_value).remote(), bound) == 0);
  CHECK(weft::get(h.task(&victim::restarted).remote(), bound));
  CHECK(h.id() == id);
  CHECK(victim::constructed == 2);
  CHECK(eventually([] { return victim::destroyed == 1; })); // the first instance
}

TEST_CASE("kill with no_restart = false leaves an actor without restarts left dead") {
  runtime_guard rt;
  victim::reset_counters();
  auto h = weft::remote<victim>().remote(); // max_restarts defaults to 0
  weft::get(h.task(&victim::add).remote(1), bound);
  weft::kill(h, {.no_restart = false});
  const std::string what = died_what(h.task(&victim::get_value).remote());
  CHECK_THAT(what, Catch::Contains("killed by kill"));
  CHECK_THAT(what, Catch::Contains(weft::to_string(h.id())));
  CHECK(victim::constructed == 1);
}

TEST_CASE("kill with no_restart = false uses up max_restarts, then the actor stays dead") {
  runtime_guard rt;
  victim::reset_counters();
  auto h = weft::remote<victim>().options({.max_restarts = 1}).remote();
  weft::get(h.task(&victim::add).remote(1), bound);
  weft::kill(h, {.no_restart = false});
  CHECK(weft::get(h.task(&victim::restarted).remote(), bound)); // restart 1 of 1
  weft::kill(h, {.no_restart = false});
  const std::string what = died_what(h.task(&victim::get_value).remote());
  CHECK_THAT(what, Catch::Contains("killed by kill"));
  CHECK_THAT(what, Catch::Contains("restarted 1 times"));
  CHECK(victim::constructed == 2);
}

TEST_CASE("kill with no_restart = true ends even an actor that could restart") {
  runtime_guard rt;
  victim::reset_counters();
  auto h = weft::remote<victim>().options({.max_restarts = -1}).remote();
  weft::get(h.task(&victim::add).remote(1), bound);
  weft::kill(h);
  CHECK_THAT(died_what(h.task(&victim::get_value).remote()), Catch::Contains("killed by kill()"));
  CHECK(victim::constructed == 1);
}

TEST_CASE("exit_actor inside a method delivers that call's result and fails later calls") {
  runtime_guard rt;
  victim::reset_counters();
  // Restarts are allowed, yet exit_actor() is not a failure: no restart.
  auto h = weft::remote<victim>().options({.name = "exiting", .max_restarts = 3}).remote();
  weft::get(h.task(&victim::add).remote(1), bound);
  auto last = h.task(&victim::quit).remote(42);
  auto after = h.task(&victim::add).remote(1); // queued behind quit
  CHECK(weft::get(last, bound) == 42);
  const std::string what = died_what(after);
  CHECK_THAT(what, Catch::Contains("exit_actor"));
  CHECK_THAT(what, Catch::Contains("victim"));
  CHECK_THAT(what, Catch::Contains("exiting"));
  CHECK_THAT(died_what(h.task(&victim::get_value).remote()), Catch::Contains("exit_actor"));
  CHECK(eventually([] { return victim::destroyed == 1; }));
  CHECK(victim::constructed == 1);
}

TEST_CASE("exit_actor outside an actor method throws weft::error") {
  runtime_guard rt;
  CHECK_THAT(what_of<weft::error>([] { weft::exit_actor(); }), Catch::Contains("outside an actor"));
  // Inside a plain task it is just as wrong; the task fails with that error.
  try {
    weft::get(weft::remote(call_exit_actor_in_task).remote(), bound);
    FAIL("expected task_error");
  } catch (const weft::task_error& e) {
    CHECK_THAT(e.message(), Catch::Contains("outside an actor"));
  }
}

TEST_CASE("kill of a default-constructed handle throws invalid_argument_error") {
  runtime_guard rt;
  weft::actor_handle<victim> h;
  CHECK_THAT(what_of<weft::invalid_argument_error>([&] { weft::kill(h); }), Catch::Contains("invalid"));
}
