/// @file
/// weft::array<T>: an immutable, contiguous array of a trivially copyable T,
/// with an optional shape — the type to use for big data (Ray's numpy arrays
/// in the plasma store).
///
///     auto a = weft::array<float>::build(1 << 28, [](std::span<float> out) {
///       for (std::size_t i = 0; i < out.size(); ++i) out[i] = float(i);
///     });                                   // 1 GiB, written in place once
///     auto r = weft::put(a);                // no copy
///     float s = weft::get(weft::remote(sum).remote(r));
///
/// Copies share the elements (a reference count): copying an array, putting
/// it, passing it to a task or returning it never copies them. In
/// worker-process mode an array of at least config::object_store_threshold
/// bytes lives in the node's shared-memory object store, and a worker reads
/// it where it is: getting a 1 GiB array in a worker costs what getting a
/// 1 KiB one costs. Smaller arrays, and every array in local mode, live on
/// the heap and are copied when they cross a process. The elements are
/// freed when the last copy anywhere (driver, any worker, any pending task
/// or object) is gone. When the store is full, a new array is spilled to a
/// file in config::object_spill_directory, mapped by every process that
/// reads it; with config::object_spilling off, creating it throws
/// object_store_full_error.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/serialization/binary_object.hpp>
#include <boost/serialization/vector.hpp>

#include "weft/errors.hpp"

namespace weft {

/// The node's shared-memory object store has no room for a new object
/// (config::object_store_memory), and it cannot be spilled to disk
/// (config::object_spilling is off, or the spill directory has no room).
/// The message says how much was asked for and why.
class object_store_full_error : public error {
public:
  using error::error;
};

namespace detail {

/// The bytes behind weft::array: counted, written once by their builder
/// and immutable after. In the node's shared-memory store (worker-process
/// mode, at least the threshold) or on the heap.
class array_block {
public:
  array_block() noexcept = default;
  /// `bytes` writable bytes, 64-byte aligned. Throws
  /// object_store_full_error when the shared store has no room.
  static array_block allocate(std::size_t bytes);
  /// Decoding: the shared-store block at `offset` (bytes from another
  /// process). `adopt`: the sender handed over one reference; else one is
  /// added. Throws serialization_error when there is no store here or the
  /// offset does not name a live block of at least `bytes` bytes.
  static array_block from_store(std::uint64_t offset, std::size_t bytes, bool adopt);

  array_block(const array_block& o) noexcept;
  array_block(array_block&& o) noexcept :
    data_(std::exchange(o.data_, nullptr)),
    size_(std::exchange(o.size_, 0)),
    offset_(std::exchange(o.offset_, 0)),
    holder_(std::exchange(o.holder_, nullptr)) {}
  array_block& operator=(array_block o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    std::swap(offset_, o.offset_);
    std::swap(holder_, o.holder_);
    return *this;
  }
  ~array_block();

  std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  /// In the node's store: its reference there, an offset in the
  /// shared-memory arena or (bit 63 set) a spill file's (0: on the heap).
  std::uint64_t store_offset() const noexcept { return offset_; }
  /// Encoding for a receiver that adopts: one more reference, owned by the
  /// bytes in flight. Throws std::bad_alloc, with nothing raised, when it
  /// cannot list it.
  void add_reference_for_receiver() const;

