#include <catch2/catch.hpp>

#include "weft_test.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

// ---- helpers ----

namespace {

using weft_test::open_gate_at_exit;
using weft_test::wait_for_gate;

/// Counts copies and moves, to tell how arguments reach a task.
struct tracked {
  static inline std::atomic<int> copies{0};
  static inline std::atomic<int> moves{0};
  int value = 0;
  tracked() = default;
  explicit tracked(int v) : value(v) {}
  tracked(const tracked& o) : value(o.value) { ++copies; }
  tracked(tracked&& o) noexcept : value(o.value) { ++moves; }
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& value;
  }
  tracked& operator=(const tracked& o) {
    value = o.value;
    ++copies;
    return *this;
  }
  tracked& operator=(tracked&& o) noexcept {
    value = o.value;
    ++moves;
    return *this;
  }
};

} // namespace

// Remote functions (external linkage so default task names are the functions' names).

int add(int a, int b) { return a + b; }
int increment(int x) { return x + 1; }
int square(int x) { return x * x; }

std::atomic<int> g_touched{0};
void touch(int x) { g_touched.store(x); }
void throw_void() { throw std::runtime_error("void task failed"); }

std::tuple<int, std::string> number_and_name(int x) { return {x * 2, "n" + std::to_string(x)}; }
std::tuple<int, std::string> split_failure(int) { throw std::runtime_error("split failed"); }
std::pair<double, bool> halve(int x) { return {x / 2.0, x % 2 == 0}; }

int gated_value(int x) {
  wait_for_gate();
  return x;
}

std::uint64_t id_of_ref(weft::object_ref<int> r) { return r.id().value; }
bool ref_is_ready(weft::object_ref<int> r) { return r.is_ready(); }
int get_ref_times_ten(weft::object_ref<int> r) { return weft::get(r) * 10; }

std::size_t count_ready_refs(std::vector<weft::object_ref<int>> refs) {
  std::size_t n = 0;
  for (const auto& r : refs)
    if (r.valid() && r.is_ready())
      ++n;
  return n;
}
int sum_refs(std::vector<weft::object_ref<int>> refs) {
  int s = 0;
  for (const auto& r : refs)
    s += weft::get(r);
  return s;
}

std::size_t length_of(const std::string& s) { return s.size(); }
int copies_seen(const tracked& t) { return tracked::copies.load() * 1000 + t.value; }

int f() { return 1; }
std::vector<weft::object_ref<int>> g() {
  const auto f_r = weft::remote(f);
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < 4; ++i)
    refs.push_back(f_r.remote());
  return refs;
}
std::vector<int> h() {
  const auto f_r = weft::remote(f);
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < 4; ++i)
    refs.push_back(f_r.remote());
  return weft::get(refs);
}

int fib(int n) {
  if (n < 2)
    return n;
  const auto fib_r = weft::remote(fib);
  auto a = fib_r.remote(n - 1);
  auto b = fib_r.remote(n - 2);
  return weft::get(a) + weft::get(b);
}

int add_remotely(int a, int b) { return weft::get(weft::remote(add).remote(a, b)); }

int always_throws() { throw std::runtime_error("always"); }

std::atomic<int> g_attempts{0};
int fails_twice() {
  if (++g_attempts <= 2)
    throw std::runtime_error("not yet");
  return 99;
}

// ---- basic calls ----

TEST_CASE("a remote call returns a typed ref whose get gives the function's result") {
  weft_test::runtime_guard rt;
  const auto add_r = weft::remote(add);
  weft::object_ref<int> r = add_r.remote(20, 22);
  static_assert(std::is_same_v<decltype(add_r.remote(1, 2)), weft::object_ref<int>>);
  CHECK(r.valid());
  CHECK(weft::get(r) == 42);
  CHECK(weft::get(r) == 42); // a value can be read many times
  CHECK(add_r.function() == &add);
}

TEST_CASE("many calls of one remote function each give their own result") {
  weft_test::runtime_guard rt;
  const auto square_r = weft::remote(square);
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < 100; ++i)
    refs.push_back(square_r.remote(i));
  const auto values = weft::get(refs);
  REQUIRE(values.size() == 100);
  for (int i = 0; i < 100; ++i)
    CHECK(values[i] == i * i);
}

