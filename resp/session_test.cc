// resp/session_test.cc: the RESP commands against a real store in a
// temporary directory, writes committed as the front end commits them
// (the PendingWrite through Store::Write, then FinishWrite); AUTH through
// a fake authenticator.
#include "resp/session.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/metrics.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/temp_dir.h"

namespace peerkv::resp {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

class SessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions options;
    options.dir = dir_.Sub("db");
    options.sync = false;
    options.max_value_bytes = 1000;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    config_.require_auth = false;
    config_.address = "127.0.0.1:6379";
  }

  std::unique_ptr<Session> NewSession() {
    return std::make_unique<Session>(*store_, config_, cursors_, stats_, next_id_++);
  }

  // Runs one command as the front end does and returns the reply bytes.
  std::string Run(Session& s, std::vector<std::string> argv) {
    std::vector<std::string_view> args(argv.begin(), argv.end());
    std::string out;
    PendingWrite write;
    Session::Outcome outcome = s.Execute(args, &out, &write);
    if (outcome == Session::Outcome::kWrite) {
      EXPECT_TRUE(out.empty());
      absl::StatusOr<std::vector<Version>> result = store_->Write(write.mutations);
      s.FinishWrite(write, result, &out);
    }
    last_outcome_ = outcome;
    return out;
  }

  testing::TempDir dir_{"resp-session"};
  std::unique_ptr<Store> store_;
  SessionConfig config_;
  CursorTable cursors_;
  FrontEndStats stats_;
  uint64_t next_id_ = 1;
  Session::Outcome last_outcome_ = Session::Outcome::kDone;
};

TEST_F(SessionTest, SetGetDelExists) {
  auto s = NewSession();
  EXPECT_EQ(Run(*s, {"GET", "k"}), "$-1\r\n");
  EXPECT_EQ(Run(*s, {"SET", "k", "v1"}), "+OK\r\n");
  EXPECT_EQ(Run(*s, {"get", "k"}), "$2\r\nv1\r\n");
  EXPECT_EQ(Run(*s, {"EXISTS", "k", "k", "nope"}), ":2\r\n");
  EXPECT_EQ(Run(*s, {"TYPE", "k"}), "+string\r\n");
  EXPECT_EQ(Run(*s, {"DEL", "k", "nope"}), ":1\r\n");
  EXPECT_EQ(Run(*s, {"DEL", "k"}), ":0\r\n");
  EXPECT_EQ(Run(*s, {"GET", "k"}), "$-1\r\n");
  EXPECT_EQ(Run(*s, {"TYPE", "k"}), "+none\r\n");
  // The write went through the store, in the default keyspace.
  absl::StatusOr<std::optional<Record>> r = store_->Get("default", "k");
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_TRUE((*r)->deleted);
}

TEST_F(SessionTest, SetOptions) {
  auto s = NewSession();
  EXPECT_EQ(Run(*s, {"SET", "k", "a", "XX"}), "$-1\r\n");
  EXPECT_EQ(Run(*s, {"SET", "k", "a", "NX"}), "+OK\r\n");
  EXPECT_EQ(Run(*s, {"SET", "k", "b", "NX"}), "$-1\r\n");
  EXPECT_EQ(Run(*s, {"SET", "k", "b", "nx", "GET"}), "$1\r\na\r\n");
  EXPECT_EQ(Run(*s, {"SET", "k", "c", "XX", "GET"}), "$1\r\na\r\n");
  EXPECT_EQ(Run(*s, {"SET", "new", "c", "GET"}), "$-1\r\n");
  EXPECT_EQ(Run(*s, {"GET", "k"}), "$1\r\nc\r\n");
  EXPECT_EQ(Run(*s, {"SET", "k", "c", "NX", "XX"}), "-ERR syntax error\r\n");
  EXPECT_EQ(Run(*s, {"SET", "k", "c", "BOGUS"}), "-ERR syntax error\r\n");
  for (const char* option : {"EX", "px", "EXAT", "PXAT", "KEEPTTL"}) {
    std::string upper(option);
    for (char& ch : upper) ch = static_cast<char>(std::toupper(ch));
    EXPECT_EQ(Run(*s, {"SET", "k", "d", option, "10"}),
              "-ERR SET option '" + upper + "' is not supported: peerkv records do not expire\r\n");
  }
  EXPECT_EQ(Run(*s, {"GET", "k"}), "$1\r\nc\r\n");
}

