#include <catch2/catch.hpp>

#include "weft_test.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

// ---- contracts ----

static_assert(std::is_nothrow_default_constructible_v<weft::object_ref<int>>);
static_assert(std::is_copy_constructible_v<weft::object_ref<int>>);
static_assert(std::is_copy_assignable_v<weft::object_ref<int>>);
static_assert(std::is_nothrow_move_constructible_v<weft::object_ref<int>>);
static_assert(std::is_nothrow_move_assignable_v<weft::object_ref<int>>);
static_assert(std::is_nothrow_move_constructible_v<weft::object_ref<std::string>>);
static_assert(std::is_nothrow_move_constructible_v<weft::object_ref<void>>);
static_assert(std::is_copy_constructible_v<weft::object_ref<void>>);
static_assert(std::is_same_v<weft::object_ref<std::string>::value_type, std::string>);
static_assert(weft::is_object_ref_v<weft::object_ref<int>>);
static_assert(weft::is_object_ref_v<const weft::object_ref<int>&>);
static_assert(!weft::is_object_ref_v<int>);
static_assert(std::is_same_v<decltype(weft::put(1)), weft::object_ref<int>>);
static_assert(std::is_same_v<decltype(weft::put(std::declval<const std::string&>())), weft::object_ref<std::string>>);
static_assert(std::is_same_v<decltype(std::declval<weft::object_ref<int>>().id()), weft::object_id>);

// ---- helpers ----

namespace {

using weft_test::open_gate_at_exit;
using weft_test::wait_for_gate;

struct point {
  int x = 0;
  std::string label;
  std::vector<int> tags;
  friend bool operator==(const point&, const point&) = default;
};

struct tracked {
  static inline std::atomic<int> copies{0};
  static inline std::atomic<int> moves{0};
  int value = 0;
  explicit tracked(int v) : value(v) {}
  tracked(const tracked& o) : value(o.value) { ++copies; }
  tracked(tracked&& o) noexcept : value(o.value) { ++moves; }
  tracked& operator=(const tracked&) = delete;
  tracked& operator=(tracked&&) = delete;
};

} // namespace

int add(int a, int b) { return a + b; }

int gated_value(int x) {
  wait_for_gate();
  return x;
}

int sleep_then_return(int value, int sleep_ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
  return value;
}

int fail_now(int) { throw std::runtime_error("failed on purpose"); }

// ---- get / put ----

TEST_CASE("a remote call returns a ref whose get gives the value") {
  weft_test::runtime_guard rt;
  const auto add_r = weft::remote(add);
  auto r = add_r.remote(1, 2);
  CHECK(weft::get(r) == 3);
}

TEST_CASE("put then get round-trips an int") {
  weft_test::runtime_guard rt;
  auto r = weft::put(42);
  CHECK(r.valid());
  CHECK(r.is_ready());
  CHECK(weft::get(r) == 42);
}

TEST_CASE("put then get round-trips a string") {
  weft_test::runtime_guard rt;
  const std::string s = "hello, object store";
  auto r = weft::put(s);
  static_assert(std::is_same_v<decltype(r), weft::object_ref<std::string>>);
  CHECK(weft::get(r) == s);
}

TEST_CASE("put then get round-trips a large vector of doubles") {
  weft_test::runtime_guard rt;
  std::vector<double> v(std::size_t{1} << 20);
  for (std::size_t i = 0; i < v.size(); ++i)
    v[i] = static_cast<double>(i) * 0.5;
  auto r = weft::put(v);
  const auto back = weft::get(r);
  REQUIRE(back.size() == v.size());
  CHECK(back == v);
  CHECK(back[12345] == 6172.5);
}

TEST_CASE("put then get round-trips a user struct") {
  weft_test::runtime_guard rt;
  const point p{7, "seven", {1, 2, 3}};
  auto r = weft::put(p);
  static_assert(std::is_same_v<decltype(r), weft::object_ref<point>>);
  CHECK(weft::get(r) == p);
}

TEST_CASE("a put value can be passed to a task") {
  weft_test::runtime_guard rt;
  auto a = weft::put(40);
  CHECK(weft::get(weft::remote(add).remote(a, a)) == 80);
}

TEST_CASE("put of an rvalue moves the value into the store without copying it") {
  weft_test::runtime_guard rt;
  tracked::copies = 0;
  tracked::moves = 0;
  tracked t(5);
  auto r = weft::put(std::move(t));
  CHECK(tracked::copies.load() == 0);
  CHECK(tracked::moves.load() >= 1);
  CHECK(weft::get(r).value == 5);
}

