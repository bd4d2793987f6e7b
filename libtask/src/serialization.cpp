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

// ---- iarchive: Boost's class and object numbering, checked ----
//
// Boost's basic_iarchive (compiled into libboost_serialization) reads, for a
// pointer: a class id (-1 for null); for a class id it has not seen yet, the
// class's exported name; for a class seen for the first time, its preamble
// (tracking flag, version); then, for a tracked class, an object id: a new
// one, or one it already read (a back-reference: it returns that object's
// address, whatever it was). For an object loaded by value: the preamble and
// the object id, the same way. It indexes its tables with these numbers
// unchecked. The hooks below see each number right after it is read and
// before Boost uses it, and keep the same tables (which class has which id,
// which object which id, what is being read next) to judge it.

namespace {
const char* owner_name(pointer_owner owner) {
  switch (owner) {
  case pointer_owner::unique:
    return "a unique_ptr";
  case pointer_owner::shared:
    return "a shared_ptr";
  case pointer_owner::raw:
    break;
  }
  return "a raw pointer";
}
} // namespace

iarchive::~iarchive() {
  if (!committed_)
    release_after_failure();
}

void iarchive::release_after_failure() noexcept {
  // Objects shared_ptrs took may point to each other (a cycle read in part):
  // empty them; their control blocks (held here until the end) free them.
  // Emptying one can free objects it owned through unique_ptrs, never one a
  // shared_ptr took (each has a reference held here).
  for (allocation& a : allocations_)
    if (a.control && a.constructed && a.reset != nullptr)
      a.reset(a.address);
  // Objects no smart pointer took (being loaded when the decode failed, or
  // refused right after): nothing else will free them. Those a raw pointer of
  // the user's class holds are that class's business.
  for (allocation& a : allocations_)
    if (!a.adopted && !a.raw_held && a.constructed)
      classes_[static_cast<std::size_t>(a.class_index)].bis->destroy(a.address);
}

void iarchive::corrupted(const std::string& what) {
  refused_ = true;
  refusal_ = "weft: corrupted input: " + what;
  throw serialization_error(refusal_);
}

void iarchive::check_not_refused() {
  if (refused_)
    throw serialization_error(refusal_);
}

std::string iarchive::class_name(int class_index) const {
  const auto& eti = classes_[static_cast<std::size_t>(class_index)].bis->get_eti();
  if (const char* key = eti.get_key(); key != nullptr && key[0] != '\0')
    return key;
  if (const char* info = eti.get_debug_info(); info != nullptr)
    return demangled(info);
  return "(unnamed)";
}

int iarchive::register_class(const basic_iserializer& bis) {
  if (&bis == last_bis_) // a collection's elements: one class after the other
    return last_class_;
  int index = -1;
  for (std::size_t i = 0; i < classes_.size() && index < 0; ++i)
    if (classes_[i].bis == &bis)
      index = static_cast<int>(i);
  // Boost keys its class table by extended_type_info's order (one class may
  // have several serializer objects, one per module).
  for (std::size_t i = 0; i < classes_.size() && index < 0; ++i) {
    const auto& known = classes_[i].bis->get_eti();
    if (!(known < bis.get_eti()) && !(bis.get_eti() < known))
      index = static_cast<int>(i);
  }
  if (index < 0) {
    index = static_cast<int>(classes_.size());
    classes_.push_back(class_entry{&bis, false, bis.tracking(this->get_flags())});
  }
  last_bis_ = &bis;
  last_class_ = index;
  return index;
}

iarchive::frame& iarchive::expect(step s, const char* what) {
  check_not_refused();
  if (frames_.empty() || frames_.back().next != s)
    corrupted(std::string("unexpected ") + what);
  return frames_.back();
}

void iarchive::register_basic_serializer(const basic_iserializer& bis) {
  check_not_refused();
  register_class(bis);
  this->basic::register_basic_serializer(bis);
}

// load_object and load_pointer are one level of every nested structure, so
// the stack they keep while the structure's contents load limits the depth
// a decode reaches. load_object keeps none: its frame of the numbering is
// popped as soon as Boost has read the numbers (or knows it reads none),
// and it ends in a tail call. load_pointer keeps a small one.
//
// An exception that passes through load_pointer refuses the archive (a
// serialize that catches one and goes on gets serialization_error at the
// next number); an object frame left behind by an exception is popped by
// the pointer frame below it.

void iarchive::load_object(void* t, const basic_iserializer& bis) {
  open_object(t, bis);
  this->basic::load_object(t, bis);
}