TEST_F(SessionTest, LimitsNameTheField) {
  auto s = NewSession();
  EXPECT_THAT(Run(*s, {"SET", "k", std::string(1001, 'v')}),
              AllOf(StartsWith("-ERR "), HasSubstr("1000")));
  EXPECT_THAT(Run(*s, {"SET", std::string(401, 'k'), "v"}),
              AllOf(StartsWith("-ERR "), HasSubstr("400")));
  EXPECT_THAT(Run(*s, {"GET", ""}), StartsWith("-ERR "));
  EXPECT_THAT(Run(*s, {"MSET", "a", "1", "b"}), HasSubstr("wrong number of arguments"));
}

TEST_F(SessionTest, MsetMgetDbsize) {
  auto s = NewSession();
  EXPECT_EQ(Run(*s, {"MSET", "a", "1", "b", "2"}), "+OK\r\n");
  EXPECT_EQ(Run(*s, {"MGET", "a", "x", "b"}), "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n");
  EXPECT_EQ(Run(*s, {"DBSIZE"}), ":2\r\n");
  EXPECT_EQ(Run(*s, {"DEL", "a"}), ":1\r\n");
  EXPECT_EQ(Run(*s, {"DBSIZE"}), ":1\r\n");
}

TEST_F(SessionTest, SelectMapsToKeyspaces) {
  auto s = NewSession();
  EXPECT_EQ(Run(*s, {"SET", "k", "zero"}), "+OK\r\n");
  EXPECT_EQ(Run(*s, {"SELECT", "ks:photos"}), "+OK\r\n");
  EXPECT_EQ(s->keyspace(), "photos");
  EXPECT_EQ(Run(*s, {"GET", "k"}), "$-1\r\n");
  EXPECT_EQ(Run(*s, {"SET", "k", "p"}), "+OK\r\n");
  EXPECT_EQ(Run(*s, {"SELECT", "3"}), "+OK\r\n");
  EXPECT_EQ(s->keyspace(), "db3");
  EXPECT_EQ(Run(*s, {"SELECT", "0"}), "+OK\r\n");
  EXPECT_EQ(Run(*s, {"GET", "k"}), "$4\r\nzero\r\n");
  EXPECT_THAT(Run(*s, {"SELECT", "ks:Bad Name"}), StartsWith("-ERR "));
  EXPECT_THAT(Run(*s, {"SELECT", "ks:peerkv.identities"}), "+OK\r\n");
  EXPECT_THAT(Run(*s, {"SET", "k", "v"}), AllOf(StartsWith("-ERR "), HasSubstr("reserved")));
  EXPECT_THAT(Run(*s, {"SELECT", "-1"}), StartsWith("-ERR SELECT takes"));
  absl::StatusOr<std::optional<Record>> r = store_->Get("photos", "k");
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->value, "p");
}

// Issue 10: RESP acts as the local user (its tokens are this data
// directory's, made by `peerkv token create`), and reserved keyspaces are
// refused as through RPC: '_' names at SELECT, writes to 'peerkv.*' by the
// store, naming the rule.
TEST_F(SessionTest, ReservedKeyspacesAreRefusedAsThroughRpc) {
  auto s = NewSession();
  EXPECT_THAT(Run(*s, {"SELECT", "ks:_private"}),
              AllOf(StartsWith("-ERR "), HasSubstr("names starting with '_' are reserved")));
  EXPECT_EQ(s->keyspace(), config_.default_keyspace);
  EXPECT_EQ(Run(*s, {"SELECT", "ks:peerkv.policies"}), "+OK\r\n");
  EXPECT_THAT(Run(*s, {"SET", "jane.blog", "forged policy"}),
              AllOf(StartsWith("-ERR "), HasSubstr("reserved")));
  EXPECT_THAT(Run(*s, {"DEL", "jane.blog"}), AllOf(StartsWith("-ERR "), HasSubstr("reserved")));
  absl::StatusOr<std::optional<Record>> r = store_->Get("peerkv.policies", "jane.blog");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->has_value());
}

