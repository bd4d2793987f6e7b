// The archive pair's compiled half (Boost's archive templates are
// instantiated once, here) and the errors the serializer throws.
#include "weft/serialization.hpp"

#include <pthread.h>

#include <boost/archive/detail/archive_serializer_map.hpp>
#include <boost/archive/impl/archive_serializer_map.ipp>
#include <boost/archive/impl/basic_binary_iarchive.ipp>
#include <boost/archive/impl/basic_binary_iprimitive.ipp>
#include <boost/archive/impl/basic_binary_oarchive.ipp>
#include <boost/archive/impl/basic_binary_oprimitive.ipp>

#include "../../src/fiber.hpp"
#include "../../src/runtime.hpp"

namespace boost::archive {
template class detail::archive_serializer_map<weft::detail::oarchive>;
template class detail::archive_serializer_map<weft::detail::iarchive>;
template class basic_binary_oprimitive<weft::detail::oarchive, char, std::char_traits<char>>;
template class basic_binary_iprimitive<weft::detail::iarchive, char, std::char_traits<char>>;
template class basic_binary_oarchive<weft::detail::oarchive>;
template class basic_binary_iarchive<weft::detail::iarchive>;
template class binary_oarchive_impl<weft::detail::oarchive, char, std::char_traits<char>>;
template class binary_iarchive_impl<weft::detail::iarchive, char, std::char_traits<char>>;
} // namespace boost::archive

namespace weft::detail {

namespace {

/// Stack kept free below the deepest (de)serialization frame: room for the
/// frames of one more level and for throwing the error.
constexpr std::size_t stack_reserve = 64 * 1024;

struct thread_stack {
  const char* low = nullptr;
  std::size_t size = 0;
  thread_stack() {
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
      void* addr = nullptr;
      std::size_t sz = 0;
      if (pthread_attr_getstack(&attr, &addr, &sz) == 0) {
        low = static_cast<const char*>(addr);
        size = sz;
      }
      pthread_attr_destroy(&attr);
    }
  }
};

const char* floor_of(const char* low, std::size_t size) noexcept { return low + std::min(stack_reserve, size / 2); }

} // namespace

const char* serialization_stack_floor() noexcept {
  if (fiber* f = current_fiber(); f && f->stack_low())
    return floor_of(static_cast<const char*>(f->stack_low()), f->stack_size());
  thread_local const thread_stack ts;
  return ts.low ? floor_of(ts.low, ts.size) : nullptr;
}

void throw_too_deep(bool saving) {
  throw serialization_error(std::string("weft: cannot ") + (saving ? "serialize" : "deserialize") +
                            " a structure nested this deep: it would overflow the stack. Flatten it (a "
                            "long chain of pointers, e.g. a linked list, can be sent as a std::vector), or "
                            "give tasks larger stacks (config::fiber_stack_size)");
}

void throw_bad_length(const char* what, std::size_t n, std::size_t left) {
  throw serialization_error("weft: corrupted or truncated input: a " + std::string(what) + " of " + std::to_string(n) +
                            " but only " + std::to_string(left) + " bytes are left");
}

void throw_bad_bool(unsigned value) {
  throw serialization_error("weft: corrupted input: a bool byte of " + std::to_string(value) + "; expected 0 or 1");
}

void throw_bad_variant_index(std::uint32_t index, std::size_t alternatives) {
  throw serialization_error("weft: corrupted input: std::variant alternative " + std::to_string(index) +
                            " but the variant has " + std::to_string(alternatives));
}

void throw_handle_not_sendable(const char* what) {
  throw serialization_error(std::string("weft: ") + what +
                            " cannot be sent to a worker process yet (only values can); pass the value "
                            "itself, or run this work in local mode (see docs/processes.md)");
}

namespace {
/// "weft: x" -> "x": weft's own messages are nested into one that names the type.
std::string strip_prefix(const char* why) {
  std::string s(why);
  if (s.rfind("weft: ", 0) == 0)
    s.erase(0, 6);
  return s;
}
} // namespace

void throw_encode_failed(const std::type_info& type, const char* why) {
  throw serialization_error("weft: cannot serialize a value of type " + demangled(type.name()) + ": " +
                            strip_prefix(why));
}

void throw_decode_failed(const std::type_info& type, const char* why) {
  throw serialization_error("weft: cannot deserialize a value of type " + demangled(type.name()) +
                            " (truncated, corrupted or from another build?): " + strip_prefix(why));
}

void throw_trailing_bytes(const std::type_info& type, std::size_t left) {
  throw serialization_error("weft: " + std::to_string(left) + " bytes left over after a value of type " +
                            demangled(type.name()) + "; the input holds more than one value or is corrupted");
}

} // namespace weft::detail
