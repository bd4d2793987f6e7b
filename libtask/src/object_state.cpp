#include "weft/detail/object_state.hpp"
#include "weft/errors.hpp"
#include "weft/object_ref.hpp"

#include "../../src/futex.hpp"
#include "weft/detail/task.hpp"

namespace weft::detail {

namespace {

std::atomic<std::int64_t> g_live_objects{0};
std::atomic<std::uint64_t> g_next_id_block{1};
constexpr std::uint64_t id_block = 4096;

completion_waiter* closed_list() noexcept { return reinterpret_cast<completion_waiter*>(std::uintptr_t{1}); }

struct id_source {
  std::uint64_t next = 0;
  std::uint64_t end = 0;
};
thread_local id_source tls_ids;

std::atomic<const proxy_hooks*> g_proxy_hooks{nullptr};

} // namespace

void set_object_id_space(std::uint64_t first) noexcept {
  g_next_id_block.store(first, std::memory_order_relaxed);
  tls_ids = {};
}

void set_proxy_hooks(const proxy_hooks* hooks) noexcept { g_proxy_hooks.store(hooks, std::memory_order_release); }

namespace {
std::atomic<const wait_helper*> g_wait_helper{nullptr};
/// A thread that reads the workers' results itself while it waits spins
/// longer: a round trip to a worker takes ~100 µs on a 2-core VM.
constexpr std::int64_t spin_with_helper_ns = 150'000;
} // namespace

void set_wait_helper(const wait_helper* h) noexcept { g_wait_helper.store(h, std::memory_order_release); }

waiting_spin::waiting_spin() noexcept : helper_(g_wait_helper.load(std::memory_order_acquire)) {
  until_ = now_ns() + (helper_ ? spin_with_helper_ns : spin_before_park_ns);
  if (helper_)
    helper_->begin();
}

waiting_spin::~waiting_spin() {
  if (helper_)
    helper_->end();
}

bool waiting_spin::again(std::int64_t deadline_ns) noexcept {
  if (helper_)
    helper_->poll();
  const auto now = now_ns();
  if (now > until_ || (deadline_ns != 0 && now >= deadline_ns))
    return false;
  cpu_relax();
  return true;
}

void object_state::notify_wanted() noexcept {
  if (const auto* h = g_proxy_hooks.load(std::memory_order_acquire))
    h->wanted(*this);
}

std::int64_t live_object_count() noexcept { return g_live_objects.load(std::memory_order_acquire); }

object_id new_object_id() noexcept {
  auto& s = tls_ids;
  if (s.next == s.end) {
    s.next = g_next_id_block.fetch_add(id_block, std::memory_order_relaxed);
    s.end = s.next + id_block;
  }
  return object_id{s.next++};
}

object_state::object_state() noexcept : id_(new_object_id()) { g_live_objects.fetch_add(1, std::memory_order_relaxed); }

object_state::~object_state() {
  if (proxy_)
    if (const auto* h = g_proxy_hooks.load(std::memory_order_acquire))
      h->dropped(*this);
  // A cell freed before it got a value (its producer is gone without
  // completing it, e.g. an actor that died holding it) still tells its
  // waiters, so they release what they hold instead of leaking it.
  if (!done() && waiters_.load(std::memory_order_acquire) != nullptr)
    complete_error(std::make_exception_ptr(
      weft::error("weft: the object was freed before it got a value (" + to_string(id_) + ")")));
  if (producer_)
    producer_->release();
  g_live_objects.fetch_sub(1, std::memory_order_relaxed);
}

void object_state::complete_error(std::exception_ptr e) noexcept {
  if (done())
    return;
  error_ = std::move(e);
  complete(failed_bit);
}

void object_state::complete(std::uint32_t extra_bits) noexcept {
  auto s = status_.fetch_or(done_bit | extra_bits, std::memory_order_acq_rel);
  if (s & done_bit)
    return;
  if (s >= sleeper_unit)
    futex_wake_all(status_);
  // Drop the producer link: the task no longer needs to be found by cancel().
  while (producer_lock_.exchange(true, std::memory_order_acquire))
    cpu_relax();
  task_base* producer = std::exchange(producer_, nullptr);
  producer_lock_.store(false, std::memory_order_release);
  // Run waiters in registration order.
  completion_waiter* list = waiters_.exchange(closed_list(), std::memory_order_acq_rel);
  completion_waiter* reversed = nullptr;
  while (list) {
    completion_waiter* next = list->next_waiter;
    list->next_waiter = reversed;
    reversed = list;
    list = next;
  }
  while (reversed) {
    completion_waiter* next = reversed->next_waiter;
    reversed->on_complete(*this);
    reversed = next;
  }
  if (producer)
    producer->release();
}

bool object_state::add_waiter(completion_waiter* w) noexcept {
  completion_waiter* head = waiters_.load(std::memory_order_acquire);
  do {
    if (head == closed_list())
      return false;
    w->next_waiter = head;
  } while (!waiters_.compare_exchange_weak(head, w, std::memory_order_acq_rel, std::memory_order_acquire));
  return true;
}

bool object_state::wait_thread(std::int64_t deadline_ns) noexcept {
  {
    waiting_spin spin;
    while (!done() && spin.again(deadline_ns)) {
    }
  }
  for (;;) {
    if (done())
      return true;
    if (deadline_ns != 0 && now_ns() >= deadline_ns)
      return false;
    auto s = status_.fetch_add(sleeper_unit, std::memory_order_acq_rel) + sleeper_unit;
    if (!(s & done_bit))
      futex_wait(status_, s, deadline_ns);
    status_.fetch_sub(sleeper_unit, std::memory_order_acq_rel);
  }
}

void object_state::set_producer(task_base* t) noexcept {
  t->add_ref();
  producer_ = t;
}

task_base* object_state::acquire_producer() noexcept {
  while (producer_lock_.exchange(true, std::memory_order_acquire))
    cpu_relax();
  task_base* t = producer_;
  if (t)
    t->add_ref();
  producer_lock_.store(false, std::memory_order_release);
  return t;
}

} // namespace weft::detail
