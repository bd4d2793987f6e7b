/// @file
/// weft::queue<T>: a FIFO queue, optionally bounded, shared by tasks, actors
/// and threads (Ray's `ray.util.queue.Queue`). It is backed by one weft
/// actor; a weft::queue is a cheap handle to it, so copies (and copies
/// passed to tasks or actor methods) all use the same queue.
///
///     weft::queue<int> q(2);                 // at most 2 items
///     q.put(1);
///     q.put(2);
///     q.put_nowait(3);                       // throws queue_full_error
///     int a = q.get();                       // 1
///     int b = q.get(true, 100ms);            // 2; queue_empty_error after 100 ms
///
/// Waiting puts and gets hold no slot of the queue actor (each waits as a
/// suspended coroutine call), so other calls keep running; they are served
/// first come, first served. A put or get that times out is withdrawn before
/// it returns: an item is never lost, duplicated, or handed to a caller that
/// gave up. The queue ends when its last copy is gone (or with shutdown());
/// one created inside an actor method is owned by that actor and ends with
/// it. Local mode: items stay in this process. With worker processes the
/// queue's actor stays in the driver; a copy passed to (or made in) a task
/// or actor in a worker calls it there, so T must be serializable for that:
/// a queue of another T is a compile-time error as a parameter or result
/// of a remote call. A get or put waiting for a worker process that dies
/// is withdrawn: the next item goes to a caller that is still there, and
/// the dead caller's item never enters the queue (a retry puts it again).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <type_traits>
#include <utility>

#include "weft/actor.hpp"
#include "weft/coro.hpp"
#include "weft/errors.hpp"
#include "weft/object_ref.hpp"
#include "weft/runtime.hpp"

namespace weft {

/// put_nowait() on a full queue, or a blocking put whose timeout passed
/// while the queue stayed full. The item was not added.
class queue_full_error : public error {
public:
  using error::error;
};

/// get_nowait() on an empty queue, or a blocking get whose timeout passed
/// with no item to take.
class queue_empty_error : public error {
public:
  using error::error;
};

/// A snapshot of a queue, from queue::stats().
struct queue_stats {
  std::size_t size = 0;            ///< items in the queue
  std::size_t maxsize = 0;         ///< 0: unbounded
  std::size_t waiting_getters = 0; ///< blocked get() calls
  std::size_t waiting_putters = 0; ///< blocked put() calls (their items are not in `size`)
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& size& maxsize& waiting_getters& waiting_putters;
  }
};

namespace detail {

// ---- non-template parts, in libactor/src/queue.cpp ----
/// A number naming one put or get call, unique on the node (an object id:
/// it also names the process that made it).
std::uint64_t next_queue_ticket() noexcept;
/// False when the call `ticket` names came from a worker process that is
/// gone: nothing waits for its answer any more.
bool queue_caller_alive(std::uint64_t ticket) noexcept;
/// Throws invalid_argument_error for a negative timeout.
void check_queue_timeout(const char* what, const std::optional<std::chrono::nanoseconds>& timeout);
[[noreturn]] void throw_queue_full(const char* what, std::size_t size, std::size_t maxsize);
[[noreturn]] void throw_queue_full_timeout(std::size_t maxsize, std::chrono::nanoseconds timeout);
[[noreturn]] void throw_queue_empty(const char* what);
[[noreturn]] void throw_queue_empty_timeout(std::chrono::nanoseconds timeout);

struct queue_put_reply {
  bool accepted = false;
  std::size_t size = 0; ///< the queue's size when a non-blocking put was refused
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& accepted& size;
  }
};

template <class T>
struct queue_get_reply {
  std::optional<T> item; ///< empty: refused (non-blocking) or withdrawn
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& item;
  }
};
/// Its serialize member compiles for any T; only a serializable item
/// makes a get's reply sendable (else get() would not compile at all).
template <class T>
struct serializable_impl<queue_get_reply<T>> : all_serializable<T> {};

/// The actor behind a weft::queue. Every method runs on the actor, one at a
/// time; none blocks. A put or get that has to wait suspends at co_await on
/// a cell this actor completes later: with the item for a getter, with
/// true (accepted) for a putter, or with "withdrawn" when its caller gives up.
/// Invariants: waiting getters only while `items_` is empty; waiting putters
/// only while it is full.
template <class T>
class queue_actor {
public:
  explicit queue_actor(std::size_t maxsize) : maxsize_(maxsize) {}

