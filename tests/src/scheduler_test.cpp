// Resource accounting of the local scheduler (src/scheduler.cpp): tasks start
// only when their CPUs, GPUs, memory and custom resources are free;
// infeasible and invalid requests fail at submit.
//
// Overlap is measured with atomics while tasks hold for a few tens of
// milliseconds; "can run together" is proven with a rendezvous that each task
// waits on (bounded), so a scheduler that serialized them makes the test fail
// instead of hang.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "src/scheduler.hpp"
#include "weft_test.hpp"

using namespace std::chrono_literals;
using Catch::Matchers::Contains;

namespace {

using weft_test::what_of;

using weft_test::bound;
using weft_test::eventually;

/// The exception message of `f()` if it throws E, else a marker no check matches.
// ---- overlap tracking ----

std::atomic<int> g_now{0};
std::atomic<int> g_max{0};
std::atomic<int> g_runs{0};

/// Counts itself as running for ~30 ms and records the highest overlap seen.
int hold_briefly() {
  const int n = ++g_now;
  int m = g_max.load();
  while (n > m && !g_max.compare_exchange_weak(m, n)) {
  }
  std::this_thread::sleep_for(30ms);
  --g_now;
  ++g_runs;
  return 1;
}

/// Submits `count` calls of `f` and returns the highest overlap among them.
template <class F>
int max_overlap(const F& f, int count) {
  g_now = 0;
  g_max = 0;
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < count; ++i)
    refs.push_back(f.remote());
  const auto values = weft::get(refs, bound);
  REQUIRE(values.size() == static_cast<std::size_t>(count));
  return g_max.load();
}

// ---- rendezvous: true when `n` tasks were inside at the same time ----

std::atomic<int> g_arrived{0};

bool meet(int n) {
  ++g_arrived;
  return eventually([n] { return g_arrived.load() >= n; }, 10s);
}

/// Submits `n` calls of `f` (a remote meet) and checks that all of them met.
template <class F>
void require_meeting(const F& f, int n) {
  g_arrived = 0;
  std::vector<weft::object_ref<bool>> refs;
  for (int i = 0; i < n; ++i)
    refs.push_back(f.remote(n));
  for (bool met : weft::get(refs, bound))
    CHECK(met);
}

// ---- a task that holds its resources until released ----

std::atomic<int> g_holding{0};
std::atomic<bool> g_release{false};

int hold_until_released() {
  ++g_holding;
  eventually([] { return g_release.load() || weft::is_cancelled(); }, 30s);
  return 0;
}

/// Lets every hold_until_released task go at scope exit, even when a check failed.
struct release_at_exit {
  ~release_at_exit() { g_release = true; }
};

std::atomic<int> g_plain_ran{0};
int plain() {
  ++g_plain_ran;
  return 7;
}

// ---- GPUs ----

std::vector<int> gpu_ids() { return weft::get_gpu_ids(); }

std::pair<bool, std::vector<int>> gpu_ids_when_met(int n) {
  const bool met = meet(n);
  return {met, weft::get_gpu_ids()};
}

/// Every case starts from fresh globals, also when the cases share one process.
struct reset_globals : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseStarting(const Catch::TestCaseInfo&) override {
    g_now = 0;
    g_max = 0;
    g_runs = 0;
    g_arrived = 0;
    g_holding = 0;
    g_release = false;
    g_plain_ran = 0;
  }
};

} // namespace

CATCH_REGISTER_LISTENER(reset_globals)

// ---------------------------------------------------------------- CPUs

TEST_CASE("tasks that need both CPUs of a two-CPU node never overlap") {
  weft_test::runtime_guard rt({.num_cpus = 2});
  const auto f = weft::remote(hold_briefly, {.num_cpus = 2});
  CHECK(max_overlap(f, 6) == 1);
  CHECK(g_runs == 6);
}

TEST_CASE("one-CPU tasks on a two-CPU node run two at a time") {
  weft_test::runtime_guard rt({.num_cpus = 2});
  require_meeting(weft::remote(meet), 2);
  // and never more than two
  CHECK(max_overlap(weft::remote(hold_briefly), 8) <= 2);
}

