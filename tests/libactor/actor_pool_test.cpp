// weft::actor_pool: ordered and unordered results, waiting work, errors, timeouts, push and pop_idle.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "weft_test.hpp"

using namespace std::chrono_literals;
using weft_test::bound;
using weft_test::eventually;
using weft_test::runtime_guard;

namespace {

std::atomic<int> finished_calls{0};

struct worker {
  explicit worker(int id) : id(id) {}
  int id;
  int square(int v) { return v * v; }
  /// Who ran it: id * 100 + v.
  int who(int v) { return id * 100 + v; }
  /// Waits for the test's gate when v is 0; counts the calls that finish.
  int gated(int v) {
    if (v == 0)
      weft_test::wait_for_gate();
    ++finished_calls;
    return v;
  }
  int fail_on_3(int v) {
    if (v == 3)
      throw std::runtime_error("bad value 3");
    return v;
  }
  std::string name(int v) { return "item " + std::to_string(v); }
};

using handle = weft::actor_handle<worker>;

auto square = [](const handle& a, int v) { return a.task(&worker::square).remote(v); };
auto who = [](const handle& a, int v) { return a.task(&worker::who).remote(v); };
auto gated = [](const handle& a, int v) { return a.task(&worker::gated).remote(v); };
auto fail_on_3 = [](const handle& a, int v) { return a.task(&worker::fail_on_3).remote(v); };

std::vector<handle> workers(int n) {
  std::vector<handle> hs;
  for (int i = 1; i <= n; ++i)
    hs.push_back(weft::remote<worker>().remote(i));
  return hs;
}

int sum_of_squares_in_a_task(std::vector<handle> actors, int n) {
  weft::actor_pool<worker> pool(actors);
  std::vector<int> values(static_cast<std::size_t>(n));
  std::iota(values.begin(), values.end(), 1);
  auto out = pool.map(square, values);
  return std::accumulate(out.begin(), out.end(), 0);
}

} // namespace

TEST_CASE("map returns the results in input order and map_unordered returns each result once") {
  runtime_guard rt;
  weft::actor_pool<worker> pool(workers(3));
  std::vector<int> values(20);
  std::iota(values.begin(), values.end(), 1);
  std::vector<int> want;
  for (int v : values)
    want.push_back(v * v);
  CHECK(pool.map(square, values) == want);
  auto unordered = pool.map_unordered(square, values);
  std::sort(unordered.begin(), unordered.end());
  CHECK(unordered == want);
  CHECK_FALSE(pool.has_next());
}

TEST_CASE("get_next returns results in submission order even when a later item finishes first") {
  runtime_guard rt;
  weft_test::open_gate_at_exit gate;
  finished_calls = 0;
  weft::actor_pool<worker> pool(workers(2));
  pool.submit(gated, 0); // blocks at the gate
  pool.submit(gated, 1); // finishes at once on the other actor
  REQUIRE(eventually([] { return finished_calls.load() == 1; }));
  CHECK(pool.has_next());
  // Item 1 is ready, but get_next owes item 0 first.
  CHECK_THROWS_AS(pool.get_next<int>(20ms), weft::get_timeout_error);
  weft_test::gate_open = true;
  CHECK(pool.get_next<int>(bound) == 0);
  CHECK(pool.get_next<int>(bound) == 1);
  CHECK_FALSE(pool.has_next());
}

TEST_CASE("get_next_unordered returns whichever result is ready first") {
  runtime_guard rt;
  weft_test::open_gate_at_exit gate;
  weft::actor_pool<worker> pool(workers(2));
  pool.submit(gated, 0);
  pool.submit(gated, 1);
  CHECK(pool.get_next_unordered<int>(bound) == 1);
  weft_test::gate_open = true;
  CHECK(pool.get_next_unordered<int>(bound) == 0);
}

TEST_CASE("work beyond the idle actors waits in the pool and goes to whichever actor frees up") {
  runtime_guard rt;
  weft_test::open_gate_at_exit gate;
  auto actors = workers(2); // ids 1 and 2
  weft::actor_pool<worker> pool(actors);
  pool.submit(gated, 0); // takes actor 1 and holds it at the gate
  for (int v = 1; v <= 4; ++v)
    pool.submit(who, v);
  // (No has_free() check here: actor 2 may already have worked through all
  // four items on a loaded machine.) Actor 1 is stuck, so every waiting item must run on actor 2, one after
  // another; none may be queued behind the gate.
  std::vector<int> got;
  for (int i = 0; i < 4; ++i)
    got.push_back(pool.get_next_unordered<int>(bound));
  CHECK(got == std::vector{201, 202, 203, 204});
  weft_test::gate_open = true;
  CHECK(pool.get_next<int>(bound) == 0);
  CHECK(pool.has_free());
}

TEST_CASE("an actor takes the next waiting item when its call finishes, before anyone fetches the result") {
  runtime_guard rt;
  finished_calls = 0;
  weft::actor_pool<worker> pool(workers(1));
  pool.submit(gated, 1);
  pool.submit(gated, 2); // waits for the only actor
  // No result is fetched; the pool's own calls let the second item start.
  CHECK(eventually([&] { return pool.has_free() && finished_calls.load() == 2; }));
  CHECK(pool.get_next<int>(bound) == 1);
  CHECK(pool.get_next<int>(bound) == 2);
}

