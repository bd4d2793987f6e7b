// Object lifetime: objects are freed when the last ref (and the last pending
// task that needs them) is gone, memory stays flat over long put/get and
// task loops, refs outlive shutdown, and weft refuses to work before init()
// or on bad refs.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <unistd.h>
#include <vector>

#include "weft_test.hpp"

using namespace std::chrono_literals;
using Catch::Matchers::Contains;

// Sanitizers keep freed memory aside (ASan's quarantine alone holds up to
// 256 MB) and add shadow memory, so RSS says nothing about leaks there; the
// RSS bounds are checked only in plain builds (LeakSanitizer covers the rest).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define WEFT_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define WEFT_TEST_SANITIZED 1
#endif
#endif
#ifndef WEFT_TEST_SANITIZED
#define WEFT_TEST_SANITIZED 0
#endif

namespace {

using weft_test::what_of;

using weft_test::bound;
using weft_test::eventually;

constexpr bool rss_is_meaningful = !WEFT_TEST_SANITIZED;

/// The runtime drops its own references to a finished task's objects just
/// after publishing them, so the count settles shortly after get() returns.
bool live_count_returns_to(std::int64_t expected) {
  return eventually([expected] { return weft::live_objects() == expected; }, 10s);
}

/// Resident set size of this process in bytes.
std::int64_t rss_bytes() {
  std::ifstream in("/proc/self/statm");
  std::int64_t size = 0;
  std::int64_t resident = 0;
  in >> size >> resident;
  return resident * static_cast<std::int64_t>(::sysconf(_SC_PAGESIZE));
}

struct shutdown_at_exit {
  ~shutdown_at_exit() { weft::shutdown(); }
};

// ---- tasks ----

int five() { return 5; }
int add_one(int x) { return x + 1; }
int fail() { throw std::runtime_error("boom"); }
std::tuple<int, std::string> pair_of() { return {1, "two"}; }
long sum(const std::vector<int>& v) { return std::accumulate(v.begin(), v.end(), 0L); }
std::vector<char> kilobyte(int i) { return std::vector<char>(1024, static_cast<char>(i)); }

std::atomic<int> g_holding{0};
std::atomic<bool> g_release{false};
int hold_until_released() {
  ++g_holding;
  eventually([] { return g_release.load() || weft::is_cancelled(); }, 30s);
  return 0;
}

std::atomic<bool> g_gate{false};
std::vector<int> gated_vector() {
  eventually([] { return g_gate.load() || weft::is_cancelled(); }, 30s);
  return std::vector<int>(100, 2);
}

struct reset_globals : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseStarting(const Catch::TestCaseInfo&) override {
    g_holding = 0;
    g_release = false;
    g_gate = false;
  }
};

} // namespace

CATCH_REGISTER_LISTENER(reset_globals)

// ---------------------------------------------------------------- live objects

TEST_CASE("a put object is freed when its last ref is dropped") {
  weft_test::runtime_guard rt;
  const auto base = weft::live_objects();
  {
    auto r = weft::put(5);
    CHECK(weft::live_objects() == base + 1);
    {
      auto copy = r;
      CHECK(weft::live_objects() == base + 1);
    }
    CHECK(weft::live_objects() == base + 1);
    CHECK(weft::get(r) == 5);
  }
  CHECK(weft::live_objects() == base);
}

TEST_CASE("task results are freed when their refs are dropped") {
  weft_test::runtime_guard rt;
  const auto base = weft::live_objects();
  {
    auto r = weft::remote(five).remote();
    CHECK(weft::live_objects() >= base + 1);
    CHECK(weft::get(r, bound) == 5);
  }
  CHECK(live_count_returns_to(base));
  {
    // results that were never read are freed too
    const auto f = weft::remote(five);
    std::vector<weft::object_ref<int>> refs;
    for (int i = 0; i < 100; ++i)
      refs.push_back(f.remote());
    CHECK(weft::wait(refs, 100, bound).ready.size() == 100);
  }
  CHECK(live_count_returns_to(base));
}

