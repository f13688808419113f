// bench/signed_merge_bench.cc: what signed records cost (README "Signed
// records"). 100,000 records with random 16-byte doc ids and 100-byte
// values, signed by three devices of the keyspace's writer:
//   BM_VerifyRecord      auth::RecordVerifier::Verify alone, one thread:
//                        records verified per second per core (one
//                        Ed25519 check and one BLAKE2b of the value each;
//                        the three certificates are checked once);
//   BM_VerifyRecordAgain the same over 1000 records verified before (gossip
//                        offering a record again): a cache hit each;
//   BM_Ed25519Verify     libsodium's verify alone, of one signature again
//                        and again;
//   BM_Ed25519VerifyDistinct  libsodium's verify alone over the first
//                        10,000 records' messages and signatures (each
//                        signature another: the floor under
//                        BM_VerifyRecord);
//   BM_MergeSigned       Store::Merge in batches of 1000 into a fresh store
//                        with the merge gate on a keyspace that requires
//                        signatures (every record verified);
//   BM_MergeFresh        the same records unsigned, no gate (merge_bench's);
//   BM_MergeFreshGated   unsigned, with the gate installed, on a keyspace
//                        that requires none (a user's own devices): what the
//                        gate costs unsigned keyspaces.
// Every transaction durable (fsync); directories under $PEERKV_BENCH_DIR
// (default /var/tmp, on disk).
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "auth/access.h"
#include "auth/certificate.h"
#include "auth/record_signature.h"
#include "bench/baseline.h"
#include "benchmark/benchmark.h"
#include "common/macros.h"
#include "store/store.h"

namespace peerkv {
namespace {

constexpr size_t kRecords = 100'000;
constexpr size_t kBatch = 1000;
constexpr char kKeyspace[] = "bench";

class BenchAccess final : public auth::Access {
 public:
  explicit BenchAccess(bool signed_keyspace) : signed_(signed_keyspace) {}
  bool MayRead(const auth::Principal&, std::string_view) const override { return true; }
  bool MayWrite(const auth::Principal&, std::string_view) const override { return true; }
  bool RequiresSignature(std::string_view) const override { return signed_; }

