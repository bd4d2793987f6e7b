// The node's shared-memory arena (src/shm_arena.cpp): allocation, refcounts
// and validation, then the part that matters in a node of processes: real
// forked processes allocating and freeing at once, and processes killed with
// SIGKILL inside the lock (at every step of an allocation and a free, and at
// random in a tight loop) leaving an arena that still works.
//
// Children are forked after the arena exists; they use the inherited mapping
// or attach(dup(fd)) at another address, end with _exit and report through
// their exit status (Catch cannot report from them). Every case with
// children runs under a watchdog, so a wedged lock fails instead of hanging.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "src/shm_arena.hpp"
#include "weft_test.hpp"

using Catch::Matchers::Contains;
using weft::detail::shm_arena;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t mib = std::size_t{1} << 20;

/// Runs `body` in a forked child, which exits with what it returns (98 if
/// it throws).
template <class F>
pid_t fork_child(F&& body) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    int rc = 98;
    try {
      rc = body();
    } catch (...) {
    }
    ::_exit(rc);
  }
  REQUIRE(pid > 0);
  return pid;
}

/// The child's wait status.
int reap(pid_t pid) {
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return status;
}

bool exited_zero(int status) { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }
bool killed(int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL; }

/// Bytes the memfd has committed (pages actually backed by memory).
std::size_t committed(int fd) {
  struct stat sb {};
  REQUIRE(::fstat(fd, &sb) == 0);
  return static_cast<std::size_t>(sb.st_blocks) * 512;
}

/// This process's resident shared memory (kB line of /proc/self/status), in bytes.
std::size_t rss_shmem() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("RssShmem:", 0) == 0)
      return std::stoull(line.substr(9)) * 1024;
  return 0;
}

/// Marks a block (of at least 24 bytes) so that a block handed out twice, or
/// overwritten by a neighbour, is noticed: its offset first and last, its size.
void stamp(shm_arena& a, std::uint64_t off, std::uint64_t size) {
  std::byte* p = a.data(off);
  const std::uint64_t last = ~off;
  std::memcpy(p, &off, 8);
  std::memcpy(p + 8, &size, 8);
  std::memcpy(p + size - 8, &last, 8);
}

bool stamped(shm_arena& a, std::uint64_t off) {
  const std::byte* p = a.data(off);
  std::uint64_t first = 0, size = 0, last = 0;
  std::memcpy(&first, p, 8);
  std::memcpy(&size, p + 8, 8);
  if (first != off || size < 24 || !a.valid(off, size))
    return false;
  std::memcpy(&last, p + size - 8, 8);
  return last == ~off;
}

std::uint64_t exchange(std::uint64_t& slot, std::uint64_t v) {
  return std::atomic_ref<std::uint64_t>(slot).exchange(v, std::memory_order_acq_rel);
}

} // namespace

TEST_CASE("shm_arena allocates blocks that hold their data") {
  auto arena = shm_arena::create(8 * mib);
  CHECK(arena->capacity() == 8 * mib);
  CHECK(arena->fd() >= 0);
  CHECK(arena->bytes_in_use() == 0);
  const std::vector<std::size_t> sizes{0, 1, 63, 64, 65, 100, 4096, 100'000, mib};
  std::vector<std::uint64_t> offs;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const std::uint64_t off = arena->allocate(sizes[i]);
    REQUIRE(off != 0);
    CHECK(arena->ref_count(off) == 1);
    CHECK(arena->valid(off, sizes[i]));
    std::memset(arena->data(off), static_cast<int>(i + 1), sizes[i]);
    offs.push_back(off);
  }
  CHECK(arena->blocks_in_use() == sizes.size());
  // Footprints: the size rounded up to 64 plus a 64-byte header.
  std::size_t footprint = 0;
  for (std::size_t s : sizes)
    footprint += (s + 63) / 64 * 64 + 64;
  CHECK(arena->bytes_in_use() == footprint);
  for (std::size_t i = 0; i < sizes.size(); ++i)
    for (std::size_t j = 0; j < sizes[i]; j += 61)
      REQUIRE(arena->data(offs[i])[j] == static_cast<std::byte>(i + 1));
  CHECK(arena->audit() == "");
  for (std::uint64_t off : offs)
    arena->release(off);
  CHECK(arena->bytes_in_use() == 0);
  CHECK(arena->blocks_in_use() == 0);
  CHECK(arena->audit() == "");
}

