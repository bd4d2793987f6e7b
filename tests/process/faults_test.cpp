// Faults in worker processes, with real processes and real signals: a
// worker that dies during a task (SIGKILL, a segfault, abort, terminate,
// exit) is replaced and the task retried until max_retries runs out, then
// worker_crashed_error says how it died; max_calls retires workers; cancel
// (force) kills one; exceptions are retried with retry_exceptions; values
// that cannot be serialized fail with serialization_error, crashing nothing.
//
// Tasks in workers are other processes: they count their attempts and tell
// their pids through files in a fresh temporary directory (one line per
// event, each written with one O_APPEND write(2)).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "process/process_test.hpp"
#include "weft_test.hpp"
#include <weft/weft.hpp>

using Catch::Contains;
using namespace std::chrono_literals;

namespace faults_test {

using namespace process_test;

// ---------------------------------------------------------------- files

/// The pids recorded in `path` (one per line), in order.
std::vector<int> pids_in(const std::string& path) {
  std::vector<int> out;
  for (const auto& l : lines_of(path))
    out.push_back(std::stoi(l));
  return out;
}

/// Waits (bounded) until `path` holds at least `n` lines; returns them.
std::vector<std::string> wait_for_lines(const std::string& path, std::size_t n) {
  weft_test::eventually([&] { return lines_of(path).size() >= n; });
  return lines_of(path);
}

// ---------------------------------------------------------------- crashes

enum crash_kind : int { by_sigkill, by_segfault, by_abort, by_terminate, by_exit3, by_exit0 };

/// A real segfault: a store through a null pointer the compiler cannot see
/// (no trap instruction instead of the store; no UBSan report either).
[[gnu::noinline]] __attribute__((no_sanitize_undefined)) void segfault_now() {
  volatile int* volatile p = nullptr;
  *p = 42;
}

[[noreturn]] void die_by(int how) {
  switch (how) {
  case by_sigkill:
    ::raise(SIGKILL);
    break;
  case by_segfault:
    segfault_now();
    break;
  case by_abort:
    std::abort();
  case by_terminate:
    std::terminate();
  case by_exit3:
    std::exit(3);
  case by_exit0:
    ::_exit(0);
  default:
    break;
  }
  std::_Exit(99); // not reached
}

/// One attempt: records its pid as a line of `log`, then kills its own
/// worker as `how` says while no more than `crashes` attempts have run.
/// Returns the number of the attempt that came through.
int crash_first(std::string log, int crashes, int how) {
  append_line(log, std::to_string(::getpid()));
  const int attempt = static_cast<int>(lines_of(log).size());
  if (attempt <= crashes)
    die_by(how);
  return attempt;
}

/// crash_first, then n elements, each the attempt's number.
std::vector<int> crash_first_vector(std::string log, int crashes, int n) {
  const int attempt = crash_first(std::move(log), crashes, by_sigkill);
  return std::vector<int>(static_cast<std::size_t>(n), attempt);
}

/// Checks one way of dying: retried in a new worker while retries are left,
/// worker_crashed_error naming the task and the signal (or exit code) after.
void check_crash(int how, int sig, int code, const std::string& says) {
  process_test::let_signals_through();
  weft_test::runtime_guard rt(processes);
  temp_dir dir;
  const auto f = weft::remote(crash_first, {.name = "crashing_task"});

  // Attempt 1 dies; attempt 2 runs in another worker and returns.
  const auto retried = dir.file("retried");
  CHECK(weft::get(f.remote(retried, 1, how), weft_test::bound) == 2);
  const auto pids = pids_in(retried);
  REQUIRE(pids.size() == 2);
  CHECK(pids[0] != pids[1]);
  CHECK(weft_test::eventually([&] { return gone(pids[0]); })); // the dead worker was reaped

  // No retries left: the error says how the worker died, and which task.
  const auto failed = dir.file("failed");
  const auto err = error_of<weft::worker_crashed_error>(f.options({.max_retries = 0}).remote(failed, 100, how));
  REQUIRE(err);
  CHECK(err->signal() == sig);
  CHECK(err->exit_code() == code);
  const std::string what = err->what();
  CHECK_THAT(what, Contains(says));
  CHECK_THAT(what, Contains("crashing_task"));
  CHECK_THAT(what, Contains("max_retries=0"));
  const auto failed_pids = pids_in(failed);
  REQUIRE(failed_pids.size() == 1); // max_retries = 0: it ran once
  CHECK_THAT(what, Contains(std::to_string(failed_pids[0])));

  // The runtime goes on: a new worker runs the next task.
  CHECK(weft::get(f.remote(dir.file("after"), 0, how), weft_test::bound) == 1);
}

/// Tasks that tell where they ran.
int own_pid(int) { return static_cast<int>(::getpid()); }
int other_pid(int) { return static_cast<int>(::getpid()); }
int twice(int x) { return 2 * x; }

/// Records its pid, then sleeps 30 s whatever happens (cancel included):
/// only a kill ends it early.
int report_and_sleep(std::string log) {
  append_line(log, std::to_string(::getpid()));
  std::this_thread::sleep_for(30s);
  return -1;
}

std::vector<int> report_and_sleep_vector(std::string log, int n) {
  report_and_sleep(std::move(log));
  return std::vector<int>(static_cast<std::size_t>(n), -1);
}

/// One attempt: records its pid; the first attempt then sleeps 30 s (only
/// a kill ends it early), a later one returns its number at once.
int sleep_first(std::string log) {
  append_line(log, std::to_string(::getpid()));
  const int attempt = static_cast<int>(lines_of(log).size());
  if (attempt == 1)
    std::this_thread::sleep_for(30s);
  return attempt;
}

/// Records its pid, then waits (bounded) for `n` lines in `log`: n tasks
/// return true only when they run at the same time.
bool meet(std::string log, int n) {
  append_line(log, std::to_string(::getpid()));
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (lines_of(log).size() < static_cast<std::size_t>(n) && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(1ms);
  return lines_of(log).size() >= static_cast<std::size_t>(n);
}

} // namespace faults_test

namespace ft = faults_test;

// ---------------------------------------------------------------- a worker dies during a task

TEST_CASE("a worker killed by SIGKILL during a task is replaced and the task retried") {
  ft::check_crash(ft::by_sigkill, SIGKILL, -1, "SIGKILL");
}

TEST_CASE("a worker that segfaults during a task is replaced and the task retried") {
  ft::check_crash(ft::by_segfault, SIGSEGV, -1, "SIGSEGV");
}

TEST_CASE("a worker that calls abort during a task is replaced and the task retried") {
  ft::check_crash(ft::by_abort, SIGABRT, -1, "SIGABRT");
}

TEST_CASE("a worker that calls std::terminate during a task dies of SIGABRT and the task is retried") {
  ft::check_crash(ft::by_terminate, SIGABRT, -1, "SIGABRT");
}

TEST_CASE("a worker that calls exit(3) during a task is replaced and the error carries exit code 3") {
  ft::check_crash(ft::by_exit3, 0, 3, "exited with code 3");
}

// Ray's test_retry_system_level_error: attempt 1 exits the process.
TEST_CASE("a task whose first attempt exits its worker returns with max_retries=1 and fails with max_retries=0") {
  weft_test::runtime_guard rt(ft::processes);
  ft::temp_dir dir;
  const auto f = weft::remote(ft::crash_first);

  const auto one = dir.file("one");
  CHECK(weft::get(f.options({.max_retries = 1}).remote(one, 1, ft::by_exit0), weft_test::bound) == 2);
  CHECK(ft::lines_of(one).size() == 2);

  const auto zero = dir.file("zero");
  const auto err =
    ft::error_of<weft::worker_crashed_error>(f.options({.max_retries = 0}).remote(zero, 1, ft::by_exit0));
  REQUIRE(err);
  CHECK(err->exit_code() == 0); // a clean exit during a task is a crash all the same
  CHECK(err->signal() == 0);
  CHECK_THAT(std::string(err->what()), Contains("exited with code 0"));
  CHECK(ft::lines_of(zero).size() == 1);
}

TEST_CASE("a task killed three times finishes on the fourth attempt with max_retries=3 and fails with max_retries=2") {
  weft_test::runtime_guard rt(ft::processes);
  ft::temp_dir dir;
  const auto f = weft::remote(ft::crash_first);

  const auto three = dir.file("three");
  CHECK(weft::get(f.options({.max_retries = 3}).remote(three, 3, ft::by_sigkill), weft_test::bound) == 4);
  const auto pids = ft::pids_in(three);
  CHECK(pids.size() == 4);
  CHECK(std::set<int>(pids.begin(), pids.end()).size() == 4); // each attempt in a new worker

  const auto two = dir.file("two");
  const auto err =
    ft::error_of<weft::worker_crashed_error>(f.options({.max_retries = 2}).remote(two, 3, ft::by_sigkill));
  REQUIRE(err);
  CHECK(err->signal() == SIGKILL);
  CHECK_THAT(std::string(err->what()), Contains("max_retries=2"));
  CHECK(ft::lines_of(two).size() == 3); // the first run and two retries
}

TEST_CASE("max_retries=-1 retries a crashing task until it comes through") {
  weft_test::runtime_guard rt(ft::processes);
  ft::temp_dir dir;
  const auto log = dir.file("forever");
  CHECK(weft::get(weft::remote(ft::crash_first, {.max_retries = -1}).remote(log, 5, ft::by_sigkill),
                  weft_test::bound) == 6);
  CHECK(ft::lines_of(log).size() == 6);
}

TEST_CASE("a num_returns(n) task whose worker dies is retried and fills all n refs or fails them all") {
  process_test::let_signals_through();
  weft_test::runtime_guard rt(ft::processes);
  ft::temp_dir dir;
  const auto f = weft::remote(ft::crash_first_vector).num_returns(40);

  const auto retried = dir.file("retried");
  auto refs = f.options({.max_retries = 2}).remote(retried, 2, 40);
  CHECK(weft::get(refs, weft_test::bound) == std::vector<int>(40, 3));
  CHECK(ft::lines_of(retried).size() == 3);

  const auto failed = dir.file("failed");
  auto lost = f.options({.max_retries = 1}).remote(failed, 5, 40);
  for (const auto& r : lost) {
    const auto err = ft::error_of<weft::worker_crashed_error>(r);
    REQUIRE(err);
    CHECK(err->signal() == SIGKILL);
  }
  CHECK(ft::lines_of(failed).size() == 2);
}

TEST_CASE("a busy worker killed from outside is replaced and its task retried") {
  weft_test::runtime_guard rt(ft::processes);
  ft::temp_dir dir;
  // Attempt 1 sleeps 30 s unless killed; the test kills its worker.
  const auto log = dir.file("pids");
  auto ref = weft::remote(ft::sleep_first).remote(log);
  const auto first = ft::wait_for_lines(log, 1);
  REQUIRE(first.size() == 1);
  const int victim = std::stoi(first[0]);
  REQUIRE(::kill(victim, SIGKILL) == 0);
  CHECK(weft::get(ref, weft_test::bound) == 2);
  const auto pids = ft::pids_in(log);
  REQUIRE(pids.size() == 2);
  CHECK(pids[1] != victim);
  CHECK(weft_test::eventually([&] { return ft::gone(victim); }));

  // With no retries left, the error names the signal it was killed by.
  const auto other = dir.file("other");
  auto once = weft::remote(ft::sleep_first, {.max_retries = 0}).remote(other);
  const auto lines = ft::wait_for_lines(other, 1);
  REQUIRE(lines.size() == 1);
  REQUIRE(::kill(std::stoi(lines[0]), SIGTERM) == 0);
  const auto err = ft::error_of<weft::worker_crashed_error>(once);
  REQUIRE(err);
  CHECK(err->signal() == SIGTERM);
  CHECK(err->exit_code() == -1);
  CHECK_THAT(std::string(err->what()), Contains("SIGTERM"));
  CHECK(ft::lines_of(other).size() == 1);
}

TEST_CASE("an idle worker killed from outside is replaced by a new one") {
  weft_test::runtime_guard rt(ft::processes);
  const auto f = weft::remote(ft::own_pid);
  const int first = weft::get(f.remote(0), weft_test::bound);
  REQUIRE(::kill(first, SIGKILL) == 0);
  REQUIRE(weft_test::eventually([&] { return ft::gone(first); })); // reaped by the driver
  const int second = weft::get(f.remote(1), weft_test::bound);
  CHECK(second != first);
  CHECK(second != static_cast<int>(::getpid()));
  CHECK(weft::get(f.remote(2), weft_test::bound) == second); // and it is reused
}

TEST_CASE("a task that kills its worker fails alone while the short tasks around it all succeed") {
  process_test::let_signals_through();
  weft_test::runtime_guard rt(ft::processes);
  ft::temp_dir dir;
  const auto log = dir.file("crasher");
  // max_retries = 0 everywhere: a task charged with a crash it did not
  // cause would fail with worker_crashed_error.
  const auto f = weft::remote(ft::twice, {.max_retries = 0});
  for (int i = 0; i < 20; ++i) // warm both workers up with short tasks
    REQUIRE(weft::get(f.remote(i), weft_test::bound) == 2 * i);
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < 300; ++i)
    refs.push_back(f.remote(i));
  auto bad =
    weft::remote(ft::crash_first, {.max_retries = 0, .name = "segfaulting_task"}).remote(log, 100, ft::by_segfault);
  for (int i = 300; i < 600; ++i)
    refs.push_back(f.remote(i));

