// store/codec.h: the byte layout of everything the store keeps in LMDB.
// Fixed-width integers are little-endian in values and big-endian in keys
// (so that LMDB's byte order is numeric order). Decoders check sizes and
// report DataLoss for bytes that cannot have been written by this code.
// Internal to store/.
//
//   records  key:   keyspace 0x00 doc-id
//            value: flags(1) hlc(8) origin(8) seq(8)       (the header)
//   log      key:   seq (8, big-endian)
//            value: key-length(2) records-key source(8) [mark(16)] value-bytes
//                   (source: the peer the change was merged from, 0 if local;
//                   bit 15 of key-length set: a causal mark follows,
//                   hlc(8) origin(8), the version the write replaced at its
//                   origin, Record::replaces; format 4)
//                   [signature-length(2) signature] before the value when
//                   bit 14 of key-length is set (Record::signature;
//                   format 5)
//   peers    key:   peer replica id (8, big-endian)
//            value: incarnation(8) seq(8)                  (a checkpoint)
//   meta     key:   name
//            "format", "replica_id", "incarnation": value(8)
//            "state":      clock_mark(8) max_seq(8) live_records(8)
//                          tombstones(8) fingerprint(8)    (MetaState)
//            "watermarks": (origin(8) hlc(8))*, origins ascending, each
//                          once
//            "lineage":    store/lineage.h
//            "first_open": store/lineage.h (FirstOpen)
//            "forgotten_checkpoints": (peer(8) incarnation(8) seq(8)
//                          nonce(8))*: checkpoints a fork or a forgotten
//                          retired id dropped, kept as evidence
//   ranges   the range fingerprints: see store/range_table.h
//   conflicts key: keyspace 0x00 id (8, big-endian); value: see
//            store/conflict_journal.h (the conflict journal, format 4)
//
// Values live in the log, not in `records`: the records tree, which random
// doc ids update all over, stays small and dense (about 55 bytes a record),
// and value bytes are appended where the log ends. A register's value is
// the log entry its header's seq names.
#ifndef PEERKV_STORE_CODEC_H_
#define PEERKV_STORE_CODEC_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "store/types.h"
#include "store/validation.h"
#include "store/version.h"

namespace peerkv::codec {

// The layout version written to meta "format"; a store with a greater one
// was written by a newer peerkv and is not opened.
// Format 2: the fingerprint covers values. Format 3: the "ranges" database
// (store/range_table.h) and a fingerprint that is the low 64 bits of its
// roots' sum. An older store is upgraded when opened: the ranges are
// computed from the records, once (ranges::DiffFromRecords). Format 4:
// log entries may carry a causal mark (bit 15 of key-length) and the
// "conflicts" database exists; a format-3 store needs no change. Format 5:
// the "ks_changes" database (store/change_index.h) indexes every log entry
// by keyspace; an older store gets it built from its log when opened.
// log entries may carry a record signature (bit 14 of key-length); older
// entries have none (unsigned records), so a format-4 store is upgraded by
// writing the new marker (an older peerkv then refuses the store instead
// of misreading a signed entry's bytes as its value).
inline constexpr uint64_t kFormatVersion = 5;
// The names of the meta entries (see the layout above).
inline constexpr char kMetaFormat[] = "format";
inline constexpr char kMetaReplicaId[] = "replica_id";
inline constexpr char kMetaIncarnation[] = "incarnation";
inline constexpr char kMetaState[] = "state";
inline constexpr char kMetaWatermarks[] = "watermarks";
// store/lineage.h's EncodeLineage.
inline constexpr char kMetaLineage[] = "lineage";
// store/lineage.h's EncodeFirstOpen (absent in stores whose id began before
// it was kept: then a restore fork keeps nothing of its old id).
inline constexpr char kMetaFirstOpen[] = "first_open";
// Checkpoints a fork or ForgetRetiredIds dropped, kept as evidence of what
// was pulled (Store::ForgottenCheckpoint): {peer(8) checkpoint(24)}*.
inline constexpr char kMetaForgottenCheckpoints[] = "forgotten_checkpoints";
// A snapshot bootstrap in progress (BootstrapMarker): peer, incarnation,
// nonce, point seq, records (8 each), keyspace length (8), keyspace, key
// length (8), key, then watermarks as in kMetaWatermarks. Absent: none.
inline constexpr char kMetaBootstrap[] = "bootstrap";
std::string EncodeBootstrapMarker(const BootstrapMarker& marker);
absl::StatusOr<BootstrapMarker> DecodeBootstrapMarker(std::string_view stored);

inline constexpr uint8_t kFlagDeleted = 0x01;
inline constexpr size_t kRecordHeaderBytes = 1 + 8 + 8 + 8;

// What `records` holds for a register.
struct RecordHeader {
  Version version;
  bool deleted = false;
  // The log entry that holds the value.
  uint64_t seq = 0;
};

void PutFixed64(std::string* out, uint64_t v);
uint64_t GetFixed64(const char* p);
void PutBigEndian64(std::string* out, uint64_t v);
uint64_t GetBigEndian64(const char* p);
std::string BigEndian64(uint64_t v);

std::string RecordKey(std::string_view keyspace, std::string_view key);
// RecordKey into a reused buffer (cleared first).
void AppendRecordKey(std::string_view keyspace, std::string_view key, std::string* out);
// A records key built in a buffer of its own, without allocating: what the
// read path (GetView) looks up. REQUIRES: keyspace and key within the
// kMaxKeyspaceBytes and kMaxKeyBytes limits (validated).
class StackRecordKey {
 public:
  StackRecordKey(std::string_view keyspace, std::string_view key);
  StackRecordKey(const StackRecordKey&) = delete;
  StackRecordKey& operator=(const StackRecordKey&) = delete;
  std::string_view view() const { return std::string_view(buffer_, size_); }