TEST_CASE("shm_arena rounds the capacity up to pages and to 1 MiB") {
  CHECK(shm_arena::create(0)->capacity() == mib);
  CHECK(shm_arena::create(mib + 1)->capacity() == mib + static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)));
  CHECK_THROWS_WITH(shm_arena::create(std::size_t{1} << 60), Contains("capacity"));
}

TEST_CASE("shm_arena data is 64-byte aligned and blocks do not overlap") {
  auto arena = shm_arena::create(16 * mib);
  std::vector<std::pair<std::uint64_t, std::size_t>> blocks;
  for (std::size_t size = 0; size < 700; size += 7) {
    const std::uint64_t off = arena->allocate(size);
    REQUIRE(off != 0);
    CHECK(off % 64 == 0);
    CHECK(reinterpret_cast<std::uintptr_t>(arena->data(off)) % 64 == 0);
    blocks.emplace_back(off, size);
  }
  std::sort(blocks.begin(), blocks.end());
  for (std::size_t i = 1; i < blocks.size(); ++i)
    CHECK(blocks[i - 1].first + blocks[i - 1].second <= blocks[i].first);
  for (auto [off, size] : blocks)
    arena->release(off);
  CHECK(arena->audit() == "");
}

TEST_CASE("shm_arena refcounts are shared between two mappings") {
  auto a = shm_arena::create(4 * mib);
  auto b = shm_arena::attach(::dup(a->fd()));
  REQUIRE(b->capacity() == a->capacity());
  CHECK(a->data(64) != b->data(64)); // another address, same bytes

  const std::uint64_t off = a->allocate(1000);
  REQUIRE(off != 0);
  std::memset(a->data(off), 0x5a, 1000);
  CHECK(b->valid(off, 1000));
  CHECK(b->data(off)[999] == std::byte{0x5a});
  b->add_ref(off);
  CHECK(a->ref_count(off) == 2);
  a->release(off); // a's reference
  CHECK(b->valid(off, 1000));
  CHECK(a->blocks_in_use() == 1);
  b->release(off); // the last one, through the other mapping
  CHECK_FALSE(a->valid(off, 0));
  CHECK(a->blocks_in_use() == 0);
  CHECK(b->bytes_in_use() == 0);
  // Releasing a freed block again does nothing.
  b->release(off);
  CHECK(a->audit() == "");
  // Blocks freed through one mapping are reused through the other.
  const std::uint64_t again = b->allocate(1000);
  CHECK(again == off);
  a->release(again);
  CHECK(b->audit() == "");
}

TEST_CASE("shm_arena valid rejects garbage freed misaligned and out-of-range offsets") {
  auto arena = shm_arena::create(4 * mib);
  const std::uint64_t live = arena->allocate(500);
  const std::uint64_t freed = arena->allocate(500);
  const std::uint64_t next = arena->allocate(500);
  REQUIRE((live && freed && next));
  arena->release(freed);
  CHECK(arena->valid(live, 0));
  CHECK(arena->valid(live, 500));
  CHECK_FALSE(arena->valid(live, 501)); // too large
  CHECK_FALSE(arena->valid(live, SIZE_MAX));
  CHECK_FALSE(arena->valid(freed, 0));
  CHECK_FALSE(arena->valid(live + 1, 0));  // misaligned
  CHECK_FALSE(arena->valid(live + 64, 0)); // inside a block's data
  CHECK_FALSE(arena->valid(live - 64, 0)); // the header itself
  const std::uint64_t cap = arena->capacity();
  for (std::uint64_t off : {std::uint64_t{0}, std::uint64_t{64}, std::uint64_t{4096}, cap, cap + 64, cap - 64,
                            std::uint64_t{1} << 40, UINT64_MAX, UINT64_MAX - 63})
    CHECK_FALSE(arena->valid(off, 0));
  // Garbage everywhere: never a crash, never true but for the live blocks.
  std::mt19937_64 rng(7);
  for (int i = 0; i < 100'000; ++i) {
    const std::uint64_t off = i % 2 ? rng() : rng() % (cap + 4096) / 64 * 64;
    if (off != live && off != next)
      REQUIRE_FALSE(arena->valid(off, rng() % 600));
  }
  // A block header's magic: data that looks like offsets does not fool it.
  std::memset(arena->data(live), 0, 500);
  CHECK_FALSE(arena->valid(live + 128, 0));
  arena->release(live);
  arena->release(next);
  CHECK_FALSE(arena->valid(live, 0));
  CHECK(arena->audit() == "");
}

