// replication/reconcile_store.cc: the ReconcileSource a replica serves and
// reconciles from: its store's range fingerprints and records.
#include <algorithm>

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

// ---- what was refused ----

void RefusedMemory::Note(const std::vector<Record>& offered, const MergeResult& merged) {
  Remember(offered, merged.refused);
}

void RefusedMemory::NoteWithStaleTombstones(const std::vector<Record>& offered,
                                            const MergeResult& merged) {
  Remember(offered, merged.refused);
  Remember(offered, merged.stale_tombstones);
}

void RefusedMemory::Remember(const std::vector<Record>& offered,
                             const std::vector<RefusedRecord>& refusals) {
  if (refusals.empty()) return;
  std::map<std::pair<std::string_view, std::string_view>, const Record*> by_key;
  for (const Record& r : offered) by_key[{r.keyspace, r.key}] = &r;
  for (const RefusedRecord& refused : refusals) {
    const absl::StatusCode code = refused.reason.code();
    if (code == absl::StatusCode::kResourceExhausted || code == absl::StatusCode::kUnavailable ||
        code == absl::StatusCode::kInternal) {
      continue;
    }
    auto found = by_key.find({refused.keyspace, refused.key});
    if (found == by_key.end() || found->second->version != refused.version) continue;
    const Record& r = *found->second;
    auto& keys = entries_[r.keyspace];
    auto [it, fresh] = keys.try_emplace(r.key);
    if (!fresh && !(it->second.version < r.version)) continue;
    it->second = Entry{r.version, r.deleted,
                       rbsr::ItemHash(r.keyspace, r.key, r.version, r.deleted, r.value)};
    if (fresh) order_.emplace_back(r.keyspace, r.key);
  }
  while (order_.size() > kMaxEntries) {
    auto ks = entries_.find(order_.front().first);
    if (ks != entries_.end()) {
      ks->second.erase(order_.front().second);
      if (ks->second.empty()) entries_.erase(ks);
    }
    order_.pop_front();
  }
}

void RefusedMemory::Clear() {
  entries_.clear();
  order_.clear();
}

namespace {

// One register the overlay shows instead of what is held.
struct Substitute {
  uint64_t position = 0;
  std::string key;
  std::optional<rbsr::Sum256> held;  // the hash of the register held, if any
  RefusedMemory::Entry shown;
};

class OverlayView final : public rbsr::RangeView {
 public:
  OverlayView(std::unique_ptr<rbsr::RangeView> inner, std::vector<Substitute> substitutes)
      : inner_(std::move(inner)), substitutes_(std::move(substitutes)) {}

  absl::StatusOr<rbsr::Fingerprint> FingerprintOf(const rbsr::NodeId& node) override {
    PEERKV_ASSIGN_OR_RETURN(rbsr::Fingerprint fp, inner_->FingerprintOf(node));
    for (const Substitute& s : substitutes_) {
      if (!node.Contains(s.position)) continue;
      if (s.held.has_value()) fp.Remove(*s.held);
      fp.Add(s.shown.hash);
    }
    return fp;
  }
  absl::Status ForEachItem(const rbsr::NodeId& node,
                           absl::FunctionRef<void(const rbsr::RangeItem&)> fn) override {
    std::vector<const Substitute*> here;
    for (const Substitute& s : substitutes_) {
      if (node.Contains(s.position)) here.push_back(&s);
    }
    if (here.empty()) return inner_->ForEachItem(node, fn);
    struct Owned {
      uint64_t position;
      std::string key;
      Version version;
      bool deleted;
      rbsr::Sum256 hash;
    };
    std::vector<Owned> items;
    PEERKV_RETURN_IF_ERROR(inner_->ForEachItem(node, [&](const rbsr::RangeItem& item) {
      for (const Substitute* s : here) {
        if (s->key == item.key) return;  // shown below instead
      }
      items.push_back({item.position, std::string(item.key), item.version, item.deleted, item.hash});
    }));
    for (const Substitute* s : here) {
      items.push_back({s->position, s->key, s->shown.version, s->shown.deleted, s->shown.hash});
    }
    std::sort(items.begin(), items.end(), [](const Owned& a, const Owned& b) {
      return a.position != b.position ? a.position < b.position : a.key < b.key;
    });
    for (const Owned& o : items) {
      fn(rbsr::RangeItem{o.position, o.key, o.version, o.deleted, o.hash});
    }
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<rbsr::RangeView> inner_;
  const std::vector<Substitute> substitutes_;
};

class OverlaySource final : public ReconcileSource {
 public:
  OverlaySource(ReconcileSource& inner, const RefusedMemory& memory)
      : inner_(inner), memory_(memory) {}

