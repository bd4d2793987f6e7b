#include <catch2/catch.hpp>

#include "weft_test.hpp"

#include <atomic>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

// ---- contracts ----

static_assert(std::is_base_of_v<std::runtime_error, weft::error>);
static_assert(std::is_base_of_v<weft::error, weft::task_error>);
static_assert(std::is_base_of_v<weft::error, weft::get_timeout_error>);
static_assert(std::is_base_of_v<weft::error, weft::task_cancelled_error>);
static_assert(std::is_base_of_v<weft::error, weft::invalid_argument_error>);
static_assert(std::is_base_of_v<weft::error, weft::not_initialized_error>);
static_assert(std::is_base_of_v<weft::error, weft::resource_error>);
static_assert(std::is_base_of_v<weft::error, weft::runtime_shutdown_error>);

// ---- helpers ----

namespace errors_test {
/// An application exception type of the test's own.
struct my_error : std::runtime_error {
  using std::runtime_error::runtime_error;
  int code = 17;
};
} // namespace errors_test

namespace {

/// The task_error that get(r) throws; nullopt if get returned normally. Any
/// other exception escapes and fails the test.
template <class T>
std::optional<weft::task_error> task_error_of(const weft::object_ref<T>& r) {
  try {
    weft::get(r);
  } catch (const weft::task_error& e) {
    return e;
  }
  return std::nullopt;
}

} // namespace

// Remote functions (external linkage: default task names are the function names).

int throw_out_of_range(int i) { throw std::out_of_range("index " + std::to_string(i) + " is out of range"); }
int throw_my_error() { throw errors_test::my_error("my error happened"); }
int throw_int() { throw 42; }
int fails_with_default_name() { throw std::runtime_error("default name"); }

std::atomic<int> g_consumer_runs{0};
int consumer(int x) {
  ++g_consumer_runs;
  return x + 1;
}
int get_inside(weft::object_ref<int> r) { return weft::get(r) + 1; }
int get_inside_and_catch(weft::object_ref<int> r) {
  try {
    return weft::get(r);
  } catch (const weft::task_error&) {
    return -1;
  }
}

std::atomic<int> g_attempts{0};
std::atomic<int> g_planned_failures{0};

/// Throws on its first g_planned_failures attempts: std::runtime_error("attempt N failed").
int flaky() {
  const int attempt = ++g_attempts;
  if (attempt <= g_planned_failures.load())
    throw std::runtime_error("attempt " + std::to_string(attempt) + " failed");
  return attempt * 100;
}

/// Like flaky, throwing an exception of the kind given: 0 runtime_error,
/// 1 range_error (derives from runtime_error), 2 logic_error, 3 out_of_range
/// (derives from logic_error), 4 a non-std exception.
int flaky_kind(int kind) {
  const int attempt = ++g_attempts;
  if (attempt <= g_planned_failures.load()) {
    switch (kind) {
    case 0:
      throw std::runtime_error("runtime");
    case 1:
      throw std::range_error("range");
    case 2:
      throw std::logic_error("logic");
    case 3:
      throw std::out_of_range("out of range");
    default:
      throw 7;
    }
  }
  return attempt;
}

void reset_attempts(int planned_failures) {
  g_attempts = 0;
  g_planned_failures = planned_failures;
}

// ---- task_error ----

TEST_CASE("an exception thrown by a task is stored and get throws it as task_error") {
  weft_test::runtime_guard rt;
  auto r = weft::remote(throw_out_of_range).options({.name = "producer"}).remote(7);
  auto e = task_error_of(r);
  REQUIRE(e.has_value());
  CHECK(e->type_name() == "std::out_of_range");
  CHECK(e->message() == "index 7 is out of range");
  CHECK(e->chain() == std::vector<std::string>{"producer"});
  CHECK(r.is_ready());
  // The error is stored: every get throws it again.
  auto again = task_error_of(r);
  REQUIRE(again.has_value());
  CHECK(again->message() == "index 7 is out of range");
}

TEST_CASE("the cause of a task_error rethrows the original exception type") {
  weft_test::runtime_guard rt;
  auto r = weft::remote(throw_out_of_range).options({.name = "producer"}).remote(3);
  auto e = task_error_of(r);
  REQUIRE(e.has_value());
  REQUIRE(e->cause());
  try {
    std::rethrow_exception(e->cause());
  } catch (const std::out_of_range& original) {
    CHECK(std::string(original.what()) == "index 3 is out of range");
  } catch (...) {
    FAIL("cause() rethrew an exception of another type");
  }
}

