// Tasks in worker processes: they run in other processes of the same
// program, their arguments and results cross through the serializer, and
// their errors come back as task_error.
#include <unistd.h>

#include <chrono>
#include <memory>
#include <thread>
#include <tuple>

#include <catch2/catch.hpp>

#include "process/process_test.hpp"
#include "weft_test.hpp"
#include <weft/weft.hpp>

namespace {

using process_test::processes;

int own_pid(int) { return static_cast<int>(::getpid()); }

struct cell {
  int value = 0;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& value;
  }
};

/// What a worker saw of two shared_ptr arguments: its pid, whether they
/// point to one object, and b's value after a's was raised by 100.
std::tuple<int, bool, int> alias_seen(std::shared_ptr<cell> a, std::shared_ptr<cell> b) {
  const bool same = a.get() == b.get();
  a->value += 100;
  return {static_cast<int>(::getpid()), same, b->value};
}

struct alias_checker {
  std::tuple<int, bool, int> seen(std::shared_ptr<cell> a, std::shared_ptr<cell> b) { return alias_seen(a, b); }
};

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (const auto& p : parts)
    out += (out.empty() ? "" : sep) + p;
  return out;
}

int always_throws(int) { throw std::out_of_range("index 7 is out of range"); }

/// n elements "pid:i": each says where it was made and which it is.
std::vector<std::string> labelled(int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i)
    out.push_back(std::to_string(::getpid()) + ":" + std::to_string(i));
  return out;
}

std::vector<int> count_up(int n) {
  std::vector<int> v;
  for (int i = 0; i < n; ++i)
    v.push_back(i * 10);
  return v;
}

/// Records its attempt in `log`; the first attempt returns n - 1 elements.
std::vector<int> short_first(std::string log, int n) {
  process_test::append_line(log, std::to_string(::getpid()));
  return count_up(process_test::lines_of(log).size() == 1 ? n - 1 : n);
}

} // namespace

TEST_CASE("a task runs in a worker process, not in the driver") {
  weft_test::runtime_guard rt(processes);
  const int pid = weft::get(weft::remote(own_pid).remote(0), weft_test::bound);
  CHECK(pid != static_cast<int>(::getpid()));
  CHECK(pid > 0);
}

TEST_CASE("arguments and results cross the process boundary") {
  weft_test::runtime_guard rt(processes);
  auto r = weft::remote(join).remote(std::vector<std::string>{"a", "bb", "ccc"}, std::string(", "));
  CHECK(weft::get(r, weft_test::bound) == "a, bb, ccc");
  // A ref argument is resolved by the driver and sent as a value.
  auto parts = weft::put(std::vector<std::string>{"x", "y"});
  CHECK(weft::get(weft::remote(join).remote(parts, std::string("+")), weft_test::bound) == "x+y");
}

TEST_CASE("a task's exception comes back as task_error with its type and message") {
  weft_test::runtime_guard rt(processes);
  try {
    weft::get(weft::remote(always_throws, {.name = "thrower"}).remote(1), weft_test::bound);
    FAIL("expected task_error");
  } catch (const weft::task_error& e) {
    CHECK(e.type_name() == "std::out_of_range");
    CHECK(e.message() == "index 7 is out of range");
    CHECK(e.chain() == std::vector<std::string>{"thrower"});
  }
}

TEST_CASE("workers are reused: many tasks run in few processes") {
  weft_test::runtime_guard rt(processes);
  std::vector<weft::object_ref<int>> refs;
  for (int i = 0; i < 200; ++i)
    refs.push_back(weft::remote(own_pid).remote(i));
  auto pids = weft::get(refs, weft_test::bound);
  std::sort(pids.begin(), pids.end());
  pids.erase(std::unique(pids.begin(), pids.end()), pids.end());
  CHECK(pids.size() >= 1);
  CHECK(pids.size() <= 2); // num_cpus = 2: two tasks at a time, two workers
}

namespace {
/// Each byte + 1, and the argument's size in front: a result as large as
/// the argument, whose every byte depends on it.
std::string bump_each(std::string s) {
  for (auto& c : s)
    c = static_cast<char>(c + 1);
  return std::to_string(s.size()) + ":" + s;
}
} // namespace

TEST_CASE("arguments and results larger than a lane's ring cross in pieces") {
  // The lane to a worker holds 1 MiB each way (src/lane.hpp): these go in
  // fragments, some waiting in the driver's overflow queue while several
  // such calls are queued on one worker, results with the worker waiting
  // for room.
  weft_test::runtime_guard rt(processes);
  std::vector<std::string> args;
  std::vector<weft::object_ref<std::string>> refs;
  for (int i = 0; i < 6; ++i) {
    std::string a(3 * 1024 * 1024 + 1000 * i, '\0');
    for (std::size_t j = 0; j < a.size(); ++j)
      a[j] = static_cast<char>((j * 7 + i) & 0x7f);
    args.push_back(a);
    refs.push_back(weft::remote(bump_each).remote(std::move(a)));
  }
  for (int i = 0; i < 6; ++i) {
    const std::string r = weft::get(refs[i], weft_test::bound);
    std::string expected = args[i];
    for (auto& c : expected)
      c = static_cast<char>(c + 1);
    CHECK(r == std::to_string(args[i].size()) + ":" + expected);
  }
}

