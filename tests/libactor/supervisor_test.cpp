// Supervision trees: start order, the three strategies, restart types,
// restart intensity, escalation through nested supervisors, and the calls
// that inspect and change a running supervisor.
#include <catch2/catch.hpp>

#include <algorithm>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "weft_test.hpp"

using namespace std::chrono_literals;
using weft_test::runtime_guard;

namespace {

/// Every worker writes "start:<name>" in its constructor and "stop:<name>"
/// in its destructor, so tests can check the exact order of a restart.
class event_log {
public:
  void add(std::string e) {
    std::lock_guard<std::mutex> lock(mtx_);
    events_.push_back(std::move(e));
  }
  std::vector<std::string> all() const {
    std::lock_guard<std::mutex> lock(mtx_);
    return events_;
  }
  std::size_t size() const {
    std::lock_guard<std::mutex> lock(mtx_);
    return events_.size();
  }
  /// The events after the first `n`.
  std::vector<std::string> since(std::size_t n) const {
    std::lock_guard<std::mutex> lock(mtx_);
    return {events_.begin() + static_cast<std::ptrdiff_t>(std::min(n, events_.size())), events_.end()};
  }
  void clear() {
    std::lock_guard<std::mutex> lock(mtx_);
    events_.clear();
  }

private:
  mutable std::mutex mtx_;
  std::vector<std::string> events_;
};

event_log events;

struct worker {
  explicit worker(std::string name) : name_(std::move(name)) { events.add("start:" + name_); }
  ~worker() { events.add("stop:" + name_); }
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;
  int bump() { return ++count_; }
  int count() const { return count_; }
  void quit() { weft::exit_actor(); }
  int crash() { throw std::runtime_error("worker " + name_ + " crashed"); }
  std::string name_;
  int count_ = 0;
};

struct broken {
  broken() { throw std::runtime_error("no config"); }
};

/// A worker child `id`; a method that throws crashes it.
weft::child_spec spec(const std::string& id, weft::restart_type restart = weft::restart_type::permanent) {
  return weft::child_spec{
    .id = id,
    .start = [id]() -> weft::child_ref { return weft::remote<worker>({.restart_on_exception = true}).remote(id); },
    .restart = restart};
}

weft::actor_handle<worker> handle_of(const weft::supervisor& sup, const std::string& id) {
  auto h = sup.child<worker>(id);
  REQUIRE(h.has_value());
  return *h;
}

/// Waits until child `id` runs as another actor than `old`; returns it.
weft::actor_handle<worker> replaced(const weft::supervisor& sup, const std::string& id,
                                    const weft::actor_handle<worker>& old) {
  std::optional<weft::actor_handle<worker>> now;
  REQUIRE(weft_test::eventually([&] {
    now = sup.child<worker>(id);
    return now && !(*now == old);
  }));
  return *now;
}

bool log_reaches(std::size_t n) {
  return weft_test::eventually([n] { return events.size() >= n; });
}

std::vector<std::string> ids_of(const std::vector<weft::child_info>& cs) {
  std::vector<std::string> out;
  for (const auto& c : cs)
    out.push_back(c.id);
  return out;
}

weft::child_status status_of(const weft::supervisor& sup, const std::string& id) {
  for (const auto& c : sup.which_children())
    if (c.id == id)
      return c.status;
  FAIL("no child " << id);
  return weft::child_status::undefined;
}

/// What a monitor saw of an actor's end.
struct end_seen {
  std::mutex mtx;
  bool ended = false;
  weft::actor_exit exit;
  void watch(const weft::supervisor& sup) {
    weft::monitor(sup.handle(), [this](const weft::actor_exit& e) {
      std::lock_guard<std::mutex> lock(mtx);
      exit = e;
      ended = true;
    });
  }
  bool wait() {
    return weft_test::eventually([this] {
      std::lock_guard<std::mutex> lock(mtx);
      return ended;
    });
  }
  bool has_ended() {
    std::lock_guard<std::mutex> lock(mtx);
    return ended;
  }
};

using strings = std::vector<std::string>;

} // namespace

