// store/range_fingerprint.cc: the bytes behind range_fingerprint.h's
// vocabulary: Sum256's disk and wire form, node arithmetic, the key's
// position (a fixed 64-bit hash) and the item hash (SHA-256 from OpenSSL's
// libcrypto, which uses the CPU's SHA extensions where it has them).
#include "store/range_fingerprint.h"

// The low-level SHA256_Init/Update/Final calls are deprecated in OpenSSL 3
// in favour of EVP, but they are the cheapest way in (no algorithm fetch,
// no context allocation), and this hash runs once or twice per write.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include <cstring>

#include "absl/strings/str_format.h"

namespace peerkv::rbsr {
namespace {

// splitmix64's finalizer.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t LoadLittle64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void StoreLittle64(uint64_t v, unsigned char* p) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}

void UpdateLength(SHA256_CTX* ctx, uint64_t n) {
  unsigned char bytes[8];
  StoreLittle64(n, bytes);
  SHA256_Update(ctx, bytes, 8);
}

void UpdateBytes(SHA256_CTX* ctx, std::string_view bytes) {
  UpdateLength(ctx, bytes.size());
  SHA256_Update(ctx, bytes.data(), bytes.size());
}

}  // namespace

std::string Sum256::ToBytes() const {
  std::string out(32, '\0');
  for (int i = 0; i < 4; ++i) {
    StoreLittle64(limbs[i], reinterpret_cast<unsigned char*>(out.data()) + 8 * i);
  }
  return out;
}

absl::Status Sum256::FromBytes(std::string_view bytes, Sum256& out) {
  if (bytes.size() != 32) {
    return absl::InvalidArgumentError(
        absl::StrFormat("a 256-bit sum is 32 bytes, not %d", bytes.size()));
  }
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  for (int i = 0; i < 4; ++i) out.limbs[i] = LoadLittle64(p + 8 * i);
  return absl::OkStatus();
}

bool NodeId::Valid() const {
  if (depth > kMaxDepth) return false;
  if (depth == kMaxDepth) return true;  // every 64-bit prefix
  return prefix < (uint64_t{1} << (kBranchBits * depth));
}

bool NodeId::Contains(uint64_t position) const {
  if (depth == 0) return true;
  return (position >> (64 - kBranchBits * depth)) == prefix;
}

NodeId NodeId::Child(int i) const {
  return NodeId{static_cast<uint8_t>(depth + 1),
                (prefix << kBranchBits) | static_cast<uint64_t>(i & (kBranching - 1))};
}

uint64_t KeyPosition(std::string_view key) {
  // Eight little-endian bytes at a time through splitmix64's finalizer,
  // the length first: fixed here, so the same on every machine and build
  // (range_fingerprint_test holds vectors).
  const auto* p = reinterpret_cast<const unsigned char*>(key.data());
  uint64_t h = Mix(key.size() ^ 0x6a09e667f3bcc908ULL);
  size_t i = 0;
  for (; i + 8 <= key.size(); i += 8) h = Mix(h ^ LoadLittle64(p + i));
  uint64_t tail = 0;
  for (int b = 0; i < key.size(); ++i, ++b) tail |= uint64_t{p[i]} << (8 * b);
  return Mix(h ^ tail ^ 0xbb67ae8584caa73bULL);
}

Sum256 ItemHash(std::string_view keyspace, std::string_view key, const Version& version,
                bool deleted, std::string_view value) {
  // SHA-256 of: len(keyspace) keyspace len(key) key hlc origin flag
  // len(value) value, lengths and integers 8 bytes little-endian, flag one
  // byte (1: tombstone). The digest's 32 bytes read as a little-endian
  // 256-bit number.
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  // Everything before the value's bytes in one buffer, one update: for
  // small registers the calls cost as much as the compression.
  unsigned char head[512];
  const size_t head_bytes = 8 + keyspace.size() + 8 + key.size() + 17 + 8;
  if (head_bytes <= sizeof(head)) {
    unsigned char* p = head;
    StoreLittle64(keyspace.size(), p);
    std::memcpy(p + 8, keyspace.data(), keyspace.size());
    p += 8 + keyspace.size();
    StoreLittle64(key.size(), p);
    std::memcpy(p + 8, key.data(), key.size());
    p += 8 + key.size();
    StoreLittle64(version.hlc, p);
    StoreLittle64(version.origin, p + 8);
    p[16] = deleted ? 1 : 0;
    StoreLittle64(value.size(), p + 17);
    SHA256_Update(&ctx, head, head_bytes);
    SHA256_Update(&ctx, value.data(), value.size());
  } else {
    UpdateBytes(&ctx, keyspace);
    UpdateBytes(&ctx, key);
    unsigned char fixed[17];
    StoreLittle64(version.hlc, fixed);
    StoreLittle64(version.origin, fixed + 8);
    fixed[16] = deleted ? 1 : 0;
    SHA256_Update(&ctx, fixed, sizeof(fixed));
    UpdateBytes(&ctx, value);
  }
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256_Final(digest, &ctx);
  Sum256 out;
  for (int i = 0; i < 4; ++i) out.limbs[i] = LoadLittle64(digest + 8 * i);
  return out;
}

}  // namespace peerkv::rbsr
