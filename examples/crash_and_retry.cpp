// A task that crashes its process, and the program that goes on anyway.
//
// With worker processes, a task runs in a copy of this program that weft
// starts and supervises. Here the task segfaults on its first attempt: the
// crash takes down that worker only; weft starts another one and runs the
// task again (max_retries), and the second attempt returns. A task that
// crashes every time fails with worker_crashed_error naming the signal.
//
//   ./example_crash_and_retry
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <weft/weft.hpp>

namespace {

/// Counts attempts in a file (tasks in different processes share no memory)
/// and crashes on the first one.
int parse_record(const std::string& attempts_file, const std::string& record) {
  std::ofstream(attempts_file, std::ios::app) << 'x';
  if (std::filesystem::file_size(attempts_file) == 1) {
    std::printf("attempt 1 in worker %d: crashing on purpose\n", static_cast<int>(::getpid()));
    std::fflush(stdout);
    volatile int* nowhere = nullptr;
    *nowhere = 42; // a real segfault
  }
  std::printf("attempt %d in worker %d: parsing\n", static_cast<int>(std::filesystem::file_size(attempts_file)),
              static_cast<int>(::getpid()));
  return static_cast<int>(record.size());
}

int always_crashes(int) { std::abort(); }

} // namespace

int main(int argc, char** argv) {
  weft::config cfg = weft::config_from(argc, argv);
  cfg.workers = weft::worker_mode::processes;
  weft::init(cfg); // in a worker process this serves the driver and never returns

  const auto dir = std::filesystem::temp_directory_path() / ("weft-crash-example-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string attempts = (dir / "attempts").string();

  const auto parse = weft::remote(parse_record, {.max_retries = 1, .name = "parse_record"});
  const int length = weft::get(parse.remote(attempts, std::string("id=7;name=weft")));
  std::printf("driver %d: the task survived a segfault and returned %d\n", static_cast<int>(::getpid()), length);

  try {
    weft::get(weft::remote(always_crashes, {.max_retries = 2, .name = "always_crashes"}).remote(0));
  } catch (const weft::worker_crashed_error& e) {
    std::printf("driver: gave up after 3 attempts: %s\n", e.what());
  }

  std::filesystem::remove_all(dir);
  weft::shutdown();
}
