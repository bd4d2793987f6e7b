// object_refs as themselves between the driver and worker processes: a ref
// passed to a task or actor in a worker stays a ref to the same object
// (the worker gets its value when it asks), a ref a worker returns reaches
// the driver, and objects stay alive while any process holds a ref to them
// and are freed after.
#include <unistd.h>

#include <chrono>
#include <numeric>
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

int pid_of() { return static_cast<int>(::getpid()); }

/// Gets the value behind the ref inside the worker; returns it and the
/// worker's pid, so the test can see where it ran.
std::pair<int, int> get_in_worker(weft::object_ref<int> r) { return {weft::get(r), pid_of()}; }

int sum_all(std::vector<weft::object_ref<int>> refs) {
  int sum = 0;
  for (const auto& r : refs)
    sum += weft::get(r);
  return sum;
}

weft::object_ref<int> echo(weft::object_ref<int> r) { return r; }

int slow_value(int v) {
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  return v;
}

int fails(int) { throw std::invalid_argument("no good input"); }

std::string what_in_worker(weft::object_ref<int> r) {
  try {
    weft::get(r);
    return "no error";
  } catch (const weft::task_error& e) {
    return e.type_name() + ": " + e.message();
  }
}

/// A ref to an object this worker put.
weft::object_ref<std::string> put_in_worker(std::string s) { return weft::put(s + " from a worker"); }

int times_ten(int x) { return 10 * x; }

/// A ref to the result of a task this worker submitted.
weft::object_ref<int> nested_in_worker(int x) { return weft::remote(times_ten).remote(x); }

/// Refs to objects this worker put, inside an object it put.
weft::object_ref<std::vector<weft::object_ref<int>>> refs_in_a_ref(int n) {
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < n; ++i)
    refs.push_back(weft::put(i));
  return weft::put(refs);
}

/// Passes a ref it got on to a nested task (which runs in another worker
/// or the same one) and returns what that task saw.
int pass_on(weft::object_ref<int> r) { return weft::get(weft::remote(sum_all).remote(std::vector{r, r})); }

std::int64_t baseline_objects() { return weft::live_objects(); }

} // namespace

TEST_CASE("a ref passed as itself to a task in a worker gets its value there") {
  weft_test::runtime_guard rt(processes);
  auto r = weft::put(41);
  const auto [value, pid] = weft::get(weft::remote(get_in_worker).remote(r), bound);
  CHECK(value == 41);
  CHECK(pid != pid_of());
}

TEST_CASE("a ref to a result not ready yet is waited for in the worker") {
  weft_test::runtime_guard rt(processes);
  auto pending = weft::remote(slow_value).remote(7);
  auto r = weft::remote(get_in_worker).remote(pending); // sent at once, as a ref
  CHECK(weft::get(r, bound).first == 7);
}

TEST_CASE("refs inside a container cross as refs") {
  weft_test::runtime_guard rt(processes);
  std::vector<weft::object_ref<int>> refs;
  for (int i = 1; i <= 100; ++i)
    refs.push_back(i % 2 == 0 ? weft::put(i) : weft::remote(times_ten).remote(i));
  int expected = 0;
  for (int i = 1; i <= 100; ++i)
    expected += i % 2 == 0 ? i : 10 * i;
  CHECK(weft::get(weft::remote(sum_all).remote(refs), bound) == expected);
}

TEST_CASE("a ref a worker got and returns is the same ref in the driver") {
  weft_test::runtime_guard rt(processes);
  auto r = weft::put(5);
  auto back = weft::get(weft::remote(echo).remote(r), bound);
  CHECK(back.id() == r.id());
  CHECK(back == r);
  CHECK(weft::get(back, bound) == 5);
}

TEST_CASE("a failed object passed as a ref fails the get in the worker with the same error") {
  weft_test::runtime_guard rt(processes);
  auto bad = weft::remote(fails, {.max_retries = 0}).remote(1);
  CHECK(weft::get(weft::remote(what_in_worker).remote(bad), bound) == "std::invalid_argument: no good input");
}

