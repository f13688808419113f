// auth/access_check.h: the client API's access checks as a status, asked
// the same way by every front end that serves clients (the RPC Kv service,
// HTTP, RESP): PermissionDenied naming the user, the keyspace and the
// missing right (README "Groups and policies").
#ifndef PEERKV_AUTH_ACCESS_CHECK_H_
#define PEERKV_AUTH_ACCESS_CHECK_H_

#include <string_view>

#include "absl/status/status.h"
#include "auth/access.h"
#include "auth/identity.h"

namespace peerkv::auth {

// OK if `access` is null (a server that checks no policies) or lets `who`
// read `keyspace`. A refusal says the same whether or not the keyspace
// exists here; a name that fails validation is answered by the validation
// (it reveals nothing held here).
absl::Status CheckRead(const Access* access, const Principal& who, std::string_view keyspace);
// The same for writes. The local user's writes to a reserved keyspace are
// left to the store, whose refusal names the reserved rule.
absl::Status CheckWrite(const Access* access, const Principal& who, std::string_view keyspace);

// The local user (its devices, Unix-socket clients, token holders) of a
// server with `identity` (null: a server without one; its user key is
// then empty).
Principal LocalPrincipal(const Identity* identity);

}  // namespace peerkv::auth

#endif  // PEERKV_AUTH_ACCESS_CHECK_H_
