/// @file
/// weft::coro<T>: the return type of a C++20 coroutine actor method (Ray's
/// `async def` actor methods). Inside one, `co_await ref` waits for an
/// object_ref without holding the actor: other calls run meanwhile, and
/// the method goes on, on the actor, once the object is ready.
///
///     struct fetcher {
///       weft::coro<int> twice(weft::object_ref<int> r) {
///         int v = co_await r;          // other calls run while this waits
///         co_return 2 * v;
///       }
///     };
///     weft::object_ref<int> out = h.task(&fetcher::twice).remote(ref);
///
/// A coro is only ever run by the actor runtime; calling such a method
/// directly gives an unstarted coro that does nothing.
#pragma once

#include <coroutine>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include "weft/detail/object_state.hpp"
#include "weft/object_ref.hpp"

namespace weft {

namespace detail {

/// Registers the running actor call to be continued when `cell` is done.
/// False when it already is (the coroutine does not suspend). Throws
/// weft::error outside an actor call.
bool suspend_actor_call_on(object_state* cell);

template <class U>
struct ref_awaiter {
  const object_ref<U>& ref;
  bool await_ready() const noexcept { return ref.is_ready(); }
  bool await_suspend(std::coroutine_handle<>) const { return suspend_actor_call_on(ref.cell()); }
  U await_resume() const {
    if (ref.cell()->failed())
      std::rethrow_exception(ref.cell()->error());
    if constexpr (!std::is_void_v<U>)
      return static_cast<const value_object<U>*>(ref.cell())->value();
  }
};

template <class Derived>
struct coro_promise_base {
  std::exception_ptr error;
  std::suspend_always initial_suspend() noexcept { return {}; }
  std::suspend_always final_suspend() noexcept { return {}; }
  void unhandled_exception() noexcept { error = std::current_exception(); }
  template <class U>
  ref_awaiter<U> await_transform(const object_ref<U>& r) {
    return ref_awaiter<U>{r};
  }
};

} // namespace detail

template <class T = void>
class coro {
  struct promise_value : detail::coro_promise_base<promise_value> {
    std::optional<T> value;
    coro get_return_object() { return coro(std::coroutine_handle<promise_value>::from_promise(*this)); }
    template <class V>
    void return_value(V&& v) {
      value.emplace(std::forward<V>(v));
    }
  };
  struct promise_void : detail::coro_promise_base<promise_void> {
    coro get_return_object() { return coro(std::coroutine_handle<promise_void>::from_promise(*this)); }
    void return_void() noexcept {}
  };

public:
  using value_type = T;
  using promise_type = std::conditional_t<std::is_void_v<T>, promise_void, promise_value>;
  using handle_type = std::coroutine_handle<promise_type>;

  coro() noexcept = default;
  coro(coro&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  coro& operator=(coro&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  coro(const coro&) = delete;
  coro& operator=(const coro&) = delete;
  ~coro() { reset(); }

  /// Runtime side: runs until the next suspension; true when finished.
  bool step() {
    h_.resume();
    return h_.done();
  }
  /// Runtime side, once finished: the returned value (or the exception).
  T take() {
    if (h_.promise().error)
      std::rethrow_exception(h_.promise().error);
    if constexpr (!std::is_void_v<T>)
      return std::move(*h_.promise().value);
  }
  /// Destroys the frame (suspended or finished).
  void reset() noexcept {
    if (h_)
      h_.destroy();
    h_ = {};
  }

private:
  explicit coro(handle_type h) noexcept : h_(h) {}
  handle_type h_{};
};

template <class T>
struct is_coro : std::false_type {};
template <class T>
struct is_coro<coro<T>> : std::true_type {};
template <class T>
inline constexpr bool is_coro_v = is_coro<std::remove_cvref_t<T>>::value;

} // namespace weft