void iarchive::open_object(void* t, const basic_iserializer& bis) {
  check_not_refused();
  const int class_index = register_class(bis);
  const class_entry& c = classes_[static_cast<std::size_t>(class_index)];
  if (c.initialized && !c.tracked) // Boost reads no number
    return;
  if (!frames_.empty()) {
    // The contents of the object a pointer just allocated: Boost reads no
    // number here.
    const frame& top = frames_.back();
    if (top.pointer && top.next == step::contents && top.class_index == class_index &&
        allocations_[top.allocation].address == t)
      return;
  }
  frame& f = frames_.emplace_back();
  f.class_index = class_index;
  enter_class(f);
}

const boost::archive::detail::basic_pointer_iserializer*
iarchive::load_pointer(void*& t, const basic_pointer_iserializer* bpis, finder_type finder) {
  begin_pointer(bpis, finder);
  try {
    bpis = this->basic::load_pointer(t, bpis, finder);
  } catch (...) {
    refuse_after_exception();
    throw;
  }
  end_pointer(t);
  return bpis;
}

void iarchive::begin_pointer(const basic_pointer_iserializer* bpis, finder_type finder) {
  check_not_refused();
  frame& f = frames_.emplace_back();
  f.pointer = true;
  f.next = step::class_id;
  f.owner = next_owner_;
  f.declared = bpis;
  f.finder = finder;
  next_owner_ = pointer_owner::raw;
}

void iarchive::refuse_after_exception() noexcept {
  if (!refused_) {
    refused_ = true;
    refusal_ = "weft: corrupted input: the decode failed earlier";
  }
}

void iarchive::end_pointer(void* t) {
  check_not_refused();
  while (!frames_.empty() && !frames_.back().pointer) // left by an exception a serialize caught
    frames_.pop_back();
  if (frames_.empty())
    corrupted("a pointer ended that was not begun"); // cannot happen: Boost calls load_pointer
  const step next = frames_.back().next;
  const std::size_t index = frames_.back().allocation;
  frames_.pop_back();
  if (next != step::done && next != step::contents)
    corrupted("a pointer ended before its class and object were read"); // Boost read less than expected
  last_allocation_ = index;
  if (index == no_index) // null
    return;
  allocation& a = allocations_[index];
  if (next == step::contents) { // a new object, now loaded
    if (a.address == nullptr)
      a.address = t;
    a.constructed = true;
  }
  if (t != a.address)
    corrupted("a pointer to an object of class " + class_name(a.class_index) + " at an address other than its own");
}

void iarchive::enter_class(frame& f) {
  class_entry& c = classes_[static_cast<std::size_t>(f.class_index)];
  if (!c.initialized) {
    if (c.bis->class_info()) {
      f.next = step::tracking;
      return;
    }
    c.initialized = true;
  }
  begin_object(f);
}

void iarchive::begin_object(frame& f) {
  if (classes_[static_cast<std::size_t>(f.class_index)].tracked) {
    f.next = step::object_id;
    return;
  }
  if (f.pointer)
    new_object(f, false);
  else
    next_step(f, step::contents);
}

void iarchive::next_step(frame& f, step s) {
  f.next = s;
  if (!f.pointer) // an object frame is done once its numbers are read (f is the top frame)
    frames_.pop_back();
}

void iarchive::new_object(frame& f, bool tracked) {
  if (f.pointer) {
    allocation a;
    a.class_index = f.class_index;
    a.owner = f.owner;
    // A raw pointer member holds the object from its allocation on.
    a.raw_held = f.owner == pointer_owner::raw;
    allocations_.push_back(std::move(a));
    f.allocation = allocations_.size() - 1;
  }
  if (tracked)
    objects_.push_back(object_entry{f.class_index, f.pointer, f.allocation});
  next_step(f, step::contents);
}

void iarchive::back_reference(frame& f, std::size_t id) {
  const object_entry& o = objects_[id];
  const auto object = [&] { return "object #" + std::to_string(id) + " (" + class_name(o.class_index) + ")"; };
  if (!f.pointer) {
    // Boost reads the object as already loaded and leaves this one as it is.
    // An encoder writes that only for the same object sent by value twice.
    if (o.through_pointer || o.class_index != f.class_index)
      corrupted("a value of class " + class_name(f.class_index) + " refers back to " + object() +
                (o.through_pointer ? ", which was loaded through a pointer" : ""));
    next_step(f, step::done);
    return;
  }
  if (!o.through_pointer)
    corrupted("a pointer back-reference to " + object() +
              ", which was loaded by value, not through a pointer (a smart pointer would own memory it "
              "did not allocate)");
  if (o.class_index != f.class_index)
    corrupted("a pointer back-reference to " + object() + " says the object is a " + class_name(f.class_index) +
              " (type confusion)");
  allocation& a = allocations_[o.allocation];
  if (!a.constructed)
    corrupted("a pointer back-reference to " + object() + " before that object is constructed");
  switch (f.owner) {
  case pointer_owner::unique:
    if (a.owner != pointer_owner::raw)
      corrupted("a unique_ptr back-reference to " + object() + ", which " + owner_name(a.owner) +
                " already owns (a unique_ptr object has one owner)");
    a.owner = pointer_owner::unique;
    break;
  case pointer_owner::shared:
    if (a.owner == pointer_owner::unique)
      corrupted("a shared_ptr back-reference to " + object() +
                ", which a unique_ptr already owns (a unique_ptr object has one owner)");
    a.owner = pointer_owner::shared;
    break;
  case pointer_owner::raw:
    break; // an observer
  }
  f.allocation = o.allocation;
  f.next = step::done;
}