// An Access as Josephine's phone sees Jane's keyspaces: jane.blog is hers
// to read, not to write; jane.drafts neither; everything else is hers.
class FakeAccess : public auth::Access {
 public:
  bool MayRead(const auth::Principal&, std::string_view ks) const override {
    return ks != "jane.drafts";
  }
  bool MayWrite(const auth::Principal&, std::string_view ks) const override {
    return ks != "jane.blog" && ks != "jane.drafts";
  }
  bool RequiresSignature(std::string_view) const override { return false; }
};

TEST_F(SessionTest, CommandsAreCheckedAgainstThePolicyAsThroughRpc) {
  // Records the store holds in both keyspaces (as a replica would).
  ASSERT_THAT(store_->Write({Mutation{"jane.blog", "post1", "hello"},
                             Mutation{"jane.drafts", "d1", "secret"}}),
              IsOk());
  config_.access = std::make_shared<FakeAccess>();
  config_.user = auth::Principal{{}, /*local_user=*/true};
  auto s = NewSession();
  EXPECT_EQ(Run(*s, {"SELECT", "ks:jane.blog"}), "+OK\r\n");
  // Reads are the user's; every write is refused, naming keyspace and right.
  EXPECT_EQ(Run(*s, {"GET", "post1"}), "$5\r\nhello\r\n");
  EXPECT_EQ(Run(*s, {"MGET", "post1"}), "*1\r\n$5\r\nhello\r\n");
  for (std::vector<std::string> write : std::vector<std::vector<std::string>>{
           {"SET", "post1", "forged"}, {"SET", "new", "x", "NX"}, {"MSET", "a", "1", "b", "2"},
           {"DEL", "post1"}}) {
    const std::string reply = Run(*s, write);
    EXPECT_THAT(reply, StartsWith("-NOPERM ")) << write[0];
    EXPECT_THAT(reply, HasSubstr("may not write keyspace 'jane.blog'")) << write[0];
    EXPECT_EQ(last_outcome_, Session::Outcome::kDone);
  }
  absl::StatusOr<std::optional<Record>> post = store_->Get("jane.blog", "post1");
  ASSERT_TRUE(post.ok() && post->has_value());
  EXPECT_EQ((*post)->value, "hello");
  // Nothing of jane.drafts is read: not its values, keys or count.
  EXPECT_EQ(Run(*s, {"SELECT", "ks:jane.drafts"}), "+OK\r\n");
  for (std::vector<std::string> read : std::vector<std::vector<std::string>>{
           {"GET", "d1"}, {"MGET", "d1"}, {"EXISTS", "d1"}, {"TYPE", "d1"}, {"SCAN", "0"},
           {"KEYS", "*"}, {"DBSIZE"}, {"SET", "d1", "x"}}) {
    const std::string reply = Run(*s, read);
    EXPECT_THAT(reply, StartsWith("-NOPERM ")) << read[0];
    EXPECT_THAT(reply, HasSubstr(read[0] == "SET" ? "may not write keyspace 'jane.drafts'"
                                                  : "may not read keyspace 'jane.drafts'"))
        << read[0];
  }
  // INFO keyspace names the readable keyspaces only.
  const std::string info = Run(*s, {"INFO", "keyspace"});
  EXPECT_THAT(info, HasSubstr("ks:jane.blog:"));
  EXPECT_THAT(info, Not(HasSubstr("drafts")));
  // INFO stats counts no records of jane.drafts: the whole store's figures
  // are left out for a user who may not read all of it.
  const std::string stats = Run(*s, {"INFO", "stats"});
  EXPECT_THAT(stats, HasSubstr("total_commands_processed:"));
  EXPECT_THAT(stats, Not(HasSubstr("store_")));
  // Refusals are counted under their code.
  EXPECT_GE(metrics::Global().requests.Get({"resp", "set", "NOPERM"}).value(), 1u);
}

