/// @file
/// Actors: stateful workers (Ray's `@ray.remote` classes). Each actor is one
/// CAF actor that owns an instance of your class; every method call is a
/// message to it and returns an object_ref at once.
///
///     struct counter {
///       explicit counter(int start) : value(start) {}
///       int increment() { return ++value; }
///       int value;
///     };
///     const auto counter_r = weft::remote<counter>();
///     weft::actor_handle<counter> h = counter_r.remote(10);
///     weft::object_ref<int> r = h.task(&counter::increment).remote();
///
/// Calls through one handle run in submission order, one at a time (unless
/// max_concurrency > 1). Handles are reference counted: when the last copy
/// anywhere (including in pending tasks and calls) is gone, the actor
/// finishes its queued calls, runs its destructor and ends. See
/// docs/actors.md for the exact guarantees.
#pragma once

#include <array>
#include <cstddef>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include "weft/coro.hpp"
#include "weft/detail/actor_call.hpp"
#include "weft/detail/task.hpp"
#include "weft/object_ref.hpp"
#include "weft/remote_function.hpp"

namespace weft {

/// Who ends a non-killed actor: `owned` actors end when their last handle
/// is dropped or their owner actor dies; `detached` ones live until kill()
/// or shutdown() (Ray's lifetime="detached").
enum class lifetime { owned, detached };

/// Options of an actor (Ray's actor `.options(...)`). Unset fields keep the
/// per-class default given to weft::remote<T>(...), then the defaults listed
/// here. Field order for designated initializers: name, namespace_,
/// max_restarts, max_task_retries, max_concurrency, lifetime, num_cpus,
/// num_gpus, memory, resources, restart_on_exception, get_if_exists.
struct actor_options {
  /// Registers the actor under this name (unique within its namespace) for
  /// get_actor(). Default: unnamed.
  std::optional<std::string> name{};
  /// Namespace of the name. Default: "" (the job's namespace).
  std::optional<std::string> namespace_{};
  /// Restarts after a failure (constructor threw, kill with no_restart =
  /// false, or a method threw with restart_on_exception). Default 0; -1 forever.
  std::optional<int> max_restarts{};
  /// Resubmissions of a call interrupted by a failure. 0 (default):
  /// at-most-once, interrupted calls fail. > 0 or -1: at-least-once.
  std::optional<int> max_task_retries{};
  /// Calls in progress at once. Default 1. A call blocked in get() holds its
  /// slot; a coroutine method suspended at co_await does not.
  std::optional<int> max_concurrency{};
  std::optional<weft::lifetime> lifetime{};
  /// Resources the actor holds for its whole life. Default: none held (like
  /// Ray: one CPU to place it, zero while it lives). An actor whose request
  /// does not fit now waits until it does; one that never could is an error.
  std::optional<double> num_cpus{};
  std::optional<double> num_gpus{};
  std::optional<double> memory{};
  std::map<std::string, double> resources{};
  /// Erlang/Akka style: a method that throws also fails the actor (it
  /// restarts if max_restarts allows). Default false: Ray semantics, the
  /// exception goes to the caller and the actor lives on.
  std::optional<bool> restart_on_exception{};
  /// With a name: return the existing actor of that name instead of failing.
  std::optional<bool> get_if_exists{};
};

/// Fields set in `over` replace those of `base`.
actor_options merge(const actor_options& base, const actor_options& over);

/// Options of weft::kill().
struct kill_options {
  /// true: the actor is dead for good. false: it fails and restarts if
  /// max_restarts allows.
  bool no_restart = true;
};

template <class T>
class actor_handle;

namespace detail {
template <class M>
struct method_traits {
  static constexpr bool is_method = false;
};
#define WEFT_METHOD_TRAITS(QUALS)                                                                                      \
  template <class C, class R, class... P>                                                                              \
  struct method_traits<R (C::*)(P...) QUALS> {                                                                         \
    static constexpr bool is_method = true;                                                                            \
    using class_type = C;                                                                                              \
    using result_type = R;                                                                                             \
    using params = std::tuple<P...>;                                                                                   \
  };
WEFT_METHOD_TRAITS()
WEFT_METHOD_TRAITS(const)
WEFT_METHOD_TRAITS(noexcept)
WEFT_METHOD_TRAITS(const noexcept)
#undef WEFT_METHOD_TRAITS

/// The value type of the ref a method call returns: R, or T for coro<T>.
template <class R>
struct call_value {
  using type = R;
};
template <class T>
struct call_value<coro<T>> {
  using type = T;
};

/// The code address of a non-virtual member function (Itanium C++ ABI), or
/// null for a virtual one; only used to name methods in errors.
template <class M>
const void* method_address(M m) noexcept {
  if constexpr (sizeof(M) == 2 * sizeof(std::ptrdiff_t)) {
    std::ptrdiff_t words[2];
    std::memcpy(words, &m, sizeof words);
    if ((words[0] & 1) == 0)
      return reinterpret_cast<const void*>(words[0]);
  }
  return nullptr;
}

// ---- calls into libactor/src ----
/// A new actor: one handle count in the driver (`ref`), or in a worker
/// process the proxy of the cell that holds its handle in the driver.
struct created_actor {
  actor_ref ref;
  object_ptr via;
  actor_id id;
};
/// Creates an actor (in a worker: asks the driver to, and waits for its
/// answer). Throws on bad options.
/// `handle_ops`: handle_ops<T> (a worker's handle is a ref of that type).
created_actor create_actor(std::unique_ptr<actor_factory> factory, const actor_options& options, ref_ops_fn handle_ops);
/// Hands a built call to its actor (the call's `target` names it).
void submit_call(actor_call* call);
/// get_actor: a handle of the named actor, or none (ref and via null).
/// `type_fn`/`handle_ops` name T for the driver when called in a worker.
created_actor find_actor(const std::string& name, const std::string& ns, const std::type_info& type,
                         actor_type_fn type_fn, ref_ops_fn handle_ops);
/// `via`: a worker's handle (ref is null there).
void kill_actor(const actor_ref& ref, object_state* via, bool no_restart);
actor_id id_of(const actor_core* core) noexcept;

/// Worker processes: the wire form of a handle. In the driver, a new cell
/// holding `ref` travels as a ref (so the receiver keeps the actor alive);
/// in a worker, `via` (the proxy of such a cell) goes back as itself.
std::uint64_t encode_handle(const actor_ref& ref, object_state* via, ref_ops_fn ops);
/// The other way: in the driver, the handle a holder cell holds (`ref`);
/// in a worker, the holder's proxy (`via`).
void decode_handle(std::uint64_t holder, ref_ops_fn ops, actor_ref& ref, object_ptr& via);
/// ref_ops of a holder cell (one instance per T, to tell handle types apart).
/// (`type` names T; it also keeps the instances for different T apart,
/// even under a linker's identical-code folding.)
object_state* handle_holder_ops(ref_op op, const std::type_info& type);
template <class T>
object_state* handle_ops(ref_op op, object_state*, std::string_view, std::string*) {
  return handle_holder_ops(op, typeid(T));
}

/// The worker side of an actor method call: decode, call, encode.
template <class T, class M, class R, class... Params>
void run_remote_method(void* instance, const void* method, std::string_view in, std::string& out) {
  M m;
  std::memcpy(static_cast<void*>(&m), method, sizeof m);
  T& self = *static_cast<T*>(instance);
  decoding_scope decoding;
  std::tuple<std::remove_cvref_t<Params>...> args;
  std::apply([&in](auto&... a) { decode_each(in, a...); }, args);
  decoding.end();
  auto call = [&] { return std::apply([&](auto&... a) { return (self.*m)(std::move(a)...); }, args); };
  if constexpr (is_coro_v<R>) {
    R c = call();
    if (!c.step()) // (co_await waits in a worker: it never suspends there)
      throw error("weft: a coroutine actor method suspended in a worker process");
    if constexpr (std::is_void_v<typename call_value<R>::type>) {
      c.take();
    } else {
      auto result = c.take();
      hand_over_references result_owns_its_arrays; // the worker's copy goes away before the driver reads it
      keep_handed_in_ledger until_acknowledged;    // (the driver acknowledges a result's references)
      encode_each(out, result);
    }
  } else if constexpr (std::is_void_v<R>) {
    call();
  } else {
    R result = call();
    hand_over_references result_owns_its_arrays;
    keep_handed_in_ledger until_acknowledged;
    encode_each(out, result);
  }
}

template <class T, class M, class R, class ParamTuple, class StoredTuple>
class actor_call_impl;

/// The driver's side of a call a worker made on an actor that stays in the
/// driver: decodes the arguments and builds the typed call, as if the
/// driver had made it.
template <class T, class M, class R, class... Params>
actor_call* build_driver_call(const void* method, std::string_view in, ref_ops_fn* result_ops) {
  using value_t = typename call_value<R>::type;
  using call_type = actor_call_impl<T, M, R, std::tuple<Params...>, std::tuple<std::remove_cvref_t<Params>...>>;
  M m;
  std::memcpy(static_cast<void*>(&m), method, sizeof m);
  decoding_scope decoding;
  std::tuple<std::remove_cvref_t<Params>...> args;
  std::apply([&in](auto&... a) { decode_each(in, a...); }, args);
  decoding.end();
  *result_ops = &ref_ops<value_t>;
  return std::apply(
    [&](auto&... a) { return new call_type(m, object_ptr(new value_object<value_t>()), std::move(a)...); }, args);
}

template <class T, class M, class R, class... Params, class... Stored>
class actor_call_impl<T, M, R, std::tuple<Params...>, std::tuple<Stored...>> final : public actor_call {
  static constexpr std::size_t num_deps = (std::size_t{0} + ... + (resolves_v<Params, Stored> ? 1 : 0));
  using value_t = typename call_value<R>::type;
  /// Its arguments and result can be sent (always so for an actor that may
  /// live in a worker; for one that stays in the driver, a worker's call
  /// needs them to).
  static constexpr bool crosses = (is_serializable_v<Params> && ...) && is_serializable_v<value_t>;

public:
  template <class... Args>
  actor_call_impl(M method, object_ptr ret, Args&&... args) :
    actor_call(std::span<object_ptr>(&ret_, 1), std::span<object_state* const>(deps_.data(), num_deps),
               method_address(method)),
    method_(method),
    args_(std::forward<Args>(args)...),
    ret_(std::move(ret)) {
    std::size_t k = 0;
    collect(k, std::index_sequence_for<Params...>{});
  }

