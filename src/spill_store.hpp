// Private: arrays spilled to disk when the node's shared-memory store is full.
//
// A weft::array is read in place through raw pointers, so a block in use
// can never move out of the arena. Instead, an array that does not fit in
// the arena is created in a file of the node's spill directory, which every
// process that reads it maps MAP_SHARED: it still crosses processes without
// a copy (as a reference naming the file), and the page cache decides which
// of its pages stay in memory. Each file starts with a 4 KiB header holding
// its reference count (an atomic, shared like an arena block's); the last
// release unlinks the file.
//
// A spill reference is a u64 with bit 63 set and its low 6 bits clear (an
// arena offset never has bit 63; both are even, as a worker's ledger wants);
// its file is named by its 16 hex digits, inside the directory only. Decoding
// untrusted bytes never opens anything but such a name there, with
// O_NOFOLLOW, and checks the file's type, size and header before using it.
//
// The driver names the directory (weft-spill-<pid>-<48 random bits>) inside
// the configured parent and tells workers its path at start; whichever
// process spills first makes it (mode 0700; one that exists is used only
// if this user owns it and no one else may enter). The driver removes it,
// with any file left, when the spill store is destroyed.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

namespace weft::detail {

/// Fault injection for tests only: when set and returning true, a
/// spill_store::add_ref(ref) fails as if the process were out of file
/// descriptors.
extern std::atomic<bool (*)()> test_fail_spill_add_ref;

/// Why a message between processes is dropped unread when the receiver
/// could not take its references to the spill files it names (add_ref
/// false): `what` says what the message was ("a result").
std::string untakeable_message(const char* what);

class spill_store {
public:
  /// Bytes before an array's data in its file.
  static constexpr std::size_t header_bytes = 4096;

  /// Driver: names a new directory `weft-spill-<pid>-<random>` inside
  /// `parent` (made now if missing; the directory at the first spill).
  /// Throws weft::error when `parent` cannot be made.
  static std::unique_ptr<spill_store> create(const std::string& parent);
  /// Worker: the directory its driver named.
  static std::unique_ptr<spill_store> open(const std::string& directory);
  /// Closes the directory; the driver's also removes it (remove_directory).
  ~spill_store();
  spill_store(const spill_store&) = delete;
  spill_store& operator=(const spill_store&) = delete;

  static bool is_spill_reference(std::uint64_t ref) noexcept { return (ref >> 63) != 0; }
  const std::string& directory() const noexcept { return dir_; }

  /// A file mapped in this process: `base` (its header) for `length` bytes;
  /// the data follows the header.
  struct mapping {
    std::uint64_t ref = 0;
    std::byte* base = nullptr;
    std::size_t length = 0;
    std::byte* data() const noexcept { return base + header_bytes; }
  };
  /// A new file for `bytes` of data with reference count 1, mapped. Throws
  /// object_store_full_error (saying why) when it cannot be made.
  mapping create_file(std::size_t bytes);
  /// Maps the file `ref` names (untrusted input): `adopt`, the sender
  /// handed over one reference; else one is added. Throws
  /// serialization_error unless `ref` names a live spill file of this
  /// directory with at least `bytes` bytes of data.
  mapping open_file(std::uint64_t ref, std::size_t bytes, bool adopt);
  /// One more reference, taken by a holder of one (`m` is its mapping).
  static void add_ref(const mapping& m) noexcept;
  /// Drops the reference of mapping `m` and unmaps it; the last reference
  /// unlinks the file.
  void release(const mapping& m) noexcept;
  /// Only unmaps `m` (its directory is gone: nothing is left to unlink).
  static void unmap(const mapping& m) noexcept;
  /// Drops a reference without a mapping (handed-over or dead workers'
  /// references); ignores a `ref` that names no live spill file.
  void release(std::uint64_t ref) noexcept;
  /// Adds a reference without keeping a mapping (a handed-over reference
  /// whose sender keeps its own until told); ignores a `ref` that names no
  /// live spill file. False when the file could not be opened or mapped
  /// for want of file descriptors or memory: nothing was added.
  [[nodiscard]] bool add_ref(std::uint64_t ref) noexcept;

  /// Spill files in the directory now (for tests and diagnostics).
  std::size_t files() const;
  /// The driver's: removes the directory and the spill files left in it
  /// (arrays still mapped stay readable; their releases find no file).
  void remove_directory() noexcept;

private:
  spill_store(std::string dir, bool owner) noexcept;
  /// The directory, opened at first use (`make`: made if missing); -1
  /// with errno when it cannot be, or is not this user's alone.
  int dir_fd(bool make) const noexcept;
  /// Maps `ref`'s file: the whole of it, or its header only.
  mapping map(std::uint64_t ref, std::size_t bytes, bool header_only) const;

  std::string dir_;
  bool owner_;
  mutable std::mutex mtx_;
  mutable std::atomic<int> dir_fd_{-1};
};

} // namespace weft::detail