TEST_F(SessionTest, StrongKeyspacesRefuseWrites) {
  config_.is_strong = [](std::string_view ks) { return ks == "bank"; };
  auto s = NewSession();
  EXPECT_EQ(Run(*s, {"SELECT", "ks:bank"}), "+OK\r\n");
  EXPECT_THAT(Run(*s, {"SET", "k", "v"}), AllOf(StartsWith("-ERR "), HasSubstr("strong")));
  EXPECT_THAT(Run(*s, {"DEL", "k"}), HasSubstr("strong"));
  EXPECT_THAT(Run(*s, {"MSET", "k", "v"}), HasSubstr("strong"));
  EXPECT_EQ(Run(*s, {"GET", "k"}), "$-1\r\n");
}

TEST_F(SessionTest, ScanWithCursorMatchAndCount) {
  auto s = NewSession();
  std::vector<std::string> mset = {"MSET"};
  for (int i = 0; i < 25; ++i) {
    mset.push_back(absl::StrCat(i % 2 == 0 ? "even:" : "odd:", i));
    mset.push_back("v");
  }
  EXPECT_EQ(Run(*s, mset), "+OK\r\n");
  // Walk all with COUNT 4: every key once, the last cursor 0.
  std::vector<std::string> seen;
  std::string cursor = "0";
  for (int round = 0; round < 100; ++round) {
    std::string reply = Run(*s, {"SCAN", cursor, "COUNT", "4"});
    ASSERT_THAT(reply, StartsWith("*2\r\n$"));
    // *2 $N cursor *M ($len key)...
    size_t pos = 4;
    const size_t len_end = reply.find("\r\n", pos);
    const size_t n = std::stoul(reply.substr(pos + 1, len_end - pos - 1));
    cursor = reply.substr(len_end + 2, n);
    pos = len_end + 2 + n + 2;
    const size_t count_end = reply.find("\r\n", pos);
    const size_t m = std::stoul(reply.substr(pos + 1, count_end - pos - 1));
    pos = count_end + 2;
    for (size_t i = 0; i < m; ++i) {
      const size_t e = reply.find("\r\n", pos);
      const size_t l = std::stoul(reply.substr(pos + 1, e - pos - 1));
      seen.push_back(reply.substr(e + 2, l));
      pos = e + 2 + l + 2;
    }
    if (cursor == "0") break;
  }
  EXPECT_EQ(cursor, "0");
  EXPECT_EQ(seen.size(), 25u);
  // MATCH with a prefix and a glob.
  std::string reply = Run(*s, {"SCAN", "0", "MATCH", "odd:1*", "COUNT", "1000"});
  EXPECT_EQ(reply, "*2\r\n$1\r\n0\r\n*6\r\n$5\r\nodd:1\r\n$6\r\nodd:11\r\n$6\r\nodd:13\r\n"
                   "$6\r\nodd:15\r\n$6\r\nodd:17\r\n$6\r\nodd:19\r\n");
  EXPECT_EQ(Run(*s, {"SCAN", "999999", "COUNT", "2"}), "-ERR invalid cursor\r\n");
  EXPECT_EQ(Run(*s, {"SCAN", "abc"}), "-ERR invalid cursor\r\n");
  EXPECT_EQ(Run(*s, {"KEYS", "even:2?"}),
            "*3\r\n$7\r\neven:20\r\n$7\r\neven:22\r\n$7\r\neven:24\r\n");
}

TEST_F(SessionTest, UnknownCommandsAndArity) {
  auto s = NewSession();
  EXPECT_EQ(Run(*s, {"FLUSHALL", "a", "b"}),
            "-ERR unknown command 'FLUSHALL', with args beginning with: 'a' 'b' \r\n");
  EXPECT_EQ(Run(*s, {"GET"}), "-ERR wrong number of arguments for 'get' command\r\n");
  EXPECT_EQ(Run(*s, {"PING"}), "+PONG\r\n");
  EXPECT_EQ(Run(*s, {"PING", "hi"}), "$2\r\nhi\r\n");
  EXPECT_EQ(Run(*s, {"ECHO", "x"}), "$1\r\nx\r\n");
  EXPECT_EQ(Run(*s, {"QUIT"}), "+OK\r\n");
  EXPECT_EQ(last_outcome_, Session::Outcome::kClose);
}