  /// This process's hold on the bytes, shared by the copies made here
  /// (defined in array.cpp).
  struct holder;

private:
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::uint64_t offset_ = 0;
  holder* holder_ = nullptr;
};

/// True while this thread encodes values whose receiver adopts their
/// shared-store references (a worker sending results: the worker's own
/// copies may be gone before the driver reads them).
bool arrays_hand_over_references() noexcept;
/// Worker processes: while set, the offsets of the references handed over
/// are appended to `*into` (so that a message dropped undecoded can give
/// them back). Returns the previous collector.
std::string* collect_handed_references(std::string* into) noexcept;
/// Releases references handed over in a message that will not be decoded
/// (packed u64 store offsets, as collected), or that its receiver has
/// acknowledged (see keep_handed_in_ledger).
void release_handed_references(std::string_view offsets) noexcept;
/// A receiver that acknowledges: takes references of its own to what a
/// message hands over (checked: the bytes came from another process). The
/// sender releases its references when told. All or none: false (and
/// none taken) when a spill file could not be opened for want of file
/// descriptors or memory; the receiver must then not read the message.
[[nodiscard]] bool add_handed_references(std::string_view offsets) noexcept;
/// Gives back references taken with add_handed_references for a message
/// that will not be read after all. Unlike release_handed_references it
/// forgets no ledger slot (none was kept for them; one of the same offset
/// may be another message's, still waiting for its acknowledgement).
void release_taken_references(std::string_view offsets) noexcept;
/// Worker processes: while alive, the references this thread hands over
/// stay in the worker's ledger until release_handed_references (the
/// driver's acknowledgement, or a record dropped before it was sent): a
/// message lost with the worker then gives them back when it is reaped.
/// Only for messages whose receiver acknowledges every reference they hand
/// over; a no-op in the driver.
class keep_handed_in_ledger {
public:
  keep_handed_in_ledger() noexcept;
  ~keep_handed_in_ledger();
  keep_handed_in_ledger(const keep_handed_in_ledger&) = delete;
  keep_handed_in_ledger& operator=(const keep_handed_in_ledger&) = delete;

private:
  bool before_;
};
/// Sets arrays_hand_over_references() for the scope.
class hand_over_references {
public:
  hand_over_references() noexcept;
  ~hand_over_references();
  hand_over_references(const hand_over_references&) = delete;
  hand_over_references& operator=(const hand_over_references&) = delete;

private:
  bool before_;
};

} // namespace detail

template <class T>
class array {
  static_assert(std::is_trivially_copyable_v<T> && !std::is_const_v<T> && !std::is_volatile_v<T> &&
                  !std::is_pointer_v<T>,
                "weft::array<T>: T must be a trivially copyable, non-const, non-pointer type (its bytes are shared "
                "between processes as they are); use std::vector<T> for other element types");

public:
  using value_type = T;
  using size_type = std::size_t;
  using const_iterator = const T*;
  using iterator = const T*; // immutable

  /// An empty array.
  array() noexcept = default;
  /// A copy of `values` (the only copy an array ever makes). `shape`, if
  /// given, must multiply out to values.size().
  explicit array(std::span<const T> values, std::vector<std::size_t> shape = {}) :
    array(build(
      values.size(), [&](std::span<T> out) { std::copy(values.begin(), values.end(), out.begin()); },
      std::move(shape))) {}
  array(std::initializer_list<T> values) : array(std::span<const T>(values.begin(), values.size())) {}
  explicit array(const std::vector<T>& values, std::vector<std::size_t> shape = {}) :
    array(std::span<const T>(values), std::move(shape)) {}

