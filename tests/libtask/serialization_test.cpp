#include <catch2/catch.hpp>

#include "weft_test.hpp"

#include <pthread.h>

#include <array>
#include <bitset>
#include <chrono>
#include <cmath>
#include <complex>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <forward_list>
#include <functional>
#include <limits>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

using Catch::Contains;
using weft_test::what_of;

// ---- types of the test's own ----

namespace serialization_test {

/// Sendable through a public member serialize.
struct point {
  double x = 0, y = 0;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& x& y;
  }
  bool operator==(const point&) const = default;
};

/// Sendable through a private member serialize and boost's access class.
class account {
public:
  account() = default;
  account(std::string owner, long balance) : owner_(std::move(owner)), balance_(balance) {}
  const std::string& owner() const { return owner_; }
  long balance() const { return balance_; }
  bool operator==(const account&) const = default;

private:
  friend class boost::serialization::access;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& owner_& balance_;
  }
  std::string owner_;
  long balance_ = 0;
};

/// Sendable through a free serialize in its own namespace.
struct rgb {
  std::uint8_t r = 0, g = 0, b = 0;
  bool operator==(const rgb&) const = default;
};
template <class Archive>
void serialize(Archive& ar, rgb& c, unsigned) {
  ar& c.r& c.g& c.b;
}

/// Not sendable: no serialize anywhere.
struct plain {
  int a = 0;
};

/// Sendable, but through a serialize in namespace boost::serialization,
/// which weft cannot see: undetected.
struct hidden {
  int a = 0;
  bool operator==(const hidden&) const = default;
};

/// Like hidden, but declared sendable by specializing weft::is_serializable.
struct declared {
  int a = 0;
  bool operator==(const declared&) const = default;
};

enum class suit : std::uint8_t { clubs, diamonds, hearts, spades };
enum legacy_color { red = 1, green = 2, blue = 4 };
enum class wide : std::int32_t { low = std::numeric_limits<std::int32_t>::min(), high = 0x7fffffff };

/// A singly linked list node: the shape of every pointer chain below.
struct node {
  int value = 0;
  std::string label;
  std::shared_ptr<node> next;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& value& label& next;
  }
};

/// A tree nested by value (no pointers): depth comes from the data.
struct tree {
  int value = 0;
  std::vector<tree> kids;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& value& kids;
  }
};

/// A polymorphic hierarchy sent through a pointer to its base.
struct shape {
  virtual ~shape() = default;
  virtual double area() const = 0;
  template <class Archive>
  void serialize(Archive&, unsigned) {}
};
struct circle : shape {
  double radius = 0;
  circle() = default;
  explicit circle(double r) : radius(r) {}
  double area() const override { return 3.0 * radius * radius; }
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& boost::serialization::base_object<shape>(*this) & radius;
  }
};
struct square : shape {
  double side = 0;
  square() = default;
  explicit square(double s) : side(s) {}
  double area() const override { return side * side; }
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& boost::serialization::base_object<shape>(*this) & side;
  }
};
/// Serializable, but never registered.
struct triangle : shape {
  double base = 0, height = 0;
  double area() const override { return base * height / 2; }
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& boost::serialization::base_object<shape>(*this) & base& height;
  }
};

/// Everything a typical message holds, without pointers.
struct record {
  std::string name;
  std::vector<double> samples;
  std::map<std::string, int> counts;
  std::optional<std::string> note;
  std::variant<int, std::string, point> tag;
  std::tuple<int, bool, char> flags{};
  std::list<account> accounts;
  std::set<int> ids;
  std::array<rgb, 2> palette{};
  suit s = suit::clubs;
  bool operator==(const record&) const = default;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& name& samples& counts& note& tag& flags& accounts& ids& palette& s;
  }
};

/// A record, plus pointers: shared objects, a cycle and a polymorphic member.
struct graph {
  std::vector<std::shared_ptr<node>> nodes;
  std::unique_ptr<shape> outline;
  std::shared_ptr<shape> shared_outline;
  record meta;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& nodes& outline& shared_outline& meta;
  }
};

/// Counts its live instances: a refused decode must leave none behind.
struct counted {
  static inline int live = 0;
  int value = 0;
  std::shared_ptr<counted> next;
  std::unique_ptr<counted> child;
  counted() noexcept { ++live; }
  counted(const counted&) = delete;
  counted& operator=(const counted&) = delete;
  ~counted() { --live; }
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& value& next& child;
  }
};

/// An object owned by a unique_ptr and observed by a raw pointer, read
/// owner first or observer first.
struct owner_then_observer {
  std::unique_ptr<point> owner;
  point* observer = nullptr;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& owner& observer;
  }
};
/// A raw pointer to another member, sent by value before it.
struct member_and_pointer {
  point member;
  point* pointer = nullptr;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& member& pointer;
  }
};
struct observer_then_owner {
  point* observer = nullptr;
  std::unique_ptr<point> owner;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& observer& owner;
  }
};

} // namespace serialization_test

namespace boost::serialization {
template <class Archive>
void serialize(Archive& ar, serialization_test::hidden& h, unsigned) {
  ar& h.a;
}
template <class Archive>
void serialize(Archive& ar, serialization_test::declared& d, unsigned) {
  ar& d.a;
}
} // namespace boost::serialization

template <>
struct weft::is_serializable<serialization_test::declared> : std::true_type {};

WEFT_REGISTER_CLASS(serialization_test::circle)
WEFT_REGISTER_CLASS(serialization_test::square)

// ---- compile-time contracts: what is_serializable_v says ----

namespace st = serialization_test;

static_assert(weft::is_serializable_v<int>);
static_assert(weft::is_serializable_v<const double&>);
static_assert(weft::is_serializable_v<bool>);
static_assert(weft::is_serializable_v<st::suit>);
static_assert(weft::is_serializable_v<st::legacy_color>);
static_assert(weft::is_serializable_v<std::string>);
static_assert(weft::is_serializable_v<std::vector<std::map<std::string, std::set<int>>>>);
static_assert(weft::is_serializable_v<std::unordered_map<std::string, std::deque<std::list<int>>>>);
static_assert(weft::is_serializable_v<std::forward_list<std::multiset<int>>>);
static_assert(weft::is_serializable_v<std::array<std::pair<int, std::string>, 3>>);
static_assert(weft::is_serializable_v<std::tuple<int, std::optional<std::string>, std::variant<std::monostate, int>>>);
static_assert(weft::is_serializable_v<std::unique_ptr<st::point>>);
static_assert(weft::is_serializable_v<std::shared_ptr<st::shape>>);
static_assert(weft::is_serializable_v<std::complex<double>>);
static_assert(weft::is_serializable_v<std::bitset<12>>);
static_assert(weft::is_serializable_v<st::point>);
static_assert(weft::is_serializable_v<st::account>); // private serialize
static_assert(weft::is_serializable_v<st::rgb>);     // free serialize
static_assert(weft::is_serializable_v<std::vector<st::account>>);
static_assert(weft::is_serializable_v<st::node>);
static_assert(weft::is_serializable_v<st::tree>);
static_assert(weft::is_serializable_v<st::declared>); // specialized
static_assert(weft::is_serializable_v<weft::object_ref<int>>);

static_assert(!weft::is_serializable_v<st::plain>);
static_assert(!weft::is_serializable_v<std::vector<st::plain>>);
static_assert(!weft::is_serializable_v<std::map<int, st::plain>>);
static_assert(!weft::is_serializable_v<std::map<st::plain, int>>);
static_assert(!weft::is_serializable_v<std::optional<st::plain>>);
static_assert(!weft::is_serializable_v<std::variant<int, st::plain>>);
static_assert(!weft::is_serializable_v<std::tuple<int, st::plain>>);
static_assert(!weft::is_serializable_v<std::pair<st::plain, int>>);
static_assert(!weft::is_serializable_v<std::array<st::plain, 2>>);
static_assert(!weft::is_serializable_v<std::shared_ptr<int>>);
static_assert(!weft::is_serializable_v<std::unique_ptr<double>>);
static_assert(!weft::is_serializable_v<std::shared_ptr<st::plain>>);
static_assert(!weft::is_serializable_v<int*>);
static_assert(!weft::is_serializable_v<st::point*>);
static_assert(!weft::is_serializable_v<std::function<int(int)>>);
static_assert(!weft::is_serializable_v<decltype([](int x) { return x; })>);
static_assert(!weft::is_serializable_v<st::hidden>); // the one form weft cannot see

