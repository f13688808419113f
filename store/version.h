// store/version.h: the version of a last-writer-wins register and the
// records that carry it. A Version is (hlc, origin): a 64-bit hybrid logical
// clock reading (48 bits of milliseconds since the Unix epoch, 16 bits of
// logical counter) and the 64-bit id of the replica that wrote it. Versions
// are totally ordered, hlc first; the greater one wins a merge.
#ifndef PEERKV_STORE_VERSION_H_
#define PEERKV_STORE_VERSION_H_

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace peerkv {

// Number of low hlc bits that hold the logical counter.
inline constexpr int kHlcLogicalBits = 16;
inline constexpr uint64_t kHlcLogicalMask = (uint64_t{1} << kHlcLogicalBits) - 1;
// Largest millisecond value an hlc can hold (48 bits: year 10889).
inline constexpr uint64_t kHlcMaxMillis = (uint64_t{1} << 48) - 1;

// Builds an hlc reading from its parts. REQUIRES: millis <= kHlcMaxMillis.
constexpr uint64_t MakeHlc(uint64_t millis, uint64_t logical) {
  return (millis << kHlcLogicalBits) | (logical & kHlcLogicalMask);
}
constexpr uint64_t HlcMillis(uint64_t hlc) { return hlc >> kHlcLogicalBits; }
constexpr uint64_t HlcLogical(uint64_t hlc) { return hlc & kHlcLogicalMask; }

struct Version {
  uint64_t hlc = 0;
  uint64_t origin = 0;

  // Lexicographic: hlc, then origin. Merge keeps the greater.
  friend constexpr auto operator<=>(const Version&, const Version&) = default;

  // A version written by a real replica has a non-zero clock and origin.
  constexpr bool IsValid() const { return hlc != 0 && origin != 0; }

  // "1732550000123.7@00000000deadbeef": millis.logical@origin (hex).
  std::string ToString() const;
};

// A record as stored and as replicated: the state of one register.
struct Record {
  std::string keyspace;
  std::string key;
  Version version;
  // A tombstone: the key was deleted at `version`; `value` is empty.
  bool deleted = false;
  std::string value;
  // The local sequence number of the change that wrote this record here.
  // Meaningful only for records read from a store; Merge ignores it.
  uint64_t seq = 0;
  // The causal mark (README "Conflict journal"): the version this write
  // replaced where it was written (its origin), Version{} if the key held
  // nothing there; nullopt if not known (a record from an older store, a
  // reconciliation). Carried in the log and on the wire; Merge compares it
  // with the version it overwrites to tell a sequential overwrite from a
  // concurrent one.
  std::optional<Version> replaces;
  // The origin device's signature (README "Signed records";
  // auth/record_signature.h): its device certificate and an Ed25519
  // signature over keyspace, key, version, tombstone flag and value hash.
  // Empty: unsigned. At most kMaxSignatureBytes (store/validation.h).
  // Stored with the record (in its log entry) and carried on the wire; the
  // store never interprets it (StoreOptions::record_gate does).
  std::string signature;

  friend bool operator==(const Record&, const Record&) = default;
};

// A local write: a put when `value` holds a value, a delete when nullopt.
struct Mutation {
  std::string keyspace;
  std::string key;
  std::optional<std::string> value;
};

// A local write made only if the key still holds `expected` (see
// Store::RestampIfUnchanged).
struct RestampRecord {
  Mutation mutation;
  Version expected;
};

// Formats a replica id the way logs and the CLI show it: 16 hex digits.
std::string ReplicaIdToString(uint64_t id);

// Parses what Version::ToString prints ("1732550000123.7@00000000deadbeef").
// InvalidArgument naming `field` and the expected form otherwise.
absl::StatusOr<Version> ParseVersion(std::string_view text, std::string_view field);

}  // namespace peerkv

#endif  // PEERKV_STORE_VERSION_H_
