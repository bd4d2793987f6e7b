// Starting weft: weft::config_from() reads --weft-* flags and WEFT_*
// environment variables (flags win), weft::init(argc, argv) applies them, and
// bad configurations are refused with invalid_argument_error.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "weft_test.hpp"

using Catch::Matchers::Contains;

namespace {

using weft_test::what_of;

using weft_test::bound;
using weft_test::eventually;

/// Clears every WEFT_* variable config_from reads and restores them at scope exit.
class clean_environment {
public:
  clean_environment() {
    for (const char* name : names) {
      const char* v = std::getenv(name);
      saved_.push_back(v ? std::optional<std::string>(v) : std::nullopt);
      ::unsetenv(name);
    }
  }
  ~clean_environment() {
    for (std::size_t i = 0; i < std::size(names); ++i) {
      if (saved_[i])
        ::setenv(names[i], saved_[i]->c_str(), 1);
      else
        ::unsetenv(names[i]);
    }
  }
  void set(const char* name, const char* value) { ::setenv(name, value, 1); }

private:
  static constexpr const char* names[] = {"WEFT_NUM_CPUS",  "WEFT_NUM_GPUS", "WEFT_MEMORY",        "WEFT_RESOURCES",
                                          "WEFT_LOG_LEVEL", "WEFT_WORKERS",  "WEFT_WORKER_PROGRAM"};
  std::vector<std::optional<std::string>> saved_;
};

struct shutdown_at_exit {
  ~shutdown_at_exit() { weft::shutdown(); }
};

weft::config parse(std::vector<const char*> args) {
  args.insert(args.begin(), "program");
  return weft::config_from(static_cast<int>(args.size()), args.data());
}

int seven() { return 7; }

/// The pid of the process the task runs in.
int own_pid() { return static_cast<int>(::getpid()); }

/// Tail recursion through tasks, to run something that blocks on small stacks.
int chain(int n);
const auto chain_r = weft::remote(chain);
int chain(int n) { return n == 0 ? 0 : weft::get(chain_r.remote(n - 1), bound) + 1; }

} // namespace

// ---------------------------------------------------------------- config_from: flags

TEST_CASE("config_from parses --weft-num-cpus=N") {
  clean_environment env;
  const auto cfg = parse({"--weft-num-cpus=3"});
  REQUIRE(cfg.num_cpus);
  CHECK(*cfg.num_cpus == 3);
}

TEST_CASE("config_from takes a flag's value from the next argument") {
  clean_environment env;
  const auto cfg = parse({"--weft-num-gpus", "1", "--weft-num-cpus", "2.5"});
  CHECK(cfg.num_gpus == 1);
  REQUIRE(cfg.num_cpus);
  CHECK(*cfg.num_cpus == 2.5);
}

TEST_CASE("config_from parses a resource list") {
  clean_environment env;
  const auto cfg = parse({"--weft-resources=disk:4,net:0.5"});
  CHECK(cfg.resources == std::map<std::string, double>{{"disk", 4}, {"net", 0.5}});
}

TEST_CASE("config_from parses the log level and memory") {
  clean_environment env;
  const auto cfg = parse({"--weft-log-level=debug", "--weft-memory=1000"});
  CHECK(cfg.log_level == std::optional<std::string>("debug"));
  REQUIRE(cfg.memory);
  CHECK(*cfg.memory == 1000);
}

TEST_CASE("config_from parses every flag together") {
  clean_environment env;
  const auto cfg = parse({"--weft-num-cpus=3", "--weft-num-gpus", "1", "--weft-resources=disk:4,net:0.5",
                          "--weft-log-level=debug", "--weft-memory=1000"});
  CHECK(cfg.num_cpus == std::optional<double>(3));
  CHECK(cfg.num_gpus == 1);
  CHECK(cfg.resources == std::map<std::string, double>{{"disk", 4}, {"net", 0.5}});
  CHECK(cfg.log_level == std::optional<std::string>("debug"));
  CHECK(cfg.memory == std::optional<double>(1000));
}

