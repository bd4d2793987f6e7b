// The driver's side of worker processes, with real processes: worker output
// reaches the driver's stdout and stderr prefixed with the worker's pid; a
// driver killed with SIGKILL leaves no worker behind; a worker program of
// another build (or none at all) is refused with worker_start_error instead
// of a hang; shutdown while a task runs kills its worker and fails the task
// with runtime_shutdown_error.
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "process/process_test.hpp"
#include "weft_test.hpp"
#include <weft/weft.hpp>

extern char** environ;

using Catch::Contains;
using namespace std::chrono_literals;

namespace driver_test {

using namespace process_test;

/// The hidden test case that the SIGKILL test starts as a separate driver.
constexpr const char* driver_child_test = "driver child: two tasks report their workers and sleep";
/// Where that child writes its workers' pids (environment variable).
constexpr const char* pid_file_env = "WEFT_DRIVER_TEST_PID_FILE";

/// The hidden test case that a driver child runs to return from main
/// without weft::shutdown(), and where it writes its workers' pids.
constexpr const char* no_shutdown_child_test = "driver child: main returns without shutdown";
constexpr const char* no_shutdown_file_env = "WEFT_DRIVER_TEST_NO_SHUTDOWN_FILE";

/// This test program's path.
std::string own_exe() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

/// This program started again as a driver of its own that runs one hidden
/// test case, told `value` through the environment variable `env`. Never
/// left running: killed with SIGKILL and reaped at the end of the scope,
/// unless the test reaped it (then it sets `reaped`).
struct child_driver {
  pid_t pid = -1;
  bool reaped = false;
  child_driver(const char* test_case, const char* env, const std::string& value) {
    REQUIRE(::setenv(env, value.c_str(), 1) == 0);
    std::string exe = own_exe();
    std::string name = test_case;
    char* argv[] = {exe.data(), name.data(), nullptr};
    const int rc = ::posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv, environ);
    ::unsetenv(env);
    REQUIRE(rc == 0);
  }
  ~child_driver() {
    if (!reaped && pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
  child_driver(const child_driver&) = delete;
  child_driver& operator=(const child_driver&) = delete;
};

/// The pids of this process's children (from /proc/<pid>/stat).
std::vector<int> own_children() {
  std::vector<int> out;
  const std::string me = std::to_string(::getpid());
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const auto name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos)
      continue;
    const auto stat = slurp("/proc/" + name + "/stat");
    const auto paren = stat.rfind(')');
    if (paren == std::string::npos)
      continue;
    // after ") ": state, then ppid
    std::istringstream rest(stat.substr(paren + 2));
    std::string state, ppid;
    rest >> state >> ppid;
    if (ppid == me)
      out.push_back(std::stoi(name));
  }
  return out;
}

/// Shuts weft down at scope exit (for tests that shut down themselves).
struct shutdown_at_exit {
  ~shutdown_at_exit() { weft::shutdown(); }
};

int own_pid(int) { return static_cast<int>(::getpid()); }

/// Records its pid, then sleeps 30 s whatever happens: only a kill ends it
/// early.
int report_and_sleep(std::string log) {
  append_line(log, std::to_string(::getpid()));
  std::this_thread::sleep_for(30s);
  return -1;
}

/// Writes to its stdout and stderr; returns its pid.
int print_lines(int) {
  std::printf("hello from the worker's stdout\n");
  std::printf("two lines\nin one printf\n");
  std::fprintf(stderr, "hello from the worker's stderr\n");
  std::fflush(stdout);
  // No newline: the driver ends the line when the worker ends.
  [[maybe_unused]] auto n = ::write(1, "a partial line", 14);
  return static_cast<int>(::getpid());
}

