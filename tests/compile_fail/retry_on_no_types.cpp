// expect: retry_on<...>.. needs at least one exception type
#include <weft/weft.hpp>

void make() {
  weft::task_options o{.retry_exceptions = weft::retry_on<>()};
  (void)o;
}