  /// An array of `n` elements written in place by `fill(std::span<T>)`
  /// (no other copy), then immutable. The elements are uninitialized until
  /// `fill` writes them.
  template <class Fill>
  static array build(std::size_t n, Fill&& fill, std::vector<std::size_t> shape = {}) {
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T))
      throw invalid_argument_error("weft::array: " + std::to_string(n) + " elements do not fit in memory");
    array a;
    a.shape_ = checked_shape(n, std::move(shape));
    a.block_ = detail::array_block::allocate(n * sizeof(T));
    a.size_ = n;
    fill(std::span<T>(reinterpret_cast<T*>(a.block_.data()), n));
    return a;
  }

  const T* data() const noexcept { return reinterpret_cast<const T*>(block_.data()); }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  const T& operator[](std::size_t i) const noexcept { return data()[i]; }
  /// Throws std::out_of_range past the end.
  const T& at(std::size_t i) const {
    if (i >= size_)
      throw std::out_of_range("weft::array::at(" + std::to_string(i) + "): the array has " + std::to_string(size_) +
                              " elements");
    return data()[i];
  }
  const T* begin() const noexcept { return data(); }
  const T* end() const noexcept { return data() + size_; }
  std::span<const T> span() const noexcept { return {data(), size_}; }
  /// The shape given at creation; {size()} if none was.
  std::vector<std::size_t> shape() const { return shape_.empty() ? std::vector<std::size_t>{size_} : shape_; }
  /// True when the elements live in the node's object store: in shared
  /// memory, or spilled to a file every process maps (and crosses
  /// processes without a copy either way).
  bool in_shared_memory() const noexcept { return block_.store_offset() != 0; }
  /// True when the store was full and the elements live in a file of the
  /// spill directory (config::object_spilling).
  bool spilled() const noexcept { return (block_.store_offset() >> 63) != 0; }
  std::vector<T> to_vector() const { return std::vector<T>(begin(), end()); }

  /// Same shape and the same bytes.
  friend bool operator==(const array& a, const array& b) noexcept {
    return a.size_ == b.size_ && a.shape() == b.shape() &&
           (a.size_ == 0 || a.data() == b.data() || std::memcmp(a.data(), b.data(), a.size_ * sizeof(T)) == 0);
  }

  /// Boost serialization (through weft's serializer). Shared-store arrays
  /// travel as a reference to the block; others as their bytes.
  template <class Archive>
  void serialize(Archive& ar, const unsigned int) {
    if constexpr (Archive::is_saving::value) {
      std::uint64_t n = size_;
      ar& n;
      ar& shape_;
      const bool by_reference = block_.store_offset() != 0;
      std::uint8_t how = !by_reference ? 0 : detail::arrays_hand_over_references() ? 2 : 1;
      ar& how;
      if (by_reference) {
        std::uint64_t offset = block_.store_offset();
        ar& offset;
        if (how == 2)
          block_.add_reference_for_receiver();
      } else if (n != 0) {
        ar& boost::serialization::make_binary_object(block_.data(), size_ * sizeof(T));
      }
    } else {
      std::uint64_t n = 0;
      ar& n;
      if (n > std::numeric_limits<std::size_t>::max() / sizeof(T))
        throw serialization_error("weft::array: a count of " + std::to_string(n) + " elements is corrupt");
      std::vector<std::size_t> shape;
      ar& shape;
      std::uint8_t how = 0;
      ar& how;
      if (how > 2)
        throw serialization_error("weft::array: storage tag " + std::to_string(how) + " is corrupt; expected 0..2");
      const auto bytes = static_cast<std::size_t>(n) * sizeof(T);
      std::vector<std::size_t> checked;
      try {
        checked = checked_shape(static_cast<std::size_t>(n), std::move(shape));
      } catch (const invalid_argument_error& e) {
        throw serialization_error(std::string(e.what()) + " (corrupt input)");
      }
      detail::array_block block;
      if (how != 0) {
        std::uint64_t offset = 0;
        ar& offset;
        block = detail::array_block::from_store(offset, bytes, how == 2);
      } else {
        if constexpr (requires { ar.remaining(); })
          if (bytes > ar.remaining())
            throw serialization_error("weft::array: " + std::to_string(bytes) + " bytes of elements announced, " +
                                      std::to_string(ar.remaining()) + " left in the input");
        block = detail::array_block::allocate(bytes);
        if (bytes != 0) {
          auto raw = boost::serialization::make_binary_object(block.data(), bytes);
          ar& raw;
        }
      }
      block_ = std::move(block);
      size_ = static_cast<std::size_t>(n);
      shape_ = std::move(checked);
    }
  }

private:
  static std::vector<std::size_t> checked_shape(std::size_t n, std::vector<std::size_t> shape) {
    if (shape.empty())
      return shape;
    std::size_t product = 1;
    for (std::size_t d : shape) {
      if (d != 0 && product > std::numeric_limits<std::size_t>::max() / d)
        throw invalid_argument_error("weft::array: the shape's dimensions overflow");
      product *= d;
    }
    if (product != n) {
      std::string dims;
      for (std::size_t d : shape)
        dims += (dims.empty() ? "" : " x ") + std::to_string(d);
      throw invalid_argument_error("weft::array: shape " + dims + " holds " + std::to_string(product) +
                                   " elements, but the array has " + std::to_string(n));
    }
    return shape;
  }

  detail::array_block block_;
  std::size_t size_ = 0;
  std::vector<std::size_t> shape_;
};

} // namespace weft
