// rpc/gateway.cc: the Gateway, the bootstrap capability every connection
// gets first; it hands out the Kv and Replica capabilities. This is where a
// connection will be given only what its peer's identity may hold (access
// control); today every connection gets both.
#include <string>
#include <utility>

#include "kj/async.h"
#include "rpc/peerkv.capnp.h"
#include "rpc/server_loop.h"

namespace peerkv::rpc {
namespace {

class GatewayImpl final : public wire::Gateway::Server {
 public:
  GatewayImpl(ServerLoop& loop, std::string peer, uint64_t connection_id)
      : loop_(loop), peer_(std::move(peer)), connection_id_(connection_id) {}

  // Every identity gets both capabilities today; once peers authenticate,
  // this is where a connection is given only what its identity may hold.
  kj::Promise<void> kv(KvContext context) override {
    context.getResults().setKv(NewKv(loop_, peer_, kj::addRef(*watch_window_)));
    return kj::READY_NOW;
  }
  kj::Promise<void> replica(ReplicaContext context) override {
    context.getResults().setReplica(NewReplica(loop_, peer_, connection_id_, 0));
    return kj::READY_NOW;
  }

 private:
  ServerLoop& loop_;
  const std::string peer_;
  const uint64_t connection_id_;
  // Shared by every watch of this connection.
  kj::Own<WatchWindow> watch_window_ = kj::refcounted<WatchWindow>();
};

}  // namespace

kj::Own<wire::Gateway::Server> NewGateway(ServerLoop& loop, std::string peer,
                                          uint64_t connection_id) {
  return kj::heap<GatewayImpl>(loop, std::move(peer), connection_id);
}

}  // namespace peerkv::rpc
