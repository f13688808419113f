// rpc/client.h: the C++ client library for a peerkv server. Blocking calls
// returning absl::Status / StatusOr, no kj or capnp types: an app links it
// like any library. Connection problems are Unavailable (retry); a call
// that takes longer than the timeout is DeadlineExceeded; errors from the
// server (InvalidArgument naming a limit, say) arrive with their code and
// message unchanged. Thread-safe: calls from many threads share one
// connection and are pipelined on it.
#ifndef PEERKV_RPC_CLIENT_H_
#define PEERKV_RPC_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "auth/policy.h"
#include "consensus/consensus_log.h"
#include "rpc/peer_auth.h"
#include "rpc/status.h"
#include "store/types.h"
#include "store/version.h"

namespace peerkv::rpc {

struct ClientOptions {
  // HOST:PORT of the server, or unix:PATH (a server's local socket).
  std::string address = "127.0.0.1:7700";
  // Bound on each call, connecting included.
  absl::Duration timeout = absl::Seconds(30);
  // The identity for a TCP address: TLS 1.3 with this key (a device the
  // user added with `peerkv device add`, or one its certificate says is
  // the user's), and the server pinned: it must show a device certificate
  // of `server_user`. Unset: the process's default (SetDefaultClientTls);
  // without one, plaintext, which only a loopback address allows (a
  // server without TLS: in-process tests). A unix: address needs neither.
  std::optional<TlsIdentity> tls;
  std::optional<auth::PublicKey> server_user;
};

// The identity every Client of this process uses when its options name
// none (an app with one key; tests). REQUIRES: identity.key.
void SetDefaultClientTls(TlsIdentity identity, auth::PublicKey server_user);
// That default, if set.
std::optional<std::pair<TlsIdentity, auth::PublicKey>> DefaultClientTls();

struct WatchOptions {
  std::string keyspace;
  // Only keys starting with these bytes.
  std::string prefix;
  // Deliver changes committed after this seq (0: everything still in the
  // log, which is the latest version of every key).
  uint64_t from_seq = 0;
};

// Receives each batch of changes, in commit order, and the seq to resume
// after them. Return false to end the watch. Runs on the client's own
// thread: it must not call back into the same Client.
// What a getStrong answered (see Client::GetStrong).
struct StrongReadResult {
  std::optional<Record> record;  // nullopt: never written
  // Served from the replica's local copy of a strong keyspace (stale_ok).
  bool stale = false;
  // How old that copy may be, in ms; -1: the replica never caught up.
  int64_t staleness_ms = 0;
};

// A keyspace and its mode, as `keyspace list` shows it.
struct KeyspaceModeInfo {
  std::string keyspace;
  bool strong = false;
  Version since;  // the last switch's version; 0 if never switched
  uint32_t switches = 0;
  uint64_t registers = 0;  // held by the server, deleted keys included
};

using WatchCallback =
    std::function<bool(const std::vector<Record>& records, uint64_t last_seq)>;

class Client {
 public:
  // Connects to the server (one round trip, not a status call).
  // Unavailable if it cannot.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const ClientOptions& options() const;

  // The same operations, with the same contracts, as the Store's; each
  // returns once the server has answered (writes: once durable there). A
  // broken connection is re-established by the next call.
  absl::StatusOr<Version> Put(std::string_view keyspace, std::string_view key,
                              std::string_view value);
  absl::StatusOr<Version> Delete(std::string_view keyspace, std::string_view key);
  absl::StatusOr<std::optional<Record>> Get(std::string_view keyspace,
                                            std::string_view key);
  absl::StatusOr<ScanResult> Scan(std::string_view keyspace, const ScanOptions& options);
  absl::StatusOr<std::vector<Version>> WriteBatch(std::vector<Mutation> mutations);

  // Many gets, or many independent writes, in one call (each has its own
  // result; the call itself fails only if the connection does). The
  // answer to a GetMany holds at most 16 MiB of values: gets past that get
  // ResourceExhausted and can be asked again.
  struct KeyRef {
    std::string keyspace;
    std::string key;
  };
  absl::StatusOr<std::vector<absl::StatusOr<std::optional<Record>>>> GetMany(
      const std::vector<KeyRef>& keys);
  absl::StatusOr<std::vector<absl::StatusOr<Version>>> PutMany(
      const std::vector<Mutation>& mutations);
  absl::StatusOr<ServerStatus> Status();
  // Reconciles the server with its peer `peer` now (see Kv.reconcile).
  absl::StatusOr<replication::ReconcileReport> Reconcile(const std::string& peer);
  // Stops the server waiting for `peer` before collecting tombstones (see
  // Kv.forgetPeer); returns its replica id. NotFound for a peer it does not
  // wait for.
  absl::StatusOr<uint64_t> ForgetPeer(const std::string& peer);
  // A tombstone collection pass over `keyspace` (empty: all) and a repack
  // on the server now (Kv.compact, Store::Compact); local user only.
  absl::StatusOr<CompactResult> Compact(std::string_view keyspace);

  // Strong keyspaces (README "Strong keyspaces"). A put (value set) or
  // delete (nullopt) that commits only if `condition` holds:
  // FailedPrecondition naming the current version if not; Unavailable
  // naming the consensus service if the server cannot reach it.
  absl::StatusOr<Version> WriteIf(std::string_view keyspace, std::string_view key,
                                  std::optional<std::string_view> value,
                                  const consensus::Precondition& condition);
  // A read; on a strong keyspace linearizable unless `stale_ok`.
  absl::StatusOr<StrongReadResult> GetStrong(std::string_view keyspace, std::string_view key,
                                             bool stale_ok);
  // Switches `keyspace` to "strong" or "lww"; returns the switch's version.
  absl::StatusOr<Version> SetMode(std::string_view keyspace, std::string_view mode);
  absl::StatusOr<std::vector<KeyspaceModeInfo>> ListModes();

  // The conflict journal, with Store::ListConflicts', RestoreConflict's
  // and ClearConflicts' contracts (README "Conflict journal"); a list holds
  // what fits in one answer (ConflictList::more).
  absl::StatusOr<ConflictList> ListConflicts(std::string_view keyspace,
                                             std::optional<std::string_view> key = {});
  absl::StatusOr<Version> RestoreConflict(std::string_view keyspace, std::string_view key,
                                          const Version& version);
  absl::StatusOr<uint64_t> ClearConflicts(std::string_view keyspace);

  // Groups and policies, with auth/policy.h's contracts (SetPolicy, ...),
  // done by the server with its user key (FailedPrecondition on a server
  // whose device does not hold it). A listed group's owner is not set.
  absl::Status SetPolicy(std::string_view keyspace, const std::vector<auth::Who>& readers,
                         const std::vector<auth::Who>& writers);
  absl::StatusOr<auth::Policy> GetPolicy(std::string_view keyspace);
  absl::Status CreateGroup(std::string_view name);
  absl::Status AddToGroup(std::string_view name, const std::vector<auth::Member>& members);
  absl::Status RemoveFromGroup(std::string_view name, const auth::Member& member);
  absl::StatusOr<std::vector<auth::Group>> ListGroups(std::optional<std::string_view> name);

  // Streams changes to `on_changes` until it returns false (then OK) or the
  // connection fails (Unavailable). Blocks the calling thread meanwhile.
  absl::Status Watch(const WatchOptions& options, WatchCallback on_changes);

 private:
  class Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  absl::Status CallGroupChange(std::string_view op, std::string_view name,
                               const std::vector<auth::Member>& members);
  std::unique_ptr<Impl> impl_;
};

}  // namespace peerkv::rpc

#endif  // PEERKV_RPC_CLIENT_H_
