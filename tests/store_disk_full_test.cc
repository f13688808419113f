// tests/store_disk_full_test.cc: a full disk is an error, not data loss.
// RLIMIT_FSIZE makes the data file unable to grow, as a full file system
// would (writes fail with EFBIG instead of ENOSPC; both map to
// ResourceExhausted). Every write acknowledged before the failure must be
// there after reopening, and the store must work again once there is room.
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "absl/strings/str_format.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/store.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

// Caps the size of files this process writes, restoring the old cap (and
// SIGXFSZ's disposition) when it goes away.
class FileSizeCap {
 public:
  explicit FileSizeCap(rlim_t bytes) {
    old_handler_ = signal(SIGXFSZ, SIG_IGN);
    getrlimit(RLIMIT_FSIZE, &old_);
    rlimit cap = old_;
    cap.rlim_cur = bytes;
    setrlimit(RLIMIT_FSIZE, &cap);
  }
  ~FileSizeCap() {
    setrlimit(RLIMIT_FSIZE, &old_);
    signal(SIGXFSZ, old_handler_);
  }

 private:
  rlimit old_;
  sighandler_t old_handler_;
};

TEST(StoreDiskFullTest, FullDiskLosesNothingAcknowledged) {
  testing::TempDir dir;
  StoreOptions options;
  options.dir = dir.Sub("db");
  const std::string value(20'000, 'v');
  int acknowledged = 0;
  {
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    ASSERT_THAT(store, IsOk());
    ASSERT_THAT((*store)->Put("ks", "before", "written before the cap"), IsOk());
    struct stat st;
    ASSERT_EQ(stat(dir.Sub("db/data.mdb").c_str(), &st), 0);
    absl::Status failure;
    {
      FileSizeCap cap(st.st_size + (2 << 20));  // 2 MiB of room
      for (; acknowledged < 1000; ++acknowledged) {
        absl::StatusOr<Version> v =
            (*store)->Put("ks", absl::StrFormat("k%04d", acknowledged), value);
        if (!v.ok()) {
          failure = v.status();
          break;
        }
      }
    }
    EXPECT_THAT(failure, StatusIs(absl::StatusCode::kResourceExhausted));
    EXPECT_GT(acknowledged, 20);
    EXPECT_LT(acknowledged, 1000);
  }
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
  ASSERT_THAT(store, IsOk());
  EXPECT_TRUE((*(*store)->Get("ks", "before")).has_value());
  for (int i = 0; i < acknowledged; ++i) {
    absl::StatusOr<std::optional<Record>> got =
        (*store)->Get("ks", absl::StrFormat("k%04d", i));
    ASSERT_THAT(got, IsOk());
    ASSERT_TRUE(got->has_value()) << "acknowledged write " << i << " is missing";
    EXPECT_EQ((*got)->value, value);
  }
  // With room again, writes work.
  EXPECT_THAT((*store)->Put("ks", "after", "room again"), IsOk());
  EXPECT_EQ((*store)->Stats()->live_records, static_cast<uint64_t>(acknowledged) + 2);
}

}  // namespace
}  // namespace peerkv
