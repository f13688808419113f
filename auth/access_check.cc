// auth/access_check.cc: see access_check.h.
#include "auth/access_check.h"

#include "absl/strings/str_format.h"
#include "auth/ids.h"
#include "common/macros.h"
#include "store/validation.h"

namespace peerkv::auth {

absl::Status CheckRead(const Access* access, const Principal& who, std::string_view keyspace) {
  if (access == nullptr || access->MayRead(who, keyspace)) return absl::OkStatus();
  PEERKV_RETURN_IF_ERROR(ValidateKeyspace(keyspace));
  return absl::PermissionDeniedError(
      absl::StrFormat("user %s may not read keyspace '%s'", UserId(who.user), keyspace));
}

absl::Status CheckWrite(const Access* access, const Principal& who, std::string_view keyspace) {
  if (access == nullptr || access->MayWrite(who, keyspace)) return absl::OkStatus();
  PEERKV_RETURN_IF_ERROR(ValidateKeyspace(keyspace));
  if (who.local_user && IsReservedKeyspace(keyspace)) return absl::OkStatus();
  return absl::PermissionDeniedError(
      absl::StrFormat("user %s may not write keyspace '%s'", UserId(who.user), keyspace));
}

Principal LocalPrincipal(const Identity* identity) {
  Principal who;
  who.local_user = true;
  if (identity != nullptr) who.user = identity->user();
  return who;
}

}  // namespace peerkv::auth
