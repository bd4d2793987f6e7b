#include "shm_arena.hpp"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <unordered_set>

#include "weft/errors.hpp"

namespace weft::detail {

namespace {

using u64 = std::uint64_t;
using u32 = std::uint32_t;

static_assert(std::atomic_ref<u64>::is_always_lock_free, "refcounts are shared between processes");
static_assert(std::atomic_ref<u32>::is_always_lock_free);
static_assert(std::atomic_ref<u64>::required_alignment <= alignof(u64));

constexpr u64 arena_magic = 0x3161'6e65'7261'7466; // "ftarena1"
constexpr u32 arena_version = 1;
constexpr u32 block_magic = 0x6b6c'6277; // "wblk"
constexpr u32 state_free = 0x4545'5246;  // "FREE"
constexpr u32 state_used = 0x4445'5355;  // "USED"
constexpr std::size_t min_capacity = std::size_t{1} << 20;
constexpr u64 granule = shm_arena::alignment;

// Segregated fit: a block of g granules is listed in bin (fl, sl). Below 16
// granules every size has its own bin (fl 0); above, fl is the power of two
// and sl the next 4 bits, so a bin's sizes differ by at most 1/16.
constexpr unsigned sl_bits = 4;
constexpr unsigned sl_count = 1u << sl_bits;
constexpr unsigned fl_count = 48; // blocks up to 2^(fl_count + sl_bits - 1) granules
constexpr u64 max_capacity = u64{1} << 56;
static_assert(static_cast<unsigned>(std::countr_zero(max_capacity / granule)) < fl_count + sl_bits - 1);

// The crash point this process dies at (test hook; never set in production).
std::atomic<int> crash_at{0};

void maybe_crash(shm_arena::crash_point p) noexcept {
  if (crash_at.load(std::memory_order_relaxed) == static_cast<int>(p)) [[unlikely]]
    ::kill(::getpid(), SIGKILL);
}

// Fields that a process reads without the lock (valid(), refcounts,
// counters) and the stores whose order keeps the block chain walkable after
// a death go through atomic_ref. Release stores keep the compiler (x86 keeps
// store order itself) from moving an earlier store after them.
template <class T>
T ld(const T& x, std::memory_order o = std::memory_order_relaxed) noexcept {
  return std::atomic_ref<T>(const_cast<T&>(x)).load(o);
}
template <class T>
void st(T& x, T v, std::memory_order o = std::memory_order_relaxed) noexcept {
  std::atomic_ref<T>(x).store(v, o);
}
constexpr auto rel = std::memory_order_release;

std::size_t page_size() noexcept {
  static const std::size_t size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

constexpr u64 round_up(u64 v, u64 to) noexcept { return (v + to - 1) / to * to; }
constexpr u64 round_down(u64 v, u64 to) noexcept { return v / to * to; }

struct bin_index {
  unsigned fl, sl;
};

constexpr bin_index bin_of(u64 granules) noexcept {
  if (granules < sl_count)
    return {0, static_cast<unsigned>(granules)};
  unsigned log = static_cast<unsigned>(std::bit_width(granules)) - 1;
  return {log - sl_bits + 1, static_cast<unsigned>((granules >> (log - sl_bits)) & (sl_count - 1))};
}

// The first bin whose every block holds `granules`: round up to the next bin
// boundary, so any block found there fits without looking at its size.
constexpr bin_index fitting_bin_of(u64 granules) noexcept {
  if (granules >= sl_count) {
    unsigned log = static_cast<unsigned>(std::bit_width(granules)) - 1;
    granules += (u64{1} << (log - sl_bits)) - 1;
  }
  return bin_of(granules);
}

[[noreturn]] void throw_sys(const std::string& what) {
  throw error("weft: object store arena: " + what + ": " + std::strerror(errno));
}

} // namespace

// The arena's first pages. Written once by create() except for the lock's
// state, the counters and the free lists (all under the lock).
struct shm_arena::header {
  u64 magic; ///< arena_magic, written last by create()
  u32 version;
  u32 header_bytes; ///< sizeof(header): a layout check between builds
  u64 capacity;
  u64 heap_begin;
  u64 heap_end;
  alignas(64) pthread_mutex_t mutex; ///< process-shared, robust
  alignas(64) u64 bytes_in_use;      ///< written under the lock, read by anyone
  u64 blocks_in_use;
  u64 repairs;
  u64 broken; ///< nonzero: a rebuild found the block chain corrupt; nothing is allocated any more
  u64 fl_bitmap;
  u32 sl_bitmap[fl_count];
  u64 heads[fl_count][sl_count]; ///< first free block of each bin (0: none)
};

// Every block starts with this header; its data follows (64-byte aligned).
struct shm_arena::block {
  u32 magic;     ///< block_magic; cleared when the header is merged away
  u32 state;     ///< state_free or state_used
  u64 size;      ///< the whole block, header included (a multiple of 64)
  u64 prev_size; ///< size of the block just before (0: the first), for O(1) coalescing
  u64 refs;
  /// Allocated: the size asked for. Free: start of the range that may still
  /// hold committed pages (dirty_end == bytes: none).
  u64 bytes;
  u64 next_free; ///< free: the bin's list
  u64 prev_free;
  u64 dirty_end;
};

shm_arena::shm_arena(int fd, std::byte* base, std::size_t capacity, std::uint64_t heap_begin) noexcept :
  fd_(fd),
  base_(base),
  capacity_(capacity),
  heap_begin_(heap_begin) {
  static_assert(sizeof(block) == alignment, "data follows the header, 64-byte aligned");
}

shm_arena::~shm_arena() {
  ::munmap(base_, capacity_);
  ::close(fd_);
}

std::unique_ptr<shm_arena> shm_arena::create(std::size_t capacity) {
  const std::size_t page = page_size();
  if (capacity > max_capacity)
    throw error("weft: object store arena: capacity " + std::to_string(capacity) + " is more than the " +
                std::to_string(max_capacity) + " bytes supported");
  const u64 cap = round_up(std::max(capacity, min_capacity), page);
  const u64 heap_begin = round_up(sizeof(header), page);

  int fd = ::memfd_create("weft-object-store", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0)
    throw_sys("memfd_create");
  auto fail = [fd](const std::string& what) {
    int saved = errno;
    ::close(fd);
    errno = saved;
    throw_sys(what);
  };
  // Sparse: ftruncate commits nothing; pages are committed when touched.
  if (::ftruncate(fd, static_cast<off_t>(cap)) != 0)
    fail("ftruncate to " + std::to_string(cap) + " bytes");
  // No process may resize it: a shrink would turn other processes' reads
  // into SIGBUS. attach() checks the seals.
  if (::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
    fail("fcntl(F_ADD_SEALS)");
  void* base = ::mmap(nullptr, cap, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED)
    fail("mmap of " + std::to_string(cap) + " bytes");
  std::unique_ptr<shm_arena> arena(new shm_arena(fd, static_cast<std::byte*>(base), cap, heap_begin));

  header& h = arena->head(); // a fresh memfd reads as zeros
  h.version = arena_version;
  h.header_bytes = sizeof(header);
  h.capacity = cap;
  h.heap_begin = heap_begin;
  h.heap_end = cap;
  pthread_mutexattr_t attr;
  ::pthread_mutexattr_init(&attr);
  ::pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  ::pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  int rc = ::pthread_mutex_init(&h.mutex, &attr);
  ::pthread_mutexattr_destroy(&attr);
  if (rc != 0) {
    errno = rc;
    throw_sys("pthread_mutex_init");
  }
  // One free block spans the heap; it is clean (nothing committed yet).
  block& b = arena->blk(heap_begin);
  b.state = state_free;
  b.size = cap - heap_begin;
  b.bytes = b.dirty_end = heap_begin;
  b.magic = block_magic;
  arena->insert_free(heap_begin);
  st(h.magic, arena_magic, rel);
  return arena;
}

std::unique_ptr<shm_arena> shm_arena::attach(int fd) {
  auto refuse = [fd](const std::string& why) {
    ::close(fd);
    throw error("weft: fd " + std::to_string(fd) + " is not an object store arena: " + why);
  };
  int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0)
    refuse(std::string("fcntl(F_GET_SEALS): ") + std::strerror(errno));
  if ((seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW))
    refuse("not sealed against resizing");
  struct stat sb {};
  if (::fstat(fd, &sb) != 0)
    refuse(std::string("fstat: ") + std::strerror(errno));
  const u64 size = static_cast<u64>(sb.st_size);
  if (size < min_capacity || size > max_capacity || size % page_size() != 0)
    refuse("size " + std::to_string(size));
  void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED)
    refuse("mmap of " + std::to_string(size) + " bytes: " + std::strerror(errno));
  const header& h = *static_cast<const header*>(base);
  std::string why;
  if (ld(h.magic, std::memory_order_acquire) != arena_magic)
    why = "no arena magic";
  else if (h.version != arena_version || h.header_bytes != sizeof(header))
    why = "version " + std::to_string(h.version) + " (layout " + std::to_string(h.header_bytes) + " bytes), expected " +
          std::to_string(arena_version) + " (" + std::to_string(sizeof(header)) + ")";
  else if (h.capacity != size || h.heap_end != size)
    why = "header says " + std::to_string(h.capacity) + " bytes, the memfd has " + std::to_string(size);
  else if (h.heap_begin < sizeof(header) || h.heap_begin % granule != 0 || h.heap_begin >= size - granule)
    why = "bad heap start " + std::to_string(h.heap_begin);
  if (!why.empty()) {
    ::munmap(base, size);
    refuse(why);
  }
  return std::unique_ptr<shm_arena>(new shm_arena(fd, static_cast<std::byte*>(base), size, h.heap_begin));
}

std::size_t shm_arena::max_allocation() const noexcept { return capacity_ - heap_begin_ - granule; }

std::size_t shm_arena::bytes_in_use() const noexcept { return ld(head().bytes_in_use); }
std::size_t shm_arena::blocks_in_use() const noexcept { return ld(head().blocks_in_use); }
std::uint64_t shm_arena::repairs() const noexcept { return ld(head().repairs); }

void shm_arena::set_crash_point_for_test(crash_point p) noexcept {
  crash_at.store(static_cast<int>(p), std::memory_order_relaxed);
}

void shm_arena::lock_and_die_for_test() {
  lock();
  ::kill(::getpid(), SIGKILL);
  std::abort();
}

bool shm_arena::lock() const noexcept {
  header& h = head();
  int rc = ::pthread_mutex_lock(&h.mutex);
  if (rc == EOWNERDEAD) {
    // The owner died somewhere inside a critical section: the block chain is
    // sound (see the header), the lists and counters may not be.
    rebuild();
    st(h.repairs, ld(h.repairs) + 1);
    ::pthread_mutex_consistent(&h.mutex);
  } else if (rc != 0) {
    return false; // ENOTRECOVERABLE: only if someone unlocked without repairing
  }
  if (ld(h.broken) != 0) {
    unlock();
    return false;
  }
  return true;
}

void shm_arena::unlock() const noexcept { ::pthread_mutex_unlock(&head().mutex); }

void shm_arena::insert_free(std::uint64_t b) const noexcept {
  header& h = head();
  block& x = blk(b);
  auto [fl, sl] = bin_of(x.size / granule);
  u64 first = h.heads[fl][sl];
  x.next_free = first;
  x.prev_free = 0;
  if (first != 0)
    blk(first).prev_free = b;
  h.heads[fl][sl] = b;
  h.sl_bitmap[fl] |= 1u << sl;
  h.fl_bitmap |= u64{1} << fl;
}

void shm_arena::unlink_free(std::uint64_t b) const noexcept {
  header& h = head();
  block& x = blk(b);
  auto [fl, sl] = bin_of(x.size / granule);
  if (x.prev_free != 0)
    blk(x.prev_free).next_free = x.next_free;
  else
    h.heads[fl][sl] = x.next_free;
  if (x.next_free != 0)
    blk(x.next_free).prev_free = x.prev_free;
  if (h.heads[fl][sl] == 0) {
    h.sl_bitmap[fl] &= ~(1u << sl);
    if (h.sl_bitmap[fl] == 0)
      h.fl_bitmap &= ~(u64{1} << fl);
  }
}

// A free block of at least `need` bytes, taken off its list; 0 if none.
std::uint64_t shm_arena::take_free(std::uint64_t need) const noexcept {
  header& h = head();
  const u64 granules = need / granule;
  auto [fl, sl] = fitting_bin_of(granules);
  u64 found = 0;
  if (fl < fl_count) {
    u32 sl_map = h.sl_bitmap[fl] & (~u32{0} << sl);
    if (sl_map == 0) {
      u64 fl_map = fl + 1 < 64 ? h.fl_bitmap & (~u64{0} << (fl + 1)) : 0;
      if (fl_map != 0) {
        fl = static_cast<unsigned>(std::countr_zero(fl_map));
        sl_map = h.sl_bitmap[fl];
      }
    }
    if (sl_map != 0)
      found = h.heads[fl][std::countr_zero(sl_map)];
  }
  if (found == 0) {
    // Nothing in a bin that surely fits: blocks of the request's own bin
    // may still be large enough (a nearly full arena, or a request for
    // exactly the largest free block). Bounded first fit there.
    auto [efl, esl] = bin_of(granules);
    u64 b = h.heads[efl][esl];
    for (int i = 0; b != 0 && i < 64; ++i, b = blk(b).next_free) {
      if (blk(b).size >= need) {
        found = b;
        break;
      }
    }
  }
  if (found != 0)
    unlink_free(found);
  return found;
}

std::uint64_t shm_arena::allocate(std::size_t bytes) {
  if (bytes > max_allocation())
    return 0;
  const u64 need = round_up(bytes, granule) + granule;
  if (!lock())
    return 0;
  const u64 b = take_free(need);
  if (b == 0) {
    unlock();
    return 0;
  }
  maybe_crash(crash_point::alloc_unlinked);
  header& h = head();
  block& x = blk(b);
  u64 size = x.size;
  if (size - need >= granule) {
    // Split: the tail stays free. Its header is complete before the block
    // shrinks, so the chain leads either over it or to it.
    const u64 t = b + need;
    block& y = blk(t);
    y.state = state_free;
    y.size = size - need;
    y.prev_size = need;
    y.refs = 0;
    // What of the dirty range lies in the tail stays dirty.
    y.bytes = std::max(x.bytes, t);
    y.dirty_end = std::max(x.dirty_end, y.bytes);
    st(y.magic, block_magic, rel);
    maybe_crash(crash_point::alloc_tail_written);
    st(x.size, need, rel);
    maybe_crash(crash_point::alloc_split);
    if (b + size < capacity_)
      blk(b + size).prev_size = size - need;
    insert_free(t);
    size = need;
  }
  st(x.refs, u64{1});
  st(x.bytes, u64{bytes});
  st(x.state, state_used, rel);
  maybe_crash(crash_point::alloc_published);
  st(h.bytes_in_use, ld(h.bytes_in_use) + size);
  st(h.blocks_in_use, ld(h.blocks_in_use) + 1);
  unlock();
  return b + granule;
}

void shm_arena::add_ref(std::uint64_t data_offset) noexcept {
  std::atomic_ref<u64>(blk(data_offset - granule).refs).fetch_add(1, std::memory_order_relaxed);
}

void shm_arena::release(std::uint64_t data_offset) noexcept {
  const u64 b = data_offset - granule;
  std::atomic_ref<u64> refs(blk(b).refs);
  // Acquire even when nothing is stored: seeing the count that others'
  // releases left orders their use of the data before our discard.
  u64 r = refs.load(std::memory_order_acquire);
  while (r > 1)
    if (refs.compare_exchange_weak(r, r - 1, std::memory_order_acq_rel, std::memory_order_acquire))
      return;
  if (r == 0)
    return;
  // Likely the last reference: ours alone, so its data is ours to discard.
  // A large block's pages go back to the kernel here, outside the lock (1 GiB
  // of written pages takes ~150 ms to punch; no other process should wait on
  // that); the punch under the lock then finds holes and costs microseconds.
  const u64 size = ld(blk(b).size);
  if (size >= punch_threshold)
    discard(b + granule, b + size);
  // The count drops to 0 only under the lock, so a count of 0 on an
  // allocated block means its freer died inside the lock.
  if (!lock())
    return; // the arena is unusable: the block stays allocated
  for (r = 1;;) {
    if (r == 1) {
      if (refs.compare_exchange_strong(r, 0, std::memory_order_acq_rel, std::memory_order_relaxed)) {
        maybe_crash(crash_point::free_refs_zero);
        free_locked(b);
        break;
      }
    } else if (r == 0 || refs.compare_exchange_weak(r, r - 1, std::memory_order_acq_rel, std::memory_order_relaxed)) {
      break; // an add_ref came in meanwhile (from a caller holding no reference: a bug)
    }
  }
  unlock();
}

void shm_arena::free_locked(std::uint64_t b) const noexcept {
  header& h = head();
  block& x = blk(b);
  u64 size = x.size;
  st(x.state, state_free, rel);
  maybe_crash(crash_point::free_marked);
  st(h.bytes_in_use, ld(h.bytes_in_use) - size);
  st(h.blocks_in_use, ld(h.blocks_in_use) - 1);
  // The block's pages may all be committed, the ones it shares with its
  // neighbours included (if a neighbour is merged, its part of a shared page
  // is free too; punch() keeps to the merged block); neighbours add theirs.
  const u64 page = page_size();
  u64 dirty_begin = round_down(b, page), dirty_end = round_up(b + size, page);
  const u64 n = b + size;
  if (n < capacity_ && ld(blk(n).state) == state_free) {
    block& y = blk(n);
    unlink_free(n);
    if (y.dirty_end > y.bytes)
      dirty_end = std::max(dirty_end, y.dirty_end);
    size += y.size;
    st(x.size, size, rel); // y is now inside x
    st(y.magic, u32{0}, rel);
    maybe_crash(crash_point::free_merged_next);
  }
  u64 f = b;
  if (x.prev_size != 0) {
    const u64 p = b - x.prev_size;
    block& w = blk(p);
    if (ld(w.state) == state_free) {
      unlink_free(p);
      if (w.dirty_end > w.bytes)
        dirty_begin = std::min(dirty_begin, w.bytes);
      size += w.size;
      st(w.size, size, rel); // x is now inside w
      st(x.magic, u32{0}, rel);
      f = p;
      maybe_crash(crash_point::free_merged_prev);
    }
  }
  if (f + size < capacity_)
    blk(f + size).prev_size = size;
  block& z = blk(f);
  z.bytes = dirty_begin;
  z.dirty_end = dirty_end;
  if (dirty_end - dirty_begin >= punch_threshold)
    punch(f);
  maybe_crash(crash_point::free_punched);
  insert_free(f);
}

// Gives the whole pages of free block `b`'s dirty range back to the kernel
// (not its header's page, nor a page it shares with the next block) and
// marks it clean. The data there is garbage, so a half-done punch is harmless.
void shm_arena::punch(std::uint64_t b) const noexcept {
  block& x = blk(b);
  discard(std::max(x.bytes, b + granule), std::min(x.dirty_end, b + x.size));
  x.bytes = x.dirty_end = b;
}

// Gives back the whole pages inside [begin, end).
void shm_arena::discard(std::uint64_t begin, std::uint64_t end) const noexcept {
  const u64 page = page_size();
  begin = round_up(begin, page);
  end = round_down(end, page);
  if (end > begin)
    ::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(begin),
                static_cast<off_t>(end - begin));
}

