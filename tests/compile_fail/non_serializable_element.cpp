// expect: require_serializable<std::map<int, std::vector<plain_point> > >.*cannot cross a process boundary
#include <map>
#include <vector>

#include <weft/weft.hpp>

struct plain_point {
  double x = 0, y = 0;
};

int count(const std::map<int, std::vector<plain_point>>& m) { return static_cast<int>(m.size()); }

void make() { weft::remote(count); }
