// rpc/rejection_log.cc: per-host rate limiting of rejection log lines.
#include "rpc/rejection_log.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace peerkv::rpc {
namespace {

constexpr std::string_view kOtherHosts = "other hosts";

std::string_view HostOf(std::string_view peer) {
  const size_t colon = peer.rfind(':');
  return colon == std::string_view::npos ? peer : peer.substr(0, colon);
}

std::string Describe(std::string_view peer, std::string_view method, const absl::Status& status,
                     uint64_t items) {
  const absl::string_view reason = status.message();
  std::string clipped(reason.substr(0, RejectionLog::kMaxReasonBytes));
  if (reason.size() > RejectionLog::kMaxReasonBytes) clipped += "...";
  if (items > 1) {
    return absl::StrFormat("%s from %s: %d items, the first: %s", method, peer, items, clipped);
  }
  return absl::StrFormat("%s from %s: %s", method, peer, clipped);
}

}  // namespace

RejectionLog::RejectionLog(absl::Duration interval, std::function<void(const std::string&)> sink)
    : interval_(interval), sink_(std::move(sink)) {}

bool RejectionLog::Rejected(absl::Time now, std::string_view peer, std::string_view method,
                            const absl::Status& status, uint64_t items) {
  std::string host(HostOf(peer));
  if (hosts_.count(host) == 0 && hosts_.size() >= kMaxHosts) {
    Flush(now, /*all=*/false);  // forgets hosts whose interval is over
    if (hosts_.size() >= kMaxHosts) host = std::string(kOtherHosts);
  }
  auto [it, created] = hosts_.try_emplace(host);
  Host& state = it->second;
  if (created || now - state.window_start >= interval_) {
    if (state.suppressed > 0) Report(host, state);
    state.window_start = now;
    sink_(absl::StrCat("peerkv: rejected ", Describe(peer, method, status, items)));
    return false;
  }
  state.suppressed += items;
  state.last = Describe(peer, method, status, items);
  return true;
}

bool RejectionLog::Flush(absl::Time now, bool all) {
  bool waiting = false;
  for (auto it = hosts_.begin(); it != hosts_.end();) {
    Host& state = it->second;
    const bool over = now - state.window_start >= interval_;
    if (state.suppressed > 0 && (all || over)) Report(it->first, state);
    waiting = waiting || state.suppressed > 0;
    // A host quiet for a whole interval needs no entry: its next rejection
    // is logged at once anyway.
    if (over && state.suppressed == 0) {
      it = hosts_.erase(it);
    } else {
      ++it;
    }
  }
  return waiting;
}

void RejectionLog::Report(const std::string& host, Host& state) {
  sink_(
      absl::StrFormat("peerkv: rejected %d more from %s within %s (not logged one by one); "
                      "the last: %s",
                      state.suppressed, host, absl::FormatDuration(interval_), state.last));
  state.suppressed = 0;
  state.last.clear();
}

}  // namespace peerkv::rpc
