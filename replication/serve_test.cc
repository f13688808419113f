// replication/serve_test.cc: answering a pull: what is left out (the
// requester's own writes, what came from it, what its watermarks cover,
// values over its limit), where a pull starts (a checkpoint of another
// incarnation or beyond the log starts over), and the watermarks sent.
#include "replication/serve.h"

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/temp_dir.h"

namespace peerkv::replication {
namespace {

using ::testing::ElementsAre;

constexpr int64_t kT0 = 1'700'000'000'000;
constexpr uint64_t kRequester = 500;

class ServeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions options;
    options.dir = dir_.Sub("db");
    options.wall_clock = &wall_;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    ASSERT_THAT(store, IsOk());
    store_ = std::move(*store);
    // seq 1: local; seq 2: by origin 7 (hlc kT0+1); seq 3: by origin 8
    // (hlc kT0+2); seq 4: written by the requester; seq 5: merged from it.
    ASSERT_THAT(store_->Put("ks", "local", "l"), IsOk());
    ASSERT_THAT(store_->Merge({Remote("o7", 1, 7)}), IsOk());
    ASSERT_THAT(store_->Merge({Remote("o8", 2, 8)}), IsOk());
    ASSERT_THAT(store_->Merge({Remote("mine", 3, kRequester)}), IsOk());
    ASSERT_THAT(store_->Merge({Remote("via-it", 4, 9)},
                              CheckpointUpdate{kRequester, PeerCheckpoint{1, 1}}),
                IsOk());
  }

  static Record Remote(const std::string& key, int64_t ms, uint64_t origin,
                       std::string value = "v") {
    return Record{"ks", key, Version{MakeHlc(kT0 + ms, 0), origin}, false, std::move(value), 0};
  }

  std::vector<std::string> Keys(const PullRequest& request) {
    absl::StatusOr<PullResponse> response = ServePull(*store_, request);
    EXPECT_THAT(response, IsOk());
    std::vector<std::string> keys;
    if (response.ok()) {
      for (const Record& r : response->records) keys.push_back(r.key);
    }
    return keys;
  }

  testing::TempDir dir_;
  ManualWallClock wall_{kT0};
  std::unique_ptr<Store> store_;
};

TEST_F(ServeTest, LeavesOutWhatTheRequesterHas) {
  // The requester's own watermark covers its own write ("mine").
  const std::pair<const uint64_t, uint64_t> own{kRequester, MakeHlc(kT0 + 3, 0)};
  PullRequest request{.requester = kRequester, .incarnation = store_->incarnation()};
  request.watermarks = {own};
  EXPECT_THAT(Keys(request), ElementsAre("local", "o7", "o8"));
  request.watermarks = {own, {7, MakeHlc(kT0 + 1, 0)}};
  EXPECT_THAT(Keys(request), ElementsAre("local", "o8"));
  request.watermarks = {own, {7, MakeHlc(kT0 + 1, 0) - 1}};  // just below: still sent
  EXPECT_THAT(Keys(request), ElementsAre("local", "o7", "o8"));
  // A write of its own that its own watermark does not cover, it lacks (it
  // was restored): it is sent back, and the requester forks on seeing it.
  request.watermarks = {{kRequester, MakeHlc(kT0 + 3, 0) - 1}};
  EXPECT_THAT(Keys(request), ElementsAre("local", "o7", "o8", "mine"));
}

TEST_F(ServeTest, LeavesOutValuesOverTheRequestersLimit) {
  ASSERT_THAT(store_->Merge({Remote("big", 5, 7, std::string(100, 'v'))}), IsOk());
  PullRequest request{.requester = kRequester, .incarnation = store_->incarnation(),
                      .after_seq = 5, .max_value_bytes = 99};
  absl::StatusOr<PullResponse> response = ServePull(*store_, request);
  ASSERT_THAT(response, IsOk());
  EXPECT_TRUE(response->records.empty());
  EXPECT_EQ(response->last_seq, 6u);  // passed over, not stuck on it
}

TEST_F(ServeTest, StartsOverForAnotherIncarnationOrACheckpointBeyondTheLog) {
  PullRequest request{.requester = kRequester, .incarnation = store_->incarnation(),
                      .after_seq = 2};
  absl::StatusOr<PullResponse> response = ServePull(*store_, request);
  ASSERT_THAT(response, IsOk());
  EXPECT_EQ(response->from_seq, 2u);
  request.incarnation = store_->incarnation() + 1;
  EXPECT_EQ(ServePull(*store_, request)->from_seq, 0u);
  request.incarnation = store_->incarnation();
  request.after_seq = 1000;  // the requester saw a log this store no longer has
  EXPECT_EQ(ServePull(*store_, request)->from_seq, 0u);
}

TEST_F(ServeTest, AnswersWithItsWatermarksIncludingItsOwnClock) {
  absl::StatusOr<PullResponse> response =
      ServePull(*store_, PullRequest{.requester = kRequester});
  ASSERT_THAT(response, IsOk());
  ASSERT_EQ(response->watermarks.count(store_->replica_id()), 1u);
  // Its own entry covers its own committed write.
  absl::StatusOr<std::optional<Record>> local = store_->Get("ks", "local");
  EXPECT_GE(response->watermarks.at(store_->replica_id()), (*local)->version.hlc);
  EXPECT_EQ(response->replica_id, store_->replica_id());
  EXPECT_EQ(response->max_seq, 5u);
}

}  // namespace
}  // namespace peerkv::replication
