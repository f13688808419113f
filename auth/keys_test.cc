// auth/keys_test.cc: signing, sealed boxes, and key files: created,
// reloaded, and refused with an error naming the file when their
// permissions, size or contents are wrong.
#include "auth/keys.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/temp_dir.h"

namespace peerkv::auth {
namespace {

using absl::StatusCode;

class KeysTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_path_ = dir_.Sub("keys");
    ASSERT_THAT(EnsurePrivateDir(dir_path_), IsOk());
    path_ = dir_path_ + "/device.key";
  }
  std::string Read() {
    std::ifstream in(path_, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  void Rewrite(const std::string& bytes) {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out << bytes;
  }
  testing::TempDir dir_;
  std::string dir_path_;
  std::string path_;
};

TEST(SigningKeyTest, SignsAndVerifies) {
  std::unique_ptr<SigningKey> key = SigningKey::Generate();
  const std::string sig = key->Sign("hello");
  EXPECT_EQ(sig.size(), kSignatureBytes);
  EXPECT_TRUE(Verify(key->public_key(), "hello", sig));
  EXPECT_FALSE(Verify(key->public_key(), "hellO", sig));
  EXPECT_FALSE(Verify(SigningKey::Generate()->public_key(), "hello", sig));
  EXPECT_FALSE(Verify(key->public_key(), "hello", sig.substr(1)));
}

TEST(SigningKeyTest, SeedDeterminesKey) {
  std::unique_ptr<SigningKey> a = SigningKey::Generate();
  absl::StatusOr<std::unique_ptr<SigningKey>> b = SigningKey::FromSeed(a->seed());
  ASSERT_THAT(b, IsOk());
  EXPECT_EQ((*b)->public_key(), a->public_key());
  EXPECT_THAT(SigningKey::FromSeed("short"), StatusIs(StatusCode::kInvalidArgument, "32 bytes"));
}

TEST(SigningKeyTest, SealedBoxOpensOnlyForItsRecipient) {
  std::unique_ptr<SigningKey> recipient = SigningKey::Generate();
  std::unique_ptr<SigningKey> other = SigningKey::Generate();
  absl::StatusOr<std::string> sealed = SealTo(recipient->public_key(), "secret seed");
  ASSERT_THAT(sealed, IsOk());
  EXPECT_EQ(sealed->find("secret seed"), std::string::npos);
  absl::StatusOr<std::string> opened = recipient->Unseal(*sealed);
  ASSERT_THAT(opened, IsOk());
  EXPECT_EQ(*opened, "secret seed");
  EXPECT_THAT(other->Unseal(*sealed), StatusIs(StatusCode::kPermissionDenied));
  std::string altered = *sealed;
  altered[altered.size() - 1] ^= 1;
  EXPECT_THAT(recipient->Unseal(altered), StatusIs(StatusCode::kPermissionDenied));
  EXPECT_THAT(recipient->Unseal("tiny"), StatusIs(StatusCode::kInvalidArgument));
}

TEST_F(KeysTest, CreateAndReload) {
  std::unique_ptr<SigningKey> key = SigningKey::Generate();
  ASSERT_THAT(WriteKeyFile(path_, KeyKind::kDevice, *key), IsOk());
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  ASSERT_EQ(::stat(dir_path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700);
  EXPECT_EQ(Read().size(), kKeyFileBytes);
  absl::StatusOr<std::unique_ptr<SigningKey>> loaded = LoadKeyFile(path_, KeyKind::kDevice);
  ASSERT_THAT(loaded, IsOk());
  EXPECT_EQ((*loaded)->public_key(), key->public_key());
  // Never overwritten.
  EXPECT_THAT(WriteKeyFile(path_, KeyKind::kDevice, *SigningKey::Generate()),
              StatusIs(StatusCode::kAlreadyExists, path_));
  loaded = LoadKeyFile(path_, KeyKind::kDevice);
  ASSERT_THAT(loaded, IsOk());
  EXPECT_EQ((*loaded)->public_key(), key->public_key());
}

TEST_F(KeysTest, MissingFileIsNotFound) {
  EXPECT_THAT(LoadKeyFile(path_, KeyKind::kDevice), StatusIs(StatusCode::kNotFound, path_));
}

TEST_F(KeysTest, BadPermissionsAreRefused) {
  ASSERT_THAT(WriteKeyFile(path_, KeyKind::kDevice, *SigningKey::Generate()), IsOk());
  ASSERT_EQ(::chmod(path_.c_str(), 0644), 0);
  EXPECT_THAT(LoadKeyFile(path_, KeyKind::kDevice),
              StatusIs(StatusCode::kFailedPrecondition, path_ + " has mode 0644; it must be 0600"));
  ASSERT_EQ(::chmod(path_.c_str(), 0600), 0);
  EXPECT_THAT(LoadKeyFile(path_, KeyKind::kDevice), IsOk());
  ASSERT_EQ(::chmod(dir_path_.c_str(), 0755), 0);
  EXPECT_THAT(LoadKeyFile(path_, KeyKind::kDevice),
              StatusIs(StatusCode::kFailedPrecondition,
                       "directory " + dir_path_ + " has mode 0755; it must be 0700"));
  EXPECT_THAT(EnsurePrivateDir(dir_path_), StatusIs(StatusCode::kFailedPrecondition, "0755"));
  EXPECT_THAT(WriteKeyFile(dir_path_ + "/other.key", KeyKind::kDevice, *SigningKey::Generate()),
              StatusIs(StatusCode::kFailedPrecondition, "0755"));
}

TEST_F(KeysTest, ASymlinkIsRefused) {
  ASSERT_THAT(WriteKeyFile(dir_path_ + "/real.key", KeyKind::kDevice, *SigningKey::Generate()),
              IsOk());
  ASSERT_EQ(::symlink("real.key", path_.c_str()), 0);
  EXPECT_THAT(LoadKeyFile(path_, KeyKind::kDevice),
              StatusIs(StatusCode::kFailedPrecondition, "symlink"));
}

TEST_F(KeysTest, TruncatedWrongSizeAndCorruptFilesAreRefused) {
  ASSERT_THAT(WriteKeyFile(path_, KeyKind::kDevice, *SigningKey::Generate()), IsOk());
  const std::string good = Read();
  Rewrite(good.substr(0, 40));
  EXPECT_THAT(LoadKeyFile(path_, KeyKind::kDevice),
              StatusIs(StatusCode::kDataLoss, path_ + " is truncated: 40 bytes"));
  Rewrite("");
  EXPECT_THAT(LoadKeyFile(path_, KeyKind::kDevice), StatusIs(StatusCode::kDataLoss, "truncated"));
  Rewrite(good + "x");
  EXPECT_THAT(LoadKeyFile(path_, KeyKind::kDevice),
              StatusIs(StatusCode::kDataLoss, path_ + " is the wrong size"));
  Rewrite("-----BEGIN OPENSSH PRIVATE KEY-----\n" + std::string(60, 'A'));
  EXPECT_THAT(LoadKeyFile(path_, KeyKind::kDevice),
              StatusIs(StatusCode::kDataLoss, "not a peerkv key file"));
  std::string flipped = good;
  flipped[kKeyFileBytes - 1] ^= 1;  // the stored public key
  Rewrite(flipped);
  EXPECT_THAT(LoadKeyFile(path_, KeyKind::kDevice),
              StatusIs(StatusCode::kDataLoss, "public key does not match"));
  Rewrite(good);
  EXPECT_THAT(LoadKeyFile(path_, KeyKind::kUser), StatusIs(StatusCode::kDataLoss, "user key"));
  EXPECT_THAT(LoadKeyFile(path_, KeyKind::kDevice), IsOk());
}

}  // namespace
}  // namespace peerkv::auth
