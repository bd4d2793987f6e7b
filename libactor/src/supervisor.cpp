// weft::supervisor: a supervisor is a weft actor of class supervisor_actor.
//
// Its methods run one at a time (max_concurrency 1) and may block in get()
// (which yields the actor's fiber and holds its slot), so a restart that
// stops and starts several children runs start to end before the
// supervisor looks at anything else. Every child gets a weft::monitor whose
// callback completes the child's "death" cell and posts child_exited(id) to
// the supervisor through a weak reference (a monitor must not keep its
// supervisor alive). A notification for an actor that is no longer the
// current incarnation of a child (one the supervisor stopped itself) is
// stale and ignored. The supervisor actor is created with
// restart_on_exception: to fail (restart intensity reached) it throws from
// its method, which its own parent sees as an abnormal end.
#include "weft/supervisor.hpp"

#include <algorithm>
#include <chrono>
#include <deque>
#include <set>

#include "../../src/log.hpp"
#include "actor_system.hpp"
#include "weft/errors.hpp"
#include "weft/runtime.hpp"

namespace weft::detail {

namespace {

using steady = std::chrono::steady_clock;

/// A counted handle on `core` if it still has one (a weak reference's lock),
/// like get_actor(): an actor whose last handle is gone is ending.
actor_ref lock_weak(actor_core* core) {
  if (core->detached) {
    core->handles.fetch_add(1, std::memory_order_relaxed);
  } else {
    auto n = core->handles.load(std::memory_order_acquire);
    do {
      if (n == 0)
        return {};
    } while (!core->handles.compare_exchange_weak(n, n + 1, std::memory_order_acq_rel));
  }
  core->add_ref();
  return actor_ref::adopt(core);
}

/// A call that does nothing: it runs once the actor's constructor has
/// finished, and fails if the actor died instead.
class ping_call final : public actor_call {
public:
  explicit ping_call(object_ptr ret) : actor_call(std::span<object_ptr>(&ret_, 1), {}, nullptr), ret_(std::move(ret)) {}
  call_status invoke(void*) override {
    static_cast<value_object<bool>*>(ret_.get())->emplace(true);
    return call_status::finished;
  }

private:
  object_ptr ret_;
};

std::string what_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

/// Every spec problem, in words; "" when the spec is fine.
std::string check_spec(const child_spec& s) {
  if (s.id.empty())
    return "weft::supervisor: a child_spec has an empty id; expected a non-empty id, unique within its supervisor";
  if (!s.start)
    return "weft::supervisor: child_spec '" + s.id + "' has no start function";
  if (s.shutdown && s.shutdown->count() < 0)
    return "weft::supervisor: child_spec '" + s.id + "' has shutdown = " + std::to_string(s.shutdown->count()) +
           " ms; expected >= 0 (or unset)";
  return {};
}

const char* strategy_name(restart_strategy s) {
  switch (s) {
  case restart_strategy::one_for_one:
    return "one_for_one";
  case restart_strategy::one_for_all:
    return "one_for_all";
  case restart_strategy::rest_for_one:
    return "rest_for_one";
  }
  return "?";
}

} // namespace

/// What a supervisor's method answers: an error kind and text, or a child.
struct sup_reply {
  enum kind_t { ok, bad_argument, start_failed } kind = ok;
  std::string error;
  child_ref ref;
};

class supervisor_actor {
public:
  supervisor_actor(const supervisor_flags& flags, const std::vector<child_spec>& specs) : flags_(flags) {
    for (const auto& s : specs)
      children_.push_back(child{s});
  }

  // Reached by stop_all(), a failure, or the last handle going away: kills
  // what still runs, latest first (without waiting: this may not block).
  ~supervisor_actor() {
    for (auto it = children_.rbegin(); it != children_.rend(); ++it) {
      if (it->status != child_status::running)
        continue;
      try {
        kill_actor(it->ref.ref(), nullptr, true);
      } catch (...) {
        // The runtime is gone: so is the child.
      }
    }
  }

