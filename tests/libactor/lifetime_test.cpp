// Actor lifetime: handles are reference-counted values; the last one going
// away ends a non-detached actor after its queued calls; detached actors
// live until kill() or shutdown().
#include <catch2/catch.hpp>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "weft_test.hpp"

using namespace std::chrono_literals;
using weft_test::bound;
using weft_test::eventually;
using weft_test::gate_value;
using weft_test::runtime_guard;
using weft_test::what_of;

namespace {

/// Counts constructions and destructions of every instance, and records the
/// value an instance held when it was destroyed.
struct tracked {
  static inline std::atomic<int> constructed{0};
  static inline std::atomic<int> destroyed{0};
  static inline std::atomic<int> value_at_destruction{-1};
  static void reset_counters() {
    constructed = 0;
    destroyed = 0;
    value_at_destruction = -1;
  }

  tracked() { ++constructed; }
  ~tracked() {
    value_at_destruction = value;
    ++destroyed;
  }
  tracked(const tracked&) = delete;
  tracked& operator=(const tracked&) = delete;

  int add(int n) { return value += n; }
  int get_value() const { return value; }
  /// Blocks in weft::get until the test opens the gate, then adds n.
  int add_after_gate(int n);

  int value = 0;
};

std::atomic<bool> g_entered{false};

int tracked::add_after_gate(int n) {
  g_entered = true;
  const int x = weft::get(weft::remote(gate_value).remote(n));
  return value += x;
}

/// A task that gets an actor handle as an argument and calls the actor.
int add_through(weft::actor_handle<tracked> h, int n) { return weft::get(h.task(&tracked::add).remote(n), bound); }

/// A task that starts an actor and returns its handle.
weft::actor_handle<tracked> make_tracked(int start) {
  auto h = weft::remote<tracked>().remote();
  weft::get(h.task(&tracked::add).remote(start), bound);
  return h;
}

/// An actor that uses and keeps handles to other actors.
struct holder {
  weft::actor_handle<tracked> kept;
  int poke(weft::actor_handle<tracked> t, int n) { return weft::get(t.task(&tracked::add).remote(n), bound); }
  void keep(weft::actor_handle<tracked> t) { kept = std::move(t); }
  int poke_kept(int n) { return weft::get(kept.task(&tracked::add).remote(n), bound); }
  weft::actor_handle<tracked> give_back() const { return kept; }
};

} // namespace

TEST_CASE("copies of a handle name the same actor and share its state") {
  runtime_guard rt;
  tracked::reset_counters();
  auto h = weft::remote<tracked>().remote();
  weft::actor_handle<tracked> copy = h;
  CHECK(copy == h);
  CHECK(copy.id() == h.id());
  CHECK(weft::get(h.task(&tracked::add).remote(2), bound) == 2);
  CHECK(weft::get(copy.task(&tracked::add).remote(3), bound) == 5);
  weft::actor_handle<tracked> moved = std::move(copy);
  CHECK_FALSE(copy.valid()); // NOLINT(bugprone-use-after-move): the moved-from state is documented
  CHECK(moved == h);
  CHECK(weft::get(moved.task(&tracked::get_value).remote(), bound) == 5);
  CHECK(tracked::constructed == 1);
}

TEST_CASE("two actors of one class have different ids and separate state") {
  runtime_guard rt;
  tracked::reset_counters();
  auto a = weft::remote<tracked>().remote();
  auto b = weft::remote<tracked>().remote();
  CHECK_FALSE(a == b);
  CHECK(a.id() != b.id());
  weft::get(a.task(&tracked::add).remote(7), bound);
  CHECK(weft::get(b.task(&tracked::get_value).remote(), bound) == 0);
}

TEST_CASE("dropping the last handle runs the destructor and ends the actor") {
  runtime_guard rt;
  tracked::reset_counters();
  {
    auto h = weft::remote<tracked>().remote();
    CHECK(weft::get(h.task(&tracked::add).remote(4), bound) == 4);
    CHECK(tracked::destroyed == 0);
  }
  CHECK(eventually([] { return tracked::destroyed == 1; }));
  CHECK(tracked::value_at_destruction == 4);
}

