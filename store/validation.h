// store/validation.h: the limits of the data model and the checks that
// enforce them. Every name, key and value from outside passes here before it
// reaches LMDB; a violation is InvalidArgument naming the field and the
// limit, never a truncation.
#ifndef PEERKV_STORE_VALIDATION_H_
#define PEERKV_STORE_VALIDATION_H_

#include <cstddef>
#include <string_view>

#include "absl/status/status.h"
#include "store/version.h"

namespace peerkv {

// Keyspace names: [a-z0-9][a-z0-9._-]{0,63}.
inline constexpr size_t kMaxKeyspaceBytes = 64;
// Document ids: any bytes, 1..400 of them.
inline constexpr size_t kMaxKeyBytes = 400;
// Values: 0..4 MiB. A store may be configured with a lower limit.
inline constexpr size_t kMaxValueBytes = 4 * 1024 * 1024;
// Record::signature: 0..512 bytes (a device certificate of at most 202
// bytes and a 64-byte signature fit with room to spare).
inline constexpr size_t kMaxSignatureBytes = 512;

absl::Status ValidateKeyspace(std::string_view keyspace);

// Keyspaces named "peerkv.*" hold peerkv's own records (the user's device
// and friend lists, auth/). Ordinary writes (put, del, Store::Write) to them
// are refused; they are written through Store::WriteReserved and merged from
// peers only when StoreOptions::reserved_check accepts them.
inline constexpr std::string_view kReservedKeyspacePrefix = "peerkv.";
bool IsReservedKeyspace(std::string_view keyspace);
// InvalidArgument naming the keyspace if it is reserved.
absl::Status ValidateNotReserved(std::string_view keyspace);
absl::Status ValidateKey(std::string_view key);
// `limit` is the store's configured value limit (<= kMaxValueBytes).
absl::Status ValidateValue(std::string_view value, size_t limit);
absl::Status ValidateMutation(const Mutation& mutation, size_t value_limit);
// A record from a peer: keyspace, key and value as above, a valid version,
// no value on a tombstone, and a causal mark (if any) that is zero or a
// valid version older than the record's, and a signature of at most
// kMaxSignatureBytes.
absl::Status ValidateRemoteRecord(const Record& record, size_t value_limit);
// InvalidArgument naming the limit if `signature` exceeds kMaxSignatureBytes.
absl::Status ValidateSignatureSize(std::string_view signature);

}  // namespace peerkv

#endif  // PEERKV_STORE_VALIDATION_H_
