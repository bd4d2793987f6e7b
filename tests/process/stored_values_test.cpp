// Big encoded values cross processes in the node's shared-memory store: a
// task's arguments and its result at least config::object_store_threshold
// long are copied once into a store block, and the other side decodes them
// where they lie (a std::vector<T> with one memcpy). Blocks are freed once
// both sides are done, also when a worker dies, and a retry reads the same
// arguments again.
#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "process/process_test.hpp"
#include "src/node_store.hpp"
#include "src/shm_arena.hpp"
#include "src/stored_bytes.hpp"
#include "weft_test.hpp"
#include <weft/weft.hpp>

using process_test::processes;
using weft_test::bound;
using weft_test::eventually;

namespace {

constexpr std::size_t big = std::size_t{4} << 20; // bytes: far above the 100 KiB threshold

std::size_t store_bytes() { return weft::detail::node_store()->bytes_in_use(); }

std::vector<double> ramp(std::size_t n) {
  std::vector<double> v(n);
  std::iota(v.begin(), v.end(), 0.0);
  return v;
}

struct seen {
  double sum = 0;
  std::uint64_t read_here = 0;  ///< values this worker read in the store so far
  std::size_t store_in_use = 0; ///< store bytes in use while the task runs
  template <class A>
  void serialize(A& ar, unsigned) {
    ar& sum& read_here& store_in_use;
  }
};

/// In a worker: what it sees of its argument.
seen look(std::vector<double> v) {
  return {std::accumulate(v.begin(), v.end(), 0.0), weft::detail::stored_bytes_count().read, store_bytes()};
}

std::vector<double> make_ramp(std::size_t n) { return ramp(n); }

std::uint64_t stashed_here() { return weft::detail::stored_bytes_count().stashed; }

/// Killed on its first attempt (the flag file does not exist yet).
double first_attempt_dies(std::vector<double> v, std::string flag) {
  if (process_test::lines_of(flag).empty()) {
    process_test::append_line(flag, "tried");
    ::kill(::getpid(), SIGKILL);
  }
  return std::accumulate(v.begin(), v.end(), 0.0);
}

double sum_of(std::vector<double> v) { return std::accumulate(v.begin(), v.end(), 0.0); }

/// In a worker: gets a driver's object through the ref it was lent.
seen fetch_first(std::vector<weft::object_ref<std::vector<double>>> refs) {
  const auto reads = weft::detail::stored_bytes_count().read;
  const auto v = weft::get(refs.at(0));
  return {std::accumulate(v.begin(), v.end(), 0.0), weft::detail::stored_bytes_count().read - reads, store_bytes()};
}

/// An actor in a worker that keeps big vectors.
struct keeper {
  std::vector<double> kept;
  seen keep(std::vector<double> v) {
    kept = std::move(v);
    return {std::accumulate(kept.begin(), kept.end(), 0.0), weft::detail::stored_bytes_count().read, store_bytes()};
  }
  std::vector<double> give() const { return kept; }
  std::uint64_t stashed() const { return weft::detail::stored_bytes_count().stashed; }
};

/// An actor whose constructor takes a big vector.
struct seeded {
  seen at_start;
  explicit seeded(std::vector<double> v) :
    at_start{std::accumulate(v.begin(), v.end(), 0.0), weft::detail::stored_bytes_count().read, store_bytes()} {}
  seen start() const { return at_start; }
};

/// In a worker: a nested task's big result, and a big result of a call on
/// an actor in another worker, read where they lie in the store.
seen nested_results(std::size_t n, weft::actor_handle<keeper> a) {
  const auto reads = weft::detail::stored_bytes_count().read;
  const auto v = weft::get(weft::remote(make_ramp).remote(n));
  const auto w = weft::get(a.task(&keeper::give).remote());
  return {std::accumulate(v.begin(), v.end(), 0.0) + std::accumulate(w.begin(), w.end(), 0.0),
          weft::detail::stored_bytes_count().read - reads, store_bytes()};
}

} // namespace

TEST_CASE("a big std::vector argument reaches a worker through the shared store and its block is freed after") {
  weft_test::runtime_guard rt(processes);
  const auto n = big / sizeof(double);
  const auto before = weft::detail::stored_bytes_count().stashed;
  const auto s = weft::get(weft::remote(look).remote(ramp(n)), bound);
  CHECK(s.sum == Approx(static_cast<double>(n) * static_cast<double>(n - 1) / 2));
  CHECK(s.read_here >= 1);      // decoded from a block
  CHECK(s.store_in_use >= big); // which lay in the store while the task ran
  CHECK(weft::detail::stored_bytes_count().stashed == before + 1);
  CHECK(eventually([] { return store_bytes() == 0; }));
  // A small one goes inline.
  const auto small = weft::get(weft::remote(look).remote(ramp(100)), bound);
  CHECK(small.sum == Approx(4950.0));
  CHECK(weft::detail::stored_bytes_count().stashed == before + 1);
}