TEST_CASE("a task with num_cpus = 0 runs while every CPU is held") {
  weft_test::runtime_guard rt({.num_cpus = 2});
  release_at_exit release;
  // Holds both CPUs on one executor thread; the second executor is idle.
  auto holder = weft::remote(hold_until_released, {.num_cpus = 2}).remote();
  REQUIRE(eventually([] { return g_holding.load() == 1; }));
  auto needs_cpu = weft::remote(plain).remote();
  auto needs_none = weft::remote(gpu_ids, {.num_cpus = 0}).remote();
  CHECK(weft::get(needs_none, bound).empty());
  CHECK_FALSE(needs_cpu.is_ready());
  CHECK(g_plain_ran == 0);
  g_release = true;
  CHECK(weft::get(needs_cpu, bound) == 7);
  CHECK(weft::get(holder, bound) == 0);
}

TEST_CASE("a node with no CPUs still runs tasks that need none") {
  weft_test::runtime_guard rt({.num_cpus = 0});
  CHECK(weft::get(weft::remote(plain, {.num_cpus = 0}).remote(), bound) == 7);
  CHECK_THROWS_AS(weft::remote(plain).remote(), weft::resource_error);
}

// ---------------------------------------------------------------- fractional CPUs

TEST_CASE("whole-CPU tasks never overlap on a node with 1.5 CPUs") {
  // ceil(1.5) = 2 executors, so only the resource accounting keeps them apart.
  weft_test::runtime_guard rt({.num_cpus = 1.5});
  CHECK(max_overlap(weft::remote(hold_briefly), 6) == 1);
}

TEST_CASE("two half-CPU tasks run together on a node with 1.5 CPUs") {
  weft_test::runtime_guard rt({.num_cpus = 1.5});
  require_meeting(weft::remote(meet, {.num_cpus = 0.5}), 2);
}

TEST_CASE("two 0.75-CPU tasks fill a 1.5-CPU node exactly and run together") {
  weft_test::runtime_guard rt({.num_cpus = 1.5});
  require_meeting(weft::remote(meet, {.num_cpus = 0.75}), 2);
}

TEST_CASE("a whole-CPU task and a half-CPU task run together on a node with 1.5 CPUs") {
  weft_test::runtime_guard rt({.num_cpus = 1.5});
  g_arrived = 0;
  auto a = weft::remote(meet).remote(2);
  auto b = weft::remote(meet, {.num_cpus = 0.5}).remote(2);
  CHECK(weft::get(a, bound));
  CHECK(weft::get(b, bound));
}

TEST_CASE("fractional CPUs let more tasks run at once than whole CPUs do") {
  // 2.5 CPUs: three executors; whole-CPU tasks fit two at a time, half-CPU
  // tasks five at a time (three at once by executor count).
  weft_test::runtime_guard rt({.num_cpus = 2.5});
  CHECK(max_overlap(weft::remote(hold_briefly), 9) <= 2);
  require_meeting(weft::remote(meet, {.num_cpus = 0.5}), 3);
}

TEST_CASE("a whole-CPU task on a node with half a CPU is infeasible but a half-CPU task runs") {
  weft_test::runtime_guard rt({.num_cpus = 0.5});
  const auto msg = what_of<weft::resource_error>([] { weft::remote(plain).remote(); });
  CHECK_THAT(msg, Contains("num_cpus") && Contains("1") && Contains("0.5"));
  CHECK(weft::get(weft::remote(plain, {.num_cpus = 0.5}).remote(), bound) == 7);
}

// ---------------------------------------------------------------- custom resources

TEST_CASE("tasks that need the node's only disk never overlap") {
  weft_test::runtime_guard rt({.num_cpus = 2, .resources = {{"disk", 1}}});
  weft::task_options o;
  o.resources = std::map<std::string, double>{{"disk", 1}};
  CHECK(max_overlap(weft::remote(hold_briefly, o), 6) == 1);
  // the same function without the disk does overlap: the limit is the disk's
  require_meeting(weft::remote(meet), 2);
}

TEST_CASE("tasks that need half a disk share it") {
  weft_test::runtime_guard rt({.num_cpus = 2, .resources = {{"disk", 1}}});
  weft::task_options o;
  o.resources = std::map<std::string, double>{{"disk", 0.5}};
  require_meeting(weft::remote(meet, o), 2);
}

TEST_CASE("a custom resource held by a running task keeps other tasks that need it queued") {
  weft_test::runtime_guard rt({.num_cpus = 2, .resources = {{"disk", 1}}});
  release_at_exit release;
  weft::task_options o;
  o.resources = std::map<std::string, double>{{"disk", 1}};
  auto holder = weft::remote(hold_until_released, o).remote();
  REQUIRE(eventually([] { return g_holding.load() == 1; }));
  auto waiting = weft::remote(plain, o).remote();
  auto free_cpu = weft::remote(plain).remote();
  CHECK(weft::get(free_cpu, bound) == 7);
  CHECK_FALSE(waiting.is_ready());
  CHECK(g_plain_ran == 1);
  g_release = true;
  CHECK(weft::get(waiting, bound) == 7);
  CHECK(weft::get(holder, bound) == 0);
}

