/// @file
/// weft::remote(f): turns a plain function into a remote function (Ray's
/// `@ray.remote`). `.remote(args...)` submits a task and returns an
/// object_ref at once; it is thread-safe and callable from inside tasks.
///
///     int add(int a, int b);
///     const auto add_r = weft::remote(add);
///     weft::object_ref<int> r = add_r.remote(1, 2);
///
/// Argument lists are checked at compile time: an object_ref<T> is accepted
/// wherever a T is expected (the task waits for the value, holding no CPU);
/// an object_ref<T> parameter receives the ref itself.
#pragma once

#include <concepts>
#include <cstddef>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "weft/detail/task.hpp"
#include "weft/object_ref.hpp"
#include "weft/options.hpp"
#include "weft/serialization.hpp"

namespace weft {

namespace detail {

template <class P>
constexpr void check_parameter() {
  static_assert(!(std::is_lvalue_reference_v<P> && !std::is_const_v<std::remove_reference_t<P>>),
                "weft: a remote function cannot take a non-const reference parameter; a task gets its own "
                "immutable copy of every argument. Take it by value or by const reference.");
  static_assert(!std::is_pointer_v<std::remove_cvref_t<P>>,
                "weft: a remote function cannot take a raw pointer parameter; it would not survive the trip to "
                "another process. Pass the value itself (e.g. std::string instead of const char*).");
}

template <class R>
constexpr void check_result() {
  static_assert(!std::is_reference_v<R> && !std::is_pointer_v<R>,
                "weft: a remote function must return by value (not a reference or pointer); its result is "
                "stored in the object store.");
}

template <std::size_t Index, class P, class A>
constexpr bool check_argument() {
  constexpr bool ok = argument_fits<P, A>();
  static_assert(ok, "weft: this argument of .remote(...) does not convert to the remote function's parameter "
                    "type (an object_ref<T> is accepted where a T is expected). The instantiation below "
                    "names the argument's index, the parameter type and the argument type.");
  return ok;
}

template <class R, std::size_t Split>
struct call_result {
  using type = object_ref<R>;
};
template <class R, std::size_t Split>
requires(Split > 0 && Split != runtime_split) struct call_result<R, Split> {
  template <std::size_t... I>
  static auto make(std::index_sequence<I...>) -> std::tuple<object_ref<std::tuple_element_t<I, R>>...>;
  using type = decltype(make(std::make_index_sequence<Split>{}));
};
template <class R>
struct call_result<R, runtime_split> {
  using type = std::vector<object_ref<vector_element_t<R>>>;
};

/// num_returns(n) with n < 0: throws invalid_argument_error naming the
/// function and the value.
[[noreturn]] void throw_negative_num_returns(long long n, const void* fn, const task_options& options);

} // namespace detail

template <class Signature, std::size_t Split = 0>
class remote_function;

/// A remote function. Cheap to copy; immutable (options() returns a new one).
/// Split is 0 for one ref per call, N after num_returns<N>(), and
/// detail::runtime_split after num_returns(n).
template <class R, class... Params, std::size_t Split>
class remote_function<R(Params...), Split> {
public:
  using fn_type = R (*)(Params...);
  /// object_ref<R>; a tuple of typed refs after num_returns<N>(); a
  /// std::vector<object_ref<T>> of n refs after num_returns(n).
  using result_type = typename detail::call_result<R, Split>::type;

  explicit remote_function(fn_type fn, task_options defaults = {}) :
    fn_(fn),
    options_(std::make_shared<const task_options>(std::move(defaults))) {
    detail::check_result<R>();
    (detail::check_parameter<Params>(), ...);
    // Every remote call must be able to run in a worker process.
    (void)detail::require_serializable<std::remove_cvref_t<R>>::value;
    ((void)detail::require_serializable<std::remove_cvref_t<Params>>::value, ...);
  }

  /// The same function with some options replaced for the calls made
  /// through the result (Ray's `.options(...)`).
  remote_function options(const task_options& over) const {
    return remote_function(fn_, merge(*options_, over), count_);
  }

  /// The same function, but each call yields N typed refs, one per element
  /// of the returned tuple (Ray's num_returns=N).
  template <std::size_t N>
  remote_function<R(Params...), N> num_returns() const {
    static_assert(detail::tuple_size_or_zero<R>::value > 0,
                  "weft: num_returns<N>() needs a function that returns a std::tuple or std::pair");
    static_assert(detail::tuple_size_or_zero<R>::value == N,
                  "weft: num_returns<N>() must equal the number of elements of the returned tuple");
    return remote_function<R(Params...), N>(fn_, *options_);
  }

  /// The same function, but each call yields `n` refs, one per element of
  /// the returned std::vector<T>, chosen at run time (Ray's
  /// `.options(num_returns=n)`): `.remote(...)` returns a
  /// std::vector<object_ref<T>> of size n. If the function returns a
  /// vector of another size, all n refs fail with a task_error of type
  /// weft::num_returns_error. n = 0 is allowed, as in Ray: the call returns
  /// no refs, so nobody sees its result or its error. Throws
  /// invalid_argument_error for n < 0. Does not block; thread-safe.
  template <std::integral I>
  remote_function<R(Params...), detail::runtime_split> num_returns(I n) const {
    static_assert(!std::is_same_v<I, bool>, "weft: num_returns(n) takes a count, not a bool");
    constexpr bool is_vector = detail::vector_element<R>::is_vector;
    static_assert(is_vector, "weft: num_returns(n) needs a function that returns a std::vector<T> (each element "
                             "becomes one ref); for a std::tuple or std::pair use num_returns<N>()");
    static_assert(Split == 0 || Split == detail::runtime_split, "weft: num_returns(n) cannot follow num_returns<N>()");
    if constexpr (std::is_signed_v<I>)
      if (n < 0)
        detail::throw_negative_num_returns(static_cast<long long>(n), reinterpret_cast<const void*>(fn_), *options_);
    return remote_function<R(Params...), detail::runtime_split>(fn_, *options_, static_cast<std::size_t>(n));
  }