TEST_CASE("put of an lvalue copies the value and leaves the original untouched") {
  weft_test::runtime_guard rt;
  tracked::copies = 0;
  tracked::moves = 0;
  const tracked t(6);
  auto r = weft::put(t);
  CHECK(tracked::copies.load() == 1);
  CHECK(tracked::moves.load() == 0);
  CHECK(t.value == 6);
  CHECK(weft::get(r).value == 6);
}

TEST_CASE("put of a moved string leaves the store holding the whole value") {
  weft_test::runtime_guard rt;
  std::string s(1000, 'x');
  auto r = weft::put(std::move(s));
  CHECK(weft::get(r) == std::string(1000, 'x'));
}

TEST_CASE("get of a list of refs keeps input order even when later tasks finish first") {
  weft_test::runtime_guard rt({.num_cpus = 4});
  const auto sleepy = weft::remote(sleep_then_return);
  std::vector<weft::object_ref<int>> refs;
  refs.push_back(sleepy.remote(0, 200));
  refs.push_back(sleepy.remote(10, 150));
  refs.push_back(sleepy.remote(20, 100));
  refs.push_back(sleepy.remote(30, 0));
  refs.push_back(weft::put(40));
  CHECK(weft::get(refs) == std::vector<int>{0, 10, 20, 30, 40});
}

TEST_CASE("get of an empty list returns an empty list") {
  weft_test::runtime_guard rt;
  const std::vector<weft::object_ref<int>> none;
  CHECK(weft::get(none).empty());
}

TEST_CASE("get with a timeout throws get_timeout_error and a later get still returns the value") {
  weft_test::runtime_guard rt;
  open_gate_at_exit gate;
  auto r = weft::remote(gated_value).remote(7);
  CHECK_THROWS_AS(weft::get(r, 50ms), weft::get_timeout_error);
  CHECK_FALSE(r.is_ready());
  weft_test::gate_open = true;
  CHECK(weft::get(r) == 7);
  CHECK(weft::get(r, 50ms) == 7); // a ready object is returned whatever the timeout
}

TEST_CASE("get_timeout_error is a weft error but not a task error") {
  weft_test::runtime_guard rt;
  open_gate_at_exit gate;
  auto r = weft::remote(gated_value).remote(7);
  try {
    weft::get(r, 20ms);
    FAIL("get did not time out");
  } catch (const weft::task_error&) {
    FAIL("a timeout must not be a task_error");
  } catch (const weft::get_timeout_error& e) {
    CHECK(std::string(e.what()).size() > 0);
  }
}

TEST_CASE("get of a list with a timeout throws get_timeout_error when one item is late") {
  weft_test::runtime_guard rt;
  open_gate_at_exit gate;
  std::vector<weft::object_ref<int>> refs{weft::put(1), weft::remote(gated_value).remote(2)};
  CHECK_THROWS_AS(weft::get(refs, 50ms), weft::get_timeout_error);
  weft_test::gate_open = true;
  CHECK(weft::get(refs, 30s) == std::vector<int>{1, 2});
}

TEST_CASE("get of a list throws the first error without waiting for a slow item") {
  weft_test::runtime_guard rt;
  open_gate_at_exit gate;
  auto slow = weft::remote(gated_value).remote(1);
  auto failing = weft::remote(fail_now).remote(2);
  std::vector<weft::object_ref<int>> refs{slow, failing};
  CHECK_THROWS_AS(weft::get(refs), weft::task_error);
  // The gate is still shut: get returned while the slow task was still blocked.
  CHECK_FALSE(weft_test::gate_open.load());
  CHECK_FALSE(slow.is_ready());
  weft_test::gate_open = true;
  CHECK(weft::get(slow) == 1);
}

TEST_CASE("get of an invalid ref throws invalid_argument_error") {
  weft_test::runtime_guard rt;
  weft::object_ref<int> invalid;
  CHECK_THROWS_AS(weft::get(invalid), weft::invalid_argument_error);
  std::vector<weft::object_ref<int>> refs{weft::put(1), invalid};
  CHECK_THROWS_AS(weft::get(refs), weft::invalid_argument_error);
}

// ---- wait ----

TEST_CASE("wait returns a wait_result that destructures into ready and not_ready") {
  weft_test::runtime_guard rt;
  open_gate_at_exit gate;
  std::vector<weft::object_ref<int>> refs{weft::put(1), weft::remote(gated_value).remote(2), weft::put(3)};
  auto [ready, not_ready] = weft::wait(refs, 2, 30s);
  static_assert(std::is_same_v<decltype(weft::wait(refs)), weft::wait_result<int>>);
  REQUIRE(ready.size() == 2);
  CHECK(ready[0] == refs[0]);
  CHECK(ready[1] == refs[2]);
  REQUIRE(not_ready.size() == 1);
  CHECK(not_ready[0] == refs[1]);
}

