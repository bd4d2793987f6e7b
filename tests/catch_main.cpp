// Catch2's main for every test program, with one addition: a test program
// started again by weft as a worker process (config::workers = processes)
// serves its driver instead of running tests. weft::init() never returns
// in a worker.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <weft/runtime.hpp>

int main(int argc, char* argv[]) {
  if (weft::is_worker_process())
    weft::init(argc, argv);
  return Catch::Session().run(argc, argv);
}
