// rpc/watch_hub.cc: the watch change index, wake-ups and windows.
#include "rpc/watch_hub.h"

#include <malloc.h>

#include <algorithm>
#include <optional>

#include "kj/debug.h"

namespace peerkv::rpc {
namespace {

// What a record costs in a batch: its bytes and (a little more than) the
// framing of a Record in a Cap'n Proto message.
constexpr size_t kRecordFramingBytes = 96;
// Index entries one Read looks at (those outside a watch's prefix cost a
// compare each), so that one read stays short on the loop thread.
constexpr size_t kMaxExaminedEntries = 4096;
// What an index entry costs besides its key: two hash/tree nodes.
constexpr size_t kIndexEntryBytes = 128;
constexpr auto kTrimDelay = 1 * kj::SECONDS;

size_t BatchBytes(const Record& r) {
  return r.keyspace.size() + r.key.size() + r.value.size() + kRecordFramingBytes;
}

// Drops trailing records of `changes` until they fit in `max_bytes` (one
// always stays); the cursor goes back to just before the first dropped.
void FitBatch(Changes& changes, size_t max_bytes) {
  size_t bytes = 0;
  for (const Record& r : changes.records) bytes += BatchBytes(r);
  while (changes.records.size() > 1 && bytes > max_bytes) {
    bytes -= BatchBytes(changes.records.back());
    changes.last_seq = changes.records.back().seq - 1;
    changes.records.pop_back();
  }
}

}  // namespace

// --- WatchWindow -------------------------------------------------------------

kj::Promise<void> WatchWindow::Enter(const void* who, bool whole) {
  auto paf = kj::newPromiseAndFulfiller<void>();
  queue_.push_back(Waiter{who, whole, false, kj::mv(paf.fulfiller)});
  Advance();
  return kj::mv(paf.promise);
}

void WatchWindow::Leave(const void* who) {
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->who == who) {
      queue_.erase(it);
      break;
    }
  }
  Advance();
}

size_t WatchWindow::Room() const {
  if (in_flight_ == 0) return kWatchWindowBytes;
  return in_flight_ >= kWatchWindowBytes ? 0 : kWatchWindowBytes - in_flight_;
}

void WatchWindow::Release(size_t bytes) {
  in_flight_ -= std::min(bytes, in_flight_);
  Advance();
}

void WatchWindow::Advance() {
  if (queue_.empty()) return;
  Waiter& front = queue_.front();
  if (front.granted) return;
  const bool room = front.whole ? in_flight_ == 0 : Room() >= kWatchMinRoomBytes;
  if (!room) return;
  front.granted = true;
  front.fulfiller->fulfill();
}

// --- WatchHub ----------------------------------------------------------------

struct WatchHub::Keyspace {
  using BySeq = std::map<uint64_t, std::string>;
  std::string name;
  // Every change to this keyspace after this seq (up to indexed_seq_) is
  // in by_seq; a watch further behind reads the log.
  uint64_t complete_after = 0;
  // The latest change of each key, by seq.
  BySeq by_seq;
  std::unordered_map<std::string_view, BySeq::iterator> by_key;
  size_t bytes = 0;
  int subscriptions = 0;
  // Watches waiting for a change, by prefix, and the prefix lengths there.
  std::unordered_map<std::string, std::unordered_set<Subscription*>, StringHash, std::equal_to<>>
      waiting;
  std::map<size_t, int> waiting_lengths;
};

WatchHub::WatchHub(Store& store, kj::Timer& timer, Limits limits)
    : store_(store), timer_(timer), limits_(limits) {}

WatchHub::~WatchHub() = default;

void WatchHub::Start() {
  // Commits before the listener was added have seqs up to max_seq now.
  absl::MutexLock lock(&mu_);
  enqueued_seq_ = std::max(enqueued_seq_, store_.max_seq());
}

bool WatchHub::OnCommit(const Store::CommitInfo& info) {
  absl::MutexLock lock(&mu_);
  enqueued_seq_ = std::max(enqueued_seq_, info.max_seq);
  if (watched_.empty() || overflow_ || info.changes == nullptr) return false;
  bool queued = false;
  std::string_view last_keyspace;
  bool last_watched = false;
  for (const Store::CommitChange& c : *info.changes) {
    if (c.keyspace != last_keyspace || last_keyspace.empty()) {
      last_keyspace = c.keyspace;
      last_watched = watched_.find(c.keyspace) != watched_.end();
    }
    if (!last_watched) continue;
    pending_bytes_ += c.keyspace.size() + c.key.size() + sizeof(Pending);
    if (pending_bytes_ > limits_.queue_bytes) {
      overflow_ = true;
      pending_.clear();
      pending_.shrink_to_fit();
      pending_bytes_ = 0;
      return true;
    }
    pending_.push_back(Pending{c.seq, std::string(c.keyspace), std::string(c.key)});
    queued = true;
  }
  return queued;
}