// ---------------------------------------------------------------- GPUs

TEST_CASE("a one-GPU task is given one of the node's GPU ids") {
  weft_test::runtime_guard rt({.num_cpus = 2, .num_gpus = 2});
  const auto ids = weft::get(weft::remote(gpu_ids, {.num_gpus = 1}).remote(), bound);
  REQUIRE(ids.size() == 1);
  CHECK((ids[0] == 0 || ids[0] == 1));
}

TEST_CASE("two concurrent one-GPU tasks are given different GPUs") {
  weft_test::runtime_guard rt({.num_cpus = 2, .num_gpus = 2});
  g_arrived = 0;
  const auto f = weft::remote(gpu_ids_when_met, {.num_gpus = 1});
  auto a = f.remote(2);
  auto b = f.remote(2);
  const auto [met_a, ids_a] = weft::get(a, bound);
  const auto [met_b, ids_b] = weft::get(b, bound);
  CHECK(met_a);
  CHECK(met_b);
  REQUIRE(ids_a.size() == 1);
  REQUIRE(ids_b.size() == 1);
  CHECK(ids_a[0] != ids_b[0]);
  CHECK((ids_a[0] == 0 || ids_a[0] == 1));
  CHECK((ids_b[0] == 0 || ids_b[0] == 1));
}

TEST_CASE("a two-GPU task is given both GPUs") {
  weft_test::runtime_guard rt({.num_cpus = 2, .num_gpus = 2});
  CHECK(weft::get(weft::remote(gpu_ids, {.num_gpus = 2}).remote(), bound) == std::vector<int>{0, 1});
}

TEST_CASE("one-GPU tasks never overlap on a one-GPU node") {
  weft_test::runtime_guard rt({.num_cpus = 2, .num_gpus = 1});
  CHECK(max_overlap(weft::remote(hold_briefly, {.num_gpus = 1}), 6) == 1);
}

TEST_CASE("two half-GPU tasks share one GPU") {
  weft_test::runtime_guard rt({.num_cpus = 2, .num_gpus = 1});
  g_arrived = 0;
  const auto f = weft::remote(gpu_ids_when_met, {.num_gpus = 0.5});
  auto a = f.remote(2);
  auto b = f.remote(2);
  const auto [met_a, ids_a] = weft::get(a, bound);
  const auto [met_b, ids_b] = weft::get(b, bound);
  CHECK(met_a);
  CHECK(met_b);
  CHECK(ids_a == std::vector<int>{0});
  CHECK(ids_b == std::vector<int>{0});
}

TEST_CASE("half-GPU tasks are packed onto the same GPU of a two-GPU node") {
  weft_test::runtime_guard rt({.num_cpus = 2, .num_gpus = 2});
  g_arrived = 0;
  const auto f = weft::remote(gpu_ids_when_met, {.num_gpus = 0.5});
  auto a = f.remote(2);
  auto b = f.remote(2);
  const auto [met_a, ids_a] = weft::get(a, bound);
  const auto [met_b, ids_b] = weft::get(b, bound);
  CHECK(met_a);
  CHECK(met_b);
  REQUIRE(ids_a.size() == 1);
  CHECK(ids_a == ids_b);
}

TEST_CASE("no more than two half-GPU tasks run at once on one GPU") {
  // Four executors and CPUs, so only the GPU share limits them.
  weft_test::runtime_guard rt({.num_cpus = 4, .num_gpus = 1});
  CHECK(max_overlap(weft::remote(hold_briefly, {.num_gpus = 0.5}), 8) == 2);
}

TEST_CASE("get_gpu_ids is empty outside a task and in a task without GPUs") {
  weft_test::runtime_guard rt({.num_cpus = 2, .num_gpus = 2});
  CHECK(weft::get_gpu_ids().empty());
  CHECK(weft::get(weft::remote(gpu_ids).remote(), bound).empty());
}

TEST_CASE("GPUs are given back when a task ends") {
  weft_test::runtime_guard rt({.num_cpus = 2, .num_gpus = 1});
  const auto f = weft::remote(gpu_ids, {.num_gpus = 1});
  for (int i = 0; i < 5; ++i)
    CHECK(weft::get(f.remote(), bound) == std::vector<int>{0});
}