TEST_CASE("a void remote function gives an object_ref<void> whose get waits for the call") {
  weft_test::runtime_guard rt;
  g_touched = 0;
  const auto touch_r = weft::remote(touch);
  weft::object_ref<void> r = touch_r.remote(17);
  static_assert(std::is_same_v<decltype(touch_r.remote(1)), weft::object_ref<void>>);
  weft::get(r);
  CHECK(r.is_ready());
  CHECK(g_touched.load() == 17);

  std::vector<weft::object_ref<void>> refs;
  for (int i = 1; i <= 3; ++i)
    refs.push_back(touch_r.remote(i));
  weft::get(refs);
  for (const auto& x : refs)
    CHECK(x.is_ready());
}

TEST_CASE("get of a void remote function that throws throws task_error") {
  weft_test::runtime_guard rt;
  auto r = weft::remote(throw_void).remote();
  CHECK_THROWS_AS(weft::get(r), weft::task_error);
  std::vector<weft::object_ref<void>> refs{r};
  CHECK_THROWS_AS(weft::get(refs), weft::task_error);
}

// ---- num_returns ----

TEST_CASE("num_returns splits a returned tuple into one typed ref per element") {
  weft_test::runtime_guard rt;
  const auto split_r = weft::remote(number_and_name).num_returns<2>();
  auto [n, s] = split_r.remote(21);
  static_assert(std::is_same_v<decltype(n), weft::object_ref<int>>);
  static_assert(std::is_same_v<decltype(s), weft::object_ref<std::string>>);
  CHECK(n.id() != s.id());
  CHECK(weft::get(n) == 42);
  CHECK(weft::get(s) == "n21");
}

TEST_CASE("num_returns works on a function returning a std::pair") {
  weft_test::runtime_guard rt;
  auto [half, even] = weft::remote(halve).num_returns<2>().remote(7);
  static_assert(std::is_same_v<decltype(half), weft::object_ref<double>>);
  static_assert(std::is_same_v<decltype(even), weft::object_ref<bool>>);
  CHECK(weft::get(half) == 3.5);
  CHECK_FALSE(weft::get(even));
}

TEST_CASE("the refs of a split result can be passed on to other tasks") {
  weft_test::runtime_guard rt;
  auto [n, s] = weft::remote(number_and_name).num_returns<2>().remote(5);
  auto doubled = weft::remote(add).remote(n, n);
  auto len = weft::remote(length_of).remote(s);
  CHECK(weft::get(doubled) == 20);
  CHECK(weft::get(len) == 2);
}

TEST_CASE("when a function with num_returns throws both of its refs fail") {
  weft_test::runtime_guard rt;
  auto [n, s] = weft::remote(split_failure).options({.name = "splitter"}).num_returns<2>().remote(1);
  CHECK_THROWS_AS(weft::get(n), weft::task_error);
  CHECK_THROWS_AS(weft::get(s), weft::task_error);
  try {
    weft::get(s);
  } catch (const weft::task_error& e) {
    CHECK(e.message() == "split failed");
    CHECK(e.chain() == std::vector<std::string>{"splitter"});
  }
}

TEST_CASE("num_returns keeps the function's options") {
  weft_test::runtime_guard rt;
  const auto base = weft::remote(number_and_name, {.max_retries = 7, .name = "numbers"});
  const auto split_r = base.num_returns<2>();
  CHECK(split_r.default_options().max_retries == 7);
  CHECK(split_r.default_options().name == "numbers");
}

// ---- num_returns(n): a count chosen at run time ----

std::vector<int> count_up(int n) {
  std::vector<int> v;
  for (int i = 0; i < n; ++i)
    v.push_back(i * 10);
  return v;
}
std::vector<std::string> words_of(std::string text) {
  std::vector<std::string> out;
  std::string word;
  for (char c : text + " ") {
    if (c != ' ') {
      word += c;
    } else if (!word.empty()) {
      out.push_back(word);
      word.clear();
    }
  }
  return out;
}
std::vector<int> vector_failure(int) { throw std::runtime_error("vector failed"); }

std::atomic<int> g_short_attempts{0};
/// Returns one element too few on its first `short_runs` attempts.
std::vector<int> short_at_first(int n, int short_runs) {
  const int attempt = ++g_short_attempts;
  return count_up(attempt <= short_runs ? n - 1 : n);
}
std::atomic<int> g_throw_attempts{0};
/// Throws on its first `throws` attempts, then returns n elements.
std::vector<int> throws_at_first(int n, int throws) {
  if (++g_throw_attempts <= throws)
    throw std::runtime_error("attempt failed");
  return count_up(n);
}

