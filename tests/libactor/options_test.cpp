// Actor options: bad input gives clear errors, resource options hold
// resources for the actor's life, options() merges.
#include <catch2/catch.hpp>

#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

#include "weft_test.hpp"

using namespace std::chrono_literals;
using weft_test::bound;
using weft_test::eventually;
using weft_test::runtime_guard;
using weft_test::what_of;

namespace {

struct counter {
  explicit counter(int start = 0) : value(start) {}
  int add(int n) { return value += n; }
  int add_two(int a, int b) { return value += a + b; }
  int get_value() const { return value; }
  bool restarted() const { return weft::runtime_context().was_current_actor_restarted(); }
  std::vector<int> gpus() const { return weft::get_gpu_ids(); }
  std::string name() const { return weft::runtime_context().actor_name(); }
  int value;
};

struct broken {
  broken() { throw std::runtime_error("cannot build"); }
  int ping() const { return 1; }
};

int one() { return 1; }

/// What `.remote()` with these options throws as invalid_argument_error.
std::string rejected(const weft::actor_options& o) {
  return what_of<weft::invalid_argument_error>([&] { weft::remote<counter>().options(o).remote(0); });
}

/// True when `ref` is still not ready after a short grace period (for
/// checks that something must NOT happen; nothing else to wait for).
template <class T>
bool still_waiting(const weft::object_ref<T>& ref) {
  auto [ready, not_ready] = weft::wait(std::vector<weft::object_ref<T>>{ref}, 1, 300ms);
  return ready.empty();
}

} // namespace

// ------------------------------------------------------------ bad options

TEST_CASE("max_restarts below -1 is rejected with a message naming the field and value") {
  runtime_guard rt;
  const std::string what = rejected({.max_restarts = -2});
  CHECK_THAT(what, Catch::Contains("max_restarts"));
  CHECK_THAT(what, Catch::Contains("-2"));
  CHECK_THAT(what, Catch::Contains("-1"));
}

TEST_CASE("max_task_retries below -1 is rejected with a message naming the field and value") {
  runtime_guard rt;
  const std::string what = rejected({.max_restarts = 1, .max_task_retries = -3});
  CHECK_THAT(what, Catch::Contains("max_task_retries"));
  CHECK_THAT(what, Catch::Contains("-3"));
}

TEST_CASE("max_task_retries without restarts is rejected") {
  runtime_guard rt;
  const std::string what = rejected({.max_restarts = 0, .max_task_retries = 1});
  CHECK_THAT(what, Catch::Contains("max_task_retries = 1"));
  CHECK_THAT(what, Catch::Contains("max_restarts"));
  // The same with max_restarts left at its default (0).
  CHECK_THAT(rejected({.max_task_retries = -1}), Catch::Contains("max_restarts"));
}

TEST_CASE("max_concurrency = 0 is rejected") {
  runtime_guard rt;
  const std::string what = rejected({.max_concurrency = 0});
  CHECK_THAT(what, Catch::Contains("max_concurrency"));
  CHECK_THAT(what, Catch::Contains("0"));
  CHECK_THAT(what, Catch::Contains(">= 1"));
  CHECK_THAT(rejected({.max_concurrency = -4}), Catch::Contains("-4"));
}

TEST_CASE("an empty name is rejected") {
  runtime_guard rt;
  CHECK_THAT(rejected({.name = ""}), Catch::Contains("name is empty"));
}

TEST_CASE("get_if_exists without a name is rejected") {
  runtime_guard rt;
  const std::string what = rejected({.get_if_exists = true});
  CHECK_THAT(what, Catch::Contains("get_if_exists"));
  CHECK_THAT(what, Catch::Contains("name"));
}

TEST_CASE("a rejected actor leaves nothing behind: its name stays free") {
  runtime_guard rt;
  CHECK_THAT(rejected({.name = "half-made", .max_concurrency = 0}), Catch::Contains("max_concurrency"));
  CHECK_FALSE(weft::get_actor<counter>("half-made").has_value());
  auto h = weft::remote<counter>().options({.name = "half-made"}).remote(4);
  CHECK(weft::get(h.task(&counter::get_value).remote(), bound) == 4);
}

