// Private: the references to the node's object store that a worker process
// holds, written where its driver can read them once it is dead.
//
// A block's refcount lives in shared memory, but who holds the references
// does not: a worker killed while it holds arrays would leave their counts
// up for good. So every worker keeps a ledger: a memfd that the driver
// creates for it (fd 5 of the worker), an array of 8-byte slots, one per
// reference the process holds (a weft::array and its copies inside one
// process share one reference; see array.cpp). When the worker is dead
// (reaped), the driver walks its ledger and releases every reference left.
//
// Crash consistency: a process raises a refcount before it records the
// reference, and forgets a reference before it releases it. A death between
// the two steps leaks one reference; it can never make the driver release a
// reference the worker did not hold (which could free a block in use).
//
// A slot holds a reference (a nonzero even number: an arena offset, or a
// spill file's id), or is empty: 0, or an odd link of the process's own
// free list (the driver skips both). Slots below the header's high-water
// mark have been used; the rest of the (sparse) file was never touched.
// Only the worker writes; the driver reads after the worker's death.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

namespace weft::detail {

/// Worker side: this process's ledger, mapped for the life of the process.
class store_ledger {
public:
  using slot = std::atomic<std::uint64_t>;
  /// Slots in a ledger the driver creates: references one process can hold
  /// at once (a sparse file of 32 MiB: only the slots used take memory).
  static constexpr std::size_t default_capacity = std::size_t{1} << 22;

  /// Maps the ledger the driver made, inherited as `fd` (closed here, on
  /// failure too). Throws weft::error if `fd` is not such a ledger.
  static std::unique_ptr<store_ledger> attach(int fd);
  ~store_ledger();
  store_ledger(const store_ledger&) = delete;
  store_ledger& operator=(const store_ledger&) = delete;

  /// Records `ref`, a reference this process now holds (raised before
  /// this call). Its slot, or null when the ledger is full: then the
  /// reference is not recorded and leaks if the process dies (logged once).
  /// Thread-safe.
  slot* record(std::uint64_t ref) noexcept;
  /// Forgets the reference in `s` (released after this call). Thread-safe.
  void forget(slot* s) noexcept;

  /// References recorded now (for tests and diagnostics).
  std::size_t held() const noexcept;

private:
  store_ledger(std::byte* base, std::size_t capacity, std::size_t mapped) noexcept;

  std::byte* base_;
  slot* high_water_; ///< in the header: slots below it have been used
  slot* slots_;
  std::size_t capacity_;
  std::size_t mapped_;
  std::mutex mtx_;
  std::uint64_t free_head_ = 0; ///< first free slot + 1 (0: none); under mtx_
  std::atomic<std::size_t> held_{0};
  std::atomic<bool> warned_{false};
};

/// Driver side: one worker's ledger, made before the worker starts. Its
/// destructor releases every reference the worker still held: it must run
/// only once that process is dead and reaped (whoever drops the last
/// shared_ptr: the worker's record, or a task the worker submitted).
class worker_ledger {
public:
  /// A new, empty ledger of `slots` slots; its fd is above 63,
  /// close-on-exec (the spawn copies it to fd 5 of the worker). Throws
  /// weft::error on failure.
  static std::shared_ptr<worker_ledger> create(std::size_t slots = store_ledger::default_capacity);
  ~worker_ledger();
  worker_ledger(const worker_ledger&) = delete;
  worker_ledger& operator=(const worker_ledger&) = delete;

  int fd() const noexcept { return fd_; }
  /// The references it lists now, as packed u64s (the worker must be dead).
  std::string references() const;

private:
  explicit worker_ledger(int fd) noexcept : fd_(fd) {}
  int fd_;
};

} // namespace weft::detail
