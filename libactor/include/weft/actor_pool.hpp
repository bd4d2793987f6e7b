/// @file
/// weft::actor_pool<T>: spreads work over a fixed set of actors (Ray's
/// `ray.util.ActorPool`). Each submitted item is one call `fn(actor, value)`
/// on an idle actor; items beyond the idle actors wait in the pool and start
/// as actors free up. Results come back in submission order (get_next) or
/// as they finish (get_next_unordered).
///
///     weft::actor_pool<squarer> pool({a, b});
///     auto square = [](const weft::actor_handle<squarer>& s, int v) { return s.task(&squarer::square).remote(v); };
///     std::vector<int> out = pool.map(square, std::vector{1, 2, 3, 4}); // {1, 4, 9, 16}
///
/// An actor counts as busy from the start of its call until the call's
/// result is ready (not until you fetch it). The pool is driven by its
/// owner: it notices finished calls and starts waiting items during its own
/// member calls, and while get_next*() or map*() wait it starts them as
/// soon as an actor frees up. Not thread-safe: one owner at a time (like
/// Ray's); it may be moved to another thread, task or actor.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <ranges>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "weft/actor.hpp"
#include "weft/errors.hpp"
#include "weft/object_ref.hpp"
#include "weft/runtime.hpp"

namespace weft {

namespace detail {

/// One submitted item that has not started: calls fn(actor, value) once.
class pool_work {
public:
  virtual ~pool_work() = default;
  /// Starts the call on `actor`; returns its result cell (never null: an
  /// exception from fn comes back as a failed cell).
  virtual object_ptr start(const actor_ref& actor) noexcept = 0;
};

/// The type-independent bookkeeping of actor_pool (libactor/src/actor_pool.cpp).
/// Items are numbered in submission order.
class pool_core {
public:
  explicit pool_core(std::vector<actor_ref> actors);

  /// Queues an item producing a `type`; starts it at once if an actor is idle.
  std::uint64_t submit(std::unique_ptr<pool_work> work, const std::type_info& type);
  /// The sequence number the next submit() will get.
  std::uint64_t next_seq() const noexcept { return next_seq_; }

  /// Waits for item `seq` (which must not have been returned) and removes
  /// it; returns its done cell. Throws get_timeout_error at the deadline (the
  /// item stays), invalid_argument_error when the item is not a `type`.
  object_ptr take(std::uint64_t seq, std::int64_t deadline_ns, const std::type_info& type, const char* what);
  /// The oldest item not yet returned; throws weft::error when none is left.
  object_ptr take_oldest(std::int64_t deadline_ns, const std::type_info& type, const char* what);
  /// The first item of [lo, hi) to finish; throws weft::error when none is left.
  object_ptr take_first_done(std::uint64_t lo, std::uint64_t hi, std::int64_t deadline_ns, const std::type_info& type,
                             const char* what);
  /// Forgets the items of [lo, hi): waiting ones never start, running ones
  /// finish on their actors and their results are dropped.
  void discard(std::uint64_t lo, std::uint64_t hi);

  bool has_next() const noexcept { return !items_.empty(); }
  bool has_free();
  void push(actor_ref actor, const char* what);
  actor_ref pop_idle();
  std::size_t num_waiting() const noexcept { return waiting_.size(); }

private:
  struct item {
    const std::type_info* type = nullptr;
    std::unique_ptr<pool_work> work; // until started
    object_ptr cell;                 // once started
    actor_ref actor;                 // while running
  };

  /// Frees the actors of finished calls, then starts waiting items on idle actors.
  void progress();
  /// Blocks until one running call finishes or the deadline passes; false at the deadline.
  bool wait_for_any(std::int64_t deadline_ns);
  item& find(std::uint64_t seq, const char* what);
  void check_type(std::uint64_t seq, const item& it, const std::type_info& type, const char* what) const;
  object_ptr remove(std::uint64_t seq);
  [[noreturn]] void throw_timeout(std::uint64_t seq, const char* what) const;

