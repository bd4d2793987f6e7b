// Private: how object_refs travel between the driver and its workers.
//
// An object_ref crosses a process as its object's id (ids are unique on the
// node: each worker numbers its objects in a range of its own). Whoever
// writes a message installs a codec for the scope of the encode; whoever
// reads one installs a codec that knows the objects the message carries.
//
//  - Driver -> worker: the driver's collector gathers the cells a message
//    carries. When the message goes to worker W, the node counts them as
//    borrowed by W (their cells stay alive in the node's table) and the
//    record lists their ids. W makes a *proxy* cell per id, which fetches
//    the value from the driver when someone waits for it, and tells the
//    driver when it let go (with how many of the driver's sends it saw).
//  - Worker -> driver: a ref to a proxy is sent as its id (the driver still
//    counts it as borrowed by W); a ref to an object of the worker's own
//    (put there, or a nested task's result) is *exported*: its value (or
//    error) travels with the message, and the driver makes a cell of its
//    own for it, with the same id. The message lists these in a bundle,
//    which the driver resolves to cells as soon as it reads the message.
#pragma once

#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "weft/detail/object_state.hpp"
#include "weft/serialization.hpp"

namespace weft::detail {

/// A ref a message carries: the cell (kept alive) and its type's ops.
struct carried_ref {
  object_ptr cell;
  ref_ops_fn ops = nullptr;
};

/// The codec of the message being written or read on this thread.
class ref_codec {
public:
  virtual std::uint64_t encode(object_state* cell, ref_ops_fn ops) = 0;
  virtual object_ptr decode(std::uint64_t id, ref_ops_fn ops) = 0;

protected:
  ~ref_codec() = default;
};

/// Installs `codec` for this thread until the scope ends.
class ref_codec_scope {
public:
  explicit ref_codec_scope(ref_codec* codec) noexcept;
  ~ref_codec_scope();
  ref_codec_scope(const ref_codec_scope&) = delete;
  ref_codec_scope& operator=(const ref_codec_scope&) = delete;

private:
  ref_codec* before_;
};

/// The codec installed on this thread, or null.
ref_codec* current_ref_codec() noexcept;

/// Driver: gathers the refs a message being written carries.
class ref_collector final : public ref_codec {
public:
  std::vector<carried_ref> refs;
  std::uint64_t encode(object_state* cell, ref_ops_fn ops) override;
  object_ptr decode(std::uint64_t id, ref_ops_fn ops) override;
};

/// Driver: the refs a message from a worker carries, by id.
class ref_table final : public ref_codec {
public:
  std::unordered_map<std::uint64_t, carried_ref> refs;
  /// The store references the message hands over (packed offsets), for a
  /// reader that keeps its bytes undecoded and passes them on.
  std::string handed;
  std::uint64_t encode(object_state* cell, ref_ops_fn ops) override;
  object_ptr decode(std::uint64_t id, ref_ops_fn ops) override;
};

/// The ids of `refs`, packed (u64 each), as a record announces them.
std::string packed_ids(const std::vector<carried_ref>& refs);
/// Calls f(id) for each id packed in `ids`.
template <class F>
void for_each_packed_id(std::string_view ids, F&& f) {
  for (std::size_t i = 0; i + sizeof(std::uint64_t) <= ids.size(); i += sizeof(std::uint64_t)) {
    std::uint64_t id = 0;
    std::memcpy(&id, ids.data() + i, sizeof id);
    f(id);
  }
}

/// How a failure travels: a kind and a payload the other side turns back
/// into the same weft error type (task_error keeps type, message, chain;
/// worker_crashed_error its signal and exit code).
enum class error_kind : std::uint8_t { task_error = 1, crashed = 2, other = 3 };
error_kind encode_error(const std::exception_ptr& e, std::string& payload);
std::exception_ptr rebuild_error(error_kind kind, std::string_view payload);

} // namespace weft::detail
