// rpc/connection.cc: a dialled two-party connection and its Gateway (see
// connection.h).
#include "rpc/connection.h"

namespace peerkv::rpc {

GatewayConnection::GatewayConnection(kj::Own<kj::AsyncIoStream> socket,
                                     const capnp::ReaderOptions& options,
                                     std::atomic<uint64_t>* bytes_sent)
    : stream_(kj::heap<BufferedStream>(kj::mv(socket), bytes_sent)),
      network_(*stream_, capnp::rpc::twoparty::Side::CLIENT, options),
      rpc_(capnp::makeRpcClient(network_)) {
  capnp::MallocMessageBuilder message;
  auto vat = message.initRoot<capnp::rpc::twoparty::VatId>();
  vat.setSide(capnp::rpc::twoparty::Side::SERVER);
  gateway_ = rpc_.bootstrap(vat).castAs<wire::Gateway>();
}

}  // namespace peerkv::rpc
