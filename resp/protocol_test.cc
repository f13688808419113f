// resp/protocol_test.cc: the RESP parser (whole, partial and malformed
// frames, the limits) and the encoder (RESP2 and RESP3 forms), and the glob
// matcher of KEYS/SCAN.
#include "resp/protocol.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peerkv::resp {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

ParseResult Parse(std::string_view in, std::vector<std::string_view>* args,
                  const ParseLimits& limits = {}) {
  return ParseCommand(in, limits, args);
}

TEST(ParseCommand, MultibulkCommand) {
  std::vector<std::string_view> args;
  const std::string in = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n*1\r\n$4\r\nPING\r\n";
  ParseResult r = Parse(in, &args);
  ASSERT_EQ(r.status, ParseStatus::kCommand);
  EXPECT_THAT(args, ElementsAre("SET", "k", ""));
  EXPECT_EQ(r.consumed, in.find("*1"));
  r = Parse(std::string_view(in).substr(r.consumed), &args);
  ASSERT_EQ(r.status, ParseStatus::kCommand);
  EXPECT_THAT(args, ElementsAre("PING"));
}

TEST(ParseCommand, BinarySafeBulk) {
  std::vector<std::string_view> args;
  const std::string value("a\r\n\0b", 5);
  const std::string in = "*2\r\n$3\r\nGET\r\n$5\r\n" + value + "\r\n";
  ParseResult r = Parse(in, &args);
  ASSERT_EQ(r.status, ParseStatus::kCommand);
  EXPECT_EQ(args[1], value);
}

TEST(ParseCommand, EveryPrefixIsIncomplete) {
  const std::string in = "*2\r\n$3\r\nGET\r\n$10\r\n0123456789\r\n";
  std::vector<std::string_view> args;
  for (size_t n = 0; n < in.size(); ++n) {
    EXPECT_EQ(Parse(in.substr(0, n), &args).status, ParseStatus::kIncomplete) << n;
  }
  EXPECT_EQ(Parse(in, &args).status, ParseStatus::kCommand);
}

TEST(ParseCommand, InlineCommands) {
  std::vector<std::string_view> args;
  ParseResult r = Parse("  set  a\tb \r\nPING\n", &args);
  ASSERT_EQ(r.status, ParseStatus::kCommand);
  EXPECT_THAT(args, ElementsAre("set", "a", "b"));
  EXPECT_EQ(r.consumed, 13u);
  r = Parse("\r\n", &args);
  ASSERT_EQ(r.status, ParseStatus::kCommand);
  EXPECT_THAT(args, IsEmpty());
  EXPECT_EQ(Parse("PING", &args).status, ParseStatus::kIncomplete);
}

TEST(ParseCommand, EmptyAndNegativeMultibulkAreEmptyCommands) {
  std::vector<std::string_view> args;
  ParseResult r = Parse("*0\r\n", &args);
  ASSERT_EQ(r.status, ParseStatus::kCommand);
  EXPECT_THAT(args, IsEmpty());
  EXPECT_EQ(r.consumed, 4u);
  EXPECT_EQ(Parse("*-1\r\n", &args).status, ParseStatus::kCommand);
}

TEST(ParseCommand, BadLengthsAreProtocolErrors) {
  std::vector<std::string_view> args;
  for (const char* in : {"*x\r\n", "*1x\r\n", "*\r\n", "*1\r\n$x\r\n", "*1\r\n$-1\r\n",
                         "*1\r\n$\r\n", "*1\r\n+OK\r\n", "*1\r\n$3\r\nabcd\r\n",
                         "*1\r\n$99999999999999999999\r\n", "*1\r\n$3\r\nabc\rx"}) {
    ParseResult r = Parse(in, &args);
    EXPECT_EQ(r.status, ParseStatus::kError) << in;
    EXPECT_THAT(r.error, HasSubstr("Protocol error")) << in;
  }
}

