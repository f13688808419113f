// store/clock.cc: system wall clock and the hybrid logical clock.
#include "store/clock.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

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

void PeerClockOffsets::Note(uint64_t peer, int64_t offset_ms, int64_t now_ms) {
  samples_[peer] = Sample{offset_ms, now_ms};
  if (samples_.size() <= kMaxPeers) return;
  auto stalest = samples_.begin();
  for (auto it = samples_.begin(); it != samples_.end(); ++it) {
    if (it->second.taken_ms < stalest->second.taken_ms) stalest = it;
  }
  samples_.erase(stalest);
}

ClockEstimate PeerClockOffsets::Estimate(int64_t now_ms) const {
  std::vector<int64_t> offsets{0};  // our own clock
  for (const auto& [peer, sample] : samples_) {
    if (now_ms - sample.taken_ms <= kWindowMs) offsets.push_back(sample.offset_ms);
  }
  ClockEstimate estimate;
  estimate.peers = static_cast<uint32_t>(offsets.size() - 1);
  if (estimate.peers == 0) return estimate;
  std::sort(offsets.begin(), offsets.end());
  // The lower median: with an even count, the slower of the middle two.
  estimate.real_offset_ms = offsets[(offsets.size() - 1) / 2];
  return estimate;
}

ClockSample DiallerSample(int64_t sent_ms, int64_t received_ms, int64_t remote_ms) {
  if (received_ms < sent_ms) received_ms = sent_ms;  // the wall clock stepped back
  const int64_t rtt = received_ms - sent_ms;
  return ClockSample{remote_ms - (sent_ms + rtt / 2), rtt};
}

ClockSample AnswererSample(int64_t received_ms, int64_t remote_ms) {
  return ClockSample{remote_ms - received_ms, -1};
}

HybridClock::HybridClock(const WallClock& wall, uint64_t floor)
    : wall_(wall), last_(floor) {}

int64_t HybridClock::SetEstimate(const ClockEstimate& estimate, int64_t max_skew_ms) {
  const int64_t offset = estimate.peers == 0 ? 0 : estimate.real_offset_ms;
  // Ahead of real time by more than half the bound: stamp from real time.
  const int64_t correction = offset < 0 && -offset > max_skew_ms / 2 ? offset : 0;
  real_offset_ms_ = offset;
  estimate_peers_ = estimate.peers;
  stamp_correction_ms_ = correction;
  return correction;
}

ClockEstimate HybridClock::estimate() const {
  return ClockEstimate{estimate_peers_.load(), real_offset_ms_.load()};
}

int64_t HybridClock::RealNowMillis() const {
  return wall_.NowMillis() + real_offset_ms_.load();
}

int64_t HybridClock::StampNowMillis() const {
  return wall_.NowMillis() + stamp_correction_ms_.load();
}

void HybridClock::Reset(uint64_t floor) {
  absl::MutexLock lock(&mu_);
  last_ = floor;
}

uint64_t HybridClock::Now() {
  const uint64_t physical = MakeHlc(ClampMillis(StampNowMillis()), 0);
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
  const int64_t local_ms = RealNowMillis();
  const int64_t remote_ms = static_cast<int64_t>(HlcMillis(remote_hlc));
  const int64_t ahead_ms = remote_ms - local_ms;
  if (ahead_ms <= max_skew_ms) return absl::OkStatus();
  const int64_t offset = real_offset_ms_.load();
  return absl::OutOfRangeError(absl::StrFormat(
      "clock %d ms ahead of %s (max_clock_skew %d ms)", ahead_ms,
      offset == 0 ? std::string("local time")
                  : absl::StrFormat("real time as estimated from %d peer(s) (local %+d ms)",
                                    estimate_peers_.load(), offset),
      max_skew_ms));
}

uint64_t HybridClock::Last() const {
  absl::MutexLock lock(&mu_);
  return last_;
}

}  // namespace peerkv
