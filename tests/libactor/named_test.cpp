// Named actors: get_actor, namespaces, duplicate names, get_if_exists, and
// names freed when their actor dies.
#include <catch2/catch.hpp>

#include <atomic>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "weft_test.hpp"

using namespace std::chrono_literals;
using weft_test::bound;
using weft_test::eventually;
using weft_test::runtime_guard;
using weft_test::what_of;

namespace {

struct registry_entry {
  static inline std::atomic<int> constructed{0};
  explicit registry_entry(int start) : value(start) { ++constructed; }
  int add(int n) { return value += n; }
  int get_value() const { return value; }
  std::string my_name() const { return weft::runtime_context().actor_name(); }
  std::string my_namespace() const { return weft::runtime_context().actor_namespace(); }
  void quit() { weft::exit_actor(); }
  int value;
};

struct other_kind {
  int ping() const { return 1; }
};

/// Sets a flag once the actor is dead for good (after its name was freed).
template <class T>
std::shared_ptr<std::atomic<bool>> watch_end(const weft::actor_handle<T>& h) {
  auto ended = std::make_shared<std::atomic<bool>>(false);
  weft::monitor(h, [ended](const weft::actor_exit&) { *ended = true; });
  return ended;
}

} // namespace

TEST_CASE("get_actor finds a live named actor and reaches the same state") {
  runtime_guard rt;
  auto h = weft::remote<registry_entry>().options({.name = "alpha"}).remote(10);
  auto found = weft::get_actor<registry_entry>("alpha");
  REQUIRE(found.has_value());
  CHECK(*found == h);
  CHECK(found->id() == h.id());
  CHECK(weft::get(found->task(&registry_entry::add).remote(5), bound) == 15);
  CHECK(weft::get(h.task(&registry_entry::get_value).remote(), bound) == 15);
  CHECK(weft::get(h.task(&registry_entry::my_name).remote(), bound) == "alpha");
  CHECK(weft::get(h.task(&registry_entry::my_namespace).remote(), bound).empty());
}

TEST_CASE("namespaces keep equal names apart") {
  runtime_guard rt;
  auto in_a = weft::remote<registry_entry>().options({.name = "same", .namespace_ = "a"}).remote(1);
  weft::actor_handle<registry_entry> in_b;
  REQUIRE_NOTHROW(in_b = weft::remote<registry_entry>().options({.name = "same", .namespace_ = "b"}).remote(2));
  auto found_a = weft::get_actor<registry_entry>("same", "a");
  auto found_b = weft::get_actor<registry_entry>("same", "b");
  REQUIRE(found_a.has_value());
  REQUIRE(found_b.has_value());
  CHECK(*found_a == in_a);
  CHECK(*found_b == in_b);
  CHECK_FALSE(*found_a == *found_b);
  CHECK(weft::get(found_a->task(&registry_entry::get_value).remote(), bound) == 1);
  CHECK(weft::get(found_b->task(&registry_entry::get_value).remote(), bound) == 2);
  CHECK(weft::get(in_b.task(&registry_entry::my_namespace).remote(), bound) == "b");
  // Neither is found in the default namespace, nor in another one.
  CHECK_FALSE(weft::get_actor<registry_entry>("same").has_value());
  CHECK_FALSE(weft::get_actor<registry_entry>("same", "c").has_value());
}

TEST_CASE("get_actor of an unknown name is nullopt") {
  runtime_guard rt;
  CHECK_FALSE(weft::get_actor<registry_entry>("nobody").has_value());
  auto h = weft::remote<registry_entry>().options({.name = "somebody"}).remote(0);
  CHECK_FALSE(weft::get_actor<registry_entry>("nobody").has_value());
  CHECK_FALSE(weft::get_actor<registry_entry>("Somebody").has_value()); // names are case-sensitive
}

TEST_CASE("an unnamed actor is not found by any name") {
  runtime_guard rt;
  auto h = weft::remote<registry_entry>().remote(0);
  CHECK(weft::get(h.task(&registry_entry::my_name).remote(), bound).empty());
  CHECK_FALSE(weft::get_actor<registry_entry>(weft::to_string(h.id())).has_value());
}

TEST_CASE("get_actor with an empty name throws invalid_argument_error") {
  runtime_guard rt;
  CHECK_THAT(what_of<weft::invalid_argument_error>([] { weft::get_actor<registry_entry>(""); }),
             Catch::Contains("name is empty"));
  CHECK_THAT(what_of<weft::invalid_argument_error>([] { weft::get_actor<registry_entry>("", "ns"); }),
             Catch::Contains("name is empty"));
}

TEST_CASE("a taken name in the same namespace throws invalid_argument_error naming the existing actor") {
  runtime_guard rt;
  registry_entry::constructed = 0;
  auto first = weft::remote<registry_entry>().options({.name = "taken", .namespace_ = "ns1"}).remote(1);
  REQUIRE(weft::get(first.task(&registry_entry::get_value).remote(), bound) == 1);
  const std::string what = what_of<weft::invalid_argument_error>(
    [] { weft::remote<registry_entry>().options({.name = "taken", .namespace_ = "ns1"}).remote(2); });
  CHECK_THAT(what, Catch::Contains("'taken'"));
  CHECK_THAT(what, Catch::Contains("ns1"));
  CHECK_THAT(what, Catch::Contains(weft::to_string(first.id()))); // the holder
  CHECK_THAT(what, Catch::Contains("registry_entry"));
  CHECK_THAT(what, Catch::Contains("get_if_exists"));
  // The first actor is untouched and still the one registered.
  auto found = weft::get_actor<registry_entry>("taken", "ns1");
  REQUIRE(found.has_value());
  CHECK(*found == first);
  CHECK(registry_entry::constructed == 1);
  // Another class cannot take the name either.
  CHECK_THAT(what_of<weft::invalid_argument_error>(
               [] { weft::remote<other_kind>().options({.name = "taken", .namespace_ = "ns1"}).remote(); }),
             Catch::Contains(weft::to_string(first.id())));
}