TEST_CASE("num_returns(n) gives one ref per element of the returned vector") {
  weft_test::runtime_guard rt;
  const auto f = weft::remote(count_up).num_returns(4);
  static_assert(std::is_same_v<decltype(f.remote(4)), std::vector<weft::object_ref<int>>>);
  CHECK(f.return_count() == 4);
  auto refs = f.remote(4);
  REQUIRE(refs.size() == 4);
  for (std::size_t i = 0; i < refs.size(); ++i)
    CHECK(weft::get(refs[i], weft_test::bound) == static_cast<int>(i) * 10);
  CHECK(refs[0].id() != refs[1].id());
  CHECK(refs[1].id() != refs[3].id());
}

TEST_CASE("num_returns(n) takes a count computed at run time and keeps the element type") {
  weft_test::runtime_guard rt;
  const std::string text = "the quick brown fox";
  const auto n = words_of(text).size(); // a std::size_t known only now
  auto refs = weft::remote(words_of).num_returns(n).remote(text);
  static_assert(std::is_same_v<decltype(refs), std::vector<weft::object_ref<std::string>>>);
  CHECK(weft::get(refs, weft_test::bound) == std::vector<std::string>{"the", "quick", "brown", "fox"});
}

TEST_CASE("the refs of num_returns(n) can be passed on to other tasks") {
  weft_test::runtime_guard rt;
  auto refs = weft::remote(count_up).num_returns(3).remote(3);
  auto sum = weft::remote(add).remote(refs[1], refs[2]);
  CHECK(weft::get(sum, weft_test::bound) == 30);
}

TEST_CASE("num_returns(n) with a vector of another size fails every ref with num_returns_error") {
  weft_test::runtime_guard rt;
  auto refs = weft::remote(count_up, {.name = "counter"}).num_returns(3).remote(2);
  REQUIRE(refs.size() == 3);
  for (const auto& r : refs) {
    try {
      weft::get(r, weft_test::bound);
      FAIL("expected task_error");
    } catch (const weft::task_error& e) {
      CHECK(e.type_name() == "weft::num_returns_error");
      CHECK(e.chain() == std::vector<std::string>{"counter"});
      CHECK_THAT(e.message(), Catch::Matchers::Contains("returned a std::vector of 2 elements"));
      CHECK_THAT(e.message(), Catch::Matchers::Contains("num_returns(3)"));
      CHECK_THAT(e.what(), Catch::Matchers::Contains("counter"));
      CHECK_THROWS_AS(std::rethrow_exception(e.cause()), weft::num_returns_error);
    }
  }
  // Too many elements fail the same way.
  auto more = weft::remote(count_up).num_returns(2).remote(5);
  CHECK_THAT(weft_test::what_of<weft::task_error>([&] { weft::get(more[1], weft_test::bound); }),
             Catch::Matchers::Contains("returned a std::vector of 5 elements"));
}

TEST_CASE("num_returns(n) with a negative n throws invalid_argument_error naming the function") {
  const auto f = weft::remote(count_up);
  const auto what = weft_test::what_of<weft::invalid_argument_error>([&] { (void)f.num_returns(-2); });
  CHECK_THAT(what, Catch::Matchers::Contains("count_up"));
  CHECK_THAT(what, Catch::Matchers::Contains("-2"));
  CHECK_THAT(what, Catch::Matchers::Contains("expected n >= 0"));
  CHECK_THAT(
    weft_test::what_of<weft::invalid_argument_error>([&] { (void)f.options({.name = "named"}).num_returns(-1); }),
    Catch::Matchers::Contains("'named'"));
}

TEST_CASE("num_returns(0) returns no refs and still runs the function") {
  weft_test::runtime_guard rt;
  g_touched = 0;
  const auto f = weft::remote(+[](int x) {
    g_touched.store(x);
    return std::vector<int>{};
  });
  auto refs = f.num_returns(0).remote(9);
  CHECK(refs.empty());
  CHECK(weft_test::eventually([] { return g_touched.load() == 9; }));
}