TEST_CASE("dropping one copy while another remains keeps the actor and its state") {
  runtime_guard rt;
  tracked::reset_counters();
  auto h = weft::remote<tracked>().remote();
  {
    auto copy = h;
    weft::get(copy.task(&tracked::add).remote(1), bound);
  }
  // The remaining handle still reaches the same, living instance.
  CHECK(weft::get(h.task(&tracked::add).remote(1), bound) == 2);
  CHECK(tracked::destroyed == 0);
  CHECK(tracked::constructed == 1);
}

TEST_CASE("calls queued when the last handle goes finish before the destructor runs") {
  runtime_guard rt;
  weft_test::open_gate_at_exit gate;
  tracked::reset_counters();
  g_entered = false;
  std::vector<weft::object_ref<int>> refs;
  {
    auto h = weft::remote<tracked>().remote();
    refs.push_back(h.task(&tracked::add_after_gate).remote(100)); // in flight, blocked on the gate
    REQUIRE(eventually([] { return g_entered.load(); }));
    for (int i = 1; i <= 5; ++i)
      refs.push_back(h.task(&tracked::add).remote(i)); // queued behind it
  }                                                    // the test's only handle is gone; the calls still hold the actor
  CHECK(tracked::destroyed == 0);                      // the first call is still blocked at the gate
  CHECK_FALSE(refs.front().is_ready());
  weft_test::gate_open = true;
  CHECK(weft::get(refs, bound) == std::vector<int>{100, 101, 103, 106, 110, 115});
  CHECK(eventually([] { return tracked::destroyed == 1; }));
  CHECK(tracked::value_at_destruction == 115); // every queued call ran first
}

TEST_CASE("a handle passed to a pending task keeps the actor alive until that task finishes") {
  runtime_guard rt;
  weft_test::open_gate_at_exit gate;
  tracked::reset_counters();
  weft::object_ref<int> result;
  {
    auto h = weft::remote<tracked>().remote();
    weft::get(h.task(&tracked::add).remote(10), bound);
    auto later = weft::remote(gate_value).remote(5); // not ready until the gate opens
    result = weft::remote(add_through).remote(h, later);
  } // only the pending task holds the actor now
  CHECK(tracked::destroyed == 0);
  CHECK_FALSE(result.is_ready());
  weft_test::gate_open = true;
  // The task reaches the same instance, state intact.
  CHECK(weft::get(result, bound) == 15);
  // Once the task is done nothing holds the actor (the result ref does not).
  CHECK(eventually([] { return tracked::destroyed == 1; }));
  CHECK(tracked::value_at_destruction == 15);
}

TEST_CASE("a handle passed to an actor method reaches the same actor") {
  runtime_guard rt;
  tracked::reset_counters();
  auto t = weft::remote<tracked>().remote();
  auto user = weft::remote<holder>().remote();
  CHECK(weft::get(user.task(&holder::poke).remote(t, 3), bound) == 3);
  CHECK(weft::get(t.task(&tracked::get_value).remote(), bound) == 3);
  CHECK(tracked::constructed == 1);
}

TEST_CASE("a handle kept in another actor's state keeps the actor alive until that actor ends") {
  runtime_guard rt;
  tracked::reset_counters();
  auto user = weft::remote<holder>().remote();
  {
    auto t = weft::remote<tracked>().remote();
    weft::get(user.task(&holder::keep).remote(t), bound);
  }
  // The test's handle is gone; the holder's copy keeps the actor.
  CHECK(weft::get(user.task(&holder::poke_kept).remote(2), bound) == 2);
  CHECK(weft::get(user.task(&holder::poke_kept).remote(2), bound) == 4);
  CHECK(tracked::destroyed == 0);
  user = {}; // the holder ends, dropping the last handle of the tracked actor
  CHECK(eventually([] { return tracked::destroyed == 1; }));
  CHECK(tracked::value_at_destruction == 4);
}

TEST_CASE("a handle returned by an actor method is a working handle") {
  runtime_guard rt;
  tracked::reset_counters();
  auto user = weft::remote<holder>().remote();
  auto t = weft::remote<tracked>().remote();
  weft::get(user.task(&holder::keep).remote(t), bound);
  weft::actor_handle<tracked> back = weft::get(user.task(&holder::give_back).remote(), bound);
  CHECK(back == t);
  CHECK(weft::get(back.task(&tracked::add).remote(9), bound) == 9);
}