  std::uint64_t next_seq_ = 0;
  std::map<std::uint64_t, item> items_; // submitted, not returned, not discarded
  std::deque<actor_ref> idle_;
  std::deque<std::uint64_t> waiting_;  // not started, in submission order
  std::vector<std::uint64_t> running_; // started, their actors still held
  std::deque<std::uint64_t> finished_; // done, in the order they were seen done
  struct orphan {
    object_ptr cell;
    actor_ref actor;
  };
  std::vector<orphan> orphans_; // discarded while running: actor comes back when done
};

/// Compile-time checks of fn for actor_pool<T> with values of type V.
template <class T, class F, class V>
constexpr bool check_pool_fn() {
  constexpr bool callable = std::is_invocable_v<F&, const actor_handle<T>&, V&&>;
  static_assert(callable, "weft::actor_pool: fn must be callable as fn(actor_handle<T>, value), e.g. "
                          "[](const weft::actor_handle<T>& a, V v) { return a.task(&T::m).remote(v); }");
  if constexpr (callable) {
    using ref_type = std::invoke_result_t<F&, const actor_handle<T>&, V&&>;
    constexpr bool returns_ref = is_object_ref_v<ref_type> && std::is_same_v<ref_type, std::remove_cvref_t<ref_type>>;
    static_assert(returns_ref, "weft::actor_pool: fn(actor, value) must return the weft::object_ref of an actor "
                               "call (return a.task(&T::m).remote(value);), not a value");
    return returns_ref;
  }
  return false;
}

/// R of the object_ref<R> that fn returns (void when fn does not fit).
template <class T, class F, class V, bool = check_pool_fn<T, F, V>()>
struct pool_result {
  using type = void;
};
template <class T, class F, class V>
struct pool_result<T, F, V, true> {
  using type = typename std::invoke_result_t<F&, const actor_handle<T>&, V&&>::value_type;
};

/// The typed item: fn and its value, until started.
template <class T, class F, class V>
class pool_work_impl final : public pool_work {
public:
  using ref_type = std::invoke_result_t<F&, const actor_handle<T>&, V&&>;
  using result_type = typename ref_type::value_type;

  pool_work_impl(F fn, V value) : fn_(std::move(fn)), value_(std::move(value)) {}

  object_ptr start(const actor_ref& actor) noexcept override {
    try {
      const actor_handle<T> h(actor);
      ref_type r = std::invoke(fn_, h, std::move(value_));
      if (!r.valid())
        throw invalid_argument_error("weft::actor_pool: fn(actor, value) returned an invalid object_ref "
                                     "(default-constructed or moved-from)");
      return object_ptr(r.cell());
    } catch (...) {
      auto* cell = new value_object<result_type>();
      object_ptr p(cell);
      cell->complete_error(std::current_exception());
      return p;
    }
  }

private:
  F fn_;
  V value_;
};

} // namespace detail

/// A pool of actors of class T; see the file comment. Not thread-safe: its
/// member functions must be called by one owner at a time. fn runs on the
/// owner, inside the pool's member calls; the calls fn makes are ordinary
/// actor calls.
template <class T>
class actor_pool {
public:
  /// A pool over `actors` (all idle). Does not block.
  explicit actor_pool(const std::vector<actor_handle<T>>& actors) : core_(refs_of(actors)) {}
  actor_pool(const actor_pool&) = delete;
  actor_pool& operator=(const actor_pool&) = delete;
  actor_pool(actor_pool&&) = default;
  actor_pool& operator=(actor_pool&&) = default;

  /// Schedules `fn(actor, value)` on the next idle actor, or queues it until
  /// one frees up. `fn` must return the object_ref of one actor call, e.g.
  /// `[](const weft::actor_handle<T>& a, int v) { return a.task(&T::m).remote(v); }`;
  /// it runs on the owner's thread, in submit() or a later pool call. An
  /// exception it throws becomes the item's result. Does not block.
  template <class F, class V>
  void submit(F fn, V&& value) {
    using value_t = std::decay_t<V>;
    if constexpr (detail::check_pool_fn<T, F, value_t>()) {
      using work = detail::pool_work_impl<T, F, value_t>;
      core_.submit(std::make_unique<work>(std::move(fn), value_t(std::forward<V>(value))),
                   typeid(typename work::result_type));
    }
  }

  /// True while submitted results are left to return. Does not block.
  bool has_next() const noexcept { return core_.has_next(); }

  /// True when an actor is idle and no item waits for one. Does not block.
  bool has_free() { return core_.has_free(); }