/// Records its pid in `log` and waits (bounded) until two tasks did, so
/// two of them print at the same time; then prints `n` numbered lines
/// naming its pid. Returns its pid.
int meet_and_print(std::string log, int n) {
  append_line(log, std::to_string(::getpid()));
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (lines_of(log).size() < 2 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(1ms);
  const int pid = static_cast<int>(::getpid());
  for (int i = 0; i < n; ++i)
    std::printf("worker %d line %d\n", pid, i);
  return pid;
}

/// Prints one line of `n` characters; returns its pid.
int print_long_line(int n) {
  std::printf("%s\n", std::string(static_cast<std::size_t>(n), 'x').c_str());
  return static_cast<int>(::getpid());
}

/// Closes its stdout, then sleeps `ms` milliseconds; returns its pid.
int close_stdout_and_nap(int ms) {
  std::fflush(stdout);
  ::close(1);
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  std::fprintf(stderr, "still here\n");
  return static_cast<int>(::getpid());
}

/// CPU time (user + system) this process has used so far.
std::chrono::microseconds cpu_time() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return std::chrono::seconds(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         std::chrono::microseconds(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/// Points fds 1 and 2 at files until restore() (or scope exit).
class redirect_output {
public:
  redirect_output(const std::string& out, const std::string& err) {
    std::cout.flush();
    std::cerr.flush();
    std::fflush(nullptr);
    saved_out_ = ::dup(1);
    saved_err_ = ::dup(2);
    const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (saved_out_ < 0 || saved_err_ < 0 || o < 0 || e < 0)
      throw std::runtime_error("cannot redirect stdout and stderr");
    ::dup2(o, 1);
    ::dup2(e, 2);
    ::close(o);
    ::close(e);
  }
  ~redirect_output() { restore(); }
  redirect_output(const redirect_output&) = delete;
  redirect_output& operator=(const redirect_output&) = delete;
  void restore() {
    if (saved_out_ < 0)
      return;
    std::fflush(nullptr);
    ::dup2(saved_out_, 1);
    ::dup2(saved_err_, 2);
    ::close(saved_out_);
    ::close(saved_err_);
    saved_out_ = saved_err_ = -1;
  }

private:
  int saved_out_ = -1, saved_err_ = -1;
};

/// The GNU build id of this program, read from its loaded notes.
std::string own_build_id() {
  std::string id;
  ::dl_iterate_phdr(
    [](dl_phdr_info* info, std::size_t, void* out) -> int {
      for (int i = 0; i < info->dlpi_phnum; ++i) {
        const auto& ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_NOTE)
          continue;
        const char* p = reinterpret_cast<const char*>(info->dlpi_addr + ph.p_vaddr);
        const char* end = p + ph.p_memsz;
        while (p + sizeof(ElfW(Nhdr)) <= end) {
          const auto* n = reinterpret_cast<const ElfW(Nhdr)*>(p);
          const char* name = p + sizeof *n;
          const char* desc = name + ((n->n_namesz + 3) & ~3u);
          if (n->n_type == NT_GNU_BUILD_ID && n->n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0) {
            static_cast<std::string*>(out)->assign(desc, n->n_descsz);
            return 1;
          }
          p = desc + ((n->n_descsz + 3) & ~3u);
        }
      }
      return 1; // the first module is the program itself: stop there
    },
    &id);
  return id;
}

/// Copies this program to `path` with one byte of its build id changed:
/// the very same code, but another build as far as weft can tell.
void copy_as_other_build(const std::string& path) {
  const std::string id = own_build_id();
  REQUIRE(!id.empty());
  std::string bytes = slurp(own_exe());
  const std::string note = std::string("GNU\0", 4) + id;
  const auto at = bytes.find(note);
  REQUIRE(at != std::string::npos);
  bytes[at + note.size() - 1] = static_cast<char>(bytes[at + note.size() - 1] ^ 0x5a);
  {
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  REQUIRE(::chmod(path.c_str(), 0755) == 0);
}

/// Expects every task to fail fast with worker_start_error saying `says`.
void check_refused(const std::string& program, const std::string& says,
                   std::chrono::milliseconds start_timeout = std::chrono::seconds(60)) {
  weft::config cfg = processes;
  cfg.worker_program = program;
  cfg.worker_start_timeout = start_timeout;
  weft_test::runtime_guard rt(cfg);
  const auto f = weft::remote(own_pid);
  for (int i = 0; i < 2; ++i) { // and again: every task fails, none hangs
    const auto start = std::chrono::steady_clock::now();
    const auto err = error_of<weft::worker_start_error>(f.remote(i));
    REQUIRE(err);
    CHECK_THAT(std::string(err->what()), Contains(says));
    CHECK(std::chrono::steady_clock::now() - start < 10s);
  }
}

} // namespace driver_test

namespace dt = driver_test;

// ---------------------------------------------------------------- starting workers

TEST_CASE("no worker process is started before the first task or actor") {
  weft_test::runtime_guard rt(dt::processes);
  (void)weft::put(42);                // objects alone need no worker
  std::this_thread::sleep_for(300ms); // a pool started in the background would be forking by now
  CHECK(dt::own_children().empty());
  const int task_worker = weft::get(weft::remote(dt::own_pid).remote(0), weft_test::bound);
  auto children = dt::own_children();
  CHECK(children == std::vector<int>{task_worker});
  // An actor gets a worker of its own.
  struct pid_of {
    int pid() const { return static_cast<int>(::getpid()); }
  };
  auto h = weft::remote<pid_of>().remote();
  const int actor_worker = weft::get(h.task(&pid_of::pid).remote(), weft_test::bound);
  CHECK(actor_worker != task_worker);
  children = dt::own_children();
  CHECK(std::find(children.begin(), children.end(), actor_worker) != children.end());
}

// ---------------------------------------------------------------- output

TEST_CASE("worker stdout and stderr reach the driver's own prefixed with the worker's pid") {
  dt::temp_dir dir;
  const auto out = dir.file("stdout"), err = dir.file("stderr");
  int pid = 0;
  std::string failure;
  {
    // Nothing may go through Catch while fds 1 and 2 point at the files.
    dt::redirect_output redirect(out, err);
    try {
      weft::init(dt::processes);
      dt::shutdown_at_exit stop;
      pid = weft::get(weft::remote(dt::print_lines).remote(0), weft_test::bound);
    } catch (const std::exception& e) {
      failure = e.what();
    }
    // weft is shut down here: the worker was killed and its output drained.
  }
  REQUIRE(failure.empty());
  REQUIRE(pid > 0);
  const std::string p = "(pid=" + std::to_string(pid) + ") ";
  CHECK(dt::slurp(out) ==
        p + "hello from the worker's stdout\n" + p + "two lines\n" + p + "in one printf\n" + p + "a partial line\n");
  // The driver may log to stderr too; every worker line is the one printed.
  std::vector<std::string> worker_lines;
  for (const auto& line : dt::lines_of(err))
    if (line.starts_with("(pid="))
      worker_lines.push_back(line);
  CHECK(worker_lines == std::vector<std::string>{p + "hello from the worker's stderr"});
}

TEST_CASE("lines of two workers printing at once never mix") {
  dt::temp_dir dir;
  const auto out = dir.file("stdout"), err = dir.file("stderr");
  std::vector<int> pids;
  std::string failure;
  constexpr int n = 2000;
  {
    dt::redirect_output redirect(out, err);
    try {
      weft::init(dt::processes);
      dt::shutdown_at_exit stop;
      const auto f = weft::remote(dt::meet_and_print);
      auto a = f.remote(dir.file("met"), n);
      auto b = f.remote(dir.file("met"), n);
      pids = {weft::get(a, weft_test::bound), weft::get(b, weft_test::bound)};
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  REQUIRE(failure.empty());
  REQUIRE(pids.size() == 2);
  CHECK(pids[0] != pids[1]); // two workers, printing at once
  std::map<int, int> next;   // pid -> the next line number expected from it
  int bad = 0;
  std::string first_bad;
  for (const auto& line : dt::lines_of(out)) {
    int prefix_pid = 0, pid = 0, i = 0;
    char tail = 0;
    const bool ok = std::sscanf(line.c_str(), "(pid=%d) worker %d line %d%c", &prefix_pid, &pid, &i, &tail) == 3 &&
                    prefix_pid == pid && next[pid] == i;
    if (ok) {
      ++next[pid];
    } else if (bad++ == 0) {
      first_bad = line;
    }
  }
  INFO("first bad line: " << first_bad);
  CHECK(bad == 0);
  for (int pid : pids) {
    INFO("pid " << pid);
    CHECK(next[pid] == n); // every line, in order
  }
}

TEST_CASE("a line longer than the driver's read buffer is forwarded as one line") {
  dt::temp_dir dir;
  const auto out = dir.file("stdout"), err = dir.file("stderr");
  int pid = 0;
  std::string failure;
  constexpr int n = 200'000;
  {
    dt::redirect_output redirect(out, err);
    try {
      weft::init(dt::processes);
      dt::shutdown_at_exit stop;
      pid = weft::get(weft::remote(dt::print_long_line).remote(n), weft_test::bound);
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  REQUIRE(failure.empty());
  const auto text = dt::slurp(out);
  const std::string prefix = "(pid=" + std::to_string(pid) + ") ";
  CHECK(text.size() == prefix.size() + n + 1);
  CHECK(text.starts_with(prefix));
  CHECK(std::count(text.begin(), text.end(), 'x') == n);
  CHECK(std::count(text.begin(), text.end(), '\n') == 1);
  CHECK(text.ends_with("x\n"));
}

TEST_CASE("a worker that closes its stdout does not make the driver spin") {
  dt::temp_dir dir;
  const auto out = dir.file("stdout"), err = dir.file("stderr");
  int pid = 0;
  std::string failure;
  std::chrono::microseconds used{0};
  {
    dt::redirect_output redirect(out, err);
    try {
      weft::init(dt::processes);
      dt::shutdown_at_exit stop;
      (void)weft::get(weft::remote(dt::own_pid).remote(0), weft_test::bound); // a worker is up
      const auto before = dt::cpu_time();
      pid = weft::get(weft::remote(dt::close_stdout_and_nap).remote(1500), weft_test::bound);
      used = dt::cpu_time() - before;
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  REQUIRE(failure.empty());
  // The driver idles while the task sleeps 1.5 s: a reader that polls a
  // closed pipe again and again would burn most of that time.
  INFO("driver CPU time while the worker slept 1.5 s: " << used.count() << " us");
  CHECK(used < std::chrono::milliseconds(250));
  // The worker's stderr is still forwarded.
  CHECK_THAT(dt::slurp(err), Contains("(pid=" + std::to_string(pid) + ") still here\n"));
}

// ---------------------------------------------------------------- the driver dies

TEST_CASE("driver child: two tasks report their workers and sleep", "[.driver]") {
  // Started by the test below as a driver of its own, which it kills.
  const char* path = std::getenv(dt::pid_file_env);
  if (!path)
    return;
  weft::init(dt::processes);
  const auto f = weft::remote(dt::report_and_sleep);
  auto a = f.remote(std::string(path));
  auto b = f.remote(std::string(path));
  std::this_thread::sleep_for(30s); // killed long before, unless something broke
  weft::shutdown();
}

TEST_CASE("a driver killed with SIGKILL leaves no worker behind") {
  // Orphaned workers are handed to this process (not to init), so the test
  // can reap them and see what killed them.
  REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
  dt::temp_dir dir;
  const auto pids_file = dir.file("pids");
  dt::child_driver guard(dt::driver_child_test, dt::pid_file_env, pids_file);
  const pid_t driver = guard.pid;

  REQUIRE(weft_test::eventually([&] { return dt::lines_of(pids_file).size() >= 2; }));
  std::vector<int> workers;
  for (const auto& l : dt::lines_of(pids_file))
    workers.push_back(std::stoi(l));
  REQUIRE(workers.size() == 2);
  CHECK(workers[0] != workers[1]);

  REQUIRE(::kill(driver, SIGKILL) == 0);
  int status = 0;
  REQUIRE(::waitpid(driver, &status, 0) == driver);
  guard.reaped = true;
  CHECK(WIFSIGNALED(status));

  for (int w : workers) {
    INFO("worker " << w);
    // Busy in a 30 s sleep, a worker still goes at once: its parent-death
    // signal (SIGKILL) or its lost connection (noticed on a CAF thread, not
    // the busy one: it exits with status 0) ends it, whichever comes first.
    int ws = 0;
    const bool reaped = weft_test::eventually([&] {
      const pid_t r = ::waitpid(w, &ws, WNOHANG);
      return r == w || (r < 0 && errno == ECHILD && dt::gone(w));
    });
    CHECK(reaped);
    CHECK(dt::gone(w));
    if (reaped && WIFSIGNALED(ws))
      CHECK(WTERMSIG(ws) == SIGKILL);
  }
}

/// The hidden driver that spills and is killed, and where it spills.
constexpr const char* spilling_child_test = "driver child: spills an array and sleeps";
constexpr const char* spill_dir_env = "WEFT_DRIVER_TEST_SPILL_DIR";

weft::config small_spilling_store(const std::string& parent) {
  weft::config cfg = dt::processes;
  cfg.object_store_memory = 4 << 20;
  cfg.object_spill_directory = parent;
  return cfg;
}

/// The directories in `parent` named like spill directories of `pid`.
std::vector<std::filesystem::path> spill_dirs_of(const std::string& parent, pid_t pid) {
  std::vector<std::filesystem::path> out;
  const std::string prefix = "weft-spill-" + std::to_string(pid) + "-";
  for (const auto& e : std::filesystem::directory_iterator(parent))
    if (e.path().filename().string().rfind(prefix, 0) == 0)
      out.push_back(e.path());
  return out;
}

TEST_CASE("driver child: spills an array and sleeps", "[.driver]") {
  const char* parent = std::getenv(spill_dir_env);
  if (!parent)
    return;
  weft::init(small_spilling_store(parent));
  const std::size_t n = (3 << 20) / sizeof(double);
  auto a = weft::array<double>::build(n, [](std::span<double> out) { std::fill(out.begin(), out.end(), 1.0); });
  auto b = weft::array<double>::build(n, [](std::span<double> out) { std::fill(out.begin(), out.end(), 2.0); });
  std::ofstream(std::string(parent) + "/ready") << (b.spilled() ? "spilled" : "not spilled") << std::endl;
  std::this_thread::sleep_for(30s); // killed long before
  weft::shutdown();
}

TEST_CASE("a spill directory left by a driver killed with SIGKILL goes when the next node starts") {
  dt::temp_dir dir;
  const std::string parent = dir.file("spill");
  std::filesystem::create_directories(parent);
  // A spill directory of a process that still runs (this one) stays.
  const auto alive = std::filesystem::path(parent) / ("weft-spill-" + std::to_string(::getpid()) + "-0123456789ab");
  std::filesystem::create_directory(alive);
  std::filesystem::permissions(alive, std::filesystem::perms::owner_all);
  std::ofstream(alive / "00000000000000c0") << "x";

  pid_t driver = -1;
  {
    dt::child_driver child(spilling_child_test, spill_dir_env, parent); // killed at the end of the scope
    driver = child.pid;
    REQUIRE(weft_test::eventually([&] { return dt::slurp(parent + "/ready") == "spilled\n"; }));
  }
  // Killed: its spill file is still there.
  const auto left = spill_dirs_of(parent, driver);
  REQUIRE(left.size() == 1);
  CHECK(std::distance(std::filesystem::directory_iterator(left[0]), std::filesystem::directory_iterator{}) == 1);

  {
    weft_test::runtime_guard rt(small_spilling_store(parent));
    CHECK(spill_dirs_of(parent, driver).empty());
    CHECK(std::filesystem::exists(alive / "00000000000000c0"));
  }
  std::filesystem::remove_all(alive);
}

TEST_CASE("driver child: main returns without shutdown", "[.driver]") {
  // Started by the test below: one idle worker and one busy in a 30 s
  // sleep when its main returns, weft still running.
  const char* path = std::getenv(dt::no_shutdown_file_env);
  if (!path)
    return;
  weft::init(dt::processes);
  auto busy = weft::remote(dt::report_and_sleep).remote(std::string(path));
  REQUIRE(weft_test::eventually([&] { return dt::lines_of(path).size() == 1; }));
  const int idle = weft::get(weft::remote(dt::own_pid).remote(0), weft_test::bound); // on a second worker
  dt::append_line(path, std::to_string(idle));
  dt::append_line(path, "returning");
}

TEST_CASE("a driver whose main returns without shutdown leaves no worker behind") {
  REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0); // orphaned workers come to this process
  dt::temp_dir dir;
  const auto pids_file = dir.file("pids");
  dt::child_driver guard(dt::no_shutdown_child_test, dt::no_shutdown_file_env, pids_file);
  const pid_t driver = guard.pid;

  // It exits by itself, and cleanly.
  int status = 0;
  const bool exited = weft_test::eventually([&] { return ::waitpid(driver, &status, WNOHANG) == driver; });
  REQUIRE(exited);
  guard.reaped = true;
  CHECK(WIFEXITED(status));
  if (WIFEXITED(status))
    CHECK(WEXITSTATUS(status) == 0);
  const auto lines = dt::lines_of(pids_file);
  REQUIRE(lines.size() == 3);
  CHECK(lines[2] == "returning");
  const std::vector<int> workers{std::stoi(lines[0]), std::stoi(lines[1])};
  CHECK(workers[0] != workers[1]);
  // Its exit took the thread their parent-death signal is tied to, and
  // closed their connection: either ends them, the busy one too.
  for (int w : workers) {
    INFO("worker " << w);
    const bool reaped = weft_test::eventually([&] {
      const pid_t r = ::waitpid(w, nullptr, WNOHANG);
      return r == w || (r < 0 && errno == ECHILD && dt::gone(w));
    });
    CHECK(reaped);
    CHECK(dt::gone(w));
  }
}

// ---------------------------------------------------------------- the worker program

TEST_CASE("a worker program of another build is refused with worker_start_error instead of a hang") {
  // This very program with another build id, placed next to it (a temporary
  // directory may not allow executing).
  dt::temp_dir dir(std::filesystem::path(dt::own_exe()).parent_path());
  const auto other = dir.file("other-build");
  dt::copy_as_other_build(other);
  dt::check_refused(other, "different build");
}

TEST_CASE("another weft program as worker program is refused with worker_start_error") {
  // Another test program of this project, built next to this one.
  const auto sibling = std::filesystem::path(dt::own_exe()).parent_path() / "libtask_errors_test";
  if (!std::filesystem::exists(sibling)) {
    WARN("skipped: " << sibling << " is not built");
    return;
  }
  dt::check_refused(sibling.string(), "different build");
}

TEST_CASE("a worker program that does not exist gives worker_start_error at once") {
  dt::check_refused("/nonexistent/weft-worker-program", "/nonexistent/weft-worker-program");
}

TEST_CASE("a worker program that exits before it connects gives worker_start_error") {
  if (!std::filesystem::exists("/bin/true")) {
    WARN("skipped: no /bin/true");
    return;
  }
  dt::check_refused("/bin/true", "exited with code 0 before it connected");
}

TEST_CASE("a worker program that never connects is killed after worker_start_timeout and gives worker_start_error") {
  dt::temp_dir dir(std::filesystem::path(dt::own_exe()).parent_path());
  const auto hangs = dir.file("never-connects");
  {
    std::ofstream out(hangs);
    out << "#!/bin/sh\nexec sleep 300\n";
  }
  REQUIRE(::chmod(hangs.c_str(), 0755) == 0);
  dt::check_refused(hangs, "did not connect to the driver within 1000 ms", 1s);
  // Each one was killed and reaped: none is left sleeping.
  CHECK(dt::own_children().empty());
}

// ---------------------------------------------------------------- shutdown

TEST_CASE("shutdown while a task runs in a worker kills the worker and fails the task with runtime_shutdown_error") {
  dt::temp_dir dir;
  const auto log = dir.file("sleeper");
  weft::init(dt::processes);
  dt::shutdown_at_exit stop;
  auto ref = weft::remote(dt::report_and_sleep).remote(log);
  REQUIRE(weft_test::eventually([&] { return dt::lines_of(log).size() == 1; }));
  const int worker = std::stoi(dt::lines_of(log)[0]);

  // A thread blocked in get() is woken by the shutdown.
  std::atomic<int> waiter_saw{0}; // 1: runtime_shutdown_error, 2: something else
  std::atomic<bool> waiting{false};
  std::thread waiter([&] {
    try {
      waiting = true;
      weft::get(ref, weft_test::bound);
      waiter_saw = 2;
    } catch (const weft::runtime_shutdown_error&) {
      waiter_saw = 1;
    } catch (...) {
      waiter_saw = 2;
    }
  });
  REQUIRE(weft_test::eventually([&] { return waiting.load(); }));
  std::this_thread::sleep_for(50ms); // let it block

  const auto start = std::chrono::steady_clock::now();
  weft::shutdown();
  CHECK(std::chrono::steady_clock::now() - start < 10s); // not the 30 s the task sleeps
  waiter.join();
  CHECK(waiter_saw == 1);
  CHECK(dt::gone(worker)); // killed and reaped before shutdown returned
  REQUIRE(ref.is_ready());
  const auto* cell = ref.cell();
  REQUIRE(cell->failed());
  try {
    std::rethrow_exception(cell->error());
  } catch (const weft::runtime_shutdown_error& e) {
    CHECK_THAT(std::string(e.what()), Contains("shut down"));
  } catch (const std::exception& e) {
    FAIL("expected runtime_shutdown_error, got: " << e.what());
  }

  // weft starts again, with new workers.
  weft::init(dt::processes);
  const int again = weft::get(weft::remote(dt::own_pid).remote(0), weft_test::bound);
  CHECK(again != worker);
  CHECK(again != static_cast<int>(::getpid()));
}

TEST_CASE("shutdown while workers are being started neither hangs nor leaves a worker behind") {
  // Each round starts workers for two tasks and shuts down a little later
  // each time, so that some shutdowns come while a worker is being started.
  int left_behind = 0;
  for (int round = 0; round < 40; ++round) {
    weft::init(dt::processes);
    auto a = weft::remote(dt::own_pid).remote(round);
    auto b = weft::remote(dt::own_pid).remote(round);
    std::this_thread::sleep_for(std::chrono::microseconds(round * 250));
    {
      weft_test::watchdog dog(weft_test::bound, "weft::shutdown() in round " + std::to_string(round));
      weft::shutdown();
    }
    // Every worker was killed and reaped before shutdown returned.
    const auto children = dt::own_children();
    left_behind += static_cast<int>(children.size());
    for (int pid : children) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
  CHECK(left_behind == 0);
}

// CAF 0.17 keeps the logger of a system in a thread-local of every thread
// that spawned an actor, and ~actor_system waits for it (caf_spawn_scope).
TEST_CASE("shutdown from another thread than the one that called init returns") {
  weft::init(dt::processes);
  CHECK(weft::get(weft::remote(dt::own_pid).remote(0), weft_test::bound) > 0);
  weft_test::watchdog dog(weft_test::bound, "weft::shutdown() from another thread");
  std::thread([] { weft::shutdown(); }).join();
  CHECK_FALSE(weft::is_initialized());
}
