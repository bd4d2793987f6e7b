// Errors: an exception thrown in a task reaches get() as weft::task_error; retry_exceptions reruns flaky tasks.
#include <weft/weft.hpp>

#include <atomic>
#include <cstdio>
#include <stdexcept>
#include <string>

int parse_port(std::string text) {
  const int port = std::stoi(text); // throws std::invalid_argument for "http"
  if (port < 1 || port > 65535)
    throw std::out_of_range("port " + text + " is outside 1..65535");
  return port;
}

int next_port(int port) { return port + 1; }

// Fails on its first two attempts. (The counter lives in this process, which only holds in local mode.)
std::atomic<int> attempts{0};
int flaky() {
  if (++attempts < 3)
    throw std::runtime_error("temporary failure, attempt " + std::to_string(attempts.load()));
  return 42;
}

int main(int argc, char** argv) {
  weft::init(argc, argv);

  // next_port() depends on a failing parse_port(): the error passes through it, and the chain says so.
  const auto bad = weft::remote(next_port).remote(weft::remote(parse_port).remote("99999"));
  try {
    weft::get(bad);
  } catch (const weft::task_error& e) {
    std::printf("task_error: type_name=%s\n  message=%s\n  chain:", e.type_name().c_str(), e.message().c_str());
    for (const auto& name : e.chain())
      std::printf(" %s", name.c_str());
    std::printf("\n  what()=%s\n", e.what());
  }

  // By default exceptions are not retried: the first failure is final.
  try {
    weft::get(weft::remote(flaky).remote());
  } catch (const weft::task_error& e) {
    std::printf("without retries: %s\n", e.message().c_str());
  }

  // With retry_exceptions, a throw is rerun up to max_retries times: attempts 1 and 2 throw, 3 succeeds.
  attempts = 0;
  const auto patient = weft::remote(flaky).options({.max_retries = 3, .retry_exceptions = true});
  const int value = weft::get(patient.remote());
  std::printf("with retries: %d after %d attempts\n", value, attempts.load());

  weft::shutdown();
}
