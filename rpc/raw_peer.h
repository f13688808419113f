// rpc/raw_peer.h: for tests only: a replication link that says whatever the
// test tells it to (hello, pull, nudge, reconcile with any claims), dialled
// over real TLS to a real server, for the tests of what a lying peer can
// and cannot do (replica_claim_test, lying_watermarks_test).
#ifndef PEERKV_RPC_RAW_PEER_H_
#define PEERKV_RPC_RAW_PEER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kj/async-io.h"
#include "replication/serve.h"
#include "replication/transport.h"
#include "rpc/batch_codec.h"
#include "rpc/connection.h"
#include "rpc/convert.h"
#include "rpc/peer_auth.h"
#include "rpc/peerkv.capnp.h"
#include "rpc/tls.h"
#include "store/types.h"

namespace peerkv::rpc {

// The `back` of our hellos: answers nothing.
class SilentReplica final : public wire::Replica::Server {};

// What one pull page brought.
struct Page {
  std::vector<Record> records;
  uint64_t last_seq = 0;
  uint64_t max_seq = 0;
  Watermarks watermarks;
};

// A replication link dialled over TLS as `tls`'s device, on the test's
// event loop, saying whatever the test tells it to (the truth, or a lie).
class RawPeer {
 public:
  RawPeer(kj::AsyncIoContext& io, TlsEndpoint& tls, const std::string& address,
       const auth::PublicKey& server_user)
      : io_(io) {
    TrustSource trust = [server_user]() -> absl::StatusOr<TrustView> {
      return TrustView{server_user, {}, {}};
    };
    link_ = kj::heap<GatewayConnection>(
        DialAuthenticated(io_.provider->getNetwork(), address, &tls, trust).wait(io_.waitScope));
    replica_ = link_->gateway().replicaRequest().send().getReplica();
  }

  absl::Status Hello(uint64_t replica_id, uint64_t incarnation,
                     const replication::HeldOf& held = {},
                     const std::vector<uint64_t>& retired = {}) {
    auto hello = replica_.helloRequest();
    auto info = hello.initInfo();
    info.setReplicaId(replica_id);
    info.setIncarnation(incarnation);
    info.setProtocolVersion(replication::kProtocolVersion);
    info.setName("liar");
    info.setHeldOf(held.replica_id);
    info.setHeldIncarnation(held.incarnation);
    info.setHeldSeq(held.seq);
    info.setHeldWatermark(held.watermark);
    auto ids = info.initRetired(static_cast<unsigned>(retired.size()));
    for (size_t i = 0; i < retired.size(); ++i) ids.set(i, retired[i]);
    if (back_.get() != nullptr) {
      hello.setBack(std::move(back_));
    } else {
      hello.setBack(kj::heap<SilentReplica>());
    }
    return ResponseStatus(hello.send().wait(io_.waitScope));
  }
  // What the next hello offers as its back capability.
  void OfferBack(kj::Own<wire::Replica::Server> back) { back_ = std::move(back); }

  absl::StatusOr<Page> Pull(uint64_t requester, const Watermarks& claimed,
                            uint64_t incarnation = 0, uint64_t after_seq = 0,
                            uint64_t merged_seq = 0) {
    auto pull = replica_.pullRequest();
    pull.setRequester(requester);
    pull.setIncarnation(incarnation);
    pull.setAfterSeq(after_seq);
    pull.setMergedSeq(merged_seq);
    pull.setMaxRecords(1000);
    pull.setMaxBytes(1 << 20);
    pull.setMaxValueBytes(1 << 20);
    ToWire(claimed, pull.initWatermarks(static_cast<unsigned>(claimed.size())));
    auto answer = pull.send().wait(io_.waitScope);
    if (absl::Status status = ResponseStatus(answer); !status.ok()) return status;
    Page page;
    absl::StatusOr<std::vector<Record>> records =
        DecodeBatch(View(answer.getBatch()), replication::kMaxPullRecords);
    if (!records.ok()) return records.status();
    page.records = std::move(*records);
    page.last_seq = answer.getLastSeq();
    page.max_seq = answer.getMaxSeq();
    page.watermarks = FromWire(answer.getWatermarks());
    return page;
  }

  // A reconcile request of `bytes` (a push, a question: whatever they say).
  absl::Status Reconcile(const std::string& bytes) {
    auto reconcile = replica_.reconcileRequest();
    reconcile.setRequest(AsData(bytes));
    return ResponseStatus(reconcile.send().wait(io_.waitScope));
  }

  void Nudge(const Watermarks& claimed) {
    auto nudge = replica_.nudgeRequest();
    ToWire(claimed, nudge.initWatermarks(static_cast<unsigned>(claimed.size())));
    nudge.send().wait(io_.waitScope);
  }

 private:
  kj::AsyncIoContext& io_;
  kj::Own<GatewayConnection> link_;
  wire::Replica::Client replica_ = nullptr;
  kj::Own<wire::Replica::Server> back_;
};

}  // namespace peerkv::rpc

#endif  // PEERKV_RPC_RAW_PEER_H_
