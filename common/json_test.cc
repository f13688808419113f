// common/json_test.cc: the strict JSON reader accepts etcd's answers and
// refuses malformed documents with the offset; the shared encodings.
#include "common/json.h"

#include "absl/strings/escaping.h"
#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace peerkv::json {
namespace {

TEST(Json, ParsesAnEtcdAnswer) {
  auto v = ParseJson(
      R"({"header":{"revision":"4"},"kvs":[{"key":"YQ==","value":"Yg==","mod_revision":"3"}],)"
      R"("succeeded":true,"n":-1.5e3,"s":"a\"\\\/\n\u00e9\ud83d\ude00","z":null})");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*JsonUint(*v->Find("header"), "revision", "header"), 4u);
  EXPECT_EQ(*JsonBytes(v->Find("kvs")->array[0], "key", "kv"), "a");
  EXPECT_TRUE(v->Find("succeeded")->boolean);
  EXPECT_EQ(v->Find("n")->text, "-1.5e3");
  EXPECT_EQ(v->Find("s")->text, "a\"\\/\n\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_EQ(v->Find("z")->type, JsonValue::Type::kNull);
  EXPECT_EQ(*JsonUint(*v, "absent", "x"), 0u);
  EXPECT_THAT(JsonUint(*v, "s", "x").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "x.s"));
}

TEST(Json, RefusesMalformedDocuments) {
  for (const char* bad : {"", "{", "{\"a\"}", "{\"a\":1,}", "[1,]", "01", "1.", "tru", "\"\\x\"",
                          "\"a", "{\"a\":1} x", "\"\x01\"", "\"\\ud800\"", "{a:1}", "nul",
                          "\"\xff\"", "\"\xc0\xaf\"", "{\"a\":1,\"a\":2}"}) {
    EXPECT_THAT(ParseJson(bad).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, "malformed JSON"))
        << bad;
  }
  EXPECT_THAT(ParseJson(std::string(100, '[') + std::string(100, ']')).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "deeper"));
  EXPECT_THAT(ParseJson("1 2").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "expected end of document"));
  EXPECT_THAT(ParseJson("\"\xff\"").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "at byte 1: expected UTF-8 text"));
  const JsonLimits shallow{.max_depth = 2};
  EXPECT_TRUE(ParseJson("[[1]]", shallow).ok());
  EXPECT_THAT(ParseJson("[[[1]]]", shallow).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "nested deeper than 2"));
  EXPECT_THAT(ParseJson("[1]", JsonLimits{.max_bytes = 2}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "limit of 2"));
}

TEST(Json, QuotesStrings) {
  EXPECT_EQ(JsonQuote("a\"b\\c\n<"), "\"a\\\"b\\\\c\\n\\u003c\"");
  auto back = ParseJson(JsonQuote("x\"\x01y"));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->text, "x\"\x01y");
}

TEST(Json, ChecksUtf8) {
  EXPECT_TRUE(IsUtf8("plain \xc3\xa9 \xf0\x9f\x98\x80"));
  for (const char* bad : {"\xff", "\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80"}) {
    EXPECT_FALSE(IsUtf8(bad)) << absl::CEscape(bad);
  }
}

TEST(Json, BytesFieldsFallBackToBase64) {
  std::string out;
  AppendBytesField(out, "key", "k1");
  out += ",";
  AppendBytesField(out, "value", std::string("\xff\x00", 2));
  EXPECT_EQ(out, "\"key\":\"k1\",\"value_b64\":\"/wA=\"");
  EXPECT_EQ(*Unbase64("/wA=", "value_b64"), std::string("\xff\x00", 2));
  EXPECT_THAT(Unbase64("!!", "value_b64").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "value_b64 is not base64"));
}

}  // namespace
}  // namespace peerkv::json
