// bench/snapshot_stages_bench.cc: where a snapshot bootstrap's time goes,
// stage by stage, in one thread and without the network: a source store of
// N records (100-byte values, doc ids in order or shuffled) is copied into
// an empty one page by page as the engine does, and each stage is timed
// apart: the server's read (Store::ReadSnapshot), its encoding for the wire
// (rpc::EncodeBatch), the requester's decoding (rpc::DecodeBatch) and page
// checks (replication::ValidateSnapshotPage), and the load
// (Store::LoadSnapshotPage: validation, merge, log, change index, range
// fingerprints, durable commit). The copy is checked complete (equal
// fingerprints). Pages are the size converge_bench's bootstrap gets (the
// reply budget, 4.5 MiB, over 134 bytes per record). Each stage is timed
// in the process's CPU time (the other threads idle meanwhile but the
// store's writer, which does the load's work: on a shared machine the
// stages' own cost) and in wall time (the load's includes its fsyncs).
//
// Usage: snapshot_stages_bench [records] [sequential|random] [repeats]
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "bench/baseline.h"
#include "common/macros.h"
#include "replication/serve.h"
#include "replication/snapshot.h"
#include "rpc/batch_codec.h"
#include "store/store.h"

namespace peerkv {
namespace {

constexpr size_t kPageRecords = 31'775;
constexpr size_t kPageBytes = size_t{9} << 19;  // 4.5 MiB

std::unique_ptr<Store> Open(const std::string& dir) {
  StoreOptions options;
  options.dir = dir;
  options.initial_map_bytes = size_t{1} << 30;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
  PEERKV_CHECK(store.ok());
  return std::move(*store);
}

void Fill(Store& source, int n, bool random_order) {
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[i] = i;
  if (random_order) std::shuffle(order.begin(), order.end(), std::mt19937_64(42));
  std::vector<Mutation> batch;
  for (int i : order) {
    batch.push_back(Mutation{"bench", absl::StrFormat("doc-%07d", i), std::string(100, 'v')});
    if (batch.size() == 1000) {
      PEERKV_CHECK(source.Write(std::move(batch)).ok());
      batch.clear();
    }
  }
  if (!batch.empty()) PEERKV_CHECK(source.Write(std::move(batch)).ok());
}

absl::Duration ProcessCpu() {
  timespec ts;
  PEERKV_CHECK(clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) == 0);
  return absl::DurationFromTimespec(ts);
}

// A stage's CPU and wall time, summed over pages.
struct Stage {
  absl::Duration cpu, wall;
};

// Times the stages one after another.
class StageClock {
 public:
  StageClock() : cpu_(ProcessCpu()), wall_(absl::Now()) {}
  // Adds the time since the last call (or construction) to `stage`.
  void Lap(Stage& stage) {
    const absl::Duration cpu = ProcessCpu();
    const absl::Time wall = absl::Now();
    stage.cpu += cpu - cpu_;
    stage.wall += wall - wall_;
    cpu_ = cpu;
    wall_ = wall;
  }

