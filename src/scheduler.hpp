// Private: the local node's resource accounting and task queues.
//
// A task is queued only once its object_ref arguments are ready; it then
// waits in the queue of its resource shape until an executor finds its
// resources free and takes them. Tasks submitted from inside tasks run
// depth-first (newest first), tasks from outside in submission order, and
// blocked tasks that can go on again come before both. One mutex guards it
// all; executors that find nothing to do park here and are woken on demand.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "futex.hpp"
#include "weft/config.hpp"
#include "weft/detail/task.hpp"
#include "weft/options.hpp"

namespace weft::detail {

/// What the local node has.
struct node_resources {
  std::int64_t cpu = 0;
  std::int64_t gpu = 0; // whole GPUs × resource_unit
  std::int64_t memory = 0;
  std::vector<std::string> custom_names;
  std::vector<std::int64_t> custom;

  /// Validates `cfg` and fills in defaults (hardware CPUs, 70% of RAM).
  static node_resources from_config(const config& cfg);
  int custom_index(const std::string& name) const;
  /// "CPU=2, GPU=0, memory=17179869184, disk=4" (memory in bytes)
  std::string describe() const;
};

/// Validates options and turns them into a demand. Throws
/// invalid_argument_error naming the field, or resource_error when the node
/// could never satisfy it. `task_name` ("task 'f'") and `options_type` name
/// the requester and its options in messages.
resource_demand resolve_demand(const task_options& opts, const node_resources& node, const std::string& task_name,
                               const std::string& options_type = "task_options");

/// Validates the non-resource fields (max_retries, max_calls).
void validate_task_options(const task_options& opts);

class scheduler {
public:
  /// `wake` is called (outside the lock) to wake a parked executor.
  scheduler(node_resources node, std::function<void(void*)> wake);

  const node_resources& node() const noexcept { return node_; }

  struct work {
    task_base* task = nullptr;
    bool resume = false; ///< a blocked task going on, not a new one
    explicit operator bool() const noexcept { return task != nullptr; }
  };

  /// A task whose arguments are ready (phase already `queued`). False once
  /// drain() closed the queues (the caller then fails the task).
  bool push(task_base* t);
  /// push(), then (if `pop`) pop() under the same lock: the caller runs
  /// what it gets instead of waking an executor. `pushed` is push()'s answer.
  work push_and_pop(task_base* t, bool& pushed, bool pop = true);
  /// A blocked task whose wait is over; it gets its CPUs back before it runs.
  void push_resume(task_base* t);
  /// The next task whose resources are free, with the resources taken.
  work pop();
  /// Gives back everything `t` holds, then (if `pop`) pops like pop().
  work finish_and_pop(task_base* t, bool pop = true);
  /// Gives back the CPUs of a task that blocks in get().
  void release_cpu(task_base* t);
  /// Worker processes: takes back the CPUs of a task that blocked in get()
  /// in its worker and goes on there now (unconditionally: the node may be
  /// oversubscribed until other tasks finish).
  void reacquire_cpu(task_base* t);

  /// Counter that moves whenever new work may have appeared.
  std::uint64_t epoch() const noexcept { return epoch_.load(std::memory_order_acquire); }
  /// At most one executor spins waiting for work; true if the caller may.
  bool try_start_spinning() noexcept;
  void stop_spinning() noexcept;
  /// Wakes a parked executor if queued work could start and nobody else is
  /// about to take it (after a spinner took work and stopped spinning).
  void wake_if_needed();
  /// An executor is about to publish a task's results and will pop right
  /// after: work submitted in reaction to those results (a synchronous
  /// caller's next call) need not wake a parked executor. Paired with
  /// finish_and_pop(), which ends the announcement.
  void announce_finishing() noexcept { finishing_.fetch_add(1, std::memory_order_acq_rel); }
  /// Parks `executor` unless some work could start now. True if parked.
  bool park(void* executor);

  /// Holds `d` for an actor's lifetime: takes it now if it fits (and no
  /// earlier reservation waits), else queues the request. `granted` runs
  /// once the resources are taken (possibly at once, on this thread), with
  /// the GPU ids written to `*gpu_ids`. `gpu_ids` also names the request.
  void reserve(const resource_demand& d, std::vector<int>* gpu_ids, std::function<void()> granted);
  /// Gives back what reserve() granted.
  void unreserve(const resource_demand& d, std::vector<int>& gpu_ids);
  /// Drops a reservation that was not granted yet; returns how many were dropped.
  std::size_t cancel_reservation(const std::vector<int>* gpu_ids);

  /// Worker processes: the first queued task if it has exactly demand `d`,
  /// is the oldest queued task of all, and could not start now anyway
  /// (no free resources for it), taken WITHOUT its resources: it will
  /// inherit them from the task of the same shape that runs before it on
  /// the same worker. Null otherwise. Only CPU/memory/custom shapes, and
  /// never a nested task (its parent may be the task it would wait behind).
  task_base* take_follower(const resource_demand& d);
  /// Puts a task taken with take_follower() back in its place in the
  /// queue. False once drain() closed the queues.
  bool requeue_follower(task_base* t);

  /// Closes the queues, removes and returns every queued (not blocked)
  /// task; for shutdown. Resumes keep working so blocked tasks can finish.
  std::vector<task_base*> drain();

private:
  struct shape_queue {
    resource_demand demand;
    std::deque<task_base*> tasks; // sorted by task_base::order
  };

  struct reservation {
    resource_demand demand;
    std::vector<int>* gpu_ids;
    std::function<void()> granted;
  };

  bool fits(const resource_demand& d) const noexcept;
  void acquire(task_base* t);
  void give_back(task_base* t, bool cpu_only);
  void take(const resource_demand& d, std::vector<int>& gpu_ids);
  void put_back(const resource_demand& d, std::vector<int>& gpu_ids);
  void grant_reservations_locked(std::vector<reservation>& granted);
  work pop_locked();
  bool anything_fits_locked();
  void* take_parked_if_useful_locked();
  void insert_sorted(std::deque<task_base*>& q, task_base* t);

  node_resources node_;
  std::function<void(void*)> wake_;

  spin_then_block_mutex mtx_;
  std::int64_t cpu_free_;
  std::int64_t memory_free_;
  std::vector<std::int64_t> gpu_free_; // per GPU, in resource units
  std::vector<std::int64_t> custom_free_;
  std::vector<shape_queue> shapes_;
  std::deque<task_base*> resumes_;
  std::size_t queued_ = 0;
  bool closed_ = false;
  std::int64_t seq_ = 0;
  std::vector<void*> parked_;
  std::deque<reservation> reservations_;
  std::atomic<bool> has_reservations_{false};
  std::atomic<int> spinning_{0};
  std::atomic<int> finishing_{0};
  std::atomic<std::uint64_t> epoch_{0};
};

} // namespace weft::detail
