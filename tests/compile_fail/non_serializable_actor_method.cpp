// expect: require_serializable<plain_point>.*cannot cross a process boundary
#include <weft/weft.hpp>

struct plain_point {
  double x = 0, y = 0;
};

struct canvas {
  void draw(plain_point) {}
};

void make(const weft::actor_handle<canvas>& h) { h.task(&canvas::draw).remote(plain_point{}); }