void WatchHub::Drain() {
  std::vector<Pending> batch;
  uint64_t through;
  bool overflow;
  {
    absl::MutexLock lock(&mu_);
    batch.swap(pending_);
    pending_bytes_ = 0;
    through = enqueued_seq_;
    overflow = overflow_;
    overflow_ = false;
  }
  if (overflow) {
    // Changes were dropped: the index starts again after them, and every
    // watch looks (in the log) for what it may have missed.
    for (auto& [name, ks] : keyspaces_) {
      ks->by_key.clear();
      ks->by_seq.clear();
      indexed_bytes_ -= ks->bytes;
      ks->bytes = 0;
      ks->complete_after = std::max(ks->complete_after, through);
      WakeAll(*ks);
    }
    indexed_seq_ = std::max(indexed_seq_, through);
    return;
  }
  Keyspace* ks = nullptr;
  for (Pending& p : batch) {
    if (ks == nullptr || ks->name != p.keyspace) {
      auto it = keyspaces_.find(p.keyspace);
      ks = it == keyspaces_.end() ? nullptr : it->second.get();
      if (ks == nullptr) continue;
    }
    if (p.seq <= ks->complete_after) continue;
    Wake(*ks, p.key);
    Index(*ks, p.seq, std::move(p.key));
  }
  indexed_seq_ = std::max(indexed_seq_, through);
  if (indexed_bytes_ > limits_.index_bytes) Evict();
}

void WatchHub::Index(Keyspace& ks, uint64_t seq, std::string key) {
  auto old = ks.by_key.find(key);
  if (old != ks.by_key.end()) {
    // Only the latest change of a key is ever read.
    auto entry = old->second;
    ks.by_key.erase(old);
    ks.by_seq.erase(entry);
  } else {
    const size_t cost = key.size() + kIndexEntryBytes;
    ks.bytes += cost;
    indexed_bytes_ += cost;
  }
  auto [entry, inserted] = ks.by_seq.emplace(seq, std::move(key));
  KJ_ASSERT(inserted, "seq indexed twice", seq);
  ks.by_key.emplace(std::string_view(entry->second), entry);
}

void WatchHub::Evict() {
  // Down to three quarters, from the largest keyspace each time.
  while (indexed_bytes_ > limits_.index_bytes / 4 * 3) {
    Keyspace* largest = nullptr;
    for (auto& [name, ks] : keyspaces_) {
      if (largest == nullptr || ks->bytes > largest->bytes) largest = ks.get();
    }
    if (largest == nullptr || largest->by_seq.empty()) return;
    const size_t target = largest->bytes / 2;
    while (largest->bytes > target && !largest->by_seq.empty()) {
      auto entry = largest->by_seq.begin();
      const size_t cost = entry->second.size() + kIndexEntryBytes;
      largest->complete_after = std::max(largest->complete_after, entry->first);
      largest->by_key.erase(std::string_view(entry->second));
      largest->by_seq.erase(entry);
      largest->bytes -= cost;
      indexed_bytes_ -= cost;
    }
  }
}

void WatchHub::Wake(Keyspace& ks, std::string_view key) {
  for (auto it = ks.waiting_lengths.begin();
       it != ks.waiting_lengths.end() && it->first <= key.size();) {
    const size_t length = it->first;
    ++it;  // the entry may go below
    auto waiting = ks.waiting.find(key.substr(0, length));
    if (waiting == ks.waiting.end()) continue;
    for (Subscription* watch : waiting->second) {
      watch->waiting_->fulfill();
      watch->waiting_ = nullptr;
    }
    ks.waiting.erase(waiting);
    if (--ks.waiting_lengths[length] == 0) ks.waiting_lengths.erase(length);
  }
}

void WatchHub::WakeAll(Keyspace& ks) {
  for (auto& [prefix, watches] : ks.waiting) {
    for (Subscription* watch : watches) {
      watch->waiting_->fulfill();
      watch->waiting_ = nullptr;
    }
  }
  ks.waiting.clear();
  ks.waiting_lengths.clear();
}

