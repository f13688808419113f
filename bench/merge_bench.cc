// bench/merge_bench.cc: merge throughput of the store against plain LMDB.
// 100,000 records with random 16-byte doc ids and 100-byte values, every
// transaction durable (fsync), a fresh environment per iteration:
//   BM_RawLmdbPut      plain mdb_put, 1000 per transaction: the baseline;
//   BM_MergeFresh      Store::Merge in batches of 1000 into a fresh store;
//   BM_MergeOverwrite  merge of newer versions of every key, each carrying
//                      the causal mark of the version it replaces (a
//                      sequential overwrite): /detect:0 with the conflict
//                      journal off (StoreOptions::journal_conflicts), /detect:1
//                      with it on, the ratio being detection's cost;
//   BM_MergeOverwriteConcurrent  the same, every overwrite concurrent (marks
//                      of zero): each loser journaled, the journal at its
//                      1000-entry bound dropping the oldest;
//   BM_MergeReplay     the same batches again (nothing wins, nothing written);
//   BM_PutConcurrent   local Put from 4 threads through group commit.
// Directories go under $PEERKV_BENCH_DIR (default /var/tmp, which is on
// disk: a tmpfs would make fsync free and the numbers meaningless).

#include <atomic>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "bench/baseline.h"
#include "benchmark/benchmark.h"
#include "common/macros.h"
#include "store/store.h"

namespace peerkv {
namespace {

constexpr size_t kRecords = 100'000;
constexpr size_t kBatch = 1000;
constexpr size_t kKeyBytes = 16;
constexpr size_t kValueBytes = 100;
constexpr char kKeyspace[] = "bench";

std::string RandomBytes(std::mt19937_64& rng, size_t n) {
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

// The records every benchmark uses, in one random order, stamped as if
// written by three other replicas.
const std::vector<Record>& Records() {
  static const auto* records = [] {
    auto* out = new std::vector<Record>();
    std::mt19937_64 rng(20261125);
    const uint64_t base = MakeHlc(1'700'000'000'000, 0);
    for (size_t i = 0; i < kRecords; ++i) {
      out->push_back(Record{kKeyspace, RandomBytes(rng, kKeyBytes),
                            Version{base + i, 1 + i % 3}, false,
                            RandomBytes(rng, kValueBytes), 0});
    }
    return out;
  }();
  return *records;
}

std::unique_ptr<Store> OpenStore(const std::string& dir, bool detect_conflicts = true) {
  StoreOptions options;
  options.dir = dir;
  options.journal_conflicts = detect_conflicts;
  // Room for the whole run: growth is measured by the store tests, not here.
  options.initial_map_bytes = size_t{1} << 30;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
  PEERKV_CHECK(store.ok());
  return std::move(*store);
}

// Merges each batch with one Store::Merge call. The batches are moved in,
// as a replicator hands over what it received; callers copy them outside
// the timed region.
void MergeAll(Store& store, std::vector<std::vector<Record>> batches,
              size_t expect_won_per_batch) {
  for (auto& batch : batches) {
    absl::StatusOr<MergeResult> result = store.Merge(std::move(batch));
    PEERKV_CHECK(result.ok());
    PEERKV_CHECK(result->won == expect_won_per_batch || expect_won_per_batch == SIZE_MAX);
  }
}

void BM_RawLmdbPut(benchmark::State& state) {
  const std::vector<Record>& records = Records();
  for (auto _ : state) {
    state.PauseTiming();
    bench::ScratchDir dir;
    auto raw = std::make_unique<bench::RawLmdb>(dir.path(), size_t{1} << 30);
    state.ResumeTiming();
    raw->Put(records, kBatch);
    state.PauseTiming();
    raw.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * records.size());
}

void BM_MergeFresh(benchmark::State& state) {
  const auto batches = bench::SplitIntoBatches(Records(), kBatch);
  for (auto _ : state) {
    state.PauseTiming();
    bench::ScratchDir dir;
    auto store = OpenStore(dir.path());
    auto input = batches;
    state.ResumeTiming();
    MergeAll(*store, std::move(input), kBatch);
    state.PauseTiming();
    store.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * kRecords);
}

// A later write of every key, marked as replacing `mark(old version)`.
void MergeOverwrite(benchmark::State& state, bool detect,
                    std::optional<Version> (*mark)(const Version&)) {
  const auto batches = bench::SplitIntoBatches(Records(), kBatch);
  std::vector<Record> newer = Records();
  for (Record& r : newer) {
    r.replaces = mark(r.version);
    r.version.hlc += kRecords;  // a later write of every key
    r.value[0] ^= 1;
  }
  const auto newer_batches = bench::SplitIntoBatches(newer, kBatch);
  for (auto _ : state) {
    state.PauseTiming();
    bench::ScratchDir dir;
    auto store = OpenStore(dir.path(), detect);
    MergeAll(*store, batches, kBatch);
    auto input = newer_batches;
    state.ResumeTiming();
    MergeAll(*store, std::move(input), kBatch);
    state.PauseTiming();
    store.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * kRecords);
}

void BM_MergeOverwrite(benchmark::State& state) {
  MergeOverwrite(state, state.range(0) != 0,
                 [](const Version& old) { return std::optional<Version>(old); });
}

void BM_MergeOverwriteConcurrent(benchmark::State& state) {
  MergeOverwrite(state, true, [](const Version&) { return std::optional<Version>(Version{}); });
}

void BM_MergeReplay(benchmark::State& state) {
  const auto batches = bench::SplitIntoBatches(Records(), kBatch);
  for (auto _ : state) {
    state.PauseTiming();
    bench::ScratchDir dir;
    auto store = OpenStore(dir.path());
    MergeAll(*store, batches, kBatch);
    auto input = batches;
    state.ResumeTiming();
    MergeAll(*store, std::move(input), 0);
    state.PauseTiming();
    store.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * kRecords);
}

// Shared by the threads of BM_PutConcurrent. Google Benchmark puts a barrier
// at the start and at the end of the timed loop, so thread 0 sets the store
// up before it and closes it after it, while no other thread uses it.
std::unique_ptr<bench::ScratchDir> concurrent_dir;
std::unique_ptr<Store> concurrent_store;

void BM_PutConcurrent(benchmark::State& state) {
  const std::vector<Record>& records = Records();
  const size_t per_thread = kRecords / state.threads();
  const size_t first = per_thread * state.thread_index();
  if (state.thread_index() == 0) {
    concurrent_dir = std::make_unique<bench::ScratchDir>();
    concurrent_store = OpenStore(concurrent_dir->path());
  }
  for (auto _ : state) {
    for (size_t i = first; i < first + per_thread; ++i) {
      PEERKV_CHECK(concurrent_store->Put(kKeyspace, records[i].key, records[i].value).ok());
    }
  }
  state.SetItemsProcessed(state.iterations() * per_thread);
  if (state.thread_index() == 0) {
    absl::StatusOr<StoreStats> stats = concurrent_store->Stats();
    PEERKV_CHECK(stats.ok());
    state.counters["puts_per_commit"] =
        static_cast<double>(stats->max_seq) / static_cast<double>(stats->commits);
    concurrent_store.reset();
    concurrent_dir.reset();
  }
}

BENCHMARK(BM_RawLmdbPut)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_MergeFresh)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_MergeOverwrite)
    ->ArgName("detect")
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(3);
BENCHMARK(BM_MergeOverwriteConcurrent)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_MergeReplay)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_PutConcurrent)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1)->Threads(4);

}  // namespace
}  // namespace peerkv

BENCHMARK_MAIN();
