// store/signature_test.cc: Record::signature through the store (README
// "Signed records"): the log entry and quarantine layouts, the signer
// called for local writes once their version is assigned, signatures kept
// by Merge and returned by Get, ChangesSince and snapshot pages, the merge
// gate (StoreOptions::record_gate) with the batch's MergeSource, the
// signature limit, and a format-4 store upgraded when opened.
#include <lmdb.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/codec.h"
#include "store/quarantine.h"
#include "store/store.h"
#include "store/tables.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

using absl::StatusCode;
using ::testing::SizeIs;

constexpr int64_t kT0 = 1'700'000'000'000;

TEST(SignatureCodecTest, LogEntriesCarryAnOptionalSignature) {
  const std::string key = codec::RecordKey("ks", "k");
  std::string bytes;
  codec::EncodeLogEntry(key, 42, "body", &bytes, Version{5, 9}, "SIG");
  absl::StatusOr<codec::LogEntry> entry = codec::DecodeLogEntry(bytes);
  ASSERT_THAT(entry, IsOk());
  EXPECT_EQ(entry->record_key, key);
  EXPECT_EQ(entry->source, 42u);
  EXPECT_EQ(entry->value, "body");
  EXPECT_EQ(entry->replaces, std::optional<Version>(Version{5, 9}));
  EXPECT_EQ(entry->signature, "SIG");
  // Without a mark.
  codec::EncodeLogEntry(key, 42, "body", &bytes, std::nullopt, "SIG");
  entry = codec::DecodeLogEntry(bytes);
  ASSERT_THAT(entry, IsOk());
  EXPECT_EQ(entry->replaces, std::nullopt);
  EXPECT_EQ(entry->signature, "SIG");
  EXPECT_EQ(entry->value, "body");
  // Unsigned (the format-4 layout): no signature, the value intact.
  codec::EncodeLogEntry(key, 42, "body", &bytes, Version{5, 9});
  entry = codec::DecodeLogEntry(bytes);
  ASSERT_THAT(entry, IsOk());
  EXPECT_EQ(entry->signature, "");
  EXPECT_EQ(entry->value, "body");
  // A signature cut short.
  codec::EncodeLogEntry(key, 42, "", &bytes, std::nullopt, "SIGNATURE");
  EXPECT_THAT(codec::DecodeLogEntry(bytes.substr(0, bytes.size() - 1)),
              StatusIs(StatusCode::kDataLoss, "9-byte signature"));
}

TEST(SignatureCodecTest, QuarantineEntriesKeepTheSignature) {
  Record r{"ks", "k", Version{MakeHlc(kT0, 0), 7}, false, "v", 0, std::nullopt, "SIG"};
  absl::StatusOr<Record> back =
      quarantine::Decode(quarantine::EncodeKey(r), quarantine::EncodeValue(r), kMaxValueBytes);
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(back->signature, "SIG");
  EXPECT_EQ(back->value, "v");
  r.deleted = true;
  r.value.clear();
  r.signature.clear();
  back = quarantine::Decode(quarantine::EncodeKey(r), quarantine::EncodeValue(r), kMaxValueBytes);
  ASSERT_THAT(back, IsOk());
  EXPECT_TRUE(back->deleted);
  EXPECT_EQ(back->signature, "");
}

class StoreSignatureTest : public ::testing::Test {
 protected:
  StoreOptions Options() {
    StoreOptions options;
    options.dir = dir_.Sub("db");
    options.wall_clock = &wall_;
    options.scrub_at_open = false;
    return options;
  }
  // Options whose record gate appends each record's source to `sources`
  // and refuses a record whose signature is "forged".
  StoreOptions OptionsWithRecordingGate(std::vector<MergeSource>* sources) {
    StoreOptions options = Options();
    options.record_gate = [sources](const Record& r, MergeSource from) -> absl::Status {
      sources->push_back(from);
      if (r.signature == "forged") return absl::PermissionDeniedError("forged signature");
      return absl::OkStatus();
    };
    return options;
  }
  std::unique_ptr<Store> OpenStore(StoreOptions options) {
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(std::move(options));
    EXPECT_THAT(store, IsOk());
    return store.ok() ? std::move(*store) : nullptr;
  }
  std::unique_ptr<Store> OpenStore() { return OpenStore(Options()); }
  static Record Remote(const std::string& ks, const std::string& key, uint64_t origin,
                       const std::string& signature) {
    return Record{ks, key, Version{MakeHlc(kT0 - 10, 0), origin}, false, "v-" + key, 0,
                  std::nullopt, signature};
  }
  void WithRawLmdb(const std::function<void(MDB_txn*, const tables::Dbis&)>& fn) {
    MDB_env* env = nullptr;
    ASSERT_EQ(mdb_env_create(&env), 0);
    ASSERT_EQ(mdb_env_set_maxdbs(env, tables::kMaxDbs), 0);
    ASSERT_EQ(mdb_env_set_mapsize(env, size_t{64} << 20), 0);
    ASSERT_EQ(mdb_env_open(env, dir_.Sub("db").c_str(), 0, 0600), 0);
    MDB_txn* txn = nullptr;
    ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
    tables::Dbis dbis;
    ASSERT_THAT(tables::OpenDbis(txn, &dbis), IsOk());
    fn(txn, dbis);
    ASSERT_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
  }