// ---- helpers ----

namespace {

/// to_bytes then from_bytes.
template <class T>
T round_trip(const T& value) {
  return weft::from_bytes<T>(weft::to_bytes(value));
}

/// A list of `length` nodes, values 0..length-1.
std::shared_ptr<st::node> make_list(int length) {
  std::shared_ptr<st::node> head;
  for (int i = length - 1; i >= 0; --i) {
    auto n = std::make_shared<st::node>();
    n->value = i;
    n->next = std::move(head);
    head = std::move(n);
  }
  return head;
}

/// Frees a list without recursion (the default destructor recurses once per
/// node and would overflow the stack on a long list). Breaks a cycle, too.
void destroy_list(std::shared_ptr<st::node>& head) {
  std::shared_ptr<st::node> cur = std::move(head);
  while (cur) {
    std::shared_ptr<st::node> next = std::move(cur->next);
    cur = std::move(next);
  }
}

/// Number of nodes of a list, and whether values run 0, 1, 2, ...
std::size_t checked_length(const std::shared_ptr<st::node>& head) {
  std::size_t n = 0;
  for (const st::node* p = head.get(); p; p = p->next.get()) {
    if (p->value != static_cast<int>(n))
      return std::numeric_limits<std::size_t>::max();
    ++n;
  }
  return n;
}

/// A chain of trees nested by value, `depth` levels.
st::tree make_deep_tree(int depth) {
  st::tree t;
  for (int i = 0; i < depth; ++i) {
    st::tree parent;
    parent.value = i;
    parent.kids.push_back(std::move(t));
    t = std::move(parent);
  }
  return t;
}

void destroy_tree(st::tree& t) {
  while (!t.kids.empty()) {
    st::tree kid = std::move(t.kids.front());
    t = std::move(kid);
  }
}

/// Runs `f` on a new thread with a stack of `stack_size` bytes and waits for
/// it; rethrows what `f` threw.
void run_with_stack(std::size_t stack_size, const std::function<void()>& f) {
  struct job {
    const std::function<void()>* f;
    std::exception_ptr error;
  } j{&f, {}};
  pthread_attr_t attr;
  REQUIRE(pthread_attr_init(&attr) == 0);
  REQUIRE(pthread_attr_setstacksize(&attr, stack_size) == 0);
  pthread_t thread;
  const int rc = pthread_create(
    &thread, &attr,
    [](void* arg) -> void* {
      auto* jp = static_cast<job*>(arg);
      try {
        (*jp->f)();
      } catch (...) {
        jp->error = std::current_exception();
      }
      return nullptr;
    },
    &j);
  pthread_attr_destroy(&attr);
  REQUIRE(rc == 0);
  REQUIRE(pthread_join(thread, nullptr) == 0);
  if (j.error)
    std::rethrow_exception(j.error);
}

constexpr std::size_t small_stack = 256 * 1024;
constexpr std::size_t big_stack = 256 * 1024 * 1024; // virtual; touched pages only

/// Overwrites 8 bytes at `offset` with `value`, little-endian (the archive's
/// byte order on every platform weft builds for).
void put_u64(std::vector<std::byte>& bytes, std::size_t offset, std::uint64_t value) {
  REQUIRE(offset + 8 <= bytes.size());
  for (int i = 0; i < 8; ++i)
    bytes[offset + i] = static_cast<std::byte>((value >> (8 * i)) & 0xff);
}

/// Offset of the first 8-byte little-endian `value` in `bytes`.
std::size_t find_u64(const std::vector<std::byte>& bytes, std::uint64_t value) {
  for (std::size_t at = 0; at + 8 <= bytes.size(); ++at) {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i)
      v |= std::uint64_t(std::to_integer<unsigned>(bytes[at + i])) << (8 * i);
    if (v == value)
      return at;
  }
  FAIL("value not found in the encoding");
  return 0;
}

st::record sample_record() {
  st::record r;
  r.name = "sensor-7";
  r.samples = {1.5, -2.25, 1e300, 0.0};
  r.counts = {{"alpha", 1}, {"beta", -2}, {"", 0}};
  r.note = "calibrated";
  r.tag = st::point{3, 4};
  r.flags = {42, true, 'z'};
  r.accounts = {st::account("ann", 100), st::account("bob", -5)};
  r.ids = {3, 1, 4, 1, 5, 9};
  r.palette = {st::rgb{1, 2, 3}, st::rgb{255, 0, 128}};
  r.s = st::suit::hearts;
  return r;
}

/// A graph with two nodes shared by the vector, a three-node cycle, and
/// polymorphic members. Call break_cycles on it (and on any copy decoded
/// from it) before it goes out of scope.
st::graph sample_graph() {
  st::graph g;
  auto a = std::make_shared<st::node>();
  auto b = std::make_shared<st::node>();
  auto c = std::make_shared<st::node>();
  a->value = 1;
  a->label = "a";
  b->value = 2;
  b->label = "b";
  c->value = 3;
  c->label = "c";
  a->next = b;
  b->next = c;
  c->next = a;
  g.nodes = {a, b, a, c};
  g.outline = std::make_unique<st::circle>(2.0);
  g.shared_outline = std::make_shared<st::square>(3.0);
  g.meta = sample_record();
  return g;
}

void break_cycles(st::graph& g) {
  for (auto& n : g.nodes)
    if (n)
      n->next.reset();
}

/// Boost's binary encoding, written by hand for the tests of hostile input
/// (no header; little-endian): a class seen for the first time is preceded
/// by its preamble (tracking flag, version), a tracked object by its object
/// id, a pointer by its class id (-1: null; a new class id of a polymorphic
/// class: followed by the class's exported name). Each test first checks
/// that its untampered layout is what weft::to_bytes writes.
struct layout {
  std::vector<std::byte> bytes;
  layout& le(std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i)
      bytes.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xff));
    return *this;
  }
  layout& preamble(unsigned tracking, std::uint32_t version) { return le(tracking, 1).le(version, 4); }
  layout& class_id(int id) { return le(static_cast<std::uint16_t>(id), 2); }
  layout& object_id(std::uint32_t id) { return le(id, 4); }
  layout& i32(std::int32_t v) { return le(static_cast<std::uint32_t>(v), 4); }
  layout& f64(double v) {
    std::uint64_t u = 0;
    std::memcpy(&u, &v, 8);
    return le(u, 8);
  }
  layout& str(std::string_view s) {
    le(s.size(), 8);
    for (char c : s)
      bytes.push_back(static_cast<std::byte>(c));
    return *this;
  }
};

/// The serialization_error `bytes` get when decoded as T.
template <class T>
std::string refusal(const std::vector<std::byte>& bytes) {
  return what_of<weft::serialization_error>([&] { (void)weft::from_bytes<T>(bytes); });
}

/// Breaks every `next` cycle among the counted objects reachable from `roots`.
void break_counted(const std::vector<std::shared_ptr<st::counted>>& roots) {
  std::vector<st::counted*> work;
  std::set<st::counted*> seen;
  for (const auto& r : roots)
    work.push_back(r.get());
  std::vector<std::shared_ptr<st::counted>> keep;
  while (!work.empty()) {
    st::counted* c = work.back();
    work.pop_back();
    if (c == nullptr || !seen.insert(c).second)
      continue;
    work.push_back(c->next.get());
    work.push_back(c->child.get());
    keep.push_back(std::move(c->next));
  }
}

/// Decodes `bytes` as T; true when it decoded, false on serialization_error.
/// Any other exception escapes and fails the test.
template <class T>
bool decodes(const std::vector<std::byte>& bytes) {
  try {
    (void)weft::from_bytes<T>(bytes);
    return true;
  } catch (const weft::serialization_error&) {
    return false;
  }
}

} // namespace

// ---- round trips: arithmetic types and enums ----

