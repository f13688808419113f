// rpc/connection.h: one Cap'n Proto two-party connection dialled to a
// peerkv server (the client side of a socket), and the server's bootstrap
// Gateway on it. The client library, the load generator and the server's
// outbound peer links each hold one; what they ask the Gateway for (Kv, or
// Replica) is theirs. Runs on the loop thread that made it; destroying it
// closes the connection. Internal to rpc/.
#ifndef PEERKV_RPC_CONNECTION_H_
#define PEERKV_RPC_CONNECTION_H_

#include <atomic>
#include <cstdint>

#include "capnp/message.h"
#include "capnp/rpc-twoparty.h"
#include "kj/async-io.h"
#include "rpc/buffered_stream.h"
#include "rpc/peerkv.capnp.h"

namespace peerkv::rpc {

class GatewayConnection {
 public:
  // Over `socket`, reading answers within `options`. `bytes_sent`, if
  // given, counts every byte written (see BufferedStream); it must outlive
  // the connection.
  explicit GatewayConnection(kj::Own<kj::AsyncIoStream> socket,
                             const capnp::ReaderOptions& options = capnp::ReaderOptions(),
                             std::atomic<uint64_t>* bytes_sent = nullptr);
  GatewayConnection(const GatewayConnection&) = delete;
  GatewayConnection& operator=(const GatewayConnection&) = delete;

  // The server's Gateway (pipelined: usable before the server answers).
  wire::Gateway::Client& gateway() { return gateway_; }
  // The socket's stream (its traffic counters).
  BufferedStream& stream() { return *stream_; }
  // Resolves when the connection is lost (or closed by the server).
  kj::Promise<void> onDisconnect() { return network_.onDisconnect(); }

 private:
  kj::Own<BufferedStream> stream_;
  capnp::TwoPartyVatNetwork network_;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc_;
  wire::Gateway::Client gateway_ = nullptr;
};

}  // namespace peerkv::rpc

#endif  // PEERKV_RPC_CONNECTION_H_
