// bench/reconcile_bench.cc: range-based reconciliation between two stores
// (replication/reconcile.h), in one process, through the encoded messages
// (the bytes counted are the reconcile payloads; each Cap'n Proto call adds
// a frame of about 60 bytes a direction, counted separately as `framing`).
// Two stores of 16-byte random doc ids and 100-byte values, MDB_NOSYNC for
// setup, under $PEERKV_BENCH_DIR (default /var/tmp):
//   in sync at 100,000 and at 1,000,000 records: time and bytes of a
//   session, against Store::Digest() (a full scan, the O(n) way to compare)
//   measured in the same run;
//   at 1,000,000 records, d = 10 / 1,000 / 10,000 differing registers (half
//   newer on each side): bytes, rounds, time, and the bounds (bytes
//   <= 2 x the differing records' bytes + 100 per record; rounds <= 2 +
//   log16(n)).
// Usage: reconcile_bench [--max-records=N] (default 1,000,000) [--trace]
// (--trace: what each round of the differing cases carried).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "bench/baseline.h"
#include "common/macros.h"
#include "replication/reconcile.h"
#include "store/store.h"

namespace peerkv {
namespace {

constexpr size_t kKeyBytes = 16;
constexpr size_t kValueBytes = 100;
constexpr char kKeyspace[] = "bench";
// A Cap'n Proto call or return of one Data field: frame, header and
// pointers, a little more for the error field of an answer.
constexpr size_t kFramingBytes = 64;

std::string RandomBytes(std::mt19937_64& rng, size_t n) {
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

std::unique_ptr<Store> OpenStore(const std::string& dir) {
  StoreOptions options;
  options.dir = dir;
  options.sync = false;
  options.max_clock_skew_ms = int64_t{1} << 50;
  options.max_range_view_bytes = size_t{1} << 31;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
  PEERKV_CHECK(store.ok());
  absl::StatusOr<std::vector<std::string>> scrub = (*store)->WaitForOpenScrub();
  PEERKV_CHECK(scrub.ok());
  return std::move(*store);
}

void MergeAll(Store& store, const std::vector<Record>& records) {
  for (size_t i = 0; i < records.size(); i += 10'000) {
    std::vector<Record> batch(records.begin() + i,
                              records.begin() + std::min(records.size(), i + 10'000));
    absl::StatusOr<MergeResult> merged = store.Merge(std::move(batch));
    PEERKV_CHECK(merged.ok() && merged->refused.empty());
  }
}

// --trace: each round's messages of the differing cases.
bool g_trace = false;

struct Result {
  replication::ReconcileReport report;
  size_t messages = 0;
  // The longest responder round (ServeReconcile): how long a server's
  // event loop answered nobody when rounds were served on it.
  absl::Duration longest_answer;
};

// A session of `a` with `b`, as the engine and the server run it.
Result Reconcile(Store& a, Store& b, bool trace = false) {
  auto local = replication::StoreReconcileSource(a);
  auto remote = replication::StoreReconcileSource(b);
  replication::ReconcileSession session(*local);
  Result out;
  const absl::Time start = absl::Now();
  while (true) {
    absl::StatusOr<std::optional<replication::ReconcileRequest>> request = session.Next();
    PEERKV_CHECK(request.ok());
    if (!request->has_value()) break;
    const std::string sent = replication::EncodeReconcileRequest(**request);
    session.NoteSent(sent.size());
    absl::StatusOr<replication::ReconcileRequest> received =
        replication::DecodeReconcileRequest(sent, kMaxValueBytes);
    PEERKV_CHECK(received.ok());
    MergeResult pushed;
    if (!received->push.empty()) {
      absl::StatusOr<MergeResult> merged = b.Merge(std::move(received->push));
      PEERKV_CHECK(merged.ok());
      pushed = *merged;
      received->push.clear();
    }
    const absl::Time answer_start = absl::Now();
    absl::StatusOr<replication::ReconcileResponse> response =
        replication::ServeReconcile(*remote, *received, size_t{16} << 20);
    out.longest_answer = std::max(out.longest_answer, absl::Now() - answer_start);
    PEERKV_CHECK(response.ok());
    response->push_won = pushed.won;
    response->push_refused = pushed.refused.size();
    const std::string answer = replication::EncodeReconcileResponse(*response);
    absl::StatusOr<replication::ReconcileResponse> decoded =
        replication::DecodeReconcileResponse(answer, kMaxValueBytes);
    PEERKV_CHECK(decoded.ok());
    if (trace) {
      size_t children = 0, items = 0, values = 0, kinds[3] = {0, 0, 0};
      for (const auto& ref : received->expand) children += ref.children.empty() ? 0 : 1;
      for (const auto& e : decoded->expansions) {
        ++kinds[static_cast<int>(e.kind)];
        items += e.items.size();
        for (const Record& r : e.items) values += r.value.empty() ? 0 : 1;
      }
      std::printf(
          "  round %zu: request %zu bytes (compare %d, expand %zu (%zu with children), fetch %zu, "
          "push %zu); answer %zu bytes (differing %zu, expanded %llu, expansions %zu/%zu/%zu "
          "children/items/no-values, items %zu with %zu values, fetched %zu)\n",
          out.messages + 1, sent.size(), received->compare ? 1 : 0, received->expand.size(),
          children, received->fetch.size(), pushed.won + pushed.refused.size(), answer.size(),
          decoded->differing.size(), static_cast<unsigned long long>(decoded->expanded), kinds[0],
          kinds[1], kinds[2], items, values, decoded->fetched.size());
    }
    absl::StatusOr<std::vector<Record>> merge = session.OnResponse(*decoded, answer.size());
    PEERKV_CHECK(merge.ok());
    if (!merge->empty()) {
      absl::StatusOr<MergeResult> merged = a.Merge(std::move(*merge));
      PEERKV_CHECK(merged.ok());
      session.NoteMerged(merged->won, merged->refused.size());
    }
    ++out.messages;
  }
  out.report = session.report();
  out.report.time = absl::Now() - start;
  return out;
}

void InSync(Store& a, Store& b, size_t n) {
  // Warm (the first session pays for nothing the next one does not).
  Reconcile(a, b);
  constexpr int kRuns = 20;
  absl::Duration total;
  Result last;
  for (int i = 0; i < kRuns; ++i) {
    last = Reconcile(a, b);
    PEERKV_CHECK(last.report.was_in_sync);
    total += last.report.time;
  }
  const absl::Time start = absl::Now();
  absl::StatusOr<uint64_t> digest = a.Digest();
  PEERKV_CHECK(digest.ok());
  const absl::Duration scan = absl::Now() - start;
  const absl::Duration per = total / kRuns;
  std::printf(
      "in-sync n=%zu: %.1f us per session (mean of %d), rounds %d, bytes sent %llu received "
      "%llu (+%zu framing each way); Digest() scan %.1f ms; ratio scan/session %.0f\n",
      n, absl::ToDoubleMicroseconds(per), kRuns, last.report.rounds,
      static_cast<unsigned long long>(last.report.bytes_sent),
      static_cast<unsigned long long>(last.report.bytes_received), kFramingBytes * last.messages,
      absl::ToDoubleMilliseconds(scan), absl::FDivDuration(scan, per));
}

void Differ(Store& a, Store& b, size_t n, size_t d, std::mt19937_64& rng,
            const std::vector<Record>& base) {
  // d registers differ: half newer on a, half newer on b (distinct keys).
  std::vector<Record> on_a, on_b;
  size_t differing_bytes = 0;
  std::vector<size_t> picks;
  std::uniform_int_distribution<size_t> pick(0, base.size() - 1);
  std::set<size_t> seen;
  while (picks.size() < d) {
    const size_t i = pick(rng);
    if (seen.insert(i).second) picks.push_back(i);
  }
  const uint64_t hlc = MakeHlc(1'800'000'000'000 + d * 1000, 0);
  for (size_t j = 0; j < picks.size(); ++j) {
    Record r = base[picks[j]];
    r.version = Version{hlc + j, 9};
    r.value = RandomBytes(rng, kValueBytes);
    differing_bytes += r.key.size() + r.value.size() + 16;
    (j % 2 == 0 ? on_a : on_b).push_back(std::move(r));
  }
  MergeAll(a, on_a);
  MergeAll(b, on_b);
  if (g_trace) std::printf("d=%zu:\n", d);
  Result r = Reconcile(a, b, g_trace);
  PEERKV_CHECK(r.report.in_sync);
  uint64_t fetched = 0, lacked = 0;
  for (const auto& k : r.report.keyspaces) {
    fetched += k.fetched;
    lacked += k.peer_lacked;
  }
  const uint64_t bytes = r.report.bytes_sent + r.report.bytes_received;
  const uint64_t framing = 2 * kFramingBytes * r.messages;
  const double bound = 2.0 * differing_bytes + 100.0 * d;
  const double round_bound = 2 + std::log(static_cast<double>(n)) / std::log(16.0);
  std::printf(
      "differ n=%zu d=%zu: rounds %d (bound %.2f), passes %d, bytes sent %llu received %llu "
      "total %llu (+%llu framing) = %.2f x the differing records' %zu bytes, %.1f bytes a "
      "record beyond them (bound: total <= %.0f: %s; with the framing: %s); fetched %llu, "
      "peer lacked %llu, "
      "nodes asked %llu; %.1f ms, the longest responder round %.1f ms\n",
      n, d, r.report.rounds, round_bound, r.report.passes,
      static_cast<unsigned long long>(r.report.bytes_sent),
      static_cast<unsigned long long>(r.report.bytes_received),
      static_cast<unsigned long long>(bytes), static_cast<unsigned long long>(framing),
      bytes / static_cast<double>(differing_bytes), differing_bytes,
      (static_cast<double>(bytes) - differing_bytes) / d, bound,
      bytes <= bound ? "met" : "NOT met", bytes + framing <= bound ? "met" : "NOT met",
      static_cast<unsigned long long>(fetched),
      static_cast<unsigned long long>(lacked),
      static_cast<unsigned long long>(r.report.nodes_expanded),
      absl::ToDoubleMilliseconds(r.report.time), absl::ToDoubleMilliseconds(r.longest_answer));
  std::fflush(stdout);
}

int Main(int argc, char** argv) {
  size_t max_records = 1'000'000;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--max-records=", 0) == 0) {
      PEERKV_CHECK(absl::SimpleAtoi(arg.substr(14), &max_records));
    } else if (arg == "--trace") {
      g_trace = true;
    }
  }
  const std::string root = bench::BenchBase() + "/peerkv-reconcile-bench";
  std::filesystem::remove_all(root);
  std::unique_ptr<Store> a = OpenStore(root + "/a");
  std::unique_ptr<Store> b = OpenStore(root + "/b");
  std::mt19937_64 rng(20261201);
  std::vector<Record> records;
  const uint64_t hlc = MakeHlc(1'700'000'000'000, 0);
  size_t held = 0;
  for (size_t n : {size_t{100'000}, max_records}) {
    if (n < held) continue;
    std::vector<Record> more;
    for (size_t i = held; i < n; ++i) {
      more.push_back(Record{kKeyspace, RandomBytes(rng, kKeyBytes), Version{hlc + i, 1 + i % 3},
                            false, RandomBytes(rng, kValueBytes), 0});
    }
    const absl::Time start = absl::Now();
    MergeAll(*a, more);
    MergeAll(*b, more);
    std::printf("setup: %zu more records into both stores in %.1f s\n", more.size(),
                absl::ToDoubleSeconds(absl::Now() - start));
    records.insert(records.end(), more.begin(), more.end());
    held = n;
    InSync(*a, *b, n);
  }
  for (size_t d : {size_t{10}, size_t{1000}, size_t{10'000}}) {
    Differ(*a, *b, held, d, rng, records);
  }
  a.reset();
  b.reset();
  std::filesystem::remove_all(root);
  return 0;
}

}  // namespace
}  // namespace peerkv

int main(int argc, char** argv) { return peerkv::Main(argc, argv); }