TEST_CASE("a call through a default-constructed handle throws invalid_argument_error") {
  runtime_guard rt;
  weft::actor_handle<counter> h;
  CHECK_FALSE(h.valid());
  CHECK(h.id() == weft::actor_id{});
  CHECK_THAT(what_of<weft::invalid_argument_error>([&] { h.task(&counter::add).remote(1); }),
             Catch::Contains("invalid actor_handle"));
  CHECK_THAT(what_of<weft::invalid_argument_error>([&] { weft::monitor(h, [](const weft::actor_exit&) {}); }),
             Catch::Contains("invalid"));
}

TEST_CASE("a call through a moved-from handle throws invalid_argument_error") {
  runtime_guard rt;
  auto h = weft::remote<counter>().remote(0);
  auto taken = std::move(h);
  CHECK_THAT(what_of<weft::invalid_argument_error>([&] { h.task(&counter::add).remote(1); }), // NOLINT
             Catch::Contains("invalid actor_handle"));
  CHECK(weft::get(taken.task(&counter::add).remote(1), bound) == 1);
}

TEST_CASE("an invalid object_ref argument is rejected at the call and the actor is unaffected") {
  runtime_guard rt;
  auto h = weft::remote<counter>().remote(0);
  const std::string what =
    what_of<weft::invalid_argument_error>([&] { h.task(&counter::add).remote(weft::object_ref<int>{}); });
  CHECK_THAT(what, Catch::Contains("invalid object_ref"));
  CHECK_THAT(what_of<weft::invalid_argument_error>(
               [&] { h.task(&counter::add_two).remote(weft::put(1), weft::object_ref<int>{}); }),
             Catch::Contains("invalid object_ref"));
  CHECK(weft::get(h.task(&counter::add).remote(weft::put(2)), bound) == 2); // nothing ran before
}

TEST_CASE("calls on a dead actor fail with actor_died_error and never hang") {
  runtime_guard rt;
  auto h = weft::remote<broken>().remote();
  CHECK_THAT(what_of<weft::actor_died_error>([&] { weft::get(h.task(&broken::ping).remote(), bound); }),
             Catch::Contains("cannot build"));
  // Known dead now: every later call is failed before remote() returns.
  for (int i = 0; i < 10; ++i) {
    auto r = h.task(&broken::ping).remote();
    CHECK(r.is_ready());
    CHECK_THROWS_AS(weft::get(r, bound), weft::actor_died_error);
  }
}

TEST_CASE("actors before weft::init throw not_initialized_error") {
  REQUIRE_FALSE(weft::is_initialized());
  CHECK_THAT(what_of<weft::not_initialized_error>([] { weft::remote<counter>().remote(1); }), Catch::Contains("init"));
  CHECK_THAT(what_of<weft::not_initialized_error>([] { weft::get_actor<counter>("x"); }), Catch::Contains("init"));
}

TEST_CASE("actors after weft::shutdown throw not_initialized_error") {
  { runtime_guard rt; }
  CHECK_THAT(what_of<weft::not_initialized_error>([] { weft::remote<counter>().remote(1); }), Catch::Contains("init"));
}

// -------------------------------------------------------------- resources

TEST_CASE("an actor with num_cpus = 2 on a 2-CPU node holds both CPUs until it ends") {
  runtime_guard rt({.num_cpus = 2});
  auto h = weft::remote<counter>().options({.num_cpus = 2}).remote(0);
  REQUIRE(weft::get(h.task(&counter::add).remote(1), bound) == 1); // constructed: it holds the CPUs
  auto task = weft::remote(one).remote();
  CHECK(still_waiting(task));
  // The actor still works meanwhile (it holds, it does not wait).
  CHECK(weft::get(h.task(&counter::add).remote(1), bound) == 2);
  CHECK_FALSE(task.is_ready());
  h = {}; // the actor ends and gives its CPUs back
  CHECK(weft::get(task, bound) == 1);
}

