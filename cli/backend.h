// cli/backend.h: what the data commands (put, get, del, scan, info) need
// from a replica, so that each command is written once and works both on a
// data directory (embedded) and against a server (remote).
#ifndef PEERKV_CLI_BACKEND_H_
#define PEERKV_CLI_BACKEND_H_

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "rpc/client.h"
#include "store/types.h"

namespace peerkv::cli {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual absl::StatusOr<Version> Put(std::string_view keyspace,
                                      std::string_view key,
                                      std::string_view value) = 0;
  virtual absl::StatusOr<Version> Delete(std::string_view keyspace,
                                         std::string_view key) = 0;
  virtual absl::StatusOr<std::optional<Record>> Get(std::string_view keyspace,
                                                    std::string_view key) = 0;
  virtual absl::StatusOr<ScanResult> Scan(std::string_view keyspace,
                                          const ScanOptions& options) = 0;
  // The conflict journal (Store::ListConflicts, RestoreConflict,
  // ClearConflicts; README "Conflict journal").
  virtual absl::StatusOr<ConflictList> ListConflicts(std::string_view keyspace,
                                                     std::optional<std::string_view> key) = 0;
  virtual absl::StatusOr<Version> RestoreConflict(std::string_view keyspace,
                                                  std::string_view key,
                                                  const Version& version) = 0;
  virtual absl::StatusOr<uint64_t> ClearConflicts(std::string_view keyspace) = 0;
  // A tombstone collection pass over `keyspace` (empty: all) and a repack
  // now (Store::Compact).
  virtual absl::StatusOr<CompactResult> Compact(std::string_view keyspace) = 0;
  // Named facts about the replica, in display order.
  virtual absl::StatusOr<std::vector<std::pair<std::string, std::string>>> Info() = 0;
  // The largest value this replica may accept (a server: the protocol's
  // limit; it refuses values over its own, naming it).
  virtual size_t max_value_bytes() const = 0;
};

// A backend over a store opened in `dir` for the life of the backend.
absl::StatusOr<std::unique_ptr<Backend>> OpenEmbeddedBackend(const std::string& dir);

// A backend over a connection to the server at `address` (HOST:PORT).
absl::StatusOr<std::unique_ptr<Backend>> OpenRemoteBackend(const std::string& address);

// The facts `info` and `status` print about a replica, in display order,
// for both backends: its store's (`stats`, kept in `data_dir`), and, for a
// server reached at `address`, the server's own around them. The wire
// carries a server's fingerprint but not its log length, so a server shows
// the one and a data directory the other.
std::vector<std::pair<std::string, std::string>> ReplicaFacts(
    const StoreStats& stats, const std::string& data_dir,
    const rpc::ServerStatus* server = nullptr, const std::string& address = "");

// `facts` as the members of one JSON object (without the braces): values
// that are decimal integers as numbers, the rest as strings; a name that
// repeats (quarantined_from) becomes an array of its values.
std::string FactsJsonMembers(const std::vector<std::pair<std::string, std::string>>& facts);

}  // namespace peerkv::cli

#endif  // PEERKV_CLI_BACKEND_H_
