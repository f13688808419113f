// tests/cli_test.cc: the peerkv command in embedded mode, run as a real
// process: round trips, output formats, exit codes, and one-line errors
// that name the argument and the limit.
#include <sys/file.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/subprocess.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using testing::RunResult;

class CliTest : public ::testing::Test {
 protected:
  RunResult Peerkv(std::vector<std::string> args, const std::string& input = "") {
    args.insert(args.begin(), {testing::RunfilePath("cli/peerkv"), "--data", dir_.Sub("db")});
    return testing::Run(args, input);
  }

  // A bad-input error: exit 2 and exactly one line on stderr.
  static void ExpectUsageError(const RunResult& r, const std::string& text) {
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_THAT(r.err, HasSubstr(text));
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.out, "");
  }

  testing::TempDir dir_;
};

TEST_F(CliTest, PutGetDelRoundTrip) {
  RunResult put = Peerkv({"put", "contacts", "bob", "Bob <bob@example.org>"});
  ASSERT_EQ(put.exit_code, 0) << put.err;
  EXPECT_THAT(put.out, ::testing::MatchesRegex("[0-9]+\\.[0-9]+@[0-9a-f]{16}\n"));

  RunResult get = Peerkv({"get", "contacts", "bob"});
  EXPECT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(get.out, "Bob <bob@example.org>");  // raw: no newline added

  RunResult del = Peerkv({"del", "contacts", "bob"});
  EXPECT_EQ(del.exit_code, 0) << del.err;
  RunResult gone = Peerkv({"get", "contacts", "bob"});
  EXPECT_EQ(gone.exit_code, 1);
  EXPECT_EQ(gone.err, "not found\n");
  EXPECT_EQ(gone.out, "");

  RunResult never = Peerkv({"get", "contacts", "nobody"});
  EXPECT_EQ(never.exit_code, 1);
  EXPECT_EQ(never.err, "not found\n");
}

TEST_F(CliTest, ValueFromStdinIsBinarySafe) {
  const std::string value("line one\nline two\0\xff tail", 23);
  RunResult put = Peerkv({"put", "files", "blob", "-"}, value);
  ASSERT_EQ(put.exit_code, 0) << put.err;
  RunResult get = Peerkv({"get", "files", "blob"});
  EXPECT_EQ(get.exit_code, 0);
  EXPECT_EQ(get.out, value);
}

TEST_F(CliTest, ScanPrintsTextOrJsonLines) {
  ASSERT_EQ(Peerkv({"put", "ks", "a1", "first"}).exit_code, 0);
  ASSERT_EQ(Peerkv({"put", "ks", "a2", "tab\there"}).exit_code, 0);
  ASSERT_EQ(Peerkv({"put", "ks", "b1", "third"}).exit_code, 0);
  ASSERT_EQ(Peerkv({"del", "ks", "b1"}).exit_code, 0);

  RunResult text = Peerkv({"scan", "ks"});
  EXPECT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(text.out, "a1\tfirst\na2\ttab\\there\n");

  RunResult limited = Peerkv({"scan", "ks", "--limit", "1"});
  EXPECT_EQ(limited.out, "a1\tfirst\n");
  RunResult after = Peerkv({"scan", "ks", "--start-after", "a1"});
  EXPECT_EQ(after.out, "a2\ttab\\there\n");
  RunResult tombstones = Peerkv({"scan", "ks", "--prefix", "b", "--tombstones"});
  EXPECT_EQ(tombstones.out, "b1\t(deleted)\n");

  RunResult json = Peerkv({"scan", "ks", "--prefix=a2", "--json"});
  EXPECT_EQ(json.exit_code, 0);
  EXPECT_THAT(json.out, StartsWith("{\"keyspace\":\"ks\",\"key\":\"a2\",\"value\":\"tab\\there\","
                                   "\"version\":\""));
  EXPECT_THAT(json.out, HasSubstr("\"seq\":2}\n"));
}

TEST_F(CliTest, InfoShowsTheReplica) {
  ASSERT_EQ(Peerkv({"put", "ks", "k", "v"}).exit_code, 0);
  ASSERT_EQ(Peerkv({"del", "ks", "gone"}).exit_code, 0);
  RunResult info = Peerkv({"info"});
  EXPECT_EQ(info.exit_code, 0) << info.err;
  EXPECT_THAT(info.out, ::testing::ContainsRegex("replica_id: [0-9a-f]{16}\n"));
  EXPECT_THAT(info.out, ::testing::ContainsRegex("incarnation: [0-9a-f]{16}\n"));
  EXPECT_THAT(info.out, HasSubstr("live_records: 1\n"));
  EXPECT_THAT(info.out, HasSubstr("tombstones: 1\n"));
  EXPECT_THAT(info.out, HasSubstr("max_seq: 2\n"));
  EXPECT_THAT(info.out, ::testing::ContainsRegex("disk_bytes: [1-9][0-9]*\n"));
}

