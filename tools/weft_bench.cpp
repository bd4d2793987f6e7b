// weft-bench: runs Ray's microbenchmark workloads (same definitions as Ray's
// ray_perf.py / single-node release tests) on weft, measures the engine's own
// ceiling in the same run (raw CAF send and spawn, a blocking thread round
// trip), and prints one table plus optional JSON. It asserts no speed.
//
//   weft-bench [--quick] [--only NAME] [--mode local|processes|both] [--json FILE] [--list]
#include <weft/weft.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <caf/all.hpp>

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

struct settings {
  bool quick = false;
  double window_s = 1.0;
  int windows = 5;
};

/// One row of the report.
struct row {
  std::string workload;
  std::string mode = "local";
  double value = 0;
  std::string unit;
  std::optional<std::string> ceiling;
  std::optional<double> ratio;
  double spread = 0; ///< (max - min) / median over the windows
  std::string note;
};

struct stats {
  double median = 0;
  double spread = 0;
};

stats summarize(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  stats s;
  s.median = xs[xs.size() / 2];
  s.spread = s.median > 0 ? (xs.back() - xs.front()) / s.median : 0;
  return s;
}

/// Rate of `batch` (which does `per_call` operations) over several windows,
/// after one warm-up window.
stats rate(const settings& cfg, double per_call, const std::function<void()>& batch) {
  std::vector<double> rates;
  for (int w = -1; w < cfg.windows; ++w) {
    auto t0 = clock_type::now();
    double ops = 0;
    do {
      batch();
      ops += per_call;
    } while (seconds_since(t0) < cfg.window_s);
    if (w >= 0)
      rates.push_back(ops / seconds_since(t0));
  }
  return summarize(rates);
}

/// Median time of `runs` runs of `once`, after one warm-up run.
stats timed(int runs, const std::function<void()>& once) {
  std::vector<double> times;
  for (int r = -1; r < runs; ++r) {
    auto t0 = clock_type::now();
    once();
    if (r >= 0)
      times.push_back(seconds_since(t0));
  }
  return summarize(times);
}

/// A "Key:  N kB" field of a /proc/self file, in KiB (0 if absent).
long proc_kb(const char* file, const char* key) {
  std::ifstream in(file);
  std::string line;
  const std::size_t len = std::strlen(key);
  while (std::getline(in, line))
    if (line.compare(0, len, key) == 0)
      return std::stol(line.substr(len));
  return 0;
}
long status_kb(const char* key) { return proc_kb("/proc/self/status", key); }
/// ... of /proc/self/smaps_rollup (the whole process).
long smaps_kb(const char* key) { return proc_kb("/proc/self/smaps_rollup", key); }

long peak_rss_kb() { return status_kb("VmHWM:"); }

int thread_count() {
  int n = 0;
  if (DIR* d = opendir("/proc/self/task")) {
    while (auto* e = readdir(d))
      n += e->d_name[0] != '.';
    closedir(d);
  }
  return n;
}

/// The processes this one started that are still alive (worker processes in
/// process mode): the children of all its threads.
int child_count() {
  int n = 0;
  if (DIR* d = opendir("/proc/self/task")) {
    while (auto* e = readdir(d)) {
      if (e->d_name[0] == '.')
        continue;
      std::ifstream in(std::string("/proc/self/task/") + e->d_name + "/children");
      std::string pid;
      while (in >> pid)
        ++n;
    }
    closedir(d);
  }
  return n;
}

/// Waits (at most `limit_s`) until this process has at most `n` children:
/// workers of dropped actors exit on their own, and a run that follows
/// should not pay for their exits.
void await_children_at_most(int n, double limit_s) {
  const auto t0 = clock_type::now();
  while (child_count() > n && seconds_since(t0) < limit_s)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

/// Samples a peak every 5 ms while alive.
class peak_watch {
public:
  explicit peak_watch(std::function<int()> probe) :
    probe_(std::move(probe)),
    thread_([this] {
      while (!done_.load()) {
        peak_ = std::max(peak_.load(), probe_());
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }) {}
  ~peak_watch() { stop(); }
  int stop() {
    done_ = true;
    if (thread_.joinable())
      thread_.join();
    return peak_;
  }

private:
  std::function<int()> probe_;
  std::atomic<bool> done_{false};
  std::atomic<int> peak_{0};
  std::thread thread_;
};

// ---- remote functions of the workloads ----
int small_value() { return 0; }
int fib(int n) {
  static const auto fib_r = weft::remote(fib);
  if (n < 2)
    return n;
  auto a = fib_r.remote(n - 1);
  auto b = fib_r.remote(n - 2);
  return weft::get(a) + weft::get(b);
}
std::size_t count_refs(const std::vector<weft::object_ref<int>>& refs) { return weft::get(refs).size(); }
std::vector<int> numbers(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i)
    v[static_cast<std::size_t>(i)] = i;
  return v;
}

// ---- the actor of the workloads (Ray's ray_perf.py `Actor`) ----
struct bench_actor {
  int small_value() { return 0; }
  int small_value_arg(int x) { return x; }
  int small_value_batch(int n) { return n; }
  /// RSS and PSS of the process the actor lives in, KiB (for actors in workers).
  std::vector<long> memory_kb() { return {status_kb("VmRSS:"), smaps_kb("Pss:")}; }
};

/// An actor that calls another actor, for the n:n workloads (a client).
struct bench_client {
  explicit bench_client(weft::actor_handle<bench_actor> servers) : server(std::move(servers)) {}
  int small_value_batch(int n) {
    std::vector<weft::object_ref<int>> refs;
    refs.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i)
      refs.push_back(server.task(&bench_actor::small_value).remote());
    weft::get(refs);
    return n;
  }
  int small_value_batch_arg(int n) {
    auto x = weft::put(0);
    std::vector<weft::object_ref<int>> refs;
    refs.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i)
      refs.push_back(server.task(&bench_actor::small_value_arg).remote(x));
    weft::get(refs);
    return n;
  }
  weft::actor_handle<bench_actor> server;
};

