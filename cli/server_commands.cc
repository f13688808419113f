// cli/server_commands.cc: serve (run a replica server), and the commands
// that only make sense against one: watch and status.
#include <signal.h>
#include <string.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "auth/record_signature.h"
#include "auth/tokens.h"
#include "cli/command.h"
#include "http/front_end.h"
#include "auth/certificate.h"
#include "auth/policy.h"
#include "cli/identity.h"
#include "cli/text.h"
#include "common/log.h"
#include "consensus/etcd/etcd_consensus_log.h"
#include "consensus/policy_modes.h"
#include "consensus/strong_keyspaces.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "rpc/client.h"
#include "rpc/load.h"
#include "replication/transport.h"
#include "resp/server.h"
#include "rpc/server.h"
#include "store/store.h"
#include "store/validation.h"

namespace peerkv::cli {
namespace {

// Raises the soft limit of open files to the hard limit, so the
// connection limits (--http-max-connections, --resp-max-connections) and
// not the default soft limit (often 1024) decide how many clients are
// served. Returns the line to log once the server is up (not before: a
// refused flag's error must stay the only line).
std::string RaiseFileLimit() {
  rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return "peerkv: open files: limit unknown";
  const rlim_t was = limit.rlim_cur;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) limit.rlim_cur = was;
  }
  return absl::StrFormat("peerkv: open files: limit %d%s", limit.rlim_cur,
                         limit.rlim_cur == was ? ""
                                               : absl::StrFormat(" (raised from %d)", was));
}