TEST_CASE("failed task results are freed when their refs are dropped") {
  weft_test::runtime_guard rt;
  const auto base = weft::live_objects();
  {
    auto r = weft::remote(fail).remote();
    auto dependent = weft::remote(add_one).remote(r);
    CHECK_THROWS_AS(weft::get(dependent, bound), weft::task_error);
  }
  CHECK(live_count_returns_to(base));
}

TEST_CASE("each result of a multi-return task is freed with its own ref") {
  weft_test::runtime_guard rt;
  const auto base = weft::live_objects();
  {
    auto [a, b] = weft::remote(pair_of).num_returns<2>().remote();
    CHECK(weft::get(a, bound) == 1);
    CHECK(weft::live_objects() == base + 2);
    a = {};
    CHECK(live_count_returns_to(base + 1)); // once the finished task let go of it
    CHECK(weft::get(b, bound) == "two");
  }
  CHECK(weft::live_objects() == base);
}

TEST_CASE("an argument of a pending task stays alive after the caller dropped its ref") {
  weft_test::runtime_guard rt;
  const auto base = weft::live_objects();
  const auto holder = weft::remote(hold_until_released);
  std::vector<weft::object_ref<int>> holders{holder.remote(), holder.remote()};
  REQUIRE(eventually([] { return g_holding.load() == 2; }));
  weft::object_ref<long> result;
  {
    auto arg = weft::put(std::vector<int>(1000, 3));
    result = weft::remote(sum).remote(arg);
  } // the caller's ref to the argument is gone; the queued task still needs it
  CHECK(weft::live_objects() == base + 2 + 2); // holders' results, the argument, the task's result
  g_release = true;
  CHECK(weft::get(result, bound) == 3000);
  CHECK(weft::get(holders, bound) == std::vector<int>{0, 0});
  holders.clear();
  CHECK(live_count_returns_to(base + 1)); // the argument went with the task
  result = {};
  CHECK(weft::live_objects() == base);
}

TEST_CASE("a not-yet-ready argument stays alive after the caller dropped its ref") {
  weft_test::runtime_guard rt;
  const auto base = weft::live_objects();
  weft::object_ref<long> result;
  {
    auto arg = weft::remote(gated_vector).remote();
    result = weft::remote(sum).remote(arg);
  }
  CHECK_FALSE(result.is_ready());
  g_gate = true;
  CHECK(weft::get(result, bound) == 200);
  CHECK(live_count_returns_to(base + 1));
  result = {};
  CHECK(weft::live_objects() == base);
}

// ---------------------------------------------------------------- flat memory

