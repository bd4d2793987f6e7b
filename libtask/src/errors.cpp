#include "weft/errors.hpp"

namespace weft {

namespace {
std::string describe(const std::string& type_name, const std::string& message, const std::vector<std::string>& chain) {
  std::string s = "task '" + (chain.empty() ? std::string("?") : chain.front()) + "' threw " + type_name;
  if (!message.empty())
    s += ": " + message;
  if (chain.size() > 1) {
    s += " (passed through ";
    for (std::size_t i = 1; i < chain.size(); ++i)
      s += (i > 1 ? " -> " : "") + chain[i];
    s += ")";
  }
  return s;
}
} // namespace

task_error::task_error(std::string type_name, std::string message, std::vector<std::string> chain,
                       std::exception_ptr cause) :
  error(describe(type_name, message, chain)),
  type_name_(std::move(type_name)),
  message_(std::move(message)),
  chain_(std::move(chain)),
  cause_(std::move(cause)) {}

task_error task_error::passed_through(const std::string& task_name) const {
  auto chain = chain_;
  chain.push_back(task_name);
  return task_error(type_name_, message_, std::move(chain), cause_);
}

} // namespace weft
