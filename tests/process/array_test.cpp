// weft::array in worker-process mode: big arrays live in the node's
// shared-memory store, cross processes without a copy, are freed when the
// last reference anywhere is gone, and a full store says so.
#include <unistd.h>

#include <csignal>

#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "process/process_test.hpp"
#include "src/node_store.hpp"
#include "src/shm_arena.hpp"
#include "weft_test.hpp"
#include <weft/weft.hpp>

using Catch::Matchers::Contains;
using process_test::processes;
using weft_test::bound;
using weft_test::eventually;

namespace {

constexpr std::size_t mib = std::size_t{1} << 20;

/// What a worker saw of an array: its pid, whether the elements are the
/// shared block itself, and their sum.
struct seen {
  int pid = 0;
  bool shared = false;
  double sum = 0;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& pid& shared& sum;
  }
};

seen look(weft::array<double> a) {
  return {static_cast<int>(::getpid()), a.in_shared_memory(), std::accumulate(a.begin(), a.end(), 0.0)};
}

weft::array<double> make(std::size_t n, double value) {
  return weft::array<double>::build(n, [value](std::span<double> out) { std::fill(out.begin(), out.end(), value); });
}

/// Pipeline stage: doubles every element (a new array, made in the worker).
weft::array<double> twice(weft::array<double> a) {
  return weft::array<double>::build(a.size(), [&](std::span<double> out) {
    for (std::size_t i = 0; i < out.size(); ++i)
      out[i] = 2 * a[i];
  });
}

std::size_t store_bytes() { return weft::detail::node_store()->bytes_in_use(); }

} // namespace

TEST_CASE("a big array lives in the shared store and a worker reads it in place") {
  weft_test::runtime_guard rt(processes);
  const auto a = make(8 * mib / sizeof(double), 0.25); // 8 MiB
  CHECK(a.in_shared_memory());
  const auto s = weft::get(weft::remote(look).remote(a), bound);
  CHECK(s.pid != static_cast<int>(::getpid()));
  CHECK(s.shared); // the worker got the block itself, not a copy
  CHECK(s.sum == Approx(0.25 * static_cast<double>(a.size())));
  // Through put() and a ref argument too.
  const auto ref = weft::put(a);
  const auto s2 = weft::get(weft::remote(look).remote(ref), bound);
  CHECK(s2.shared);
  CHECK(s2.sum == Approx(s.sum));
}

TEST_CASE("a small array is copied and not placed in the store") {
  weft_test::runtime_guard rt(processes);
  const auto a = make(16, 1.0);
  CHECK_FALSE(a.in_shared_memory());
  const auto s = weft::get(weft::remote(look).remote(a), bound);
  CHECK_FALSE(s.shared);
  CHECK(s.sum == 16.0);
}

TEST_CASE("arrays made in workers flow to other workers without copies and are freed after") {
  weft_test::runtime_guard rt(processes);
  const std::size_t n = 4 * mib / sizeof(double);
  {
    auto first = weft::remote(twice).remote(make(n, 1.0));
    auto second = weft::remote(twice).remote(first); // another (or the same) worker reads the first's result in place
    const auto result = weft::get(second, bound);
    CHECK(result.in_shared_memory());
    CHECK(result.size() == n);
    CHECK(result[0] == 4.0);
    CHECK(result[n - 1] == 4.0);
    CHECK(weft::get(weft::remote(look).remote(second), bound).shared);
    CHECK(store_bytes() >= n * sizeof(double));
  }
  // Every reference (driver, workers, objects) is gone: so are the arrays.
  CHECK(eventually([] { return store_bytes() == 0; }));
}

TEST_CASE("an actor in a worker takes and returns shared arrays") {
  struct keeper {
    weft::array<double> kept;
    double keep(weft::array<double> a) {
      kept = a;
      return a[0];
    }
    weft::array<double> give() const { return kept; }
  };
  weft_test::runtime_guard rt(processes);
  auto h = weft::remote<keeper>().remote();
  const auto a = make(mib, 3.0);
  CHECK(weft::get(h.task(&keeper::keep).remote(a), bound) == 3.0);
  const auto back = weft::get(h.task(&keeper::give).remote(), bound);
  CHECK(back.in_shared_memory());
  CHECK(back.data() == a.data()); // the very same block, mapped at the same place in the driver
}

TEST_CASE("a full store throws object_store_full_error and has room again once arrays are dropped") {
  weft::config cfg = processes;
  cfg.object_store_memory = 16 * mib;
  weft_test::runtime_guard rt(cfg);
  auto a = make(6 * mib / sizeof(double), 1.0);
  auto b = make(6 * mib / sizeof(double), 1.0);
  const auto msg = weft_test::what_of<weft::object_store_full_error>([] { make(6 * mib / sizeof(double), 1.0); });
  CHECK_THAT(msg, Contains("object store is full") && Contains("object_store_memory"));
  a = weft::array<double>{};
  const auto c = make(6 * mib / sizeof(double), 2.0);
  CHECK(c.in_shared_memory());
  // A worker that makes an array too big for the store fails its task with
  // that error (6 MiB in c, 5 MiB argument, 5 MiB more do not fit in 16).
  b = weft::array<double>{};
  try {
    weft::get(weft::remote(twice).remote(make(5 * mib / sizeof(double), 1.0)), bound);
    FAIL("expected task_error");
  } catch (const weft::task_error& e) {
    CHECK(e.type_name() == "weft::object_store_full_error");
    CHECK_THAT(e.message(), Contains("object store is full"));
  }
}

TEST_CASE("a worker killed while it holds an array does not take the array from others") {
  process_test::let_signals_through();
  weft_test::runtime_guard rt(processes);
  const auto a = make(2 * mib / sizeof(double), 5.0);
  auto die = weft::remote(+[](weft::array<double> x) -> double {
               if (x[0] == 5.0)
                 ::raise(SIGKILL);
               return x[0];
             })
               .options({.max_retries = 0})
               .remote(a);
  CHECK_THROWS_AS(weft::get(die, bound), weft::worker_crashed_error);
  CHECK(a[0] == 5.0);
  CHECK(weft::get(weft::remote(look).remote(a), bound).sum == Approx(5.0 * static_cast<double>(a.size())));
}