std::unique_ptr<WatchHub::Subscription> WatchHub::Subscribe(const std::string& keyspace,
                                                            std::string prefix) {
  auto it = keyspaces_.find(keyspace);
  if (it == keyspaces_.end()) {
    auto ks = std::make_unique<Keyspace>();
    ks->name = keyspace;
    {
      // From now on the listener queues this keyspace's changes; those it
      // saw before are in the log only.
      absl::MutexLock lock(&mu_);
      watched_.insert(keyspace);
      ks->complete_after = enqueued_seq_;
    }
    it = keyspaces_.emplace(keyspace, std::move(ks)).first;
  }
  ++it->second->subscriptions;
  return std::unique_ptr<Subscription>(new Subscription(*this, *it->second, std::move(prefix)));
}

WatchHub::Subscription::~Subscription() { hub_.Unsubscribe(*this); }

void WatchHub::Unwait(Subscription& watch) {
  if (watch.waiting_.get() == nullptr) return;
  watch.waiting_ = nullptr;
  Keyspace& ks = watch.keyspace_;
  auto waiting = ks.waiting.find(watch.prefix_);
  if (waiting == ks.waiting.end()) return;
  waiting->second.erase(&watch);
  if (waiting->second.empty()) {
    ks.waiting.erase(waiting);
    if (--ks.waiting_lengths[watch.prefix_.size()] == 0) {
      ks.waiting_lengths.erase(watch.prefix_.size());
    }
  }
}

void WatchHub::Unsubscribe(Subscription& watch) {
  Unwait(watch);
  Keyspace& ks = watch.keyspace_;
  if (--ks.subscriptions > 0) return;
  {
    absl::MutexLock lock(&mu_);
    watched_.erase(ks.name);
  }
  indexed_bytes_ -= ks.bytes;
  keyspaces_.erase(ks.name);  // destroys `ks`
}

kj::Promise<void> WatchHub::NextChange(Subscription& watch) {
  Unwait(watch);
  auto paf = kj::newPromiseAndFulfiller<void>();
  watch.waiting_ = kj::mv(paf.fulfiller);
  Keyspace& ks = watch.keyspace_;
  auto [entry, inserted] = ks.waiting.try_emplace(watch.prefix_);
  if (inserted) ++ks.waiting_lengths[watch.prefix_.size()];
  entry->second.insert(&watch);
  return kj::mv(paf.promise);
}

absl::StatusOr<Changes> WatchHub::Read(const Subscription& watch, uint64_t after_seq,
                                       size_t limit, size_t max_bytes) {
  const Keyspace& ks = watch.keyspace_;
  if (after_seq < ks.complete_after) {
    // Behind the index: the log, this keyspace's entries only.
    ChangesFilter filter;
    filter.keyspace = ks.name;
    filter.key_prefix = watch.prefix_;
    absl::StatusOr<Changes> changes = store_.ChangesSince(after_seq, limit, max_bytes, filter);
    if (changes.ok()) FitBatch(*changes, max_bytes);
    return changes;
  }
  Changes out;
  out.last_seq = after_seq;
  out.max_seq = indexed_seq_;
  size_t bytes = 0;
  size_t examined = 0;
  for (auto it = ks.by_seq.upper_bound(after_seq); it != ks.by_seq.end(); ++it) {
    if (out.records.size() == limit || examined++ == kMaxExaminedEntries) return out;
    const uint64_t seq = it->first;
    const std::string& key = it->second;
    if (key.starts_with(watch.prefix_)) {
      std::optional<Record> record;
      absl::Status status = store_.GetView(ks.name, key, [&](const RecordView* view) {
        // A newer change to the key that is not indexed yet will be; this
        // one is superseded.
        if (view == nullptr || view->seq != seq) return;
        record = Record{std::string(view->keyspace), std::string(view->key), view->version,
                        view->deleted, std::string(view->value), view->seq};
      });
      if (!status.ok()) return status;
      if (record.has_value()) {
        const size_t size = BatchBytes(*record);
        if (!out.records.empty() && bytes + size > max_bytes) return out;
        bytes += size;
        out.records.push_back(*std::move(record));
      }
    }
    out.last_seq = seq;
  }
  out.last_seq = std::max(after_seq, indexed_seq_);
  return out;
}

void WatchHub::WatchEnded() {
  if (trim_scheduled_) return;
  trim_scheduled_ = true;
  trim_ = timer_.afterDelay(kTrimDelay)
              .then([this] {
                trim_scheduled_ = false;
                malloc_trim(0);
              })
              .eagerlyEvaluate(nullptr);
}

}  // namespace peerkv::rpc
