// Helpers shared by the worker-process tests: a temporary directory, files
// that several processes append lines to, and process checks.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include <weft/weft.hpp>

#include "weft_test.hpp"

namespace process_test {

inline const weft::config processes{.num_cpus = 2, .workers = weft::worker_mode::processes};

/// A fresh directory under `base` (default: the system's temporary
/// directory), removed with everything in it at scope exit.
class temp_dir {
public:
  explicit temp_dir(const std::filesystem::path& base = std::filesystem::temp_directory_path()) {
    std::string tmpl = (base / "weft-test-XXXXXX").string();
    if (!::mkdtemp(tmpl.data()))
      throw std::runtime_error("mkdtemp failed in " + base.string());
    path_ = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }

private:
  std::filesystem::path path_;
};

/// Appends `line` and a newline with one write(2) to an O_APPEND file:
/// lines from several processes never interleave.
inline void append_line(const std::string& path, const std::string& line) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    throw std::runtime_error("cannot open " + path);
  const std::string s = line + "\n";
  const auto n = ::write(fd, s.data(), s.size());
  ::close(fd);
  if (n != static_cast<ssize_t>(s.size()))
    throw std::runtime_error("cannot write " + path);
}

inline std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);)
    out.push_back(line);
  return out;
}

/// The file's contents; empty if it cannot be read, also when it vanishes
/// while read (a /proc entry of a process that exits meanwhile: libstdc++
/// then throws from the stream buffer).
inline std::string slurp(const std::string& path) {
  try {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  } catch (const std::exception&) {
    return {};
  }
}

/// Under AddressSanitizer, a worker would catch its own segfault, report it
/// and exit(1): let the signal through, for workers started from now on.
inline void let_signals_through() {
#if defined(__SANITIZE_ADDRESS__)
  const char* old = std::getenv("ASAN_OPTIONS");
  std::string opts = old ? old : "";
  opts += std::string(opts.empty() ? "" : ":") + "handle_segv=0:handle_sigbus=0:handle_abort=0:detect_leaks=0";
  ::setenv("ASAN_OPTIONS", opts.c_str(), 1);
#endif
}

/// The E that get(ref) throws (within the bound); nothing if it returns a
/// value. Any other exception (a timeout) escapes and fails the test.
template <class E, class T>
std::optional<E> error_of(const weft::object_ref<T>& ref) {
  try {
    weft::get(ref, weft_test::bound);
  } catch (const E& e) {
    return e;
  }
  return std::nullopt;
}

/// True once no process `pid` exists any more (not even a zombie: reaped).
inline bool gone(int pid) { return ::kill(pid, 0) == -1 && errno == ESRCH; }

} // namespace process_test
