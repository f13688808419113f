// bench/etcd_direct.cc: the direct-etcd load and the Propose load.
#include "bench/etcd_direct.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "consensus/etcd/etcd_consensus_log.h"
#include "consensus/etcd/http_client.h"

namespace peerkv::bench {
namespace {

// Runs `write(client, n)` from load.clients threads until the duration ends.
template <typename Write>
absl::StatusOr<EtcdLoadResult> RunClients(const EtcdLoad& load, Write write) {
  std::atomic<uint64_t> writes{0};
  absl::Mutex mu;
  absl::Status first_error;
  std::vector<std::thread> threads;
  const absl::Time start = absl::Now();
  const absl::Time end = start + load.duration;
  for (int c = 0; c < load.clients; ++c) {
    threads.emplace_back([&, c] {
      for (uint64_t n = 0; absl::Now() < end; ++n) {
        absl::Status status = write(c, n);
        if (!status.ok()) {
          absl::MutexLock lock(&mu);
          if (first_error.ok()) first_error = status;
          return;
        }
        writes.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  for (auto& t : threads) t.join();
  if (!first_error.ok()) return first_error;
  return EtcdLoadResult{writes.load(), absl::Now() - start};
}

}  // namespace

absl::StatusOr<EtcdLoadResult> RunDirect(const EtcdLoad& load, bool txn) {
  absl::StatusOr<consensus::etcd::HttpUrl> url = consensus::etcd::ParseHttpUrl(load.url);
  if (!url.ok()) return url.status();
  consensus::etcd::HttpClient http(*url);
  const std::string value = absl::Base64Escape(std::string(load.value_bytes, 'v'));
  return RunClients(load, [&](int client, uint64_t n) -> absl::Status {
    const std::string key = absl::Base64Escape(
        absl::StrCat(load.key_prefix, txn ? "txn/" : "put/", client, "/", n));
    const std::string put = absl::StrCat("{\"key\":\"", key, "\",\"value\":\"", value, "\"}");
    const std::string body =
        txn ? absl::StrCat("{\"compare\":[{\"target\":\"CREATE\",\"key\":\"", key,
                           "\",\"create_revision\":\"0\"}],\"success\":[{\"request_put\":", put,
                           "}]}")
            : put;
    absl::StatusOr<consensus::etcd::HttpResponse> r =
        http.Post(txn ? "/v3/kv/txn" : "/v3/kv/put", body, absl::Now() + absl::Seconds(5), false);
    if (!r.ok()) return r.status();
    if (r->status != 200) {
      return absl::InternalError(absl::StrCat("etcd write: HTTP ", r->status, ": ", r->body));
    }
    if (txn && r->body.find("\"succeeded\":true") == std::string::npos) {
      return absl::InternalError(absl::StrCat("etcd txn did not succeed: ", r->body));
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<EtcdLoadResult> RunDirectPuts(const EtcdLoad& load) {
  return RunDirect(load, /*txn=*/false);
}

absl::StatusOr<EtcdLoadResult> RunDirectTxns(const EtcdLoad& load) {
  return RunDirect(load, /*txn=*/true);
}

absl::StatusOr<EtcdLoadResult> RunConsensusProposes(const EtcdLoad& load) {
  consensus::EtcdOptions options;
  options.url = load.url;
  options.prefix = absl::StrCat(load.key_prefix, "log/");
  absl::StatusOr<std::unique_ptr<consensus::EtcdConsensusLog>> log =
      consensus::EtcdConsensusLog::Create(options);
  if (!log.ok()) return log.status();
  const std::string value(load.value_bytes, 'v');
  return RunClients(load, [&](int client, uint64_t n) -> absl::Status {
    consensus::Proposal p;
    p.keyspace = "bench";
    p.key = absl::StrCat(client, "/", n);
    p.value = value;
    p.origin = static_cast<uint64_t>(client) + 1;
    p.min_hlc = n + 1;
    absl::StatusOr<consensus::ProposeResult> r = (*log)->Propose(p, absl::Seconds(5));
    if (!r.ok()) return r.status();
    if (!r->applied) return absl::InternalError("an unconditional proposal did not apply");
    return absl::OkStatus();
  });
}

}  // namespace peerkv::bench
