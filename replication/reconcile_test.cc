// replication/reconcile_test.cc: the reconcile codec and its limits, and
// sessions between two in-memory replicas (a fake ReconcileSource that
// computes every fingerprint from its items), through the encoded messages.
#include "replication/reconcile.h"

#include <map>

#include "absl/strings/str_format.h"
#include "common/macros.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/validation.h"

namespace peerkv::replication {
namespace {

using ::testing::HasSubstr;

class FakeView final : public rbsr::RangeView {
 public:
  FakeView(std::string keyspace, const std::map<std::string, Record>* records)
      : keyspace_(std::move(keyspace)), records_(records) {}
  absl::StatusOr<rbsr::Fingerprint> FingerprintOf(const rbsr::NodeId& node) override {
    rbsr::Fingerprint fp;
    if (records_ == nullptr) return fp;
    for (const auto& [key, r] : *records_) {
      if (node.Contains(rbsr::KeyPosition(key))) {
        fp.Add(rbsr::ItemHash(keyspace_, key, r.version, r.deleted, r.value));
      }
    }
    return fp;
  }
  absl::Status ForEachItem(const rbsr::NodeId& node,
                           absl::FunctionRef<void(const rbsr::RangeItem&)> fn) override {
    if (records_ == nullptr) return absl::OkStatus();
    std::multimap<uint64_t, const Record*> ordered;
    for (const auto& [key, r] : *records_) {
      const uint64_t position = rbsr::KeyPosition(key);
      if (node.Contains(position)) ordered.emplace(position, &r);
    }
    for (const auto& [position, r] : ordered) {
      rbsr::RangeItem item;
      item.position = position;
      item.key = r->key;
      item.version = r->version;
      item.deleted = r->deleted;
      item.hash = rbsr::ItemHash(keyspace_, r->key, r->version, r->deleted, r->value);
      fn(item);
    }
    return absl::OkStatus();
  }

 private:
  const std::string keyspace_;
  const std::map<std::string, Record>* const records_;
};

class FakeReplica final : public ReconcileSource {
 public:
  void Put(const std::string& keyspace, const std::string& key, uint64_t hlc,
           const std::string& value, bool deleted = false) {
    Record r{keyspace, key, Version{hlc, 7}, deleted, deleted ? "" : value};
    data_[keyspace][key] = r;
  }
  void Erase(const std::string& keyspace, const std::string& key) { data_[keyspace].erase(key); }
  // LWW, as Store::Merge: returns how many won.
  uint64_t Merge(const std::vector<Record>& records) {
    uint64_t won = 0;
    for (const Record& r : records) {
      auto& slot = data_[r.keyspace];
      auto it = slot.find(r.key);
      if (it == slot.end() || it->second.version < r.version) {
        Record copy = r;
        copy.seq = 0;
        slot[r.key] = copy;
        ++won;
      }
    }
    return won;
  }
  absl::StatusOr<std::vector<KeyspaceRoot>> Roots() override {
    std::vector<KeyspaceRoot> out;
    for (const auto& [keyspace, records] : data_) {
      if (records.empty()) continue;
      FakeView view(keyspace, &records);
      PEERKV_ASSIGN_OR_RETURN(rbsr::Fingerprint fp, view.FingerprintOf(rbsr::NodeId{}));
      out.push_back({keyspace, fp});
    }
    return out;
  }
  absl::StatusOr<std::unique_ptr<rbsr::RangeView>> View(std::string_view keyspace) override {
    auto it = data_.find(std::string(keyspace));
    return std::make_unique<FakeView>(std::string(keyspace),
                                      it == data_.end() ? nullptr : &it->second);
  }
  absl::StatusOr<std::optional<Record>> Get(std::string_view keyspace,
                                            std::string_view key) override {
    auto it = data_.find(std::string(keyspace));
    if (it == data_.end()) return std::nullopt;
    auto r = it->second.find(std::string(key));
    if (r == it->second.end()) return std::nullopt;
    return r->second;
  }
  bool operator==(const FakeReplica& other) const {
    auto strip = [](const auto& data) {
      std::map<std::string, std::map<std::string, Record>> out;
      for (const auto& [k, v] : data) {
        if (!v.empty()) out[k] = v;
      }
      return out;
    };
    return strip(data_) == strip(other.data_);
  }

