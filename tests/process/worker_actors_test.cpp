// Actors created inside worker processes: a task creates an actor (the
// driver creates it, in a worker of its own), calls it, passes the handle
// back, monitors it; names, options, errors and lifetimes behave as in the
// driver.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "process/process_test.hpp"
#include "src/process_node.hpp"
#include "weft_test.hpp"
#include <weft/weft.hpp>

using Catch::Matchers::Contains;
using process_test::processes;
using weft_test::bound;
using weft_test::eventually;

namespace {

struct tally {
  int total = 0;
  explicit tally(int start) : total(start) {}
  int add(int x) { return total += x; }
  int pid() const { return static_cast<int>(::getpid()); }
};

struct boxed {
  weft::object_ref<int> r;
  explicit boxed(weft::object_ref<int> ref) : r(std::move(ref)) {}
  int read() const { return weft::get(r); }
};

struct other {
  int f() { return 0; }
};

/// Creates a tally starting at 100, adds 1..3, and returns the sums, the
/// tally's pid and this task's pid.
std::vector<int> make_and_use(int) {
  auto t = weft::remote<tally>().remote(100);
  std::vector<int> out;
  for (int i = 1; i <= 3; ++i)
    out.push_back(weft::get(t.task(&tally::add).remote(i)));
  out.push_back(weft::get(t.task(&tally::pid).remote()));
  out.push_back(static_cast<int>(::getpid()));
  return out;
}

weft::actor_handle<tally> make_tally(int start) { return weft::remote<tally>().remote(start); }

std::string make_named(std::string name, bool detached) {
  try {
    weft::actor_options o{.name = name};
    if (detached)
      o.lifetime = weft::lifetime::detached;
    auto t = weft::remote<tally>(o).remote(7);
    return "created " + std::to_string(weft::get(t.task(&tally::add).remote(0)));
  } catch (const weft::invalid_argument_error& e) {
    return std::string("invalid_argument_error: ") + e.what();
  }
}

int make_with_ref(int x) {
  auto b = weft::remote<boxed>().remote(weft::put(x));
  return weft::get(b.task(&boxed::read).remote());
}

/// Creates a named tally, uses it, then sleeps (its worker is killed).
int make_named_and_hang(std::string name) {
  auto t = weft::remote<tally>({.name = name}).remote(1);
  weft::get(t.task(&tally::add).remote(0));
  std::this_thread::sleep_for(std::chrono::seconds(60));
  return 0;
}

std::string start_supervisor(int) {
  try {
    weft::supervisor::start({}, {weft::worker_spec<tally>("t", 1)});
    return "started";
  } catch (const weft::error& e) {
    return e.what();
  }
}

/// An actor (in a worker of its own) that makes a tally of its own.
struct maker {
  weft::actor_handle<tally> made;
  int make(int start) {
    made = weft::remote<tally>().remote(start);
    return weft::get(made.task(&tally::add).remote(1));
  }
  weft::actor_handle<tally> handle() const { return made; }
};

/// get_actor in a worker: the tally's sum after adding `x`, -1 if there
/// is no such actor, or the error's message.
std::string look_up(std::string name, int x) {
  try {
    auto t = weft::get_actor<tally>(name);
    if (!t)
      return "none";
    return std::to_string(weft::get(t->task(&tally::add).remote(x)));
  } catch (const weft::error& e) {
    return e.what();
  }
}

std::string look_up_as_other(std::string name) {
  try {
    return weft::get_actor<other>(name) ? "found" : "none";
  } catch (const weft::invalid_argument_error& e) {
    return std::string("invalid_argument_error: ") + e.what();
  }
}

/// What the monitors of this process saw, in order (in a watcher's worker).
std::mutex g_seen_mtx;
std::vector<std::string> g_seen;

std::string describe(const weft::actor_exit& e) {
  return weft::to_string(e.id) + (e.normal ? " normal: " : " abnormal: ") + e.cause;
}

void record_exit(const weft::actor_exit& e) {
  std::lock_guard<std::mutex> lock(g_seen_mtx);
  g_seen.push_back(describe(e));
}

std::vector<std::string> seen_here() {
  std::lock_guard<std::mutex> lock(g_seen_mtx);
  return g_seen;
}

/// An actor (in a worker of its own) that monitors other actors.
struct watcher {
  /// Monitors `t`; returns what its monitors saw by the time monitor()
  /// returned.
  std::vector<std::string> watch(weft::actor_handle<tally> t) {
    weft::monitor(t, record_exit);
    return seen_here();
  }
  std::vector<std::string> seen() const { return seen_here(); }
  int pid() const { return static_cast<int>(::getpid()); }
};

/// A task that monitors `t`: what its monitor saw when monitor() returned.
std::vector<std::string> watch_in_task(weft::actor_handle<tally> t) {
  weft::monitor(t, record_exit);
  return seen_here();
}

std::vector<std::string> seen_by(const weft::actor_handle<watcher>& w) {
  return weft::get(w.task(&watcher::seen).remote(), bound);
}

/// Kills `t` from the driver and waits until it is dead for good; returns
/// what the driver's own monitor saw.
std::string kill_and_wait(const weft::actor_handle<tally>& t) {
  auto saw = std::make_shared<std::string>();
  auto done = std::make_shared<std::atomic<bool>>(false);
  weft::monitor(t, [saw, done](const weft::actor_exit& e) {
    *saw = describe(e);
    *done = true;
  });
  weft::kill(t);
  REQUIRE(eventually([&] { return done->load(); }));
  return *saw;
}

} // namespace

