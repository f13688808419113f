// cli/remote_backend.cc: the data commands against a peerkv server, through
// the client library.
#include <memory>

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
  absl::StatusOr<ConflictList> ListConflicts(std::string_view keyspace,
                                             std::optional<std::string_view> key) override {
    return client_->ListConflicts(keyspace, key);
  }
  absl::StatusOr<Version> RestoreConflict(std::string_view keyspace, std::string_view key,
                                          const Version& version) override {
    return client_->RestoreConflict(keyspace, key, version);
  }
  absl::StatusOr<uint64_t> ClearConflicts(std::string_view keyspace) override {
    return client_->ClearConflicts(keyspace);
  }
  absl::StatusOr<CompactResult> Compact(std::string_view keyspace) override {
    return client_->Compact(keyspace);
  }
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> Info() override {
    PEERKV_ASSIGN_OR_RETURN(const rpc::ServerStatus s, client_->Status());
    return ReplicaFacts(s, s.data_dir, &s, client_->options().address);
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

absl::StatusOr<std::unique_ptr<Backend>> OpenRemoteBackend(const std::string& address) {
  PEERKV_ASSIGN_OR_RETURN(std::unique_ptr<rpc::Client> client,
                          rpc::Client::Connect(rpc::ClientOptions{.address = address}));
  return std::make_unique<RemoteBackend>(std::move(client));
}

}  // namespace peerkv::cli
