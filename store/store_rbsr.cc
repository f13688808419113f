// store/store_rbsr.cc: the store's side of range-based reconciliation
// (store/range_fingerprint.h): the keyspaces' root fingerprints and the
// range view a reconcile session reads. Apart from store.cc so that the
// reconcile reads stay out of the write path.
#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/macros.h"
#include "store/codec.h"
#include "store/lmdb_util.h"
#include "store/read_txn.h"
#include "store/store.h"
#include "store/tables.h"

namespace peerkv {
namespace {

using lmdb::Val;
using lmdb::View;

// A keyspace's registers in position order (key order among equal
// positions), with prefix sums, so that any node's fingerprint is two
// binary searches and a subtraction.
class ItemsView final : public rbsr::RangeView {
 public:
  struct Item {
    uint64_t position = 0;
    std::string key;
    Version version;
    bool deleted = false;
    rbsr::Sum256 hash;
  };

  explicit ItemsView(std::vector<Item> items) : items_(std::move(items)) {
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

  absl::StatusOr<rbsr::Fingerprint> FingerprintOf(const rbsr::NodeId& node) override {
    PEERKV_ASSIGN_OR_RETURN(const auto range, Range(node));
    rbsr::Fingerprint out;
    out.sum = prefix_[range.second];
    out.sum.Subtract(prefix_[range.first]);
    out.count = range.second - range.first;
    return out;
  }

  absl::Status ForEachItem(const rbsr::NodeId& node,
                           absl::FunctionRef<void(const rbsr::RangeItem&)> fn) override {
    PEERKV_ASSIGN_OR_RETURN(const auto range, Range(node));
    for (size_t i = range.first; i < range.second; ++i) {
      const Item& item = items_[i];
      fn(rbsr::RangeItem{item.position, item.key, item.version, item.deleted, item.hash});
    }
    return absl::OkStatus();
  }

 private:
  // The items of `node`: [first, second).
  absl::StatusOr<std::pair<size_t, size_t>> Range(const rbsr::NodeId& node) const {
    if (!node.Valid()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "node (depth %d, prefix %d) is not a node: depth must be 0..%d and prefix below "
          "16^depth",
          node.depth, node.prefix, rbsr::kMaxDepth));
    }
    const int shift = 64 - rbsr::kBranchBits * node.depth;
    const uint64_t lo = shift == 64 ? 0 : node.prefix << shift;
    const uint64_t span_mask = shift == 64 ? ~uint64_t{0} : (shift == 0 ? 0 : (uint64_t{1} << shift) - 1);
    const uint64_t hi = lo | span_mask;
    auto first = std::lower_bound(items_.begin(), items_.end(), lo,
                                  [](const Item& item, uint64_t p) { return item.position < p; });
    auto last = std::upper_bound(items_.begin(), items_.end(), hi,
                                 [](uint64_t p, const Item& item) { return p < item.position; });
    return std::make_pair(static_cast<size_t>(first - items_.begin()),
                          static_cast<size_t>(last - items_.begin()));
  }

  std::vector<Item> items_;
  std::vector<rbsr::Sum256> prefix_;
};

// Bytes an item costs a view, for the memory bound.
size_t ItemBytes(size_t key_bytes) { return sizeof(ItemsView::Item) + sizeof(rbsr::Sum256) + key_bytes; }

}  // namespace

absl::StatusOr<std::vector<std::pair<std::string, rbsr::Fingerprint>>>
Store::KeyspaceFingerprints() const {
  std::vector<std::pair<std::string, rbsr::Fingerprint>> out;
  ReadTxn txn(*this);
  PEERKV_RETURN_IF_ERROR(txn.Begin());
  lmdb::Cursor cursor;
  PEERKV_RETURN_IF_ERROR(cursor.Open(txn.get(), records_dbi_));
  MDB_val k, v;
  int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_FIRST);
  while (rc == MDB_SUCCESS) {
    std::string_view keyspace, key;
    PEERKV_RETURN_IF_ERROR(codec::SplitRecordKey(View(k), &keyspace, &key));
    PEERKV_ASSIGN_OR_RETURN(const codec::RecordHeader header,
                            codec::DecodeRecordHeader(View(v)));
    PEERKV_ASSIGN_OR_RETURN(const std::string_view value,
                            tables::ReadValue(txn.get(), log_dbi_, View(k), header.seq));
    if (out.empty() || out.back().first != keyspace) out.emplace_back(std::string(keyspace), rbsr::Fingerprint{});
    out.back().second.Add(rbsr::ItemHash(keyspace, key, header.version, header.deleted, value));
    rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
  }
  if (rc != MDB_NOTFOUND) return lmdb::Error(rc, "read records for fingerprints");
  return out;
}

absl::StatusOr<std::unique_ptr<rbsr::RangeView>> Store::OpenRangeView(
    std::string_view keyspace) const {
  PEERKV_RETURN_IF_ERROR(ValidateKeyspace(keyspace));
  std::vector<ItemsView::Item> items;
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
    PEERKV_ASSIGN_OR_RETURN(const codec::RecordHeader header,
                            codec::DecodeRecordHeader(View(v)));
    PEERKV_ASSIGN_OR_RETURN(const std::string_view value,
                            tables::ReadValue(txn.get(), log_dbi_, record_key, header.seq));
    bytes += ItemBytes(key.size());
    if (bytes > options_.max_range_view_bytes) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "keyspace %s holds more registers than a range view may hold in memory "
          "(max_range_view_bytes %d, about %d bytes a register plus its key)",
          keyspace, options_.max_range_view_bytes, ItemBytes(0)));
    }
    items.push_back(ItemsView::Item{rbsr::KeyPosition(key), std::string(key), header.version,
                                    header.deleted,
                                    rbsr::ItemHash(keyspace, key, header.version,
                                                   header.deleted, value)});
    rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
  }
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) return lmdb::Error(rc, "read records for view");
  return std::unique_ptr<rbsr::RangeView>(std::make_unique<ItemsView>(std::move(items)));
}

}  // namespace peerkv
