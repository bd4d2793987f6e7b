// Private: which shared-memory store weft::array uses in this process. The
// driver sets it at init in worker-process mode (and clears it at
// shutdown); a worker sets it when it starts. The arena itself stays
// mapped for the life of the process, since arrays may outlive the runtime.
#pragma once

#include <cstddef>

namespace weft::detail {

class shm_arena;
class store_ledger;

/// Arrays of at least `threshold` bytes go to `arena` from now on; null:
/// every new array goes to the heap.
void set_node_store(shm_arena* arena, std::size_t threshold) noexcept;
/// The store new arrays go to, or null.
shm_arena* node_store() noexcept;
/// Worker processes: from now on, the store references this process takes
/// are recorded in `ledger` (see store_ledger.hpp). Set once, at start.
void set_store_ledger(store_ledger* ledger) noexcept;
/// This worker's ledger, or null (the driver has none).
store_ledger* node_store_ledger() noexcept;

} // namespace weft::detail