 private:
  std::map<std::string, std::map<std::string, Record>> data_;
};

// Runs a session of `a` with `b` through encoded messages, as the engine
// and the server do.
absl::StatusOr<ReconcileReport> Reconcile(FakeReplica& a, FakeReplica& b,
                                          ReconcileLimits limits = {},
                                          size_t responder_budget = 1 << 20,
                                          size_t responder_merge_limit = kMaxBatchRecords) {
  ReconcileSession session(a, limits);
  while (true) {
    PEERKV_ASSIGN_OR_RETURN(std::optional<ReconcileRequest> request, session.Next());
    if (!request.has_value()) break;
    const std::string sent = EncodeReconcileRequest(*request);
    session.NoteSent(sent.size());
    PEERKV_ASSIGN_OR_RETURN(ReconcileRequest received,
                            DecodeReconcileRequest(sent, kMaxValueBytes));
    EXPECT_EQ(received, *request);
    // As Store::Merge: a batch over its limit is refused whole.
    if (received.push.size() > responder_merge_limit) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "merge batch has %d records; the limit is %d", received.push.size(),
          responder_merge_limit));
    }
    const uint64_t won = b.Merge(received.push);
    PEERKV_ASSIGN_OR_RETURN(ReconcileResponse response,
                            ServeReconcile(b, received, responder_budget));
    response.push_won = won;
    const std::string answer = EncodeReconcileResponse(response);
    PEERKV_ASSIGN_OR_RETURN(ReconcileResponse decoded,
                            DecodeReconcileResponse(answer, kMaxValueBytes));
    EXPECT_EQ(decoded, response);
    PEERKV_ASSIGN_OR_RETURN(std::vector<Record> merge, session.OnResponse(decoded, answer.size()));
    session.NoteMerged(a.Merge(merge), 0);
  }
  return session.report();
}

void Fill(FakeReplica& r, int n, const std::string& keyspace = "ks") {
  for (int i = 0; i < n; ++i) {
    r.Put(keyspace, "key" + std::to_string(i), 1000 + i, "value" + std::to_string(i));
  }
}

TEST(ReconcileTest, InSyncIsOneSmallRound) {
  FakeReplica a, b;
  Fill(a, 300);
  Fill(b, 300);
  absl::StatusOr<ReconcileReport> report = Reconcile(a, b);
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_TRUE(report->in_sync);
  EXPECT_TRUE(report->was_in_sync);
  EXPECT_EQ(report->rounds, 1);
  EXPECT_LE(report->bytes_sent, 64u);
  EXPECT_LE(report->bytes_received, 16u);
}

// The report's time comes from the clock the caller passes (the engine's
// executor, a simulated one in the simulation), never the wall clock.
TEST(ReconcileTest, TheReportsTimeIsOnTheCallersClock) {
  FakeReplica a, b;
  Fill(a, 10);
  Fill(b, 10);
  const absl::Time start = absl::FromUnixSeconds(1000);
  ReconcileSession session(a, ReconcileLimits{}, start);
  absl::StatusOr<std::optional<ReconcileRequest>> request =
      session.Next(start + absl::Seconds(1));
  ASSERT_THAT(request.status(), IsOk());
  ASSERT_TRUE(request->has_value());
  absl::StatusOr<ReconcileResponse> response = ServeReconcile(b, **request, 1 << 20);
  ASSERT_THAT(response.status(), IsOk());
  ASSERT_THAT(session.OnResponse(*response, 0, start + absl::Seconds(3)).status(), IsOk());
  EXPECT_TRUE(session.report().in_sync);
  EXPECT_EQ(session.report().time, absl::Seconds(3));
}

