// weft::queue: FIFO order, bounds, blocking and non-blocking put/get, timeouts that lose nothing.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "weft_test.hpp"

using namespace std::chrono_literals;
using weft_test::bound;
using weft_test::eventually;
using weft_test::runtime_guard;

namespace {

int take(weft::queue<int> q) { return q.get(); }
int give(weft::queue<int> q, int v) {
  q.put(v);
  return v;
}

std::vector<int> produce(weft::queue<int> q, int first, int n) {
  std::vector<int> sent;
  for (int i = 0; i < n; ++i) {
    q.put(first + i);
    sent.push_back(first + i);
  }
  return sent;
}

std::vector<int> consume(weft::queue<int> q, int n) {
  std::vector<int> got;
  for (int i = 0; i < n; ++i)
    got.push_back(q.get(true, bound));
  return got;
}

struct consumer {
  int take(weft::queue<int> q) { return q.get(); }
};

/// An item type without serialize: fine for a queue used where it is made.
struct local_item {
  int v = 0;
  std::string name;
};

template <class T>
bool waiting_getters(const weft::queue<T>& q, std::size_t n) {
  return eventually([&] { return q.stats().waiting_getters == n; });
}
bool waiting_putters(const weft::queue<int>& q, std::size_t n) {
  return eventually([&] { return q.stats().waiting_putters == n; });
}

} // namespace

TEST_CASE("items come out in the order they went in and size empty and full follow them") {
  runtime_guard rt;
  weft::queue<int> q(3);
  CHECK(q.empty());
  CHECK(q.maxsize() == 3);
  q.put(1);
  q.put(2);
  q.put_nowait(3);
  CHECK(q.size() == 3);
  CHECK(q.full());
  CHECK(q.get() == 1);
  CHECK(q.get_nowait() == 2);
  CHECK_FALSE(q.full());
  CHECK(q.get(true, bound) == 3);
  CHECK(q.empty());
}

TEST_CASE("an unbounded queue (maxsize 0) is never full") {
  runtime_guard rt;
  weft::queue<std::string> q;
  for (int i = 0; i < 1000; ++i)
    q.put_nowait(std::to_string(i));
  CHECK(q.size() == 1000);
  CHECK_FALSE(q.full());
  CHECK(q.get() == "0");
}

TEST_CASE("put_nowait on a full queue and get_nowait on an empty one throw at once, saying why") {
  runtime_guard rt;
  weft::queue<int> q(2);
  const auto empty = weft_test::what_of<weft::queue_empty_error>([&] { q.get_nowait(); });
  CHECK_THAT(empty, Catch::Contains("get_nowait") && Catch::Contains("empty"));
  q.put(1);
  q.put(2);
  const auto full = weft_test::what_of<weft::queue_full_error>([&] { q.put_nowait(3); });
  CHECK_THAT(full, Catch::Contains("put_nowait") && Catch::Contains("full") && Catch::Contains("size 2") &&
                     Catch::Contains("maxsize 2"));
  // put(item, false) is put_nowait; both errors are weft errors.
  CHECK_THROWS_AS(q.put(3, false), weft::queue_full_error);
  CHECK_THROWS_AS(q.put(3, false), weft::error);
  CHECK(q.size() == 2);
}

TEST_CASE("a blocking put that times out throws queue_full_error and its item is never added") {
  runtime_guard rt;
  weft::queue<int> q(1);
  q.put(1);
  const auto what = weft_test::what_of<weft::queue_full_error>([&] { q.put(2, true, 30ms); });
  CHECK_THAT(what,
             Catch::Contains("timed out after 30 ms") && Catch::Contains("maxsize 1") && Catch::Contains("not added"));
  CHECK(q.stats().waiting_putters == 0);
  CHECK(q.get() == 1);
  // Room now: had the withdrawn put stayed queued, its 2 would be here.
  CHECK_THROWS_AS(q.get_nowait(), weft::queue_empty_error);
}

TEST_CASE("a blocking get that times out throws queue_empty_error and does not swallow a later item") {
  runtime_guard rt;
  weft::queue<int> q;
  const auto what = weft_test::what_of<weft::queue_empty_error>([&] { q.get(true, 20ms); });
  CHECK_THAT(what, Catch::Contains("timed out after 20 ms") && Catch::Contains("empty"));
  CHECK(q.stats().waiting_getters == 0);
  q.put(5);
  CHECK(q.get_nowait() == 5);
}

