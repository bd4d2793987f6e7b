// Private: the node's shared-memory object store arena.
//
// One arena per node: a memfd of `capacity` bytes that the driver creates and
// every worker process maps (the fd is inherited). Objects put in it are read
// in place by any process of the node, so a large result crosses no socket
// and is never copied. Each process maps the arena at its own address, so
// nothing inside it holds a pointer: blocks, free lists and the caller's
// handles are byte offsets from the start of the memfd.
//
// Any process allocates and frees. The allocator's state lives in the arena's
// first pages, under a process-shared robust pthread mutex, so a process that
// dies holding it (SIGKILL, a crash in the middle of an allocation) does not
// wedge the node: the next process to lock is told (EOWNERDEAD), rebuilds the
// free lists and counters from the blocks themselves, and goes on. Every step
// of an allocation or a free keeps the chain of block headers walkable (each
// header's size leads to the next header), which is all the rebuild needs.
// The rebuild runs in any process and may itself be interrupted by a death:
// it only ever writes what a later rebuild recomputes.
//
// Block refcounts are atomics in the block header: add_ref and release (but
// the last) take no lock. The last release takes the lock and drops the count
// to 0 under it, so a block at count 0 that is still marked allocated can
// only belong to a process that died inside the lock: the rebuild frees it.
// References held by a process that died are not found by the arena (it
// cannot know who held what); the object store's owner accounts for them.
//
// Allocator: two-level segregated fit (sizes in 64-byte granules, a power of
// two and 16 sub-ranges per level, bitmaps to find a non-empty list): O(1)
// allocate and free, whatever the size. Boundary tags (each header keeps the
// size of the block before it) make coalescing with both neighbours O(1).
// Nothing is written into a block's data, so allocating 1 GiB commits no
// pages. Freed ranges go back to the kernel (fallocate punch-hole) once a
// free block's not-yet-returned range reaches punch_threshold; smaller ones
// stay committed so that churn of small objects does not page-fault. The
// last release of a large block punches its pages before taking the lock:
// giving back 1 GiB of written pages takes ~150 ms, which no other process
// should wait for.
//
// Reading a block header of a garbage offset (valid()) commits the page it
// lies in, as any read of a hole in a memfd does; that page stays until its
// range is allocated and freed again.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace weft::detail {

class shm_arena {
public:
  /// Data offsets are multiples of this; block headers take as much.
  static constexpr std::size_t alignment = 64;
  /// A free block whose committed, unreturned range reaches this many bytes
  /// gives its pages back to the kernel.
  static constexpr std::size_t punch_threshold = std::size_t{4} << 20;

  /// A new arena of `capacity` bytes (rounded up to pages; at least 1 MiB).
  /// Throws weft::error naming the syscall and errno on failure.
  static std::unique_ptr<shm_arena> create(std::size_t capacity);
  /// Maps the arena another process created, inherited as `fd` (takes
  /// ownership of fd, closed on failure too). Throws weft::error if `fd` is
  /// not such an arena (seals, magic, version, layout and size are checked).
  static std::unique_ptr<shm_arena> attach(int fd);

  ~shm_arena(); ///< unmaps, closes its fd
  shm_arena(const shm_arena&) = delete;
  shm_arena& operator=(const shm_arena&) = delete;

  int fd() const noexcept { return fd_; }
  std::size_t capacity() const noexcept { return capacity_; }
  /// The largest allocation the arena could satisfy when empty.
  std::size_t max_allocation() const noexcept;

  /// A block of `bytes` (data 64-byte aligned, zero bytes allowed) with
  /// refcount 1: the data's offset, or 0 when no free range is large enough
  /// (the caller turns that into object_store_full_error). The data is not
  /// cleared: a block reused from a freed one holds its old bytes.
  std::uint64_t allocate(std::size_t bytes);
  void add_ref(std::uint64_t data_offset) noexcept;
  /// Drops one reference; the last one frees the block (coalescing with free
  /// neighbours). Releasing a block whose count is already 0 does nothing.
  /// Only a holder may add_ref, so the last holder is the only one: the
  /// pages of a large block are discarded before the block is freed.
  void release(std::uint64_t data_offset) noexcept;
  std::byte* data(std::uint64_t data_offset) const noexcept { return base_ + data_offset; }
  /// Untrusted input (decoding bytes from another process): true when
  /// `data_offset` is the data of a live (refcount > 0, allocated) block of
  /// at least `bytes` bytes. Never crashes on garbage offsets: range and
  /// alignment are checked before a header is read, and headers carry a
  /// magic. A sanity check against mistakes, not a defence against a process
  /// that forges headers inside its own data.
  bool valid(std::uint64_t data_offset, std::size_t bytes) const noexcept;
  /// Refcount of a block (for tests and diagnostics; racy by nature).
  std::uint64_t ref_count(std::uint64_t data_offset) const noexcept;

  /// Sum of the allocated blocks' footprints: the size asked for rounded up
  /// to 64 bytes, plus the 64-byte header.
  std::size_t bytes_in_use() const noexcept;
  std::size_t blocks_in_use() const noexcept;
  /// How often a process found the lock's owner dead and rebuilt the state.
  std::uint64_t repairs() const noexcept;

  /// Walks every block under the lock and checks the whole structure (chain,
  /// boundary tags, no two free neighbours, free lists and bitmaps, counters):
  /// empty when sound, else what is wrong. O(blocks); for tests and debugging.
  std::string audit() const;

  /// Test hooks: a process that sets a crash point raises SIGKILL on itself
  /// when it reaches that point inside the lock (the setting is per process).
  enum class crash_point : int {
    none,
    alloc_unlinked,     ///< the chosen free block is off its list
    alloc_tail_written, ///< the split-off tail's header is written, the block not yet shrunk
    alloc_split,        ///< the block is shrunk, the tail not yet listed
    alloc_published,    ///< the block is marked allocated, counters not yet updated
    free_refs_zero,     ///< the count dropped to 0, the block still marked allocated
    free_marked,        ///< the block is marked free, not merged or listed
    free_merged_next,   ///< merged with the next block
    free_merged_prev,   ///< merged with the previous block
    free_punched,       ///< pages given back, the block not yet listed
    rebuild_merged,     ///< a rebuild (after another death) merged two free blocks
  };
  static void set_crash_point_for_test(crash_point p) noexcept;
  /// Takes the lock and raises SIGKILL on the calling process while holding it.
  [[noreturn]] void lock_and_die_for_test();

private:
  struct header;
  struct block;
  shm_arena(int fd, std::byte* base, std::size_t capacity, std::uint64_t heap_begin) noexcept;

  header& head() const noexcept { return *reinterpret_cast<header*>(base_); }
  block& blk(std::uint64_t offset) const noexcept { return *reinterpret_cast<block*>(base_ + offset); }

  bool lock() const noexcept; ///< false: the arena is unusable (state corrupt)
  void unlock() const noexcept;
  void rebuild() const noexcept;
  void insert_free(std::uint64_t b) const noexcept;
  void unlink_free(std::uint64_t b) const noexcept;
  std::uint64_t take_free(std::uint64_t need) const noexcept;
  void free_locked(std::uint64_t b) const noexcept;
  void punch(std::uint64_t b) const noexcept;
  void discard(std::uint64_t begin, std::uint64_t end) const noexcept;

  int fd_;
  std::byte* base_;
  std::size_t capacity_;
  /// Where blocks start (after the arena header); they end at capacity_.
  /// Kept here, checked once at attach, so that valid() trusts nothing the
  /// shared pages say about the bounds.
  std::uint64_t heap_begin_;
};

} // namespace weft::detail