TEST_CASE("one-at-a-time calls after the workers went idle still complete") {
  // Between calls the worker's lane thread and the driver's reader fall
  // asleep; each call must wake what it needs.
  weft_test::runtime_guard rt(processes);
  for (int i = 0; i < 5; ++i) {
    CHECK(weft::get(weft::remote(own_pid).remote(i), weft_test::bound) > 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
  }
}

TEST_CASE("num_returns(n) in a worker process gives each ref its element") {
  weft_test::runtime_guard rt(processes);
  auto refs = weft::remote(labelled).num_returns(5).remote(5);
  REQUIRE(refs.size() == 5);
  std::string pid;
  for (std::size_t i = 0; i < refs.size(); ++i) {
    const auto v = weft::get(refs[i], weft_test::bound);
    const auto colon = v.find(':');
    REQUIRE(colon != std::string::npos);
    CHECK(v.substr(colon + 1) == std::to_string(i));
    if (pid.empty())
      pid = v.substr(0, colon);
    CHECK(v.substr(0, colon) == pid); // one call made them all
  }
  CHECK(pid != std::to_string(::getpid()));
  // n = 0: no refs; the call still runs (shutdown waits for it).
  CHECK(weft::remote(labelled).num_returns(0).remote(0).empty());
}

TEST_CASE("num_returns(n) of 3000 in a worker process returns 3000 refs holding their elements") {
  weft_test::runtime_guard rt(processes);
  auto refs = weft::remote(count_up).num_returns(3000).remote(3000);
  REQUIRE(refs.size() == 3000);
  const auto values = weft::get(refs, weft_test::bound);
  CHECK(values == count_up(3000));
}

TEST_CASE("num_returns(n) with a vector of another size in a worker process fails every ref with num_returns_error") {
  weft_test::runtime_guard rt(processes);
  auto refs = weft::remote(count_up, {.name = "counter"}).num_returns(4).remote(6);
  REQUIRE(refs.size() == 4);
  for (const auto& r : refs) {
    try {
      weft::get(r, weft_test::bound);
      FAIL("expected task_error");
    } catch (const weft::task_error& e) {
      CHECK(e.type_name() == "weft::num_returns_error");
      CHECK(e.chain() == std::vector<std::string>{"counter"});
      CHECK(e.message().find("returned a std::vector of 6 elements") != std::string::npos);
      CHECK(e.message().find("num_returns(4)") != std::string::npos);
    }
  }
  // The worker lives on.
  CHECK(weft::get(weft::remote(count_up).num_returns(2).remote(2), weft_test::bound) == std::vector<int>{0, 10});
}

TEST_CASE("a size mismatch of num_returns(n) in a worker process is retried with retry_on") {
  weft_test::runtime_guard rt(processes);
  process_test::temp_dir dir;
  const auto f =
    weft::remote(short_first, {.max_retries = 1, .retry_exceptions = weft::retry_on<weft::num_returns_error>()});
  const auto log = dir.file("short");
  CHECK(weft::get(f.num_returns(3).remote(log, 3), weft_test::bound) == count_up(3));
  CHECK(process_test::lines_of(log).size() == 2);
}

TEST_CASE("two arguments of one call that share an object arrive in the worker as one object") {
  weft_test::runtime_guard rt(processes);
  const int me = static_cast<int>(::getpid());
  auto shared = std::make_shared<cell>(cell{7});
  const auto f = weft::remote(alias_seen);
  auto [pid, same, b_value] = weft::get(f.remote(shared, shared), weft_test::bound);
  CHECK(pid != me);
  CHECK(same);
  CHECK(b_value == 107);     // a's change shows through b
  CHECK(shared->value == 7); // the worker changed its copy, not the driver's object
  // Two equal objects stay two.
  std::tie(pid, same, b_value) =
    weft::get(f.remote(std::make_shared<cell>(cell{7}), std::make_shared<cell>(cell{7})), weft_test::bound);
  CHECK_FALSE(same);
  CHECK(b_value == 7);
  // The same for the arguments of an actor method's call.
  auto h = weft::remote<alias_checker>().remote();
  std::tie(pid, same, b_value) = weft::get(h.task(&alias_checker::seen).remote(shared, shared), weft_test::bound);
  CHECK(pid != me);
  CHECK(same);
  CHECK(b_value == 107);
}