  call_status invoke(void* instance) override {
    T& self = *static_cast<T*>(instance);
    if constexpr (is_coro_v<R>) {
      coro_ = call(self, std::index_sequence_for<Params...>{});
      return resume_coroutine();
    } else if constexpr (std::is_void_v<R>) {
      call(self, std::index_sequence_for<Params...>{});
    } else {
      cell().emplace(call(self, std::index_sequence_for<Params...>{}));
    }
    return call_status::finished;
  }

  call_status resume_coroutine() override {
    if constexpr (is_coro_v<R>) {
      if (!coro_.step())
        return call_status::suspended;
      struct reset_after {
        R& c;
        ~reset_after() { c.reset(); }
      } guard{coro_};
      if constexpr (std::is_void_v<value_t>)
        coro_.take();
      else
        cell().emplace(coro_.take());
    }
    return call_status::finished;
  }

  void drop_coroutine() noexcept override {
    if constexpr (is_coro_v<R>)
      coro_.reset();
  }

  actor_method_invoker remote_invoker() const noexcept override {
    if constexpr (driver_only_actor<T>::value)
      return nullptr;
    else
      return &run_remote_method<T, M, R, Params...>;
  }
  bool is_coroutine() const noexcept override { return is_coro_v<R>; }
  const void* method_bytes() const noexcept override { return &method_; }
  void encode_arguments(std::string& out) const override {
    if constexpr (crosses)
      encode_args(out, std::index_sequence_for<Params...>{});
    else
      (void)out;
  }
  void decode_result(std::string_view in) override {
    if constexpr (crosses && !std::is_void_v<value_t>)
      cell().emplace(decode_value<value_t>(in));
    else
      (void)in;
  }
  driver_call_builder driver_builder() const noexcept override {
    if constexpr (driver_only_actor<T>::value && crosses)
      return &build_driver_call<T, M, R, Params...>;
    else
      return nullptr;
  }

private:
  template <std::size_t... I>
  void encode_args(std::string& out, std::index_sequence<I...>) const {
    encode_each(out, encoded_argument<Params>(std::get<I>(args_))...);
  }

