// bench/hash_bench.cc: what the per-register hashes of the write path cost:
// rbsr::ItemHash (SHA-256 of keyspace, key, version, flag and value) and
// rbsr::KeyPosition (the key's 64-bit position), at the merge benchmark's
// sizes (16-byte keys, 100-byte values) and at larger values.
#include <random>
#include <string>

#include "benchmark/benchmark.h"
#include "store/range_fingerprint.h"
#include "store/version.h"

namespace peerkv {
namespace {

std::string RandomBytes(size_t n) {
  std::mt19937_64 rng(n);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

void BM_ItemHash(benchmark::State& state) {
  const std::string key = RandomBytes(16);
  const std::string value = RandomBytes(state.range(0));
  Version version{1, 2};
  for (auto _ : state) {
    ++version.hlc;
    benchmark::DoNotOptimize(rbsr::ItemHash("bench", key, version, false, value));
  }
  state.SetBytesProcessed(state.iterations() * (value.size() + key.size() + 5 + 41));
}
BENCHMARK(BM_ItemHash)->Arg(100)->Arg(1000)->Arg(65536);

void BM_KeyPosition(benchmark::State& state) {
  std::string key = RandomBytes(state.range(0));
  for (auto _ : state) {
    ++key[0];
    benchmark::DoNotOptimize(rbsr::KeyPosition(key));
  }
}
BENCHMARK(BM_KeyPosition)->Arg(16)->Arg(400);

}  // namespace
}  // namespace peerkv

BENCHMARK_MAIN();
