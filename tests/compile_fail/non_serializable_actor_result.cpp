// expect: require_serializable<plain_point>.*cannot cross a process boundary.*Give it a member
#include <weft/weft.hpp>

struct plain_point {
  double x = 0, y = 0;
};

// An actor may live in a worker process: a method's result comes back from there.
struct canvas {
  plain_point origin() const { return {}; }
};

void make(const weft::actor_handle<canvas>& h) { h.task(&canvas::origin).remote(); }
