// Private: weft's spdlog logger. Never included from public headers.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <spdlog/spdlog.h>

namespace weft::detail {

/// The "weft" logger (stderr). Always valid.
spdlog::logger& log();
/// Sets the level from a name; unset: $WEFT_LOG_LEVEL, else "warn".
/// Throws invalid_argument_error for an unknown name.
void set_log_level(const std::optional<std::string>& name);

} // namespace weft::detail