  const auto err = ft::error_of<weft::worker_crashed_error>(bad);
  REQUIRE(err);
  CHECK(err->signal() == SIGSEGV);
  CHECK_THAT(std::string(err->what()), Contains("segfaulting_task"));
  CHECK(ft::lines_of(log).size() == 1); // max_retries = 0: it ran exactly once
  int wrong = 0, crashed = 0;
  std::string first_error;
  for (std::size_t i = 0; i < refs.size(); ++i) {
    try {
      wrong += weft::get(refs[i], weft_test::bound) != 2 * static_cast<int>(i);
    } catch (const weft::worker_crashed_error& e) {
      ++crashed;
      if (first_error.empty())
        first_error = e.what();
    }
  }
  INFO("first innocent task failed with: " << first_error);
  CHECK(crashed == 0);
  CHECK(wrong == 0);
}

TEST_CASE("a worker's death is handled while another worker streams results without a pause") {
  // A stream of short tasks, with a window of 1000 always in flight, keeps
  // the other worker's lane busy; the dead worker's task still fails at
  // once, not when the stream stops.
  process_test::let_signals_through();
  weft_test::runtime_guard rt(ft::processes);
  ft::temp_dir dir;
  const auto f = weft::remote(ft::twice);
  for (int i = 0; i < 20; ++i) // both workers up
    REQUIRE(weft::get(f.remote(i), weft_test::bound) == 2 * i);
  std::atomic<bool> stop{false}, stream_ended{false};
  std::atomic<long> streamed{0};
  std::thread stream([&] {
    const auto until = std::chrono::steady_clock::now() + 20s;
    std::deque<weft::object_ref<int>> window;
    for (int i = 0; i < 1000; ++i)
      window.push_back(f.remote(i));
    while (!stop.load() && std::chrono::steady_clock::now() < until) {
      weft::get(window.front(), weft_test::bound);
      window.pop_front();
      window.push_back(f.remote(1));
      streamed.fetch_add(1);
    }
    stream_ended.store(true);
    for (auto& r : window) // (all done before the runtime goes)
      weft::get(r, weft_test::bound);
  });
  REQUIRE(weft_test::eventually([&] { return streamed.load() > 5000; }));
  const auto err = ft::error_of<weft::worker_crashed_error>(
    weft::remote(ft::crash_first, {.max_retries = 0}).remote(dir.file("crasher"), 100, ft::by_sigkill));
  const bool during_stream = !stream_ended.load();
  stop.store(true);
  stream.join();
  REQUIRE(err);
  CHECK(err->signal() == SIGKILL);
  CHECK(during_stream);
}

