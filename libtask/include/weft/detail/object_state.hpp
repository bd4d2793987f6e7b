/// @file
/// The cell behind every object_ref: a reference-counted, write-once slot that
/// holds a value or an error. Internal; included by the public templates
/// because they construct typed cells. The runtime completes cells and
/// blocks on them; user code only sees object_ref<T>.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <new>
#include <type_traits>
#include <utility>

namespace weft {

/// Identity of one object in the object store. Unique within a process run.
struct object_id {
  std::uint64_t value = 0;
  friend bool operator==(object_id, object_id) = default;
  friend auto operator<=>(object_id, object_id) = default;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& value;
  }
};

namespace detail {

class object_state;
class task_base;

/// A node in an object's completion list; on_complete runs exactly once, on
/// the thread that completes the object (or at once if it already was).
class completion_waiter {
public:
  completion_waiter* next_waiter = nullptr;
  virtual void on_complete(object_state& obj) noexcept = 0;

protected:
  ~completion_waiter() = default;
};

/// Counts every live cell; tests use it to prove objects are freed.
std::int64_t live_object_count() noexcept;
/// A fresh object id (no lock; ids come from per-thread blocks).
object_id new_object_id() noexcept;
/// Worker processes: ids made from now on start at `first` (each worker
/// numbers its objects in a range of its own, so that ids are unique on
/// the node). Call before other threads make objects.
void set_object_id_space(std::uint64_t first) noexcept;
/// The bits of an object id below its id space: worker `n` makes ids from
/// n << object_id_space_shift; the driver (and local mode) from space 0.
inline constexpr int object_id_space_shift = 40;
/// The id space (the worker number; 0: the driver) an id was made in.
constexpr std::uint64_t object_id_space_of(std::uint64_t id) noexcept { return id >> object_id_space_shift; }

/// Worker processes: what happens to a *proxy* cell (a cell standing for
/// an object the driver holds, see set_proxy). Set once by the worker.
struct proxy_hooks {
  /// Someone waits for the proxy's value (get/wait): fetch it.
  void (*wanted)(object_state& proxy) noexcept;
  /// The proxy is being destroyed.
  void (*dropped)(object_state& proxy) noexcept;
};
void set_proxy_hooks(const proxy_hooks* hooks) noexcept;

/// Worker processes, driver side: what a thread does while it spins waiting
/// for cells (get/wait on an OS thread): it reads what workers wrote
/// itself, rather than wait to be woken by the thread that would (two
/// thread wake-ups less per synchronous call). `begin` and `end` bracket
/// the spin, `poll` runs in it.
struct wait_helper {
  void (*begin)() noexcept;
  void (*poll)() noexcept;
  void (*end)() noexcept;
};
void set_wait_helper(const wait_helper* h) noexcept;
/// For the scope of a thread's spin before it parks: runs the wait helper
/// (if one is set) and says how long to spin (longer with a helper).
class waiting_spin {
public:
  waiting_spin() noexcept;
  ~waiting_spin();
  waiting_spin(const waiting_spin&) = delete;
  waiting_spin& operator=(const waiting_spin&) = delete;
  /// One round of the spin; false once the spin is over.
  bool again(std::int64_t deadline_ns) noexcept;

private:
  const wait_helper* helper_;
  std::int64_t until_;
};

class object_state {
public:
  object_state(const object_state&) = delete;
  object_state& operator=(const object_state&) = delete;

