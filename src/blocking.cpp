#include "blocking.hpp"

#include "futex.hpp"
#include "runtime.hpp"

namespace weft::detail {

blocker::blocker(std::size_t capacity) { nodes_.reserve(capacity); }

bool blocker::watch(object_state* cell) {
  nodes_.emplace_back();
  node& n = nodes_.back();
  n.owner = this;
  add_ref(); // held by the node until it fires
  if (cell->add_waiter(&n))
    return true;
  nodes_.pop_back();
  release();
  return false;
}

void blocker::node::on_complete(object_state& obj) noexcept {
  blocker* b = owner;
  if (obj.failed())
    b->any_failed_.store(true, std::memory_order_release);
  b->completed_.fetch_add(1, std::memory_order_acq_rel);
  b->notify();
  b->release();
}

void blocker::notify() noexcept {
  epoch_.fetch_add(1, std::memory_order_seq_cst);
  int p = parked_.load(std::memory_order_seq_cst);
  if (p == thread) {
    futex_wake_all(epoch_);
  } else if (p == fiber_task) {
    int expected = fiber_task;
    if (parked_.compare_exchange_strong(expected, none, std::memory_order_seq_cst))
      resume_(resume_arg_);
  }
}

void blocker::arm_fiber(resume_fn resume, void* arg, std::uint32_t seen) noexcept {
  resume_ = resume;
  resume_arg_ = arg;
  parked_.store(fiber_task, std::memory_order_seq_cst);
  if (epoch_.load(std::memory_order_seq_cst) != seen) {
    int expected = fiber_task;
    if (parked_.compare_exchange_strong(expected, none, std::memory_order_seq_cst))
      resume(arg);
  }
}

bool blocker::disarm() noexcept {
  int expected = fiber_task;
  return parked_.compare_exchange_strong(expected, none, std::memory_order_seq_cst);
}

void blocker::park(std::uint32_t seen, std::int64_t deadline_ns) {
  if (fiber* f = current_fiber()) {
    f->host->block(*f, *this, seen, deadline_ns);
    return;
  }
  {
    waiting_spin spin;
    while (epoch_.load(std::memory_order_acquire) == seen && spin.again(deadline_ns)) {
    }
  }
  if (epoch_.load(std::memory_order_acquire) != seen)
    return;
  parked_.store(thread, std::memory_order_seq_cst);
  if (epoch_.load(std::memory_order_seq_cst) == seen)
    futex_wait(epoch_, seen, deadline_ns);
  parked_.store(none, std::memory_order_seq_cst);
}

} // namespace weft::detail
