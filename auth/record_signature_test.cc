// auth/record_signature_test.cc: signing and verifying records, the
// certificate cache, and the merge gate over a fake auth::Access: forged
// records (a wrong signature, a valid signature of a non-writer, a replayed
// record with a changed value) are refused, naming what is wrong.
#include "auth/record_signature.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "auth/certificate.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peerkv::auth {
namespace {

using absl::StatusCode;

constexpr int64_t kT = 1'700'000'000'000;

// "blog" is shared (signed records), writable by `writer` only; "notes"
// is the local user's own.
class FakeAccess final : public Access {
 public:
  explicit FakeAccess(const PublicKey& writer) : writer_(writer) {}
  bool MayRead(const Principal& who, std::string_view ks) const override { return true; }
  bool MayWrite(const Principal& who, std::string_view ks) const override {
    if (ks == "blog") return who.user == writer_;
    return who.local_user;
  }
  bool RequiresSignature(std::string_view ks) const override { return ks == "blog"; }

 private:
  const PublicKey writer_;
};

struct Device {
  std::unique_ptr<SigningKey> user = SigningKey::Generate();
  std::shared_ptr<SigningKey> key{SigningKey::Generate().release()};
  std::string certificate =
      IssueDeviceCertificate(*user, key->public_key(), "laptop", kT).Encode();

  Record Signed(std::string ks, std::string k, std::string value, bool deleted = false) const {
    Record r{std::move(ks), std::move(k), Version{MakeHlc(kT, 1), 77}, deleted,
             deleted ? "" : std::move(value)};
    r.signature = SignRecord(*key, certificate, r.keyspace, r.key, r.version, r.deleted, r.value);
    return r;
  }
};

TEST(RecordSignatureTest, VerifyNamesTheDeviceAndItsUser) {
  const Device jane;
  RecordVerifier verifier;
  absl::StatusOr<SignedBy> by = verifier.Verify(jane.Signed("blog", "post1", "hello"));
  ASSERT_THAT(by, IsOk());
  EXPECT_EQ(by->device, jane.key->public_key());
  EXPECT_EQ(by->user, jane.user->public_key());
  EXPECT_THAT(verifier.Verify(jane.Signed("blog", "gone", "", /*deleted=*/true)), IsOk());
}

TEST(RecordSignatureTest, AnyChangeToTheRecordBreaksTheSignature) {
  const Device jane;
  RecordVerifier verifier;
  const Record good = jane.Signed("blog", "post1", "hello");
  std::vector<Record> altered(6, good);
  altered[0].value = "hellO";
  altered[1].key = "post2";
  altered[2].keyspace = "blog2";
  altered[3].version.hlc += 1;
  altered[4].version.origin += 1;
  altered[5].deleted = true;
  altered[5].value.clear();
  for (const Record& r : altered) {
    EXPECT_THAT(verifier.Verify(r),
                StatusIs(StatusCode::kPermissionDenied, "does not match the record"));
  }
  Record wrong = good;
  wrong.signature.back() ^= 1;
  EXPECT_THAT(verifier.Verify(wrong),
              StatusIs(StatusCode::kPermissionDenied, "does not match the record"));
}

TEST(RecordSignatureTest, MalformedBlobsAndForgedCertificatesAreRefused) {
  const Device jane;
  RecordVerifier verifier;
  Record r = jane.Signed("blog", "post1", "hello");
  Record unsigned_record = r;
  unsigned_record.signature.clear();
  EXPECT_THAT(verifier.Verify(unsigned_record),
              StatusIs(StatusCode::kInvalidArgument, "record is unsigned"));
  Record short_blob = r;
  short_blob.signature.resize(10);
  EXPECT_THAT(verifier.Verify(short_blob),
              StatusIs(StatusCode::kInvalidArgument, "at least 67 expected"));
  Record trailing = r;
  trailing.signature += "x";
  EXPECT_THAT(verifier.Verify(trailing),
              StatusIs(StatusCode::kInvalidArgument, "certificate and signature make"));
  // Past the store's limits (store/validation.h): refused before any check.
  Record long_key = jane.Signed("blog", std::string(401, 'k'), "hello");
  EXPECT_THAT(verifier.Verify(long_key),
              StatusIs(StatusCode::kInvalidArgument, "a 401-byte key"));
  Record version = r;
  version.signature[0] = 9;
  EXPECT_THAT(verifier.Verify(version), StatusIs(StatusCode::kInvalidArgument, "version 9"));
  // Mallory's device with a certificate that claims Jane as its user but
  // is signed by Mallory's own user key.
  Device mallory;
  DeviceCertificate claim =
      IssueDeviceCertificate(*mallory.user, mallory.key->public_key(), "laptop", kT);
  claim.user = jane.user->public_key();
  mallory.certificate = claim.Encode();
  EXPECT_THAT(verifier.Verify(mallory.Signed("blog", "post1", "pwned")),
              StatusIs(StatusCode::kPermissionDenied, "device certificate"));
}

TEST(RecordSignatureTest, EachCertificateIsCheckedOnce) {
  const Device jane, joe, jim;
  RecordVerifier verifier;
  for (int i = 0; i < 20; ++i) {
    ASSERT_THAT(verifier.Verify(jane.Signed("blog", absl::StrCat("k", i), "v")), IsOk());
    ASSERT_THAT(verifier.Verify(joe.Signed("blog", absl::StrCat("k", i), "v")), IsOk());
  }
  EXPECT_EQ(verifier.certificates_checked(), 2u);
  // Bounded: three certificates in turn through a cache of two are each
  // checked every time; through a cache of four, once each.
  RecordVerifier small(2), enough(4);
  for (int i = 0; i < 3; ++i) {
    // (Other keys each time: a record verified before is not checked again.)
    for (const Device* d : {&jane, &joe, &jim}) {
      ASSERT_THAT(small.Verify(d->Signed("blog", absl::StrCat("k", i), "v")), IsOk());
      ASSERT_THAT(enough.Verify(d->Signed("blog", absl::StrCat("k", i), "v")), IsOk());
    }
  }
  EXPECT_EQ(small.certificates_checked(), 9u);
  EXPECT_EQ(enough.certificates_checked(), 3u);
}

// A record offered again is answered from the cache of verified records,
// with no second Ed25519 check.
TEST(RecordSignatureTest, ARecordOfferedAgainIsAnsweredFromTheCache) {
  const Device jane;
  RecordVerifier verifier;
  const Record post = jane.Signed("blog", "post1", "hello");
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<SignedBy> by = verifier.Verify(post);
    ASSERT_THAT(by, IsOk());
    EXPECT_EQ(by->device, jane.key->public_key());
    EXPECT_EQ(by->user, jane.user->public_key());
  }
  EXPECT_EQ(verifier.signatures_checked(), 1u);
  EXPECT_EQ(verifier.certificates_checked(), 1u);
}