int RunServe(const Context& c) {
  if (absl::Status s = ExpectPositional(c, 0, 0, "no arguments"); !s.ok()) {
    return Fail(c.command, s);
  }
  if (c.args.Has("server")) {
    return UsageError(c.command, "serve takes --listen HOST:PORT, not --server");
  }
  absl::StatusOr<int64_t> max_value =
      c.args.GetInt("max-value-bytes", kMaxValueBytes, 1, kMaxValueBytes);
  if (!max_value.ok()) return Fail(c.command, max_value.status());
  const std::string file_limit = RaiseFileLimit();
  absl::StatusOr<int64_t> gossip_ms = c.args.GetInt("gossip-interval-ms", 1000, 10, 3'600'000);
  if (!gossip_ms.ok()) return Fail(c.command, gossip_ms.status());
  absl::StatusOr<int64_t> idle_ms = c.args.GetInt("idle-timeout-ms", 60'000, 100, 3'600'000);
  if (!idle_ms.ok()) return Fail(c.command, idle_ms.status());
  absl::StatusOr<int64_t> keepalive_ms = c.args.GetInt("keepalive-ms", 2'000, 100, 600'000);
  if (!keepalive_ms.ok()) return Fail(c.command, keepalive_ms.status());
  absl::StatusOr<int64_t> fanout = c.args.GetInt("fanout", 2, 1, 1000);
  if (!fanout.ok()) return Fail(c.command, fanout.status());
  absl::StatusOr<int64_t> skew_ms = c.args.GetInt("max-clock-skew-ms", 60'000, 0, 365LL * 86'400'000);
  if (!skew_ms.ok()) return Fail(c.command, skew_ms.status());
  // --max-clock-skew takes a duration with its unit ("60s", "2m", "500ms").
  if (const std::optional<std::string> skew = c.args.Get("max-clock-skew")) {
    if (c.args.Has("max-clock-skew-ms")) {
      return UsageError(c.command, "give --max-clock-skew or --max-clock-skew-ms, not both");
    }
    absl::Duration d;
    if (!absl::ParseDuration(*skew, &d) || d < absl::ZeroDuration() || d > absl::Hours(24 * 365)) {
      return UsageError(c.command, absl::StrFormat(
          "--max-clock-skew must be a duration such as 60s or 2m, 0..8760h, got '%s'", *skew));
    }
    *skew_ms = absl::ToInt64Milliseconds(d);
  }
  // --tombstone-min-age: how old a tombstone must be before it may be
  // collected (README "Tombstone collection").
  int64_t tombstone_min_age_ms = StoreOptions{}.tombstone_min_age_ms;
  if (const std::optional<std::string> age = c.args.Get("tombstone-min-age")) {
    absl::Duration d;
    if (!absl::ParseDuration(*age, &d) || d < absl::ZeroDuration() ||
        d > absl::Hours(24 * 365 * 10)) {
      return UsageError(c.command, absl::StrFormat(
          "--tombstone-min-age must be a duration such as 168h or 30m, 0..87600h, got '%s'",
          *age));
    }
    tombstone_min_age_ms = absl::ToInt64Milliseconds(d);
  }
  absl::Duration tombstone_interval = StoreOptions{}.tombstone_collect_interval;
  if (const std::optional<std::string> every = c.args.Get("tombstone-collect-interval")) {
    if (!absl::ParseDuration(*every, &tombstone_interval) ||
        tombstone_interval < absl::Milliseconds(10) || tombstone_interval > absl::Hours(24)) {
      return UsageError(c.command, absl::StrFormat(
          "--tombstone-collect-interval must be a duration such as 1m, 10ms..24h, got '%s'",
          *every));
    }
  }
  absl::StatusOr<int64_t> quarantine_records =
      c.args.GetInt("max-quarantine-records", 10'000, 0, 10'000'000);
  if (!quarantine_records.ok()) return Fail(c.command, quarantine_records.status());
  absl::StatusOr<int64_t> quarantine_bytes =
      c.args.GetInt("max-quarantine-bytes", int64_t{64} << 20, 0, int64_t{1} << 40);
  if (!quarantine_bytes.ok()) return Fail(c.command, quarantine_bytes.status());
  absl::StatusOr<int64_t> conflict_entries = c.args.GetInt(
      "max-conflict-entries", 1000, 1, static_cast<int64_t>(kMaxConflictEntriesBound));
  if (!conflict_entries.ok()) return Fail(c.command, conflict_entries.status());
  absl::StatusOr<int64_t> conflict_bytes = c.args.GetInt(
      "max-conflict-bytes", int64_t{16} << 20, 1, static_cast<int64_t>(kMaxConflictBytesBound));
  if (!conflict_bytes.ok()) return Fail(c.command, conflict_bytes.status());
  absl::Duration reconcile_interval = absl::Minutes(10);
  if (const std::optional<std::string> interval = c.args.Get("reconcile-interval")) {
    if (!absl::ParseDuration(*interval, &reconcile_interval) ||
        reconcile_interval < absl::ZeroDuration() || reconcile_interval > absl::Hours(24 * 7) ||
        (reconcile_interval > absl::ZeroDuration() &&
         reconcile_interval < absl::Milliseconds(100))) {
      return UsageError(c.command,
                        absl::StrFormat("--reconcile-interval must be 0 (off) or a duration "
                                        "such as 10m, 100ms..168h, got '%s'",
                                        *interval));
    }
  }
  absl::StatusOr<int64_t> offset_ms =
      c.args.GetInt("clock-offset-ms", 0, -365LL * 86'400'000, 365LL * 86'400'000);
  if (!offset_ms.ok()) return Fail(c.command, offset_ms.status());
  absl::StatusOr<int64_t> renew_interval_ms =
      c.args.GetInt("renew-interval-ms", 3'600'000, 10, 86'400'000);
  if (!renew_interval_ms.ok()) return Fail(c.command, renew_interval_ms.status());
  // --clock-correction true|false: act on what peers' clocks say (README
  // "Clock skew"); false keeps a wrong clock wrong (tests).
  bool correct_clock = true;
  if (const std::optional<std::string> v = c.args.Get("clock-correction")) {
    if (*v == "false" || *v == "0") {
      correct_clock = false;
    } else if (!(*v == "true" || *v == "1")) {
      return UsageError(c.command,
                        absl::StrFormat("--clock-correction must be true or false, got '%s'", *v));
    }
  }
  // --snapshot-bootstrap true|false: a new replica copies a peer's
  // snapshot, and peers may copy ours (README "Snapshot bootstrap").
  bool snapshot_bootstrap = true;
  if (const std::optional<std::string> v = c.args.Get("snapshot-bootstrap")) {
    if (*v == "false" || *v == "0") {
      snapshot_bootstrap = false;
    } else if (!(*v == "true" || *v == "1")) {
      return UsageError(
          c.command, absl::StrFormat("--snapshot-bootstrap must be true or false, got '%s'", *v));
    }
  }
  absl::StatusOr<int64_t> snapshot_page_records =
      c.args.GetInt("snapshot-page-records", 50'000, 1, 65'536);
  if (!snapshot_page_records.ok()) return Fail(c.command, snapshot_page_records.status());
  std::vector<std::string> peers;
  if (auto it = c.args.values.find("peer"); it != c.args.values.end()) peers = it->second;
  for (const std::string& peer : peers) {
    if (peer.rfind(':') == std::string::npos || peer.rfind(':') + 1 == peer.size()) {
      return UsageError(c.command, absl::StrFormat("--peer '%s' must be HOST:PORT", peer));
    }
  }
  const std::string name = c.args.Get("replica-name").value_or("");
  if (name.size() > replication::kMaxReplicaNameBytes) {
    return UsageError(c.command, absl::StrFormat("--replica-name is %d bytes; the limit is %d",
                                                 name.size(), replication::kMaxReplicaNameBytes));
  }

  // Signals are taken synchronously by this thread (sigwait), so block them
  // before any other thread starts; writes to closed sockets must not kill
  // the server.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // --clock-offset-ms is for tests: it makes this replica's clock wrong on
  // purpose, to see the others refuse its writes.
  const OffsetWallClock wall_clock(SystemWallClock(), *offset_ms);
  StoreOptions store_options;
  store_options.dir = c.args.Get("data").value_or(kDefaultDataDir);
  store_options.max_value_bytes = static_cast<size_t>(*max_value);
  store_options.max_clock_skew_ms = *skew_ms;
  store_options.tombstone_min_age_ms = tombstone_min_age_ms;
  store_options.tombstone_collect_interval = tombstone_interval;
  store_options.max_quarantine_records = static_cast<size_t>(*quarantine_records);
  store_options.max_quarantine_bytes = static_cast<size_t>(*quarantine_bytes);
  store_options.max_conflict_entries = static_cast<size_t>(*conflict_entries);
  store_options.max_conflict_bytes = static_cast<size_t>(*conflict_bytes);
  store_options.wall_clock = &wall_clock;
  store_options.log = [](const std::string& line) { LogLine(line); };
  // An uninitialised directory becomes the first device of user --user.
  absl::StatusOr<ServeIdentity> identity =
      PrepareServeIdentity(store_options.dir, c.args.Get("user").value_or("me"), &store_options);
  if (!identity.ok()) return Fail(c.command, identity.status());
  // Policies and groups (auth/policy.h): who may read and write what, asked
  // by the merge (the owner rule for arriving policies) and by every call.
  auto access = std::make_shared<auth::StoreAccess>(identity->identity->user());
  store_options.reserved_check =
      auth::ReservedCheckWithPolicies(identity->identity->user(), access);
  // Strong keyspaces: the mode table is the store's merge filter (the
  // barrier), so it is made first and outlives the store.
  std::unique_ptr<consensus::ConsensusLog> consensus_log;
  if (const std::optional<std::string> etcd = c.args.Get("etcd")) {
    absl::StatusOr<std::unique_ptr<consensus::EtcdConsensusLog>> created =
        consensus::EtcdConsensusLog::Create(consensus::EtcdOptions{.url = *etcd});
    if (!created.ok()) {
      return Fail(c.command, absl::Status(created.status().code(),
                                          absl::StrCat("--etcd: ", created.status().message())));
    }
    consensus_log = std::move(*created);
  }
  consensus::ModeTable modes;
  modes.SetLog([](const std::string& line) { LogLine(line); });
  modes.AttachTo(&store_options);
  // Signed records (README "Signed records"): local writes of shared
  // keyspaces are signed with this device's key and certificate (a device
  // waiting to be added holds none yet: its writes stay unsigned), and the
  // merge gate checks what peers send. The policies are read from the
  // store, so the Access is installed in the slot once it is open.
  auto signature_access = std::make_shared<auth::AccessSlot>();
  store_options.record_gate = auth::MakeRecordGate(
      signature_access, std::make_shared<auth::RecordVerifier>(), identity->identity->user());
  if (absl::StatusOr<rpc::TlsIdentity> signing = TlsIdentityOf(*identity->identity);
      signing.ok() && !signing->device_certificate.empty()) {
    store_options.signer =
        auth::MakeRecordSigner(signature_access, signing->key,
                               std::move(signing->device_certificate));
  }
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(store_options);
  if (!store.ok()) return Fail(c.command, store.status());
  access->Attach(store->get());
  signature_access->Set(access);
  // Detached before the store closes, on every return below.
  struct DetachAccess {
    auth::StoreAccess* access;
    auth::AccessSlot* slot;
    ~DetachAccess() {
      slot->Set(nullptr);
      access->Detach();
    }
  } detach_access{access.get(), signature_access.get()};
  absl::StatusOr<std::unique_ptr<JoinWatcher>> joiner = StartServeIdentity(*identity, **store);
  if (!joiner.ok()) return Fail(c.command, joiner.status());
  if (absl::Status loaded = modes.Load(**store); !loaded.ok()) {
    return Fail(c.command, loaded);
  }
  // A keyspace with a policy takes its mode from the policy (signed by its
  // owner); unset before the access detaches, on every return below.
  consensus::AuthPolicyModes policy_modes(access.get(), identity->identity.get(), store->get());
  modes.SetPolicyModes(&policy_modes);
  struct UnsetPolicyModes {
    consensus::ModeTable* modes;
    ~UnsetPolicyModes() { modes->SetPolicyModes(nullptr); }
  } unset_policy_modes{&modes};
  consensus::StrongOptions strong_options;
  strong_options.position_file = store_options.dir + "/consensus-position";
  strong_options.log = [](const std::string& line) { LogLine(line); };
  auto strong = std::make_unique<consensus::StrongKeyspaces>(
      store->get(), &modes, consensus_log.get(), strong_options);
  strong->Start();

  rpc::ServerOptions server_options;
  server_options.listen = c.args.Get("listen").value_or(kDefaultServer);
  // Local clients (the CLI with --data DIR) reach the server through DIR.
  server_options.unix_socket = ShortLocalSocketPath(store_options.dir);
  server_options.replica_name = name;
  server_options.idle_timeout_ms = static_cast<int>(*idle_ms);
  server_options.keepalive_ms = static_cast<int>(*keepalive_ms);
  server_options.replication.peers = peers;
  server_options.replication.gossip_interval = absl::Milliseconds(*gossip_ms);
  server_options.replication.fanout = static_cast<int>(*fanout);
  server_options.replication.correct_clock = correct_clock;
  server_options.replication.reconcile_interval = reconcile_interval;
  server_options.replication.snapshot_bootstrap = snapshot_bootstrap;
  server_options.snapshot_disabled = !snapshot_bootstrap;
  server_options.replication.snapshot_records = static_cast<uint32_t>(*snapshot_page_records);
  server_options.strong = strong.get();
  if (!c.args.Has("no-access-checks")) server_options.access = access;
  server_options.identity = identity->identity.get();
  if (!c.args.Has("insecure-loopback")) {
    absl::StatusOr<rpc::TlsIdentity> tls =
        ShownTlsIdentity(*identity->identity, **store, wall_clock.NowMillis());
    if (!tls.ok()) return Fail(c.command, tls.status());
    server_options.tls = std::move(*tls);
    // A handshake is the first message: no longer than the idle timeout.
    server_options.handshake_timeout_ms = std::min(10'000, static_cast<int>(*idle_ms));
    // Certificates are checked at the store's clock (--clock-offset-ms
    // moves it, for tests).
    server_options.trust = rpc::StoreTrust(identity->identity.get(), store->get(), &wall_clock);
  } else if (!rpc::IsLoopbackAddress(server_options.listen)) {
    return UsageError(c.command, absl::StrFormat("--insecure-loopback needs a loopback --listen, "
                                                 "not '%s'", server_options.listen));
  }
  // The HTTP and RESP front ends: the access tokens of this data directory
  // (HTTP bearer tokens, RESP AUTH).
  auth::TokenStore tokens(store_options.dir);
  // Their TLS (--http-tls, --resp-tls): the device's key, in a certificate
  // naming the hosts they answer on, written for clients to pin.
  std::shared_ptr<ssl_ctx_st> front_tls;
  const std::string front_pem = store_options.dir + "/front-end-cert.pem";
  if (c.args.Has("http-tls") || c.args.Has("resp-tls")) {
    std::vector<std::string> listens;
    for (const char* front : {"http", "resp"}) {
      const std::optional<std::string> listen = c.args.Get(absl::StrCat(front, "-listen"));
      if (c.args.Has(absl::StrCat(front, "-tls")) && listen.has_value()) listens.push_back(*listen);
    }
    absl::StatusOr<rpc::TlsIdentity> tls = TlsIdentityOf(*identity->identity);
    if (!tls.ok()) return Fail(c.command, tls.status());
    absl::StatusOr<std::shared_ptr<ssl_ctx_st>> made =
        http::StartFrontEndTls(*tls, listens, front_pem);
    if (!made.ok()) return Fail(c.command, made.status());
    front_tls = std::move(*made);
    LogLine(absl::StrFormat("peerkv: TLS certificate of the HTTP/RESP front ends (pin it: curl "
                            "--cacert, redis-cli --tls --cacert): %s", front_pem));
  }
  if (const std::optional<std::string> http_listen = c.args.Get("http-listen")) {
    absl::StatusOr<int64_t> http_max = c.args.GetInt("http-max-connections", 1024, 1, 1'000'000);
    if (!http_max.ok()) return Fail(c.command, http_max.status());
    http::HttpOptions http_options;
    http_options.listen = *http_listen;
    http_options.insecure_loopback = c.args.Has("http-insecure-loopback");
    http_options.verify_token = tokens.Verifier();
    if (c.args.Has("http-tls")) http_options.tls = front_tls;
    http_options.max_connections = static_cast<size_t>(*http_max);
    absl::StatusOr<int64_t> http_idle = c.args.GetInt("http-idle-timeout-ms", 30'000, 100, 3'600'000);
    if (!http_idle.ok()) return Fail(c.command, http_idle.status());
    absl::StatusOr<int64_t> http_write =
        c.args.GetInt("http-write-timeout-ms", 30'000, 100, 3'600'000);
    if (!http_write.ok()) return Fail(c.command, http_write.status());
    http_options.idle_timeout_ms = static_cast<int>(*http_idle);
    http_options.header_timeout_ms = static_cast<int>(std::min<int64_t>(*http_idle, 10'000));
    http_options.write_timeout_ms = static_cast<int>(*http_write);
    if (absl::Status ok = http::ValidateHttpOptions(http_options); !ok.ok()) {
      return Fail(c.command, ok);
    }
    server_options.front_ends.push_back(http::HttpFrontEnd(std::move(http_options)));
  } else if (c.args.Has("http-insecure-loopback") || c.args.Has("http-max-connections") ||
             c.args.Has("http-idle-timeout-ms") || c.args.Has("http-write-timeout-ms") ||
             c.args.Has("http-tls")) {
    return UsageError(c.command, "the --http-... flags need --http-listen HOST:PORT");
  }
  server_options.replication.seed = (*store)->replica_id() ^ static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
  absl::StatusOr<std::unique_ptr<rpc::Server>> server =
      rpc::Server::Start(store->get(), server_options);
  if (!server.ok()) return Fail(c.command, server.status());
  // The RESP front end (resp/server.h), beside the RPC server, on loops of
  // its own, through the same store.
  std::unique_ptr<resp::RespServer> resp_server;
  if (const std::optional<std::string> resp_listen = c.args.Get("resp-listen")) {
    absl::StatusOr<int64_t> resp_threads = c.args.GetInt("resp-threads", 1, 1, 64);
    if (!resp_threads.ok()) return Fail(c.command, resp_threads.status());
    absl::StatusOr<int64_t> resp_max =
        c.args.GetInt("resp-max-connections", 10'000, 1, 1'000'000);
    if (!resp_max.ok()) return Fail(c.command, resp_max.status());
    resp::RespOptions resp_options;
    resp_options.listen = *resp_listen;
    resp_options.insecure_loopback = c.args.Has("resp-insecure-loopback");
    resp_options.default_keyspace = c.args.Get("resp-keyspace").value_or("default");
    resp_options.threads = static_cast<int>(*resp_threads);
    resp_options.max_connections = static_cast<size_t>(*resp_max);
    resp_options.replica_name = name;
    resp_options.idle_timeout_ms = static_cast<int>(*idle_ms);
    resp_options.is_strong = [s = strong.get()](std::string_view ks) { return s->IsStrong(ks); };
    // The local user's policies, as RPC checks them (server_options.access).
    resp_options.access = server_options.access;
    resp_options.user = auth::Principal{identity->identity->user(), /*local_user=*/true};
    resp_options.peer_statuses = [s = server->get()] { return s->PeerStatuses(); };
    resp_options.log = [](const std::string& line) { LogLine(line); };
    // AUTH checks this data directory's access tokens (peerkv token create).
    resp_options.authenticate = tokens.Verifier();
    if (c.args.Has("resp-tls")) resp_options.tls = front_tls;
    absl::StatusOr<std::unique_ptr<resp::RespServer>> started =
        resp::RespServer::Start(store->get(), std::move(resp_options));
    if (!started.ok()) {
      (*server)->Stop();
      return Fail(c.command, started.status());
    }
    resp_server = std::move(*started);
    LogLine(absl::StrFormat("peerkv: RESP clients: %s (keyspace %s%s%s)",
                            resp_server->address(), c.args.Get("resp-keyspace").value_or("default"),
                            c.args.Has("resp-insecure-loopback") ? ", no authentication" : "",
                            c.args.Has("resp-tls") ? ", TLS" : ""));
  } else if (c.args.Has("resp-insecure-loopback") || c.args.Has("resp-keyspace") ||
             c.args.Has("resp-threads") || c.args.Has("resp-max-connections") ||
             c.args.Has("resp-tls")) {
    (*server)->Stop();
    return UsageError(c.command, "--resp-insecure-loopback, --resp-keyspace, --resp-threads, "
                                 "--resp-max-connections and --resp-tls need --resp-listen "
                                 "HOST:PORT");
  }
  // A device waiting to be added: once its join completes, the links it
  // makes and accepts from then on show its new device certificate.
  if (*joiner != nullptr && server_options.tls.has_value()) {
    (*joiner)->OnJoined([identity = identity->identity.get(), server = server->get(),
                         store = store->get(), &wall_clock] {
      absl::StatusOr<rpc::TlsIdentity> tls =
          ShownTlsIdentity(*identity, *store, wall_clock.NowMillis());
      absl::Status set = tls.ok() ? server->SetTlsIdentity(*tls) : tls.status();
      LogLine(set.ok() ? "peerkv: TLS links now show this device's certificate"
                       : absl::StrFormat("peerkv: TLS links keep the key alone until a restart: %s",
                                         set.message()));
    });
  }
  // Device certificates due for renewal are renewed here (README "Device
  // certificates expire"), and the one this device shows on its links.
  std::unique_ptr<CertificateRenewer> renewer = StartCertificateRenewer(
      *identity->identity, **store, wall_clock, absl::Milliseconds(*renew_interval_ms),
      server_options.tls.has_value() ? server_options.tls->device_certificate : "",
      server_options.tls.has_value()
          ? std::function<void(const rpc::TlsIdentity&)>(
                [user = identity->identity->user(), server = server->get()](
                    const rpc::TlsIdentity& tls) {
                  absl::Status set = server->SetTlsIdentity(tls);
                  absl::StatusOr<auth::DeviceCertificate> cert =
                      auth::VerifyDeviceCertificate(tls.device_certificate, user);
                  LogLine(set.ok() ? absl::StrFormat(
                                         "peerkv: TLS links now show a renewed device "
                                         "certificate, valid until %s",
                                         cert.ok() ? auth::FormatUtcMs(cert->ExpiresMs()) : "?")
                                   : absl::StrFormat(
                                         "peerkv: renewing the TLS certificate failed: %s",
                                         set.message()));
                })
          : std::function<void(const rpc::TlsIdentity&)>());
  LogLine(file_limit);
  LogLine(absl::StrFormat("peerkv: local clients: %s (owner only)",
                          LocalSocketPath(store_options.dir)));
  LogLine(absl::StrFormat("peerkv: listening on %s, data %s, replica %s%s%s%s%s",
                          (*server)->address(), store_options.dir,
                          ReplicaIdToString((*store)->replica_id()),
                          name.empty() ? "" : " (" + name + ")",
                          peers.empty() ? "" : ", peers " + absl::StrJoin(peers, " "),
                          consensus_log ? ", strong keyspaces through " + consensus_log->Describe()
                                        : "",
                          server_options.tls.has_value() ? ", TLS" : ", plaintext (loopback)"));

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  LogLine(absl::StrFormat("peerkv: %s received, stopping",
                          signal_number == SIGINT ? "SIGINT" : "SIGTERM"));
  // The join watcher and the renewer first: their callbacks reach the server.
  StopJoinWatcher(*joiner);
  renewer.reset();
  if (resp_server) resp_server->Stop();
  (*server)->Stop();
  resp_server.reset();
  server->reset();
  strong.reset();
  signature_access->Set(nullptr);
  access->Detach();
  store->reset();
  LogLine("peerkv: stopped");
  return kExitOk;
}

int RunWatch(const Context& c) {
  if (absl::Status s = ExpectPositional(c, 1, 1, "KS"); !s.ok()) return Fail(c.command, s);
  if (c.args.Has("data")) {
    return UsageError(c.command, "watch needs a running server (--server HOST:PORT), not --data");
  }
  absl::StatusOr<int64_t> from_seq =
      c.args.GetInt("from-seq", 0, 0, std::numeric_limits<int64_t>::max());
  if (!from_seq.ok()) return Fail(c.command, from_seq.status());
  absl::Duration reconnect_for = absl::Minutes(10);
  if (const std::optional<std::string> d = c.args.Get("reconnect-for")) {
    if (!absl::ParseDuration(*d, &reconnect_for) || reconnect_for < absl::ZeroDuration() ||
        reconnect_for > absl::Hours(24 * 365)) {
      return UsageError(c.command, absl::StrFormat(
          "--reconnect-for must be a duration such as 10m or 0 (never), 0..8760h, got '%s'", *d));
    }
  }
  rpc::WatchOptions options{.keyspace = c.args.positional[0],
                            .prefix = c.args.Get("prefix").value_or(""),
                            .from_seq = static_cast<uint64_t>(*from_seq)};
  // A lost server is redialled with backoff, and the watch resumes after
  // the last seq printed, until --reconnect-for passes without a server.
  absl::Duration backoff = absl::Milliseconds(100);
  absl::Time lost_at = absl::InfiniteFuture();
  for (int64_t attempts = 0;; ++attempts) {
    absl::Status status;
    bool resumed = false;
    absl::StatusOr<std::unique_ptr<rpc::Client>> client =
        rpc::Client::Connect(rpc::ClientOptions{.address = c.ServerAddress()});
    if (client.ok()) {
      status = (*client)->Watch(options, [&](const std::vector<Record>& records,
                                             uint64_t last_seq) {
        if (lost_at != absl::InfiniteFuture() && !resumed) {
          std::fprintf(stderr, "peerkv watch: reconnected to %s; resumed after seq %llu\n",
                       c.ServerAddress().c_str(),
                       static_cast<unsigned long long>(options.from_seq));
        }
        resumed = true;
        for (const Record& r : records) {
          std::printf("%s\n", RecordJson(r).c_str());
          options.from_seq = std::max(options.from_seq, r.seq);
        }
        options.from_seq = std::max(options.from_seq, last_seq);
        std::fflush(stdout);
        return true;  // until interrupted
      });
    } else {
      status = client.status();
    }
    if (status.ok()) status = absl::UnavailableError("watch ended");
    // Only a lost connection is worth a retry; a bad keyspace is not.
    if (!absl::IsUnavailable(status) && !absl::IsDeadlineExceeded(status)) {
      return Fail(c.command, status);
    }
    if (resumed || lost_at == absl::InfiniteFuture()) {
      if (attempts == 0 && !client.ok()) return Fail(c.command, status);  // never connected
      if (reconnect_for == absl::ZeroDuration()) return Fail(c.command, status);
      lost_at = absl::Now();
      backoff = absl::Milliseconds(100);
      std::fprintf(stderr, "peerkv watch: %s; reconnecting for up to %s\n",
                   std::string(status.message()).c_str(),
                   absl::FormatDuration(reconnect_for).c_str());
    } else if (absl::Now() - lost_at > reconnect_for) {
      return Fail(c.command, absl::UnavailableError(absl::StrFormat(
                                 "gave up after %s without the server: %s",
                                 absl::FormatDuration(reconnect_for), status.message())));
    }
    absl::SleepFor(backoff);  // waiting for a server to come back: time is the event
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

// Milliseconds since `t`, or -1 for never (InfinitePast).
int64_t MsSince(absl::Time t, int64_t now_ms) {
  if (t == absl::InfinitePast()) return -1;
  return std::max<int64_t>(0, now_ms - absl::ToUnixMillis(t));
}

// `status --json`: the replica's facts as info --json shows them, then
// "peers": one object per peer with what the text lines show.
std::string StatusJson(const rpc::ServerStatus& status, const std::string& address) {
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  std::vector<std::string> peers;
  for (const rpc::PeerStatus& p : status.peers) {
    std::string peer = absl::StrCat(
        "{", JsonBytesField("name", p.name), ",", JsonBytesField("address", p.address),
        ",\"replica_id\":",
        p.replica_id == 0 ? "null" : JsonString(ReplicaIdToString(p.replica_id)),
        ",\"inbound\":", p.inbound ? "true" : "false",
        ",\"reachable\":", p.reachable ? "true" : "false",
        ",\"ms_since_last_exchange\":", MsSince(p.last_exchange, now_ms),
        ",\"checkpoint_seq\":", p.checkpoint_seq, ",\"behind\":", p.behind,
        ",\"refused\":", p.refused, ",\"links\":", p.links,
        ",\"suspect_links\":", p.suspect_links, ",\"dead_links\":", p.dead_links);
    if (p.clock_known) {
      absl::StrAppend(&peer, ",\"clock_offset_ms\":", p.clock_offset_ms);
      if (p.clock_rtt_ms >= 0) absl::StrAppend(&peer, ",\"clock_rtt_ms\":", p.clock_rtt_ms);
    }
    absl::StrAppend(&peer, ",\"reconciles\":", p.reconciles);
    if (p.reconciles > 0) {
      absl::StrAppend(&peer, ",\"ms_since_last_reconcile\":", MsSince(p.last_reconcile, now_ms),
                      ",", JsonBytesField("last_reconcile_result", p.last_reconcile_result));
    }
    if (!p.last_error.empty()) absl::StrAppend(&peer, ",", JsonBytesField("error", p.last_error));
    peers.push_back(peer + "}");
  }
  return absl::StrCat("{", FactsJsonMembers(ReplicaFacts(status, status.data_dir, &status, address)),
                      ",\"peers\":[", absl::StrJoin(peers, ","), "],\"peers_omitted\":",
                      status.peers_omitted, "}");
}

int RunStatus(const Context& c) {
  if (absl::Status s = ExpectPositional(c, 0, 0, "no arguments"); !s.ok()) {
    return Fail(c.command, s);
  }
  if (c.args.Has("data")) {
    return UsageError(c.command, "status asks a running server (--server HOST:PORT); "
                                 "use 'info' for a data directory");
  }
  absl::StatusOr<std::unique_ptr<rpc::Client>> client =
      rpc::Client::Connect(rpc::ClientOptions{.address = c.ServerAddress()});
  if (!client.ok()) return Fail(c.command, client.status());
  absl::StatusOr<rpc::ServerStatus> status = (*client)->Status();
  if (!status.ok()) return Fail(c.command, status.status());
  if (c.args.Has("json")) {
    std::printf("%s\n", StatusJson(*status, c.ServerAddress()).c_str());
    return kExitOk;
  }
  for (const auto& [name, value] :
       ReplicaFacts(*status, status->data_dir, &*status, c.ServerAddress())) {
    std::printf("%s: %s\n", name.c_str(), value.c_str());
  }
  std::printf("peers: %zu\n", status->peers.size() + status->peers_omitted);
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  for (const rpc::PeerStatus& p : status->peers) {
    const std::string last =
        p.last_exchange == absl::InfinitePast()
            ? "never"
            : absl::StrFormat("%.1fs ago",
                              std::max<int64_t>(0, now_ms - absl::ToUnixMillis(p.last_exchange)) /
                                  1000.0);
    std::printf("  %s %s %s %s last-exchange=%s checkpoint=%llu behind=%llu refused=%llu "
                "links=%u suspect-links=%u dead-links=%llu%s%s\n",
                p.name.empty() ? "-" : p.name.c_str(),
                p.address.empty() ? "(inbound)" : p.address.c_str(),
                p.replica_id == 0 ? "-" : ReplicaIdToString(p.replica_id).c_str(),
                p.reachable ? "reachable" : "unreachable", last.c_str(),
                static_cast<unsigned long long>(p.checkpoint_seq),
                static_cast<unsigned long long>(p.behind),
                static_cast<unsigned long long>(p.refused), p.links, p.suspect_links,
                static_cast<unsigned long long>(p.dead_links),
                !p.clock_known ? ""
                : p.clock_rtt_ms < 0
                    ? absl::StrFormat(" clock-offset=%+dms", p.clock_offset_ms).c_str()
                    : absl::StrFormat(" clock-offset=%+dms rtt=%dms", p.clock_offset_ms,
                                      p.clock_rtt_ms)
                          .c_str(),
                p.last_error.empty() ? "" : (" error=\"" + p.last_error + "\"").c_str());
    if (p.reconciles > 0) {
      std::printf("    reconciles=%llu last-reconcile=%.1fs ago: %s\n",
                  static_cast<unsigned long long>(p.reconciles),
                  std::max<int64_t>(0, now_ms - absl::ToUnixMillis(p.last_reconcile)) / 1000.0,
                  p.last_reconcile_result.c_str());
    }
  }
  if (status->peers_omitted > 0) {
    std::printf("  ... and %u more (not listed: the answer would exceed the message limit)\n",
                status->peers_omitted);
  }
  return kExitOk;
}

int RunPeer(const Context& c) {
  if (absl::Status s = ExpectPositional(c, 2, 2, "forget PEER"); !s.ok()) return Fail(c.command, s);
  if (c.args.positional[0] != "forget") {
    return UsageError(c.command, absl::StrFormat("unknown subcommand '%s'; peerkv peer forget PEER",
                                                 c.args.positional[0]));
  }
  if (c.args.Has("data")) {
    return UsageError(c.command,
                      "peer forget changes a running server (--server HOST:PORT); a data "
                      "directory opened embedded has no peers");
  }
  absl::StatusOr<std::unique_ptr<rpc::Client>> client =
      rpc::Client::Connect(rpc::ClientOptions{.address = c.ServerAddress()});
  if (!client.ok()) return Fail(c.command, client.status());
  absl::StatusOr<uint64_t> id = (*client)->ForgetPeer(c.args.positional[1]);
  if (!id.ok()) return Fail(c.command, id.status());
  std::printf("forgot peer %s: tombstones it held back may be collected; what it sends later "
              "that is older than what it had acknowledged is refused\n",
              ReplicaIdToString(*id).c_str());
  return kExitOk;
}

int RunReconcile(const Context& c) {
  if (absl::Status s = ExpectPositional(c, 1, 1, "PEER"); !s.ok()) return Fail(c.command, s);
  if (c.args.Has("data")) {
    return UsageError(c.command,
                      "reconcile compares a running server with one of its peers "
                      "(--server HOST:PORT); a data directory opened embedded has no peers");
  }
  // A session may take many rounds: allow it the engine's limit and more.
  absl::StatusOr<std::unique_ptr<rpc::Client>> client = rpc::Client::Connect(
      rpc::ClientOptions{.address = c.ServerAddress(), .timeout = absl::Seconds(120)});
  if (!client.ok()) return Fail(c.command, client.status());
  absl::StatusOr<replication::ReconcileReport> report = (*client)->Reconcile(c.args.positional[0]);
  if (!report.ok()) return Fail(c.command, report.status());
  std::printf("peer: %s\n", report->peer.c_str());
  std::printf("result: %s\n", report->was_in_sync ? "in sync"
                               : report->in_sync ? "repaired, now in sync"
                                                 : "still different");
  for (const replication::KeyspaceDiff& d : report->keyspaces) {
    std::printf("keyspace %s: fetched %llu, peer lacked %llu\n", d.keyspace.c_str(),
                static_cast<unsigned long long>(d.fetched),
                static_cast<unsigned long long>(d.peer_lacked));
  }
  if (report->conflicts > 0) {
    std::printf("conflicts: %llu (equal versions with different values: a cloned directory?)\n",
                static_cast<unsigned long long>(report->conflicts));
  }
  if (report->refused_here + report->refused_there > 0) {
    std::printf("refused: %llu here, %llu by the peer (clock too far ahead, or invalid)\n",
                static_cast<unsigned long long>(report->refused_here),
                static_cast<unsigned long long>(report->refused_there));
  }
  if (!report->incomplete.empty()) std::printf("incomplete: %s\n", report->incomplete.c_str());
  std::printf("rounds: %d, bytes sent %llu, received %llu, %s\n", report->rounds,
              static_cast<unsigned long long>(report->bytes_sent),
              static_cast<unsigned long long>(report->bytes_received),
              absl::FormatDuration(report->time).c_str());
  return report->in_sync ? kExitOk : kExitFailure;
}

// Deletes every live key of `keyspace` on the server, a page at a time;
// returns how many. Tombstones remain, as after any delete.
absl::StatusOr<uint64_t> DeleteKeyspace(const Context& c, const std::string& keyspace) {
  absl::StatusOr<std::unique_ptr<rpc::Client>> client =
      rpc::Client::Connect(rpc::ClientOptions{.address = c.ServerAddress()});
  if (!client.ok()) return client.status();
  uint64_t deleted = 0;
  ScanOptions page;
  page.limit = 1000;
  // Bounded: each page deletes what it lists, so the keyspace shrinks.
  for (int pages = 0; pages < 1'000'000; ++pages) {
    absl::StatusOr<ScanResult> result = (*client)->Scan(keyspace, page);
    if (!result.ok()) return result.status();
    if (result->records.empty()) return deleted;
    std::vector<Mutation> deletes;
    for (const Record& r : result->records) deletes.push_back(Mutation{keyspace, r.key, {}});
    absl::StatusOr<std::vector<Version>> written = (*client)->WriteBatch(std::move(deletes));
    if (!written.ok()) return written.status();
    deleted += written->size();
    page.start_after = result->records.back().key;
    if (!result->more) return deleted;
  }
  return deleted;
}

int RunBench(const Context& c) {
  if (absl::Status s = ExpectPositional(c, 0, 0, "no arguments"); !s.ok()) {
    return Fail(c.command, s);
  }
  if (c.args.Has("data")) {
    return UsageError(c.command, "bench loads a running server (--server HOST:PORT), not --data");
  }
  rpc::LoadOptions options;
  options.address = c.ServerAddress();
  if (auto tls = rpc::DefaultClientTls()) {  // --identity DIR
    options.tls = std::move(tls->first);
    options.server_user = tls->second;
  }
  absl::StatusOr<int64_t> clients = c.args.GetInt("c", 50, 1, 10'000);
  absl::StatusOr<int64_t> requests = c.args.GetInt("n", 100'000, 1, int64_t{1} << 40);
  absl::StatusOr<int64_t> pipeline = c.args.GetInt("P", 1, 1, 1'000);
  absl::StatusOr<int64_t> value_bytes = c.args.GetInt("d", 3, 0, kMaxValueBytes);
  absl::StatusOr<int64_t> key_space = c.args.GetInt("r", 100'000, 1, int64_t{1} << 40);
  for (const auto* v : {&clients, &requests, &pipeline, &value_bytes, &key_space}) {
    if (!v->ok()) return Fail(c.command, v->status());
  }
  options.clients = static_cast<int>(*clients);
  options.requests = *requests;
  options.pipeline = static_cast<int>(*pipeline);
  options.value_bytes = static_cast<size_t>(*value_bytes);
  options.key_space = *key_space;
  if (const std::optional<std::string> tests = c.args.Get("t")) {
    options.operations.clear();
    for (absl::string_view op : absl::StrSplit(*tests, ',', absl::SkipEmpty())) {
      std::string name(op);
      if (name == "set") name = "put";  // redis-benchmark's name for it
      if (name != "get" && name != "put") {
        return UsageError(c.command, absl::StrFormat("-t: unknown test '%s'; use get,put", name));
      }
      options.operations.push_back(name);
    }
  }
  if (const std::optional<std::string> ks = c.args.Get("keyspace")) {
    if (absl::Status valid = ValidateKeyspace(*ks); !valid.ok()) return Fail(c.command, valid);
    options.keyspace = *ks;
  }
  const bool cleanup = c.args.Has("cleanup");
  if (c.args.Has("no-run") && !cleanup) {
    return UsageError(c.command, "--no-run goes with --cleanup (delete only, no load)");
  }
  // --cleanup --no-run: only delete what an earlier run left.
  if (!c.args.Has("no-run")) {
    absl::StatusOr<std::vector<rpc::LoadReport>> reports = rpc::RunLoad(options);
    if (!reports.ok()) return Fail(c.command, reports.status());
    for (const rpc::LoadReport& r : *reports) std::printf("%s\n", rpc::FormatReport(r).c_str());
  }
  if (!cleanup) return kExitOk;
  absl::StatusOr<uint64_t> deleted = DeleteKeyspace(c, options.keyspace);
  if (!deleted.ok()) return Fail(c.command, deleted.status());
  std::printf("cleanup: deleted %llu keys of keyspace %s\n",
              static_cast<unsigned long long>(*deleted), options.keyspace.c_str());
  return kExitOk;
}

}  // namespace

const std::vector<Command>& ServerCommands() {
  static const auto* commands = new std::vector<Command>{
      {"serve",
       "[--listen HOST:PORT] [--peer HOST:PORT]... [--replica-name NAME] [...]",
       "run a replica server in the foreground",
       "Serves the store in DIR (default ./peerkv-data) over Cap'n Proto RPC to\n"
       "clients and peer replicas, and keeps it in sync with its peers.\n"
       "Logs one line when listening and when stopped, and one per rejected\n"
       "request. SIGINT or SIGTERM: stop accepting, finish in-flight requests,\n"
       "close the store, exit 0.\n"
       "  --listen HOST:PORT        default 127.0.0.1:7700; port 0 picks a free port\n"
       "  --peer HOST:PORT          a peer to dial and keep in sync with (repeatable);\n"
       "                            peers that dial in are kept in sync too\n"
       "  --replica-name NAME       a human name shown in status and logs (<= 64 bytes)\n"
       "  --user NAME               on an uninitialised DIR: initialise it as\n"
       "                            'init --user NAME' would (default 'me')\n"
       "  --gossip-interval-ms N    time between gossip rounds (default 1000)\n"
       "  --fanout N                peers exchanged with per round (default 2)\n"
       "  --idle-timeout-ms N       close connections that send no whole message within\n"
       "                            N ms of opening or of a message's first bytes\n"
       "                            (default 60000; 100..3600000)\n"
       "  --keepalive-ms N          ping every replication link every N ms; a link whose\n"
       "                            ping is unanswered for 5 N ms is closed and redialled\n"
       "                            (default 2000; 100..600000)\n"
       "  --max-clock-skew D        hold back remote writes further ahead of real time\n"
       "                            (as peers' clocks tell) than duration D (default 60s;\n"
       "                            or --max-clock-skew-ms N): they wait in quarantine\n"
       "                            until real time allows\n"
       "  --max-quarantine-records N  records kept in quarantine (default 10000); one\n"
       "                            more is dropped, logged and counted\n"
       "  --max-quarantine-bytes N  bytes kept in quarantine (default 67108864)\n"
       "  --max-conflict-entries N  values kept per keyspace in the conflict journal\n"
       "                            (`peerkv conflicts`; default 1000, 1..1000000); the\n"
       "                            oldest are dropped beyond it, and counted\n"
       "  --max-conflict-bytes N    bytes kept per keyspace in it (default 16777216,\n"
       "                            1..1073741824)\n"
       "  --clock-correction B      true (default): a clock ahead of its peers' by more\n"
       "                            than D/2 stamps writes from the corrected time, and\n"
       "                            a clock mark far ahead forks to a fresh clock;\n"
       "                            false: only show and log the estimate\n"
       "  --max-value-bytes N       lower the value limit (at most 4194304)\n"
       "  --reconcile-interval D    compare every peer's whole store with ours (range\n"
       "                            fingerprints) this often, and when the fingerprints\n"
       "                            differ after pulls found nothing behind, and repair\n"
       "                            what differs; 0 turns both off (default 10m;\n"
       "                            100ms..168h). A peer whose log started over is\n"
       "                            reconciled with whatever the interval\n"
       "  --tombstone-min-age D     collect a tombstone only once it is at least D old\n"
       "                            and every peer met acknowledged holding it (default\n"
       "                            168h; 0..87600h); see peer forget\n"
       "  --tombstone-collect-interval D  run a collection pass this often (default\n"
       "                            1m; 10ms..24h)\n"
       "  --snapshot-bootstrap B    true (default): a replica that holds nothing copies\n"
       "                            a peer's registers in key order, then pulls its log\n"
       "                            from there; false: it pulls the whole log, and peers'\n"
       "                            snapshot requests are refused\n"
       "  --etcd http://HOST:PORT   the consensus service for strong keyspaces (etcd v3);\n"
       "                            without it strong writes and linearizable reads are\n"
       "                            refused (unavailable) and committed strong writes\n"
       "                            still arrive from peers\n"
       "  --insecure-loopback       no TLS on --listen and on the links this server\n"
       "                            dials (benchmark baselines only; refused unless\n"
       "                            --listen is a loopback address). Without it every\n"
       "                            TCP connection is TLS 1.3, pinned by device key\n"
       "  --http-listen HOST:PORT   also serve the HTTP/JSON API, watches as\n"
       "                            server-sent events, /metrics and the status page\n"
       "                            (README \"HTTP API\"); a loopback address unless\n"
       "                            --http-tls; requests need 'Authorization: Bearer\n"
       "                            TOKEN' (peerkv token create NAME)\n"
       "  --http-tls                HTTPS on --http-listen (TLS 1.3, this device's key;\n"
       "                            clients pin DIR/front-end-cert.pem); needed for a\n"
       "                            non-loopback address\n"
       "  --http-insecure-loopback  serve HTTP without tokens (loopback only)\n"
       "  --http-max-connections N  HTTP connections at once; more are answered 503\n"
       "                            (default 1024)\n"
       "  --http-idle-timeout-ms N  close an idle keep-alive HTTP connection after N ms;\n"
       "                            a request's headers must arrive within min(N, 10 s)\n"
       "                            (default 30000)\n"
       "  --http-write-timeout-ms N close an HTTP connection whose client does not take\n"
       "                            a response or watch event within N ms (default 30000)\n"
       "  --resp-listen HOST:PORT   serve Redis clients (RESP2/RESP3) there too (see README:\n"
       "                            RESP); needs AUTH unless --resp-insecure-loopback\n"
       "  --resp-tls                TLS on --resp-listen (as --http-tls); needed for a\n"
       "                            non-loopback address\n"
       "  --resp-insecure-loopback  serve RESP without authentication; only on a\n"
       "                            loopback --resp-listen (benchmarks, local tools)\n"
       "  --resp-keyspace KS        the keyspace of a RESP connection and of SELECT 0\n"
       "                            (default 'default'); SELECT ks:NAME picks another\n"
       "  --resp-threads N          RESP event loops on the port (SO_REUSEPORT; default 1)\n"
       "  --resp-max-connections N  RESP connections at once; one more is answered -ERR\n"
       "                            and closed (default 10000)\n"
       "  --clock-offset-ms N       testing only: shift this replica's clock by N ms\n"
       "  --renew-interval-ms N     testing only: the certificate renewal pass runs\n"
       "                            every N ms (default 3600000, an hour; 10..86400000)\n"
       "  --snapshot-page-records N testing only: registers per snapshot page asked for\n"
       "                            (default 50000; 1..65536)\n"
       "  --no-access-checks        benchmark baselines only: Kv calls are not checked\n"
       "                            against policies and a friend's device gets no Kv\n"
       "                            (the behaviour before policies)\n",
       {.with_value = {"listen", "max-value-bytes", "replica-name", "user", "peer", "gossip-interval-ms",
                       "idle-timeout-ms", "keepalive-ms",
                       "fanout", "max-clock-skew", "max-clock-skew-ms", "clock-offset-ms",
                       "renew-interval-ms",
                       "max-quarantine-records", "max-quarantine-bytes", "clock-correction",
                       "reconcile-interval", "etcd", "http-listen", "http-max-connections",
                       "http-idle-timeout-ms", "http-write-timeout-ms", "resp-listen",
                       "resp-keyspace", "resp-threads", "resp-max-connections", "tombstone-min-age",
                       "tombstone-collect-interval", "max-conflict-entries",
                       "max-conflict-bytes", "snapshot-bootstrap", "snapshot-page-records"},
        .switches = {"http-insecure-loopback", "resp-insecure-loopback", "insecure-loopback",
                     "no-access-checks", "http-tls", "resp-tls"},
        .repeatable = {"peer"}},
       RunServe, Target::kData},
      {"watch", "KS [--prefix P] [--from-seq N] [--reconnect-for D]",
       "print changes to KS as they commit",
       "Prints one JSON object per line per change, in commit order, until\n"
       "interrupted. --from-seq N starts after seq N (each line carries its seq);\n"
       "the default 0 first replays the latest version of every key.\n"
       "A watcher that falls behind sees the latest value of each key it missed.\n"
       "When the server goes away (a restart), watch says so on stderr, dials\n"
       "again with backoff (100 ms doubling to 2 s) and resumes after the last\n"
       "seq it printed, so no change is printed twice or missed:\n"
       "  --reconnect-for D   give up (exit 1) after D without a server\n"
       "                      (default 10m; 0: exit when the connection is lost)\n",
       {.with_value = {"prefix", "from-seq", "reconnect-for"}}, RunWatch, Target::kServer},
      {"status", "[--json]", "show a running server's replica, counters, clients and peers",
       "Prints the replica's facts, then one line per peer: name, address,\n"
       "replica id, reachable or not, time since the last successful exchange,\n"
       "our checkpoint in its log, how many of its changes we have not pulled\n"
       "yet (behind), how many of its records we refused (each once: clock too\n"
       "far ahead, then held in quarantine, or invalid), and its links: connections\n"
       "now, suspect ones (a pull or nudge on them went unanswered) and dead ones\n"
       "closed since start; then its clock offset (its wall clock minus ours) as\n"
       "estimated at its last hello, with the round trip that bounds the error when\n"
       "we dialled. A peer reconciled with since start has a second line:\n"
       "sessions, when the last one ended and what it found.\n"
       "  --json   one JSON object: the facts (as info --json) and \"peers\", a list\n"
       "           of objects with the same per-peer facts (ms_since_* are -1 for\n"
       "           never)\n",
       {.switches = {"json"}}, RunStatus, Target::kServer},
      {"reconcile", "PEER", "compare a running server with its peer PEER now and repair",
       "PEER is a peer's name, address or replica id as status shows it. The\n"
       "server compares its registers with PEER's by range fingerprints (one\n"
       "small round when they are equal), fetches what PEER holds newer and\n"
       "sends PEER what it lacks, both merged as replication merges. Prints per\n"
       "keyspace the records fetched and the records the peer lacked, then the\n"
       "rounds and bytes. Exits 0 when the two end in sync, 1 otherwise.\n"
       "Needs a running server (--server HOST:PORT): an embedded data directory\n"
       "(--data) has no peers to compare with.\n",
       {}, RunReconcile, Target::kServer},
      {"peer", "forget PEER", "stop waiting for a gone peer before collecting tombstones",
       "PEER is a peer's name, address or replica id as status shows it (a peer\n"
       "not linked now: its replica id, from status's tombstones_held line).\n"
       "A tombstone is collected only once every peer this replica met has\n"
       "acknowledged holding it, so a peer that stays away holds collection\n"
       "back. peer forget releases it: what it acknowledged last is kept, and a\n"
       "record it sends later that that covers (older than what it was\n"
       "forgotten with) and that would win here is refused as stale; it counts\n"
       "again once it links again. Exits 1 (NotFound) for a peer this replica\n"
       "does not wait for.\n",
       {}, RunPeer, Target::kServer},
      {"bench",
       "[-c CLIENTS] [-n REQUESTS] [-P PIPELINE] [-t get,put] [-d VALUE_BYTES] [-r KEYS] "
       "[--keyspace KS] [--cleanup [--no-run]]",
       "load a running server and report requests per second and latency",
       "Opens CLIENTS connections (default 50), each with PIPELINE requests in\n"
       "flight (default 1), and sends REQUESTS (default 100000) of each test in\n"
       "turn (default put,get; 'set' is accepted for put). Keys are key:N with N\n"
       "uniform below KEYS (default 100000); values are VALUE_BYTES (default 3).\n"
       "Prints one line per test in redis-benchmark's quiet layout.\n"
       "  --keyspace KS   the keyspace it writes (default 'bench', a keyspace of its\n"
       "                  own: it never touches another)\n"
       "  --cleanup       afterwards delete every key of that keyspace (with\n"
       "                  --no-run: only that); tombstones stay, as after any del\n",
       {.with_value = {"c", "n", "P", "t", "d", "r", "keyspace"}, .switches = {"cleanup", "no-run"}},
       RunBench, Target::kServer},
  };
  return *commands;
}

}  // namespace peerkv::cli
