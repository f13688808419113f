// store/version.cc: formatting and parsing of versions, and replica ids.
#include "store/version.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"

namespace peerkv {

std::string Version::ToString() const {
  return absl::StrFormat("%d.%d@%s", HlcMillis(hlc), HlcLogical(hlc),
                         ReplicaIdToString(origin));
}

std::string ReplicaIdToString(uint64_t id) { return absl::StrFormat("%016x", id); }

absl::StatusOr<Version> ParseVersion(std::string_view text,
                                     std::string_view field) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s '%s' is not a version (%s); give MILLIS.LOGICAL@ORIGIN as "
        "peerkv prints it, e.g. 1732550000123.7@00000000deadbeef",
        field, text.substr(0, 100), why));
  };
  const size_t at = text.find('@');
  if (at == std::string_view::npos) return bad("no '@'");
  const std::string_view clock = text.substr(0, at);
  const std::string_view origin = text.substr(at + 1);
  const size_t dot = clock.find('.');
  if (dot == std::string_view::npos) return bad("no '.' in the clock");
  auto digits = [](std::string_view s, size_t max) {
    if (s.empty() || s.size() > max) return false;
    return std::all_of(s.begin(), s.end(),
                       [](char c) { return c >= '0' && c <= '9'; });
  };
  const std::string_view millis_text = clock.substr(0, dot);
  const std::string_view logical_text = clock.substr(dot + 1);
  uint64_t millis = 0, logical = 0, id = 0;
  if (!digits(millis_text, 15) || !absl::SimpleAtoi(std::string(millis_text), &millis) ||
      millis > kHlcMaxMillis) {
    return bad("milliseconds must be 0..2^48-1");
  }
  if (!digits(logical_text, 5) || !absl::SimpleAtoi(std::string(logical_text), &logical) ||
      logical > kHlcLogicalMask) {
    return bad("the logical counter must be 0..65535");
  }
  if (origin.size() != 16 ||
      !std::all_of(origin.begin(), origin.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
      }) ||
      !absl::SimpleHexAtoi(std::string(origin), &id)) {
    return bad("the origin must be 16 lower-case hex digits");
  }
  Version v{MakeHlc(millis, logical), id};
  if (!v.IsValid()) return bad("clock and origin must not be 0");
  return v;
}

}  // namespace peerkv
