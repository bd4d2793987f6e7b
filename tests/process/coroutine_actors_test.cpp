// Coroutine methods of actors in worker processes interleave as in the
// driver: a call waiting at co_await holds no slot, so the actor's next
// calls run meanwhile, even with max_concurrency = 1; it goes on once its
// object is ready, before calls that have not started, and no two calls
// ever execute at the same instant.
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "process/process_test.hpp"
#include "weft_test.hpp"
#include <weft/weft.hpp>

using process_test::processes;
using weft_test::bound;

namespace {

int snooze(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

void spin_for(std::chrono::milliseconds d) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
  }
}

struct interleaver {
  bool signalled = false;
  int inside = 0;      ///< calls executing right now (outside a wait)
  int most_inside = 0; ///< the most ever seen at once
  std::vector<std::string> events;

  /// Awaits 10 ms naps until signal() ran: true if it did within 5 s.
  /// Only a call that runs while this one waits can set the flag.
  weft::coro<bool> await_signal() {
    for (int i = 0; i < 500 && !signalled; ++i)
      co_await weft::remote(snooze).remote(10);
    co_return signalled;
  }
  void signal() { signalled = true; }

  /// Logs before and after a co_await of a `ms` nap.
  weft::coro<int> two_halves(std::string name, int ms) {
    events.push_back(name + " begins");
    co_await weft::remote(snooze).remote(ms);
    events.push_back(name + " ends");
    co_return ms;
  }
  /// Logs around a get (which keeps the call's slot).
  int blocking_step(std::string name) {
    events.push_back(name + " begins");
    weft::get(weft::remote(snooze).remote(100));
    events.push_back(name + " ends");
    return 0;
  }
  /// Busy for `ms` without waiting, then logs.
  int busy(std::string name, int ms) {
    spin_for(std::chrono::milliseconds(ms));
    events.push_back(name);
    return 0;
  }
  void note(std::string name) { events.push_back(std::move(name)); }

  /// Busy twice around a co_await, counting how many calls execute at once.
  weft::coro<int> crowd(int i) {
    most_inside = std::max(most_inside, ++inside);
    spin_for(std::chrono::milliseconds(1));
    --inside;
    co_await weft::remote(snooze).remote(1);
    most_inside = std::max(most_inside, ++inside);
    spin_for(std::chrono::milliseconds(1));
    --inside;
    co_return i;
  }
  int most() const { return most_inside; }
  std::vector<std::string> log() const { return events; }
  int pid() const { return static_cast<int>(::getpid()); }
};

/// In a worker task: the same two calls through a lent handle.
bool signal_through(weft::actor_handle<interleaver> a) {
  auto waiting = a.task(&interleaver::await_signal).remote();
  a.task(&interleaver::signal).remote();
  return weft::get(waiting);
}

} // namespace

TEST_CASE("a coroutine in a worker waiting at co_await lets a later call of its max_concurrency 1 actor run") {
  weft_test::runtime_guard rt(processes);
  auto a = weft::remote<interleaver>().remote();
  CHECK(weft::get(a.task(&interleaver::pid).remote(), bound) != ::getpid()); // in a worker
  auto waiting = a.task(&interleaver::await_signal).remote();
  a.task(&interleaver::signal).remote();
  CHECK(weft::get(waiting, bound)); // held behind it, signal() would run only after 5 s
}

TEST_CASE("a coroutine call made in another worker through a lent handle lets later calls run too") {
  weft_test::runtime_guard rt(processes);
  auto a = weft::remote<interleaver>().remote();
  CHECK(weft::get(weft::remote(signal_through).remote(a), bound));
}

TEST_CASE("calls of an actor in a worker interleave at co_await and only there") {
  weft_test::runtime_guard rt(processes);
  auto a = weft::remote<interleaver>().remote();
  auto first = a.task(&interleaver::two_halves).remote("a", 300);
  auto second = a.task(&interleaver::note).remote("b");
  weft::get(first, bound);
  weft::get(second, bound);
  // A call waiting in get keeps the actor, also after coroutines ran on it.
  auto third = a.task(&interleaver::blocking_step).remote("c");
  auto fourth = a.task(&interleaver::note).remote("d");
  weft::get(third, bound);
  weft::get(fourth, bound);
  CHECK(weft::get(a.task(&interleaver::log).remote(), bound) ==
        std::vector<std::string>{"a begins", "b", "a ends", "c begins", "c ends", "d"});
}

TEST_CASE("a coroutine in a worker whose object is ready goes on before calls that have not started") {
  weft_test::runtime_guard rt(processes);
  auto a = weft::remote<interleaver>().remote();
  // a waits 20 ms, b keeps the actor 1 s meanwhile: when b ends, a is
  // ready and c has waited all along; a goes first, as in the driver.
  auto r1 = a.task(&interleaver::two_halves).remote("a", 20);
  auto r2 = a.task(&interleaver::busy).remote("b", 1000);
  auto r3 = a.task(&interleaver::note).remote("c");
  weft::get(r1, bound);
  weft::get(r2, bound);
  weft::get(r3, bound);
  CHECK(weft::get(a.task(&interleaver::log).remote(), bound) ==
        std::vector<std::string>{"a begins", "b", "a ends", "c"});
}

TEST_CASE("coroutine calls of an actor in a worker never execute at the same instant") {
  weft_test::runtime_guard rt(processes);
  for (int limit : {1, 4}) {
    auto a = weft::remote<interleaver>({.max_concurrency = limit}).remote();
    std::vector<weft::object_ref<int>> refs;
    for (int i = 0; i < 48; ++i)
      refs.push_back(a.task(&interleaver::crowd).remote(i));
    for (int i = 0; i < 48; ++i)
      CHECK(weft::get(refs[i], bound) == i);
    CHECK(weft::get(a.task(&interleaver::most).remote(), bound) == 1);
  }
}

TEST_CASE("an actor in a worker whose last handle goes while a coroutine waits finishes it first") {
  weft_test::runtime_guard rt(processes);
  weft::object_ref<int> r;
  {
    auto a = weft::remote<interleaver>().remote();
    r = a.task(&interleaver::two_halves).remote("a", 200);
  }
  CHECK(weft::get(r, bound) == 200);
}
