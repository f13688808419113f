// store/store_bindings.cc: replica-id bindings (see Store::ClaimReplicaId):
// one meta entry per bound id, "replica-device/" + the id's 8 bytes (big
// endian) -> the device's bytes. Written through the writer thread, so a
// claim and its check are one transaction.
#include <optional>
#include <string>

#include "absl/strings/str_format.h"
#include "common/macros.h"
#include "store/lmdb_util.h"
#include "store/store.h"

namespace peerkv {
namespace {

constexpr size_t kMaxBoundDeviceBytes = 64;

std::string BindingKey(uint64_t replica_id) {
  std::string key = "replica-device/";
  for (int shift = 56; shift >= 0; shift -= 8) {
    key.push_back(static_cast<char>((replica_id >> shift) & 0xff));
  }
  return key;
}

}  // namespace

absl::StatusOr<std::string> Store::ClaimReplicaId(uint64_t replica_id, std::string_view device) {
  if (device.empty() || device.size() > kMaxBoundDeviceBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "replica-id binding: device is %d bytes; it must be 1..%d", device.size(),
        kMaxBoundDeviceBytes));
  }
  const std::string key = BindingKey(replica_id);
  std::string holder;
  PEERKV_RETURN_IF_ERROR(RunOnWriter([&]() -> absl::Status {
    lmdb::Txn txn;
    PEERKV_RETURN_IF_ERROR(txn.Begin(env_, 0));
    PEERKV_ASSIGN_OR_RETURN(const std::optional<std::string_view> stored,
                            lmdb::Get(txn.get(), meta_dbi_, key, "read replica-id binding"));
    if (stored.has_value()) {
      holder = std::string(*stored);
      return absl::OkStatus();
    }
    PEERKV_RETURN_IF_ERROR(
        lmdb::Put(txn.get(), meta_dbi_, key, device, "write replica-id binding"));
    PEERKV_RETURN_IF_ERROR(txn.Commit());
    holder = std::string(device);
    return absl::OkStatus();
  }));
  return holder;
}

}  // namespace peerkv
