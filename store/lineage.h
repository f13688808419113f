// store/lineage.h: what a store remembers of its own history, so that it
// can tell a peer's claim about its writes from evidence that its data
// directory was restored from an older copy. Each time a store opens, its
// clock jumps from the persisted high-water mark of the previous run to the
// current time: no version and no watermark of this replica ever takes a
// value strictly between the two (a ClockGap). A peer claiming a watermark
// for this replica inside a gap saw writes of a life this directory no
// longer has. Plain value types and their byte layout; no LMDB.
#ifndef PEERKV_STORE_LINEAGE_H_
#define PEERKV_STORE_LINEAGE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace peerkv {

// Clock readings (HLC) strictly between `after` and `before` were never
// handed out by this replica id in this directory's history.
struct ClockGap {
  uint64_t after = 0;
  uint64_t before = 0;
  // The store's max seq when it opened: its later writes have greater seqs.
  uint64_t seq = 0;
  bool Contains(uint64_t hlc) const { return hlc > after && hlc < before; }
  friend bool operator==(const ClockGap&, const ClockGap&) = default;
};

// One open of the store: the random nonce it drew (Store::open_nonce, told
// to peers in hello and with every pull answer) and the store's max seq
// when it opened. A peer's checkpoint names the open whose log it pulled: a
// nonce this directory never drew, or a checkpoint beyond the seq at which
// the next open began, shows a life of the log the directory lost.
struct OpenMark {
  uint64_t nonce = 0;
  uint64_t seq = 0;
  friend bool operator==(const OpenMark&, const OpenMark&) = default;
};

// The store meta "lineage": the replica id it belongs to, the most recent
// gaps (oldest first, at most kMaxClockGaps: older ones are forgotten, so a
// restore from a copy older than that many restarts is caught only by the
// other checks), and the ids this directory used before forks (never used
// again).
struct Lineage {
  static constexpr size_t kMaxClockGaps = 256;
  static constexpr size_t kMaxRetiredIds = 256;
  uint64_t replica_id = 0;
  std::vector<ClockGap> gaps;
  std::vector<uint64_t> retired_ids;
  // The most recent opens of this id (oldest first, at most kMaxOpens);
  // opens_dropped: older ones were forgotten (an unknown nonce then proves
  // nothing).
  static constexpr size_t kMaxOpens = 256;
  std::vector<OpenMark> opens;
  bool opens_dropped = false;
  void AddOpen(OpenMark open);
  // Other replicas' ids that a peer said were retired by a fork (their
  // directories restored): watermarks for them are not trusted (a peer
  // that pulled the restored life before the fork claims that id's writes
  // of the lost life too), so none is kept or claimed for them. Most recent
  // last, at most kMaxForgottenIds.
  static constexpr size_t kMaxForgottenIds = 1024;
  std::vector<uint64_t> forgotten_ids;
  // Appends a gap, dropping the oldest beyond kMaxClockGaps. Empty gaps
  // (before <= after + 1) are not kept.
  void AddGap(ClockGap gap);
  friend bool operator==(const Lineage&, const Lineage&) = default;
};

// The open in which this directory's current replica id began (a new
// store, a fork's switch, an id re-derived at open), and the clock floor
// the id's *second* open found (meta "first_open", apart from "lineage" so
// that an older peerkv reads the store as before). Every copy of the
// directory that runs this id holds the first open and its session's data
// up to where the copy was taken, so the second open of the id, in any
// history of the directory, is either the restored copy's open or an
// ancestor of it: every write of this id at or below its floor was made in
// the history every copy shares (and every later write, of any life, is
// above it). What a restore fork keeps of its old id (Store::Fork).
struct FirstOpen {
  uint64_t replica_id = 0;
  uint64_t nonce = 0;
  // The id's second open found the clock at this (its persisted mark, or
  // the previous open's raised clock); meaningful once next_open_seen.
  uint64_t next_open_floor = 0;
  bool next_open_seen = false;
  friend bool operator==(const FirstOpen&, const FirstOpen&) = default;
};
// replica_id(8) nonce(8) next_open_floor(8) next_open_seen(8), little-endian.
std::string EncodeFirstOpen(const FirstOpen& first);
// DataLoss unless `stored` is what EncodeFirstOpen writes.
absl::StatusOr<FirstOpen> DecodeFirstOpen(std::string_view stored);

std::string EncodeLineage(const Lineage& lineage);
// DataLoss if `stored` is not what EncodeLineage writes (or exceeds the
// bounds above).
absl::StatusOr<Lineage> DecodeLineage(std::string_view stored);

}  // namespace peerkv

#endif  // PEERKV_STORE_LINEAGE_H_
