// Actors in worker processes: each incarnation lives in a worker of its own;
// its process dying (a real SIGKILL) is an actor failure, handled by the
// restart supervision of the actor runtime.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
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
using weft_test::died_what;
using weft_test::eventually;

namespace {

/// Appends "<event> <pid> <detail>" lines to a file shared by all processes.
struct counter {
  counter(std::string log, int start) : log_(std::move(log)), value_(start) {
    process_test::append_line(log_, "construct " + std::to_string(::getpid()));
  }
  ~counter() {
    try {
      process_test::append_line(log_, "destroy " + std::to_string(::getpid()));
    } catch (const std::exception&) { // the test's directory is gone already
    }
  }
  counter(const counter&) = delete;
  counter& operator=(const counter&) = delete;

  int pid() const { return static_cast<int>(::getpid()); }
  int increment() { return ++value_; }
  int add(int by) { return value_ += by; }
  /// Call `i` of a numbered series: logged, slowed down, counted.
  int step(int i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
    process_test::append_line(log_, "step " + std::to_string(::getpid()) + " " + std::to_string(i));
    return ++value_;
  }
  /// Sleeps `ms` in the worker, then counts.
  int nap(int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ++value_;
  }
  int fail(int code) {
    if (code > 0)
      throw std::invalid_argument("code " + std::to_string(code) + " is not allowed");
    return value_;
  }
  int crash() {
    ::raise(SIGSEGV);
    return 0;
  }
  int spin_forever() {
    for (;;)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  int finish() {
    weft::exit_actor();
    return value_;
  }
  /// Submits a task from the actor's worker and adds its result.
  int add_from_task(int x) {
    return value_ += weft::get(weft::remote(+[](int v) { return v * 10; }).remote(x));
  }
  std::string context() const {
    auto ctx = weft::runtime_context();
    const auto id = ctx.actor();
    return (id ? weft::to_string(*id) : std::string("none")) + " " + ctx.actor_name() + " " +
           (ctx.was_current_actor_restarted() ? "restarted" : "first");
  }

private:
  std::string log_;
  int value_;
};

int count_lines(const std::string& path, const std::string& prefix) {
  int n = 0;
  for (const auto& line : process_test::lines_of(path))
    if (line.rfind(prefix, 0) == 0)
      ++n;
  return n;
}

struct shape {
  virtual ~shape() = default;
  virtual std::string name() const { return "shape"; }
  int sides() const { return sides_; }
  int sides_ = 0;
};
struct tagged {
  virtual ~tagged() = default;
  std::string tag() const { return tag_; }
  std::string tag_ = "tagged";
};
/// Virtual and base-class methods, and a second base (a this-adjustment).
struct square final : shape, tagged {
  square() {
    sides_ = 4;
    tag_ = "square-tag";
  }
  std::string name() const override { return "square in " + std::to_string(::getpid()); }
};

int slow_value(int x) {
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  return x;
}

int no_value(int) { throw std::runtime_error("no value today"); }

/// Coroutine methods that co_await refs in the actor's worker.
struct awaiter {
  int awaited = 0;
  weft::coro<int> twice(weft::object_ref<int> r) {
    const int v = co_await r;
    ++awaited;
    co_return 2 * v;
  }
  /// Awaits a task it submits from its worker.
  weft::coro<int> plus_one_later(int x) {
    auto r = weft::remote(slow_value).remote(x);
    const int v = co_await r;
    ++awaited;
    co_return v + 1;
  }
  weft::coro<std::string> failing(weft::object_ref<int> r) {
    try {
      co_await r;
      co_return "no error";
    } catch (const weft::task_error& e) {
      co_return std::string("task_error: ") + e.what();
    }
  }
  int count() const { return awaited; }
  int pid() const { return static_cast<int>(::getpid()); }
};

struct quits_in_constructor {
  quits_in_constructor() { weft::exit_actor(); }
  int get() const { return 1; }
};

/// A task that tries to create an actor inside its worker.
struct throws_in_constructor {
  throws_in_constructor() { throw std::runtime_error("no room for another one"); }
  int get() const { return 1; }
};

} // namespace

TEST_CASE("an actor lives in a worker process of its own and keeps its state there") {
  weft_test::runtime_guard rt(processes);
  process_test::temp_dir dir;
  const auto log = dir.file("log");
  auto a = weft::remote<counter>().remote(log, 10);
  auto b = weft::remote<counter>().remote(log, 100);
  const int pa = weft::get(a.task(&counter::pid).remote(), bound);
  const int pb = weft::get(b.task(&counter::pid).remote(), bound);
  CHECK(pa != static_cast<int>(::getpid()));
  CHECK(pb != static_cast<int>(::getpid()));
  CHECK(pa != pb);
  CHECK(weft::get(a.task(&counter::increment).remote(), bound) == 11);
  CHECK(weft::get(a.task(&counter::add).remote(5), bound) == 16);
  CHECK(weft::get(b.task(&counter::increment).remote(), bound) == 101);
  // An object_ref argument is resolved by the driver and sent as a value.
  CHECK(weft::get(a.task(&counter::add).remote(weft::put(4)), bound) == 20);
  // Tasks do not run in an actor's worker.
  const int task_pid = weft::get(weft::remote(+[](int) { return static_cast<int>(::getpid()); }).remote(0), bound);
  CHECK(task_pid != pa);
  CHECK(task_pid != pb);
}

TEST_CASE("a thousand calls through one handle run in order in the worker") {
  weft_test::runtime_guard rt(processes);
  process_test::temp_dir dir;
  auto a = weft::remote<counter>().remote(dir.file("log"), 0);
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < 1000; ++i)
    refs.push_back(a.task(&counter::increment).remote());
  const auto values = weft::get(refs, bound);
  for (int i = 0; i < 1000; ++i)
    REQUIRE(values[static_cast<std::size_t>(i)] == i + 1);
}

