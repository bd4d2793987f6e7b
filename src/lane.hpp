// Private: the fast path between the driver and one worker process.
//
// Every message about work (calls to run, their results, nested
// submissions, fetches and releases of lent objects) travels through a
// *lane*: two byte rings in a shared-memory file (memfd) that the driver
// creates for the worker (fd 7 of the worker), one ring per direction, one
// producer and one consumer each. A message is one or more fragments
// (8-byte header: length, kind, last flag; the bytes, padded to 8); a
// message larger than a quarter of the ring goes in pieces, each a quarter
// of the ring but the last.
//
// Waking: a consumer with nothing to read spins a few tens of µs, then
// sleeps on a futex word of its ring; a producer bumps that word after it
// publishes and wakes the consumer only when it said it sleeps. The driver
// reads every worker's lane on one thread, which sleeps on the node's
// *doorbell* (a page every worker maps, fd 6) instead of a word per lane.
// That is two thread wake-ups a round trip at most, and none while both
// sides are busy; the CAF middleman costs six (each side's I/O thread and
// actor), which bounded synchronous calls to ~4,000/s on this project's VM.
//
// CAF keeps what is not on the hot path: the handshake (hello, welcome,
// refuse), cancel, and what the worker's control actor hears while a call
// runs (nested-task results, fetched values).
//
// Flow control: the worker blocks while its ring to the driver is full (the
// driver's reader always drains). The driver never blocks: what does not
// fit waits in the lane's overflow queue; the worker rings the doorbell
// when it consumed from a ring the driver waits on, and the driver's
// reader moves more in.
//
// Nothing read from a ring is trusted: a fragment longer than the ring
// allows, a piece that is neither whole nor the last, or a head and tail
// that do not make sense, make the ring *corrupt*: the reader stops
// reading it (the driver kills the worker).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace weft::detail {

enum class lane_kind : std::uint8_t {
  // driver -> worker
  call = 1,         ///< a batch of task call records
  actor_create = 2, ///< the create record of the worker's actor
  actor_call = 3,   ///< a batch of actor call records
  actor_quit = 4,   ///< run the actor's destructor and exit
  // worker -> driver
  done = 16,       ///< a batch of task results
  actor_done = 17, ///< a batch of actor call results (and the constructor's)
  submit = 18,     ///< nested submissions and actor calls (outbox batch)
  blocked = 19,    ///< u64 job, u8 blocked: the running task waits in get, or goes on
  fetch = 20,      ///< u64 id: a proxy wants the value of a lent object
  release = 21,    ///< (u64 id, i64 count) pairs: objects let go
  recalled = 22,   ///< packed u64 seqs: tasks of its line the worker will not run
  taken = 23,      ///< packed u64 store references the driver handed over: the worker holds its own now
};

/// The node's doorbell: a shared page where the driver's lane reader sleeps.
/// Every worker can write all of it, so the driver reads nothing here that
/// decides more than whether to wake: what it must know (the count of
/// helpers, whether its reader stops) it keeps in its own memory and
/// writes here again at each change.
struct doorbell {
  std::atomic<std::uint32_t> seq{0};      ///< futex word: bumped by every producer to the driver
  std::atomic<std::uint32_t> sleeping{0}; ///< the reader sleeps (or is about to)
  /// Driver threads waiting in get that read the lanes meanwhile: while
  /// there are any, a producer does not wake the reader.
  std::atomic<std::uint32_t> helpers{0};
};

/// Maps the doorbell page; `create` makes the memfd (driver), else `fd` is
/// the inherited one (closed here). Throws weft::error on failure.
struct doorbell_map {
  static doorbell_map create();
  static doorbell_map attach(int fd);
  doorbell_map() = default;
  doorbell_map(doorbell_map&& o) noexcept;
  doorbell_map& operator=(doorbell_map&& o) noexcept;
  ~doorbell_map();
  doorbell* get() const noexcept { return bell_; }
  int fd() const noexcept { return fd_; }
  /// Wakes the reader if it sleeps (after a publish) and no thread that
  /// waits reads the lanes; `force`: even then.
  void ring(bool force = false) const noexcept;

private:
  doorbell* bell_ = nullptr;
  int fd_ = -1;
};

class lane {
public:
  /// Bytes each ring holds; a message fragment carries at most a quarter.
  static constexpr std::size_t ring_bytes = std::size_t{1} << 20;
  /// The file: a page with both rings' counters, then the bytes of the
  /// ring to the worker, then those of the ring to the driver.
  static constexpr std::size_t header_bytes = 4096;
  static constexpr std::size_t to_worker_offset = header_bytes;
  static constexpr std::size_t to_driver_offset = header_bytes + ring_bytes;
  static constexpr std::size_t file_bytes = header_bytes + 2 * ring_bytes;

  /// Driver: a new lane (memfd); `bell` is the node's doorbell.
  static std::shared_ptr<lane> create(doorbell* bell);
  /// Worker: maps the lane inherited as `fd` (closed here).
  static std::unique_ptr<lane> attach(int fd, doorbell* bell);
  ~lane();
  lane(const lane&) = delete;
  lane& operator=(const lane&) = delete;

  int fd() const noexcept { return fd_; }

  // ---- driver side ----
  /// Queues a message for the worker; never blocks (what does not fit
  /// waits in the overflow queue, moved in by pump()). Thread-safe.
  void post_to_worker(lane_kind k, std::string body);
  /// Moves queued messages into the ring as far as room allows.
  void pump();
  /// Whether pump() has something to do now.
  bool has_overflow() const noexcept { return overflowing_.load(std::memory_order_acquire); }
  /// The next whole message from the worker, if one is there. False when
  /// there is none yet, or the ring is corrupt (then corrupt() is true).
  bool take_from_worker(lane_kind& k, std::string& body);
  /// Whether the worker published something not read yet.
  bool readable_from_worker() const noexcept;
  bool corrupt() const noexcept { return corrupt_; }

  // ---- worker side ----
  /// Sends a message to the driver; blocks while the ring is full.
  /// Thread-safe.
  void post_to_driver(lane_kind k, std::string_view body);
  /// Waits for the next whole message from the driver: spins `spin_ns`,
  /// then sleeps. False if the ring is corrupt.
  bool take_from_driver(lane_kind& k, std::string& body, std::int64_t spin_ns);

  struct ring; ///< in the shared file

private:
  lane(std::byte* base, int fd, doorbell* bell) noexcept;
  bool read_message(ring& r, std::byte* data, lane_kind& k, std::string& body, bool driver_side);
  /// Writes one fragment if it fits; false if not.
  static bool try_write(ring& r, std::byte* data, lane_kind k, bool last, std::string_view part);
  void pump_locked();

  std::byte* base_;
  int fd_;
  doorbell* bell_;
  // driver side: the overflow queue, and the message being assembled
  std::mutex out_mtx_;
  std::deque<std::pair<lane_kind, std::string>> overflow_;
  std::size_t overflow_sent_ = 0; ///< bytes of overflow_.front() already in the ring
  std::atomic<bool> overflowing_{false};
  std::string partial_;
  lane_kind partial_kind_{};
  bool corrupt_ = false;
  // worker side
  std::mutex in_mtx_; ///< producers to the driver take turns
};

} // namespace weft::detail