  sup_reply init(const core_ptr& self) {
    self_ = self;
    for (std::size_t k = 0; k < children_.size(); ++k) {
      std::string err = launch(children_[k]);
      if (!err.empty()) {
        for (std::size_t j = k; j-- > 0;)
          halt(children_[j]);
        weft::exit_actor();
        return {sup_reply::start_failed,
                "weft::supervisor: child '" + children_[k].spec.id + "' failed to start: " + err,
                {}};
      }
    }
    return {};
  }

  void child_exited(actor_id aid) {
    auto it = std::find_if(children_.begin(), children_.end(),
                           [aid](const child& c) { return c.status == child_status::running && c.ref.id() == aid; });
    if (it == children_.end())
      return; // stale: a child this supervisor stopped itself
    const actor_exit e = static_cast<const value_object<actor_exit>*>(it->death.get())->value();
    it->ref = child_ref();
    it->death = object_ptr();
    it->status = child_status::undefined;
    const std::string id = it->spec.id;
    const restart_type rt = it->spec.restart;
    if (shutting_down())
      return; // weft::shutdown() ends every actor: nothing to restart
    if (rt == restart_type::temporary) {
      log().info("{}: temporary child '{}' ended ({}); not restarted", describe(), id, e.cause);
      children_.erase(it);
      return;
    }
    if (rt == restart_type::transient && e.normal) {
      log().info("{}: transient child '{}' ended normally ({}); not restarted", describe(), id, e.cause);
      return;
    }
    log().info("{}: child '{}' ended ({}); {} restart", describe(), id, e.cause, strategy_name(flags_.strategy));
    if (!count_restart())
      give_up("child '" + id + "' ended (" + e.cause + ")");
    restart_group(id);
  }

  void retry(const std::string& id) {
    child* c = find(id);
    if (!c || c->status != child_status::restarting || shutting_down())
      return;
    if (!count_restart())
      give_up("child '" + id + "' could not be restarted");
    restart_group(id);
  }

  std::vector<child_info> which() const {
    std::vector<child_info> out;
    out.reserve(children_.size());
    for (const auto& c : children_)
      out.push_back(child_info{c.spec.id, c.status, c.ref, c.spec.type});
    return out;
  }

  child_counts count() const {
    child_counts n;
    for (const auto& c : children_) {
      ++n.specs;
      if (c.status == child_status::running)
        ++n.active;
      if (c.spec.type == child_type::supervisor)
        ++n.supervisors;
      else
        ++n.workers;
    }
    return n;
  }

  child_ref running(const std::string& id) const {
    for (const auto& c : children_)
      if (c.spec.id == id && c.status == child_status::running)
        return c.ref;
    return {};
  }

  sup_reply add(const child_spec& spec) {
    if (std::string err = check_spec(spec); !err.empty())
      return {sup_reply::bad_argument, err, {}};
    if (find(spec.id))
      return {sup_reply::bad_argument, "weft::supervisor::start_child: a child with id '" + spec.id + "' exists", {}};
    children_.push_back(child{spec});
    std::string err = launch(children_.back());
    if (!err.empty()) {
      children_.pop_back();
      return {sup_reply::start_failed, "weft::supervisor: child '" + spec.id + "' failed to start: " + err, {}};
    }
    return {sup_reply::ok, {}, children_.back().ref};
  }

  sup_reply terminate(const std::string& id) {
    child* c = find(id);
    if (!c)
      return unknown("terminate_child", id);
    halt(*c);
    c->status = child_status::undefined;
    if (c->spec.restart == restart_type::temporary)
      erase(id);
    return {};
  }

  sup_reply restart(const std::string& id) {
    child* c = find(id);
    if (!c)
      return unknown("restart_child", id);
    if (c->status != child_status::undefined)
      return {sup_reply::bad_argument,
              "weft::supervisor::restart_child: child '" + id + "' is " +
                (c->status == child_status::running ? "running" : "restarting") + "; terminate_child() it first",
              {}};
    std::string err = launch(*c);
    if (!err.empty())
      return {sup_reply::start_failed, "weft::supervisor: child '" + id + "' failed to start: " + err, {}};
    return {sup_reply::ok, {}, c->ref};
  }