TEST_CASE("wait returns at most num_returns ready refs in input order and the rest as not ready") {
  weft_test::runtime_guard rt;
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < 6; ++i)
    refs.push_back(weft::put(i));
  auto [ready, not_ready] = weft::wait(refs, 2);
  REQUIRE(ready.size() == 2);
  CHECK(not_ready.size() == 4);
  for (const auto& r : ready)
    CHECK(r.is_ready());
  // All are ready: ready holds the first num_returns of them in input order.
  CHECK(ready[0] == refs[0]);
  CHECK(ready[1] == refs[1]);
  // Both lists keep input order and together hold every ref exactly once.
  auto position = [&](const weft::object_ref<int>& r) { return std::find(refs.begin(), refs.end(), r) - refs.begin(); };
  CHECK(position(ready[0]) < position(ready[1]));
  for (std::size_t i = 1; i < not_ready.size(); ++i)
    CHECK(position(not_ready[i - 1]) < position(not_ready[i]));
  std::vector<weft::object_ref<int>> all = ready;
  all.insert(all.end(), not_ready.begin(), not_ready.end());
  std::sort(all.begin(), all.end(), [&](const auto& a, const auto& b) { return position(a) < position(b); });
  CHECK(all == refs);
}

TEST_CASE("wait for all refs returns them all as ready in input order") {
  weft_test::runtime_guard rt;
  const auto sleepy = weft::remote(sleep_then_return);
  std::vector<weft::object_ref<int>> refs{sleepy.remote(0, 100), sleepy.remote(1, 0), sleepy.remote(2, 50)};
  auto [ready, not_ready] = weft::wait(refs, 3, 30s);
  CHECK(ready == refs);
  CHECK(not_ready.empty());
  for (const auto& r : refs)
    CHECK(r.is_ready());
}

TEST_CASE("wait with a timeout returns fewer refs when not enough are ready") {
  weft_test::runtime_guard rt;
  open_gate_at_exit gate;
  auto slow = weft::remote(gated_value).remote(1);
  auto fast = weft::put(2);
  std::vector<weft::object_ref<int>> refs{slow, fast};
  auto [ready, not_ready] = weft::wait(refs, 2, 100ms);
  REQUIRE(ready.size() == 1);
  CHECK(ready[0] == fast);
  REQUIRE(not_ready.size() == 1);
  CHECK(not_ready[0] == slow);
}

TEST_CASE("wait with num_returns zero returns at once with nothing ready") {
  weft_test::runtime_guard rt;
  open_gate_at_exit gate;
  std::vector<weft::object_ref<int>> refs{weft::remote(gated_value).remote(1), weft::put(2)};
  auto [ready, not_ready] = weft::wait(refs, 0);
  CHECK(ready.empty());
  CHECK(not_ready == refs);
}

TEST_CASE("wait counts failed tasks as ready and does not throw") {
  weft_test::runtime_guard rt;
  open_gate_at_exit gate;
  auto slow = weft::remote(gated_value).remote(1);
  auto failing = weft::remote(fail_now).remote(2);
  std::vector<weft::object_ref<int>> refs{slow, failing};
  weft::wait_result<int> result;
  CHECK_NOTHROW(result = weft::wait(refs, 1, 30s));
  REQUIRE(result.ready.size() == 1);
  CHECK(result.ready[0] == failing);
  REQUIRE(result.not_ready.size() == 1);
  CHECK(result.not_ready[0] == slow);
  CHECK_THROWS_AS(weft::get(failing), weft::task_error);
}

TEST_CASE("wait rejects duplicate refs, invalid refs and a num_returns out of range") {
  weft_test::runtime_guard rt;
  auto a = weft::put(1);
  auto b = weft::put(2);
  CHECK_THROWS_AS(weft::wait(std::vector<weft::object_ref<int>>{a, a}), weft::invalid_argument_error);
  CHECK_THROWS_AS(weft::wait(std::vector<weft::object_ref<int>>{a, weft::object_ref<int>{}}),
                  weft::invalid_argument_error);
  CHECK_THROWS_AS(weft::wait(std::vector<weft::object_ref<int>>{a, b}, 3), weft::invalid_argument_error);
  CHECK_THROWS_AS(weft::wait(std::vector<weft::object_ref<int>>{a, b}, -1), weft::invalid_argument_error);
}

