/// @file
/// Internal: the one archive pair every value crossing a process goes
/// through. Boost's binary archive, plus what a receiver of untrusted bytes
/// needs: lengths are checked against the bytes left (no giant allocation
/// from a corrupted count), bools must be 0 or 1, nesting is bounded by the
/// stack actually left (no stack overflow from a deep or hostile structure),
/// and Boost's class and object numbering is checked before Boost acts on it
/// (see "The decoder's checks" in docs/serialization.md): class ids in range,
/// class preambles that match the local class, pointer back-references only
/// to objects loaded through a pointer of the same class, at most one owner
/// per object, and what a refused decode had allocated is freed. Users never
/// name these types; they write the usual Boost
/// `template <class Archive> void serialize(Archive&, unsigned)`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <streambuf>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <boost/archive/basic_archive.hpp>
#include <boost/archive/binary_iarchive_impl.hpp>
#include <boost/archive/binary_oarchive_impl.hpp>
#include <boost/archive/detail/basic_iserializer.hpp>
#include <boost/archive/detail/basic_pointer_iserializer.hpp>
#include <boost/archive/detail/register_archive.hpp>
#include <boost/serialization/array_optimization.hpp>
#include <boost/serialization/extended_type_info.hpp>
#include <boost/serialization/nvp.hpp>
#include <boost/serialization/singleton.hpp>
#include <boost/serialization/type_info_implementation.hpp>

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

/// Who will own an object that is being loaded through a pointer.
enum class pointer_owner : std::uint8_t { raw, unique, shared };

/// The decoding archive. Boost's basic_iarchive numbers classes and objects
/// as it reads them and trusts the numbers in the input; this archive keeps
/// its own copy of that numbering, from the hooks Boost calls on the most
/// derived archive (register_basic_serializer, load_object, load_pointer and
/// the load_override of each number), and refuses a number before Boost
/// uses it unless it is one Boost can use safely. It also records every
/// object Boost allocates for a pointer, and who took it, so that a refused
/// decode frees them (~iarchive) unless commit() was called.
class iarchive final : public boost::archive::binary_iarchive_impl<iarchive, char, std::char_traits<char>> {
  using impl = boost::archive::binary_iarchive_impl<iarchive, char, std::char_traits<char>>;
  using primitive = boost::archive::basic_binary_iprimitive<iarchive, char, std::char_traits<char>>;
  using binary = boost::archive::basic_binary_iarchive<iarchive>;
  using basic = boost::archive::detail::basic_iarchive;
  using basic_iserializer = boost::archive::detail::basic_iserializer;
  using basic_pointer_iserializer = boost::archive::detail::basic_pointer_iserializer;
  friend class boost::archive::detail::interface_iarchive<iarchive>;
  friend class boost::archive::basic_binary_iarchive<iarchive>;
  friend primitive;
  friend class boost::archive::load_access;

public:
  using finder_type = const basic_pointer_iserializer* (*)(const boost::serialization::extended_type_info&);

  explicit iarchive(bytes_source& source) :
    impl(source, boost::archive::no_header | boost::archive::no_codecvt),
    source_(source),
    floor_(serialization_stack_floor()) {}
  /// Unless commit() was called: frees the objects allocated for pointers
  /// that no smart pointer took, and empties (destroys and default-constructs
  /// again) the objects that shared_ptrs took, which breaks the cycles a
  /// partial decode can leave.
  ~iarchive() override;

  std::size_t remaining() const noexcept { return source_.remaining(); }
  /// The values were decoded and handed over: keep everything.
  void commit() noexcept { committed_ = true; }