TEST(ParseCommand, LimitsAreProtocolErrors) {
  ParseLimits limits;
  limits.max_bulk_bytes = 10;
  limits.max_args = 3;
  limits.max_inline_bytes = 32;
  limits.max_command_bytes = 15;
  std::vector<std::string_view> args;
  EXPECT_THAT(Parse("*1\r\n$11\r\n", &args, limits).error, HasSubstr("invalid bulk length"));
  EXPECT_EQ(Parse("*1\r\n$10\r\n", &args, limits).status, ParseStatus::kIncomplete);
  EXPECT_THAT(Parse("*4\r\n", &args, limits).error, HasSubstr("invalid multibulk length"));
  EXPECT_THAT(Parse("*2\r\n$10\r\n0123456789\r\n$6\r\n", &args, limits).error,
              HasSubstr("command too big"));
  EXPECT_THAT(Parse(std::string(40, 'a'), &args, limits).error,
              HasSubstr("too big inline request"));
  EXPECT_THAT(Parse("*" + std::string(40, '1'), &args, limits).error,
              HasSubstr("too big mbulk count string"));
  EXPECT_THAT(Parse("*1\r\n$" + std::string(40, '1'), &args, limits).error,
              HasSubstr("too big bulk count string"));
}

TEST(ParseCommand, AMebibyteOfStarsIsAnErrorAtOnce) {
  std::vector<std::string_view> args;
  const std::string stars(1 << 20, '*');
  ParseResult r = Parse(stars, &args);
  EXPECT_EQ(r.status, ParseStatus::kError);
  EXPECT_THAT(r.error, HasSubstr("too big mbulk count string"));
}

TEST(Encoder, Resp2Forms) {
  std::string out;
  Encoder e(&out, 2);
  e.Simple("OK");
  e.Error("ERR bad\r\nthing");
  e.Integer(-42);
  e.Bulk("ab");
  e.Null();
  e.Map(1);
  e.Set(2);
  e.Verbatim("x");
  EXPECT_EQ(out, "+OK\r\n-ERR bad  thing\r\n:-42\r\n$2\r\nab\r\n$-1\r\n*2\r\n*2\r\n$1\r\nx\r\n");
}

TEST(Encoder, Resp3Forms) {
  std::string out;
  Encoder e(&out, 3);
  e.Null();
  e.Map(2);
  e.Set(1);
  e.Verbatim("x");
  EXPECT_EQ(out, "_\r\n%2\r\n~1\r\n=5\r\ntxt:x\r\n");
}

TEST(Encoder, RoundTripsThroughTheParser) {
  std::string out;
  Encoder e(&out, 2);
  e.Array(3);
  e.Bulk("SET");
  e.Bulk(std::string("k\0", 2));
  e.Bulk(std::string(1000, 'v'));
  std::vector<std::string_view> args;
  ParseResult r = Parse(out, &args);
  ASSERT_EQ(r.status, ParseStatus::kCommand);
  EXPECT_EQ(r.consumed, out.size());
  EXPECT_THAT(args, ElementsAre("SET", std::string("k\0", 2), std::string(1000, 'v')));
}

TEST(EqualsUpper, IgnoresCase) {
  EXPECT_TRUE(EqualsUpper("get", "GET"));
  EXPECT_TRUE(EqualsUpper("GeT", "GET"));
  EXPECT_FALSE(EqualsUpper("gets", "GET"));
  EXPECT_FALSE(EqualsUpper("ge", "GET"));
}

TEST(GlobMatch, RedisPatterns) {
  EXPECT_TRUE(GlobMatch("*", ""));
  EXPECT_TRUE(GlobMatch("*", "abc"));
  EXPECT_TRUE(GlobMatch("key:*", "key:12"));
  EXPECT_FALSE(GlobMatch("key:*", "kez:12"));
  EXPECT_TRUE(GlobMatch("h?llo", "hello"));
  EXPECT_FALSE(GlobMatch("h?llo", "hllo"));
  EXPECT_TRUE(GlobMatch("h[ae]llo", "hallo"));
  EXPECT_FALSE(GlobMatch("h[ae]llo", "hillo"));
  EXPECT_TRUE(GlobMatch("h[^e]llo", "hallo"));
  EXPECT_FALSE(GlobMatch("h[^e]llo", "hello"));
  EXPECT_TRUE(GlobMatch("h[a-b]llo", "hbllo"));
  EXPECT_TRUE(GlobMatch("a\\*b", "a*b"));
  EXPECT_FALSE(GlobMatch("a\\*b", "axb"));
  EXPECT_TRUE(GlobMatch("*a*b*c*", "xxaxxbxxcxx"));
  EXPECT_FALSE(GlobMatch("*a*b*c*", "xxaxxcxxbxx"));
  // Many stars against a long text stay quick (no exponential backtrack).
  EXPECT_FALSE(GlobMatch(std::string(50, '*') + "b", std::string(10000, 'a')));
}

}  // namespace
}  // namespace peerkv::resp
