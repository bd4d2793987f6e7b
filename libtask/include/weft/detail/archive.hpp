/// @file
/// Internal: the one archive pair every value crossing a process goes
/// through. Boost's binary archive, plus what a receiver of untrusted bytes
/// needs: lengths are checked against the bytes left (no giant allocation
/// from a corrupted count), bools must be 0 or 1, and nesting is bounded by
/// the stack actually left (no stack overflow from a deep or hostile
/// structure). Users never name these types; they write the usual Boost
/// `template <class Archive> void serialize(Archive&, unsigned)`.
#pragma once

#include <cstddef>
#include <streambuf>
#include <string>
#include <string_view>
#include <type_traits>

#include <boost/archive/binary_iarchive_impl.hpp>
#include <boost/archive/binary_oarchive_impl.hpp>
#include <boost/archive/detail/register_archive.hpp>
#include <boost/serialization/array_optimization.hpp>

namespace weft::detail {

/// Appends everything written to a std::string.
class string_sink final : public std::streambuf {
public:
  explicit string_sink(std::string& out) noexcept : out_(out) {}

protected:
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    out_.append(s, static_cast<std::size_t>(n));
    return n;
  }
  int_type overflow(int_type c) override {
    if (!traits_type::eq_int_type(c, traits_type::eof()))
      out_.push_back(traits_type::to_char_type(c));
    return traits_type::not_eof(c);
  }

private:
  std::string& out_;
};

/// Reads a byte range in place.
class bytes_source final : public std::streambuf {
public:
  explicit bytes_source(std::string_view bytes) noexcept {
    char* p = const_cast<char*>(bytes.data()); // read only: std::streambuf wants char*
    setg(p, p, p + bytes.size());
  }
  std::size_t remaining() const noexcept { return static_cast<std::size_t>(egptr() - gptr()); }
};

/// The lowest stack address (de)serialization may reach on this thread or
/// fiber before it refuses to nest deeper.
const char* serialization_stack_floor() noexcept;
/// Throws serialization_error: nesting deeper than the stack allows.
[[noreturn]] void throw_too_deep(bool saving);
/// Throws serialization_error: a length or count larger than the input.
[[noreturn]] void throw_bad_length(const char* what, std::size_t n, std::size_t left);
/// Throws serialization_error: a bool byte that is neither 0 nor 1.
[[noreturn]] void throw_bad_bool(unsigned value);

class oarchive final : public boost::archive::binary_oarchive_impl<oarchive, char, std::char_traits<char>> {
  using impl = boost::archive::binary_oarchive_impl<oarchive, char, std::char_traits<char>>;
  friend class boost::archive::detail::interface_oarchive<oarchive>;
  friend class boost::archive::basic_binary_oarchive<oarchive>;
  friend class boost::archive::basic_binary_oprimitive<oarchive, char, std::char_traits<char>>;
  friend class boost::archive::save_access;

public:
  explicit oarchive(std::streambuf& sink) :
    impl(sink, boost::archive::no_header | boost::archive::no_codecvt),
    floor_(serialization_stack_floor()) {}

  template <class T>
  void save_override(const T& t) {
    if (static_cast<const char*>(__builtin_frame_address(0)) < floor_)
      throw_too_deep(true);
    if constexpr (std::is_enum_v<T>) {
      // Boost writes enums as int, losing the high bits of a 64-bit enum.
      const auto v = static_cast<std::underlying_type_t<T>>(t);
      this->boost::archive::basic_binary_oarchive<oarchive>::save_override(v);
    } else {
      this->boost::archive::basic_binary_oarchive<oarchive>::save_override(t);
    }
  }

private:
  const char* floor_;
};

class iarchive final : public boost::archive::binary_iarchive_impl<iarchive, char, std::char_traits<char>> {
  using impl = boost::archive::binary_iarchive_impl<iarchive, char, std::char_traits<char>>;
  using primitive = boost::archive::basic_binary_iprimitive<iarchive, char, std::char_traits<char>>;
  friend class boost::archive::detail::interface_iarchive<iarchive>;
  friend class boost::archive::basic_binary_iarchive<iarchive>;
  friend primitive;
  friend class boost::archive::load_access;

public:
  explicit iarchive(bytes_source& source) :
    impl(source, boost::archive::no_header | boost::archive::no_codecvt),
    source_(source),
    floor_(serialization_stack_floor()) {}

  std::size_t remaining() const noexcept { return source_.remaining(); }

  template <class T>
  void load_override(T& t) {
    if (static_cast<const char*>(__builtin_frame_address(0)) < floor_)
      throw_too_deep(false);
    if constexpr (std::is_enum_v<T>) {
      std::underlying_type_t<T> v{};
      this->boost::archive::basic_binary_iarchive<iarchive>::load_override(v);
      t = static_cast<T>(v);
    } else {
      this->boost::archive::basic_binary_iarchive<iarchive>::load_override(t);
    }
  }
  /// Collection sizes (and the bucket counts of unordered containers) are
  /// checked against the bytes left, with some slack: elements that encode
  /// to nothing (std::monostate) and bucket counts need no bytes. A count
  /// beyond that is corrupt; refusing it avoids a giant reserve().
  static constexpr std::size_t count_slack = std::size_t{1} << 16;
  void load_override(boost::serialization::collection_size_type& t) {
    this->boost::archive::basic_binary_iarchive<iarchive>::load_override(t);
    if (std::size_t(t) > remaining() + count_slack)
      throw_bad_length("collection size", std::size_t(t), remaining());
  }

  using primitive::load;
  void load(std::string& s) {
    std::size_t n = 0;
    this->load(n);
    if (n > remaining())
      throw_bad_length("string length", n, remaining());
    s.resize(n);
    if (n != 0)
      this->load_binary(s.data(), n);
  }
  void load(bool& b) {
    unsigned char c = 0;
    this->load_binary(&c, 1);
    if (c > 1)
      throw_bad_bool(c);
    b = c != 0;
  }

private:
  bytes_source& source_;
  const char* floor_;
};

} // namespace weft::detail

BOOST_SERIALIZATION_REGISTER_ARCHIVE(weft::detail::oarchive)
BOOST_SERIALIZATION_REGISTER_ARCHIVE(weft::detail::iarchive)
BOOST_SERIALIZATION_USE_ARRAY_OPTIMIZATION(weft::detail::oarchive)
BOOST_SERIALIZATION_USE_ARRAY_OPTIMIZATION(weft::detail::iarchive)
