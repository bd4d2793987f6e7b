// weft::cancel(): a task not yet running is dropped and its refs throw
// task_cancelled_error; a running task sees is_cancelled() and its result
// becomes task_cancelled_error; cancelled tasks are not retried; finished
// tasks and put() objects are unaffected.
//
// "Not yet running" is arranged by holding both CPUs of a two-CPU node with
// tasks that wait on a flag (bounded, and they end early at shutdown).
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <vector>

#include "weft_test.hpp"

using namespace std::chrono_literals;
using Catch::Matchers::Contains;

namespace {

using weft_test::bound;
using weft_test::eventually;

// ---- tasks that hold both CPUs until released ----

std::atomic<int> g_holding{0};
std::atomic<bool> g_release{false};

int hold_until_released() {
  ++g_holding;
  eventually([] { return g_release.load() || weft::is_cancelled(); }, 30s);
  return 0;
}

/// Holds every CPU of the default two-CPU node; lets the holders go at scope exit.
class cpus_held {
public:
  cpus_held() {
    const auto f = weft::remote(hold_until_released);
    refs_ = {f.remote(), f.remote()};
    REQUIRE(eventually([] { return g_holding.load() == 2; }));
  }
  ~cpus_held() { g_release = true; }
  /// Lets the holders go and waits until they are done.
  void release() {
    g_release = true;
    CHECK(weft::get(refs_, bound) == std::vector<int>{0, 0});
  }

private:
  std::vector<weft::object_ref<int>> refs_;
};

// ---- the tasks cancelled ----

std::atomic<int> g_ran{0};
int counted() {
  ++g_ran;
  return 5;
}

int counted_plus(int x) {
  ++g_ran;
  return x + 1;
}

std::tuple<int, int> counted_pair() {
  ++g_ran;
  return {1, 2};
}

std::vector<int> counted_vector(int n) {
  ++g_ran;
  return std::vector<int>(static_cast<std::size_t>(n), 1);
}

std::atomic<bool> g_gate{false};
int gated_value() {
  eventually([] { return g_gate.load() || weft::is_cancelled(); }, 30s);
  return 7;
}

std::atomic<bool> g_started{false};
std::atomic<bool> g_saw_cancel{false};

/// Runs until it sees is_cancelled() (at most 20 s), then returns normally.
int poll_until_cancelled() {
  g_started = true;
  g_saw_cancel = eventually([] { return weft::is_cancelled(); }, 20s);
  return 42;
}

std::atomic<int> g_attempts{0};

/// Throws once it was cancelled; with wait_for_cancel = false it throws at once.
int throw_after_cancel(bool wait_for_cancel) {
  ++g_attempts;
  g_started = true;
  if (wait_for_cancel)
    g_saw_cancel = eventually([] { return weft::is_cancelled(); }, 20s);
  throw std::runtime_error("boom");
}

/// Blocks in get() on `r`, then reports whether it was cancelled meanwhile.
int get_then_check(weft::object_ref<int> r) {
  g_started = true;
  const int v = weft::get(r, bound);
  g_saw_cancel = weft::is_cancelled();
  return v;
}

/// Runs until it sees is_cancelled() (at most 20 s), then returns n elements.
std::vector<int> vector_until_cancelled(int n) {
  poll_until_cancelled();
  return std::vector<int>(static_cast<std::size_t>(n), 1);
}

struct reset_globals : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseStarting(const Catch::TestCaseInfo&) override {
    g_holding = 0;
    g_release = false;
    g_ran = 0;
    g_gate = false;
    g_started = false;
    g_saw_cancel = false;
    g_attempts = 0;
  }
};

} // namespace

CATCH_REGISTER_LISTENER(reset_globals)

TEST_CASE("a cancelled queued task is dropped without running") {
  weft_test::runtime_guard rt;
  cpus_held held;
  auto r = weft::remote(counted).remote();
  weft::cancel(r);
  CHECK_THROWS_AS(weft::get(r, bound), weft::task_cancelled_error);
  CHECK(r.is_ready());
  held.release();
  // a task queued after it has run, so the executors have passed the dropped one
  CHECK(weft::get(weft::remote(counted).remote(), bound) == 5);
  CHECK(g_ran == 1);
  CHECK_THROWS_AS(weft::get(r, bound), weft::task_cancelled_error);
}

