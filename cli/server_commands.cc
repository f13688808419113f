// cli/server_commands.cc: serve (run a replica server), and the commands
// that only make sense against one: watch and status.
#include <signal.h>
#include <string.h>

#include <cstdio>

#include "absl/strings/str_format.h"
#include "cli/command.h"
#include "cli/identity.h"
#include "cli/text.h"
#include "common/log.h"
#include "consensus/etcd/etcd_consensus_log.h"
#include "consensus/strong_keyspaces.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "rpc/client.h"
#include "rpc/load.h"
#include "replication/transport.h"
#include "rpc/server.h"
#include "store/store.h"

namespace peerkv::cli {
namespace {

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
  absl::StatusOr<int64_t> quarantine_records =
      c.args.GetInt("max-quarantine-records", 10'000, 0, 10'000'000);
  if (!quarantine_records.ok()) return Fail(c.command, quarantine_records.status());
  absl::StatusOr<int64_t> quarantine_bytes =
      c.args.GetInt("max-quarantine-bytes", int64_t{64} << 20, 0, int64_t{1} << 40);
  if (!quarantine_bytes.ok()) return Fail(c.command, quarantine_bytes.status());
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
  store_options.max_quarantine_records = static_cast<size_t>(*quarantine_records);
  store_options.max_quarantine_bytes = static_cast<size_t>(*quarantine_bytes);
  store_options.wall_clock = &wall_clock;
  store_options.log = [](const std::string& line) { LogLine(line); };
  // An uninitialised directory becomes the first device of user --user.
  absl::StatusOr<ServeIdentity> identity =
      PrepareServeIdentity(store_options.dir, c.args.Get("user").value_or("me"), &store_options);
  if (!identity.ok()) return Fail(c.command, identity.status());
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
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(store_options);
  if (!store.ok()) return Fail(c.command, store.status());
  absl::StatusOr<std::unique_ptr<JoinWatcher>> joiner = StartServeIdentity(*identity, **store);
  if (!joiner.ok()) return Fail(c.command, joiner.status());
  if (absl::Status loaded = modes.Load(**store); !loaded.ok()) {
    return Fail(c.command, loaded);
  }
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
  server_options.strong = strong.get();
  if (!c.args.Has("insecure-loopback")) {
    absl::StatusOr<rpc::TlsIdentity> tls = TlsIdentityOf(*identity->identity);
    if (!tls.ok()) return Fail(c.command, tls.status());
    server_options.tls = std::move(*tls);
    // A handshake is the first message: no longer than the idle timeout.
    server_options.handshake_timeout_ms = std::min(10'000, static_cast<int>(*idle_ms));
    server_options.trust = rpc::StoreTrust(identity->identity.get(), store->get());
  } else if (!rpc::IsLoopbackAddress(server_options.listen)) {
    return UsageError(c.command, absl::StrFormat("--insecure-loopback needs a loopback --listen, "
                                                 "not '%s'", server_options.listen));
  }
  server_options.replication.seed = (*store)->replica_id() ^ static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
  absl::StatusOr<std::unique_ptr<rpc::Server>> server =
      rpc::Server::Start(store->get(), server_options);
  if (!server.ok()) return Fail(c.command, server.status());
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
  (*server)->Stop();
  server->reset();
  strong.reset();
  StopJoinWatcher(*joiner);
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
  absl::StatusOr<std::unique_ptr<rpc::Client>> client =
      rpc::Client::Connect(rpc::ClientOptions{.address = c.ServerAddress()});
  if (!client.ok()) return Fail(c.command, client.status());
  rpc::WatchOptions options{.keyspace = c.args.positional[0],
                            .prefix = c.args.Get("prefix").value_or(""),
                            .from_seq = static_cast<uint64_t>(*from_seq)};
  absl::Status status = (*client)->Watch(options, [](const std::vector<Record>& records,
                                                      uint64_t) {
    for (const Record& r : records) std::printf("%s\n", RecordJson(r).c_str());
    std::fflush(stdout);
    return true;  // until interrupted
  });
  return Fail(c.command, status.ok() ? absl::UnavailableError("watch ended") : status);
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
  absl::StatusOr<std::vector<rpc::LoadReport>> reports = rpc::RunLoad(options);
  if (!reports.ok()) return Fail(c.command, reports.status());
  for (const rpc::LoadReport& r : *reports) std::printf("%s\n", rpc::FormatReport(r).c_str());
  return kExitOk;
}

}  // namespace

const std::vector<Command>& ServerCommands() {
  static const auto* commands = new std::vector<Command>{
      {"serve",
       "[--data DIR] [--listen HOST:PORT] [--peer HOST:PORT]... [--replica-name NAME] [...]",
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
       "  --etcd http://HOST:PORT   the consensus service for strong keyspaces (etcd v3);\n"
       "                            without it strong writes and linearizable reads are\n"
       "                            refused (unavailable) and committed strong writes\n"
       "                            still arrive from peers\n"
       "  --insecure-loopback       no TLS on --listen and on the links this server\n"
       "                            dials (benchmark baselines only; refused unless\n"
       "                            --listen is a loopback address). Without it every\n"
       "                            TCP connection is TLS 1.3, pinned by device key\n"
       "  --clock-offset-ms N       testing only: shift this replica's clock by N ms\n",
       {.with_value = {"listen", "max-value-bytes", "replica-name", "user", "peer", "gossip-interval-ms",
                       "idle-timeout-ms", "keepalive-ms",
                       "fanout", "max-clock-skew", "max-clock-skew-ms", "clock-offset-ms",
                       "max-quarantine-records", "max-quarantine-bytes", "clock-correction",
                       "reconcile-interval", "etcd"},
        .switches = {"insecure-loopback"},
        .repeatable = {"peer"}},
       RunServe},
      {"watch", "KS [--prefix P] [--from-seq N]", "print changes to KS as they commit",
       "Prints one JSON object per line per change, in commit order, until\n"
       "interrupted. --from-seq N starts after seq N (each line carries its seq);\n"
       "the default 0 first replays the latest version of every key.\n"
       "A watcher that falls behind sees the latest value of each key it missed.\n",
       {.with_value = {"prefix", "from-seq"}}, RunWatch},
      {"status", "", "show a running server's replica, counters, clients and peers",
       "Prints the replica's facts, then one line per peer: name, address,\n"
       "replica id, reachable or not, time since the last successful exchange,\n"
       "our checkpoint in its log, how many of its changes we have not pulled\n"
       "yet (behind), how many of its records we refused (each once: clock too\n"
       "far ahead, then held in quarantine, or invalid), and its links: connections\n"
       "now, suspect ones (a pull or nudge on them went unanswered) and dead ones\n"
       "closed since start; then its clock offset (its wall clock minus ours) as\n"
       "estimated at its last hello, with the round trip that bounds the error when\n"
       "we dialled. A peer reconciled with since start has a second line:\n"
       "sessions, when the last one ended and what it found.\n",
       {}, RunStatus},
      {"reconcile", "PEER", "compare a running server with its peer PEER now and repair",
       "PEER is a peer's name, address or replica id as status shows it. The\n"
       "server compares its registers with PEER's by range fingerprints (one\n"
       "small round when they are equal), fetches what PEER holds newer and\n"
       "sends PEER what it lacks, both merged as replication merges. Prints per\n"
       "keyspace the records fetched and the records the peer lacked, then the\n"
       "rounds and bytes. Exits 0 when the two end in sync, 1 otherwise.\n"
       "Needs a running server (--server HOST:PORT): an embedded data directory\n"
       "(--data) has no peers to compare with.\n",
       {}, RunReconcile},
      {"bench", "[-c CLIENTS] [-n REQUESTS] [-P PIPELINE] [-t get,put] [-d VALUE_BYTES] [-r KEYS]",
       "load a running server and report requests per second and latency",
       "Opens CLIENTS connections (default 50), each with PIPELINE requests in\n"
       "flight (default 1), and sends REQUESTS (default 100000) of each test in\n"
       "turn (default put,get; 'set' is accepted for put). Keys are key:N with N\n"
       "uniform below KEYS (default 100000); values are VALUE_BYTES (default 3).\n"
       "Prints one line per test in redis-benchmark's quiet layout.\n",
       {.with_value = {"c", "n", "P", "t", "d", "r"}}, RunBench},
  };
  return *commands;
}

}  // namespace peerkv::cli
