// rpc/rejection_log_test.cc: rejected requests are logged once per host per
// interval, with the rest counted in one line; hosts are told apart; the
// table of hosts stays bounded.
#include "rpc/rejection_log.h"

#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peerkv::rpc {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class RejectionLogTest : public ::testing::Test {
 protected:
  std::vector<std::string> lines_;
  RejectionLog log_{absl::Minutes(1), [this](const std::string& line) { lines_.push_back(line); }};
  absl::Time now_ = absl::FromUnixSeconds(1'700'000'000);
};

TEST_F(RejectionLogTest, OneLinePerHostPerIntervalAndOneWithTheCount) {
  const absl::Status bad = absl::InvalidArgumentError("key is 401 bytes; the limit is 400");
  EXPECT_FALSE(log_.Rejected(now_, "10.0.0.1:5000", "put", bad));
  for (int i = 0; i < 9000; ++i) {
    EXPECT_TRUE(log_.Rejected(now_ + absl::Seconds(1), "10.0.0.1:5001", "put", bad));
  }
  ASSERT_THAT(lines_, ElementsAre("peerkv: rejected put from 10.0.0.1:5000: key is 401 bytes; "
                                  "the limit is 400"));
  // Not yet: the interval is not over.
  EXPECT_TRUE(log_.Flush(now_ + absl::Seconds(59), /*all=*/false));
  EXPECT_EQ(lines_.size(), 1u);
  EXPECT_FALSE(log_.Flush(now_ + absl::Seconds(60), /*all=*/false));
  ASSERT_EQ(lines_.size(), 2u);
  EXPECT_THAT(lines_[1], HasSubstr("rejected 9000 more from 10.0.0.1 within 1m"));
  EXPECT_THAT(lines_[1], HasSubstr("the last: put from 10.0.0.1:5001: key is 401 bytes"));
  // A new interval: logged at once again.
  EXPECT_FALSE(log_.Rejected(now_ + absl::Seconds(61), "10.0.0.1:5002", "get", bad));
  EXPECT_EQ(lines_.size(), 3u);
}

TEST_F(RejectionLogTest, ItemsOfOneCallMakeOneLine) {
  log_.Rejected(now_, "10.0.0.1:5000", "putMany", absl::InvalidArgumentError("keyspace 'A'"), 9000);
  EXPECT_THAT(lines_, ElementsAre("peerkv: rejected putMany from 10.0.0.1:5000: 9000 items, the "
                                  "first: keyspace 'A'"));
  log_.Rejected(now_, "10.0.0.1:5000", "putMany", absl::InvalidArgumentError("keyspace 'A'"), 9000);
  log_.Flush(now_, /*all=*/true);
  ASSERT_EQ(lines_.size(), 2u);
  EXPECT_THAT(lines_[1], HasSubstr("rejected 9000 more from 10.0.0.1"));
}

TEST_F(RejectionLogTest, HostsAreCountedApartAndTheTableStaysBounded) {
  const absl::Status bad = absl::InvalidArgumentError("bad");
  log_.Rejected(now_, "10.0.0.1:1", "put", bad);
  log_.Rejected(now_, "[::1]:1", "put", bad);
  EXPECT_EQ(lines_.size(), 2u);
  lines_.clear();
  // Many hosts at once: beyond the bound they share one entry, so the
  // host table (and what the log says) stays bounded.
  for (size_t i = 0; i < 3 * RejectionLog::kMaxHosts; ++i) {
    log_.Rejected(now_, absl::StrFormat("10.1.%d.%d:1", i / 256, i % 256), "put", bad);
  }
  EXPECT_LE(lines_.size(), RejectionLog::kMaxHosts);
  log_.Flush(now_, /*all=*/true);
  ASSERT_FALSE(lines_.empty());
  EXPECT_THAT(lines_.back(), HasSubstr("more from other hosts"));
  // Reasons are clipped.
  lines_.clear();
  log_.Rejected(now_ + absl::Minutes(5), "10.9.9.9:1", "hello",
                absl::InvalidArgumentError(std::string(100'000, 'x')));
  ASSERT_EQ(lines_.size(), 1u);
  EXPECT_LT(lines_[0].size(), RejectionLog::kMaxReasonBytes + 100);
}

}  // namespace
}  // namespace peerkv::rpc
