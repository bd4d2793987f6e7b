// libFuzzer target: bytes from a hostile peer, decoded as the values weft
// sends. The first byte picks the message kind (its value modulo 16: 0
// tuple, 1 list, 2 shape, 3 shapes, 4 mixed, 5 enums; and, in
// wire_fuzz.cpp, what workers send: 6 arrays with store references, 7 refs
// and handles through a ref bundle, 8 error payloads, 9 wire records, 10 and
// up a lane's ring); the rest is the encoding. Decoding must either succeed
// or throw weft::serialization_error: any other exception, a crash, a leak,
// a hang or a huge allocation is a bug. WEFT_FUZZ_KINDS=1234 (hex digits)
// restricts a run to those kinds, e.g. to the ones that hold pointers;
// inputs of other kinds are skipped.
#include "decode_fuzz.hpp"

#include <weft/serialization.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

namespace decode_fuzz {

/// A list node: pointer chains, sharing and cycles.
struct node {
  int value = 0;
  std::string label;
  std::shared_ptr<node> next;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& value& label& next;
  }
};

/// A polymorphic hierarchy sent through its base.
struct shape {
  virtual ~shape() = default;
  template <class Archive>
  void serialize(Archive&, unsigned) {}
};
struct circle : shape {
  double radius = 0;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& boost::serialization::base_object<shape>(*this) & radius;
  }
};
struct polygon : shape {
  std::vector<std::pair<double, double>> points;
  std::string name;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& boost::serialization::base_object<shape>(*this) & points& name;
  }
};

/// Enums: Boost writes them as int; an unscoped enum without a fixed
/// underlying type has a narrower range of valid values.
enum legacy_color { red, green, blue };
enum class level : std::uint8_t { low, high };

/// A plain class owned by unique_ptrs.
struct item {
  std::string key;
  std::vector<int> values;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& key& values;
  }
};

using tuple_msg = std::tuple<int, std::string, std::vector<double>, std::optional<std::map<std::string, int>>,
                             std::variant<int, std::string>>;
using list_msg = std::shared_ptr<node>;
using shape_msg = std::unique_ptr<shape>;
using shapes_msg = std::vector<std::shared_ptr<shape>>;
using mixed_msg = std::tuple<std::vector<std::shared_ptr<node>>, std::unique_ptr<shape>,
                             std::vector<std::unique_ptr<item>>, std::unordered_map<std::string, std::vector<bool>>>;
using enum_msg = std::tuple<legacy_color, std::vector<legacy_color>, level>;

/// Frees every node reachable from `roots` without recursion, breaking
/// cycles (a decoded list may be long or cyclic).
void release(std::vector<std::shared_ptr<node>> roots) {
  std::vector<std::shared_ptr<node>> work = std::move(roots);
  while (!work.empty()) {
    std::shared_ptr<node> n = std::move(work.back());
    work.pop_back();
    if (n && n->next)
      work.push_back(std::move(n->next));
  }
}

void release(mixed_msg& m) { release(std::move(std::get<0>(m))); }
void release(list_msg& m) { release(std::vector<std::shared_ptr<node>>{std::move(m)}); }
template <class T>
void release(T&) {}

/// Decodes `bytes` as T; a value that decodes is encoded again (it must be
/// a value weft can send).
template <class T>
void decode_as(std::span<const std::byte> bytes) {
  try {
    T value = weft::from_bytes<T>(bytes);
    try {
      (void)weft::to_bytes(value);
    } catch (const weft::serialization_error&) {
      // e.g. too deep to encode again on this stack: allowed.
    }
    release(value);
  } catch (const weft::serialization_error&) {
  }
}

template <class T>
void add_seed(std::vector<std::pair<std::string, std::vector<std::byte>>>& out, const std::string& name,
              unsigned char selector, const T& value) {
  std::vector<std::byte> bytes{std::byte{selector}};
  const auto body = weft::to_bytes(value);
  bytes.insert(bytes.end(), body.begin(), body.end());
  out.emplace_back(name, std::move(bytes));
}

constexpr int kind_count = 16;

