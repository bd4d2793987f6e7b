/// @file
/// Supervision trees in the Erlang/OTP sense. A supervisor is an actor that
/// starts its children (actors, or other supervisors) in order from child
/// specs, watches them, and restarts them by a strategy when they end:
///
///     weft::supervisor sup = weft::supervisor::start(
///       {.strategy = weft::restart_strategy::one_for_all, .intensity = 3, .period = 10s},
///       {weft::worker_spec<cache>("cache", 1024),
///        weft::worker_spec<server>("server", 8080),
///        weft::supervisor::spec("pool", {}, {weft::worker_spec<job>("job", 1)})});
///     std::optional<weft::actor_handle<server>> s = sup.child<server>("server");
///
/// Strategies: one_for_one restarts the child that ended; one_for_all
/// stops the others (in reverse start order) and starts them all again (in
/// start order); rest_for_one does the same for the ended child and the
/// ones started after it (children that were not running stay stopped;
/// temporary ones stopped this way are forgotten). Restart types: permanent
/// children are always restarted, transient ones only after an abnormal end
/// (kill, a method that throws with restart_on_exception, a constructor
/// that throws; not exit_actor()), temporary ones never (and are forgotten
/// once they end).
/// More than `intensity` restarts within `period` and the supervisor stops
/// its children in reverse start order and fails itself, so a parent
/// supervisor sees an abnormal end and applies its own strategy.
///
/// The supervisor works one request at a time: while it stops or starts
/// children, calls such as which_children() wait. Children are owned by the
/// supervisor's actor: when it ends, they end.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "weft/actor.hpp"
#include "weft/errors.hpp"

namespace weft {

namespace detail {
class supervisor_actor;
template <>
struct driver_only_actor<supervisor_actor> : std::true_type {};
[[noreturn]] void throw_wrong_child_type(const std::string& id, const std::type_info& has, const std::type_info& want);
} // namespace detail

/// Which children a supervisor restarts when one of them has to be restarted.
enum class restart_strategy { one_for_one, one_for_all, rest_for_one };

/// When a child that ended is restarted.
enum class restart_type {
  permanent, ///< always
  transient, ///< only after an abnormal end (not exit_actor())
  temporary  ///< never; its spec is removed once it ends
};

/// What a child is (reported by which_children() and count_children()).
enum class child_type { worker, supervisor };

/// A running child, whatever its class: a counted actor handle plus its type.
/// Cheap to copy; copies may be used from any thread. Converts implicitly
/// from any actor_handle<T>, so a start function can return the handle.
class child_ref {
public:
  /// An invalid ref (valid() is false).
  child_ref() noexcept = default;
  template <class T>
  child_ref(const actor_handle<T>& h) : ref_(h.ref()), type_(&typeid(T)) {} // NOLINT: implicit on purpose
  /// Internal: a counted reference and its class.
  child_ref(detail::actor_ref ref, const std::type_info& type) noexcept : ref_(std::move(ref)), type_(&type) {}

  bool valid() const noexcept { return static_cast<bool>(ref_); }
  /// The actor's id; actor_id{} if invalid.
  actor_id id() const noexcept { return ref_ ? detail::id_of(ref_.get()) : actor_id{}; }
  /// The actor's class; typeid(void) if invalid.
  const std::type_info& type() const noexcept { return *type_; }
  /// The typed handle, or nullopt if invalid or the actor is not a T. Does
  /// not block.
  template <class T>
  std::optional<actor_handle<T>> as() const {
    if (!ref_ || *type_ != typeid(T))
      return std::nullopt;
    return actor_handle<T>(ref_);
  }
  /// Internal: the counted reference.
  const detail::actor_ref& ref() const noexcept { return ref_; }

  friend bool operator==(const child_ref& a, const child_ref& b) noexcept { return a.ref_.get() == b.ref_.get(); }

private:
  detail::actor_ref ref_;
  const std::type_info* type_ = &typeid(void);
};

/// How to start and look after one child (OTP's child spec).
struct child_spec {
  /// Names the child within its supervisor; non-empty and unique there.
  std::string id{};
  /// Creates the child actor and returns its handle. Runs on the
  /// supervisor's actor (so the child is owned by it), at start and at every
  /// restart; should return quickly. A child actor should keep
  /// max_restarts = 0 (the default): its supervisor restarts it (restarts
  /// an actor does by itself are invisible to its supervisor). A start that
  /// throws, or whose actor's constructor throws, is a failed start.
  std::function<child_ref()> start{};
  restart_type restart = restart_type::permanent;
  child_type type = child_type::worker;
  /// How long the supervisor waits for the child to end once it stops it
  /// (workers are killed at once: this only bounds a call that is still
  /// computing). Unset: 5 s for a worker, no limit for a supervisor.
  std::optional<std::chrono::milliseconds> shutdown{};
};

/// A spec for a worker of class T, started with copies of `args` (every
/// restart constructs a fresh T from the same arguments). Permanent; set
/// `.restart` on the result for another restart type.
template <class T, class... Args>
child_spec worker_spec(std::string id, Args... args) {
  return child_spec{.id = std::move(id), .start = [args...]() -> child_ref { return remote<T>().remote(args...); }};
}

/// A supervisor's flags (OTP's sup_flags), filled with designated
/// initializers. The defaults are OTP's.
struct supervisor_flags {
  restart_strategy strategy = restart_strategy::one_for_one;
  /// Restarts allowed within `period`; one more and the supervisor gives up.
  int intensity = 1;
  std::chrono::milliseconds period = std::chrono::seconds(5);
};

/// Where a child is.
enum class child_status {
  running,    ///< `ref` is the live actor
  restarting, ///< its restart failed and is being tried again
  undefined   ///< not running: ended and not restarted, or terminate_child()
};

/// One line of which_children().
struct child_info {
  std::string id{};
  child_status status = child_status::undefined;
  /// The live child; valid only when status is running.
  child_ref ref{};
  child_type type = child_type::worker;
};

/// What count_children() reports (OTP's count_children).
struct child_counts {
  int specs = 0;       ///< children, running or not
  int active = 0;      ///< running children
  int supervisors = 0; ///< children of type supervisor, running or not
  int workers = 0;     ///< children of type worker, running or not
};

/// A handle to a running supervisor (itself an actor). Cheap to copy;
/// copies may be used from any thread. Each copy keeps the supervisor
/// alive; when the last one (and the parent's reference, for a nested
/// supervisor) is gone, the supervisor ends and kills its children.
/// Every call that asks the supervisor something is a message to it and
/// blocks until it answers; these calls throw actor_died_error when the
/// supervisor is dead, not_initialized_error without a runtime.
class supervisor {
public:
  /// An invalid handle (valid() is false).
  supervisor() noexcept = default;