// ---------------------------------------------------------------- max_calls

TEST_CASE("max_calls=2 retires each worker after two calls and their results stay readable") {
  weft_test::runtime_guard rt(ft::processes);
  const auto f = weft::remote(ft::own_pid, {.max_calls = 2});
  std::vector<weft::object_ref<int>> refs;
  std::vector<int> pids;
  for (int i = 0; i < 6; ++i) { // one at a time
    refs.push_back(f.remote(i));
    pids.push_back(weft::get(refs.back(), weft_test::bound));
  }
  std::map<int, int> calls;
  for (int p : pids)
    ++calls[p];
  for (auto [pid, n] : calls) {
    INFO("pid " << pid);
    CHECK(n <= 2);
  }
  CHECK(calls.size() == 3); // a worker that has calls left is reused
  // Every one of them exits after its second call (and is reaped).
  for (auto [pid, n] : calls) {
    INFO("pid " << pid);
    CHECK(weft_test::eventually([pid = pid] { return ft::gone(pid); }));
  }
  // Their results outlive them.
  CHECK(weft::get(refs, weft_test::bound) == pids);
}

TEST_CASE("max_calls counts the calls of its own function only") {
  weft_test::runtime_guard rt(ft::processes);
  const auto limited = weft::remote(ft::own_pid, {.max_calls = 2});
  const auto unlimited = weft::remote(ft::other_pid);
  const int w = weft::get(unlimited.remote(0), weft_test::bound);
  CHECK(weft::get(unlimited.remote(1), weft_test::bound) == w);
  CHECK(weft::get(unlimited.remote(2), weft_test::bound) == w);
  CHECK(weft::get(limited.remote(3), weft_test::bound) == w); // three calls of another function do not count
  CHECK(weft::get(unlimited.remote(4), weft_test::bound) == w);
  CHECK(weft::get(limited.remote(5), weft_test::bound) == w); // its second call: then it retires
  CHECK(weft_test::eventually([&] { return ft::gone(w); }));
  const int next = weft::get(unlimited.remote(6), weft_test::bound);
  CHECK(next != w);
}

