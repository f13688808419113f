// consensus/etcd/json_test.cc: the strict JSON reader accepts etcd's answers
// and refuses malformed documents with the offset.
#include "consensus/etcd/json.h"

#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace peerkv::consensus::etcd {
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
                          "\"a", "{\"a\":1} x", "\"\x01\"", "\"\\ud800\"", "{a:1}", "nul"}) {
    EXPECT_THAT(ParseJson(bad).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, "malformed JSON"))
        << bad;
  }
  EXPECT_THAT(ParseJson(std::string(100, '[') + std::string(100, ']')).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "deeper"));
}

TEST(Json, QuotesStrings) {
  EXPECT_EQ(JsonQuote("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
  auto back = ParseJson(JsonQuote("x\"\x01y"));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->text, "x\"\x01y");
}

}  // namespace
}  // namespace peerkv::consensus::etcd