// ---------------------------------------------------------------- memory

TEST_CASE("tasks whose memory does not fit together never overlap") {
  weft_test::runtime_guard rt({.num_cpus = 2, .memory = 1000});
  CHECK(max_overlap(weft::remote(hold_briefly, {.memory = 600}), 6) == 1);
}

TEST_CASE("tasks whose memory fits together run together") {
  weft_test::runtime_guard rt({.num_cpus = 2, .memory = 1000});
  require_meeting(weft::remote(meet, {.memory = 500}), 2);
}

// ---------------------------------------------------------------- infeasible requests

TEST_CASE("more CPUs than the node has is a resource_error at submit naming both amounts") {
  weft_test::runtime_guard rt({.num_cpus = 2});
  const auto f = weft::remote(plain, {.num_cpus = 7});
  const auto msg = what_of<weft::resource_error>([&] { f.remote(); });
  CHECK_THAT(msg, Contains("num_cpus") && Contains("7") && Contains("2"));
  CHECK(g_plain_ran == 0);
  // the runtime is unaffected
  CHECK(weft::get(weft::remote(plain).remote(), bound) == 7);
}

TEST_CASE("a GPU on a node without GPUs is a resource_error at submit") {
  weft_test::runtime_guard rt({.num_cpus = 2});
  const auto msg = what_of<weft::resource_error>([] { weft::remote(plain, {.num_gpus = 3}).remote(); });
  CHECK_THAT(msg, Contains("num_gpus") && Contains("3") && Contains("0"));
  CHECK(g_plain_ran == 0);
}

TEST_CASE("more GPUs than the node has is a resource_error at submit") {
  weft_test::runtime_guard rt({.num_cpus = 2, .num_gpus = 2});
  const auto msg = what_of<weft::resource_error>([] { weft::remote(plain, {.num_gpus = 3}).remote(); });
  CHECK_THAT(msg, Contains("num_gpus") && Contains("3") && Contains("2"));
}

TEST_CASE("an unknown custom resource is a resource_error at submit naming it") {
  weft_test::runtime_guard rt({.num_cpus = 2, .resources = {{"disk", 2}}});
  weft::task_options o;
  o.resources = std::map<std::string, double>{{"tape", 1}};
  const auto msg = what_of<weft::resource_error>([&] { weft::remote(plain, o).remote(); });
  CHECK_THAT(msg, Contains("tape"));
  CHECK(g_plain_ran == 0);
}

TEST_CASE("more of a custom resource than the node has is a resource_error at submit") {
  weft_test::runtime_guard rt({.num_cpus = 2, .resources = {{"disk", 2}}});
  weft::task_options o;
  o.resources = std::map<std::string, double>{{"disk", 5}};
  const auto msg = what_of<weft::resource_error>([&] { weft::remote(plain, o).remote(); });
  CHECK_THAT(msg, Contains("disk") && Contains("5") && Contains("2"));
}

TEST_CASE("more memory than the node has is a resource_error at submit") {
  weft_test::runtime_guard rt({.num_cpus = 2, .memory = 1000});
  const auto msg = what_of<weft::resource_error>([] { weft::remote(plain, {.memory = 123456}).remote(); });
  CHECK_THAT(msg, Contains("memory") && Contains("123456") && Contains("1000"));
  CHECK(g_plain_ran == 0);
}

TEST_CASE("an infeasible per-call option is a resource_error too") {
  weft_test::runtime_guard rt({.num_cpus = 2});
  const auto f = weft::remote(plain);
  CHECK_THROWS_AS(f.options({.num_cpus = 3}).remote(), weft::resource_error);
  CHECK(weft::get(f.remote(), bound) == 7);
}

// ---------------------------------------------------------------- invalid values

TEST_CASE("a negative num_cpus is an invalid_argument_error naming the field and value") {
  weft_test::runtime_guard rt;
  const auto msg = what_of<weft::invalid_argument_error>([] { weft::remote(plain, {.num_cpus = -1}).remote(); });
  CHECK_THAT(msg, Contains("num_cpus") && Contains("-1"));
  CHECK(g_plain_ran == 0);
}

TEST_CASE("a NaN num_cpus is an invalid_argument_error") {
  weft_test::runtime_guard rt;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const auto msg = what_of<weft::invalid_argument_error>([&] { weft::remote(plain, {.num_cpus = nan}).remote(); });
  CHECK_THAT(msg, Contains("num_cpus") && Contains("nan"));
}

