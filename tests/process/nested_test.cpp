// Nested tasks in worker processes: a task running in a worker submits
// tasks, puts and gets objects, waits and cancels, as it would in the
// driver; a task waiting in get lends its CPUs, so recursion deeper than the
// node has CPUs finishes (on extra workers).
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "process/process_test.hpp"
#include "weft_test.hpp"
#include <weft/weft.hpp>

using Catch::Matchers::Contains;
using process_test::processes;
using weft_test::bound;
using weft_test::eventually;

namespace {

int own_pid(int) { return static_cast<int>(::getpid()); }

/// (this task's pid, its child's pid)
std::vector<int> parent_and_child(int) {
  const int child = weft::get(weft::remote(own_pid).remote(0));
  return {static_cast<int>(::getpid()), child};
}

int fib(int n) {
  if (n < 2)
    return n;
  auto a = weft::remote(fib).remote(n - 1);
  auto b = weft::remote(fib).remote(n - 2);
  return weft::get(a) + weft::get(b);
}

int twice(int x) { return 2 * x; }

/// put, a ref argument, wait, and a list get, all inside a worker.
int objects_inside(int n) {
  auto base = weft::put(n);
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < 4; ++i)
    refs.push_back(weft::remote(twice).remote(base));
  auto [ready, rest] = weft::wait(refs, 4, bound);
  if (ready.size() != 4 || !rest.empty())
    return -1;
  int sum = 0;
  for (int v : weft::get(refs))
    sum += v;
  return sum + weft::get(base);
}

int throws_below(int) { throw std::domain_error("below zero"); }

std::string catches_child_error(int) {
  try {
    weft::get(weft::remote(throws_below, {.name = "child"}).remote(0));
  } catch (const weft::task_error& e) {
    return e.type_name() + ": " + e.message();
  }
  return "no error";
}

int dies(int) {
  ::raise(SIGKILL);
  return 0;
}

std::string catches_child_crash(int) {
  try {
    weft::get(weft::remote(dies, {.max_retries = 0}).remote(0));
  } catch (const weft::worker_crashed_error& e) {
    return "crashed by signal " + std::to_string(e.signal());
  }
  return "no error";
}

/// Records its pid in `log`; returns it.
int logs_pid(std::string log) {
  process_test::append_line(log, std::to_string(::getpid()));
  return static_cast<int>(::getpid());
}

