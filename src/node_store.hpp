// Private: which shared-memory store weft::array uses in this process. The
// driver sets it at init in worker-process mode (and clears it at
// shutdown); a worker sets it when it starts. The arena itself stays
// mapped for the life of the process, since arrays may outlive the runtime.
#pragma once

#include <cstddef>

namespace weft::detail {

class shm_arena;
class spill_store;
class store_ledger;

/// Arrays of at least `threshold` bytes go to `arena` from now on; null:
/// every new array goes to the heap. Those that do not fit there go to a
/// file of `spill` (null: object_store_full_error); a spill store set once
/// stays in use for the arrays spilled to it until forget_spill_store().
void set_node_store(shm_arena* arena, std::size_t threshold, spill_store* spill = nullptr) noexcept;
/// The store new arrays go to, or null.
shm_arena* node_store() noexcept;
/// The size from which new arrays go to the store; SIZE_MAX without one.
std::size_t node_store_threshold() noexcept;
/// Where new arrays spill, or null.
spill_store* node_spill_store() noexcept;
/// Forgets the spill store (no array may live in it any more).
void forget_spill_store() noexcept;
/// Worker processes: from now on, the store references this process takes
/// are recorded in `ledger` (see store_ledger.hpp). Set once, at start.
void set_store_ledger(store_ledger* ledger) noexcept;
/// This worker's ledger, or null (the driver has none).
store_ledger* node_store_ledger() noexcept;

} // namespace weft::detail