TEST_CASE("arithmetic types round-trip with their exact values") {
  CHECK(round_trip(0) == 0);
  CHECK(round_trip(std::numeric_limits<int>::min()) == std::numeric_limits<int>::min());
  CHECK(round_trip(std::numeric_limits<std::int64_t>::max()) == std::numeric_limits<std::int64_t>::max());
  CHECK(round_trip(std::numeric_limits<std::uint64_t>::max()) == std::numeric_limits<std::uint64_t>::max());
  CHECK(round_trip(std::int8_t{-128}) == -128);
  CHECK(round_trip(std::uint16_t{65535}) == 65535);
  CHECK(round_trip('x') == 'x');
  CHECK(round_trip(char32_t{0x1F600}) == char32_t{0x1F600});
  CHECK(round_trip(true) == true);
  CHECK(round_trip(false) == false);
  CHECK(round_trip(3.5f) == 3.5f);
  CHECK(round_trip(-0.1) == -0.1);
  CHECK(round_trip(std::numeric_limits<double>::denorm_min()) == std::numeric_limits<double>::denorm_min());
  CHECK(round_trip(std::numeric_limits<double>::infinity()) == std::numeric_limits<double>::infinity());
  CHECK(std::isnan(round_trip(std::numeric_limits<double>::quiet_NaN())));
  CHECK(round_trip(1.25L) == 1.25L);
}

namespace {
/// What the archive itself writes for `values` (arithmetic ones skip it).
template <class... T>
std::string archive_bytes(const T&... values) {
  std::string out;
  weft::detail::string_sink sink(out);
  weft::detail::oarchive ar(sink);
  ((ar << values), ...);
  return out;
}
} // namespace

TEST_CASE("arithmetic values skip the archive but keep its bytes both ways") {
  const auto same = [](auto value) {
    using T = decltype(value);
    std::string fast;
    weft::detail::encode_each(fast, value);
    CHECK(fast == archive_bytes(value));
    T back{};
    weft::detail::decode_each(archive_bytes(value), back);
    CHECK(std::memcmp(&back, &value, sizeof(T)) == 0);
  };
  same(-7);
  same(std::int8_t{-128});
  same(std::uint16_t{65535});
  same(std::numeric_limits<std::int64_t>::min());
  same(std::numeric_limits<std::uint64_t>::max());
  same('x');
  same(char32_t{0x1F600});
  same(true);
  same(false);
  same(3.5f);
  same(-0.1);
  // Several values: one after the other, as the archive writes them.
  std::string pack;
  weft::detail::encode_each(pack, 1, 2.5, true, std::int64_t{-3});
  CHECK(pack == archive_bytes(1, 2.5, true, std::int64_t{-3}));
  int a = 0;
  double b = 0;
  bool c = false;
  std::int64_t d = 0;
  weft::detail::decode_each(pack, a, b, c, d);
  CHECK((a == 1 && b == 2.5 && c && d == -3));
  CHECK_THAT(what_of<weft::serialization_error>([&] { weft::detail::decode_each(pack.substr(1), a, b, c, d); }),
             Contains("cannot deserialize"));
  CHECK_THAT(what_of<weft::serialization_error>([&] { weft::detail::decode_each(pack + "x", a, b, c, d); }),
             Contains("1 bytes left over"));
  CHECK_THAT(what_of<weft::serialization_error>([&] { weft::detail::decode_each(std::string("\x02"), c); }),
             Contains("bool byte of 2"));
}

TEST_CASE("enums round-trip") {
  CHECK(round_trip(st::suit::spades) == st::suit::spades);
  CHECK(round_trip(st::suit::clubs) == st::suit::clubs);
  CHECK(round_trip(st::blue) == st::blue);
  CHECK(round_trip(st::wide::low) == st::wide::low);
  CHECK(round_trip(st::wide::high) == st::wide::high);
}

// ---- strings ----

TEST_CASE("strings round-trip: empty, with embedded NULs, binary and large") {
  CHECK(round_trip(std::string()).empty());
  CHECK(round_trip(std::string("hello")) == "hello");
  const std::string nuls("a\0b\0\0c", 6);
  CHECK(round_trip(nuls) == nuls);
  CHECK(round_trip(nuls).size() == 6);
  std::string binary;
  for (int i = 0; i < 256; ++i)
    binary.push_back(static_cast<char>(i));
  CHECK(round_trip(binary) == binary);
  std::string large(8 * 1024 * 1024, '\0');
  for (std::size_t i = 0; i < large.size(); ++i)
    large[i] = static_cast<char>('a' + i % 26);
  const auto bytes = weft::to_bytes(large);
  CHECK(bytes.size() >= large.size());
  CHECK(bytes.size() <= large.size() + 16); // a length and the characters, nothing per character
  CHECK(weft::from_bytes<std::string>(bytes) == large);
}

// ---- standard containers ----

TEST_CASE("sequence containers round-trip") {
  CHECK(round_trip(std::vector<int>{}).empty());
  CHECK(round_trip(std::vector<int>{1, -2, 3}) == std::vector<int>{1, -2, 3});
  CHECK(round_trip(std::vector<std::string>{"", "x", std::string(1000, 'y')}) ==
        std::vector<std::string>{"", "x", std::string(1000, 'y')});
  CHECK(round_trip(std::vector<bool>{true, false, true, true}) == std::vector<bool>{true, false, true, true});
  CHECK(round_trip(std::vector<std::vector<double>>{{}, {1.0}, {2.0, 3.0}}) ==
        std::vector<std::vector<double>>{{}, {1.0}, {2.0, 3.0}});
  CHECK(round_trip(std::deque<int>{4, 5, 6}) == std::deque<int>{4, 5, 6});
  CHECK(round_trip(std::list<std::string>{"a", "b"}) == std::list<std::string>{"a", "b"});
  CHECK(round_trip(std::forward_list<int>{7, 8, 9}) == std::forward_list<int>{7, 8, 9});
  CHECK(round_trip(std::forward_list<int>{}).empty());
  std::vector<int> big(100000);
  for (std::size_t i = 0; i < big.size(); ++i)
    big[i] = static_cast<int>(i * 7);
  CHECK(round_trip(big) == big);
}

TEST_CASE("ordered associative containers round-trip") {
  CHECK(round_trip(std::set<int>{3, 1, 2}) == std::set<int>{1, 2, 3});
  CHECK(round_trip(std::multiset<int>{1, 1, 2}) == std::multiset<int>{1, 1, 2});
  const std::map<std::string, std::vector<int>> m{{"a", {1}}, {"b", {}}, {"", {2, 3}}};
  CHECK(round_trip(m) == m);
  const std::multimap<int, std::string> mm{{1, "x"}, {1, "y"}, {2, "z"}};
  CHECK(round_trip(mm) == mm);
  CHECK(round_trip(std::map<int, int>{}).empty());
}

TEST_CASE("unordered containers round-trip") {
  const std::unordered_map<std::string, int> um{{"one", 1}, {"two", 2}, {"three", 3}};
  CHECK(round_trip(um) == um);
  const std::unordered_multimap<int, std::string> umm{{1, "a"}, {1, "b"}, {2, "c"}};
  CHECK(round_trip(umm) == umm);
  const std::unordered_set<std::string> us{"x", "y", "zz"};
  CHECK(round_trip(us) == us);
  const std::unordered_multiset<std::string> ums{"p", "p", "q"};
  CHECK(round_trip(ums) == ums);
  CHECK(round_trip(std::unordered_map<int, int>{}).empty());
}

// Regression: the bucket count Boost stores with an unordered container was
// checked like an element count ("every element takes at least one byte"),
// so a small set of small elements, or one that had reserve()d, could not
// be decoded.
TEST_CASE("unordered containers with more buckets than bytes of elements round-trip") {
  CHECK(round_trip(std::unordered_set<int>{1}) == std::unordered_set<int>{1});
  CHECK(round_trip(std::unordered_set<char>{'a', 'b'}) == std::unordered_set<char>{'a', 'b'});
  std::unordered_map<int, int> reserved{{1, 2}};
  reserved.reserve(1000);
  CHECK(round_trip(reserved) == reserved);
}

// Regression: "every element takes at least one byte" does not hold for
// elements that encode to no bytes at all.
TEST_CASE("collections of empty elements round-trip") {
  CHECK(round_trip(std::vector<std::monostate>(10)).size() == 10);
  CHECK(round_trip(std::vector<std::tuple<>>(100)).size() == 100);
  CHECK(round_trip(std::array<std::monostate, 10>{}).size() == 10);
}

// Regression: Boost writes every enum as an int, so an enum with a wider
// underlying type loses its high bits.
TEST_CASE("enums wider than int round-trip") {
  enum class wide64 : std::int64_t { big = std::int64_t{1} << 40 };
  CHECK(round_trip(wide64::big) == wide64::big);
}