TEST_CASE("an actor without resource options holds no CPU") {
  runtime_guard rt({.num_cpus = 1});
  auto a = weft::remote<counter>().remote(0);
  auto b = weft::remote<counter>().remote(0);
  weft::get(a.task(&counter::add).remote(1), bound);
  weft::get(b.task(&counter::add).remote(1), bound);
  CHECK(weft::get(weft::remote(one).remote(), bound) == 1);
}

TEST_CASE("a restarted actor keeps the resources it holds") {
  runtime_guard rt({.num_cpus = 2});
  auto h = weft::remote<counter>().options({.max_restarts = 1, .num_cpus = 2}).remote(0);
  REQUIRE(weft::get(h.task(&counter::add).remote(1), bound) == 1);
  auto task = weft::remote(one).remote();
  weft::kill(h, {.no_restart = false});
  CHECK(weft::get(h.task(&counter::restarted).remote(), bound));
  CHECK(still_waiting(task));
  weft::kill(h); // dead for good: the CPUs go back
  CHECK(weft::get(task, bound) == 1);
}

TEST_CASE("an actor whose resources are taken waits for them, with its calls queued") {
  runtime_guard rt({.num_cpus = 2});
  auto big = weft::remote<counter>().options({.num_cpus = 2}).remote(0);
  REQUIRE(weft::get(big.task(&counter::add).remote(1), bound) == 1);
  auto small = weft::remote<counter>().options({.num_cpus = 1}).remote(10);
  auto call = small.task(&counter::add).remote(1);
  CHECK(still_waiting(call));
  big = {};
  CHECK(weft::get(call, bound) == 11);
}

TEST_CASE("an actor killed while waiting for resources never takes them") {
  runtime_guard rt({.num_cpus = 2});
  auto big = weft::remote<counter>().options({.num_cpus = 2}).remote(0);
  REQUIRE(weft::get(big.task(&counter::add).remote(1), bound) == 1);
  auto waiting = weft::remote<counter>().options({.num_cpus = 2}).remote(0);
  auto call = waiting.task(&counter::add).remote(1);
  CHECK(still_waiting(call));
  weft::kill(waiting);
  CHECK_THAT(what_of<weft::actor_died_error>([&] { weft::get(call, bound); }), Catch::Contains("killed by kill()"));
  big = {};
  // Both CPUs are free again: a task that needs both runs.
  CHECK(weft::get(weft::remote(one).options({.num_cpus = 2}).remote(), bound) == 1);
}

TEST_CASE("a resource request no node could meet throws resource_error at remote()") {
  runtime_guard rt({.num_cpus = 2});
  const std::string gpus = what_of<weft::resource_error>(
    [] { weft::remote<counter>().options({.name = "gpu-less", .num_gpus = 1}).remote(0); });
  CHECK_THAT(gpus, Catch::Contains("num_gpus"));
  CHECK_THAT(gpus, Catch::Contains("counter"));
  CHECK_THAT(what_of<weft::resource_error>([] { weft::remote<counter>().options({.num_cpus = 3}).remote(0); }),
             Catch::Contains("num_cpus"));
  CHECK_THAT(what_of<weft::resource_error>([] {
               weft::remote<counter>().options({.resources = {{"disk", 1}}}).remote(0);
             }),
             Catch::Contains("disk"));
  // The rejected actor did not take its name.
  CHECK_FALSE(weft::get_actor<counter>("gpu-less").has_value());
  REQUIRE_NOTHROW(weft::remote<counter>().options({.name = "gpu-less"}).remote(0));
}

TEST_CASE("a negative resource amount is rejected with invalid_argument_error") {
  runtime_guard rt;
  CHECK_THAT(what_of<weft::invalid_argument_error>([] { weft::remote<counter>().options({.num_cpus = -1}).remote(0); }),
             Catch::Contains("num_cpus"));
}

