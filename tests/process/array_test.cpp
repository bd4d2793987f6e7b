// weft::array in worker-process mode: big arrays live in the node's
// shared-memory store, cross processes without a copy, are freed when the
// last reference anywhere is gone, and a full store says so.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>

#include <cstdint>
#include <numeric>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "process/process_test.hpp"
#include "src/node_store.hpp"
#include "src/shm_arena.hpp"
#include "src/spill_store.hpp"
#include "src/worker_main.hpp"
#include "weft_test.hpp"
#include <weft/weft.hpp>

using Catch::Matchers::Contains;
using process_test::processes;
using weft_test::bound;
using weft_test::eventually;

namespace {

constexpr std::size_t mib = std::size_t{1} << 20;

/// Where this process sees `a`'s elements: bytes from the start of the
/// node's store (the same in every process for the same block), or -1.
std::int64_t store_position(const weft::array<double>& a) {
  const auto* store = weft::detail::node_store();
  if (!store || !a.in_shared_memory() || a.spilled())
    return -1;
  return reinterpret_cast<const std::byte*>(a.data()) - store->data(0);
}

/// What a worker saw of an array: its pid, whether the elements are in the
/// store, where in it (a copy at or above the threshold is in the store
/// too, but elsewhere), the store's blocks in use meanwhile, and their sum.
struct seen {
  int pid = 0;
  bool shared = false;
  std::int64_t position = -1;
  std::size_t blocks = 0;
  double sum = 0;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& pid& shared& position& blocks& sum;
  }
};

seen look(weft::array<double> a) {
  const auto* store = weft::detail::node_store();
  return {static_cast<int>(::getpid()), a.in_shared_memory(), store_position(a), store ? store->blocks_in_use() : 0,
          std::accumulate(a.begin(), a.end(), 0.0)};
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

/// Whether arrays of these many bytes, built in a worker, land in the shared store.
std::vector<bool> stored_in_worker(std::vector<std::size_t> sizes) {
  std::vector<bool> out;
  for (std::size_t bytes : sizes)
    out.push_back(weft::array<char>::build(bytes, [](std::span<char> b) {
                    std::fill(b.begin(), b.end(), 'w');
                  }).in_shared_memory());
  return out;
}

bool stored_here(std::size_t bytes) {
  return weft::array<char>::build(bytes, [](std::span<char> b) { std::fill(b.begin(), b.end(), 'd'); })
    .in_shared_memory();
}

} // namespace

