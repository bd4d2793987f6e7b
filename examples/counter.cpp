// Actors: a Counter keeps its state between calls; the calls run one at a time, in the order they were made.
#include <weft/weft.hpp>

#include <cstdio>
#include <vector>

struct counter {
  int value = 0;
  int increment() { return ++value; }
  int get_value() const { return value; }
};

int main(int argc, char** argv) {
  weft::init(argc, argv);
  const auto counter_r = weft::remote<counter>();
  weft::actor_handle<counter> c = counter_r.remote(); // returns at once; the actor starts meanwhile

  // Each call is a message to the actor and returns an object_ref at once.
  weft::object_ref<int> first = c.task(&counter::increment).remote();
  weft::object_ref<int> second = c.task(&counter::increment).remote();
  weft::object_ref<int> current = c.task(&counter::get_value).remote();

  const std::vector<int> results = weft::get(std::vector{first, second, current});
  std::printf("increment, increment, get_value -> [%d, %d, %d]\n", results[0], results[1], results[2]);

  weft::shutdown();
}
