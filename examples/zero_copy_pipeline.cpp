// A zero-copy pipeline across worker processes: each stage is a task in a
// worker that reads the previous stage's weft::array where it lies, in the
// node's shared-memory object store, and writes its own result there once.
//
//   build/examples/example_zero_copy_pipeline            (worker processes)
#include <weft/weft.hpp>

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <utility>

namespace {

/// Stage 1: a signal, made in a worker.
weft::array<float> generate(std::size_t n) {
  return weft::array<float>::build(n, [](std::span<float> out) {
    for (std::size_t i = 0; i < out.size(); ++i)
      out[i] = std::sin(static_cast<float>(i) * 0.001f);
  });
}

/// Stage 2: squares it, in another (or the same) worker; `in` is read in place.
weft::array<float> square(weft::array<float> in) {
  return weft::array<float>::build(in.size(), [&](std::span<float> out) {
    for (std::size_t i = 0; i < out.size(); ++i)
      out[i] = in[i] * in[i];
  });
}

/// Stage 3: reduces it; also says whether its input was the shared block itself.
std::pair<double, bool> mean(weft::array<float> in) {
  return {std::accumulate(in.begin(), in.end(), 0.0) / static_cast<double>(in.size()), in.in_shared_memory()};
}

/// Only the time to get an array into a worker: the same for 4 KiB and 256 MiB.
double touch_first(weft::array<float> in) { return in.empty() ? 0.0 : in[0]; }

} // namespace

int main(int argc, char** argv) {
  weft::config cfg = weft::config_from(argc, argv);
  cfg.workers = weft::worker_mode::processes;
  weft::init(cfg); // in a worker process this serves the driver and never returns

  const std::size_t n = std::size_t{64} << 20; // 64 Mi floats: 256 MiB per stage
  auto signal = weft::remote(generate).remote(n);
  auto squared = weft::remote(square).remote(signal); // refs chain the stages; the driver never copies
  const auto [m, in_place] = weft::get(weft::remote(mean).remote(squared));
  std::printf("mean of sin^2 over %zu samples: %.4f (expected ~0.5); stage 3 read its input in place: %s\n", n, m,
              in_place ? "yes" : "no");

  // Handing a worker a big array costs what handing it a small one costs.
  const auto big = weft::get(signal);
  const auto small =
    weft::array<float>::build(1024, [](std::span<float> out) { std::fill(out.begin(), out.end(), 1.f); });
  for (const auto* a : {&small, &big}) {
    weft::get(weft::remote(touch_first).remote(*a)); // warm up
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 20; ++i)
      weft::get(weft::remote(touch_first).remote(*a));
    const auto us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / 20;
    std::printf("a task taking a %zu KiB array: %.0f us per call\n", a->size() * sizeof(float) / 1024, us);
  }
  weft::shutdown();
}