TEST_CASE("config_from parses --weft-workers and --weft-worker-program") {
  clean_environment env;
  CHECK(parse({}).workers == weft::worker_mode::local);
  CHECK_FALSE(parse({}).worker_program);
  CHECK(parse({"--weft-workers=processes"}).workers == weft::worker_mode::processes);
  CHECK(parse({"--weft-workers", "processes"}).workers == weft::worker_mode::processes);
  CHECK(parse({"--weft-workers=processes", "--weft-workers=local"}).workers == weft::worker_mode::local);
  const auto cfg = parse({"--weft-worker-program=/opt/app/worker", "--weft-workers=processes"});
  CHECK(cfg.workers == weft::worker_mode::processes);
  CHECK(cfg.worker_program == std::optional<std::string>("/opt/app/worker"));
  CHECK(parse({"--weft-worker-program", "bin/w"}).worker_program == std::optional<std::string>("bin/w"));
}

TEST_CASE("a --weft-workers value other than local or processes is an invalid_argument_error naming the flag") {
  clean_environment env;
  const auto msg = what_of<weft::invalid_argument_error>([] { parse({"--weft-workers=threads"}); });
  CHECK_THAT(msg, Contains("--weft-workers") && Contains("threads") && Contains("expected local or processes"));
  // Case matters, and an empty value is no mode either.
  CHECK_THROWS_AS(parse({"--weft-workers=Processes"}), weft::invalid_argument_error);
  CHECK_THAT(what_of<weft::invalid_argument_error>([] { parse({"--weft-workers="}); }),
             Contains("--weft-workers") && Contains("expected local or processes"));
}

TEST_CASE("config_from ignores arguments that are not weft flags") {
  clean_environment env;
  const auto cfg = parse({"--verbose", "input.txt", "-n", "4", "--num-cpus=9", "--weft", "-weft-num-cpus=9",
                          "--weft-num-cpus=2", "--threads", "8"});
  CHECK(cfg.num_cpus == std::optional<double>(2));
  CHECK(cfg.num_gpus == 0);
  CHECK_FALSE(cfg.memory);
  CHECK(cfg.resources.empty());
  CHECK_FALSE(cfg.log_level);
}

TEST_CASE("config_from without weft flags gives the default config") {
  clean_environment env;
  const auto cfg = parse({"--verbose"});
  const weft::config defaults;
  CHECK_FALSE(cfg.num_cpus);
  CHECK(cfg.num_gpus == defaults.num_gpus);
  CHECK_FALSE(cfg.memory);
  CHECK(cfg.resources.empty());
  CHECK_FALSE(cfg.log_level);
  CHECK(cfg.fiber_stack_size == defaults.fiber_stack_size);
}

TEST_CASE("an unknown --weft- flag is an invalid_argument_error naming it") {
  clean_environment env;
  const auto msg = what_of<weft::invalid_argument_error>([] { parse({"--weft-foo=1"}); });
  CHECK_THAT(msg, Contains("--weft-foo"));
}

TEST_CASE("a flag value that is not a number is an invalid_argument_error naming it") {
  clean_environment env;
  const auto msg = what_of<weft::invalid_argument_error>([] { parse({"--weft-num-cpus=abc"}); });
  CHECK_THAT(msg, Contains("abc") && Contains("num-cpus"));
  CHECK_THROWS_AS(parse({"--weft-num-cpus=3x"}), weft::invalid_argument_error);
  CHECK_THROWS_AS(parse({"--weft-num-cpus="}), weft::invalid_argument_error);
  CHECK_THROWS_AS(parse({"--weft-memory=lots"}), weft::invalid_argument_error);
}

TEST_CASE("a malformed resource list is an invalid_argument_error") {
  clean_environment env;
  CHECK_THAT(what_of<weft::invalid_argument_error>([] { parse({"--weft-resources=disk"}); }), Contains("disk"));
  CHECK_THAT(what_of<weft::invalid_argument_error>([] { parse({"--weft-resources=disk:x"}); }), Contains("x"));
  CHECK_THROWS_AS(parse({"--weft-resources=:4"}), weft::invalid_argument_error);
}

