// expect: fn\(actor, value\) must return the weft::object_ref of an actor call
#include <weft/weft.hpp>

struct worker {
  int square(int v) { return v * v; }
};

int main() {
  weft::actor_pool<worker> pool(std::vector<weft::actor_handle<worker>>{});
  // Wrong: fn returns the value (after a get) instead of the call's object_ref.
  pool.submit([](const weft::actor_handle<worker>& a, int v) { return weft::get(a.task(&worker::square).remote(v)); },
              3);
}
