// weft::queue with worker processes: the queue's actor stays in the
// driver, and tasks and actors in workers put and get through it (Ray's
// ray.util.queue.Queue passed to tasks).
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <catch2/catch.hpp>

#include "process/process_test.hpp"
#include "weft_test.hpp"
#include <weft/weft.hpp>

using Catch::Matchers::Contains;
using process_test::processes;
using weft_test::bound;
using weft_test::eventually;
using namespace std::chrono_literals;

namespace {

/// Puts 0..n-1, then returns this worker's pid.
int produce(weft::queue<int> q, int n) {
  for (int i = 0; i < n; ++i)
    q.put(i);
  return static_cast<int>(::getpid());
}

/// Takes n items; the last element is this worker's pid.
std::vector<int> consume(weft::queue<int> q, int n) {
  std::vector<int> out;
  for (int i = 0; i < n; ++i)
    out.push_back(q.get());
  out.push_back(static_cast<int>(::getpid()));
  return out;
}

int take_one(weft::queue<int> q) { return q.get(); }

int noop(int x) { return x; }

/// What a get with a timeout, a get_nowait and a put_nowait on a full
/// queue throw in a worker (the queue is empty and holds at most one).
std::vector<std::string> refusals(weft::queue<int> q) {
  std::vector<std::string> out;
  auto record = [&out](auto&& f) {
    try {
      f();
      out.push_back("no exception");
    } catch (const weft::queue_empty_error& e) {
      out.push_back(std::string("queue_empty_error: ") + e.what());
    } catch (const weft::queue_full_error& e) {
      out.push_back(std::string("queue_full_error: ") + e.what());
    }
  };
  record([&] { q.get(true, 100ms); });
  record([&] { q.get_nowait(); });
  q.put(1);
  record([&] { q.put_nowait(2); });
  record([&] { q.put(3, true, 50ms); });
  out.push_back(std::to_string(q.get_nowait()));
  return out;
}

weft::queue<std::string> make_queue(int maxsize) {
  weft::queue<std::string> q(static_cast<std::size_t>(maxsize));
  q.put("made");
  q.put("in a worker");
  return q;
}

/// size, empty, full and stats as a worker sees them.
std::tuple<std::size_t, bool, bool, weft::queue_stats> look_at(weft::queue<int> q) {
  return {q.size(), q.empty(), q.full(), q.stats()};
}

/// A put that waits for room (the driver takes an item), then one more.
int put_two(weft::queue<int> q) {
  q.put(10);
  q.put(11);
  return 2;
}

int put_ref(weft::queue<weft::object_ref<int>> q, int x) {
  q.put(weft::put(x));
  return 0;
}

int read_ref(weft::queue<weft::object_ref<int>> q) { return weft::get(q.get()); }

struct no_wire {
  int v = 0;
};

std::string use_unsendable(int) {
  weft::queue<no_wire> q; // created in the driver: its constructor argument crosses
  try {
    q.put(no_wire{1});
    return "put";
  } catch (const weft::error& e) {
    return e.what();
  }
}

std::string get_unsendable(int) {
  weft::queue<no_wire> q;
  try {
    (void)q.get_nowait();
    return "got";
  } catch (const weft::error& e) {
    return e.what();
  }
}

weft::queue<int> pass_back(weft::queue<int> q) {
  q.put(7);
  return q;
}

/// A get with a timeout on an empty queue: what it throws.
std::string timed_get(weft::queue<int> q, int ms) {
  try {
    return "got " + std::to_string(q.get(true, std::chrono::milliseconds(ms)));
  } catch (const weft::queue_empty_error& e) {
    return std::string("queue_empty_error: ") + e.what();
  }
}

/// Says which worker it runs in (on `pids`), then waits in get.
int pid_then_get(weft::queue<int> q, weft::queue<int> pids) {
  pids.put(static_cast<int>(::getpid()));
  return q.get();
}

/// Says which worker it runs in, then waits in a put on a full queue.
int pid_then_put(weft::queue<int> q, weft::queue<int> pids, int x) {
  pids.put(static_cast<int>(::getpid()));
  q.put(x);
  return x;
}

/// An actor in a worker that feeds a queue it is given.
struct feeder {
  int feed(weft::queue<int> q, int from, int n) {
    for (int i = 0; i < n; ++i)
      q.put(from + i);
    return n;
  }
};

} // namespace