// What the peer lacks is pushed in requests of at most max_push_records
// (by default the store's merge limit, kMaxBatchRecords), never in one
// batch the responder's merge refuses whole. converge_bench's 1,000,000-
// record pull ended in "merge batch has 20000 records; the limit is
// 10000" before.
TEST(ReconcileTest, APushIsSplitToTheLimitTheResponderMerges) {
  FakeReplica a, b;
  Fill(a, 60);
  Fill(b, 5);
  ReconcileLimits limits;
  limits.max_push_records = 7;
  absl::StatusOr<ReconcileReport> report =
      Reconcile(a, b, limits, /*responder_budget=*/1 << 20, /*responder_merge_limit=*/7);
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_TRUE(report->in_sync) << report->incomplete;
  EXPECT_TRUE(a == b);
  ASSERT_EQ(report->keyspaces.size(), 1u);
  EXPECT_EQ(report->keyspaces[0].peer_lacked, 55u);
  // The default is the store's limit.
  EXPECT_EQ(ReconcileLimits{}.max_push_records, kMaxBatchRecords);
}

TEST(ReconcileTest, RepairsBothDirections) {
  FakeReplica a, b;
  Fill(a, 500);
  Fill(b, 500);
  // a lost some, b lost others, and each has a newer version of one key.
  for (int i : {3, 77, 401}) a.Erase("ks", "key" + std::to_string(i));
  for (int i : {5, 250}) b.Erase("ks", "key" + std::to_string(i));
  a.Put("ks", "key10", 9000, "newer on a");
  b.Put("ks", "key11", 9000, "newer on b");
  b.Put("ks", "key12", 9000, "", /*deleted=*/true);
  b.Put("other", "only-b", 5000, "x");
  a.Put("third", "only-a", 5000, "y");
  absl::StatusOr<ReconcileReport> report = Reconcile(a, b);
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_TRUE(report->in_sync) << report->incomplete;
  EXPECT_FALSE(report->was_in_sync);
  EXPECT_TRUE(a == b);
  uint64_t fetched = 0, lacked = 0;
  for (const KeyspaceDiff& d : report->keyspaces) {
    fetched += d.fetched;
    lacked += d.peer_lacked;
  }
  EXPECT_EQ(fetched, 3u + 2u + 1u);  // 3 lost, key11, key12, only-b
  EXPECT_EQ(lacked, 2u + 1u + 1u);   // 2 lost, key10, only-a
  EXPECT_EQ(report->keyspaces.size(), 3u);
}

