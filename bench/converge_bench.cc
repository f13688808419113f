// bench/converge_bench.cc: how fast replicas converge, how many gossip
// rounds and bytes it takes, and how fast a fresh replica pulls a big store.
// Replica servers run in this process, each with its own durable store in a
// temporary directory, talking Cap'n Proto RPC over real loopback TCP.
//
//   spread:   R replicas in a full mesh; writes spread over all of them;
//             measured from the last write until all are identical.
//   heal:     two halves, each a full mesh, write apart and converge
//             within the half; then every replica dials the other half;
//             measured from that moment until all are identical.
// Each runs "eager" (the default: nudges after every commit, pulls when a
// link comes up) and "gossip" (only rounds move data), so the rounds bound
// is checked on gossip alone.
//
//   pull:     N records (100-byte values, doc ids doc-0000000..) are
//             loaded into one replica with Store::Write, 1000 per call (what
//             putMany does), then a fresh replica pulls them from it; twice,
//             with the ids written in order ("sequential") and in a random
//             order ("random": the case of UUIDs and hashes). Each load and
//             pull is set against raw LMDB puts of the same keys and values
//             in the same order, measured in the same run right before and
//             after it: 1000 per durable transaction, and as many as a
//             pulled page holds; then the cost of a gossip exchange between
//             the two, now in sync. --pull-repeats runs of each, medians.
//
// Identical means equal store fingerprints (see StoreStats::fingerprint).
// Output: CSV files in --out (converge.csv, curve.csv, pull.csv) and a
// summary on stdout.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "bench/baseline.h"
#include "common/macros.h"
#include "auth/certificate.h"
#include "auth/keys.h"
#include "rpc/peer_auth.h"
#include "rpc/server.h"
#include "store/store.h"

namespace peerkv {
namespace {

struct Flags {
  std::vector<int> replicas = {3, 10, 30};
  int writes = 3000;
  int value_bytes = 100;
  int interval_ms = 100;
  int fanout = 2;
  int pull_records = 1'000'000;
  // Key orders of the pull runs: "sequential", "random" or both.
  std::vector<std::string> pull_orders = {"sequential", "random"};
  bool converge = true;
  // Records per pulled page (the replicator's batch_records); 0: its
  // default. The raw baseline uses the same transaction size.
  int pull_batch_records = 0;
  int pull_batch_bytes = 0;
  // Each pull run (load, baselines, pull) this many times, the orders
  // interleaved; medians of the ratios are printed.
  int pull_repeats = 3;
  std::string out = "bench/out";
  std::string dir = "/var/tmp";
  // Links of the pull runs: plaintext ("off"), TLS 1.3 ("on"), or each
  // in turn in the same run ("both"; --tls).
  std::vector<bool> pull_tls = {false};
  // The replicas' log lines on stderr (--log).
  bool log = false;
};

struct Node {
  std::unique_ptr<Store> store;
  std::unique_ptr<rpc::Server> server;
};

class Cluster {
 public:
  // Only replica `snapshot_node` (if any) bootstraps from a snapshot; the
  // others pull the whole log, as every replica did before snapshots (the
  // convergence runs and the fresh-pull baseline measure that).
  Cluster(const std::string& dir, int replicas, const Flags& flags, bool eager,
          int snapshot_node = -1, bool tls = false) {
    // With TLS: every replica a device certified by one user.
    std::unique_ptr<auth::SigningKey> user = auth::SigningKey::Generate();
    const auth::PublicKey user_id = user->public_key();
    for (int i = 0; i < replicas; ++i) {
      Node n;
      StoreOptions so;
      so.dir = absl::StrFormat("%s/r%d", dir, i);
      so.initial_map_bytes = size_t{1} << 30;
      // Over TLS, replica ids are minted from the device key (peers check).
      std::shared_ptr<const auth::SigningKey> device = auth::SigningKey::Generate();
      if (tls) so.replica_id_key = std::string(device->public_key().view());
      absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(so);
      PEERKV_CHECK(store.ok());
      n.store = std::move(*store);
      rpc::ServerOptions opts;
      opts.listen = "127.0.0.1:0";
      opts.replica_name = absl::StrFormat("r%d", i);
      opts.replication.gossip_interval = absl::Milliseconds(flags.interval_ms);
      opts.replication.fanout = flags.fanout;
      opts.replication.eager = eager;
      opts.replication.seed = 1000 + i;
      if (flags.log) {
        // --log: the replicas' log lines, named and timed, on stderr.
        opts.replication.log = [i](const std::string& line) {
          std::fprintf(stderr, "[r%d %s] %s\n", i,
                       absl::FormatTime("%H:%M:%E3S", absl::Now(), absl::UTCTimeZone()).c_str(),
                       line.c_str());
        };
      } else {
        opts.replication.log = [](const std::string&) {};
      }
      opts.replication.snapshot_bootstrap = i == snapshot_node;
      if (flags.pull_batch_records > 0) opts.replication.batch_records = flags.pull_batch_records;
      if (flags.pull_batch_bytes > 0) opts.replication.batch_bytes = flags.pull_batch_bytes;
      if (tls) {
        opts.tls = rpc::TlsIdentity{
            device, auth::IssueDeviceCertificate(*user, device->public_key(), "bench",
                                                 absl::ToUnixMillis(absl::Now()))
                        .Encode()};
        opts.trust = [user_id]() -> absl::StatusOr<rpc::TrustView> {
          return rpc::TrustView{user_id, {}, {}};
        };
      }
      absl::StatusOr<std::unique_ptr<rpc::Server>> server = rpc::Server::Start(n.store.get(), opts);
      PEERKV_CHECK(server.ok());
      n.server = std::move(*server);
      nodes_.push_back(std::move(n));
    }
  }
  ~Cluster() {
    for (Node& n : nodes_) n.server.reset();
  }