// Regression: alternatives were loaded by type, so a variant with two
// alternatives of one type did not compile.
TEST_CASE("a variant with two alternatives of the same type keeps which one it holds") {
  using v = std::variant<int, int, std::string>;
  const v second(std::in_place_index<1>, 5);
  const v back = round_trip(second);
  CHECK(back.index() == 1);
  CHECK(std::get<1>(back) == 5);
  CHECK(round_trip(v(std::in_place_index<0>, 3)).index() == 0);
}

// Regression: errors found by weft's own checks (lengths, bools, depth)
// did not name the type being decoded.
TEST_CASE("a corrupted length is reported with the type being decoded") {
  auto bytes = weft::to_bytes(std::string("hello"));
  for (std::size_t i = 0; i < 8; ++i)
    bytes[i] = std::byte{0x7f};
  try {
    (void)weft::from_bytes<std::string>(bytes);
    FAIL("expected serialization_error");
  } catch (const weft::serialization_error& e) {
    const std::string what = e.what();
    CHECK(what.find("std::") != std::string::npos);
    CHECK(what.find("string length") != std::string::npos);
  }
}

TEST_CASE("array, pair, complex and bitset round-trip") {
  CHECK(round_trip(std::array<int, 4>{1, 2, 3, 4}) == std::array<int, 4>{1, 2, 3, 4});
  CHECK(round_trip(std::array<std::string, 2>{"a", ""}) == std::array<std::string, 2>{"a", ""});
  CHECK(round_trip(std::pair<int, std::string>{7, "seven"}) == std::pair<int, std::string>{7, "seven"});
  CHECK(round_trip(std::complex<double>(1.5, -2.5)) == std::complex<double>(1.5, -2.5));
  CHECK(round_trip(std::bitset<70>("1010000000000000000000000000000000000000000000000000000000000000000011")) ==
        std::bitset<70>("1010000000000000000000000000000000000000000000000000000000000000000011"));
  CHECK(round_trip(std::bitset<8>(0xA5)) == std::bitset<8>(0xA5));
}

// ---- tuple, optional, variant ----

TEST_CASE("tuples round-trip, empty ones included") {
  using t3 = std::tuple<int, std::string, std::vector<double>>;
  CHECK(round_trip(t3{1, "two", {3.0}}) == t3{1, "two", {3.0}});
  CHECK(round_trip(std::tuple<>{}) == std::tuple<>{});
  using nested = std::tuple<std::tuple<int, char>, std::pair<bool, std::tuple<>>>;
  CHECK(round_trip(nested{{1, 'a'}, {true, {}}}) == nested{{1, 'a'}, {true, {}}});
}

TEST_CASE("optionals round-trip empty and full") {
  CHECK_FALSE(round_trip(std::optional<int>{}).has_value());
  CHECK(round_trip(std::optional<int>{0}) == std::optional<int>{0});
  CHECK(round_trip(std::optional<std::string>{"x"}) == std::optional<std::string>{"x"});
  using opt_vec = std::optional<std::vector<std::optional<int>>>;
  CHECK(round_trip(opt_vec{{std::nullopt, 1, std::nullopt}}) == opt_vec{{std::nullopt, 1, std::nullopt}});
}

TEST_CASE("variants round-trip each alternative, monostate included") {
  using v = std::variant<std::monostate, int, std::string, st::point, std::vector<int>>;
  const auto r0 = round_trip(v{});
  CHECK(r0.index() == 0);
  const auto r1 = round_trip(v{42});
  REQUIRE(r1.index() == 1);
  CHECK(std::get<int>(r1) == 42);
  const auto r2 = round_trip(v{std::string("text")});
  REQUIRE(r2.index() == 2);
  CHECK(std::get<std::string>(r2) == "text");
  const auto r3 = round_trip(v{st::point{1, 2}});
  REQUIRE(r3.index() == 3);
  CHECK(std::get<st::point>(r3) == st::point{1, 2});
  const auto r4 = round_trip(v{std::vector<int>{5, 6}});
  REQUIRE(r4.index() == 4);
  CHECK(std::get<std::vector<int>>(r4) == std::vector<int>{5, 6});
}

// ---- classes of the user's ----

TEST_CASE("a class with a public member serialize round-trips") {
  CHECK(round_trip(st::point{1.5, -2}) == st::point{1.5, -2});
  CHECK(round_trip(std::vector<st::point>{{1, 2}, {3, 4}}) == std::vector<st::point>{{1, 2}, {3, 4}});
}

TEST_CASE("a class with a private serialize and access as friend round-trips") {
  const auto a = round_trip(st::account("carol", 1234567890123L));
  CHECK(a.owner() == "carol");
  CHECK(a.balance() == 1234567890123L);
  CHECK(round_trip(std::map<int, st::account>{{1, st::account("d", 1)}}) ==
        std::map<int, st::account>{{1, st::account("d", 1)}});
}

TEST_CASE("a class with a free serialize in its namespace round-trips") {
  CHECK(round_trip(st::rgb{10, 20, 30}) == st::rgb{10, 20, 30});
  CHECK(round_trip(std::optional<st::rgb>{st::rgb{1, 2, 3}}) == std::optional<st::rgb>{st::rgb{1, 2, 3}});
}

TEST_CASE("a class with serialize in namespace boost::serialization round-trips once declared serializable") {
  CHECK(round_trip(st::declared{5}) == st::declared{5});
  CHECK(round_trip(std::vector<st::declared>{{1}, {2}}) == std::vector<st::declared>{{1}, {2}});
}

TEST_CASE("a record of nested standard and user types round-trips") {
  const auto r = sample_record();
  CHECK(round_trip(r) == r);
  CHECK(round_trip(st::record{}) == st::record{});
}

// ---- smart pointers ----

TEST_CASE("unique_ptr and shared_ptr of classes round-trip, null included") {
  const auto u = round_trip(std::make_unique<st::point>(st::point{1, 2}));
  REQUIRE(u);
  CHECK(*u == st::point{1, 2});
  CHECK_FALSE(round_trip(std::unique_ptr<st::point>{}));
  const auto s = round_trip(std::make_shared<st::account>("eve", 3));
  REQUIRE(s);
  CHECK(*s == st::account("eve", 3));
  CHECK(s.use_count() == 1);
  CHECK_FALSE(round_trip(std::shared_ptr<st::account>{}));
}

TEST_CASE("a derived class sent through a base pointer comes back as the derived class") {
  const std::unique_ptr<st::shape> u = std::make_unique<st::circle>(1.5);
  const auto u2 = round_trip(u);
  REQUIRE(u2);
  const auto* c = dynamic_cast<const st::circle*>(u2.get());
  REQUIRE(c);
  CHECK(c->radius == 1.5);

  const std::shared_ptr<st::shape> s = std::make_shared<st::square>(4.0);
  const auto s2 = round_trip(s);
  REQUIRE(s2);
  const auto* q = dynamic_cast<const st::square*>(s2.get());
  REQUIRE(q);
  CHECK(q->side == 4.0);
  CHECK(s2->area() == 16.0);

  std::vector<std::shared_ptr<st::shape>> mixed{std::make_shared<st::circle>(1.0), std::make_shared<st::square>(2.0),
                                                nullptr};
  const auto mixed2 = round_trip(mixed);
  REQUIRE(mixed2.size() == 3);
  CHECK(dynamic_cast<const st::circle*>(mixed2[0].get()));
  CHECK(dynamic_cast<const st::square*>(mixed2[1].get()));
  CHECK_FALSE(mixed2[2]);
}

TEST_CASE("an unregistered derived class sent through a base pointer is a serialization_error") {
  std::unique_ptr<st::shape> t = std::make_unique<st::triangle>();
  const auto msg = what_of<weft::serialization_error>([&] { (void)weft::to_bytes(t); });
  CHECK_THAT(msg, Contains("cannot serialize"));
  CHECK_THAT(msg, Contains("shape"));        // the type being sent
  CHECK_THAT(msg, Contains("unregistered")); // and what is wrong with it
  std::shared_ptr<st::shape> s = std::make_shared<st::triangle>();
  CHECK_THROWS_AS(weft::to_bytes(s), weft::serialization_error);
  CHECK_THROWS_AS(weft::to_bytes(std::vector<std::shared_ptr<st::shape>>{s}), weft::serialization_error);
  // A registered class still works afterwards.
  CHECK(round_trip(std::unique_ptr<st::shape>(std::make_unique<st::circle>(2.0))));
}