TEST_CASE("a method's exception reaches the caller as task_error and the actor in its worker lives on") {
  weft_test::runtime_guard rt(processes);
  process_test::temp_dir dir;
  auto a = weft::remote<counter>().remote(dir.file("log"), 7);
  try {
    weft::get(a.task(&counter::fail).remote(3), bound);
    FAIL("expected task_error");
  } catch (const weft::task_error& e) {
    CHECK(e.type_name() == "std::invalid_argument");
    CHECK(e.message() == "code 3 is not allowed");
  }
  CHECK(weft::get(a.task(&counter::fail).remote(0), bound) == 7);
}

TEST_CASE("an actor method in a worker submits a task and gets its result") {
  weft_test::runtime_guard rt(processes);
  process_test::temp_dir dir;
  auto a = weft::remote<counter>().remote(dir.file("log"), 1);
  CHECK(weft::get(a.task(&counter::add_from_task).remote(4), bound) == 41);
  CHECK(weft::get(a.task(&counter::add_from_task).remote(1), bound) == 51);
}

TEST_CASE("virtual and base-class methods of an actor in a worker dispatch as in the driver") {
  weft_test::runtime_guard rt(processes);
  auto s = weft::remote<square>().remote();
  const std::string name = weft::get(s.task(&shape::name).remote(), bound);
  CHECK_THAT(name, Contains("square in "));
  CHECK(name != "square in " + std::to_string(::getpid()));
  CHECK(weft::get(s.task(&shape::sides).remote(), bound) == 4);
  CHECK(weft::get(s.task(&tagged::tag).remote(), bound) == "square-tag");
}

