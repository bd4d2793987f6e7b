/// @file
/// What can cross a process boundary, and how to make a class sendable.
///
/// Every argument, result, put() value and error that travels between the
/// driver and its worker processes is written by one serializer (Boost's
/// binary archive, wrapped). Sendable, out of the box: arithmetic types and
/// enums, std::string, the standard containers, std::array, pair, tuple,
/// optional, variant (and monostate), unique_ptr and shared_ptr, complex,
/// bitset, object_ref<T> and actor_handle<T>. A class of your own becomes
/// sendable with the usual Boost member
///
///     struct point {
///       double x = 0, y = 0;
///       template <class Archive> void serialize(Archive& ar, unsigned) { ar & x & y; }
///     };
///
/// or a free `serialize(Archive&, point&, unsigned)` in the class's own
/// namespace. A class sent through a pointer to its base is registered once
/// with WEFT_REGISTER_CLASS(T) at namespace scope. Two pointers to one object
/// come back as pointers to one object; a structure that points to itself
/// round-trips; one nested deeper than the stack allows is refused with
/// serialization_error (never a stack overflow). Remote calls check their
/// parameter and result types at compile time (is_serializable_v).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "weft/detail/archive.hpp"
#include "weft/errors.hpp"
#include "weft/object_ref.hpp"

// The standard types Boost knows (and the ones it does not, below).
#include <boost/serialization/array.hpp>
#include <boost/serialization/base_object.hpp>
#include <boost/serialization/bitset.hpp>
#include <boost/serialization/complex.hpp>
#include <boost/serialization/deque.hpp>
#include <boost/serialization/export.hpp>
#include <boost/serialization/forward_list.hpp>
#include <boost/serialization/list.hpp>
#include <boost/serialization/map.hpp>
#include <boost/serialization/set.hpp>
#include <boost/serialization/shared_ptr.hpp>
#include <boost/serialization/string.hpp>
#include <boost/serialization/unique_ptr.hpp>
#include <boost/serialization/unordered_map.hpp>
#include <boost/serialization/unordered_set.hpp>
#include <boost/serialization/utility.hpp>
#include <boost/serialization/vector.hpp>

#include <array>
#include <bitset>
#include <complex>
#include <deque>
#include <forward_list>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <variant>

namespace weft::detail {
[[noreturn]] void throw_bad_variant_index(std::uint32_t index, std::size_t alternatives);
} // namespace weft::detail

// std::tuple, std::optional and std::variant: Boost 1.74 has no support.
namespace boost::serialization {

template <class Archive, class... T>
void serialize(Archive& ar, std::tuple<T...>& t, const unsigned int) {
  std::apply([&ar](auto&... e) { ((ar & e), ...); }, t);
}

template <class Archive>
void serialize(Archive&, std::monostate&, const unsigned int) {}

// (Not split into free save/load: Boost's own free `load` template for
// smart pointers would be tried on std::optional and break.)
template <class Archive, class T>
void serialize(Archive& ar, std::optional<T>& t, const unsigned int) {
  if constexpr (Archive::is_saving::value) {
    const bool has = t.has_value();
    ar << has;
    if (has)
      ar << *t;
  } else {
    bool has = false;
    ar >> has;
    if (!has) {
      t.reset();
      return;
    }
    if (!t)
      t.emplace();
    ar >> *t;
  }
}

template <class Archive, class... T>
void serialize(Archive& ar, std::variant<T...>& t, const unsigned int) {
  if constexpr (Archive::is_saving::value) {
    const auto index = static_cast<std::uint32_t>(t.index());
    ar << index;
    std::visit([&ar](auto& alt) { ar << alt; }, t);
  } else {
    std::uint32_t index = 0;
    ar >> index;
    if (index >= sizeof...(T))
      weft::detail::throw_bad_variant_index(index, sizeof...(T));
    using loader = void (*)(Archive&, std::variant<T...>&);
    // By index, not by type: std::variant<int, int> has two int alternatives.
    static constexpr auto loaders = []<std::size_t... I>(std::index_sequence<I...>) {
      return std::array<loader, sizeof...(I)>{+[](Archive& a, std::variant<T...>& v) {
        auto& alt = v.template emplace<I>();
        a >> alt;
      }...};
    }
    (std::index_sequence_for<T...>{});
    loaders[index](ar, t);
  }
}

} // namespace boost::serialization