// ---------------------------------------------------------------- cancel

TEST_CASE("cancel with force kills the task's worker and the runtime goes on") {
  weft_test::runtime_guard rt(ft::processes);
  ft::temp_dir dir;
  const auto log = dir.file("sleeper");
  auto ref = weft::remote(ft::report_and_sleep).remote(log);
  const auto lines = ft::wait_for_lines(log, 1);
  REQUIRE(lines.size() == 1);
  const int victim = std::stoi(lines[0]);
  const auto start = std::chrono::steady_clock::now();
  weft::cancel(ref, {.force = true});
  const auto err = ft::error_of<weft::task_cancelled_error>(ref);
  REQUIRE(err);
  CHECK(std::chrono::steady_clock::now() - start < 10s); // not the 30 s the task sleeps
  CHECK(weft_test::eventually([&] { return ft::gone(victim); }));
  CHECK(ft::lines_of(log).size() == 1); // a cancelled task is not retried
  // Both CPUs are free again: two tasks that must meet both run at once.
  const auto f = weft::remote(ft::meet);
  auto a = f.remote(dir.file("meet"), 2);
  auto b = f.remote(dir.file("meet"), 2);
  CHECK(weft::get(a, weft_test::bound));
  CHECK(weft::get(b, weft_test::bound));
  for (int p : ft::pids_in(dir.file("meet")))
    CHECK(p != victim);
}