TEST_CASE("an actor method in a worker creates an actor it keeps") {
  weft_test::runtime_guard rt(processes);
  auto m = weft::remote<maker>().remote();
  CHECK(weft::get(m.task(&maker::make).remote(10), bound) == 11);
  auto t = weft::get(m.task(&maker::handle).remote(), bound);
  CHECK(weft::get(t.task(&tally::add).remote(5), bound) == 16);
}

TEST_CASE("get_actor inside a worker finds a named actor of the driver") {
  weft_test::runtime_guard rt(processes);
  auto mine = weft::remote<tally>({.name = "shared"}).remote(100);
  CHECK(weft::get(weft::remote(look_up).remote(std::string("shared"), 5), bound) == "105");
  CHECK(weft::get(mine.task(&tally::add).remote(1), bound) == 106); // the same actor
  CHECK(weft::get(weft::remote(look_up).remote(std::string("nobody"), 1), bound) == "none");
  CHECK_THAT(weft::get(weft::remote(look_up_as_other).remote(std::string("shared")), bound),
             Contains("invalid_argument_error"));
}

TEST_CASE("a task in a worker creates an actor and calls it") {
  weft_test::runtime_guard rt(processes);
  const auto r = weft::get(weft::remote(make_and_use).remote(0), bound);
  REQUIRE(r.size() == 5);
  CHECK(r[0] == 101);
  CHECK(r[1] == 103);
  CHECK(r[2] == 106);
  CHECK(r[3] != r[4]);                         // the actor has a worker of its own
  CHECK(r[3] != static_cast<int>(::getpid())); // not the driver either
}

TEST_CASE("an actor created in a worker is returned to the driver and called there") {
  weft_test::runtime_guard rt(processes);
  auto t = weft::get(weft::remote(make_tally).remote(40), bound);
  REQUIRE(t.valid());
  CHECK(weft::get(t.task(&tally::add).remote(2), bound) == 42);
  CHECK(weft::get(t.task(&tally::add).remote(8), bound) == 50);
}

TEST_CASE("a named actor created in a worker is found by get_actor in the driver") {
  weft_test::runtime_guard rt(processes);
  CHECK(weft::get(weft::remote(make_named).remote(std::string("from-worker"), true), bound) == "created 7");
  auto found = weft::get_actor<tally>("from-worker");
  REQUIRE(found);
  CHECK(weft::get(found->task(&tally::add).remote(3), bound) == 10);
  // The class crossed as itself: another type is refused.
  CHECK_THROWS_AS(weft::get_actor<other>("from-worker"), weft::invalid_argument_error);
}

TEST_CASE("creating an actor in a worker with a name already taken fails there") {
  weft_test::runtime_guard rt(processes);
  auto mine = weft::remote<tally>({.name = "taken"}).remote(1);
  weft::get(mine.task(&tally::add).remote(0), bound);
  const auto what = weft::get(weft::remote(make_named).remote(std::string("taken"), false), bound);
  CHECK_THAT(what, Contains("invalid_argument_error"));
  CHECK_THAT(what, Contains("taken"));
}

TEST_CASE("an actor created in a worker takes an object_ref made there") {
  weft_test::runtime_guard rt(processes);
  CHECK(weft::get(weft::remote(make_with_ref).remote(17), bound) == 17);
}

TEST_CASE("an owned actor created in a worker ends when the task lets go of it") {
  weft_test::runtime_guard rt(processes);
  CHECK(weft::get(weft::remote(make_named).remote(std::string("owned"), false), bound) == "created 7");
  // The task's handle was the only one: the actor ends (and its name is free).
  CHECK(eventually([] { return !weft::get_actor<tally>("owned").has_value(); }));
}

TEST_CASE("a detached actor created in a worker outlives the task") {
  weft_test::runtime_guard rt(processes);
  CHECK(weft::get(weft::remote(make_named).remote(std::string("kept"), true), bound) == "created 7");
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto found = weft::get_actor<tally>("kept");
  REQUIRE(found);
  CHECK(weft::get(found->task(&tally::add).remote(1), bound) == 8);
  weft::kill(*found);
}