TEST_CASE("shm_arena returns 0 when full and frees coalesce into one block again") {
  auto arena = shm_arena::create(4 * mib);
  const std::size_t max = arena->max_allocation();
  CHECK(arena->allocate(max + 1) == 0);
  CHECK(arena->allocate(SIZE_MAX) == 0);
  std::mt19937_64 rng(11);
  std::vector<std::uint64_t> offs;
  for (;;) {
    const std::uint64_t off = arena->allocate(rng() % 20'000);
    if (off == 0)
      break;
    offs.push_back(off);
  }
  REQUIRE(offs.size() > 100);
  CHECK(arena->allocate(max) == 0);
  // The last bytes: small blocks still fit until nothing does.
  while (const std::uint64_t off = arena->allocate(0))
    offs.push_back(off);
  CHECK(arena->capacity() - arena->bytes_in_use() < 64 * 1024);
  CHECK(arena->audit() == "");
  std::shuffle(offs.begin(), offs.end(), rng);
  // Free half: room again, and the structure holds after each step.
  const std::size_t half = offs.size() / 2;
  for (std::size_t i = 0; i < half; ++i)
    arena->release(offs[i]);
  CHECK(arena->audit() == "");
  const std::uint64_t room = arena->allocate(1000);
  CHECK(room != 0);
  arena->release(room);
  CHECK(arena->allocate(max) == 0);
  for (std::size_t i = half; i < offs.size(); ++i)
    arena->release(offs[i]);
  CHECK(arena->bytes_in_use() == 0);
  CHECK(arena->audit() == "");
  const std::uint64_t all = arena->allocate(max);
  REQUIRE(all != 0);
  CHECK(arena->valid(all, max));
  CHECK(arena->allocate(0) == 0);
  arena->release(all);
  CHECK(arena->audit() == "");
}

TEST_CASE("shm_arena attach refuses what is not an arena") {
  using weft_test::what_of;
  // A plain memfd of the right size: no seals.
  const int plain = ::memfd_create("not-an-arena", MFD_CLOEXEC);
  REQUIRE(plain >= 0);
  REQUIRE(::ftruncate(plain, 4 * mib) == 0);
  CHECK_THAT(what_of<weft::error>([&] { shm_arena::attach(plain); }), Contains("not sealed"));
  // Sealed like an arena but holding zeros.
  const int sealed = ::memfd_create("not-an-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  REQUIRE(sealed >= 0);
  REQUIRE(::ftruncate(sealed, 4 * mib) == 0);
  REQUIRE(::fcntl(sealed, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) == 0);
  CHECK_THAT(what_of<weft::error>([&] { shm_arena::attach(sealed); }), Contains("no arena magic"));
  // Too small.
  const int small = ::memfd_create("not-an-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  REQUIRE(::ftruncate(small, 4096) == 0);
  REQUIRE(::fcntl(small, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) == 0);
  CHECK_THAT(what_of<weft::error>([&] { shm_arena::attach(small); }), Contains("size 4096"));
  // Not a memfd at all, and no fd.
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  ::close(fds[1]);
  CHECK_THAT(what_of<weft::error>([&] { shm_arena::attach(fds[0]); }), Contains("F_GET_SEALS"));
  CHECK_THAT(what_of<weft::error>([&] { shm_arena::attach(-1); }), Contains("Bad file descriptor"));
  // attach took each fd: all closed.
  for (int fd : {plain, sealed, small, fds[0]})
    CHECK(::fcntl(fd, F_GETFD) == -1);
  // A real arena whose header was damaged.
  auto arena = shm_arena::create(2 * mib);
  const int copy = ::dup(arena->fd());
  std::memset(arena->data(0), 0xff, 8);
  CHECK_THAT(what_of<weft::error>([&] { shm_arena::attach(copy); }), Contains("no arena magic"));
}

TEST_CASE("shm_arena allocates 1 GiB at once without committing its pages") {
  auto arena = shm_arena::create(std::size_t{2} << 30);
  const std::size_t rss_before = rss_shmem();
  const std::size_t committed_before = committed(arena->fd());
  const auto t0 = std::chrono::steady_clock::now();
  const std::uint64_t big = arena->allocate(std::size_t{1} << 30);
  const auto took = std::chrono::steady_clock::now() - t0;
  REQUIRE(big != 0);
  CHECK(took < 50ms); // touching the pages would take hundreds
  CHECK(committed(arena->fd()) - committed_before < mib);
  CHECK(rss_shmem() - rss_before < mib);
  // Written pages, and only they, are committed.
  std::memset(arena->data(big), 1, 64 * mib);
  CHECK(committed(arena->fd()) >= 64 * mib);
  CHECK(committed(arena->fd()) < 70 * mib);
  CHECK(rss_shmem() - rss_before >= 64 * mib);
  const std::uint64_t second = arena->allocate(std::size_t{900} << 20);
  CHECK(second != 0);
  arena->release(second);
  arena->release(big);
  CHECK(committed(arena->fd()) < mib);
  CHECK(arena->audit() == "");
}

TEST_CASE("shm_arena gives freed pages back to the kernel") {
  auto arena = shm_arena::create(256 * mib);
  const std::size_t size = 16 * mib;
  const std::uint64_t a = arena->allocate(size);
  const std::uint64_t b = arena->allocate(size);
  const std::uint64_t c = arena->allocate(size);
  REQUIRE((a && b && c));
  for (std::uint64_t off : {a, b, c})
    std::memset(arena->data(off), 7, size);
  const std::size_t full = committed(arena->fd());
  CHECK(full >= 3 * size);
  // A freed range between two live blocks goes back at once.
  arena->release(b);
  CHECK(full - committed(arena->fd()) >= size - 2 * 4096);
  // Small frees stay committed (reused without page faults) until their free
  // range grows past the threshold.
  std::vector<std::uint64_t> small;
  for (int i = 0; i < 64; ++i) {
    small.push_back(arena->allocate(64 * 1024 - 64));
    std::memset(arena->data(small.back()), 1, 64 * 1024 - 64);
  }
  const std::size_t with_small = committed(arena->fd());
  for (int i = 0; i < 63; ++i)
    arena->release(small[i]);
  CHECK(with_small - committed(arena->fd()) < shm_arena::punch_threshold);
  arena->release(small[63]);
  CHECK(with_small - committed(arena->fd()) >= 63 * 64 * 1024);
  arena->release(a);
  arena->release(c);
  CHECK(committed(arena->fd()) < 64 * 1024);
  CHECK(arena->audit() == "");
}

TEST_CASE("shm_arena stays sound under concurrent processes") {
  weft_test::watchdog dog(60s, "concurrent processes on one arena");
  auto arena = shm_arena::create(64 * mib);
  // A mailbox in the arena itself: processes swap blocks (with a reference
  // each) through it, so blocks are freed by processes that did not allocate them.
  // Its last slot counts the processes ready, so all start at once.
  constexpr std::size_t slots = 64;
  constexpr int processes = 5;
  const std::uint64_t box_off = arena->allocate((slots + 1) * 8);
  REQUIRE(box_off != 0);
  std::memset(arena->data(box_off), 0, (slots + 1) * 8);
  constexpr int iterations = 100'000;

  // Returns the number of damaged blocks seen.
  auto work = [box_off](shm_arena& a, std::uint64_t seed) {
    auto* box = reinterpret_cast<std::uint64_t*>(a.data(box_off));
    std::atomic_ref<std::uint64_t> ready(box[slots]);
    ready.fetch_add(1);
    while (ready.load() < processes)
      std::this_thread::yield();
    std::mt19937_64 rng(seed);
    std::vector<std::uint64_t> mine;
    int bad = 0;
    auto drop = [&](std::uint64_t off) {
      if (off == 0)
        return;
      bad += !stamped(a, off);
      a.release(off);
    };
    for (int i = 0; i < iterations; ++i) {
      switch (rng() % 4) {
      case 0:
      case 1: {
        const std::uint64_t size = 24 + (rng() % 16 == 0 ? rng() % 200'000 : rng() % 2000);
        const std::uint64_t off = a.allocate(size);
        if (off == 0)
          break;
        stamp(a, off, size);
        if (rng() % 2)
          drop(exchange(box[rng() % slots], off));
        else
          mine.push_back(off);
        break;
      }
      case 2:
        if (!mine.empty()) { // share one of mine: one more reference, into the box
          const std::uint64_t off = mine[rng() % mine.size()];
          a.add_ref(off);
          drop(exchange(box[rng() % slots], off));
        }
        break;
      default:
        if (!mine.empty()) {
          const std::size_t k = rng() % mine.size();
          drop(mine[k]);
          mine[k] = mine.back();
          mine.pop_back();
        }
      }
      if (mine.size() > 16) {
        drop(mine.front());
        mine.erase(mine.begin());
      }
    }
    for (std::uint64_t off : mine)
      drop(off);
    return bad;
  };

  std::vector<pid_t> children;
  for (int c = 0; c < processes - 1; ++c)
    children.push_back(fork_child([&, c] {
      if (c % 2 == 0) // the inherited mapping
        return std::min(work(*arena, 100 + c), 90);
      auto own = shm_arena::attach(::dup(arena->fd())); // its own, elsewhere
      return std::min(work(*own, 100 + c), 90);
    }));
  const int parent_bad = work(*arena, 1);
  for (pid_t pid : children) {
    const int status = reap(pid);
    INFO("child status " << status);
    CHECK(exited_zero(status));
  }
  CHECK(parent_bad == 0);
  CHECK(arena->audit() == "");
  auto* box = reinterpret_cast<std::uint64_t*>(arena->data(box_off));
  for (std::size_t i = 0; i < slots; ++i)
    if (box[i] != 0) {
      CHECK(stamped(*arena, box[i]));
      arena->release(box[i]);
    }
  arena->release(box_off);
  CHECK(arena->bytes_in_use() == 0);
  CHECK(arena->blocks_in_use() == 0);
  CHECK(arena->repairs() == 0);
  CHECK(arena->audit() == "");
  CHECK(arena->allocate(arena->max_allocation()) != 0);
}

TEST_CASE("shm_arena recovers from a death at every point inside the lock") {
  weft_test::watchdog dog(60s, "deaths inside the arena's lock");
  using cp = shm_arena::crash_point;
  struct step {
    cp point;
    bool in_free; // the child frees (else it allocates)
    int leaked;   // blocks of the child left allocated
  };
  const std::vector<step> steps{
    {cp::none, false, 0}, // lock_and_die_for_test
    {cp::alloc_unlinked, false, 0},
    {cp::alloc_tail_written, false, 0},
    {cp::alloc_split, false, 0},
    {cp::alloc_published, false, 1},
    {cp::free_refs_zero, true, 0},
    {cp::free_marked, true, 0},
    {cp::free_merged_next, true, 0},
    {cp::free_merged_prev, true, 0},
    {cp::free_punched, true, 0},
  };
  auto layout = [](shm_arena& arena) {
    // before | victim | after | guard: the victim's neighbours are free
    // when it is freed, so the free merges on both sides.
    const std::uint64_t before = arena.allocate(5000);
    const std::uint64_t victim = arena.allocate(8 * mib);
    const std::uint64_t after = arena.allocate(7000);
    const std::uint64_t guard = arena.allocate(100);
    REQUIRE((before && victim && after && guard));
    std::memset(arena.data(victim), 3, 8 * mib);
    arena.release(before);
    arena.release(after);
    return std::pair{victim, guard};
  };
  SECTION("a death in the rebuild after a death") {
    auto arena = shm_arena::create(64 * mib);
    const auto [victim, guard] = layout(*arena);
    const pid_t first = fork_child([&, victim = victim] {
      shm_arena::set_crash_point_for_test(cp::free_marked);
      arena->release(victim);
      return 99;
    });
    REQUIRE(killed(reap(first)));
    // The next locker rebuilds; it dies after merging the victim with a neighbour.
    const pid_t second = fork_child([&] {
      shm_arena::set_crash_point_for_test(cp::rebuild_merged);
      arena->allocate(100);
      return 99;
    });
    REQUIRE(killed(reap(second)));
    CHECK(arena->repairs() == 0);
    CHECK(arena->audit() == "");
    CHECK(arena->repairs() == 1);
    CHECK(arena->blocks_in_use() == 1);
    arena->release(guard);
    CHECK(arena->bytes_in_use() == 0);
    CHECK(arena->allocate(arena->max_allocation()) != 0);
    CHECK(arena->audit() == "");
  }
  for (const step& s : steps) {
    DYNAMIC_SECTION("crash point " << static_cast<int>(s.point)) {
      auto arena = shm_arena::create(64 * mib);
      const auto [victim, guard] = layout(*arena);
      const pid_t pid = fork_child([&, victim = victim] {
        if (s.point == cp::none)
          arena->lock_and_die_for_test();
        shm_arena::set_crash_point_for_test(s.point);
        if (s.in_free)
          arena->release(victim);
        else
          arena->allocate(3000);
        return 99; // the crash point was never reached
      });
      REQUIRE(killed(reap(pid)));
      CHECK(arena->repairs() == 0);
      CHECK(arena->audit() == ""); // locks: repairs first
      CHECK(arena->repairs() == 1);
      const std::size_t expected_blocks = (s.in_free ? 1 : 2) + static_cast<std::size_t>(s.leaked);
      CHECK(arena->blocks_in_use() == expected_blocks);
      if (s.in_free) {
        CHECK_FALSE(arena->valid(victim, 0));
        CHECK(committed(arena->fd()) < 8 * mib); // the rebuild gives back what the dead freer could not
      } else {
        CHECK(arena->valid(victim, 8 * mib));
        arena->release(victim);
      }
      // The arena goes on: allocate and free, and with no leak the whole of
      // it is one free block again.
      std::vector<std::uint64_t> offs;
      for (int i = 0; i < 100; ++i)
        offs.push_back(arena->allocate(i * 100));
      for (std::uint64_t off : offs) {
        REQUIRE(off != 0);
        arena->release(off);
      }
      arena->release(guard);
      CHECK(arena->audit() == "");
      if (s.leaked == 0) {
        CHECK(arena->bytes_in_use() == 0);
        CHECK(arena->allocate(arena->max_allocation()) != 0);
      } else {
        CHECK(arena->blocks_in_use() == 1);
      }
    }
  }
}

TEST_CASE("shm_arena recovers from processes killed at random in a tight loop") {
  weft_test::watchdog dog(60s, "processes killed in an arena loop");
  auto arena = shm_arena::create(32 * mib);
  // Per round two children loop on the arena: the victim, killed at a random
  // moment, and a bystander that runs on until told to stop (it is often the
  // one that finds the lock's owner dead and repairs). What each holds is
  // recorded outside the arena, so that the test can drop a dead child's
  // references, as the object store's owner would.
  constexpr std::size_t held_max = 8;
  struct child_state {
    std::uint64_t held[held_max];
    std::uint64_t started;
  };
  struct shared_state {
    child_state victim, bystander;
    std::uint64_t stop;
  };
  auto* shared = static_cast<shared_state*>(
    ::mmap(nullptr, sizeof(shared_state), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  REQUIRE(shared != MAP_FAILED);
  // Allocates, shares and frees in a loop until `stop` is set; stamps every
  // block and checks the stamps it frees. Returns the damaged blocks seen.
  auto loop = [&arena, shared](child_state& me, std::uint64_t seed, bool own_mapping) {
    auto own = own_mapping ? shm_arena::attach(::dup(arena->fd())) : nullptr;
    shm_arena& a = own ? *own : *arena;
    std::mt19937_64 r(seed);
    int bad = 0;
    std::atomic_ref<std::uint64_t>(me.started).store(1);
    while (std::atomic_ref<std::uint64_t>(shared->stop).load() == 0) {
      const std::size_t k = r() % held_max;
      if (const std::uint64_t off = exchange(me.held[k], 0)) {
        bad += !stamped(a, off);
        if (r() % 2) { // a reference taken and dropped
          a.add_ref(off);
          a.release(off);
        }
        a.release(off);
      } else {
        const std::uint64_t size = 24 + (r() % 3 == 0 ? r() % 300'000 : r() % 3000);
        if (const std::uint64_t fresh = a.allocate(size)) {
          stamp(a, fresh, size);
          exchange(me.held[k], fresh);
        }
      }
    }
    for (std::uint64_t& off : me.held)
      if (off != 0) {
        bad += !stamped(a, off);
        a.release(exchange(off, 0));
      }
    return std::min(bad, 90);
  };
  auto drop_held = [&](child_state& c) {
    for (std::uint64_t& off : c.held)
      if (off != 0) {
        CHECK(stamped(*arena, off));
        arena->release(off);
      }
  };
  std::mt19937_64 rng(5);
  constexpr int rounds = 40;
  for (int round = 0; round < rounds; ++round) {
    std::memset(shared, 0, sizeof(shared_state));
    const pid_t victim = fork_child([&, round] { return loop(shared->victim, 2 * round, round % 2); });
    const pid_t bystander = fork_child([&, round] { return loop(shared->bystander, 2 * round + 1, round % 3 == 0); });
    while (std::atomic_ref<std::uint64_t>(shared->victim.started).load() == 0 ||
           std::atomic_ref<std::uint64_t>(shared->bystander.started).load() == 0)
      std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
    REQUIRE(::kill(victim, SIGKILL) == 0);
    REQUIRE(killed(reap(victim)));
    // The bystander goes on a little after the death.
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 1000));
    std::atomic_ref<std::uint64_t>(shared->stop).store(1);
    const int status = reap(bystander);
    INFO("round " << round << ", bystander status " << status);
    REQUIRE(exited_zero(status));
    const std::uint64_t mine = arena->allocate(rng() % 10'000);
    REQUIRE(mine != 0);
    drop_held(shared->victim);
    arena->release(mine);
    REQUIRE(arena->audit() == "");
  }
  // At most the block of the operation in flight leaks per kill.
  INFO("repairs " << arena->repairs() << ", leaked blocks " << arena->blocks_in_use());
  CHECK(arena->blocks_in_use() <= static_cast<std::size_t>(rounds));
  CHECK(arena->repairs() > 0);
  const std::uint64_t after = arena->allocate(mib);
  CHECK(after != 0);
  arena->release(after);
  CHECK(arena->audit() == "");
  ::munmap(shared, sizeof(shared_state));
}

// Not a regular test: `shm_arena_test "[.bench]"` prints alloc/free costs.
TEST_CASE("shm_arena alloc and free cost", "[.bench]") {
  auto arena = shm_arena::create(256 * mib);
  auto measure = [](shm_arena& a, int n) {
    std::vector<std::uint64_t> pool(1000);
    std::mt19937_64 rng(3);
    for (auto& off : pool)
      off = a.allocate(rng() % 4096);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) {
      auto& off = pool[rng() % pool.size()];
      a.release(off);
      off = a.allocate(rng() % 4096);
    }
    const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / n;
    for (auto off : pool)
      a.release(off);
    return ns;
  };
  constexpr int n = 2'000'000;
  std::printf("one process: %.1f ns per release+allocate (random sizes < 4 KiB, 1000 live)\n", measure(*arena, n));
  {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i)
      arena->release(arena->allocate(256));
    std::printf("one process: %.1f ns per allocate+release (256 B, the same block again)\n",
                std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / n);
  }
  {
    const std::uint64_t off = arena->allocate(64);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) {
      arena->add_ref(off);
      arena->release(off);
    }
    std::printf("one process: %.1f ns per add_ref+release\n",
                std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / n);
    arena->release(off);
  }
  for (int procs : {2, 4}) {
    std::vector<pid_t> children;
    for (int c = 0; c < procs; ++c)
      children.push_back(fork_child([&] {
        std::printf("%d processes: %.1f ns per release+allocate in one\n", procs, measure(*arena, n / procs));
        std::fflush(stdout);
        return 0;
      }));
    for (pid_t pid : children)
      CHECK(exited_zero(reap(pid)));
  }
  CHECK(arena->bytes_in_use() == 0);
  // The slowest allocate+release in another process while this one frees
  // 1 GiB of written pages.
  auto big_arena = shm_arena::create(std::size_t{2} << 30);
  const std::uint64_t big = big_arena->allocate(std::size_t{1} << 30);
  std::memset(big_arena->data(big), 1, std::size_t{1} << 30);
  const std::uint64_t flag_off = big_arena->allocate(8);
  std::uint64_t& flag = *reinterpret_cast<std::uint64_t*>(big_arena->data(flag_off));
  flag = 0;
  const pid_t child = fork_child([&] {
    double worst = 0;
    while (std::atomic_ref<std::uint64_t>(flag).load() != 2) {
      const auto t0 = std::chrono::steady_clock::now();
      big_arena->release(big_arena->allocate(1000));
      worst = std::max(worst, std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
      std::uint64_t not_yet = 0;
      std::atomic_ref<std::uint64_t>(flag).compare_exchange_strong(not_yet, 1); // running
    }
    std::printf("slowest allocate+release in another process while 1 GiB is freed: %.0f us\n", worst);
    std::fflush(stdout);
    return 0;
  });
  while (std::atomic_ref<std::uint64_t>(flag).load() == 0)
    std::this_thread::yield();
  const auto t0 = std::chrono::steady_clock::now();
  big_arena->release(big);
  std::printf("release of 1 GiB written: %.1f ms\n",
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  std::atomic_ref<std::uint64_t>(flag).store(2);
  CHECK(exited_zero(reap(child)));
}