TEST_CASE("the error of a cancelled task says it was cancelled") {
  weft_test::runtime_guard rt;
  cpus_held held;
  auto r = weft::remote(counted, {.name = "victim"}).remote();
  weft::cancel(r);
  try {
    weft::get(r, bound);
    FAIL("get did not throw");
  } catch (const weft::task_cancelled_error& e) {
    CHECK_THAT(std::string(e.what()), Contains("victim") && Contains("cancel"));
  }
}

TEST_CASE("a task waiting for a not-yet-ready argument is dropped on cancel") {
  weft_test::runtime_guard rt;
  auto slow = weft::remote(gated_value).remote();
  auto r = weft::remote(counted_plus).remote(slow);
  weft::cancel(r);
  // it fails at once, without waiting for its argument
  CHECK_THROWS_AS(weft::get(r, bound), weft::task_cancelled_error);
  CHECK_FALSE(slow.is_ready());
  g_gate = true;
  CHECK(weft::get(slow, bound) == 7);
  CHECK(weft::get(weft::remote(counted).remote(), bound) == 5);
  CHECK(g_ran == 1);
}

TEST_CASE("a running task sees is_cancelled and its result becomes task_cancelled_error") {
  weft_test::runtime_guard rt;
  CHECK_FALSE(weft::is_cancelled());
  auto r = weft::remote(poll_until_cancelled).remote();
  REQUIRE(eventually([] { return g_started.load(); }));
  weft::cancel(r);
  // it returned 42 normally, but its result is the cancellation
  CHECK_THROWS_AS(weft::get(r, bound), weft::task_cancelled_error);
  CHECK(g_saw_cancel);
}

TEST_CASE("a running task that is not cancelled never sees is_cancelled") {
  weft_test::runtime_guard rt;
  const auto f = weft::remote([]() { return weft::is_cancelled(); });
  CHECK_FALSE(weft::get(f.remote(), bound));
}

TEST_CASE("a task blocked in get sees is_cancelled when it goes on and its result is cancelled") {
  weft_test::runtime_guard rt;
  auto slow = weft::remote(gated_value).remote();
  auto r = weft::remote(get_then_check).remote(slow);
  REQUIRE(eventually([] { return g_started.load(); }));
  weft::cancel(r);
  g_gate = true;
  CHECK_THROWS_AS(weft::get(r, bound), weft::task_cancelled_error);
  CHECK(g_saw_cancel);
  CHECK(weft::get(slow, bound) == 7);
}

TEST_CASE("cancelling a finished task changes nothing") {
  weft_test::runtime_guard rt;
  auto r = weft::remote(counted).remote();
  REQUIRE(weft::get(r, bound) == 5);
  weft::cancel(r);
  CHECK(weft::get(r, bound) == 5);
  weft::cancel(r, {.force = true});
  CHECK(weft::get(r, bound) == 5);
  CHECK(g_ran == 1);
}

TEST_CASE("cancelling a task twice is harmless") {
  weft_test::runtime_guard rt;
  cpus_held held;
  auto r = weft::remote(counted).remote();
  weft::cancel(r);
  weft::cancel(r);
  CHECK_THROWS_AS(weft::get(r, bound), weft::task_cancelled_error);
  held.release();
  CHECK(g_ran == 0);
}

TEST_CASE("a cancelled task that throws is not retried") {
  weft_test::runtime_guard rt;
  const auto f = weft::remote(throw_after_cancel, {.max_retries = 3, .retry_exceptions = true});
  auto r = f.remote(true);
  REQUIRE(eventually([] { return g_started.load(); }));
  weft::cancel(r);
  CHECK_THROWS_AS(weft::get(r, bound), weft::task_cancelled_error);
  CHECK(g_saw_cancel);
  CHECK(g_attempts == 1);
}

