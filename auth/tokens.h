// auth/tokens.h: access tokens for the HTTP and RESP front ends. A token
// is a random secret ("pkv_" and 43 base64url characters: 32 random bytes)
// shown once, when `peerkv token create NAME` makes it; the data directory
// keeps only its BLAKE2b hash (libsodium's crypto_generichash), with the
// token's name and creation time, in DIR/keys/tokens (owner-only, like the
// key files: auth/keys.h). A server verifies a presented secret against
// the file as it is now: tokens created or removed while it runs count
// from the next request.
#ifndef PEERKV_AUTH_TOKENS_H_
#define PEERKV_AUTH_TOKENS_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace peerkv::auth {

inline constexpr size_t kMaxTokenNameBytes = 64;
inline constexpr size_t kMaxTokens = 10'000;
inline constexpr std::string_view kTokenPrefix = "pkv_";

struct TokenInfo {
  std::string name;
  int64_t created_unix = 0;
};

// A token name: 1..64 bytes of [A-Za-z0-9._-]. InvalidArgument naming the
// rule otherwise.
absl::Status ValidateTokenName(std::string_view name);

class TokenStore {
 public:
  // The tokens of data directory `data_dir` (file DIR/keys/tokens).
  explicit TokenStore(std::string data_dir);

  // Makes a token called `name` and returns its secret (the only time it
  // is seen). AlreadyExists if the name is taken.
  absl::StatusOr<std::string> Create(std::string_view name);
  absl::StatusOr<std::vector<TokenInfo>> List() const;
  // NotFound if there is no such token.
  absl::Status Remove(std::string_view name);
  // The name of the token whose secret is `secret`: Unauthenticated if
  // none (or the secret is malformed). The hash is compared with every
  // entry in constant time. Re-reads the file when it changed (mtime,
  // size or inode) since the last call.
  absl::StatusOr<std::string> Verify(std::string_view secret);

  // Verify as the front ends' hook takes it (RESP AUTH, HTTP bearer).
  std::function<absl::StatusOr<std::string>(std::string_view token)> Verifier();

  const std::string& path() const { return path_; }

 private:
  struct Entry {
    std::string name;
    int64_t created_unix;
    std::string hash;  // 32 bytes
  };
  absl::StatusOr<std::vector<Entry>> Load() const;
  absl::Status Save(const std::vector<Entry>& entries) const;

  const std::string keys_dir_;
  const std::string path_;
  absl::Mutex mu_;
  // What Verify last read, and the file's identity then.
  std::vector<Entry> cached_ ABSL_GUARDED_BY(mu_);
  bool loaded_ ABSL_GUARDED_BY(mu_) = false;
  int64_t mtime_ns_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t size_ ABSL_GUARDED_BY(mu_) = -1;
  uint64_t inode_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace peerkv::auth

#endif  // PEERKV_AUTH_TOKENS_H_
