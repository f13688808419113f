// tests/store_fsync_test.cc: an acknowledged write has been fsync'd. The
// crash test kills processes, which the page cache survives; this test
// watches the system calls instead. It interposes fdatasync(2) and fsync(2)
// (LMDB reaches them through the dynamic linker, so this binary's
// definitions win), counts them, and checks that each Put, Delete and Merge
// that returns has been followed by two (its pages, then its meta page: the
// environment has MDB_NOMETASYNC and lmdb::Txn::Commit flushes the meta
// page), that a merge that does not wait flushes only its pages, and that
// a store opened without sync does none (so the check can fail).
#include <dlfcn.h>
#include <unistd.h>

#include <atomic>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/store.h"
#include "testing/temp_dir.h"

namespace {
std::atomic<int> syncs{0};
}  // namespace

extern "C" int fdatasync(int fd) {
  static auto* real = reinterpret_cast<int (*)(int)>(dlsym(RTLD_NEXT, "fdatasync"));
  ++syncs;
  return real(fd);
}

extern "C" int fsync(int fd) {
  static auto* real = reinterpret_cast<int (*)(int)>(dlsym(RTLD_NEXT, "fsync"));
  ++syncs;
  return real(fd);
}

namespace peerkv {
namespace {

std::unique_ptr<Store> Open(const std::string& dir, bool sync) {
  StoreOptions options;
  options.dir = dir;
  options.sync = sync;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
  EXPECT_THAT(store, IsOk());
  return store.ok() ? std::move(*store) : nullptr;
}

TEST(StoreFsyncTest, EveryAcknowledgedWriteWasSynced) {
  testing::TempDir dir;
  auto store = Open(dir.Sub("db"), /*sync=*/true);
  ASSERT_NE(store, nullptr);
  for (int i = 0; i < 20; ++i) {
    const int before = syncs.load();
    ASSERT_THAT(store->Put("ks", "k" + std::to_string(i), "v"), IsOk());
    EXPECT_GE(syncs.load(), before + 2) << "put " << i << " returned without both syncs";
  }
  int before = syncs.load();
  ASSERT_THAT(store->Delete("ks", "k0"), IsOk());
  EXPECT_GE(syncs.load(), before + 2);
  before = syncs.load();
  ASSERT_THAT(store->Merge({Record{"ks", "remote", Version{MakeHlc(1, 0), 99}, false, "x", 0}}),
              IsOk());
  EXPECT_GE(syncs.load(), before + 2);
}

TEST(StoreFsyncTest, AMergeThatDoesNotWaitFlushesItsPagesOnly) {
  testing::TempDir dir;
  auto store = Open(dir.Sub("db"), /*sync=*/true);
  ASSERT_NE(store, nullptr);
  Store::MergeOptions options;
  options.wait_for_sync = false;
  const int before = syncs.load();
  // Versions below the clock mark the open stored: none needs a new mark.
  ASSERT_THAT(
      store->MergeWith({Record{"ks", "remote", Version{MakeHlc(1, 0), 99}, false, "x", 0}}, options),
      IsOk());
  EXPECT_EQ(syncs.load(), before + 1);
  EXPECT_EQ(store->unsynced_commits(), 1u);
}

TEST(StoreFsyncTest, WithoutSyncThereIsNone) {
  testing::TempDir dir;
  auto store = Open(dir.Sub("db"), /*sync=*/false);
  ASSERT_NE(store, nullptr);
  const int before = syncs.load();
  for (int i = 0; i < 20; ++i) ASSERT_THAT(store->Put("ks", "k" + std::to_string(i), "v"), IsOk());
  EXPECT_EQ(syncs.load(), before);
}

}  // namespace
}  // namespace peerkv
