// resp/session.h: one RESP connection's state (protocol version, keyspace,
// identity, name) and the commands it answers, through the same Store calls
// as the Cap'n Proto Kv service. No I/O and no kj: the front end
// (resp/server.cc) hands it parsed commands and sends what it appends; the
// unit tests call it directly with a store in a temporary directory.
//
// Reads are answered at once from the store (GetView: no copy of the
// value). Writes are handed back as a PendingWrite: the front end submits
// them to the store's group-commit writer and calls FinishWrite once they
// are durable, so a reply to SET/DEL/MSET always means "fsync'd".
#ifndef PEERKV_RESP_SESSION_H_
#define PEERKV_RESP_SESSION_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "auth/access.h"
#include "common/metrics.h"
#include "replication/status.h"
#include "resp/protocol.h"
#include "store/store.h"

namespace peerkv::resp {

// Checks an AUTH/HELLO token; returns the identity it belongs to, or an
// error (the client is answered -WRONGPASS).
using Authenticator = std::function<absl::StatusOr<std::string>(std::string_view token)>;

// What every session of one front end shares: its configuration and the
// facts INFO reports. Thread-safe where noted.
struct SessionConfig {
  // The keyspace of a new connection (and of SELECT 0).
  std::string default_keyspace = "default";
  // false: every connection starts authenticated (--resp-insecure-loopback).
  bool require_auth = true;
  // Checks AUTH tokens; empty: AUTH is refused (no authenticator wired).
  Authenticator authenticate;
  // True for a strong keyspace: RESP writes to it are refused (they must go
  // through consensus, which RESP does not speak). Empty: none is strong.
  std::function<bool(std::string_view keyspace)> is_strong;
  // Access control (auth/access.h, as the RPC client API asks it): every
  // command that reads or writes a keyspace is checked for `user` (the
  // local user: every token is its), refused with -NOPERM naming the
  // keyspace and the missing right; INFO keyspace lists only the keyspaces
  // `user` may read. Null: no checks (--no-access-checks, tests).
  std::shared_ptr<const auth::Access> access;
  auth::Principal user;
  // The replication peers, for INFO replication. Empty: none.
  std::function<std::vector<replication::PeerStatus>()> peer_statuses;
  std::string replica_name;
  // The bound address ("127.0.0.1:6379"), for INFO.
  std::string address;
  absl::Time started = absl::Now();
  // The parser's limits (the bulk limit is the store's value limit).
  ParseLimits limits;
  // Largest reply KEYS may build; beyond it KEYS is refused (use SCAN).
  size_t max_keys_reply_bytes = size_t{64} << 20;
};

// SCAN cursors: a number stands for "after key K of keyspace S". Shared by
// all connections of a front end (a client library may send the next SCAN
// on another pooled connection). Bounded: the oldest is forgotten first,
// and a forgotten cursor is answered "-ERR invalid cursor".
class CursorTable {
 public:
  static constexpr size_t kMaxCursors = 4096;
  // A new cursor for (keyspace, start_after); never 0.
  uint64_t Add(std::string keyspace, std::string start_after);
  // What `cursor` stands for, if it is still known (and of `keyspace`).
  std::optional<std::string> Find(uint64_t cursor, std::string_view keyspace);

 private:
  absl::Mutex mu_;
  uint64_t next_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, std::pair<std::string, std::string>> cursors_ ABSL_GUARDED_BY(mu_);
};

// Counters a front end keeps for INFO (any thread).
struct FrontEndStats {
  std::atomic<uint64_t> connections{0};
  std::atomic<uint64_t> connections_total{0};
  std::atomic<uint64_t> commands{0};
  std::atomic<uint64_t> rejected_connections{0};
  std::atomic<uint64_t> protocol_errors{0};
};

// A write the front end submits to the store; FinishWrite answers it.
struct PendingWrite {
  enum class Reply {
    kOk,        // +OK
    kCount,     // :count (DEL: keys that held a value before)
    kOldValue,  // SET ... GET: the value before (or null)
  };
  std::vector<Mutation> mutations;
  // The (keyspace, key)s the session tracks as in flight until
  // FinishWrite (filled by Execute).
  std::vector<std::string> tracked;
  Reply reply = Reply::kOk;
  int64_t count = 0;
  std::optional<std::string> old_value;
  // The command's metrics and when it began (steady clock, ns): counted
  // when FinishWrite answers it, so its time includes the commit.
  const metrics::OpMetrics* op = nullptr;
  int64_t start_ns = 0;
};

class Session {
 public:
  Session(Store& store, const SessionConfig& config, CursorTable& cursors,
          const FrontEndStats& stats, uint64_t id);

