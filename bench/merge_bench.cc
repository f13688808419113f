// bench/merge_bench.cc: merge throughput of the store against plain LMDB.
// 100,000 records with random 16-byte doc ids and 100-byte values, every
// transaction durable (fsync), a fresh environment per iteration:
//   BM_RawLmdbPut      plain mdb_put, 1000 per transaction: the baseline;
//   BM_MergeFresh      Store::Merge in batches of 1000 into a fresh store;
//   BM_MergeOverwrite  merge of newer versions of every key;
//   BM_MergeReplay     the same batches again (nothing wins, nothing written);
//   BM_PutConcurrent   local Put from 4 threads through group commit.
// Directories go under $PEERKV_BENCH_DIR (default /var/tmp, which is on
// disk: a tmpfs would make fsync free and the numbers meaningless).
#include <lmdb.h>
#include <stdlib.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

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

std::vector<std::vector<Record>> Batches(const std::vector<Record>& records) {
  std::vector<std::vector<Record>> batches;
  for (size_t i = 0; i < records.size(); i += kBatch) {
    batches.emplace_back(records.begin() + i,
                         records.begin() + std::min(records.size(), i + kBatch));
  }
  return batches;
}

// A fresh directory, removed when the object goes away.
class BenchDir {
 public:
  BenchDir() {
    const char* base = std::getenv("PEERKV_BENCH_DIR");
    std::string pattern =
        std::string(base != nullptr && *base != '\0' ? base : "/var/tmp") +
        "/peerkv-bench.XXXXXX";
    PEERKV_CHECK(mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~BenchDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::unique_ptr<Store> OpenStore(const std::string& dir) {
  StoreOptions options;
  options.dir = dir;
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
    BenchDir dir;
    MDB_env* env = nullptr;
    PEERKV_CHECK(mdb_env_create(&env) == 0);
    PEERKV_CHECK(mdb_env_set_mapsize(env, size_t{1} << 30) == 0);
    PEERKV_CHECK(mdb_env_open(env, dir.path().c_str(), MDB_NOTLS, 0600) == 0);
    MDB_dbi dbi;
    {
      MDB_txn* txn;
      PEERKV_CHECK(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
      PEERKV_CHECK(mdb_dbi_open(txn, nullptr, 0, &dbi) == 0);
      PEERKV_CHECK(mdb_txn_commit(txn) == 0);
    }
    state.ResumeTiming();
    for (size_t i = 0; i < records.size(); i += kBatch) {
      MDB_txn* txn;
      PEERKV_CHECK(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
      for (size_t j = i; j < std::min(records.size(), i + kBatch); ++j) {
        MDB_val k{records[j].key.size(), const_cast<char*>(records[j].key.data())};
        MDB_val v{records[j].value.size(), const_cast<char*>(records[j].value.data())};
        PEERKV_CHECK(mdb_put(txn, dbi, &k, &v, 0) == 0);
      }
      PEERKV_CHECK(mdb_txn_commit(txn) == 0);
    }
    state.PauseTiming();
    mdb_env_close(env);
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * records.size());
}

void BM_MergeFresh(benchmark::State& state) {
  const auto batches = Batches(Records());
  for (auto _ : state) {
    state.PauseTiming();
    BenchDir dir;
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

void BM_MergeOverwrite(benchmark::State& state) {
  const auto batches = Batches(Records());
  std::vector<Record> newer = Records();
  for (Record& r : newer) {
    r.version.hlc += kRecords;  // a later write of every key
    r.value[0] ^= 1;
  }
  const auto newer_batches = Batches(newer);
  for (auto _ : state) {
    state.PauseTiming();
    BenchDir dir;
    auto store = OpenStore(dir.path());
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

void BM_MergeReplay(benchmark::State& state) {
  const auto batches = Batches(Records());
  for (auto _ : state) {
    state.PauseTiming();
    BenchDir dir;
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
std::unique_ptr<BenchDir> concurrent_dir;
std::unique_ptr<Store> concurrent_store;

void BM_PutConcurrent(benchmark::State& state) {
  const std::vector<Record>& records = Records();
  const size_t per_thread = kRecords / state.threads();
  const size_t first = per_thread * state.thread_index();
  if (state.thread_index() == 0) {
    concurrent_dir = std::make_unique<BenchDir>();
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
BENCHMARK(BM_MergeOverwrite)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_MergeReplay)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_PutConcurrent)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1)->Threads(4);

}  // namespace
}  // namespace peerkv

BENCHMARK_MAIN();