 private:
  char buffer_[kMaxKeyspaceBytes + 1 + kMaxKeyBytes];
  size_t size_ = 0;
};
// Splits a records key into keyspace and doc id (views into `record_key`).
absl::Status SplitRecordKey(std::string_view record_key,
                            std::string_view* keyspace, std::string_view* key);

// A log key back to its seq; DataLoss unless it is 8 bytes.
absl::StatusOr<uint64_t> DecodeLogKey(std::string_view stored);

// The header into `out` (cleared first).
void EncodeRecordHeader(const RecordHeader& header, std::string* out);
absl::StatusOr<RecordHeader> DecodeRecordHeader(std::string_view stored);

// A log entry into `out` (cleared first). REQUIRES: a tombstone's value is
// empty.
void EncodeLogEntry(std::string_view record_key, uint64_t source, std::string_view value,
                    std::string* out, const std::optional<Version>& replaces = std::nullopt,
                    std::string_view signature = {});
struct LogEntry {
  std::string_view record_key;
  // The replica id of the peer this change was merged from; 0 if local.
  uint64_t source = 0;
  std::string_view value;
  // Record::replaces.
  std::optional<Version> replaces;
  // Record::signature (empty: unsigned).
  std::string_view signature;
};
absl::StatusOr<LogEntry> DecodeLogEntry(std::string_view stored);

// A meta "format", "replica_id" or "incarnation" value. `name` only names
// the entry in errors.
std::string EncodeMetaU64(uint64_t value);
absl::StatusOr<uint64_t> DecodeMetaU64(std::string_view stored, std::string_view name);

// The store's counters as of its last commit, kept in meta "state" and
// rewritten by every commit that changes records.
struct MetaState {
  // The hybrid clock's high-water mark: the clock restarts above it.
  uint64_t clock_mark = 0;
  uint64_t max_seq = 0;
  uint64_t live_records = 0;
  uint64_t tombstones = 0;
  // See StoreStats::fingerprint.
  uint64_t fingerprint = 0;

  friend bool operator==(const MetaState&, const MetaState&) = default;
};
inline constexpr size_t kMetaStateBytes = 5 * 8;
std::string EncodeMetaState(const MetaState& state);
absl::StatusOr<MetaState> DecodeMetaState(std::string_view stored);

// A peers value. `peer_id` only names the peer in errors.
// incarnation, seq, nonce; checkpoints written before the nonce are 16 bytes.
inline constexpr size_t kCheckpointBytes = 3 * 8;
inline constexpr size_t kCheckpointBytesWithoutNonce = 2 * 8;
std::string EncodeCheckpoint(const PeerCheckpoint& checkpoint);
absl::StatusOr<PeerCheckpoint> DecodeCheckpoint(std::string_view stored, uint64_t peer_id);

// The meta "watermarks" value: 16 bytes per origin.
inline constexpr size_t kWatermarkBytes = 2 * 8;
std::string EncodeWatermarks(const Watermarks& watermarks);
absl::StatusOr<Watermarks> DecodeWatermarks(std::string_view stored);


// FNV-1a, 64-bit, over bytes and little-endian integers: the stable digest
// Store::Digest() computes (the same in every process and on every machine,
// unlike absl::Hash).
class Fnv64 {
 public:
  void Add(std::string_view bytes) {
    for (unsigned char c : bytes) {
      hash_ ^= c;
      hash_ *= 0x100000001b3ULL;
    }
  }
  void AddU64(uint64_t v) {
    char bytes[8];
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(v >> (8 * i));
    Add(std::string_view(bytes, 8));
  }
  uint64_t value() const { return hash_; }

 private:
  uint64_t hash_ = 0xcbf29ce484222325ULL;
};

// A full Record from its header and its log entry.
absl::StatusOr<Record> MakeRecord(const RecordHeader& header, const LogEntry& entry);

}  // namespace peerkv::codec

#endif  // PEERKV_STORE_CODEC_H_