TEST_CASE("a flag without its value at the end of the line is an invalid_argument_error") {
  clean_environment env;
  const auto msg = what_of<weft::invalid_argument_error>([] { parse({"--weft-num-gpus"}); });
  CHECK_THAT(msg, Contains("--weft-num-gpus"));
}

// ---------------------------------------------------------------- config_from: environment

TEST_CASE("config_from reads the WEFT_ environment variables") {
  clean_environment env;
  env.set("WEFT_NUM_CPUS", "5");
  env.set("WEFT_NUM_GPUS", "2");
  env.set("WEFT_MEMORY", "2048");
  env.set("WEFT_RESOURCES", "disk:2,net:1");
  env.set("WEFT_LOG_LEVEL", "error");
  const auto cfg = parse({});
  CHECK(cfg.num_cpus == std::optional<double>(5));
  CHECK(cfg.num_gpus == 2);
  CHECK(cfg.memory == std::optional<double>(2048));
  CHECK(cfg.resources == std::map<std::string, double>{{"disk", 2}, {"net", 1}});
  CHECK(cfg.log_level == std::optional<std::string>("error"));
}

TEST_CASE("flags win over environment variables") {
  clean_environment env;
  env.set("WEFT_NUM_CPUS", "5");
  env.set("WEFT_RESOURCES", "disk:2");
  env.set("WEFT_LOG_LEVEL", "error");
  const auto cfg = parse({"--weft-num-cpus=3", "--weft-resources=tape:1", "--weft-log-level", "info"});
  CHECK(cfg.num_cpus == std::optional<double>(3));
  CHECK(cfg.resources == std::map<std::string, double>{{"tape", 1}});
  CHECK(cfg.log_level == std::optional<std::string>("info"));
}

TEST_CASE("environment variables fill in what the flags leave out") {
  clean_environment env;
  env.set("WEFT_NUM_CPUS", "5");
  env.set("WEFT_LOG_LEVEL", "error");
  const auto cfg = parse({"--weft-num-cpus=3"});
  CHECK(cfg.num_cpus == std::optional<double>(3));
  CHECK(cfg.log_level == std::optional<std::string>("error"));
}

TEST_CASE("a bad environment value is an invalid_argument_error naming the variable") {
  clean_environment env;
  env.set("WEFT_NUM_CPUS", "lots");
  const auto msg = what_of<weft::invalid_argument_error>([] { parse({}); });
  CHECK_THAT(msg, Contains("WEFT_NUM_CPUS") && Contains("lots"));
}

TEST_CASE("config_from reads WEFT_WORKERS and WEFT_WORKER_PROGRAM and the flags win over them") {
  clean_environment env;
  env.set("WEFT_WORKERS", "processes");
  env.set("WEFT_WORKER_PROGRAM", "/opt/app/worker");
  auto cfg = parse({});
  CHECK(cfg.workers == weft::worker_mode::processes);
  CHECK(cfg.worker_program == std::optional<std::string>("/opt/app/worker"));
  cfg = parse({"--weft-workers=local", "--weft-worker-program=/opt/app/other"});
  CHECK(cfg.workers == weft::worker_mode::local);
  CHECK(cfg.worker_program == std::optional<std::string>("/opt/app/other"));
}

TEST_CASE("a bad WEFT_WORKERS is an invalid_argument_error naming the variable and the expected values") {
  clean_environment env;
  env.set("WEFT_WORKERS", "fork");
  const auto msg = what_of<weft::invalid_argument_error>([] { parse({}); });
  CHECK_THAT(msg, Contains("$WEFT_WORKERS") && Contains("fork") && Contains("expected local or processes"));
  // A flag does not excuse it: the environment is read first.
  CHECK_THROWS_AS(parse({"--weft-workers=local"}), weft::invalid_argument_error);
}

// ---------------------------------------------------------------- init(argc, argv)