  testing::TempDir dir_;
  ManualWallClock wall_{kT0};
};

TEST_F(StoreSignatureTest, LocalWritesAreSignedWithTheirAssignedVersion) {
  StoreOptions options = Options();
  std::vector<Version> seen;
  options.signer = [&seen](std::string_view ks, std::string_view key, const Version& version,
                           bool deleted, std::string_view value) -> std::string {
    if (ks != "signed") return "";
    seen.push_back(version);
    return absl::StrCat("sig:", std::string(key), ":", version.ToString(), deleted ? ":del" : ":",
                        std::string(value));
  };
  auto store = OpenStore(options);
  absl::StatusOr<Version> put = store->Put("signed", "a", "1");
  ASSERT_THAT(put, IsOk());
  absl::StatusOr<Version> del = store->Delete("signed", "b");
  ASSERT_THAT(del, IsOk());
  ASSERT_THAT(store->Put("plain", "c", "3"), IsOk());
  EXPECT_EQ(seen, (std::vector<Version>{*put, *del}));

  const std::string sig_a = absl::StrCat("sig:a:", put->ToString(), ":1");
  absl::StatusOr<std::optional<Record>> a = store->Get("signed", "a");
  ASSERT_THAT(a, IsOk());
  ASSERT_TRUE(a->has_value());
  EXPECT_EQ((*a)->signature, sig_a);
  absl::StatusOr<std::optional<Record>> c = store->Get("plain", "c");
  ASSERT_THAT(c, IsOk());
  ASSERT_TRUE(c->has_value());
  EXPECT_EQ((*c)->signature, "");
  // In the change log (what a pull sends) and snapshot pages, and after a
  // restart.
  absl::StatusOr<Changes> changes = store->ChangesSince(0, 10);
  ASSERT_THAT(changes, IsOk());
  ASSERT_THAT(changes->records, SizeIs(3));
  EXPECT_EQ(changes->records[0].signature, sig_a);
  EXPECT_EQ(changes->records[1].signature, absl::StrCat("sig:b:", del->ToString(), ":del"));
  EXPECT_EQ(changes->records[2].signature, "");
  absl::StatusOr<Store::SnapshotPage> page = store->ReadSnapshot("", "", 10, 1 << 20, 0);
  ASSERT_THAT(page, IsOk());
  ASSERT_THAT(page->records, SizeIs(3));
  EXPECT_EQ(page->records[1].signature, sig_a);  // "plain" sorts first
  store.reset();
  store = OpenStore();
  a = store->Get("signed", "a");
  ASSERT_THAT(a, IsOk());
  ASSERT_TRUE(a->has_value());
  EXPECT_EQ((*a)->signature, sig_a);
  EXPECT_EQ((*a)->value, "1");
}

TEST_F(StoreSignatureTest, MergeKeepsSignaturesAndTheGateSeesTheSource) {
  std::vector<MergeSource> sources;
  auto store = OpenStore(OptionsWithRecordingGate(&sources));
  absl::StatusOr<MergeResult> merged =
      store->Merge({Remote("ks", "a", 7, "good"), Remote("ks", "b", 7, "forged")}, std::nullopt,
                   MergeSource::kFriend);
  ASSERT_THAT(merged, IsOk());
  EXPECT_EQ(merged->won, 1u);
  ASSERT_THAT(merged->refused, SizeIs(1));
  EXPECT_EQ(merged->refused[0].key, "b");
  EXPECT_THAT(merged->refused[0].reason,
              StatusIs(StatusCode::kPermissionDenied, "forged signature"));
  EXPECT_EQ(sources, (std::vector<MergeSource>{MergeSource::kFriend, MergeSource::kFriend}));
  ASSERT_THAT(store->Merge({Remote("ks", "c", 7, "")}), IsOk());
  EXPECT_EQ(sources.back(), MergeSource::kOwnDevice);
  absl::StatusOr<std::optional<Record>> a = store->Get("ks", "a");
  ASSERT_THAT(a, IsOk());
  ASSERT_TRUE(a->has_value());
  EXPECT_EQ((*a)->signature, "good");
  absl::StatusOr<std::optional<Record>> b = store->Get("ks", "b");
  ASSERT_THAT(b, IsOk());
  EXPECT_FALSE(b->has_value());
  absl::StatusOr<StoreStats> stats = store->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->gate_refused, 1u);
}