TEST_CASE("a task_error names a user exception type and keeps the user exception as cause") {
  weft_test::runtime_guard rt;
  auto r = weft::remote(throw_my_error).options({.name = "producer"}).remote();
  auto e = task_error_of(r);
  REQUIRE(e.has_value());
  CHECK_THAT(e->type_name(), Catch::Contains("my_error"));
  CHECK_THAT(e->type_name(), Catch::Contains("errors_test"));
  CHECK(e->message() == "my error happened");
  CHECK(e->chain() == std::vector<std::string>{"producer"});
  try {
    std::rethrow_exception(e->cause());
  } catch (const errors_test::my_error& original) {
    CHECK(original.code == 17);
  } catch (...) {
    FAIL("cause() rethrew an exception of another type");
  }
}

TEST_CASE("a task_error can be caught as weft::error and as std::runtime_error") {
  weft_test::runtime_guard rt;
  auto r = weft::remote(throw_my_error).remote();
  CHECK_THROWS_AS(weft::get(r), weft::error);
  CHECK_THROWS_AS(weft::get(r), std::runtime_error);
  // The task's own exception type never escapes unwrapped.
  bool caught_raw = false;
  try {
    weft::get(r);
  } catch (const weft::task_error&) {
  } catch (const errors_test::my_error&) {
    caught_raw = true;
  }
  CHECK_FALSE(caught_raw);
}

TEST_CASE("the what of a task_error mentions the original message") {
  weft_test::runtime_guard rt;
  auto e = task_error_of(weft::remote(throw_out_of_range).remote(9));
  REQUIRE(e.has_value());
  CHECK_THAT(std::string(e->what()), Catch::Contains("index 9 is out of range"));
}

TEST_CASE("a task's default name in the error chain is its function's name") {
  weft_test::runtime_guard rt;
  auto e = task_error_of(weft::remote(fails_with_default_name).remote());
  REQUIRE(e.has_value());
  REQUIRE(e->chain().size() == 1);
  CHECK_THAT(e->chain()[0], Catch::Contains("fails_with_default_name"));
}

TEST_CASE("a non-std exception thrown by a task still produces a task_error") {
  weft_test::runtime_guard rt;
  auto r = weft::remote(throw_int).options({.name = "producer"}).remote();
  auto e = task_error_of(r);
  REQUIRE(e.has_value());
  CHECK(e->type_name() == "int");
  CHECK(e->chain() == std::vector<std::string>{"producer"});
  REQUIRE(e->cause());
  try {
    std::rethrow_exception(e->cause());
  } catch (int v) {
    CHECK(v == 42);
  } catch (...) {
    FAIL("cause() rethrew an exception of another type");
  }
}

TEST_CASE("a task that depends on a failed result fails with the same error") {
  weft_test::runtime_guard rt;
  g_consumer_runs = 0;
  auto bad = weft::remote(throw_out_of_range).options({.name = "producer"}).remote(5);
  auto dependent = weft::remote(consumer).options({.name = "consumer"}).remote(bad);
  auto e = task_error_of(dependent);
  REQUIRE(e.has_value());
  CHECK(e->type_name() == "std::out_of_range");
  CHECK(e->message() == "index 5 is out of range");
  CHECK(e->chain() == std::vector<std::string>{"producer", "consumer"});
  CHECK(g_consumer_runs.load() == 0); // its argument never had a value: it did not run
  // The producer's own error is unchanged.
  auto first = task_error_of(bad);
  REQUIRE(first.has_value());
  CHECK(first->chain() == std::vector<std::string>{"producer"});
}

TEST_CASE("the error chain grows by one name for every dependent task") {
  weft_test::runtime_guard rt;
  auto bad = weft::remote(throw_out_of_range).options({.name = "producer"}).remote(1);
  const auto consumer_r = weft::remote(consumer);
  auto second = consumer_r.options({.name = "second"}).remote(bad);
  auto third = consumer_r.options({.name = "third"}).remote(second);
  auto e = task_error_of(third);
  REQUIRE(e.has_value());
  CHECK(e->chain() == std::vector<std::string>{"producer", "second", "third"});
  CHECK(e->type_name() == "std::out_of_range");
  REQUIRE(e->cause());
  CHECK_THROWS_AS(std::rethrow_exception(e->cause()), std::out_of_range);
}