/// Records its pid in `log`, then runs until it is cancelled (with
/// `until_killed`: until its worker is killed), for 30 s at most.
int runs_until_cancelled(std::string log, bool until_killed) {
  process_test::append_line(log, std::to_string(::getpid()));
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while ((until_killed || !weft::is_cancelled()) && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return weft::is_cancelled() ? 1 : -1;
}

/// What get(r) throws ("task_cancelled_error: ..."), or its value.
std::string outcome(const weft::object_ref<int>& r) {
  try {
    return "value " + std::to_string(weft::get(r));
  } catch (const weft::task_cancelled_error& e) {
    return std::string("task_cancelled_error: ") + e.what();
  }
}

/// Submits a task that needs both CPUs while this one holds one, so it
/// waits in the driver's queue; cancels it there.
std::string cancel_queued(std::string log) {
  auto r = weft::remote(logs_pid, {.num_cpus = 2}).remote(log);
  weft::cancel(r);
  return outcome(r);
}

/// Starts a nested task, waits until it runs (in another worker), cancels
/// it; returns (this worker's pid, what the child's get threw).
std::vector<std::string> cancel_running(std::string log, bool force) {
  auto r = weft::remote(runs_until_cancelled, {.max_retries = 0}).remote(log, force);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (process_test::lines_of(log).empty() && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  weft::cancel(r, {.force = force});
  return {std::to_string(::getpid()), outcome(r)};
}

/// Cancels (with and without force) a task that finished, an object of
/// put(), and a ref the driver lent that is done: nothing changes.
int cancel_finished(weft::object_ref<int> lent, int x) {
  auto r = weft::remote(twice).remote(x);
  const int v = weft::get(r);
  auto p = weft::put(5);
  weft::get(lent);
  for (bool force : {false, true}) {
    weft::cancel(r, {.force = force});
    weft::cancel(p, {.force = force});
    weft::cancel(lent, {.force = force});
  }
  return v + weft::get(r) + weft::get(p) + weft::get(lent);
}

/// Cancels the driver's task whose ref it was lent.
int cancel_lent(weft::object_ref<int> r) {
  weft::cancel(r);
  return 0;
}

std::vector<int> count_up(int n) {
  std::vector<int> v;
  for (int i = 0; i < n; ++i)
    v.push_back(i + 1);
  return v;
}

/// Calls count_up(m) with num_returns(n) from inside a worker: the sum of
/// the n elements, or the child's error.
std::string nested_parts(int n, int m) {
  auto refs = weft::remote(count_up, {.name = "parts"}).num_returns(n).remote(m);
  try {
    int sum = 0;
    for (const auto& r : refs)
      sum += weft::get(r);
    return std::to_string(refs.size()) + " refs, sum " + std::to_string(sum);
  } catch (const weft::task_error& e) {
    return e.type_name() + " from " + e.chain().front();
  }
}

} // namespace

TEST_CASE("a task in a worker submits a task and gets its result") {
  weft_test::runtime_guard rt(processes);
  const auto pids = weft::get(weft::remote(parent_and_child).remote(0), bound);
  REQUIRE(pids.size() == 2);
  CHECK(pids[0] != static_cast<int>(::getpid()));
  CHECK(pids[1] != static_cast<int>(::getpid()));
  CHECK(pids[1] > 0);
}

TEST_CASE("recursion through nested tasks deeper than the node has CPUs finishes in worker processes") {
  // fib(9) has up to 9 tasks waiting in get at once on a 2-CPU node: they
  // lend their CPUs, and the node starts extra workers for their children.
  weft_test::runtime_guard rt(processes);
  CHECK(weft::get(weft::remote(fib).remote(9), bound) == 34);
}

TEST_CASE("put and wait and get of a list inside a worker") {
  weft_test::runtime_guard rt(processes);
  CHECK(weft::get(weft::remote(objects_inside).remote(5), bound) == 4 * 10 + 5);
}

TEST_CASE("a nested task's exception reaches its parent in the worker as task_error") {
  weft_test::runtime_guard rt(processes);
  CHECK(weft::get(weft::remote(catches_child_error).remote(0), bound) == "std::domain_error: below zero");
}

TEST_CASE("a nested task whose worker dies reaches its parent as worker_crashed_error") {
  process_test::let_signals_through();
  weft_test::runtime_guard rt(processes);
  CHECK(weft::get(weft::remote(catches_child_crash).remote(0), bound) == "crashed by signal 9");
}

TEST_CASE("cancel in a worker drops a nested task waiting in the driver's queue") {
  weft_test::runtime_guard rt(processes);
  process_test::temp_dir dir;
  const auto log = dir.file("child");
  CHECK_THAT(weft::get(weft::remote(cancel_queued).remote(log), bound),
             Contains("task_cancelled_error") && Contains("cancelled before it ran"));
  CHECK(process_test::lines_of(log).empty()); // it never ran
}

TEST_CASE("cancel with force in a worker kills the worker running its nested task and the caller lives on") {
  weft_test::runtime_guard rt(processes);
  process_test::temp_dir dir;
  const auto log = dir.file("child");
  const auto out = weft::get(weft::remote(cancel_running).remote(log, true), bound);
  REQUIRE(out.size() == 2);
  CHECK_THAT(out[1], Contains("task_cancelled_error") && Contains("cancelled while it ran"));
  const auto lines = process_test::lines_of(log);
  REQUIRE(lines.size() == 1); // a cancelled task is not retried
  const int child = std::stoi(lines[0]);
  const int caller = std::stoi(out[0]);
  CHECK(child != caller);
  CHECK(eventually([&] { return process_test::gone(child); }));
  CHECK(::kill(caller, 0) == 0);
  CHECK(weft::get(weft::remote(twice).remote(4), bound) == 8); // the node goes on
}

TEST_CASE("cancel without force in a worker makes its running nested task see is_cancelled") {
  weft_test::runtime_guard rt(processes);
  process_test::temp_dir dir;
  const auto log = dir.file("child");
  const auto out = weft::get(weft::remote(cancel_running).remote(log, false), bound);
  REQUIRE(out.size() == 2);
  CHECK_THAT(out[1], Contains("task_cancelled_error") && Contains("cancelled while it ran"));
  const auto lines = process_test::lines_of(log);
  REQUIRE(lines.size() == 1);
  CHECK(::kill(std::stoi(lines[0]), 0) == 0); // its worker was not killed
}

TEST_CASE("cancel in a worker of a finished task or of a put object changes nothing") {
  weft_test::runtime_guard rt(processes);
  auto lent = weft::remote(twice).remote(50);
  weft::get(lent, bound);
  CHECK(weft::get(weft::remote(cancel_finished).remote(lent, 3), bound) == 6 + 6 + 5 + 100);
  CHECK(weft::get(lent, bound) == 100);
}

TEST_CASE("cancel in a worker of a ref the driver lent cancels the driver's task") {
  weft_test::runtime_guard rt(processes);
  process_test::temp_dir dir;
  const auto log = dir.file("task");
  auto r = weft::remote(runs_until_cancelled, {.max_retries = 0}).remote(log, false);
  REQUIRE(eventually([&] { return !process_test::lines_of(log).empty(); }));
  CHECK(weft::get(weft::remote(cancel_lent).remote(r), bound) == 0);
  CHECK(process_test::error_of<weft::task_cancelled_error>(r));
  CHECK(::kill(std::stoi(process_test::lines_of(log)[0]), 0) == 0); // without force: no worker killed
}

TEST_CASE("a task in a worker calls a function with num_returns(n) and gets every element") {
  weft_test::runtime_guard rt(processes);
  CHECK(weft::get(weft::remote(nested_parts).remote(100, 100), bound) == "100 refs, sum 5050");
  CHECK(weft::get(weft::remote(nested_parts).remote(3, 2), bound) == "weft::num_returns_error from parts");
}
