// store/validation_test.cc: every limit of the data model, at and beyond
// its edge, with the error code and the message that names it.
#include "store/validation.h"

#include <string>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peerkv {
namespace {

using absl::StatusCode;

TEST(ValidateKeyspaceTest, AcceptsTheDocumentedAlphabet) {
  EXPECT_THAT(ValidateKeyspace("a"), IsOk());
  EXPECT_THAT(ValidateKeyspace("0"), IsOk());
  EXPECT_THAT(ValidateKeyspace("contacts.v2_draft-x"), IsOk());
  EXPECT_THAT(ValidateKeyspace(std::string(64, 'k')), IsOk());
}

TEST(ValidateKeyspaceTest, RefusesEverythingElseNamingTheRule) {
  EXPECT_THAT(ValidateKeyspace(""), StatusIs(StatusCode::kInvalidArgument, "keyspace is empty"));
  EXPECT_THAT(ValidateKeyspace(std::string(65, 'k')),
              StatusIs(StatusCode::kInvalidArgument, "keyspace is 65 bytes; the limit is 64"));
  EXPECT_THAT(ValidateKeyspace("Mail"),
              StatusIs(StatusCode::kInvalidArgument, "[a-z0-9][a-z0-9._-]{0,63}"));
  EXPECT_THAT(ValidateKeyspace(".hidden"),
              StatusIs(StatusCode::kInvalidArgument, "at byte 0"));
  EXPECT_THAT(ValidateKeyspace("a/b"), StatusIs(StatusCode::kInvalidArgument, "0x2f at byte 1"));
  EXPECT_THAT(ValidateKeyspace(std::string("a\0b", 3)),
              StatusIs(StatusCode::kInvalidArgument, "0x00 at byte 1"));
}

TEST(ValidateKeyTest, AnyBytesFromOneTo400) {
  EXPECT_THAT(ValidateKey("x"), IsOk());
  EXPECT_THAT(ValidateKey(std::string("\0\xff\n", 3)), IsOk());
  EXPECT_THAT(ValidateKey(std::string(400, 'k')), IsOk());
  EXPECT_THAT(ValidateKey(""), StatusIs(StatusCode::kInvalidArgument, "key is empty; it must be 1..400 bytes"));
  EXPECT_THAT(ValidateKey(std::string(401, 'k')),
              StatusIs(StatusCode::kInvalidArgument, "key is 401 bytes; the limit is 400"));
}

TEST(ValidateValueTest, UpToTheConfiguredLimit) {
  EXPECT_THAT(ValidateValue("", 10), IsOk());
  EXPECT_THAT(ValidateValue(std::string(10, 'v'), 10), IsOk());
  EXPECT_THAT(ValidateValue(std::string(11, 'v'), 10),
              StatusIs(StatusCode::kInvalidArgument, "value is 11 bytes; the limit is 10"));
  EXPECT_THAT(ValidateValue(std::string(kMaxValueBytes + 1, 'v'), kMaxValueBytes),
              StatusIs(StatusCode::kInvalidArgument, "the limit is 4194304"));
}

TEST(ValidateRemoteRecordTest, ChecksVersionAndTombstoneShape) {
  Record r{"ks", "key", Version{5, 6}, false, "value", 0};
  EXPECT_THAT(ValidateRemoteRecord(r, 100), IsOk());

  Record zero = r;
  zero.version = Version{0, 6};
  EXPECT_THAT(ValidateRemoteRecord(zero, 100),
              StatusIs(StatusCode::kInvalidArgument, "must be non-zero"));

  Record tombstone = r;
  tombstone.deleted = true;
  EXPECT_THAT(ValidateRemoteRecord(tombstone, 100),
              StatusIs(StatusCode::kInvalidArgument, "tombstone carries a 5-byte value"));
  tombstone.value.clear();
  EXPECT_THAT(ValidateRemoteRecord(tombstone, 100), IsOk());

  Record big = r;
  big.value = std::string(101, 'v');
  EXPECT_THAT(ValidateRemoteRecord(big, 100),
              StatusIs(StatusCode::kInvalidArgument, "the limit is 100"));
  Record bad_keyspace = r;
  bad_keyspace.keyspace = "UPPER";
  EXPECT_THAT(ValidateRemoteRecord(bad_keyspace, 100),
              StatusIs(StatusCode::kInvalidArgument, "keyspace"));
}

}  // namespace
}  // namespace peerkv