// ---- ref identity and lifetime ----

TEST_CASE("is_ready turns true once the producing task finished") {
  weft_test::runtime_guard rt;
  open_gate_at_exit gate;
  auto r = weft::remote(gated_value).remote(4);
  CHECK_FALSE(r.is_ready());
  weft_test::gate_open = true;
  CHECK(weft::get(r) == 4);
  CHECK(r.is_ready());
  CHECK(weft::put(1).is_ready());
}

TEST_CASE("a default-constructed ref is invalid and not ready") {
  weft_test::runtime_guard rt;
  weft::object_ref<int> r;
  CHECK_FALSE(r.valid());
  CHECK_FALSE(r.is_ready());
  CHECK(r.id() == weft::object_id{});
  CHECK(r == weft::object_ref<int>{});
}

TEST_CASE("distinct objects have distinct ids and copies share the id") {
  weft_test::runtime_guard rt;
  auto a = weft::put(1);
  auto b = weft::put(1);
  auto c = weft::remote(add).remote(1, 0);
  CHECK(a.id() != b.id());
  CHECK(a.id() != c.id());
  CHECK(b.id() != c.id());
  CHECK(a.id() != weft::object_id{});
  CHECK(c.id() != weft::object_id{});
  auto a2 = a;
  CHECK(a2.id() == a.id());
  std::unordered_set<std::uint64_t> ids;
  for (int i = 0; i < 1000; ++i)
    ids.insert(weft::put(i).id().value);
  CHECK(ids.size() == 1000);
}

TEST_CASE("refs compare equal exactly when they name the same object") {
  weft_test::runtime_guard rt;
  auto a = weft::put(1);
  auto b = weft::put(1); // same value, different object
  auto a2 = a;
  CHECK(a == a2);
  CHECK_FALSE(a == b);
  CHECK(a != b);
  CHECK_FALSE(a == weft::object_ref<int>{});
}

TEST_CASE("std::hash of a ref agrees with equality and refs work in unordered containers") {
  weft_test::runtime_guard rt;
  auto a = weft::put(1);
  auto a2 = a;
  CHECK(std::hash<weft::object_ref<int>>{}(a) == std::hash<weft::object_ref<int>>{}(a2));
  std::unordered_set<weft::object_ref<int>> set;
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < 100; ++i) {
    refs.push_back(weft::put(i));
    set.insert(refs.back());
  }
  set.insert(refs[0]);
  CHECK(set.size() == 100);
  CHECK(set.count(refs[42]) == 1);
  CHECK(set.count(a) == 0);
}

TEST_CASE("a copied ref names the same object and keeps it alive after the original is gone") {
  weft_test::runtime_guard rt;
  weft::object_ref<std::string> copy;
  {
    auto original = weft::put(std::string("kept alive"));
    copy = original;
    CHECK(copy == original);
  }
  CHECK(copy.valid());
  CHECK(weft::get(copy) == "kept alive");
}

TEST_CASE("a moved-from ref is invalid and the target takes over the object") {
  weft_test::runtime_guard rt;
  auto a = weft::put(5);
  const auto id = a.id();
  auto b = std::move(a);
  CHECK_FALSE(a.valid()); // NOLINT(bugprone-use-after-move)
  CHECK(a.id() == weft::object_id{});
  CHECK(b.valid());
  CHECK(b.id() == id);
  CHECK(weft::get(b) == 5);

  weft::object_ref<int> c;
  c = std::move(b);
  CHECK_FALSE(b.valid()); // NOLINT(bugprone-use-after-move)
  CHECK(c.id() == id);
  CHECK(weft::get(c) == 5);
  CHECK_THROWS_AS(weft::get(b), weft::invalid_argument_error);
}

TEST_CASE("an object is freed when its last ref is gone") {
  weft_test::runtime_guard rt;
  const auto before = weft::live_objects();
  {
    auto a = weft::put(std::string("short-lived"));
    auto b = a;
    CHECK(weft::live_objects() == before + 1);
  }
  CHECK(weft::live_objects() == before);
}

TEST_CASE("refs can be copied and read from several threads at once") {
  weft_test::runtime_guard rt;
  auto shared = weft::put(std::vector<int>(1000, 3));
  std::atomic<int> wrong{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < 4; ++t)
    pool.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        auto copy = shared;
        const auto v = weft::get(copy);
        if (v.size() != 1000 || v[999] != 3)
          ++wrong;
      }
    });
  for (auto& th : pool)
    th.join();
  CHECK(wrong.load() == 0);
}
