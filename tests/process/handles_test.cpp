// actor_handles as themselves between the driver and worker processes: a
// task or actor in a worker calls an actor through a handle it was given,
// a handle a worker returns is the same handle in the driver, and a handle
// a worker holds keeps its actor alive.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "process/process_test.hpp"
#include "src/node_store.hpp"
#include "src/shm_arena.hpp"
#include "weft_test.hpp"
#include <weft/weft.hpp>

using Catch::Matchers::Contains;
using process_test::processes;
using weft_test::bound;
using weft_test::eventually;

namespace {

struct journal {
  std::vector<int> entries;
  int add(int x) {
    entries.push_back(x);
    return static_cast<int>(entries.size());
  }
  std::vector<int> all() const { return entries; }
  int fail(int) { throw std::domain_error("journal refused"); }
  int read(weft::object_ref<int> r) { return weft::get(r) + 1000; }
  int pid() const { return static_cast<int>(::getpid()); }
};

/// Adds 1..n to the journal through its handle, from a worker; returns the
/// journal's size after each call, in order.
std::vector<int> fill(weft::actor_handle<journal> j, int n) {
  std::vector<weft::object_ref<int>> sizes;
  for (int i = 1; i <= n; ++i)
    sizes.push_back(j.task(&journal::add).remote(i));
  return weft::get(sizes);
}

weft::actor_handle<journal> hand_back(weft::actor_handle<journal> j) { return j; }

std::string call_failing(weft::actor_handle<journal> j) {
  try {
    weft::get(j.task(&journal::fail).remote(1));
    return "no error";
  } catch (const weft::task_error& e) {
    return e.type_name() + ": " + e.message();
  }
}

std::string kill_from_worker(weft::actor_handle<journal> j) {
  try {
    weft::kill(j);
    return "killed";
  } catch (const weft::not_initialized_error& e) {
    return e.what();
  }
}

std::string call_dead(weft::actor_handle<journal> j) {
  try {
    weft::get(j.task(&journal::add).remote(1));
    return "no error";
  } catch (const weft::actor_died_error& e) {
    return std::string("actor_died_error: ") + e.what();
  }
}

int pass_ref(weft::actor_handle<journal> j, weft::object_ref<int> r) {
  return weft::get(j.task(&journal::read).remote(r));
}

/// An actor (in a worker of its own) that keeps a handle to another actor.
struct relay {
  weft::actor_handle<journal> target;
  void hold(weft::actor_handle<journal> j) { target = std::move(j); }
  int forward(int x) { return weft::get(target.task(&journal::add).remote(x)); }
  void drop() { target = {}; }
};

} // namespace

TEST_CASE("a task in a worker calls an actor through a handle it was given") {
  weft_test::runtime_guard rt(processes);
  auto j = weft::remote<journal>().remote();
  const auto sizes = weft::get(weft::remote(fill).remote(j, 50), bound);
  REQUIRE(sizes.size() == 50);
  for (int i = 0; i < 50; ++i)
    CHECK(sizes[i] == i + 1); // the calls ran in the order the worker made them
  std::vector<int> expected(50);
  for (int i = 0; i < 50; ++i)
    expected[i] = i + 1;
  CHECK(weft::get(j.task(&journal::all).remote(), bound) == expected);
}

TEST_CASE("a handle a worker returns is the same handle in the driver") {
  weft_test::runtime_guard rt(processes);
  auto j = weft::remote<journal>().remote();
  auto back = weft::get(weft::remote(hand_back).remote(j), bound);
  CHECK(back.valid());
  CHECK(back == j);
  CHECK(back.id() == j.id());
  CHECK(weft::get(back.task(&journal::add).remote(7), bound) == 1);
  CHECK(weft::get(j.task(&journal::all).remote(), bound) == std::vector<int>{7});
}

TEST_CASE("an actor method's exception reaches the worker that called it") {
  weft_test::runtime_guard rt(processes);
  auto j = weft::remote<journal>().remote();
  CHECK(weft::get(weft::remote(call_failing).remote(j), bound) == "std::domain_error: journal refused");
}