  sup_reply remove(const std::string& id) {
    child* c = find(id);
    if (!c)
      return unknown("delete_child", id);
    if (c->status != child_status::undefined)
      return {sup_reply::bad_argument,
              "weft::supervisor::delete_child: child '" + id + "' is " +
                (c->status == child_status::running ? "running" : "restarting") + "; terminate_child() it first",
              {}};
    erase(id);
    return {};
  }

  void stop_all() {
    for (auto it = children_.rbegin(); it != children_.rend(); ++it)
      halt(*it);
    weft::exit_actor();
  }

private:
  struct child {
    explicit child(child_spec s) : spec(std::move(s)) {}
    child_spec spec;
    child_ref ref;    ///< the live actor while running
    object_ptr death; ///< value_object<actor_exit>, completed by its monitor
    child_status status = child_status::undefined;
  };

  std::string describe() const { return "supervisor " + (self_.get() ? to_string(self_->id) : std::string("?")); }

  child* find(const std::string& id) {
    for (auto& c : children_)
      if (c.spec.id == id)
        return &c;
    return nullptr;
  }

  void erase(const std::string& id) {
    std::erase_if(children_, [&](const child& c) { return c.spec.id == id; });
  }

  static sup_reply unknown(const char* what, const std::string& id) {
    return {sup_reply::bad_argument, std::string("weft::supervisor::") + what + ": no child with id '" + id + "'", {}};
  }

  /// True once this supervisor is being killed: its blocking calls throw
  /// then, and that must unwind the method rather than count as a child's
  /// failure.
  bool going_away() const {
    std::lock_guard<std::mutex> lock(self_->mtx);
    return self_->state == actor_state::failing || self_->state == actor_state::dead;
  }

  bool shutting_down() const { return self_->sys->rt().stopping(); }

  template <class M, class... A>
  void post_self(M method, A&&... args) {
    actor_ref h = lock_weak(self_.get());
    if (h)
      actor_handle<supervisor_actor>(std::move(h)).task(method).remote(std::forward<A>(args)...);
  }

  /// Starts `c` and waits for its constructor. "" on success, else why not.
  std::string launch(child& c) {
    child_ref r;
    try {
      r = c.spec.start();
    } catch (...) {
      if (going_away())
        throw;
      return "its start function threw: " + what_of(std::current_exception());
    }
    if (!r.valid())
      return "its start function returned an invalid child_ref";

    auto* cell = new value_object<actor_exit>();
    object_ptr death(cell);
    core_ptr self = self_;
    // The notification is posted before the cell completes: a supervisor
    // that waits on the cell finds it queued ahead of later calls.
    monitor_actor(r.ref(), nullptr, [death, self](const actor_exit& e) {
      auto* v = static_cast<value_object<actor_exit>*>(death.get());
      v->emplace(e);
      try {
        if (actor_ref h = lock_weak(self.get()))
          actor_handle<supervisor_actor>(std::move(h)).task(&supervisor_actor::child_exited).remote(e.id);
      } catch (...) {
        // The runtime is shutting down; nobody is left to tell.
      }
      v->complete_value();
    });

    object_ptr pong_cell(new value_object<bool>());
    object_ref<bool> pong(pong_cell);
    auto* ping = new ping_call(std::move(pong_cell));
    ping->target = r.ref();
    submit_call(ping);
    try {
      weft::get(pong);
    } catch (...) {
      if (!pong.is_ready() || going_away())
        throw;
      return what_of(std::current_exception());
    }
    c.ref = std::move(r);
    c.death = std::move(death);
    c.status = child_status::running;
    return {};
  }