// The cache is keyed by the signature but a hit must match the record's
// whole signed message and blob: a record altered after its signature
// verified (keeping that signature) is still refused, and checked again.
TEST(RecordSignatureTest, ARecordAlteredAfterACachedVerifyIsRefused) {
  const Device jane;
  RecordVerifier verifier;
  const Record post = jane.Signed("blog", "post1", "hello");
  ASSERT_THAT(verifier.Verify(post), IsOk());
  std::vector<Record> altered(6, post);
  altered[0].value = "pwned";
  altered[1].key = "post2";
  altered[2].keyspace = "blog2";
  altered[3].version.hlc += 1;
  altered[4].version.origin += 1;
  altered[5].deleted = true;
  altered[5].value.clear();
  for (const Record& r : altered) {
    EXPECT_THAT(verifier.Verify(r), StatusIs(StatusCode::kPermissionDenied, "does not match"));
  }
  EXPECT_EQ(verifier.signatures_checked(), 1u + altered.size());
  // Still answered from the cache, unaltered.
  ASSERT_THAT(verifier.Verify(post), IsOk());
  EXPECT_EQ(verifier.signatures_checked(), 1u + altered.size());
}

// The same signature under another certificate (Mallory's user vouching
// for Jane's device key) is not the cached record: it is checked again and
// names the certificate's user, never the cached one's.
TEST(RecordSignatureTest, ACachedSignatureUnderAnotherCertificateIsCheckedAgain) {
  const Device jane, mallory;
  RecordVerifier verifier;
  const Record post = jane.Signed("blog", "post1", "hello");
  ASSERT_THAT(verifier.Verify(post), IsOk());
  const std::string certificate =
      IssueDeviceCertificate(*mallory.user, jane.key->public_key(), "laptop", kT).Encode();
  ASSERT_EQ(certificate.size(), jane.certificate.size());
  Record rewrapped = post;
  rewrapped.signature.replace(3, certificate.size(), certificate);
  absl::StatusOr<SignedBy> by = verifier.Verify(rewrapped);
  ASSERT_THAT(by, IsOk());
  EXPECT_EQ(by->user, mallory.user->public_key());
  EXPECT_EQ(verifier.signatures_checked(), 2u);
}

