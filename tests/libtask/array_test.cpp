// weft::array<T> in one process: building, shape, sharing, the serializer,
// corrupt input, and tasks and objects holding arrays.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "weft_test.hpp"

using Catch::Matchers::Contains;
using weft_test::bound;
using weft_test::what_of;

namespace {

double sum(weft::array<double> a) { return std::accumulate(a.begin(), a.end(), 0.0); }

std::uintptr_t address_of(const weft::array<double>& a) { return reinterpret_cast<std::uintptr_t>(a.data()); }

weft::array<std::int32_t> iota(int n) {
  return weft::array<std::int32_t>::build(static_cast<std::size_t>(n),
                                          [](std::span<std::int32_t> out) { std::iota(out.begin(), out.end(), 0); });
}

} // namespace

TEST_CASE("an array is built in place and reads like a span") {
  auto a = weft::array<int>::build(5, [](std::span<int> out) {
    for (std::size_t i = 0; i < out.size(); ++i)
      out[i] = static_cast<int>(i * i);
  });
  CHECK(a.size() == 5);
  CHECK_FALSE(a.empty());
  CHECK(a[4] == 16);
  CHECK(a.at(2) == 4);
  CHECK(a.to_vector() == std::vector<int>{0, 1, 4, 9, 16});
  CHECK(a.shape() == std::vector<std::size_t>{5});
  CHECK(reinterpret_cast<std::uintptr_t>(a.data()) % 64 == 0);
  CHECK_THROWS_AS(a.at(5), std::out_of_range);
  CHECK_FALSE(a.in_shared_memory()); // no worker-process node here

  weft::array<int> empty;
  CHECK(empty.empty());
  CHECK(empty.begin() == empty.end());
  CHECK(weft::array<int>{1, 2, 3} == weft::array<int>(std::vector<int>{1, 2, 3}));
  CHECK_FALSE(weft::array<int>{1, 2, 3} == weft::array<int>{1, 2, 4});
}

TEST_CASE("copies of an array share its elements") {
  const auto a = iota(1000);
  const auto b = a; // NOLINT(performance-unnecessary-copy-initialization): the point of the test
  CHECK(b.data() == a.data());
  weft::array<std::int32_t> c;
  c = b;
  CHECK(c.data() == a.data());
  c = weft::array<std::int32_t>{};
  CHECK(b[999] == 999);
}

TEST_CASE("a shape must multiply out to the size") {
  const std::vector<double> v(12, 1.0);
  weft::array<double> m(v, {3, 4});
  CHECK(m.shape() == std::vector<std::size_t>{3, 4});
  CHECK(m.size() == 12);
  CHECK_THAT(what_of<weft::invalid_argument_error>([&] {
               weft::array<double>(v, {5, 2});
             }),
             Contains("shape 5 x 2 holds 10 elements") && Contains("has 12"));
}

TEST_CASE("an array round-trips through the serializer with its shape") {
  const std::vector<float> v{1.5f, -2.0f, 3.25f, 4.0f, 5.0f, 6.0f};
  weft::array<float> a(v, {2, 3});
  const auto bytes = weft::to_bytes(a);
  const auto back = weft::from_bytes<weft::array<float>>(bytes);
  CHECK(back == a);
  CHECK(back.shape() == std::vector<std::size_t>{2, 3});
  CHECK(back.data() != a.data()); // a heap array travels as its bytes
  CHECK(weft::from_bytes<weft::array<float>>(weft::to_bytes(weft::array<float>{})).empty());
  CHECK(weft::is_serializable_v<weft::array<float>>);
}

TEST_CASE("corrupt array bytes give serialization_error and no giant allocation") {
  using bytes = std::vector<std::byte>;
  const bytes good = weft::to_bytes(iota(100));
  // Truncated anywhere.
  for (std::size_t cut = 0; cut < good.size(); cut += 7)
    CHECK_THROWS_AS(weft::from_bytes<weft::array<std::int32_t>>(std::span(good).first(cut)), weft::serialization_error);
  // A count far larger than the input: refused before allocating.
  bytes huge = good;
  const std::uint64_t n = std::uint64_t{1} << 40;
  std::memcpy(huge.data(), &n, sizeof n);
  CHECK_THAT(what_of<weft::serialization_error>([&] { weft::from_bytes<weft::array<std::int32_t>>(huge); }),
             Contains("left in the input") || Contains("corrupt"));
  // A shared-store reference in a process that has no store.
  weft::array<std::int32_t> none;
  bytes fake = weft::to_bytes(none);
  fake.back() = std::byte{1}; // the storage tag: "in the node's store"
  fake.insert(fake.end(), 8, std::byte{0x40});
  CHECK_THAT(what_of<weft::serialization_error>([&] { weft::from_bytes<weft::array<std::int32_t>>(fake); }),
             Contains("but this process has none"));
  bytes bad_tag = weft::to_bytes(none);
  bad_tag.back() = std::byte{7};
  CHECK_THAT(what_of<weft::serialization_error>([&] { weft::from_bytes<weft::array<std::int32_t>>(bad_tag); }),
             Contains("storage tag 7"));
}

TEST_CASE("put and get of an array and passing it to a task never copy its elements") {
  weft_test::runtime_guard rt;
  auto a = weft::array<double>::build(1 << 20, [](std::span<double> out) { std::fill(out.begin(), out.end(), 0.5); });
  const auto ref = weft::put(a);
  CHECK(weft::get(ref, bound).data() == a.data());
  CHECK(weft::get(weft::remote(address_of).remote(ref), bound) == reinterpret_cast<std::uintptr_t>(a.data()));
  CHECK(weft::get(weft::remote(sum).remote(ref), bound) == Approx(0.5 * (1 << 20)));
}