TEST_F(SessionTest, HelloSwitchesToResp3) {
  auto s = NewSession();
  std::string reply = Run(*s, {"HELLO", "3", "SETNAME", "me"});
  EXPECT_THAT(reply, StartsWith("%7\r\n$6\r\nserver\r\n$6\r\npeerkv\r\n"));
  EXPECT_EQ(s->protocol(), 3);
  EXPECT_EQ(Run(*s, {"GET", "missing"}), "_\r\n");
  EXPECT_EQ(Run(*s, {"CLIENT", "GETNAME"}), "$2\r\nme\r\n");
  EXPECT_EQ(Run(*s, {"HELLO", "4"}), "-NOPROTO unsupported protocol version\r\n");
  EXPECT_THAT(Run(*s, {"HELLO", "2"}), StartsWith("*14\r\n"));
  EXPECT_EQ(Run(*s, {"GET", "missing"}), "$-1\r\n");
}

TEST_F(SessionTest, ClientCommandInfoConfig) {
  auto s = NewSession();
  EXPECT_EQ(Run(*s, {"CLIENT", "GETNAME"}), "$-1\r\n");
  EXPECT_EQ(Run(*s, {"CLIENT", "SETNAME", "worker-1"}), "+OK\r\n");
  EXPECT_EQ(Run(*s, {"CLIENT", "GETNAME"}), "$8\r\nworker-1\r\n");
  EXPECT_THAT(Run(*s, {"CLIENT", "SETNAME", "a b"}), StartsWith("-ERR Client names"));
  EXPECT_EQ(Run(*s, {"COMMAND", "COUNT"}), ":20\r\n");
  EXPECT_EQ(Run(*s, {"COMMAND", "DOCS"}), "*0\r\n");
  EXPECT_THAT(Run(*s, {"COMMAND"}), StartsWith("*20\r\n*6\r\n$4\r\nauth\r\n:-2\r\n"));
  EXPECT_THAT(Run(*s, {"COMMAND", "INFO", "get", "nope"}),
              "*2\r\n*6\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n$-1\r\n");
  EXPECT_EQ(Run(*s, {"CONFIG", "GET", "save"}), "*0\r\n");
  std::string info = Run(*s, {"INFO"});
  EXPECT_THAT(info, HasSubstr("# Server\r\nredis_version:"));
  EXPECT_THAT(info, HasSubstr("# Replication\r\nrole:master"));
  EXPECT_THAT(info, HasSubstr("# Keyspace\r\n"));
  EXPECT_EQ(Run(*s, {"SET", "k", "v"}), "+OK\r\n");
  EXPECT_THAT(Run(*s, {"INFO", "keyspace"}), HasSubstr("ks:default:registers=1\r\n"));
  EXPECT_THAT(Run(*s, {"INFO", "stats"}), HasSubstr("store_live_records:1\r\n"));
  EXPECT_THAT(Run(*s, {"INFO", "server"}), Not(HasSubstr("# Keyspace")));
}

TEST_F(SessionTest, InfoListsReplicationPeers) {
  config_.peer_statuses = [] {
    replication::PeerStatus p;
    p.name = "tablet";
    p.address = "10.0.0.2:7700";
    p.replica_id = 0xabc;
    p.reachable = true;
    p.behind = 7;
    return std::vector<replication::PeerStatus>{p};
  };
  auto s = NewSession();
  EXPECT_THAT(Run(*s, {"INFO", "replication"}),
              HasSubstr("peers:1\r\npeer0:name=tablet,address=10.0.0.2:7700,replica_id="
                        "0000000000000abc,state=reachable,behind=7,"));
}