// What differs travels once: a register newer here is pushed with its
// value, and the peer's older value of it never comes back (leaves carry
// keys, versions and hashes; values are fetched only where the peer's is
// newer). Before, each differing leaf came with its value whichever side
// was newer.
TEST(ReconcileTest, AValueNewerHereIsSentAndTheStaleOneNotReceived) {
  FakeReplica a, b;
  Fill(a, 300);
  Fill(b, 300);
  const std::string stale(10'000, 'o');
  const std::string fresh(10'000, 'n');
  b.Put("ks", "key7", 5000, stale);
  a.Put("ks", "key7", 6000, fresh);
  absl::StatusOr<ReconcileReport> report = Reconcile(a, b);
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_TRUE(report->in_sync) << report->incomplete;
  EXPECT_TRUE(a == b);
  EXPECT_GT(report->bytes_sent, fresh.size());
  EXPECT_LT(report->bytes_received, 1000u);
  EXPECT_LE(report->rounds, 4);
}

TEST(ReconcileTest, RepairsAWholeMissingKeyspaceWithinSmallAnswers) {
  FakeReplica a, b;
  Fill(b, 400);
  ReconcileLimits limits;
  limits.max_nodes = 7;
  absl::StatusOr<ReconcileReport> report = Reconcile(a, b, limits, /*responder_budget=*/600);
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_TRUE(report->in_sync) << report->incomplete;
  EXPECT_TRUE(a == b);
}

TEST(ReconcileTest, StopsAtTheRoundLimit) {
  FakeReplica a, b;
  Fill(b, 400);
  ReconcileLimits limits;
  limits.max_rounds = 3;
  absl::StatusOr<ReconcileReport> report = Reconcile(a, b, limits);
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_FALSE(report->in_sync);
  EXPECT_EQ(report->rounds, 3);
  EXPECT_THAT(report->incomplete, HasSubstr("3 rounds"));
}

TEST(ReconcileTest, EqualVersionsWithDifferentValuesAreConflictsNotLoops) {
  FakeReplica a, b;
  Fill(a, 50);
  Fill(b, 50);
  a.Put("ks", "key1", 5000, "clone one");
  b.Put("ks", "key1", 5000, "clone two");
  absl::StatusOr<ReconcileReport> report = Reconcile(a, b);
  ASSERT_THAT(report.status(), IsOk());
  EXPECT_FALSE(report->in_sync);
  EXPECT_GE(report->conflicts, 1u);
  EXPECT_THAT(report->incomplete, HasSubstr("passes"));
  EXPECT_LE(report->passes, kMaxPasses);
}

TEST(ReconcileCodecTest, RoundTrips) {
  ReconcileRequest request;
  request.pass = 2;
  request.width = 3;
  request.compare = true;
  request.max_answer_bytes = 12345;
  rbsr::Fingerprint fp;
  fp.sum.limbs = {1, 2, 3, 0xffffffffffffffffull};
  fp.count = 99;
  request.roots = {{"a", fp}, {"b", {}}};
  std::vector<uint32_t> sparse(16, 0);
  sparse[3] = 0x777;
  sparse[9] = 0x888;
  request.expand = {{"a", rbsr::NodeId{3, 0xabc}, std::vector<uint32_t>(16, 0x1234)},
                    {"a", rbsr::NodeId{4, 0xabc0}, sparse, uint16_t{(1 << 3) | (1 << 9)}},
                    {"b", rbsr::NodeId{16, ~uint64_t{0}}, {}}};
  request.fetch = {{"b", "k"}};
  request.push = {Record{"a", "key", Version{5, 6}, false, "v"},
                  Record{"b", "key", Version{5, 6}, true, ""}};
  absl::StatusOr<ReconcileRequest> back =
      DecodeReconcileRequest(EncodeReconcileRequest(request), 100);
  ASSERT_THAT(back.status(), IsOk());
  EXPECT_EQ(*back, request);
  request.verify_only = true;
  back = DecodeReconcileRequest(EncodeReconcileRequest(request), 100);
  ASSERT_THAT(back.status(), IsOk());
  EXPECT_EQ(*back, request);

  ReconcileResponse response;
  response.differing = {{"a", fp}};
  response.expanded = 1;
  response.masks = {0x000f};
  Expansion children;
  children.children.assign(16, 0xbeef);
  Expansion items;
  items.kind = Expansion::Kind::kItems;
  items.items = {Record{"", "x", Version{1, 2}, false, "val"}, Record{"", "y", Version{1, 3}, true, ""}};
  Expansion keys;
  keys.kind = Expansion::Kind::kItemKeys;
  keys.items = {Record{"", "x", Version{1, 2}, false, ""}, Record{"", "y", Version{1, 3}, true, ""}};
  keys.hashes = {0x1234, 0xffff};
  Expansion few;
  few.children = sparse;
  few.occupied = uint16_t{(1 << 3) | (1 << 9)};
  response.expansions = {children, items, keys, few};
  // Fetched records travel without keyspace and key (the request's).
  response.fetched = {std::nullopt, Record{"", "", Version{8, 9}, false, "w"},
                      Record{"", "", Version{8, 10}, true, ""}};
  response.push_won = 3;
  response.push_refused = 1;
  absl::StatusOr<ReconcileResponse> answer =
      DecodeReconcileResponse(EncodeReconcileResponse(response), 100);
  ASSERT_THAT(answer.status(), IsOk());
  EXPECT_EQ(*answer, response);
}

// Record::signature travels with pushed and fetched records (README
// "Signed records"), tombstones' too.
TEST(ReconcileCodecTest, PushedAndFetchedRecordsCarryTheirSignatures) {
  ReconcileRequest request;
  request.width = 2;
  request.push = {Record{"a", "key", Version{5, 6}, false, "v", 0, std::nullopt, "SIG1"},
                  Record{"b", "key", Version{5, 6}, true, "", 0, std::nullopt, "SIG2"},
                  Record{"b", "plain", Version{5, 7}, false, "w"}};
  absl::StatusOr<ReconcileRequest> back =
      DecodeReconcileRequest(EncodeReconcileRequest(request), 100);
  ASSERT_THAT(back.status(), IsOk());
  EXPECT_EQ(*back, request);
  ReconcileResponse response;
  response.width = 2;
  response.fetched = {Record{"", "", Version{8, 9}, false, "w", 0, std::nullopt, "SIG3"},
                      Record{"", "", Version{8, 10}, true, "", 0, std::nullopt, "SIG4"},
                      Record{"", "", Version{8, 11}, false, "x"}};
  absl::StatusOr<ReconcileResponse> answer =
      DecodeReconcileResponse(EncodeReconcileResponse(response), 100);
  ASSERT_THAT(answer.status(), IsOk());
  EXPECT_EQ(*answer, response);
  // Over the limit: refused naming it.
  request.push = {Record{"a", "key", Version{5, 6}, false, "v", 0, std::nullopt,
                         std::string(kMaxSignatureBytes + 1, 's')}};
  EXPECT_THAT(DecodeReconcileRequest(EncodeReconcileRequest(request), 100).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "the limit is 512"));
}

// The body of an encoded request after the format byte and an empty
// keyspace table, for hand-made bad messages.
std::string Header(std::vector<std::string> keyspaces = {}) {
  std::string out(1, static_cast<char>(kReconcileFormat));
  out.push_back(static_cast<char>(keyspaces.size()));
  for (const std::string& k : keyspaces) {
    out.push_back(static_cast<char>(k.size()));
    out += k;
  }
  return out;
}

std::string Varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
  return out;
}

