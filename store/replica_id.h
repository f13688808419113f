// store/replica_id.h: replica ids minted from a device key, so that any
// replica can check, without state, that the device on a link may claim
// the replica id its hello shows (README "Bound to the device"). A replica
// id is the first 8 bytes (big endian) of SHA-256 over a domain tag, the
// device's public key and the incarnation (8 bytes, big endian): the
// incarnation is the nonce, drawn at random with the id and told in every
// hello, so a fork (a new incarnation) mints a new id of the same key.
// Another device would have to find an incarnation whose hash under its own
// key hits the id: a 64-bit preimage.
#ifndef PEERKV_STORE_REPLICA_ID_H_
#define PEERKV_STORE_REPLICA_ID_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace peerkv {

// The longest device key a store mints ids from (Ed25519's is 32 bytes).
inline constexpr size_t kMaxReplicaIdKeyBytes = 64;

// The replica id `device_key` mints with `incarnation`; 0 (never a replica
// id) if `device_key` is empty or the hash is 0 (the minter then draws
// another incarnation).
uint64_t DeriveReplicaId(std::string_view device_key, uint64_t incarnation);

// Whether `replica_id` is the id `device_key` mints with `incarnation`.
bool IsDerivedReplicaId(uint64_t replica_id, uint64_t incarnation, std::string_view device_key);

}  // namespace peerkv

#endif  // PEERKV_STORE_REPLICA_ID_H_