TEST_CASE("100 queued calls with max_task_retries=-1 survive a kill -9 of the actor's worker in order") {
  weft_test::runtime_guard rt(processes);
  process_test::temp_dir dir;
  const auto log = dir.file("log");
  auto a = weft::remote<counter>({.max_restarts = 1, .max_task_retries = -1}).remote(log, 0);
  const int first_pid = weft::get(a.task(&counter::pid).remote(), bound);
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < 100; ++i)
    refs.push_back(a.task(&counter::step).remote(i));
  // Kill it in the middle: once about a third of the calls came back.
  REQUIRE(eventually([&] { return refs[30].is_ready(); }));
  REQUIRE(::kill(first_pid, SIGKILL) == 0);
  const auto values = weft::get(refs, bound);
  // All succeed; the counter counts up, resets exactly once, counts up again.
  int resets = 0;
  for (std::size_t i = 1; i < values.size(); ++i) {
    if (values[i] == 1)
      ++resets;
    else
      CHECK(values[i] == values[i - 1] + 1);
  }
  CHECK(values[0] == 1);
  CHECK(resets == 1);
  CHECK(count_lines(log, "construct ") == 2);
  // The new incarnation ran the calls it got in their order, up to the last.
  const int second_pid = weft::get(a.task(&counter::pid).remote(), bound);
  CHECK(second_pid != first_pid);
  int last = -1;
  for (const auto& line : process_test::lines_of(log)) {
    const std::string prefix = "step " + std::to_string(second_pid) + " ";
    if (line.rfind(prefix, 0) != 0)
      continue;
    const int i = std::stoi(line.substr(prefix.size()));
    CHECK(i > last);
    last = i;
  }
  CHECK(last == 99);
  CHECK(process_test::gone(first_pid));
}

TEST_CASE("calls made while the actor's worker is being killed all succeed with max_task_retries=-1") {
  // Calls keep coming while the worker dies: some are still in the actor's
  // mailbox when its worker is already gone. They go to the restarted
  // actor like the ones that were sent to the worker.
  weft_test::runtime_guard rt(processes);
  process_test::temp_dir dir;
  const auto log = dir.file("log");
  auto a = weft::remote<counter>({.max_restarts = 1, .max_task_retries = -1}).remote(log, 0);
  const int pid = weft::get(a.task(&counter::pid).remote(), bound);
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < 3000; ++i) {
    if (i == 1000)
      REQUIRE(::kill(pid, SIGKILL) == 0);
    refs.push_back(a.task(&counter::increment).remote());
  }
  const auto values = weft::get(refs, bound); // throws if any call failed
  // In order: counting up, starting again at 1 once at most (none of the
  // first calls may have run before the kill).
  int starts = 0;
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (values[i] == 1)
      ++starts;
    else
      CHECK(values[i] == values[i - 1] + 1);
  }
  CHECK(starts >= 1);
  CHECK(starts <= 2);
  CHECK(count_lines(log, "construct ") == 2);
}

namespace race {
int worker_pid = 0;
std::atomic<int> sent{0};
std::atomic<bool> all_submitted{false};

/// Holds the actor's thread after each call went out: after the first
/// until the test has submitted every call (so that their messages are
/// ahead of the first call's reply in the mailbox); after the second until
/// its reply is in (the first's is too), then kills the worker and waits
/// until the node has reaped it.
void hold(weft::detail::object_state& reply) {
  const int n = ++sent;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  auto until = [&](auto done) {
    while (!done() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::microseconds(200));
  };
  if (n == 1) {
    until([] { return all_submitted.load(); });
  } else if (n == 2) {
    until([&] { return reply.done(); });
    ::kill(worker_pid, SIGKILL);
    until([] { return process_test::gone(worker_pid); }); // reaped: the node knows
  }
}
} // namespace race