  /// Starts a supervisor and its children, in order, each started (its
  /// constructor finished) before the next. Blocks until they all are.
  /// If one fails to start, the ones already started are stopped in
  /// reverse order and this throws weft::error naming it. Throws
  /// invalid_argument_error for bad flags or specs. Thread-safe; callable
  /// from actor methods (the supervisor is then owned by that actor, like
  /// any actor it creates), and from a child spec's start function to nest.
  /// Throws weft::error in a worker process: supervisors run in the driver,
  /// where the start functions (closures of this process) cannot go.
  static supervisor start(const supervisor_flags& flags, std::vector<child_spec> children);

  /// A child spec that starts a nested supervisor (type supervisor, no
  /// shutdown limit). Does not block.
  static child_spec spec(std::string id, supervisor_flags flags, std::vector<child_spec> children,
                         restart_type restart = restart_type::permanent);

  /// The supervisor behind a child_ref (from which_children()), or nullopt
  /// when it is not one. Does not block.
  static std::optional<supervisor> from(const child_ref& ref);

  bool valid() const noexcept { return h_.valid(); }
  /// The supervisor's actor id; actor_id{} if invalid.
  actor_id id() const noexcept { return h_.id(); }
  /// The underlying actor handle, for weft::monitor() and weft::kill().
  const actor_handle<detail::supervisor_actor>& handle() const noexcept { return h_; }
  /// As a child of another supervisor (for a spec's start function).
  operator child_ref() const; // NOLINT: implicit on purpose

  /// The children in start order. Blocks. Thread-safe.
  std::vector<child_info> which_children() const;
  /// Counts of the children. Blocks. Thread-safe.
  child_counts count_children() const;
  /// The running child `id`, or nullopt (no such child, or not running).
  /// Its handle changes on every restart. Blocks. Thread-safe.
  std::optional<child_ref> child_ref_of(const std::string& id) const;
  /// The running child `id` as an actor_handle<T>, or nullopt. Throws
  /// invalid_argument_error when it is not a T. Blocks. Thread-safe.
  template <class T>
  std::optional<actor_handle<T>> child(const std::string& id) const {
    std::optional<child_ref> r = child_ref_of(id);
    if (!r)
      return std::nullopt;
    if (r->type() != typeid(T))
      detail::throw_wrong_child_type(id, r->type(), typeid(T));
    return r->as<T>();
  }

  /// Adds a child at the end and starts it; returns it. Throws
  /// invalid_argument_error for a bad spec or an id in use, weft::error when
  /// it fails to start (its spec is not kept). Blocks. Thread-safe.
  child_ref start_child(child_spec spec) const;
  /// Stops the running child `id` and does not restart it; its spec stays
  /// (a temporary child's is removed). Throws invalid_argument_error for an
  /// unknown id. Blocks until the child has ended. Thread-safe.
  void terminate_child(const std::string& id) const;
  /// Starts the stopped child `id` again and returns it. Throws
  /// invalid_argument_error for an unknown or running id, weft::error when
  /// it fails to start. Blocks. Thread-safe.
  child_ref restart_child(const std::string& id) const;
  /// Removes the stopped child `id`'s spec. Throws invalid_argument_error
  /// for an unknown or running id. Blocks. Thread-safe.
  void delete_child(const std::string& id) const;

  /// Stops the children in reverse start order, then the supervisor (a
  /// normal end). Blocks until the supervisor has ended; a no-op on one
  /// that already has. Thread-safe. On a nested supervisor, its parent sees
  /// a normal end (and restarts a permanent one): use the parent's
  /// terminate_child() to stop a subtree for good.
  void stop() const;

  friend bool operator==(const supervisor& a, const supervisor& b) noexcept { return a.h_ == b.h_; }

private:
  explicit supervisor(actor_handle<detail::supervisor_actor> h) noexcept : h_(std::move(h)) {}
  actor_handle<detail::supervisor_actor> h_;
};

static_assert(std::is_nothrow_move_constructible_v<child_ref>);
static_assert(std::is_copy_constructible_v<child_ref>);
static_assert(std::is_nothrow_move_constructible_v<supervisor>);
static_assert(std::is_copy_constructible_v<supervisor>);

} // namespace weft
