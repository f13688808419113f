// tests/sim/strong_sim_main.cc: runs the strong-keyspace simulation
// (strong_sim.h) over seeds 1..N (--seeds N, default 20; --seed S for one,
// --verbose to trace it). Exit 1 with the failing seeds' messages.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tests/sim/strong_sim.h"

int main(int argc, char** argv) {
  int seeds = 20;
  long only = -1;
  bool verbose = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--seeds") == 0 && i + 1 < argc) {
      seeds = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
      only = std::atol(argv[++i]);
    } else if (std::strcmp(argv[i], "--verbose") == 0) {
      verbose = true;
    } else {
      std::fprintf(stderr, "usage: strong_sim_test [--seeds N | --seed S] [--verbose]\n");
      return 2;
    }
  }
  if (seeds < 1 || seeds > 100000) {
    std::fprintf(stderr, "--seeds must be 1..100000\n");
    return 2;
  }
  int failed = 0;
  const long first = only >= 0 ? only : 1;
  const long last = only >= 0 ? only : seeds;
  for (long seed = first; seed <= last; ++seed) {
    peerkv::sim::StrongSimOptions options;
    options.seed = static_cast<uint64_t>(seed);
    options.verbose = verbose;
    peerkv::sim::StrongSimResult r = peerkv::sim::RunStrong(options);
    if (!r.passed) ++failed;
    if (!r.passed || verbose || only >= 0) {
      std::printf("seed %ld: %s: %s\n", seed, r.passed ? "ok" : "FAILED", r.message.c_str());
    }
  }
  std::printf("%ld seeds, %d failed\n", last - first + 1, failed);
  return failed == 0 ? 0 : 1;
}
