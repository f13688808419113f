// tests/policy_test.cc: groups and policies on a real server (README
// "Groups and policies"): its user (the test user, whose client is an own
// device) makes a group and a policy over RPC and with the CLI; a friend's
// device reads the keyspace the policy lets it read, and is refused other
// keyspaces, writes it was not given, the owner's calls, and everything of
// the blog once it is removed from the group.
#include <signal.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "auth/identity.h"
#include "auth/ids.h"
#include "auth/policy.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/client.h"
#include "testing/replica_client.h"
#include "testing/server_process.h"
#include "testing/subprocess.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

using absl::StatusCode;
using ::testing::HasSubstr;
using testing::RunResult;
using testing::ServerProcess;

auth::Who GroupWho(std::string name) {
  auth::Who w;
  w.kind = auth::Who::Kind::kGroup;
  w.group = std::move(name);
  return w;
}
auth::Who UserWho(const auth::PublicKey& user) {
  auth::Who w;
  w.kind = auth::Who::Kind::kUser;
  w.user = user;
  return w;
}

class PolicyProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::UseTestUser();
    // Fred: a user of his own, with a certified device (his laptop).
    fred_ = *auth::Identity::CreateUser(dir_.Sub("fred"), "fred");
    fred_tls_.key = *auth::SigningKey::FromSeed(fred_->device_key().seed());
    fred_tls_.device_certificate =
        *fred_->IssueOwnCertificate("laptop", absl::ToUnixMillis(absl::Now()));
    fred_id_ = auth::UserId(fred_->user());
    data_ = dir_.Sub("jane");
    // The friend list is written with the directory's own commands, with
    // no server holding it; the first start makes it a device of the test
    // user.
    server_ = testing::StartReplica(dir_, "jane");
    ASSERT_NE(server_, nullptr);
    ASSERT_EQ(server_->Stop(SIGTERM), 0);
    RunResult add = Peerkv({"friend", "add", fred_id_, "--name", "fred"});
    ASSERT_EQ(add.exit_code, 0) << add.err;
    server_ = testing::StartReplica(dir_, "jane");
    ASSERT_NE(server_, nullptr);
    jane_ = testing::ConnectTo(*server_);
    ASSERT_NE(jane_, nullptr);
  }
  void TearDown() override {
    if (server_ != nullptr) EXPECT_EQ(server_->Stop(SIGTERM), 0) << server_->Log();
  }
  RunResult Peerkv(std::vector<std::string> args) {
    args.insert(args.begin(), {testing::RunfilePath("cli/peerkv"), "--data", data_});
    return testing::Run(args);
  }
  std::unique_ptr<rpc::Client> ConnectFred() {
    auto user = auth::ParseUserId(testing::TestUserId(), "test user");
    absl::StatusOr<std::unique_ptr<rpc::Client>> c =
        rpc::Client::Connect(rpc::ClientOptions{.address = server_->address(),
                                                .timeout = absl::Seconds(10),
                                                .tls = fred_tls_,
                                                .server_user = *user});
    EXPECT_THAT(c, IsOk());
    return c.ok() ? std::move(*c) : nullptr;
  }

  testing::TempDir dir_;
  std::string data_;
  std::unique_ptr<auth::Identity> fred_;
  rpc::TlsIdentity fred_tls_;
  std::string fred_id_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<rpc::Client> jane_;
};