/// A task-submitting actor, for multi-client tasks async.
struct task_client {
  int submit_batch(int n) {
    const auto f = weft::remote(small_value);
    std::vector<weft::object_ref<int>> refs;
    refs.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i)
      refs.push_back(f.remote());
    weft::get(refs);
    return n;
  }
};

long current_rss_kb() { return status_kb("VmRSS:"); }

/// Calls per second of batches of 1000 no-op calls spread round-robin over
/// `actors`, each batch ended by one get.
stats async_calls(const settings& c, const std::vector<weft::actor_handle<bench_actor>>& actors) {
  return rate(c, 1000, [&] {
    std::vector<weft::object_ref<int>> refs;
    refs.reserve(1000);
    for (std::size_t i = 0; i < 1000; ++i)
      refs.push_back(actors[i % actors.size()].task(&bench_actor::small_value).remote());
    weft::get(refs);
  });
}

/// n:n: one client actor per CPU, each making 1000 calls on its own server actor per batch.
stats n_to_n_calls(const settings& c, int (bench_client::*batch)(int)) {
  const int n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<weft::actor_handle<bench_client>> clients;
  for (int k = 0; k < n; ++k)
    clients.push_back(weft::remote<bench_client>().remote(weft::remote<bench_actor>().remote()));
  return rate(c, 1000.0 * n, [&] {
    std::vector<weft::object_ref<int>> done;
    for (auto& cl : clients)
      done.push_back(cl.task(batch).remote(1000));
    weft::get(done);
  });
}

// ---- the ceiling: what CAF and the OS do on this machine ----
using go_atom = caf::atom_constant<caf::atom("go")>;

