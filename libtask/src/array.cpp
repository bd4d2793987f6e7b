// weft::array's storage: the heap, or the node's shared-memory store.
#include "weft/array.hpp"

#include <atomic>
#include <cstring>
#include <new>
#include <utility>

#include "../../src/node_store.hpp"
#include "../../src/shm_arena.hpp"

namespace weft::detail {

namespace {

/// The store arrays of this process go to (null: none, or not now), the
/// arena they may still live in (kept mapped for the life of the process:
/// arrays can outlive the runtime), and the size from which they go there.
std::atomic<shm_arena*> g_active{nullptr};
std::atomic<shm_arena*> g_arena{nullptr};
std::atomic<std::size_t> g_threshold{std::size_t{100} << 10};
thread_local bool tls_hand_over = false;
thread_local std::string* tls_handed = nullptr;

constexpr std::size_t heap_align = 64;

std::string mib(std::size_t bytes) { return std::to_string((bytes + (1u << 20) - 1) >> 20) + " MiB"; }

} // namespace

void set_node_store(shm_arena* arena, std::size_t threshold) noexcept {
  if (arena)
    g_arena.store(arena, std::memory_order_release);
  g_threshold.store(threshold, std::memory_order_relaxed);
  g_active.store(arena, std::memory_order_release);
}

shm_arena* node_store() noexcept { return g_active.load(std::memory_order_acquire); }

struct array_block::heap_header {
  std::atomic<std::uint32_t> refs{1};
};
static_assert(sizeof(std::atomic<std::uint32_t>) <= heap_align);

array_block array_block::allocate(std::size_t bytes) {
  array_block b;
  b.size_ = bytes;
  shm_arena* store = g_active.load(std::memory_order_acquire);
  if (store && bytes >= g_threshold.load(std::memory_order_relaxed)) {
    const std::uint64_t offset = store->allocate(bytes);
    if (offset == 0)
      throw object_store_full_error("weft: the shared-memory object store is full: an array of " +
                                    std::to_string(bytes) + " bytes does not fit (" + mib(store->bytes_in_use()) +
                                    " of " + mib(store->capacity()) +
                                    " in use; raise config.object_store_memory, or drop references to arrays no "
                                    "longer needed; spilling to disk is not implemented)");
    b.offset_ = offset;
    b.data_ = store->data(offset);
    return b;
  }
  void* p = ::operator new (heap_align + bytes, std::align_val_t{heap_align});
  b.heap_ = ::new (p) heap_header;
  b.data_ = static_cast<std::byte*>(p) + heap_align;
  return b;
}

array_block array_block::from_store(std::uint64_t offset, std::size_t bytes, bool adopt) {
  shm_arena* arena = g_arena.load(std::memory_order_acquire);
  if (!arena)
    throw serialization_error("weft::array: the input names an object in a node's shared-memory store, but this "
                              "process has none (it is not part of a worker-process node)");
  if (!arena->valid(offset, bytes))
    throw serialization_error("weft::array: offset " + std::to_string(offset) +
                              " does not name a live object of at least " + std::to_string(bytes) +
                              " bytes in the node's shared-memory store (corrupt input)");
  if (!adopt)
    arena->add_ref(offset); // the sender keeps its own until we are done with it
  array_block b;
  b.size_ = bytes;
  b.offset_ = offset;
  b.data_ = arena->data(offset);
  return b;
}

array_block::array_block(const array_block& o) noexcept :
  data_(o.data_),
  size_(o.size_),
  offset_(o.offset_),
  heap_(o.heap_) {
  if (heap_)
    heap_->refs.fetch_add(1, std::memory_order_relaxed);
  else if (offset_)
    g_arena.load(std::memory_order_acquire)->add_ref(offset_);
}

array_block::~array_block() {
  if (heap_) {
    if (heap_->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      heap_->~heap_header();
      ::operator delete (static_cast<void*>(heap_), std::align_val_t{heap_align});
    }
  } else if (offset_) {
    g_arena.load(std::memory_order_acquire)->release(offset_);
  }
}

void array_block::add_reference_for_receiver() const noexcept {
  if (!offset_)
    return;
  g_arena.load(std::memory_order_acquire)->add_ref(offset_);
  if (tls_handed)
    tls_handed->append(reinterpret_cast<const char*>(&offset_), sizeof offset_);
}

std::string* collect_handed_references(std::string* into) noexcept { return std::exchange(tls_handed, into); }

void release_handed_references(std::string_view offsets) noexcept {
  shm_arena* arena = g_arena.load(std::memory_order_acquire);
  if (!arena)
    return;
  for (std::size_t i = 0; i + sizeof(std::uint64_t) <= offsets.size(); i += sizeof(std::uint64_t)) {
    std::uint64_t offset = 0;
    std::memcpy(&offset, offsets.data() + i, sizeof offset);
    if (arena->valid(offset, 0))
      arena->release(offset);
  }
}

bool arrays_hand_over_references() noexcept { return tls_hand_over; }

hand_over_references::hand_over_references() noexcept : before_(tls_hand_over) { tls_hand_over = true; }

hand_over_references::~hand_over_references() { tls_hand_over = before_; }

} // namespace weft::detail
