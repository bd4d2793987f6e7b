/// @file
/// weft::config: what weft::init() sets up. A plain struct with defaults;
/// fill it with designated initializers in field order:
///
///     weft::init({.num_cpus = 2, .num_gpus = 0, .resources = {{"disk", 4}}});
///
/// Field order: num_cpus, num_gpus, memory, resources, log_level,
/// fiber_stack_size, workers, worker_program, worker_start_timeout,
/// object_store_memory, object_store_threshold, object_spilling,
/// object_spill_directory.
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <optional>
#include <string>

namespace weft {

/// Where remote functions run.
enum class worker_mode {
  /// In the driver's own process, on its threads (fastest; a crash in a
  /// task ends the program).
  local,
  /// In worker processes the driver starts and supervises (a crash costs
  /// one worker; the task is retried). See docs/processes.md.
  processes,
};

struct config {
  /// Logical CPUs of the local node. Unset: the machine's hardware threads.
  std::optional<double> num_cpus{};
  /// GPUs of the local node, numbered 0..num_gpus-1. Default 0.
  double num_gpus = 0;
  /// Bytes of memory tasks may reserve with task_options::memory.
  /// Unset: 70% of the machine's physical memory.
  std::optional<double> memory{};
  /// Custom resources of the local node, e.g. {{"disk", 4}}.
  std::map<std::string, double> resources{};
  /// spdlog level name: trace, debug, info, warn, error, critical, off.
  /// Unset: $WEFT_LOG_LEVEL, else "warn".
  std::optional<std::string> log_level{};
  /// Stack size of the fibers tasks run on (virtual memory; pages are
  /// committed only when touched). Default 1 MiB.
  std::size_t fiber_stack_size = std::size_t{1} << 20;
  /// local (default) or processes. Flag: --weft-workers=local|processes.
  worker_mode workers = worker_mode::local;
  /// The program started as a worker. Unset: this program itself
  /// (/proc/self/exe). Another program is refused unless it is the very
  /// same build.
  std::optional<std::string> worker_program{};
  /// How long a started worker process has to connect to the driver. One
  /// that does not is killed, and the tasks waiting for a worker fail with
  /// worker_start_error (a worker program that hangs must not hang them).
  std::chrono::milliseconds worker_start_timeout = std::chrono::seconds(60);
  /// Worker processes: bytes of the node's shared-memory object store,
  /// where big weft::array objects live (pages are used only as arrays
  /// fill them). Unset: 30% of physical memory (Ray's default). At least
  /// 1 MiB.
  std::optional<std::size_t> object_store_memory{};
  /// Worker processes: a weft::array of at least this many bytes lives in
  /// the shared store and crosses processes without a copy; smaller ones
  /// are copied. Default 100 KiB (Ray inlines objects below that size).
  std::size_t object_store_threshold = std::size_t{100} << 10;
  /// Worker processes: when the shared store is full, a new weft::array
  /// goes to a file of the spill directory instead (mapped by every process
  /// that reads it; the page cache decides what stays in memory), and the
  /// file is removed with its last reference. Off: object_store_full_error.
  /// Default on.
  bool object_spilling = true;
  /// Worker processes: where spill files go: a directory
  /// weft-spill-<pid>-<random> (mode 0700) inside this one, made at the
  /// first spill and removed at shutdown (this one is made at init if
  /// missing). Unset: $TMPDIR, else /tmp.
  std::optional<std::string> object_spill_directory{};
};

} // namespace weft
