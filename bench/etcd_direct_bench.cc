// bench/etcd_direct_bench.cc: 16 clients writing to etcd directly through
// the backend's client path (the baseline of issue 11's "strong PUT at least
// 0.7x"): plain puts, and compare-and-put txns; and the same clients through
// EtcdConsensusLog::Propose. Measured in rotation in one run against one
// etcd; prints each round and the medians with their ratios.
//
// Usage: etcd_direct_bench [--etcd http://HOST:PORT] [--clients N]
//          [--seconds S] [--rounds R]
// Without --etcd it starts its own etcd (testing/etcd_server.h) with its
// data under $TEST_TMPDIR, or /var/tmp (a real disk: etcd fsyncs each write).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/etcd_direct.h"
#include "testing/etcd_server.h"

namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Usage(const char* why) {
  std::fprintf(stderr,
               "etcd_direct_bench: %s\nusage: etcd_direct_bench [--etcd http://HOST:PORT] "
               "[--clients 1..256] [--seconds 1..600] [--rounds 1..50]\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string url;
  int clients = 16;
  int seconds = 5;
  int rounds = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) return Usage(("missing the value of " + flag).c_str());
    const std::string value = argv[++i];
    if (flag == "--etcd") {
      url = value;
    } else if (flag == "--clients") {
      if (!absl::SimpleAtoi(value, &clients) || clients < 1 || clients > 256) {
        return Usage("--clients must be 1..256");
      }
    } else if (flag == "--seconds") {
      if (!absl::SimpleAtoi(value, &seconds) || seconds < 1 || seconds > 600) {
        return Usage("--seconds must be 1..600");
      }
    } else if (flag == "--rounds") {
      if (!absl::SimpleAtoi(value, &rounds) || rounds < 1 || rounds > 50) {
        return Usage("--rounds must be 1..50");
      }
    } else {
      return Usage(("unknown flag " + flag).c_str());
    }
  }
  std::unique_ptr<peerkv::testing::EtcdServer> etcd;
  if (url.empty()) {
    if (std::getenv("TEST_TMPDIR") == nullptr) setenv("TEST_TMPDIR", "/var/tmp", 1);
    auto started = peerkv::testing::EtcdServer::Start();
    if (!started.ok()) {
      std::fprintf(stderr, "etcd_direct_bench: %s\n", started.status().ToString().c_str());
      return 1;
    }
    etcd = *std::move(started);
    url = etcd->client_url();
  }
  std::printf("etcd at %s, %d clients, %d s per measurement, %d rounds\n", url.c_str(), clients,
              seconds, rounds);
  const char* kNames[3] = {"put", "txn", "propose"};
  std::vector<double> rates[3];
  for (int r = 0; r < rounds; ++r) {
    peerkv::bench::EtcdLoad load;
    load.url = url;
    load.clients = clients;
    load.duration = absl::Seconds(seconds);
    load.key_prefix = absl::StrCat("bench/", r, "/");
    // Rotate which goes first, so drift in the machine's load is shared.
    for (int i = 0; i < 3; ++i) {
      const int which = (r + i) % 3;
      auto result = which == 0   ? peerkv::bench::RunDirectPuts(load)
                    : which == 1 ? peerkv::bench::RunDirectTxns(load)
                                 : peerkv::bench::RunConsensusProposes(load);
      if (!result.ok()) {
        std::fprintf(stderr, "etcd_direct_bench: %s\n", result.status().ToString().c_str());
        return 1;
      }
      const double rate = result->writes_per_second();
      rates[which].push_back(rate);
      std::printf("round %d %-8s %8.0f writes/s (%llu writes)\n", r + 1, kNames[which], rate,
                  static_cast<unsigned long long>(result->writes));
      std::fflush(stdout);
    }
  }
  const double put = Median(rates[0]);
  const double txn = Median(rates[1]);
  const double propose = Median(rates[2]);
  std::printf(
      "medians: direct put %.0f, direct txn %.0f, propose %.0f writes/s; txn/put %.2f, "
      "propose/txn %.2f, propose/put %.2f\n",
      put, txn, propose, txn / put, propose / txn, propose / put);
  return 0;
}