TEST_CASE("a reply already in when its call was sent is taken after the replies of earlier calls") {
  // The worker answers calls 1 and 2, and dies; the actor's thread sees
  // call 2's reply as it sends it, while call 1's wake-up still waits in
  // the mailbox behind call 3. Call 3 then finds the worker gone. Taking
  // call 2's result at once would keep it while call 1 is carried to the
  // restart and runs again after it: the results would not be in order.
  weft_test::runtime_guard rt(processes);
  process_test::temp_dir dir;
  auto a = weft::remote<counter>({.max_restarts = 1, .max_task_retries = -1}).remote(dir.file("log"), 0);
  race::worker_pid = weft::get(a.task(&counter::pid).remote(), bound);
  race::sent = 0;
  race::all_submitted = false;
  weft::detail::test_after_actor_call_sent.store(&race::hold);
  struct unhook {
    ~unhook() { weft::detail::test_after_actor_call_sent.store(nullptr); }
  } unhooked;
  std::vector<weft::object_ref<int>> refs;
  refs.push_back(a.task(&counter::nap).remote(50)); // answered after the others are in the mailbox
  for (int i = 0; i < 4; ++i)
    refs.push_back(a.task(&counter::increment).remote());
  race::all_submitted = true;
  const auto values = weft::get(refs, bound);
  weft::detail::test_after_actor_call_sent.store(nullptr);
  CHECK(race::sent >= 3);
  CHECK(process_test::gone(race::worker_pid));
  // Calls 1 and 2 ran in the dead worker; all five ran again, in order.
  CHECK(values == std::vector<int>{1, 2, 3, 4, 5});
}

TEST_CASE("an actor whose worker crashes with max_restarts=0 is dead and its calls fail naming the signal") {
  process_test::let_signals_through();
  weft_test::runtime_guard rt(processes);
  process_test::temp_dir dir;
  auto a = weft::remote<counter>().remote(dir.file("log"), 0);
  const int pid = weft::get(a.task(&counter::pid).remote(), bound);
  const auto msg = died_what(a.task(&counter::crash).remote());
  CHECK_THAT(msg, Contains("SIGSEGV") && Contains(std::to_string(pid)));
  CHECK_THAT(died_what(a.task(&counter::increment).remote()), Contains("is dead"));
  CHECK(eventually([&] { return process_test::gone(pid); }));
}

TEST_CASE("an actor restarted after its worker crashed runs in a new worker and knows it was restarted") {
  process_test::let_signals_through();
  weft_test::runtime_guard rt(processes);
  process_test::temp_dir dir;
  const auto log = dir.file("log");
  auto a = weft::remote<counter>({.name = "phoenix", .max_restarts = 1}).remote(log, 5);
  const int pid = weft::get(a.task(&counter::pid).remote(), bound);
  CHECK(weft::get(a.task(&counter::context).remote(), bound) == weft::to_string(a.id()) + " phoenix first");
  // The crashing call itself is not retried (max_task_retries = 0).
  CHECK_THAT(died_what(a.task(&counter::crash).remote()), Contains("SIGSEGV"));
  CHECK(weft::get(a.task(&counter::increment).remote(), bound) == 6); // constructed again from (log, 5)
  CHECK(weft::get(a.task(&counter::pid).remote(), bound) != pid);
  CHECK(weft::get(a.task(&counter::context).remote(), bound) == weft::to_string(a.id()) + " phoenix restarted");
  CHECK(count_lines(log, "construct ") == 2);
}

TEST_CASE("kill ends an actor's worker at once even while a method never returns") {
  weft_test::runtime_guard rt(processes);
  process_test::temp_dir dir;
  const auto log = dir.file("log");
  auto a = weft::remote<counter>().remote(log, 0);
  const int pid = weft::get(a.task(&counter::pid).remote(), bound);
  auto stuck = a.task(&counter::spin_forever).remote();
  auto queued = a.task(&counter::increment).remote();
  weft::kill(a);
  CHECK_THAT(died_what(stuck), Contains("killed"));
  CHECK_THAT(died_what(queued), Contains("killed"));
  CHECK(eventually([&] { return process_test::gone(pid); }));
  CHECK(count_lines(log, "destroy ") == 0); // killed, not ended: no destructor
}

TEST_CASE("dropping the last handle runs the destructor in the worker and the worker exits") {
  weft_test::runtime_guard rt(processes);
  process_test::temp_dir dir;
  const auto log = dir.file("log");
  int pid = 0;
  {
    auto a = weft::remote<counter>().remote(log, 0);
    pid = weft::get(a.task(&counter::pid).remote(), bound);
  }
  CHECK(eventually([&] { return process_test::gone(pid); }));
  CHECK(count_lines(log, "destroy " + std::to_string(pid)) == 1);
}