  /// Stops `c` if it runs and waits (up to its shutdown limit) for its end.
  /// A supervisor child first gets the chance to stop its own children.
  void halt(child& c) {
    if (c.status != child_status::running) {
      c.status = child_status::undefined;
      return;
    }
    child_ref r = std::move(c.ref);
    object_ref<actor_exit> ended(std::move(c.death));
    c.ref = child_ref();
    c.death = object_ptr();
    c.status = child_status::undefined;
    std::optional<std::chrono::milliseconds> limit = c.spec.shutdown;
    if (!limit && c.spec.type == child_type::worker)
      limit = std::chrono::seconds(5);
    if (auto sub = r.as<supervisor_actor>())
      sub->task(&supervisor_actor::stop_all).remote();
    else
      kill_actor(r.ref(), nullptr, true);
    try {
      if (limit)
        weft::get(ended, *limit);
      else
        weft::get(ended);
    } catch (const get_timeout_error&) {
      log().warn("{}: child '{}' did not end within {} ms of being stopped; moving on", describe(), c.spec.id,
                 limit->count());
      kill_actor(r.ref(), nullptr, true);
    }
  }

  /// Records one restart; false when that is more than the intensity allows.
  bool count_restart() {
    const auto now = steady::now();
    restarts_.push_back(now);
    while (!restarts_.empty() && now - restarts_.front() > flags_.period)
      restarts_.pop_front();
    return static_cast<int>(restarts_.size()) <= flags_.intensity;
  }

  /// Restart intensity reached: stop everything, latest first, and fail.
  [[noreturn]] void give_up(const std::string& last) {
    const std::string why = "it reached its restart intensity (more than " + std::to_string(flags_.intensity) +
                            " restarts within " + std::to_string(flags_.period.count()) + " ms); last: " + last;
    log().warn("{} gives up: {}", describe(), why);
    for (auto it = children_.rbegin(); it != children_.rend(); ++it)
      halt(*it);
    throw error("weft::supervisor: " + why);
  }

  /// The restart a failure of child `id` calls for under the strategy:
  /// stop the other affected children that run (latest first), then start
  /// the affected ones (in start order). A start that fails marks it and
  /// the rest as restarting and retries through a message.
  void restart_group(const std::string& id) {
    std::size_t i = 0;
    while (children_[i].spec.id != id)
      ++i;
    std::size_t from = i;
    std::size_t to = i + 1;
    if (flags_.strategy == restart_strategy::one_for_all) {
      from = 0;
      to = children_.size();
    } else if (flags_.strategy == restart_strategy::rest_for_one) {
      to = children_.size();
    }
    std::vector<std::string> to_start; // latest first for now
    std::vector<std::string> dropped;
    for (std::size_t k = to; k-- > from;) {
      child& c = children_[k];
      if (k == i || c.status == child_status::restarting) {
        to_start.push_back(c.spec.id);
      } else if (c.status == child_status::running) {
        halt(c);
        if (c.spec.restart == restart_type::temporary)
          dropped.push_back(c.spec.id);
        else
          to_start.push_back(c.spec.id);
      }
    }
    for (const auto& d : dropped)
      erase(d);
    std::reverse(to_start.begin(), to_start.end());
    for (std::size_t k = 0; k < to_start.size(); ++k) {
      child* c = find(to_start[k]);
      if (!c)
        continue;
      std::string err = launch(*c);
      if (err.empty())
        continue;
      log().warn("{}: child '{}' failed to restart: {}", describe(), c->spec.id, err);
      for (std::size_t j = k; j < to_start.size(); ++j)
        if (child* rest = find(to_start[j]))
          rest->status = child_status::restarting;
      post_self(&supervisor_actor::retry, c->spec.id);
      return;
    }
  }

  supervisor_flags flags_;
  std::vector<child> children_; ///< in start order
  std::deque<steady::time_point> restarts_;
  core_ptr self_; ///< does not keep the actor alive
};

void throw_wrong_child_type(const std::string& id, const std::type_info& has, const std::type_info& want) {
  throw invalid_argument_error("weft::supervisor::child<" + demangled(want.name()) + ">: child '" + id + "' is a " +
                               demangled(has.name()));
}

namespace {

child_ref answer(const sup_reply& r) {
  switch (r.kind) {
  case sup_reply::bad_argument:
    throw invalid_argument_error(r.error);
  case sup_reply::start_failed:
    throw error(r.error);
  case sup_reply::ok:
    break;
  }
  return r.ref;
}

void check_handle(const actor_handle<supervisor_actor>& h, const char* what) {
  if (!h.valid())
    throw invalid_argument_error(std::string("weft::supervisor::") + what +
                                 ": the supervisor handle is invalid (default-constructed or moved-from)");
}

} // namespace

} // namespace weft::detail

