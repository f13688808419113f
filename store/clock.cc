// store/clock.cc: system wall clock and the hybrid logical clock.
#include "store/clock.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_format.h"
#include "store/version.h"

namespace peerkv {
namespace {

class SystemClock : public WallClock {
 public:
  int64_t NowMillis() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

uint64_t ClampMillis(int64_t ms) {
  if (ms < 0) return 0;
  return std::min<uint64_t>(static_cast<uint64_t>(ms), kHlcMaxMillis);
}

}  // namespace

const WallClock& SystemWallClock() {
  static const SystemClock* const clock = new SystemClock();
  return *clock;
}

HybridClock::HybridClock(const WallClock& wall, uint64_t floor)
    : wall_(wall), last_(floor) {}

uint64_t HybridClock::Now() {
  const uint64_t physical = MakeHlc(ClampMillis(wall_.NowMillis()), 0);
  absl::MutexLock lock(&mu_);
  // Physical time ahead of everything seen: take it. Otherwise count up
  // from the last reading; a logical overflow carries into the millisecond
  // part, which keeps readings strictly increasing.
  last_ = std::max(physical, last_ + 1);
  return last_;
}

void HybridClock::Observe(uint64_t remote_hlc) {
  absl::MutexLock lock(&mu_);
  last_ = std::max(last_, remote_hlc);
}

absl::Status HybridClock::CheckSkew(uint64_t remote_hlc,
                                    int64_t max_skew_ms) const {
  const int64_t local_ms = wall_.NowMillis();
  const int64_t remote_ms = static_cast<int64_t>(HlcMillis(remote_hlc));
  const int64_t ahead_ms = remote_ms - local_ms;
  if (ahead_ms <= max_skew_ms) return absl::OkStatus();
  return absl::OutOfRangeError(absl::StrFormat(
      "clock %d ms ahead of local time (max_clock_skew %d ms)", ahead_ms,
      max_skew_ms));
}

uint64_t HybridClock::Last() const {
  absl::MutexLock lock(&mu_);
  return last_;
}

}  // namespace peerkv
