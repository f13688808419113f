// testing/replica_client.cc: see replica_client.h.
#include "testing/replica_client.h"

#include <utility>

#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace peerkv::testing {

std::unique_ptr<ServerProcess> StartReplica(const TempDir& dir, const std::string& name,
                                            const std::vector<std::string>& peers,
                                            const std::vector<std::string>& extra) {
  std::vector<std::string> args = ReplicaArgs(name, peers);
  args.insert(args.end(), extra.begin(), extra.end());
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(dir.Sub(name), args);
  EXPECT_THAT(server, IsOk());
  return server.ok() ? std::move(*server) : nullptr;
}

std::unique_ptr<rpc::Client> ConnectTo(const ServerProcess& server) {
  absl::StatusOr<std::unique_ptr<rpc::Client>> client =
      rpc::Client::Connect(rpc::ClientOptions{.address = server.address()});
  EXPECT_THAT(client, IsOk());
  return client.ok() ? std::move(*client) : nullptr;
}

uint64_t FingerprintOf(const ServerProcess& server) {
  std::unique_ptr<rpc::Client> client = ConnectTo(server);
  if (client == nullptr) return 0;
  absl::StatusOr<rpc::ServerStatus> status = client->Status();
  return status.ok() ? status->fingerprint : 0;
}

bool Converged(const std::vector<const ServerProcess*>& servers, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    const uint64_t first = FingerprintOf(*servers[0]);
    bool same = first != 0;
    for (const ServerProcess* s : servers) same = same && FingerprintOf(*s) == first;
    if (same) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return false;
}

}  // namespace peerkv::testing
