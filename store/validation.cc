// store/validation.cc: checks of keyspace names, keys, values and versions.
#include "store/validation.h"

#include "absl/strings/str_format.h"
#include "common/macros.h"

namespace peerkv {
namespace {

bool IsLowerAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

}  // namespace

absl::Status ValidateKeyspace(std::string_view keyspace) {
  if (keyspace.empty()) {
    return absl::InvalidArgumentError(
        "keyspace is empty; it must match [a-z0-9][a-z0-9._-]{0,63}");
  }
  if (keyspace.size() > kMaxKeyspaceBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "keyspace is %d bytes; the limit is %d", keyspace.size(),
        kMaxKeyspaceBytes));
  }
  if (keyspace[0] == '_') {
    return absl::InvalidArgumentError(absl::StrFormat(
        "keyspace '%s': keyspace names starting with '_' are reserved",
        keyspace));
  }
  for (size_t i = 0; i < keyspace.size(); ++i) {
    const char c = keyspace[i];
    const bool ok = IsLowerAlnum(c) ||
                    (i > 0 && (c == '.' || c == '_' || c == '-'));
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "keyspace has character 0x%02x at byte %d; it must match "
          "[a-z0-9][a-z0-9._-]{0,63}",
          static_cast<unsigned char>(c), i));
    }
  }
  return absl::OkStatus();
}

bool IsReservedKeyspace(std::string_view keyspace) {
  return keyspace.substr(0, kReservedKeyspacePrefix.size()) == kReservedKeyspacePrefix;
}

absl::Status ValidateNotReserved(std::string_view keyspace) {
  if (!IsReservedKeyspace(keyspace)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat(
      "keyspace '%s' is reserved (names starting with '%s' hold peerkv's own "
      "signed records); use the peerkv device and friend commands",
      keyspace, kReservedKeyspacePrefix));
}

absl::Status ValidateKey(std::string_view key) {
  if (key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("key is empty; it must be 1..%d bytes", kMaxKeyBytes));
  }
  if (key.size() > kMaxKeyBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "key is %d bytes; the limit is %d", key.size(), kMaxKeyBytes));
  }
  return absl::OkStatus();
}

absl::Status ValidateValue(std::string_view value, size_t limit) {
  if (value.size() > limit) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "value is %d bytes; the limit is %d", value.size(), limit));
  }
  return absl::OkStatus();
}

absl::Status ValidateMutation(const Mutation& mutation, size_t value_limit) {
  PEERKV_RETURN_IF_ERROR(ValidateKeyspace(mutation.keyspace));
  PEERKV_RETURN_IF_ERROR(ValidateKey(mutation.key));
  if (mutation.value.has_value()) {
    PEERKV_RETURN_IF_ERROR(ValidateValue(*mutation.value, value_limit));
  }
  return absl::OkStatus();
}

absl::Status ValidateRemoteRecord(const Record& record, size_t value_limit) {
  PEERKV_RETURN_IF_ERROR(ValidateKeyspace(record.keyspace));
  PEERKV_RETURN_IF_ERROR(ValidateKey(record.key));
  PEERKV_RETURN_IF_ERROR(ValidateValue(record.value, value_limit));
  if (!record.version.IsValid()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "version %s is invalid: hlc and origin must be non-zero",
        record.version.ToString()));
  }
  if (record.deleted && !record.value.empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("tombstone carries a %d-byte value; it must be empty",
                        record.value.size()));
  }
  // A write replaces an older version (its writer stamps above what it
  // held), or nothing (zeros).
  if (record.replaces.has_value() && *record.replaces != Version{} &&
      (!record.replaces->IsValid() || !(*record.replaces < record.version))) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "causal mark (replaces) %s must be zero or a valid version older than the "
        "record's version %s",
        record.replaces->ToString(), record.version.ToString()));
  }
  PEERKV_RETURN_IF_ERROR(ValidateSignatureSize(record.signature));
  return absl::OkStatus();
}

absl::Status ValidateSignatureSize(std::string_view signature) {
  if (signature.size() > kMaxSignatureBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "record signature is %d bytes; the limit is %d", signature.size(), kMaxSignatureBytes));
  }
  return absl::OkStatus();
}

}  // namespace peerkv
