// The lane between the driver and a worker (src/lane.cpp): messages in
// order both ways, messages larger than a ring (in pieces, with the
// driver's overflow queue and the worker waiting for room), a consumer
// that sleeps and is woken, a producer in another process, and garbage in
// the ring refused rather than trusted.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <sys/mman.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "src/futex.hpp"
#include "src/lane.hpp"
#include "weft_test.hpp"

using weft::detail::doorbell_map;
using weft::detail::lane;
using weft::detail::lane_kind;

namespace {

/// A driver end and a worker end of one lane, in this process.
struct pair_of_ends {
  doorbell_map bell = doorbell_map::create();
  std::shared_ptr<lane> driver = lane::create(bell.get());
  std::unique_ptr<lane> worker = lane::attach(::dup(driver->fd()), bell.get());
};

std::string pattern(std::size_t n, unsigned seed) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i)
    s[i] = static_cast<char>((i * 131 + seed) & 0xff);
  return s;
}

/// Reads from the worker until a message arrives (pumping the driver's
/// overflow meanwhile, as the node's reader does), within `bound`.
bool driver_take(lane& l, lane_kind& k, std::string& body) {
  const auto until = std::chrono::steady_clock::now() + weft_test::bound;
  while (std::chrono::steady_clock::now() < until) {
    l.pump();
    if (l.take_from_worker(k, body))
      return true;
    if (l.corrupt())
      return false;
    std::this_thread::yield();
  }
  return false;
}

} // namespace

TEST_CASE("a lane carries messages both ways in order with their kinds") {
  pair_of_ends p;
  p.driver->post_to_worker(lane_kind::call, "first");
  p.driver->post_to_worker(lane_kind::actor_call, "");
  p.driver->post_to_worker(lane_kind::actor_quit, "third");
  lane_kind k{};
  std::string body;
  REQUIRE(p.worker->take_from_driver(k, body, 0));
  CHECK(k == lane_kind::call);
  CHECK(body == "first");
  REQUIRE(p.worker->take_from_driver(k, body, 0));
  CHECK(k == lane_kind::actor_call);
  CHECK(body.empty());
  REQUIRE(p.worker->take_from_driver(k, body, 0));
  CHECK(k == lane_kind::actor_quit);
  CHECK(body == "third");

  CHECK_FALSE(p.driver->readable_from_worker());
  CHECK_FALSE(p.driver->take_from_worker(k, body));
  p.worker->post_to_driver(lane_kind::done, "result");
  p.worker->post_to_driver(lane_kind::release, std::string(16, '\x01'));
  CHECK(p.driver->readable_from_worker());
  REQUIRE(p.driver->take_from_worker(k, body));
  CHECK(k == lane_kind::done);
  CHECK(body == "result");
  REQUIRE(p.driver->take_from_worker(k, body));
  CHECK(k == lane_kind::release);
  CHECK(body == std::string(16, '\x01'));
  CHECK_FALSE(p.driver->take_from_worker(k, body));
  CHECK_FALSE(p.driver->corrupt());
}

TEST_CASE("messages larger than a ring cross in pieces both ways") {
  pair_of_ends p;
  // Three messages of 2.5 rings each to the worker: the driver never
  // blocks; what does not fit waits in its overflow queue.
  std::vector<std::string> sent;
  for (unsigned i = 0; i < 3; ++i) {
    sent.push_back(pattern(lane::ring_bytes * 5 / 2 + i, i));
    p.driver->post_to_worker(lane_kind::call, sent.back());
  }
  CHECK(p.driver->has_overflow());
  std::atomic<bool> stop{false};
  std::thread pumper([&] { // the node's reader pumps when the worker made room
    while (!stop.load())
      p.driver->pump(), std::this_thread::yield();
  });
  for (unsigned i = 0; i < 3; ++i) {
    lane_kind k{};
    std::string body;
    REQUIRE(p.worker->take_from_driver(k, body, 1'000'000));
    CHECK(k == lane_kind::call);
    CHECK(body.size() == sent[i].size());
    CHECK(body == sent[i]);
  }
  stop = true;
  pumper.join();
  CHECK_FALSE(p.driver->has_overflow());

  // To the driver: the worker waits for room while the driver reads.
  const std::string big = pattern(lane::ring_bytes * 3 + 17, 7);
  std::thread producer([&] {
    p.worker->post_to_driver(lane_kind::done, big);
    p.worker->post_to_driver(lane_kind::fetch, "after");
  });
  lane_kind k{};
  std::string body;
  REQUIRE(driver_take(*p.driver, k, body));
  CHECK(k == lane_kind::done);
  CHECK(body == big);
  REQUIRE(driver_take(*p.driver, k, body));
  CHECK(k == lane_kind::fetch);
  CHECK(body == "after");
  producer.join();
}