stats caf_send_ceiling(const settings& cfg) {
  caf::actor_system_config sys_cfg;
  sys_cfg.set("scheduler.max-threads", 2);
  caf::actor_system sys{sys_cfg};
  std::atomic<long> received{0};
  auto sink = sys.spawn([&received](caf::event_based_actor*) -> caf::behavior {
    return {[&received](int) { received.fetch_add(1, std::memory_order_relaxed); }};
  });
  auto source = sys.spawn([sink](caf::event_based_actor* self) -> caf::behavior {
    return {[=](go_atom, int n) {
      for (int i = 0; i < n; ++i)
        self->send(sink, i);
    }};
  });
  const int n = cfg.quick ? 200'000 : 2'000'000;
  auto s = rate(cfg, n, [&] {
    long target = received.load() + n;
    caf::anon_send(source, go_atom::value, n);
    while (received.load(std::memory_order_relaxed) < target)
      std::this_thread::yield();
  });
  caf::anon_send_exit(source, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(sink, caf::exit_reason::user_shutdown);
  return s;
}

stats caf_spawn_ceiling(const settings& cfg) {
  caf::actor_system_config sys_cfg;
  sys_cfg.set("scheduler.max-threads", 2);
  caf::actor_system sys{sys_cfg};
  const int n = cfg.quick ? 10'000 : 50'000;
  return rate(cfg, n, [&] {
    for (int i = 0; i < n; ++i)
      sys.spawn([](caf::event_based_actor* self, int) { self->quit(); }, i);
    sys.await_all_actors_done();
  });
}

stats thread_roundtrip_ceiling(const settings& cfg) {
  std::mutex m;
  std::condition_variable cv;
  long ping = 0;
  long pong = 0;
  bool stop = false;
  std::thread echo([&] {
    std::unique_lock<std::mutex> lock(m);
    for (;;) {
      cv.wait(lock, [&] { return stop || ping != pong; });
      if (stop)
        return;
      pong = ping;
      cv.notify_all();
    }
  });
  const int n = cfg.quick ? 2'000 : 20'000;
  auto s = rate(cfg, n, [&] {
    for (int i = 0; i < n; ++i) {
      std::unique_lock<std::mutex> lock(m);
      ++ping;
      cv.notify_all();
      cv.wait(lock, [&] { return pong == ping; });
    }
  });
  {
    std::lock_guard<std::mutex> lock(m);
    stop = true;
  }
  cv.notify_all();
  echo.join();
  return s;
}

/// Ray's tasks async and tasks sync; the same code in either worker mode.
row tasks_async_row(const settings& c, const char* mode) {
  const auto f = weft::remote(small_value);
  auto s = rate(c, 1000, [&] {
    std::vector<weft::object_ref<int>> refs;
    refs.reserve(1000);
    for (int i = 0; i < 1000; ++i)
      refs.push_back(f.remote());
    weft::get(refs);
  });
  return row{"tasks_async", mode, s.median, "tasks/s", "caf_send_ceiling", {}, s.spread, ""};
}

row tasks_sync_row(const settings& c, const char* mode) {
  const auto f = weft::remote(small_value);
  auto s = rate(c, 100, [&] {
    for (int i = 0; i < 100; ++i)
      weft::get(f.remote());
  });
  return row{"tasks_sync", mode, s.median, "tasks/s", "thread_roundtrip_ceiling", {}, s.spread, ""};
}

/// Ray's "3,000 returns" scale test: one call whose num_returns is chosen
/// at run time, then a get of every ref; the same code in either mode.
row returns_3000_row(const settings& c, const char* mode) {
  const int n = 3000;
  const auto f = weft::remote(numbers).num_returns(n);
  auto s = timed(c.quick ? 5 : 20, [&] {
    auto values = weft::get(f.remote(n));
    if (values.size() != static_cast<std::size_t>(n) || values.back() != n - 1)
      std::fprintf(stderr, "returns_3000: wrong values\n");
  });
  return row{"returns_3000", mode, s.median, "s", {}, {}, s.spread, "one call with num_returns(3000), get of all"};
}

float first_of(weft::array<float> a) { return a.empty() ? 0.f : a[0]; }

/// Worker processes: the whole round trip of a task taking a 1 GiB
/// weft::array (its get in the worker included), beside the same task
/// taking a 1 KiB one: the array crosses as an offset into the shared
/// store, so the two cost the same.
row array_in_worker_row(const settings& c) {
  const std::size_t big_n = (c.quick ? std::size_t{64} : std::size_t{1024}) << 20 >> 2; // floats
  const auto big =
    weft::array<float>::build(big_n, [](std::span<float> out) { std::fill(out.begin(), out.end(), 1.f); });
  const auto small =
    weft::array<float>::build(256, [](std::span<float> out) { std::fill(out.begin(), out.end(), 1.f); });
  const auto f = weft::remote(first_of);
  auto per_call = [&](const weft::array<float>& a) {
    return timed(c.quick ? 5 : 50, [&] { (void)weft::get(f.remote(a)); });
  };
  const auto s_small = per_call(small);
  const auto s_big = per_call(big);
  char note[160];
  std::snprintf(note, sizeof note, "a %zu MiB array; the same task with a 1 KiB array: %.0f us",
                big_n * sizeof(float) >> 20, s_small.median * 1e6);
  return row{"array_get_in_worker", "processes", s_big.median, "s", {}, {}, s_big.spread, note};
}

/// In a worker: seconds for `n` puts of a small int.
double puts_in_worker(int n) {
  const auto t0 = clock_type::now();
  for (int i = 0; i < n; ++i)
    (void)weft::put(i);
  return seconds_since(t0);
}

/// In a worker: seconds for `n` gets of a ready small object.
double gets_in_worker(int n) {
  auto r = weft::put(7);
  long sink = 0;
  const auto t0 = clock_type::now();
  for (int i = 0; i < n; ++i)
    sink += weft::get(r);
  const double s = seconds_since(t0);
  return sink == 7L * n ? s : -1.0; // (uses sink: the loop cannot be dropped)
}

/// In a worker: seconds to put `bytes` as a weft::array (a copy into the
/// node's shared-memory store, where every process can read it).
double put_bytes_in_worker(std::size_t bytes) {
  std::vector<char> data(bytes, 1);
  const auto t0 = clock_type::now();
  auto ref = weft::put(weft::array<char>(data));
  return seconds_since(t0);
}

/// put_calls / get_calls (calls per second) or put_gigabytes (GB/s) measured
/// inside a task in a worker process: several runs, each timed there.
row in_worker_row(const settings& c, const char* name) {
  const std::string w = name;
  std::vector<double> rates;
  const int runs = c.quick ? 3 : 7;
  const int n = c.quick ? 20'000 : 200'000;
  const std::size_t bytes = c.quick ? 80'000'000 : 800'000'000;
  for (int i = 0; i < runs; ++i) {
    if (w == "put_calls")
      rates.push_back(n / weft::get(weft::remote(puts_in_worker).remote(n)));
    else if (w == "get_calls")
      rates.push_back(n / weft::get(weft::remote(gets_in_worker).remote(n)));
    else
      rates.push_back(static_cast<double>(bytes) / weft::get(weft::remote(put_bytes_in_worker).remote(bytes)) / 1e9);
  }
  const auto s = summarize(rates);
  if (w == "put_gigabytes")
    return row{
      name,     "processes",
      s.median, "GB/s",
      {},       {},
      s.spread, std::string(c.quick ? "80 MB" : "800 MB") + " weft::array put inside a worker (into the shared store)"};
  return row{name, "processes", s.median, "calls/s", {}, {}, s.spread, "inside a task in a worker"};
}

/// In a worker: seconds of each of `rounds` puts of `bytes` by move (the
/// vector stays in this worker's own store: O(1)); get copies it back for
/// the next round (not timed), as in the local row.
std::vector<double> put_move_in_worker(std::size_t bytes, int rounds) {
  std::vector<char> data(bytes, 1);
  std::vector<double> times;
  for (int r = 0; r < rounds; ++r) {
    const auto t0 = clock_type::now();
    auto ref = weft::put(std::move(data));
    times.push_back(seconds_since(t0));
    data = weft::get(ref);
  }
  return times;
}

std::size_t size_of(std::vector<double> v) { return v.size(); }

/// Worker processes: a task taking a big std::vector<double>, whose encoded
/// bytes cross in the shared store and are decoded with one memcpy there;
/// beside one memcpy of the same bytes in the driver, in the same run.
row vector_arg_in_worker_row(const settings& c) {
  const std::size_t bytes = (c.quick ? std::size_t{16} : std::size_t{64}) << 20;
  const std::vector<double> v(bytes / sizeof(double), 1.0);
  const auto f = weft::remote(size_of);
  const auto s = timed(c.quick ? 5 : 20, [&] {
    if (weft::get(f.remote(v)) != v.size())
      std::fprintf(stderr, "vector_arg_in_worker: wrong size\n");
  });
  std::vector<double> copy(v.size());
  const auto m = timed(c.quick ? 5 : 20, [&] {
    std::memcpy(copy.data(), v.data(), bytes);
    if (copy[copy.size() / 2] != 1.0)
      std::fprintf(stderr, "vector_arg_in_worker: memcpy\n");
  });
  char note[200];
  std::snprintf(note, sizeof note,
                "a %zu MiB std::vector<double>, whole round trip; one memcpy of it here: %.2f ms (%.2fx)", bytes >> 20,
                m.median * 1e3, m.median / s.median);
  return row{"vector_arg_in_worker", "processes", bytes / s.median / 1e9, "GB/s", {}, {}, s.spread, note};
}

row put_move_in_worker_row(const settings& c) {
  const std::size_t bytes = c.quick ? 80'000'000 : 800'000'000;
  const auto s = summarize(weft::get(weft::remote(put_move_in_worker).remote(bytes, 3)));
  return row{"put_gigabytes_move",
             "processes",
             s.median,
             "s",
             {},
             {},
             s.spread,
             std::string(c.quick ? "80 MB" : "800 MB") + " std::vector put by move inside a worker"};
}

/// Ray's create_object_containing_ref, in a worker: 10,000 puts of a small
/// int, returned as refs (the worker owns the objects).
std::vector<weft::object_ref<int>> put_refs(int n) {
  std::vector<weft::object_ref<int>> refs;
  refs.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i)
    refs.push_back(weft::put(1));
  return refs;
}

