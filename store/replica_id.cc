// store/replica_id.cc: see replica_id.h.
#include "store/replica_id.h"

// As in range_fingerprint.cc: the low-level calls are the cheapest way in.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

namespace peerkv {
namespace {

constexpr std::string_view kTag = "peerkv replica id v1";

}  // namespace

uint64_t DeriveReplicaId(std::string_view device_key, uint64_t incarnation) {
  if (device_key.empty()) return 0;
  unsigned char inc[8];
  for (int i = 0; i < 8; ++i) inc[i] = static_cast<unsigned char>(incarnation >> (56 - 8 * i));
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  SHA256_Update(&ctx, kTag.data(), kTag.size());
  SHA256_Update(&ctx, device_key.data(), device_key.size());
  SHA256_Update(&ctx, inc, sizeof(inc));
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256_Final(digest, &ctx);
  uint64_t id = 0;
  for (int i = 0; i < 8; ++i) id = (id << 8) | digest[i];
  return id;
}

bool IsDerivedReplicaId(uint64_t replica_id, uint64_t incarnation, std::string_view device_key) {
  return replica_id != 0 && DeriveReplicaId(device_key, incarnation) == replica_id;
}

}  // namespace peerkv
