// expect: put of an object_ref is not allowed
#include <weft/weft.hpp>

void store(const weft::object_ref<int>& r) { weft::put(r); }
