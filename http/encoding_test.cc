// http/encoding_test.cc: routing, percent-coding, the JSON writer and
// parser, batch bodies and the metrics text, and a bounded fuzz of the
// parsers (random and mutated inputs must give a value or an error, never
// a crash, under ASan in `make test`).
#include "http/encoding.h"

#include <random>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "http/metrics_text.h"

namespace peerkv::http {
namespace {

using ::absl::StatusCode;
using ::peerkv::IsOk;
using ::peerkv::StatusIs;
using ::testing::HasSubstr;

TEST(EncodingTest, PercentDecodeIsStrict) {
  EXPECT_EQ(*PercentDecode("a%2Fb%00%ff", "key"), std::string("a/b\0\xff", 5));
  EXPECT_EQ(*PercentDecode("a+b", "key"), "a+b");
  EXPECT_EQ(*PercentDecode("a+b", "q", true), "a b");
  EXPECT_THAT(PercentDecode("a%zz", "key"),
              StatusIs(StatusCode::kInvalidArgument, "key: bad percent-encoding at byte 1"));
  EXPECT_THAT(PercentDecode("a%2", "key"), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(PercentDecode("%", "key"), StatusIs(StatusCode::kInvalidArgument));
  const std::string all = [] {
    std::string s;
    for (int c = 0; c < 256; ++c) s.push_back(static_cast<char>(c));
    return s;
  }();
  EXPECT_EQ(*PercentDecode(PercentEncode(all), "key"), all);
}

TEST(EncodingTest, Routes) {
  absl::StatusOr<Target> t = ParseTarget("/v1/kv/ks/a%2Fb/c?x=1");
  ASSERT_THAT(t.status(), IsOk());
  EXPECT_EQ(t->route, Route::kRecord);
  EXPECT_EQ(t->keyspace, "ks");
  EXPECT_EQ(t->key, "a/b/c");
  EXPECT_EQ(t->query.at("x"), "1");
  EXPECT_EQ(ParseTarget("/v1/kv/ks")->route, Route::kScan);
  EXPECT_EQ(ParseTarget("/v1/kv/ks?prefix=a&limit=3")->query.at("limit"), "3");
  EXPECT_EQ(ParseTarget("/v1/kv/")->route, Route::kNotFound);
  EXPECT_EQ(ParseTarget("/v1/watch/ks")->route, Route::kWatch);
  EXPECT_EQ(ParseTarget("/v1/watch/ks/x")->route, Route::kNotFound);
  EXPECT_EQ(ParseTarget("/v1/batch")->route, Route::kBatch);
  EXPECT_EQ(ParseTarget("/v1/status")->route, Route::kStatus);
  EXPECT_EQ(ParseTarget("/metrics")->route, Route::kMetrics);
  EXPECT_EQ(ParseTarget("/")->route, Route::kPage);
  EXPECT_EQ(ParseTarget("/nope")->route, Route::kNotFound);
  // An empty key is routed (the store refuses it with its own message).
  EXPECT_EQ(ParseTarget("/v1/kv/ks/")->route, Route::kRecord);
  EXPECT_THAT(ParseTarget("/v1/kv/k%s/a"), StatusIs(StatusCode::kInvalidArgument, "keyspace"));
  EXPECT_THAT(ParseTarget("/v1/kv/ks?a=1&a=2"), StatusIs(StatusCode::kInvalidArgument, "twice"));
  EXPECT_THAT(ParseTarget("/v1/kv/ks?a=%"), StatusIs(StatusCode::kInvalidArgument, "'a'"));
}

TEST(EncodingTest, RecordJsonUsesBase64ForBytes) {
  std::string out;
  AppendRecordJson(out, "ks", std::string("\xff\x00", 2), Version{5, 1}, false, "v\"<\n", 7);
  EXPECT_THAT(out, HasSubstr("\"key_b64\":\"/wA=\""));
  EXPECT_THAT(out, HasSubstr("\"value\":\"v\\\"\\u003c\\n\""));
  EXPECT_THAT(out, HasSubstr("\"seq\":7"));
  std::string tomb;
  AppendRecordJson(tomb, "ks", "k", Version{5, 1}, true, "", 8);
  EXPECT_THAT(tomb, Not(HasSubstr("value")));
  EXPECT_THAT(tomb, HasSubstr("\"deleted\":true"));
  absl::StatusOr<json::JsonValue> back = json::ParseJson(out);
  ASSERT_THAT(back.status(), IsOk());
  EXPECT_EQ(*Unbase64(back->Find("key_b64")->text, "k"), std::string("\xff\x00", 2));
  EXPECT_EQ(back->Find("value")->text, "v\"<\n");
}

TEST(EncodingTest, Errors) {
  EXPECT_EQ(ErrorJson(absl::NotFoundError("no \"x\"")),
            "{\"error\":{\"code\":\"NOT_FOUND\",\"message\":\"no \\\"x\\\"\"}}\n");
  EXPECT_EQ(HttpCode(StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpCode(StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpCode(StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(CodeName(StatusCode::kFailedPrecondition), "FAILED_PRECONDITION");
}

TEST(EncodingTest, Batch) {
  absl::StatusOr<std::vector<Mutation>> b = ParseBatch(
      R"({"writes":[{"keyspace":"ks","key":"a","value":"1"},)"
      R"({"keyspace":"ks","key_b64":"/w==","value_b64":"AAE="},)"
      R"({"keyspace":"ks","key":"c","delete":true}]})",
      10);
  ASSERT_THAT(b.status(), IsOk());
  ASSERT_EQ(b->size(), 3u);
  EXPECT_EQ((*b)[1].key, "\xff");
  EXPECT_EQ(*(*b)[1].value, std::string("\x00\x01", 2));
  EXPECT_FALSE((*b)[2].value.has_value());
  EXPECT_THAT(ParseBatch(R"({"writes":[]})", 10), StatusIs(StatusCode::kInvalidArgument, "1..10"));
  EXPECT_THAT(ParseBatch(R"({"writes":[{"keyspace":"k","key":"a"}]})", 10),
              StatusIs(StatusCode::kInvalidArgument, "writes[0]: give a value"));
  EXPECT_THAT(ParseBatch(R"({"writes":[{"keyspace":"k","key":"a","value":"1","delete":true}]})",
                         10),
              StatusIs(StatusCode::kInvalidArgument, "writes[0]"));
  EXPECT_THAT(ParseBatch(R"({"writes":[{"keyspace":"k","key":"a","value":"1","x":1}]})", 10),
              StatusIs(StatusCode::kInvalidArgument, "unknown field 'x'"));
  EXPECT_THAT(ParseBatch(R"({"writes":[{"keyspace":"k","key_b64":"!!","value":"1"}]})", 10),
              StatusIs(StatusCode::kInvalidArgument, "writes[0].key_b64 is not base64"));
  EXPECT_THAT(ParseBatch(R"([1])", 10), StatusIs(StatusCode::kInvalidArgument, "writes"));
}

TEST(EncodingTest, MetricsText) {
  metrics::Registry registry;
  registry.requests.Get({"http", "get", "200"}).Add(3);
  registry.request_seconds.Get({"http", "get"}).Observe(0.002);
  MetricsInput in;
  in.stats.live_records = 5;
  replication::PeerStatus peer;
  peer.name = "b\"\n";
  peer.reachable = true;
  in.peers.push_back(peer);
  in.now = absl::Now();
  const std::string text = RenderMetrics(registry, in);
  EXPECT_THAT(text, HasSubstr("peerkv_requests_total{frontend=\"http\",op=\"get\",code=\"200\"} 3"));
  EXPECT_THAT(text, HasSubstr("peerkv_request_duration_seconds_bucket{frontend=\"http\",op=\"get\","
                              "le=\"0.0025\"} 1"));
  EXPECT_THAT(text, HasSubstr("peerkv_records 5\n"));
  EXPECT_THAT(text, HasSubstr("peerkv_peer_reachable{peer=\"b\\\"\\n\""));
  // Never exchanged: the age is left out rather than made up.
  EXPECT_THAT(text, Not(HasSubstr("peerkv_peer_last_exchange_age_seconds{")));
}

// Bounded fuzz: 20,000 random and mutated targets, queries and bodies.
TEST(EncodingTest, FuzzParsers) {
  std::mt19937_64 rng(12345);
  const std::vector<std::string> seeds = {
      "/v1/kv/ks/a%2Fb?prefix=x&after=y&limit=5",
      "/v1/watch/ks?from_seq=3",
      R"({"writes":[{"keyspace":"ks","key":"a","value":"1"},{"keyspace":"ks","key_b64":"/w==","delete":true}]})",
      R"({"a":[1,2,{"b":"\ud83d\ude00"}],"c":null})",
  };
  const std::string alphabet = "%/?&=+{}[]\",:\\u0123456789abcdefXYZ \x00\xff\xc3\xa9tn";
  for (int i = 0; i < 20'000; ++i) {
    std::string s = seeds[rng() % seeds.size()];
    const int edits = 1 + rng() % 8;
    for (int e = 0; e < edits; ++e) {
      const size_t pos = s.empty() ? 0 : rng() % s.size();
      switch (rng() % 3) {
        case 0: if (!s.empty()) s.erase(pos, 1 + rng() % 4); break;
        case 1: s.insert(pos, 1, alphabet[rng() % alphabet.size()]); break;
        default: if (!s.empty()) s[pos] = static_cast<char>(rng()); break;
      }
    }
    (void)ParseTarget(s);
    (void)json::ParseJson(s);
    (void)ParseBatch(s, 100);
    absl::StatusOr<std::string> d = PercentDecode(s, "x", true);
    if (d.ok()) {
      EXPECT_EQ(*PercentDecode(PercentEncode(*d), "x"), *d);
    }
    std::string out;
    AppendBytesField(out, "k", s);
    absl::StatusOr<json::JsonValue> back = json::ParseJson("{" + out + "}");
    ASSERT_THAT(back.status(), IsOk()) << out;
  }
}

}  // namespace
}  // namespace peerkv::http
