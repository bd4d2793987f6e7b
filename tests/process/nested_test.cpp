// Nested tasks in worker processes: a task running in a worker submits
// tasks, puts and gets objects and waits, as it would in the driver; a task
// waiting in get lends its CPUs, so recursion deeper than the node has CPUs
// finishes (on extra workers).
#include <signal.h>
#include <unistd.h>

#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "process/process_test.hpp"
#include "weft_test.hpp"
#include <weft/weft.hpp>

using Catch::Matchers::Contains;
using process_test::processes;
using weft_test::bound;

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

std::string cancel_inside(int) {
  auto r = weft::remote(own_pid).remote(0);
  try {
    weft::cancel(r);
  } catch (const weft::not_initialized_error& e) {
    return e.what();
  }
  return "no error";
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

TEST_CASE("cancel inside a worker says it is not available there") {
  weft_test::runtime_guard rt(processes);
  CHECK_THAT(weft::get(weft::remote(cancel_inside).remote(0), bound), Contains("not available inside a worker"));
}

TEST_CASE("a task in a worker calls a function with num_returns(n) and gets every element") {
  weft_test::runtime_guard rt(processes);
  CHECK(weft::get(weft::remote(nested_parts).remote(100, 100), bound) == "100 refs, sum 5050");
  CHECK(weft::get(weft::remote(nested_parts).remote(3, 2), bound) == "weft::num_returns_error from parts");
}