TEST_CASE("cancel with force of a running num_returns(n) task fails all n refs") {
  weft_test::runtime_guard rt(ft::processes);
  ft::temp_dir dir;
  const auto log = dir.file("sleeper");
  auto refs = weft::remote(ft::report_and_sleep_vector).num_returns(30).remote(log, 30);
  const auto lines = ft::wait_for_lines(log, 1);
  REQUIRE(lines.size() == 1);
  const auto start = std::chrono::steady_clock::now();
  weft::cancel(refs[29], {.force = true});
  for (const auto& r : refs)
    CHECK(ft::error_of<weft::task_cancelled_error>(r));
  CHECK(std::chrono::steady_clock::now() - start < 10s); // not the 30 s the task sleeps
  CHECK(weft_test::eventually([&] { return ft::gone(std::stoi(lines[0])); }));
}

/// Records its pid, loops until cancelled (bounded), records that it saw it.
int until_cancelled(std::string log) {
  ft::append_line(log, std::to_string(::getpid()));
  const auto until = std::chrono::steady_clock::now() + 30s;
  while (!weft::is_cancelled() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(1ms);
  ft::append_line(log, weft::is_cancelled() ? "saw cancel" : "gave up");
  return 1;
}

TEST_CASE("cancel without force makes a running task see is_cancelled and return while its worker lives on") {
  weft_test::runtime_guard rt(ft::processes);
  ft::temp_dir dir;
  const auto log = dir.file("loop");
  auto ref = weft::remote(until_cancelled).remote(log);
  const auto lines = ft::wait_for_lines(log, 1);
  REQUIRE(lines.size() == 1);
  const int pid = std::stoi(lines[0]);
  const auto start = std::chrono::steady_clock::now();
  weft::cancel(ref);
  CHECK(ft::error_of<weft::task_cancelled_error>(ref));
  CHECK(std::chrono::steady_clock::now() - start < 10s);
  CHECK(ft::wait_for_lines(log, 2) == std::vector<std::string>{lines[0], "saw cancel"});
  CHECK(::kill(pid, 0) == 0);                                                     // not killed
  CHECK(weft::get(weft::remote(ft::own_pid).remote(0), weft_test::bound) == pid); // and reused
}

/// Waits (bounded) until `gate` exists; records its pid in `log` first.
int wait_for_file(std::string log, std::string gate) {
  ft::append_line(log, std::to_string(::getpid()));
  const auto until = std::chrono::steady_clock::now() + 15s;
  while (!std::filesystem::exists(gate) && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(1ms);
  return std::filesystem::exists(gate) ? 7 : -1;
}

/// Opens a file gate (creates the file) at scope exit, so no task waits at
/// it for long when a check fails.
struct open_at_exit {
  std::string gate;
  ~open_at_exit() {
    if (!std::filesystem::exists(gate))
      ft::append_line(gate, "open");
  }
};

/// Checks that cancelling `queued` (which waits behind `running`, a task
/// blocked at `gate`) completes it at once and leaves `running` alone.
void check_cancel_behind(weft::object_ref<int> running, weft::object_ref<int> queued, const std::string& log,
                         const std::string& gate, bool force) {
  open_at_exit opener{gate};
  const auto lines = ft::wait_for_lines(log, 1);
  REQUIRE(lines.size() == 1);
  weft::cancel(queued, {.force = force});
  // A task that has not started is dropped at once: its ref does not wait
  // for the task ahead of it.
  const bool at_once = weft_test::eventually([&] { return queued.is_ready(); }, 5s);
  ft::append_line(gate, "open");
  CHECK(at_once);
  CHECK(ft::error_of<weft::task_cancelled_error>(queued));
  CHECK(weft::get(running, weft_test::bound) == 7);
  CHECK(ft::lines_of(log).size() == 1); // never killed, never retried
  CHECK(::kill(std::stoi(lines[0]), 0) == 0);
}

TEST_CASE("cancel with force of a task waiting for a CPU drops it at once and kills no worker") {
  // One CPU: the second task waits in the scheduler. (A worker sends no
  // task ahead before it has run a short one.)
  weft_test::runtime_guard rt({.num_cpus = 1, .workers = weft::worker_mode::processes});
  ft::temp_dir dir;
  const auto log = dir.file("running"), gate = dir.file("gate");
  auto running = weft::remote(wait_for_file).remote(log, gate);
  auto queued = weft::remote(ft::twice).remote(21);
  check_cancel_behind(running, queued, log, gate, true);
}

/// Sleeps `ms` milliseconds; returns it.
int nap(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

TEST_CASE("cancel of a task sent ahead to a busy worker drops it at once and kills no worker") {
  // One CPU. The worker runs a long task (no pipelining after it), then a
  // short one: after a short task the node sends the worker the tasks
  // waiting behind it, here the gate task and the one to cancel.
  weft_test::runtime_guard rt({.num_cpus = 1, .workers = weft::worker_mode::processes});
  ft::temp_dir dir;
  const auto log = dir.file("running"), gate = dir.file("gate");
  auto long_one = weft::remote(nap).remote(300);
  auto short_one = weft::remote(nap).remote(0);
  auto running = weft::remote(wait_for_file).remote(log, gate);
  auto queued = weft::remote(ft::twice).remote(21);
  SECTION("with force") { check_cancel_behind(running, queued, log, gate, true); }
  SECTION("without force") { check_cancel_behind(running, queued, log, gate, false); }
  CHECK(weft::get(long_one, weft_test::bound) == 300);
  CHECK(weft::get(short_one, weft_test::bound) == 0);
}

// ---------------------------------------------------------------- exceptions

/// Records its attempt; throws an E while no more than `throws` attempts ran.
template <class E>
int fail_first(std::string log, int throws) {
  ft::append_line(log, std::to_string(::getpid()));
  const int attempt = static_cast<int>(ft::lines_of(log).size());
  if (attempt <= throws)
    throw E("attempt " + std::to_string(attempt) + " failed");
  return attempt;
}
const auto throw_first = &fail_first<std::runtime_error>;
/// std::invalid_argument derives from std::logic_error.
const auto reject_first = &fail_first<std::invalid_argument>;

TEST_CASE("retry_exceptions=true retries a throwing task in a worker process") {
  weft_test::runtime_guard rt(ft::processes);
  ft::temp_dir dir;
  const auto f = weft::remote(throw_first, {.retry_exceptions = true});

  const auto ok = dir.file("ok");
  CHECK(weft::get(f.options({.max_retries = 2}).remote(ok, 2), weft_test::bound) == 3);
  CHECK(ft::lines_of(ok).size() == 3);

  const auto fails = dir.file("fails");
  const auto err = ft::error_of<weft::task_error>(f.options({.max_retries = 1}).remote(fails, 5));
  REQUIRE(err);
  CHECK(err->type_name() == "std::runtime_error");
  CHECK(err->message() == "attempt 2 failed"); // the last attempt's error
  CHECK(ft::lines_of(fails).size() == 2);

  // Without retry_exceptions an exception is final at once.
  const auto once = dir.file("once");
  CHECK(ft::error_of<weft::task_error>(weft::remote(throw_first, {.max_retries = 3}).remote(once, 5)));
  CHECK(ft::lines_of(once).size() == 1);
}

TEST_CASE("retry_on applies to tasks sent ahead to a busy worker too") {
  // Many short tasks: most are pipelined behind others on the two workers,
  // and each carries its type tests with it.
  weft_test::runtime_guard rt(ft::processes);
  ft::temp_dir dir;
  const auto f = weft::remote(reject_first, {.max_retries = 1, .retry_exceptions = weft::retry_on<std::logic_error>()});
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < 100; ++i)
    refs.push_back(f.remote(dir.file("log" + std::to_string(i)), 1));
  for (auto& r : refs)
    CHECK(weft::get(r, weft_test::bound) == 2);
}

TEST_CASE("retry_on with a list of types retries in a worker process what derives from them and nothing else") {
  weft_test::runtime_guard rt(ft::processes);
  ft::temp_dir dir;
  // std::invalid_argument derives from std::logic_error: retried (the test
  // runs where the exception was thrown, in the worker).
  const auto base = dir.file("base");
  const auto f = weft::remote(reject_first, {.max_retries = 3, .retry_exceptions = weft::retry_on<std::logic_error>()});
  CHECK(weft::get(f.remote(base, 2), weft_test::bound) == 3);
  CHECK(ft::lines_of(base).size() == 3);
  // Not a std::runtime_error: final at once.
  const auto other = dir.file("other");
  const auto g =
    weft::remote(reject_first, {.max_retries = 3, .retry_exceptions = weft::retry_on<std::runtime_error>()});
  const auto err = ft::error_of<weft::task_error>(g.remote(other, 2));
  REQUIRE(err);
  CHECK(err->type_name() == "std::invalid_argument");
  CHECK(ft::lines_of(other).size() == 1);
  // Either of two types.
  const auto either = dir.file("either");
  const auto h = weft::remote(
    reject_first, {.max_retries = 1, .retry_exceptions = weft::retry_on<std::runtime_error, std::invalid_argument>()});
  CHECK(weft::get(h.remote(either, 1), weft_test::bound) == 2);
}

// ---------------------------------------------------------------- serialization

namespace faults_test {

struct shape {
  virtual ~shape() = default;
  virtual double area() const = 0;
  template <class Archive>
  void serialize(Archive&, unsigned) {}
};
struct square : shape {
  double side = 0;
  square() = default;
  explicit square(double s) : side(s) {}
  double area() const override { return side * side; }
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& boost::serialization::base_object<shape>(*this) & side;
  }
};
/// Serializable, but never registered.
struct triangle : shape {
  double base = 0, height = 0;
  triangle() = default;
  triangle(double b, double h) : base(b), height(h) {}
  double area() const override { return base * height / 2; }
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& boost::serialization::base_object<shape>(*this) & base& height;
  }
};

double area_of(std::shared_ptr<shape> s) { return s ? s->area() : -1; }
std::shared_ptr<shape> make_shape(int kind) {
  if (kind == 0)
    return std::make_shared<square>(3.0);
  return std::make_shared<triangle>(4.0, 5.0);
}

} // namespace faults_test