/// In a worker: seconds of the get of a driver's object holding refs.
double get_holder_in_worker(weft::object_ref<std::vector<weft::object_ref<int>>> holder) {
  const auto t0 = clock_type::now();
  const auto refs = weft::get(holder);
  const double s = seconds_since(t0);
  return refs.size() == 10'000 ? s : -1.0;
}

/// get_10k_refs across processes, both ways: the driver gets the result of a
/// task that put 10,000 objects in its worker and returned their refs
/// (Ray's definition: the object is made by a worker task; each run a new
/// one, since a second get of it is the local-mode code), and a worker gets
/// a driver's object holding 10,000 refs.
row get_10k_refs_row(const settings& c) {
  const auto make = weft::remote(put_refs);
  const int runs = c.quick ? 3 : 10;
  const auto made = timed(runs, [&] {
    if (weft::get(make.remote(10'000)).size() != 10'000)
      std::fprintf(stderr, "get_10k_refs: wrong count\n");
  });
  // New objects each run: a worker that still holds the proxies of the run
  // before (its release not sent yet) would find the values there.
  const auto reader = weft::remote(get_holder_in_worker);
  std::vector<double> in_worker;
  std::vector<double> calls;
  for (int r = -1; r < runs; ++r) {
    std::vector<weft::object_ref<int>> refs;
    for (int i = 0; i < 10'000; ++i)
      refs.push_back(weft::put(i));
    const auto holder = weft::put(refs);
    const auto t0 = clock_type::now();
    const double in_get = weft::get(reader.remote(holder));
    if (r >= 0) {
      calls.push_back(seconds_since(t0));
      in_worker.push_back(in_get);
    }
  }
  char note[320];
  std::snprintf(note, sizeof note,
                "driver's get of a worker task's result holding 10,000 refs to objects it put (the whole call, the "
                "puts included); a worker's get of a driver's object holding 10,000 refs: %.2f ms (%.2f ms the call)",
                summarize(in_worker).median * 1e3, summarize(calls).median * 1e3);
  return row{"get_10k_refs", "processes", made.median, "s", {}, {}, made.spread, note};
}

/// Ceiling of actors in workers: starts of this very program (the dynamic
/// loading of weft, CAF and Boost and their static initialisers included)
/// until each has reached main, `n` at once, after a warm-up batch. The
/// starts park there until the batch is timed, so their exits are not in it
/// (a worker's exit is not in create_100_actors either). A start that fails
/// counts as none.
stats process_spawn_ceiling(const settings& cfg, const char* self) {
  const int n = cfg.quick ? 10 : 50;
  std::vector<double> rates;
  for (int w = -1; w < cfg.windows; ++w) {
    int ready[2];
    int go[2];
    if (pipe2(ready, O_CLOEXEC) != 0 || pipe2(go, O_CLOEXEC) != 0)
      return {};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, ready[1], 3); // (dup2 clears O_CLOEXEC)
    posix_spawn_file_actions_adddup2(&fa, go[0], 4);
    char* argv[] = {const_cast<char*>(self), const_cast<char*>("--spawn-ceiling-child"), nullptr};
    std::vector<pid_t> pids;
    const auto t0 = clock_type::now();
    for (int i = 0; i < n; ++i) {
      pid_t pid = 0;
      if (posix_spawn(&pid, "/proc/self/exe", &fa, nullptr, argv, environ) == 0)
        pids.push_back(pid);
    }
    close(ready[1]);
    char byte = 0;
    std::size_t started = 0;
    while (started < pids.size() && read(ready[0], &byte, 1) == 1)
      ++started;
    const double s = seconds_since(t0);
    close(go[1]); // the children read end of file and exit
    for (pid_t pid : pids)
      waitpid(pid, nullptr, 0);
    close(ready[0]);
    close(go[0]);
    posix_spawn_file_actions_destroy(&fa);
    if (w >= 0)
      rates.push_back(static_cast<double>(started) / s);
  }
  return summarize(rates);
}

/// fib(n) through nested tasks in workers: each blocked parent holds a
/// worker process, so the peak of live workers is reported beside the time.
row fib_in_workers_row(const settings& c, const char* name, int n, int quick_n, const char* tasks) {
  if (c.quick)
    n = quick_n;
  const auto f = weft::remote(fib);
  peak_watch workers(child_count);
  peak_watch threads(thread_count);
  auto s = timed(c.quick ? 1 : 3, [&] { weft::get(f.remote(n)); });
  const int peak_workers = workers.stop();
  const int peak_threads = threads.stop() - 2; // without the two watchers
  char note[200];
  if (c.quick)
    std::snprintf(note, sizeof note, "fib(%d) in --quick; ", n);
  else
    std::snprintf(note, sizeof note, "%s tasks, parents blocked in get; ", tasks);
  return row{name,
             "processes",
             s.median,
             "s",
             {},
             {},
             s.spread,
             std::string(note) + "peak worker processes " + std::to_string(peak_workers) + ", driver threads " +
               std::to_string(peak_threads)};
}

/// 1M tasks queued at once, then one get (the scale envelope's row).
row queued_1m_row(const settings& c, const char* mode) {
  const int n = c.quick ? 100'000 : 1'000'000;
  auto s = timed(1, [&] {
    std::vector<weft::object_ref<int>> refs;
    refs.reserve(n);
    const auto f = weft::remote(small_value);
    for (int i = 0; i < n; ++i)
      refs.push_back(f.remote());
    weft::get(refs);
  });
  return row{"queued_1m_tasks",
             mode,
             s.median,
             "s",
             {},
             {},
             s.spread,
             "peak RSS of the driver " + std::to_string(peak_rss_kb() / 1024) + " MB (with --only: this row's)" +
               (c.quick ? ", 100k tasks in --quick" : "")};
}

/// Ray's 1:1 actor calls sync and async; the same code in either worker mode.
row actor_calls_sync_row(const settings& c, const char* mode) {
  auto h = weft::remote<bench_actor>().remote();
  auto s = rate(c, 100, [&] {
    for (int i = 0; i < 100; ++i)
      weft::get(h.task(&bench_actor::small_value).remote());
  });
  return row{"actor_calls_sync", mode, s.median, "calls/s", "thread_roundtrip_ceiling", {}, s.spread, ""};
}

row actor_calls_async_row(const settings& c, const char* mode) {
  auto s = async_calls(c, {weft::remote<bench_actor>().remote()});
  return row{"actor_calls_async", mode, s.median, "calls/s", "caf_send_ceiling", {}, s.spread, ""};
}

/// Ray's multi-client tasks async: 4 actors each submit 1000 tasks and
/// get them (in process mode, from their workers through the driver).
row multi_client_row(const settings& c, const char* mode) {
  std::vector<weft::actor_handle<task_client>> clients;
  for (int k = 0; k < 4; ++k)
    clients.push_back(weft::remote<task_client>().remote());
  auto s = rate(c, 4000, [&] {
    std::vector<weft::object_ref<int>> done;
    for (auto& a : clients)
      done.push_back(a.task(&task_client::submit_batch).remote(1000));
    weft::get(done);
  });
  return row{"multi_client_tasks_async", mode, s.median, "tasks/s", "caf_send_ceiling", {}, s.spread, ""};
}

row one_to_n_row(const settings& c, const char* mode) {
  const int n = 2 * static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<weft::actor_handle<bench_actor>> actors;
  for (int k = 0; k < n; ++k)
    actors.push_back(weft::remote<bench_actor>().remote());
  auto s = async_calls(c, actors);
  return row{"actor_calls_1_n", mode, s.median, "calls/s", "caf_send_ceiling", {}, s.spread, ""};
}

/// n:n: each client actor calls its own server actor through a handle it
/// was given (in process mode, from its worker through the driver).
row n_to_n_row(const settings& c, const char* mode, bool put_arg) {
  auto s = n_to_n_calls(c, put_arg ? &bench_client::small_value_batch_arg : &bench_client::small_value_batch);
  return row{put_arg ? "actor_calls_n_n_put_arg" : "actor_calls_n_n",
             mode,
             s.median,
             "calls/s",
             "caf_send_ceiling",
             {},
             s.spread,
             ""};
}

row actor_calls_concurrent_row(const settings& c, const char* mode) {
  auto s = async_calls(c, {weft::remote<bench_actor>().options({.max_concurrency = 16}).remote()});
  return row{"actor_calls_concurrent", mode, s.median, "calls/s", "caf_send_ceiling", {}, s.spread, ""};
}

/// Ray's "single client wait 1k refs": 1000 tasks, then wait for one at a
/// time until none is left.
row wait_1k_row(const settings& c, const char* mode) {
  const auto f = weft::remote(small_value);
  auto s = timed(c.quick ? 1 : 3, [&] {
    std::vector<weft::object_ref<int>> refs;
    for (int i = 0; i < 1000; ++i)
      refs.push_back(f.remote());
    while (!refs.empty())
      refs = weft::wait(refs, 1).not_ready;
  });
  return row{"wait_1k_refs", mode, s.median, "s", {}, {}, s.spread, ""};
}

/// 10,000 args to one task: weft's functions have a fixed arity, so the
/// refs go in one vector (they cross as refs) and the task gets them all.
/// New objects each run (not timed): in process mode a worker may still
/// hold the proxies of the run before, values included.
row args_10k_row(const settings& c, const char* mode, std::string note) {
  const auto f = weft::remote(count_refs);
  std::vector<double> times;
  for (int r = -1; r < (c.quick ? 1 : 3); ++r) {
    std::vector<weft::object_ref<int>> refs;
    for (int i = 0; i < 10'000; ++i)
      refs.push_back(weft::put(i));
    const auto t0 = clock_type::now();
    if (weft::get(f.remote(refs)) != refs.size())
      std::fprintf(stderr, "args_10k: wrong count\n");
    if (r >= 0)
      times.push_back(seconds_since(t0));
  }
  const auto s = summarize(times);
  return row{"args_10k", mode, s.median, "s", {}, {}, s.spread, std::move(note)};
}

/// Creates `n` actors and makes one call on each, `runs` times after a
/// warm-up; each time all are dropped after. Rate in actors per second; the
/// RSS the driver grew by while they lived goes in `driver_kb`, and
/// `per_actor` (when given) asks each actor for the memory of its process.
stats create_actors(int n, int runs, long& driver_kb, std::vector<std::vector<long>>* per_actor) {
  const int children_before = child_count();
  std::vector<double> rates;
  for (int r = -1; r < runs; ++r) {
    const long before = current_rss_kb();
    const auto t0 = clock_type::now();
    std::vector<weft::actor_handle<bench_actor>> actors;
    actors.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i)
      actors.push_back(weft::remote<bench_actor>().remote());
    std::vector<weft::object_ref<int>> refs;
    refs.reserve(static_cast<std::size_t>(n));
    for (auto& a : actors)
      refs.push_back(a.task(&bench_actor::small_value).remote());
    weft::get(refs);
    if (r >= 0)
      rates.push_back(n / seconds_since(t0));
    driver_kb = std::max(driver_kb, current_rss_kb() - before);
    if (per_actor) {
      per_actor->clear();
      for (auto& a : actors)
        per_actor->push_back(weft::get(a.task(&bench_actor::memory_kb).remote()));
    }
    actors.clear();
    // Workers of dropped actors exit on their own; the next run should not
    // pay for that (not timed).
    await_children_at_most(children_before, 30);
  }
  return summarize(rates);
}

struct workload {
  const char* name;
  const char* what;
  std::function<row(const settings&)> run;
};

std::vector<workload> workloads() {
  return {
    {"caf_send_ceiling", "raw CAF 0.17 plain send between two actors",
     [](const settings& c) {
       auto s = caf_send_ceiling(c);
       return row{"caf_send_ceiling", "local", s.median, "msgs/s", {}, {}, s.spread, ""};
     }},
    {"caf_spawn_ceiling", "raw CAF spawn of an actor that quits at once",
     [](const settings& c) {
       auto s = caf_spawn_ceiling(c);
       return row{"caf_spawn_ceiling", "local", s.median, "actors/s", {}, {}, s.spread, ""};
     }},
    {"thread_roundtrip_ceiling", "blocking round trip between two threads (mutex + condvar)",
     [](const settings& c) {
       auto s = thread_roundtrip_ceiling(c);
       return row{"thread_roundtrip_ceiling", "local", s.median, "roundtrips/s", {}, {}, s.spread, ""};
     }},
    {"tasks_async", "1000 no-op tasks submitted, then one get, repeated",
     [](const settings& c) { return tasks_async_row(c, "local"); }},
    {"tasks_sync", "get(f.remote()) one at a time", [](const settings& c) { return tasks_sync_row(c, "local"); }},
    {"multi_client_tasks_async", "4 submitting actors, each 1000 tasks then one get",
     [](const settings& c) { return multi_client_row(c, "local"); }},
    {"actor_calls_sync", "1:1 actor calls, get(h.task(m).remote()) one at a time",
     [](const settings& c) { return actor_calls_sync_row(c, "local"); }},
    {"actor_calls_async", "1:1 actor calls, 1000 submitted then one get",
     [](const settings& c) { return actor_calls_async_row(c, "local"); }},
    {"actor_calls_concurrent", "1:1 actor calls to a max_concurrency = 16 actor, 1000 then one get",
     [](const settings& c) { return actor_calls_concurrent_row(c, "local"); }},
    {"actor_calls_1_n", "1:n async calls: one client, n = 2 x CPUs actors, 1000 per batch",
     [](const settings& c) { return one_to_n_row(c, "local"); }},
    {"actor_calls_n_n", "n:n async calls: n client actors each calling its own actor, 1000 each",
     [](const settings& c) { return n_to_n_row(c, "local", false); }},
    {"actor_calls_n_n_put_arg", "n:n async calls with a put() ref as argument",
     [](const settings& c) { return n_to_n_row(c, "local", true); }},
    {"create_10k_actors", "10,000 actors created, each answering one call; then all dropped",
     [](const settings& c) {
       const int n = c.quick ? 1000 : 10'000;
       long rss_cost_kb = 0;
       auto s = create_actors(n, c.quick ? 1 : 3, rss_cost_kb, nullptr);
       return row{"create_10k_actors",
                  "local",
                  s.median,
                  "actors/s",
                  "caf_spawn_ceiling",
                  {},
                  s.spread,
                  std::to_string(n) + " live actors cost " + std::to_string(rss_cost_kb / 1024) + " MB RSS"};
     }},
    {"put_calls", "put of a small int",
     [](const settings& c) {
       auto s = rate(c, 1000, [] {
         for (int i = 0; i < 1000; ++i)
           weft::put(i);
       });
       return row{"put_calls", "local", s.median, "calls/s", {}, {}, s.spread, ""};
     }},
    {"get_calls", "get of a ready small object",
     [](const settings& c) {
       auto r = weft::put(7);
       volatile long sink = 0; // keeps the loop from being optimised away
       auto s = rate(c, 1000, [&] {
         for (int i = 0; i < 1000; ++i)
           sink = sink + weft::get(r);
       });
       return row{"get_calls", "local", s.median, "calls/s", {}, {}, s.spread, ""};
     }},
    {"put_gigabytes", "put of an 800 MB array by copy",
     [](const settings& c) {
       const std::size_t bytes = c.quick ? 80'000'000 : 800'000'000;
       std::vector<char> data(bytes, 1);
       auto s = timed(c.quick ? 1 : 3, [&] { weft::put(data); });
       return row{
         "put_gigabytes", "local", bytes / s.median / 1e9, "GB/s", {}, {}, s.spread, c.quick ? "80 MB in --quick" : ""};
     }},
    {"put_gigabytes_move", "put of an 800 MB array by move",
     [](const settings& c) {
       const std::size_t bytes = c.quick ? 80'000'000 : 800'000'000;
       std::vector<char> data(bytes, 1);
       std::vector<double> times;
       for (int r = 0; r < 3; ++r) {
         auto t0 = clock_type::now();
         auto ref = weft::put(std::move(data));
         times.push_back(seconds_since(t0));
         data = weft::get(ref); // get copies it back for the next round (not timed)
       }
       auto s = summarize(times);
       return row{"put_gigabytes_move", "local", s.median, "s", {}, {}, s.spread, "O(1): no copy"};
     }},
    {"get_10k_refs", "get of one object holding 10,000 refs",
     [](const settings& c) {
       std::vector<weft::object_ref<int>> refs;
       for (int i = 0; i < 10'000; ++i)
         refs.push_back(weft::put(i));
       auto holder = weft::put(refs);
       auto s = timed(c.quick ? 3 : 10, [&] { (void)weft::get(holder); });
       return row{"get_10k_refs", "local", s.median, "s", {}, {}, s.spread, ""};
     }},
    {"wait_1k_refs", "wait on 1000 refs, one ready at a time",
     [](const settings& c) { return wait_1k_row(c, "local"); }},
    {"args_10k", "one task taking 10,000 refs (in a vector) and getting them",
     [](const settings& c) { return args_10k_row(c, "local", ""); }},
    {"returns_3000", "one task returning 3000 refs (num_returns(3000)), then a get of all",
     [](const settings& c) { return returns_3000_row(c, "local"); }},
    {"fib25_nested", "fib(25) through nested tasks that get their children",
     [](const settings& c) {
       const auto f = weft::remote(fib);
       int peak = 0;
       std::atomic<bool> done{false};
       std::thread watch([&] {
         while (!done.load()) {
           peak = std::max(peak, thread_count());
           std::this_thread::sleep_for(std::chrono::milliseconds(5));
         }
       });
       auto s = timed(c.quick ? 1 : 3, [&] { weft::get(f.remote(25)); });
       done = true;
       watch.join();
       return row{"fib25_nested",
                  "local",
                  s.median,
                  "s",
                  {},
                  {},
                  s.spread,
                  "peak OS threads " + std::to_string(peak - 1) + " (without the watcher)"};
     }},
    {"queued_1m_tasks", "1,000,000 tasks submitted, then one get of all",
     [](const settings& c) { return queued_1m_row(c, "local"); }},
  };
}

void print_table(const std::vector<row>& rows) {
  std::printf("%-26s %-7s %16s %-13s %-26s %8s %7s  %s\n", "workload", "mode", "value", "unit", "ceiling", "ratio",
              "spread", "note");
  for (const auto& r : rows) {
    char ratio[32] = "-";
    if (r.ratio)
      std::snprintf(ratio, sizeof ratio, "%.3f", *r.ratio);
    std::printf("%-26s %-7s %16.6g %-13s %-26s %8s %6.0f%%  %s\n", r.workload.c_str(), r.mode.c_str(), r.value,
                r.unit.c_str(), r.ceiling ? r.ceiling->c_str() : "-", ratio, r.spread * 100, r.note.c_str());
  }
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '"' || ch == '\\')
      out += '\\';
    out += ch;
  }
  return out;
}

void write_json(const std::vector<row>& rows, const std::string& path) {
  std::ofstream out(path);
  out << "[\n";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    out << "  {\"workload\": \"" << r.workload << "\", \"mode\": \"" << r.mode << "\", \"value\": " << r.value
        << ", \"unit\": \"" << r.unit
        << "\", \"ceiling\": " << (r.ceiling ? "\"" + *r.ceiling + "\"" : std::string("null"))
        << ", \"ratio\": " << (r.ratio ? std::to_string(*r.ratio) : std::string("null")) << ", \"spread\": " << r.spread
        << ", \"note\": \"" << json_escape(r.note) << "\"}" << (i + 1 < rows.size() ? "," : "") << "\n";
  }
  out << "]\n";
}

