// cli/args_test.cc: the command-line parser.
#include "cli/args.h"

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peerkv::cli {
namespace {

using absl::StatusCode;
using ::testing::ElementsAre;

const FlagSpec kSpec{.with_value = {"limit", "peer"}, .switches = {"json"}, .repeatable = {"peer"}};

TEST(ArgsTest, FlagsPositionalsAndSwitches) {
  absl::StatusOr<Args> args =
      ParseArgs({"ks", "--limit", "5", "--json", "--peer=a:1", "--peer", "b:2", "-", "--",
                 "--not-a-flag"},
                kSpec);
  ASSERT_THAT(args, IsOk());
  EXPECT_THAT(args->positional, ElementsAre("ks", "-", "--not-a-flag"));
  EXPECT_EQ(args->Get("limit"), "5");
  EXPECT_TRUE(args->Has("json"));
  EXPECT_THAT(args->values.at("peer"), ElementsAre("a:1", "b:2"));
  EXPECT_EQ(*args->GetInt("limit", 0, 1, 10), 5);
  EXPECT_EQ(*args->GetInt("absent", 7, 1, 10), 7);
}

TEST(ArgsTest, ErrorsNameTheFlag) {
  EXPECT_THAT(ParseArgs({"--nope"}, kSpec), StatusIs(StatusCode::kInvalidArgument, "unknown flag --nope"));
  EXPECT_THAT(ParseArgs({"--limit"}, kSpec), StatusIs(StatusCode::kInvalidArgument, "--limit needs a value"));
  EXPECT_THAT(ParseArgs({"--json=1"}, kSpec), StatusIs(StatusCode::kInvalidArgument, "--json takes no value"));
  EXPECT_THAT(ParseArgs({"--limit", "1", "--limit", "2"}, kSpec),
              StatusIs(StatusCode::kInvalidArgument, "--limit given more than once"));
  absl::StatusOr<Args> args = ParseArgs({"--limit", "11"}, kSpec);
  ASSERT_THAT(args, IsOk());
  EXPECT_THAT(args->GetInt("limit", 0, 1, 10),
              StatusIs(StatusCode::kInvalidArgument, "--limit must be an integer in 1..10, got '11'"));
}

}  // namespace
}  // namespace peerkv::cli