TEST_CASE("num_returns(n) of 3000 returns 3000 refs holding their elements") {
  weft_test::runtime_guard rt;
  const int n = 3000;
  const auto before = weft::live_objects();
  {
    auto refs = weft::remote(count_up).num_returns(n).remote(n);
    REQUIRE(refs.size() == static_cast<std::size_t>(n));
    const auto values = weft::get(refs, weft_test::bound);
    REQUIRE(values.size() == static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i)
      REQUIRE(values[static_cast<std::size_t>(i)] == i * 10);
  }
  // The 3000 cells go with their refs.
  CHECK(weft_test::eventually([&] { return weft::live_objects() == before; }));
}

TEST_CASE("when a function with num_returns(n) throws every ref fails") {
  weft_test::runtime_guard rt;
  auto refs = weft::remote(vector_failure, {.name = "vf"}).num_returns(5).remote(1);
  REQUIRE(refs.size() == 5);
  for (const auto& r : refs) {
    const auto what = weft_test::what_of<weft::task_error>([&] { weft::get(r, weft_test::bound); });
    CHECK_THAT(what, Catch::Matchers::Contains("vector failed"));
    CHECK_THAT(what, Catch::Matchers::Contains("vf"));
  }
}

TEST_CASE("a num_returns(n) task retried after exceptions fills every ref from its last attempt") {
  weft_test::runtime_guard rt;
  g_throw_attempts = 0;
  auto refs = weft::remote(throws_at_first, {.max_retries = 3, .retry_exceptions = true}).num_returns(6).remote(6, 2);
  CHECK(weft::get(refs, weft_test::bound) == count_up(6));
  CHECK(g_throw_attempts == 3);
  // Out of retries: every ref carries the last attempt's error.
  g_throw_attempts = 0;
  auto failed = weft::remote(throws_at_first, {.max_retries = 1, .retry_exceptions = true}).num_returns(6).remote(6, 5);
  for (const auto& r : failed)
    CHECK_THROWS_AS(weft::get(r, weft_test::bound), weft::task_error);
  CHECK(g_throw_attempts == 2);
}

TEST_CASE("a size mismatch of num_returns(n) is retried like any exception of the task") {
  weft_test::runtime_guard rt;
  g_short_attempts = 0;
  const auto f =
    weft::remote(short_at_first, {.max_retries = 2, .retry_exceptions = weft::retry_on<weft::num_returns_error>()});
  CHECK(weft::get(f.num_returns(4).remote(4, 1), weft_test::bound) == count_up(4));
  CHECK(g_short_attempts == 2);
  // Without retry_exceptions the mismatch is final at once.
  g_short_attempts = 0;
  auto refs = weft::remote(short_at_first, {.max_retries = 2}).num_returns(4).remote(4, 1);
  CHECK_THROWS_AS(weft::get(refs[3], weft_test::bound), weft::task_error);
  CHECK(g_short_attempts == 1);
}

TEST_CASE("num_returns(n) keeps the function's options and options() keeps n") {
  const auto base = weft::remote(count_up, {.max_retries = 7, .name = "numbers"});
  const auto split_r = base.num_returns(5);
  CHECK(split_r.default_options().max_retries == 7);
  CHECK(split_r.default_options().name == "numbers");
  const auto again = split_r.options({.max_retries = 1});
  CHECK(again.return_count() == 5);
  CHECK(again.default_options().max_retries == 1);
  CHECK(again.default_options().name == "numbers");
  CHECK(split_r.num_returns(std::size_t{2}).return_count() == 2);
  CHECK(base.return_count() == 1);
  CHECK(weft::remote(number_and_name).num_returns<2>().return_count() == 2);
}

// ---- lambdas ----

TEST_CASE("a captureless lambda decayed with unary plus works as a remote function") {
  weft_test::runtime_guard rt;
  const auto triple_r = weft::remote(+[](int x) { return x * 3; });
  CHECK(weft::get(triple_r.remote(14)) == 42);
}

TEST_CASE("a captureless lambda passed directly works as a remote function") {
  weft_test::runtime_guard rt;
  const auto concat_r = weft::remote([](std::string a, int b) { return a + std::to_string(b); });
  static_assert(std::is_same_v<decltype(concat_r.remote(std::string(), 1)), weft::object_ref<std::string>>);
  CHECK(weft::get(concat_r.remote(std::string("x"), 5)) == "x5");
}

TEST_CASE("a noexcept captureless lambda works as a remote function") {
  weft_test::runtime_guard rt;
  const auto neg_r = weft::remote([](int x) noexcept { return -x; });
  CHECK(weft::get(neg_r.remote(8)) == -8);
}

