// tests/conflicts_test.cc: the conflict journal between real `peerkv serve`
// processes (README "Conflict journal"): the seed's to-do list edited on two
// devices while apart keeps the losing edit in the journal of the device
// that made it (and of the other one if it arrived there in time), from
// where the CLI restores it; edits that see each other journal nothing.
#include <signal.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
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

using ::testing::HasSubstr;
using testing::ServerProcess;

constexpr absl::Duration kTimeout = absl::Seconds(30);

class ConflictsProcessTest : public ::testing::Test {
 protected:
  std::unique_ptr<ServerProcess> Start(const std::string& name,
                                       std::vector<std::string> peers = {}) {
    return testing::StartReplica(dir_, name, peers);
  }

  static testing::RunResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), testing::RunfilePath("cli/peerkv"));
    return testing::Run(args);
  }

  static std::string Value(const ServerProcess& server) {
    auto client = testing::ConnectTo(server);
    absl::StatusOr<std::optional<Record>> got = client->Get("todo", "list");
    if (!got.ok() || !got->has_value()) return "<missing>";
    return (*got)->value;
  }

  static uint64_t JournalEntries(const ServerProcess& server) {
    auto client = testing::ConnectTo(server);
    absl::StatusOr<rpc::ServerStatus> status = client->Status();
    return status.ok() ? status->conflict_entries : ~uint64_t{0};
  }

  // A replica journals a loser in the merge that brings the second edit,
  // which may commit after the registers agree; another process holds the
  // answer, so this polls (every 20 ms), bounded.
  static bool JournalsHold(const std::vector<const ServerProcess*>& servers, uint64_t entries) {
    const absl::Time deadline = absl::Now() + kTimeout;
    while (absl::Now() < deadline) {
      bool all = true;
      for (const ServerProcess* s : servers) all = all && JournalEntries(*s) == entries;
      if (all) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }

  testing::TempDir dir_;
};

