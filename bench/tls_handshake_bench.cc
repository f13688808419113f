// bench/tls_handshake_bench.cc: what a reconnecting peer pays for TLS. An
// in-process server on loopback (a fresh store, one user's certified
// devices); each round opens a new connection and waits for its first
// answer (the Gateway handing out Kv: the same one round trip a peer's
// hello takes after the handshake), then closes it. The same rounds
// against a plaintext server in the same run are the baseline. Measured
// two ways: a new rpc::Client per round (an app or CLI process starting:
// its own thread, event loop and TLS context each time), and a peer
// redialling from one event loop with one TLS context made once (what a
// server's peer links do: rpc::ServerLoop keeps its TlsEndpoint). Prints
// the median and p99 of each, the CPU a peer's round costs (client and
// server together: both are this process, getrusage), and what making a
// TLS context costs.
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "auth/certificate.h"
#include "auth/keys.h"
#include "bench/baseline.h"
#include "common/macros.h"
#include "kj/async-io.h"
#include "rpc/client.h"
#include "rpc/connection.h"
#include "rpc/peer_auth.h"
#include "rpc/server.h"
#include "rpc/tls.h"
#include "store/store.h"

namespace peerkv {
namespace {

struct Times {
  double median_ms = 0;
  double p99_ms = 0;
  double cpu_ms = 0;  // CPU per round, user + system, every thread
};

// CPU this process has used, user + system, all threads.
double CpuMs() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e3 +
         (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e3;
}

Times Rounds(const rpc::ClientOptions& options, int rounds) {
  std::vector<double> ms;
  for (int i = 0; i < rounds; ++i) {
    const absl::Time start = absl::Now();
    absl::StatusOr<std::unique_ptr<rpc::Client>> client = rpc::Client::Connect(options);
    ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
    PEERKV_CHECK(client.ok());
  }
  std::sort(ms.begin(), ms.end());
  return Times{ms[ms.size() / 2], ms[ms.size() * 99 / 100]};
}

Times Summary(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  return Times{ms[ms.size() / 2], ms[ms.size() * 99 / 100]};
}

// A peer redialling `address` from one event loop: `tls` (null:
// plaintext) is made once, as a server's peer links make theirs.
Times PeerRounds(kj::AsyncIoContext& io, const std::string& address, rpc::TlsEndpoint* tls,
                 rpc::TrustSource trust, int rounds) {
  std::vector<double> ms;
  const double cpu_start = CpuMs();
  for (int i = 0; i < rounds; ++i) {
    const absl::Time start = absl::Now();
    kj::Own<kj::AsyncIoStream> stream =
        rpc::DialAuthenticated(io.provider->getNetwork(), address, tls, trust).wait(io.waitScope);
    rpc::GatewayConnection link(kj::mv(stream));
    link.gateway().kvRequest().send().getKv().whenResolved().wait(io.waitScope);
    ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
  }
  Times out = Summary(std::move(ms));
  out.cpu_ms = (CpuMs() - cpu_start) / rounds;
  return out;
}

}  // namespace
}  // namespace peerkv

int main(int argc, char** argv) {
  using namespace peerkv;
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 500;
  bench::ScratchDir dir("/var/tmp");
  std::unique_ptr<auth::SigningKey> user = auth::SigningKey::Generate();
  const auth::PublicKey user_id = user->public_key();
  auto device = [&]() {
    std::shared_ptr<const auth::SigningKey> key = auth::SigningKey::Generate();
    return rpc::TlsIdentity{
        key, auth::IssueDeviceCertificate(*user, key->public_key(), "bench",
                                          absl::ToUnixMillis(absl::Now()))
                 .Encode()};
  };
  std::vector<std::unique_ptr<Store>> stores;
  std::vector<std::unique_ptr<rpc::Server>> servers;
  for (bool tls : {false, true}) {
    StoreOptions so;
    so.dir = dir.path() + (tls ? "/tls" : "/plain");
    stores.push_back(*Store::Open(so));
    rpc::ServerOptions opts;
    opts.listen = "127.0.0.1:0";
    opts.replicate = false;
    if (tls) {
      opts.tls = device();
      opts.trust = [user_id]() -> absl::StatusOr<rpc::TrustView> {
        return rpc::TrustView{user_id, {}, {}};
      };
    }
    servers.push_back(*rpc::Server::Start(stores.back().get(), opts));
  }
  rpc::ClientOptions plain{.address = servers[0]->address()};
  rpc::ClientOptions tls{.address = servers[1]->address(), .tls = device(),
                         .server_user = user_id};
  Rounds(plain, 20);  // warm up
  Rounds(tls, 20);
  const Times p = Rounds(plain, rounds);
  const Times t = Rounds(tls, rounds);
  std::printf(
      "new rpc::Client per round, %d rounds: plaintext median %.3f ms p99 %.3f ms; TLS 1.3 median "
      "%.3f ms p99 %.3f ms (TLS adds %.3f ms at the median)\n",
      rounds, p.median_ms, p.p99_ms, t.median_ms, t.p99_ms, t.median_ms - p.median_ms);
  {
    kj::AsyncIoContext io = kj::setupAsyncIo();
    const rpc::TlsIdentity peer = device();
    // What a context costs to make (a self-signed certificate signed, an
    // OpenSSL SSL_CTX): paid once per process by a server, once per
    // rpc::Client by a client.
    std::vector<double> make_ms;
    std::unique_ptr<rpc::TlsEndpoint> endpoint;
    for (int i = 0; i < 50; ++i) {
      const absl::Time start = absl::Now();
      endpoint = *rpc::TlsEndpoint::Create(peer, io.provider->getTimer(), 10'000);
      make_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
    }
    const Times made = Summary(std::move(make_ms));
    rpc::TrustSource trust = [user_id]() -> absl::StatusOr<rpc::TrustView> {
      return rpc::TrustView{user_id, {}, {}};
    };
    PeerRounds(io, servers[0]->address(), nullptr, nullptr, 20);  // warm up
    PeerRounds(io, servers[1]->address(), endpoint.get(), trust, 20);
    const Times pp = PeerRounds(io, servers[0]->address(), nullptr, nullptr, rounds);
    const Times tp = PeerRounds(io, servers[1]->address(), endpoint.get(), trust, rounds);
    std::printf(
        "reconnecting peer (one event loop, TLS context made once), %d rounds: plaintext median "
        "%.3f ms p99 %.3f ms; TLS 1.3 median %.3f ms p99 %.3f ms (TLS adds %.3f ms at the "
        "median); CPU per round (client + server): plaintext %.3f ms, TLS 1.3 %.3f ms; making a "
        "TLS context: median %.3f ms\n",
        rounds, pp.median_ms, pp.p99_ms, tp.median_ms, tp.p99_ms, tp.median_ms - pp.median_ms,
        pp.cpu_ms, tp.cpu_ms, made.median_ms);
  }
  for (auto& s : servers) s->Stop();
  return 0;
}