void iarchive::load_override(boost::archive::class_id_type& t) {
  this->binary::load_override(t);
  frame& f = expect(step::class_id, "class id");
  const int id = t;
  if (id == -1) { // BOOST_SERIALIZATION_NULL_POINTER_TAG
    f.next = step::done;
    return;
  }
  const auto known = classes_.size();
  if (id < 0)
    corrupted("class id " + std::to_string(id) + " is negative");
  // A pointer to a class it has not numbered yet comes with the class's
  // name, and only for a pointer to a polymorphic base (or the class would be
  // the pointer's own, numbered before the pointer was read).
  const bool may_be_new = f.declared == nullptr || f.declared->get_basic_serializer().is_polymorphic();
  if (static_cast<std::size_t>(id) > known || (static_cast<std::size_t>(id) == known && !may_be_new))
    corrupted("class id " + std::to_string(id) + " is out of range: " + std::to_string(known) +
              " classes are numbered at this point");
  if (static_cast<std::size_t>(id) == known) {
    f.next = step::class_name;
    return;
  }
  if (classes_[static_cast<std::size_t>(id)].bis->get_bpis_ptr() == nullptr)
    corrupted("class id " + std::to_string(id) + " is " + class_name(id) +
              ", which this program never loads through a pointer");
  f.class_index = id;
  enter_class(f);
}

void iarchive::load_override(boost::archive::class_name_type& t) {
  this->binary::load_override(t);
  frame& f = expect(step::class_name, "class name");
  const char* key = t.t;
  const boost::serialization::extended_type_info* eti =
    key[0] != '\0' ? boost::serialization::extended_type_info::find(key) : nullptr;
  if (eti == nullptr)
    corrupted("unregistered class '" + std::string(key) + "' (no class of this program has that name)");
  const basic_pointer_iserializer* bpis = f.finder(*eti);
  if (bpis == nullptr)
    corrupted("class '" + std::string(key) + "' cannot be loaded through a pointer by this program");
  const std::size_t id = classes_.size();
  const int index = register_class(bpis->get_basic_serializer());
  if (static_cast<std::size_t>(index) != id)
    corrupted("class id " + std::to_string(id) + " is new, but its name '" + key + "' is class id " +
              std::to_string(index));
  f.class_index = index;
  enter_class(f);
}

void iarchive::load_override(boost::archive::tracking_type& t) {
  unsigned char c = 0;
  this->load_binary(&c, 1);
  frame& f = expect(step::tracking, "tracking flag");
  const bool local = classes_[static_cast<std::size_t>(f.class_index)].tracked;
  if (c > 1 || (c != 0) != local)
    corrupted("tracking flag " + std::to_string(c) + " for class " + class_name(f.class_index) + "; expected " +
              (local ? "1" : "0"));
  t = boost::archive::tracking_type(local);
  f.next = step::version;
}

void iarchive::load_override(boost::archive::version_type& t) {
  this->binary::load_override(t);
  frame& f = expect(step::version, "class version");
  class_entry& c = classes_[static_cast<std::size_t>(f.class_index)];
  const auto local = static_cast<std::uint32_t>(c.bis->version());
  if (static_cast<std::uint32_t>(t) != local)
    corrupted("version " + std::to_string(static_cast<std::uint32_t>(t)) + " of class " + class_name(f.class_index) +
              "; this program has version " + std::to_string(local));
  c.initialized = true;
  begin_object(f);
}

void iarchive::load_override(boost::archive::object_id_type& t) {
  this->binary::load_override(t);
  frame& f = expect(step::object_id, "object id");
  const std::size_t id = static_cast<std::uint32_t>(t);
  if (id > objects_.size())
    corrupted("object id " + std::to_string(id) + " is out of range: " + std::to_string(objects_.size()) +
              " objects are numbered at this point");
  if (id == objects_.size())
    new_object(f, true);
  else
    back_reference(f, id);
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

namespace {
thread_local bool tls_decoding = false;
} // namespace

bool decoding_values() noexcept { return tls_decoding; }

decoding_scope::decoding_scope() noexcept : before_(tls_decoding) { tls_decoding = true; }

void decoding_scope::end() noexcept {
  if (!ended_) {
    ended_ = true;
    tls_decoding = before_;
  }
}

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
