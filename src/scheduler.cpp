#include "scheduler.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <thread>
#include <unistd.h>

#include "weft/errors.hpp"

namespace weft::detail {

namespace {

std::string number(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

/// Checks one requested amount: finite, non-negative, whole above 1.
std::int64_t to_units(double v, const std::string& field, bool whole_above_one) {
  if (std::isnan(v) || std::isinf(v) || v < 0)
    throw invalid_argument_error("weft: " + field + " = " + number(v) + " is invalid; expected a finite number >= 0");
  if (whole_above_one && v > 1 && v != std::floor(v))
    throw invalid_argument_error("weft: " + field + " = " + number(v) +
                                 " is invalid; fractional amounts are allowed only up to 1 (e.g. 0.5), above 1 "
                                 "only whole numbers");
  return static_cast<std::int64_t>(std::llround(v * static_cast<double>(resource_unit)));
}

std::string units(std::int64_t u) { return number(static_cast<double>(u) / resource_unit); }

} // namespace

node_resources node_resources::from_config(const config& cfg) {
  node_resources n;
  double cpus = cfg.num_cpus ? *cfg.num_cpus : static_cast<double>(std::max(1u, std::thread::hardware_concurrency()));
  n.cpu = to_units(cpus, "config.num_cpus", false);
  n.gpu = to_units(cfg.num_gpus, "config.num_gpus", false);
  if (cfg.num_gpus != std::floor(cfg.num_gpus))
    throw invalid_argument_error("weft: config.num_gpus = " + number(cfg.num_gpus) +
                                 " is invalid; a node has a whole number of GPUs");
  if (cfg.memory) {
    n.memory = static_cast<std::int64_t>(to_units(*cfg.memory, "config.memory", false) / resource_unit);
  } else {
    auto pages = ::sysconf(_SC_PHYS_PAGES);
    auto page = ::sysconf(_SC_PAGESIZE);
    n.memory = static_cast<std::int64_t>(static_cast<double>(pages) * static_cast<double>(page) * 0.7);
  }
  for (const auto& [name, amount] : cfg.resources) {
    if (name.empty())
      throw invalid_argument_error("weft: config.resources has an empty resource name");
    if (name == "CPU" || name == "GPU" || name == "memory")
      throw invalid_argument_error("weft: config.resources[\"" + name + "\"]: '" + name +
                                   "' is a built-in resource; set config.num_cpus, num_gpus or memory instead");
    n.custom_names.push_back(name);
    n.custom.push_back(to_units(amount, "config.resources[\"" + name + "\"]", false));
  }
  return n;
}

int node_resources::custom_index(const std::string& name) const {
  for (std::size_t i = 0; i < custom_names.size(); ++i)
    if (custom_names[i] == name)
      return static_cast<int>(i);
  return -1;
}

std::string node_resources::describe() const {
  std::ostringstream os;
  os << "CPU=" << units(cpu) << ", GPU=" << units(gpu) << ", memory=" << memory;
  for (std::size_t i = 0; i < custom.size(); ++i)
    os << ", " << custom_names[i] << "=" << units(custom[i]);
  return os.str();
}

void validate_task_options(const task_options& opts) {
  if (opts.max_retries && *opts.max_retries < -1)
    throw invalid_argument_error("weft: task_options.max_retries = " + std::to_string(*opts.max_retries) +
                                 " is invalid; expected -1 (retry forever), 0 (never) or a positive count");
  if (opts.max_calls && *opts.max_calls < 0)
    throw invalid_argument_error("weft: task_options.max_calls = " + std::to_string(*opts.max_calls) +
                                 " is invalid; expected 0 (unlimited) or a positive count");
}

resource_demand resolve_demand(const task_options& opts, const node_resources& node, const std::string& task_name,
                               const std::string& options_type) {
  resource_demand d;
  d.cpu = opts.num_cpus ? to_units(*opts.num_cpus, options_type + ".num_cpus", true) : resource_unit;
  d.gpu = opts.num_gpus ? to_units(*opts.num_gpus, options_type + ".num_gpus", true) : 0;
  if (opts.memory) {
    if (std::isnan(*opts.memory) || std::isinf(*opts.memory) || *opts.memory < 0)
      throw invalid_argument_error("weft: " + options_type + ".memory = " + number(*opts.memory) +
                                   " is invalid; expected a finite number of bytes >= 0");
    d.memory = static_cast<std::int64_t>(*opts.memory);
  }
  auto infeasible = [&](const std::string& what, const std::string& asked, const std::string& has) {
    throw resource_error("weft: " + task_name + " asks for " + what + " = " + asked + ", but the node has " + has +
                         " (node: " + node.describe() + "); no node could ever run it");
  };
  if (d.cpu > node.cpu)
    infeasible("num_cpus", units(d.cpu), units(node.cpu));
  if (d.gpu > node.gpu)
    infeasible("num_gpus", units(d.gpu), units(node.gpu));
  if (d.memory > node.memory)
    infeasible("memory", std::to_string(d.memory), std::to_string(node.memory));
  {
    for (const auto& [name, amount] : opts.resources) {
      const std::string field = options_type + ".resources[\"" + name + "\"]";
      if (name.empty())
        throw invalid_argument_error("weft: " + options_type + ".resources has an empty resource name");
      if (name == "CPU" || name == "GPU" || name == "memory")
        throw invalid_argument_error("weft: " + field + ": use " + options_type +
                                     ".num_cpus, num_gpus or memory for '" + name + "'");
      auto u = to_units(amount, field, true);
      if (u == 0)
        continue;
      int idx = node.custom_index(name);
      if (idx < 0)
        infeasible("resource '" + name + "'", units(u), "no such resource");
      if (u > node.custom[static_cast<std::size_t>(idx)])
        infeasible("resource '" + name + "'", units(u), units(node.custom[static_cast<std::size_t>(idx)]));
      d.custom.emplace_back(idx, u);
    }
  }
  return d;
}

namespace {
bool same_shape(const resource_demand& a, const resource_demand& b) {
  return a.cpu == b.cpu && a.gpu == b.gpu && a.memory == b.memory && a.custom == b.custom;
}
} // namespace

scheduler::scheduler(node_resources node, std::function<void(void*)> wake) :
  node_(std::move(node)),
  wake_(std::move(wake)),
  cpu_free_(node_.cpu),
  memory_free_(node_.memory),
  gpu_free_(static_cast<std::size_t>(node_.gpu / resource_unit), resource_unit),
  custom_free_(node_.custom) {}

bool scheduler::fits(const resource_demand& d) const noexcept {
  if (d.cpu > cpu_free_ || d.memory > memory_free_)
    return false;
  for (auto& [idx, amount] : d.custom)
    if (amount > custom_free_[static_cast<std::size_t>(idx)])
      return false;
  if (d.gpu == 0)
    return true;
  if (d.gpu < resource_unit) {
    return std::any_of(gpu_free_.begin(), gpu_free_.end(), [&](std::int64_t f) { return f >= d.gpu; });
  }
  auto whole = std::count(gpu_free_.begin(), gpu_free_.end(), resource_unit);
  return whole * resource_unit >= d.gpu;
}

void scheduler::acquire(task_base* t) { take(t->demand, t->gpu_ids); }

void scheduler::take(const resource_demand& d, std::vector<int>& gpu_ids) {
  cpu_free_ -= d.cpu;
  memory_free_ -= d.memory;
  for (auto& [idx, amount] : d.custom)
    custom_free_[static_cast<std::size_t>(idx)] -= amount;
  gpu_ids.clear();
  if (d.gpu == 0)
    return;
  if (d.gpu < resource_unit) {
    // Pack fractions: the GPU with the least room that still fits.
    std::size_t best = gpu_free_.size();
    for (std::size_t i = 0; i < gpu_free_.size(); ++i)
      if (gpu_free_[i] >= d.gpu && (best == gpu_free_.size() || gpu_free_[i] < gpu_free_[best]))
        best = i;
    gpu_free_[best] -= d.gpu;
    gpu_ids.push_back(static_cast<int>(best));
    return;
  }
  auto need = d.gpu / resource_unit;
  for (std::size_t i = 0; i < gpu_free_.size() && need > 0; ++i) {
    if (gpu_free_[i] == resource_unit) {
      gpu_free_[i] = 0;
      gpu_ids.push_back(static_cast<int>(i));
      --need;
    }
  }
}

void scheduler::give_back(task_base* t, bool cpu_only) {
  if (cpu_only)
    cpu_free_ += t->demand.cpu;
  else
    put_back(t->demand, t->gpu_ids);
}

void scheduler::put_back(const resource_demand& d, std::vector<int>& gpu_ids) {
  cpu_free_ += d.cpu;
  memory_free_ += d.memory;
  for (auto& [idx, amount] : d.custom)
    custom_free_[static_cast<std::size_t>(idx)] += amount;
  if (d.gpu > 0) {
    std::int64_t each = d.gpu < resource_unit ? d.gpu : resource_unit;
    for (int id : gpu_ids)
      gpu_free_[static_cast<std::size_t>(id)] += each;
    gpu_ids.clear();
  }
}

void scheduler::grant_reservations_locked(std::vector<reservation>& granted) {
  // Strictly in order: a large request at the front is not starved by
  // smaller ones behind it.
  while (!reservations_.empty() && fits(reservations_.front().demand)) {
    take(reservations_.front().demand, *reservations_.front().gpu_ids);
    granted.push_back(std::move(reservations_.front()));
    reservations_.pop_front();
  }
}

void scheduler::reserve(const resource_demand& d, std::vector<int>* gpu_ids, std::function<void()> granted) {
  std::vector<reservation> now;
  {
    std::lock_guard<spin_then_block_mutex> lock(mtx_);
    // Queue behind earlier waiters so reservations are granted first come, first served.
    reservations_.push_back({d, gpu_ids, std::move(granted)});
    grant_reservations_locked(now);
    has_reservations_.store(!reservations_.empty(), std::memory_order_release);
  }
  for (auto& r : now)
    r.granted();
}

void scheduler::unreserve(const resource_demand& d, std::vector<int>& gpu_ids) {
  void* to_wake = nullptr;
  std::vector<reservation> now;
  {
    std::lock_guard<spin_then_block_mutex> lock(mtx_);
    put_back(d, gpu_ids);
    grant_reservations_locked(now);
    has_reservations_.store(!reservations_.empty(), std::memory_order_release);
    epoch_.fetch_add(1, std::memory_order_release);
    to_wake = take_parked_if_useful_locked();
  }
  for (auto& r : now)
    r.granted();
  if (to_wake)
    wake_(to_wake);
}

std::size_t scheduler::cancel_reservation(const std::vector<int>* gpu_ids) {
  std::lock_guard<spin_then_block_mutex> lock(mtx_);
  auto before = reservations_.size();
  std::erase_if(reservations_, [&](const reservation& r) { return r.gpu_ids == gpu_ids; });
  has_reservations_.store(!reservations_.empty(), std::memory_order_release);
  return before - reservations_.size();
}

void scheduler::insert_sorted(std::deque<task_base*>& q, task_base* t) {
  // Nested tasks carry decreasing negative keys (front), others increasing
  // positive keys (back), so both ends keep the deque sorted.
  if (t->order < 0)
    q.push_front(t);
  else
    q.push_back(t);
}

bool scheduler::push(task_base* t) {
  bool pushed = false;
  push_and_pop(t, pushed, false);
  return pushed;
}

scheduler::work scheduler::push_and_pop(task_base* t, bool& pushed, bool pop) {
  work w;
  void* to_wake = nullptr;
  {
    std::lock_guard<spin_then_block_mutex> lock(mtx_);
    pushed = false;
    if (closed_)
      return w;
    pushed = true;
    ++seq_;
    t->order = t->nested ? -seq_ : seq_;
    shape_queue* sq = nullptr;
    for (auto& s : shapes_)
      if (same_shape(s.demand, t->demand)) {
        sq = &s;
        break;
      }
    if (!sq) {
      shapes_.push_back(shape_queue{t->demand, {}});
      sq = &shapes_.back();
    }
    insert_sorted(sq->tasks, t);
    ++queued_;
    epoch_.fetch_add(1, std::memory_order_release);
    if (pop)
      w = pop_locked();
    to_wake = take_parked_if_useful_locked();
  }
  if (to_wake)
    wake_(to_wake);
  return w;
}

void scheduler::push_resume(task_base* t) {
  void* to_wake = nullptr;
  {
    std::lock_guard<spin_then_block_mutex> lock(mtx_);
    resumes_.push_back(t);
    epoch_.fetch_add(1, std::memory_order_release);
    to_wake = take_parked_if_useful_locked();
  }
  if (to_wake)
    wake_(to_wake);
}

void* scheduler::take_parked_if_useful_locked() {
  if (parked_.empty())
    return nullptr;
  auto runnable = queued_ + resumes_.size();
  auto coming = spinning_.load(std::memory_order_acquire) + finishing_.load(std::memory_order_acquire);
  if (runnable <= static_cast<std::size_t>(coming))
    return nullptr;
  if (!anything_fits_locked())
    return nullptr;
  void* e = parked_.back();
  parked_.pop_back();
  return e;
}

bool scheduler::anything_fits_locked() {
  if (!resumes_.empty() && resumes_.front()->demand.cpu <= cpu_free_)
    return true;
  for (auto& s : shapes_)
    if (!s.tasks.empty() && fits(s.demand))
      return true;
  return false;
}

scheduler::work scheduler::pop_locked() {
  if (!resumes_.empty()) {
    task_base* t = resumes_.front();
    if (t->demand.cpu <= cpu_free_) {
      resumes_.pop_front();
      cpu_free_ -= t->demand.cpu;
      return {t, true};
    }
  }
  for (;;) {
    shape_queue* best = nullptr;
    for (auto& s : shapes_) {
      if (s.tasks.empty() || !fits(s.demand))
        continue;
      if (!best || s.tasks.front()->order < best->tasks.front()->order)
        best = &s;
    }
    if (!best)
      return {};
    task_base* t = best->tasks.front();
    best->tasks.pop_front();
    --queued_;
    auto expected = task_phase::queued;
    if (!t->phase.compare_exchange_strong(expected, task_phase::running, std::memory_order_acq_rel)) {
      // Cancelled while queued: cancel() already completed its refs.
      t->release();
      continue;
    }
    acquire(t);
    return {t, false};
  }
}

task_base* scheduler::take_follower(const resource_demand& d) {
  std::lock_guard<spin_then_block_mutex> lock(mtx_);
  if (d.gpu != 0 || !resumes_.empty() || has_reservations_.load(std::memory_order_relaxed) || fits(d))
    return nullptr;
  shape_queue* mine = nullptr;
  for (auto& s : shapes_)
    if (same_shape(s.demand, d))
      mine = &s;
  while (mine && !mine->tasks.empty()) {
    task_base* t = mine->tasks.front();
    if (t->nested)
      return nullptr;
    for (auto& s : shapes_) // never ahead of an older task of another shape
      if (&s != mine && !s.tasks.empty() && s.tasks.front()->order < t->order)
        return nullptr;
    mine->tasks.pop_front();
    --queued_;
    auto expected = task_phase::queued;
    if (t->phase.compare_exchange_strong(expected, task_phase::running, std::memory_order_acq_rel))
      return t;
    t->release(); // cancelled while queued
  }
  return nullptr;
}

bool scheduler::requeue_follower(task_base* t) {
  void* to_wake = nullptr;
  {
    std::lock_guard<spin_then_block_mutex> lock(mtx_);
    if (closed_)
      return false;
    auto expected = task_phase::running;
    if (!t->phase.compare_exchange_strong(expected, task_phase::queued, std::memory_order_acq_rel))
      return false;
    for (auto& s : shapes_)
      if (same_shape(s.demand, t->demand)) {
        insert_sorted(s.tasks, t); // keeps its old place: `order` is unchanged
        break;
      }
    ++queued_;
    epoch_.fetch_add(1, std::memory_order_release);
    to_wake = take_parked_if_useful_locked();
  }
  if (to_wake)
    wake_(to_wake);
  return true;
}

scheduler::work scheduler::pop() {
  work w;
  void* to_wake = nullptr;
  {
    std::lock_guard<spin_then_block_mutex> lock(mtx_);
    w = pop_locked();
    if (w)
      to_wake = take_parked_if_useful_locked();
  }
  if (to_wake)
    wake_(to_wake);
  return w;
}

scheduler::work scheduler::finish_and_pop(task_base* t, bool pop) {
  work w;
  void* to_wake = nullptr;
  std::vector<reservation> granted;
  {
    std::lock_guard<spin_then_block_mutex> lock(mtx_);
    give_back(t, false);
    if (has_reservations_.load(std::memory_order_relaxed)) {
      grant_reservations_locked(granted);
      has_reservations_.store(!reservations_.empty(), std::memory_order_release);
    }
    finishing_.fetch_sub(1, std::memory_order_acq_rel);
    epoch_.fetch_add(1, std::memory_order_release);
    if (pop)
      w = pop_locked();
    to_wake = take_parked_if_useful_locked();
  }
  for (auto& r : granted)
    r.granted();
  if (to_wake)
    wake_(to_wake);
  return w;
}

void scheduler::reacquire_cpu(task_base* t) {
  std::lock_guard<spin_then_block_mutex> lock(mtx_);
  cpu_free_ -= t->demand.cpu;
}

void scheduler::release_cpu(task_base* t) {
  void* to_wake = nullptr;
  std::vector<reservation> granted;
  {
    std::lock_guard<spin_then_block_mutex> lock(mtx_);
    give_back(t, true);
    if (has_reservations_.load(std::memory_order_relaxed)) {
      grant_reservations_locked(granted);
      has_reservations_.store(!reservations_.empty(), std::memory_order_release);
    }
    epoch_.fetch_add(1, std::memory_order_release);
    to_wake = take_parked_if_useful_locked();
  }
  for (auto& r : granted)
    r.granted();
  if (to_wake)
    wake_(to_wake);
}

bool scheduler::try_start_spinning() noexcept {
  int expected = 0;
  return spinning_.compare_exchange_strong(expected, 1, std::memory_order_acq_rel);
}

void scheduler::stop_spinning() noexcept { spinning_.store(0, std::memory_order_release); }

void scheduler::wake_if_needed() {
  void* to_wake = nullptr;
  {
    std::lock_guard<spin_then_block_mutex> lock(mtx_);
    to_wake = take_parked_if_useful_locked();
  }
  if (to_wake)
    wake_(to_wake);
}

bool scheduler::park(void* executor) {
  std::lock_guard<spin_then_block_mutex> lock(mtx_);
  if (anything_fits_locked())
    return false;
  parked_.push_back(executor);
  return true;
}

std::vector<task_base*> scheduler::drain() {
  std::lock_guard<spin_then_block_mutex> lock(mtx_);
  closed_ = true;
  std::vector<task_base*> out;
  for (auto& s : shapes_) {
    for (auto* t : s.tasks)
      out.push_back(t);
    s.tasks.clear();
  }
  queued_ = 0;
  return out;
}

} // namespace weft::detail
