// Actors: creation, method calls, order, state, concurrency, coroutines.
#include <catch2/catch.hpp>

#include <set>
#include <string>
#include <vector>

#include "weft_test.hpp"

using namespace std::chrono_literals;
using weft_test::runtime_guard;

namespace {

struct counter {
  explicit counter(int start) : value(start) {}
  int increment() { return ++value; }
  int add(int n) { return value += n; }
  int add(int a, int b) { return value += a + b; }
  int get_value() const { return value; }
  void reset() { value = 0; }
  int value;
};

struct base {
  virtual ~base() = default;
  virtual std::string who() const { return "base"; }
  int base_only() const { return 7; }
};
struct derived : base {
  std::string who() const override { return "derived"; }
};

struct recorder {
  std::vector<int> seen;
  int record(int x) {
    seen.push_back(x);
    return static_cast<int>(seen.size());
  }
  std::vector<int> all() const { return seen; }
};

int slow_double(int x) {
  std::this_thread::sleep_for(2ms);
  return 2 * x;
}

} // namespace

TEST_CASE("the seed's counter: two increments then get_value, in one get") {
  runtime_guard rt;
  const auto counter_r = weft::remote<counter>();
  weft::actor_handle<counter> h = counter_r.remote(10);
  auto a = h.task(&counter::increment).remote();
  auto b = h.task(&counter::increment).remote();
  auto v = h.task(&counter::get_value).remote();
  CHECK(weft::get(std::vector{a, b, v}) == std::vector{11, 12, 12});
}

TEST_CASE("calls from one caller run in submission order on the actor's state") {
  runtime_guard rt;
  auto h = weft::remote<recorder>().remote();
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < 2000; ++i)
    refs.push_back(h.task(&recorder::record).remote(i));
  auto sizes = weft::get(refs);
  for (int i = 0; i < 2000; ++i)
    REQUIRE(sizes[static_cast<std::size_t>(i)] == i + 1);
  auto all = weft::get(h.task(&recorder::all).remote());
  for (int i = 0; i < 2000; ++i)
    REQUIRE(all[static_cast<std::size_t>(i)] == i);
}

TEST_CASE("overloaded methods are picked with a member-pointer cast") {
  runtime_guard rt;
  auto h = weft::remote<counter>().remote(0);
  auto one = h.task(static_cast<int (counter::*)(int)>(&counter::add)).remote(5);
  auto two = h.task(static_cast<int (counter::*)(int, int)>(&counter::add)).remote(1, 2);
  CHECK(weft::get(one) == 5);
  CHECK(weft::get(two) == 8);
}

TEST_CASE("a base-class method called through &base::m dispatches virtually on the derived actor") {
  runtime_guard rt;
  auto h = weft::remote<derived>().remote();
  CHECK(weft::get(h.task(&base::who).remote()) == "derived");
  CHECK(weft::get(h.task(&base::base_only).remote()) == 7);
}

TEST_CASE("void methods return object_ref<void> and object_ref arguments are resolved") {
  runtime_guard rt;
  auto h = weft::remote<counter>().remote(3);
  weft::object_ref<void> r = h.task(&counter::reset).remote();
  weft::get(r);
  auto doubled = weft::remote(slow_double).remote(21);
  CHECK(weft::get(h.task(static_cast<int (counter::*)(int)>(&counter::add)).remote(doubled)) == 42);
}

TEST_CASE("a method's exception reaches its caller as task_error and the actor lives on") {
  struct thrower {
    int n = 0;
    int boom() { throw std::out_of_range("no such slot"); }
    int next() { return ++n; }
  };
  runtime_guard rt;
  auto h = weft::remote<thrower>().remote();
  CHECK(weft::get(h.task(&thrower::next).remote()) == 1);
  auto bad = h.task(&thrower::boom).remote();
  try {
    weft::get(bad);
    FAIL("expected task_error");
  } catch (const weft::task_error& e) {
    CHECK(e.type_name() == "std::out_of_range");
    CHECK(e.message() == "no such slot");
    REQUIRE(!e.chain().empty());
    CHECK_THAT(e.chain().front(), Catch::Contains("thrower"));
  }
  CHECK(weft::get(h.task(&thrower::next).remote()) == 2);
}

namespace {
struct meeting {
  int arrived = 0;
  // Waits (yielding its fiber through weft::get) until `n` calls are inside.
  int meet(int n) {
    ++arrived;
    const auto give_up = std::chrono::steady_clock::now() + 5s;
    while (arrived < n && std::chrono::steady_clock::now() < give_up)
      weft::get(weft::remote(slow_double).remote(0));
    return arrived;
  }
};
} // namespace

TEST_CASE("max_concurrency = N lets N calls be in progress at once") {
  runtime_guard rt;
  auto h = weft::remote<meeting>().options({.max_concurrency = 4}).remote();
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < 4; ++i)
    refs.push_back(h.task(&meeting::meet).remote(4));
  for (int v : weft::get(refs, weft_test::bound))
    CHECK(v == 4);
}

TEST_CASE("max_concurrency = 1 runs calls one at a time (the meeting never completes)") {
  runtime_guard rt;
  auto h = weft::remote<meeting>().remote();
  auto first = h.task(&meeting::meet).remote(2);
  auto second = h.task(&meeting::meet).remote(2);
  // The first call gives up after its 5 s deadline having seen only itself.
  CHECK(weft::get(first, weft_test::bound) == 1);
  CHECK(weft::get(second, weft_test::bound) == 2);
}

namespace {
struct waiter {
  int calls = 0;
  weft::coro<int> twice(weft::object_ref<int> r) {
    int v = co_await r;
    co_return 2 * v;
  }
  int ping() { return ++calls; }
};
} // namespace

TEST_CASE("a coroutine method that co_awaits lets other calls run meanwhile") {
  runtime_guard rt;
  weft_test::open_gate_at_exit gate;
  auto h = weft::remote<waiter>().remote();
  auto slow = weft::remote(weft_test::gate_value).remote(21);
  auto out = h.task(&waiter::twice).remote(slow);
  // The actor is free while twice() waits: ping runs to completion.
  CHECK(weft::get(h.task(&waiter::ping).remote(), weft_test::bound) == 1);
  CHECK_FALSE(out.is_ready());
  weft_test::gate_open = true;
  CHECK(weft::get(out, weft_test::bound) == 42);
}
