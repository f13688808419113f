// store/clock.h: wall clocks and the hybrid logical clock (HLC) that stamps
// versions. The HLC never goes backwards, follows physical time when it can,
// and observes remote readings so that a write made after seeing another
// replica's write always orders after it, even when wall clocks disagree.
#ifndef PEERKV_STORE_CLOCK_H_
#define PEERKV_STORE_CLOCK_H_

#include <atomic>
#include <cstdint>

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

// Hybrid logical clock. Thread-safe.
class HybridClock {
 public:
  // Starts at `floor`: readings are always greater than it (the persisted
  // high-water mark of the previous run). Borrows `wall`.
  HybridClock(const WallClock& wall, uint64_t floor);

  HybridClock(const HybridClock&) = delete;
  HybridClock& operator=(const HybridClock&) = delete;

  // A reading strictly greater than every earlier Now() result and every
  // observed remote reading, and at least the current physical time.
  uint64_t Now();

  // Advances the clock to at least `remote_hlc`. Callers check the skew
  // first (CheckSkew) so a wrong remote clock is never followed.
  void Observe(uint64_t remote_hlc);

  // OK if `remote_hlc` is at most `max_skew_ms` ahead of local physical
  // time; otherwise OutOfRange saying by how much it is ahead.
  absl::Status CheckSkew(uint64_t remote_hlc, int64_t max_skew_ms) const;

  // The greatest reading handed out or observed: the high-water mark to
  // persist.
  uint64_t Last() const;

  const WallClock& wall() const { return wall_; }

 private:
  const WallClock& wall_;
  mutable absl::Mutex mu_;
  uint64_t last_ ABSL_GUARDED_BY(mu_);
};

}  // namespace peerkv

#endif  // PEERKV_STORE_CLOCK_H_