TEST_F(CliTest, BadInputExitsTwoWithOneLineNamingTheLimit) {
  ExpectUsageError(Peerkv({"put", "ks", std::string(401, 'k'), "v"}),
                   "key is 401 bytes; the limit is 400");
  ExpectUsageError(Peerkv({"put", "Bad/Keyspace", "k", "v"}), "keyspace has character");
  ExpectUsageError(Peerkv({"put", "ks", "k", "-"}, std::string(4 * 1024 * 1024 + 1, 'v')),
                   "more than 4194304 bytes");
  ExpectUsageError(Peerkv({"scan", "ks", "--limit", "0"}), "--limit must be an integer in 1..");
  ExpectUsageError(Peerkv({"scan", "ks", "--limit", "ten"}), "got 'ten'");
  ExpectUsageError(Peerkv({"get", "ks"}), "expected KS KEY, got 1 argument");
  ExpectUsageError(Peerkv({"put", "ks", "k", "v", "--colour"}), "unknown flag --colour");
  ExpectUsageError(Peerkv({"frobnicate"}), "unknown command 'frobnicate'");
  ExpectUsageError(Peerkv({"serve", "--max-clock-skew", "soon"}),
                   "--max-clock-skew must be a duration such as 60s or 2m, 0..8760h, got 'soon'");
  ExpectUsageError(Peerkv({"serve", "--max-value-bytes", "0"}),
                   "--max-value-bytes must be an integer in 1..4194304, got '0'");
  ExpectUsageError(Peerkv({"serve", "--peer", "nohost"}), "--peer 'nohost' must be HOST:PORT");
  ExpectUsageError(Peerkv({"--server", "127.0.0.1:1", "get", "ks", "k"}),
                   "give --data DIR or --server HOST:PORT, not both");
  // None of it wrote anything.
  RunResult info = Peerkv({"info"});
  EXPECT_THAT(info.out, HasSubstr("max_seq: 0\n"));
}

TEST_F(CliTest, StrongKeyspaceFlagsRefuseBadInputNamingTheField) {
  ExpectUsageError(Peerkv({"put", "ks", "k", "v", "--if-version", "bogus"}),
                   "--if-version 'bogus' is not a version");
  ExpectUsageError(Peerkv({"put", "ks", "k", "v", "--if-version", "12.99999@00000000deadbeef"}),
                   "the logical counter must be 0..65535");
  ExpectUsageError(
      Peerkv({"put", "ks", "k", "v", "--if-version", "1.0@00000000deadbeef", "--if-absent"}),
      "give --if-version or --if-absent, not both");
  ExpectUsageError(Peerkv({"put", "ks", "k", "v", "--if-absent"}), "needs a running server");
  ExpectUsageError(Peerkv({"del", "ks", "k", "--if-version", "1.0@00000000deadbeef"}),
                   "needs a running server");
  ExpectUsageError(Peerkv({"get", "ks", "k", "--stale-ok"}), "needs a running server");
  ExpectUsageError(Peerkv({"keyspace", "list"}), "keyspace needs a running server");
  const std::string peerkv = testing::RunfilePath("cli/peerkv");
  ExpectUsageError(testing::Run({peerkv, "--server", "127.0.0.1:1", "keyspace", "mode", "ks",
                                 "eventual"}),
                   "mode 'eventual' is not a mode; give strong or lww");
  ExpectUsageError(testing::Run({peerkv, "--server", "127.0.0.1:1", "keyspace", "frob"}),
                   "give `keyspace mode KS strong|lww` or `keyspace list`");
  ExpectUsageError(Peerkv({"serve", "--etcd", "ftp://x"}), "--etcd");
  // None of it wrote anything.
  RunResult info = Peerkv({"info"});
  EXPECT_THAT(info.out, HasSubstr("max_seq: 0\n"));
}