TEST_CASE("a task that gets a failed ref inside and lets the error escape extends the chain") {
  weft_test::runtime_guard rt;
  auto bad = weft::remote(throw_out_of_range).options({.name = "producer"}).remote(2);
  auto middle = weft::remote(get_inside).options({.name = "middle"}).remote(bad);
  auto e = task_error_of(middle);
  REQUIRE(e.has_value());
  CHECK(e->chain() == std::vector<std::string>{"producer", "middle"});
  CHECK(e->type_name() == "std::out_of_range");
  CHECK(e->message() == "index 2 is out of range");
}

TEST_CASE("a task that catches the error of a ref it gets inside succeeds") {
  weft_test::runtime_guard rt;
  auto bad = weft::remote(throw_out_of_range).remote(2);
  CHECK(weft::get(weft::remote(get_inside_and_catch).remote(bad)) == -1);
}

TEST_CASE("passed_through appends a name and keeps the rest of the error") {
  weft_test::runtime_guard rt;
  const auto cause = std::make_exception_ptr(std::out_of_range("oops"));
  const weft::task_error e("std::out_of_range", "oops", {"a"}, cause);
  const auto further = e.passed_through("b");
  CHECK(further.chain() == std::vector<std::string>{"a", "b"});
  CHECK(further.type_name() == "std::out_of_range");
  CHECK(further.message() == "oops");
  CHECK(further.cause() == cause);
  CHECK(e.chain() == std::vector<std::string>{"a"});
}

TEST_CASE("get of a list that holds a failed dependent throws task_error") {
  weft_test::runtime_guard rt;
  auto bad = weft::remote(throw_out_of_range).options({.name = "producer"}).remote(4);
  auto dependent = weft::remote(consumer).options({.name = "consumer"}).remote(bad);
  std::vector<weft::object_ref<int>> refs{weft::put(1), dependent};
  CHECK_THROWS_AS(weft::get(refs), weft::task_error);
}

// ---- exception_filter ----

TEST_CASE("exception_filter matches all, nothing, or the listed types and their subtypes") {
  weft_test::runtime_guard rt;
  const auto runtime_e = std::make_exception_ptr(std::runtime_error("r"));
  const auto range_e = std::make_exception_ptr(std::range_error("r"));
  const auto logic_e = std::make_exception_ptr(std::logic_error("l"));
  const auto int_e = std::make_exception_ptr(3);

  const weft::exception_filter none;
  CHECK(none.retries_nothing());
  CHECK_FALSE(none.matches(runtime_e));
  const weft::exception_filter none_explicit = false;
  CHECK(none_explicit.retries_nothing());

  const weft::exception_filter all = true;
  CHECK_FALSE(all.retries_nothing());
  CHECK(all.matches(runtime_e));
  CHECK(all.matches(logic_e));
  CHECK(all.matches(int_e));

  const auto runtime_only = weft::retry_on<std::runtime_error>();
  CHECK_FALSE(runtime_only.retries_nothing());
  CHECK(runtime_only.matches(runtime_e));
  CHECK(runtime_only.matches(range_e));
  CHECK_FALSE(runtime_only.matches(logic_e));
  CHECK_FALSE(runtime_only.matches(int_e));

  const auto two = weft::retry_on<std::range_error, std::logic_error>();
  CHECK(two.matches(range_e));
  CHECK(two.matches(logic_e));
  CHECK_FALSE(two.matches(runtime_e));
}

// ---- retries ----

TEST_CASE("a task that throws twice succeeds on its third attempt with retry_exceptions") {
  weft_test::runtime_guard rt;
  reset_attempts(2);
  auto r = weft::remote(flaky).options({.max_retries = 3, .retry_exceptions = true}).remote();
  CHECK(weft::get(r) == 300);
  CHECK(g_attempts.load() == 3);
}

TEST_CASE("retries set as per-function defaults apply to every call") {
  weft_test::runtime_guard rt;
  reset_attempts(2);
  const auto flaky_r = weft::remote(flaky, {.max_retries = 3, .retry_exceptions = true});
  CHECK(weft::get(flaky_r.remote()) == 300);
  CHECK(g_attempts.load() == 3);
}

TEST_CASE("without retry_exceptions a task that throws fails after one attempt") {
  weft_test::runtime_guard rt;
  reset_attempts(2);
  auto r = weft::remote(flaky).options({.name = "flaky"}).remote();
  auto e = task_error_of(r);
  REQUIRE(e.has_value());
  CHECK(e->message() == "attempt 1 failed");
  CHECK(g_attempts.load() == 1);
}

