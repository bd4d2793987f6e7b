// Nested tasks: a task submits tasks and waits on them; a blocked get frees its CPU and holds no thread.
#include <weft/weft.hpp>

#include <chrono>
#include <cstdio>

long fib(int n) {
  if (n < 2)
    return n;
  // Two child tasks. Each get() below suspends this task's fiber and lends its CPU to the children,
  // so a recursion with thousands of waiting tasks still runs on a handful of OS threads.
  const auto fib_r = weft::remote(fib);
  auto a = fib_r.remote(n - 1);
  auto b = fib_r.remote(n - 2);
  return weft::get(a) + weft::get(b);
}

int main(int argc, char** argv) {
  weft::init(argc, argv);
  const auto start = std::chrono::steady_clock::now();

  const int n = 25;
  const long result = weft::get(weft::remote(fib).remote(n));

  const auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  // Every call is a task: fib(n) makes 2 * fib(n + 1) - 1 of them, 242,785 for n = 25.
  std::printf("fib(%d) = %ld in %.0f ms\n", n, result, ms);
  weft::shutdown();
}
