#include "stored_bytes.hpp"

#include <atomic>
#include <cstring>
#include <optional>
#include <span>

#include "node_store.hpp"
#include "weft/errors.hpp"
#include "weft/serialization.hpp"

namespace weft::detail {

namespace {
std::atomic<std::uint64_t> g_stashed{0}, g_read{0};
} // namespace

stored_bytes_counts stored_bytes_count() noexcept {
  return {g_stashed.load(std::memory_order_relaxed), g_read.load(std::memory_order_relaxed)};
}

stored_blob stash_big_bytes(std::string& bytes, bool hand_over) {
  if (bytes.size() < node_store_threshold())
    return {};
  stored_blob blob;
  try {
    blob = stored_blob::build(bytes.size(),
                              [&](std::span<std::byte> out) { std::memcpy(out.data(), bytes.data(), bytes.size()); });
  } catch (const object_store_full_error&) {
    return {}; // (spilling is off, or the disk is full: the bytes go inline)
  }
  if (!blob.in_shared_memory())
    return {};
  std::string ref;
  std::optional<hand_over_references> handed;
  if (hand_over)
    handed.emplace();
  encode_each(ref, blob);
  bytes = std::move(ref);
  g_stashed.fetch_add(1, std::memory_order_relaxed);
  return blob;
}

std::string_view stashed_bytes(std::string_view ref, stored_blob& keep) {
  decode_each(ref, keep);
  if (!keep.in_shared_memory())
    throw serialization_error("weft: a stored value's reference names no block of the shared store (corrupt input)");
  g_read.fetch_add(1, std::memory_order_relaxed);
  return {reinterpret_cast<const char*>(keep.data()), keep.size()};
}

std::string_view take_stashed_bytes(std::string_view ref, std::string_view handed, stored_blob& keep) {
  try {
    return stashed_bytes(ref, keep);
  } catch (...) {
    if (keep.empty() && handed.size() >= sizeof(std::uint64_t))
      release_handed_references(handed.substr(handed.size() - sizeof(std::uint64_t)));
    throw;
  }
}

} // namespace weft::detail
