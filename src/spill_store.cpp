#include "spill_store.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <system_error>
#include <unistd.h>

#include <filesystem>

#include "weft/array.hpp"
#include "weft/errors.hpp"

namespace weft::detail {

std::atomic<bool (*)()> test_fail_spill_add_ref{nullptr};

std::string untakeable_message(const char* what) {
  return std::string("weft: ") + what +
         " hands over a spill file this process could not open (out of file descriptors or memory), so it was "
         "dropped unread";
}

namespace {

using u64 = std::uint64_t;

constexpr u64 spill_magic = 0x316c'6c69'7073'7466; // "ftspill1"
constexpr u64 spill_bit = u64{1} << 63;
constexpr u64 low_bits = 63; // clear in a reference: arena offsets and ledger slots want even numbers

static_assert(std::atomic_ref<u64>::is_always_lock_free, "refcounts are shared between processes");

// A file's first bytes (the rest of its 4 KiB header is unused).
struct file_header {
  u64 magic;
  u64 ref;   ///< the reference that names it
  u64 bytes; ///< of data, after the header
  u64 refs;  ///< shared reference count (atomic_ref)
};

std::atomic_ref<u64> refs_of(std::byte* base) noexcept {
  return std::atomic_ref<u64>(reinterpret_cast<file_header*>(base)->refs);
}

std::string name_of(u64 ref) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(ref));
  return buf;
}

bool is_spill_name(const std::string& name) {
  if (name.size() != 16)
    return false;
  for (char c : name)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
      return false;
  return true;
}

u64 new_ref() {
  u64 r = 0;
  if (::getrandom(&r, sizeof r, 0) != static_cast<ssize_t>(sizeof r)) {
    // (no entropy: the pid and a clock; O_EXCL catches a clash)
    r = (static_cast<u64>(::getpid()) << 32) ^
        static_cast<u64>(std::chrono::steady_clock::now().time_since_epoch().count());
  }
  return (r | spill_bit) & ~low_bits;
}

/// The pid in a directory name `weft-spill-<pid>-<12 hex digits>`, or 0.
pid_t spill_directory_pid(const std::string& name) {
  static constexpr char prefix[] = "weft-spill-";
  constexpr std::size_t n = sizeof prefix - 1;
  if (name.size() < n + 2 + 12 || name.compare(0, n, prefix) != 0 || name[name.size() - 13] != '-')
    return 0;
  long long pid = 0;
  for (std::size_t i = n; i < name.size() - 13; ++i) {
    if (name[i] < '0' || name[i] > '9' || pid > 1'000'000'000)
      return 0;
    pid = pid * 10 + (name[i] - '0');
  }
  for (std::size_t i = name.size() - 12; i < name.size(); ++i)
    if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
      return 0;
  return static_cast<pid_t>(pid);
}

/// Removes the spill directories in `parent` that drivers killed with
/// SIGKILL left behind: ours (owner, mode 0700), named after a pid that no
/// longer runs. Only spill files are removed; a directory holding anything
/// else stays. (A pid reused since is taken as alive: it stays too.)
void remove_stale_directories(const std::string& parent) noexcept {
  const int pfd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (pfd < 0)
    return;
  try {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(parent, ec)) {
      const std::string name = e.path().filename().string();
      const pid_t pid = spill_directory_pid(name);
      if (pid <= 0 || ::kill(pid, 0) == 0 || errno != ESRCH)
        continue;
      const int fd = ::openat(pfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0)
        continue;
      struct stat st {};
      if (::fstat(fd, &st) == 0 && st.st_uid == ::geteuid() && (st.st_mode & 077) == 0) {
        std::error_code inner;
        for (const auto& f : std::filesystem::directory_iterator(e.path(), inner))
          if (is_spill_name(f.path().filename().string()))
            ::unlinkat(fd, f.path().filename().c_str(), 0);
        ::unlinkat(pfd, name.c_str(), AT_REMOVEDIR); // (fails if anything else is in it)
      }
      ::close(fd);
    }
  } catch (...) { // (bad_alloc)
  }
  ::close(pfd);
}

} // namespace

