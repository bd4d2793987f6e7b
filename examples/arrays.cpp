// Large arrays: put() one into the object store once, pass its ref to many tasks, take results as they finish.
#include <weft/weft.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <utility>
#include <vector>

// A const& parameter reads the stored object in place: no copy is made in local mode.
double sum_range(const std::vector<double>& v, std::size_t begin, std::size_t end) {
  return std::accumulate(v.begin() + static_cast<std::ptrdiff_t>(begin), v.begin() + static_cast<std::ptrdiff_t>(end),
                         0.0);
}

std::vector<double> scale(const std::vector<double>& v, double k) {
  std::vector<double> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i)
    out[i] = v[i] * k;
  return out;
}

std::uintptr_t address_of(const std::vector<double>& v) { return reinterpret_cast<std::uintptr_t>(v.data()); }

int main(int argc, char** argv) {
  weft::init(argc, argv);
  const std::size_t n = std::size_t{1} << 20;
  const auto data = weft::put(std::vector<double>(n, 0.5)); // 8 MiB, moved into the store

  // Two tasks given the same ref see the very same buffer.
  const auto address_r = weft::remote(address_of);
  const bool shared = weft::get(address_r.remote(data)) == weft::get(address_r.remote(data));
  std::printf("two tasks read the same buffer: %s\n", shared ? "yes" : "no");

  // A task's result is an object too: sum the scaled array without bringing it back here.
  const auto tripled = weft::remote(scale).remote(data, 3.0);
  const auto sum_r = weft::remote(sum_range);
  std::printf("sum = %.1f, sum after scale(3) = %.1f\n", weft::get(sum_r.remote(data, 0, n)),
              weft::get(sum_r.remote(tripled, 0, n)));

  // Four partial sums, consumed in the order they finish: wait() for one at a time.
  std::vector<weft::object_ref<double>> pending;
  for (std::size_t i = 0; i < 4; ++i)
    pending.push_back(sum_r.remote(tripled, i * n / 4, (i + 1) * n / 4));
  double total = 0;
  while (!pending.empty()) {
    auto [ready, not_ready] = weft::wait(pending, 1);
    total += weft::get(ready.front()); // ready: get() returns at once
    std::printf("  one part in, %zu left, total so far %.1f\n", not_ready.size(), total);
    pending = std::move(not_ready);
  }

  weft::shutdown();
}
