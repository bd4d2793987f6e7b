#include "weft/options.hpp"

namespace weft {

bool exception_filter::matches(const std::exception_ptr& e) const {
  if (all_)
    return true;
  for (matcher m : types_)
    if (m(e))
      return true;
  return false;
}

task_options merge(const task_options& base, const task_options& over) {
  task_options out = base;
  auto take = [](auto& dst, const auto& src) {
    if (src)
      dst = src;
  };
  take(out.num_cpus, over.num_cpus);
  take(out.num_gpus, over.num_gpus);
  take(out.memory, over.memory);
  if (!over.resources.empty())
    out.resources = over.resources;
  take(out.max_retries, over.max_retries);
  take(out.retry_exceptions, over.retry_exceptions);
  take(out.max_calls, over.max_calls);
  take(out.name, over.name);
  return out;
}

} // namespace weft