TEST(ReconcileCodecTest, RefusesAbsurdRequestsNamingFieldAndLimit) {
  auto decode = [](const std::string& bytes) { return DecodeReconcileRequest(bytes, 100); };
  // pass, compare, max_answer_bytes, then counts.
  const std::string prefix = Header({"ks"}) + std::string("\0\x02\0\0", 4);
  EXPECT_THAT(decode(""), StatusIs(absl::StatusCode::kInvalidArgument, "format"));
  EXPECT_THAT(decode(std::string(1, 9)),
              StatusIs(absl::StatusCode::kInvalidArgument, "format: 9; this replica speaks 2"));
  EXPECT_THAT(decode(Header() + std::string(1, kMaxPasses)),
              StatusIs(absl::StatusCode::kInvalidArgument, "pass"));
  EXPECT_THAT(decode(Header() + std::string(1, 0) + std::string(1, 9)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "width: 9 bytes; fingerprints take 1..4"));
  // Roots without compare.
  EXPECT_THAT(decode(prefix + Varint(1)),
              StatusIs(absl::StatusCode::kInvalidArgument, "without compare"));
  // Too many nodes: the count alone is refused, before any is read.
  EXPECT_THAT(decode(prefix + Varint(0) + Varint(kMaxReconcileNodes + 1)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "expand: 16385 entries; the limit is 16384"));
  // A depth beyond the tree, a prefix too long for its depth.
  EXPECT_THAT(decode(prefix + Varint(0) + Varint(1) + Varint(0) + std::string(1, 17) + Varint(0)),
              StatusIs(absl::StatusCode::kInvalidArgument, "depth 17; the limit is 16"));
  EXPECT_THAT(decode(prefix + Varint(0) + Varint(1) + Varint(0) + std::string(1, 1) + Varint(16)),
              StatusIs(absl::StatusCode::kInvalidArgument, "does not fit depth 1"));
  // A keyspace index the table lacks.
  EXPECT_THAT(decode(prefix + Varint(0) + Varint(1) + Varint(5) + std::string(1, 0) + Varint(0)),
              StatusIs(absl::StatusCode::kInvalidArgument, "keyspace index 5"));
  // Too many keys, and an oversized one.
  EXPECT_THAT(decode(prefix + Varint(0) + Varint(0) + Varint(kMaxReconcileFetch + 1)),
              StatusIs(absl::StatusCode::kInvalidArgument, "fetch: 20001 entries"));
  EXPECT_THAT(decode(prefix + Varint(0) + Varint(0) + Varint(1) + Varint(0) + Varint(401)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "fetch: 401 bytes; the limit is 400"));
  // Too many pushed records, a value beyond the limit, trailing bytes.
  // One more pushed record than one Store::Merge takes.
  EXPECT_THAT(decode(prefix + Varint(0) + Varint(0) + Varint(0) + Varint(kMaxBatchRecords + 1)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "push: 10001 entries; the limit is 10000"));
  const std::string record_head = Varint(0) + Varint(1) + "k" + Varint(5) + Varint(6) + "\x02";
  EXPECT_THAT(decode(prefix + Varint(0) + Varint(0) + Varint(0) + Varint(1) + record_head +
                     Varint(101) + std::string(101, 'v')),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "push: 101 bytes; the limit is 100"));
  EXPECT_THAT(decode(prefix + Varint(0) + Varint(0) + Varint(0) + Varint(0) + "x"),
              StatusIs(absl::StatusCode::kInvalidArgument, "1 bytes after its end"));
  // A bad keyspace name in the table.
  EXPECT_THAT(decode(Header({"BAD NAME"})), StatusIs(absl::StatusCode::kInvalidArgument,
                                                     "keyspace"));
  // A message over the size limit.
  EXPECT_THAT(decode(std::string(kMaxReconcileMessageBytes + 1, '\0')),
              StatusIs(absl::StatusCode::kInvalidArgument, "the limit is"));
}