TEST_CASE("a handle returned as a task result keeps the actor alive and the last copy ends it") {
  runtime_guard rt;
  tracked::reset_counters();
  {
    auto ref = weft::remote(make_tracked).remote(6);
    weft::actor_handle<tracked> h = weft::get(ref, bound);
    REQUIRE(h.valid());
    // The task has ended; its handle was handed on through the result.
    CHECK(weft::get(h.task(&tracked::add).remote(1), bound) == 7);
    ref = {}; // the stored result's copy goes; h still holds the actor
    CHECK(weft::get(h.task(&tracked::add).remote(1), bound) == 8);
    CHECK(tracked::destroyed == 0);
  }
  CHECK(eventually([] { return tracked::destroyed == 1; }));
  CHECK(tracked::value_at_destruction == 8);
}

TEST_CASE("a detached actor outlives its handles and ends at kill") {
  runtime_guard rt;
  tracked::reset_counters();
  {
    auto h =
      weft::remote<tracked>().options({.name = "lifetime-detached", .lifetime = weft::lifetime::detached}).remote();
    weft::get(h.task(&tracked::add).remote(5), bound);
  }
  // No handle is left, yet the actor is still there, with its state.
  auto again = weft::get_actor<tracked>("lifetime-detached");
  REQUIRE(again.has_value());
  CHECK(weft::get(again->task(&tracked::add).remote(1), bound) == 6);
  CHECK(tracked::destroyed == 0);
  again.reset();
  auto third = weft::get_actor<tracked>("lifetime-detached");
  REQUIRE(third.has_value());
  CHECK(weft::get(third->task(&tracked::get_value).remote(), bound) == 6);
  weft::kill(*third);
  CHECK(eventually([] { return tracked::destroyed == 1; }));
}

TEST_CASE("shutdown ends every actor and runs every destructor") {
  runtime_guard rt;
  weft_test::open_gate_at_exit gate;
  tracked::reset_counters();
  g_entered = false;
  auto owned = weft::remote<tracked>().remote();
  {
    auto detached = weft::remote<tracked>().options({.lifetime = weft::lifetime::detached}).remote();
    weft::get(detached.task(&tracked::add).remote(1), bound);
  }
  auto busy = weft::remote<tracked>().remote();
  auto blocked = busy.task(&tracked::add_after_gate).remote(1);
  REQUIRE(eventually([] { return g_entered.load(); }));
  weft::get(owned.task(&tracked::add).remote(1), bound);
  CHECK(tracked::constructed == 3);
  weft::shutdown();
  // shutdown() waits for the actors: the destructors have run when it returns.
  CHECK(tracked::destroyed == 3);
  // The handles are still C++ values; the blocked call did not hang.
  CHECK(blocked.is_ready());
  CHECK(owned.valid());
}

TEST_CASE("handles outliving the runtime can be copied and dropped, and calls through them fail cleanly") {
  tracked::reset_counters();
  weft::actor_handle<tracked> h;
  {
    runtime_guard rt;
    h = weft::remote<tracked>().remote();
    weft::get(h.task(&tracked::add).remote(1), bound);
  }
  CHECK(tracked::destroyed == 1);
  auto copy = h;
  CHECK(copy == h);
  CHECK_THAT(what_of<weft::not_initialized_error>([&] { h.task(&tracked::add).remote(1); }),
             Catch::Contains("not initialized"));
  copy = {};
  h = {};
}

TEST_CASE("init on one thread and actors made on another then shutdown from a third returns") {
  // CAF 0.17 keeps a reference to its logger in every thread that spawned an
  // actor; ~actor_system waited for the threads below forever before weft
  // cleared it after each spawn.
  tracked::reset_counters();
  std::thread([] { weft::init({.num_cpus = 2}); }).join();
  std::thread([] {
    auto h = weft::remote<tracked>().options({.lifetime = weft::lifetime::detached}).remote();
    weft::get(h.task(&tracked::add).remote(1), bound);
  }).join();
  auto h = weft::remote<tracked>().remote();
  weft::get(h.task(&tracked::add).remote(1), bound);
  {
    weft_test::watchdog dog(bound, "weft::shutdown() from a third thread");
    std::thread([] { weft::shutdown(); }).join();
  }
  CHECK_FALSE(weft::is_initialized());
  CHECK(tracked::destroyed == 2);
}