// The cache of verified records keeps its bound: past it, the records not
// offered since age out and are checked again; one offered all along stays.
TEST(RecordSignatureTest, TheRecordCacheStaysBounded) {
  const Device jane;
  RecordVerifier verifier(/*max_certificates=*/2, /*max_records=*/4);
  const Record hot = jane.Signed("blog", "hot", "v");
  std::vector<Record> cold;
  for (int i = 0; i < 10; ++i) cold.push_back(jane.Signed("blog", absl::StrCat("k", i), "v"));
  ASSERT_THAT(verifier.Verify(hot), IsOk());
  for (const Record& r : cold) {
    ASSERT_THAT(verifier.Verify(r), IsOk());
    ASSERT_THAT(verifier.Verify(hot), IsOk());
  }
  EXPECT_EQ(verifier.signatures_checked(), 11u);
  ASSERT_THAT(verifier.Verify(cold.back()), IsOk());
  EXPECT_EQ(verifier.signatures_checked(), 11u);
  ASSERT_THAT(verifier.Verify(cold.front()), IsOk());
  EXPECT_EQ(verifier.signatures_checked(), 12u);
  EXPECT_EQ(verifier.certificates_checked(), 1u);
}

class GateTest : public ::testing::Test {
 protected:
  GateTest()
      : access_(std::make_shared<FakeAccess>(jane_.user->public_key())),
        gate_(MakeRecordGate(access_, std::make_shared<RecordVerifier>(),
                             josephine_.user->public_key())) {}

  Device jane_;       // writes the blog
  Device josephine_;  // reads it: this store's user
  std::shared_ptr<const Access> access_;
  std::function<absl::Status(const Record&, MergeSource)> gate_;
};

TEST_F(GateTest, TheWritersSignedRecordsPassFromAnyLink) {
  const Record post = jane_.Signed("blog", "post1", "hello");
  EXPECT_THAT(gate_(post, MergeSource::kOwnDevice), IsOk());
  EXPECT_THAT(gate_(post, MergeSource::kFriend), IsOk());
}

TEST_F(GateTest, ForgedRecordsAreRefused) {
  // A wrong signature.
  Record wrong = jane_.Signed("blog", "post1", "hello");
  wrong.signature[wrong.signature.size() - 5] ^= 0x40;
  EXPECT_THAT(gate_(wrong, MergeSource::kOwnDevice),
              StatusIs(StatusCode::kPermissionDenied, "record of keyspace blog: record signature"));
  // A valid signature of a reader, who may not write.
  EXPECT_THAT(gate_(josephine_.Signed("blog", "post1", "mine now"), MergeSource::kOwnDevice),
              StatusIs(StatusCode::kPermissionDenied, "who may not write it"));
  // Jane's record replayed with another value.
  Record replayed = jane_.Signed("blog", "post1", "hello");
  replayed.value = "goodbye";
  EXPECT_THAT(gate_(replayed, MergeSource::kOwnDevice),
              StatusIs(StatusCode::kPermissionDenied, "does not match the record"));
  // Jane's record with its signature stripped.
  Record stripped = jane_.Signed("blog", "post1", "hello");
  stripped.signature.clear();
  EXPECT_THAT(gate_(stripped, MergeSource::kOwnDevice),
              StatusIs(StatusCode::kPermissionDenied, "blog is unsigned"));
}