TEST_CASE("init(argc, argv) applies --weft-num-cpus") {
  clean_environment env;
  shutdown_at_exit stop;
  const char* argv[] = {"program", "--weft-num-cpus=3", "positional"};
  weft::init(3, argv);
  REQUIRE(weft::is_initialized());
  CHECK(weft::get(weft::remote(seven, {.num_cpus = 3}).remote(), bound) == 7);
  CHECK_THROWS_AS(weft::remote(seven, {.num_cpus = 4}).remote(), weft::resource_error);
}

TEST_CASE("init(argc, argv) with fewer CPUs makes a larger task infeasible") {
  clean_environment env;
  shutdown_at_exit stop;
  const char* argv[] = {"program", "--weft-num-cpus=2"};
  weft::init(2, argv);
  const auto msg = what_of<weft::resource_error>([] { weft::remote(seven, {.num_cpus = 3}).remote(); });
  CHECK_THAT(msg, Contains("num_cpus") && Contains("3") && Contains("2"));
  CHECK(weft::get(weft::remote(seven, {.num_cpus = 2}).remote(), bound) == 7);
}

TEST_CASE("init(argc, argv) applies --weft-resources and --weft-num-gpus") {
  clean_environment env;
  shutdown_at_exit stop;
  const char* argv[] = {"program", "--weft-num-cpus=2", "--weft-resources=disk:1", "--weft-num-gpus", "1"};
  weft::init(5, argv);
  weft::task_options o{.num_gpus = 1};
  o.resources = std::map<std::string, double>{{"disk", 1}};
  CHECK(weft::get(weft::remote(seven, o).remote(), bound) == 7);
  o.resources = std::map<std::string, double>{{"disk", 2}};
  CHECK_THROWS_AS(weft::remote(seven, o).remote(), weft::resource_error);
}

TEST_CASE("init(argc, argv) applies the environment") {
  clean_environment env;
  shutdown_at_exit stop;
  env.set("WEFT_NUM_CPUS", "3");
  const char* argv[] = {"program"};
  weft::init(1, argv);
  CHECK(weft::get(weft::remote(seven, {.num_cpus = 3}).remote(), bound) == 7);
  CHECK_THROWS_AS(weft::remote(seven, {.num_cpus = 4}).remote(), weft::resource_error);
}

TEST_CASE("init(argc, argv) with --weft-workers=processes runs tasks in another process") {
  clean_environment env;
  shutdown_at_exit stop;
  const char* argv[] = {"program", "--weft-workers=processes", "--weft-num-cpus=1"};
  weft::init(3, argv);
  const int pid = weft::get(weft::remote(own_pid).remote(), bound);
  CHECK(pid != static_cast<int>(::getpid()));
  CHECK(pid > 0);
}

TEST_CASE("init(argc, argv) with WEFT_WORKERS=processes runs tasks in another process") {
  clean_environment env;
  shutdown_at_exit stop;
  env.set("WEFT_WORKERS", "processes");
  const char* argv[] = {"program", "--weft-num-cpus=1"};
  weft::init(2, argv);
  CHECK(weft::get(weft::remote(own_pid).remote(), bound) != static_cast<int>(::getpid()));
}

TEST_CASE("init(argc, argv) with --weft-workers=local runs tasks in this process") {
  clean_environment env;
  shutdown_at_exit stop;
  env.set("WEFT_WORKERS", "processes"); // the flag wins
  const char* argv[] = {"program", "--weft-workers=local", "--weft-num-cpus=1"};
  weft::init(3, argv);
  CHECK(weft::get(weft::remote(own_pid).remote(), bound) == static_cast<int>(::getpid()));
}

TEST_CASE("init(argc, argv) applies --weft-worker-program: a missing program fails tasks with worker_start_error") {
  clean_environment env;
  shutdown_at_exit stop;
  const char* argv[] = {"program", "--weft-workers=processes", "--weft-worker-program=/nonexistent/weft-worker",
                        "--weft-num-cpus=1"};
  weft::init(4, argv);
  const auto msg = what_of<weft::worker_start_error>([] { weft::get(weft::remote(own_pid).remote(), bound); });
  CHECK_THAT(msg, Contains("/nonexistent/weft-worker"));
}

