// store/store_rbsr.cc: the store's side of range-based reconciliation
// (store/range_fingerprint.h): the in-memory roots, the range view a
// reconcile session reads, the format-3 upgrade and the scrub that repairs
// the stored fingerprints from the records. The upkeep itself is in the
// write transaction (GroupTxn::Apply and Commit, store/range_table.h).
// Apart from store.cc so that all of this stays out of the write path.
#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "common/macros.h"
#include "store/codec.h"
#include "store/lmdb_util.h"
#include "store/range_table.h"
#include "store/read_txn.h"
#include "store/store.h"
#include "store/tables.h"
#include "store/write_request.h"

namespace peerkv {
namespace {

using lmdb::Val;
using lmdb::View;

absl::Status CheckNode(const rbsr::NodeId& node) {
  if (node.Valid()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat(
      "node (depth %d, prefix %d) is not a node: depth must be 0..%d and prefix below "
      "16^depth",
      node.depth, node.prefix, rbsr::kMaxDepth));
}

// A keyspace's registers in position order (key order among equal
// positions), with prefix sums, so that any node's fingerprint is two
// binary searches and a subtraction.
class Items {
 public:
  struct Item {
    uint64_t position = 0;
    std::string key;
    Version version;
    bool deleted = false;
    rbsr::Sum256 hash;
  };

  explicit Items(std::vector<Item> items) : items_(std::move(items)) {
    std::sort(items_.begin(), items_.end(), [](const Item& a, const Item& b) {
      if (a.position != b.position) return a.position < b.position;
      return a.key < b.key;
    });
    prefix_.resize(items_.size() + 1);
    for (size_t i = 0; i < items_.size(); ++i) {
      prefix_[i + 1] = prefix_[i];
      prefix_[i + 1].Add(items_[i].hash);
    }
  }

  // Bytes an item costs, for the memory bound.
  static size_t Bytes(size_t key_bytes) {
    return sizeof(Item) + sizeof(rbsr::Sum256) + key_bytes;
  }

  // REQUIRES: node.Valid().
  rbsr::Fingerprint FingerprintOf(const rbsr::NodeId& node) const {
    const auto [first, last] = Range(node);
    rbsr::Fingerprint out;
    out.sum = prefix_[last];
    out.sum.Subtract(prefix_[first]);
    out.count = last - first;
    return out;
  }

  // REQUIRES: node.Valid().
  void ForEachItem(const rbsr::NodeId& node,
                   absl::FunctionRef<void(const rbsr::RangeItem&)> fn) const {
    const auto [first, last] = Range(node);
    for (size_t i = first; i < last; ++i) {
      const Item& item = items_[i];
      fn(rbsr::RangeItem{item.position, item.key, item.version, item.deleted, item.hash});
    }
  }

 private:
  // The items of `node`: [first, second).
  std::pair<size_t, size_t> Range(const rbsr::NodeId& node) const {
    const int shift = 64 - rbsr::kBranchBits * node.depth;
    const uint64_t lo = shift == 64 ? 0 : node.prefix << shift;
    const uint64_t span = shift == 64 ? ~uint64_t{0} : (uint64_t{1} << shift) - 1;
    const uint64_t hi = lo | span;
    auto first = std::lower_bound(items_.begin(), items_.end(), lo,
                                  [](const Item& item, uint64_t p) { return item.position < p; });
    auto last = std::upper_bound(first, items_.end(), hi,
                                 [](uint64_t p, const Item& item) { return p < item.position; });
    return {static_cast<size_t>(first - items_.begin()),
            static_cast<size_t>(last - items_.begin())};
  }

  std::vector<Item> items_;
  std::vector<rbsr::Sum256> prefix_;
};

// The view: the stored levels as read at open, then (from the first
// question they cannot answer) the keyspace's items from one scan.
class StoreRangeView final : public rbsr::RangeView {
 public:
  using Loader = std::function<absl::StatusOr<std::vector<Items::Item>>()>;

  StoreRangeView(const ranges::StoredLevels& levels, Loader loader)
      : buckets_(levels.buckets), loader_(std::move(loader)) {}

  absl::StatusOr<rbsr::Fingerprint> FingerprintOf(const rbsr::NodeId& node) override {
    PEERKV_RETURN_IF_ERROR(CheckNode(node));
    if (items_ == nullptr && node.depth <= ranges::kStoredDepth) {
      // The sum of the stored buckets under the node, so that children
      // always add up to their parent.
      const int below = rbsr::kBranchBits * (ranges::kStoredDepth - node.depth);
      const uint64_t first = node.prefix << below;
      const uint64_t last = (node.prefix + 1) << below;
      rbsr::Fingerprint out;
      for (uint64_t b = first; b < last; ++b) out.Add(buckets_[b]);
      return out;
    }
    PEERKV_RETURN_IF_ERROR(Load());
    return items_->FingerprintOf(node);
  }