TEST_CASE("a worker returns a ref to an object it put") {
  weft_test::runtime_guard rt(processes);
  auto r = weft::get(weft::remote(put_in_worker).remote(std::string("hello")), bound);
  REQUIRE(r.valid());
  CHECK(weft::get(r, bound) == "hello from a worker");
  // The driver's copy outlives the worker's: pass it on to another task.
  CHECK(weft::get(weft::remote(pid_of).remote(), bound) > 0);
  CHECK(weft::get(r, bound) == "hello from a worker");
}

TEST_CASE("a worker returns a ref to the result of a task it submitted") {
  weft_test::runtime_guard rt(processes);
  auto r = weft::get(weft::remote(nested_in_worker).remote(4), bound);
  CHECK(weft::get(r, bound) == 40);
}

TEST_CASE("refs inside an object a worker put reach the driver") {
  weft_test::runtime_guard rt(processes);
  auto outer = weft::get(weft::remote(refs_in_a_ref).remote(20), bound);
  auto inner = weft::get(outer, bound);
  REQUIRE(inner.size() == 20);
  for (int i = 0; i < 20; ++i)
    CHECK(weft::get(inner[i], bound) == i);
  // ... and go on to another task as refs.
  CHECK(weft::get(weft::remote(sum_all).remote(inner), bound) == 190);
}

TEST_CASE("a worker passes a ref it got on to a task it submits") {
  weft_test::runtime_guard rt(processes);
  CHECK(weft::get(weft::remote(pass_on).remote(weft::put(21)), bound) == 42);
}

TEST_CASE("an actor in a worker keeps a ref alive after the driver dropped its own") {
  struct holder {
    weft::object_ref<std::string> kept;
    void keep(weft::object_ref<std::string> r) { kept = std::move(r); }
    std::string read() const { return weft::get(kept); }
    void drop() { kept = {}; }
  };
  weft_test::runtime_guard rt(processes);
  const auto before = baseline_objects();
  auto h = weft::remote<holder>().remote();
  {
    auto r = weft::put(std::string(1000, 'x'));
    weft::get(h.task(&holder::keep).remote(r), bound);
  } // the driver's ref is gone; the actor's worker still holds the object
  CHECK(weft::get(h.task(&holder::read).remote(), bound) == std::string(1000, 'x'));
  CHECK(weft::live_objects() > before);
  weft::get(h.task(&holder::drop).remote(), bound);
  // The worker let go, so the driver frees the object (results of the
  // calls above are gone too).
  CHECK(eventually([&] { return weft::live_objects() == before; }));
}

TEST_CASE("objects a killed worker borrowed are freed with it") {
  struct holder {
    std::vector<weft::object_ref<int>> kept;
    int keep(std::vector<weft::object_ref<int>> r) {
      kept = std::move(r);
      return static_cast<int>(kept.size());
    }
  };
  weft_test::runtime_guard rt(processes);
  const auto before = baseline_objects();
  auto h = weft::remote<holder>().remote();
  {
    std::vector<weft::object_ref<int>> refs;
    for (int i = 0; i < 50; ++i)
      refs.push_back(weft::put(i));
    CHECK(weft::get(h.task(&holder::keep).remote(refs), bound) == 50);
  }
  CHECK(weft::live_objects() >= before + 50); // held for the actor's worker
  weft::kill(h);
  CHECK(eventually([&] { return weft::live_objects() == before; }));
}

TEST_CASE("objects lent to tasks are freed once the tasks are done") {
  weft_test::runtime_guard rt(processes);
  const auto before = baseline_objects();
  {
    std::vector<weft::object_ref<int>> refs;
    for (int i = 0; i < 200; ++i)
      refs.push_back(weft::put(i));
    std::vector<weft::object_ref<int>> sums;
    for (int k = 0; k < 20; ++k)
      sums.push_back(weft::remote(sum_all).remote(refs));
    for (auto& s : weft::get(sums, bound))
      CHECK(s == 199 * 100);
  }
  CHECK(eventually([&] { return weft::live_objects() == before; }));
}

