// Private: the actor runtime. One actor_system per runtime (a runtime
// service, made on first use, stopped first at shutdown).
//
//   actor_core   what a handle points to: identity, options, state, the
//                CAF actor of the current incarnation. Outlives restarts.
//   incarnation  one life of the actor: a CAF event-based actor that owns
//                the user's object and runs its calls on fibers.
//   supervisor   a CAF actor that monitors every incarnation; on its down
//                message it restarts the actor or finishes it for good.
//
// Lock order: actor_core::mtx before actor_system::mtx.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <caf/actor.hpp>

#include "../../src/fiber.hpp"
#include "../../src/runtime.hpp"
#include "weft/actor.hpp"

namespace weft::detail {

class actor_system;
struct incarnation;

enum class actor_state : std::uint8_t {
  starting, ///< an incarnation is being set up (resources, constructor)
  alive,    ///< constructed, taking calls
  failing,  ///< the incarnation is going away; calls wait in `parked`
  dead      ///< for good; calls fail at once
};

class actor_core {
public:
  void add_ref() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  void release() noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1)
      delete this;
  }

  /// "counter actor#3 'c1'" -- used in every message about the actor.
  std::string describe() const;
  /// The error for a call on this (dead) actor. Caller holds mtx.
  std::exception_ptr death_error_locked() const;

  actor_system* sys = nullptr;
  actor_id id;
  std::string class_name;
  std::unique_ptr<actor_factory> factory;
  /// Worker processes: each incarnation lives in a worker of its own.
  bool remote = false;

  // Options, resolved at creation.
  std::string name;
  std::string ns;
  bool named = false;
  int max_restarts = 0;
  int max_task_retries = 0;
  int max_concurrency = 1;
  bool detached = false;
  bool restart_on_exception = false;
  bool holds_resources = false;
  resource_demand demand;
  std::vector<int> gpu_ids; ///< also names its scheduler reservation

  std::atomic<std::int64_t> handles{0};
  /// Calls sent to an incarnation so far; an idle incarnation watches it
  /// while it spins for a synchronous caller's next call.
  std::atomic<std::uint64_t> sent{0};
  std::uint64_t received = 0; ///< call messages taken by incarnations (their thread only)
  /// Set by kill(): results of calls still running are discarded.
  std::atomic<bool> killed_now{false};

  std::mutex mtx;
  actor_state state = actor_state::starting;
  caf::actor current;               ///< the live incarnation (starting/alive)
  std::vector<actor_call*> parked;  ///< submitted while failing, in order
  std::vector<actor_call*> carried; ///< handed on by the incarnation that died
  int restarts = 0;
  std::string cause;       ///< why it is failing or dead
  bool final_kill = false; ///< kill(no_restart) or exit_actor: never restart
  bool resources_granted = false;
  bool finalized = false;            ///< dead and cleaned up
  std::vector<actor_core*> children; ///< owned actors (strong refs)
  bool normal_exit = false;          ///< exit_actor() or last handle dropped
  /// (id, callback); id 0 for the driver's own, else a worker's (which
  /// the driver unregisters by id when that worker dies first).
  std::vector<std::pair<std::uint64_t, std::function<void(const actor_exit&)>>> monitors;

private:
  ~actor_core();
  std::atomic<std::uint32_t> refs_{1};
};

/// Intrusive strong pointer to a core (not a handle: does not keep the actor alive).
class core_ptr {
public:
  core_ptr() noexcept = default;
  explicit core_ptr(actor_core* c) noexcept : p_(c) {
    if (p_)
      p_->add_ref();
  }
  core_ptr(const core_ptr& o) noexcept : core_ptr(o.p_) {}
  core_ptr(core_ptr&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  core_ptr& operator=(core_ptr o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  ~core_ptr() {
    if (p_)
      p_->release();
  }
  actor_core* get() const noexcept { return p_; }
  actor_core* operator->() const noexcept { return p_; }

private:
  actor_core* p_ = nullptr;
};

class actor_system final : public runtime_service {
public:
  explicit actor_system(runtime& rt);
  ~actor_system() override;

  /// The system of the running runtime, made on first use. Throws
  /// not_initialized_error / runtime_shutdown_error.
  static actor_system& get(const char* what);

  void stop() override;

  actor_ref create(std::unique_ptr<actor_factory> factory, const actor_options& opts);
  /// Touches only the call's core, so it is safe on a handle that outlived
  /// its runtime (the actor is dead then and the call fails).
  static void submit(actor_call* call);
  actor_ref find(const std::string& name, const std::string& ns, const std::type_info& type);
  void kill(actor_core* core, bool no_restart, const std::string& cause);

  /// A handle count reached zero. Touches only the core (handles may
  /// outlive the runtime).
  static void unreferenced(actor_core* core);
  /// The supervisor saw an incarnation of `core` end.
  void incarnation_ended(actor_core* core);

  runtime& rt() noexcept { return rt_; }
  fiber* take_fiber();
  void return_fiber(fiber* f);
  std::uint64_t generation() const noexcept { return generation_; }

  /// Spawns an incarnation of `core` that first runs `initial` (in order).
  caf::actor spawn_incarnation(actor_core* core, std::vector<actor_call*> initial, bool restarted);

private:
  void finish_for_good(actor_core* core, std::vector<actor_call*> to_fail);
  void erase_name_locked(actor_core* core);

  runtime& rt_;
  std::uint64_t generation_;
  caf::actor supervisor_;
  std::atomic<bool> stopping_{false};

  std::mutex mtx_;
  std::map<std::pair<std::string, std::string>, actor_core*> names_; // (ns, name)
  std::unordered_map<std::uint64_t, actor_core*> live_;              // strong refs
  std::atomic<std::int64_t> live_incarnations_{0};
  std::atomic<std::uint64_t> next_id_{1};

  std::mutex fibers_mtx_;
  std::vector<std::unique_ptr<fiber>> all_fibers_;

  friend struct incarnation;
};

} // namespace weft::detail