TEST_CASE("a producer task and a consumer task in two workers pass every item through one queue in order") {
  weft_test::runtime_guard rt(processes);
  weft::queue<int> q(4); // bounded: the producer waits for the consumer, so both run at once
  constexpr int n = 200;
  auto consumer = weft::remote(consume).remote(q, n);
  auto producer = weft::remote(produce).remote(q, n);
  const auto got = weft::get(consumer, bound);
  const int producer_pid = weft::get(producer, bound);
  REQUIRE(got.size() == n + 1);
  for (int i = 0; i < n; ++i)
    REQUIRE(got[i] == i);
  CHECK(got[n] != producer_pid);
  CHECK(got[n] != static_cast<int>(::getpid()));
  CHECK(q.size() == 0);
}

TEST_CASE("a consumer in a worker waits in get until the driver puts") {
  weft_test::runtime_guard rt(processes);
  weft::queue<int> q;
  auto r = weft::remote(take_one).remote(q);
  REQUIRE(eventually([&] { return q.stats().waiting_getters == 1; }));
  std::this_thread::sleep_for(100ms);
  CHECK_FALSE(r.is_ready());
  q.put(42);
  CHECK(weft::get(r, bound) == 42);
  CHECK(q.stats().waiting_getters == 0);
}

TEST_CASE("a get waiting in a worker lends its CPU to the task that puts") {
  // One CPU: the consumer holds it until it waits in get; the producer
  // can only run because the waiting consumer lends it.
  weft_test::runtime_guard rt({.num_cpus = 1, .workers = weft::worker_mode::processes});
  weft::queue<int> q;
  auto consumer = weft::remote(consume).remote(q, 3);
  REQUIRE(eventually([&] { return q.stats().waiting_getters == 1; }));
  auto producer = weft::remote(produce).remote(q, 3);
  const auto got = weft::get(consumer, bound);
  REQUIRE(got.size() == 4);
  CHECK(got[0] == 0);
  CHECK(got[2] == 2);
  weft::get(producer, bound);
}

TEST_CASE("a consumer waiting in get does not hold up the short tasks sent ahead behind it in its worker") {
  // Short tasks are sent ahead to busy workers (pipelining): the producer,
  // or any task, may sit behind the consumer in its worker's line. Once the
  // consumer waits, they are taken back and run elsewhere.
  weft_test::runtime_guard rt(processes);
  for (int round = 0; round < 3; ++round) {
    weft::queue<int> q;
    std::vector<weft::object_ref<int>> around;
    for (int i = 0; i < 500; ++i)
      around.push_back(weft::remote(noop).remote(i));
    auto consumer = weft::remote(consume).remote(q, 5);
    auto producer = weft::remote(produce).remote(q, 5);
    for (int i = 0; i < 500; ++i)
      around.push_back(weft::remote(noop).remote(i));
    weft::get(around, bound);
    const auto got = weft::get(consumer, bound);
    REQUIRE(got.size() == 6);
    CHECK(got[4] == 4);
    weft::get(producer, bound);
  }
}

TEST_CASE("get with a timeout and the nowait calls in a worker throw the queue errors of the driver") {
  weft_test::runtime_guard rt(processes);
  weft::queue<int> q(1);
  const auto out = weft::get(weft::remote(refusals).remote(q), bound);
  REQUIRE(out.size() == 5);
  CHECK_THAT(out[0], Contains("queue_empty_error") && Contains("timed out after 100 ms"));
  CHECK_THAT(out[1], Contains("queue_empty_error") && Contains("get_nowait"));
  CHECK_THAT(out[2], Contains("queue_full_error") && Contains("put_nowait"));
  CHECK_THAT(out[3], Contains("queue_full_error") && Contains("timed out after 50 ms"));
  CHECK(out[4] == "1");
  // The withdrawn get and put left nothing behind: an item put now stays.
  CHECK(q.stats().waiting_getters == 0);
  CHECK(q.stats().waiting_putters == 0);
  q.put(5);
  CHECK(q.size() == 1);
  CHECK(q.get(true, bound) == 5);
}