// Under the lock, after its owner died: recomputes everything but the block
// chain from the chain itself. Free blocks are the ones marked free and the
// allocated ones at count 0 (a dead freer's); free neighbours are merged;
// lists, boundary tags and counters are rebuilt. A block of the dead process
// that was not free yet stays allocated (the arena cannot tell whose it was).
// Each write keeps the chain walkable, so a death here is repaired the same way.
void shm_arena::rebuild() const noexcept {
  header& h = head();
  h.fl_bitmap = 0;
  std::memset(h.sl_bitmap, 0, sizeof h.sl_bitmap);
  std::memset(h.heads, 0, sizeof h.heads);
  u64 bytes = 0, blocks = 0;
  u64 last = 0; // the block before `b` in the chain (0: none)
  bool last_free = false;
  auto finish_free = [this](u64 f) {
    block& x = blk(f);
    x.bytes = f; // unknown which pages are committed: all may be
    x.dirty_end = f + x.size;
    if (x.size >= punch_threshold)
      punch(f);
    insert_free(f);
  };
  u64 b = heap_begin_;
  while (b < capacity_) {
    block& x = blk(b);
    const u64 size = ld(x.size);
    const u32 state = ld(x.state);
    if (ld(x.magic) != block_magic || size < granule || size % granule != 0 || size > capacity_ - b ||
        (state != state_free && state != state_used)) {
      st(h.broken, u64{1});
      return;
    }
    x.prev_size = last != 0 ? blk(last).size : 0;
    const bool is_free = state == state_free || ld(x.refs) == 0;
    if (is_free && state != state_free)
      st(x.state, state_free, rel);
    if (!is_free) {
      bytes += size;
      ++blocks;
    }
    if (is_free && last_free) {
      block& w = blk(last);
      st(w.size, w.size + size, rel);
      st(x.magic, u32{0}, rel);
      maybe_crash(crash_point::rebuild_merged);
    } else {
      if (last_free)
        finish_free(last);
      last = b;
      last_free = is_free;
    }
    b += size;
  }
  if (last_free)
    finish_free(last);
  st(h.bytes_in_use, bytes);
  st(h.blocks_in_use, blocks);
}

