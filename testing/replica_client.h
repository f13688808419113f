// testing/replica_client.h: what process tests do with a replica server
// they started: start one with the usual replica flags in a temporary
// directory, connect a client to it, and wait until several agree. A
// failure is a test failure (EXPECT), and the call then returns nullptr.
#ifndef PEERKV_TESTING_REPLICA_CLIENT_H_
#define PEERKV_TESTING_REPLICA_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "rpc/client.h"
#include "testing/server_process.h"
#include "testing/temp_dir.h"

namespace peerkv::testing {

// A replica named `name` in `dir`/`name`, dialling `peers`, with
// ReplicaArgs plus `extra` flags.
std::unique_ptr<ServerProcess> StartReplica(const TempDir& dir, const std::string& name,
                                            const std::vector<std::string>& peers = {},
                                            const std::vector<std::string>& extra = {});

// A client of `server`.
std::unique_ptr<rpc::Client> ConnectTo(const ServerProcess& server);

// The store fingerprint `server` reports; 0 when it cannot be asked.
uint64_t FingerprintOf(const ServerProcess& server);

// Whether every server reports the same non-zero fingerprint within
// `timeout`. Another process holds the answer, so this polls (every 20 ms).
bool Converged(const std::vector<const ServerProcess*>& servers, absl::Duration timeout);

}  // namespace peerkv::testing

#endif  // PEERKV_TESTING_REPLICA_CLIENT_H_