TEST(ReconcileCodecTest, RefusesAbsurdAnswers) {
  auto decode = [](const std::string& bytes) {
    // Every answer starts with its width after the table: 2.
    return DecodeReconcileResponse(bytes.substr(0, 2) + "\x02" + bytes.substr(2), 100);
  };
  // differing = 0, expanded = 1 with mask 0: at most one expansion.
  EXPECT_THAT(decode(Header() + Varint(0) + Varint(1) + std::string(2, '\0') + Varint(5)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "expansions: 5 entries; the limit is 1"));
  EXPECT_THAT(decode(Header() + Varint(0) + Varint(kMaxReconcileNodes + 1)),
              StatusIs(absl::StatusCode::kInvalidArgument, "expanded: 16385 entries"));
  // An items expansion with more items than an answer may carry.
  EXPECT_THAT(decode(Header() + Varint(0) + Varint(1) + std::string(2, '\0') + Varint(1) +
                     "\x01" + Varint(kMaxReconcileRecords + 1)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "items: 20001 entries; the limit is 20000"));
  EXPECT_THAT(decode(Header() + Varint(0) + Varint(1) + std::string(2, '\0') + Varint(1) +
                     "\x07"),
              StatusIs(absl::StatusCode::kInvalidArgument, "kinds are 0..4"));
}