TEST_CASE("a negative timeout is rejected") {
  runtime_guard rt;
  weft::queue<int> q;
  CHECK_THROWS_AS(q.get(true, -1ms), weft::invalid_argument_error);
  CHECK_THROWS_AS(q.put(1, true, -1ms), weft::invalid_argument_error);
}

TEST_CASE("a task blocked in get() receives the item another task puts") {
  runtime_guard rt;
  weft::queue<int> q;
  auto taken = weft::remote(take).remote(q);
  REQUIRE(waiting_getters(q, 1));
  CHECK_FALSE(taken.is_ready());
  auto given = weft::remote(give).remote(q, 42);
  CHECK(weft::get(given, bound) == 42);
  CHECK(weft::get(taken, bound) == 42);
  CHECK(q.empty());
}

TEST_CASE("a blocking put on a full queue waits until a get makes room") {
  runtime_guard rt;
  weft::queue<int> q(1);
  q.put(1);
  auto given = weft::remote(give).remote(q, 2);
  REQUIRE(waiting_putters(q, 1));
  CHECK_FALSE(given.is_ready());
  CHECK(q.size() == 1); // the waiting item is not in the queue yet
  CHECK(q.get() == 1);
  CHECK(weft::get(given, bound) == 2);
  CHECK(q.get_nowait() == 2);
}

TEST_CASE("waiting getters hold no CPU and do not hold up other calls on the queue") {
  runtime_guard rt; // 2 CPUs
  weft::queue<int> q;
  std::vector<weft::object_ref<int>> takers;
  for (int i = 0; i < 8; ++i)
    takers.push_back(weft::remote(take).remote(q));
  // All 8 wait at once on 2 CPUs, and the queue still answers meanwhile.
  REQUIRE(waiting_getters(q, 8));
  CHECK(q.size() == 0);
  // A blocking thread getter waits too, without stopping the queue.
  int from_thread = -1;
  std::thread t([&] { from_thread = q.get(true, bound); });
  REQUIRE(waiting_getters(q, 9));
  CHECK(q.empty());
  for (int i = 0; i < 9; ++i)
    q.put_nowait(i);
  t.join();
  auto got = weft::get(takers, bound);
  got.push_back(from_thread);
  std::sort(got.begin(), got.end());
  std::vector<int> want(9);
  std::iota(want.begin(), want.end(), 0);
  CHECK(got == want);
}

TEST_CASE("waiting getters are served first come, first served") {
  runtime_guard rt;
  weft::queue<int> q;
  std::vector<int> got(3, -1);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < 3; ++i) {
    threads.emplace_back([&, i] { got[i] = q.get(true, bound); });
    REQUIRE(waiting_getters(q, i + 1)); // getter i is queued before getter i+1 starts
  }
  q.put(10);
  q.put(20);
  q.put(30);
  for (auto& t : threads)
    t.join();
  CHECK(got == std::vector{10, 20, 30});
}

TEST_CASE("waiting putters are admitted first come, first served") {
  runtime_guard rt;
  weft::queue<int> q(1);
  q.put(0);
  std::vector<std::thread> threads;
  for (int i = 1; i <= 3; ++i) {
    threads.emplace_back([&q, i] { q.put(i, true, bound); });
    REQUIRE(waiting_putters(q, static_cast<std::size_t>(i)));
  }
  std::vector<int> got;
  for (int i = 0; i < 4; ++i)
    got.push_back(q.get(true, bound));
  for (auto& t : threads)
    t.join();
  CHECK(got == std::vector{0, 1, 2, 3});
}