/// The same workloads with every task in a worker process.
std::vector<workload> process_workloads() {
  return {
    {"tasks_async", "1000 no-op tasks submitted, then one get, repeated (worker processes)",
     [](const settings& c) { return tasks_async_row(c, "processes"); }},
    {"tasks_sync", "get(f.remote()) one at a time (worker processes)",
     [](const settings& c) { return tasks_sync_row(c, "processes"); }},
    {"actor_calls_sync", "1:1 calls one at a time to an actor in a worker process",
     [](const settings& c) { return actor_calls_sync_row(c, "processes"); }},
    {"actor_calls_async", "1:1 calls to an actor in a worker process, 1000 submitted then one get",
     [](const settings& c) { return actor_calls_async_row(c, "processes"); }},
    {"multi_client_tasks_async", "4 submitting actors in workers, each 1000 tasks then one get",
     [](const settings& c) { return multi_client_row(c, "processes"); }},
    {"actor_calls_1_n", "1:n async calls: one client, n = 2 x CPUs actors in workers",
     [](const settings& c) { return one_to_n_row(c, "processes"); }},
    {"actor_calls_n_n", "n:n async calls: n client actors in workers, each calling its own actor through a handle",
     [](const settings& c) { return n_to_n_row(c, "processes", false); }},
    {"actor_calls_n_n_put_arg", "n:n async calls with a put() ref as argument, actors in workers",
     [](const settings& c) { return n_to_n_row(c, "processes", true); }},
    {"returns_3000", "one task returning 3000 refs (num_returns(3000)), then a get of all (worker processes)",
     [](const settings& c) { return returns_3000_row(c, "processes"); }},
    {"array_get_in_worker", "round trip of a task taking a 1 GiB weft::array (64 MiB with --quick)",
     [](const settings& c) { return array_in_worker_row(c); }},
    {"queued_1m_tasks", "1,000,000 tasks submitted, then one get of all (worker processes)",
     [](const settings& c) { return queued_1m_row(c, "processes"); }},
    {"fib14_nested", "fib(14) through nested tasks in workers that get their children (fib(10) with --quick)",
     [](const settings& c) { return fib_in_workers_row(c, "fib14_nested", 14, 10, "1,219"); }},
    {"fib20_nested", "fib(20) through nested tasks in workers that get their children (fib(12) with --quick)",
     [](const settings& c) { return fib_in_workers_row(c, "fib20_nested", 20, 12, "21,891"); }},
    {"get_10k_refs", "get of one object holding 10,000 refs, across processes (both ways)",
     [](const settings& c) { return get_10k_refs_row(c); }},
    {"wait_1k_refs", "wait on 1000 refs to tasks in workers, one ready at a time",
     [](const settings& c) { return wait_1k_row(c, "processes"); }},
    {"args_10k", "one task in a worker taking 10,000 refs (in a vector) and getting them",
     [](const settings& c) { return args_10k_row(c, "processes", "10,000 driver objects lent to the worker"); }},
    {"actor_calls_concurrent", "1:1 calls to a max_concurrency = 16 actor in a worker, 1000 then one get",
     [](const settings& c) { return actor_calls_concurrent_row(c, "processes"); }},
    {"process_spawn_ceiling", "starts of this program until each reaches main, 50 at once (posix_spawn)",
     [](const settings& c) {
       auto s = process_spawn_ceiling(c, "weft-bench");
       return row{"process_spawn_ceiling", "processes", s.median, "processes/s", {}, {}, s.spread, ""};
     }},
    {"create_100_actors", "100 actors, each in a worker process of its own, each answering one call; then all dropped",
     [](const settings& c) {
       const int n = c.quick ? 10 : 100;
       long driver_kb = 0;
       std::vector<std::vector<long>> mem;
       auto s = create_actors(n, c.quick ? 1 : 3, driver_kb, &mem);
       std::vector<double> rss;
       std::vector<double> pss;
       for (const auto& m : mem) {
         rss.push_back(static_cast<double>(m.at(0)));
         pss.push_back(static_cast<double>(m.at(1)));
       }
       char note[240];
       std::snprintf(note, sizeof note,
                     "%d actors = %d worker processes; each worker %.1f MB RSS, %.1f MB PSS (median); the driver grew "
                     "by %.1f MB",
                     n, n, summarize(rss).median / 1024, summarize(pss).median / 1024, driver_kb / 1024.0);
       return row{"create_100_actors", "processes", s.median, "actors/s", "process_spawn_ceiling", {}, s.spread, note};
     }},
    {"vector_arg_in_worker", "round trip of a task taking a 64 MiB std::vector<double> (16 MiB with --quick)",
     [](const settings& c) { return vector_arg_in_worker_row(c); }},
    {"put_gigabytes_move", "put of an 800 MB std::vector by move, inside a task in a worker process",
     [](const settings& c) { return put_move_in_worker_row(c); }},
    {"put_calls", "put of a small int, inside a task in a worker process",
     [](const settings& c) { return in_worker_row(c, "put_calls"); }},
    {"get_calls", "get of a ready small object, inside a task in a worker process",
     [](const settings& c) { return in_worker_row(c, "get_calls"); }},
    {"put_gigabytes", "put of an 800 MB weft::array by copy, inside a task in a worker process",
     [](const settings& c) { return in_worker_row(c, "put_gigabytes"); }},
  };
}