// A responder that lies: items outside the node asked about.
TEST(ReconcileTest, RefusesItemsOutsideTheirNode) {
  FakeReplica a;
  Fill(a, 40);
  ReconcileSession session(a);
  absl::StatusOr<std::optional<ReconcileRequest>> first = session.Next();
  ASSERT_THAT(first.status(), IsOk());
  ReconcileResponse lie;
  lie.differing = {{"ks", {}}};
  Expansion children;
  children.children.assign(16, 0);
  lie.expansions = {children};
  ASSERT_THAT(session.OnResponse(lie).status(), IsOk());
  absl::StatusOr<std::optional<ReconcileRequest>> second = session.Next();
  ASSERT_THAT(second.status(), IsOk());
  ASSERT_TRUE(second->has_value());
  ASSERT_FALSE((*second)->expand.empty());
  // Its first differing child, as the answer below claims.
  const rbsr::NodeId asked = (*second)->expand[0].node.Child(0);
  // A key whose position is not in `asked`.
  std::string outside;
  for (int i = 0; outside.empty(); ++i) {
    std::string k = "x" + std::to_string(i);
    if (!asked.Contains(rbsr::KeyPosition(k))) outside = k;
  }
  ReconcileResponse bad;
  bad.expanded = 1;
  bad.masks = {1};
  Expansion items;
  items.kind = Expansion::Kind::kItems;
  items.items = {Record{"", outside, Version{1, 2}, false, "v"}};
  bad.expansions = {items};
  EXPECT_THAT(session.OnResponse(bad).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "outside the node"));
  EXPECT_TRUE(session.done());
}

}  // namespace
}  // namespace peerkv::replication

