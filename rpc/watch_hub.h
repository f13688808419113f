// rpc/watch_hub.h: what the server's watches share on its loop thread: an
// in-memory index of the changes to each watched keyspace, fed by the
// store's commit listener, so that a commit wakes only the watches whose
// keyspace and prefix it touched and a woken watch reads only its own
// keyspace's changes; and each connection's window of watch bytes in
// flight, so that watchers that stop reading cost the server a bounded
// amount of memory. Internal to rpc/.
#ifndef PEERKV_RPC_WATCH_HUB_H_
#define PEERKV_RPC_WATCH_HUB_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kj/async.h"
#include "kj/refcount.h"
#include "kj/timer.h"
#include "store/store.h"

namespace peerkv::rpc {

// Bytes of watch batches one connection may have sent that its watchers
// have not answered yet: all its watches share it. A single record larger
// than this is sent alone, when nothing else is in flight.
inline constexpr size_t kWatchWindowBytes = size_t{256} << 10;
// A watch builds a batch only when at least this much of the window is
// free (or all of it), so that a full window does not turn into a stream
// of tiny batches.
inline constexpr size_t kWatchMinRoomBytes = size_t{64} << 10;
// Bytes the change index may hold for all watched keyspaces together; past
// it the oldest entries of the largest keyspace go, and its watches that
// are behind read the log instead.
inline constexpr size_t kWatchIndexBytes = size_t{32} << 20;
// Bytes of changes the commit listener may queue for the loop thread; past
// it (a loop that fell far behind) the index forgets and every watch reads
// the log.
inline constexpr size_t kWatchQueueBytes = size_t{16} << 20;

// One connection's window (see kWatchWindowBytes). Watches take turns in
// arrival order: a watch waiting for the whole window is not overtaken.
class WatchWindow final : public kj::Refcounted {
 public:
  // Resolves when it is `who`'s turn and there is room: at least
  // kWatchMinRoomBytes free, or, with `whole`, nothing in flight. The turn
  // lasts until Leave(who).
  kj::Promise<void> Enter(const void* who, bool whole);
  // Ends `who`'s turn, or takes it out of the queue (safe if absent).
  void Leave(const void* who);
  // During a turn: the bytes a batch may carry.
  size_t Room() const;
  bool Idle() const { return in_flight_ == 0; }
  void Charge(size_t bytes) { in_flight_ += bytes; }
  void Release(size_t bytes);
  size_t in_flight() const { return in_flight_; }

 private:
  struct Waiter {
    const void* who;
    bool whole;
    bool granted = false;
    kj::Own<kj::PromiseFulfiller<void>> fulfiller;
  };
  void Advance();

  std::deque<Waiter> queue_;
  size_t in_flight_ = 0;
};

class WatchHub {
 public:
  struct Limits {
    size_t index_bytes = kWatchIndexBytes;
    size_t queue_bytes = kWatchQueueBytes;
  };
  // `timer` paces returning freed memory to the system. Tests lower the
  // limits.
  WatchHub(Store& store, kj::Timer& timer, Limits limits);
  WatchHub(Store& store, kj::Timer& timer) : WatchHub(store, timer, Limits{}) {}
  ~WatchHub();
  WatchHub(const WatchHub&) = delete;
  WatchHub& operator=(const WatchHub&) = delete;

  // Call once the commit listener that feeds OnCommit is added.
  void Start();
  // Any thread (the store's commit listener): queues the changes of the
  // commit that fall in watched keyspaces. True if Drain() has work.
  bool OnCommit(const Store::CommitInfo& info);
  // Loop thread: indexes what commits reported and wakes the watches they
  // concern.
  void Drain();

  struct Keyspace;
  // One watch's registration: while it lives, its keyspace is indexed.
  class Subscription {
   public:
    ~Subscription();
    Subscription(const Subscription&) = delete;
    Subscription& operator=(const Subscription&) = delete;

   private:
    friend class WatchHub;
    Subscription(WatchHub& hub, Keyspace& keyspace, std::string prefix)
        : hub_(hub), keyspace_(keyspace), prefix_(std::move(prefix)) {}
    WatchHub& hub_;
    Keyspace& keyspace_;
    const std::string prefix_;
    kj::Own<kj::PromiseFulfiller<void>> waiting_;
  };
  std::unique_ptr<Subscription> Subscribe(const std::string& keyspace, std::string prefix);

  // The watch's changes after `after_seq`, in seq order, the latest of each
  // key: at most `limit` records and `max_bytes` of them (always one if any
  // is due). Reads the index, or the log where the index does not reach.
  absl::StatusOr<Changes> Read(const Subscription& watch, uint64_t after_seq, size_t limit,
                               size_t max_bytes);
  // Resolves once a commit changes a key of the watch's keyspace and
  // prefix (after the last Read found nothing).
  kj::Promise<void> NextChange(Subscription& watch);

  // A watch ended: freed memory goes back to the system shortly (glibc
  // keeps freed heap pages otherwise).
  void WatchEnded();

  // What the index holds now (for tests).
  size_t indexed_bytes() const { return indexed_bytes_; }

 private:
  struct Pending {
    uint64_t seq;
    std::string keyspace;
    std::string key;
  };
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };

  void Index(Keyspace& ks, uint64_t seq, std::string key);
  void Wake(Keyspace& ks, std::string_view key);
  void WakeAll(Keyspace& ks);
  void Unwait(Subscription& watch);
  void Evict();
  void Unsubscribe(Subscription& watch);

  Store& store_;
  kj::Timer& timer_;
  const Limits limits_;

  // Shared with the commit listener.
  absl::Mutex mu_;
  std::unordered_set<std::string, StringHash, std::equal_to<>> watched_ ABSL_GUARDED_BY(mu_);
  std::vector<Pending> pending_ ABSL_GUARDED_BY(mu_);
  size_t pending_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool overflow_ ABSL_GUARDED_BY(mu_) = false;
  // max_seq of the last commit the listener saw.
  uint64_t enqueued_seq_ ABSL_GUARDED_BY(mu_) = 0;

  // Loop thread.
  std::unordered_map<std::string, std::unique_ptr<Keyspace>, StringHash, std::equal_to<>>
      keyspaces_;
  // Every change up to this seq to a watched keyspace is in the index (or
  // below its keyspace's complete_after).
  uint64_t indexed_seq_ = 0;
  size_t indexed_bytes_ = 0;
  kj::Promise<void> trim_ = nullptr;
  bool trim_scheduled_ = false;
};

}  // namespace peerkv::rpc

#endif  // PEERKV_RPC_WATCH_HUB_H_
