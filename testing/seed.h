// testing/seed.h: the seed of a randomised test. Taken from PEERKV_SEED
// when set (to replay a failure), otherwise fresh; either way printed, so a
// failing run names the seed that replays it.
#ifndef PEERKV_TESTING_SEED_H_
#define PEERKV_TESTING_SEED_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

namespace peerkv::testing {

// Returns PEERKV_SEED if set (a decimal number), else a random seed; prints
// "PEERKV_SEED=N" to stderr either way.
inline uint64_t TestSeed() {
  uint64_t seed = 0;
  if (const char* env = std::getenv("PEERKV_SEED"); env != nullptr && *env != '\0') {
    seed = std::strtoull(env, nullptr, 10);
  } else {
    seed = (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
  }
  std::fprintf(stderr, "PEERKV_SEED=%llu (set it to replay this run)\n",
               static_cast<unsigned long long>(seed));
  return seed;
}

}  // namespace peerkv::testing

#endif  // PEERKV_TESTING_SEED_H_