namespace weft {

using detail::supervisor_actor;

supervisor supervisor::start(const supervisor_flags& flags, std::vector<child_spec> children) {
  if (is_worker_process())
    throw error("weft::supervisor::start: a supervisor cannot be started in a worker process: it runs in the "
                "driver, and its child specs' start functions are closures of this process, which cannot travel "
                "there; start the supervisor in the driver and pass its children's actor handles to tasks");
  if (flags.intensity < 0)
    throw invalid_argument_error("weft::supervisor: flag intensity = " + std::to_string(flags.intensity) +
                                 " is invalid; expected >= 0");
  if (flags.period.count() <= 0)
    throw invalid_argument_error("weft::supervisor: flag period = " + std::to_string(flags.period.count()) +
                                 " ms is invalid; expected > 0");
  std::set<std::string> ids;
  for (const auto& s : children) {
    if (std::string err = detail::check_spec(s); !err.empty())
      throw invalid_argument_error(err);
    if (!ids.insert(s.id).second)
      throw invalid_argument_error("weft::supervisor: two child specs have the id '" + s.id +
                                   "'; ids must be unique within a supervisor");
  }
  auto h = remote<supervisor_actor>({.max_restarts = 0, .restart_on_exception = true}).remote(flags, children);
  detail::core_ptr self(h.ref().get());
  detail::answer(get(h.task(&supervisor_actor::init).remote(self)));
  return supervisor(std::move(h));
}

child_spec supervisor::spec(std::string id, supervisor_flags flags, std::vector<child_spec> children,
                            restart_type restart) {
  return child_spec{
    .id = std::move(id),
    .start = [flags, children = std::move(children)]() -> child_ref { return supervisor::start(flags, children); },
    .restart = restart,
    .type = child_type::supervisor};
}

std::optional<supervisor> supervisor::from(const child_ref& ref) {
  if (auto h = ref.as<supervisor_actor>())
    return supervisor(std::move(*h));
  return std::nullopt;
}

supervisor::operator child_ref() const { return child_ref(h_.ref(), typeid(supervisor_actor)); }

std::vector<child_info> supervisor::which_children() const {
  detail::check_handle(h_, "which_children");
  return get(h_.task(&supervisor_actor::which).remote());
}

child_counts supervisor::count_children() const {
  detail::check_handle(h_, "count_children");
  return get(h_.task(&supervisor_actor::count).remote());
}

std::optional<child_ref> supervisor::child_ref_of(const std::string& id) const {
  detail::check_handle(h_, "child");
  child_ref r = get(h_.task(&supervisor_actor::running).remote(id));
  if (!r.valid())
    return std::nullopt;
  return r;
}

child_ref supervisor::start_child(child_spec spec) const {
  detail::check_handle(h_, "start_child");
  return detail::answer(get(h_.task(&supervisor_actor::add).remote(std::move(spec))));
}

void supervisor::terminate_child(const std::string& id) const {
  detail::check_handle(h_, "terminate_child");
  detail::answer(get(h_.task(&supervisor_actor::terminate).remote(id)));
}

child_ref supervisor::restart_child(const std::string& id) const {
  detail::check_handle(h_, "restart_child");
  return detail::answer(get(h_.task(&supervisor_actor::restart).remote(id)));
}

void supervisor::delete_child(const std::string& id) const {
  detail::check_handle(h_, "delete_child");
  detail::answer(get(h_.task(&supervisor_actor::remove).remote(id)));
}

void supervisor::stop() const {
  detail::check_handle(h_, "stop");
  detail::object_ptr cell(new detail::value_object<actor_exit>());
  object_ref<actor_exit> ended(cell);
  monitor(h_, [cell](const actor_exit& e) {
    auto* v = static_cast<detail::value_object<actor_exit>*>(cell.get());
    v->emplace(e);
    v->complete_value();
  });
  h_.task(&supervisor_actor::stop_all).remote();
  get(ended);
}

} // namespace weft
