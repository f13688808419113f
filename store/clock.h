// store/clock.h: wall clocks and the hybrid logical clock (HLC) that stamps
// versions. The HLC never goes backwards, follows physical time when it can,
// and observes remote readings so that a write made after seeing another
// replica's write always orders after it, even when wall clocks disagree.
#ifndef PEERKV_STORE_CLOCK_H_
#define PEERKV_STORE_CLOCK_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace peerkv {

// A source of physical time. Injected so that tests and the simulation can
// control time; production uses SystemWallClock(). Thread-safe.
class WallClock {
 public:
  virtual ~WallClock() = default;
  // Milliseconds since the Unix epoch.
  virtual int64_t NowMillis() const = 0;
};

// The operating system's real-time clock. Lives for the whole process.
const WallClock& SystemWallClock();

// Another clock shifted by a fixed offset: how `--clock-offset-ms` makes a
// replica's clock wrong on purpose in tests. Borrows `base`, which must
// outlive it.
class OffsetWallClock : public WallClock {
 public:
  OffsetWallClock(const WallClock& base, int64_t offset_ms)
      : base_(base), offset_ms_(offset_ms) {}
  int64_t NowMillis() const override { return base_.NowMillis() + offset_ms_; }

 private:
  const WallClock& base_;
  const int64_t offset_ms_;
};

// A clock whose time is set by hand: tests and the simulation.
class ManualWallClock : public WallClock {
 public:
  explicit ManualWallClock(int64_t now_ms) : now_ms_(now_ms) {}
  int64_t NowMillis() const override { return now_ms_.load(); }
  void Set(int64_t now_ms) { now_ms_.store(now_ms); }
  void Advance(int64_t delta_ms) { now_ms_.fetch_add(delta_ms); }

 private:
  std::atomic<int64_t> now_ms_;
};

// What this replica believes of its own clock, from the physical times its
// peers told in hello (see PeerClockOffsets). Offsets are "real time minus
// this replica's wall clock", so positive means this clock is behind.
struct ClockEstimate {
  // Peers the estimate rests on; 0: nothing is known (no correction).
  uint32_t peers = 0;
  // Estimated real time minus local wall time.
  int64_t real_offset_ms = 0;
};

// The clock offsets of the peers met recently, each "peer's wall clock
// minus ours", and what they say about our own clock. Not thread-safe (the
// engine keeps it on its executor).
//
// The rule: real time is the median of every clock we know, ours included
// (ours counts as offset 0), with the lower of the two middle values when
// the count is even. So one wrong clock among three or more is outvoted
// wherever it is; with one peer (two clocks) nobody can tell who is right,
// and both sides follow the slower clock: the fast one corrects itself back
// and the slow one keeps its time. That never makes anyone stamp versions
// ahead of the clocks it met (a version ahead wins conflicts for as long as
// it is ahead; one behind only loses the conflicts it is concurrent with),
// at the price that a slow clock met alone stays slow (its writes then
// look old, and it still holds back writes from real time until it meets a
// second peer). With no sample in the window the engine keeps the last
// estimate; a peer still linked keeps its sample fresh.
class PeerClockOffsets {
 public:
  // Samples older than this are not used.
  static constexpr int64_t kWindowMs = 10 * 60'000;
  // Peers remembered at most; the stalest is forgotten beyond.
  static constexpr size_t kMaxPeers = 1024;

  // The latest sample from `peer`, taken at local wall time `now_ms`.
  void Note(uint64_t peer, int64_t offset_ms, int64_t now_ms);
  void Forget(uint64_t peer) { samples_.erase(peer); }
  // The estimate from the samples of the last kWindowMs.
  ClockEstimate Estimate(int64_t now_ms) const;

 private:
  struct Sample {
    int64_t offset_ms = 0;
    int64_t taken_ms = 0;
  };
  std::map<uint64_t, Sample> samples_;
};

// A peer's clock offset from one hello exchange. The dialling side knows
// when it sent the hello (`sent_ms`) and got the answer (`received_ms`), and
// the answer carries the peer's wall time `remote_ms`, read in between: the
// offset is remote_ms minus the midpoint, wrong by at most half the round
// trip. Times are local wall-clock milliseconds.
struct ClockSample {
  int64_t offset_ms = 0;
  // -1: not known (the answering side, see AnswererSample).
  int64_t rtt_ms = -1;
};
ClockSample DiallerSample(int64_t sent_ms, int64_t received_ms, int64_t remote_ms);
// The answering side only has the request: remote_ms was read when the peer
// sent its hello, `received_ms` is when it arrived here, so the offset is
// underestimated by the one-way delay (plus queueing on our side), which it
// cannot measure: on a LAN a millisecond or two, small against any skew
// bound.
ClockSample AnswererSample(int64_t received_ms, int64_t remote_ms);

// Hybrid logical clock. Thread-safe.
class HybridClock {
 public:
  // Starts at `floor`: readings are always greater than it (the persisted
  // high-water mark of the previous run). Borrows `wall`.
  HybridClock(const WallClock& wall, uint64_t floor);

  HybridClock(const HybridClock&) = delete;
  HybridClock& operator=(const HybridClock&) = delete;

  // A reading strictly greater than every earlier Now() result and every
  // observed remote reading, and at least the current stamping time (the
  // wall clock plus the correction, see SetEstimate).
  uint64_t Now();

  // Advances the clock to at least `remote_hlc`. Callers check the skew
  // first (CheckSkew) so a wrong remote clock is never followed: a reading
  // observed is then at most max_skew ahead of estimated real time, and so
  // is every Now() after it (the Observe bound).
  void Observe(uint64_t remote_hlc);

  // OK if `remote_hlc` is at most `max_skew_ms` ahead of estimated real
  // time (the wall clock plus the estimate's offset, see SetEstimate);
  // otherwise OutOfRange saying by how much it is ahead. The one place the
  // skew rule is decided (Store::CheckSkew, the engine and the quarantine
  // call it).
  absl::Status CheckSkew(uint64_t remote_hlc, int64_t max_skew_ms) const;

  // What the peers say of this clock. The skew check measures from
  // estimated real time from now on; and if this clock is ahead of it by
  // more than max_skew_ms / 2, readings are stamped from the corrected
  // time (wall + real_offset) instead. A clock that is behind is not moved
  // forward for stamping (see PeerClockOffsets). Readings stay monotonic:
  // after a correction back, Now() counts up logically from the last
  // reading until the corrected time passes it. Returns the stamping
  // correction now in force (0 or negative).
  int64_t SetEstimate(const ClockEstimate& estimate, int64_t max_skew_ms);
  ClockEstimate estimate() const;
  int64_t stamp_correction_ms() const { return stamp_correction_ms_.load(); }

  // Estimated real time, and the time readings are stamped from, in ms.
  int64_t RealNowMillis() const;
  int64_t StampNowMillis() const;

  // Starts again from `floor`, below readings already handed out: only for
  // a fork to a new replica id (whose versions nobody has seen), when the
  // persisted mark is far ahead of real time (Store::Fork).
  void Reset(uint64_t floor);

  // The greatest reading handed out or observed: the high-water mark to
  // persist.
  uint64_t Last() const;

  const WallClock& wall() const { return wall_; }

 private:
  const WallClock& wall_;
  std::atomic<int64_t> stamp_correction_ms_{0};
  std::atomic<int64_t> real_offset_ms_{0};
  std::atomic<uint32_t> estimate_peers_{0};
  mutable absl::Mutex mu_;
  uint64_t last_ ABSL_GUARDED_BY(mu_);
};

}  // namespace peerkv

#endif  // PEERKV_STORE_CLOCK_H_