TEST_CASE("an unknown class name in the input is a serialization_error") {
  auto bytes = weft::to_bytes(std::unique_ptr<st::shape>(std::make_unique<st::circle>(2.0)));
  const std::string key = "serialization_test::circle";
  const std::string_view view(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  const auto at = view.find(key);
  REQUIRE(at != std::string_view::npos); // the registered name travels with the object
  bytes[at + key.size() - 1] = std::byte{'X'};
  const auto msg =
    what_of<weft::serialization_error>([&] { (void)weft::from_bytes<std::unique_ptr<st::shape>>(bytes); });
  CHECK_THAT(msg, Contains("cannot deserialize"));
  CHECK_THAT(msg, Contains("shape"));
  CHECK_THAT(msg, Contains("unregistered"));
}

// ---- aliasing and cycles ----

TEST_CASE("two shared_ptrs to one object come back as two shared_ptrs to one object") {
  auto p = std::make_shared<st::point>(st::point{1, 2});
  using two = std::pair<std::shared_ptr<st::point>, std::shared_ptr<st::point>>;
  const auto back = round_trip(two{p, p});
  REQUIRE(back.first);
  CHECK(back.first.get() == back.second.get());
  CHECK(back.first.use_count() == 2);
  back.first->x = 10;
  CHECK(back.second->x == 10);
  // Distinct objects with equal values stay distinct.
  const auto apart = round_trip(two{p, std::make_shared<st::point>(*p)});
  CHECK(apart.first.get() != apart.second.get());
}

TEST_CASE("aliasing inside a vector is kept") {
  auto a = std::make_shared<st::account>("a", 1);
  auto b = std::make_shared<st::account>("b", 2);
  const std::vector<std::shared_ptr<st::account>> v{a, b, a, a, nullptr, b};
  const auto back = round_trip(v);
  REQUIRE(back.size() == 6);
  CHECK(back[0].get() == back[2].get());
  CHECK(back[0].get() == back[3].get());
  CHECK(back[1].get() == back[5].get());
  CHECK(back[0].get() != back[1].get());
  CHECK_FALSE(back[4]);
  CHECK(back[0].use_count() == 3);
  CHECK(back[1].use_count() == 2);
  CHECK(back[0]->owner() == "a");
  CHECK(back[1]->owner() == "b");
  // Also through a base pointer.
  std::shared_ptr<st::shape> c = std::make_shared<st::circle>(1.0);
  const auto shapes = round_trip(std::vector<std::shared_ptr<st::shape>>{c, c});
  CHECK(shapes[0].get() == shapes[1].get());
}

TEST_CASE("a node that points to itself round-trips and keeps its cycle") {
  auto n = std::make_shared<st::node>();
  n->value = 7;
  n->label = "self";
  n->next = n;
  auto back = round_trip(n);
  REQUIRE(back);
  CHECK(back->value == 7);
  CHECK(back->label == "self");
  CHECK(back->next.get() == back.get());
  CHECK(back.get() != n.get());
  back->next.reset();
  n->next.reset();
}

TEST_CASE("a cycle through several nodes round-trips and keeps its cycle") {
  auto g = sample_graph();
  auto back = round_trip(g);
  REQUIRE(back.nodes.size() == 4);
  const auto& n = back.nodes;
  CHECK(n[0].get() == n[2].get());
  CHECK(n[0]->next.get() == n[1].get());
  CHECK(n[1]->next.get() == n[3].get());
  CHECK(n[3]->next.get() == n[0].get());
  CHECK(n[0]->label == "a");
  CHECK(n[1]->label == "b");
  CHECK(n[3]->label == "c");
  REQUIRE(back.outline);
  CHECK(dynamic_cast<const st::circle*>(back.outline.get()));
  REQUIRE(back.shared_outline);
  CHECK(dynamic_cast<const st::square*>(back.shared_outline.get()));
  CHECK(back.meta == g.meta);
  break_cycles(back);
  break_cycles(g);
}

// ---- depth: bounded by the stack, never a stack overflow ----

TEST_CASE("a list of a million nodes is refused on encode with serialization_error") {
  auto head = make_list(1000000);
  const auto msg = what_of<weft::serialization_error>([&] { (void)weft::to_bytes(head); });
  CHECK_THAT(msg, Contains("nested this deep"));
  CHECK_THAT(msg, Contains("serialize"));
  // The same list is refused on a small stack too, and through a vector.
  CHECK_THROWS_AS(run_with_stack(small_stack, [&] { (void)weft::to_bytes(head); }), weft::serialization_error);
  CHECK_THROWS_AS(weft::to_bytes(std::vector<std::shared_ptr<st::node>>{head}), weft::serialization_error);
  destroy_list(head);
}

TEST_CASE("a deep tree nested by value is refused on encode with serialization_error") {
  auto t = make_deep_tree(200000);
  CHECK_THROWS_AS(weft::to_bytes(t), weft::serialization_error);
  destroy_tree(t);
}

TEST_CASE("a list that fits the stack round-trips") {
  auto head = make_list(1000);
  auto back = round_trip(head);
  CHECK(checked_length(back) == 1000);
  destroy_list(back);
  destroy_list(head);
}

// Under LeakSanitizer this case also requires that the refused decode frees
// the nodes it had allocated.
TEST_CASE("deserialization refuses nesting deeper than the stack left on the decoding thread") {
  constexpr int depth = 20000;
  std::vector<std::byte> bytes;
  run_with_stack(big_stack, [&] {
    auto head = make_list(depth);
    bytes = weft::to_bytes(head);
    destroy_list(head);
  });
  // A 256 KiB thread cannot hold the decoder's frames for this depth: refused.
  std::string msg;
  run_with_stack(small_stack, [&] {
    msg = what_of<weft::serialization_error>([&] { (void)weft::from_bytes<std::shared_ptr<st::node>>(bytes); });
  });
  CHECK_THAT(msg, Contains("nested this deep"));
  CHECK_THAT(msg, Contains("deserialize"));
  // The same bytes decode on a thread with a large stack: the limit is the stack, not a count.
  std::size_t length = 0;
  run_with_stack(big_stack, [&] {
    auto back = weft::from_bytes<std::shared_ptr<st::node>>(bytes);
    length = checked_length(back);
    destroy_list(back);
  });
  CHECK(length == depth);
}

// ---- hostile and damaged input ----

TEST_CASE("every truncation of a record's encoding is a serialization_error") {
  const auto bytes = weft::to_bytes(sample_record());
  REQUIRE(bytes.size() > 100);
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    INFO("prefix of " << n << " of " << bytes.size() << " bytes");
    const std::vector<std::byte> prefix(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    CHECK_FALSE(decodes<st::record>(prefix));
  }
  CHECK(decodes<st::record>(bytes));
}

TEST_CASE("every truncation of an encoding with pointers, a cycle and a base pointer is a serialization_error") {
  auto g = sample_graph();
  const auto bytes = weft::to_bytes(g);
  break_cycles(g);
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    INFO("prefix of " << n << " of " << bytes.size() << " bytes");
    const std::vector<std::byte> prefix(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    CHECK_FALSE(decodes<st::graph>(prefix));
  }
  auto back = weft::from_bytes<st::graph>(bytes);
  break_cycles(back);
}

TEST_CASE("a flipped byte anywhere in a record's encoding decodes or is a serialization_error") {
  const auto bytes = weft::to_bytes(sample_record());
  int refused = 0;
  for (std::size_t at = 0; at < bytes.size(); ++at) {
    for (unsigned mask : {0x01u, 0x80u, 0xffu}) {
      INFO("byte " << at << " xor " << mask);
      auto damaged = bytes;
      damaged[at] ^= static_cast<std::byte>(mask);
      refused += decodes<st::record>(damaged) ? 0 : 1;
    }
  }
  CHECK(refused > 0);
}

TEST_CASE("a corrupted string length is refused at once, without allocating it") {
  auto bytes = weft::to_bytes(std::string("hello"));
  REQUIRE(bytes.size() == 8 + 5);
  put_u64(bytes, 0, std::uint64_t{1} << 62);
  const auto start = std::chrono::steady_clock::now();
  const auto msg = what_of<weft::serialization_error>([&] { (void)weft::from_bytes<std::string>(bytes); });
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(1));
  CHECK_THAT(msg, Contains("string length of 4611686018427387904"));
  CHECK_THAT(msg, Contains("5 bytes are left"));
  // One byte more than the input holds is refused the same way.
  put_u64(bytes, 0, 6);
  CHECK_THAT(what_of<weft::serialization_error>([&] { (void)weft::from_bytes<std::string>(bytes); }),
             Contains("string length of 6"));
  // Inside a structure too.
  auto nested = weft::to_bytes(std::pair<int, std::string>{1, "abcdefg"});
  put_u64(nested, find_u64(nested, 7), std::uint64_t{1} << 62);
  CHECK_FALSE(decodes<std::pair<int, std::string>>(nested));
}

