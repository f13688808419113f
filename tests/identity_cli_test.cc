// tests/identity_cli_test.cc: the identity commands as real processes:
// init (a new user, a joining device), id, device add/list/remove, friend
// add/list/remove, their errors, and two servers pairing a second device
// of a user by replication; the lists read through a server that holds the
// directory.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <regex>
#include <sstream>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/server_process.h"
#include "testing/subprocess.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using testing::RunResult;

constexpr char kIdRe[] = "[A-Z2-7]{7}(-[A-Z2-7]{7}){7}";

class IdentityCliTest : public ::testing::Test {
 protected:
  RunResult Peerkv(const std::string& data, std::vector<std::string> args) {
    args.insert(args.begin(), {testing::RunfilePath("cli/peerkv"), "--data", data});
    return testing::Run(args);
  }
  // The value of the line `name VALUE...` of `id`'s output.
  static std::string Field(const std::string& out, const std::string& name, int word = 1) {
    std::istringstream lines(out);
    std::string line;
    while (std::getline(lines, line)) {
      std::istringstream words(line);
      std::string w;
      std::vector<std::string> ws;
      while (words >> w) ws.push_back(w);
      if (!ws.empty() && ws[0] == name && static_cast<int>(ws.size()) > word) return ws[word];
    }
    return "";
  }
  static void ExpectError(const RunResult& r, int code, const std::string& text) {
    EXPECT_EQ(r.exit_code, code) << r.err;
    EXPECT_THAT(r.err, HasSubstr(text));
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.out, "");
  }
  std::string Init(const std::string& data, const std::string& user) {
    RunResult r = Peerkv(data, {"init", "--user", user, "--name", "phone"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out;
  }
  testing::TempDir dir_;
};

TEST_F(IdentityCliTest, InitUserPrintsTheIdsAndIdRepeatsThem) {
  const std::string data = dir_.Sub("phone");
  const std::string out = Init(data, "jane");
  EXPECT_THAT(out, MatchesRegex(std::string("device ") + kIdRe + "\nuser " + kIdRe +
                                " jane\nreplica [0-9a-f]{16}\n"));
  RunResult id = Peerkv(data, {"id"});
  EXPECT_EQ(id.exit_code, 0) << id.err;
  EXPECT_EQ(id.out, out);
  EXPECT_NE(Field(out, "device"), Field(out, "user"));
  struct stat st;
  ASSERT_EQ(::stat((data + "/keys").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700);
  ASSERT_EQ(::stat((data + "/keys/device.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  RunResult list = Peerkv(data, {"device", "list"});
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_THAT(list.out, MatchesRegex(Field(out, "device") +
                                     " phone added [0-9T:-]+Z expires [0-9T:-]+Z "
                                     "\\(this device\\)\n"));
  ExpectError(Peerkv(data, {"init", "--user", "jane"}), 1, "is initialised already");
}

TEST_F(IdentityCliTest, InitErrors) {
  const std::string data = dir_.Sub("d");
  ExpectError(Peerkv(data, {"init"}), 2, "give --user NAME");
  ExpectError(Peerkv(data, {"init", "--user", "a", "--join", "b"}), 2, "one of them");
  ExpectError(Peerkv(data, {"init", "--user", "my name"}), 2, "--user has byte 0x20");
  ExpectError(Peerkv(data, {"init", "--user", std::string(65, 'n')}), 2,
              "--user is 65 bytes; it must be 1..64");
  ExpectError(Peerkv(data, {"init", "--join", "AAAA"}), 2, "USER_ID 'AAAA' has 4 characters");
  ExpectError(Peerkv(data, {"id"}), 1, "is not initialised");
  const std::string other = Init(dir_.Sub("other"), "jane");
  std::string typo = Field(other, "user");
  typo[0] = typo[0] == 'A' ? 'B' : 'A';
  ExpectError(Peerkv(data, {"init", "--join", typo}), 2, "fails its check");
  ExpectError(Peerkv(data, {"init", "--join", Field(other, "device")}), 2,
              "is a device id, not a user id");
}

TEST_F(IdentityCliTest, ABadKeyFileIsRefusedNamingIt) {
  const std::string data = dir_.Sub("phone");
  Init(data, "jane");
  const std::string key = data + "/keys/device.key";
  ASSERT_EQ(::chmod(key.c_str(), 0644), 0);
  ExpectError(Peerkv(data, {"id"}), 1, key + " has mode 0644; it must be 0600");
  ASSERT_EQ(::chmod(key.c_str(), 0600), 0);
  ASSERT_EQ(::truncate(key.c_str(), 30), 0);
  ExpectError(Peerkv(data, {"id"}), 1, key + " is truncated: 30 bytes");
}

TEST_F(IdentityCliTest, DeviceAddListRemove) {
  const std::string phone = dir_.Sub("phone");
  const std::string tablet = dir_.Sub("tablet");
  const std::string user = Field(Init(phone, "jane"), "user");
  RunResult join = Peerkv(tablet, {"init", "--join", user});
  ASSERT_EQ(join.exit_code, 0) << join.err;
  EXPECT_THAT(join.out, HasSubstr("user " + user + " (waiting to be added)\n"));
  EXPECT_THAT(join.err, HasSubstr("peerkv device add "));
  const std::string device = Field(join.out, "device");
  ExpectError(Peerkv(tablet, {"device", "add", Field(Init(dir_.Sub("x"), "x"), "device")}), 1,
              "is not yet added to user");

  RunResult add = Peerkv(phone, {"device", "add", device, "--name", "tablet"});
  EXPECT_EQ(add.exit_code, 0) << add.err;
  EXPECT_THAT(add.out,
              MatchesRegex("added device " + device + " as tablet, certified until [0-9T:-]+Z\n"));
  ExpectError(Peerkv(phone, {"device", "add", device}), 1, "is added already, as tablet");
  RunResult list = Peerkv(phone, {"device", "list"});
  EXPECT_THAT(list.out, ContainsRegex(device + " tablet added [0-9T:-]+Z expires [0-9T:-]+Z\n"));
  RunResult renew = Peerkv(phone, {"device", "renew", device, "--valid-for", "30d"});
  EXPECT_EQ(renew.exit_code, 0) << renew.err;
  EXPECT_THAT(renew.out, MatchesRegex("renewed device " + device +
                                      " \\(tablet\\), certified until [0-9T:-]+Z\n"));
  ExpectError(Peerkv(phone, {"device", "renew", device, "--valid-for", "0d"}), 2,
              "--valid-for must be a duration such as 365d, 30d, 12h or 1y, from 1m to 3650d");
  ExpectError(Peerkv(phone, {"device", "list", "--valid-for", "1d"}), 2, "--valid-for goes with");

  RunResult remove = Peerkv(phone, {"device", "remove", device});
  EXPECT_EQ(remove.exit_code, 0) << remove.err;
  EXPECT_EQ(remove.out, "removed device " + device + "\n");
  list = Peerkv(phone, {"device", "list"});
  EXPECT_THAT(list.out,
              ContainsRegex(device + " tablet added [0-9T:-]+Z removed [0-9T:-]+Z\n"));
  ExpectError(Peerkv(phone, {"device", "add", device}), 1, "was removed at");
  ExpectError(Peerkv(phone, {"device", "renew", device}), 1, "never renewed");
  ExpectError(Peerkv(phone, {"device", "remove", device}), 1, "is removed already");
  const std::string self = Field(Peerkv(phone, {"id"}).out, "device");
  ExpectError(Peerkv(phone, {"device", "remove", self}), 1, "is this device");

  std::string typo = device;
  typo[10] = typo[10] == 'A' ? 'B' : 'A';
  ExpectError(Peerkv(phone, {"device", "add", typo}), 2, "DEVICE_ID '" + typo + "' fails its check");
  ExpectError(Peerkv(phone, {"device", "remove", user}), 2, "is a user id, not a device id");
  ExpectError(Peerkv(phone, {"device", "add"}), 2, "expected 'device add DEVICE_ID'");
  ExpectError(Peerkv(phone, {"device"}), 2,
              "expected add DEVICE_ID, list, renew DEVICE_ID or remove");
  ExpectError(Peerkv(phone, {"device", "list", "--name", "x"}), 2, "--name goes with");
  ExpectError(Peerkv(phone, {"device", "add", device, "--name", "a b"}), 2, "--name has byte");
}

TEST_F(IdentityCliTest, FriendAddListRemove) {
  const std::string jane = dir_.Sub("jane");
  const std::string own = Field(Init(jane, "jane"), "user");
  const std::string bob = Field(Init(dir_.Sub("bob"), "bob"), "user");
  ExpectError(Peerkv(jane, {"friend", "add", bob}), 2, "needs --name N");
  ExpectError(Peerkv(jane, {"friend", "add", own, "--name", "me"}), 2, "your own user id");
  ExpectError(Peerkv(jane, {"friend", "remove", bob}), 1, "is not a friend");
  RunResult add = Peerkv(jane, {"friend", "add", bob, "--name", "bob"});
  EXPECT_EQ(add.exit_code, 0) << add.err;
  EXPECT_EQ(add.out, "added friend " + bob + " as bob\n");
  RunResult list = Peerkv(jane, {"friend", "list"});
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_THAT(list.out, MatchesRegex(bob + " bob added [0-9T:-]+Z\n"));
  RunResult remove = Peerkv(jane, {"friend", "remove", bob});
  EXPECT_EQ(remove.exit_code, 0) << remove.err;
  EXPECT_EQ(Peerkv(jane, {"friend", "list"}).out, "");
  std::string typo = bob;
  typo[20] = typo[20] == 'A' ? 'B' : 'A';
  ExpectError(Peerkv(jane, {"friend", "add", typo, "--name", "bob"}), 2, "fails its check");
  ExpectError(Peerkv(jane, {"friend", "frobnicate"}), 2, "got 'frobnicate'");
}

TEST_F(IdentityCliTest, ReservedKeyspacesRefuseOrdinaryWrites) {
  const std::string data = dir_.Sub("d");
  Init(data, "jane");
  ExpectError(Peerkv(data, {"put", "peerkv.devices", "device/x", "forged"}), 2,
              "keyspace 'peerkv.devices' is reserved");
  ExpectError(Peerkv(data, {"del", "peerkv.friends", "k"}), 2, "is reserved");
  // Reading them is fine: the list is the user's own.
  RunResult scan = Peerkv(data, {"scan", "peerkv.devices", "--limit", "1"});
  EXPECT_EQ(scan.exit_code, 0) << scan.err;
}

TEST_F(IdentityCliTest, EveryCommandHasHelp) {
  for (const char* command : {"init", "id", "device", "friend"}) {
    RunResult r = Peerkv(dir_.Sub("d"), {command, "--help"});
    EXPECT_EQ(r.exit_code, 0) << command << r.err;
    EXPECT_THAT(r.out, HasSubstr(std::string("Usage: peerkv")));
    EXPECT_THAT(r.out, HasSubstr(command));
  }
}

TEST_F(IdentityCliTest, ServeInitialisesAnEmptyDirectory) {
  const std::string data = dir_.Sub("fresh");
  auto server = testing::ServerProcess::Start(data, {"--user", "sam"});
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_THAT((*server)->Log(), HasSubstr("created identity: device "));
  // Its own user, not the test user: reached through its local socket.
  RunResult put = Peerkv(data, {"put", "ks", "k", "v"});
  EXPECT_EQ(put.exit_code, 0) << put.err;
  ASSERT_EQ((*server)->Stop(SIGTERM), 0);
  RunResult id = Peerkv(data, {"id"});
  EXPECT_EQ(id.exit_code, 0) << id.err;
  EXPECT_THAT(id.out, ContainsRegex(std::string("user ") + kIdRe + " sam\n"));
  EXPECT_THAT(Peerkv(data, {"device", "list"}).out, HasSubstr("(this device)"));
  // A second serve keeps the identity.
  auto again = testing::ServerProcess::Start(data);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_THAT((*again)->Log(), ::testing::Not(HasSubstr("created identity")));
  ASSERT_EQ((*again)->Stop(SIGTERM), 0);
  EXPECT_EQ(Peerkv(data, {"id"}).out, id.out);
}

TEST_F(IdentityCliTest, ASecondDevicePairsBySync) {
  const std::string phone = dir_.Sub("phone");
  const std::string tablet = dir_.Sub("tablet");
  const std::string user = Field(Init(phone, "jane"), "user");
  RunResult join = Peerkv(tablet, {"init", "--join", user});
  ASSERT_EQ(join.exit_code, 0) << join.err;
  const std::string device = Field(join.out, "device");
  ASSERT_EQ(Peerkv(phone, {"device", "add", device, "--name", "tablet"}).exit_code, 0);

  auto phone_server = testing::ServerProcess::Start(phone, testing::ReplicaArgs("phone"));
  ASSERT_TRUE(phone_server.ok()) << phone_server.status();
  auto tablet_server = testing::ServerProcess::Start(
      tablet, testing::ReplicaArgs("tablet", {(*phone_server)->address()}));
  ASSERT_TRUE(tablet_server.ok()) << tablet_server.status();
  EXPECT_THAT((*tablet_server)->Log(), HasSubstr("this device waits to be added"));
  EXPECT_THAT((*tablet_server)->WaitForLog("this device is now a device of user " + user +
                                           " jane"),
              HasSubstr("this device is now a device of user"));
  ASSERT_EQ((*tablet_server)->Stop(SIGTERM), 0);
  ASSERT_EQ((*phone_server)->Stop(SIGTERM), 0);

  RunResult id = Peerkv(tablet, {"id"});
  EXPECT_EQ(id.exit_code, 0) << id.err;
  EXPECT_THAT(id.out, HasSubstr("user " + user + " jane\n"));
  struct stat st;
  ASSERT_EQ(::stat((tablet + "/keys/user.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  // The tablet now holds the user key: it can add devices and friends.
  const std::string pc = Field(Init(dir_.Sub("pc"), "other"), "device");
  RunResult add = Peerkv(tablet, {"device", "add", pc, "--name", "pc"});
  EXPECT_EQ(add.exit_code, 0) << add.err;
  RunResult list = Peerkv(tablet, {"device", "list"});
  EXPECT_THAT(list.out, HasSubstr(device + " tablet added"));
  EXPECT_THAT(list.out, HasSubstr(" phone added"));
  EXPECT_THAT(list.out, HasSubstr(pc + " pc added"));
}

// `device list` and `friend list` on a data directory a server holds read
// through its local socket (they used to refuse: the store's lock), so a
// user can watch a removal made on another device arrive.
TEST_F(IdentityCliTest, ListsReadThroughTheServerHoldingTheDirectory) {
  const std::string phone = dir_.Sub("phone");
  const std::string tablet = dir_.Sub("tablet");
  const std::string user = Field(Init(phone, "jane"), "user");
  const std::string device = Field(Peerkv(tablet, {"init", "--join", user}).out, "device");
  ASSERT_EQ(Peerkv(phone, {"device", "add", device, "--name", "tablet"}).exit_code, 0);
  const std::string pc = Field(Init(dir_.Sub("pc"), "other"), "device");
  ASSERT_EQ(Peerkv(phone, {"device", "add", pc, "--name", "pc"}).exit_code, 0);
  const std::string fred = Field(Init(dir_.Sub("fred"), "fred"), "user");
  ASSERT_EQ(Peerkv(phone, {"friend", "add", fred, "--name", "fred"}).exit_code, 0);

  auto phone_server = testing::ServerProcess::Start(phone, testing::ReplicaArgs("phone"));
  ASSERT_TRUE(phone_server.ok()) << phone_server.status();
  const std::string phone_address = (*phone_server)->address();
  RunResult list = Peerkv(phone, {"device", "list"});
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_THAT(list.out, ContainsRegex(" phone added [^ ]+ expires [^ ]+ \\(this device\\)\n"));
  EXPECT_THAT(list.out, ContainsRegex(device + " tablet added [^ ]+ expires [^ ]+\n"));
  EXPECT_THAT(list.out, ContainsRegex(pc + " pc added [^ ]+ expires [^ ]+\n"));
  RunResult friends = Peerkv(phone, {"friend", "list"});
  EXPECT_EQ(friends.exit_code, 0) << friends.err;
  EXPECT_THAT(friends.out, ContainsRegex("^" + fred + " fred added [^ ]+\n$"));

  auto tablet_server =
      testing::ServerProcess::Start(tablet, testing::ReplicaArgs("tablet", {phone_address}));
  ASSERT_TRUE(tablet_server.ok()) << tablet_server.status();
  EXPECT_THAT((*tablet_server)->WaitForLog("this device is now a device of user"),
              HasSubstr("this device is now a device of user"));
  // The pc is removed on the phone (the command opens the directory
  // itself), which comes back at its address; the tablet's list, read
  // through the tablet's server, shows the removal once it arrives (another
  // process holds the answer: polled, bounded).
  ASSERT_EQ((*phone_server)->Stop(SIGTERM), 0);
  RunResult removal = Peerkv(phone, {"device", "remove", pc});
  ASSERT_EQ(removal.exit_code, 0) << removal.err;
  std::vector<std::string> again = testing::ReplicaArgs("phone");
  again.insert(again.end(), {"--listen", phone_address});
  phone_server = testing::ServerProcess::Start(phone, again);
  ASSERT_TRUE(phone_server.ok()) << phone_server.status();
  RunResult watched;
  for (int i = 0; i < 200 && !std::regex_search(watched.out, std::regex(pc + " pc added .* removed "));
       ++i) {
    if (i > 0) absl::SleepFor(absl::Milliseconds(50));
    watched = Peerkv(tablet, {"device", "list"});
    ASSERT_EQ(watched.exit_code, 0) << watched.err;
  }
  EXPECT_THAT(watched.out, ContainsRegex(pc + " pc added [^ ]+ removed [^ ]+\n"))
      << (*tablet_server)->Log();
  EXPECT_THAT(watched.out, ContainsRegex(device + " tablet added [^ ]+ expires [^ ]+ \\(this "
                                         "device\\)\n"));
  RunResult tablet_friends = Peerkv(tablet, {"friend", "list"});
  EXPECT_EQ(tablet_friends.exit_code, 0) << tablet_friends.err;
  EXPECT_THAT(tablet_friends.out, HasSubstr(fred + " fred added "));
  ASSERT_EQ((*tablet_server)->Stop(SIGTERM), 0);
  ASSERT_EQ((*phone_server)->Stop(SIGTERM), 0);
}

}  // namespace
}  // namespace peerkv
