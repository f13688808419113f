// cli/text_test.cc: JSON escaping and text escaping of the CLI.
#include "cli/text.h"

#include "gtest/gtest.h"

namespace peerkv::cli {
namespace {

TEST(TextTest, JsonEscapesQuotesBackslashesAndControls) {
  EXPECT_EQ(JsonString("a\"b\\c\nd\x01"), "\"a\\\"b\\\\c\\nd\\u0001\"");
  EXPECT_EQ(JsonBytesField("value", "caf\xc3\xa9"), "\"value\":\"caf\xc3\xa9\"");
  EXPECT_EQ(JsonBytesField("value", std::string("\xff\x00", 2)), "\"value_b64\":\"/wA=\"");
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
