// auth/ids.h: the text forms of device and user ids (Syncthing's layout):
// the 32-byte public key in base32 (RFC 4648, A-Z2-7, 52 characters), cut
// into four groups of 13, each followed by a Luhn mod-32 check character,
// shown in eight groups of seven joined by '-':
//   MFRGGZD-FMZTGNB-...-XXXXXXX
// The check is seeded differently for devices and users, so a user id
// typed where a device id belongs (or the reverse) fails its check, and a
// typo in one character (or two neighbours swapped) is caught.
#ifndef PEERKV_AUTH_IDS_H_
#define PEERKV_AUTH_IDS_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "auth/keys.h"

namespace peerkv::auth {

enum class IdKind { kDevice, kUser };

// 63 characters: 56 and seven dashes.
inline constexpr size_t kIdChars = 63;

std::string FormatId(IdKind kind, const PublicKey& key);
inline std::string DeviceId(const PublicKey& key) { return FormatId(IdKind::kDevice, key); }
inline std::string UserId(const PublicKey& key) { return FormatId(IdKind::kUser, key); }

// Parses an id as typed: case, dashes and spaces do not matter. Errors are
// InvalidArgument naming `what` (e.g. "DEVICE_ID"), the text (cut to 80
// characters) and what is wrong: a character outside base32, the wrong
// length, a check character that does not match (and whether the id is of
// the other kind).
absl::StatusOr<PublicKey> ParseId(IdKind kind, std::string_view text, std::string_view what);
inline absl::StatusOr<PublicKey> ParseDeviceId(std::string_view text,
                                               std::string_view what = "device id") {
  return ParseId(IdKind::kDevice, text, what);
}
inline absl::StatusOr<PublicKey> ParseUserId(std::string_view text,
                                             std::string_view what = "user id") {
  return ParseId(IdKind::kUser, text, what);
}

}  // namespace peerkv::auth

#endif  // PEERKV_AUTH_IDS_H_