  coro<queue_put_reply> put(T item, bool block, std::uint64_t ticket) {
    if (!queue_caller_alive(ticket)) // its worker died after sending it: a retry puts it again
      co_return queue_put_reply{false, items_.size()};
    if (!getters_.empty() || has_room()) {
      accept(std::move(item));
      co_return queue_put_reply{true, items_.size()};
    }
    if (!block)
      co_return queue_put_reply{false, items_.size()};
    auto* cell = new value_object<bool>();
    object_ref<bool> accepted{object_ptr(cell)};
    putters_.push_back(putter{ticket, std::move(item), object_ptr(cell)});
    const bool ok = co_await accepted;
    co_return queue_put_reply{ok, items_.size()};
  }

  coro<queue_get_reply<T>> get(bool block, std::uint64_t ticket) {
    if (!queue_caller_alive(ticket)) // its worker died after sending it: no one reads the answer
      co_return queue_get_reply<T>{};
    if (!items_.empty()) {
      queue_get_reply<T> reply{std::move(items_.front())};
      items_.pop_front();
      admit_putter();
      co_return reply;
    }
    if (!block)
      co_return queue_get_reply<T>{};
    auto* cell = new value_object<std::optional<T>>();
    object_ref<std::optional<T>> slot{object_ptr(cell)};
    getters_.push_back(getter{ticket, object_ptr(cell)});
    std::optional<T> item = co_await slot;
    co_return queue_get_reply<T>{std::move(item)};
  }

  /// Withdraws the waiting get `ticket`: true if it was still waiting (it
  /// now ends without an item), false if it already got one.
  bool withdraw_get(std::uint64_t ticket) {
    for (auto it = getters_.begin(); it != getters_.end(); ++it) {
      if (it->ticket == ticket) {
        const object_ptr slot = std::move(it->slot);
        getters_.erase(it);
        end_get(slot, std::nullopt);
        return true;
      }
    }
    return false;
  }

  /// withdraw_get for a caller that is gone: an item its get was handed
  /// already goes back to the head of the queue. `call` is the get call's
  /// own result (a ref of the driver: a worker's wait is never cut short).
  bool abandon_get(std::uint64_t ticket, object_ref<queue_get_reply<T>> call) {
    if (withdraw_get(ticket))
      return true;
    // Handed an item already: its coroutine was resumed by a message that
    // arrived before this call, so its result is ready here.
    if (call.is_ready() && !call.cell()->failed()) {
      const auto& reply = static_cast<const value_object<queue_get_reply<T>>*>(call.cell())->value();
      if (reply.item)
        accept_at_head(T(*reply.item));
    }
    return false;
  }

  /// Withdraws the waiting put `ticket`: true if it was still waiting (its
  /// item never entered the queue), false if the item was accepted.
  bool withdraw_put(std::uint64_t ticket) {
    for (auto it = putters_.begin(); it != putters_.end(); ++it) {
      if (it->ticket == ticket) {
        const object_ptr accepted = std::move(it->accepted);
        putters_.erase(it);
        end_put(accepted, false);
        return true;
      }
    }
    return false;
  }

  std::size_t size() const { return items_.size(); }

  queue_stats stats() {
    drop_gone_callers();
    return queue_stats{items_.size(), maxsize_, getters_.size(), putters_.size()};
  }

private:
  struct getter {
    std::uint64_t ticket;
    object_ptr slot; // value_object<std::optional<T>>
  };
  struct putter {
    std::uint64_t ticket;
    T item;
    object_ptr accepted; // value_object<bool>
  };

  bool has_room() const noexcept { return maxsize_ == 0 || items_.size() < maxsize_; }

  /// The item goes to the first waiting getter, else to the tail.
  void accept(T&& item) {
    if (hand_to_getter(item))
      return;
    items_.push_back(std::move(item));
  }

  /// An item a gone caller had taken: back to the first waiting getter, or
  /// to the head (it may exceed maxsize by one; nothing is dropped).
  void accept_at_head(T&& item) {
    if (hand_to_getter(item))
      return;
    items_.push_front(std::move(item));
  }

  /// The item goes to the first waiting getter whose caller is still
  /// there (a worker process that died waiting is skipped: its get ends
  /// without an item, and nothing reads that answer).
  bool hand_to_getter(T& item) {
    while (!getters_.empty()) {
      getter g = std::move(getters_.front());
      getters_.pop_front();
      if (!queue_caller_alive(g.ticket)) {
        end_get(g.slot, std::nullopt);
        continue;
      }
      end_get(g.slot, std::move(item));
      return true;
    }
    return false;
  }