TEST_CASE("a worker end that sleeps is woken by the driver's message") {
  pair_of_ends p;
  std::atomic<bool> got{false};
  std::string body;
  std::thread consumer([&] {
    lane_kind k{};
    if (p.worker->take_from_driver(k, body, 0)) // no spin: straight to sleep
      got = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK_FALSE(got.load());
  p.driver->post_to_worker(lane_kind::call, "wake up");
  CHECK(weft_test::eventually([&] { return got.load(); }));
  consumer.join();
  CHECK(body == "wake up");
}

TEST_CASE("the doorbell wakes a sleeping reader unless a waiting thread reads") {
  pair_of_ends p;
  auto* bell = p.bell.get();
  const auto before = bell->seq.load();
  p.worker->post_to_driver(lane_kind::done, "x");
  CHECK(bell->seq.load() != before); // every publish moves the bell
  // A reader asleep on the bell wakes when the worker writes.
  std::atomic<bool> woke{false};
  bell->sleeping.store(1);
  std::thread reader([&] {
    const auto seen = bell->seq.load();
    weft::detail::futex_wait_shared(bell->seq, seen, weft::detail::now_ns() + 20'000'000'000);
    woke = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  p.worker->post_to_driver(lane_kind::done, "y");
  CHECK(weft_test::eventually([&] { return woke.load(); }));
  reader.join();

  // While a thread that waits in get reads the lanes itself (a helper),
  // a worker's write does not wake the reader; a forced ring does.
  bell->helpers.store(1);
  woke = false;
  std::thread reader2([&] {
    const auto seen = bell->seq.load();
    weft::detail::futex_wait_shared(bell->seq, seen, weft::detail::now_ns() + 20'000'000'000);
    woke = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  p.worker->post_to_driver(lane_kind::done, "z");
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK_FALSE(woke.load());
  p.bell.ring(true);
  CHECK(weft_test::eventually([&] { return woke.load(); }));
  reader2.join();
}

TEST_CASE("a worker process writes to its driver through an inherited lane") {
  pair_of_ends p;
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // The worker: echoes each call back as a result, in upper case, and
    // exits on actor_quit.
    auto mine = lane::attach(::dup(p.driver->fd()), p.bell.get());
    lane_kind k{};
    std::string body;
    while (mine->take_from_driver(k, body, 10'000)) {
      if (k == lane_kind::actor_quit)
        ::_exit(0);
      for (auto& c : body)
        c = static_cast<char>(c >= 'a' && c <= 'z' ? c - 32 : c);
      mine->post_to_driver(lane_kind::done, body);
    }
    ::_exit(3);
  }
  for (int i = 0; i < 200; ++i) {
    p.driver->post_to_worker(lane_kind::call, "call " + std::to_string(i) + " abc");
    lane_kind k{};
    std::string body;
    REQUIRE(driver_take(*p.driver, k, body));
    CHECK(k == lane_kind::done);
    CHECK(body == "CALL " + std::to_string(i) + " ABC");
  }
  p.driver->post_to_worker(lane_kind::actor_quit, {});
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("garbage in a ring makes it corrupt instead of trusted") {
  auto corrupt_with = [](auto&& damage) {
    pair_of_ends p;
    p.worker->post_to_driver(lane_kind::done, "fine");
    void* m = ::mmap(nullptr, lane::file_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, p.driver->fd(), 0);
    REQUIRE(m != MAP_FAILED);
    damage(static_cast<std::byte*>(m));
    ::munmap(m, lane::file_bytes);
    lane_kind k{};
    std::string body;
    const bool read = p.driver->take_from_worker(k, body);
    return !read && p.driver->corrupt();
  };
  SECTION("a fragment longer than a ring allows") {
    CHECK(corrupt_with([](std::byte* m) {
      const std::uint32_t huge = 0x7fffffff;
      std::memcpy(m + lane::to_driver_offset, &huge, sizeof huge);
    }));
  }
  SECTION("a kind only the driver may send") {
    CHECK(corrupt_with([](std::byte* m) { m[lane::to_driver_offset + 4] = std::byte{1}; }));
  }
  SECTION("a head further than a ring ahead of the tail") {
    CHECK(corrupt_with([](std::byte* m) {
      // The ring to the driver is the second one in the header page; its
      // head is its first 8 bytes.
      const std::uint64_t head = 3 * lane::ring_bytes;
      std::memcpy(m + 128, &head, sizeof head);
    }));
  }
  SECTION("a head that is not a whole number of fragments") {
    CHECK(corrupt_with([](std::byte* m) {
      const std::uint64_t head = 13;
      std::memcpy(m + 128, &head, sizeof head);
    }));
  }
}

TEST_CASE("a file that is not a lane is refused with a clear error") {
  const int fd = ::memfd_create("not-a-lane", 0);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, 4096) == 0);
  auto bell = doorbell_map::create();
  CHECK_THROWS_WITH(lane::attach(fd, bell.get()), Catch::Contains("is not a lane"));
}

TEST_CASE("a stream of empty pieces from a worker is refused instead of read forever") {
  // Only the last piece of a message may be shorter than a whole fragment
  // (lane.hpp). A worker that keeps writing empty pieces that are never the
  // last must not keep the driver's reader in its lane (the other workers'
  // lanes wait meanwhile).
  pair_of_ends p;
  void* m = ::mmap(nullptr, lane::file_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, p.driver->fd(), 0);
  REQUIRE(m != MAP_FAILED);
  auto* base = static_cast<std::byte*>(m);
  // The ring to the driver: its head at byte 128 of the header page, its
  // tail at byte 192, its bytes at to_driver_offset.
  auto* head = reinterpret_cast<std::atomic<std::uint64_t>*>(base + 128);
  auto* tail = reinterpret_cast<std::atomic<std::uint64_t>*>(base + 192);
  std::byte* data = base + lane::to_driver_offset;
  const unsigned char piece[8] = {0, 0, 0, 0, static_cast<unsigned char>(lane_kind::done), 0, 0, 0};
  std::atomic<bool> stop{false};
  std::thread worker([&] { // writes as fast as there is room, for 3 s at most
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (!stop.load(std::memory_order_relaxed) && std::chrono::steady_clock::now() < until) {
      const std::uint64_t h = head->load(std::memory_order_relaxed);
      const std::uint64_t room = lane::ring_bytes - (h - tail->load(std::memory_order_acquire));
      for (std::uint64_t at = 0; at < room; at += 8)
        std::memcpy(data + (h + at) % lane::ring_bytes, piece, 8);
      head->store(h + room, std::memory_order_release);
    }
  });
  REQUIRE(weft_test::eventually([&] { return head->load() >= lane::ring_bytes; }));
  const auto t0 = std::chrono::steady_clock::now();
  lane_kind k{};
  std::string body;
  const bool read = p.driver->take_from_worker(k, body);
  const auto took = std::chrono::steady_clock::now() - t0;
  stop = true;
  worker.join();
  ::munmap(m, lane::file_bytes);
  CHECK_FALSE(read);
  CHECK(p.driver->corrupt());
  CHECK(took < std::chrono::seconds(1));
}

TEST_CASE("a lane keeps no buffer of a large message once it is read") {
  // Readers reuse one string for every message (the node's reader, the
  // worker's lane thread). The bytes of a large message must go when a
  // later message is read into it, not circulate between that string and
  // the lane's own buffer for the life of the lane.
  pair_of_ends p;
  const std::string big = pattern(8 * lane::ring_bytes, 3);
  std::thread producer([&] {
    p.worker->post_to_driver(lane_kind::done, big);
    for (int i = 0; i < 4; ++i)
      p.worker->post_to_driver(lane_kind::done, pattern(100, static_cast<unsigned>(i)));
  });
  lane_kind k{};
  std::string body;
  REQUIRE(driver_take(*p.driver, k, body));
  CHECK(body == big);
  for (int i = 0; i < 4; ++i) {
    REQUIRE(driver_take(*p.driver, k, body));
    CHECK(body == pattern(100, static_cast<unsigned>(i)));
    if (i >= 1) // (the first small one may still reuse it)
      CHECK(body.capacity() <= lane::ring_bytes);
  }
  producer.join();

  // The same from the driver to the worker.
  p.driver->post_to_worker(lane_kind::call, big);
  for (int i = 0; i < 4; ++i)
    p.driver->post_to_worker(lane_kind::call, pattern(100, static_cast<unsigned>(i)));
  std::atomic<bool> stop{false};
  std::thread pumper([&] {
    while (!stop.load())
      p.driver->pump(), std::this_thread::yield();
  });
  REQUIRE(p.worker->take_from_driver(k, body, 1'000'000));
  CHECK(body == big);
  for (int i = 0; i < 4; ++i) {
    REQUIRE(p.worker->take_from_driver(k, body, 1'000'000));
    CHECK(body == pattern(100, static_cast<unsigned>(i)));
    if (i >= 1)
      CHECK(body.capacity() <= lane::ring_bytes);
  }
  stop = true;
  pumper.join();
}
