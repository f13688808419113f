// cli/embedded_backend.cc: the data commands over a store in a local
// directory (no server). Writes to a strong keyspace are refused: they need
// the consensus service a server has.
#include <memory>

#include "absl/strings/str_cat.h"
#include "auth/policy.h"
#include "cli/backend.h"
#include "consensus/strong_keyspaces.h"
#include "store/store.h"
#include "common/macros.h"

namespace peerkv::cli {
namespace {

class EmbeddedBackend : public Backend {
 public:
  EmbeddedBackend(std::unique_ptr<Store> store, std::unique_ptr<consensus::ModeTable> modes)
      : store_(std::move(store)), modes_(std::move(modes)) {}

  absl::StatusOr<Version> Put(std::string_view keyspace, std::string_view key,
                              std::string_view value) override {
    PEERKV_RETURN_IF_ERROR(RefuseStrong(keyspace));
    return store_->Put(keyspace, key, value);
  }
  absl::StatusOr<Version> Delete(std::string_view keyspace,
                                 std::string_view key) override {
    PEERKV_RETURN_IF_ERROR(RefuseStrong(keyspace));
    return store_->Delete(keyspace, key);
  }
  absl::StatusOr<std::optional<Record>> Get(std::string_view keyspace,
                                            std::string_view key) override {
    return store_->Get(keyspace, key);
  }
  absl::StatusOr<ScanResult> Scan(std::string_view keyspace,
                                  const ScanOptions& options) override {
    return store_->Scan(keyspace, options);
  }
  absl::StatusOr<ConflictList> ListConflicts(std::string_view keyspace,
                                             std::optional<std::string_view> key) override {
    return store_->ListConflicts(keyspace, key);
  }
  absl::StatusOr<Version> RestoreConflict(std::string_view keyspace, std::string_view key,
                                          const Version& version) override {
    return store_->RestoreConflict(keyspace, key, version);
  }
  absl::StatusOr<uint64_t> ClearConflicts(std::string_view keyspace) override {
    return store_->ClearConflicts(keyspace);
  }
  absl::StatusOr<CompactResult> Compact(std::string_view keyspace) override {
    return store_->Compact(keyspace);
  }
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> Info() override {
    PEERKV_ASSIGN_OR_RETURN(const StoreStats stats, store_->Stats());
    return ReplicaFacts(stats, store_->options().dir);
  }
  size_t max_value_bytes() const override { return store_->options().max_value_bytes; }

 private:
  // An lww write here would be refused by every replica (the barrier) and
  // would not be linearizable: a strong keyspace is written through a server.
  // The mode as a server would take it: from the keyspace's policy if it
  // carries switches, else from peerkv.modes.
  absl::Status RefuseStrong(std::string_view keyspace) const {
    bool strong = modes_->ModeOf(keyspace) == consensus::Mode::kStrong;
    if (absl::StatusOr<auth::Policy> policy = auth::GetPolicy(*store_, keyspace);
        policy.ok() && !policy->modes.empty()) {
      strong = policy->modes.back().strong;
    }
    if (!strong) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        "keyspace '", std::string(keyspace),
        "' is strong: its writes go through a server's consensus service (run "
        "'peerkv serve --etcd URL' on this directory and write without --data)"));
  }

  std::unique_ptr<Store> store_;
  std::unique_ptr<consensus::ModeTable> modes_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> OpenEmbeddedBackend(const std::string& dir) {
  StoreOptions options;
  options.dir = dir;
  PEERKV_ASSIGN_OR_RETURN(std::unique_ptr<Store> store, Store::Open(options));
  auto modes = std::make_unique<consensus::ModeTable>();
  modes->SetLog([](const std::string&) {});
  PEERKV_RETURN_IF_ERROR(modes->Load(*store));
  return std::make_unique<EmbeddedBackend>(std::move(store), std::move(modes));
}

}  // namespace peerkv::cli