TEST_CASE("the same throwing task is retried when it is not cancelled") {
  // The control for the case above: these options do retry.
  weft_test::runtime_guard rt;
  const auto f = weft::remote(throw_after_cancel, {.max_retries = 3, .retry_exceptions = true});
  CHECK_THROWS_AS(weft::get(f.remote(false), bound), weft::task_error);
  CHECK(g_attempts == 4);
}

TEST_CASE("cancel of an invalid ref throws invalid_argument_error") {
  weft_test::runtime_guard rt;
  CHECK_THROWS_AS(weft::cancel(weft::object_ref<int>{}), weft::invalid_argument_error);
  auto r = weft::put(1);
  auto moved = std::move(r);
  CHECK_THROWS_AS(weft::cancel(r), weft::invalid_argument_error); // NOLINT: testing the moved-from ref
  CHECK(weft::get(moved) == 1);
}

TEST_CASE("cancel of a put object is a no-op") {
  weft_test::runtime_guard rt;
  auto r = weft::put(11);
  CHECK_NOTHROW(weft::cancel(r));
  CHECK(weft::get(r, bound) == 11);
  // and a task using it still runs
  CHECK(weft::get(weft::remote(counted_plus).remote(r), bound) == 12);
}

TEST_CASE("dependents of a cancelled task fail too") {
  weft_test::runtime_guard rt;
  cpus_held held;
  auto victim = weft::remote(counted).remote();
  auto dependent = weft::remote(counted_plus).remote(victim);
  auto grandchild = weft::remote(counted_plus).remote(dependent);
  weft::cancel(victim);
  CHECK_THROWS_AS(weft::get(dependent, bound), weft::task_cancelled_error);
  CHECK_THROWS_AS(weft::get(grandchild, bound), weft::task_cancelled_error);
  held.release();
  CHECK(weft::get(weft::remote(counted).remote(), bound) == 5);
  CHECK(g_ran == 1);
}

TEST_CASE("cancelling a multi-return task fails all of its refs") {
  weft_test::runtime_guard rt;
  cpus_held held;
  auto [a, b] = weft::remote(counted_pair).num_returns<2>().remote();
  weft::cancel(b);
  CHECK_THROWS_AS(weft::get(a, bound), weft::task_cancelled_error);
  CHECK_THROWS_AS(weft::get(b, bound), weft::task_cancelled_error);
  held.release();
  CHECK(g_ran == 0);
}

TEST_CASE("cancelling a queued num_returns(n) task fails all n of its refs") {
  weft_test::runtime_guard rt;
  cpus_held held;
  auto refs = weft::remote(counted_vector).num_returns(50).remote(50);
  weft::cancel(refs[17]);
  for (const auto& r : refs)
    CHECK_THROWS_AS(weft::get(r, bound), weft::task_cancelled_error);
  held.release();
  CHECK(g_ran == 0);
}

TEST_CASE("cancelling a running num_returns(n) task fails all n of its refs") {
  weft_test::runtime_guard rt;
  auto refs = weft::remote(vector_until_cancelled).num_returns(20).remote(20);
  REQUIRE(eventually([] { return g_started.load(); }));
  weft::cancel(refs.back());
  for (const auto& r : refs)
    CHECK_THROWS_AS(weft::get(r, bound), weft::task_cancelled_error);
  CHECK(g_saw_cancel);
}

TEST_CASE("cancelling one queued task leaves the others alone") {
  weft_test::runtime_guard rt;
  cpus_held held;
  const auto f = weft::remote(counted);
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < 5; ++i)
    refs.push_back(f.remote());
  weft::cancel(refs[2]);
  held.release();
  for (int i = 0; i < 5; ++i) {
    if (i == 2)
      CHECK_THROWS_AS(weft::get(refs[i], bound), weft::task_cancelled_error);
    else
      CHECK(weft::get(refs[i], bound) == 5);
  }
  CHECK(g_ran == 4);
}

TEST_CASE("wait counts a cancelled task as ready") {
  weft_test::runtime_guard rt;
  cpus_held held;
  auto r = weft::remote(counted).remote();
  weft::cancel(r);
  auto [ready, not_ready] = weft::wait(std::vector{r}, 1, bound);
  CHECK(ready.size() == 1);
  CHECK(not_ready.empty());
}