TEST_CASE("children start in spec order, each after the one before has been constructed") {
  runtime_guard rt;
  events.clear();
  auto sup = weft::supervisor::start({}, {spec("a"), spec("b"), spec("c")});
  CHECK(events.all() == strings{"start:a", "start:b", "start:c"});
  auto cs = sup.which_children();
  CHECK(ids_of(cs) == strings{"a", "b", "c"});
  for (const auto& c : cs) {
    CHECK(c.status == weft::child_status::running);
    CHECK(c.type == weft::child_type::worker);
    CHECK(c.ref.valid());
    CHECK(c.ref.type() == typeid(worker));
  }
  auto n = sup.count_children();
  CHECK(n.specs == 3);
  CHECK(n.active == 3);
  CHECK(n.supervisors == 0);
  CHECK(n.workers == 3);
}

TEST_CASE("one_for_one restarts only the failed child while the others keep their state and handle") {
  runtime_guard rt;
  events.clear();
  auto sup = weft::supervisor::start({.strategy = weft::restart_strategy::one_for_one}, {spec("a"), spec("b")});
  auto a = handle_of(sup, "a");
  auto b = handle_of(sup, "b");
  weft::get(a.task(&worker::bump).remote());
  CHECK(weft::get(b.task(&worker::bump).remote()) == 1);
  weft::kill(a);
  auto a2 = replaced(sup, "a", a);
  CHECK(a2.id() != a.id());
  CHECK(weft::get(a2.task(&worker::count).remote(), weft_test::bound) == 0); // fresh state
  CHECK(handle_of(sup, "b") == b);
  CHECK(weft::get(b.task(&worker::bump).remote(), weft_test::bound) == 2); // kept state
  CHECK(events.all() == strings{"start:a", "start:b", "stop:a", "start:a"});
}

TEST_CASE("a method that throws with restart_on_exception crashes the child and it comes back fresh") {
  runtime_guard rt;
  events.clear();
  auto sup = weft::supervisor::start({}, {spec("a")});
  auto a = handle_of(sup, "a");
  weft::get(a.task(&worker::bump).remote());
  CHECK_THROWS_AS(weft::get(a.task(&worker::crash).remote(), weft_test::bound), weft::task_error);
  auto a2 = replaced(sup, "a", a);
  CHECK(weft::get(a2.task(&worker::count).remote(), weft_test::bound) == 0);
}

TEST_CASE("one_for_all stops the others in reverse start order, then starts all in start order") {
  end_seen end; // declared first: its monitor may fire while the runtime shuts down
  runtime_guard rt;
  events.clear();
  // Intensity 1: the children the supervisor stops itself must not count
  // as failures, or this one restart would exceed it.
  auto sup = weft::supervisor::start({.strategy = weft::restart_strategy::one_for_all, .intensity = 1},
                                     {spec("a"), spec("b"), spec("c")});
  end.watch(sup);
  auto a = handle_of(sup, "a");
  auto c = handle_of(sup, "c");
  weft::kill(handle_of(sup, "b"));
  REQUIRE(log_reaches(9));
  CHECK(events.since(3) == strings{"stop:b", "stop:c", "stop:a", "start:a", "start:b", "start:c"});
  // Queued behind the stale reports of a and c: the supervisor is still up.
  auto cs = sup.which_children();
  for (const auto& ch : cs)
    CHECK(ch.status == weft::child_status::running);
  CHECK(!(handle_of(sup, "a") == a));
  CHECK(!(handle_of(sup, "c") == c));
  CHECK_FALSE(end.has_ended());
  CHECK(events.size() == 9);
}

TEST_CASE("one_for_all forgets a temporary sibling it stops and leaves a stopped sibling stopped") {
  runtime_guard rt;
  events.clear();
  auto sup = weft::supervisor::start({.strategy = weft::restart_strategy::one_for_all, .intensity = 5},
                                     {spec("a"), spec("t", weft::restart_type::temporary), spec("off"), spec("b")});
  sup.terminate_child("off");
  CHECK(events.since(4) == strings{"stop:off"});
  weft::kill(handle_of(sup, "b"));
  REQUIRE(log_reaches(10));
  CHECK(events.since(5) == strings{"stop:b", "stop:t", "stop:a", "start:a", "start:b"});
  CHECK(ids_of(sup.which_children()) == strings{"a", "off", "b"});
  CHECK(status_of(sup, "off") == weft::child_status::undefined);
}