TEST_CASE("a corrupted collection count is refused at once, without allocating it") {
  const auto huge = std::uint64_t{1} << 62;
  const auto check_refused = [&](auto value, std::uint64_t count) {
    using T = decltype(value);
    auto bytes = weft::to_bytes(value);
    put_u64(bytes, find_u64(bytes, count), huge);
    const auto start = std::chrono::steady_clock::now();
    const auto msg = what_of<weft::serialization_error>([&] { (void)weft::from_bytes<T>(bytes); });
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(1));
    CHECK_THAT(msg, Contains("collection size of 4611686018427387904"));
  };
  check_refused(std::vector<int>{1, 2, 3}, 3);
  check_refused(std::vector<std::string>{"ab", "cd", "ef", "gh", "ij"}, 5);
  check_refused(std::vector<std::vector<int>>{{}, {}, {}}, 3);
  check_refused(std::deque<double>{1, 2, 3}, 3);
  check_refused(std::list<st::point>{{}, {}, {}}, 3);
  check_refused(std::map<int, int>{{1, 1}, {2, 2}, {3, 3}}, 3);
  check_refused(std::set<std::string>{"x", "y", "z"}, 3);
  check_refused(std::unordered_map<std::string, int>{{"x", 1}, {"y", 2}, {"z", 3}}, 3);
  check_refused(std::vector<bool>{true, false, true}, 3);
}

TEST_CASE("a bool byte other than 0 or 1 is a serialization_error") {
  auto bytes = weft::to_bytes(true);
  REQUIRE(bytes.size() == 1);
  bytes[0] = std::byte{2};
  CHECK_THAT(what_of<weft::serialization_error>([&] { (void)weft::from_bytes<bool>(bytes); }),
             Contains("bool byte of 2"));
  bytes[0] = std::byte{0xff};
  CHECK_THAT(what_of<weft::serialization_error>([&] { (void)weft::from_bytes<bool>(bytes); }),
             Contains("bool byte of 255"));
  // The flag of an optional is a bool.
  auto opt = weft::to_bytes(std::optional<std::int32_t>{0x01020304});
  const auto flag = opt.size() - 5;
  REQUIRE(opt[flag] == std::byte{1});
  opt[flag] = std::byte{2};
  CHECK_THROWS_AS(weft::from_bytes<std::optional<std::int32_t>>(opt), weft::serialization_error);
}

TEST_CASE("a variant index out of range is a serialization_error") {
  using v = std::variant<int, std::string>;
  auto bytes = weft::to_bytes(v{std::int32_t{0x11223344}});
  const auto index_at = bytes.size() - 8; // the index, then the int
  REQUIRE(bytes[index_at] == std::byte{0});
  for (std::uint32_t bad : {2u, 3u, 0xffffffffu}) {
    for (int i = 0; i < 4; ++i)
      bytes[index_at + i] = static_cast<std::byte>((bad >> (8 * i)) & 0xff);
    const auto msg = what_of<weft::serialization_error>([&] { (void)weft::from_bytes<v>(bytes); });
    CHECK_THAT(msg, Contains("alternative " + std::to_string(bad)));
    CHECK_THAT(msg, Contains("has 2"));
  }
}

TEST_CASE("trailing bytes after a value are a serialization_error") {
  auto bytes = weft::to_bytes(42);
  bytes.push_back(std::byte{0});
  const auto msg = what_of<weft::serialization_error>([&] { (void)weft::from_bytes<int>(bytes); });
  CHECK_THAT(msg, Contains("1 bytes left over"));
  CHECK_THAT(msg, Contains("int"));
  auto two = weft::to_bytes(std::string("a"));
  const auto more = weft::to_bytes(std::string("b"));
  two.insert(two.end(), more.begin(), more.end());
  CHECK_THROWS_AS(weft::from_bytes<std::string>(two), weft::serialization_error);
}

TEST_CASE("empty or short input is a serialization_error naming the type") {
  CHECK_THROWS_AS(weft::from_bytes<int>({}), weft::serialization_error);
  const auto bytes = weft::to_bytes(std::int64_t{5});
  const auto msg = what_of<weft::serialization_error>(
    [&] { (void)weft::from_bytes<std::int64_t>(std::span<const std::byte>(bytes).first(3)); });
  CHECK_THAT(msg, Contains("cannot deserialize"));
  CHECK_THAT(msg, Contains("long"));
  CHECK_THROWS_AS(weft::from_bytes<st::record>({}), weft::serialization_error);
}

// ---- hostile input: Boost's class and object numbering ----

TEST_CASE("a class id out of range is a serialization_error naming the class id") {
  using list = std::shared_ptr<st::node>;
  // std::shared_ptr<node> is class 0, node class 1, numbered as they are read.
  const auto with_class_id = [](int id) {
    return layout{}.preamble(0, 1).class_id(id).preamble(1, 0).object_id(0).i32(7).str("n").class_id(-1).bytes;
  };
  REQUIRE(with_class_id(1) == weft::to_bytes(std::make_shared<st::node>(st::node{7, "n", nullptr})));
  CHECK_THAT(refusal<list>(with_class_id(-2)), Contains("class id -2 is negative"));
  CHECK_THAT(refusal<list>(with_class_id(-30000)), Contains("class id -30000 is negative"));
  CHECK_THAT(refusal<list>(with_class_id(300)),
             Contains("class id 300 is out of range: 2 classes are numbered at this point"));
  // The next id is new, but only a pointer to a polymorphic base may bring a
  // class of its own (by name); node is not polymorphic.
  CHECK_THAT(refusal<list>(with_class_id(2)), Contains("class id 2 is out of range"));

  // Through a base pointer: unique_ptr<shape> is class 0; circle, new, comes
  // with its name; its base shape is class 2 (untracked, no object id).
  using outline = std::unique_ptr<st::shape>;
  const auto circle_with_class_id = [](int id) {
    return layout{}
      .preamble(0, 0)
      .class_id(id)
      .str("serialization_test::circle")
      .preamble(1, 0)
      .object_id(0)
      .preamble(0, 0)
      .f64(2.0)
      .bytes;
  };
  REQUIRE(circle_with_class_id(1) == weft::to_bytes(outline(std::make_unique<st::circle>(2.0))));
  CHECK_THAT(refusal<outline>(circle_with_class_id(2)), Contains("class id 2 is out of range"));
  CHECK_THAT(refusal<outline>(circle_with_class_id(-7)), Contains("class id -7 is negative"));

  // A new class id whose name is a class already numbered.
  using two = std::pair<outline, outline>;
  const auto second_class_id = [](int id, bool named) {
    layout l;
    l.preamble(0, 0);                                                            // the pair: class 0
    l.preamble(0, 0);                                                            // unique_ptr<shape>: class 1
    l.class_id(2).str("serialization_test::circle").preamble(1, 0).object_id(0); // circle: class 2
    l.preamble(0, 0).f64(1.0);                                                   // shape: class 3; radius
    l.class_id(id);
    if (named)
      l.str("serialization_test::circle").object_id(1);
    else
      l.object_id(1);
    l.f64(2.0);
    return l.bytes;
  };
  REQUIRE(second_class_id(2, false) ==
          weft::to_bytes(two(std::make_unique<st::circle>(1.0), std::make_unique<st::circle>(2.0))));
  CHECK_THAT(refusal<two>(second_class_id(4, true)),
             Contains("class id 4 is new, but its name 'serialization_test::circle' is class id 2"));
  CHECK_THAT(refusal<two>(second_class_id(5, false)), Contains("class id 5 is out of range: 4 classes"));
  // The error names the type being decoded.
  CHECK_THAT(refusal<list>(with_class_id(300)), Contains("cannot deserialize a value of type std::shared_ptr"));
}

