// replication/watermark_channel.h: the watermark state of one connection
// between two replicas. Each side tells the other only the entries that
// grew since it last told it (a delta), so each side keeps what it sent and
// what it was told; this class is that state, and the one place the bound
// on origins per connection is applied. Plain values (no kj, no capnp): the
// TCP transport (rpc/peer_links.cc, rpc/replica_service.cc) keeps one per
// link end.
//
// Deltas assume every message sent arrives, in any order (the join is
// order-free), or the connection ends with its channel: true of a TCP
// connection, not of a transport that drops single messages on a live link.
#ifndef PEERKV_REPLICATION_WATERMARK_CHANNEL_H_
#define PEERKV_REPLICATION_WATERMARK_CHANNEL_H_

#include <cstddef>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "store/watermarks.h"

namespace peerkv::replication {

// Origins a connection may tell us watermarks for: far more replicas than
// a user or a group of friends has, few enough to bound the memory.
inline constexpr size_t kMaxWatermarks = 4096;

class WatermarkChannel {
 public:
  // The entries of `current` above what this side told the other so far:
  // the delta to send. Counts them as told.
  Watermarks Outgoing(const Watermarks& current);

  // A delta the other side sent in message `what` ("pull", "nudge", ...):
  // `entries` is how many entries the message carries, and `decode` reads
  // them (called only if `entries` is within the bound). On success,
  // everything the other side told so far (the join of its deltas). A
  // message of more than kMaxWatermarks entries, or one that would take
  // the origins known on this connection past kMaxWatermarks, is refused
  // with InvalidArgument naming the limit, and nothing of it is kept.
  absl::StatusOr<const Watermarks*> Incoming(std::string_view what, size_t entries,
                                             absl::FunctionRef<Watermarks()> decode);

  // What this side told, and was told, on the connection so far.
  const Watermarks& sent() const { return sent_; }
  const Watermarks& received() const { return received_; }

 private:
  Watermarks sent_;
  Watermarks received_;
};

}  // namespace peerkv::replication

#endif  // PEERKV_REPLICATION_WATERMARK_CHANNEL_H_