TEST_CASE("rest_for_one restarts the failed child and those started after it") {
  runtime_guard rt;
  events.clear();
  auto sup = weft::supervisor::start({.strategy = weft::restart_strategy::rest_for_one, .intensity = 1},
                                     {spec("a"), spec("b"), spec("c"), spec("d")});
  auto a = handle_of(sup, "a");
  weft::get(a.task(&worker::bump).remote());
  weft::kill(handle_of(sup, "b"));
  REQUIRE(log_reaches(10));
  CHECK(events.since(4) == strings{"stop:b", "stop:d", "stop:c", "start:b", "start:c", "start:d"});
  CHECK(handle_of(sup, "a") == a);
  CHECK(weft::get(a.task(&worker::count).remote(), weft_test::bound) == 1);
  CHECK(sup.count_children().active == 4);
}

TEST_CASE("a permanent child is restarted after a normal and after an abnormal end") {
  runtime_guard rt;
  events.clear();
  auto sup = weft::supervisor::start({.intensity = 10}, {spec("p", weft::restart_type::permanent)});
  auto p = handle_of(sup, "p");
  weft::get(p.task(&worker::quit).remote());
  auto p2 = replaced(sup, "p", p);
  weft::kill(p2);
  replaced(sup, "p", p2);
  CHECK(events.all() == strings{"start:p", "stop:p", "start:p", "stop:p", "start:p"});
}

TEST_CASE("a transient child is restarted only after an abnormal end") {
  runtime_guard rt;
  events.clear();
  auto sup = weft::supervisor::start({.intensity = 10}, {spec("t", weft::restart_type::transient)});
  auto t = handle_of(sup, "t");
  weft::kill(t);
  auto t2 = replaced(sup, "t", t);
  weft::get(t2.task(&worker::quit).remote());
  REQUIRE(weft_test::eventually([&] { return status_of(sup, "t") == weft::child_status::undefined; }));
  CHECK_FALSE(sup.child<worker>("t").has_value());
  auto n = sup.count_children();
  CHECK(n.specs == 1); // the spec stays
  CHECK(n.active == 0);
  CHECK(events.all() == strings{"start:t", "stop:t", "start:t", "stop:t"});
}

TEST_CASE("a temporary child is never restarted and its spec is removed") {
  runtime_guard rt;
  events.clear();
  auto sup = weft::supervisor::start({.intensity = 10}, {spec("keep"), spec("t1", weft::restart_type::temporary),
                                                         spec("t2", weft::restart_type::temporary)});
  weft::kill(handle_of(sup, "t1"));
  weft::get(handle_of(sup, "t2").task(&worker::quit).remote());
  REQUIRE(weft_test::eventually([&] { return sup.count_children().specs == 1; }));
  CHECK(ids_of(sup.which_children()) == strings{"keep"});
  CHECK(events.size() == 5); // three starts, two stops, no restart
}

TEST_CASE("more restarts than the intensity: children stop in reverse order and the supervisor fails") {
  end_seen end; // declared first: its monitor may fire while the runtime shuts down
  runtime_guard rt;
  events.clear();
  auto sup = weft::supervisor::start({.intensity = 1, .period = 60s}, {spec("a"), spec("b"), spec("c")});
  end.watch(sup);
  auto b = handle_of(sup, "b");
  weft::kill(b);
  auto b2 = replaced(sup, "b", b); // one restart: within the intensity
  weft::kill(b2);                  // the second is one too many
  REQUIRE(end.wait());
  CHECK_FALSE(end.exit.normal);
  CHECK_THAT(end.exit.cause, Catch::Contains("restart intensity"));
  CHECK(events.since(3) == strings{"stop:b", "start:b", "stop:b", "stop:c", "stop:a"});
  CHECK_THROWS_AS(sup.which_children(), weft::actor_died_error);
}

TEST_CASE("intensity 0: the first failure fails the supervisor") {
  end_seen end; // declared first: its monitor may fire while the runtime shuts down
  runtime_guard rt;
  events.clear();
  auto sup = weft::supervisor::start({.intensity = 0}, {spec("a"), spec("b")});
  end.watch(sup);
  weft::kill(handle_of(sup, "a"));
  REQUIRE(end.wait());
  CHECK_FALSE(end.exit.normal);
  CHECK(events.all() == strings{"start:a", "start:b", "stop:a", "stop:b"});
}

