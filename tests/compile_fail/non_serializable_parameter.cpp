// expect: require_serializable<plain_point>.*cannot cross a process boundary
#include <weft/weft.hpp>

struct plain_point {
  double x = 0, y = 0;
};

double norm(plain_point p) { return p.x * p.x + p.y * p.y; }

void make() { weft::remote(norm); }