TEST_CASE("a queue passed to a worker and back stays the one queue and starts no other actor") {
  weft_test::runtime_guard rt(processes);
  weft::queue<int> q;
  const auto first = q.actor().id();
  auto back = weft::get(weft::remote(pass_back).remote(q), bound);
  CHECK(back.actor().id() == first);
  CHECK(back.get(true, bound) == 7);
  CHECK(q.size() == 0);
  weft::queue<int> next; // actor ids count up: none was made in between
  CHECK(next.actor().id().value == first.value + 1);
}

TEST_CASE("a queue created in a worker task is returned to the driver with its items") {
  weft_test::runtime_guard rt(processes);
  auto q = weft::get(weft::remote(make_queue).remote(3), bound);
  CHECK(q.maxsize() == 3);
  CHECK(q.size() == 2);
  CHECK(q.get(true, bound) == "made");
  CHECK(q.get(true, bound) == "in a worker");
  CHECK_THROWS_AS(q.get_nowait(), weft::queue_empty_error);
}

TEST_CASE("size empty full and stats of a queue read in a worker") {
  weft_test::runtime_guard rt(processes);
  weft::queue<int> q(2);
  q.put(1);
  q.put(2);
  auto [size, empty, full, stats] = weft::get(weft::remote(look_at).remote(q), bound);
  CHECK(size == 2);
  CHECK_FALSE(empty);
  CHECK(full);
  CHECK(stats.size == 2);
  CHECK(stats.maxsize == 2);
}

TEST_CASE("a put in a worker waits for room until the driver gets") {
  weft_test::runtime_guard rt(processes);
  weft::queue<int> q(1);
  q.put(1);
  auto r = weft::remote(put_two).remote(q);
  REQUIRE(eventually([&] { return q.stats().waiting_putters == 1; }));
  CHECK(q.get(true, bound) == 1);
  CHECK(q.get(true, bound) == 10);
  CHECK(q.get(true, bound) == 11);
  CHECK(weft::get(r, bound) == 2);
}

TEST_CASE("object_refs put in a queue in a worker are read in the driver and the other way") {
  weft_test::runtime_guard rt(processes);
  weft::queue<weft::object_ref<int>> q;
  weft::get(weft::remote(put_ref).remote(q, 31), bound);
  CHECK(weft::get(q.get(true, bound), bound) == 31); // the worker's object, exported with the item
  q.put(weft::put(32));
  CHECK(weft::get(weft::remote(read_ref).remote(q), bound) == 32); // the driver's, lent to the worker
}

TEST_CASE("an actor in a worker puts into a queue it is given") {
  weft_test::runtime_guard rt(processes);
  weft::queue<int> q;
  auto f = weft::remote<feeder>().remote();
  CHECK(weft::get(f.task(&feeder::feed).remote(q, 100, 3), bound) == 3);
  CHECK(q.get(true, bound) == 100);
  CHECK(q.get(true, bound) == 101);
  CHECK(q.get(true, bound) == 102);
}

TEST_CASE("a queue of items that cannot be serialized is refused in a worker and says why") {
  weft_test::runtime_guard rt(processes);
  const auto what = weft::get(weft::remote(use_unsendable).remote(0), bound);
  CHECK_THAT(what, Contains("stays in the driver") && Contains("not serializable"));
  const auto get_what = weft::get(weft::remote(get_unsendable).remote(0), bound);
  CHECK_THAT(get_what, Contains("stays in the driver") && Contains("not serializable"));
}

TEST_CASE("a queue of items that cannot be serialized works in the driver with worker processes") {
  // (As a task's parameter it is a compile-time error: tests/compile_fail.)
  weft_test::runtime_guard rt(processes);
  weft::queue<no_wire> q(1);
  q.put(no_wire{5});
  CHECK_THROWS_AS(q.put_nowait(no_wire{6}), weft::queue_full_error);
  CHECK(q.get(true, bound).v == 5);
  CHECK_THROWS_AS(q.get_nowait(), weft::queue_empty_error);
}