namespace peerkv::replication {
namespace {

// Runs sessions of `a` (over `local`, a source of `a`) with `b` (over
// `remote`), where `a` refuses to merge keys starting with "forged" and
// remembers them in `memory`; returns the report and counts refusals.
absl::StatusOr<ReconcileReport> ReconcileRefusing(FakeReplica& a, ReconcileSource& local,
                                                  FakeReplica& b, ReconcileSource& remote,
                                                  RefusedMemory& memory, int& refusals) {
  ReconcileSession session(local);
  while (true) {
    PEERKV_ASSIGN_OR_RETURN(std::optional<ReconcileRequest> request, session.Next());
    if (!request.has_value()) break;
    const uint64_t won = b.Merge(request->push);
    PEERKV_ASSIGN_OR_RETURN(ReconcileResponse response, ServeReconcile(remote, *request, 1 << 20));
    response.push_won = won;
    PEERKV_ASSIGN_OR_RETURN(std::vector<Record> merge, session.OnResponse(response));
    std::vector<Record> kept;
    MergeResult result;
    for (const Record& r : merge) {
      if (r.key.rfind("forged", 0) == 0) {
        result.refused.push_back(RefusedRecord{r.keyspace, r.key, r.version,
                                               absl::PermissionDeniedError("not a writer")});
        ++refusals;
      } else {
        kept.push_back(r);
      }
    }
    memory.Note(merge, result);
    session.NoteMerged(a.Merge(kept), result.refused.size());
  }
  return session.report();
}

// Issue 10: a record the initiator refuses was fetched again every pass
// and every session, counted each time, and no session ended in sync. Over
// RefusedOverlay the first session fetches it once, remembers it, and ends
// in sync; the next ones are in sync in one round and fetch nothing.
TEST(RefusedOverlayTest, ARefusedRecordIsFetchedOnceAndSessionsEndInSync) {
  FakeReplica a, b;
  Fill(a, 200);
  Fill(b, 200);
  b.Put("ks", "forged-1", 5000, "by a non-writer");
  b.Put("ks", "key7", 6000, "forged-looking but accepted");
  b.Put("ks", "forged-2", 5001, "", /*deleted=*/true);
  a.Put("ks", "forged-2", 10, "an older one held here");
  RefusedMemory memory;
  std::unique_ptr<ReconcileSource> local = RefusedOverlay(a, memory);
  int refusals = 0;
  absl::StatusOr<ReconcileReport> first = ReconcileRefusing(a, *local, b, b, memory, refusals);
  ASSERT_THAT(first.status(), IsOk());
  EXPECT_TRUE(first->in_sync) << first->incomplete;
  EXPECT_EQ(refusals, 2);
  EXPECT_EQ(memory.size(), 2u);
  EXPECT_EQ((*a.Get("ks", "key7"))->value, "forged-looking but accepted");
  EXPECT_FALSE(a.Get("ks", "forged-1")->has_value());
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<ReconcileReport> again = ReconcileRefusing(a, *local, b, b, memory, refusals);
    ASSERT_THAT(again.status(), IsOk());
    EXPECT_TRUE(again->was_in_sync);
    EXPECT_EQ(again->rounds, 1);
  }
  EXPECT_EQ(refusals, 2);
  // A newer version there makes the entry moot: fetched (and refused) once.
  b.Put("ks", "forged-1", 7000, "again");
  absl::StatusOr<ReconcileReport> newer = ReconcileRefusing(a, *local, b, b, memory, refusals);
  ASSERT_THAT(newer.status(), IsOk());
  EXPECT_TRUE(newer->in_sync) << newer->incomplete;
  EXPECT_EQ(refusals, 3);
}

// Issue 10: two sides that reconcile different keyspaces with each other
// (friends whose policies disagree) end in sync over those both reconcile,
// from either side, without pushing or fetching the rest.
TEST(ReconcilesTest, SidesReconcileWhatBothShare) {
  FakeReplica a, b;
  Fill(a, 50, "shared");
  Fill(b, 50, "shared");
  Fill(a, 20, "stale");  // a still lets b read it; b no longer lets a
  Fill(b, 30, "stale");
  b.Put("shared", "new-on-b", 9000, "x");
  auto only_shared = std::make_shared<const KeyspaceFilter>(
      [](std::string_view ks) { return ks == "shared"; });
  auto both = std::make_shared<const KeyspaceFilter>(
      [](std::string_view ks) { return ks == "shared" || ks == "stale"; });
  std::unique_ptr<ReconcileSource> a_side = FilteredReconcileSource(a, both);
  std::unique_ptr<ReconcileSource> b_side = FilteredReconcileSource(b, only_shared);
  for (int from_a = 0; from_a < 2; ++from_a) {
    ReconcileSource& local = from_a ? *a_side : *b_side;
    ReconcileSource& remote = from_a ? *b_side : *a_side;
    FakeReplica& here = from_a ? a : b;
    FakeReplica& there = from_a ? b : a;
    ReconcileSession session(local);
    for (int round = 0; round < 64; ++round) {
      absl::StatusOr<std::optional<ReconcileRequest>> request = session.Next();
      ASSERT_THAT(request.status(), IsOk());
      if (!request->has_value()) break;
      for (const Record& r : (*request)->push) EXPECT_EQ(r.keyspace, "shared");
      there.Merge((*request)->push);
      absl::StatusOr<ReconcileResponse> response = ServeReconcile(remote, **request, 1 << 20);
      ASSERT_THAT(response.status(), IsOk());
      absl::StatusOr<std::vector<Record>> merge = session.OnResponse(*response);
      ASSERT_THAT(merge.status(), IsOk());
      for (const Record& r : *merge) EXPECT_EQ(r.keyspace, "shared");
      here.Merge(*merge);
    }
    EXPECT_TRUE(session.report().in_sync) << session.report().incomplete;
  }
  EXPECT_TRUE(a.Get("shared", "new-on-b")->has_value());
  EXPECT_EQ(*a.Get("stale", "key25"), std::nullopt);
}

}  // namespace
}  // namespace peerkv::replication