  /// The result of the oldest item not yet returned, as type R (the value
  /// type of fn's object_ref). Blocks until it is ready, up to `timeout`
  /// (unset: no limit), then throws get_timeout_error and keeps the item.
  /// Rethrows the item's error (task_error, actor_died_error, ...); either
  /// way the item is consumed and the pool goes on. Throws weft::error when
  /// nothing is left, invalid_argument_error when the item is not an R.
  template <class R>
  R get_next(std::optional<std::chrono::nanoseconds> timeout = std::nullopt) {
    return value_of<R>(core_.take_oldest(deadline(timeout), typeid(R), "get_next"));
  }

  /// Like get_next, but returns whichever result is ready first (in the
  /// order the pool saw them finish).
  template <class R>
  R get_next_unordered(std::optional<std::chrono::nanoseconds> timeout = std::nullopt) {
    return value_of<R>(core_.take_first_done(0, core_.next_seq(), deadline(timeout), typeid(R), "get_next_unordered"));
  }

  /// Submits fn(actor, v) for every v in `values` and returns their results
  /// in the order of `values` (a void fn: waits for all). Blocks. On the
  /// first error, in input order, its items still waiting are dropped (the
  /// running ones finish, results ignored) and the error is rethrown.
  /// Items submitted before are not touched.
  template <class F, std::ranges::input_range Values>
  auto map(F fn, Values&& values) {
    using R = result_of<F, Values>;
    const auto [lo, hi] = submit_all(fn, values);
    try {
      if constexpr (std::is_void_v<R>) {
        for (auto s = lo; s < hi; ++s)
          value_of<void>(core_.take(s, 0, typeid(void), "map"));
      } else {
        std::vector<R> out;
        out.reserve(static_cast<std::size_t>(hi - lo));
        for (auto s = lo; s < hi; ++s)
          out.push_back(value_of<R>(core_.take(s, 0, typeid(R), "map")));
        return out;
      }
    } catch (...) {
      core_.discard(lo, hi);
      throw;
    }
  }

  /// Like map, but the results come in the order they finish. On the
  /// first error to come back, the same clean-up and rethrow as map.
  template <class F, std::ranges::input_range Values>
  auto map_unordered(F fn, Values&& values) {
    using R = result_of<F, Values>;
    const auto [lo, hi] = submit_all(fn, values);
    try {
      if constexpr (std::is_void_v<R>) {
        for (auto s = lo; s < hi; ++s)
          value_of<void>(core_.take_first_done(lo, hi, 0, typeid(void), "map_unordered"));
      } else {
        std::vector<R> out;
        out.reserve(static_cast<std::size_t>(hi - lo));
        for (auto s = lo; s < hi; ++s)
          out.push_back(value_of<R>(core_.take_first_done(lo, hi, 0, typeid(R), "map_unordered")));
        return out;
      }
    } catch (...) {
      core_.discard(lo, hi);
      throw;
    }
  }

  /// Adds an actor (idle); a waiting item may start on it at once. Throws
  /// invalid_argument_error for an invalid handle or one already in the pool.
  void push(const actor_handle<T>& actor) { core_.push(actor.ref(), "push"); }

  /// Takes an idle actor out of the pool, or nullopt when none is idle.
  /// Does not block.
  std::optional<actor_handle<T>> pop_idle() {
    detail::actor_ref r = core_.pop_idle();
    if (!r)
      return std::nullopt;
    return actor_handle<T>(std::move(r));
  }

private:
  template <class F, class Values>
  using result_of = typename detail::pool_result<T, F, std::ranges::range_value_t<std::remove_cvref_t<Values>>>::type;

  static std::vector<detail::actor_ref> refs_of(const std::vector<actor_handle<T>>& actors) {
    std::vector<detail::actor_ref> refs;
    refs.reserve(actors.size());
    for (const auto& a : actors)
      refs.push_back(a.ref());
    return refs;
  }

  static std::int64_t deadline(const std::optional<std::chrono::nanoseconds>& timeout) {
    return timeout ? detail::deadline_after(*timeout) : 0;
  }

  template <class R>
  static R value_of(detail::object_ptr cell) {
    return weft::get(object_ref<R>(std::move(cell)));
  }

  template <class F, class Values>
  std::pair<std::uint64_t, std::uint64_t> submit_all(F& fn, Values& values) {
    const std::uint64_t lo = core_.next_seq();
    for (auto&& v : values)
      submit(fn, v);
    return {lo, core_.next_seq()};
  }

  detail::pool_core core_;
};

} // namespace weft
