// bench/tombstone_pages_bench.cc: what tombstone collection gives back.
// Writes N records, deletes 90% of them, lets the minimum age pass, collects
// the tombstones (and compacts the log), and compares the LMDB pages in use
// (as mdb_stat counts them: pages used minus free pages) with a store that
// only ever held the remaining 10%, written the same way, in the same run.
//   bazel run -c opt //bench:tombstone_pages_bench -- [--records N]
#include <lmdb.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "store/clock.h"
#include "store/store.h"

namespace peerkv {
namespace {

constexpr int64_t kT0 = 1'700'000'000'000;
constexpr int64_t kMinAge = 60'000;

struct Pages {
  uint64_t used = 0;  // me_last_pgno + 1
  uint64_t free = 0;  // pages listed in the free DB
  uint64_t in_use() const { return used - free; }
};

// The counts mdb_stat -ef prints, read the same way (the store is closed).
Pages CountPages(const std::string& dir) {
  Pages pages;
  MDB_env* env = nullptr;
  if (mdb_env_create(&env) != 0 || mdb_env_set_maxdbs(env, 16) != 0 ||
      mdb_env_set_mapsize(env, size_t{1} << 36) != 0 ||
      mdb_env_open(env, dir.c_str(), MDB_RDONLY, 0644) != 0) {
    std::fprintf(stderr, "cannot open %s\n", dir.c_str());
    std::exit(1);
  }
  MDB_envinfo info;
  mdb_env_info(env, &info);
  pages.used = info.me_last_pgno + 1;
  MDB_txn* txn = nullptr;
  mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn);
  MDB_cursor* cursor = nullptr;
  mdb_cursor_open(txn, 0, &cursor);  // the free DB
  MDB_val k, v;
  for (int rc = mdb_cursor_get(cursor, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT)) {
    pages.free += *static_cast<const size_t*>(v.mv_data);
  }
  mdb_cursor_close(cursor);
  mdb_txn_abort(txn);
  mdb_env_close(env);
  return pages;
}

std::string Key(int i) { return absl::StrFormat("user:%08d", i); }
std::string Value(int i) { return absl::StrFormat("value-%08d-%s", i, std::string(40, 'x')); }

std::unique_ptr<Store> Open(const std::string& dir, ManualWallClock& wall) {
  StoreOptions options;
  options.dir = dir;
  options.wall_clock = &wall;
  options.sync = false;
  options.scrub_at_open = false;
  options.tombstone_min_age_ms = kMinAge;
  options.tombstone_collect_interval = absl::ZeroDuration();
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(*store);
}

void WriteAll(Store& store, const std::vector<int>& ids, bool deletes) {
  std::vector<Mutation> batch;
  for (size_t n = 0; n < ids.size(); ++n) {
    batch.push_back(Mutation{"bench", Key(ids[n]),
                             deletes ? std::nullopt : std::optional<std::string>(Value(ids[n]))});
    if (batch.size() == 10'000 || n + 1 == ids.size()) {
      absl::StatusOr<std::vector<Version>> written = store.Write(std::move(batch));
      if (!written.ok()) {
        std::fprintf(stderr, "%s\n", written.status().ToString().c_str());
        std::exit(1);
      }
      batch.clear();
    }
  }
}

int Main(int argc, char** argv) {
  int records = 1'000'000;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--records") records = std::atoi(argv[++i]);
  }
  const std::string root = std::filesystem::temp_directory_path() /
                           absl::StrFormat("peerkv-tombstone-bench-%d", getpid());
  std::filesystem::remove_all(root);
  std::vector<int> all, kept, deleted;
  for (int i = 0; i < records; ++i) {
    all.push_back(i);
    (i % 10 == 0 ? kept : deleted).push_back(i);
  }

  ManualWallClock wall(kT0);
  const std::string collected_dir = root + "/collected";
  absl::Time start = absl::Now();
  uint64_t tombstones = 0, collected = 0, compacted = 0;
  Pages before;
  {
    auto store = Open(collected_dir, wall);
    WriteAll(*store, all, false);
    WriteAll(*store, deleted, true);
    tombstones = store->Stats()->tombstones;
  }
  before = CountPages(collected_dir);
  absl::Duration collect_time;
  {
    auto store = Open(collected_dir, wall);
    wall.Advance(kMinAge + 1000);
    const absl::Time t = absl::Now();
    collected = *store->CollectAllTombstones();
    compacted = *store->CompactLog();
    collect_time = absl::Now() - t;
  }
  const Pages after = CountPages(collected_dir);

  const std::string only_dir = root + "/only";
  {
    ManualWallClock wall2(kT0);
    auto store = Open(only_dir, wall2);
    WriteAll(*store, kept, false);
  }
  const Pages only = CountPages(only_dir);
  std::printf("records %d, deleted %zu (tombstones %llu), collected %llu, log entries compacted %llu, "
              "collection + compaction %.2f s (all %.1f s)\n",
              records, deleted.size(), (unsigned long long)tombstones,
              (unsigned long long)collected, (unsigned long long)compacted,
              absl::ToDoubleSeconds(collect_time), absl::ToDoubleSeconds(absl::Now() - start));
  std::printf("pages in use (used - free, as mdb_stat -ef):\n");
  std::printf("  deleted, not collected: %llu (%llu used, %llu free)\n",
              (unsigned long long)before.in_use(), (unsigned long long)before.used,
              (unsigned long long)before.free);
  std::printf("  deleted and collected:  %llu (%llu used, %llu free)\n",
              (unsigned long long)after.in_use(), (unsigned long long)after.used,
              (unsigned long long)after.free);
  std::printf("  only the 10%% ever held: %llu (%llu used, %llu free)\n",
              (unsigned long long)only.in_use(), (unsigned long long)only.used,
              (unsigned long long)only.free);
  std::printf("ratio collected / only-10%%: %.3f (target at most 1.3); not collected / only-10%%: %.3f\n",
              static_cast<double>(after.in_use()) / only.in_use(),
              static_cast<double>(before.in_use()) / only.in_use());
  std::fflush(stdout);
  // What an offline compacting copy of the collected store (mdb_copy -c,
  // the store closed) holds: its pages are dense again.
  const std::string copy_dir = root + "/copy";
  std::filesystem::create_directories(copy_dir);
  if (std::system(absl::StrFormat("mdb_copy -c %s %s", collected_dir, copy_dir).c_str()) == 0) {
    const Pages copy = CountPages(copy_dir);
    std::printf("  collected, then mdb_copy -c: %llu (ratio %.3f)\n",
                (unsigned long long)copy.in_use(),
                static_cast<double>(copy.in_use()) / only.in_use());
  }
  std::fflush(stdout);
  std::system(absl::StrFormat("echo 'mdb_stat -efa (collected):'; mdb_stat -efa %s | grep -E "
                              "'pages used|Free pages|Status of|Leaf pages|Entries'",
                              collected_dir)
                  .c_str());
  std::filesystem::remove_all(root);
  return 0;
}

}  // namespace
}  // namespace peerkv

int main(int argc, char** argv) { return peerkv::Main(argc, argv); }