TEST_CASE("a call from a worker on a dead actor fails with actor_died_error there") {
  weft_test::runtime_guard rt(processes);
  auto j = weft::remote<journal>().remote();
  weft::get(j.task(&journal::add).remote(0), bound);
  weft::kill(j);
  CHECK_THAT(weft::get(weft::remote(call_dead).remote(j), bound), Contains("actor_died_error"));
}

TEST_CASE("kill from a worker kills the actor after the calls made before it") {
  weft_test::runtime_guard rt(processes);
  auto j = weft::remote<journal>().remote();
  CHECK(weft::get(weft::remote(kill_from_worker).remote(j), bound) == "killed");
  CHECK_THAT(weft_test::died_what(j.task(&journal::add).remote(1)), Contains("kill"));
}

TEST_CASE("a kill a worker made has taken effect when its task's result is read") {
  // The kill goes out before the result: once the driver has the result,
  // the actor is gone, without a wait.
  weft_test::runtime_guard rt(processes);
  for (int i = 0; i < 20; ++i) {
    const auto name = "doomed-" + std::to_string(i);
    auto j = weft::remote<journal>({.name = name}).remote();
    REQUIRE(weft::get(j.task(&journal::add).remote(1), bound) == 1);
    REQUIRE(weft::get(weft::remote(kill_from_worker).remote(j), bound) == "killed");
    CHECK_FALSE(weft::get_actor<journal>(name).has_value());
  }
}

TEST_CASE("a worker passes a ref on to an actor it calls") {
  weft_test::runtime_guard rt(processes);
  auto j = weft::remote<journal>().remote();
  CHECK(weft::get(weft::remote(pass_ref).remote(j, weft::put(5)), bound) == 1005);
}

TEST_CASE("an actor in a worker calls another actor through a handle it keeps") {
  weft_test::runtime_guard rt(processes);
  auto j = weft::remote<journal>().remote();
  auto r = weft::remote<relay>().remote();
  weft::get(r.task(&relay::hold).remote(j), bound);
  for (int i = 1; i <= 10; ++i)
    CHECK(weft::get(r.task(&relay::forward).remote(i * 10), bound) == i);
  CHECK(weft::get(j.task(&journal::all).remote(), bound).back() == 100);
}

namespace {
/// A relay whose worker holds the only handle of a journal; `ended` turns
/// true when the journal ends normally.
weft::actor_handle<relay> relay_holding_a_journal(std::atomic<bool>& ended) {
  auto r = weft::remote<relay>().remote();
  auto j = weft::remote<journal>().remote();
  weft::monitor(j, [&ended](const weft::actor_exit& e) {
    if (e.normal)
      ended = true;
  });
  weft::get(r.task(&relay::hold).remote(j), bound);
  return r; // the driver's handle of the journal goes here
}
} // namespace

TEST_CASE("a handle a worker holds keeps the actor alive until it lets go") {
  weft_test::runtime_guard rt(processes);
  std::atomic<bool> ended{false};
  auto r = relay_holding_a_journal(ended);
  CHECK(weft::get(r.task(&relay::forward).remote(3), bound) == 1);
  CHECK_FALSE(ended.load());
  weft::get(r.task(&relay::drop).remote(), bound);
  CHECK(eventually([&] { return ended.load(); })); // the last handle was the worker's
}

TEST_CASE("a handle held by a killed worker lets its actor end") {
  weft_test::runtime_guard rt(processes);
  std::atomic<bool> ended{false};
  auto r = relay_holding_a_journal(ended);
  CHECK_FALSE(ended.load());
  weft::kill(r); // SIGKILL of the relay's worker: what it held is given back
  CHECK(eventually([&] { return ended.load(); }));
}

TEST_CASE("an actor_handle cannot be written with to_bytes") {
  weft_test::runtime_guard rt;
  auto j = weft::remote<journal>().remote();
  CHECK_THROWS_WITH(weft::to_bytes(j), Contains("only inside weft's own messages"));
}