TEST_CASE("a million put/get/drop rounds keep memory flat") {
  weft_test::runtime_guard rt;
  using payload = std::array<std::uint64_t, 32>; // 256 bytes stored in the cell itself
  const auto base = weft::live_objects();
  std::int64_t wrong = 0;
  auto rounds = [&](std::uint64_t n) {
    for (std::uint64_t i = 0; i < n; ++i) {
      payload p{};
      p[0] = i;
      p[31] = ~i;
      auto r = weft::put(p);
      const payload back = weft::get(r);
      wrong += back[0] != i || back[31] != ~i;
    }
  };
  rounds(100'000);
  const auto warm = rss_bytes();
  rounds(1'000'000);
  const auto after = rss_bytes();
  CHECK(wrong == 0);
  CHECK(weft::live_objects() == base);
  // A leaked cell costs over 300 bytes here (the 256-byte payload, the cell's
  // header, malloc's overhead), so leaking every round would add more than
  // 300 MB. 64 MB leaves room for allocator noise on a shared machine while
  // still catching a leak of even a fifth of the rounds.
  INFO("RSS after warm-up " << warm / 1024 << " KiB, after 1M rounds " << after / 1024 << " KiB");
  if (rss_is_meaningful)
    CHECK(after - warm < 64 * 1024 * 1024);
}

TEST_CASE("100k tasks returning 1 KB each keep memory flat") {
  weft_test::runtime_guard rt;
  const auto f = weft::remote(kilobyte);
  const auto base = weft::live_objects();
  std::int64_t wrong = 0;
  auto rounds = [&](int n) {
    constexpr int batch = 64;
    for (int done = 0; done < n; done += batch) {
      std::vector<weft::object_ref<std::vector<char>>> refs;
      for (int i = 0; i < batch; ++i)
        refs.push_back(f.remote(done + i));
      const auto values = weft::get(refs, bound);
      for (int i = 0; i < batch; ++i)
        wrong += values[static_cast<std::size_t>(i)].size() != 1024 ||
                 values[static_cast<std::size_t>(i)][0] != static_cast<char>(done + i);
    }
  };
  rounds(10'000);
  const auto warm = rss_bytes();
  rounds(100'000);
  const auto after = rss_bytes();
  CHECK(wrong == 0);
  CHECK(live_count_returns_to(base));
  // Leaking each result would add over 100 MB (1 KB of data plus the cell
  // and the task); 64 MB tolerates allocator noise on a shared machine.
  INFO("RSS after warm-up " << warm / 1024 << " KiB, after 100k tasks " << after / 1024 << " KiB");
  if (rss_is_meaningful)
    CHECK(after - warm < 64 * 1024 * 1024);
}

// ---------------------------------------------------------------- shutdown

TEST_CASE("refs outlive shutdown: they stay ready but get throws not_initialized_error") {
  shutdown_at_exit stop;
  weft::init({.num_cpus = 2});
  const auto base = weft::live_objects();
  auto put_ref = weft::put(7);
  auto task_ref = weft::remote(five).remote();
  REQUIRE(weft::get(task_ref, bound) == 5);
  weft::shutdown();
  CHECK(put_ref.is_ready());
  CHECK(task_ref.is_ready());
  CHECK(put_ref.valid());
  const auto msg = what_of<weft::not_initialized_error>([&] { weft::get(put_ref); });
  CHECK_THAT(msg, Contains("weft::init()"));
  CHECK_THROWS_AS(weft::get(task_ref, bound), weft::not_initialized_error);
  auto copy = put_ref;
  CHECK(copy == put_ref);
  put_ref = {};
  task_ref = {};
  copy = {};
  CHECK(weft::live_objects() == base);
}

// ---------------------------------------------------------------- misuse

TEST_CASE("put before init throws not_initialized_error telling to call weft::init()") {
  REQUIRE_FALSE(weft::is_initialized());
  const auto base = weft::live_objects();
  const auto msg = what_of<weft::not_initialized_error>([] { weft::put(1); });
  CHECK_THAT(msg, Contains("weft::init()"));
  CHECK(weft::live_objects() == base);
}

TEST_CASE("remote before init throws not_initialized_error and leaks nothing") {
  REQUIRE_FALSE(weft::is_initialized());
  const auto base = weft::live_objects();
  const auto msg = what_of<weft::not_initialized_error>([] { weft::remote(five).remote(); });
  CHECK_THAT(msg, Contains("weft::init()"));
  const auto msg2 = what_of<weft::not_initialized_error>([] { weft::remote(pair_of).num_returns<2>().remote(); });
  CHECK_THAT(msg2, Contains("weft::init()"));
  CHECK(weft::live_objects() == base);
}

TEST_CASE("get, wait and cancel before init throw not_initialized_error") {
  REQUIRE_FALSE(weft::is_initialized());
  weft::object_ref<int> none;
  CHECK_THAT(what_of<weft::not_initialized_error>([&] { weft::get(none); }), Contains("weft::init()"));
  CHECK_THAT(what_of<weft::not_initialized_error>([&] { weft::get(none, 1s); }), Contains("weft::init()"));
  CHECK_THAT(what_of<weft::not_initialized_error>([&] { weft::wait(std::vector{none}, 0); }), Contains("weft::init()"));
  CHECK_THAT(what_of<weft::not_initialized_error>([&] { weft::cancel(none); }), Contains("weft::init()"));
}

TEST_CASE("get, wait and cancel after shutdown throw not_initialized_error for a ref of the old runtime") {
  weft::object_ref<int> old;
  {
    weft_test::runtime_guard rt;
    old = weft::put(3);
  }
  CHECK_THROWS_AS(weft::get(old), weft::not_initialized_error);
  CHECK_THROWS_AS(weft::wait(std::vector{old}, 1), weft::not_initialized_error);
  CHECK_THROWS_AS(weft::cancel(old), weft::not_initialized_error);
  CHECK_THROWS_AS(weft::put(4), weft::not_initialized_error);
}

TEST_CASE("get on a default-constructed ref throws invalid_argument_error") {
  weft_test::runtime_guard rt;
  weft::object_ref<int> none;
  CHECK_FALSE(none.valid());
  CHECK_FALSE(none.is_ready());
  CHECK_THROWS_AS(weft::get(none), weft::invalid_argument_error);
  CHECK_THROWS_AS(weft::get(none, 1s), weft::invalid_argument_error);
  CHECK_THROWS_AS(weft::get(std::vector{weft::put(1), none}), weft::invalid_argument_error);
  CHECK_THROWS_AS(weft::wait(std::vector{none}), weft::invalid_argument_error);
}

TEST_CASE("passing a default-constructed ref as a task argument throws invalid_argument_error") {
  weft_test::runtime_guard rt;
  const auto base = weft::live_objects();
  CHECK_THROWS_AS(weft::remote(add_one).remote(weft::object_ref<int>{}), weft::invalid_argument_error);
  CHECK(weft::live_objects() == base);
}

TEST_CASE("wait with the same ref twice throws invalid_argument_error") {
  weft_test::runtime_guard rt;
  auto r = weft::put(1);
  auto other = weft::put(2);
  CHECK_THROWS_AS(weft::wait(std::vector{r, other, r}, 1), weft::invalid_argument_error);
  auto copy = r; // a copy is the same object
  CHECK_THROWS_AS(weft::wait(std::vector{r, copy}, 1), weft::invalid_argument_error);
}

TEST_CASE("wait with num_returns above the number of refs throws invalid_argument_error") {
  weft_test::runtime_guard rt;
  auto r = weft::put(1);
  const auto msg = what_of<weft::invalid_argument_error>([&] { weft::wait(std::vector{r}, 2); });
  CHECK_THAT(msg, Contains("num_returns") && Contains("2"));
}

TEST_CASE("wait with a negative num_returns throws invalid_argument_error") {
  weft_test::runtime_guard rt;
  auto r = weft::put(1);
  const auto msg = what_of<weft::invalid_argument_error>([&] { weft::wait(std::vector{r}, -1); });
  CHECK_THAT(msg, Contains("num_returns") && Contains("-1"));
}

TEST_CASE("wait with num_returns 0 returns at once with nothing ready") {
  weft_test::runtime_guard rt;
  auto r = weft::put(1);
  auto [ready, not_ready] = weft::wait(std::vector{r}, 0);
  CHECK(ready.empty());
  CHECK(not_ready.size() == 1);
}

TEST_CASE("init twice throws weft::error and leaves the first runtime working") {
  weft_test::runtime_guard rt;
  const auto msg = what_of<weft::error>([] { weft::init({.num_cpus = 1}); });
  CHECK_THAT(msg, Contains("already initialized"));
  CHECK(weft::is_initialized());
  CHECK(weft::get(weft::remote(five).remote(), bound) == 5);
}
