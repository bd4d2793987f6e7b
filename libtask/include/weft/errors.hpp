/// @file
/// The exceptions weft throws. Every one derives from weft::error, so
/// `catch (const weft::error&)` catches anything weft raises; the task's own
/// exception types never escape a task unwrapped (they arrive as task_error).
#pragma once

#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

namespace weft {

/// Base of every exception weft throws.
class error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// Bad input to a weft call: a negative resource, a duplicate ref in wait(),
/// a default-constructed object_ref, ... The message names the field or
/// argument, the value given and what was expected.
class invalid_argument_error : public error {
public:
  using error::error;
};

/// weft was used before weft::init() or after weft::shutdown().
class not_initialized_error : public error {
public:
  using error::error;
};

/// A task asked for resources that no node could ever provide (more CPUs than
/// the node has, a custom resource the node does not define, ...). Thrown at
/// submit, never after a silent wait.
class resource_error : public error {
public:
  using error::error;
};

/// get() with a timeout ran out of time before the object was ready. The
/// object is unaffected; a later get() can still succeed.
class get_timeout_error : public error {
public:
  using error::error;
};

/// The task producing this object was cancelled with weft::cancel().
class task_cancelled_error : public error {
public:
  using error::error;
};

/// The runtime shut down before the task producing this object finished.
class runtime_shutdown_error : public error {
public:
  using error::error;
};

/// An actor call cannot complete because the actor is gone: killed, out of
/// restarts, exited with exit_actor(), ended with its owner, or the runtime
/// shut down. The message names the actor (class, id, name) and the cause.
class actor_died_error : public error {
public:
  using error::error;
};

/// Bytes that could not be turned into a value, or a value that could not
/// be turned into bytes: truncated or corrupted input, a length larger than
/// the input, an unregistered class sent through a base pointer, a structure
/// nested deeper than the stack allows. The message names the type.
class serialization_error : public error {
public:
  using error::error;
};

/// A remote function called through num_returns(n) returned a std::vector
/// whose size is not n. Thrown where the function returned (in the task, or
/// in its worker process), so it reaches every one of the call's n refs
/// inside a task_error whose type_name() is "weft::num_returns_error"; the
/// message gives both counts. Like any exception of the task, it is retried
/// when retry_exceptions says so.
class num_returns_error : public error {
public:
  using error::error;
};

/// A worker process died while it ran a task (killed by a signal, crashed,
/// or exited), and the task had no retries left. The message names the task,
/// the worker's pid and the signal or exit code.
class worker_crashed_error : public error {
public:
  worker_crashed_error(const std::string& what, int signal, int exit_code) :
    error(what),
    signal_(signal),
    exit_code_(exit_code) {}
  /// The signal that ended the worker (SIGKILL, SIGSEGV, ...), or 0.
  int signal() const noexcept { return signal_; }
  /// The worker's exit status when it exited by itself, or -1.
  int exit_code() const noexcept { return exit_code_; }

private:
  int signal_ = 0;
  int exit_code_ = -1;
};

/// A worker process could not be started or was refused (a program that
/// is not the driver's own build, a program that cannot be executed, a
/// worker that exited before it connected). Tasks waiting for a worker fail
/// with it rather than wait forever. The message says what happened.
class worker_start_error : public error {
public:
  using error::error;
};

/// A task threw. Carries the original exception's type name and message and
/// the chain of task names the failure passed through: the task that threw
/// first, then every task that depended on its result.
class task_error : public error {
public:
  task_error(std::string type_name, std::string message, std::vector<std::string> chain, std::exception_ptr cause = {});

  /// Demangled type name of the exception the task threw, e.g. "std::out_of_range".
  const std::string& type_name() const noexcept { return type_name_; }
  /// what() of the original exception.
  const std::string& message() const noexcept { return message_; }
  /// Task names from the one that threw to the one whose result was asked for.
  const std::vector<std::string>& chain() const noexcept { return chain_; }
  /// The original exception object, when it never crossed a process
  /// boundary; empty otherwise. std::rethrow_exception(cause()) rethrows it.
  const std::exception_ptr& cause() const noexcept { return cause_; }

  /// The same failure, seen one task further down the dependency chain.
  task_error passed_through(const std::string& task_name) const;

private:
  std::string type_name_;
  std::string message_;
  std::vector<std::string> chain_;
  std::exception_ptr cause_;
};

} // namespace weft
