/// @file
/// Forward declarations of weft's task-side types, for headers that only
/// name them.
#pragma once

#include <cstddef>

namespace weft {
struct config;
struct task_options;
struct cancel_options;
struct object_id;
class exception_filter;
class error;
class task_error;
template <class T>
class object_ref;
template <class T>
struct wait_result;
template <class Signature, std::size_t Split>
class remote_function;
} // namespace weft