  /// Room was made: the first waiting putter's item enters the queue. A
  /// put whose worker process died waiting is withdrawn instead (its call
  /// never returned, so its item was never in the queue; a retry puts it again).
  void admit_putter() {
    while (!putters_.empty() && has_room()) {
      putter p = std::move(putters_.front());
      putters_.pop_front();
      const bool alive = queue_caller_alive(p.ticket);
      if (alive)
        items_.push_back(std::move(p.item));
      end_put(p.accepted, alive);
      if (alive)
        return;
    }
  }

  /// Ends the waiting calls of callers that are gone (see hand_to_getter,
  /// admit_putter), wherever they wait.
  void drop_gone_callers() {
    std::erase_if(getters_, [](getter& g) {
      if (queue_caller_alive(g.ticket))
        return false;
      end_get(g.slot, std::nullopt);
      return true;
    });
    std::erase_if(putters_, [](putter& p) {
      if (queue_caller_alive(p.ticket))
        return false;
      end_put(p.accepted, false);
      return true;
    });
  }

  static void end_get(const object_ptr& slot, std::optional<T> item) {
    auto* cell = static_cast<value_object<std::optional<T>>*>(slot.get());
    cell->emplace(std::move(item));
    cell->complete_value();
  }

  static void end_put(const object_ptr& accepted, bool ok) {
    auto* cell = static_cast<value_object<bool>*>(accepted.get());
    cell->emplace(ok);
    cell->complete_value();
  }

  std::size_t maxsize_;
  std::deque<T> items_;
  std::deque<getter> getters_;
  std::deque<putter> putters_;
};

/// Its getters and putters wait on cells of the driver: it stays there in
/// worker-process mode too (a worker's calls run there, through the driver).
template <class T>
struct driver_only_actor<queue_actor<T>> : std::true_type {};

} // namespace detail

/// A FIFO queue of T shared through a weft actor; see the file comment.
/// T must be copyable (items are copied into and out of the actor's calls).
/// Every member function is thread-safe and may be called from threads,
/// tasks and actor methods (a blocking call inside an actor method holds
/// that actor's slot while it waits, like weft::get).
template <class T>
class queue {
  static_assert(std::is_copy_constructible_v<T> && !std::is_reference_v<T> && !std::is_pointer_v<T>,
                "weft::queue<T>: T must be a copyable value type (not a reference or raw pointer)");
  using actor_type = detail::queue_actor<T>;

public:
  using value_type = T;

  /// Starts the queue's actor. `maxsize` 0 means unbounded. `options` are
  /// the actor's (name, lifetime, ...); a queue that restarts starts empty.
  /// Does not block. Throws what starting an actor throws.
  explicit queue(std::size_t maxsize = 0, const actor_options& options = {}) :
    // (One made by weft only to decode a queue into starts none.)
    actor_(detail::decoding_values() ? actor_handle<actor_type>() : remote<actor_type>(options).remote(maxsize)),
    maxsize_(maxsize) {}

  /// Adds `item` at the tail. With block (default), waits while the queue is
  /// full, up to `timeout` (unset: no limit); without, or when the timeout
  /// passes, throws queue_full_error and the item is not added. Blocks the
  /// calling thread, or suspends the calling task. Thread-safe.
  void put(T item, bool block = true, std::optional<std::chrono::nanoseconds> timeout = std::nullopt) const {
    detail::check_queue_timeout("put", timeout);
    const std::uint64_t ticket = detail::next_queue_ticket();
    auto call = actor_.task(&actor_type::put).remote(std::move(item), block, ticket);
    auto withdraw = [&] { return weft::get(actor_.task(&actor_type::withdraw_put).remote(ticket)); };
    detail::queue_put_reply reply;
    try {
      if (block && timeout)
        reply = weft::get(call, *timeout);
      else
        reply = weft::get(call);
    } catch (const get_timeout_error&) {
      if (withdraw())
        detail::throw_queue_full_timeout(maxsize_, *timeout);
      reply = weft::get(call); // accepted just before it was withdrawn
    } catch (...) {
      // The wait itself was interrupted (the calling actor is going away):
      // withdraw without waiting for an answer.
      if (!call.is_ready())
        try {
          actor_.task(&actor_type::withdraw_put).remote(ticket);
        } catch (...) { // the runtime is gone too: nothing left to withdraw from
        }
      throw;
    }
    if (!reply.accepted)
      detail::throw_queue_full("put_nowait", reply.size, maxsize_);
  }

