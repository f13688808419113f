// auth/ids.cc: base32 with Luhn mod-32 check characters.
#include "auth/ids.h"

#include "auth/certificate.h"

#include "absl/strings/str_format.h"

namespace peerkv::auth {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
constexpr size_t kBase32Chars = 52;  // ceil(256 / 5)
constexpr size_t kGroup = 13;
constexpr size_t kCheckedChars = 56;

int Index(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= '2' && c <= '7') return 26 + (c - '2');
  return -1;
}

// Luhn mod N over `group`, with a seed character first so the two kinds of
// id have different checks.
char CheckChar(IdKind kind, std::string_view group) {
  int factor = 2;
  int sum = 0;
  const std::string seeded = std::string(1, kind == IdKind::kDevice ? 'D' : 'U') +
                             std::string(group);
  for (auto it = seeded.rbegin(); it != seeded.rend(); ++it) {
    int addend = factor * Index(*it);
    factor = factor == 2 ? 1 : 2;
    addend = addend / 32 + addend % 32;
    sum += addend;
  }
  return kAlphabet[(32 - sum % 32) % 32];
}

std::string Shown(std::string_view text) {
  if (text.size() <= 80) return std::string(text);
  return Cat({text.substr(0, 80), "..."});
}

}  // namespace

std::string FormatId(IdKind kind, const PublicKey& key) {
  std::string b32;
  uint32_t acc = 0;
  int bits = 0;
  for (uint8_t byte : key.bytes) {
    acc = (acc << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      b32.push_back(kAlphabet[(acc >> (bits - 5)) & 31]);
      bits -= 5;
    }
  }
  if (bits > 0) b32.push_back(kAlphabet[(acc << (5 - bits)) & 31]);
  std::string checked;
  for (size_t g = 0; g < 4; ++g) {
    const std::string_view group = std::string_view(b32).substr(g * kGroup, kGroup);
    checked.append(group);
    checked.push_back(CheckChar(kind, group));
  }
  std::string out;
  for (size_t i = 0; i < checked.size(); ++i) {
    if (i > 0 && i % 7 == 0) out.push_back('-');
    out.push_back(checked[i]);
  }
  return out;
}

absl::StatusOr<PublicKey> ParseId(IdKind kind, std::string_view text, std::string_view what) {
  std::string chars;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '-' || c == ' ') continue;
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    if (Index(c) < 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s '%s' has %s at position %d; ids use A-Z and 2-7 (and dashes)", what,
          Shown(text),
          (text[i] > 0x20 && text[i] < 0x7f)
              ? absl::StrFormat("character '%c'", text[i])
              : absl::StrFormat("byte 0x%02x", static_cast<unsigned char>(text[i])),
          i + 1));
    }
    chars.push_back(c);
    if (chars.size() > kCheckedChars) break;
  }
  if (chars.size() != kCheckedChars) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s '%s' has %s%d characters besides dashes; an id has %d", what, Shown(text),
        chars.size() > kCheckedChars ? "more than " : "",
        chars.size() > kCheckedChars ? kCheckedChars : chars.size(), kCheckedChars));
  }
  const IdKind other = kind == IdKind::kDevice ? IdKind::kUser : IdKind::kDevice;
  std::string b32;
  bool other_matches = true;
  for (size_t g = 0; g < 4; ++g) {
    const std::string_view group = std::string_view(chars).substr(g * (kGroup + 1), kGroup);
    const char check = chars[g * (kGroup + 1) + kGroup];
    if (CheckChar(other, group) != check) other_matches = false;
    b32.append(group);
  }
  for (size_t g = 0; g < 4; ++g) {
    const std::string_view group = std::string_view(chars).substr(g * (kGroup + 1), kGroup);
    const char check = chars[g * (kGroup + 1) + kGroup];
    if (CheckChar(kind, group) != check) {
      if (other_matches) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s '%s' is a %s id, not a %s id", what, Shown(text),
            other == IdKind::kDevice ? "device" : "user",
            kind == IdKind::kDevice ? "device" : "user"));
      }
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s '%s' fails its check in group %d of 4 (characters %d..%d): a typo?", what,
          Shown(text), g + 1, g * (kGroup + 1) + 1, (g + 1) * (kGroup + 1)));
    }
  }
  PublicKey key;
  uint32_t acc = 0;
  int bits = 0;
  size_t out = 0;
  for (size_t i = 0; i < kBase32Chars; ++i) {
    acc = (acc << 5) | static_cast<uint32_t>(Index(b32[i]));
    bits += 5;
    if (bits >= 8) {
      key.bytes[out++] = static_cast<uint8_t>(acc >> (bits - 8));
      bits -= 8;
    }
  }
  // 52 characters carry 260 bits: the last 4 must be zero, or two texts
  // would name one key.
  if ((acc & ((1u << bits) - 1)) != 0 || out != kPublicKeyBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s '%s' is not the text form of a key (its last character has stray bits)", what,
        Shown(text)));
  }
  return key;
}

}  // namespace peerkv::auth