TEST_CASE("get_gpu_ids inside an actor holding one GPU returns that GPU") {
  runtime_guard rt({.num_cpus = 2, .num_gpus = 1});
  auto with_gpu = weft::remote<counter>().options({.num_gpus = 1}).remote(0);
  auto ids = weft::get(with_gpu.task(&counter::gpus).remote(), bound);
  REQUIRE(ids.size() == 1);
  CHECK(ids[0] == 0);
  auto without = weft::remote<counter>().remote(0);
  CHECK(weft::get(without.task(&counter::gpus).remote(), bound).empty());
  // The GPU is held: a task that needs it waits until the actor ends.
  auto task = weft::remote(one).options({.num_gpus = 1}).remote();
  CHECK(still_waiting(task));
  with_gpu = {};
  CHECK(weft::get(task, bound) == 1);
}

// ---------------------------------------------------------------- merging

TEST_CASE("merge replaces only the fields set in the override") {
  const weft::actor_options base{.name = "base",
                                 .namespace_ = "ns",
                                 .max_restarts = 2,
                                 .max_concurrency = 3,
                                 .num_cpus = 1,
                                 .resources = {{"disk", 1}},
                                 .restart_on_exception = true};
  const weft::actor_options over{.max_restarts = 5, .lifetime = weft::lifetime::detached, .num_gpus = 1};
  const auto m = weft::merge(base, over);
  CHECK(m.name == "base");
  CHECK(m.namespace_ == "ns");
  CHECK(m.max_restarts == 5);
  CHECK_FALSE(m.max_task_retries.has_value());
  CHECK(m.max_concurrency == 3);
  CHECK(m.lifetime == weft::lifetime::detached);
  CHECK(m.num_cpus == 1.0);
  CHECK(m.num_gpus == 1.0);
  CHECK(m.resources == std::map<std::string, double>{{"disk", 1}}); // an empty map keeps the base's
  CHECK(m.restart_on_exception == true);
  CHECK_FALSE(m.get_if_exists.has_value());
  const auto replaced = weft::merge(base, {.name = "other", .resources = {{"tpu", 2}}});
  CHECK(replaced.name == "other");
  CHECK(replaced.resources == std::map<std::string, double>{{"tpu", 2}});
}

TEST_CASE("options() keeps the class defaults it does not override") {
  runtime_guard rt;
  const auto restartable = weft::remote<counter>({.max_restarts = 1});
  const auto named = restartable.options({.name = "merged"});
  CHECK(named.default_options().max_restarts == 1);
  CHECK(named.default_options().name == "merged");
  CHECK_FALSE(restartable.default_options().name.has_value()); // the original is unchanged
  auto h = named.remote(3);
  CHECK(weft::get(h.task(&counter::name).remote(), bound) == "merged");
  weft::kill(h, {.no_restart = false});
  // max_restarts = 1 came from the class defaults: it restarts, fresh.
  CHECK(weft::get(h.task(&counter::restarted).remote(), bound));
  CHECK(weft::get(h.task(&counter::get_value).remote(), bound) == 3);
  // An override wins over the class default.
  auto no_restart = restartable.options({.max_restarts = 0}).remote(0);
  weft::get(no_restart.task(&counter::add).remote(1), bound);
  weft::kill(no_restart, {.no_restart = false});
  CHECK_THROWS_AS(weft::get(no_restart.task(&counter::get_value).remote(), bound), weft::actor_died_error);
}

TEST_CASE("resource errors of an actor name the actor and actor_options, not a task") {
  weft_test::runtime_guard rt({.num_cpus = 2});
  struct plain {};
  const auto infeasible =
    weft_test::what_of<weft::resource_error>([] { weft::remote<plain>().options({.num_gpus = 1}).remote(); });
  CHECK_THAT(infeasible, Catch::Contains("actor ") && Catch::Contains("num_gpus") && !Catch::Contains("task '"));
  const auto negative =
    weft_test::what_of<weft::invalid_argument_error>([] { weft::remote<plain>().options({.num_cpus = -1}).remote(); });
  CHECK_THAT(negative, Catch::Contains("actor_options.num_cpus"));
}