  template <class T>
  void load_override(T& t) {
    if constexpr (is_nvp<std::remove_const_t<T>>::value)
      if (t.name() == nullptr) // before the depth check: the object exists even if that throws
        note_constructed(t.value());
    if (static_cast<const char*>(__builtin_frame_address(0)) < floor_)
      throw_too_deep(false);
    if constexpr (std::is_enum_v<T>) {
      std::underlying_type_t<T> v{};
      this->binary::load_override(v);
      t = static_cast<T>(v);
    } else {
      this->binary::load_override(t);
    }
  }
  /// Collection sizes (and the bucket counts of unordered containers) are
  /// checked against the bytes left, with some slack: elements that encode
  /// to nothing (std::monostate) and bucket counts need no bytes. A count
  /// beyond that is corrupt; refusing it avoids a giant reserve().
  static constexpr std::size_t count_slack = std::size_t{1} << 16;
  void load_override(boost::serialization::collection_size_type& t) {
    this->binary::load_override(t);
    if (std::size_t(t) > remaining() + count_slack)
      throw_bad_length("collection size", std::size_t(t), remaining());
  }
  // Boost's numbering, checked as it is read (serialization.cpp).
  void load_override(boost::archive::class_id_type& t);
  void load_override(boost::archive::class_name_type& t);
  void load_override(boost::archive::tracking_type& t);
  void load_override(boost::archive::version_type& t);
  void load_override(boost::archive::object_id_type& t);

  // These hide basic_iarchive's members of the same names: Boost's
  // templates call them on the most derived archive.
  void register_basic_serializer(const basic_iserializer& bis);
  void load_object(void* t, const basic_iserializer& bis);
  const basic_pointer_iserializer* load_pointer(void*& t, const basic_pointer_iserializer* bpis, finder_type finder);