  value_object<value_t>& cell() { return *static_cast<value_object<value_t>*>(ret_.get()); }

  template <std::size_t... I>
  R call(T& self, std::index_sequence<I...>) const {
    return (self.*method_)(pass_argument<Params>(std::get<I>(args_))...);
  }

  template <std::size_t... I>
  void collect(std::size_t& k, std::index_sequence<I...>) {
    (
      [&] {
        if constexpr (resolves_v<Params, Stored>)
          deps_[k++] = std::get<I>(args_).cell();
      }(),
      ...);
  }

  M method_;
  std::tuple<Stored...> args_;
  object_ptr ret_;
  std::array<object_state*, num_deps == 0 ? 1 : num_deps> deps_{};
  [[no_unique_address]] std::conditional_t<is_coro_v<R>, R, std::tuple<>> coro_{};
};

} // namespace detail

/// A method of an actor bound to a handle: `.remote(args...)` calls it.
/// Cheap to copy.
template <class T, class M>
class actor_method {
  using traits = detail::method_traits<M>;
  using R = typename traits::result_type;
  using params = typename traits::params;

public:
  using result_type = object_ref<typename detail::call_value<R>::type>;

  actor_method(detail::actor_ref target, M method, detail::object_ptr via = {}) :
    target_(std::move(target)),
    method_(method),
    via_(std::move(via)) {}

