// bench/repack_pause_bench.cc: how long a write waits while the tables are
// repacked (Store::Repack, README "Tombstone collection"). Writes N records,
// deletes 90% of them, collects the tombstones (the pass ends with a
// repack), then measures single-record Puts issued one after another from
// one thread: first with nothing else running (the baseline), then while
// another thread runs Store::Repack, in the same run. Prints each phase's
// p50, p99 and max wait and the ratios to the baseline.
//   bazel run -c opt //bench:repack_pause_bench -- [--records N]
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "bench/baseline.h"
#include "store/clock.h"
#include "store/store.h"

namespace peerkv {
namespace {

constexpr int64_t kT0 = 1'700'000'000'000;
constexpr int64_t kMinAge = 60'000;
constexpr int kBaselineWrites = 2000;

void Check(const absl::Status& status) {
  if (!status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    std::exit(1);
  }
}

std::string Key(int i) { return absl::StrFormat("user:%08d", i); }
std::string Value(int i) { return absl::StrFormat("value-%08d-%s", i, std::string(40, 'x')); }

void WriteAll(Store& store, int records, bool deletes) {
  std::vector<Mutation> batch;
  for (int i = 0; i < records; ++i) {
    if (deletes && i % 10 == 0) continue;
    batch.push_back(Mutation{"bench", Key(i),
                             deletes ? std::nullopt : std::optional<std::string>(Value(i))});
    if (batch.size() == 10'000 || i + 1 == records) {
      Check(store.Write(std::move(batch)).status());
      batch.clear();
    }
  }
}

// One write's wait: a Put of one record, issued and waited for.
absl::Duration TimedPut(Store& store, int n) {
  const absl::Time start = absl::Now();
  Check(store.Put("bench", absl::StrFormat("during:%08d", n), "v").status());
  return absl::Now() - start;
}

struct Waits {
  absl::Duration p50, p99, max;
  size_t n = 0;
};

Waits Summarize(std::vector<absl::Duration> waits) {
  std::sort(waits.begin(), waits.end());
  Waits w;
  w.n = waits.size();
  if (waits.empty()) return w;
  w.p50 = waits[waits.size() / 2];
  w.p99 = waits[std::min(waits.size() - 1, waits.size() * 99 / 100)];
  w.max = waits.back();
  return w;
}

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

int Main(int argc, char** argv) {
  int records = 1'000'000;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--records") records = std::atoi(argv[++i]);
  }
  if (records < 10 || records > 100'000'000) {
    std::fprintf(stderr, "--records must be between 10 and 100000000\n");
    return 2;
  }
  const bench::ScratchDir dir;
  ManualWallClock wall(kT0);
  StoreOptions options;
  options.dir = dir.path();
  options.wall_clock = &wall;
  options.sync = false;  // the wait for the writer, not for the disk
  options.scrub_at_open = false;
  options.tombstone_min_age_ms = kMinAge;
  options.tombstone_collect_interval = absl::ZeroDuration();
  absl::StatusOr<std::unique_ptr<Store>> opened = Store::Open(options);
  Check(opened.status());
  Store& store = **opened;
  WriteAll(store, records, false);
  WriteAll(store, records, true);
  wall.Advance(kMinAge + 1000);
  const absl::StatusOr<uint64_t> collected = store.CollectAllTombstones();
  Check(collected.status());

  int n = 0;
  std::vector<absl::Duration> baseline;
  for (int i = 0; i < kBaselineWrites; ++i) baseline.push_back(TimedPut(store, n++));

  std::atomic<bool> done{false};
  absl::StatusOr<Store::RepackResult> repacked;
  absl::Duration repack_time;
  std::thread repacker([&] {
    const absl::Time start = absl::Now();
    repacked = store.Repack();
    repack_time = absl::Now() - start;
    done = true;
  });
  std::vector<absl::Duration> during;
  // Bounded by the repack: it ends, and each Put waits at most for it.
  while (!done.load()) during.push_back(TimedPut(store, n++));
  repacker.join();
  Check(repacked.status());

  const Waits b = Summarize(baseline);
  const Waits d = Summarize(during);
  std::printf("records %d, collected %llu; repack: %.0f ms, %llu entries copied\n", records,
              static_cast<unsigned long long>(*collected), Ms(repack_time),
              static_cast<unsigned long long>(repacked->entries_copied));
  std::printf("write wait, no repack (%zu writes): p50 %.3f ms, p99 %.3f ms, max %.3f ms\n", b.n,
              Ms(b.p50), Ms(b.p99), Ms(b.max));
  std::printf("write wait, during the repack (%zu writes): p50 %.3f ms, p99 %.3f ms, max %.3f ms\n",
              d.n, Ms(d.p50), Ms(d.p99), Ms(d.max));
  std::printf("ratio during / no repack: p99 %.1fx, max %.1fx\n", Ms(d.p99) / Ms(b.p99),
              Ms(d.max) / Ms(b.max));
  opened->reset();  // before the directory goes
  return 0;
}

}  // namespace
}  // namespace peerkv

int main(int argc, char** argv) { return peerkv::Main(argc, argv); }
