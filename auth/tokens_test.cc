// auth/tokens_test.cc: creating, listing, verifying and removing tokens,
// and a second TokenStore (a running server) seeing changes at once.
#include "auth/tokens.h"

#include <sys/stat.h>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/temp_dir.h"

namespace peerkv::auth {
namespace {

using ::absl::StatusCode;
using ::peerkv::IsOk;
using ::peerkv::StatusIs;

TEST(TokensTest, CreateVerifyListRemove) {
  peerkv::testing::TempDir dir("tokens");
  TokenStore cli(dir.path());
  TokenStore server(dir.path());
  EXPECT_THAT(server.Verify("pkv_nothing").status(), StatusIs(StatusCode::kUnauthenticated));
  absl::StatusOr<std::string> secret = cli.Create("ci-bot");
  ASSERT_THAT(secret.status(), IsOk());
  EXPECT_EQ(secret->substr(0, 4), "pkv_");
  EXPECT_EQ(secret->size(), 4 + 43u);
  // The server sees the new token without restarting.
  absl::StatusOr<std::string> who = server.Verify(*secret);
  ASSERT_THAT(who.status(), IsOk());
  EXPECT_EQ(*who, "ci-bot");
  // A changed character is refused.
  std::string wrong = *secret;
  wrong.back() = wrong.back() == 'A' ? 'B' : 'A';
  EXPECT_THAT(server.Verify(wrong).status(), StatusIs(StatusCode::kUnauthenticated));
  EXPECT_THAT(cli.Create("ci-bot").status(), StatusIs(StatusCode::kAlreadyExists));
  absl::StatusOr<std::string> other = cli.Create("other");
  ASSERT_THAT(other.status(), IsOk());
  EXPECT_NE(*other, *secret);
  absl::StatusOr<std::vector<TokenInfo>> list = cli.List();
  ASSERT_THAT(list.status(), IsOk());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "ci-bot");
  EXPECT_GT((*list)[0].created_unix, 0);
  // The file holds no secret, and is owner-only.
  struct stat st;
  ASSERT_EQ(::stat(cli.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0077, 0u);
  ASSERT_THAT(cli.Remove("ci-bot"), IsOk());
  EXPECT_THAT(server.Verify(*secret).status(), StatusIs(StatusCode::kUnauthenticated));
  EXPECT_THAT(server.Verify(*other).status(), IsOk());
  EXPECT_THAT(cli.Remove("ci-bot"), StatusIs(StatusCode::kNotFound));
  // The hook form.
  auto verify = server.Verifier();
  EXPECT_THAT(verify(*other).status(), IsOk());
}

TEST(TokensTest, NamesAreValidated) {
  peerkv::testing::TempDir dir("tokens");
  TokenStore tokens(dir.path());
  EXPECT_THAT(tokens.Create("").status(), StatusIs(StatusCode::kInvalidArgument, "1..64"));
  EXPECT_THAT(tokens.Create(std::string(65, 'a')).status(),
              StatusIs(StatusCode::kInvalidArgument, "1..64"));
  EXPECT_THAT(tokens.Create("a b").status(), StatusIs(StatusCode::kInvalidArgument, "letters"));
  EXPECT_THAT(tokens.Create("a\tb").status(), StatusIs(StatusCode::kInvalidArgument));
}

TEST(TokensTest, WideFileIsRefused) {
  peerkv::testing::TempDir dir("tokens");
  TokenStore tokens(dir.path());
  absl::StatusOr<std::string> secret = tokens.Create("t");
  ASSERT_THAT(secret.status(), IsOk());
  ASSERT_EQ(::chmod(tokens.path().c_str(), 0644), 0);
  EXPECT_THAT(tokens.List().status(), StatusIs(StatusCode::kFailedPrecondition));
  EXPECT_THAT(tokens.Verify(*secret).status(), StatusIs(StatusCode::kUnavailable));
}

}  // namespace
}  // namespace peerkv::auth
