// cli/text_test.cc: UTF-8 detection, JSON escaping and text escaping.
#include "cli/text.h"

#include "gtest/gtest.h"

namespace peerkv::cli {
namespace {

TEST(TextTest, Utf8Detection) {
  EXPECT_TRUE(IsUtf8(""));
  EXPECT_TRUE(IsUtf8("plain ascii"));
  EXPECT_TRUE(IsUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsUtf8("\xff"));
  EXPECT_FALSE(IsUtf8("\xc3"));              // truncated
  EXPECT_FALSE(IsUtf8("\xc0\xaf"));          // overlong
  EXPECT_FALSE(IsUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(IsUtf8("\xf4\x90\x80\x80"));  // beyond U+10FFFF
}

TEST(TextTest, JsonEscapesQuotesBackslashesAndControls) {
  EXPECT_EQ(JsonString("a\"b\\c\nd\x01"), "\"a\\\"b\\\\c\\nd\\u0001\"");
  EXPECT_EQ(JsonBytesField("value", "caf\xc3\xa9"), "\"value\":\"caf\xc3\xa9\"");
  EXPECT_EQ(JsonBytesField("value", std::string("\xff\x00", 2)), "\"value_base64\":\"/wA=\"");
}

TEST(TextTest, RecordJsonShowsTombstones) {
  Record r{"ks", "k", Version{MakeHlc(5, 1), 0xab}, true, "", 9};
  EXPECT_EQ(RecordJson(r),
            "{\"keyspace\":\"ks\",\"key\":\"k\",\"deleted\":true,"
            "\"version\":\"5.1@00000000000000ab\",\"seq\":9}");
}

TEST(TextTest, EscapeTextKeepsUtf8AndEscapesTheRest) {
  EXPECT_EQ(EscapeText("a\tb\\c\n"), "a\\tb\\\\c\\n");
  EXPECT_EQ(EscapeText("caf\xc3\xa9"), "caf\xc3\xa9");
  EXPECT_EQ(EscapeText(std::string("\xff\x00", 2)), "\\xff\\x00");
}

}  // namespace
}  // namespace peerkv::cli
