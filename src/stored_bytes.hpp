// Private: big encoded values cross processes in the node's shared store.
//
// The arguments of a task and its result are encoded bytes. When they are
// at least config::object_store_threshold long, the sender copies them once
// into a block of the node's shared-memory store (a file of the spill
// directory when it is full) and the message carries the block's reference
// instead, as a weft::array<std::byte> would; the receiver decodes the value
// straight from the block, so a std::vector<T> argument reaches the task
// with one memcpy (Boost's array optimization: no per-element pass) and the
// lane carries a few dozen bytes instead of the value in pieces. The block
// is counted like an array's: the driver keeps its own reference to a
// task's argument block until the task is done (retries read it again), a
// worker hands its reference to a result block over to the driver, and a
// worker that dies is cleaned up after by its ledger.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "weft/array.hpp"

namespace weft::detail {

using stored_blob = weft::array<std::byte>;

/// When `bytes` is at least the store's threshold: copies them into a store
/// block and replaces them by its reference; returns the block, which the
/// sender keeps until the receiver holds a reference of its own. With
/// `hand_over`, the reference in the message is the receiver's (a worker
/// sending a result), and the block's offset is appended to the collector
/// of handed references, if any (array.hpp). An empty blob, and `bytes`
/// unchanged, when they are smaller or no block can be had.
stored_blob stash_big_bytes(std::string& bytes, bool hand_over);
/// The bytes `ref` (what stash_big_bytes left) names, alive while `keep`
/// is. Throws serialization_error for a reference that names no block.
std::string_view stashed_bytes(std::string_view ref, stored_blob& keep);

/// The same for a payload handed over with its block's reference the last
/// of `handed`: when it is refused, that reference is given back (unless
/// `keep` took it) before the error is thrown on.
std::string_view take_stashed_bytes(std::string_view ref, std::string_view handed, stored_blob& keep);

/// How many values this process put in the store this way, and read there.
struct stored_bytes_counts {
  std::uint64_t stashed = 0, read = 0;
};
stored_bytes_counts stored_bytes_count() noexcept;

} // namespace weft::detail