  /// Submits one call. Returns at once. Thread-safe. Calls made through
  /// one handle run in the order they were made. Throws
  /// invalid_argument_error for an invalid handle or object_ref argument;
  /// a call on a dead actor returns a ref whose get() throws actor_died_error.
  template <class... Args>
  result_type remote(Args&&... args) const {
    return remote_impl(static_cast<params*>(nullptr), std::forward<Args>(args)...);
  }

private:
  template <class... Params, class... Args>
  result_type remote_impl(std::tuple<Params...>*, Args&&... args) const {
    constexpr bool count_ok = sizeof...(Args) == sizeof...(Params);
    static_assert(count_ok, "weft: wrong number of arguments in .remote(...): pass exactly the method's parameters");
    if constexpr (count_ok) {
      constexpr bool types_ok = check_all<std::tuple<Params...>, Args...>(std::index_sequence_for<Args...>{});
      if constexpr (types_ok) {
        using value_t = typename detail::call_value<R>::type;
        using call_type =
          detail::actor_call_impl<T, M, R, std::tuple<Params...>, std::tuple<detail::stored_t<Params, Args>...>>;
        detail::object_ptr cell(new detail::value_object<value_t>());
        result_type ref(cell);
        auto* call = new call_type(method_, std::move(cell), std::forward<Args>(args)...);
        call->target = target_;
        call->via = via_;
        detail::submit_call(call);
        return ref;
      }
    }
    return result_type{};
  }

  template <class ParamTuple, class... Args, std::size_t... I>
  static constexpr bool check_all(std::index_sequence<I...>) {
    return (detail::check_argument<I, std::tuple_element_t<I, ParamTuple>, Args>() && ...);
  }

  detail::actor_ref target_;
  M method_;
  detail::object_ptr via_;
};

/// A reference to an actor (Ray's ActorHandle). A value: copy it, pass it to
/// tasks and actor methods, return it from them. Each copy keeps a
/// non-detached actor alive. Copies may be used from any thread.
template <class T>
class actor_handle {
public:
  /// An invalid handle (valid() is false).
  actor_handle() noexcept = default;
  /// Internal: adopt a counted reference.
  explicit actor_handle(detail::actor_ref ref) noexcept : ref_(std::move(ref)) {}

