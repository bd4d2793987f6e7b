// expect: require_serializable<plain_point>.*cannot cross a process boundary.*Give it a member
#include <weft/weft.hpp>

struct plain_point {
  double x = 0, y = 0;
};

// An actor may live in a worker process: its constructor's arguments are sent there.
struct canvas {
  explicit canvas(plain_point origin) : origin(origin) {}
  plain_point origin;
};

void make() { weft::remote<canvas>().remote(plain_point{}); }