spill_store::spill_store(std::string dir, bool owner) noexcept : dir_(std::move(dir)), owner_(owner) {}

std::unique_ptr<spill_store> spill_store::create(const std::string& parent) {
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  if (ec || !std::filesystem::is_directory(parent, ec))
    throw error("weft: object spill directory: cannot create " + parent + ": " +
                (ec ? ec.message() : std::string("not a directory")));
  remove_stale_directories(parent);
  // Named now, made at the first spill: a node that never spills leaves
  // nothing behind, even when it is killed.
  u64 suffix = new_ref();
  char buf[13];
  std::snprintf(buf, sizeof buf, "%012llx", static_cast<unsigned long long>((suffix >> 6) & 0xffff'ffff'ffffULL));
  return std::unique_ptr<spill_store>(
    new spill_store(parent + "/weft-spill-" + std::to_string(::getpid()) + "-" + buf, true));
}

std::unique_ptr<spill_store> spill_store::open(const std::string& directory) {
  return std::unique_ptr<spill_store>(new spill_store(directory, false));
}

spill_store::~spill_store() {
  remove_directory();
  if (const int fd = dir_fd_.load(std::memory_order_acquire); fd >= 0)
    ::close(fd);
}

int spill_store::dir_fd(bool make) const noexcept {
  int fd = dir_fd_.load(std::memory_order_acquire);
  if (fd >= 0)
    return fd;
  std::lock_guard<std::mutex> lock(mtx_);
  fd = dir_fd_.load(std::memory_order_relaxed);
  if (fd >= 0)
    return fd;
  if (make && ::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST)
    return -1;
  fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return -1;
  // Ours alone (whoever made it: the driver or one of its workers).
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    ::close(fd);
    errno = EPERM;
    return -1;
  }
  dir_fd_.store(fd, std::memory_order_release);
  return fd;
}

void spill_store::remove_directory() noexcept {
  if (!owner_)
    return;
  const int fd = dir_fd(false);
  if (fd < 0)
    return; // never made (or not ours)
  try {
    // Files left: arrays still alive, or leaked by a death.
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir_, ec))
      if (is_spill_name(e.path().filename().string()))
        ::unlinkat(fd, e.path().filename().c_str(), 0);
  } catch (...) { // (bad_alloc)
  }
  ::rmdir(dir_.c_str());
}

spill_store::mapping spill_store::create_file(std::size_t bytes) {
  const std::size_t length = header_bytes + bytes;
  u64 ref = 0;
  std::string name;
  int fd = -1;
  const int dir = dir_fd(true);
  for (int attempt = 0; dir >= 0 && attempt < 16 && fd < 0; ++attempt) {
    ref = new_ref();
    name = name_of(ref);
    fd = ::openat(dir, name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 && errno != EEXIST)
      break;
  }
  auto fail = [&](const std::string& what) {
    const std::string why = what + ": " + std::strerror(errno);
    if (fd >= 0) {
      ::close(fd);
      ::unlinkat(dir, name.c_str(), 0);
    }
    throw object_store_full_error("weft: the shared-memory object store is full, and an array of " +
                                  std::to_string(bytes) + " bytes cannot be spilled to " + dir_ + " (" + why +
                                  "); free disk space there, set config.object_spill_directory, or raise "
                                  "config.object_store_memory");
  };
  if (dir < 0)
    fail("cannot make the directory");
  if (fd < 0)
    fail("cannot create a file");
  // Reserved now, so that a full disk fails here and not as SIGBUS when
  // the array is written.
  if (::fallocate(fd, 0, 0, static_cast<off_t>(length)) != 0) {
    if (errno != EOPNOTSUPP || ::ftruncate(fd, static_cast<off_t>(length)) != 0)
      fail("cannot reserve " + std::to_string(length) + " bytes");
  }
  void* base = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED)
    fail("mmap");
  ::close(fd);
  fd = -1;
  auto* h = static_cast<file_header*>(base);
  h->magic = spill_magic;
  h->ref = ref;
  h->bytes = bytes;
  refs_of(static_cast<std::byte*>(base)).store(1, std::memory_order_release);
  return {ref, static_cast<std::byte*>(base), length};
}