  /// The next pointer loaded (Boost's format: `ar >> make_nvp(name, p)`)
  /// is one `owner` will own.
  void expect_owner(pointer_owner owner) noexcept { next_owner_ = owner; }
  /// Hands the object of the pointer just loaded to `t`.
  template <class T>
  void adopt(std::unique_ptr<T>& t, T* p) noexcept {
    if (p != nullptr && last_allocation_ != no_index)
      allocations_[last_allocation_].adopted = true;
    t.reset(p);
  }
  template <class T>
  void adopt(std::shared_ptr<T>& t, T* p) {
    if (p == nullptr || last_allocation_ == no_index) {
      t.reset();
      return;
    }
    allocation& a = allocations_[last_allocation_];
    if (a.control) { // a second shared_ptr to the object: share its control block
      t = std::shared_ptr<T>(a.control, p);
      return;
    }
    a.adopted = true; // from here on the shared_ptr deletes it (even if making it throws)
    std::shared_ptr<T> owner(p);
    a.control = owner;
    t = std::move(owner);
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

  /// Throws serialization_error "corrupted input: <what>"; the archive
  /// refuses everything after it.
  [[noreturn]] void corrupted(const std::string& what);

private:
  static constexpr std::size_t no_index = static_cast<std::size_t>(-1);

  /// A class Boost has numbered in this archive (its class id is the index).
  struct class_entry {
    const basic_iserializer* bis = nullptr;
    bool initialized = false; // its preamble (tracking, version) was read
    bool tracked = false;     // its objects have object ids
  };
  /// An object Boost has numbered (its object id is the index): tracked
  /// objects only, loaded by value or through a pointer.
  struct object_entry {
    int class_index = -1;
    bool through_pointer = false;
    std::size_t allocation = no_index;
  };
  /// An object Boost allocated for a pointer, tracked or not.
  struct allocation {
    void* address = nullptr; // of the most derived object
    int class_index = -1;
    pointer_owner owner = pointer_owner::raw; // who claimed it
    bool constructed = false;
    bool adopted = false;  // a unique_ptr or a shared_ptr holds it
    bool raw_held = false; // a raw pointer of the user's class holds it
    void (*reset)(void*) noexcept = nullptr;
    std::shared_ptr<void> control; // the first shared_ptr that took it
  };
  /// What comes next in the input for one load_object or load_pointer.
  enum class step : std::uint8_t { class_id, class_name, tracking, version, object_id, contents, done };
  struct frame {
    bool pointer = false;
    step next = step::contents;
    int class_index = -1;
    pointer_owner owner = pointer_owner::raw;
    std::size_t allocation = no_index;
    const basic_pointer_iserializer* declared = nullptr;
    finder_type finder = nullptr;
  };
  template <class T>
  struct is_nvp : std::false_type {};
  template <class T>
  struct is_nvp<boost::serialization::nvp<T>> : std::true_type {};

  template <class T>
  static void reset_in_place(void* p) noexcept {
    T* o = static_cast<T*>(p);
    std::destroy_at(o);
    ::new (static_cast<void*>(o)) T();
  }

  /// Boost loads the contents of an object it allocated for a pointer with
  /// `ar >> make_nvp(NULL, *t)`, right after constructing it: records that
  /// the object is constructed, where, and how to empty it.
  template <class T>
  void note_constructed(T& t) noexcept {
    if constexpr (std::is_class_v<T> && !std::is_const_v<T>) {
      if (frames_.empty())
        return;
      const frame& f = frames_.back();
      if (!f.pointer || f.next != step::contents || f.allocation == no_index)
        return;
      allocation& a = allocations_[f.allocation];
      if (a.constructed || !is_class<T>(f.class_index))
        return;
      a.address = static_cast<void*>(std::addressof(t));
      a.constructed = true;
      if constexpr (std::is_nothrow_default_constructible_v<T> && std::is_nothrow_destructible_v<T>)
        a.reset = &reset_in_place<T>;
    }
  }
  template <class T>
  bool is_class(int class_index) const noexcept {
    const auto& mine = boost::serialization::singleton<
      typename boost::serialization::type_info_implementation<T>::type>::get_const_instance();
    const auto& theirs = classes_[static_cast<std::size_t>(class_index)].bis->get_eti();
    return &mine == &theirs || mine == theirs;
  }

  int register_class(const basic_iserializer& bis);
  void open_object(void* t, const basic_iserializer& bis);
  void begin_pointer(const basic_pointer_iserializer* bpis, finder_type finder);
  void end_pointer(void* t);
  void refuse_after_exception() noexcept;
  void next_step(frame& f, step s);
  std::string class_name(int class_index) const;
  frame& expect(step s, const char* what);
  void enter_class(frame& f);
  void begin_object(frame& f);
  void new_object(frame& f, bool tracked);
  void back_reference(frame& f, std::size_t object);
  void release_after_failure() noexcept;
  void check_not_refused();

  bytes_source& source_;
  const char* floor_;
  bool committed_ = false;
  bool refused_ = false;
  pointer_owner next_owner_ = pointer_owner::raw;
  std::size_t last_allocation_ = no_index;
  std::vector<class_entry> classes_;
  const basic_iserializer* last_bis_ = nullptr;
  int last_class_ = -1;
  std::vector<object_entry> objects_;
  std::vector<allocation> allocations_;
  std::vector<frame> frames_;
  std::string refusal_;
};

/// std::unique_ptr and std::shared_ptr, loaded in Boost's format (one
/// pointer) but handed over by the archive, which knows who owns what.
/// Found by argument-dependent lookup from Boost's split_free, and more
/// specialized than Boost's own load for any archive.
template <class T>
void load(iarchive& ar, std::unique_ptr<T>& t, const unsigned int) {
  T* p = nullptr;
  ar.expect_owner(pointer_owner::unique);
  ar >> boost::serialization::make_nvp("tx", p);
  ar.adopt(t, p);
}
template <class T>
void load(iarchive& ar, std::shared_ptr<T>& t, const unsigned int) {
  T* p = nullptr;
  ar.expect_owner(pointer_owner::shared);
  ar >> boost::serialization::make_nvp("px", p);
  ar.adopt(t, p);
}

} // namespace weft::detail

BOOST_SERIALIZATION_REGISTER_ARCHIVE(weft::detail::oarchive)
BOOST_SERIALIZATION_REGISTER_ARCHIVE(weft::detail::iarchive)
BOOST_SERIALIZATION_USE_ARRAY_OPTIMIZATION(weft::detail::oarchive)
BOOST_SERIALIZATION_USE_ARRAY_OPTIMIZATION(weft::detail::iarchive)
