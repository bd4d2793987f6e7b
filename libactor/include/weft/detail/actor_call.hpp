/// @file
/// The parts of an actor that the public templates build: the counted
/// reference behind every actor_handle, one method call as the actor runtime
/// sees it, and the factory that (re)constructs the user's object.
/// Internal header; the runtime half lives in libactor/src.
#pragma once

#include <atomic>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <typeinfo>
#include <utility>

#include "weft/detail/object_state.hpp"
#include "weft/detail/task.hpp"
#include "weft/serialization.hpp"

namespace weft {

/// Identity of one actor; stays the same across restarts.
struct actor_id {
  std::uint64_t value = 0;
  friend bool operator==(actor_id, actor_id) = default;
  friend auto operator<=>(actor_id, actor_id) = default;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& value;
  }
};

/// "actor#2a"
std::string to_string(actor_id id);

namespace detail {

class actor_core;

/// weft's own actors that always live in the driver (their state holds
/// driver objects): their constructor arguments and methods need not be
/// serializable, and they never move to a worker process. A worker process
/// still creates and calls one (through the driver) when the arguments and
/// results at hand are serializable.
template <class T>
struct driver_only_actor : std::false_type {};

class actor_call;
class actor_factory;

/// Worker processes, an actor that stays in the driver: the driver builds
/// the typed call a worker made on it from the method's two words and the
/// encoded arguments (the codec of the refs they carry installed), and
/// learns the ref ops of the call's value type (to encode the result back).
/// Named by code address, like an invoker. Throws serialization_error.
using driver_call_builder = actor_call* (*)(const void* method, std::string_view args, ref_ops_fn* result_ops);
/// ... and the factory of one a worker creates, from the encoded
/// constructor arguments.
using driver_factory_builder = actor_factory* (*)(std::string_view args);

/// One counted handle on an actor (null allowed). Every live actor_ref
/// keeps a non-detached actor alive; the last one going away ends it.
class actor_ref {
public:
  actor_ref() noexcept = default;
  /// Adopts one handle count already added to `core`.
  static actor_ref adopt(actor_core* core) noexcept {
    actor_ref r;
    r.p_ = core;
    return r;
  }
  actor_ref(const actor_ref& o) noexcept;
  actor_ref(actor_ref&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  actor_ref& operator=(actor_ref o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  ~actor_ref();
  actor_core* get() const noexcept { return p_; }
  explicit operator bool() const noexcept { return p_ != nullptr; }

private:
  actor_core* p_ = nullptr;
};

/// Builds (and rebuilds, on restart) the user's object from stored
/// constructor arguments.
/// typeid(T), as a function: a worker names an actor class to its driver
/// by this function's code address (the same binary: the same type).
template <class T>
const std::type_info& actor_type_of() noexcept {
  return typeid(T);
}
using actor_type_fn = const std::type_info& (*)() noexcept;

class actor_factory {
public:
  virtual ~actor_factory() = default;
  /// A new instance; throws what the constructor throws.
  virtual void* create() const = 0;
  virtual void destroy(void* instance) const noexcept = 0;
  virtual const std::type_info& type() const noexcept = 0;
  /// Worker processes: the functions that build and destroy the object in
  /// a worker; null for an actor that stays in the driver.
  virtual actor_constructor remote_constructor() const noexcept { return nullptr; }
  virtual actor_destructor remote_destructor() const noexcept { return nullptr; }
  /// Worker processes: appends the encoded constructor arguments.
  virtual void encode_arguments(std::string& out) const { (void)out; }
  /// Worker processes: names the class (actor_type_of<T>).
  virtual actor_type_fn type_function() const noexcept { return nullptr; }
  /// Worker processes, an actor that stays in the driver: what rebuilds
  /// this factory there; null when its arguments cannot cross.
  virtual driver_factory_builder driver_factory() const noexcept { return nullptr; }
};

template <class T, class... Args>
class actor_factory_impl final : public actor_factory {
public:
  template <class... A>
  explicit actor_factory_impl(A&&... args) : args_(std::forward<A>(args)...) {}
  void* create() const override {
    return std::apply([](const Args&... a) { return static_cast<void*>(new T(a...)); }, args_);
  }
  void destroy(void* instance) const noexcept override { delete static_cast<T*>(instance); }
  const std::type_info& type() const noexcept override { return typeid(T); }

  actor_constructor remote_constructor() const noexcept override {
    if constexpr (driver_only_actor<T>::value)
      return nullptr;
    else
      return &construct_remote;
  }
  actor_destructor remote_destructor() const noexcept override {
    if constexpr (driver_only_actor<T>::value)
      return nullptr;
    else
      return &destroy_remote;
  }
  void encode_arguments(std::string& out) const override {
    if constexpr (crosses)
      std::apply([&out](const Args&... a) { encode_each(out, a...); }, args_);
  }
  actor_type_fn type_function() const noexcept override { return &actor_type_of<T>; }
  driver_factory_builder driver_factory() const noexcept override {
    if constexpr (driver_only_actor<T>::value && crosses)
      return &build_in_driver;
    else
      return nullptr;
  }

private:
  /// The arguments can be sent (always so for an actor that may live in a worker).
  static constexpr bool crosses = (is_serializable_v<Args> && ...);

  static actor_factory* build_in_driver(std::string_view in) {
    decoding_scope decoding;
    std::tuple<Args...> args;
    std::apply([&in](Args&... a) { decode_each(in, a...); }, args);
    decoding.end();
    return std::apply([](Args&... a) { return new actor_factory_impl(std::move(a)...); }, args);
  }
  static void* construct_remote(std::string_view in) {
    decoding_scope decoding;
    std::tuple<Args...> args;
    std::apply([&in](Args&... a) { decode_each(in, a...); }, args);
    decoding.end();
    return std::apply([](const Args&... a) { return static_cast<void*>(new T(a...)); }, args);
  }
  static void destroy_remote(void* instance) noexcept { delete static_cast<T*>(instance); }

  std::tuple<Args...> args_;
};

enum class call_status : std::uint8_t { finished, suspended };

/// One method call. The typed part (member pointer, arguments, result
/// cells) is actor_call_impl; the rest is owned by the actor runtime.
class actor_call {
public:
  actor_call(std::span<object_ptr> returns, std::span<object_state* const> deps, const void* method_id) noexcept :
    returns_(returns),
    deps_(deps),
    method_id_(method_id) {}
  actor_call(const actor_call&) = delete;
  actor_call& operator=(const actor_call&) = delete;
  virtual ~actor_call() {
    if (home_release)
      home_release(home);
  }

  /// Runs the method on `instance` and stores (does not publish) its
  /// result. A coroutine method may stop at a co_await: `suspended`.
  /// Throws what the method throws.
  virtual call_status invoke(void* instance) = 0;
  /// Continues a suspended coroutine call. Throws what the method throws.
  virtual call_status resume_coroutine() { return call_status::finished; }
  /// Destroys a suspended coroutine's frame (its locals' destructors run).
  virtual void drop_coroutine() noexcept {}

  std::span<object_ptr> returns() const noexcept { return returns_; }
  std::span<object_state* const> deps() const noexcept { return deps_; }
  /// Identifies the method (its code address when known), for names in errors.
  const void* method_id() const noexcept { return method_id_; }

  // ---- worker processes (the actor lives in a worker) ----
  /// The function that runs this call in the worker; null for calls of
  /// actors that stay in the driver.
  virtual actor_method_invoker remote_invoker() const noexcept { return nullptr; }
  /// A weft::coro method: in a worker it gives up its turn at co_await.
  virtual bool is_coroutine() const noexcept { return false; }
  /// The member-function pointer's bytes (Itanium C++ ABI: code address or
  /// 1 + vtable offset, then this-adjustment), 2 words.
  virtual const void* method_bytes() const noexcept { return nullptr; }
  /// Appends the arguments (object_ref arguments resolved to their values).
  virtual void encode_arguments(std::string& out) const { (void)out; }
  /// Stores (does not publish) the result the worker sent.
  virtual void decode_result(std::string_view in) { (void)in; }
  /// Called in a worker on an actor that stays in the driver: what builds
  /// the call there; null when its arguments or result cannot cross.
  virtual driver_call_builder driver_builder() const noexcept { return nullptr; }

  void add_ref() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  void release() noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1)
      delete this;
  }

  // ---- actor runtime bookkeeping: read and written by libactor/src only ----
  actor_ref target;                               ///< counts as a handle until the call ends
  int retries_left = 0;                           ///< resubmissions left after a restart
  std::uint8_t phase = 0;                         ///< runtime-defined
  std::atomic<bool> killed{false};                ///< unwind: the actor is going away
  void* fiber = nullptr;                          ///< the fiber running it, while it runs or blocks
  void* home = nullptr;                           ///< where wake-ups go (runtime-owned)
  void (*home_release)(void*) noexcept = nullptr; ///< frees `home`
  object_ptr remote_reply;                        ///< worker processes: the reply being waited for
  object_ptr via; ///< in a worker process: the proxy of the cell that holds the handle in the driver

private:
  std::atomic<std::uint32_t> refs_{1};
  std::span<object_ptr> returns_;
  std::span<object_state* const> deps_;
  const void* method_id_;
};

} // namespace detail
} // namespace weft