  enum class Outcome {
    kDone,   // the reply is in `out`
    kWrite,  // submit `*write`; FinishWrite appends the reply
    kClose,  // the reply is in `out`; close once it is sent (QUIT)
  };
  // Runs one command (`args` non-empty) and appends its reply to `out`.
  // Each command is counted in the process's metrics
  // (peerkv_requests_total{frontend="resp",op=<command>,code} and
  // peerkv_request_duration_seconds): code "OK" unless the reply is an
  // error, then its first word ("ERR", "NOAUTH", "BUSY", ...); op
  // "unknown" for a command this front end does not know. A write is
  // counted by FinishWrite.
  Outcome Execute(const std::vector<std::string_view>& args, std::string* out,
                  PendingWrite* write);
  // Appends the reply of a write once the store has answered it, and
  // stops tracking it as in flight.
  void FinishWrite(const PendingWrite& write, const absl::StatusOr<std::vector<Version>>& result,
                   std::string* out);

  // True for the commands that name their keys (GET, MGET, EXISTS, TYPE,
  // SET, DEL, MSET) and PING/ECHO: the front end may run them while this
  // connection's earlier writes are in flight. They see those writes (the
  // session answers a key with a write in flight from the value written),
  // and their replies leave after the writes' own, so a client never sees
  // a value before the write's acknowledgement (which means durable).
  // Every other command waits until the connection's writes are durable.
  static bool MayRunWithWritesInFlight(const std::vector<std::string_view>& args);

  int protocol() const { return protocol_; }
  const std::string& keyspace() const { return keyspace_; }
  const std::string& identity() const { return identity_; }
  bool authenticated() const { return authenticated_; }

 private:
  using Args = std::vector<std::string_view>;
  Outcome Dispatch(const Args& args, Encoder& e, PendingWrite* write);
  // The metrics of the command Dispatch ran last.
  const metrics::OpMetrics* op_ = nullptr;
  void FinishReply(const PendingWrite& write, const absl::StatusOr<std::vector<Version>>& result,
                   std::string* out);
  void Auth(const Args& args, Encoder& e);
  void Hello(const Args& args, Encoder& e);
  void Get(const Args& args, Encoder& e);
  Outcome Set(const Args& args, Encoder& e, PendingWrite* write);
  Outcome Del(const Args& args, Encoder& e, PendingWrite* write);
  void Exists(const Args& args, Encoder& e);
  void MGet(const Args& args, Encoder& e);
  Outcome MSet(const Args& args, Encoder& e, PendingWrite* write);
  void Scan(const Args& args, Encoder& e);
  void Keys(const Args& args, Encoder& e);
  void Type(const Args& args, Encoder& e);
  void DbSize(const Args& args, Encoder& e);
  void Select(const Args& args, Encoder& e);
  void Client(const Args& args, Encoder& e);
  void Command(const Args& args, Encoder& e);
  void Info(const Args& args, Encoder& e);
  void Config(const Args& args, Encoder& e);

  // The record's value if the key holds one (not a tombstone); `found`
  // says whether it does. An error for an invalid key.
  absl::Status Lookup(std::string_view key, std::optional<std::string>* value) const;
  absl::Status Holds(std::string_view key, bool* holds) const;
  // Why a write to the current keyspace is refused (the policy, strong,
  // reserved), if it is.
  absl::Status WriteRefusal() const;
  // Why a read of the current keyspace is refused (the policy), if it is.
  absl::Status ReadRefusal() const;
  // ReadRefusal as an error reply: true if it appended one.
  bool RefuseRead(Encoder& e) const;

  // This connection's writes submitted and not yet finished, by
  // keyspace + '\0' + key: the last value written (nullopt: a delete) and
  // how many are in flight.
  struct InFlight {
    std::optional<std::string> value;
    int count = 0;
  };
  void Track(PendingWrite* write);
  // The in-flight write of `key` in the current keyspace, if any.
  const InFlight* FindInFlight(std::string_view key) const;

  Store& store_;
  const SessionConfig& config_;
  std::map<std::string, InFlight, std::less<>> in_flight_;
  CursorTable& cursors_;
  const FrontEndStats& stats_;
  const uint64_t id_;
  int protocol_ = 2;
  std::string keyspace_;
  bool authenticated_ = false;
  std::string identity_;
  std::string name_;
};

// Error text for a store status, as a RESP error ("ERR ...").
std::string ErrorText(const absl::Status& status);

}  // namespace peerkv::resp

#endif  // PEERKV_RESP_SESSION_H_