TEST_CASE("a failing call surfaces from get_next for its own item and the pool goes on") {
  runtime_guard rt;
  weft::actor_pool<worker> pool(workers(2));
  for (int v = 1; v <= 5; ++v)
    pool.submit(fail_on_3, v);
  CHECK(pool.get_next<int>(bound) == 1);
  CHECK(pool.get_next<int>(bound) == 2);
  try {
    pool.get_next<int>(bound);
    FAIL("expected task_error");
  } catch (const weft::task_error& e) {
    CHECK(e.message() == "bad value 3");
  }
  CHECK(pool.get_next<int>(bound) == 4);
  CHECK(pool.get_next<int>(bound) == 5);
  CHECK_FALSE(pool.has_next());
}

TEST_CASE("map rethrows the first error and leaves no items behind") {
  runtime_guard rt;
  weft::actor_pool<worker> pool(workers(2));
  CHECK_THROWS_AS(pool.map(fail_on_3, std::vector{1, 2, 3, 4, 5, 6}), weft::task_error);
  CHECK_FALSE(pool.has_next());
  CHECK_THROWS_AS(pool.map_unordered(fail_on_3, std::vector{3, 4}), weft::task_error);
  CHECK_FALSE(pool.has_next());
  // Every actor comes back: the pool keeps working at full width.
  CHECK(pool.map(who, std::vector{1, 2, 3}).size() == 3);
  // Calls dropped by the failed maps finish on their own; then both actors are idle again.
  std::vector<handle> popped;
  CHECK(eventually([&] {
    while (auto a = pool.pop_idle())
      popped.push_back(*a);
    return popped.size() == 2;
  }));
}

TEST_CASE("an exception thrown by fn itself becomes that item's result") {
  runtime_guard rt;
  weft::actor_pool<worker> pool(workers(1));
  pool.submit([](const handle&, int) -> weft::object_ref<int> { throw std::logic_error("fn refused"); }, 1);
  pool.submit(square, 3);
  CHECK_THROWS_WITH(pool.get_next<int>(bound), "fn refused");
  CHECK(pool.get_next<int>(bound) == 9);
}

TEST_CASE("get_next with a timeout throws get_timeout_error and keeps the item") {
  runtime_guard rt;
  weft_test::open_gate_at_exit gate;
  weft::actor_pool<worker> pool(workers(1));
  pool.submit(gated, 0);
  pool.submit(gated, 5); // waits for the only actor
  const auto what = weft_test::what_of<weft::get_timeout_error>([&] { pool.get_next<int>(10ms); });
  CHECK_THAT(what, Catch::Contains("timed out") && Catch::Contains("still running"));
  CHECK_THROWS_AS(pool.get_next_unordered<int>(10ms), weft::get_timeout_error);
  CHECK(pool.has_next());
  weft_test::gate_open = true;
  CHECK(pool.get_next<int>(bound) == 0);
  CHECK(pool.get_next<int>(bound) == 5);
}

TEST_CASE("get_next with nothing left, or for the wrong type, says so") {
  runtime_guard rt;
  weft::actor_pool<worker> pool(workers(1));
  CHECK_THAT(weft_test::what_of<weft::error>([&] { pool.get_next<int>(); }), Catch::Contains("no results left"));
  pool.submit([](const handle& a, int v) { return a.task(&worker::name).remote(v); }, 4);
  const auto what = weft_test::what_of<weft::invalid_argument_error>([&] { pool.get_next<int>(); });
  CHECK_THAT(what, Catch::Contains("std::__cxx11::basic_string") || Catch::Contains("std::string"));
  CHECK(pool.get_next<std::string>(bound) == "item 4"); // the item was kept
}

TEST_CASE("push adds an actor that picks up waiting work and pop_idle takes an idle one out") {
  runtime_guard rt;
  weft_test::open_gate_at_exit gate;
  auto actors = workers(2);
  weft::actor_pool<worker> pool({actors[0]});
  pool.submit(gated, 0); // holds actor 1
  pool.submit(who, 7);   // waits: no idle actor
  CHECK_FALSE(pool.pop_idle());
  pool.push(actors[1]);
  CHECK(pool.get_next_unordered<int>(bound) == 207);
  CHECK_THROWS_AS(pool.push(actors[0]), weft::invalid_argument_error); // busy, but still in the pool
  auto idle = pool.pop_idle();
  REQUIRE(idle);
  CHECK(idle->id() == actors[1].id());
  weft_test::gate_open = true;
  CHECK(pool.get_next<int>(bound) == 0);
}

TEST_CASE("a pool without actors refuses to wait forever") {
  runtime_guard rt;
  weft::actor_pool<worker> pool(std::vector<handle>{});
  pool.submit(square, 2);
  CHECK_THAT(weft_test::what_of<weft::error>([&] { pool.get_next<int>(); }), Catch::Contains("no actors"));
  pool.push(workers(1)[0]);
  CHECK(pool.get_next<int>(bound) == 4);
}

TEST_CASE("a pool works inside a task") {
  runtime_guard rt;
  auto sum = weft::remote(sum_of_squares_in_a_task).remote(workers(2), 10);
  CHECK(weft::get(sum, bound) == 385);
}