TEST_F(ConflictsProcessTest, TodoListEditedApartKeepsTheLoserOnBothAndTheCliRestoresIt) {
  auto phone = Start("phone");
  ASSERT_NE(phone, nullptr);
  auto tablet = Start("tablet", {phone->address()});
  ASSERT_NE(tablet, nullptr);
  ASSERT_THAT(testing::ConnectTo(*phone)->Put("todo", "list", "milk"), IsOk());
  ASSERT_TRUE(testing::Converged({phone.get(), tablet.get()}, kTimeout));

  // Apart: the tablet is off; one edit on each, neither seeing the other.
  ASSERT_EQ(tablet->Stop(SIGTERM), 0);
  ASSERT_THAT(testing::ConnectTo(*phone)->Put("todo", "list", "milk, eggs"), IsOk());
  testing::RunResult offline =
      Cli({"--data", dir_.Sub("tablet"), "put", "todo", "list", "milk, bread"});
  ASSERT_EQ(offline.exit_code, 0) << offline.err;

  // They meet: one edit wins on both, the other is in both journals.
  tablet = Start("tablet", {phone->address()});
  ASSERT_NE(tablet, nullptr);
  ASSERT_TRUE(testing::Converged({phone.get(), tablet.get()}, kTimeout));
  const std::string winner = Value(*phone);
  ASSERT_EQ(Value(*tablet), winner);
  ASSERT_TRUE(winner == "milk, eggs" || winner == "milk, bread") << winner;
  const std::string loser = winner == "milk, eggs" ? "milk, bread" : "milk, eggs";
  // The device whose edit lost journals it when the winner arrives over it
  // in a pull; the other device journals it if the loser reaches it in a
  // pull before the loser was replaced where it was written (a log serves
  // current versions only). A winner that arrives by reconciliation
  // carries no causal mark (README "Conflict journal"), so which of the two
  // journals it depends on the race; at least one does.
  std::unique_ptr<ServerProcess>* lost_on = nullptr;
  const absl::Time deadline = absl::Now() + kTimeout;
  while (lost_on == nullptr && absl::Now() < deadline) {
    if (JournalEntries(*phone) == 1) {
      lost_on = &phone;
    } else if (JournalEntries(*tablet) == 1) {
      lost_on = &tablet;
    } else {
      absl::SleepFor(absl::Milliseconds(20));
    }
  }
  ASSERT_NE(lost_on, nullptr) << "no journal holds the loser";
  std::unique_ptr<ServerProcess>& won_on = lost_on == &phone ? tablet : phone;
  const std::string lost_name = lost_on == &phone ? "phone" : "tablet";
  EXPECT_LE(JournalEntries(*won_on), 1u);

  std::string loser_version;
  for (const ServerProcess* device : {lost_on->get(), won_on.get()}) {
    testing::RunResult listed =
        Cli({"--server", device->address(), "conflicts", "todo", "--key", "list"});
    ASSERT_EQ(listed.exit_code, 0) << listed.err;
    if (device == won_on.get() && listed.out.empty()) continue;
    const std::vector<std::string> fields = absl::StrSplit(listed.out, '\t');
    ASSERT_EQ(fields.size(), 5u) << listed.out;
    EXPECT_EQ(fields[0], "list");
    EXPECT_EQ(fields[2], loser);
    EXPECT_THAT(fields[3], HasSubstr("lost to "));
    // The same loser wherever it is journaled.
    if (loser_version.empty()) loser_version = fields[1];
    EXPECT_EQ(fields[1], loser_version);
    testing::RunResult json = Cli({"--server", device->address(), "conflicts", "todo", "--json"});
    ASSERT_EQ(json.exit_code, 0) << json.err;
    EXPECT_THAT(json.out, HasSubstr(absl::StrCat("\"loser\":\"", loser_version, "\"")));
    EXPECT_THAT(json.out, HasSubstr(absl::StrCat("\"loser_value\":\"", loser, "\"")));
    testing::RunResult status = Cli({"--server", device->address(), "status"});
    EXPECT_THAT(status.out, HasSubstr("1 entry")) << status.out;
  }

  // The embedded backend reads the same journal from the data directory.
  ASSERT_EQ((*lost_on)->Stop(SIGTERM), 0);
  testing::RunResult embedded = Cli({"--data", dir_.Sub(lost_name), "conflicts", "todo"});
  ASSERT_EQ(embedded.exit_code, 0) << embedded.err;
  EXPECT_THAT(embedded.out, HasSubstr(loser_version));
  *lost_on = Start(lost_name, {won_on->address()});
  ASSERT_NE(*lost_on, nullptr);

  // Bad input: a version that does not parse, one not in the journal.
  testing::RunResult bad =
      Cli({"--server", (*lost_on)->address(), "conflicts", "restore", "todo", "list", "yesterday"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("VERSION"));
  testing::RunResult absent = Cli({"--server", (*lost_on)->address(), "conflicts", "restore", "todo",
                                   "list", "1700000000000.0@0000000000000001"});
  EXPECT_EQ(absent.exit_code, 1);
  EXPECT_THAT(absent.err, HasSubstr("holds no version"));

  // Restored: a new write, which both then hold.
  testing::RunResult restored =
      Cli({"--server", (*lost_on)->address(), "conflicts", "restore", "todo", "list", loser_version});
  ASSERT_EQ(restored.exit_code, 0) << restored.err;
  EXPECT_THAT(restored.out, HasSubstr("@"));
  ASSERT_TRUE(testing::Converged({phone.get(), tablet.get()}, kTimeout));
  EXPECT_EQ(Value(*phone), loser);
  EXPECT_EQ(Value(*tablet), loser);
  EXPECT_EQ(JournalEntries(**lost_on), 0u);
  testing::RunResult again =
      Cli({"--server", (*lost_on)->address(), "conflicts", "restore", "todo", "list", loser_version});
  EXPECT_EQ(again.exit_code, 1);
  // Each replica keeps its own journal: the other one's entry (if any)
  // stays until cleared.
  testing::RunResult cleared = Cli({"--server", won_on->address(), "conflicts", "clear", "todo"});
  ASSERT_EQ(cleared.exit_code, 0) << cleared.err;
  EXPECT_THAT(cleared.out, HasSubstr("cleared "));
  EXPECT_EQ(JournalEntries(*won_on), 0u);
}

TEST_F(ConflictsProcessTest, SequentialEditsAcrossReplicasLeaveTheJournalsEmpty) {
  auto phone = Start("phone");
  ASSERT_NE(phone, nullptr);
  auto tablet = Start("tablet", {phone->address()});
  ASSERT_NE(tablet, nullptr);
  auto on_phone = testing::ConnectTo(*phone);
  auto on_tablet = testing::ConnectTo(*tablet);
  for (int round = 0; round < 3; ++round) {
    ASSERT_THAT(on_phone->Put("todo", "list", absl::StrCat("phone ", round)), IsOk());
    ASSERT_TRUE(testing::Converged({phone.get(), tablet.get()}, kTimeout));
    ASSERT_THAT(on_tablet->Put("todo", "list", absl::StrCat("tablet ", round)), IsOk());
    ASSERT_TRUE(testing::Converged({phone.get(), tablet.get()}, kTimeout));
  }
  ASSERT_THAT(on_phone->Delete("todo", "list"), IsOk());
  ASSERT_TRUE(testing::Converged({phone.get(), tablet.get()}, kTimeout));
  ASSERT_THAT(on_tablet->Put("todo", "list", "again"), IsOk());
  ASSERT_TRUE(testing::Converged({phone.get(), tablet.get()}, kTimeout));
  EXPECT_EQ(JournalEntries(*phone), 0u);
  EXPECT_EQ(JournalEntries(*tablet), 0u);
  testing::RunResult listed = Cli({"--server", phone->address(), "conflicts", "todo"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_EQ(listed.out, "");
}

}  // namespace
}  // namespace peerkv
