#include "lane.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

#include "futex.hpp"
#include "weft/errors.hpp"

namespace weft::detail {

/// One direction. The producer owns `head`, the consumer `tail`; both count
/// bytes since the start and only grow (positions are taken modulo the
/// ring's size).
struct lane::ring {
  alignas(64) std::atomic<std::uint64_t> head;
  std::atomic<std::uint32_t> published;         ///< futex word of a sleeping consumer
  std::atomic<std::uint32_t> consumer_sleeping; ///< it sleeps (or is about to)
  alignas(64) std::atomic<std::uint64_t> tail;
  std::atomic<std::uint32_t> consumed;         ///< futex word of a producer waiting for room
  std::atomic<std::uint32_t> producer_waiting; ///< it waits (or has an overflow queue)
};

static_assert(2 * sizeof(lane::ring) <= lane::header_bytes);

namespace {

constexpr std::size_t page = 4096;
constexpr std::size_t max_fragment = lane::ring_bytes / 4;
/// A message from a worker larger than this is refused (corrupt).
constexpr std::size_t max_message_from_worker = std::size_t{2} << 30;

struct fragment_header {
  std::uint32_t len;
  std::uint8_t kind;
  std::uint8_t last;
  std::uint16_t zero;
};
static_assert(sizeof(fragment_header) == 8);

constexpr std::uint64_t padded(std::uint64_t n) { return (n + 7) & ~std::uint64_t{7}; }

[[noreturn]] void fail(const std::string& what) {
  throw error("weft: worker lane: " + what + ": " + std::strerror(errno));
}

void copy_in(std::byte* data, std::uint64_t pos, const void* src, std::size_t n) {
  const std::size_t at = pos % lane::ring_bytes;
  const std::size_t first = std::min(n, lane::ring_bytes - at);
  std::memcpy(data + at, src, first);
  std::memcpy(data, static_cast<const std::byte*>(src) + first, n - first);
}

void copy_out(const std::byte* data, std::uint64_t pos, void* dst, std::size_t n) {
  const std::size_t at = pos % lane::ring_bytes;
  const std::size_t first = std::min(n, lane::ring_bytes - at);
  std::memcpy(dst, data + at, first);
  std::memcpy(static_cast<std::byte*>(dst) + first, data, n - first);
}

bool valid_kind(std::uint8_t k, bool from_worker) {
  if (from_worker)
    return k >= static_cast<std::uint8_t>(lane_kind::done) && k <= static_cast<std::uint8_t>(lane_kind::taken);
  return k >= static_cast<std::uint8_t>(lane_kind::call) && k <= static_cast<std::uint8_t>(lane_kind::actor_quit);
}

/// A worker inherits the doorbell and its lane as fds 6 and 7; spawning
/// copies them there after fds 1 to 5, so they must not be among those.
int above_inherited(int fd) {
  const int high = ::fcntl(fd, F_DUPFD_CLOEXEC, 64);
  if (high < 0)
    return fd;
  ::close(fd);
  return high;
}

void* map_shared(int fd, std::size_t n) {
  void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  return p == MAP_FAILED ? nullptr : p;
}

} // namespace

// ---- the doorbell ----

doorbell_map doorbell_map::create() {
  doorbell_map m;
  m.fd_ = ::memfd_create("weft-doorbell", MFD_CLOEXEC);
  if (m.fd_ < 0)
    fail("memfd_create");
  m.fd_ = above_inherited(m.fd_);
  if (::ftruncate(m.fd_, page) != 0)
    fail("ftruncate");
  void* p = map_shared(m.fd_, page);
  if (!p)
    fail("mmap");
  m.bell_ = new (p) doorbell;
  return m;
}

doorbell_map doorbell_map::attach(int fd) {
  doorbell_map m;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<std::size_t>(st.st_size) != page) {
    ::close(fd);
    errno = EINVAL;
    fail("fd " + std::to_string(fd) + " is not a doorbell page");
  }
  void* p = map_shared(fd, page);
  ::close(fd);
  if (!p)
    fail("mmap");
  m.bell_ = static_cast<doorbell*>(p);
  return m;
}

doorbell_map::doorbell_map(doorbell_map&& o) noexcept :
  bell_(std::exchange(o.bell_, nullptr)),
  fd_(std::exchange(o.fd_, -1)) {}

doorbell_map& doorbell_map::operator=(doorbell_map&& o) noexcept {
  if (this != &o) {
    this->~doorbell_map();
    bell_ = std::exchange(o.bell_, nullptr);
    fd_ = std::exchange(o.fd_, -1);
  }
  return *this;
}

doorbell_map::~doorbell_map() {
  if (bell_)
    ::munmap(bell_, page);
  if (fd_ >= 0)
    ::close(fd_);
}