TEST_F(CliTest, DemoStrongHasExactlyOneWinner) {
  RunResult demo = testing::Run({testing::RunfilePath("cli/peerkv"), "demo", "strong"});
  EXPECT_EQ(demo.exit_code, 0) << demo.err;
  size_t wins = 0;
  for (size_t at = demo.out.find("WON 'alice'"); at != std::string::npos;
       at = demo.out.find("WON 'alice'", at + 1)) {
    ++wins;
  }
  EXPECT_EQ(wins, 1u) << demo.out;
  EXPECT_THAT(demo.out, HasSubstr("lost: precondition failed: current version is"));
  EXPECT_THAT(demo.out, HasSubstr("tablet sees alice -> "));
  EXPECT_THAT(demo.out, HasSubstr("tablet claim bob: UNAVAILABLE"));
}

// Issue 9: nothing accepts unauthenticated requests on TCP; plaintext
// (--insecure-loopback, for benchmark baselines) only on loopback.
TEST_F(CliTest, PlaintextServeOnANonLoopbackAddressIsRefused) {
  for (const std::string listen : {"0.0.0.0:0", "192.0.2.1:7700", "[::]:0"}) {
    RunResult r = testing::Run({testing::RunfilePath("cli/peerkv"), "serve", "--data",
                                dir_.Sub("db"), "--insecure-loopback", "--listen", listen},
                               "", std::chrono::seconds(20));
    EXPECT_EQ(r.exit_code, 2) << listen << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr("--insecure-loopback needs a loopback --listen, not '" + listen +
                                 "'"));
  }
}

TEST_F(CliTest, ADirectoryInUseByAnotherProcessIsAClearError) {
  ASSERT_EQ(Peerkv({"put", "ks", "k", "v"}).exit_code, 0);
  const int fd = open(dir_.Sub("db/peerkv.lock").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(flock(fd, LOCK_EX | LOCK_NB), 0);
  RunResult r = Peerkv({"get", "ks", "k"});
  close(fd);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("is in use by another process"));
}

// `compact [KS]` on a data directory: it runs a pass and a repack and
// prints what they did; the values stay. (A tombstone this fresh is
// younger than the minimum age, so none is collected here; the store's
// tests cover collection.) A bad keyspace is exit 2 naming it.
TEST_F(CliTest, CompactPrintsWhatItDid) {
  ASSERT_EQ(Peerkv({"put", "ks", "a", "1"}).exit_code, 0);
  ASSERT_EQ(Peerkv({"del", "ks", "b"}).exit_code, 0);
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"compact"}, std::vector<std::string>{"compact", "ks"}}) {
    RunResult compact = Peerkv(args);
    ASSERT_EQ(compact.exit_code, 0) << compact.err;
    EXPECT_THAT(compact.out, HasSubstr("tombstones collected: 0"));
    EXPECT_THAT(compact.out, HasSubstr("entries repacked: "));
    EXPECT_THAT(compact.out, ::testing::ContainsRegex("pages in use: [0-9]+ before, [0-9]+ after"));
  }
  EXPECT_EQ(Peerkv({"get", "ks", "a"}).out, "1");
  ExpectUsageError(Peerkv({"compact", "Bad/Keyspace"}), "keyspace has character");
  ExpectUsageError(Peerkv({"compact", "a", "b"}), "compact");
}

TEST_F(CliTest, HelpForEveryCommand) {
  RunResult top = testing::Run({testing::RunfilePath("cli/peerkv"), "--help"});
  EXPECT_EQ(top.exit_code, 0);
  for (const char* command :
       {"put", "get", "del", "scan", "info", "serve", "watch", "status", "bench", "keyspace",
        "compact", "demo"}) {
    EXPECT_THAT(top.out, HasSubstr(std::string("  ") + command + " "));
    RunResult help = testing::Run({testing::RunfilePath("cli/peerkv"), command, "--help"});
    EXPECT_EQ(help.exit_code, 0) << command;
    EXPECT_THAT(help.out, StartsWith(std::string("Usage: peerkv")));
    EXPECT_THAT(help.out, HasSubstr(command));
  }
  RunResult bare = testing::Run({testing::RunfilePath("cli/peerkv")});
  EXPECT_EQ(bare.exit_code, 2);
  EXPECT_THAT(bare.err, HasSubstr("Usage: peerkv"));
}