namespace {

/// An actor whose method takes a handle of its own class.
struct self_aware {
  int calls = 0;
  int take(weft::actor_handle<self_aware> me) { return me.valid() ? ++calls : -1; }
};

/// Calls `h` with `h` itself as the argument, from a worker.
int pass_own_handle(weft::actor_handle<self_aware> h) { return weft::get(h.task(&self_aware::take).remote(h)); }

/// Exits its worker process on the first call (the marker file says which
/// call is the first); counts the calls after.
struct crash_once {
  int n = 0;
  int step(std::string marker) {
    if (::access(marker.c_str(), F_OK) != 0) {
      process_test::append_line(marker, "crashed");
      ::_exit(3);
    }
    return ++n;
  }
};

int call_crash_once(weft::actor_handle<crash_once> h, std::string marker) {
  return weft::get(h.task(&crash_once::step).remote(marker));
}

int call_journal(weft::actor_handle<journal> j, int x) { return weft::get(j.task(&journal::add).remote(x)); }

} // namespace

TEST_CASE("a worker passes a handle as the argument of a call through that same handle") {
  weft_test::runtime_guard rt(processes);
  auto h = weft::remote<self_aware>().remote();
  CHECK(weft::get(weft::remote(pass_own_handle).remote(h), bound) == 1);
}

TEST_CASE("a call from a worker is retried on the restarted actor with max_task_retries") {
  weft_test::runtime_guard rt(processes);
  process_test::temp_dir dir;
  auto h = weft::remote<crash_once>({.max_restarts = 1, .max_task_retries = 1}).remote();
  CHECK(weft::get(weft::remote(call_crash_once).remote(h, dir.file("marker")), bound) == 1);
  CHECK(process_test::lines_of(dir.file("marker")).size() == 1);
}

TEST_CASE("the cells that carry handles to workers are freed once the tasks are done") {
  weft_test::runtime_guard rt(processes);
  auto j = weft::remote<journal>().remote();
  weft::get(j.task(&journal::add).remote(0), bound);
  const auto before = weft::live_objects();
  {
    std::vector<weft::object_ref<int>> sizes;
    for (int i = 1; i <= 20; ++i)
      sizes.push_back(weft::remote(call_journal).remote(j, i));
    weft::get(sizes, bound);
  }
  // (<=: a cell of the first call may still have been on its way out.)
  CHECK(eventually([&] { return weft::live_objects() <= before; }));
}

namespace {

/// Makes a big array (it lives in the shared store) after a while.
struct slow_maker {
  weft::array<double> make(std::string marker) {
    process_test::append_line(marker, "started");
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    return weft::array<double>::build(std::size_t{1} << 19,
                                      [](std::span<double> out) { std::fill(out.begin(), out.end(), 1.5); });
  }
};

int call_slow_maker(weft::actor_handle<slow_maker> h, std::string marker) {
  return static_cast<int>(weft::get(h.task(&slow_maker::make).remote(marker)).size());
}

} // namespace

TEST_CASE("an actor's result for a worker that died meanwhile gives its store references back") {
  weft_test::runtime_guard rt(processes);
  process_test::temp_dir dir;
  const auto marker = dir.file("started");
  auto h = weft::remote<slow_maker>().remote();
  auto r = weft::remote(call_slow_maker, {.max_retries = 0}).remote(h, marker);
  REQUIRE(eventually([&] { return process_test::lines_of(marker).size() == 1; }));
  weft::cancel(r, {.force = true}); // kills the calling worker while the actor computes
  CHECK_THROWS_AS(weft::get(r, bound), weft::task_cancelled_error);
  // The actor's reply (a 4 MiB array in the store) reaches the driver after
  // its caller is gone. A second call runs after it on the actor: once its
  // result is here, so is the first one's, and nothing may keep that array.
  {
    const auto second = weft::get(h.task(&slow_maker::make).remote(marker), bound);
    CHECK(second.size() == std::size_t{1} << 19);
  }
  CHECK(eventually([] { return weft::detail::node_store()->bytes_in_use() == 0; }));
}