  absl::Status ForEachItem(const rbsr::NodeId& node,
                           absl::FunctionRef<void(const rbsr::RangeItem&)> fn) override {
    PEERKV_RETURN_IF_ERROR(CheckNode(node));
    PEERKV_RETURN_IF_ERROR(Load());
    items_->ForEachItem(node, fn);
    return absl::OkStatus();
  }

 private:
  absl::Status Load() {
    if (items_ != nullptr) return absl::OkStatus();
    PEERKV_ASSIGN_OR_RETURN(std::vector<Items::Item> items, loader_());
    items_ = std::make_unique<Items>(std::move(items));
    return absl::OkStatus();
  }

  const std::array<rbsr::Fingerprint, ranges::kBuckets> buckets_;
  const Loader loader_;
  std::unique_ptr<Items> items_;
};

}  // namespace

absl::StatusOr<std::vector<std::pair<std::string, rbsr::Fingerprint>>>
Store::KeyspaceFingerprints() const {
  absl::MutexLock lock(&roots_mu_);
  return std::vector<std::pair<std::string, rbsr::Fingerprint>>(roots_.begin(), roots_.end());
}

absl::StatusOr<std::unique_ptr<rbsr::RangeView>> Store::OpenRangeView(
    std::string_view keyspace) const {
  PEERKV_RETURN_IF_ERROR(ValidateKeyspace(keyspace));
  ranges::StoredLevels levels;
  {
    ReadTxn txn(*this);
    PEERKV_RETURN_IF_ERROR(txn.Begin());
    PEERKV_ASSIGN_OR_RETURN(levels, ranges::ReadLevels(txn.get(), ranges_dbi_, keyspace));
  }
  auto loader = [this, keyspace = std::string(keyspace)]()
      -> absl::StatusOr<std::vector<Items::Item>> {
    std::vector<Items::Item> items;
    size_t bytes = 0;
    ReadTxn txn(*this);
    PEERKV_RETURN_IF_ERROR(txn.Begin());
    lmdb::Cursor cursor;
    PEERKV_RETURN_IF_ERROR(cursor.Open(txn.get(), records_dbi_));
    const std::string match = codec::RecordKey(keyspace, "");
    MDB_val k = Val(match), v;
    int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_SET_RANGE);
    while (rc == MDB_SUCCESS) {
      const std::string_view record_key = View(k);
      if (!record_key.starts_with(match)) break;
      const std::string_view key = record_key.substr(match.size());
      bytes += Items::Bytes(key.size());
      if (bytes > options_.max_range_view_bytes) {
        return absl::ResourceExhaustedError(absl::StrFormat(
            "keyspace %s holds more registers than a range view may hold in memory "
            "(max_range_view_bytes %d, about %d bytes a register plus its key)",
            keyspace, options_.max_range_view_bytes, Items::Bytes(0)));
      }
      PEERKV_ASSIGN_OR_RETURN(const codec::RecordHeader header,
                              codec::DecodeRecordHeader(View(v)));
      PEERKV_ASSIGN_OR_RETURN(const std::string_view value,
                              tables::ReadValue(txn.get(), log_dbi_, record_key, header.seq));
      items.push_back(Items::Item{
          rbsr::KeyPosition(key), std::string(key), header.version, header.deleted,
          rbsr::ItemHash(keyspace, key, header.version, header.deleted, value)});
      rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
    }
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
      return lmdb::Error(rc, "read records for a range view");
    }
    return items;
  };
  return std::unique_ptr<rbsr::RangeView>(
      std::make_unique<StoreRangeView>(levels, std::move(loader)));
}

absl::Status Store::UpgradeRanges(MDB_txn* txn) {
  PEERKV_ASSIGN_OR_RETURN(const ranges::Diff diff, ranges::DiffFromRecords(txn, dbis()));
  PEERKV_RETURN_IF_ERROR(ranges::ApplyDeltas(txn, ranges_dbi_, diff.deltas));
  PEERKV_ASSIGN_OR_RETURN(std::optional<codec::MetaState> state,
                          tables::ReadMetaState(txn, meta_dbi_));
  fingerprint_ = diff.fingerprint;
  if (!state.has_value()) return absl::OkStatus();  // no commit yet, so no records
  state->fingerprint = diff.fingerprint;
  return tables::WriteMetaState(txn, meta_dbi_, *state);
}

