// Tasks in worker processes: they run in other processes of the same
// program, their arguments and results cross through the serializer, and
// their errors come back as task_error.
#include <unistd.h>

#include <catch2/catch.hpp>

#include "process/process_test.hpp"
#include "weft_test.hpp"
#include <weft/weft.hpp>

namespace {

using process_test::processes;

int own_pid(int) { return static_cast<int>(::getpid()); }

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (const auto& p : parts)
    out += (out.empty() ? "" : sep) + p;
  return out;
}

int always_throws(int) { throw std::out_of_range("index 7 is out of range"); }

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
