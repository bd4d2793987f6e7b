// weft::actor_pool: the bookkeeping that does not depend on the actor or result type.
#include "weft/actor_pool.hpp"

#include <algorithm>
#include <string>

#include "../../src/runtime.hpp"

namespace weft::detail {

pool_core::pool_core(std::vector<actor_ref> actors) {
  for (auto& a : actors)
    push(std::move(a), "actor_pool");
}

std::uint64_t pool_core::submit(std::unique_ptr<pool_work> work, const std::type_info& type) {
  const std::uint64_t seq = next_seq_++;
  item& it = items_[seq];
  it.type = &type;
  it.work = std::move(work);
  waiting_.push_back(seq);
  progress();
  return seq;
}

void pool_core::progress() {
  for (;;) {
    // Finished calls give their actors back, in the order they were started.
    std::erase_if(running_, [this](std::uint64_t seq) {
      item& it = items_.at(seq);
      if (!it.cell->done())
        return false;
      idle_.push_back(std::move(it.actor));
      it.actor = actor_ref();
      finished_.push_back(seq);
      return true;
    });
    std::erase_if(orphans_, [this](orphan& o) {
      if (!o.cell->done())
        return false;
      idle_.push_back(std::move(o.actor));
      return true;
    });
    if (idle_.empty() || waiting_.empty())
      return;
    while (!idle_.empty() && !waiting_.empty()) {
      const std::uint64_t seq = waiting_.front();
      waiting_.pop_front();
      item& it = items_.at(seq);
      it.actor = std::move(idle_.front());
      idle_.pop_front();
      it.cell = it.work->start(it.actor);
      it.work.reset();
      running_.push_back(seq);
    }
    // Calls that finished at once (or failed to start) free their actors
    // for the next round.
  }
}

bool pool_core::has_free() {
  progress();
  return !idle_.empty() && waiting_.empty();
}

void pool_core::push(actor_ref actor, const char* what) {
  if (!actor)
    throw invalid_argument_error(std::string("weft::actor_pool::") + what +
                                 ": the actor_handle is invalid (default-constructed or moved-from)");
  auto same = [&](const actor_ref& a) { return a.get() == actor.get(); };
  bool known = std::any_of(idle_.begin(), idle_.end(), same) ||
               std::any_of(orphans_.begin(), orphans_.end(), [&](const orphan& o) { return same(o.actor); });
  for (std::uint64_t seq : running_)
    known = known || same(items_.at(seq).actor);
  if (known)
    throw invalid_argument_error(std::string("weft::actor_pool::") + what + ": actor " +
                                 weft::to_string(id_of(actor.get())) + " is already in the pool");
  idle_.push_back(std::move(actor));
  progress();
}

actor_ref pool_core::pop_idle() {
  progress();
  if (idle_.empty())
    return {};
  actor_ref a = std::move(idle_.front());
  idle_.pop_front();
  return a;
}

pool_core::item& pool_core::find(std::uint64_t seq, const char* what) {
  auto it = items_.find(seq);
  if (it == items_.end())
    throw error(std::string("weft::actor_pool::") + what + ": item #" + std::to_string(seq) +
                " was already returned or discarded");
  return it->second;
}

void pool_core::check_type(std::uint64_t seq, const item& it, const std::type_info& type, const char* what) const {
  if (*it.type != type)
    throw invalid_argument_error(std::string("weft::actor_pool::") + what + "<" + demangled(type.name()) + ">: item #" +
                                 std::to_string(seq) + " produces a " + demangled(it.type->name()) +
                                 "; ask for that type (the value type of the object_ref fn returns)");
}

object_ptr pool_core::remove(std::uint64_t seq) {
  auto node = items_.extract(seq);
  std::erase(finished_, seq);
  if (node.mapped().actor) { // not reaped yet: its actor stays in the pool
    std::erase(running_, seq);
    idle_.push_back(std::move(node.mapped().actor));
  }
  return std::move(node.mapped().cell);
}

bool pool_core::wait_for_any(std::int64_t deadline_ns) {
  std::vector<object_state*> cells;
  cells.reserve(running_.size() + orphans_.size());
  for (std::uint64_t seq : running_)
    cells.push_back(items_.at(seq).cell.get());
  for (const orphan& o : orphans_)
    cells.push_back(o.cell.get());
  if (cells.empty())
    return true; // nothing can finish: the caller decides
  return !await_some(cells, 1, deadline_ns).empty();
}

void pool_core::throw_timeout(std::uint64_t seq, const char* what) const {
  const item& it = items_.at(seq);
  throw get_timeout_error(std::string("weft::actor_pool::") + what + ": timed out; item #" + std::to_string(seq) +
                          (it.work ? " is still waiting for an idle actor" : " is still running") +
                          " (it stays in the pool)");
}

object_ptr pool_core::take(std::uint64_t seq, std::int64_t deadline_ns, const std::type_info& type, const char* what) {
  check_type(seq, find(seq, what), type, what);
  for (;;) {
    progress();
    // Done as progress() saw it (started, actor given back); a cell that
    // finished after progress() looked waits for the next round.
    const item& it = find(seq, what);
    if (it.cell && !it.actor)
      return remove(seq);
    if (running_.empty() && orphans_.empty())
      throw error(std::string("weft::actor_pool::") + what + ": item #" + std::to_string(seq) +
                  " can never start: the pool has no actors (push() one)");
    if (deadline_ns != 0 && now_ns() >= deadline_ns)
      throw_timeout(seq, what);
    if (!wait_for_any(deadline_ns))
      throw_timeout(seq, what);
  }
}

object_ptr pool_core::take_oldest(std::int64_t deadline_ns, const std::type_info& type, const char* what) {
  if (items_.empty())
    throw error(std::string("weft::actor_pool::") + what +
                ": no results left: every submitted item was already returned (check has_next())");
  return take(items_.begin()->first, deadline_ns, type, what);
}

object_ptr pool_core::take_first_done(std::uint64_t lo, std::uint64_t hi, std::int64_t deadline_ns,
                                      const std::type_info& type, const char* what) {
  auto first = items_.lower_bound(lo);
  if (first == items_.end() || first->first >= hi)
    throw error(std::string("weft::actor_pool::") + what +
                ": no results left: every submitted item was already returned (check has_next())");
  for (;;) {
    progress();
    for (std::uint64_t seq : finished_) {
      if (seq >= lo && seq < hi) {
        check_type(seq, items_.at(seq), type, what);
        return remove(seq);
      }
    }
    if (running_.empty() && orphans_.empty())
      throw error(std::string("weft::actor_pool::") + what +
                  ": the items left can never start: the pool has no actors (push() one)");
    if ((deadline_ns != 0 && now_ns() >= deadline_ns) || !wait_for_any(deadline_ns))
      throw get_timeout_error(std::string("weft::actor_pool::") + what + ": timed out with " +
                              std::to_string(running_.size()) + " item(s) running and " +
                              std::to_string(waiting_.size()) + " waiting for an idle actor (they stay in the pool)");
  }
}

void pool_core::discard(std::uint64_t lo, std::uint64_t hi) {
  for (auto it = items_.lower_bound(lo); it != items_.end() && it->first < hi;) {
    const std::uint64_t seq = it->first;
    if (it->second.actor) {
      orphans_.push_back(orphan{std::move(it->second.cell), std::move(it->second.actor)});
      std::erase(running_, seq);
    }
    std::erase(waiting_, seq);
    std::erase(finished_, seq);
    it = items_.erase(it);
  }
  progress();
}

} // namespace weft::detail
