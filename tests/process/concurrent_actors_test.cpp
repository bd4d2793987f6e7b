// Actors with max_concurrency > 1 in worker processes behave as in the
// driver: up to N calls are in progress at once, a call that waits in get
// lets the next one run, yet no two calls ever run at the same instant, and
// calls start in the order they were made.
#include <unistd.h>

#include <chrono>
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

namespace {

int nap(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

struct rendezvous {
  bool signalled = false;
  int inside = 0;      ///< calls executing right now (outside get)
  int most_inside = 0; ///< the most ever seen at once
  std::vector<std::string> events;

  /// Waits (in get, a nap at a time) until signal() ran; true if it did
  /// within 20 s. Only another call in progress can set the flag.
  bool wait_for_signal() {
    for (int i = 0; i < 2000 && !signalled; ++i)
      weft::get(weft::remote(nap).remote(10));
    return signalled;
  }
  void signal() { signalled = true; }

  /// Records its start and end around a get of a 100 ms nap.
  int step(int i) {
    events.push_back("start " + std::to_string(i));
    weft::get(weft::remote(nap).remote(100));
    events.push_back("end " + std::to_string(i));
    return i;
  }
  /// Busy without waiting, counting how many calls execute meanwhile.
  int crowd(int i) {
    most_inside = std::max(most_inside, ++inside);
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(2);
    while (std::chrono::steady_clock::now() < until) {
    }
    --inside;
    weft::get(weft::remote(nap).remote(1)); // lets the next call in
    most_inside = std::max(most_inside, ++inside);
    --inside;
    return i;
  }
  int most() const { return most_inside; }
  std::vector<std::string> log() const { return events; }
  int pid() const { return static_cast<int>(::getpid()); }
  int finish() {
    weft::exit_actor();
    return 1;
  }
};

} // namespace

TEST_CASE("a max_concurrency actor in a worker runs a call while another waits in get") {
  weft_test::runtime_guard rt(processes);
  auto a = weft::remote<rendezvous>({.max_concurrency = 2}).remote();
  CHECK(weft::get(a.task(&rendezvous::pid).remote(), bound) != ::getpid()); // in a worker
  auto waiting = a.task(&rendezvous::wait_for_signal).remote();
  a.task(&rendezvous::signal).remote();
  CHECK(weft::get(waiting, bound)); // one at a time, signal() would only run after 20 s
}

TEST_CASE("calls of a max_concurrency actor in a worker overlap only while they wait and start in order") {
  weft_test::runtime_guard rt(processes);
  auto a = weft::remote<rendezvous>({.max_concurrency = 4}).remote();
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < 4; ++i)
    refs.push_back(a.task(&rendezvous::step).remote(i));
  CHECK(weft::get(refs, bound) == std::vector<int>{0, 1, 2, 3});
  const auto events = weft::get(a.task(&rendezvous::log).remote(), bound);
  REQUIRE(events.size() == 8);
  // All four started (in the order made) before the first one ended.
  CHECK(std::vector<std::string>(events.begin(), events.begin() + 4) ==
        std::vector<std::string>{"start 0", "start 1", "start 2", "start 3"});
}

TEST_CASE("no two calls of a max_concurrency actor in a worker ever execute at the same instant") {
  weft_test::runtime_guard rt(processes);
  auto a = weft::remote<rendezvous>({.max_concurrency = 8}).remote();
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < 64; ++i)
    refs.push_back(a.task(&rendezvous::crowd).remote(i));
  for (int i = 0; i < 64; ++i)
    CHECK(weft::get(refs[i], bound) == i);
  CHECK(weft::get(a.task(&rendezvous::most).remote(), bound) == 1);
}

TEST_CASE("max_concurrency=1 in a worker still runs a call only after the one before it finished") {
  weft_test::runtime_guard rt(processes);
  auto a = weft::remote<rendezvous>().remote();
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < 3; ++i)
    refs.push_back(a.task(&rendezvous::step).remote(i));
  weft::get(refs, bound);
  CHECK(weft::get(a.task(&rendezvous::log).remote(), bound) ==
        std::vector<std::string>{"start 0", "end 0", "start 1", "end 1", "start 2", "end 2"});
}

TEST_CASE("exit_actor in one call of a max_concurrency actor in a worker ends it after that call") {
  weft_test::runtime_guard rt(processes);
  auto a = weft::remote<rendezvous>({.max_concurrency = 4}).remote();
  CHECK(weft::get(a.task(&rendezvous::finish).remote(), bound) == 1);
  CHECK_THAT(weft_test::died_what(a.task(&rendezvous::most).remote()), Contains("exit_actor"));
}

TEST_CASE("a max_concurrency actor in a worker whose last handle goes while a call waits finishes it first") {
  weft_test::runtime_guard rt(processes);
  weft::object_ref<int> r;
  {
    auto a = weft::remote<rendezvous>({.max_concurrency = 4}).remote();
    r = a.task(&rendezvous::step).remote(7);
  }
  CHECK(weft::get(r, bound) == 7);
}