  /// The method `m` bound to this actor; `.remote(args...)` calls it.
  /// `m` is a member function of T or of one of its bases (virtual
  /// functions dispatch to T's override). For an overloaded method, pick
  /// one with a cast: `static_cast<int (counter::*)(int)>(&counter::add)`.
  template <class M>
  actor_method<T, M> task(M m) const {
    using traits = detail::method_traits<M>;
    static_assert(traits::is_method, "weft: actor_handle<T>::task(m) needs a pointer to a member function of T, "
                                     "e.g. h.task(&counter::increment)");
    if constexpr (traits::is_method) {
      using C = typename traits::class_type;
      static_assert(std::is_base_of_v<C, T>,
                    "weft: this method belongs to another class: task(&C::m) needs C to be the actor's class "
                    "or one of its bases");
      using R = typename traits::result_type;
      detail::check_result<typename detail::call_value<R>::type>();
      if constexpr (!detail::driver_only_actor<T>::value)
        (void)detail::require_serializable<std::remove_cvref_t<typename detail::call_value<R>::type>>::value;
      check_params(static_cast<typename traits::params*>(nullptr));
    }
    return actor_method<T, M>(ref_, m, via_);
  }

  bool valid() const noexcept { return ref_ || via_; }
  /// The actor's id (the same across restarts); actor_id{} if invalid.
  actor_id id() const noexcept { return ref_ ? detail::id_of(ref_.get()) : via_ ? via_id_ : actor_id{}; }

  /// Internal: the counted reference (null in a worker process).
  const detail::actor_ref& ref() const noexcept { return ref_; }
  /// Internal, in a worker process: the proxy of the cell that holds the
  /// handle in the driver.
  detail::object_state* via() const noexcept { return via_.get(); }
  /// Internal: a worker's handle.
  actor_handle(detail::object_ptr via, actor_id id) noexcept : via_(std::move(via)), via_id_(id) {}

  /// Handles of the same actor.
  friend bool operator==(const actor_handle& a, const actor_handle& b) noexcept { return a.id() == b.id(); }

private:
  template <class... P>
  static void check_params(std::tuple<P...>*) {
    (detail::check_parameter<P>(), ...);
    if constexpr (!detail::driver_only_actor<T>::value)
      ((void)detail::require_serializable<std::remove_cvref_t<P>>::value, ...);
  }

  detail::actor_ref ref_;
  detail::object_ptr via_;
  actor_id via_id_{};
};

namespace detail {
/// A handle stays a handle when it crosses a process (and keeps its actor alive).
template <class T>
struct serializable_impl<actor_handle<T>> : std::true_type {};
} // namespace detail

/// An actor_handle passed between the driver and a worker process: it
/// stays a handle to the same actor, which it keeps alive; a worker calls
/// the actor through the driver.
template <class Archive, class T>
void serialize(Archive& ar, actor_handle<T>& h, const unsigned int) {
  if constexpr (Archive::is_saving::value) {
    std::uint64_t holder = h.valid() ? detail::encode_handle(h.ref(), h.via(), &detail::handle_ops<T>) : 0;
    std::uint64_t id = h.id().value;
    ar << holder << id;
  } else {
    std::uint64_t holder = 0, id = 0;
    ar >> holder >> id;
    if (holder == 0) {
      h = actor_handle<T>();
      return;
    }
    detail::actor_ref ref;
    detail::object_ptr via;
    detail::decode_handle(holder, &detail::handle_ops<T>, ref, via);
    h = ref ? actor_handle<T>(std::move(ref)) : actor_handle<T>(std::move(via), actor_id{id});
  }
}

static_assert(std::is_nothrow_move_constructible_v<actor_handle<int>>);
static_assert(std::is_copy_constructible_v<actor_handle<int>>);

/// An actor class (Ray's `@ray.remote class`): `.remote(args...)` starts an
/// actor. Cheap to copy; immutable.
template <class T>
class actor_class {
public:
  explicit actor_class(actor_options defaults = {}) : defaults_(std::move(defaults)) {}

  /// The same class with some options replaced (Ray's `.options(...)`).
  actor_class options(const actor_options& over) const { return actor_class(merge(defaults_, over)); }