TEST_CASE("restarts older than the period no longer count against the intensity") {
  end_seen end; // declared first: its monitor may fire while the runtime shuts down
  runtime_guard rt;
  events.clear();
  auto sup = weft::supervisor::start({.intensity = 1, .period = 100ms}, {spec("a")});
  end.watch(sup);
  auto a = handle_of(sup, "a");
  weft::kill(a);
  auto a2 = replaced(sup, "a", a);
  std::this_thread::sleep_for(300ms); // the first restart leaves the window
  weft::kill(a2);
  replaced(sup, "a", a2);
  CHECK_FALSE(end.has_ended());
}

TEST_CASE("escalation: a nested supervisor that exceeds its intensity is restarted by its parent") {
  runtime_guard rt;
  events.clear();
  auto root = weft::supervisor::start(
    {.intensity = 5},
    {spec("x"), weft::supervisor::spec("sub", {.intensity = 1, .period = 60s}, {spec("y"), spec("z")})});
  CHECK(events.all() == strings{"start:x", "start:y", "start:z"});
  auto info = root.which_children();
  REQUIRE(info.size() == 2);
  CHECK(info[1].type == weft::child_type::supervisor);
  auto root_n = root.count_children();
  CHECK(root_n.supervisors == 1);
  CHECK(root_n.workers == 1);

  auto x = handle_of(root, "x");
  auto sub = weft::supervisor::from(info[1].ref);
  REQUIRE(sub.has_value());
  auto y = handle_of(*sub, "y");
  weft::kill(y);
  auto y2 = replaced(*sub, "y", y);
  weft::kill(y2); // the sub-supervisor gives up: stops z, fails
  std::optional<weft::supervisor> sub2;
  REQUIRE(weft_test::eventually([&] {
    auto r = root.child_ref_of("sub");
    if (r && r->id() != sub->id())
      sub2 = weft::supervisor::from(*r);
    return sub2.has_value();
  }));
  CHECK(events.since(3) == strings{"stop:y", "start:y", "stop:y", "stop:z", "start:y", "start:z"});
  CHECK(ids_of(sub2->which_children()) == strings{"y", "z"});
  CHECK(sub2->count_children().active == 2);
  CHECK(handle_of(root, "x") == x);
}

TEST_CASE("one_for_all stops a nested supervisor's children, latest first, before the earlier siblings") {
  runtime_guard rt;
  events.clear();
  auto root =
    weft::supervisor::start({.strategy = weft::restart_strategy::one_for_all},
                            {spec("a"), weft::supervisor::spec("sub", {}, {spec("b"), spec("c")}), spec("d")});
  CHECK(events.all() == strings{"start:a", "start:b", "start:c", "start:d"});
  weft::kill(handle_of(root, "d"));
  REQUIRE(log_reaches(12));
  CHECK(events.since(4) == strings{"stop:d", "stop:c", "stop:b", "stop:a", "start:a", "start:b", "start:c", "start:d"});
}

TEST_CASE("stop() stops the children in reverse start order and ends the supervisor normally") {
  end_seen end; // declared first: its monitor may fire while the runtime shuts down
  runtime_guard rt;
  events.clear();
  auto sup =
    weft::supervisor::start({}, {spec("a"), weft::supervisor::spec("sub", {}, {spec("b"), spec("c")}), spec("d")});
  end.watch(sup);
  sup.stop();
  CHECK(events.since(4) == strings{"stop:d", "stop:c", "stop:b", "stop:a"});
  REQUIRE(end.wait());
  CHECK(end.exit.normal);
  sup.stop(); // a no-op now
}

TEST_CASE("weft::shutdown() with a live tree ends every child") {
  runtime_guard rt;
  events.clear();
  auto root = weft::supervisor::start({}, {spec("a"), weft::supervisor::spec("sub", {}, {spec("b"), spec("c")})});
  weft::kill(handle_of(root, "a")); // a restart may be under way
  weft::shutdown();
  auto all = events.all();
  auto stops = std::count_if(all.begin(), all.end(), [](const std::string& e) { return e.starts_with("stop:"); });
  auto starts = std::count_if(all.begin(), all.end(), [](const std::string& e) { return e.starts_with("start:"); });
  CHECK(stops == starts);
}