// CheckRecordGate asks the gate without merging; with no gate, nothing
// vouches for a friend's copy of an own write.
TEST_F(StoreSignatureTest, CheckRecordGateAsksTheGateAndMergesNothing) {
  auto ungated = OpenStore();
  const Record record = Remote("ks", "a", 7, "good");
  EXPECT_THAT(ungated->CheckRecordGate(record, MergeSource::kFriend), IsOk());
  EXPECT_THAT(ungated->CheckRecordGate(record, MergeSource::kOwnWriteFromFriend),
              StatusIs(StatusCode::kPermissionDenied, "checks no record signatures"));
  ungated.reset();
  std::vector<MergeSource> sources;
  auto store = OpenStore(OptionsWithRecordingGate(&sources));
  EXPECT_THAT(store->CheckRecordGate(record, MergeSource::kOwnWriteFromFriend), IsOk());
  EXPECT_THAT(store->CheckRecordGate(Remote("ks", "b", 7, "forged"),
                                     MergeSource::kOwnWriteFromFriend),
              StatusIs(StatusCode::kPermissionDenied, "forged signature"));
  EXPECT_EQ(sources, (std::vector<MergeSource>{MergeSource::kOwnWriteFromFriend,
                                               MergeSource::kOwnWriteFromFriend}));
  absl::StatusOr<std::optional<Record>> a = store->Get("ks", "a");
  ASSERT_THAT(a, IsOk());
  EXPECT_FALSE(a->has_value());
  absl::StatusOr<StoreStats> stats = store->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->gate_refused, 0u);
}

TEST_F(StoreSignatureTest, ASignatureOverTheLimitIsRefused) {
  auto store = OpenStore();
  absl::StatusOr<MergeResult> merged =
      store->Merge({Remote("ks", "a", 7, std::string(kMaxSignatureBytes + 1, 's')),
                    Remote("ks", "b", 7, std::string(kMaxSignatureBytes, 's'))});
  ASSERT_THAT(merged, IsOk());
  EXPECT_EQ(merged->won, 1u);
  ASSERT_THAT(merged->refused, SizeIs(1));
  EXPECT_THAT(merged->refused[0].reason,
              StatusIs(StatusCode::kInvalidArgument, "record signature is 513 bytes; the limit "
                                                     "is 512"));
}

TEST_F(StoreSignatureTest, AFormatFourStoreIsUpgradedWhenOpened) {
  auto store = OpenStore();
  ASSERT_THAT(store->Put("ks", "a", "1"), IsOk());
  ASSERT_THAT(store->Merge({Remote("ks", "b", 7, "")}), IsOk());
  store.reset();
  // What a format-4 peerkv left: its entries are the unsigned layout.
  WithRawLmdb([](MDB_txn* txn, const tables::Dbis& dbis) {
    ASSERT_THAT(tables::WriteMetaU64(txn, dbis.meta, codec::kMetaFormat, 4), IsOk());
  });
  store = OpenStore();
  absl::StatusOr<std::optional<Record>> a = store->Get("ks", "a");
  ASSERT_THAT(a, IsOk());
  ASSERT_TRUE(a->has_value());
  EXPECT_EQ((*a)->value, "1");
  EXPECT_EQ((*a)->signature, "");
  // Signed records merge beside the old ones.
  ASSERT_THAT(store->Merge({Remote("ks", "c", 7, "SIG")}), IsOk());
  store.reset();
  WithRawLmdb([](MDB_txn* txn, const tables::Dbis& dbis) {
    absl::StatusOr<std::optional<uint64_t>> format =
        tables::ReadMetaU64(txn, dbis.meta, codec::kMetaFormat);
    ASSERT_THAT(format, IsOk());
    EXPECT_EQ(*format, std::optional<uint64_t>(5));
  });
  store = OpenStore();
  absl::StatusOr<Changes> changes = store->ChangesSince(0, 10);
  ASSERT_THAT(changes, IsOk());
  ASSERT_THAT(changes->records, SizeIs(3));
  EXPECT_EQ(changes->records[1].value, "v-b");
  EXPECT_EQ(changes->records[2].signature, "SIG");
  EXPECT_EQ(changes->records[2].value, "v-c");
}

}  // namespace
}  // namespace peerkv