int usage(const char* msg) {
  std::fprintf(stderr,
               "%s\nusage: weft-bench [--quick] [--only NAME] [--mode local|processes|both] [--json FILE] [--list] "
               "[--weft-*=...]\n",
               msg);
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  // Started by process_spawn_ceiling: says it reached main (fd 3), then
  // waits for the batch to be timed (end of file on fd 4).
  if (argc == 2 && std::strcmp(argv[1], "--spawn-ceiling-child") == 0) {
    char byte = 1;
    const bool told = write(3, &byte, 1) == 1;
    close(3); // a start that fails early must not keep the parent reading
    if (told)
      while (read(4, &byte, 1) > 0) {
      }
    return 0;
  }
  // Started again by weft as a worker process: serve, never return.
  if (weft::is_worker_process())
    weft::init(argc, argv);
  settings cfg;
  bool local_mode = true;
  bool process_mode = true;
  std::string only;
  std::string json;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      cfg.quick = true;
      cfg.window_s = 0.1;
      cfg.windows = 3;
    } else if (a == "--only" && i + 1 < argc) {
      only = argv[++i];
    } else if (a == "--json" && i + 1 < argc) {
      json = argv[++i];
    } else if (a == "--mode" && i + 1 < argc) {
      std::string m = argv[++i];
      local_mode = m == "local" || m == "both";
      process_mode = m == "processes" || m == "both";
      if (!local_mode && !process_mode)
        return usage(("weft-bench: --mode '" + m + "'; expected local, processes or both").c_str());
    } else if (a.rfind("--weft-", 0) == 0) {
      continue; // for weft::init
    } else if (a == "--list") {
      for (const auto& w : workloads())
        std::printf("%-26s %s\n", w.name, w.what);
      for (const auto& w : process_workloads())
        std::printf("%-26s %s\n", w.name, w.what);
      return 0;
    } else {
      return usage(("weft-bench: unknown argument '" + a + "'").c_str());
    }
  }
  auto all = workloads();
  auto in_processes = process_workloads();
  auto named = [&](const std::vector<workload>& ws) {
    return std::any_of(ws.begin(), ws.end(), [&](const workload& w) { return w.name == only; });
  };
  if (!only.empty() && !named(all) && !named(in_processes))
    return usage(("weft-bench: no workload named '" + only + "' (see --list)").c_str());

  std::vector<row> rows;
  const weft::config base = weft::config_from(argc, argv);
  auto run_all = [&](const std::vector<workload>& ws, weft::worker_mode mode, const char* label) {
    weft::config c = base;
    c.workers = mode;
    weft::init(c);
    for (const auto& w : ws) {
      if (!only.empty() && w.name != only)
        continue;
      std::fprintf(stderr, "running %s (%s) ...\n", w.name, label);
      const auto t0 = clock_type::now();
      rows.push_back(w.run(cfg));
      std::fprintf(stderr, "  %s (%s) took %.2f s\n", w.name, label, seconds_since(t0));
    }
    weft::shutdown();
  };
  if (local_mode)
    run_all(all, weft::worker_mode::local, "local");
  if (process_mode)
    run_all(in_processes, weft::worker_mode::processes, "processes");
  for (auto& r : rows) {
    if (!r.ceiling)
      continue;
    for (const auto& c : rows)
      if (c.workload == *r.ceiling && c.value > 0)
        r.ratio = r.value / c.value;
  }
  print_table(rows);
  if (!json.empty())
    write_json(rows, json);
  return 0;
}