 private:
  const bool signed_;
};

std::string RandomBytes(std::mt19937_64& rng, size_t n) {
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

// The records, unsigned and signed (by three devices of one user).
const std::vector<Record>& Records(bool with_signatures) {
  static const auto* records = [] {
    auto* out = new std::vector<Record>[2];
    std::mt19937_64 rng(20261202);
    const uint64_t base = MakeHlc(1'700'000'000'000, 0);
    std::unique_ptr<auth::SigningKey> user = auth::SigningKey::Generate();
    std::vector<std::unique_ptr<auth::SigningKey>> devices;
    std::vector<std::string> certificates;
    for (int d = 0; d < 3; ++d) {
      devices.push_back(auth::SigningKey::Generate());
      certificates.push_back(
          auth::IssueDeviceCertificate(*user, devices.back()->public_key(), "device", 1).Encode());
    }
    for (size_t i = 0; i < kRecords; ++i) {
      Record r{kKeyspace, RandomBytes(rng, 16), Version{base + i, 1 + i % 3}, false,
               RandomBytes(rng, 100), 0};
      out[0].push_back(r);
      r.signature = auth::SignRecord(*devices[i % 3], certificates[i % 3], r.keyspace, r.key,
                                     r.version, r.deleted, r.value);
      out[1].push_back(std::move(r));
    }
    return out;
  }();
  return records[with_signatures ? 1 : 0];
}

// `gate`: none, or over a keyspace that requires signatures or not.
enum class Gate { kNone, kUnsignedKeyspace, kSignedKeyspace };

std::unique_ptr<Store> OpenStore(const std::string& dir, Gate gate) {
  StoreOptions options;
  options.dir = dir;
  options.initial_map_bytes = size_t{1} << 30;
  if (gate != Gate::kNone) {
    options.record_gate = auth::MakeRecordGate(
        std::make_shared<BenchAccess>(gate == Gate::kSignedKeyspace),
        std::make_shared<auth::RecordVerifier>(), auth::SigningKey::Generate()->public_key());
  }
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
  PEERKV_CHECK(store.ok());
  return std::move(*store);
}

void BM_VerifyRecord(benchmark::State& state) {
  const std::vector<Record>& records = Records(true);
  auth::RecordVerifier verifier;
  size_t i = 0;
  for (auto _ : state) {
    absl::StatusOr<auth::SignedBy> by = verifier.Verify(records[i]);
    PEERKV_CHECK(by.ok());
    benchmark::DoNotOptimize(by);
    i = (i + 1) % records.size();
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_VerifyRecordAgain(benchmark::State& state) {
  const std::vector<Record>& records = Records(true);
  constexpr size_t kSeen = 1000;
  auth::RecordVerifier verifier;
  for (size_t i = 0; i < kSeen; ++i) PEERKV_CHECK(verifier.Verify(records[i]).ok());
  size_t i = 0;
  for (auto _ : state) {
    absl::StatusOr<auth::SignedBy> by = verifier.Verify(records[i]);
    PEERKV_CHECK(by.ok());
    benchmark::DoNotOptimize(by);
    i = (i + 1) % kSeen;
  }
  PEERKV_CHECK(verifier.signatures_checked() == kSeen);
  state.SetItemsProcessed(state.iterations());
}

// libsodium's Ed25519 verify alone, over the same messages: the floor
// under BM_VerifyRecord.
void BM_Ed25519Verify(benchmark::State& state) {
  std::unique_ptr<auth::SigningKey> key = auth::SigningKey::Generate();
  const std::string message = auth::RecordSigningMessage(kKeyspace, "0123456789abcdef",
                                                         Version{1, 1}, false,
                                                         std::string(100, 'v'));
  const std::string signature = key->Sign(message);
  for (auto _ : state) {
    PEERKV_CHECK(auth::Verify(key->public_key(), message, signature));
  }
  state.SetItemsProcessed(state.iterations());
}

// Distinct signatures, as BM_VerifyRecord meets them: libsodium's verify
// is variable-time, and one signature verified over and over trains the
// branch predictor on its scalars.
void BM_Ed25519VerifyDistinct(benchmark::State& state) {
  const std::vector<Record>& records = Records(true);
  struct Check {
    auth::PublicKey device;
    std::string message;
    std::string signature;
  };
  std::vector<Check> checks;
  auth::RecordVerifier verifier;
  for (size_t i = 0; i < 10'000; ++i) {
    const Record& r = records[i];
    absl::StatusOr<auth::SignedBy> by = verifier.Verify(r);
    PEERKV_CHECK(by.ok());
    checks.push_back(Check{by->device,
                           auth::RecordSigningMessage(r.keyspace, r.key, r.version, r.deleted,
                                                      r.value),
                           r.signature.substr(r.signature.size() - auth::kSignatureBytes)});
  }
  size_t i = 0;
  for (auto _ : state) {
    const Check& c = checks[i];
    PEERKV_CHECK(auth::Verify(c.device, c.message, c.signature));
    i = (i + 1) % checks.size();
  }
  state.SetItemsProcessed(state.iterations());
}

void Merge(benchmark::State& state, bool with_signatures, Gate gate) {
  const auto batches = bench::SplitIntoBatches(Records(with_signatures), kBatch);
  for (auto _ : state) {
    state.PauseTiming();
    bench::ScratchDir dir;
    auto store = OpenStore(dir.path(), gate);
    auto input = batches;
    state.ResumeTiming();
    for (auto& batch : input) {
      absl::StatusOr<MergeResult> result = store->Merge(std::move(batch));
      PEERKV_CHECK(result.ok() && result->won == kBatch);
    }
    state.PauseTiming();
    store.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * kRecords);
}

void BM_MergeSigned(benchmark::State& state) { Merge(state, true, Gate::kSignedKeyspace); }
void BM_MergeFresh(benchmark::State& state) { Merge(state, false, Gate::kNone); }
void BM_MergeFreshGated(benchmark::State& state) {
  Merge(state, false, Gate::kUnsignedKeyspace);
}

BENCHMARK(BM_VerifyRecord)->MinTime(1.0);
BENCHMARK(BM_VerifyRecordAgain)->MinTime(1.0);
BENCHMARK(BM_Ed25519Verify)->MinTime(1.0);
BENCHMARK(BM_Ed25519VerifyDistinct)->MinTime(1.0);
BENCHMARK(BM_MergeSigned)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_MergeFresh)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_MergeFreshGated)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

}  // namespace
}  // namespace peerkv

BENCHMARK_MAIN();
