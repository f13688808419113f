// tests/strong_mode_owner_test.cc: issue 11's rule that a keyspace's mode
// belongs to its owner. An in-process server with an auth::Access that
// says a keyspace's policy is signed by another user (a friend's keyspace
// replicated here) refuses the local user's `keyspace mode` switch of it
// with PermissionDenied naming the owner, and switches nothing; a keyspace
// without a policy (the local user's) switches as before.
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/match.h"
#include "auth/access.h"
#include "auth/ids.h"
#include "auth/keys.h"
#include "common/status_matchers.h"
#include "consensus/fake_consensus_log.h"
#include "consensus/strong_keyspaces.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/client.h"
#include "rpc/server.h"
#include "store/store.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

using ::testing::HasSubstr;

// Everyone may read and write; "fred.notes" has a policy signed by Fred.
class FredOwnsHisNotes : public auth::Access {
 public:
  explicit FredOwnsHisNotes(auth::PublicKey fred) : fred_(fred) {}
  bool MayRead(const auth::Principal&, std::string_view) const override { return true; }
  bool MayWrite(const auth::Principal&, std::string_view) const override { return true; }
  bool RequiresSignature(std::string_view) const override { return false; }
  std::optional<auth::PublicKey> OwnerOf(std::string_view ks) const override {
    if (ks == "fred.notes") return fred_;
    return std::nullopt;
  }

 private:
  const auth::PublicKey fred_;
};

TEST(StrongModeOwnerTest, OnlyTheOwnerOfAKeyspaceSwitchesItsMode) {
  testing::TempDir dir("mode-owner");
  const auth::PublicKey fred = auth::SigningKey::Generate()->public_key();
  consensus::ModeTable modes;
  modes.SetLog([](const std::string&) {});
  StoreOptions store_options;
  store_options.dir = dir.Sub("db");
  modes.AttachTo(&store_options);
  auto store = Store::Open(store_options);
  ASSERT_TRUE(store.ok()) << store.status();
  consensus::FakeConsensusLog log;
  consensus::StrongKeyspaces strong(store->get(), &modes, &log, consensus::StrongOptions{});
  strong.Start();
  rpc::ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.replicate = false;
  options.strong = &strong;
  options.access = std::make_shared<FredOwnsHisNotes>(fred);
  auto server = rpc::Server::Start(store->get(), options);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = rpc::Client::Connect(rpc::ClientOptions{.address = (*server)->address()});
  ASSERT_TRUE(client.ok()) << client.status();

  absl::StatusOr<Version> refused = (*client)->SetMode("fred.notes", "strong");
  EXPECT_THAT(refused.status(), StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("keyspace 'fred.notes' is owned by user " + auth::UserId(fred)));
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("only its owner may switch its mode"));
  // Nothing was switched, here or in the log.
  EXPECT_FALSE(strong.IsStrong("fred.notes"));
  EXPECT_TRUE(log.History().empty());

  // The local user's own keyspace (no policy) switches.
  absl::StatusOr<Version> mine = (*client)->SetMode("jane.notes", "strong");
  ASSERT_TRUE(mine.ok()) << mine.status();
  EXPECT_TRUE(strong.IsStrong("jane.notes"));

  client->reset();
  (*server)->Stop();
}

}  // namespace
}  // namespace peerkv
