// bench/etcd_direct.h: the direct-etcd baseline of issue 11's strong-PUT
// benchmark: N concurrent clients writing straight to etcd through the same
// client path the backend uses (consensus/etcd's HTTP/1.1 client and the v3
// JSON gateway), one /v3/kv/put per write, or one compare-and-put txn per
// write. Also the same clients through
// EtcdConsensusLog::Propose (a linearizable range, then a compare-and-put
// txn), to show what the backend's protocol costs on top of a plain put.
#ifndef PEERKV_BENCH_ETCD_DIRECT_H_
#define PEERKV_BENCH_ETCD_DIRECT_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace peerkv::bench {

struct EtcdLoad {
  std::string url;  // "http://HOST:PORT"
  int clients = 16;
  absl::Duration duration = absl::Seconds(5);
  size_t value_bytes = 100;
  // Keys go under this prefix (distinct per run, so runs do not collide).
  std::string key_prefix = "bench/";
};

struct EtcdLoadResult {
  uint64_t writes = 0;
  absl::Duration elapsed;
  double writes_per_second() const {
    return static_cast<double>(writes) / absl::ToDoubleSeconds(elapsed);
  }
};

// Each client puts distinct keys (`key_prefix` + client + counter) in a loop
// for `duration`. Fails with the first error any client saw.
absl::StatusOr<EtcdLoadResult> RunDirectPuts(const EtcdLoad& load);

// The same load as compare-and-put txns (create_revision == 0, then put):
// the least a linearizable conditional write costs through etcd, the shape
// of every txn EtcdConsensusLog commits.
absl::StatusOr<EtcdLoadResult> RunDirectTxns(const EtcdLoad& load);

// The same load as unconditional EtcdConsensusLog::Propose calls (one log
// object shared by the clients, as one replica would hold it).
absl::StatusOr<EtcdLoadResult> RunConsensusProposes(const EtcdLoad& load);

}  // namespace peerkv::bench

#endif  // PEERKV_BENCH_ETCD_DIRECT_H_