TEST_CASE("dropping the last handle to a supervisor ends its children") {
  runtime_guard rt;
  events.clear();
  { auto sup = weft::supervisor::start({}, {spec("a"), spec("b")}); }
  REQUIRE(log_reaches(4));
  auto tail = events.since(2);
  std::sort(tail.begin(), tail.end());
  CHECK(tail == strings{"stop:a", "stop:b"});
}

TEST_CASE("terminate_child, restart_child, delete_child and start_child change a running supervisor") {
  runtime_guard rt;
  events.clear();
  auto sup = weft::supervisor::start({}, {spec("a"), spec("b")});
  sup.terminate_child("b");
  CHECK(events.all() == strings{"start:a", "start:b", "stop:b"});
  CHECK(status_of(sup, "b") == weft::child_status::undefined);
  CHECK_FALSE(sup.child<worker>("b").has_value());

  auto b = sup.restart_child("b");
  CHECK(b.valid());
  CHECK(events.size() == 4);
  CHECK(sup.child<worker>("b") == b.as<worker>());
  CHECK_THROWS_AS(sup.restart_child("b"), weft::invalid_argument_error); // running
  CHECK_THROWS_AS(sup.delete_child("b"), weft::invalid_argument_error);  // running

  sup.terminate_child("b");
  sup.delete_child("b");
  CHECK(ids_of(sup.which_children()) == strings{"a"});
  CHECK_THROWS_AS(sup.terminate_child("b"), weft::invalid_argument_error); // gone

  auto c = sup.start_child(spec("c"));
  CHECK(c.as<worker>().has_value());
  CHECK(ids_of(sup.which_children()) == strings{"a", "c"});
  CHECK_THROWS_AS(sup.start_child(spec("c")), weft::invalid_argument_error); // id in use
  CHECK(sup.count_children().active == 2);
}

TEST_CASE("a child that fails to start at startup: the started ones stop in reverse order and start() throws") {
  runtime_guard rt;
  events.clear();
  auto bad =
    weft::child_spec{.id = "bad", .start = []() -> weft::child_ref { return weft::remote<broken>().remote(); }};
  auto what = weft_test::what_of<weft::error>([&] {
    weft::supervisor::start({}, {spec("a"), spec("b"), bad, spec("c")});
  });
  CHECK_THAT(what, Catch::Contains("'bad'") && Catch::Contains("no config"));
  CHECK(events.all() == strings{"start:a", "start:b", "stop:b", "stop:a"});
}

TEST_CASE("a start function that throws fails the start") {
  runtime_guard rt;
  auto bad = weft::child_spec{.id = "bad", .start = []() -> weft::child_ref { throw std::runtime_error("nope"); }};
  auto what = weft_test::what_of<weft::error>([&] { weft::supervisor::start({}, {bad}); });
  CHECK_THAT(what, Catch::Contains("'bad'") && Catch::Contains("nope"));
}

TEST_CASE("child<T> is nullopt for an unknown id and throws for the wrong class") {
  runtime_guard rt;
  auto sup = weft::supervisor::start({}, {spec("a")});
  CHECK_FALSE(sup.child<worker>("nobody").has_value());
  CHECK_THROWS_AS(sup.child<broken>("a"), weft::invalid_argument_error);
}

TEST_CASE("bad flags and specs are rejected before anything starts") {
  runtime_guard rt;
  events.clear();
  CHECK_THROWS_AS(weft::supervisor::start({.intensity = -1}, {spec("a")}), weft::invalid_argument_error);
  CHECK_THROWS_AS(weft::supervisor::start({.period = 0ms}, {spec("a")}), weft::invalid_argument_error);
  CHECK_THROWS_AS(weft::supervisor::start({}, {spec("a"), spec("a")}), weft::invalid_argument_error);
  CHECK_THROWS_AS(weft::supervisor::start({}, {spec("")}), weft::invalid_argument_error);
  CHECK_THROWS_AS(weft::supervisor::start({}, {weft::child_spec{.id = "x"}}), weft::invalid_argument_error);
  CHECK(events.size() == 0);
}

TEST_CASE("worker_spec starts a T from stored arguments") {
  runtime_guard rt;
  events.clear();
  auto sup = weft::supervisor::start({}, {weft::worker_spec<worker>("w", std::string("w"))});
  auto w = handle_of(sup, "w");
  weft::kill(w);
  replaced(sup, "w", w);
  CHECK(events.all() == strings{"start:w", "stop:w", "start:w"});
}
