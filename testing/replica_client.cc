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

}  // namespace peerkv::testing
