// tests/strong_shared_test.cc: a strong keyspace shared with a friend
// (README "Strong keyspaces", "Signed records"), on real `peerkv serve`
// processes and a real etcd, all on loopback on free ports in temporary
// directories, stopped by PID. Jane makes jane.usernames readable by her
// group and strong; her laptop (the only replica with etcd) registers
// names by compare-and-set. Josephine's phone pulls them from Jane's
// laptop and Josephine's laptop, which never talks to Jane, from the phone:
// both serve the committed registers with the versions the commit
// assigned, because each carries the signature Jane's laptop made for that
// version in the log entry. A record altered in etcd (Jane's signature
// replayed over another value) is refused by Jane's laptop and never
// reaches Josephine.
#include <signal.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/status_matchers.h"
#include "consensus/etcd/etcd_consensus_log.h"
#include "consensus/strong_keyspaces.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/etcd_server.h"
#include "testing/server_process.h"
#include "testing/subprocess.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::RunResult;
using testing::ServerProcess;

constexpr char kNames[] = "jane.usernames";
constexpr char kGroup[] = "friends";
constexpr absl::Duration kWait = absl::Seconds(30);

// The "version" of a record `get --json` printed.
std::string VersionOf(const std::string& json) {
  const size_t at = json.find("\"version\":\"");
  if (at == std::string::npos) return "";
  const size_t from = at + 11;
  return json.substr(from, json.find('"', from) - from);
}

struct Device {
  std::string name;
  std::string dir;
  std::unique_ptr<ServerProcess> server;
};

class StrongSharedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::UseTestUser();
    absl::StatusOr<std::unique_ptr<testing::EtcdServer>> etcd = testing::EtcdServer::Start();
    ASSERT_THAT(etcd, IsOk());
    etcd_ = std::move(*etcd);
    for (Device* d : {&jane_, &jos_phone_, &jos_laptop_}) d->dir = dir_.Sub(d->name);
    jane_id_ = InitUser(jane_, "jane", "laptop");
    josephine_id_ = InitUser(jos_phone_, "josephine", "phone");
    RunResult joined = Peerkv(jos_laptop_, {"init", "--join", josephine_id_});
    ASSERT_EQ(joined.exit_code, 0) << joined.err;
    ASSERT_TRUE(absl::StartsWith(joined.out, "device ")) << joined.out;
    Must(jos_phone_, {"device", "add", joined.out.substr(7, joined.out.find_first_of(" \n", 7) - 7),
                      "--name", "laptop"});
    Must(jane_, {"friend", "add", josephine_id_, "--name", "josephine"});
    Must(jos_phone_, {"friend", "add", jane_id_, "--name", "jane"});
    ASSERT_FALSE(HasFailure());
    // Only Jane's laptop reaches etcd; Josephine's laptop dials only her phone.
    Start(jane_, {}, /*with_etcd=*/true);
    Start(jos_phone_, {&jane_}, false);
    Start(jos_laptop_, {&jos_phone_}, false);
    ASSERT_FALSE(HasFailure());
    EXPECT_THAT(jos_laptop_.server->WaitForLog("this device is now a device of user"),
                HasSubstr("this device is now a device of user"));
  }

  void TearDown() override {
    for (Device* d : {&jos_laptop_, &jos_phone_, &jane_}) {
      if (d->server != nullptr) EXPECT_EQ(d->server->Stop(SIGTERM), 0) << d->server->Log();
    }
  }

  RunResult Peerkv(const Device& d, std::vector<std::string> args) {
    if (d.server != nullptr) {
      args.insert(args.begin(), {"--server", "unix:" + d.dir + "/peerkv.sock"});
    } else {
      args.insert(args.begin(), {"--data", d.dir});
    }
    args.insert(args.begin(), testing::RunfilePath("cli/peerkv"));
    return testing::Run(args);
  }
  void Must(const Device& d, std::vector<std::string> args) {
    const std::string what = absl::StrJoin(args, " ");
    RunResult r = Peerkv(d, std::move(args));
    EXPECT_EQ(r.exit_code, 0) << d.name << ": peerkv " << what << "\n" << r.out << r.err;
  }
  std::string InitUser(Device& d, const std::string& user, const std::string& name) {
    RunResult r = Peerkv(d, {"init", "--user", user, "--name", name});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    const std::string id = testing::IdAfter(r.out, "user");
    EXPECT_FALSE(id.empty()) << "no user id in: " << r.out;
    return id;
  }
  void Start(Device& d, const std::vector<Device*>& peers, bool with_etcd) {
    std::vector<std::string> addresses;
    for (const Device* p : peers) addresses.push_back(p->server->address());
    std::vector<std::string> args = testing::ReplicaArgs(d.name, addresses);
    if (with_etcd) {
      args.push_back("--etcd");
      args.push_back(etcd_->client_url());
    }
    absl::StatusOr<std::unique_ptr<ServerProcess>> s = ServerProcess::Start(d.dir, args);
    ASSERT_THAT(s, IsOk());
    d.server = std::move(*s);
  }

  // `get --stale-ok --json KS KEY` on D (its local copy; Josephine's replicas have
  // no etcd): the output, empty while D does not hold the key.
  std::string LocalCopy(const Device& d, const std::string& key) {
    RunResult r = Peerkv(d, {"get", kNames, key, "--stale-ok", "--json"});
    return r.exit_code == 0 ? r.out : "";
  }
  // Waits (bounded, polling through the CLI) until D's local copy of KEY
  // mentions `want`; returns the copy then.
  std::string WaitForCopy(const Device& d, const std::string& key, const std::string& want) {
    const absl::Time deadline = absl::Now() + kWait;
    std::string copy;
    while (!absl::StrContains(copy = LocalCopy(d, key), want) && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(50));
    }
    return copy;
  }

  testing::TempDir dir_{"strong_shared"};
  std::unique_ptr<testing::EtcdServer> etcd_;
  Device jane_{"jane-laptop"};
  Device jos_phone_{"josephine-phone"};
  Device jos_laptop_{"josephine-laptop"};
  std::string jane_id_, josephine_id_;
};