WEFT_REGISTER_CLASS(faults_test::square)

TEST_CASE("an argument that cannot be serialized fails with serialization_error and crashes nothing") {
  weft_test::runtime_guard rt(ft::processes);
  const auto area = weft::remote(ft::area_of);
  CHECK(weft::get(area.remote(std::shared_ptr<ft::shape>(std::make_shared<ft::square>(2.0))), weft_test::bound) == 4.0);
  const int pid = weft::get(weft::remote(ft::own_pid).remote(0), weft_test::bound);
  const auto err = ft::error_of<weft::serialization_error>(
    area.remote(std::shared_ptr<ft::shape>(std::make_shared<ft::triangle>(1, 2))));
  REQUIRE(err);
  CHECK_THAT(std::string(err->what()), Contains("unregistered"));
  // The runtime and the worker go on.
  CHECK(weft::get(area.remote(std::shared_ptr<ft::shape>(std::make_shared<ft::square>(3.0))), weft_test::bound) == 9.0);
  CHECK(weft::get(weft::remote(ft::own_pid).remote(1), weft_test::bound) == pid);
}

TEST_CASE("a result that cannot be serialized in the worker fails with serialization_error and the worker lives on") {
  weft_test::runtime_guard rt(ft::processes);
  const auto make = weft::remote(ft::make_shape);
  const auto sq = weft::get(make.remote(0), weft_test::bound);
  REQUIRE(sq);
  CHECK(dynamic_cast<const ft::square*>(sq.get()));
  CHECK(sq->area() == 9.0);
  const int pid = weft::get(weft::remote(ft::own_pid).remote(0), weft_test::bound);
  const auto err = ft::error_of<weft::serialization_error>(make.remote(1));
  REQUIRE(err);
  CHECK_THAT(std::string(err->what()), Contains("unregistered"));
  CHECK(weft::get(weft::remote(ft::own_pid).remote(1), weft_test::bound) == pid);
  CHECK(weft::get(make.remote(0), weft_test::bound)->area() == 9.0);
}