TEST_CASE("with retry_exceptions false a task that throws fails after one attempt even with max_retries") {
  weft_test::runtime_guard rt;
  reset_attempts(2);
  auto r = weft::remote(flaky).options({.max_retries = 5, .retry_exceptions = false}).remote();
  CHECK_THROWS_AS(weft::get(r), weft::task_error);
  CHECK(g_attempts.load() == 1);
}

TEST_CASE("with max_retries one a task that throws three times fails after exactly two attempts") {
  weft_test::runtime_guard rt;
  reset_attempts(3);
  auto r = weft::remote(flaky).options({.max_retries = 1, .retry_exceptions = true, .name = "flaky"}).remote();
  auto e = task_error_of(r);
  REQUIRE(e.has_value());
  CHECK(e->message() == "attempt 2 failed"); // the last attempt's error
  CHECK(e->chain() == std::vector<std::string>{"flaky"});
  CHECK(g_attempts.load() == 2);
}

TEST_CASE("with max_retries zero a task that throws is not retried") {
  weft_test::runtime_guard rt;
  reset_attempts(1);
  auto r = weft::remote(flaky).options({.max_retries = 0, .retry_exceptions = true}).remote();
  CHECK_THROWS_AS(weft::get(r), weft::task_error);
  CHECK(g_attempts.load() == 1);
}

TEST_CASE("the default max_retries with retry_exceptions is three") {
  weft_test::runtime_guard rt;
  reset_attempts(10);
  auto r = weft::remote(flaky).options({.retry_exceptions = true}).remote();
  auto e = task_error_of(r);
  REQUIRE(e.has_value());
  CHECK(g_attempts.load() == 4); // the first run and three retries
  CHECK(e->message() == "attempt 4 failed");
}

TEST_CASE("retry_on a runtime_error retries runtime_error") {
  weft_test::runtime_guard rt;
  reset_attempts(2);
  auto r = weft::remote(flaky_kind).options({.retry_exceptions = weft::retry_on<std::runtime_error>()}).remote(0);
  CHECK(weft::get(r) == 3);
  CHECK(g_attempts.load() == 3);
}

TEST_CASE("retry_on a runtime_error retries types derived from runtime_error") {
  weft_test::runtime_guard rt;
  reset_attempts(2);
  auto r = weft::remote(flaky_kind).options({.retry_exceptions = weft::retry_on<std::runtime_error>()}).remote(1);
  CHECK(weft::get(r) == 3);
  CHECK(g_attempts.load() == 3);
}

TEST_CASE("retry_on a runtime_error does not retry a logic_error") {
  weft_test::runtime_guard rt;
  reset_attempts(2);
  auto r = weft::remote(flaky_kind).options({.retry_exceptions = weft::retry_on<std::runtime_error>()}).remote(2);
  auto e = task_error_of(r);
  REQUIRE(e.has_value());
  CHECK(e->type_name() == "std::logic_error");
  CHECK(g_attempts.load() == 1);
}

TEST_CASE("retry_on a runtime_error does not retry a non-std exception") {
  weft_test::runtime_guard rt;
  reset_attempts(2);
  auto r = weft::remote(flaky_kind).options({.retry_exceptions = weft::retry_on<std::runtime_error>()}).remote(4);
  CHECK_THROWS_AS(weft::get(r), weft::task_error);
  CHECK(g_attempts.load() == 1);
}

TEST_CASE("retry_on with several types retries any of them") {
  weft_test::runtime_guard rt;
  reset_attempts(2);
  const auto filter = weft::retry_on<std::invalid_argument, std::out_of_range>();
  auto r = weft::remote(flaky_kind).options({.retry_exceptions = filter}).remote(3);
  CHECK(weft::get(r) == 3);
  CHECK(g_attempts.load() == 3);
}

TEST_CASE("max_retries minus one retries until the task succeeds") {
  weft_test::runtime_guard rt;
  reset_attempts(10);
  auto r = weft::remote(flaky).options({.max_retries = -1, .retry_exceptions = true}).remote();
  CHECK(weft::get(r) == 1100);
  CHECK(g_attempts.load() == 11);
}

TEST_CASE("a negative max_retries other than minus one is rejected at submit") {
  weft_test::runtime_guard rt;
  reset_attempts(0);
  CHECK_THROWS_AS(weft::remote(flaky).options({.max_retries = -2}).remote(), weft::invalid_argument_error);
  CHECK(g_attempts.load() == 0);
}