TEST_CASE("a class preamble that does not match the local class is a serialization_error") {
  using list = std::shared_ptr<st::node>;
  // shared_ptr<node> is untracked, version 1; node is tracked, version 0.
  const auto with_preambles = [](unsigned pointer_tracking, std::uint32_t pointer_version, unsigned node_tracking,
                                 std::uint32_t node_version) {
    return layout{}
      .preamble(pointer_tracking, pointer_version)
      .class_id(1)
      .preamble(node_tracking, node_version)
      .object_id(0)
      .i32(7)
      .str("n")
      .class_id(-1)
      .bytes;
  };
  REQUIRE(with_preambles(0, 1, 1, 0) == weft::to_bytes(std::make_shared<st::node>(st::node{7, "n", nullptr})));
  CHECK_THAT(refusal<list>(with_preambles(1, 1, 1, 0)),
             Contains("tracking flag 1 for class std::shared_ptr<serialization_test::node>; expected 0"));
  CHECK_THAT(refusal<list>(with_preambles(0xff, 1, 1, 0)), Contains("tracking flag 255"));
  CHECK_THAT(refusal<list>(with_preambles(0, 1, 0, 0)),
             Contains("tracking flag 0 for class serialization_test::node; expected 1"));
  CHECK_THAT(refusal<list>(with_preambles(0, 7, 1, 0)),
             Contains("version 7 of class std::shared_ptr<serialization_test::node>; this program has version 1"));
  CHECK_THAT(refusal<list>(with_preambles(0, 1, 1, 0x10000)),
             Contains("version 65536 of class serialization_test::node; this program has version 0"));
}

TEST_CASE("an object id past the objects read so far is a serialization_error") {
  using list = std::shared_ptr<st::node>;
  const auto with_object_id = [](std::uint32_t id) {
    return layout{}.preamble(0, 1).class_id(1).preamble(1, 0).object_id(id).i32(7).str("n").class_id(-1).bytes;
  };
  REQUIRE(with_object_id(0) == weft::to_bytes(std::make_shared<st::node>(st::node{7, "n", nullptr})));
  CHECK_THAT(refusal<list>(with_object_id(1)),
             Contains("object id 1 is out of range: 0 objects are numbered at this point"));
  CHECK_THAT(refusal<list>(with_object_id(0x80000000u)), Contains("object id 2147483648 is out of range"));
}

TEST_CASE("a pointer back-reference to an object loaded by value is a serialization_error") {
  // pair: class 0; node (tracked: it is also sent through pointers) class 1,
  // read by value as object 0; shared_ptr<node> class 2; the pointer's node is
  // object 1. Object 0 lives inside the pair: a shared_ptr must never own it.
  using by_value_then_pointer = std::pair<st::node, std::shared_ptr<st::node>>;
  const auto with_pointer_to = [](std::uint32_t id) {
    layout l;
    l.preamble(0, 0);                                                          // the pair
    l.preamble(1, 0).object_id(0).i32(1).str("v").preamble(0, 1).class_id(-1); // first, by value
    l.class_id(1).object_id(id);                                               // second, a pointer
    if (id == 1)
      l.i32(2).str("p").class_id(-1);
    return l.bytes;
  };
  REQUIRE(with_pointer_to(1) == weft::to_bytes(by_value_then_pointer(
                                  st::node{1, "v", nullptr}, std::make_shared<st::node>(st::node{2, "p", nullptr}))));
  const auto msg = refusal<by_value_then_pointer>(with_pointer_to(0));
  CHECK_THAT(msg, Contains("a pointer back-reference to object #0 (serialization_test::node)"));
  CHECK_THAT(msg, Contains("which was loaded by value"));
}

TEST_CASE("a pointer back-reference to an object of another class is a serialization_error") {
  // Type confusion: the second pointer says "object 0" (a node) is a point.
  using node_and_point = std::pair<std::shared_ptr<st::node>, std::shared_ptr<st::point>>;
  const auto with_point_object = [](std::uint32_t id) {
    layout l;
    l.preamble(0, 0);                                                                      // pair: class 0
    l.preamble(0, 1).class_id(2).preamble(1, 0).object_id(0).i32(1).str("a").class_id(-1); // node: class 2
    l.preamble(0, 1).class_id(4).preamble(1, 0).object_id(id);                             // point: class 4
    if (id == 1)
      l.f64(1.0).f64(2.0);
    return l.bytes;
  };
  REQUIRE(with_point_object(1) == weft::to_bytes(node_and_point(std::make_shared<st::node>(st::node{1, "a", nullptr}),
                                                                std::make_shared<st::point>(st::point{1, 2}))));
  const auto msg = refusal<node_and_point>(with_point_object(0));
  CHECK_THAT(msg, Contains("a pointer back-reference to object #0 (serialization_test::node) says the object is a "
                           "serialization_test::point (type confusion)"));

  // The same through a base pointer: a square that says it is the circle.
  using shapes = std::pair<std::shared_ptr<st::shape>, std::shared_ptr<st::shape>>;
  const auto with_square_object = [](std::uint32_t id) {
    layout l;
    l.preamble(0, 0);                                                                           // pair: class 0
    l.preamble(0, 1).class_id(2).str("serialization_test::circle").preamble(1, 0).object_id(0); // circle: 2
    l.preamble(0, 0).f64(1.0);                                                                  // shape: 3
    l.class_id(4).str("serialization_test::square").preamble(1, 0).object_id(id);               // square: 4
    if (id == 1)
      l.f64(2.0);
    return l.bytes;
  };
  REQUIRE(with_square_object(1) ==
          weft::to_bytes(shapes(std::make_shared<st::circle>(1.0), std::make_shared<st::square>(2.0))));
  CHECK_THAT(refusal<shapes>(with_square_object(0)),
             Contains("object #0 (serialization_test::circle) says the object is a serialization_test::square"));
}

TEST_CASE("a second owner for an object owned by a unique_ptr is a serialization_error") {
  // Two unique_ptrs (or a unique_ptr and a shared_ptr) given one object would
  // both delete it.
  using two_unique = std::pair<std::unique_ptr<st::point>, std::unique_ptr<st::point>>;
  const auto second_unique = [](std::uint32_t id) {
    layout l;
    l.preamble(0, 0);                                                       // pair: class 0
    l.preamble(0, 0).class_id(2).preamble(1, 0).object_id(0).f64(1).f64(2); // unique_ptr<point>: 1; point: 2
    l.class_id(2).object_id(id);
    if (id == 1)
      l.f64(3).f64(4);
    return l.bytes;
  };
  REQUIRE(second_unique(1) == weft::to_bytes(two_unique(std::make_unique<st::point>(st::point{1, 2}),
                                                        std::make_unique<st::point>(st::point{3, 4}))));
  CHECK_THAT(refusal<two_unique>(second_unique(0)),
             Contains("a unique_ptr back-reference to object #0 (serialization_test::point), which a unique_ptr "
                      "already owns"));

  using unique_then_shared = std::pair<std::unique_ptr<st::point>, std::shared_ptr<st::point>>;
  const auto unique_shared = layout{}
                               .preamble(0, 0)
                               .preamble(0, 0)
                               .class_id(2)
                               .preamble(1, 0)
                               .object_id(0)
                               .f64(1)
                               .f64(2)
                               .preamble(0, 1) // shared_ptr<point>: class 3
                               .class_id(2)
                               .object_id(0)
                               .bytes;
  CHECK_THAT(refusal<unique_then_shared>(unique_shared),
             Contains("a shared_ptr back-reference to object #0 (serialization_test::point), which a unique_ptr "
                      "already owns"));

  using shared_then_unique = std::pair<std::shared_ptr<st::point>, std::unique_ptr<st::point>>;
  const auto shared_unique = layout{}
                               .preamble(0, 0)
                               .preamble(0, 1)
                               .class_id(2)
                               .preamble(1, 0)
                               .object_id(0)
                               .f64(1)
                               .f64(2)
                               .preamble(0, 0) // unique_ptr<point>: class 3
                               .class_id(2)
                               .object_id(0)
                               .bytes;
  CHECK_THAT(refusal<shared_then_unique>(shared_unique),
             Contains("a unique_ptr back-reference to object #0 (serialization_test::point), which a shared_ptr "
                      "already owns"));
}

