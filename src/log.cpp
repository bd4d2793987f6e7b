#include "log.hpp"

#include <cstdlib>
#include <mutex>

#include <spdlog/sinks/stdout_color_sinks.h>

#include "weft/errors.hpp"

namespace weft::detail {

spdlog::logger& log() {
  static std::shared_ptr<spdlog::logger> logger = [] {
    auto existing = spdlog::get("weft");
    if (existing)
      return existing;
    auto l = spdlog::stderr_color_mt("weft");
    l->set_pattern("[%T.%e] [weft] [%^%l%$] %v");
    l->set_level(spdlog::level::warn);
    return l;
  }();
  return *logger;
}

void set_log_level(const std::optional<std::string>& name) {
  std::string level = "warn";
  if (name) {
    level = *name;
  } else if (const char* env = std::getenv("WEFT_LOG_LEVEL"); env && *env) {
    level = env;
  }
  auto parsed = spdlog::level::from_str(level);
  // from_str answers "off" for anything it does not know.
  if (parsed == spdlog::level::off && level != "off")
    throw invalid_argument_error("weft: log level '" + level +
                                 "' is unknown; expected one of trace, debug, info, warn, error, critical, off");
  log().set_level(parsed);
}

} // namespace weft::detail
