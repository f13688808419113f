// bench/strong_put_bench.cc: issue 11's strong-keyspace numbers in one run
// against one etcd: PUT throughput of 16 clients to a strong keyspace of a
// replica server (through RPC, the strong layer and EtcdConsensusLog),
// against the same number of clients writing to etcd directly through the
// same client path (bench/etcd_direct.h: one /v3/kv/put per write); and lww
// PUT throughput of 16 clients alone, against the same while 16 other
// clients load the strong keyspace. Measured in rotation, medians printed
// with their ratios.
//
// Each round then measures again with etcd pinned to CPU 0 and this
// process (server, strong layer, clients, direct-etcd clients) to CPU 1
// (sched_setaffinity on every thread of each), so etcd's own CPU is
// separated from what peerkv's strong path takes; on a machine with fewer
// than 2 CPUs the pinned measurements are skipped.
//
// Usage: strong_put_bench [--clients N] [--seconds S] [--rounds R]
// Starts its own etcd (testing/etcd_server.h; data under $TEST_TMPDIR or
// /var/tmp, a real disk: etcd fsyncs each write).
#include <dirent.h>
#include <sched.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "bench/etcd_direct.h"
#include "consensus/etcd/etcd_consensus_log.h"
#include "consensus/strong_keyspaces.h"
#include "rpc/client.h"
#include "rpc/server.h"
#include "store/store.h"
#include "testing/etcd_server.h"
#include "testing/temp_dir.h"

namespace {

using peerkv::rpc::Client;
using peerkv::consensus::Committed;
using peerkv::consensus::ConsensusLog;
using peerkv::consensus::Proposal;
using peerkv::consensus::ProposeResult;

// The log with the time spent in each call added up (where a strong PUT's
// time goes: the log's Propose against the rest of StrongKeyspaces::Write,
// and what the follower's ReadAfter costs).
class TimedLog : public ConsensusLog {
 public:
  explicit TimedLog(ConsensusLog* inner) : inner_(inner) {}
  absl::StatusOr<ProposeResult> Propose(const Proposal& proposal,
                                        absl::Duration timeout) override {
    const absl::Time start = absl::Now();
    auto r = inner_->Propose(proposal, timeout);
    propose_ns_ += absl::ToInt64Nanoseconds(absl::Now() - start);
    proposes_++;
    return r;
  }
  absl::StatusOr<std::optional<Committed>> Read(std::string_view keyspace, std::string_view key,
                                                absl::Duration timeout) override {
    return inner_->Read(keyspace, key, timeout);
  }
  absl::StatusOr<std::vector<Committed>> ReadAfter(uint64_t after, size_t max_writes,
                                                   absl::Duration timeout) override {
    auto r = inner_->ReadAfter(after, max_writes, timeout);
    read_afters_++;
    if (r.ok()) followed_ += r->size();
    return r;
  }
  bool Reachable() const override { return inner_->Reachable(); }
  std::string Describe() const override { return inner_->Describe(); }
  std::string LogIdentity() const override { return inner_->LogIdentity(); }

  // Mean Propose time (ms) and count, ReadAfter calls and writes they
  // returned, since the last Take.
  std::string Take() {
    const uint64_t n = proposes_.exchange(0);
    const int64_t ns = propose_ns_.exchange(0);
    return absl::StrFormat("Propose %.2f ms mean over %d, follower ReadAfter calls %d (%d writes)",
                           n == 0 ? 0.0 : ns / 1e6 / n, n, read_afters_.exchange(0),
                           followed_.exchange(0));
  }