TEST_CASE("get_if_exists returns the existing actor instead of creating another") {
  runtime_guard rt;
  registry_entry::constructed = 0;
  auto first = weft::remote<registry_entry>().options({.name = "shared"}).remote(7);
  weft::get(first.task(&registry_entry::add).remote(1), bound);
  auto again = weft::remote<registry_entry>().options({.name = "shared", .get_if_exists = true}).remote(100);
  CHECK(again == first);
  CHECK(weft::get(again.task(&registry_entry::get_value).remote(), bound) == 8); // not 100: no new actor
  CHECK(registry_entry::constructed == 1);
}

TEST_CASE("get_if_exists creates the actor when the name is free") {
  runtime_guard rt;
  registry_entry::constructed = 0;
  auto h = weft::remote<registry_entry>().options({.name = "fresh", .get_if_exists = true}).remote(3);
  CHECK(weft::get(h.task(&registry_entry::get_value).remote(), bound) == 3);
  auto found = weft::get_actor<registry_entry>("fresh");
  REQUIRE(found.has_value());
  CHECK(*found == h);
}

TEST_CASE("get_if_exists with a different class throws invalid_argument_error") {
  runtime_guard rt;
  auto first = weft::remote<registry_entry>().options({.name = "typed"}).remote(0);
  const std::string what = what_of<weft::invalid_argument_error>(
    [] { weft::remote<other_kind>().options({.name = "typed", .get_if_exists = true}).remote(); });
  CHECK_THAT(what, Catch::Contains("registry_entry"));
  CHECK_THAT(what, Catch::Contains("other_kind"));
}

TEST_CASE("get_actor with the wrong class throws invalid_argument_error naming both classes") {
  runtime_guard rt;
  auto h = weft::remote<registry_entry>().options({.name = "wrong-type"}).remote(0);
  const std::string what = what_of<weft::invalid_argument_error>([] { weft::get_actor<other_kind>("wrong-type"); });
  CHECK_THAT(what, Catch::Contains("wrong-type"));
  CHECK_THAT(what, Catch::Contains("registry_entry"));
  CHECK_THAT(what, Catch::Contains("other_kind"));
}

TEST_CASE("a name is freed when its actor's last handle is dropped") {
  runtime_guard rt;
  std::shared_ptr<std::atomic<bool>> ended;
  weft::actor_id old_id;
  {
    auto h = weft::remote<registry_entry>().options({.name = "transient"}).remote(1);
    old_id = h.id();
    ended = watch_end(h);
    weft::get(h.task(&registry_entry::get_value).remote(), bound);
  }
  REQUIRE(eventually([&] { return ended->load(); }));
  CHECK_FALSE(weft::get_actor<registry_entry>("transient").has_value());
  weft::actor_handle<registry_entry> next;
  REQUIRE_NOTHROW(next = weft::remote<registry_entry>().options({.name = "transient"}).remote(2));
  CHECK(next.id() != old_id);
  auto found = weft::get_actor<registry_entry>("transient");
  REQUIRE(found.has_value());
  CHECK(weft::get(found->task(&registry_entry::get_value).remote(), bound) == 2);
}

TEST_CASE("a name is freed when its actor exits with exit_actor") {
  runtime_guard rt;
  auto h = weft::remote<registry_entry>().options({.name = "leaver", .namespace_ = "q"}).remote(1);
  auto ended = watch_end(h);
  weft::get(h.task(&registry_entry::quit).remote(), bound);
  REQUIRE(eventually([&] { return ended->load(); }));
  CHECK_FALSE(weft::get_actor<registry_entry>("leaver", "q").has_value());
  REQUIRE_NOTHROW(weft::remote<registry_entry>().options({.name = "leaver", .namespace_ = "q"}).remote(2));
}

TEST_CASE("a name is freed when its actor runs out of restarts") {
  struct always_fails {
    always_fails() { throw std::runtime_error("no"); }
    int ping() const { return 1; }
  };
  runtime_guard rt;
  auto h = weft::remote<always_fails>().options({.name = "doomed", .max_restarts = 1}).remote();
  auto ended = watch_end(h);
  CHECK_THROWS_AS(weft::get(h.task(&always_fails::ping).remote(), bound), weft::actor_died_error);
  REQUIRE(eventually([&] { return ended->load(); }));
  CHECK_FALSE(weft::get_actor<always_fails>("doomed").has_value());
  REQUIRE_NOTHROW(weft::remote<registry_entry>().options({.name = "doomed"}).remote(0));
}

TEST_CASE("a restarted named actor keeps its name") {
  runtime_guard rt;
  auto h = weft::remote<registry_entry>().options({.name = "phoenix", .max_restarts = 1}).remote(5);
  weft::get(h.task(&registry_entry::add).remote(1), bound);
  weft::kill(h, {.no_restart = false});
  CHECK(weft::get(h.task(&registry_entry::get_value).remote(), bound) == 5); // constructed again
  auto found = weft::get_actor<registry_entry>("phoenix");
  REQUIRE(found.has_value());
  CHECK(*found == h);
  CHECK(weft::get(found->task(&registry_entry::my_name).remote(), bound) == "phoenix");
}