TEST_CASE("a refused decode frees the objects it allocated for pointers") {
  // Without this, Boost leaks every object it allocated for a pointer whose
  // decode was refused (it hands the object over only at the end), and a
  // shared_ptr cycle read in part keeps itself alive.
  const int before = st::counted::live;
  std::vector<std::byte> bytes;
  {
    auto a = std::make_shared<st::counted>();
    auto b = std::make_shared<st::counted>();
    a->value = 1;
    b->value = 2;
    a->next = b;
    b->next = a; // a cycle
    a->child = std::make_unique<st::counted>();
    a->child->child = std::make_unique<st::counted>();
    b->child = std::make_unique<st::counted>();
    bytes = weft::to_bytes(std::vector<std::shared_ptr<st::counted>>{a, b, a});
    a->next.reset();
  }
  REQUIRE(st::counted::live == before);
  using graph = std::vector<std::shared_ptr<st::counted>>;
  // Cut anywhere: whatever was allocated is freed.
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    INFO("prefix of " << n << " of " << bytes.size() << " bytes");
    const std::vector<std::byte> prefix(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    CHECK_FALSE(decodes<graph>(prefix));
    CHECK(st::counted::live == before);
  }
  // Cut in the middle of the second object: Boost's stream error, nothing left.
  CHECK_THAT(refusal<graph>(std::vector<std::byte>(bytes.begin(), bytes.end() - 20)), Contains("input stream error"));
  CHECK(st::counted::live == before);
  // Read whole, cycle included, then refused for a byte too many.
  auto longer = bytes;
  longer.push_back(std::byte{0});
  CHECK_THAT(refusal<graph>(longer), Contains("1 bytes left over"));
  CHECK(st::counted::live == before);
  // Refused by one of weft's checks after several objects were allocated.
  auto bad = bytes;
  const std::size_t last_id = bad.size() - 4; // the last pointer: a back-reference to object 0
  REQUIRE(bad[last_id] == std::byte{0});
  bad[last_id] = std::byte{0x40};
  CHECK_THAT(refusal<graph>(bad), Contains("object id 64 is out of range"));
  CHECK(st::counted::live == before);
  // Any byte overwritten: decoded or refused, never a leak.
  for (std::size_t at = 0; at < bytes.size(); ++at) {
    INFO("byte " << at);
    auto damaged = bytes;
    damaged[at] = std::byte{0xff};
    try {
      auto back = weft::from_bytes<graph>(damaged);
      break_counted(back);
    } catch (const weft::serialization_error&) {
    }
    CHECK(st::counted::live == before);
  }
  auto back = weft::from_bytes<graph>(bytes);
  REQUIRE(back.size() == 3);
  CHECK(back[0].get() == back[2].get());
  CHECK(back[0]->next.get() == back[1].get());
  CHECK(back[1]->next.get() == back[0].get());
  break_counted(back);
  back.clear();
  CHECK(st::counted::live == before);
}

TEST_CASE("a raw pointer that observes an object a unique_ptr owns still round-trips") {
  st::owner_then_observer a;
  a.owner = std::make_unique<st::point>(st::point{1, 2});
  a.observer = a.owner.get();
  const auto a2 = round_trip(a);
  REQUIRE(a2.owner);
  CHECK(a2.observer == a2.owner.get());
  CHECK(*a2.owner == st::point{1, 2});

  st::observer_then_owner b;
  b.owner = std::make_unique<st::point>(st::point{3, 4});
  b.observer = b.owner.get();
  const auto b2 = round_trip(b);
  REQUIRE(b2.owner);
  CHECK(b2.observer == b2.owner.get());
  CHECK(*b2.owner == st::point{3, 4});
}

TEST_CASE("a raw pointer to an object sent by value encodes but is refused on decode") {
  // Boost writes the pointer as a back-reference to the member; the decoder
  // cannot tell a raw pointer from a smart one, which must never own a member.
  st::member_and_pointer v;
  v.member = st::point{1, 2};
  v.pointer = &v.member;
  const auto bytes = weft::to_bytes(v);
  CHECK_THAT(refusal<st::member_and_pointer>(bytes), Contains("which was loaded by value"));
}

TEST_CASE("aliasing through maps and base and derived pointers is kept") {
  auto n = std::make_shared<st::node>(st::node{5, "shared", nullptr});
  std::map<std::string, std::shared_ptr<st::node>> by_name{{"a", n}, {"b", n}, {"c", nullptr}};
  using maps = std::tuple<std::map<std::string, std::shared_ptr<st::node>>, std::vector<std::shared_ptr<st::node>>,
                          std::unordered_map<int, std::shared_ptr<st::node>>>;
  const auto back = round_trip(maps{by_name, {n, n}, {{1, n}}});
  const auto& m = std::get<0>(back);
  REQUIRE(m.size() == 3);
  REQUIRE(m.at("a"));
  CHECK(m.at("a").get() == m.at("b").get());
  CHECK_FALSE(m.at("c"));
  CHECK(std::get<1>(back)[0].get() == m.at("a").get());
  CHECK(std::get<1>(back)[1].get() == m.at("a").get());
  CHECK(std::get<2>(back).at(1).get() == m.at("a").get());
  CHECK(m.at("a").use_count() == 5);

  // One circle through a pointer to its base and through one to itself.
  auto c = std::make_shared<st::circle>(4.0);
  using views = std::tuple<std::shared_ptr<st::shape>, std::shared_ptr<st::circle>, std::shared_ptr<st::shape>>;
  const auto v = round_trip(views{c, c, c});
  REQUIRE(std::get<1>(v));
  CHECK(std::get<0>(v).get() == std::get<1>(v).get());
  CHECK(std::get<2>(v).get() == std::get<1>(v).get());
  CHECK(std::get<1>(v)->radius == 4.0);
  CHECK(std::get<1>(v).use_count() == 3);
}

// ---- inside a task: fibers, whose stacks are smaller ----

namespace {

/// In a task: encodes and decodes a record, a graph and a short list.
bool round_trips_in_task(st::record r) {
  if (round_trip(r) != r)
    return false;
  auto g = sample_graph();
  auto back = round_trip(g);
  const bool graph_ok = back.nodes.size() == 4 && back.nodes[0].get() == back.nodes[2].get() &&
                        back.nodes[3]->next.get() == back.nodes[0].get() &&
                        dynamic_cast<const st::circle*>(back.outline.get()) != nullptr;
  break_cycles(back);
  break_cycles(g);
  auto list = make_list(200);
  auto list_back = round_trip(list);
  const bool list_ok = checked_length(list_back) == 200;
  destroy_list(list);
  destroy_list(list_back);
  return graph_ok && list_ok;
}

/// In a task: encodes (and decodes) a list `depth` long. "ok", or the
/// serialization_error's message.
std::string deep_list_in_task(int depth) {
  auto head = make_list(depth);
  std::string result = "ok";
  try {
    auto back = round_trip(head);
    if (checked_length(back) != static_cast<std::size_t>(depth))
      result = "wrong list";
    destroy_list(back);
  } catch (const weft::serialization_error& e) {
    result = e.what();
  }
  destroy_list(head);
  return result;
}

} // namespace

TEST_CASE("values round-trip inside a task") {
  weft_test::runtime_guard rt;
  CHECK(weft::get(weft::remote(round_trips_in_task).remote(sample_record()), weft_test::bound));
}

TEST_CASE("a list too deep for a task's fiber stack is refused with serialization_error, not a crash") {
  weft_test::runtime_guard rt; // 1 MiB fibers
  // 5,000 nodes encode on an 8 MiB thread but not on a 1 MiB fiber.
  CHECK_THAT(weft::get(weft::remote(deep_list_in_task).remote(5000), weft_test::bound), Contains("nested this deep"));
  CHECK(weft::get(weft::remote(deep_list_in_task).remote(50), weft_test::bound) == "ok");
}

TEST_CASE("config::fiber_stack_size raises the depth a task can send") {
  weft_test::runtime_guard rt({.num_cpus = 2, .fiber_stack_size = std::size_t{128} << 20});
  CHECK(weft::get(weft::remote(deep_list_in_task).remote(5000), weft_test::bound) == "ok");
}