TEST_CASE("a big array lives in the shared store and a worker reads it in place") {
  weft_test::runtime_guard rt(processes);
  const auto a = make(8 * mib / sizeof(double), 0.25); // 8 MiB
  CHECK(a.in_shared_memory());
  const auto position = store_position(a);
  REQUIRE(position > 0);
  const auto blocks = weft::detail::node_store()->blocks_in_use();
  const auto s = weft::get(weft::remote(look).remote(a), bound);
  CHECK(s.pid != static_cast<int>(::getpid()));
  // The worker reads the block itself, not a copy: the same place in the
  // store, and no block more while it holds it.
  CHECK(s.shared);
  CHECK(s.position == position);
  CHECK(s.blocks == blocks);
  CHECK(s.sum == Approx(0.25 * static_cast<double>(a.size())));
  // Through put() and a ref argument too.
  const auto ref = weft::put(a);
  const auto s2 = weft::get(weft::remote(look).remote(ref), bound);
  CHECK(s2.shared);
  CHECK(s2.position == position);
  CHECK(s2.blocks == blocks);
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

TEST_CASE("the store holds 30% of physical memory unless object_store_memory says otherwise") {
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const auto ram = static_cast<std::size_t>(::sysconf(_SC_PHYS_PAGES)) * page;
  const std::size_t expected = (ram / 10 * 3 + page - 1) / page * page; // rounded up to whole pages
  {
    weft_test::runtime_guard rt(processes);
    REQUIRE(weft::detail::node_store());
    CHECK(weft::detail::node_store()->capacity() == expected);
  }
  weft::config cfg = processes;
  cfg.object_store_memory = 3 * mib;
  weft_test::runtime_guard rt(cfg);
  REQUIRE(weft::detail::node_store());
  CHECK(weft::detail::node_store()->capacity() == 3 * mib);
}

TEST_CASE("an object_store_memory below 1 MiB is refused at init and 1 MiB is accepted") {
  weft::config cfg = processes;
  cfg.object_store_memory = mib - 1;
  const auto msg = weft_test::what_of<weft::invalid_argument_error>([&] { weft::init(cfg); });
  CHECK_THAT(msg, Contains("object_store_memory") && Contains(std::to_string(mib - 1)) && Contains("1 MiB"));
  CHECK_FALSE(weft::is_initialized());
  cfg.object_store_memory = mib;
  weft_test::runtime_guard rt(cfg);
  REQUIRE(weft::detail::node_store());
  CHECK(weft::detail::node_store()->capacity() == mib);
  CHECK(stored_here(256 * 1024)); // and it stores arrays
}

TEST_CASE("arrays of at least object_store_threshold bytes go to the store, smaller ones to the heap") {
  const std::size_t def = weft::config{}.object_store_threshold;
  CHECK(def == 100 * 1024); // the documented default
  {
    weft_test::runtime_guard rt(processes);
    CHECK(stored_here(def));
    CHECK_FALSE(stored_here(def - 1));
    CHECK(weft::get(weft::remote(stored_in_worker).remote(std::vector<std::size_t>{def - 1, def}), bound) ==
          std::vector<bool>{false, true});
  }
  weft::config cfg = processes;
  cfg.object_store_threshold = 4096;
  weft_test::runtime_guard rt(cfg);
  CHECK(stored_here(4096));
  CHECK_FALSE(stored_here(4095));
  // Workers are told the threshold too.
  CHECK(weft::get(weft::remote(stored_in_worker).remote(std::vector<std::size_t>{4095, 4096, def - 1}), bound) ==
        std::vector<bool>{false, true, true});
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
    // The driver and the next worker see the block the worker wrote, where
    // it wrote it: no copy on the way back or on the way out.
    const auto at = store_position(result);
    CHECK(at > 0);
    const auto s = weft::get(weft::remote(look).remote(second), bound);
    CHECK(s.shared);
    CHECK(s.position == at);
    CHECK(weft::get(weft::remote(look).remote(first), bound).position == store_position(weft::get(first, bound)));
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

TEST_CASE("a full store without spilling throws object_store_full_error and has room again once arrays are dropped") {
  weft::config cfg = processes;
  cfg.object_store_memory = 16 * mib;
  cfg.object_spilling = false;
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

namespace {

/// Blocks (a task) until `path` exists; gives up after 30 s.
void wait_for_file(const std::string& path) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (::access(path.c_str(), F_OK) != 0 && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
}

/// The first line of `path` once there is one (within 20 s), else "".
std::string first_line(const std::string& path) {
  std::string line;
  eventually([&] {
    auto lines = process_test::lines_of(path);
    if (lines.empty())
      return false;
    line = lines.front();
    return true;
  });
  return line;
}

/// A task that holds its argument and two arrays of its own, says its pid
/// in `dir`/pid, then waits to be killed.
double hold_and_wait(weft::array<double> a, std::string dir) {
  const auto b = make(a.size(), 2.0);
  const auto c = twice(b);
  process_test::append_line(dir + "/pid", std::to_string(::getpid()));
  wait_for_file(dir + "/never");
  return a[0] + b[0] + c[0];
}

/// An actor whose state holds the arrays it was given and one of its own.
struct hoarder {
  std::vector<weft::array<double>> kept;
  int keep(weft::array<double> a) {
    kept.push_back(a);
    kept.push_back(twice(a));
    return static_cast<int>(kept.size());
  }
};

/// Sums `x` into `out` (a child task, submitted by a task in a worker).
double sum_into(weft::array<double> x, std::string out) {
  const double s = std::accumulate(x.begin(), x.end(), 0.0);
  process_test::append_line(out, std::to_string(s));
  return s;
}

double nothing() { return 0; }

/// Holds a gate resource until `dir`/open exists.
int gatekeeper(std::string dir) {
  wait_for_file(dir + "/open");
  return 0;
}

/// Submits sum_into(x) for an array x of its own (queued behind the
/// gatekeeper), makes sure the driver has the submission, says its pid,
/// then waits to be killed.
double submit_and_wait(std::string dir) {
  const auto x = make(mib / sizeof(double), 4.0);
  auto child = weft::remote(sum_into).options({.num_cpus = 0, .resources = {{"gate", 1}}}).remote(x, dir + "/sum");
  weft::get(weft::remote(nothing).options({.num_cpus = 0}).remote(), bound); // sent after the submission
  process_test::append_line(dir + "/pid", std::to_string(::getpid()));
  wait_for_file(dir + "/never");
  return weft::get(child, bound);
}

} // namespace

TEST_CASE("a task killed while it holds arrays leaves none of its references behind") {
  process_test::let_signals_through();
  weft_test::runtime_guard rt(processes);
  process_test::temp_dir dir;
  auto* store = weft::detail::node_store();
  const auto bytes_before = store->bytes_in_use();
  const auto blocks_before = store->blocks_in_use();
  auto a = make(2 * mib / sizeof(double), 1.0);
  const auto a_bytes = store->bytes_in_use() - bytes_before;
  auto r = weft::remote(hold_and_wait).options({.max_retries = 0}).remote(a, dir.file(""));
  const int pid = std::stoi(first_line(dir.file("pid")));
  CHECK(store->blocks_in_use() == blocks_before + 3); // a, and b and c in the worker
  ::kill(pid, SIGKILL);
  CHECK(process_test::error_of<weft::worker_crashed_error>(r));
  // The worker's references are gone; the driver's to a is not.
  CHECK(eventually([&] { return store->blocks_in_use() == blocks_before + 1; }));
  CHECK(store->bytes_in_use() == bytes_before + a_bytes);
  CHECK(a[0] == 1.0);
  CHECK(weft::get(weft::remote(look).remote(a), bound).sum == Approx(static_cast<double>(a.size())));
  a = weft::array<double>{};
  CHECK(eventually([&] { return store->blocks_in_use() == blocks_before; }));
  CHECK(store->bytes_in_use() == bytes_before);
  CHECK(store->audit().empty());
}

TEST_CASE("an actor killed while its state holds arrays leaves none of their references behind") {
  weft_test::runtime_guard rt(processes);
  auto* store = weft::detail::node_store();
  const auto bytes_before = store->bytes_in_use();
  const auto blocks_before = store->blocks_in_use();
  {
    auto h = weft::remote<hoarder>().remote();
    {
      const auto a = make(mib / sizeof(double), 1.0);
      CHECK(weft::get(h.task(&hoarder::keep).remote(a), bound) == 2);
      CHECK(weft::get(h.task(&hoarder::keep).remote(make(mib / sizeof(double), 2.0)), bound) == 4);
    }
    // All held by the actor's state once the calls' arguments are gone.
    CHECK(eventually([&] { return store->blocks_in_use() == blocks_before + 4; }));
    weft::kill(h);
  }
  CHECK(eventually([&] { return store->blocks_in_use() == blocks_before; }));
  CHECK(store->bytes_in_use() == bytes_before);
  CHECK(store->audit().empty());
}

TEST_CASE("a child task still reads the array its killed parent passed it") {
  process_test::let_signals_through();
  weft::config cfg = processes;
  cfg.resources = {{"gate", 1}};
  weft_test::runtime_guard rt(cfg);
  process_test::temp_dir dir;
  auto* store = weft::detail::node_store();
  const auto blocks_before = store->blocks_in_use();
  auto gate = weft::remote(gatekeeper).options({.num_cpus = 0, .resources = {{"gate", 1}}}).remote(dir.file(""));
  auto parent = weft::remote(submit_and_wait).options({.max_retries = 0}).remote(dir.file(""));
  const int pid = std::stoi(first_line(dir.file("pid")));
  ::kill(pid, SIGKILL);
  CHECK(process_test::error_of<weft::worker_crashed_error>(parent));
  process_test::append_line(dir.file("open"), "");
  CHECK(weft::get(gate, bound) == 0);
  // The child ran after its parent died, on the parent's array.
  CHECK(first_line(dir.file("sum")) == std::to_string(4.0 * static_cast<double>(mib / sizeof(double))));
  CHECK(eventually([&] { return store->blocks_in_use() == blocks_before; }));
  CHECK(store->audit().empty());
}

namespace {

weft::config small_store(const process_test::temp_dir& dir, bool spilling = true) {
  weft::config cfg = processes;
  cfg.object_store_memory = 4 * mib;
  cfg.object_spilling = spilling;
  cfg.object_spill_directory = dir.file("spill");
  return cfg;
}

std::size_t spill_files() { return weft::detail::node_spill_store()->files(); }

/// The node store's blocks and bytes in use when it was made; all_back()
/// waits until they are so again.
struct store_baseline {
  weft::detail::shm_arena* store = weft::detail::node_store();
  std::size_t blocks = store->blocks_in_use();
  std::size_t bytes = store->bytes_in_use();
  bool all_back() const {
    return eventually([&] { return store->blocks_in_use() == blocks; }) && store->bytes_in_use() == bytes;
  }
};

/// Whether a worker got a spilled array (and reads it in place).
bool spilled_here(weft::array<double> a) { return a.spilled() && a.in_shared_memory(); }

} // namespace

TEST_CASE("arrays that do not fit in a full store spill to files and cross processes") {
  process_test::temp_dir dir;
  {
    weft_test::runtime_guard rt(small_store(dir));
    const std::size_t n = 3 * mib / sizeof(double);
    auto a = make(n, 1.0); // fits
    auto b = make(n, 2.0); // does not: a file
    CHECK_FALSE(a.spilled());
    CHECK(b.spilled());
    CHECK(b.in_shared_memory());
    CHECK(spill_files() == 1);
    CHECK(weft::detail::node_spill_store()->directory().find(dir.file("spill")) == 0);
    CHECK(weft::get(weft::remote(spilled_here).remote(b), bound));
    CHECK(weft::get(weft::remote(look).remote(b), bound).sum == Approx(2.0 * static_cast<double>(n)));
    // Made in a worker (the store has no room for it there either), read
    // back in the driver and passed on to another task.
    auto c = weft::get(weft::remote(twice).remote(b), bound);
    CHECK(c.spilled());
    CHECK(c.size() == n);
    CHECK(c[0] == 4.0);
    CHECK(c[n - 1] == 4.0);
    CHECK(weft::get(weft::remote(look).remote(c), bound).sum == Approx(4.0 * static_cast<double>(n)));
    CHECK(weft::get(weft::remote(look).remote(weft::put(c)), bound).shared);
    CHECK(spill_files() == 2);
    b = weft::array<double>{};
    c = weft::array<double>{};
    CHECK(eventually([] { return spill_files() == 0; }));
    a = weft::array<double>{};
    CHECK(eventually([] { return store_bytes() == 0; }));
  }
  // Shut down with nothing spilled: the spill directory is gone too.
  CHECK(std::filesystem::is_empty(dir.file("spill")));
}

TEST_CASE("a worker killed while it holds spilled arrays leaves no spill file behind") {
  process_test::let_signals_through();
  process_test::temp_dir dir;
  weft_test::runtime_guard rt(small_store(dir));
  process_test::temp_dir flags;
  const std::size_t n = 3 * mib / sizeof(double);
  const auto filler = make(n, 0.5); // the store is nearly full from here on
  auto a = make(n, 1.0);
  REQUIRE(a.spilled());
  auto r = weft::remote(hold_and_wait).options({.max_retries = 0}).remote(a, flags.file(""));
  const int pid = std::stoi(first_line(flags.file("pid")));
  CHECK(spill_files() == 3); // a, and b and c in the worker
  ::kill(pid, SIGKILL);
  CHECK(process_test::error_of<weft::worker_crashed_error>(r));
  CHECK(eventually([] { return spill_files() == 1; }));
  CHECK(a[n - 1] == 1.0);
  a = weft::array<double>{};
  CHECK(eventually([] { return spill_files() == 0; }));
}

TEST_CASE("with spilling off a full store throws object_store_full_error as before") {
  process_test::temp_dir dir;
  weft_test::runtime_guard rt(small_store(dir, false));
  const std::size_t n = 3 * mib / sizeof(double);
  const auto a = make(n, 1.0);
  CHECK_THAT(weft_test::what_of<weft::object_store_full_error>([&] { make(n, 1.0); }),
             Contains("object store is full") && Contains("spilling is off"));
  CHECK(weft::detail::node_spill_store() == nullptr);
  CHECK_FALSE(std::filesystem::exists(dir.file("spill")));
}

TEST_CASE("encoded input naming a spill file opens nothing outside the spill directory") {
  process_test::temp_dir dir;
  weft_test::runtime_guard rt(small_store(dir));
  const std::size_t n = 3 * mib / sizeof(double);
  const auto a = make(n, 1.0);
  const auto b = make(n, 2.0);
  REQUIRE(b.spilled());
  const auto good = weft::to_bytes(b);
  CHECK(weft::from_bytes<weft::array<double>>(good).data() != nullptr); // (read in place: maps the file again)
  auto with_ref = [&](std::uint64_t ref) {
    auto bytes = good;
    std::memcpy(bytes.data() + bytes.size() - sizeof ref, &ref, sizeof ref);
    return weft_test::what_of<weft::serialization_error>([&] { weft::from_bytes<weft::array<double>>(bytes); });
  };
  constexpr std::uint64_t spill_bit = std::uint64_t{1} << 63;
  CHECK_THAT(with_ref(spill_bit | 0x1234'5640), Contains("names no live spill file")); // no such file
  CHECK_THAT(with_ref(spill_bit | 0x1234'5641), Contains("not a spill reference"));    // not a name weft makes
  // A file of the right name that weft did not make, and a link of that name.
  const std::string spill_dir = weft::detail::node_spill_store()->directory();
  process_test::append_line(spill_dir + "/80000000deadbe00", "not an array");
  CHECK_THAT(with_ref(spill_bit | 0xdead'be00), Contains("not a spill file"));
  std::filesystem::create_symlink("/etc/passwd", spill_dir + "/80000000cafeb000");
  CHECK_THAT(with_ref(spill_bit | 0xcafe'b000), Contains("cannot open"));
  std::filesystem::remove(spill_dir + "/80000000deadbe00");
  std::filesystem::remove(spill_dir + "/80000000cafeb000");
}

namespace {

/// In a worker: the worker dies (SIGKILL) right before it would post the
/// results of the batch it runs, the result of this call among them.
void die_before_results_are_sent() {
  weft::detail::test_before_results_posted.store(+[] { ::raise(SIGKILL); });
}

weft::array<char> lost_array(std::size_t bytes) {
  die_before_results_are_sent();
  return weft::array<char>::build(bytes, [](std::span<char> b) { std::fill(b.begin(), b.end(), 'x'); });
}

std::string lost_string(std::size_t bytes) { // a big value: its bytes go back in a block of the store
  die_before_results_are_sent();
  return std::string(bytes, 'y');
}

weft::object_ref<weft::array<char>> lost_ref(std::size_t bytes) { // an object of the worker's own
  die_before_results_are_sent();
  return weft::put(weft::array<char>::build(bytes, [](std::span<char> b) { std::fill(b.begin(), b.end(), 'z'); }));
}

struct result_loser {
  weft::array<char> lost(std::size_t bytes) { return lost_array(bytes); }
};

} // namespace

TEST_CASE("results lost with their worker before they were sent leave no store block behind") {
  // A result hands its store references over to the driver; until the
  // driver says it has its own, the worker keeps them in its ledger, so a
  // result that never left the worker gives them back when it is reaped.
  process_test::let_signals_through();
  weft_test::runtime_guard rt(processes);
  const store_baseline before;
  const auto no_retry = weft::task_options{.max_retries = 0};
  SECTION("an array") {
    CHECK(process_test::error_of<weft::worker_crashed_error>(
      weft::remote(lost_array).options(no_retry).remote(std::size_t{2} * mib)));
    CHECK(before.all_back());
  }
  SECTION("a big value's block") {
    CHECK(process_test::error_of<weft::worker_crashed_error>(
      weft::remote(lost_string).options(no_retry).remote(std::size_t{2} * mib)));
    CHECK(before.all_back());
  }
  SECTION("an object of the worker's own, with an array") {
    CHECK(process_test::error_of<weft::worker_crashed_error>(
      weft::remote(lost_ref).options(no_retry).remote(std::size_t{2} * mib)));
    CHECK(before.all_back());
  }
  SECTION("an actor method's array") {
    auto h = weft::remote<result_loser>().remote();
    CHECK_THROWS_AS(weft::get(h.task(&result_loser::lost).remote(std::size_t{2} * mib), bound), weft::actor_died_error);
    CHECK(before.all_back());
  }
  CHECK(before.store->audit().empty());
  // Results that do arrive are still the driver's, once.
  const auto a = weft::get(weft::remote(twice).remote(make(mib / sizeof(double), 1.0)), bound);
  CHECK(a[0] == 2.0);
  CHECK(eventually([&] { return before.store->blocks_in_use() == before.blocks + 1; }));
}

TEST_CASE("a spilled result lost with its worker before it was sent leaves no spill file behind") {
  process_test::let_signals_through();
  process_test::temp_dir dir;
  weft_test::runtime_guard rt(small_store(dir));
  const auto filler = make(3 * mib / sizeof(double), 0.5); // the store is nearly full from here on
  CHECK(process_test::error_of<weft::worker_crashed_error>(
    weft::remote(lost_array).options({.max_retries = 0}).remote(std::size_t{3} * mib)));
  CHECK(eventually([] { return spill_files() == 0; }));
  const auto c = weft::get(weft::remote(twice).remote(make(3 * mib / sizeof(double), 1.0)), bound);
  CHECK(c.spilled());
  CHECK(c[0] == 2.0);
}

namespace {

/// In a worker: the worker dies (SIGKILL) as the next value or result from
/// the driver arrives, before it reads it.
void die_as_the_next_value_arrives() {
  weft::detail::test_on_driver_value.store(+[] { ::raise(SIGKILL); });
}

/// Gets the array behind a ref (fetched from the driver): the worker dies first.
double fetch_and_die(std::vector<weft::object_ref<weft::array<double>>> refs) {
  die_as_the_next_value_arrives();
  return weft::get(refs.at(0))[0];
}

std::size_t fetch_string_and_die(std::vector<weft::object_ref<std::string>> refs) {
  die_as_the_next_value_arrives();
  return weft::get(refs.at(0)).size();
}

/// Gets the array a child task returns (forwarded by the driver): the worker dies first.
double child_result_and_die(std::size_t n) {
  auto child = weft::remote(+[](std::size_t k) { return make(k, 3.0); }).remote(n);
  die_as_the_next_value_arrives();
  return weft::get(child)[0];
}

/// An actor that fetches an array and keeps it (its worker's reference).
struct array_fetcher {
  weft::array<double> kept;
  double fetch(std::vector<weft::object_ref<weft::array<double>>> refs) {
    kept = weft::get(refs.at(0));
    return kept[0];
  }
  int pid() const { return static_cast<int>(::getpid()); }
};

} // namespace

TEST_CASE("values the driver sends a worker that dies before it reads them leave no store block behind") {
  // The driver keeps what a value or result it sends hands over until the
  // worker says it took references of its own; a worker that died first
  // never will, and the driver's go back when it is reaped.
  process_test::let_signals_through();
  weft_test::runtime_guard rt(processes);
  const store_baseline before;
  const auto no_retry = weft::task_options{.max_retries = 0};
  SECTION("a fetched array") {
    {
      std::vector refs{weft::put(make(2 * mib / sizeof(double), 1.0))};
      CHECK(
        process_test::error_of<weft::worker_crashed_error>(weft::remote(fetch_and_die).options(no_retry).remote(refs)));
    }
    CHECK(before.all_back());
  }
  SECTION("a fetched big value's block") {
    {
      std::vector refs{weft::put(std::string(2 * mib, 's'))};
      CHECK(process_test::error_of<weft::worker_crashed_error>(
        weft::remote(fetch_string_and_die).options(no_retry).remote(refs)));
    }
    CHECK(before.all_back());
  }
  SECTION("a child task's array forwarded to its parent") {
    CHECK(process_test::error_of<weft::worker_crashed_error>(
      weft::remote(child_result_and_die).options(no_retry).remote(2 * mib / sizeof(double))));
    CHECK(before.all_back());
  }
  SECTION("a fetched array the worker took and keeps when it dies") {
    // The worker said it took its own, so the driver released the one it
    // kept for the message: the reap gives back the worker's, once.
    auto h = weft::remote<array_fetcher>().options({.max_restarts = 0}).remote();
    const int pid = weft::get(h.task(&array_fetcher::pid).remote(), bound);
    std::vector refs{weft::put(make(2 * mib / sizeof(double), 6.0))};
    const auto offset = static_cast<std::uint64_t>(store_position(weft::get(refs[0])));
    CHECK(before.store->ref_count(offset) == 1); // this process's hold
    CHECK(weft::get(h.task(&array_fetcher::fetch).remote(refs), bound) == 6.0);
    CHECK(eventually([&] { return before.store->ref_count(offset) == 2; })); // and the worker's, nothing in flight
    REQUIRE(::kill(pid, SIGKILL) == 0);
    CHECK(eventually([&] { return before.store->ref_count(offset) == 1; }));
    CHECK(weft::get(refs[0])[0] == 6.0);
    refs.clear();
    CHECK(before.all_back());
  }
  CHECK(before.store->audit().empty());
  // Values a live worker reads are its own, once: they come back intact.
  std::vector refs{weft::put(make(2 * mib / sizeof(double), 5.0))};
  CHECK(weft::get(weft::remote(+[](std::vector<weft::object_ref<weft::array<double>>> r) {
                    return weft::get(r.at(0))[0];
                  }).remote(refs),
                  bound) == 5.0);
  refs.clear();
  CHECK(before.all_back());
}

namespace {

using char_refs = std::vector<weft::object_ref<weft::array<char>>>;

/// In a worker: the worker dies (SIGKILL) right before it would post the
/// submissions it collected (nested tasks, actor calls, actors to make).
void die_before_submissions_are_sent() {
  weft::detail::test_before_submissions_posted.store(+[] { ::raise(SIGKILL); });
}

/// An array put in a worker: an object of the worker's own, which travels
/// with whatever the worker sends that names it.
char_refs own_array(std::size_t bytes) {
  return {weft::put(weft::array<char>::build(bytes, [](std::span<char> b) { std::fill(b.begin(), b.end(), 'o'); }))};
}

char first_of(char_refs refs) { return weft::get(refs.at(0))[0]; }

struct reader_of_refs {
  char first = 0;
  reader_of_refs() = default;
  explicit reader_of_refs(char_refs refs) : first(first_of(std::move(refs))) {}
  char read(char_refs refs) { return first_of(std::move(refs)); }
  char made() const { return first; }
};

char submit_own_then_die(std::size_t bytes) {
  auto own = own_array(bytes);
  die_before_submissions_are_sent();
  auto child = weft::remote(first_of).remote(own);
  return weft::get(child, bound);
}

char call_with_own_then_die(weft::actor_handle<reader_of_refs> h, std::size_t bytes) {
  auto own = own_array(bytes);
  die_before_submissions_are_sent();
  auto r = h.task(&reader_of_refs::read).remote(own);
  return weft::get(r, bound);
}

char make_with_own_then_die(std::size_t bytes) {
  auto own = own_array(bytes);
  die_before_submissions_are_sent();
  auto h = weft::remote<reader_of_refs>().remote(own);
  return weft::get(h.task(&reader_of_refs::made).remote(), bound);
}

/// The same three, by a worker that lives: what they hand over reaches
/// the driver once.
char send_own(weft::actor_handle<reader_of_refs> h, std::size_t bytes) {
  const char a = weft::get(weft::remote(first_of).remote(own_array(bytes)), bound);
  const char b = weft::get(h.task(&reader_of_refs::read).remote(own_array(bytes)), bound);
  auto made = weft::remote<reader_of_refs>().remote(own_array(bytes));
  const char c = weft::get(made.task(&reader_of_refs::made).remote(), bound);
  return a == 'o' && b == 'o' && c == 'o' ? 'o' : '?';
}

} // namespace

TEST_CASE("objects a worker sends with its submissions, lost with it before they were sent, leave no store block "
          "behind") {
  // An object of a worker's own that a nested task, an actor call or an
  // actor to make names travels with the submission, handing its store
  // references over; the worker keeps them in its ledger until the driver
  // says it has its own, so a submission that never left gives them back.
  process_test::let_signals_through();
  weft_test::runtime_guard rt(processes);
  const auto no_retry = weft::task_options{.max_retries = 0};
  auto h = weft::remote<reader_of_refs>().remote();
  REQUIRE(weft::get(h.task(&reader_of_refs::made).remote(), bound) == 0); // (its worker is up)
  const store_baseline before;
  SECTION("a nested task's argument") {
    CHECK(process_test::error_of<weft::worker_crashed_error>(
      weft::remote(submit_own_then_die).options(no_retry).remote(2 * mib)));
    CHECK(before.all_back());
  }
  SECTION("an actor call's argument") {
    CHECK(process_test::error_of<weft::worker_crashed_error>(
      weft::remote(call_with_own_then_die).options(no_retry).remote(h, 2 * mib)));
    CHECK(before.all_back());
  }
  SECTION("an actor constructor's argument") {
    CHECK(process_test::error_of<weft::worker_crashed_error>(
      weft::remote(make_with_own_then_die).options(no_retry).remote(2 * mib)));
    CHECK(before.all_back());
  }
  SECTION("sent by a worker that lives on") {
    CHECK(weft::get(weft::remote(send_own).remote(h, 2 * mib), bound) == 'o');
    CHECK(before.all_back());
  }
  CHECK(before.store->audit().empty());
}

namespace {

/// A result whose encoding fails after an object of the worker's own, an
/// array in the store, went into its message.
struct half_sendable {
  weft::object_ref<weft::array<char>> own;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& own;
    throw std::runtime_error("the rest of half_sendable cannot be sent");
  }
};

half_sendable half_sent(std::size_t bytes) {
  return {weft::put(weft::array<char>::build(bytes, [](std::span<char> b) { std::fill(b.begin(), b.end(), 'h'); }))};
}

struct half_sender {
  half_sendable send(std::size_t bytes) { return half_sent(bytes); }
};

} // namespace

TEST_CASE("a result whose encoding fails half-way gives back the arrays of the objects it had carried") {
  // The error record still carries the bundle encoded before the throw:
  // the node takes and acknowledges what it hands over like any record's,
  // and, since nothing reads an error's objects, gives it back.
  weft_test::runtime_guard rt(processes);
  auto* store = weft::detail::node_store();
  auto h = weft::remote<half_sender>().remote();
  REQUIRE(weft::get(weft::remote(twice).remote(make(4, 1.0)), bound)[0] == 2.0); // (workers up)
  const store_baseline before;
  SECTION("a task's result") {
    const auto what =
      weft_test::what_of<weft::error>([&] { weft::get(weft::remote(half_sent).remote(2 * mib), bound); });
    CHECK_THAT(what, Contains("cannot be sent"));
  }
  SECTION("an actor method's result") {
    const auto what =
      weft_test::what_of<weft::error>([&] { weft::get(h.task(&half_sender::send).remote(2 * mib), bound); });
    CHECK_THAT(what, Contains("cannot be sent"));
  }
  CHECK(before.all_back());
  CHECK(store->audit().empty());
}

namespace {

/// In this process, the next spill_store::add_ref(ref) fails as if out of
/// file descriptors (once).
void fail_next_spill_take() {
  static std::atomic<int> left{0};
  left.store(1);
  weft::detail::test_fail_spill_add_ref.store(+[] { return left.fetch_sub(1) > 0; });
}

/// Gets a spilled array of the driver; this worker cannot take its
/// reference to it. What the get throws, or the first element.
std::string fetch_untakeable(std::vector<weft::object_ref<weft::array<double>>> refs) {
  fail_next_spill_take();
  try {
    return std::to_string(weft::get(refs.at(0))[0]);
  } catch (const weft::serialization_error& e) {
    return e.what();
  }
}

double first_element(std::vector<weft::object_ref<weft::array<double>>> refs) { return weft::get(refs.at(0))[0]; }

/// An actor that keeps the refs it was given: the worker's proxy of the
/// object stays alive between its calls.
struct ref_keeper {
  std::vector<weft::object_ref<weft::array<double>>> kept;
  std::string keep_and_fetch_untakeable(std::vector<weft::object_ref<weft::array<double>>> refs) {
    kept = refs;
    return fetch_untakeable(std::move(refs));
  }
  double fetch(std::vector<weft::object_ref<weft::array<double>>> refs) { return first_element(std::move(refs)); }
  std::string fetch_kept() {
    try {
      return std::to_string(weft::get(kept.at(0))[0]);
    } catch (const weft::serialization_error& e) {
      return e.what();
    }
  }
};

} // namespace

TEST_CASE("a message whose spill file cannot be taken is not read and frees nothing it does not hold") {
  // The receiver takes a reference of its own to a spill file before it
  // reads a message; out of file descriptors it cannot. It then must not
  // read the message (it would adopt a reference it never took, and the
  // file would go while the sender's copy still names it): the wait gets
  // an error saying so, and the sender releases its own.
  process_test::temp_dir dir;
  weft_test::runtime_guard rt(small_store(dir));
  const auto filler = make(3 * mib / sizeof(double), 0.5); // the store is nearly full from here on
  SECTION("a value the driver sends a worker") {
    std::vector refs{weft::put(make(3 * mib / sizeof(double), 4.0))};
    REQUIRE(weft::get(refs[0]).spilled());
    CHECK_THAT(weft::get(weft::remote(fetch_untakeable).remote(refs), bound),
               Contains("could not open") && Contains("dropped unread"));
    // The driver's array is whole, and others still read it.
    CHECK(weft::get(refs[0])[0] == 4.0);
    CHECK(weft::get(weft::remote(first_element).remote(refs), bound) == 4.0);
    CHECK(spill_files() == 1);
    refs.clear();
    CHECK(eventually([] { return spill_files() == 0; }));
  }
  SECTION("a value the driver sends a worker that still holds the ref") {
    // The failure is the worker's proxy's, not the object's: a ref to the
    // same object read later in that worker fetches it anew, while the
    // ref that failed keeps its error.
    std::vector refs{weft::put(make(3 * mib / sizeof(double), 4.0))};
    auto h = weft::remote<ref_keeper>().remote();
    CHECK_THAT(weft::get(h.task(&ref_keeper::keep_and_fetch_untakeable).remote(refs), bound),
               Contains("could not open") && Contains("dropped unread"));
    CHECK(weft::get(h.task(&ref_keeper::fetch).remote(refs), bound) == 4.0);
    CHECK_THAT(weft::get(h.task(&ref_keeper::fetch_kept).remote(), bound), Contains("could not open"));
    weft::kill(h);
    refs.clear();
    CHECK(eventually([] { return spill_files() == 0; }));
  }
  SECTION("a result a worker sends the driver") {
    fail_next_spill_take();
    const auto what = weft_test::what_of<weft::serialization_error>(
      [] { weft::get(weft::remote(twice).remote(make(3 * mib / sizeof(double), 1.0)), bound); });
    weft::detail::test_fail_spill_add_ref.store(nullptr);
    CHECK_THAT(what, Contains("could not open") && Contains("dropped unread"));
    CHECK(eventually([] { return spill_files() == 0; })); // the worker released its own
    const auto c = weft::get(weft::remote(twice).remote(make(3 * mib / sizeof(double), 1.0)), bound);
    CHECK(c.spilled());
    CHECK(c[0] == 2.0);
  }
}

namespace {

weft::array<char> sent_then_die(std::size_t bytes) {
  weft::detail::test_after_results_posted.store(+[] { ::raise(SIGKILL); });
  return weft::array<char>::build(bytes, [](std::span<char> b) { std::fill(b.begin(), b.end(), 's'); });
}

} // namespace

TEST_CASE("a result sent just before its worker dies is the driver's once: the reap frees only the worker's") {
  // The worker keeps its references until the driver acknowledges them;
  // it dies with the acknowledgement unread, so its ledger gives them back
  // at the reap, and the driver's own keeps the array.
  process_test::let_signals_through();
  weft_test::runtime_guard rt(processes);
  auto* store = weft::detail::node_store();
  const auto blocks_before = store->blocks_in_use();
  auto r = weft::remote(sent_then_die).options({.max_retries = 0}).remote(std::size_t{2} * mib);
  const auto a = weft::get(r, bound);
  CHECK(a.size() == 2 * mib);
  // Its worker is gone: the next task runs in another.
  CHECK(weft::get(weft::remote(twice).remote(make(4, 1.0)), bound)[0] == 2.0);
  CHECK(eventually([&] { return store->blocks_in_use() == blocks_before + 1; }));
  CHECK(store->audit().empty());
  CHECK(a[0] == 's');
  CHECK(a[2 * mib - 1] == 's');
  r = {};
  CHECK(weft::get(weft::remote(+[](weft::array<char> x) { return x[7] == 's'; }).remote(a), bound));
}
