// rpc/rejection_log.h: the server's log of rejected requests, rate-limited
// per client host so that a client sending many bad requests (or one
// putMany of thousands of bad items) cannot fill the log or slow the loop
// writing it. The first rejection from a host in an interval is logged at
// once; the rest of that interval are counted and reported in one line
// when it ends. No kj here; the server loop owns one and drives Flush.
// Not thread-safe: used on the loop thread only.
#ifndef PEERKV_RPC_REJECTION_LOG_H_
#define PEERKV_RPC_REJECTION_LOG_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace peerkv::rpc {

class RejectionLog {
 public:
  // Hosts tracked at once; rejections from further hosts share one entry.
  static constexpr size_t kMaxHosts = 1024;
  // Longest reason logged (a reason may quote client input).
  static constexpr size_t kMaxReasonBytes = 512;

  // `sink` receives each line (the server passes LogLine).
  RejectionLog(absl::Duration interval, std::function<void(const std::string&)> sink);

  // `peer` (HOST:PORT) had `items` parts of one `method` call refused (1
  // for a whole request; a putMany's invalid writes count one each);
  // `status` is the (first) reason. Returns true if a count is now waiting
  // for Flush.
  bool Rejected(absl::Time now, std::string_view peer, std::string_view method,
                const absl::Status& status, uint64_t items = 1);

  // Logs one line per host whose interval has ended by `now` (every host,
  // if `all`) with the rejections counted but not logged. Returns true if
  // counts are still waiting.
  bool Flush(absl::Time now, bool all);

  absl::Duration interval() const { return interval_; }

 private:
  struct Host {
    absl::Time window_start;
    uint64_t suppressed = 0;
    std::string last;  // "METHOD from PEER: REASON" of the latest counted one
  };
  void Report(const std::string& host, Host& state);

  const absl::Duration interval_;
  const std::function<void(const std::string&)> sink_;
  std::map<std::string, Host> hosts_;
};

}  // namespace peerkv::rpc

#endif  // PEERKV_RPC_REJECTION_LOG_H_
