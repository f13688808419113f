// replication/reconcile_store.cc: the ReconcileSource a replica serves and
// reconciles from: its store's range fingerprints and records.
#include "common/macros.h"
#include "replication/reconcile.h"
#include "store/store.h"

namespace peerkv::replication {
namespace {

class StoreSource final : public ReconcileSource {
 public:
  explicit StoreSource(const Store& store) : store_(store) {}

  absl::StatusOr<std::vector<KeyspaceRoot>> Roots() override {
    PEERKV_ASSIGN_OR_RETURN(auto roots, store_.KeyspaceFingerprints());
    std::vector<KeyspaceRoot> out;
    out.reserve(roots.size());
    for (auto& [keyspace, fingerprint] : roots) out.push_back({std::move(keyspace), fingerprint});
    return out;
  }
  absl::StatusOr<std::unique_ptr<rbsr::RangeView>> View(std::string_view keyspace) override {
    return store_.OpenRangeView(keyspace);
  }
  absl::StatusOr<std::optional<Record>> Get(std::string_view keyspace,
                                            std::string_view key) override {
    return store_.Get(keyspace, key);
  }

 private:
  const Store& store_;
};

}  // namespace

absl::StatusOr<rbsr::Fingerprint> StoreFingerprint(const Store& store) {
  PEERKV_ASSIGN_OR_RETURN(auto roots, store.KeyspaceFingerprints());
  rbsr::Fingerprint total;
  for (const auto& [keyspace, fingerprint] : roots) total.Add(fingerprint);
  return total;
}

std::unique_ptr<ReconcileSource> StoreReconcileSource(const Store& store) {
  return std::make_unique<StoreSource>(store);
}

}  // namespace peerkv::replication