TEST_CASE("many producer and consumer tasks on a small queue: every item arrives exactly once") {
  runtime_guard rt;
  constexpr int producers = 4;
  constexpr int per_producer = 100;
  weft::queue<int> q(4);
  std::vector<weft::object_ref<std::vector<int>>> sent;
  std::vector<weft::object_ref<std::vector<int>>> received;
  for (int p = 0; p < producers; ++p) {
    sent.push_back(weft::remote(produce).remote(q, p * 1000, per_producer));
    received.push_back(weft::remote(consume).remote(q, per_producer));
  }
  std::vector<int> all_sent;
  for (auto& v : weft::get(sent, bound))
    all_sent.insert(all_sent.end(), v.begin(), v.end());
  std::vector<int> all_received;
  for (auto& v : weft::get(received, bound))
    all_received.insert(all_received.end(), v.begin(), v.end());
  std::sort(all_sent.begin(), all_sent.end());
  std::sort(all_received.begin(), all_received.end());
  REQUIRE(all_sent.size() == producers * per_producer);
  CHECK(all_received == all_sent);
  CHECK(q.empty());
}

TEST_CASE("getters that keep timing out while items trickle in lose and duplicate nothing") {
  runtime_guard rt;
  constexpr int total = 600;
  weft::queue<int> q;
  std::mutex mtx;
  std::vector<int> got;
  std::atomic<int> count{0};
  std::atomic<int> timeouts{0};
  const auto give_up = std::chrono::steady_clock::now() + bound;
  std::vector<std::thread> consumers;
  for (int c = 0; c < 4; ++c)
    consumers.emplace_back([&] {
      while (count.load() < total && std::chrono::steady_clock::now() < give_up) {
        try {
          int v = q.get(true, 1ms);
          std::lock_guard<std::mutex> lock(mtx);
          got.push_back(v);
          ++count;
        } catch (const weft::queue_empty_error&) {
          ++timeouts;
        }
      }
    });
  for (int i = 0; i < total; ++i) {
    q.put(i);
    if (i % 8 == 0)
      std::this_thread::sleep_for(1ms); // let getters time out now and then
  }
  for (auto& t : consumers)
    t.join();
  // Whatever a getter gave up on stays in the queue.
  while (!q.empty())
    got.push_back(q.get_nowait());
  std::sort(got.begin(), got.end());
  std::vector<int> want(total);
  std::iota(want.begin(), want.end(), 0);
  CHECK(got == want);
  CHECK(q.stats().waiting_getters == 0);
}

TEST_CASE("a queue passed to an actor is the same queue and a consumer killed while it waits swallows nothing") {
  runtime_guard rt;
  weft::queue<int> q;
  auto c = weft::remote<consumer>().remote();
  auto taken = c.task(&consumer::take).remote(q);
  REQUIRE(waiting_getters(q, 1));
  weft::kill(c);
  CHECK_THROWS_AS(weft::get(taken, bound), weft::actor_died_error);
  q.put(7);
  // Whether the dead consumer's get was withdrawn before or after the 7
  // reached it, the 7 is still there for the next getter.
  CHECK(q.get(true, bound) == 7);
  CHECK(waiting_getters(q, 0));
}

TEST_CASE("shutdown() ends the queue: a waiting get throws actor_died_error") {
  runtime_guard rt;
  weft::queue<int> q;
  std::string what;
  std::thread t([&] { what = weft_test::what_of<weft::actor_died_error>([&] { q.get(true, bound); }); });
  REQUIRE(waiting_getters(q, 1));
  q.shutdown();
  t.join();
  CHECK_THAT(what, Catch::Contains("queue_actor"));
  CHECK_THROWS_AS(q.put_nowait(1), weft::actor_died_error);
}

TEST_CASE("a queue of items that cannot be serialized works where it is made") {
  static_assert(!weft::is_serializable_v<local_item>);
  static_assert(!weft::is_serializable_v<weft::queue<local_item>>);
  runtime_guard rt;
  weft::queue<local_item> q(2);
  q.put({1, "one"});
  q.put_nowait({2, "two"});
  CHECK_THROWS_AS(q.put_nowait({3, "three"}), weft::queue_full_error);
  CHECK(q.get().name == "one");
  CHECK(q.get_nowait().v == 2);
  CHECK_THROWS_AS(q.get(true, 10ms), weft::queue_empty_error);
  // A getter on another thread waits for the next item.
  std::string got;
  std::thread t([&] { got = q.get(true, bound).name; });
  REQUIRE(waiting_getters(q, 1));
  q.put({4, "four"});
  t.join();
  CHECK(got == "four");
}