  int size() const { return static_cast<int>(nodes_.size()); }
  Node& node(int i) { return nodes_[i]; }

  // i dials j (the link serves both directions).
  void Link(int i, int j) { nodes_[i].server->AddPeer(nodes_[j].server->address()); }

  // Waits until replica i sees `peers` reachable peers, for every i.
  bool WaitLinked(const std::vector<int>& peers, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      bool all = true;
      for (int i = 0; i < size() && all; ++i) {
        int reachable = 0;
        for (const auto& p : nodes_[i].server->PeerStatuses()) reachable += p.reachable ? 1 : 0;
        all = reachable >= peers[i];
      }
      if (all) return true;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return false;
  }

  uint64_t BytesSent() const {
    uint64_t total = 0;
    for (const Node& n : nodes_) total += n.server->BytesSent();
    return total;
  }
  replication::ReplicatorCounters Counters() const {
    replication::ReplicatorCounters total;
    for (const Node& n : nodes_) {
      const replication::ReplicatorCounters c = n.server->ReplicationCounters();
      total.rounds += c.rounds;
      total.pulls += c.pulls;
      total.records_received += c.records_received;
      total.records_won += c.records_won;
      total.nudges_sent += c.nudges_sent;
    }
    return total;
  }
  std::vector<uint64_t> Fingerprints(const std::vector<int>& which) const {
    std::vector<uint64_t> out;
    for (int i : which) out.push_back(nodes_[i].store->fingerprint());
    return out;
  }

