/// @file
/// weft::object_ref<T>: a typed future for an object in the object store
/// (Ray's ObjectRef). Returned at once by every remote call and by put();
/// weft::get() waits for the value. Refs are cheap values: copying one keeps
/// the object alive, and the object is freed when the last ref (and the last
/// pending task that needs it) is gone. Copies may be used from any thread.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <type_traits>

#include "weft/detail/object_state.hpp"

namespace weft {

std::string to_string(object_id id);

template <class T>
class object_ref {
public:
  using value_type = T;

  /// An invalid ref (valid() is false); get() on it throws invalid_argument_error.
  object_ref() noexcept = default;

  /// Internal: adopt a cell.
  explicit object_ref(detail::object_ptr cell) noexcept : cell_(std::move(cell)) {}

  /// False for a default-constructed or moved-from ref.
  bool valid() const noexcept { return static_cast<bool>(cell_); }
  /// The object's id; object_id{} for an invalid ref.
  object_id id() const noexcept { return cell_ ? cell_->id() : object_id{}; }
  /// True when the object holds its value or error. Does not block.
  bool is_ready() const noexcept {
    if (!cell_)
      return false;
    if (cell_->done())
      return true;
    cell_->want(); // a ref a worker process was lent: ask for its value (once)
    return false;
  }

  /// Internal: the cell, or null.
  detail::object_state* cell() const noexcept { return cell_.get(); }

  /// Refs to the same object (the same id; invalid refs are all equal).
  friend bool operator==(const object_ref& a, const object_ref& b) noexcept { return a.id() == b.id(); }

private:
  detail::object_ptr cell_;
};

template <class T>
struct is_object_ref : std::false_type {};
template <class T>
struct is_object_ref<object_ref<T>> : std::true_type {};
template <class T>
inline constexpr bool is_object_ref_v = is_object_ref<std::remove_cvref_t<T>>::value;

static_assert(std::is_nothrow_move_constructible_v<object_ref<int>>);
static_assert(std::is_nothrow_move_assignable_v<object_ref<int>>);
static_assert(std::is_copy_constructible_v<object_ref<int>>);

} // namespace weft

template <class T>
struct std::hash<weft::object_ref<T>> {
  std::size_t operator()(const weft::object_ref<T>& r) const noexcept {
    return std::hash<std::uint64_t>{}(r.id().value);
  }
};
