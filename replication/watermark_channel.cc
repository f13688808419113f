// replication/watermark_channel.cc: per-connection watermark deltas and
// their bound (see watermark_channel.h).
#include "replication/watermark_channel.h"

#include "absl/strings/str_format.h"

namespace peerkv::replication {

Watermarks WatermarkChannel::Outgoing(const Watermarks& current) {
  Watermarks delta;
  for (const auto& [origin, hlc] : current) {
    auto told = sent_.find(origin);
    if (told != sent_.end() && hlc <= told->second) continue;
    // An origin at hlc 0 claims nothing yet: nothing to tell.
    if (told == sent_.end() && hlc == 0) continue;
    delta[origin] = hlc;
    sent_[origin] = hlc;
  }
  return delta;
}

absl::StatusOr<const Watermarks*> WatermarkChannel::Incoming(
    std::string_view what, size_t entries, absl::FunctionRef<Watermarks()> decode) {
  if (entries > kMaxWatermarks) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s carries %d watermarks; the limit is %d", what, entries, kMaxWatermarks));
  }
  const Watermarks delta = decode();
  size_t added = 0;
  for (const auto& [origin, hlc] : delta) added += received_.count(origin) == 0 ? 1 : 0;
  if (received_.size() + added > kMaxWatermarks) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: more than %d origins' watermarks on one connection", what, kMaxWatermarks));
  }
  received_.Merge(delta);
  return &received_;
}

}  // namespace peerkv::replication