namespace {
void ring_bell(doorbell* b, bool force = false) noexcept {
  b->seq.fetch_add(1, std::memory_order_seq_cst);
  if (b->sleeping.load(std::memory_order_seq_cst) && (force || b->helpers.load(std::memory_order_seq_cst) == 0))
    futex_wake_shared(b->seq);
}
} // namespace

void doorbell_map::ring(bool force) const noexcept { ring_bell(bell_, force); }

// ---- the lane ----

lane::lane(std::byte* base, int fd, doorbell* bell) noexcept : base_(base), fd_(fd), bell_(bell) {}

lane::~lane() {
  ::munmap(base_, file_bytes);
  if (fd_ >= 0)
    ::close(fd_);
}

namespace {
lane::ring& to_worker(std::byte* base) { return *reinterpret_cast<lane::ring*>(base); }
lane::ring& to_driver(std::byte* base) { return *reinterpret_cast<lane::ring*>(base + sizeof(lane::ring)); }
std::byte* to_worker_data(std::byte* base) { return base + lane::to_worker_offset; }
std::byte* to_driver_data(std::byte* base) { return base + lane::to_driver_offset; }
} // namespace

std::shared_ptr<lane> lane::create(doorbell* bell) {
  int fd = ::memfd_create("weft-lane", MFD_CLOEXEC);
  if (fd < 0)
    fail("memfd_create");
  fd = above_inherited(fd);
  if (::ftruncate(fd, file_bytes) != 0) {
    const int e = errno;
    ::close(fd);
    errno = e;
    fail("ftruncate");
  }
  void* p = map_shared(fd, file_bytes);
  if (!p) {
    const int e = errno;
    ::close(fd);
    errno = e;
    fail("mmap");
  }
  auto* base = static_cast<std::byte*>(p);
  new (&to_worker(base)) ring{};
  new (&to_driver(base)) ring{};
  return std::shared_ptr<lane>(new lane(base, fd, bell));
}

std::unique_ptr<lane> lane::attach(int fd, doorbell* bell) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<std::size_t>(st.st_size) != file_bytes) {
    ::close(fd);
    errno = EINVAL;
    fail("fd " + std::to_string(fd) + " is not a lane");
  }
  void* p = map_shared(fd, file_bytes);
  ::close(fd);
  if (!p)
    fail("mmap");
  return std::unique_ptr<lane>(new lane(static_cast<std::byte*>(p), -1, bell));
}

bool lane::try_write(ring& r, std::byte* data, lane_kind k, bool last, std::string_view part) {
  const std::uint64_t head = r.head.load(std::memory_order_relaxed); // ours
  const std::uint64_t tail = r.tail.load(std::memory_order_acquire);
  const std::uint64_t need = sizeof(fragment_header) + padded(part.size());
  if (need > ring_bytes - (head - tail))
    return false;
  const fragment_header h{static_cast<std::uint32_t>(part.size()), static_cast<std::uint8_t>(k),
                          static_cast<std::uint8_t>(last ? 1 : 0), 0};
  copy_in(data, head, &h, sizeof h); // (8-aligned: a header never wraps)
  copy_in(data, head + sizeof h, part.data(), part.size());
  r.head.store(head + need, std::memory_order_release);
  return true;
}

bool lane::read_message(ring& r, std::byte* data, lane_kind& k, std::string& body, bool driver_side) {
  for (;;) {
    const std::uint64_t head = r.head.load(std::memory_order_acquire);
    const std::uint64_t tail = r.tail.load(std::memory_order_relaxed); // ours
    if (head == tail)
      return false;
    const std::uint64_t avail = head - tail;
    fragment_header h{};
    if (avail > ring_bytes || avail % 8 != 0 || tail % 8 != 0) {
      corrupt_ = true;
      return false;
    }
    copy_out(data, tail, &h, sizeof h);
    const std::uint64_t need = sizeof h + padded(h.len);
    // (Every piece but the last is a whole fragment: a stream of short
    // pieces that never ends a message would keep the reader here.)
    if (h.len > max_fragment || (!h.last && h.len != max_fragment) || need > avail ||
        !valid_kind(h.kind, driver_side) || (!partial_.empty() && static_cast<lane_kind>(h.kind) != partial_kind_) ||
        (driver_side && partial_.size() + h.len > max_message_from_worker)) {
      corrupt_ = true;
      return false;
    }
    partial_kind_ = static_cast<lane_kind>(h.kind);
    const std::size_t at = partial_.size();
    partial_.resize(at + h.len);
    copy_out(data, tail + sizeof h, partial_.data() + at, h.len);
    r.tail.store(tail + need, std::memory_order_release);
    // A producer waiting for room: the worker sleeps on `consumed`; the
    // driver's overflow queue waits for the doorbell.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (r.producer_waiting.load(std::memory_order_relaxed)) {
      if (driver_side) {
        r.consumed.fetch_add(1, std::memory_order_seq_cst);
        futex_wake_shared(r.consumed);
      } else {
        ring_bell(bell_);
      }
    }
    if (h.last) {
      k = partial_kind_;
      body = std::move(partial_);
      // The move may hand body's old buffer to partial_: kept for the next
      // message if small, but a large one would stay with the lane.
      partial_.clear();
      if (partial_.capacity() > ring_bytes)
        std::string().swap(partial_);
      return true;
    }
  }
}