TEST_CASE("an infinite num_cpus is an invalid_argument_error") {
  weft_test::runtime_guard rt;
  const double inf = std::numeric_limits<double>::infinity();
  CHECK_THROWS_AS(weft::remote(plain, {.num_cpus = inf}).remote(), weft::invalid_argument_error);
}

TEST_CASE("a fractional CPU count above one is an invalid_argument_error") {
  weft_test::runtime_guard rt({.num_cpus = 4});
  const auto msg = what_of<weft::invalid_argument_error>([] { weft::remote(plain, {.num_cpus = 1.5}).remote(); });
  CHECK_THAT(msg, Contains("num_cpus") && Contains("1.5"));
}

TEST_CASE("a fractional GPU count above one is an invalid_argument_error") {
  weft_test::runtime_guard rt({.num_cpus = 2, .num_gpus = 2});
  const auto msg = what_of<weft::invalid_argument_error>([] { weft::remote(plain, {.num_gpus = 1.5}).remote(); });
  CHECK_THAT(msg, Contains("num_gpus") && Contains("1.5"));
}

TEST_CASE("a negative custom resource is an invalid_argument_error naming it") {
  weft_test::runtime_guard rt({.num_cpus = 2, .resources = {{"disk", 2}}});
  weft::task_options o;
  o.resources = std::map<std::string, double>{{"disk", -1}};
  const auto msg = what_of<weft::invalid_argument_error>([&] { weft::remote(plain, o).remote(); });
  CHECK_THAT(msg, Contains("disk") && Contains("-1"));
}

TEST_CASE("a negative memory is an invalid_argument_error") {
  weft_test::runtime_guard rt;
  const auto msg = what_of<weft::invalid_argument_error>([] { weft::remote(plain, {.memory = -5}).remote(); });
  CHECK_THAT(msg, Contains("memory") && Contains("-5"));
}

TEST_CASE("max_retries below -1 is an invalid_argument_error naming it") {
  weft_test::runtime_guard rt;
  weft::task_options o;
  o.max_retries = -2;
  const auto msg = what_of<weft::invalid_argument_error>([&] { weft::remote(plain, o).remote(); });
  CHECK_THAT(msg, Contains("max_retries") && Contains("-2"));
  CHECK(g_plain_ran == 0);
  o.max_retries = -1; // retry forever is valid
  CHECK(weft::get(weft::remote(plain, o).remote(), bound) == 7);
}

TEST_CASE("a negative max_calls is an invalid_argument_error naming it") {
  weft_test::runtime_guard rt;
  weft::task_options o;
  o.max_calls = -1;
  const auto msg = what_of<weft::invalid_argument_error>([&] { weft::remote(plain, o).remote(); });
  CHECK_THAT(msg, Contains("max_calls") && Contains("-1"));
}

TEST_CASE("a negative config.num_cpus makes init throw invalid_argument_error and leaves weft stopped") {
  REQUIRE_FALSE(weft::is_initialized());
  const auto msg = what_of<weft::invalid_argument_error>([] { weft::init({.num_cpus = -2}); });
  CHECK_THAT(msg, Contains("num_cpus") && Contains("-2"));
  CHECK_FALSE(weft::is_initialized());
  weft_test::runtime_guard rt; // a good config still works afterwards
  CHECK(weft::get(weft::remote(plain).remote(), bound) == 7);
}

TEST_CASE("a fractional config.num_gpus makes init throw invalid_argument_error") {
  const auto msg = what_of<weft::invalid_argument_error>([] { weft::init({.num_cpus = 2, .num_gpus = 1.5}); });
  CHECK_THAT(msg, Contains("num_gpus") && Contains("1.5"));
  CHECK_FALSE(weft::is_initialized());
}

TEST_CASE("a negative config resource makes init throw invalid_argument_error naming it") {
  const auto msg = what_of<weft::invalid_argument_error>([] {
    weft::init({.num_cpus = 2, .resources = {{"disk", -3}}});
  });
  CHECK_THAT(msg, Contains("disk") && Contains("-3"));
  CHECK_FALSE(weft::is_initialized());
}

TEST_CASE("a config resource named like a built-in one makes init throw invalid_argument_error") {
  CHECK_THROWS_AS(weft::init({.num_cpus = 2, .resources = {{"GPU", 1}}}), weft::invalid_argument_error);
  CHECK_FALSE(weft::is_initialized());
}

// ---------------------------------------------------------------- resolve_demand / node_resources