TEST_F(SessionTest, AuthRequiredAndCheckedByTheHook) {
  config_.require_auth = true;
  config_.authenticate = [](std::string_view token) -> absl::StatusOr<std::string> {
    if (token == "good-token") return std::string("alice");
    return absl::PermissionDeniedError("unknown token");
  };
  auto s = NewSession();
  const std::string noauth = "-NOAUTH Authentication required.\r\n";
  EXPECT_EQ(Run(*s, {"GET", "k"}), noauth);
  EXPECT_EQ(Run(*s, {"SET", "k", "v"}), noauth);
  EXPECT_EQ(Run(*s, {"KEYS", "*"}), noauth);
  EXPECT_EQ(Run(*s, {"NOSUCH"}), noauth);
  EXPECT_EQ(Run(*s, {"SELECT", "1"}), noauth);
  EXPECT_EQ(Run(*s, {"PING"}), "+PONG\r\n");
  EXPECT_THAT(Run(*s, {"HELLO", "3"}), StartsWith("-NOAUTH HELLO must be called"));
  EXPECT_EQ(s->protocol(), 2);
  EXPECT_EQ(Run(*s, {"AUTH", "bad"}),
            "-WRONGPASS invalid username-password pair or user is disabled.\r\n");
  EXPECT_EQ(Run(*s, {"AUTH", "bob", "good-token"}),
            "-WRONGPASS invalid username-password pair or user is disabled.\r\n");
  EXPECT_FALSE(s->authenticated());
  EXPECT_EQ(Run(*s, {"AUTH", "alice", "good-token"}), "+OK\r\n");
  EXPECT_EQ(s->identity(), "alice");
  EXPECT_EQ(Run(*s, {"GET", "k"}), "$-1\r\n");

  auto t = NewSession();
  EXPECT_THAT(Run(*t, {"HELLO", "3", "AUTH", "default", "good-token"}), StartsWith("%7\r\n"));
  EXPECT_EQ(t->identity(), "alice");
  EXPECT_EQ(Run(*t, {"GET", "k"}), "_\r\n");
  auto u = NewSession();
  EXPECT_THAT(Run(*u, {"HELLO", "3", "AUTH", "default", "nope"}), StartsWith("-WRONGPASS"));
  EXPECT_EQ(u->protocol(), 2);
}

TEST_F(SessionTest, OnlyCommandsOnNamedKeysRunWithWritesInFlight) {
  using Args = std::vector<std::string_view>;
  EXPECT_TRUE(Session::MayRunWithWritesInFlight(Args{"SET", "k", "v", "NX"}));
  EXPECT_TRUE(Session::MayRunWithWritesInFlight(Args{"mget", "a", "b"}));
  EXPECT_TRUE(Session::MayRunWithWritesInFlight(Args{"DEL", "k"}));
  EXPECT_FALSE(Session::MayRunWithWritesInFlight(Args{"SCAN", "0"}));
  EXPECT_FALSE(Session::MayRunWithWritesInFlight(Args{"SELECT", "1"}));
  EXPECT_FALSE(Session::MayRunWithWritesInFlight(Args{"DBSIZE"}));
}