  void add_ref() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  /// Adds a reference unless the count already reached 0 (the cell is
  /// being destroyed): for tables that hold cells without a reference.
  bool try_add_ref() noexcept {
    auto n = refs_.load(std::memory_order_relaxed);
    while (n != 0)
      if (refs_.compare_exchange_weak(n, n + 1, std::memory_order_acq_rel, std::memory_order_relaxed))
        return true;
    return false;
  }
  void release() noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1)
      delete this;
  }

  object_id id() const noexcept { return id_; }
  /// Internal: gives the cell the id of the object it stands for (a copy
  /// of an object another process made). Before the cell is shared.
  void assign_id(object_id id) noexcept { id_ = id; }
  /// Worker processes: this cell stands for an object the driver holds;
  /// waiting for it asks the driver for the value (proxy_hooks).
  void set_proxy() noexcept { proxy_ = true; }
  bool is_proxy() const noexcept { return proxy_; }
  /// Called by get/wait before they wait for a cell that is not done.
  void want() noexcept {
    if (proxy_)
      notify_wanted();
  }
  /// True once a value or an error is stored. Never goes back.
  bool done() const noexcept { return (status_.load(std::memory_order_acquire) & done_bit) != 0; }
  bool failed() const noexcept { return (status_.load(std::memory_order_acquire) & failed_bit) != 0; }
  /// The stored error; meaningful only when failed().
  const std::exception_ptr& error() const noexcept { return error_; }

  /// Publish the value stored by the typed subclass. Runtime side.
  void complete_value() noexcept { complete(0); }
  /// Store an error (a weft::error subclass). Ignored if already done.
  void complete_error(std::exception_ptr e) noexcept;
  /// Register `w` to run at completion. False: already done, `w` not added.
  bool add_waiter(completion_waiter* w) noexcept;
  /// Blocks the calling OS thread (spin, then futex) until done() or until
  /// `deadline_ns` (steady clock, 0 = none) passes. Returns done().
  bool wait_thread(std::int64_t deadline_ns) noexcept;

  /// The task that will produce this object, for cancel(); a strong
  /// reference held until completion. Runtime side.
  void set_producer(task_base* t) noexcept;
  /// The producer with a reference added (release with task_release), or null.
  task_base* acquire_producer() noexcept;

protected:
  object_state() noexcept;
  virtual ~object_state();

private:
  static constexpr std::uint32_t done_bit = 1;
  static constexpr std::uint32_t failed_bit = 2;
  static constexpr std::uint32_t sleeper_unit = 4; // parked threads, counted above the flags

  void complete(std::uint32_t extra_bits) noexcept;
  void notify_wanted() noexcept;

  std::atomic<std::uint32_t> refs_{0};
  std::atomic<std::uint32_t> status_{0};
  std::atomic<bool> producer_lock_{false};
  bool proxy_ = false;
  object_id id_;
  std::atomic<completion_waiter*> waiters_{nullptr};
  task_base* producer_ = nullptr;
  std::exception_ptr error_;
};

/// Intrusive strong pointer to a cell.
class object_ptr {
public:
  object_ptr() noexcept = default;
  explicit object_ptr(object_state* p, bool add_ref = true) noexcept : p_(p) {
    if (p_ && add_ref)
      p_->add_ref();
  }
  object_ptr(const object_ptr& o) noexcept : object_ptr(o.p_) {}
  object_ptr(object_ptr&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  object_ptr& operator=(object_ptr o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  ~object_ptr() {
    if (p_)
      p_->release();
  }
  object_state* get() const noexcept { return p_; }
  object_state* operator->() const noexcept { return p_; }
  explicit operator bool() const noexcept { return p_ != nullptr; }

private:
  object_state* p_ = nullptr;
};

/// A cell holding a T. Values are immutable once complete_value() ran.
template <class T>
class value_object final : public object_state {
public:
  value_object() noexcept {}
  ~value_object() override {
    if (has_value_)
      value_.~T();
  }
  /// Stores the value (replacing one a failed earlier attempt left).
  template <class... Args>
  void emplace(Args&&... args) {
    if (has_value_) {
      value_.~T();
      has_value_ = false;
    }
    ::new (static_cast<void*>(&value_)) T(std::forward<Args>(args)...);
    has_value_ = true;
  }
  /// The value; valid once done() && !failed().
  const T& value() const noexcept { return value_; }

private:
  union {
    T value_;
  };
  bool has_value_ = false;
};

template <>
class value_object<void> final : public object_state {
public:
  void emplace() noexcept {}
};

} // namespace detail
} // namespace weft