TEST_CASE("an owned actor created in a worker ends when that worker is killed") {
  weft_test::runtime_guard rt(processes);
  auto task = weft::remote(make_named_and_hang, {.max_retries = 0}).remote(std::string("fate"));
  std::optional<weft::actor_handle<tally>> found;
  REQUIRE(eventually([&] { return (found = weft::get_actor<tally>("fate")).has_value(); }));
  std::atomic<bool> ended{false};
  weft::monitor(*found, [&ended](const weft::actor_exit&) { ended = true; });
  found.reset(); // only the hanging task's worker holds it now: it lives on
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  CHECK_FALSE(ended.load());
  weft::cancel(task, {.force = true}); // SIGKILL of that worker: what it held goes back
  CHECK(eventually([&] { return ended.load(); }));
}

TEST_CASE("a supervisor cannot be started in a worker and the error says why") {
  weft_test::runtime_guard rt(processes);
  CHECK_THAT(weft::get(weft::remote(start_supervisor).remote(0), bound),
             Contains("weft::supervisor::start") && Contains("worker process") && Contains("start functions"));
}

TEST_CASE("monitor in a worker runs its callback there when the driver kills the actor") {
  weft_test::runtime_guard rt(processes);
  auto t = weft::remote<tally>().remote(1);
  auto w = weft::remote<watcher>().remote();
  CHECK(weft::get(w.task(&watcher::watch).remote(t), bound).empty());
  CHECK(weft::detail::worker_monitors_registered() == 1);
  CHECK(seen_by(w).empty());
  const std::string driver_saw = kill_and_wait(t);
  CHECK_THAT(driver_saw, Contains("abnormal: killed by kill()"));
  REQUIRE(eventually([&] { return !seen_by(w).empty(); }));
  CHECK(seen_by(w) == std::vector<std::string>{driver_saw}); // the same actor_exit, once
  CHECK(eventually([] { return weft::detail::worker_monitors_registered() == 0; }));
}

TEST_CASE("monitor in a worker fires when the actor's process is killed and no restarts are left") {
  process_test::let_signals_through();
  weft_test::runtime_guard rt(processes);
  auto t = weft::remote<tally>({.max_restarts = 1}).remote(1);
  auto w = weft::remote<watcher>().remote();
  CHECK(weft::get(w.task(&watcher::watch).remote(t), bound).empty());
  const int first = weft::get(t.task(&tally::pid).remote(), bound);
  ::kill(first, SIGKILL);
  // A restart does not count: the monitor waits on.
  int second = first;
  REQUIRE(eventually([&] {
    try {
      second = weft::get(t.task(&tally::pid).remote(), bound);
    } catch (const weft::actor_died_error&) {
    }
    return second != first;
  }));
  CHECK(seen_by(w).empty());
  ::kill(second, SIGKILL);
  REQUIRE(eventually([&] { return !seen_by(w).empty(); }));
  const auto seen = seen_by(w);
  REQUIRE(seen.size() == 1);
  CHECK_THAT(seen[0], Contains(weft::to_string(t.id()) + " abnormal: "));
  CHECK_THAT(seen[0], Contains("SIGKILL"));
}

TEST_CASE("monitor in a worker of an actor that is already dead fires before it returns") {
  weft_test::runtime_guard rt(processes);
  auto t = weft::remote<tally>().remote(1);
  weft::get(t.task(&tally::add).remote(0), bound);
  const std::string driver_saw = kill_and_wait(t);
  auto w = weft::remote<watcher>().remote();
  CHECK(weft::get(w.task(&watcher::watch).remote(t), bound) == std::vector<std::string>{driver_saw});
  CHECK(weft::get(weft::remote(watch_in_task).remote(t), bound) == std::vector<std::string>{driver_saw});
  CHECK(weft::detail::worker_monitors_registered() == 0);
}

TEST_CASE("a worker that monitored an actor and died leaves no monitor behind") {
  process_test::let_signals_through();
  weft_test::runtime_guard rt(processes);
  auto t = weft::remote<tally>().remote(1);
  auto w = weft::remote<watcher>().remote();
  CHECK(weft::get(w.task(&watcher::watch).remote(t), bound).empty());
  CHECK(weft::detail::worker_monitors_registered() == 1);
  const int pid = weft::get(w.task(&watcher::pid).remote(), bound);
  ::kill(pid, SIGKILL);
  CHECK(eventually([] { return weft::detail::worker_monitors_registered() == 0; }));
  // The actor is untouched; its end tells the driver's monitors and no one else.
  CHECK(weft::get(t.task(&tally::add).remote(1), bound) == 2);
  CHECK_THAT(kill_and_wait(t), Contains("killed by kill()"));
  CHECK(weft::get(weft::remote(make_and_use).remote(0), bound).size() == 5); // the node goes on
}