  /// put(item, false): adds the item or throws queue_full_error at once.
  /// Waits only for the queue actor's answer. Thread-safe.
  void put_nowait(T item) const { put(std::move(item), false); }

  /// Removes and returns the head item. With block (default), waits for
  /// one up to `timeout` (unset: no limit); without, or when the timeout
  /// passes, throws queue_empty_error. A waiting get holds no OS thread
  /// inside a task and does not hold up the queue. Thread-safe.
  T get(bool block = true, std::optional<std::chrono::nanoseconds> timeout = std::nullopt) const {
    detail::check_queue_timeout("get", timeout);
    const std::uint64_t ticket = detail::next_queue_ticket();
    auto call = actor_.task(&actor_type::get).remote(block, ticket);
    detail::queue_get_reply<T> reply;
    try {
      if (block && timeout)
        reply = weft::get(call, *timeout);
      else
        reply = weft::get(call);
    } catch (const get_timeout_error&) {
      if (weft::get(actor_.task(&actor_type::withdraw_get).remote(ticket)))
        detail::throw_queue_empty_timeout(*timeout);
      reply = weft::get(call); // an item arrived just before it was withdrawn
    } catch (...) {
      // (Only a wait in the driver is cut short with the call still running:
      // `call` is then the driver's.)
      if (!call.is_ready() && actor_.ref())
        try {
          // The caller is going away: an item it was handed goes back.
          actor_.task(&actor_type::abandon_get).remote(ticket, call);
        } catch (...) {
        }
      throw;
    }
    if (!reply.item)
      detail::throw_queue_empty("get_nowait");
    return std::move(*reply.item);
  }

  /// get(false): the head item, or queue_empty_error at once. Waits only
  /// for the queue actor's answer. Thread-safe.
  T get_nowait() const { return get(false); }

  /// Items in the queue now (blocked putters' items not counted). Waits
  /// for the queue actor's answer. Thread-safe.
  std::size_t size() const { return weft::get(actor_.task(&actor_type::size).remote()); }
  /// size() == 0. Waits for the queue actor's answer. Thread-safe.
  bool empty() const { return size() == 0; }
  /// Bounded and size() >= maxsize(). Waits for the queue actor's answer. Thread-safe.
  bool full() const { return maxsize_ != 0 && size() >= maxsize_; }
  /// The bound given at construction; 0: unbounded. Does not block.
  std::size_t maxsize() const noexcept { return maxsize_; }
  /// Size, bound and waiting callers, read together. Waits for the queue
  /// actor's answer. Thread-safe.
  queue_stats stats() const { return weft::get(actor_.task(&actor_type::stats).remote()); }

  /// Kills the queue's actor: its items are dropped, waiting and later
  /// calls on every copy throw actor_died_error. Does not block. Thread-safe.
  void shutdown() const { kill(actor_); }

  /// The actor behind the queue (to monitor it, for instance).
  const actor_handle<actor_type>& actor() const noexcept { return actor_; }

  /// A queue passed to a task stays the same queue (its handle crosses).
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& actor_& maxsize_;
  }

private:
  actor_handle<actor_type> actor_;
  std::size_t maxsize_;
};

static_assert(std::is_nothrow_move_constructible_v<queue<int>>);
static_assert(std::is_copy_constructible_v<queue<int>>);

namespace detail {
/// A queue crosses as a handle to its actor, but a worker that uses it
/// sends and receives its items: it can cross only when they can (else a
/// task taking one compiles, and its puts and gets fail in the worker).
template <class T>
struct serializable_impl<queue<T>> : all_serializable<T> {};

/// For a queue parameter or result, the error names the item type, not
/// only the queue.
template <class T>
struct require_serializable<queue<T>> {
  static constexpr bool value = is_serializable_v<T>;
  static_assert(value,
                "weft: the items of this weft::queue<T> cannot cross a process boundary, so the queue cannot be a "
                "parameter or result of a remote call (a worker's put and get send items to the queue in the "
                "driver). The item type is the T of 'weft::detail::require_serializable<weft::queue<T>>' in the "
                "note below. Give it a member `template <class Archive> void serialize(Archive& ar, unsigned) "
                "{ ar & a & b; }` (or a free serialize(Archive&, T&, unsigned) in its namespace); see "
                "docs/serialization.md. A queue of such items still works in the driver and in local mode.");
};
} // namespace detail

} // namespace weft