  /// How many refs each call returns: 1, N after num_returns<N>(), n after
  /// num_returns(n).
  std::size_t return_count() const noexcept {
    return Split == detail::runtime_split ? count_ : detail::return_count_v<R, Split>;
  }

  /// Submits one call. Returns at once. Thread-safe.
  /// Throws not_initialized_error, invalid_argument_error (bad options, an
  /// invalid object_ref argument) or resource_error (infeasible request).
  template <class... Args>
  result_type remote(Args&&... args) const {
    constexpr bool count_ok = sizeof...(Args) == sizeof...(Params);
    static_assert(count_ok, "weft: wrong number of arguments in .remote(...): pass exactly the remote "
                            "function's parameters");
    if constexpr (count_ok) {
      constexpr bool types_ok = check_all<Args...>(std::index_sequence_for<Args...>{});
      if constexpr (types_ok)
        return submit(std::forward<Args>(args)...);
    }
    return result_type{};
  }

  fn_type function() const noexcept { return fn_; }
  const task_options& default_options() const noexcept { return *options_; }

private:
  template <class Signature, std::size_t S>
  friend class remote_function;

  remote_function(fn_type fn, task_options defaults, std::size_t count) : remote_function(fn, std::move(defaults)) {
    count_ = count;
  }

  template <class... Args, std::size_t... I>
  static constexpr bool check_all(std::index_sequence<I...>) {
    return (detail::check_argument<I, Params, Args>() && ...);
  }

  template <class... Args>
  result_type submit(Args&&... args) const {
    using task_type = detail::task_impl<R, std::tuple<Params...>, std::tuple<detail::stored_t<Params, Args>...>, Split>;
    if constexpr (Split == detail::runtime_split) {
      using E = detail::vector_element_t<R>;
      std::vector<detail::object_ptr> cells;
      cells.reserve(count_);
      result_type refs;
      refs.reserve(count_);
      for (std::size_t i = 0; i < count_; ++i) {
        cells.emplace_back(new detail::value_object<E>());
        refs.emplace_back(cells.back());
      }
      detail::submit(new task_type(fn_, options_, std::move(cells), std::forward<Args>(args)...));
      return refs;
    } else {
      constexpr std::size_t n = detail::return_count_v<R, Split>;
      std::array<detail::object_ptr, n> cells = make_cells(std::make_index_sequence<n>{});
      auto refs = refs_of(cells, std::make_index_sequence<n>{});
      detail::submit(new task_type(fn_, options_, std::move(cells), std::forward<Args>(args)...));
      return refs;
    }
  }

  template <std::size_t I>
  using cell_value_t =
    std::conditional_t<Split == 0, R, std::tuple_element_t<I, std::conditional_t<Split == 0, std::tuple<R>, R>>>;

  template <std::size_t... I>
  static std::array<detail::object_ptr, sizeof...(I)> make_cells(std::index_sequence<I...>) {
    return {detail::object_ptr(new detail::value_object<cell_value_t<I>>())...};
  }

  template <std::size_t... I>
  static result_type refs_of(const std::array<detail::object_ptr, sizeof...(I)>& cells, std::index_sequence<I...>) {
    if constexpr (Split == 0)
      return result_type(cells[0]);
    else
      return result_type(object_ref<cell_value_t<I>>(cells[I])...);
  }

  fn_type fn_;
  std::shared_ptr<const task_options> options_;
  std::size_t count_ = 1; ///< num_returns(n): n (unused otherwise)
};

namespace detail {
template <class F>
struct lambda_signature;
template <class C, class R, class... A>
struct lambda_signature<R (C::*)(A...) const> {
  using type = R(A...);
};
template <class C, class R, class... A>
struct lambda_signature<R (C::*)(A...) const noexcept> {
  using type = R(A...);
};
} // namespace detail

/// Makes a remote function from a plain function, optionally with per-function
/// default options (Ray's `@ray.remote(num_gpus=1)`).
template <class R, class... Params>
remote_function<R(Params...)> remote(R (*fn)(Params...), task_options defaults = {}) {
  return remote_function<R(Params...)>(fn, std::move(defaults));
}

/// A captureless lambda works like a plain function.
template <class F>
requires std::is_class_v<std::remove_cvref_t<F>>
auto remote(F&& f, task_options defaults = {}) {
  using D = std::remove_cvref_t<F>;
  constexpr bool has_single_call = requires { &D::operator(); };
  static_assert(has_single_call, "weft::remote needs a function or a captureless, non-generic lambda");
  if constexpr (has_single_call) {
    using sig = typename detail::lambda_signature<decltype(&D::operator())>::type;
    static_assert(std::is_convertible_v<D, sig*>,
                  "weft::remote cannot take a lambda that captures: a remote function has no state (that is "
                  "what actors are for). Pass the values as arguments instead.");
    return remote_function<sig>(static_cast<sig*>(f), std::move(defaults));
  }
}

} // namespace weft
