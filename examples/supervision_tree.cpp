// A supervision tree: workers that crash on a bad job are restarted by their supervisor, as new actors.
#include <weft/weft.hpp> // the only include you need

#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>

using namespace std::chrono_literals;

// A worker of the service's pool: runs jobs, and crashes on a bad one.
struct job_worker {
  explicit job_worker(std::string name) : name(std::move(name)) {}
  int run(int job) {
    if (job < 0)
      throw std::invalid_argument(name + " got a bad job");
    return ++done;
  }
  std::string name;
  int done = 0;
};

// The pool's sibling under the root: one_for_one leaves it alone when pool
// workers crash (its actor stays the same).
struct ledger {
  int entries = 0;
};

// restart_on_exception: a method that throws crashes the worker (Erlang
// style), and its supervisor brings it back.
weft::child_spec pool_worker(const std::string& id) {
  return {.id = id, .start = [id]() -> weft::child_ref {
            return weft::remote<job_worker>({.restart_on_exception = true}).remote(id);
          }};
}

// One line per node: name, kind, the actor it runs as now.
void print_tree(const weft::supervisor& sup, const std::string& name, int depth) {
  std::printf("%*s%-*s supervisor %s\n", 2 * depth, "", 12 - 2 * depth, name.c_str(),
              weft::to_string(sup.id()).c_str());
  for (const weft::child_info& c : sup.which_children()) {
    if (auto sub = weft::supervisor::from(c.ref)) {
      print_tree(*sub, c.id, depth + 1);
      continue;
    }
    const std::string where = c.status == weft::child_status::running ? weft::to_string(c.ref.id()) : "not running";
    std::printf("%*s%-*s worker     %s\n", 2 * depth + 2, "", 10 - 2 * depth, c.id.c_str(), where.c_str());
  }
}

int main() {
  weft::init();
  {
    auto service = weft::supervisor::start(
      {.strategy = weft::restart_strategy::one_for_one, .intensity = 3, .period = 10s},
      {weft::worker_spec<ledger>("ledger"),
       weft::supervisor::spec("pool", {.strategy = weft::restart_strategy::one_for_one, .intensity = 5},
                              {pool_worker("w1"), pool_worker("w2"), pool_worker("w3")})});
    std::printf("before:\n");
    print_tree(service, "service", 1);

    auto pool = weft::supervisor::from(*service.child_ref_of("pool"));
    for (const char* id : {"w1", "w3"}) {
      auto w = *pool->child<job_worker>(id);
      int done = 0;
      for (int job = 0; job < 3; ++job)
        done = weft::get(w.task(&job_worker::run).remote(job));
      try {
        weft::get(w.task(&job_worker::run).remote(-1));
      } catch (const weft::task_error& e) {
        std::printf("%s did %d jobs, then crashed: %s\n", id, done, e.message().c_str());
      }
      // The supervisor replaces the crashed actor: wait for the new handle.
      const auto give_up = std::chrono::steady_clock::now() + 10s;
      std::optional<weft::actor_handle<job_worker>> fresh = w;
      while ((!fresh || *fresh == w) && std::chrono::steady_clock::now() < give_up) {
        std::this_thread::sleep_for(1ms);
        fresh = pool->child<job_worker>(id);
      }
      if (!fresh || *fresh == w) {
        std::printf("%s did not come back\n", id);
        return 1;
      }
      std::printf("%s is back as %s (fresh state: jobs done %d)\n", id, weft::to_string(fresh->id()).c_str(),
                  weft::get(fresh->task(&job_worker::run).remote(7)));
    }

    std::printf("after:\n");
    print_tree(service, "service", 1);
    service.stop(); // the children end in reverse start order
  }
  weft::shutdown();
  return 0;
}
