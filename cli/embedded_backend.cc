// cli/embedded_backend.cc: the data commands over a store in a local
// directory (no server).
#include <memory>

#include "cli/backend.h"
#include "store/store.h"
#include "common/macros.h"

namespace peerkv::cli {
namespace {

class EmbeddedBackend : public Backend {
 public:
  explicit EmbeddedBackend(std::unique_ptr<Store> store) : store_(std::move(store)) {}

  absl::StatusOr<Version> Put(std::string_view keyspace, std::string_view key,
                              std::string_view value) override {
    return store_->Put(keyspace, key, value);
  }
  absl::StatusOr<Version> Delete(std::string_view keyspace,
                                 std::string_view key) override {
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
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> Info() override {
    PEERKV_ASSIGN_OR_RETURN(const StoreStats stats, store_->Stats());
    return ReplicaFacts(stats, store_->options().dir);
  }
  size_t max_value_bytes() const override { return store_->options().max_value_bytes; }

 private:
  std::unique_ptr<Store> store_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> OpenEmbeddedBackend(const std::string& dir) {
  StoreOptions options;
  options.dir = dir;
  PEERKV_ASSIGN_OR_RETURN(std::unique_ptr<Store> store, Store::Open(options));
  return std::make_unique<EmbeddedBackend>(std::move(store));
}

}  // namespace peerkv::cli
