// The lanes between the driver and its workers (src/lane.*) seen from a
// program: a worker that writes garbage into the memory it shares with the
// driver (the node's doorbell page) slows or stops no call, a thread that
// waits in get while another driver thread reads a slow result keeps its
// timeout and its CPU, and a large result leaves no buffer behind.
#include <time.h>
#include <unistd.h>

#include <atomic>
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

/// A value that takes long to read in the driver, as a very large result
/// does: whoever reads the lanes is busy with it meanwhile.
std::atomic<bool> g_reading{false};
struct slow_to_read {
  int v = 0;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& v;
    if constexpr (Archive::is_loading::value) {
      if (!weft::is_worker_process()) {
        g_reading = true;
        std::this_thread::sleep_for(1200ms);
      }
    }
  }
};
slow_to_read make_slow_to_read(int v) { return {v}; }

double cpu_seconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
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

TEST_CASE("a get with a timeout returns on time and sleeps while another thread reads a slow result") {
  weft_test::runtime_guard rt(lt::processes);
  const auto sleeper = weft::remote(lt::nap).remote(2500); // never ready while we wait for it below
  const auto slow = weft::remote(lt::make_slow_to_read).remote(7);
  std::atomic<int> got{0};
  std::thread waiter([&] { // (no Catch assertion on this thread)
    try {
      got = weft::get(slow, weft_test::bound).v;
    } catch (...) {
      got = -1;
    }
  });
  struct join_at_exit {
    std::thread& t;
    ~join_at_exit() {
      if (t.joinable())
        t.join();
    }
  } join{waiter};
  REQUIRE(weft_test::eventually([] { return lt::g_reading.load(); }));
  // The slow result is being read (1.2 s) by the node's lane reader or by
  // the thread above, which holds the lanes meanwhile.
  const auto cpu0 = lt::cpu_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(weft::get(sleeper, 300ms), weft::get_timeout_error);
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - t0;
  const double cpu = lt::cpu_seconds() - cpu0;
  waiter.join();
  CHECK(got.load() == 7);
  CHECK(took < 800ms);
  // Every thread of the driver sleeps meanwhile (the one reading sleeps in
  // the value's reader): a spinning waiter would use a core or two.
  CHECK(cpu < 0.4 * took.count());
  CHECK(weft::get(sleeper, weft_test::bound) == 2500);
}

namespace lanes_test {

std::string bytes_of(int mib) { return std::string(static_cast<std::size_t>(mib) << 20, 'x'); }

/// The resident memory of this process, in MiB.
long resident_mib() {
  std::ifstream statm("/proc/self/statm");
  long size = 0, resident = 0;
  statm >> size >> resident;
  return resident * ::sysconf(_SC_PAGESIZE) / (1 << 20);
}

} // namespace lanes_test

TEST_CASE("the driver keeps no copy of a large result once it is gone") {
#if defined(__SANITIZE_ADDRESS__)
  SUCCEED("AddressSanitizer keeps freed memory in quarantine: resident memory says nothing here");
#else
  weft_test::runtime_guard rt(lt::processes);
  const auto bytes = weft::remote(lt::bytes_of);
  CHECK(weft::get(bytes.remote(1), weft_test::bound).size() == 1u << 20);
  const long before = lt::resident_mib();
  CHECK(weft::get(bytes.remote(128), weft_test::bound).size() == 128u << 20);
  // The value is gone with its ref; nothing else holds 128 MiB, now (the
  // driver idle) or after more calls.
  CHECK(lt::resident_mib() < before + 48);
  for (int i = 0; i < 3; ++i)
    CHECK(weft::get(bytes.remote(1), weft_test::bound).size() == 1u << 20);
  CHECK(lt::resident_mib() < before + 48);
#endif
}