namespace weft {

template <class T>
struct is_serializable;

namespace detail {

/// What weft does with the cell of an object_ref<T> whose T it no longer
/// knows (type-erased; one instance per T, whose address also names T):
///  encode_value: appends the encoding of the done, not failed `cell`'s
///                value to *out;
///  make_ready:   a new cell holding the value decoded from `in`, done;
///  make_pending: a new cell without a value;
///  fill:         decodes `in` into `cell` (made by make_pending) and
///                completes it.
/// Returns the new cell (refcount 0) or null.
enum class ref_op : std::uint8_t { encode_value, make_ready, make_pending, fill };
using ref_ops_fn = object_state* (*)(ref_op, object_state* cell, std::string_view in, std::string* out);

template <class T>
object_state* ref_ops(ref_op op, object_state* cell, std::string_view in, std::string* out);

/// The wire form of an object_ref: its id, recorded by the codec of the
/// message being written (which keeps the object alive for the receiver).
/// Throws serialization_error outside weft's own messages (to_bytes).
std::uint64_t encode_ref(object_state* cell, ref_ops_fn ops);
/// The cell for `id` in the message being read; null for id 0 (an
/// invalid ref). Throws serialization_error for an id the message does not
/// carry or whose object has another type.
object_ptr decode_ref(std::uint64_t id, ref_ops_fn ops);

} // namespace detail

/// An object_ref passed *as a ref* (a parameter of type object_ref<T>, or
/// one inside a container or result) between the driver and a worker
/// process: it stays a ref to the same object, which stays alive while
/// any process holds it.
template <class Archive, class T>
void serialize(Archive& ar, object_ref<T>& r, const unsigned int) {
  if constexpr (Archive::is_saving::value) {
    std::uint64_t id = detail::encode_ref(r.cell(), &detail::ref_ops<T>);
    ar << id;
  } else {
    std::uint64_t id = 0;
    ar >> id;
    r = object_ref<T>(detail::decode_ref(id, &detail::ref_ops<T>));
  }
}

namespace detail {

struct serialize_probe {
  void serialize();
};
template <class T>
struct serialize_probe_derived : T, serialize_probe {};

/// T declares a member named `serialize` (public or private: name lookup
/// happens before access checking, so the name is ambiguous in the probe).
template <class T>
concept has_serialize_member = (std::is_class_v<T> && !std::is_final_v<T> &&
                                !requires { &serialize_probe_derived<T>::serialize; }) ||
                               requires(T& t, oarchive& ar) {
  t.serialize(ar, 0u);
};

namespace adl {
void serialize() = delete; // hides every `serialize` outside T's own namespaces
template <class T>
concept has_free_serialize = requires(T& t, oarchive& ar) {
  serialize(ar, t, 0u);
};
} // namespace adl

template <class T>
struct serializable_impl : std::bool_constant<std::is_arithmetic_v<T> || std::is_enum_v<T> || has_serialize_member<T> ||
                                              adl::has_free_serialize<T>> {};

template <class... T>
struct all_serializable : std::bool_constant<(is_serializable<T>::value && ...)> {};

// clang-format off
template <> struct serializable_impl<std::string> : std::true_type {};
template <> struct serializable_impl<std::monostate> : std::true_type {};
template <class T, class A> struct serializable_impl<std::vector<T, A>> : all_serializable<T> {};
template <class T, class A> struct serializable_impl<std::deque<T, A>> : all_serializable<T> {};
template <class T, class A> struct serializable_impl<std::list<T, A>> : all_serializable<T> {};
template <class T, class A> struct serializable_impl<std::forward_list<T, A>> : all_serializable<T> {};
template <class T, class C, class A> struct serializable_impl<std::set<T, C, A>> : all_serializable<T> {};
template <class T, class C, class A> struct serializable_impl<std::multiset<T, C, A>> : all_serializable<T> {};
template <class K, class V, class C, class A> struct serializable_impl<std::map<K, V, C, A>> : all_serializable<K, V> {};
template <class K, class V, class C, class A> struct serializable_impl<std::multimap<K, V, C, A>> : all_serializable<K, V> {};
template <class T, class H, class E, class A> struct serializable_impl<std::unordered_set<T, H, E, A>> : all_serializable<T> {};
template <class T, class H, class E, class A> struct serializable_impl<std::unordered_multiset<T, H, E, A>> : all_serializable<T> {};
template <class K, class V, class H, class E, class A> struct serializable_impl<std::unordered_map<K, V, H, E, A>> : all_serializable<K, V> {};
template <class K, class V, class H, class E, class A> struct serializable_impl<std::unordered_multimap<K, V, H, E, A>> : all_serializable<K, V> {};
template <class T, std::size_t N> struct serializable_impl<std::array<T, N>> : all_serializable<T> {};
template <class A, class B> struct serializable_impl<std::pair<A, B>> : all_serializable<A, B> {};
template <class... T> struct serializable_impl<std::tuple<T...>> : all_serializable<T...> {};
template <class T> struct serializable_impl<std::optional<T>> : all_serializable<T> {};
template <class... T> struct serializable_impl<std::variant<T...>> : all_serializable<T...> {};
// Boost tracks pointed-to objects by address, which it does not do for
// primitives: a smart pointer must point to a class.
template <class T> struct serializable_impl<std::unique_ptr<T>> : std::bool_constant<std::is_class_v<T> && all_serializable<T>::value> {};
template <class T> struct serializable_impl<std::shared_ptr<T>> : std::bool_constant<std::is_class_v<T> && all_serializable<T>::value> {};
template <class T> struct serializable_impl<std::complex<T>> : all_serializable<T> {};
template <std::size_t N> struct serializable_impl<std::bitset<N>> : std::true_type {};
template <class T> struct serializable_impl<object_ref<T>> : all_serializable<T> {};
// clang-format on

} // namespace detail

/// True when T can cross a process boundary. Specialize it to std::true_type
/// for a class whose `serialize` lives in namespace boost::serialization
/// (the only form weft cannot detect by itself).
template <class T>
struct is_serializable : detail::serializable_impl<std::remove_cv_t<T>> {};
template <>
struct is_serializable<void> : std::true_type {};

template <class T>
inline constexpr bool is_serializable_v = is_serializable<std::remove_cvref_t<T>>::value;

namespace detail {

/// Instantiated for every parameter and result type of a remote call; the
/// compiler's "required from" note names T.
template <class T>
struct require_serializable {
  static constexpr bool value = is_serializable_v<T>;
  static_assert(value,
                "weft: this type cannot cross a process boundary, so it cannot be a parameter or result of a "
                "remote call. The type is the T of 'weft::detail::require_serializable<T>' in the note below. "
                "Give it a member `template <class Archive> void serialize(Archive& ar, unsigned) { ar & a & b; }` "
                "(or a free serialize(Archive&, T&, unsigned) in its namespace); see docs/serialization.md.");
};

/// True while weft makes and fills values it decodes, on this thread: a
/// value default-constructed then is only a target about to be
/// overwritten (a weft::queue made so starts no actor).
bool decoding_values() noexcept;
/// Sets decoding_values() until end() or the end of the scope.
class decoding_scope {
public:
  decoding_scope() noexcept;
  ~decoding_scope() { end(); }
  decoding_scope(const decoding_scope&) = delete;
  decoding_scope& operator=(const decoding_scope&) = delete;
  void end() noexcept;

private:
  bool before_;
  bool ended_ = false;
};

[[noreturn]] void throw_encode_failed(const std::type_info& type, const char* why);
[[noreturn]] void throw_decode_failed(const std::type_info& type, const char* why);
[[noreturn]] void throw_trailing_bytes(const std::type_info& type, std::size_t left);

/// Values the archive writes as their bytes and nothing else (its header is
/// off): encoding and decoding copy these directly, since building an
/// archive costs a std::locale made and torn down (~0.5 us each way), more
/// than a small value's whole trip to a worker and back otherwise costs.
template <class... T>
inline constexpr bool all_raw_v = (std::is_arithmetic_v<T> && ...);

template <class... T>
void encode_raw(std::string& out, const T&... values) {
  ((out.append(reinterpret_cast<const char*>(&values), sizeof(T))), ...);
}

/// Reads one raw value from the front of `in`, with the archive's checks
/// and messages (`type` names what is being decoded).
template <class T>
void decode_raw(std::string_view& in, T& value, const std::type_info& type) {
  if (in.size() < sizeof(T))
    throw_decode_failed(type, "input stream error"); // Boost's words for it
  if constexpr (std::is_same_v<T, bool>) {
    const auto c = static_cast<unsigned char>(in[0]);
    if (c > 1)
      throw_decode_failed(type, ("corrupted input: a bool byte of " + std::to_string(c) + "; expected 0 or 1").c_str());
    value = c != 0;
  } else {
    std::memcpy(&value, in.data(), sizeof(T));
  }
  in.remove_prefix(sizeof(T));
}

/// Appends the encoding of `value` to `out`. Throws serialization_error.
template <class T>
void encode_into(std::string& out, const T& value) {
  static_assert(is_serializable_v<T>, "weft: encode of a type that is not serializable");
  if constexpr (all_raw_v<T>) {
    encode_raw(out, value);
    return;
  }
  try {
    string_sink sink(out);
    oarchive ar(sink);
    ar << value;
  } catch (const std::exception& e) {
    throw_encode_failed(typeid(T), e.what());
  }
}

/// Reads one T from the front of `in`, consuming what it read; with
/// `whole`, bytes left over after it are an error. A refused decode frees
/// what it had allocated (the archive's destructor, without commit()).
template <class T>
void decode_from(std::string_view& in, T& value, bool whole = false) {
  static_assert(is_serializable_v<T>, "weft: decode of a type that is not serializable");
  if constexpr (all_raw_v<T>) {
    decode_raw(in, value, typeid(T));
    if (whole && !in.empty())
      throw_trailing_bytes(typeid(T), in.size());
    return;
  }
  std::size_t left = 0;
  decoding_scope decoding;
  try {
    bytes_source source(in);
    {
      iarchive ar(source);
      ar >> value;
      left = source.remaining();
      if (!whole || left == 0)
        ar.commit();
    }
    in.remove_prefix(in.size() - left);
  } catch (const std::exception& e) {
    throw_decode_failed(typeid(T), e.what());
  }
  if (whole && left != 0)
    throw_trailing_bytes(typeid(T), left);
}

/// Appends the encoding of several values, in order, as one archive.
template <class... T>
void encode_each(std::string& out, const T&... values) {
  static_assert((is_serializable_v<T> && ...), "weft: encode of a type that is not serializable");
  if constexpr (all_raw_v<T...>) {
    encode_raw(out, values...);
    return;
  }
  try {
    string_sink sink(out);
    oarchive ar(sink);
    ((ar << values), ...);
  } catch (const std::exception& e) {
    throw_encode_failed(typeid(std::tuple<T...>), e.what());
  }
}

/// Reads what encode_each wrote, in order; consumes all of `in`.
template <class... T>
void decode_each(std::string_view in, T&... values) {
  static_assert((is_serializable_v<T> && ...), "weft: decode of a type that is not serializable");
  if constexpr (all_raw_v<T...>) {
    (decode_raw(in, values, typeid(std::tuple<T...>)), ...);
    if (!in.empty())
      throw_trailing_bytes(typeid(std::tuple<T...>), in.size());
    return;
  }
  std::size_t left = 0;
  decoding_scope decoding;
  try {
    bytes_source source(in);
    iarchive ar(source);
    ((ar >> values), ...);
    left = source.remaining();
    if (left == 0)
      ar.commit();
  } catch (const std::exception& e) {
    throw_decode_failed(typeid(std::tuple<T...>), e.what());
  }
  if (left != 0)
    throw_trailing_bytes(typeid(std::tuple<T...>), left);
}

template <class T>
T decode_value(std::string_view in) {
  decoding_scope decoding;
  T value{};
  decode_each(in, value);
  return value;
}

template <class T>
object_state* ref_ops(ref_op op, object_state* cell, std::string_view in, std::string* out) {
  using cell_t = value_object<T>;
  switch (op) {
  case ref_op::encode_value:
    if constexpr (!std::is_void_v<T>)
      encode_each(*out, static_cast<cell_t*>(cell)->value());
    return cell;
  case ref_op::make_ready: {
    auto* c = new cell_t();
    if constexpr (!std::is_void_v<T>) {
      try {
        decoding_scope decoding;
        T value{};
        decode_each(in, value);
        c->emplace(std::move(value));
      } catch (...) {
        delete c;
        throw;
      }
    }
    c->complete_value();
    return c;
  }
  case ref_op::make_pending:
    return new cell_t();
  case ref_op::fill:
    if constexpr (!std::is_void_v<T>) {
      decoding_scope decoding;
      T value{};
      decode_each(in, value);
      decoding.end();
      static_cast<cell_t*>(cell)->emplace(std::move(value));
    }
    cell->complete_value();
    return cell;
  }
  return nullptr;
}

} // namespace detail

/// The bytes of `value`, as sent between processes. Throws
/// serialization_error (e.g. a class sent through a base pointer that was
/// never registered, or a structure nested too deep).
template <class T>
std::vector<std::byte> to_bytes(const T& value) {
  std::string out;
  detail::encode_into(out, value);
  const auto* p = reinterpret_cast<const std::byte*>(out.data());
  return std::vector<std::byte>(p, p + out.size());
}

/// The value encoded in `bytes`. Throws serialization_error when the bytes
/// are truncated, corrupted or hostile, or hold more than one value.
template <class T>
T from_bytes(std::span<const std::byte> bytes) {
  static_assert(std::is_default_constructible_v<T>, "weft::from_bytes<T> needs a default-constructible T");
  std::string_view in(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  detail::decoding_scope decoding;
  T value{};
  detail::decode_from(in, value, true);
  return value;
}

} // namespace weft

/// Registers a class sent through a pointer to its (polymorphic) base, like
/// Ray's `ray.util.register_serializer` / the seed's register_class. Use once
/// per class, at global namespace scope, in one .cpp file of the program:
///     WEFT_REGISTER_CLASS(shapes::circle)
#define WEFT_REGISTER_CLASS(T) BOOST_CLASS_EXPORT(T)
