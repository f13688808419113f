// cli/remote_backend.cc: the data commands against a peerkv server, through
// the client library.
#include <memory>

#include "absl/strings/str_cat.h"
#include "cli/backend.h"
#include "common/macros.h"
#include "rpc/client.h"
#include "store/validation.h"

namespace peerkv::cli {
namespace {

class RemoteBackend : public Backend {
 public:
  explicit RemoteBackend(std::unique_ptr<rpc::Client> client) : client_(std::move(client)) {}

  absl::StatusOr<Version> Put(std::string_view keyspace, std::string_view key,
                              std::string_view value) override {
    return client_->Put(keyspace, key, value);
  }
  absl::StatusOr<Version> Delete(std::string_view keyspace,
                                 std::string_view key) override {
    return client_->Delete(keyspace, key);
  }
  absl::StatusOr<std::optional<Record>> Get(std::string_view keyspace,
                                            std::string_view key) override {
    return client_->Get(keyspace, key);
  }
  absl::StatusOr<ScanResult> Scan(std::string_view keyspace,
                                  const ScanOptions& options) override {
    return client_->Scan(keyspace, options);
  }
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> Info() override {
    PEERKV_ASSIGN_OR_RETURN(const rpc::ServerStatus s, client_->Status());
    return StatusLines(client_->options().address, s);
  }
  // The protocol's limit: the server may accept less, and refuses a value
  // over its own limit with InvalidArgument naming it. (Asking it first
  // would take a status call per command, and status may fail where puts
  // and gets would not.)
  size_t max_value_bytes() const override { return kMaxValueBytes; }

  rpc::Client& client() { return *client_; }

 private:
  std::unique_ptr<rpc::Client> client_;
};

}  // namespace

std::vector<std::pair<std::string, std::string>> StatusLines(const std::string& address,
                                                             const rpc::ServerStatus& s) {
  std::vector<std::pair<std::string, std::string>> lines = {
      {"server", address},
      {"replica_name", s.replica_name},
      {"data_dir", s.data_dir},
      {"replica_id", ReplicaIdToString(s.replica_id)},
      {"incarnation", ReplicaIdToString(s.incarnation)},
      {"live_records", absl::StrCat(s.live_records)},
      {"tombstones", absl::StrCat(s.tombstones)},
      {"max_seq", absl::StrCat(s.max_seq)},
      {"fingerprint", ReplicaIdToString(s.fingerprint)},
      {"disk_bytes", absl::StrCat(s.disk_bytes)},
      {"uptime_ms", absl::StrCat(s.uptime_ms)},
      {"connected_clients", absl::StrCat(s.connected_clients)},
      {"max_value_bytes", absl::StrCat(s.max_value_bytes)},
  };
  if (!s.retired_ids.empty()) {
    // Only after a fork (a restored data directory): the ids it had, newest
    // last.
    std::string ids;
    for (uint64_t id : s.retired_ids) {
      absl::StrAppend(&ids, ids.empty() ? "" : " ", ReplicaIdToString(id));
    }
    lines.push_back({"forked_from", ids});
  }
  return lines;
}

absl::StatusOr<std::unique_ptr<Backend>> OpenRemoteBackend(const std::string& address) {
  PEERKV_ASSIGN_OR_RETURN(std::unique_ptr<rpc::Client> client,
                          rpc::Client::Connect(rpc::ClientOptions{.address = address}));
  return std::make_unique<RemoteBackend>(std::move(client));
}

}  // namespace peerkv::cli