bool shm_arena::valid(std::uint64_t data_offset, std::size_t bytes) const noexcept {
  if (data_offset % granule != 0 || data_offset < heap_begin_ + granule || data_offset > capacity_)
    return false;
  const u64 b = data_offset - granule;
  const block& x = blk(b);
  if (ld(x.magic) != block_magic || ld(x.state, std::memory_order_acquire) != state_used)
    return false;
  const u64 size = ld(x.size);
  if (size < granule || size > capacity_ - b)
    return false;
  const u64 asked = ld(x.bytes);
  return bytes <= asked && asked <= size - granule && ld(x.refs) > 0;
}

std::uint64_t shm_arena::ref_count(std::uint64_t data_offset) const noexcept {
  return ld(blk(data_offset - granule).refs);
}

std::string shm_arena::audit() const {
  if (!lock())
    return "the arena is broken (its block chain was found corrupt) or its lock unrecoverable";
  struct unlock_at_exit {
    const shm_arena* a;
    ~unlock_at_exit() { a->unlock(); }
  } guard{this};
  const header& h = head();
  auto at = [](u64 off) { return " (block at " + std::to_string(off) + ")"; };
  std::unordered_set<u64> free_blocks;
  u64 bytes = 0, blocks = 0, last_size = 0;
  bool last_free = false;
  u64 b = heap_begin_;
  while (b < capacity_) {
    const block& x = blk(b);
    if (x.magic != block_magic)
      return "bad block magic" + at(b);
    if (x.size < granule || x.size % granule != 0 || x.size > capacity_ - b)
      return "bad block size " + std::to_string(x.size) + at(b);
    if (x.prev_size != last_size)
      return "boundary tag " + std::to_string(x.prev_size) + " but the block before has " + std::to_string(last_size) +
             at(b);
    if (x.state == state_free) {
      if (last_free)
        return "two free neighbours" + at(b);
      free_blocks.insert(b);
    } else if (x.state == state_used) {
      if (ld(x.refs) == 0)
        return "allocated block with no reference" + at(b);
      if (x.bytes > x.size - granule)
        return "allocated size larger than the block" + at(b);
      bytes += x.size;
      ++blocks;
    } else {
      return "bad block state" + at(b);
    }
    last_free = x.state == state_free;
    last_size = x.size;
    b += x.size;
  }
  if (b != capacity_)
    return "the block chain ends at " + std::to_string(b) + ", not at " + std::to_string(capacity_);
  if (bytes != h.bytes_in_use || blocks != h.blocks_in_use)
    return "counters say " + std::to_string(h.bytes_in_use) + " bytes in " + std::to_string(h.blocks_in_use) +
           " blocks, the blocks " + std::to_string(bytes) + " in " + std::to_string(blocks);
  std::size_t listed = 0;
  for (unsigned fl = 0; fl < fl_count; ++fl) {
    if (((h.fl_bitmap >> fl) & 1) != (h.sl_bitmap[fl] != 0))
      return "first-level bitmap disagrees at " + std::to_string(fl);
    for (unsigned sl = 0; sl < sl_count; ++sl) {
      const u64 first = h.heads[fl][sl];
      if (((h.sl_bitmap[fl] >> sl) & 1) != (first != 0))
        return "second-level bitmap disagrees at " + std::to_string(fl) + "/" + std::to_string(sl);
      u64 prev = 0;
      for (u64 f = first; f != 0; prev = f, f = blk(f).next_free) {
        if (!free_blocks.contains(f))
          return "listed block is not a free block of the chain" + at(f);
        if (++listed > free_blocks.size())
          return "free lists hold a cycle or a block twice";
        const block& x = blk(f);
        if (x.prev_free != prev)
          return "bad back link" + at(f);
        auto bin = bin_of(x.size / granule);
        if (bin.fl != fl || bin.sl != sl)
          return "block listed in the wrong bin" + at(f);
      }
    }
  }
  if (listed != free_blocks.size())
    return std::to_string(free_blocks.size() - listed) + " free blocks are not listed";
  return {};
}

} // namespace weft::detail