  /// Starts an actor: T is constructed from copies of `args` (kept for
  /// restarts) on the actor. Returns at once; a constructor that throws
  /// fails the actor (calls then fail with actor_died_error, or it
  /// restarts). Throws invalid_argument_error for bad options or a name
  /// already taken, resource_error for a request no node can satisfy.
  template <class... Args>
  actor_handle<T> remote(Args&&... args) const {
    constexpr bool ok = std::is_constructible_v<T, const std::decay_t<Args>&...>;
    static_assert(ok, "weft: remote<T>().remote(args...): T cannot be constructed from these arguments (each is "
                      "stored as a copy, so the constructor gets const lvalues)");
    static_assert((std::is_copy_constructible_v<std::decay_t<Args>> && ...),
                  "weft: actor constructor arguments must be copyable: they are kept to re-run the "
                  "constructor on restart");
    if constexpr (!detail::driver_only_actor<T>::value) // they are sent to the actor's worker process
      ((void)detail::require_serializable<std::decay_t<Args>>::value, ...);
    if constexpr (ok) {
      auto factory =
        std::make_unique<detail::actor_factory_impl<T, std::decay_t<Args>...>>(std::forward<Args>(args)...);
      detail::created_actor c = detail::create_actor(std::move(factory), defaults_, &detail::handle_ops<T>);
      if (c.ref)
        return actor_handle<T>(std::move(c.ref));
      return actor_handle<T>(std::move(c.via), c.id);
    }
    return actor_handle<T>{};
  }

  const actor_options& default_options() const noexcept { return defaults_; }

private:
  actor_options defaults_;
};

/// Makes T an actor class, optionally with per-class default options.
template <class T>
requires std::is_class_v<T> actor_class<T> remote(actor_options defaults = {}) {
  static_assert(!std::is_abstract_v<T>, "weft::remote<T>(): T is abstract; name the concrete class");
  return actor_class<T>(std::move(defaults));
}

/// The live actor registered under `name` in `ns`, or nullopt. Throws
/// invalid_argument_error for an empty name, or when the actor is not a T.
template <class T>
std::optional<actor_handle<T>> get_actor(const std::string& name, const std::string& ns = "") {
  detail::created_actor c = detail::find_actor(name, ns, typeid(T), &detail::actor_type_of<T>, &detail::handle_ops<T>);
  if (c.ref)
    return actor_handle<T>(std::move(c.ref));
  if (c.via)
    return actor_handle<T>(std::move(c.via), c.id);
  return std::nullopt;
}

/// Ends the actor now: its running, queued and later calls fail with
/// actor_died_error, and its name is free again once kill() returns. With
/// no_restart = false it fails instead, and restarts if max_restarts allows.
/// A call that is busy computing finishes its computation, but its result
/// is discarded. Does not wait for the actor to finish. Idempotent.
template <class T>
void kill(const actor_handle<T>& h, kill_options opts = {}) {
  detail::kill_actor(h.ref(), h.via(), opts.no_restart);
}

/// How an actor ended for good.
struct actor_exit {
  actor_id id;
  /// true: it exited with exit_actor() or its last handle was dropped.
  /// false: killed, out of restarts, its owner died, or the runtime shut down.
  bool normal = false;
  /// Why, in words ("killed by kill()", ...).
  std::string cause;
};

namespace detail {
void monitor_actor(const actor_ref& ref, object_state* via, std::function<void(const actor_exit&)> fn);
}

/// Calls `fn` once, when the actor is dead for good (at once if it already
/// is); restarts do not count. `fn` runs on a weft thread and must not
/// block. Does not keep the actor alive. Thread-safe. Inside a worker
/// process, `fn` runs in that worker (the driver watches the actor for it)
/// and this call waits for the driver to register it.
template <class T>
void monitor(const actor_handle<T>& h, std::function<void(const actor_exit&)> fn) {
  detail::monitor_actor(h.ref(), h.via(), std::move(fn));
}

/// Inside an actor method: the actor exits gracefully once this call
/// returns (its result is delivered); later calls fail with
/// actor_died_error and it is not restarted. Throws weft::error outside
/// an actor method.
void exit_actor();

/// What the running code can learn about where it runs (Ray's runtime context).
class current_context {
public:
  /// Inside an actor: true when this incarnation is a restart.
  bool was_current_actor_restarted() const;
  /// The actor this code runs on, if any.
  std::optional<actor_id> actor() const;
  /// The actor's name ("" if unnamed or not in an actor).
  std::string actor_name() const;
  /// The actor's namespace ("" if not in an actor).
  std::string actor_namespace() const;
};

/// The context of the calling code. Cheap; thread-safe.
current_context runtime_context();

} // namespace weft