TEST_CASE("a lambda remote function takes per-function default options") {
  weft_test::runtime_guard rt;
  const auto r = weft::remote([](int x) { return x; }, {.max_retries = 2, .name = "lambda_fn"});
  CHECK(r.default_options().max_retries == 2);
  CHECK(r.default_options().name == "lambda_fn");
  CHECK(weft::get(r.remote(3)) == 3);
}

// ---- arguments ----

TEST_CASE("an object_ref passed where a value is expected is resolved to the value") {
  weft_test::runtime_guard rt;
  auto a = weft::put(40);
  auto b = weft::remote(add).remote(a, 2);
  CHECK(weft::get(b) == 42);
}

TEST_CASE("a chain of tasks passing refs a to b to c resolves every step") {
  weft_test::runtime_guard rt;
  const auto inc_r = weft::remote(increment);
  auto a = inc_r.remote(1);
  auto b = inc_r.remote(a);
  auto c = inc_r.remote(b);
  CHECK(weft::get(c) == 4);
  CHECK(weft::get(b) == 3);
  CHECK(weft::get(a) == 2);
}

TEST_CASE("a long chain of dependent tasks gives the right value") {
  weft_test::runtime_guard rt;
  const auto inc_r = weft::remote(increment);
  auto r = inc_r.remote(0);
  for (int i = 1; i < 200; ++i)
    r = inc_r.remote(r);
  CHECK(weft::get(r) == 200);
}

TEST_CASE("a task whose ref argument is not ready waits for it before running") {
  weft_test::runtime_guard rt;
  open_gate_at_exit gate;
  auto slow = weft::remote(gated_value).remote(41);
  auto next = weft::remote(increment).remote(slow);
  std::vector<weft::object_ref<int>> refs{next};
  auto [ready, not_ready] = weft::wait(refs, 1, 150ms);
  CHECK(ready.empty());
  CHECK_FALSE(next.is_ready());
  weft_test::gate_open = true;
  CHECK(weft::get(next) == 42);
}

TEST_CASE("an object_ref parameter receives the ref itself, not its value") {
  weft_test::runtime_guard rt;
  auto x = weft::put(7);
  auto id = weft::remote(id_of_ref).remote(x);
  CHECK(weft::get(id) == x.id().value);
  auto times_ten = weft::remote(get_ref_times_ten).remote(x);
  CHECK(weft::get(times_ten) == 70);
}

TEST_CASE("a task with an object_ref parameter runs without waiting for the object") {
  weft_test::runtime_guard rt;
  open_gate_at_exit gate;
  auto slow = weft::remote(gated_value).remote(3);
  auto seen_ready = weft::remote(ref_is_ready).remote(slow);
  CHECK_FALSE(weft::get(seen_ready, 20s));
  auto times_ten = weft::remote(get_ref_times_ten).remote(slow);
  weft_test::gate_open = true;
  CHECK(weft::get(times_ten) == 30);
}

TEST_CASE("refs nested in a container argument stay refs and are not waited for") {
  weft_test::runtime_guard rt;
  open_gate_at_exit gate;
  std::vector<weft::object_ref<int>> refs{weft::put(1), weft::remote(gated_value).remote(2), weft::put(3)};
  auto n_ready = weft::remote(count_ready_refs).remote(refs);
  // The task ran while the middle object was still blocked: it saw two ready refs.
  CHECK(weft::get(n_ready, 20s) == 2);
  auto sum = weft::remote(sum_refs).remote(refs);
  weft_test::gate_open = true;
  CHECK(weft::get(sum) == 6);
}

TEST_CASE("a const reference parameter receives the stored argument") {
  weft_test::runtime_guard rt;
  const auto len_r = weft::remote(length_of);
  CHECK(weft::get(len_r.remote("hello")) == 5);
  CHECK(weft::get(len_r.remote(std::string("four"))) == 4);
  CHECK(weft::get(len_r.remote(weft::put(std::string("from store")))) == 10);
}

TEST_CASE("a const reference parameter fed from a ref sees the stored object without copying it") {
  weft_test::runtime_guard rt;
  auto ref = weft::put(tracked(5));
  tracked::copies = 0;
  auto seen = weft::remote(copies_seen).remote(ref);
  CHECK(weft::get(seen) == 5); // zero copies made before the task ran, value 5
}