TEST_CASE("a get that times out in one worker withdraws its own wait, not another worker's") {
  // Calls are told apart by a ticket each; the tickets of different
  // workers must not collide (each worker is a fresh process here, so
  // counting from 1 in each would give both the same first ticket).
  weft_test::runtime_guard rt(processes);
  weft::queue<int> q;
  auto waits = weft::remote(take_one).remote(q);
  REQUIRE(eventually([&] { return q.stats().waiting_getters == 1; }));
  CHECK_THAT(weft::get(weft::remote(timed_get).remote(q, 100), bound),
             Contains("queue_empty_error") && Contains("timed out after 100 ms"));
  CHECK(q.stats().waiting_getters == 1); // the first worker's get still waits
  q.put(9);
  CHECK(weft::get(waits, bound) == 9);
  CHECK(q.stats().waiting_getters == 0);
  CHECK(q.size() == 0);
}

TEST_CASE("a get waiting in a worker that is killed is dropped: the next item goes to a caller still there") {
  weft_test::runtime_guard rt(processes);
  weft::queue<int> q;
  weft::queue<int> pids;
  auto doomed = weft::remote(pid_then_get).options({.max_retries = 0}).remote(q, pids);
  const int pid = pids.get(true, bound);
  REQUIRE(eventually([&] { return q.stats().waiting_getters == 1; }));
  SECTION("the item goes to the next waiting getter") {
    auto survivor = weft::remote(take_one).remote(q);
    REQUIRE(eventually([&] { return q.stats().waiting_getters == 2; }));
    REQUIRE(::kill(pid, SIGKILL) == 0);
    CHECK(process_test::error_of<weft::worker_crashed_error>(doomed));
    q.put(5); // (no stats() in between: the put itself skips the dead getter)
    CHECK(weft::get(survivor, 10s) == 5);
  }
  SECTION("the item stays in the queue for a get made later") {
    REQUIRE(::kill(pid, SIGKILL) == 0);
    CHECK(process_test::error_of<weft::worker_crashed_error>(doomed));
    CHECK(q.stats().waiting_getters == 0);
    q.put(6);
    CHECK(q.size() == 1);
    CHECK(q.get(true, bound) == 6);
  }
}

TEST_CASE("a put waiting in a worker that is killed is withdrawn: its item never enters the queue") {
  // Its call never returned, so the item was never in; a retry would put
  // it again (admitting it too would give that retry a duplicate).
  weft_test::runtime_guard rt(processes);
  weft::queue<int> q(1);
  weft::queue<int> pids;
  q.put(1);
  auto doomed = weft::remote(pid_then_put).options({.max_retries = 0}).remote(q, pids, 10);
  const int pid = pids.get(true, bound);
  REQUIRE(eventually([&] { return q.stats().waiting_putters == 1; }));
  REQUIRE(::kill(pid, SIGKILL) == 0);
  CHECK(process_test::error_of<weft::worker_crashed_error>(doomed));
  CHECK(q.get(true, bound) == 1); // room made: the dead put is not admitted
  CHECK(q.size() == 0);
  CHECK(q.stats().waiting_putters == 0);
  q.put(2); // and a live put still is
  CHECK(q.get(true, bound) == 2);
}

TEST_CASE("a get or put that reaches the queue after its worker died takes and adds nothing") {
  // The call left its worker, which was reaped before the queue's actor
  // ran it: nothing reads the answer. Such a call is made here with a
  // ticket from the id space of a worker this node never had.
  weft_test::runtime_guard rt(processes);
  using actor_type = weft::detail::queue_actor<int>;
  weft::queue<int> q;
  q.put(1);
  const std::uint64_t gone = (std::uint64_t{999} << weft::detail::object_id_space_shift) + 1;
  const auto got = weft::get(q.actor().task(&actor_type::get).remote(true, gone), bound);
  CHECK_FALSE(got.item.has_value());
  CHECK(q.size() == 1);
  const auto put = weft::get(q.actor().task(&actor_type::put).remote(2, true, gone + 1), bound);
  CHECK_FALSE(put.accepted);
  CHECK(q.size() == 1);
  CHECK(q.get(true, bound) == 1); // the driver's own calls still go through
}