spill_store::mapping spill_store::map(std::uint64_t ref, std::size_t bytes, bool header_only) const {
  auto refuse = [ref](const std::string& why) {
    throw serialization_error("weft::array: reference 0x" + name_of(ref) +
                              " names no live spill file of this node (corrupt input): " + why);
  };
  if (!is_spill_reference(ref) || (ref & low_bits) != 0)
    refuse("not a spill reference");
  const std::string name = name_of(ref);
  // Only a name made of the reference's hex digits, only in the directory,
  // never through a link; O_NONBLOCK: a FIFO put there must not block us.
  const int dir = dir_fd(false);
  if (dir < 0)
    refuse(std::string("no spill directory ") + dir_ + ": " + std::strerror(errno));
  const int fd = ::openat(dir, name.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0)
    refuse(std::string("cannot open ") + dir_ + "/" + name + ": " + std::strerror(errno));
  struct stat st {};
  file_header h{};
  const bool ok = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
                  static_cast<std::size_t>(st.st_size) >= header_bytes &&
                  ::pread(fd, &h, sizeof h, 0) == static_cast<ssize_t>(sizeof h) && h.magic == spill_magic &&
                  h.ref == ref && h.bytes >= bytes && h.bytes == static_cast<u64>(st.st_size) - header_bytes;
  if (!ok) {
    ::close(fd);
    refuse("not a spill file of this node, or of another size");
  }
  const std::size_t length = header_only ? header_bytes : static_cast<std::size_t>(st.st_size);
  void* base = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (base == MAP_FAILED)
    refuse(std::string("mmap: ") + std::strerror(errno));
  if (refs_of(static_cast<std::byte*>(base)).load(std::memory_order_acquire) == 0) {
    ::munmap(base, length);
    refuse("its last reference is gone");
  }
  return {ref, static_cast<std::byte*>(base), length};
}

spill_store::mapping spill_store::open_file(std::uint64_t ref, std::size_t bytes, bool adopt) {
  mapping m = map(ref, bytes, false);
  if (!adopt)
    add_ref(m); // the sender keeps its own until we are done with it
  return m;
}

void spill_store::add_ref(const mapping& m) noexcept { refs_of(m.base).fetch_add(1, std::memory_order_relaxed); }

void spill_store::release(const mapping& m) noexcept {
  auto refs = refs_of(m.base);
  u64 r = refs.load(std::memory_order_acquire);
  while (r > 0 && !refs.compare_exchange_weak(r, r - 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
  }
  if (r == 1) // the last: no one else can reach the file any more
    ::unlinkat(dir_fd(false), name_of(m.ref).c_str(), 0);
  unmap(m);
}

void spill_store::unmap(const mapping& m) noexcept { ::munmap(m.base, m.length); }

void spill_store::release(std::uint64_t ref) noexcept {
  try {
    release(map(ref, 0, true));
  } catch (...) { // names no live spill file: nothing to release
  }
}

bool spill_store::add_ref(std::uint64_t ref) noexcept {
  if (auto* hook = test_fail_spill_add_ref.load(std::memory_order_relaxed); hook && hook())
    return false;
  errno = 0;
  try {
    const mapping m = map(ref, 0, true);
    add_ref(m);
    unmap(m);
    return true;
  } catch (...) {
    const int why = errno; // (map() throws right after the call that failed)
    // Names no live spill file: nothing to add to. Out of descriptors or
    // memory: the file may well be live, and the caller must know.
    return why != EMFILE && why != ENFILE && why != ENOMEM;
  }
}

std::size_t spill_store::files() const {
  std::size_t n = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec))
    if (is_spill_name(e.path().filename().string()))
      ++n;
  return n;
}

} // namespace weft::detail
