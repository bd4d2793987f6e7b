// expect: require_serializable<weft::queue<plain_point> >.*items of this weft::queue<T> cannot cross.*Give it a member
#include <weft/weft.hpp>

struct plain_point {
  double x = 0, y = 0;
};

// A worker that runs this task puts and gets its items through the driver.
int count(weft::queue<plain_point> q) { return static_cast<int>(q.size()); }

void make() { weft::remote(count); }
