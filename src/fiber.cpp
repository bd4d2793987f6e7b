#include "fiber.hpp"

#include <new>
#include <sys/mman.h>
#include <unistd.h>

#include <boost/context/stack_context.hpp>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define WEFT_ASAN 1
#else
#define WEFT_ASAN 0
#endif

namespace weft::detail {

/// mmap'ed stack with a guard page below it, so an overflow faults at once
/// instead of corrupting memory. Pages are committed only when touched.
struct fiber_stack {
  std::size_t size;
  fiber* owner;

  boost::context::stack_context allocate() {
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    const std::size_t usable = (size + page - 1) / page * page;
    void* base =
      ::mmap(nullptr, usable + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED)
      throw std::bad_alloc();
    ::mprotect(base, page, PROT_NONE);
    boost::context::stack_context sctx;
    sctx.size = usable + page;
    sctx.sp = static_cast<char*>(base) + usable + page;
    owner->stack_bottom_ = static_cast<char*>(base) + page;
    owner->stack_size_ = usable;
    return sctx;
  }

  void deallocate(boost::context::stack_context& sctx) noexcept {
    void* base = static_cast<char*>(sctx.sp) - sctx.size;
#if WEFT_ASAN
    // Frames that never returned (the entry, Boost's trampoline) left their
    // redzones poisoned; munmap does not clear that, and a later mapping at
    // these addresses (a spill file) would read as a stack overflow.
    ASAN_UNPOISON_MEMORY_REGION(base, sctx.size);
#endif
    ::munmap(base, sctx.size);
  }
};

fiber::fiber(std::size_t stack_size, body_fn body) : body_(body) {
  self_ = boost::context::fiber(std::allocator_arg, fiber_stack{stack_size, this},
                                [this](boost::context::fiber&& back) { return entry(this, std::move(back)); });
}

fiber::~fiber() = default;

boost::context::fiber fiber::entry(fiber* self, boost::context::fiber&& back) {
  self->back_ = std::move(back);
  self->finish_switch(true);
  while (!self->quit_) {
    self->body_(*self);
    self->why = state::finished;
    self->yield();
  }
  self->start_switch(false, true);
  return std::move(self->back_);
}

void fiber::resume() {
  why = state::running;
  start_switch(true);
  self_ = std::move(self_).resume();
  finish_switch(false);
}

void fiber::yield() {
  start_switch(false);
  back_ = std::move(back_).resume();
  finish_switch(true);
}

void fiber::quit() {
  quit_ = true;
  resume(); // the body loop sees quit_ and returns; self_ becomes empty
}

void fiber::start_switch(bool to_fiber, bool final) noexcept {
#if WEFT_ASAN
  if (to_fiber)
    __sanitizer_start_switch_fiber(&exec_fake_stack_, stack_bottom_, stack_size_);
  else
    __sanitizer_start_switch_fiber(final ? nullptr : &fiber_fake_stack_, back_bottom_, back_size_);
#else
  (void)to_fiber;
  (void) final;
#endif
}

void fiber::finish_switch(bool on_fiber) noexcept {
#if WEFT_ASAN
  if (on_fiber)
    __sanitizer_finish_switch_fiber(fiber_fake_stack_, &back_bottom_, &back_size_);
  else
    __sanitizer_finish_switch_fiber(exec_fake_stack_, nullptr, nullptr);
#else
  (void)on_fiber;
#endif
}

} // namespace weft::detail