// ---------------------------------------------------------------- large values

/// Returns `s` with one more character.
std::string grow(std::string s) {
  s.push_back('!');
  return s;
}

TEST_CASE("a 64 MiB argument and result cross the process boundary") {
  weft_test::runtime_guard rt(ft::processes);
  std::string big(std::size_t{64} << 20, 'a');
  for (std::size_t i = 0; i < big.size(); i += 4096)
    big[i] = static_cast<char>('a' + (i / 4096) % 26);
  const auto back = weft::get(weft::remote(grow).remote(big), weft_test::bound);
  CHECK(back.size() == big.size() + 1);
  CHECK(back.compare(0, big.size(), big) == 0);
  CHECK(back.back() == '!');
  // The worker is still there for the next task.
  CHECK(weft::get(weft::remote(ft::twice).remote(4), weft_test::bound) == 8);
}

// ---------------------------------------------------------------- many replacements

TEST_CASE("workers replaced over and over are all accepted by the driver") {
  // Every replacement is a new process connecting back to the driver while
  // the driver registers it: none may be taken for a stranger and refused.
  weft_test::runtime_guard rt(ft::processes);
  ft::temp_dir dir;
  const auto f = weft::remote(ft::crash_first, {.max_retries = 1});
  constexpr int n = 60;
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < n; ++i)
    refs.push_back(f.remote(dir.file("task" + std::to_string(i)), 1, ft::by_sigkill));
  // A task may run once more than it crashed: a worker that dies takes
  // with it the results of the calls it finished but had not sent yet, and
  // those run again. What must not happen is an error.
  int came_through = 0, errors = 0;
  std::map<int, int> attempts; // attempt that came through -> tasks
  std::string first_error;
  for (const auto& r : refs) {
    try {
      const int a = weft::get(r, weft_test::bound);
      ++attempts[a];
      came_through += a >= 2;
    } catch (const weft::error& e) {
      if (errors++ == 0)
        first_error = e.what();
    }
  }
  std::string tally;
  for (auto [a, k] : attempts)
    tally += std::to_string(k) + " on attempt " + std::to_string(a) + "; ";
  INFO("came through: " << tally << "first error: " << first_error);
  CHECK(errors == 0);
  CHECK(came_through == n); // each died once and came through on a new worker
}