TEST_F(PolicyProcessTest, AFriendReadsWhatThePolicyAllowsAndNothingElse) {
  ASSERT_THAT(jane_->Put("jane.blog", "post1", "hello"), IsOk());
  ASSERT_THAT(jane_->Put("drafts", "d1", "secret"), IsOk());
  // Over RPC (the test's own device, TLS) ...
  ASSERT_THAT(jane_->CreateGroup("blog"), IsOk());
  ASSERT_THAT(jane_->AddToGroup("blog", {auth::Member{fred_->user(), ""}}), IsOk());
  ASSERT_THAT(jane_->SetPolicy("jane.blog", {GroupWho("blog")}, {}), IsOk());
  // ... and with the CLI through the server's local socket.
  RunResult got = Peerkv({"policy", "get", "jane.blog"});
  ASSERT_EQ(got.exit_code, 0) << got.err;
  EXPECT_THAT(got.out, HasSubstr("owner " + testing::TestUserId() + "\nread blog\nwrite owner"));
  RunResult listed = Peerkv({"group", "list"});
  EXPECT_EQ(listed.out, "blog " + fred_id_ + "\n") << listed.err;
  // Bad input through the CLI: an unknown group, a cycle, a bad WHO.
  RunResult unknown = Peerkv({"policy", "set", "jane.blog", "--read", "nogroup"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_THAT(unknown.err, HasSubstr("group 'nogroup' does not exist"));
  RunResult cycle = Peerkv({"group", "add", "blog", "group:blog"});
  EXPECT_EQ(cycle.exit_code, 2);
  EXPECT_THAT(cycle.err, HasSubstr("would make a cycle"));
  RunResult bad_who = Peerkv({"policy", "set", "jane.blog", "--read", "Not A Group"});
  EXPECT_EQ(bad_who.exit_code, 2);
  EXPECT_THAT(bad_who.err, HasSubstr("--read"));

  std::unique_ptr<rpc::Client> fred = ConnectFred();
  ASSERT_NE(fred, nullptr);
  absl::StatusOr<std::optional<Record>> post = fred->Get("jane.blog", "post1");
  ASSERT_THAT(post, IsOk());
  ASSERT_TRUE(post->has_value());
  EXPECT_EQ((*post)->value, "hello");
  ScanOptions all;
  absl::StatusOr<ScanResult> scan = fred->Scan("jane.blog", all);
  ASSERT_THAT(scan, IsOk());
  EXPECT_EQ(scan->records.size(), 1u);
  EXPECT_THAT(fred->GetPolicy("jane.blog"), IsOk());

  // Refused: the drafts (same answer as a keyspace that does not exist),
  // writes, the owner's calls.
  const std::string no_read = "user " + fred_id_ + " may not read keyspace";
  EXPECT_THAT(fred->Get("drafts", "d1"),
              StatusIs(StatusCode::kPermissionDenied, no_read + " 'drafts'"));
  EXPECT_THAT(fred->Get("missing", "d1"),
              StatusIs(StatusCode::kPermissionDenied, no_read + " 'missing'"));
  EXPECT_THAT(fred->Scan("drafts", all), StatusIs(StatusCode::kPermissionDenied, no_read));
  EXPECT_THAT(fred->GetPolicy("drafts"), StatusIs(StatusCode::kPermissionDenied, no_read));
  EXPECT_THAT(fred->Watch(rpc::WatchOptions{.keyspace = "drafts"},
                          [](const std::vector<Record>&, uint64_t) { return false; }),
              StatusIs(StatusCode::kPermissionDenied, no_read));
  EXPECT_THAT(fred->Put("jane.blog", "post2", "forged"),
              StatusIs(StatusCode::kPermissionDenied,
                       "user " + fred_id_ + " may not write keyspace 'jane.blog'"));
  EXPECT_THAT(fred->Delete("jane.blog", "post1"), StatusIs(StatusCode::kPermissionDenied));
  EXPECT_THAT(fred->WriteBatch({Mutation{"jane.blog", "p", std::string("x")}}),
              StatusIs(StatusCode::kPermissionDenied));
  EXPECT_THAT(fred->SetPolicy("jane.blog", {}, {}), StatusIs(StatusCode::kPermissionDenied));
  EXPECT_THAT(fred->CreateGroup("mine"), StatusIs(StatusCode::kPermissionDenied));
  EXPECT_THAT(fred->Status(), StatusIs(StatusCode::kPermissionDenied));

  // Given the write: his put lands; the local user is checked too and may
  // do everything with its own keyspaces.
  ASSERT_THAT(jane_->SetPolicy("jane.blog", {GroupWho("blog")}, {UserWho(fred_->user())}), IsOk());
  EXPECT_THAT(fred->Put("jane.blog", "comment", "hi jane"), IsOk());
  EXPECT_THAT(jane_->Get("drafts", "d1"), IsOk());
  EXPECT_THAT(jane_->Put("_private", "k", "v"),
              StatusIs(StatusCode::kInvalidArgument, "starting with '_' are reserved"));

  // A watch of the blog while he may read it ...
  absl::Notification first_batch;
  absl::Status watch_end;
  std::vector<std::string> watched;
  std::thread watcher([&] {
    watch_end = fred->Watch(rpc::WatchOptions{.keyspace = "jane.blog"},
                            [&](const std::vector<Record>& records, uint64_t) {
                              bool go_on = true;
                              for (const Record& r : records) {
                                watched.push_back(r.key);
                                if (r.key == "after") go_on = false;  // leaked: stop
                              }
                              if (!first_batch.HasBeenNotified()) first_batch.Notify();
                              return go_on;
                            });
    if (!first_batch.HasBeenNotified()) first_batch.Notify();
  });
  ASSERT_TRUE(first_batch.WaitForNotificationWithTimeout(absl::Seconds(10)));

  // Removed from the group and the writers: nothing of the blog any more.
  ASSERT_THAT(jane_->SetPolicy("jane.blog", {GroupWho("blog")}, {}), IsOk());
  RunResult removed = Peerkv({"group", "remove", "blog", fred_id_});
  ASSERT_EQ(removed.exit_code, 0) << removed.err;
  EXPECT_THAT(fred->Get("jane.blog", "post1"),
              StatusIs(StatusCode::kPermissionDenied, no_read + " 'jane.blog'"));
  EXPECT_THAT(fred->Put("jane.blog", "post3", "x"), StatusIs(StatusCode::kPermissionDenied));
  // ... ends with the revocation; a post after it never reaches him.
  ASSERT_THAT(jane_->Put("jane.blog", "after", "not for fred"), IsOk());
  watcher.join();
  EXPECT_THAT(watch_end, StatusIs(StatusCode::kPermissionDenied, no_read + " 'jane.blog'"));
  EXPECT_THAT(watched, ::testing::Not(::testing::Contains("after")));
  // The server logged the refusals and keeps serving its own user.
  EXPECT_THAT(jane_->Get("jane.blog", "comment"), IsOk());
}

}  // namespace
}  // namespace peerkv
