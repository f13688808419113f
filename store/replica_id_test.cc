// store/replica_id_test.cc: replica ids minted from a device key
// (store/replica_id.h): by a new store, at each Fork, and at Open for a
// store whose stored id was not minted from its key.
#include <memory>
#include <string>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/replica_id.h"
#include "store/store.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::string kKey(32, 'k');
const std::string kOtherKey(32, 'o');

TEST(ReplicaIdTest, MintedFromTheKeyAndTheIncarnationAlone) {
  const uint64_t id = DeriveReplicaId(kKey, 42);
  EXPECT_NE(id, 0u);
  EXPECT_EQ(DeriveReplicaId(kKey, 42), id);
  EXPECT_NE(DeriveReplicaId(kKey, 43), id);
  EXPECT_NE(DeriveReplicaId(kOtherKey, 42), id);
  EXPECT_TRUE(IsDerivedReplicaId(id, 42, kKey));
  // Another device's key does not mint it with the same incarnation.
  EXPECT_FALSE(IsDerivedReplicaId(id, 42, kOtherKey));
  EXPECT_FALSE(IsDerivedReplicaId(id, 43, kKey));
  EXPECT_EQ(DeriveReplicaId("", 42), 0u);
  EXPECT_FALSE(IsDerivedReplicaId(0, 42, kKey));
}

class MintedStoreTest : public ::testing::Test {
 protected:
  StoreOptions Options(const std::string& key) {
    StoreOptions options;
    options.dir = dir_.Sub("db");
    options.sync = false;
    options.replica_id_key = key;
    options.log = [this](const std::string& line) { log_ += line + "\n"; };
    return options;
  }
  std::unique_ptr<Store> Open(const std::string& key) {
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(Options(key));
    EXPECT_THAT(store, IsOk());
    return store.ok() ? std::move(*store) : nullptr;
  }
  testing::TempDir dir_;
  std::string log_;
};

TEST_F(MintedStoreTest, ANewStoreAndEachForkMintFromTheKey) {
  std::unique_ptr<Store> store = Open(kKey);
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(IsDerivedReplicaId(store->replica_id(), store->incarnation(), kKey));
  EXPECT_FALSE(store->open_rederived().has_value());
  const uint64_t first = store->replica_id();
  // The restore guard's fork: a new id, minted from the same key.
  absl::StatusOr<Store::ForkResult> fork = store->Fork();
  ASSERT_THAT(fork, IsOk());
  EXPECT_NE(fork->new_id, first);
  EXPECT_EQ(store->replica_id(), fork->new_id);
  EXPECT_TRUE(IsDerivedReplicaId(store->replica_id(), store->incarnation(), kKey));
  // Kept across a reopen without a fork.
  store.reset();
  store = Open(kKey);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->replica_id(), fork->new_id);
  EXPECT_FALSE(store->open_rederived().has_value());
  EXPECT_EQ(log_, "");
}

TEST_F(MintedStoreTest, AWrittenStoreWithAnUnmintedIdForksToAMintedOneAtOpen) {
  // A directory of an older peerkv (or one moved to a new device key).
  std::unique_ptr<Store> store = Open("");
  ASSERT_NE(store, nullptr);
  const uint64_t old_id = store->replica_id();
  ASSERT_THAT(store->Put("ks", "k", "v"), IsOk());
  store.reset();
  store = Open(kKey);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->open_rederived().has_value());
  EXPECT_EQ(store->open_rederived()->old_id, old_id);
  EXPECT_EQ(store->replica_id(), store->open_rederived()->new_id);
  EXPECT_TRUE(IsDerivedReplicaId(store->replica_id(), store->incarnation(), kKey));
  // The old id is retired, as by a restore's fork; its write is kept.
  EXPECT_THAT(store->GetLineage().retired_ids, ElementsAre(old_id));
  absl::StatusOr<std::optional<Record>> got = store->Get("ks", "k");
  ASSERT_THAT(got, IsOk());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->version.origin, old_id);
  EXPECT_THAT(log_, HasSubstr("was not minted from this data directory's device key"));
  // The same directory under another key forks again.
  const uint64_t minted = store->replica_id();
  store.reset();
  store = Open(kOtherKey);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->open_rederived().has_value());
  EXPECT_EQ(store->open_rederived()->old_id, minted);
  EXPECT_TRUE(IsDerivedReplicaId(store->replica_id(), store->incarnation(), kOtherKey));
}

TEST_F(MintedStoreTest, AnUnwrittenStoreTakesAMintedIdInPlace) {
  std::unique_ptr<Store> store = Open("");
  ASSERT_NE(store, nullptr);
  store.reset();
  store = Open(kKey);
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(IsDerivedReplicaId(store->replica_id(), store->incarnation(), kKey));
  EXPECT_FALSE(store->open_rederived().has_value());
  EXPECT_TRUE(store->GetLineage().retired_ids.empty());
  EXPECT_THAT(log_, HasSubstr("its log is empty"));
}

TEST_F(MintedStoreTest, ATooLongKeyIsRefused) {
  EXPECT_THAT(Store::Open(Options(std::string(kMaxReplicaIdKeyBytes + 1, 'x'))).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "replica_id_key is 65 bytes"));
}

}  // namespace
}  // namespace peerkv