TEST_F(StrongSharedTest, AStrongKeyspaceReachesAFriendSignedAndAnAlteredRecordDoesNot) {
  Must(jane_, {"group", "create", kGroup});
  Must(jane_, {"group", "add", kGroup, josephine_id_});
  Must(jane_, {"policy", "set", kNames, "--read", kGroup});
  Must(jane_, {"keyspace", "mode", kNames, "strong"});
  Must(jane_, {"put", kNames, "jane", "jane-laptop", "--if-absent"});
  Must(jane_, {"put", kNames, "josephine", "josephine-phone", "--if-absent"});
  ASSERT_FALSE(HasFailure());
  // Exactly one of two racing registrations of one name wins.
  RunResult again = Peerkv(jane_, {"put", kNames, "jane", "an-impostor", "--if-absent"});
  EXPECT_EQ(again.exit_code, 1) << again.out;
  EXPECT_THAT(again.err, HasSubstr("precondition failed"));

  // Jane's laptop reads the register from etcd: the committed version.
  RunResult committed = Peerkv(jane_, {"get", kNames, "jane", "--json"});
  ASSERT_EQ(committed.exit_code, 0) << committed.err;
  const std::string version = VersionOf(committed.out);
  EXPECT_THAT(version, HasSubstr("@5354524f4e47ffff")) << committed.out;

  // By gossip: the phone from Jane's laptop, the laptop from the phone; the
  // same registers, with the versions the commit assigned.
  for (Device* d : {&jos_phone_, &jos_laptop_}) {
    EXPECT_THAT(WaitForCopy(*d, "jane", "jane-laptop"), HasSubstr("jane-laptop")) << d->name;
    EXPECT_EQ(VersionOf(LocalCopy(*d, "jane")), version) << d->name;
    EXPECT_THAT(WaitForCopy(*d, "josephine", "josephine-phone"), HasSubstr("josephine-phone"))
        << d->name;
    EXPECT_THAT(d->server->Log(), Not(HasSubstr("is unsigned"))) << d->name;
  }

  // Someone with access to etcd replays Jane's signature of "jane" over
  // another value (the log assigns it the next version): Jane's laptop
  // refuses it, and it never reaches Josephine.
  absl::StatusOr<std::unique_ptr<consensus::EtcdConsensusLog>> log =
      consensus::EtcdConsensusLog::Create({etcd_->client_url()});
  ASSERT_THAT(log, IsOk());
  absl::StatusOr<std::optional<consensus::Committed>> genuine =
      (*log)->Read(kNames, "jane", absl::Seconds(5));
  ASSERT_THAT(genuine, IsOk());
  ASSERT_TRUE(genuine->has_value());
  ASSERT_FALSE((*genuine)->record.signature.empty());
  consensus::Proposal forged;
  forged.keyspace = kNames;
  forged.key = "jane";
  forged.value = "mallory-laptop";
  forged.origin = consensus::kStrongOrigin;
  forged.min_hlc = (*genuine)->record.version.hlc;
  forged.precondition = {consensus::Precondition::Kind::kIfVersion, (*genuine)->record.version};
  forged.sign = [signature = (*genuine)->record.signature](const Record&) { return signature; };
  absl::StatusOr<consensus::ProposeResult> planted = (*log)->Propose(forged, absl::Seconds(5));
  ASSERT_THAT(planted, IsOk());
  ASSERT_TRUE(planted->applied);
  EXPECT_THAT(jane_.server->WaitForLog("does not match the record"),
              HasSubstr("does not match the record"));
  // Jane's laptop goes on registering names, and they reach Josephine's
  // laptop, after the altered record would have.
  Must(jane_, {"put", kNames, "john", "john-phone", "--if-absent"});
  EXPECT_THAT(WaitForCopy(jos_laptop_, "john", "john-phone"), HasSubstr("john-phone"));
  for (Device* d : {&jane_, &jos_phone_, &jos_laptop_}) {
    EXPECT_THAT(LocalCopy(*d, "jane"), HasSubstr("jane-laptop")) << d->name;
    EXPECT_THAT(LocalCopy(*d, "jane"), Not(HasSubstr("mallory"))) << d->name;
  }
}

}  // namespace
}  // namespace peerkv