TEST_F(GateTest, UnsignedRecordsPassOnlyFromOwnDevices) {
  Record note{"notes", "n1", Version{MakeHlc(kT, 0), 5}, false, "todo"};
  EXPECT_THAT(gate_(note, MergeSource::kOwnDevice), IsOk());
  EXPECT_THAT(gate_(note, MergeSource::kFriend),
              StatusIs(StatusCode::kPermissionDenied, "from a friend's device"));
  // Signed by the friend, who may not write the local user's keyspace.
  EXPECT_THAT(gate_(jane_.Signed("notes", "n1", "x"), MergeSource::kFriend),
              StatusIs(StatusCode::kPermissionDenied, "who may not write it"));
  // Reserved keyspaces are reserved_check's.
  Record reserved{"peerkv.policies", "blog", Version{MakeHlc(kT, 0), 5}, false, "x"};
  EXPECT_THAT(gate_(reserved, MergeSource::kFriend), IsOk());
}

// A write of this replica's own id that a friend's device sent (and this
// replica lacks) counts as restore evidence only if a device of this
// store's own user signed it: the friend cannot forge that.
TEST_F(GateTest, AnOwnWriteFromAFriendMustBeSignedByADeviceOfTheLocalUser) {
  constexpr MergeSource kFrom = MergeSource::kOwnWriteFromFriend;
  // Josephine's devices: the one that wrote it, and another of hers.
  EXPECT_THAT(gate_(josephine_.Signed("notes", "n1", "todo"), kFrom), IsOk());
  Device phone;
  phone.user = nullptr;
  phone.certificate =
      IssueDeviceCertificate(*josephine_.user, phone.key->public_key(), "phone", kT).Encode();
  EXPECT_THAT(gate_(phone.Signed("notes", "n2", "todo"), kFrom), IsOk());
  // Another user's writer, even of a keyspace it may write (its record
  // passes as kFriend).
  const Record post = jane_.Signed("blog", "post1", "hello");
  ASSERT_THAT(gate_(post, MergeSource::kFriend), IsOk());
  EXPECT_THAT(gate_(post, kFrom),
              StatusIs(StatusCode::kPermissionDenied, "not by a device of this replica's user"));
  EXPECT_THAT(gate_(jane_.Signed("notes", "n1", "x"), kFrom),
              StatusIs(StatusCode::kPermissionDenied, "not by a device of this replica's user"));
  // Unsigned, of a keyspace that needs no signature from own devices.
  Record note{"notes", "n1", Version{MakeHlc(kT, 0), 5}, false, "todo"};
  ASSERT_THAT(gate_(note, MergeSource::kOwnDevice), IsOk());
  EXPECT_THAT(gate_(note, kFrom),
              StatusIs(StatusCode::kPermissionDenied, "notes is unsigned; a write of this "
                                                      "replica's own id that a friend's device"));
  // Josephine's record altered on the way.
  Record altered = josephine_.Signed("notes", "n1", "todo");
  altered.value = "pwned";
  EXPECT_THAT(gate_(altered, kFrom), StatusIs(StatusCode::kPermissionDenied, "does not match"));
  // Signed by her, but of a keyspace she may not write.
  EXPECT_THAT(gate_(josephine_.Signed("blog", "post1", "mine"), kFrom),
              StatusIs(StatusCode::kPermissionDenied, "who may not write it"));
  // Reserved keyspaces carry user signatures, no device's: refused (as
  // kFriend they are reserved_check's).
  Record reserved{"peerkv.policies", "blog", Version{MakeHlc(kT, 0), 5}, false, "x"};
  ASSERT_THAT(gate_(reserved, MergeSource::kFriend), IsOk());
  EXPECT_THAT(gate_(reserved, kFrom),
              StatusIs(StatusCode::kPermissionDenied, "reserved keyspace peerkv.policies"));
}

TEST_F(GateTest, TheSignerSignsOnlyKeyspacesThatRequireIt) {
  const RecordSigner signer = MakeRecordSigner(access_, jane_.key, jane_.certificate);
  const Version v{MakeHlc(kT, 3), 9};
  EXPECT_EQ(signer("notes", "k", v, false, "x"), "");
  Record r{"blog", "k", v, false, "x"};
  r.signature = signer(r.keyspace, r.key, r.version, r.deleted, r.value);
  EXPECT_THAT(gate_(r, MergeSource::kFriend), IsOk());
}

}  // namespace
}  // namespace peerkv::auth