// ---- driver side ----

void lane::post_to_worker(lane_kind k, std::string body) {
  std::lock_guard<std::mutex> lock(out_mtx_);
  overflow_.emplace_back(k, std::move(body));
  pump_locked();
}

void lane::pump() {
  std::lock_guard<std::mutex> lock(out_mtx_);
  pump_locked();
}

void lane::pump_locked() {
  ring& r = to_worker(base_);
  std::byte* data = to_worker_data(base_);
  bool wrote = false;
  while (!overflow_.empty()) {
    auto& [k, body] = overflow_.front();
    bool full = false;
    do {
      const std::size_t n = std::min(max_fragment, body.size() - overflow_sent_);
      const bool last = overflow_sent_ + n == body.size();
      if (!try_write(r, data, k, last, std::string_view(body).substr(overflow_sent_, n))) {
        full = true;
        break;
      }
      wrote = true;
      overflow_sent_ += n;
      if (last)
        break;
    } while (true);
    if (full) {
      // Wait for the worker to make room: it rings the doorbell when it
      // reads with this flag set. (Set before the retry below, so that a
      // read in between is not missed.)
      if (!overflowing_.exchange(true, std::memory_order_acq_rel)) {
        r.producer_waiting.store(1, std::memory_order_seq_cst);
        continue; // try once more now that the worker will tell us
      }
      break;
    }
    overflow_.pop_front();
    overflow_sent_ = 0;
  }
  if (overflow_.empty() && overflowing_.load(std::memory_order_relaxed)) {
    r.producer_waiting.store(0, std::memory_order_relaxed);
    overflowing_.store(false, std::memory_order_release);
  }
  if (wrote) {
    r.published.fetch_add(1, std::memory_order_seq_cst);
    if (r.consumer_sleeping.load(std::memory_order_seq_cst))
      futex_wake_shared(r.published);
  }
}

bool lane::take_from_worker(lane_kind& k, std::string& body) {
  if (corrupt_)
    return false;
  return read_message(to_driver(base_), to_driver_data(base_), k, body, true);
}

bool lane::readable_from_worker() const noexcept {
  ring& r = to_driver(base_);
  return r.head.load(std::memory_order_acquire) != r.tail.load(std::memory_order_relaxed);
}

// ---- worker side ----

void lane::post_to_driver(lane_kind k, std::string_view body) {
  std::lock_guard<std::mutex> lock(in_mtx_);
  ring& r = to_driver(base_);
  std::byte* data = to_driver_data(base_);
  std::size_t sent = 0;
  for (;;) {
    const std::size_t n = std::min(max_fragment, body.size() - sent);
    const bool last = sent + n == body.size();
    while (!try_write(r, data, k, last, body.substr(sent, n))) {
      // Full: let the driver read what is there, and wait for room.
      r.producer_waiting.store(1, std::memory_order_seq_cst);
      const auto seen = r.consumed.load(std::memory_order_seq_cst);
      if (try_write(r, data, k, last, body.substr(sent, n))) {
        r.producer_waiting.store(0, std::memory_order_relaxed);
        break;
      }
      ring_bell(bell_);
      futex_wait_shared(r.consumed, seen, now_ns() + 100'000'000);
      r.producer_waiting.store(0, std::memory_order_relaxed);
    }
    sent += n;
    if (last)
      break;
  }
  ring_bell(bell_);
}

bool lane::take_from_driver(lane_kind& k, std::string& body, std::int64_t spin_ns) {
  ring& r = to_worker(base_);
  std::byte* data = to_worker_data(base_);
  const std::int64_t spin_until = now_ns() + spin_ns;
  for (;;) {
    if (read_message(r, data, k, body, false))
      return true;
    if (corrupt_)
      return false;
    if (now_ns() < spin_until) {
      for (int i = 0; i < 64; ++i)
        cpu_relax();
      continue;
    }
    r.consumer_sleeping.store(1, std::memory_order_seq_cst);
    const auto seen = r.published.load(std::memory_order_seq_cst);
    if (r.head.load(std::memory_order_acquire) == r.tail.load(std::memory_order_relaxed))
      futex_wait_shared(r.published, seen, 0);
    r.consumer_sleeping.store(0, std::memory_order_relaxed);
  }
}

} // namespace weft::detail
