// Resources: tasks declare the CPUs, GPUs and custom resources they hold; the scheduler never oversubscribes them.
#include <weft/weft.hpp>

#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <thread>
#include <vector>

// The ids of the GPUs weft gave this task (empty for a task that asked for none).
std::vector<int> gpus_seen() { return weft::get_gpu_ids(); }

std::string text(const std::vector<int>& ids) {
  std::string s;
  for (int id : ids)
    s += (s.empty() ? "" : ",") + std::to_string(id);
  return s.empty() ? "none" : s;
}

// Pretends to write a block for 50 ms; returns the bytes written.
int write_block() {
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  return 4096;
}

int main() {
  weft::init({.num_cpus = 2, .num_gpus = 1, .resources = {{"disk", 1}}});

  // Per-function default options: every call of on_gpu holds one whole GPU.
  const auto on_gpu = weft::remote(gpus_seen, {.num_gpus = 1});
  std::printf("task with num_gpus = 1 got GPU %s\n", text(weft::get(on_gpu.remote())).c_str());
  std::printf("task without GPUs got GPU %s\n", text(weft::get(weft::remote(gpus_seen).remote())).c_str());
  // Fractions up to 1 share a device: two half-GPU tasks may both hold GPU 0 at once.
  const auto half = on_gpu.options({.num_gpus = 0.5});
  auto a = half.remote();
  auto b = half.remote();
  std::printf("two tasks with num_gpus = 0.5 got GPUs %s and %s\n", text(weft::get(a)).c_str(),
              text(weft::get(b)).c_str());

  // Two CPUs are free, but the node has one "disk": the two writers run one after the other.
  const auto writer = weft::remote(write_block, {.resources = {{"disk", 1}}});
  const auto start = std::chrono::steady_clock::now();
  weft::get(std::vector{writer.remote(), writer.remote()});
  const auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::printf("two 50 ms writers holding disk = 1 took %.0f ms\n", ms);

  // A request no node could ever meet fails at once, when it is submitted.
  try {
    on_gpu.options({.num_gpus = 2}).remote();
  } catch (const weft::resource_error& e) {
    std::printf("resource_error: %s\n", e.what());
  }
  try {
    writer.options({.resources = {{"tpu", 1}}}).remote();
  } catch (const weft::resource_error& e) {
    std::printf("resource_error: %s\n", e.what());
  }

  weft::shutdown();
}