// Commands that run while the connection's writes are in flight see them.
TEST_F(SessionTest, WritesInFlightAreSeenByTheConnection) {
  auto s = NewSession();
  EXPECT_EQ(Run(*s, {"SET", "k", "old"}), "+OK\r\n");
  std::string out;
  PendingWrite set;
  std::vector<std::string_view> args = {"SET", "k", "new"};
  ASSERT_EQ(s->Execute(args, &out, &set), Session::Outcome::kWrite);
  PendingWrite del;
  args = {"DEL", "gone"};
  EXPECT_EQ(Run(*s, {"SET", "gone", "x"}), "+OK\r\n");
  ASSERT_EQ(s->Execute(args, &out, &del), Session::Outcome::kWrite);
  EXPECT_EQ(out, "");
  // Not yet in the store, seen by this session.
  EXPECT_EQ(Run(*s, {"GET", "k"}), "$3\r\nnew\r\n");
  EXPECT_EQ(Run(*s, {"MGET", "k", "gone"}), "*2\r\n$3\r\nnew\r\n$-1\r\n");
  EXPECT_EQ(Run(*s, {"EXISTS", "k", "gone"}), ":1\r\n");
  EXPECT_EQ(Run(*s, {"SET", "k", "x", "NX", "GET"}), "$3\r\nnew\r\n");
  EXPECT_EQ(Run(*s, {"DEL", "gone"}), ":0\r\n");
  // Another connection sees the store.
  auto other = NewSession();
  EXPECT_EQ(Run(*other, {"GET", "k"}), "$3\r\nold\r\n");
  // Once written and finished, the session reads the store again.
  s->FinishWrite(set, store_->Write(set.mutations), &out);
  s->FinishWrite(del, store_->Write(del.mutations), &out);
  EXPECT_EQ(out, "+OK\r\n:1\r\n");
  EXPECT_EQ(Run(*other, {"GET", "k"}), "$3\r\nnew\r\n");
  EXPECT_EQ(Run(*s, {"GET", "gone"}), "$-1\r\n");
  EXPECT_EQ(Run(*s, {"SELECT", "ks:other"}), "+OK\r\n");
  EXPECT_EQ(Run(*s, {"GET", "k"}), "$-1\r\n");
}

// Every command is counted by name and outcome in the process's metrics,
// as RPC calls are; a write's time is counted when it is answered.
TEST_F(SessionTest, CommandsAreCountedInMetrics) {
  metrics::Registry& m = metrics::Global();
  auto count = [&m](const std::string& op, const std::string& code) {
    return m.requests.Get({"resp", op, code}).value();
  };
  auto timed = [&m](const std::string& op) {
    return m.request_seconds.Get({"resp", op}).Read().count;
  };
  const uint64_t get_ok = count("get", "OK"), set_ok = count("set", "OK"),
                 set_err = count("set", "ERR"), unknown = count("unknown", "ERR"),
                 noauth = count("get", "NOAUTH"), busy = count("set", "BUSY"),
                 get_timed = timed("get"), set_timed = timed("set");
  auto s = NewSession();
  EXPECT_EQ(Run(*s, {"SET", "k", "v"}), "+OK\r\n");
  EXPECT_EQ(Run(*s, {"GET", "k"}), "$1\r\nv\r\n");
  EXPECT_EQ(Run(*s, {"get", "missing"}), "$-1\r\n");
  EXPECT_THAT(Run(*s, {"SET", "k", "v", "EX"}), StartsWith("-ERR"));
  EXPECT_THAT(Run(*s, {"FROB"}), StartsWith("-ERR unknown command"));
  // A write the store refuses is counted under its reply's code.
  {
    std::vector<std::string> argv = {"SET", "k2", "v"};
    std::vector<std::string_view> args(argv.begin(), argv.end());
    std::string out;
    PendingWrite write;
    ASSERT_EQ(s->Execute(args, &out, &write), Session::Outcome::kWrite);
    EXPECT_EQ(count("set", "OK"), set_ok + 1);  // not yet: answered below
    s->FinishWrite(write, absl::UnavailableError("writer busy"), &out);
    EXPECT_THAT(out, StartsWith("-BUSY"));
  }
  config_.require_auth = true;
  auto locked = NewSession();
  EXPECT_THAT(Run(*locked, {"GET", "k"}), StartsWith("-NOAUTH"));
  EXPECT_EQ(count("get", "OK"), get_ok + 2);
  EXPECT_EQ(count("set", "OK"), set_ok + 1);
  EXPECT_EQ(count("set", "ERR"), set_err + 1);
  EXPECT_EQ(count("set", "BUSY"), busy + 1);
  EXPECT_EQ(count("unknown", "ERR"), unknown + 1);
  EXPECT_EQ(count("get", "NOAUTH"), noauth + 1);
  EXPECT_EQ(timed("get"), get_timed + 3);
  EXPECT_EQ(timed("set"), set_timed + 3);
}

}  // namespace
}  // namespace peerkv::resp