TEST_F(CliTest, ShortHelpVersionAndHelpCommand) {
  const std::string peerkv = testing::RunfilePath("cli/peerkv");
  RunResult h = testing::Run({peerkv, "-h"});
  EXPECT_EQ(h.exit_code, 0) << h.err;
  EXPECT_THAT(h.out, StartsWith("peerkv: a replicated"));
  RunResult version = testing::Run({peerkv, "--version"});
  EXPECT_EQ(version.exit_code, 0) << version.err;
  EXPECT_THAT(version.out, ::testing::MatchesRegex(
                               "peerkv [0-9]+\\.[0-9]+\\.[0-9]+ \\(store format [0-9]+, "
                               "replication protocol [0-9]+\\)\n"));
  // `help CMD` is `CMD --help` is `CMD -h`.
  RunResult help_put = testing::Run({peerkv, "help", "put"});
  EXPECT_EQ(help_put.exit_code, 0) << help_put.err;
  EXPECT_EQ(help_put.out, testing::Run({peerkv, "put", "--help"}).out);
  EXPECT_EQ(help_put.out, testing::Run({peerkv, "put", "-h"}).out);
  ExpectUsageError(testing::Run({peerkv, "help", "nope"}), "unknown command 'nope'");
  // Usage lines name only the global flags a command takes.
  EXPECT_THAT(help_put.out, StartsWith("Usage: peerkv [--data DIR | --server HOST:PORT] put "));
  EXPECT_THAT(testing::Run({peerkv, "help", "status"}).out,
              StartsWith("Usage: peerkv [--server HOST:PORT] status"));
  EXPECT_THAT(testing::Run({peerkv, "help", "serve"}).out,
              StartsWith("Usage: peerkv [--data DIR] serve [--listen"));
  EXPECT_THAT(testing::Run({peerkv, "help", "demo"}).out, StartsWith("Usage: peerkv demo "));
  ExpectUsageError(testing::Run({peerkv, "--data", dir_.Sub("x"), "demo"}),
                   "demo takes neither --data nor --server");
}

TEST_F(CliTest, InfoJsonIsOneObject) {
  ASSERT_EQ(Peerkv({"put", "ks", "k", "v"}).exit_code, 0);
  RunResult info = Peerkv({"info", "--json"});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_THAT(info.out, ::testing::MatchesRegex("\\{\"data_dir\":\".*,\"forks\":0,.*\\}\n"));
  EXPECT_THAT(info.out, HasSubstr("\"live_records\":1,"));
  EXPECT_THAT(info.out, ::testing::ContainsRegex("\"replica_id\":\"[0-9a-f]{16}\""));
}

TEST_F(CliTest, NoServerThereSaysWhichAddressAndHowToStartOne) {
  RunResult r = testing::Run(
      {testing::RunfilePath("cli/peerkv"), "--server", "127.0.0.1:1", "get", "ks", "k"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("peerkv server at 127.0.0.1:1"));
  EXPECT_THAT(r.err, HasSubstr("start one with 'peerkv serve'"));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST_F(CliTest, DemoTellsTheStoryAndConverges) {
  RunResult demo = testing::Run({testing::RunfilePath("cli/peerkv"), "demo"});
  EXPECT_EQ(demo.exit_code, 0) << demo.err;
  EXPECT_THAT(demo.out, HasSubstr("adds Bob"));
  EXPECT_THAT(demo.out, HasSubstr("drafts/mail-1"));
  EXPECT_THAT(demo.out, HasSubstr("sent/mail-1"));
  // The conflict: the tablet's later edit wins on every device.
  ASSERT_NE(demo.out.rfind("They meet again"), std::string::npos) << demo.out;
  const size_t met = demo.out.rfind("They meet again");
  const size_t kept = demo.out.find("The phone's edit is not lost");
  ASSERT_NE(kept, std::string::npos) << demo.out;
  const std::string final_state = demo.out.substr(met, kept - met);
  // The losing edit is in the conflict journal of the devices that saw
  // both edits (which ones depends on the order the merges ran in).
  const std::string journal = demo.out.substr(kept);
  EXPECT_THAT(journal, ::testing::ContainsRegex(": +contacts/bob = Bob Smith "
                                                "<bob@work.example> \\(version [^)]*\\) lost to"));
  EXPECT_EQ(std::count(final_state.begin(), final_state.end(), '\n') > 3, true);
  size_t wins = 0;
  for (size_t at = final_state.find("bob@home.example"); at != std::string::npos;
       at = final_state.find("bob@home.example", at + 1)) {
    ++wins;
  }
  EXPECT_EQ(wins, 3u);
  EXPECT_THAT(final_state, ::testing::Not(HasSubstr("bob@work.example")));
  EXPECT_THAT(demo.out, HasSubstr("Converged."));
  // Real servers on loopback took part.
  EXPECT_THAT(demo.out, ::testing::ContainsRegex("phone +replica [0-9a-f]{16} serving on 127\\.0\\.0\\.1:[0-9]+"));
  EXPECT_THAT(demo.out, HasSubstr("(pc is asleep: its server is stopped)"));
}

}  // namespace
}  // namespace peerkv
