// weft::array's storage: the heap, or the node's shared-memory store.
#include "weft/array.hpp"

#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <unordered_map>
#include <utility>

#include "../../src/node_store.hpp"
#include "../../src/shm_arena.hpp"
#include "../../src/spill_store.hpp"
#include "../../src/store_ledger.hpp"

namespace weft::detail {

namespace {

/// The store arrays of this process go to (null: none, or not now), the
/// arena they may still live in (kept mapped for the life of the process:
/// arrays can outlive the runtime), and the size from which they go there.
std::atomic<shm_arena*> g_active{nullptr};
std::atomic<shm_arena*> g_arena{nullptr};
std::atomic<std::size_t> g_threshold{std::size_t{100} << 10};
/// Where arrays that do not fit in the store go (null: nowhere), and the
/// spill directory arrays may live in.
std::atomic<spill_store*> g_spill_active{nullptr};
std::atomic<spill_store*> g_spill{nullptr};
/// A worker's ledger of the references it holds (null in the driver).
std::atomic<store_ledger*> g_ledger{nullptr};
thread_local bool tls_hand_over = false;
thread_local std::string* tls_handed = nullptr;
thread_local bool tls_keep_handed = false;

/// A worker's references handed over and recorded in its ledger until
/// their receiver acknowledges them (keep_handed_in_ledger): their slots,
/// by reference (copies of one reference are interchangeable).
struct handed_slots {
  std::mutex mtx;
  std::unordered_multimap<std::uint64_t, store_ledger::slot*> slots;
};
handed_slots& g_handed_slots() {
  static auto* s = new handed_slots(); // (never freed: released from any thread until the process ends)
  return *s;
}

constexpr std::size_t heap_align = 64;

std::string mib(std::size_t bytes) { return std::to_string((bytes + (1u << 20) - 1) >> 20) + " MiB"; }

} // namespace

void set_node_store(shm_arena* arena, std::size_t threshold, spill_store* spill) noexcept {
  if (arena)
    g_arena.store(arena, std::memory_order_release);
  if (spill)
    g_spill.store(spill, std::memory_order_release);
  g_threshold.store(threshold, std::memory_order_relaxed);
  g_spill_active.store(spill, std::memory_order_release);
  g_active.store(arena, std::memory_order_release);
}

shm_arena* node_store() noexcept { return g_active.load(std::memory_order_acquire); }

std::size_t node_store_threshold() noexcept {
  return g_active.load(std::memory_order_acquire) ? g_threshold.load(std::memory_order_relaxed)
                                                  : static_cast<std::size_t>(-1);
}

spill_store* node_spill_store() noexcept { return g_spill_active.load(std::memory_order_acquire); }

void forget_spill_store() noexcept {
  g_spill_active.store(nullptr, std::memory_order_release);
  g_spill.store(nullptr, std::memory_order_release);
}

void set_store_ledger(store_ledger* ledger) noexcept { g_ledger.store(ledger, std::memory_order_release); }

store_ledger* node_store_ledger() noexcept { return g_ledger.load(std::memory_order_acquire); }

// Copies of an array made in one process share one holder, and through it
// one reference to a store block: copying an array touches no shared
// memory, and a worker's ledger records one slot per holder.
struct array_block::holder {
  std::atomic<std::uint64_t> copies{1};
  std::uint64_t ref = 0;              ///< the store reference held (0: a heap array, its bytes follow)
  store_ledger::slot* slot = nullptr; ///< where a worker's ledger records ref (null: not recorded)
  std::byte* map = nullptr;           ///< a spilled array: its file's mapping here
  std::size_t map_length = 0;
};
static_assert(sizeof(array_block::holder) <= heap_align);

namespace {

/// This process now holds store reference `ref` (raised already): a holder
/// for it, recorded in this worker's ledger. `h` is a fresh holder.
array_block::holder* hold(array_block::holder* h, std::uint64_t ref) noexcept {
  h->ref = ref;
  if (store_ledger* ledger = g_ledger.load(std::memory_order_acquire))
    h->slot = ledger->record(ref);
  return h;
}

/// The spill file mapping of a spilled array's holder.
spill_store::mapping mapping_of(const array_block::holder* h) noexcept { return {h->ref, h->map, h->map_length}; }

/// Releases one store reference (an arena offset or a spill file's) that
/// this process got from elsewhere: checked, since it may be garbage.
void release_reference(std::uint64_t ref) noexcept {
  if (spill_store::is_spill_reference(ref)) {
    if (spill_store* spill = g_spill.load(std::memory_order_acquire))
      spill->release(ref);
  } else if (shm_arena* arena = g_arena.load(std::memory_order_acquire); arena && arena->valid(ref, 0)) {
    arena->release(ref);
  }
}

} // namespace

array_block array_block::allocate(std::size_t bytes) {
  array_block b;
  b.size_ = bytes;
  shm_arena* store = g_active.load(std::memory_order_acquire);
  if (store && bytes >= g_threshold.load(std::memory_order_relaxed)) {
    auto h = std::make_unique<holder>();
    const std::uint64_t offset = store->allocate(bytes);
    if (offset == 0) {
      spill_store* spill = g_spill_active.load(std::memory_order_acquire);
      if (!spill)
        throw object_store_full_error("weft: the shared-memory object store is full: an array of " +
                                      std::to_string(bytes) + " bytes does not fit (" + mib(store->bytes_in_use()) +
                                      " of " + mib(store->capacity()) +
                                      " in use), and spilling is off (config.object_spilling); raise "
                                      "config.object_store_memory, or drop references to arrays no longer needed");
      const auto m = spill->create_file(bytes); // (throws object_store_full_error, saying why)
      h->map = m.base;
      h->map_length = m.length;
      b.holder_ = hold(h.release(), m.ref);
      b.offset_ = m.ref;
      b.data_ = m.data();
      return b;
    }
    b.holder_ = hold(h.release(), offset);
    b.offset_ = offset;
    b.data_ = store->data(offset);
    return b;
  }
  void* p = ::operator new (heap_align + bytes, std::align_val_t{heap_align});
  b.holder_ = ::new (p) holder;
  b.data_ = static_cast<std::byte*>(p) + heap_align;
  return b;
}

array_block array_block::from_store(std::uint64_t offset, std::size_t bytes, bool adopt) {
  if (spill_store::is_spill_reference(offset)) {
    spill_store* spill = g_spill.load(std::memory_order_acquire);
    if (!spill)
      throw serialization_error("weft::array: the input names an object spilled to a file, but this process has no "
                                "spill directory (spilling is off, or it is not part of a worker-process node)");
    auto h = std::make_unique<holder>();
    const auto m = spill->open_file(offset, bytes, adopt); // (throws serialization_error)
    h->map = m.base;
    h->map_length = m.length;
    array_block b;
    b.size_ = bytes;
    b.offset_ = offset;
    b.data_ = m.data();
    b.holder_ = hold(h.release(), offset);
    return b;
  }
  shm_arena* arena = g_arena.load(std::memory_order_acquire);
  if (!arena)
    throw serialization_error("weft::array: the input names an object in a node's shared-memory store, but this "
                              "process has none (it is not part of a worker-process node)");
  if (!arena->valid(offset, bytes))
    throw serialization_error("weft::array: offset " + std::to_string(offset) +
                              " does not name a live object of at least " + std::to_string(bytes) +
                              " bytes in the node's shared-memory store (corrupt input)");
  auto h = std::make_unique<holder>();
  if (!adopt)
    arena->add_ref(offset); // the sender keeps its own until we are done with it
  array_block b;
  b.size_ = bytes;
  b.offset_ = offset;
  b.data_ = arena->data(offset);
  b.holder_ = hold(h.release(), offset);
  return b;
}

array_block::array_block(const array_block& o) noexcept :
  data_(o.data_),
  size_(o.size_),
  offset_(o.offset_),
  holder_(o.holder_) {
  if (holder_)
    holder_->copies.fetch_add(1, std::memory_order_relaxed);
}

array_block::~array_block() {
  if (!holder_ || holder_->copies.fetch_sub(1, std::memory_order_acq_rel) != 1)
    return;
  if (holder_->ref == 0) {
    holder_->~holder();
    ::operator delete (static_cast<void*>(holder_), std::align_val_t{heap_align});
    return;
  }
  // Forgotten before it is released: a death in between leaks the
  // reference rather than have the driver release it twice.
  if (holder_->slot)
    g_ledger.load(std::memory_order_acquire)->forget(holder_->slot);
  if (holder_->map) {
    if (spill_store* spill = g_spill.load(std::memory_order_acquire))
      spill->release(mapping_of(holder_)); // (unmaps it)
    else
      spill_store::unmap(mapping_of(holder_)); // (its directory was removed, the file with it)
  } else {
    g_arena.load(std::memory_order_acquire)->release(holder_->ref);
  }
  delete holder_;
}

void array_block::add_reference_for_receiver() const {
  if (!offset_)
    return;
  // Listed first: out of memory there, the encoding fails with nothing
  // raised (whoever collects the list releases what it names).
  if (tls_handed)
    tls_handed->append(reinterpret_cast<const char*>(&offset_), sizeof offset_);
  if (holder_->map)
    spill_store::add_ref(mapping_of(holder_));
  else
    g_arena.load(std::memory_order_acquire)->add_ref(offset_);
  // Raised, then recorded (a death in between leaks it, never releases it
  // twice); kept until the receiver says it has its own.
  if (tls_keep_handed && tls_handed)
    if (store_ledger* ledger = g_ledger.load(std::memory_order_acquire))
      if (store_ledger::slot* s = ledger->record(offset_)) {
        auto& h = g_handed_slots();
        std::lock_guard<std::mutex> lock(h.mtx);
        try {
          h.slots.emplace(offset_, s);
        } catch (...) { // out of memory: not kept, so not recorded (a death then leaks it)
          ledger->forget(s);
        }
      }
}

std::string* collect_handed_references(std::string* into) noexcept { return std::exchange(tls_handed, into); }

void release_handed_references(std::string_view offsets) noexcept {
  store_ledger* ledger = g_ledger.load(std::memory_order_acquire);
  for (std::size_t i = 0; i + sizeof(std::uint64_t) <= offsets.size(); i += sizeof(std::uint64_t)) {
    std::uint64_t ref = 0;
    std::memcpy(&ref, offsets.data() + i, sizeof ref);
    if (ledger) { // forgotten before it is released
      store_ledger::slot* s = nullptr;
      {
        auto& h = g_handed_slots();
        std::lock_guard<std::mutex> lock(h.mtx);
        if (auto it = h.slots.find(ref); it != h.slots.end()) {
          s = it->second;
          h.slots.erase(it);
        }
      }
      if (s)
        ledger->forget(s);
    }
    release_reference(ref);
  }
}

void release_taken_references(std::string_view offsets) noexcept {
  for (std::size_t i = 0; i + sizeof(std::uint64_t) <= offsets.size(); i += sizeof(std::uint64_t)) {
    std::uint64_t ref = 0;
    std::memcpy(&ref, offsets.data() + i, sizeof ref);
    release_reference(ref);
  }
}

bool add_handed_references(std::string_view offsets) noexcept {
  for (std::size_t i = 0; i + sizeof(std::uint64_t) <= offsets.size(); i += sizeof(std::uint64_t)) {
    std::uint64_t ref = 0;
    std::memcpy(&ref, offsets.data() + i, sizeof ref);
    if (spill_store::is_spill_reference(ref)) {
      if (spill_store* spill = g_spill.load(std::memory_order_acquire); spill && !spill->add_ref(ref)) {
        release_taken_references(offsets.substr(0, i)); // all or none
        return false;
      }
    } else if (shm_arena* arena = g_arena.load(std::memory_order_acquire); arena && arena->valid(ref, 0)) {
      arena->add_ref(ref);
    }
  }
  return true;
}

keep_handed_in_ledger::keep_handed_in_ledger() noexcept : before_(tls_keep_handed) { tls_keep_handed = true; }

keep_handed_in_ledger::~keep_handed_in_ledger() { tls_keep_handed = before_; }

bool arrays_hand_over_references() noexcept { return tls_hand_over; }

hand_over_references::hand_over_references() noexcept : before_(tls_hand_over) { tls_hand_over = true; }

hand_over_references::~hand_over_references() { tls_hand_over = before_; }

} // namespace weft::detail