TEST_CASE("a const reference parameter fed an rvalue sees a moved argument without copying it") {
  weft_test::runtime_guard rt;
  tracked::copies = 0;
  auto seen = weft::remote(copies_seen).remote(tracked(9));
  CHECK(weft::get(seen) == 9);
}

TEST_CASE("an invalid object_ref argument is rejected at submit with invalid_argument_error") {
  weft_test::runtime_guard rt;
  weft::object_ref<int> invalid;
  CHECK_THROWS_AS(weft::remote(increment).remote(invalid), weft::invalid_argument_error);
  auto moved_from = weft::put(1);
  auto keep = std::move(moved_from);
  CHECK_THROWS_AS(weft::remote(increment).remote(moved_from), weft::invalid_argument_error); // NOLINT
  CHECK(weft::get(weft::remote(increment).remote(keep)) == 2);
}

TEST_CASE("a remote call after shutdown throws not_initialized_error") {
  weft_test::runtime_guard rt;
  const auto inc_r = weft::remote(increment);
  CHECK(weft::get(inc_r.remote(1)) == 2);
  weft::shutdown();
  CHECK_FALSE(weft::is_initialized());
  CHECK_THROWS_AS(inc_r.remote(1), weft::not_initialized_error);
}

// ---- options ----

TEST_CASE("per-function default options are kept by the remote function") {
  weft_test::runtime_guard rt;
  const auto r = weft::remote(add, {.num_cpus = 1, .max_retries = 5, .name = "adder"});
  CHECK(r.default_options().num_cpus == 1.0);
  CHECK(r.default_options().max_retries == 5);
  CHECK(r.default_options().name == "adder");
  CHECK_FALSE(r.default_options().num_gpus.has_value());
  CHECK_FALSE(r.default_options().retry_exceptions.has_value());
}

TEST_CASE("options overrides only the fields it sets") {
  weft_test::runtime_guard rt;
  const auto base = weft::remote(add, {.num_cpus = 1, .max_retries = 5, .name = "adder"});
  const auto over = base.options({.max_retries = 1});
  CHECK(over.default_options().max_retries == 1);
  CHECK(over.default_options().num_cpus == 1.0);
  CHECK(over.default_options().name == "adder");
  const auto renamed = over.options({.name = "renamed"});
  CHECK(renamed.default_options().name == "renamed");
  CHECK(renamed.default_options().max_retries == 1);
  CHECK(renamed.default_options().num_cpus == 1.0);
  // The original is immutable.
  CHECK(base.default_options().max_retries == 5);
  CHECK(base.default_options().name == "adder");
  CHECK(weft::get(renamed.remote(1, 1)) == 2);
}

TEST_CASE("an options override of the name shows in the error chain while other defaults still apply") {
  weft_test::runtime_guard rt;
  g_attempts = 0;
  const auto base = weft::remote(fails_twice, {.max_retries = 3, .retry_exceptions = true, .name = "base_name"});
  // Only the name is overridden: the per-function retry settings still make the call succeed.
  CHECK(weft::get(base.options({.name = "other_name"}).remote()) == 99);
  CHECK(g_attempts.load() == 3);

  const auto failing = weft::remote(always_throws, {.name = "base_name"});
  try {
    weft::get(failing.options({.max_retries = 0}).remote());
    FAIL("get did not throw");
  } catch (const weft::task_error& e) {
    CHECK(e.chain() == std::vector<std::string>{"base_name"});
  }
  try {
    weft::get(failing.options({.name = "other_name"}).remote());
    FAIL("get did not throw");
  } catch (const weft::task_error& e) {
    CHECK(e.chain() == std::vector<std::string>{"other_name"});
  }
}

TEST_CASE("merge takes each field set in the override and keeps the others from the base") {
  weft_test::runtime_guard rt;
  const weft::task_options base{.num_cpus = 1,
                                .num_gpus = 0.5,
                                .resources = {{"disk", 1}},
                                .max_retries = 2,
                                .retry_exceptions = true,
                                .name = "base"};
  const weft::task_options over{.memory = 1024, .resources = {{"net", 2}}, .max_retries = 0, .retry_exceptions = false};
  const auto m = weft::merge(base, over);
  CHECK(m.num_cpus == 1.0);
  CHECK(m.num_gpus == 0.5);
  CHECK(m.memory == 1024.0);
  // A set field is replaced as a whole: maps are not merged key by key.
  CHECK(m.resources == std::map<std::string, double>{{"net", 2}});
  CHECK(m.max_retries == 0);
  REQUIRE(m.retry_exceptions.has_value());
  CHECK(m.retry_exceptions->retries_nothing());
  CHECK(m.name == "base");
  CHECK_FALSE(m.max_calls.has_value());
}