 private:
  ConsensusLog* const inner_;
  std::atomic<uint64_t> proposes_{0}, read_afters_{0}, followed_{0};
  std::atomic<int64_t> propose_ns_{0};
};

// Sets the CPU affinity of every thread of process `pid` (0: this one) to
// `cpus`; threads it starts later inherit it from their creator. False if
// a thread could not be pinned (one that ended meanwhile does not count).
bool Pin(pid_t pid, const std::vector<int>& cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int cpu : cpus) CPU_SET(cpu, &set);
  const std::string dir =
      pid == 0 ? std::string("/proc/self/task") : absl::StrCat("/proc/", pid, "/task");
  DIR* tasks = opendir(dir.c_str());
  if (tasks == nullptr) return false;
  bool ok = true;
  while (dirent* entry = readdir(tasks)) {
    pid_t tid = 0;
    if (!absl::SimpleAtoi(entry->d_name, &tid)) continue;
    if (sched_setaffinity(tid, sizeof(set), &set) != 0 && errno != ESRCH) ok = false;
  }
  closedir(tasks);
  return ok;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// `clients` threads, each with its own connection, putting distinct keys of
// `keyspace` for `duration`; writes per second. `stop_early` ends it.
double RunPuts(const std::string& address, const std::string& keyspace, int clients,
               absl::Duration duration, const std::string& tag, std::atomic<bool>* errors) {
  std::atomic<uint64_t> writes{0};
  std::vector<std::thread> threads;
  const std::string value(100, 'v');
  const absl::Time start = absl::Now();
  const absl::Time end = start + duration;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      auto client = Client::Connect(peerkv::rpc::ClientOptions{.address = address});
      if (!client.ok()) {
        *errors = true;
        return;
      }
      for (uint64_t i = 0; absl::Now() < end; ++i) {
        absl::StatusOr<peerkv::Version> v =
            (*client)->Put(keyspace, absl::StrCat(tag, "-", c, "-", i), value);
        if (!v.ok()) {
          std::fprintf(stderr, "put %s: %s\n", keyspace.c_str(), v.status().ToString().c_str());
          *errors = true;
          return;
        }
        writes++;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  return static_cast<double>(writes.load()) / absl::ToDoubleSeconds(absl::Now() - start);
}

// The same load on the strong layer itself, without RPC (where the time
// goes).
double RunLayerPuts(peerkv::consensus::StrongKeyspaces& strong, const std::string& keyspace,
                    int clients, absl::Duration duration, const std::string& tag,
                    std::atomic<bool>* errors) {
  std::atomic<uint64_t> writes{0};
  std::vector<std::thread> threads;
  const absl::Time start = absl::Now();
  const absl::Time end = start + duration;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      for (uint64_t i = 0; absl::Now() < end; ++i) {
        peerkv::Mutation m{keyspace, absl::StrCat(tag, "-", c, "-", i), std::string(100, 'v')};
        absl::Status v = strong.Write(m, {}).status();
        if (!v.ok()) {
          *errors = true;
          return;
        }
        writes++;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  return static_cast<double>(writes.load()) / absl::ToDoubleSeconds(absl::Now() - start);
}

int Usage(const char* why) {
  std::fprintf(stderr,
               "strong_put_bench: %s\nusage: strong_put_bench [--clients 1..256] "
               "[--seconds 1..600] [--rounds 1..50]\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int clients = 16;
  int seconds = 5;
  int rounds = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) return Usage(("missing the value of " + flag).c_str());
    const std::string value = argv[++i];
    int* target = flag == "--clients" ? &clients
                  : flag == "--seconds" ? &seconds
                  : flag == "--rounds"  ? &rounds
                                        : nullptr;
    if (target == nullptr) return Usage(("unknown flag " + flag).c_str());
    if (!absl::SimpleAtoi(value, target) || *target < 1 || *target > 600) {
      return Usage((flag + " must be a small positive number").c_str());
    }
  }
  if (std::getenv("TEST_TMPDIR") == nullptr) setenv("TEST_TMPDIR", "/var/tmp", 1);
  auto etcd = peerkv::testing::EtcdServer::Start();
  if (!etcd.ok()) {
    std::fprintf(stderr, "strong_put_bench: %s\n", etcd.status().ToString().c_str());
    return 1;
  }
  const std::string url = (*etcd)->client_url();

  // One replica server with strong keyspaces through that etcd.
  peerkv::testing::TempDir dir("strong-bench");
  peerkv::consensus::ModeTable modes;
  modes.SetLog([](const std::string&) {});
  auto log = peerkv::consensus::EtcdConsensusLog::Create({.url = url, .prefix = "strong/"});
  if (!log.ok()) return 1;
  peerkv::StoreOptions store_options;
  store_options.dir = dir.Sub("db");
  modes.AttachTo(&store_options);
  auto store = peerkv::Store::Open(store_options);
  if (!store.ok()) return 1;
  peerkv::consensus::StrongOptions strong_options;
  strong_options.workers = static_cast<size_t>(clients) * 2;
  auto write_waits_for_sync = std::make_shared<std::atomic<bool>>(false);
  strong_options.write_waits_for_sync = write_waits_for_sync;
  TimedLog timed(log->get());
  auto strong = std::make_unique<peerkv::consensus::StrongKeyspaces>(
      store->get(), &modes, &timed, strong_options);
  strong->Start();
  peerkv::rpc::ServerOptions server_options;
  server_options.listen = "127.0.0.1:0";
  server_options.replicate = false;
  server_options.strong = strong.get();
  auto server = peerkv::rpc::Server::Start(store->get(), server_options);
  if (!server.ok()) return 1;
  const std::string address = (*server)->address();
  absl::StatusOr<peerkv::Version> on = absl::UnavailableError("not yet");
  for (int i = 0; i < 100 && !on.ok(); ++i) {
    on = strong->SetMode("strongks", peerkv::consensus::Mode::kStrong);
    if (!on.ok()) absl::SleepFor(absl::Milliseconds(100));
  }
  if (!on.ok()) {
    std::fprintf(stderr, "strong_put_bench: %s\n", on.status().ToString().c_str());
    return 1;
  }
  std::printf("etcd at %s, server %s, %d clients, %d s per measurement, %d rounds\n",
              url.c_str(), address.c_str(), clients, seconds, rounds);
  const absl::Duration duration = absl::Seconds(seconds);
  std::atomic<bool> errors{false};
  std::vector<double> lww_etcd_loaded, strong_synced;
  // Pinned (etcd to CPU 0, this process to CPU 1).
  std::vector<double> p_direct_txn, p_strong, p_alone, p_loaded, p_etcd_loaded;
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  const bool pinning = cpus >= 2;
  std::vector<int> all_cpus;
  for (int c = 0; c < cpus; ++c) all_cpus.push_back(c);
  std::vector<double> direct, direct_txn, strong_puts, layer, lww_alone, lww_loaded;
  for (int r = 0; r < rounds; ++r) {
    peerkv::bench::EtcdLoad load{.url = url, .clients = clients, .duration = duration,
                                 .key_prefix = absl::StrCat("direct/", r, "/")};
    auto d = peerkv::bench::RunDirectPuts(load);
    if (!d.ok()) {
      std::fprintf(stderr, "direct: %s\n", d.status().ToString().c_str());
      return 1;
    }
    direct.push_back(d->writes_per_second());
    load.key_prefix = absl::StrCat("directtxn/", r, "/");
    auto t = peerkv::bench::RunDirectTxns(load);
    if (!t.ok()) {
      std::fprintf(stderr, "direct txn: %s\n", t.status().ToString().c_str());
      return 1;
    }
    direct_txn.push_back(t->writes_per_second());
    timed.Take();
    strong_puts.push_back(
        RunPuts(address, "strongks", clients, duration, absl::StrCat("s", r), &errors));
    std::printf("  strong PUT: %.2f ms per write, %s\n", clients * 1e3 / strong_puts.back(),
                timed.Take().c_str());
    // A/B: the same with each strong write's local merge waiting for its
    // fsync (as before the merge stopped waiting).
    write_waits_for_sync->store(true);
    strong_synced.push_back(
        RunPuts(address, "strongks", clients, duration, absl::StrCat("f", r), &errors));
    write_waits_for_sync->store(false);
    std::printf("  strong PUT, local merge waiting for its fsync: %.2f ms per write, %s\n",
                clients * 1e3 / strong_synced.back(), timed.Take().c_str());
    layer.push_back(
        RunLayerPuts(*strong, "strongks", clients, duration, absl::StrCat("y", r), &errors));
    // Per write less Propose: the local part of StrongKeyspaces::Write
    // (the store read, the mode, the durable merge of the commit).
    std::printf("  strong layer: %.2f ms per write, %s\n", clients * 1e3 / layer.back(),
                timed.Take().c_str());
    lww_alone.push_back(
        RunPuts(address, "lwwks", clients, duration, absl::StrCat("a", r), &errors));
    double loaded = 0;
    std::thread background([&] {
      RunPuts(address, "strongks", clients, duration, absl::StrCat("b", r), &errors);
    });
    loaded = RunPuts(address, "lwwks", clients, duration, absl::StrCat("l", r), &errors);
    background.join();
    lww_loaded.push_back(loaded);
    // The same etcd load without peerkv's strong path (direct txns): if lww
    // drops as much, the cost is etcd's CPU on shared cores, not the layer.
    double etcd_loaded = 0;
    {
      peerkv::bench::EtcdLoad txn_load{.url = url, .clients = clients, .duration = duration,
                                       .key_prefix = absl::StrCat("bgtxn/", r, "/")};
      std::thread txns([&] {
        if (!peerkv::bench::RunDirectTxns(txn_load).ok()) errors = true;
      });
      etcd_loaded = RunPuts(address, "lwwks", clients, duration, absl::StrCat("e", r), &errors);
      txns.join();
    }
    lww_etcd_loaded.push_back(etcd_loaded);
    if (pinning) {
      // The same again with etcd on CPU 0 and this process on CPU 1.
      if (!Pin((*etcd)->pid(), {0}) || !Pin(0, {1})) {
        std::fprintf(stderr, "strong_put_bench: sched_setaffinity failed\n");
        return 1;
      }
      load.key_prefix = absl::StrCat("pdirecttxn/", r, "/");
      auto pt = peerkv::bench::RunDirectTxns(load);
      if (!pt.ok()) {
        std::fprintf(stderr, "direct txn: %s\n", pt.status().ToString().c_str());
        return 1;
      }
      p_direct_txn.push_back(pt->writes_per_second());
      p_strong.push_back(
          RunPuts(address, "strongks", clients, duration, absl::StrCat("ps", r), &errors));
      p_alone.push_back(
          RunPuts(address, "lwwks", clients, duration, absl::StrCat("pa", r), &errors));
      std::thread background([&] {
        RunPuts(address, "strongks", clients, duration, absl::StrCat("pb", r), &errors);
      });
      p_loaded.push_back(
          RunPuts(address, "lwwks", clients, duration, absl::StrCat("pl", r), &errors));
      background.join();
      peerkv::bench::EtcdLoad txn_load{.url = url, .clients = clients, .duration = duration,
                                       .key_prefix = absl::StrCat("pbgtxn/", r, "/")};
      std::thread txns([&] {
        if (!peerkv::bench::RunDirectTxns(txn_load).ok()) errors = true;
      });
      p_etcd_loaded.push_back(
          RunPuts(address, "lwwks", clients, duration, absl::StrCat("pe", r), &errors));
      txns.join();
      if (!Pin((*etcd)->pid(), all_cpus) || !Pin(0, all_cpus)) {
        std::fprintf(stderr, "strong_put_bench: sched_setaffinity failed\n");
        return 1;
      }
      std::printf("  pinned (etcd CPU 0, peerkv CPU 1): direct txn %.0f/s, strong PUT %.0f/s, lww "
                  "PUT alone %.0f/s, under strong load %.0f/s, under direct etcd txn load %.0f/s\n",
                  p_direct_txn.back(), p_strong.back(), p_alone.back(), p_loaded.back(),
                  p_etcd_loaded.back());
    }
    std::printf("round %d: strong PUT with the local fsync %.0f/s\n", r + 1, strong_synced.back());
    std::printf("round %d: etcd direct put %.0f/s, direct txn %.0f/s, strong PUT %.0f/s (strong layer without RPC "
                "%.0f/s), lww PUT alone %.0f/s, lww PUT under strong load %.0f/s, lww PUT under direct "
                "etcd txn load %.0f/s\n",
                r + 1, direct.back(), direct_txn.back(), strong_puts.back(), layer.back(), lww_alone.back(),
                lww_loaded.back(), lww_etcd_loaded.back());
  }
  const double mt = Median(direct_txn);
  const double md = Median(direct), ms = Median(strong_puts), ma = Median(lww_alone),
               ml = Median(lww_loaded);
  std::printf("median: etcd direct put %.0f/s, direct txn %.0f/s, strong PUT %.0f/s (%.2fx of "
              "direct put, %.2fx of direct txn), lww PUT alone %.0f/s, under strong load %.0f/s "
              "(%.2fx of alone)\n",
              md, mt, ms, ms / md, ms / mt, ma, ml, ml / ma);
  const double mf = Median(strong_synced);
  std::printf("median: strong PUT with the local merge waiting for its fsync %.0f/s (%.2fx of "
              "direct txn); not waiting is %.2fx of waiting\n",
              mf, mf / mt, (ms / mf));
  const double me = Median(lww_etcd_loaded);
  std::printf("median: lww PUT under direct etcd txn load %.0f/s (%.2fx of alone)\n", me,
              me / ma);
  if (pinning) {
    const double pt = Median(p_direct_txn), ps = Median(p_strong), pa = Median(p_alone),
                 pl = Median(p_loaded), pe = Median(p_etcd_loaded);
    std::printf("median pinned (etcd CPU 0, peerkv CPU 1): direct txn %.0f/s, strong PUT %.0f/s "
                "(%.2fx of direct txn), lww PUT alone %.0f/s, under strong load %.0f/s (%.2fx of "
                "alone), under direct etcd txn load %.0f/s (%.2fx of alone)\n",
                pt, ps, ps / pt, pa, pl, pl / pa, pe, pe / pa);
  } else {
    std::printf("pinned measurements skipped: %ld CPU(s)\n", cpus);
  }
  std::printf("store commits that did not wait for their fsync (strong merges): %llu\n",
              static_cast<unsigned long long>((*store)->unsynced_commits()));
  (*server)->Stop();
  server->reset();
  strong.reset();
  store->reset();
  return errors.load() ? 1 : 0;
}