 private:
  std::vector<Node> nodes_;
};

std::vector<int> Range(int from, int to) {
  std::vector<int> v;
  for (int i = from; i < to; ++i) v.push_back(i);
  return v;
}

// Samples the fingerprints every millisecond until `which` all agree.
// Returns the samples (time since start, fingerprints) or an empty vector
// if they did not agree within the timeout.
struct Sample {
  double t_ms;
  std::vector<uint64_t> fingerprints;
};
std::vector<Sample> WaitConverged(Cluster& cluster, const std::vector<int>& which,
                                  absl::Time start, absl::Duration timeout) {
  std::vector<Sample> samples;
  const absl::Time deadline = start + timeout;
  for (;;) {
    const absl::Time now = absl::Now();
    Sample s{absl::ToDoubleMilliseconds(now - start), cluster.Fingerprints(which)};
    const bool same = std::all_of(s.fingerprints.begin(), s.fingerprints.end(),
                                  [&](uint64_t f) { return f == s.fingerprints[0]; });
    samples.push_back(std::move(s));
    if (same) return samples;
    if (now > deadline) return {};
    absl::SleepFor(absl::Milliseconds(1));
  }
}

struct RunResult {
  std::string scenario;
  std::string mode;
  int replicas = 0;
  double converge_ms = 0;
  double rounds = 0;
  double rounds_bound = 0;
  uint64_t bytes_sent = 0;
  uint64_t distinct_bytes = 0;
  double bytes_ratio = 0;
  // Pull exchanges, and records received per record a replica lacked.
  uint64_t pulls = 0;
  uint64_t nudges = 0;
  double copies = 0;
  std::vector<std::pair<double, double>> curve;  // (ms, fraction converged)
};

// Writes `count` records spread over `writers`; returns their bytes.
uint64_t Write(Cluster& cluster, const std::vector<int>& writers, int count, int value_bytes,
               const std::string& prefix) {
  uint64_t bytes = 0;
  const std::string value(value_bytes, 'v');
  for (int i = 0; i < count; ++i) {
    Node& n = cluster.node(writers[i % writers.size()]);
    const std::string key = absl::StrFormat("%s-%06d", prefix, i);
    PEERKV_CHECK(n.store->Put("bench", key, value).ok());
    bytes += 5 + key.size() + value.size() + 16;  // keyspace, key, value, version
  }
  return bytes;
}

RunResult Finish(const std::string& scenario, const std::string& mode, Cluster& cluster,
                 absl::Time start, uint64_t bytes_before,
                 const replication::ReplicatorCounters& before, uint64_t distinct_bytes,
                 uint64_t needed_records, const Flags& flags) {
  RunResult r;
  r.scenario = scenario;
  r.mode = mode;
  r.replicas = cluster.size();
  std::vector<Sample> samples =
      WaitConverged(cluster, Range(0, cluster.size()), start, absl::Seconds(300));
  if (samples.empty()) {
    std::printf("%s/%s R=%d: did not converge within 300 s\n", scenario.c_str(), mode.c_str(),
                cluster.size());
    r.converge_ms = -1;
    return r;
  }
  r.converge_ms = samples.back().t_ms;
  // Bytes and counters one gossip interval later: the messages still in
  // flight at convergence (answers being counted, nudges passing news on)
  // are part of the cost, and so is the in-sync round that follows.
  absl::SleepFor(absl::Milliseconds(flags.interval_ms));
  r.bytes_sent = cluster.BytesSent() - bytes_before;
  r.distinct_bytes = distinct_bytes;
  // Every replica but the writer needs each record once: (R - 1) copies.
  r.bytes_ratio = static_cast<double>(r.bytes_sent) /
                  (static_cast<double>(distinct_bytes) * (cluster.size() - 1));
  r.rounds = r.converge_ms / flags.interval_ms;
  const double R = cluster.size();
  r.rounds_bound = std::log2(R) + std::log(R) + 2;
  const uint64_t final_fp = samples.back().fingerprints[0];
  for (const Sample& s : samples) {
    const double done = static_cast<double>(
        std::count(s.fingerprints.begin(), s.fingerprints.end(), final_fp));
    if (r.curve.empty() || r.curve.back().second != done / R || &s == &samples.back()) {
      r.curve.emplace_back(s.t_ms, done / R);
    }
  }
  const replication::ReplicatorCounters after = cluster.Counters();
  r.pulls = after.pulls - before.pulls;
  r.nudges = after.nudges_sent - before.nudges_sent;
  r.copies = static_cast<double>(after.records_received - before.records_received) /
             static_cast<double>(needed_records);
  return r;
}

RunResult RunSpread(int replicas, bool eager, const Flags& flags) {
  bench::ScratchDir dir(flags.dir);
  Cluster cluster(dir.path(), replicas, flags, eager);
  for (int i = 0; i < replicas; ++i) {
    for (int j = i + 1; j < replicas; ++j) cluster.Link(i, j);
  }
  PEERKV_CHECK(cluster.WaitLinked(std::vector<int>(replicas, replicas - 1), absl::Seconds(60)));
  const uint64_t bytes_before = cluster.BytesSent();
  const replication::ReplicatorCounters before = cluster.Counters();
  const uint64_t distinct =
      Write(cluster, Range(0, replicas), flags.writes, flags.value_bytes, "spread");
  const absl::Time last_write = absl::Now();
  return Finish("spread", eager ? "eager" : "gossip", cluster, last_write, bytes_before, before,
                distinct, static_cast<uint64_t>(flags.writes) * (replicas - 1), flags);
}

RunResult RunHeal(int replicas, bool eager, const Flags& flags) {
  bench::ScratchDir dir(flags.dir);
  Cluster cluster(dir.path(), replicas, flags, eager);
  const int half = replicas / 2;
  const std::vector<int> left = Range(0, half), right = Range(half, replicas);
  std::vector<int> expected(replicas);
  for (const auto* side : {&left, &right}) {
    for (size_t a = 0; a < side->size(); ++a) {
      expected[(*side)[a]] = static_cast<int>(side->size()) - 1;
      for (size_t b = a + 1; b < side->size(); ++b) cluster.Link((*side)[a], (*side)[b]);
    }
  }
  PEERKV_CHECK(cluster.WaitLinked(expected, absl::Seconds(60)));
  const uint64_t distinct = Write(cluster, left, flags.writes / 2, flags.value_bytes, "left") +
                            Write(cluster, right, flags.writes - flags.writes / 2,
                                  flags.value_bytes, "right");
  // Each half converges on its own first.
  for (const auto* side : {&left, &right}) {
    PEERKV_CHECK(!WaitConverged(cluster, *side, absl::Now(), absl::Seconds(300)).empty());
  }
  const uint64_t bytes_before = cluster.BytesSent();
  const replication::ReplicatorCounters before = cluster.Counters();
  const absl::Time heal = absl::Now();
  for (int a : left) {
    for (int b : right) cluster.Link(a, b);
  }
  // What crossed inside each half was counted before the heal; after it,
  // each half needs the other half's records: (R - 1) copies would be the
  // minimum if every replica needed every record, so count only the
  // records a replica lacked: half the records for each replica.
  // Each replica lacks the other half's records: about half of them.
  RunResult r = Finish("heal", eager ? "eager" : "gossip", cluster, heal, bytes_before, before,
                       distinct, static_cast<uint64_t>(flags.writes) * replicas / 2, flags);
  // Minimum after the heal: each replica receives the other half's records.
  const double needed = static_cast<double>(distinct) / 2.0 * replicas;
  r.bytes_ratio = static_cast<double>(r.bytes_sent) / needed;
  return r;
}

struct PullResult {
  std::string order;
  int records = 0;
  double load_per_s = 0;
  double pull_per_s = 0;
  double raw_per_s = 0;
  // Raw LMDB with the pull's page as its transaction.
  double raw_pull_batch_per_s = 0;
  // Pulls the fresh replica made (pages, and a last empty one or two), and
  // the records a page may hold.
  uint64_t pages = 0;
  size_t page_records = 0;
  double insync_bytes_per_exchange = 0;
  double insync_pull_ms = 0;
  uint64_t insync_exchanges = 0;
  // Snapshot bootstrap of a third, empty replica from the source, after
  // the pull; raw LMDB puts of the same records at the snapshot's page
  // size, in the order they were written and sorted (as the snapshot
  // sends them), around it.
  double snapshot_per_s = 0;
  uint64_t snapshot_pages = 0;
  double raw_snapshot_page_per_s = 0;
  double raw_sorted_snapshot_page_per_s = 0;
  // From the stores agreeing to the replicator counting the end.
  double snapshot_count_lag_ms = 0;
};

// doc-0000000 .. doc-(n-1), in order or shuffled. Only keyspace, key and
// value are used: the load stamps versions itself.
std::vector<Record> PullRecords(int n, int value_bytes, bool random_order) {
  std::vector<Record> records;
  records.reserve(n);
  for (int i = 0; i < n; ++i) {
    records.push_back(Record{"bench", absl::StrFormat("doc-%07d", i), Version{}, false,
                             std::string(value_bytes, 'v'), 0});
  }
  if (random_order) {
    std::mt19937_64 rng(42);
    std::shuffle(records.begin(), records.end(), rng);
  }
  return records;
}

double RawLmdbPuts(const std::vector<Record>& records, size_t batch, const std::string& base) {
  bench::ScratchDir dir(base);
  bench::RawLmdb raw(dir.path(), size_t{4} << 30);
  const absl::Time start = absl::Now();
  raw.Put(records, batch);
  return records.size() / absl::ToDoubleSeconds(absl::Now() - start);
}

PullResult RunPull(const Flags& flags, const std::string& order, bool tls) {
  PullResult result;
  result.order = order;
  result.records = flags.pull_records;
  std::printf("pull (%s): loading %d records into the source...\n", order.c_str(),
              flags.pull_records);
  std::fflush(stdout);
  const std::vector<Record> records =
      PullRecords(flags.pull_records, flags.value_bytes, order == "random");
  bench::ScratchDir dir(flags.dir);
  Flags pair_flags = flags;
  pair_flags.interval_ms = 10;
  pair_flags.fanout = 1;
  Cluster cluster(dir.path(), 3, pair_flags, /*eager=*/true, /*snapshot_node=*/2, tls);
  // The load: local writes, 1000 per call, as putMany hands them over.
  {
    std::vector<std::vector<Mutation>> batches;
    for (size_t i = 0; i < records.size(); i += 1000) {
      std::vector<Mutation>& batch = batches.emplace_back();
      for (size_t j = i; j < std::min(records.size(), i + 1000); ++j) {
        batch.push_back(Mutation{records[j].keyspace, records[j].key, records[j].value});
      }
    }
    // The baseline right before and right after, averaged: this machine
    // is shared, and its disk's speed drifts within a run.
    const double raw_before = RawLmdbPuts(records, 1000, flags.dir);
    const absl::Time start = absl::Now();
    for (auto& batch : batches) PEERKV_CHECK(cluster.node(0).store->Write(std::move(batch)).ok());
    result.load_per_s = records.size() / absl::ToDoubleSeconds(absl::Now() - start);
    result.raw_per_s = (raw_before + RawLmdbPuts(records, 1000, flags.dir)) / 2;
  }
  // The pull's baseline: raw puts of the same records in the same order,
  // as many per transaction as a pulled page holds, before and after.
  const size_t pull_batch = flags.pull_batch_records > 0
                                ? flags.pull_batch_records
                                : replication::ReplicatorOptions{}.batch_records;
  const double raw_page_before = RawLmdbPuts(records, pull_batch, flags.dir);
  const uint64_t pulls_before = cluster.node(1).server->ReplicationCounters().pulls;
  const absl::Time start = absl::Now();
  cluster.Link(1, 0);
  PEERKV_CHECK(!WaitConverged(cluster, {0, 1}, start, absl::Seconds(600)).empty());
  result.pull_per_s = flags.pull_records / absl::ToDoubleSeconds(absl::Now() - start);
  result.pages = cluster.node(1).server->ReplicationCounters().pulls - pulls_before;
  result.page_records = pull_batch;
  result.raw_pull_batch_per_s =
      (raw_page_before + RawLmdbPuts(records, pull_batch, flags.dir)) / 2;

  // In sync now: measure gossip exchanges between the two over 2 s.
  absl::SleepFor(absl::Milliseconds(200));
  const uint64_t bytes0 = cluster.BytesSent();
  const auto c0 = cluster.node(0).server->ReplicationCounters();
  const auto d0 = cluster.node(1).server->ReplicationCounters();
  absl::SleepFor(absl::Seconds(2));
  const uint64_t bytes1 = cluster.BytesSent();
  const auto c1 = cluster.node(0).server->ReplicationCounters();
  const auto d1 = cluster.node(1).server->ReplicationCounters();
  const uint64_t pulls = (c1.pulls - c0.pulls) + (d1.pulls - d0.pulls);
  const absl::Duration pull_time = (c1.pull_time - c0.pull_time) + (d1.pull_time - d0.pull_time);
  result.insync_exchanges = pulls;
  // An exchange is one pull (request and answer) plus the nudge that made it.
  result.insync_bytes_per_exchange = pulls == 0 ? 0 : static_cast<double>(bytes1 - bytes0) / pulls;
  result.insync_pull_ms = pulls == 0 ? 0 : absl::ToDoubleMilliseconds(pull_time) / pulls;

  // Snapshot bootstrap: replica 2, empty, meets the source. Its pages hold
  // what a reply may (snapshot_records, lowered by the server to half its
  // message limit): about 4.5 MiB.
  std::vector<Record> sorted = records;
  std::sort(sorted.begin(), sorted.end(),
            [](const Record& a, const Record& b) { return a.key < b.key; });
  const size_t snapshot_page =
      std::min<size_t>(replication::ReplicatorOptions{}.snapshot_records,
                       rpc::ReplyBudget(kMaxValueBytes) /
                           (records.empty() ? 1 : records[0].key.size() + records[0].value.size() + 20));
  const double raw_snap_before = RawLmdbPuts(records, snapshot_page, flags.dir);
  const double raw_sorted_before = RawLmdbPuts(sorted, snapshot_page, flags.dir);
  const absl::Time snap_start = absl::Now();
  cluster.Link(2, 0);
  PEERKV_CHECK(!WaitConverged(cluster, {0, 2}, snap_start, absl::Seconds(600)).empty());
  // The store's fingerprint is set by its writer thread as the last page
  // commits; the replicator counts the snapshot's end only once that
  // commit's callback has woken its own thread. Read at once, the count
  // could still be 0 (it was, under TLS, on this shared machine): the end
  // is when both are true.
  replication::ReplicatorCounters snap = cluster.node(2).server->ReplicationCounters();
  const absl::Time converged = absl::Now();
  while (snap.snapshots_completed == 0 && absl::Now() - converged < absl::Seconds(60)) {
    absl::SleepFor(absl::Milliseconds(1));
    snap = cluster.node(2).server->ReplicationCounters();
  }
  result.snapshot_per_s = flags.pull_records / absl::ToDoubleSeconds(absl::Now() - snap_start);
  result.snapshot_count_lag_ms = absl::ToDoubleMilliseconds(absl::Now() - converged);
  if (snap.snapshots_completed != 1) {
    std::fprintf(stderr,
                 "snapshot: the stores agree but replica 2 counted %d snapshots completed "
                 "(%d started, %d pages, %d records, %d restarts)\n",
                 static_cast<int>(snap.snapshots_completed),
                 static_cast<int>(snap.snapshots_started), static_cast<int>(snap.snapshot_pages),
                 static_cast<int>(snap.snapshot_records), static_cast<int>(snap.snapshot_restarts));
  }
  PEERKV_CHECK(snap.snapshots_completed == 1);
  result.snapshot_pages = snap.snapshot_pages;
  result.raw_snapshot_page_per_s =
      (raw_snap_before + RawLmdbPuts(records, snapshot_page, flags.dir)) / 2;
  result.raw_sorted_snapshot_page_per_s =
      (raw_sorted_before + RawLmdbPuts(sorted, snapshot_page, flags.dir)) / 2;
  return result;
}

bool ParseFlags(int argc, char** argv, Flags* flags) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    int v = 0;
    if (arg == "--replicas") {
      flags->replicas.clear();
      for (absl::string_view part : absl::StrSplit(next(), ',')) {
        if (!absl::SimpleAtoi(part, &v) || v < 2 || v > 200) return false;
        flags->replicas.push_back(v);
      }
    } else if (arg == "--writes" && absl::SimpleAtoi(next(), &v) && v > 0) {
      flags->writes = v;
    } else if (arg == "--value-bytes" && absl::SimpleAtoi(next(), &v) && v >= 0) {
      flags->value_bytes = v;
    } else if (arg == "--interval-ms" && absl::SimpleAtoi(next(), &v) && v >= 10) {
      flags->interval_ms = v;
    } else if (arg == "--fanout" && absl::SimpleAtoi(next(), &v) && v >= 1) {
      flags->fanout = v;
    } else if (arg == "--pull-records" && absl::SimpleAtoi(next(), &v) && v >= 0) {
      flags->pull_records = v;
    } else if (arg == "--pull-orders") {
      flags->pull_orders.clear();
      for (absl::string_view part : absl::StrSplit(next(), ',')) {
        if (part != "sequential" && part != "random") return false;
        flags->pull_orders.emplace_back(part);
      }
    } else if (arg == "--pull-batch-records" && absl::SimpleAtoi(next(), &v) && v > 0) {
      flags->pull_batch_records = v;
    } else if (arg == "--pull-batch-bytes" && absl::SimpleAtoi(next(), &v) && v > 0) {
      flags->pull_batch_bytes = v;
    } else if (arg == "--pull-repeats" && absl::SimpleAtoi(next(), &v) && v > 0) {
      flags->pull_repeats = v;
    } else if (arg == "--tls") {
      const std::string mode = next();
      if (mode == "off") {
        flags->pull_tls = {false};
      } else if (mode == "on") {
        flags->pull_tls = {true};
      } else if (mode == "both") {
        flags->pull_tls = {false, true};
      } else {
        return false;
      }
    } else if (arg == "--pull-only") {
      flags->converge = false;
    } else if (arg == "--log") {
      flags->log = true;
    } else if (arg == "--out") {
      flags->out = next();
    } else if (arg == "--dir") {
      flags->dir = next();
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace
}  // namespace peerkv

int main(int argc, char** argv) {
  using namespace peerkv;
  Flags flags;
  if (!ParseFlags(argc, argv, &flags)) {
    std::fprintf(stderr,
                 "usage: converge_bench [--replicas 3,10,30] [--writes N] [--value-bytes N]\n"
                 "       [--interval-ms N] [--fanout N] [--pull-records N]\n"
                 "       [--pull-orders sequential,random] [--pull-only] [--tls off|on|both]\n"
                 "       [--out DIR] [--dir DIR] [--log]\n");
    return 2;
  }
  std::filesystem::create_directories(flags.out);
  std::ofstream summary(flags.out + "/converge.csv");
  std::ofstream curve(flags.out + "/curve.csv");
  summary << "scenario,mode,replicas,converge_ms,rounds,rounds_bound,bytes_sent,distinct_bytes,"
             "bytes_ratio,pulls,nudges,copies\n";
  curve << "scenario,mode,replicas,t_ms,fraction\n";
  std::printf("%-7s %-7s %4s %12s %8s %8s %12s %8s %8s %8s %7s\n", "run", "mode", "R",
              "converge_ms", "rounds", "bound", "bytes_sent", "ratio", "pulls", "nudges",
              "copies");
  for (const char* scenario : {"spread", "heal"}) {
    if (!flags.converge) break;
    for (bool eager : {true, false}) {
      for (int replicas : flags.replicas) {
        const RunResult r = std::string(scenario) == "spread" ? RunSpread(replicas, eager, flags)
                                                              : RunHeal(replicas, eager, flags);
        std::printf("%-7s %-7s %4d %12.1f %8.2f %8.2f %12llu %8.2f %8llu %8llu %7.2f\n",
                    r.scenario.c_str(), r.mode.c_str(), r.replicas, r.converge_ms, r.rounds,
                    r.rounds_bound, static_cast<unsigned long long>(r.bytes_sent), r.bytes_ratio,
                    static_cast<unsigned long long>(r.pulls),
                    static_cast<unsigned long long>(r.nudges), r.copies);
        std::fflush(stdout);
        summary << absl::StrFormat("%s,%s,%d,%.1f,%.2f,%.2f,%d,%d,%.3f,%d,%d,%.3f\n",
                                   r.scenario, r.mode, r.replicas, r.converge_ms, r.rounds,
                                   r.rounds_bound, r.bytes_sent, r.distinct_bytes, r.bytes_ratio,
                                   r.pulls, r.nudges, r.copies);
        for (const auto& [t, f] : r.curve) {
          curve << absl::StrFormat("%s,%s,%d,%.1f,%.4f\n", r.scenario, r.mode, r.replicas, t, f);
        }
      }
    }
  }
  if (flags.pull_records > 0) {
    std::ofstream pull(flags.out + "/pull.csv");
    pull << "order,records,load_records_per_s,pull_records_per_s,raw_lmdb_records_per_s,"
            "raw_lmdb_pull_batch_records_per_s,load_ratio,pull_ratio,pull_ratio_same_batch,"
            "insync_exchanges,insync_bytes_per_exchange,insync_pull_ms\n";
    std::map<std::string, std::vector<PullResult>> runs;
    for (int repeat = 0; repeat < flags.pull_repeats; ++repeat) {
      for (const std::string& order : flags.pull_orders) {
       for (const bool tls : flags.pull_tls) {
        PullResult p = RunPull(flags, order, tls);
        p.order = order + (tls ? "/tls" : "/plain");
        runs[p.order].push_back(p);
        pull << absl::StrFormat("%s,%d,%.0f,%.0f,%.0f,%.0f,%.3f,%.3f,%.3f,%d,%.1f,%.3f\n", p.order,
                                p.records, p.load_per_s, p.pull_per_s, p.raw_per_s,
                                p.raw_pull_batch_per_s, p.load_per_s / p.raw_per_s,
                                p.pull_per_s / p.raw_per_s, p.pull_per_s / p.raw_pull_batch_per_s,
                                p.insync_exchanges, p.insync_bytes_per_exchange, p.insync_pull_ms);
        std::printf(
            "pull (%s ids): %d records; raw LMDB puts %.0f records/s (1000 per txn), %.0f "
            "records/s (pull page per txn); load (Store::Write, 1000 per call) %.0f records/s, "
            "ratio %.2f; fresh pull %.0f records/s, ratio %.2f (same txn size: %.2f)\n",
            p.order.c_str(), p.records, p.raw_per_s, p.raw_pull_batch_per_s, p.load_per_s,
            p.load_per_s / p.raw_per_s, p.pull_per_s, p.pull_per_s / p.raw_per_s,
            p.pull_per_s / p.raw_pull_batch_per_s);
        std::printf("  %llu pulls of at most %zu records\n",
                    static_cast<unsigned long long>(p.pages), p.page_records);
        std::printf(
            "snapshot bootstrap (%s ids): %.0f records/s in %llu pages; / fresh pull %.2f; / "
            "raw LMDB at the snapshot's page size %.2f (%.0f records/s, write order), %.2f "
            "(%.0f records/s, key order); / raw LMDB 1000 per txn %.2f\n",
            p.order.c_str(), p.snapshot_per_s, static_cast<unsigned long long>(p.snapshot_pages),
            p.snapshot_per_s / p.pull_per_s, p.snapshot_per_s / p.raw_snapshot_page_per_s,
            p.raw_snapshot_page_per_s, p.snapshot_per_s / p.raw_sorted_snapshot_page_per_s,
            p.raw_sorted_snapshot_page_per_s, p.snapshot_per_s / p.raw_per_s);
        std::printf("  the stores agreed %.1f ms before the replicator counted the snapshot's end\n",
                    p.snapshot_count_lag_ms);
        std::printf("in sync: %llu exchanges in 2 s, %.0f bytes and %.3f ms per exchange\n",
                    static_cast<unsigned long long>(p.insync_exchanges),
                    p.insync_bytes_per_exchange, p.insync_pull_ms);
        std::fflush(stdout);
       }
      }
    }
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v.empty() ? 0.0 : v[v.size() / 2];
    };
    std::printf("medians over %d runs:\n", flags.pull_repeats);
    for (const auto& [order, results] : runs) {
      std::vector<double> raw, raw_page, load, pull, load_ratio, pull_ratio, pull_ratio_page;
      std::vector<double> snap, snap_pull, snap_raw, snap_raw_sorted;
      for (const PullResult& p : results) {
        raw.push_back(p.raw_per_s);
        raw_page.push_back(p.raw_pull_batch_per_s);
        load.push_back(p.load_per_s);
        pull.push_back(p.pull_per_s);
        load_ratio.push_back(p.load_per_s / p.raw_per_s);
        pull_ratio.push_back(p.pull_per_s / p.raw_per_s);
        pull_ratio_page.push_back(p.pull_per_s / p.raw_pull_batch_per_s);
        snap.push_back(p.snapshot_per_s);
        snap_pull.push_back(p.snapshot_per_s / p.pull_per_s);
        snap_raw.push_back(p.snapshot_per_s / p.raw_snapshot_page_per_s);
        snap_raw_sorted.push_back(p.snapshot_per_s / p.raw_sorted_snapshot_page_per_s);
      }
      std::printf(
          "  %-10s raw LMDB %.0f/s (1000 per txn), %.0f/s (pull page per txn); load %.0f/s "
          "(%.2fx raw); pull %.0f/s (%.2fx raw at 1000, %.2fx raw at the pull page)\n",
          order.c_str(), median(raw), median(raw_page), median(load), median(load_ratio),
          median(pull), median(pull_ratio), median(pull_ratio_page));
      std::printf(
          "  %-10s snapshot bootstrap %.0f/s: %.2fx the fresh pull, %.2fx raw LMDB at the "
          "snapshot page (write order), %.2fx (key order)\n",
          order.c_str(), median(snap), median(snap_pull), median(snap_raw),
          median(snap_raw_sorted));
    }
  }
  return 0;
}