TEST_CASE("a big result comes back through the shared store and its block is freed once read") {
  weft_test::runtime_guard rt(processes);
  const auto n = big / sizeof(double);
  const auto read_before = weft::detail::stored_bytes_count().read;
  const auto v = weft::get(weft::remote(make_ramp).remote(n), bound);
  REQUIRE(v.size() == n);
  CHECK(v[0] == 0.0);
  CHECK(v[n - 1] == static_cast<double>(n - 1));
  CHECK(weft::detail::stored_bytes_count().read == read_before + 1);
  CHECK(weft::get(weft::remote(stashed_here).remote(), bound) >= 1); // the worker stashed it
  CHECK(eventually([] { return store_bytes() == 0; }));
  // And passed on to another task, it goes through the store again.
  auto r = weft::remote(make_ramp).remote(n);
  CHECK(weft::get(weft::remote(sum_of).remote(r), bound) ==
        Approx(static_cast<double>(n) * static_cast<double>(n - 1) / 2));
  r = {};
  CHECK(eventually([] { return store_bytes() == 0; }));
}

TEST_CASE("a big object put in the driver and got in a worker crosses in the shared store") {
  weft_test::runtime_guard rt(processes);
  const auto n = big / sizeof(double);
  auto r = weft::put(ramp(n));
  const auto s = weft::get(weft::remote(fetch_first).remote(std::vector{r}), bound);
  CHECK(s.sum == Approx(static_cast<double>(n) * static_cast<double>(n - 1) / 2));
  CHECK(s.read_here == 1); // the fetched value was decoded from a block
  CHECK(eventually([] { return store_bytes() == 0; }));
  // A small one is sent in the message.
  auto small = weft::put(ramp(10));
  CHECK(weft::get(weft::remote(fetch_first).remote(std::vector{small}), bound).read_here == 0);
}

TEST_CASE("big arguments and results of an actor in a worker cross in the shared store") {
  weft_test::runtime_guard rt(processes);
  const auto n = big / sizeof(double);
  const double total = static_cast<double>(n) * static_cast<double>(n - 1) / 2;
  auto a = weft::remote<keeper>().remote();
  const auto s = weft::get(a.task(&keeper::keep).remote(ramp(n)), bound);
  CHECK(s.sum == Approx(total));
  CHECK(s.read_here >= 1);      // its argument was decoded from a block
  CHECK(s.store_in_use >= big); // which lay in the store during the call
  const auto read_before = weft::detail::stored_bytes_count().read;
  const auto back = weft::get(a.task(&keeper::give).remote(), bound);
  REQUIRE(back.size() == n);
  CHECK(back[n - 1] == static_cast<double>(n - 1));
  CHECK(weft::detail::stored_bytes_count().read == read_before + 1); // the result too
  CHECK(weft::get(a.task(&keeper::stashed).remote(), bound) >= 1);
  CHECK(eventually([] { return store_bytes() == 0; }));
}

TEST_CASE("big results of tasks and calls made in a worker come back to it through the shared store") {
  weft_test::runtime_guard rt(processes);
  const auto n = big / sizeof(double);
  const double total = static_cast<double>(n) * static_cast<double>(n - 1) / 2;
  auto a = weft::remote<keeper>().remote();
  (void)weft::get(a.task(&keeper::keep).remote(ramp(n)), bound);
  const auto s = weft::get(weft::remote(nested_results).remote(n, a), bound);
  CHECK(s.sum == Approx(2 * total));
  CHECK(s.read_here == 2); // both results were decoded from blocks
  a = {};
  CHECK(eventually([] { return store_bytes() == 0; }));
}

TEST_CASE("big constructor arguments of an actor in a worker cross in the shared store") {
  weft_test::runtime_guard rt(processes);
  const auto n = big / sizeof(double);
  {
    auto a = weft::remote<seeded>().remote(ramp(n));
    const auto s = weft::get(a.task(&seeded::start).remote(), bound);
    CHECK(s.sum == Approx(static_cast<double>(n) * static_cast<double>(n - 1) / 2));
    CHECK(s.read_here == 1);
    CHECK(s.store_in_use >= big);
  }
  CHECK(eventually([] { return store_bytes() == 0; }));
}

TEST_CASE("a task whose worker is killed while it holds big arguments is retried with them and leaks no block") {
  process_test::let_signals_through();
  process_test::temp_dir dir;
  weft_test::runtime_guard rt(processes);
  const auto n = big / sizeof(double);
  const double total =
    weft::get(weft::remote(first_attempt_dies, {.max_retries = 1}).remote(ramp(n), dir.file("f")), bound);
  CHECK(total == Approx(static_cast<double>(n) * static_cast<double>(n - 1) / 2));
  CHECK(eventually([] { return store_bytes() == 0; }));
  CHECK(eventually([] { return weft::detail::node_store()->blocks_in_use() == 0; }));
}

TEST_CASE("big arguments go inline when the store has no room for them and spilling is off") {
  weft::config cfg = processes;
  cfg.object_store_memory = 2 << 20;
  cfg.object_spilling = false;
  weft_test::runtime_guard rt(cfg);
  const auto n = big / sizeof(double);
  const auto before = weft::detail::stored_bytes_count().stashed;
  CHECK(weft::get(weft::remote(sum_of).remote(ramp(n)), bound) ==
        Approx(static_cast<double>(n) * static_cast<double>(n - 1) / 2));
  CHECK(weft::detail::stored_bytes_count().stashed == before);
}

TEST_CASE("in local mode big arguments stay plain values") {
  weft_test::runtime_guard rt;
  const auto n = big / sizeof(double);
  const auto before = weft::detail::stored_bytes_count().stashed;
  CHECK(weft::get(weft::remote(sum_of).remote(ramp(n)), bound) ==
        Approx(static_cast<double>(n) * static_cast<double>(n - 1) / 2));
  CHECK(weft::detail::stored_bytes_count().stashed == before);
}