/// Whether WEFT_FUZZ_KINDS (unset: all kinds) lets this run decode `kind`.
bool kind_enabled(int kind) {
  static const std::string kinds = [] {
    const char* env = std::getenv("WEFT_FUZZ_KINDS");
    return std::string(env != nullptr ? env : "0123456789abcdef");
  }();
  return kinds.find("0123456789abcdef"[kind]) != std::string::npos;
}

} // namespace decode_fuzz

WEFT_REGISTER_CLASS(decode_fuzz::circle)
WEFT_REGISTER_CLASS(decode_fuzz::polygon)

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace decode_fuzz;
  if (size == 0)
    return 0;
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data) + 1, size - 1);
  const int kind = data[0] % kind_count;
  if (!kind_enabled(kind))
    return 0;
  try {
    switch (kind) {
    case 0:
      decode_as<tuple_msg>(bytes);
      break;
    case 1:
      decode_as<list_msg>(bytes);
      break;
    case 2:
      decode_as<shape_msg>(bytes);
      break;
    case 3:
      decode_as<shapes_msg>(bytes);
      break;
    case 4:
      decode_as<mixed_msg>(bytes);
      break;
    case 5:
      decode_as<enum_msg>(bytes);
      break;
    default:
      decode_wire_kind(kind, bytes);
      break;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "decode_fuzz: an exception other than serialization_error: %s\n", e.what());
    std::abort();
  } catch (...) {
    std::fprintf(stderr, "decode_fuzz: a non-std exception\n");
    std::abort();
  }
  return 0;
}

std::vector<std::pair<std::string, std::vector<std::byte>>> decode_fuzz_seeds() {
  using namespace decode_fuzz;
  std::vector<std::pair<std::string, std::vector<std::byte>>> seeds;

  add_seed(seeds, "seed-tuple-full", 0,
           tuple_msg{42, "hello", {1.5, -2.0}, std::map<std::string, int>{{"a", 1}, {"bb", 2}}, std::string("v")});
  add_seed(seeds, "seed-tuple-empty", 0, tuple_msg{});

  {
    auto c = std::make_shared<node>(node{3, "c", nullptr});
    auto b = std::make_shared<node>(node{2, "b", c});
    auto a = std::make_shared<node>(node{1, "a", b});
    add_seed(seeds, "seed-list-3", 1, a);
    c->next = a; // a cycle
    add_seed(seeds, "seed-list-cycle", 1, a);
    c->next.reset();
    auto self = std::make_shared<node>(node{7, "self", nullptr});
    self->next = self;
    add_seed(seeds, "seed-list-self", 1, self);
    self->next.reset();
  }

  {
    auto p = std::make_unique<polygon>();
    p->points = {{0, 0}, {1, 0}, {0, 1}};
    p->name = "tri";
    add_seed(seeds, "seed-shape-polygon", 2, shape_msg(std::move(p)));
    auto c = std::make_unique<circle>();
    c->radius = 2.5;
    add_seed(seeds, "seed-shape-circle", 2, shape_msg(std::move(c)));
  }

  {
    auto c = std::make_shared<circle>();
    c->radius = 1;
    auto p = std::make_shared<polygon>();
    p->name = "sq";
    add_seed(seeds, "seed-shapes-shared", 3, shapes_msg{c, p, c, nullptr});
  }

  {
    mixed_msg m;
    auto a = std::make_shared<node>(node{1, "a", nullptr});
    auto b = std::make_shared<node>(node{2, "b", a});
    a->next = b;
    std::get<0>(m) = {a, b, a};
    auto c = std::make_unique<circle>();
    c->radius = 9;
    std::get<1>(m) = std::move(c);
    std::get<2>(m).push_back(std::make_unique<item>(item{"k", {1, 2, 3}}));
    std::get<2>(m).push_back(nullptr);
    std::get<2>(m).push_back(std::make_unique<item>(item{"", {}}));
    std::get<3>(m) = {{"flags", {true, false}}};
    add_seed(seeds, "seed-mixed", 4, m);
    a->next.reset();
  }

  add_seed(seeds, "seed-enums", 5, enum_msg{blue, {red, green}, level::high});
  add_wire_seeds(seeds);
  return seeds;
}
