/// @file
/// weft: Ray Core's programming model for C++20 on the C++ Actor Framework.
/// `#include <weft/weft.hpp>` is the only include a user needs (it lives in
/// libactor, the top layer, and pulls in libtask).
#pragma once

#include "weft/actor.hpp"
#include "weft/actor_pool.hpp"
#include "weft/array.hpp"
#include "weft/config.hpp"
#include "weft/coro.hpp"
#include "weft/errors.hpp"
#include "weft/object_ref.hpp"
#include "weft/options.hpp"
#include "weft/queue.hpp"
#include "weft/remote_function.hpp"
#include "weft/runtime.hpp"
#include "weft/supervisor.hpp"
