// expect: this argument of .remote..... does not convert to the remote function's parameter type
#include <string>

#include <weft/weft.hpp>

int increment(int x) { return x + 1; }

void submit(const weft::object_ref<std::string>& text) { weft::remote(increment).remote(text); }
