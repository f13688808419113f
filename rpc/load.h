// rpc/load.h: the load generator behind `peerkv bench`: many connections,
// each with a pipeline of requests in flight, against a running server; it
// reports throughput and latency percentiles per operation in the layout of
// redis-benchmark's quiet mode, so the two can be compared line by line.
#ifndef PEERKV_RPC_LOAD_H_
#define PEERKV_RPC_LOAD_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "rpc/peer_auth.h"

namespace peerkv::rpc {

struct LoadOptions {
  // HOST:PORT (TLS with `tls`, as ClientOptions) or unix:PATH.
  std::string address = "127.0.0.1:7700";
  std::optional<TlsIdentity> tls;
  std::optional<auth::PublicKey> server_user;
  // Connections, each with `pipeline` requests in flight.
  int clients = 50;
  int pipeline = 1;
  // Requests per operation, across all connections.
  int64_t requests = 100'000;
  // Operations to run, in order: "put", "get".
  std::vector<std::string> operations = {"put", "get"};
  size_t value_bytes = 3;
  // Keys are "key:NNNNNNNNNNNN" with N uniform in [0, key_space).
  int64_t key_space = 100'000;
  std::string keyspace = "bench";
};

struct LoadReport {
  std::string operation;
  int64_t requests = 0;
  // Requests the server answered with an error.
  int64_t errors = 0;
  double seconds = 0;
  double requests_per_second = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
  // The client's socket writes during the run, all connections together:
  // about one per request when each call rides in the same write as the
  // Finish of the answer before it.
  int64_t socket_writes = 0;
};

// Runs each operation in turn on the calling thread (which must not run a
// kj event loop already). InvalidArgument for bad options, Unavailable if
// the server cannot be reached or a connection breaks.
absl::StatusOr<std::vector<LoadReport>> RunLoad(const LoadOptions& options);

// "PUT: 48210.55 requests per second, p50=0.95 msec, p99=2.10 msec, max=7.30 msec"
std::string FormatReport(const LoadReport& report);

}  // namespace peerkv::rpc

#endif  // PEERKV_RPC_LOAD_H_
