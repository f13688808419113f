// store/data_dir_test.cc: a data directory is created, canonicalised,
// refused a second time in one process, released on close, and refused
// when it is a file.
#include "store/data_dir.h"

#include <filesystem>
#include <fstream>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

TEST(DataDirTest, CreatesMissingParentsAndResolvesThePath) {
  testing::TempDir tmp;
  absl::StatusOr<std::unique_ptr<DataDir>> dir = DataDir::Open(tmp.Sub("a/b/../c"));
  ASSERT_THAT(dir, IsOk());
  EXPECT_EQ((*dir)->path(), std::filesystem::canonical(tmp.Sub("a/c")).string());
  EXPECT_TRUE(std::filesystem::exists(tmp.Sub("a/c/peerkv.lock")));
}

TEST(DataDirTest, ASecondOpenInThisProcessIsRefusedUntilTheFirstCloses) {
  testing::TempDir tmp;
  absl::StatusOr<std::unique_ptr<DataDir>> first = DataDir::Open(tmp.Sub("db"));
  ASSERT_THAT(first, IsOk());
  // Through another spelling of the same directory, too.
  EXPECT_THAT(DataDir::Open(tmp.Sub("db/../db")),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       "is already open in this process"));
  first->reset();
  EXPECT_THAT(DataDir::Open(tmp.Sub("db")), IsOk());
}

TEST(DataDirTest, AFileIsNotADataDirectory) {
  testing::TempDir tmp;
  std::ofstream(tmp.Sub("file")) << "x";
  EXPECT_THAT(DataDir::Open(tmp.Sub("file")),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(DataDirTest, ReportsTheDataFileSize) {
  testing::TempDir tmp;
  absl::StatusOr<std::unique_ptr<DataDir>> dir = DataDir::Open(tmp.Sub("db"));
  ASSERT_THAT(dir, IsOk());
  EXPECT_THAT((*dir)->DataFileBytes(), StatusIs(absl::StatusCode::kInternal));
  std::ofstream((*dir)->path() + "/data.mdb") << "12345";
  absl::StatusOr<uint64_t> bytes = (*dir)->DataFileBytes();
  ASSERT_THAT(bytes, IsOk());
  EXPECT_EQ(*bytes, 5u);
}

}  // namespace
}  // namespace peerkv