 private:
  absl::Duration cpu_;
  absl::Time wall_;
};

struct Stages {
  Stage read, encode, decode, check, load;
};

// Copies `source` into the empty `target` as the engine does.
Stages Copy(const Store& source, Store& target) {
  Stages t;
  BootstrapMarker marker{source.replica_id(), source.incarnation(), source.open_nonce(),
                         source.max_seq(), source.GetWatermarks()};
  for (bool done = false; !done;) {
    replication::SnapshotRequest request;
    request.incarnation = marker.records == 0 ? 0 : marker.incarnation;
    request.point_seq = marker.point_seq;
    request.after_keyspace = marker.after_keyspace;
    request.after_key = marker.after_key;
    request.max_records = kPageRecords;
    StageClock clock;
    absl::StatusOr<Store::SnapshotPage> page = source.ReadSnapshot(
        marker.after_keyspace, marker.after_key, kPageRecords, kPageBytes, kMaxValueBytes);
    PEERKV_CHECK(page.ok());
    clock.Lap(t.read);
    const std::string wire = rpc::EncodeBatch(page->records);
    clock.Lap(t.encode);
    absl::StatusOr<std::vector<Record>> records =
        rpc::DecodeBatch(wire, replication::kMaxSnapshotRecords, page->records.size());
    PEERKV_CHECK(records.ok());
    clock.Lap(t.decode);
    replication::SnapshotResponse response{source.replica_id(), marker.incarnation,
                                           marker.nonce,        marker.point_seq,
                                           {},                  std::move(*records)};
    response.count = response.records.size();
    response.done = page->done;
    PEERKV_CHECK(replication::ValidateSnapshotPage(source.replica_id(), request, response).ok());
    clock.Lap(t.check);
    done = response.done;
    if (!response.records.empty()) {
      marker.after_keyspace = response.records.back().keyspace;
      marker.after_key = response.records.back().key;
    }
    marker.records += response.records.size();
    std::optional<BootstrapMarker> progress;
    std::optional<CheckpointUpdate> complete;
    if (done) {
      complete = CheckpointUpdate{
          marker.peer_id, PeerCheckpoint{marker.incarnation, marker.point_seq, marker.nonce},
          marker.watermarks};
    } else {
      progress = marker;
    }
    PEERKV_CHECK(target.LoadSnapshotPage(std::move(response.records), std::move(progress),
                                         std::move(complete))
                     .ok());
    clock.Lap(t.load);
  }
  return t;
}

// The first field of /proc/loadavg.
std::string LoadAverage() {
  std::FILE* f = std::fopen("/proc/loadavg", "r");
  char buf[32] = "?";
  if (f != nullptr) {
    if (std::fscanf(f, "%31s", buf) != 1) buf[0] = '?', buf[1] = 0;
    std::fclose(f);
  }
  return buf;
}

}  // namespace
}  // namespace peerkv

int main(int argc, char** argv) {
  using namespace peerkv;
  int n = 1'000'000, repeats = 3;
  std::string order = argc > 2 ? argv[2] : "sequential";
  if ((argc > 1 && (!absl::SimpleAtoi(argv[1], &n) || n < 1)) ||
      (order != "sequential" && order != "random") ||
      (argc > 3 && (!absl::SimpleAtoi(argv[3], &repeats) || repeats < 1))) {
    std::fprintf(stderr, "usage: snapshot_stages_bench [records] [sequential|random] [repeats]\n");
    return 2;
  }
  bench::ScratchDir dir;
  std::unique_ptr<Store> source = Open(dir.path() + "/source");
  Fill(*source, n, order == "random");
  for (int r = 0; r < repeats; ++r) {
    bench::ScratchDir target_dir;
    std::unique_ptr<Store> target = Open(target_dir.path());
    const Stages t = Copy(*source, *target);
    PEERKV_CHECK(target->fingerprint() == source->fingerprint());
    const Stage* stages[] = {&t.read, &t.encode, &t.decode, &t.check, &t.load};
    absl::Duration cpu, wall;
    std::string parts;
    for (const Stage* stage : stages) {
      cpu += stage->cpu;
      wall += stage->wall;
      absl::StrAppendFormat(&parts, " %.0f/%.0f", absl::ToDoubleMilliseconds(stage->cpu),
                            absl::ToDoubleMilliseconds(stage->wall));
    }
    std::printf(
        "%s ids, %d records: %.0f records/s (wall), %.0f records per CPU second; ms CPU/wall "
        "of read, encode, decode, check, load:%s (load average %s)\n",
        order.c_str(), n, n / absl::ToDoubleSeconds(wall), n / absl::ToDoubleSeconds(cpu),
        parts.c_str(), LoadAverage().c_str());
    std::fflush(stdout);
  }
  return 0;
}
