// The lanes between the driver and its workers (src/lane.*) seen from a
// program: a worker that writes garbage into the memory it shares with the
// driver (the node's doorbell page) slows or stops no call.
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include <catch2/catch.hpp>

#include "process/process_test.hpp"
#include "weft_test.hpp"
#include <weft/weft.hpp>

using namespace std::chrono_literals;

namespace lanes_test {

using process_test::processes;

int nap(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

/// Writes 0xff over the whole doorbell page, which every worker maps (its
/// fd 6 at start; /proc/self/maps names the mapping): what a worker with a
/// stray pointer could do. 1 if it found the page.
int scribble_on_doorbell(int) {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    if (line.find("weft-doorbell") == std::string::npos)
      continue;
    const auto start = std::stoull(line.substr(0, line.find('-')), nullptr, 16);
    std::memset(reinterpret_cast<void*>(static_cast<std::uintptr_t>(start)), 0xff, 4096);
    return 1;
  }
  return 0;
}

} // namespace lanes_test

namespace lt = lanes_test;

TEST_CASE("a worker that scribbles over the doorbell page stops and slows no call") {
  // The page holds what workers must read (is the driver's reader asleep,
  // do waiting threads read the lanes); nothing in it may stop the reader
  // or keep it from being woken for long.
  weft_test::runtime_guard rt(lt::processes);
  REQUIRE(weft::get(weft::remote(lt::scribble_on_doorbell).remote(0), weft_test::bound) == 1);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i)
    CHECK(weft::get(weft::remote(lt::nap).remote(5), weft_test::bound) == 5);
  // 20 calls of 5 ms; a reader that is not woken finds each result at its
  // next 200 ms check only (4 s).
  CHECK(std::chrono::steady_clock::now() - start < 1s);
}
