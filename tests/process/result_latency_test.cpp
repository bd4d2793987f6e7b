// A result a worker has does not wait for the calls after it: results of a
// batch leave together while the calls are short, but one whose next call
// runs long goes out on its own (as in the driver, where each result is
// published when its call ends).
#include <chrono>
#include <string>
#include <thread>

#include <catch2/catch.hpp>

#include "process/process_test.hpp"
#include "weft_test.hpp"
#include <weft/weft.hpp>

using process_test::processes;
using weft_test::bound;

namespace {

/// Waits (up to 20 s) until `path` exists; true if it came.
bool wait_for_file(const std::string& path) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < until) {
    if (!process_test::lines_of(path).empty())
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

struct stepper {
  int steps = 0;
  bool hold(std::string path) { return wait_for_file(path); }
  int step() { return ++steps; }
};

} // namespace

TEST_CASE("an actor call's result leaves its worker while the call after it still runs") {
  weft_test::runtime_guard rt(processes);
  process_test::temp_dir dir;
  auto a = weft::remote<stepper>().remote();
  (void)weft::get(a.task(&stepper::step).remote(), bound); // started
  // The first call goes out alone and holds the actor; the two made
  // meanwhile leave together, in one batch, when it ends.
  auto first = a.task(&stepper::hold).remote(dir.file("first"));
  auto quick = a.task(&stepper::step).remote();
  auto second = a.task(&stepper::hold).remote(dir.file("second"));
  process_test::append_line(dir.file("first"), "go");
  // quick has run while second waits for its file: its result is here
  // before that file exists (held back, the get would time out).
  CHECK(weft::get(quick, std::chrono::seconds(10)) == 2);
  process_test::append_line(dir.file("second"), "go");
  CHECK(weft::get(first, bound));
  CHECK(weft::get(second, bound));
}
