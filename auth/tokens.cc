// auth/tokens.cc: the token file (one line per token: name, creation time
// in Unix seconds, hex of the 32-byte hash, tab-separated), written whole
// beside and renamed into place.
#include "auth/tokens.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "auth/keys.h"
#include "common/files.h"
#include "common/macros.h"

namespace peerkv::auth {
namespace {

constexpr size_t kHashBytes = 32;
constexpr size_t kSecretBytes = 32;
// A file larger than this is refused (10,000 tokens of ~150 bytes).
constexpr int64_t kMaxFileBytes = int64_t{4} << 20;

std::string Errno(int err) { return std::strerror(err); }

std::string HashSecret(std::string_view secret) {
  std::string hash(kHashBytes, '\0');
  PEERKV_CHECK(sodium_init() >= 0);
  crypto_generichash(reinterpret_cast<unsigned char*>(hash.data()), hash.size(),
                     reinterpret_cast<const unsigned char*>(secret.data()), secret.size(),
                     nullptr, 0);
  return hash;
}

}  // namespace

absl::Status ValidateTokenName(std::string_view name) {
  if (name.empty() || name.size() > kMaxTokenNameBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "token name is %d bytes; give 1..%d", name.size(), kMaxTokenNameBytes));
  }
  for (char c : name) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' ||
          c == '-')) {
      return absl::InvalidArgumentError(
          "token name may hold only letters, digits, '.', '_' and '-'");
    }
  }
  return absl::OkStatus();
}

TokenStore::TokenStore(std::string data_dir)
    : keys_dir_(data_dir + "/keys"), path_(keys_dir_ + "/tokens") {}

absl::StatusOr<std::vector<TokenStore::Entry>> TokenStore::Load() const {
  std::vector<Entry> entries;
  absl::Status dir = CheckPrivate(keys_dir_, /*directory=*/true);
  if (absl::IsNotFound(dir)) return entries;
  PEERKV_RETURN_IF_ERROR(dir);
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return entries;
    return absl::FailedPreconditionError(absl::StrFormat("open %s: %s", path_, Errno(errno)));
  }
  std::unique_ptr<int, void (*)(int*)> closer(new int(fd), [](int* f) {
    ::close(*f);
    delete f;
  });
  PEERKV_RETURN_IF_ERROR(CheckPrivate(path_, /*directory=*/false));
  struct stat st;
  if (::fstat(fd, &st) != 0 || st.st_size > kMaxFileBytes) {
    return absl::DataLossError(
        absl::StrFormat("%s is larger than %d bytes", path_, kMaxFileBytes));
  }
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::read(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  text.resize(done);
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    ++line_no;
    std::vector<absl::string_view> fields = absl::StrSplit(line, '\t');
    Entry e;
    std::string hash;
    if (fields.size() != 3 || !ValidateTokenName(std::string_view(fields[0].data(), fields[0].size())).ok() ||
        !absl::SimpleAtoi(fields[1], &e.created_unix) || fields[2].size() != 2 * kHashBytes) {
      return absl::DataLossError(absl::StrFormat("%s line %d is not a token entry", path_, line_no));
    }
    e.name = std::string(fields[0]);
    e.hash = absl::HexStringToBytes(fields[2]);
    entries.push_back(std::move(e));
  }
  return entries;
}

absl::Status TokenStore::Save(const std::vector<Entry>& entries) const {
  std::string text;
  for (const Entry& e : entries) {
    absl::StrAppendFormat(&text, "%s\t%d\t%s\n", e.name, e.created_unix,
                          absl::BytesToHexString(e.hash));
  }
  return ReplaceFile(path_, text, 0600);
}

absl::StatusOr<std::string> TokenStore::Create(std::string_view name) {
  PEERKV_RETURN_IF_ERROR(ValidateTokenName(name));
  PEERKV_RETURN_IF_ERROR(EnsurePrivateDir(keys_dir_));
  PEERKV_ASSIGN_OR_RETURN(std::vector<Entry> entries, Load());
  for (const Entry& e : entries) {
    if (e.name == name) {
      return absl::AlreadyExistsError(absl::StrFormat("a token named '%s' exists", name));
    }
  }
  if (entries.size() >= kMaxTokens) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("there are %d tokens; the limit is %d", entries.size(), kMaxTokens));
  }
  PEERKV_CHECK(sodium_init() >= 0);
  std::string raw(kSecretBytes, '\0');
  randombytes_buf(raw.data(), raw.size());
  std::string secret = std::string(kTokenPrefix) + absl::WebSafeBase64Escape(raw);
  sodium_memzero(raw.data(), raw.size());
  entries.push_back(Entry{std::string(name), absl::ToUnixSeconds(absl::Now()), HashSecret(secret)});
  PEERKV_RETURN_IF_ERROR(Save(entries));
  return secret;
}

absl::StatusOr<std::vector<TokenInfo>> TokenStore::List() const {
  PEERKV_ASSIGN_OR_RETURN(std::vector<Entry> entries, Load());
  std::vector<TokenInfo> out;
  for (const Entry& e : entries) out.push_back(TokenInfo{e.name, e.created_unix});
  return out;
}

absl::Status TokenStore::Remove(std::string_view name) {
  PEERKV_ASSIGN_OR_RETURN(std::vector<Entry> entries, Load());
  const size_t before = entries.size();
  entries.erase(std::remove_if(entries.begin(), entries.end(),
                               [&](const Entry& e) { return e.name == name; }),
                entries.end());
  if (entries.size() == before) {
    return absl::NotFoundError(absl::StrFormat("no token named '%s'", name));
  }
  return Save(entries);
}

absl::StatusOr<std::string> TokenStore::Verify(std::string_view secret) {
  if (secret.size() > 256 || secret.substr(0, kTokenPrefix.size()) != kTokenPrefix) {
    return absl::UnauthenticatedError("not a peerkv token");
  }
  const std::string hash = HashSecret(secret);
  absl::MutexLock lock(&mu_);
  struct stat st;
  int64_t mtime_ns = -2, size = -2;
  uint64_t inode = 0;
  if (::stat(path_.c_str(), &st) == 0) {
    mtime_ns = int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
    size = st.st_size;
    inode = st.st_ino;
  }
  if (!loaded_ || mtime_ns != mtime_ns_ || size != size_ || inode != inode_) {
    absl::StatusOr<std::vector<Entry>> entries = Load();
    if (!entries.ok()) {
      return absl::UnavailableError(
          absl::StrFormat("cannot read tokens: %s", entries.status().message()));
    }
    cached_ = std::move(*entries);
    loaded_ = true;
    mtime_ns_ = mtime_ns;
    size_ = size;
    inode_ = inode;
  }
  // Every entry compared, in constant time each: no early exit.
  const Entry* found = nullptr;
  for (const Entry& e : cached_) {
    if (e.hash.size() == kHashBytes && sodium_memcmp(e.hash.data(), hash.data(), kHashBytes) == 0) {
      found = &e;
    }
  }
  if (found == nullptr) return absl::UnauthenticatedError("unknown or removed token");
  return found->name;
}

std::function<absl::StatusOr<std::string>(std::string_view)> TokenStore::Verifier() {
  return [this](std::string_view token) { return Verify(token); };
}

}  // namespace peerkv::auth