TEST_CASE("a big array inside an object a worker put crosses without leaking the store") {
  weft_test::runtime_guard rt(processes);
  {
    auto r = weft::get(weft::remote(+[](int n) {
                         return weft::put(weft::array<int>::build(static_cast<std::size_t>(n), [](std::span<int> out) {
                           std::iota(out.begin(), out.end(), 0);
                         }));
                       }).remote(1 << 20),
                       bound);
    auto a = weft::get(r, bound);
    CHECK(a.in_shared_memory());
    REQUIRE(a.size() == std::size_t{1} << 20);
    CHECK(a[12345] == 12345);
    CHECK(weft::detail::node_store()->bytes_in_use() >= (std::size_t{4} << 20));
  }
  CHECK(eventually([] { return weft::detail::node_store()->bytes_in_use() == 0; }));
}

TEST_CASE("an object_ref cannot be written with to_bytes") {
  weft_test::runtime_guard rt;
  auto r = weft::put(1);
  CHECK_THROWS_WITH(weft::to_bytes(r), Contains("only inside weft's own messages"));
  CHECK_THROWS_AS(weft::to_bytes(std::vector{r}), weft::serialization_error);
}

namespace {

/// Polls is_ready() on a ref the driver lent, for up to 3 s.
bool ready_by_polling(weft::object_ref<int> r) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (!r.is_ready()) {
    if (std::chrono::steady_clock::now() > until)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return weft::get(r) == 3;
}

/// Polls with wait() and a short timeout (a poll lends no CPUs), for up to
/// 1 s.
bool ready_by_short_waits(weft::object_ref<int> r) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while (std::chrono::steady_clock::now() < until) {
    auto [ready, not_ready] = weft::wait(std::vector{r}, 1, std::chrono::microseconds(300));
    if (!ready.empty())
      return true;
  }
  return false;
}

int quick(int x) { return x; }

/// Exits its worker the first time (the marker file says which attempt),
/// then reads the ref it was given.
int crash_then_read(weft::object_ref<int> r, std::string marker) {
  if (::access(marker.c_str(), F_OK) != 0) {
    process_test::append_line(marker, "crashed");
    ::_exit(3);
  }
  return weft::get(r);
}

} // namespace

TEST_CASE("a worker that polls is_ready on a ref it was given sees it become ready") {
  weft_test::runtime_guard rt(processes);
  CHECK(weft::get(weft::remote(ready_by_polling).remote(weft::put(3)), bound));
}

TEST_CASE("a task polling with short waits for the result of the task ahead of it in its batch sees it") {
  weft_test::runtime_guard rt(processes);
  // Many short tasks of one shape: the node sends them ahead in batches,
  // each poller right behind the task whose result it polls for.
  std::vector<weft::object_ref<bool>> seen;
  for (int i = 0; i < 60; ++i) {
    auto a = weft::remote(quick).remote(i);
    seen.push_back(weft::remote(ready_by_short_waits).remote(a));
  }
  int missed = 0;
  for (bool s : weft::get(seen, std::chrono::seconds(100)))
    missed += s ? 0 : 1;
  CHECK(missed == 0);
}

TEST_CASE("a task retried after its worker died gets the refs it was given again") {
  weft_test::runtime_guard rt(processes);
  process_test::temp_dir dir;
  const auto before = baseline_objects();
  {
    auto r = weft::put(17);
    CHECK(weft::get(weft::remote(crash_then_read, {.max_retries = 1}).remote(r, dir.file("marker")), bound) == 17);
  }
  CHECK(eventually([&] { return weft::live_objects() == before; }));
}

namespace {
/// A nested task's result that is itself a ref (made in another worker).
std::string nested_ref_result(std::string s) {
  weft::object_ref<std::string> inner = weft::get(weft::remote(put_in_worker).remote(std::move(s)));
  return weft::get(inner);
}
} // namespace

TEST_CASE("a nested task's result that is a ref reaches the worker that submitted it") {
  weft_test::runtime_guard rt(processes);
  CHECK(weft::get(weft::remote(nested_ref_result).remote(std::string("deep")), bound) == "deep from a worker");
  CHECK(eventually([] { return weft::live_objects() == 0; }));
}
