#include "store_ledger.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.hpp"
#include "weft/array.hpp"
#include "weft/errors.hpp"

namespace weft::detail {

namespace {

constexpr std::uint64_t ledger_magic = 0x3172'6764'656c'7466; // "ftledgr1"
constexpr std::size_t header_bytes = 64;
constexpr std::size_t max_slots = std::size_t{1} << 32;

constexpr std::size_t file_bytes(std::size_t slots) { return header_bytes + slots * sizeof(store_ledger::slot); }

static_assert(sizeof(store_ledger::slot) == sizeof(std::uint64_t) && std::atomic<std::uint64_t>::is_always_lock_free);

[[noreturn]] void throw_sys(const std::string& what) {
  throw error("weft: object store ledger: " + what + ": " + std::strerror(errno));
}

// The file's first 64 bytes; the slots follow.
struct ledger_header {
  std::uint64_t magic;
  std::uint64_t slots;
  std::atomic<std::uint64_t> high_water; ///< slots below it have been used
};
static_assert(sizeof(ledger_header) <= header_bytes);

} // namespace

store_ledger::store_ledger(std::byte* base, std::size_t capacity, std::size_t mapped) noexcept :
  base_(base),
  high_water_(&reinterpret_cast<ledger_header*>(base)->high_water),
  slots_(reinterpret_cast<slot*>(base + header_bytes)),
  capacity_(capacity),
  mapped_(mapped) {}

store_ledger::~store_ledger() { ::munmap(base_, mapped_); }

std::unique_ptr<store_ledger> store_ledger::attach(int fd) {
  struct stat st {};
  std::uint64_t head[2] = {}; // magic, slots
  void* base = MAP_FAILED;
  std::size_t size = 0;
  if (::fstat(fd, &st) == 0 && ::pread(fd, head, sizeof head, 0) == static_cast<ssize_t>(sizeof head) &&
      head[0] == ledger_magic && head[1] > 0 && head[1] <= max_slots &&
      static_cast<std::size_t>(st.st_size) == file_bytes(head[1])) {
    size = file_bytes(head[1]);
    base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  } else {
    errno = EINVAL;
  }
  const int saved = errno;
  ::close(fd);
  if (base == MAP_FAILED) {
    errno = saved;
    throw_sys("fd " + std::to_string(fd) + " is not a ledger");
  }
  if (static_cast<const ledger_header*>(base)->high_water.load(std::memory_order_relaxed) != 0) {
    ::munmap(base, size);
    throw error("weft: object store ledger: fd " + std::to_string(fd) + " is not a new ledger");
  }
  return std::unique_ptr<store_ledger>(new store_ledger(static_cast<std::byte*>(base), head[1], size));
}

store_ledger::slot* store_ledger::record(std::uint64_t ref) noexcept {
  std::uint64_t i = 0;
  {
    std::lock_guard<std::mutex> lock(mtx_);
    if (free_head_ != 0) {
      i = free_head_ - 1;
      free_head_ = slots_[i].load(std::memory_order_relaxed) >> 1;
    } else {
      i = high_water_->load(std::memory_order_relaxed);
      if (i == capacity_) {
        if (!warned_.exchange(true))
          log().warn("weft: this worker holds {} references to the object store, all its ledger has room for: "
                     "the ones it takes from now on are not recorded, and stay allocated if it dies",
                     capacity_);
        return nullptr;
      }
      // Raised before the slot is written: the driver reads the slots
      // below it.
      high_water_->store(i + 1, std::memory_order_release);
    }
  }
  // Release: the refcount the caller raised is ordered before the record.
  slots_[i].store(ref, std::memory_order_release);
  held_.fetch_add(1, std::memory_order_relaxed);
  return &slots_[i];
}

void store_ledger::forget(slot* s) noexcept {
  const auto i = static_cast<std::uint64_t>(s - slots_);
  held_.fetch_sub(1, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(mtx_);
  // An odd link replaces the reference in one store, which the caller's
  // release of the reference (a release operation) comes after.
  s->store((free_head_ << 1) | 1, std::memory_order_release);
  free_head_ = i + 1;
}

std::size_t store_ledger::held() const noexcept { return held_.load(std::memory_order_relaxed); }

std::shared_ptr<worker_ledger> worker_ledger::create(std::size_t slots) {
  if (slots == 0 || slots > max_slots)
    throw error("weft: object store ledger: " + std::to_string(slots) + " slots; expected 1 to " +
                std::to_string(max_slots));
  int fd = ::memfd_create("weft-worker-ledger", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0)
    throw_sys("memfd_create");
  auto fail = [&fd](const std::string& what) {
    const int saved = errno;
    ::close(fd);
    errno = saved;
    throw_sys(what);
  };
  // Sparse: only the header's page and the slots the worker uses take
  // memory. Sealed at its size, so that no one can make the driver's read
  // of it fault.
  if (::ftruncate(fd, static_cast<off_t>(file_bytes(slots))) != 0)
    fail("ftruncate");
  const std::uint64_t head[2] = {ledger_magic, slots};
  if (::pwrite(fd, head, sizeof head, 0) != static_cast<ssize_t>(sizeof head))
    fail("pwrite");
  if (::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
    fail("fcntl(F_ADD_SEALS)");
  // Above the fds a spawn writes (0-5), so that no dup2 of the spawn
  // overwrites it before it is copied to fd 5.
  const int high = ::fcntl(fd, F_DUPFD_CLOEXEC, 64);
  if (high < 0)
    fail("fcntl(F_DUPFD_CLOEXEC)");
  ::close(fd);
  return std::shared_ptr<worker_ledger>(new worker_ledger(high));
}

std::string worker_ledger::references() const {
  std::string out;
  // The size was sealed at creation; the header's count of slots is the
  // worker's to scribble on, so it is checked against the size.
  struct stat st {};
  void* base = MAP_FAILED;
  if (::fstat(fd_, &st) == 0 && static_cast<std::size_t>(st.st_size) > header_bytes)
    base = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_SHARED, fd_, 0);
  if (base == MAP_FAILED) {
    log().error("weft: cannot read a dead worker's object store ledger: {}", std::strerror(errno));
    return out;
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  const auto* head = static_cast<const ledger_header*>(base);
  const auto used = std::min<std::uint64_t>(head->high_water.load(std::memory_order_acquire),
                                            (size - header_bytes) / sizeof(store_ledger::slot));
  const auto* slots = reinterpret_cast<const store_ledger::slot*>(static_cast<const std::byte*>(base) + header_bytes);
  for (std::uint64_t i = 0; i < used; ++i) {
    const std::uint64_t ref = slots[i].load(std::memory_order_acquire);
    if (ref != 0 && ref % 2 == 0)
      out.append(reinterpret_cast<const char*>(&ref), sizeof ref);
  }
  ::munmap(base, size);
  return out;
}

worker_ledger::~worker_ledger() {
  try {
    const std::string refs = references();
    if (!refs.empty()) {
      log().debug("weft: releasing {} object store reference(s) a dead worker held",
                  refs.size() / sizeof(std::uint64_t));
      release_handed_references(refs);
    }
  } catch (...) { // (bad_alloc: the references leak)
  }
  ::close(fd_);
}

} // namespace weft::detail