TEST_CASE("exit_actor in a worker delivers that call's result then ends the actor with its destructor") {
  weft_test::runtime_guard rt(processes);
  process_test::temp_dir dir;
  const auto log = dir.file("log");
  auto a = weft::remote<counter>().remote(log, 41);
  const int pid = weft::get(a.task(&counter::pid).remote(), bound);
  CHECK(weft::get(a.task(&counter::finish).remote(), bound) == 41);
  CHECK(eventually([&] { return process_test::gone(pid); }));
  CHECK(count_lines(log, "destroy " + std::to_string(pid)) == 1);
  CHECK_THAT(died_what(a.task(&counter::increment).remote()), Contains("exit_actor"));
}

TEST_CASE("exit_actor in a constructor in a worker ends the actor as in the driver") {
  weft_test::runtime_guard rt(processes);
  auto a = weft::remote<quits_in_constructor>().remote();
  CHECK_THAT(died_what(a.task(&quits_in_constructor::get).remote()), Contains("exit_actor"));
}

TEST_CASE("a constructor that throws in the worker fails the actor with its message") {
  weft_test::runtime_guard rt(processes);
  auto a = weft::remote<throws_in_constructor>().remote();
  const auto msg = died_what(a.task(&throws_in_constructor::get).remote());
  CHECK_THAT(msg, Contains("constructor threw") && Contains("no room for another one"));
}

TEST_CASE("shutdown with live actors leaves no actor worker behind") {
  process_test::temp_dir dir;
  std::vector<int> pids;
  weft::init(processes);
  std::vector<weft::actor_handle<counter>> keep;
  for (int i = 0; i < 3; ++i) {
    keep.push_back(weft::remote<counter>({.lifetime = weft::lifetime::detached}).remote(dir.file("log"), i));
    pids.push_back(weft::get(keep.back().task(&counter::pid).remote(), bound));
  }
  auto busy = keep[0].task(&counter::spin_forever).remote();
  {
    weft_test::watchdog dog(bound, "weft::shutdown() with actors in workers");
    weft::shutdown();
  }
  for (int pid : pids)
    CHECK(process_test::gone(pid));
  CHECK(busy.is_ready());
}

TEST_CASE("a weft::queue stays in the driver in process mode and still works") {
  weft_test::runtime_guard rt(processes);
  weft::queue<int> q(4);
  q.put(1);
  q.put(2);
  CHECK(q.get() == 1);
  CHECK(q.get() == 2);
}

TEST_CASE("a coroutine method in a worker co_awaits object_refs and its later calls run meanwhile") {
  weft_test::runtime_guard rt(processes);
  auto a = weft::remote<awaiter>().remote();
  CHECK(weft::get(a.task(&awaiter::pid).remote(), bound) != static_cast<int>(::getpid()));
  auto slow = weft::remote(slow_value).remote(21); // not ready when the method awaits it
  auto twice = a.task(&awaiter::twice).remote(slow);
  auto count = a.task(&awaiter::count).remote(); // runs while twice waits at co_await
  CHECK(weft::get(twice, bound) == 42);
  CHECK(weft::get(count, bound) == 0);
  CHECK(weft::get(a.task(&awaiter::plus_one_later).remote(7), bound) == 8);
  CHECK(weft::get(a.task(&awaiter::count).remote(), bound) == 2);
}

TEST_CASE("a coroutine method in a worker sees the error of the ref it co_awaits") {
  weft_test::runtime_guard rt(processes);
  auto a = weft::remote<awaiter>().remote();
  auto bad = weft::remote(no_value, {.max_retries = 0}).remote(0);
  const auto what = weft::get(a.task(&awaiter::failing).remote(bad), bound);
  CHECK_THAT(what, Contains("task_error") && Contains("no value today"));
}
