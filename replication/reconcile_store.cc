// replication/reconcile_store.cc: the ReconcileSource a replica serves and
// reconciles from: its store's range fingerprints and records.
#include "common/macros.h"
#include "replication/reconcile.h"
#include "store/store.h"

namespace peerkv::replication {
namespace {

// A view that forwards to one the source keeps.
class SharedView final : public rbsr::RangeView {
 public:
  explicit SharedView(std::shared_ptr<rbsr::RangeView> view) : view_(std::move(view)) {}
  absl::StatusOr<rbsr::Fingerprint> FingerprintOf(const rbsr::NodeId& node) override {
    return view_->FingerprintOf(node);
  }
  absl::Status ForEachItem(const rbsr::NodeId& node,
                           absl::FunctionRef<void(const rbsr::RangeItem&)> fn) override {
    return view_->ForEachItem(node, fn);
  }

 private:
  std::shared_ptr<rbsr::RangeView> view_;
};

// Keeps the last keyspace's view while the store has not committed since
// it was opened (its max seq is unchanged), so that the rounds of a session
// do not each load the keyspace's registers again. One view at most.
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
    const uint64_t seq = store_.max_seq();
    if (cached_ == nullptr || cached_keyspace_ != keyspace || cached_seq_ != seq) {
      cached_.reset();
      PEERKV_ASSIGN_OR_RETURN(std::unique_ptr<rbsr::RangeView> view,
                              store_.OpenRangeView(keyspace));
      cached_ = std::move(view);
      cached_keyspace_ = std::string(keyspace);
      cached_seq_ = seq;
    }
    return std::make_unique<SharedView>(cached_);
  }
  absl::StatusOr<std::optional<Record>> Get(std::string_view keyspace,
                                            std::string_view key) override {
    return store_.Get(keyspace, key);
  }

 private:
  const Store& store_;
  std::shared_ptr<rbsr::RangeView> cached_;
  std::string cached_keyspace_;
  uint64_t cached_seq_ = 0;
};

}  // namespace

absl::StatusOr<rbsr::Fingerprint> StoreFingerprint(const Store& store) {
  PEERKV_ASSIGN_OR_RETURN(auto roots, store.KeyspaceFingerprints());
  rbsr::Fingerprint total;
  for (const auto& [keyspace, fingerprint] : roots) total.Add(fingerprint);
  return total;
}

absl::StatusOr<rbsr::Fingerprint> StoreFingerprint(const Store& store,
                                                   const KeyspaceFilter& readable) {
  PEERKV_ASSIGN_OR_RETURN(auto roots, store.KeyspaceFingerprints());
  rbsr::Fingerprint total;
  for (const auto& [keyspace, fingerprint] : roots) {
    if (readable(keyspace)) total.Add(fingerprint);
  }
  return total;
}

namespace {

class EmptyView final : public rbsr::RangeView {
 public:
  absl::StatusOr<rbsr::Fingerprint> FingerprintOf(const rbsr::NodeId&) override {
    return rbsr::Fingerprint{};
  }
  absl::Status ForEachItem(const rbsr::NodeId&,
                           absl::FunctionRef<void(const rbsr::RangeItem&)>) override {
    return absl::OkStatus();
  }
};

class FilteredSource final : public ReconcileSource {
 public:
  FilteredSource(ReconcileSource& inner, std::shared_ptr<const KeyspaceFilter> readable)
      : inner_(inner), readable_(std::move(readable)) {}

  absl::StatusOr<std::vector<KeyspaceRoot>> Roots() override {
    PEERKV_ASSIGN_OR_RETURN(std::vector<KeyspaceRoot> roots, inner_.Roots());
    std::erase_if(roots, [&](const KeyspaceRoot& root) { return !(*readable_)(root.keyspace); });
    return roots;
  }
  absl::StatusOr<std::unique_ptr<rbsr::RangeView>> View(std::string_view keyspace) override {
    if (!(*readable_)(keyspace)) return std::make_unique<EmptyView>();
    return inner_.View(keyspace);
  }
  absl::StatusOr<std::optional<Record>> Get(std::string_view keyspace,
                                            std::string_view key) override {
    if (!(*readable_)(keyspace)) return std::nullopt;
    return inner_.Get(keyspace, key);
  }
  bool Reconciles(std::string_view keyspace) const override { return (*readable_)(keyspace); }

 private:
  ReconcileSource& inner_;
  const std::shared_ptr<const KeyspaceFilter> readable_;
};

}  // namespace

std::unique_ptr<ReconcileSource> FilteredReconcileSource(
    ReconcileSource& inner, std::shared_ptr<const KeyspaceFilter> readable) {
  return std::make_unique<FilteredSource>(inner, std::move(readable));
}

std::unique_ptr<ReconcileSource> StoreReconcileSource(const Store& store) {
  return std::make_unique<StoreSource>(store);
}

}  // namespace peerkv::replication
