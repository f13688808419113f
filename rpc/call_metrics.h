// rpc/call_metrics.h: every call of the Kv interface counted and timed in
// the process's metrics (peerkv_requests_total{frontend="rpc",op,code} and
// peerkv_request_duration_seconds{frontend="rpc",op}), by method name and
// by the absl code of the `error` every Kv result carries ("OK" if unset).
#ifndef PEERKV_RPC_CALL_METRICS_H_
#define PEERKV_RPC_CALL_METRICS_H_

#include <cstdint>

#include "absl/time/time.h"
#include "capnp/any.h"

namespace peerkv::rpc {

// A Kv call `method` (its ordinal) that answered `results`, begun at `start`.
void CountKvCall(uint16_t method, capnp::AnyPointer::Builder results, absl::Time start);
// A Kv call that ended in an exception (a broken connection, a bad message).
void CountKvCallException(uint16_t method, absl::Time start);

}  // namespace peerkv::rpc

#endif  // PEERKV_RPC_CALL_METRICS_H_