absl::Status Store::LoadRoots(MDB_txn* txn) {
  PEERKV_ASSIGN_OR_RETURN(auto roots, ranges::ReadRoots(txn, ranges_dbi_));
  absl::MutexLock lock(&roots_mu_);
  roots_.clear();
  for (auto& [keyspace, root] : roots) roots_.emplace(std::move(keyspace), root);
  return absl::OkStatus();
}

void Store::PublishRanges(const ranges::Deltas& deltas) {
  absl::MutexLock lock(&roots_mu_);
  for (const auto& ks : deltas.keyspaces()) {
    auto it = roots_.find(ks->name);
    if (it == roots_.end()) it = roots_.emplace(ks->name, rbsr::Fingerprint{}).first;
    it->second = ks->total.Applied(it->second);
    if (it->second == rbsr::Fingerprint{}) roots_.erase(it);
  }
}

absl::StatusOr<std::vector<std::string>> Store::ScrubRangeFingerprints() {
  return Scrub(nullptr);
}

absl::StatusOr<std::vector<std::string>> Store::Scrub(const std::atomic<bool>* cancel) {
  ranges::Diff diff;
  uint64_t stored_fingerprint = 0;
  {
    ReadTxn txn(*this);
    PEERKV_RETURN_IF_ERROR(txn.Begin());
    PEERKV_ASSIGN_OR_RETURN(diff, ranges::DiffFromRecords(txn.get(), dbis(), cancel));
    PEERKV_ASSIGN_OR_RETURN(const std::optional<codec::MetaState> state,
                            tables::ReadMetaState(txn.get(), meta_dbi_));
    if (state.has_value()) stored_fingerprint = state->fingerprint;
  }
  const uint64_t fingerprint_delta = diff.fingerprint - stored_fingerprint;
  if (diff.deltas.empty() && fingerprint_delta == 0) return diff.differed;
  absl::Notification finished;
  absl::Status status;
  auto request = std::make_unique<WriteRequest>(WriteRequest{
      writer::RangeRepair{std::move(diff.deltas), fingerprint_delta, [&](absl::Status s) {
                            status = std::move(s);
                            finished.Notify();
                          }}});
  Submit(std::move(request), /*wait_for_room=*/true);
  finished.WaitForNotification();
  PEERKV_RETURN_IF_ERROR(status);
  return diff.differed;
}

void Store::RunOpenScrub() {
  absl::StatusOr<std::vector<std::string>> result = Scrub(&stop_scrub_);
  if (!result.ok() && !absl::IsCancelled(result.status()) &&
      !absl::IsFailedPrecondition(result.status())) {
    Log(absl::StrCat("peerkv: range fingerprint scrub after open failed: ",
                     result.status().ToString()));
  } else if (result.ok() && !result->empty()) {
    Log(absl::StrFormat(
        "peerkv: the stored range fingerprints of keyspace(s) %s did not match their records "
        "(files changed outside peerkv?); repaired",
        absl::StrJoin(*result, ", ")));
  }
  absl::MutexLock lock(&open_scrub_mu_);
  open_scrub_result_ = std::move(result);
  open_scrub_finished_ = true;
}

absl::StatusOr<std::vector<std::string>> Store::WaitForOpenScrub() const {
  absl::MutexLock lock(&open_scrub_mu_);
  open_scrub_mu_.Await(absl::Condition(&open_scrub_finished_));
  return open_scrub_result_;
}

absl::Status Store::RepairRanges(writer::RangeRepair& repair) {
  PEERKV_CHECK(OnWriterThread());
  absl::Status status;
  // Bounded: each attempt at least doubles the map, up to max_map_bytes.
  for (int attempt = 0; attempt < 64; ++attempt) {
    status = TryRepairRanges(repair);
    if (!lmdb::IsMapFull(status)) break;
    const absl::Status grown = GrowMap(0);
    if (!grown.ok()) return grown;
  }
  if (!status.ok()) return status;
  PublishRanges(repair.deltas);
  fingerprint_ += repair.fingerprint_delta;
  return absl::OkStatus();
}

absl::Status Store::TryRepairRanges(const writer::RangeRepair& repair) {
  lmdb::Txn txn;
  PEERKV_RETURN_IF_ERROR(txn.Begin(env_, 0));
  PEERKV_RETURN_IF_ERROR(ranges::ApplyDeltas(txn.get(), ranges_dbi_, repair.deltas));
  PEERKV_ASSIGN_OR_RETURN(std::optional<codec::MetaState> state,
                          tables::ReadMetaState(txn.get(), meta_dbi_));
  if (state.has_value()) {
    state->fingerprint += repair.fingerprint_delta;
    PEERKV_RETURN_IF_ERROR(tables::WriteMetaState(txn.get(), meta_dbi_, *state));
  }
  return txn.Commit();
}

}  // namespace peerkv