TEST_CASE("node_resources::from_config converts the config to fixed point") {
  using weft::detail::resource_unit;
  const auto n = weft::detail::node_resources::from_config(
    {.num_cpus = 3, .num_gpus = 2, .memory = 5000, .resources = {{"disk", 4}}});
  CHECK(n.cpu == 3 * resource_unit);
  CHECK(n.gpu == 2 * resource_unit);
  CHECK(n.memory == 5000);
  REQUIRE(n.custom_names == std::vector<std::string>{"disk"});
  CHECK(n.custom == std::vector<std::int64_t>{4 * resource_unit});
  CHECK(n.custom_index("disk") == 0);
  CHECK(n.custom_index("tape") == -1);
  CHECK_THAT(n.describe(), Contains("CPU=3") && Contains("GPU=2") && Contains("disk=4"));
}

TEST_CASE("node_resources::from_config defaults CPUs to the hardware and memory to most of the RAM") {
  const auto n = weft::detail::node_resources::from_config({});
  const auto hw = std::max(1u, std::thread::hardware_concurrency());
  CHECK(n.cpu == static_cast<std::int64_t>(hw) * weft::detail::resource_unit);
  CHECK(n.gpu == 0);
  CHECK(n.memory > 0);
}

TEST_CASE("resolve_demand gives one CPU and nothing else by default") {
  const auto node = weft::detail::node_resources::from_config({.num_cpus = 2});
  const auto d = weft::detail::resolve_demand({}, node, "t");
  CHECK(d.cpu == weft::detail::resource_unit);
  CHECK(d.gpu == 0);
  CHECK(d.memory == 0);
  CHECK(d.custom.empty());
}

TEST_CASE("resolve_demand converts fractions to 1/10000 units") {
  using weft::detail::resource_unit;
  const auto node =
    weft::detail::node_resources::from_config({.num_cpus = 2, .num_gpus = 1, .resources = {{"a", 1}, {"b", 3}}});
  weft::task_options o{.num_cpus = 0.5, .num_gpus = 0.25, .memory = 100};
  o.resources = std::map<std::string, double>{{"b", 0.3333}};
  const auto d = weft::detail::resolve_demand(o, node, "t");
  CHECK(d.cpu == resource_unit / 2);
  CHECK(d.gpu == resource_unit / 4);
  CHECK(d.memory == 100);
  REQUIRE(d.custom.size() == 1);
  CHECK(d.custom[0].first == node.custom_index("b"));
  CHECK(d.custom[0].second == 3333);
}

TEST_CASE("resolve_demand names the task in a resource_error") {
  const auto node = weft::detail::node_resources::from_config({.num_cpus = 2});
  const auto msg =
    what_of<weft::resource_error>([&] { weft::detail::resolve_demand({.num_cpus = 4}, node, "my_heavy_task"); });
  CHECK_THAT(msg, Contains("my_heavy_task") && Contains("num_cpus") && Contains("4") && Contains("2"));
}

TEST_CASE("resolve_demand accepts exactly what the node has") {
  using weft::detail::resource_unit;
  const auto node = weft::detail::node_resources::from_config(
    {.num_cpus = 2, .num_gpus = 2, .memory = 1000, .resources = {{"disk", 1}}});
  weft::task_options o{.num_cpus = 2, .num_gpus = 2, .memory = 1000};
  o.resources = std::map<std::string, double>{{"disk", 1}};
  const auto d = weft::detail::resolve_demand(o, node, "t");
  CHECK(d.cpu == 2 * resource_unit);
  CHECK(d.gpu == 2 * resource_unit);
  CHECK(d.memory == 1000);
  CHECK(d.custom.size() == 1);
}

TEST_CASE("resolve_demand rejects built-in names as custom resources") {
  const auto node = weft::detail::node_resources::from_config({.num_cpus = 2});
  weft::task_options o;
  o.resources = std::map<std::string, double>{{"CPU", 1}};
  CHECK_THROWS_AS(weft::detail::resolve_demand(o, node, "t"), weft::invalid_argument_error);
}

TEST_CASE("validate_task_options accepts the documented special values") {
  weft::task_options o;
  o.max_retries = -1;
  o.max_calls = 0;
  CHECK_NOTHROW(weft::detail::validate_task_options(o));
  o.max_retries = 0;
  CHECK_NOTHROW(weft::detail::validate_task_options(o));
  o.max_retries = -2;
  CHECK_THROWS_AS(weft::detail::validate_task_options(o), weft::invalid_argument_error);
}