  absl::StatusOr<std::vector<KeyspaceRoot>> Roots() override {
    PEERKV_ASSIGN_OR_RETURN(std::vector<KeyspaceRoot> roots, inner_.Roots());
    if (memory_.empty()) return roots;
    for (const auto& [keyspace, keys] : memory_.entries()) {
      if (!inner_.Reconciles(keyspace)) continue;
      PEERKV_ASSIGN_OR_RETURN(std::vector<Substitute> subs, Substitutes(keyspace));
      if (subs.empty()) continue;
      auto it = std::lower_bound(
          roots.begin(), roots.end(), keyspace,
          [](const KeyspaceRoot& r, const std::string& k) { return r.keyspace < k; });
      if (it == roots.end() || it->keyspace != keyspace) {
        it = roots.insert(it, KeyspaceRoot{keyspace, rbsr::Fingerprint{}});
      }
      for (const Substitute& s : subs) {
        if (s.held.has_value()) it->fingerprint.Remove(*s.held);
        it->fingerprint.Add(s.shown.hash);
      }
    }
    return roots;
  }
  absl::StatusOr<std::unique_ptr<rbsr::RangeView>> View(std::string_view keyspace) override {
    PEERKV_ASSIGN_OR_RETURN(std::unique_ptr<rbsr::RangeView> view, inner_.View(keyspace));
    if (!inner_.Reconciles(keyspace)) return view;
    PEERKV_ASSIGN_OR_RETURN(std::vector<Substitute> subs, Substitutes(keyspace));
    if (subs.empty()) return view;
    return std::make_unique<OverlayView>(std::move(view), std::move(subs));
  }
  absl::StatusOr<std::optional<Record>> Get(std::string_view keyspace,
                                            std::string_view key) override {
    return inner_.Get(keyspace, key);
  }
  bool Reconciles(std::string_view keyspace) const override {
    return inner_.Reconciles(keyspace);
  }

 private:
  // The remembered registers of `keyspace` newer than what is held.
  absl::StatusOr<std::vector<Substitute>> Substitutes(std::string_view keyspace) {
    std::vector<Substitute> out;
    auto ks = memory_.entries().find(keyspace);
    if (ks == memory_.entries().end()) return out;
    for (const auto& [key, entry] : ks->second) {
      PEERKV_ASSIGN_OR_RETURN(std::optional<Record> held, inner_.Get(keyspace, key));
      if (held.has_value() && !(held->version < entry.version)) continue;
      Substitute s{rbsr::KeyPosition(key), key, std::nullopt, entry};
      if (held.has_value()) {
        s.held = rbsr::ItemHash(keyspace, key, held->version, held->deleted, held->value);
      }
      out.push_back(std::move(s));
    }
    return out;
  }

  ReconcileSource& inner_;
  const RefusedMemory& memory_;
};

}  // namespace

std::unique_ptr<ReconcileSource> RefusedOverlay(ReconcileSource& inner,
                                                const RefusedMemory& memory) {
  return std::make_unique<OverlaySource>(inner, memory);
}

std::unique_ptr<ReconcileSource> FilteredReconcileSource(
    ReconcileSource& inner, std::shared_ptr<const KeyspaceFilter> readable) {
  return std::make_unique<FilteredSource>(inner, std::move(readable));
}

std::unique_ptr<ReconcileSource> StoreReconcileSource(const Store& store) {
  return std::make_unique<StoreSource>(store);
}

}  // namespace peerkv::replication
