// Private: waiting for several cells at once, from an OS thread (futex) or
// from a task's fiber (suspend, CPUs given back).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "weft/detail/object_state.hpp"
#include "weft/detail/task.hpp"

namespace weft::detail {

/// Collects completions of a set of cells and wakes one waiter. Reference
/// counted: each registered cell node holds a reference until it fires, so
/// a waiter that timed out may leave safely.
class blocker {
public:
  /// Room for `capacity` watched cells (watch() must not be called more often).
  explicit blocker(std::size_t capacity);

  void add_ref() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  void release() noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1)
      delete this;
  }

  /// Registers on `cell`; false if it was already done (nothing registered).
  bool watch(object_state* cell);
  std::uint32_t completed() const noexcept { return completed_.load(std::memory_order_acquire); }
  bool any_failed() const noexcept { return any_failed_.load(std::memory_order_acquire); }
  std::uint32_t epoch() const noexcept { return epoch_.load(std::memory_order_seq_cst); }

  /// Blocks the caller (thread or task fiber) until the epoch moves past
  /// `seen` or `deadline_ns` passes (0: never).
  void park(std::uint32_t seen, std::int64_t deadline_ns);

  /// Something changed (a cell completed, a timer fired): wake the waiter.
  void notify() noexcept;
  /// Called by the fiber's host after the waiting fiber has yielded:
  /// `resume(arg)` runs once, on the next notify() past `seen` (or at once
  /// if that already happened).
  using resume_fn = void (*)(void*) noexcept;
  void arm_fiber(resume_fn resume, void* arg, std::uint32_t seen) noexcept;
  /// Takes back an armed fiber wake-up; true if it had not fired yet.
  bool disarm() noexcept;

private:
  ~blocker() = default;
  struct node final : completion_waiter {
    blocker* owner = nullptr;
    void on_complete(object_state& obj) noexcept override;
  };
  enum parked_kind : int { none = 0, thread = 1, fiber_task = 2 };

  std::atomic<std::uint32_t> refs_{1};
  std::atomic<std::uint32_t> epoch_{0};
  std::atomic<std::uint32_t> completed_{0};
  std::atomic<bool> any_failed_{false};
  std::atomic<int> parked_{none};
  resume_fn resume_ = nullptr;
  void* resume_arg_ = nullptr;
  std::vector<node> nodes_;
};

} // namespace weft::detail