TEST_CASE("init(argc, argv) with a bad --weft-workers throws and starts nothing") {
  clean_environment env;
  shutdown_at_exit stop;
  const char* argv[] = {"program", "--weft-workers=thread"};
  const auto msg = what_of<weft::invalid_argument_error>([&] { weft::init(2, argv); });
  CHECK_THAT(msg, Contains("--weft-workers") && Contains("expected local or processes"));
  CHECK_FALSE(weft::is_initialized());
}

TEST_CASE("init(argc, argv) with an unknown flag throws and starts nothing") {
  clean_environment env;
  shutdown_at_exit stop;
  const char* argv[] = {"program", "--weft-cpus=2"};
  CHECK_THROWS_AS(weft::init(2, argv), weft::invalid_argument_error);
  CHECK_FALSE(weft::is_initialized());
}

TEST_CASE("init without num_cpus gives the node the machine's hardware threads") {
  clean_environment env;
  shutdown_at_exit stop;
  weft::init({});
  const double hw = std::max(1u, std::thread::hardware_concurrency());
  CHECK(weft::get(weft::remote(seven, {.num_cpus = hw}).remote(), bound) == 7);
  CHECK_THROWS_AS(weft::remote(seven, {.num_cpus = hw + 1}).remote(), weft::resource_error);
}

// ---------------------------------------------------------------- bad configs

TEST_CASE("an unknown log level name makes init throw invalid_argument_error naming it") {
  clean_environment env;
  shutdown_at_exit stop;
  const auto msg = what_of<weft::invalid_argument_error>([] { weft::init({.num_cpus = 1, .log_level = "loud"}); });
  CHECK_THAT(msg, Contains("loud"));
  CHECK_FALSE(weft::is_initialized());
  const char* argv[] = {"program", "--weft-log-level=shouty"};
  CHECK_THROWS_AS(weft::init(2, argv), weft::invalid_argument_error);
  CHECK_FALSE(weft::is_initialized());
}

TEST_CASE("an unknown log level in WEFT_LOG_LEVEL makes init throw invalid_argument_error") {
  clean_environment env;
  shutdown_at_exit stop;
  env.set("WEFT_LOG_LEVEL", "chatty");
  const auto msg = what_of<weft::invalid_argument_error>([] { weft::init({.num_cpus = 1}); });
  CHECK_THAT(msg, Contains("chatty"));
  CHECK_FALSE(weft::is_initialized());
}

TEST_CASE("every documented log level name is accepted") {
  clean_environment env;
  shutdown_at_exit stop;
  for (const char* level : {"trace", "debug", "info", "warn", "error", "critical", "off"}) {
    INFO("log level " << level);
    weft::init({.num_cpus = 1, .log_level = level});
    CHECK(weft::is_initialized());
    weft::shutdown();
  }
  weft::init({.num_cpus = 1, .log_level = "warn"}); // quiet again for what follows
}

TEST_CASE("a fiber stack below 16 KiB makes init throw invalid_argument_error") {
  clean_environment env;
  shutdown_at_exit stop;
  const auto msg = what_of<weft::invalid_argument_error>([] { weft::init({.num_cpus = 1, .fiber_stack_size = 4096}); });
  CHECK_THAT(msg, Contains("fiber_stack_size") && Contains("4096"));
  CHECK_FALSE(weft::is_initialized());
}

TEST_CASE("a worker_start_timeout that is not positive makes init throw invalid_argument_error") {
  clean_environment env;
  shutdown_at_exit stop;
  const auto msg = what_of<weft::invalid_argument_error>(
    [] { weft::init({.num_cpus = 1, .worker_start_timeout = std::chrono::milliseconds(0)}); });
  CHECK_THAT(msg, Contains("worker_start_timeout") && Contains("positive"));
  CHECK_FALSE(weft::is_initialized());
}

TEST_CASE("tasks run and block on small fiber stacks") {
  clean_environment env;
  shutdown_at_exit stop;
  weft::init({.num_cpus = 1, .fiber_stack_size = 64 * 1024});
  CHECK(weft::get(chain_r.remote(50), bound) == 50);
}
