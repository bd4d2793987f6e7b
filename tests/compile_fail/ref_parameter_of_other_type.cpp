// expect: this argument of .remote..... does not convert to the remote function's parameter type
#include <weft/weft.hpp>

int read_ref(weft::object_ref<int> r) { return r.valid() ? 1 : 0; }

void submit(const weft::object_ref<long>& r) { weft::remote(read_ref).remote(r); }