TEST_CASE("merge with an empty override or an empty base gives the other side") {
  weft_test::runtime_guard rt;
  const weft::task_options some{.num_cpus = 2,
                                .resources = {{"disk", 3}},
                                .max_retries = -1,
                                .retry_exceptions = true,
                                .max_calls = 4,
                                .name = "x"};
  const auto a = weft::merge(some, {});
  CHECK(a.num_cpus == 2.0);
  CHECK(a.resources == std::map<std::string, double>{{"disk", 3}}); // an empty map means unset
  CHECK(a.max_retries == -1);
  REQUIRE(a.retry_exceptions.has_value());
  CHECK_FALSE(a.retry_exceptions->retries_nothing());
  CHECK(a.max_calls == 4);
  CHECK(a.name == "x");
  CHECK_FALSE(a.num_gpus.has_value());
  CHECK_FALSE(a.memory.has_value());
  const auto b = weft::merge({}, some);
  CHECK(b.num_cpus == 2.0);
  CHECK(b.resources == std::map<std::string, double>{{"disk", 3}});
  CHECK(b.max_retries == -1);
  CHECK(b.max_calls == 4);
  CHECK(b.name == "x");
  CHECK_FALSE(b.num_gpus.has_value());
  CHECK_FALSE(b.memory.has_value());
}

TEST_CASE("options cannot clear per-function resources, only replace them") {
  weft_test::runtime_guard rt;
  const auto base = weft::remote(add, {.resources = {{"disk", 1}}});
  CHECK(base.options({.resources = {}}).default_options().resources == std::map<std::string, double>{{"disk", 1}});
  CHECK(base.options({.resources = {{"net", 1}}}).default_options().resources ==
        std::map<std::string, double>{{"net", 1}});
}

// ---- nested tasks ----

TEST_CASE("a task can return the refs of the tasks it started and each ref can be read") {
  weft_test::runtime_guard rt;
  const std::vector<weft::object_ref<int>> refs = weft::get(weft::remote(g).remote());
  REQUIRE(refs.size() == 4);
  for (const auto& r : refs) {
    CHECK(r.valid());
    CHECK(weft::get(r) == 1);
  }
  CHECK(weft::get(refs) == std::vector<int>{1, 1, 1, 1});
}

TEST_CASE("a task can wait for the tasks it started and return their values") {
  weft_test::runtime_guard rt;
  CHECK(weft::get(weft::remote(h).remote()) == std::vector<int>{1, 1, 1, 1});
}

TEST_CASE("remote calls from inside tasks work, recursively") {
  weft_test::runtime_guard rt;
  CHECK(weft::get(weft::remote(add_remotely).remote(2, 3)) == 5);
  CHECK(weft::get(weft::remote(fib).remote(12)) == 144);
}

TEST_CASE("many tasks that each wait for a nested task all finish on two cpus") {
  weft_test::runtime_guard rt;
  const auto r = weft::remote(add_remotely);
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < 50; ++i)
    refs.push_back(r.remote(i, 1));
  const auto values = weft::get(refs);
  for (int i = 0; i < 50; ++i)
    CHECK(values[i] == i + 1);
}

// ---- threads ----

TEST_CASE("several user threads can call remote functions concurrently") {
  weft_test::runtime_guard rt;
  constexpr int threads = 4;
  constexpr int calls = 2000;
  const auto square_r = weft::remote(square);
  std::atomic<int> wrong{0};
  std::atomic<int> done{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      std::vector<weft::object_ref<int>> refs;
      refs.reserve(calls);
      for (int i = 0; i < calls; ++i)
        refs.push_back(square_r.remote(t * calls + i));
      const auto values = weft::get(refs);
      for (int i = 0; i < calls; ++i)
        if (values[i] != (t * calls + i) * (t * calls + i))
          ++wrong;
      done += static_cast<int>(values.size());
    });
  for (auto& th : pool)
    th.join();
  CHECK(wrong.load() == 0);
  CHECK(done.load() == threads * calls);
}
