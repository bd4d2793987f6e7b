// expect: require_serializable<plain_point>.*cannot cross a process boundary
#include <weft/weft.hpp>

struct plain_point {
  double x = 0, y = 0;
};

plain_point origin() { return {}; }

void make() { weft::remote(origin); }
