// common/json.h: the one JSON reader and the byte/text encodings shared by
// the CLI, the HTTP front end and the etcd client. The reader is strict:
// RFC 8259 grammar only, UTF-8 text, unique member names, bounded nesting
// and size, numbers kept as their text. A malformed document is
// InvalidArgument naming the byte offset and what was expected.
#ifndef PEERKV_COMMON_JSON_H_
#define PEERKV_COMMON_JSON_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace peerkv::json {

// A parsed JSON value.
struct JsonValue {
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };
  Type type = Type::kNull;
  bool boolean = false;
  // kString: the decoded string; kNumber: the number's text.
  std::string text;
  std::vector<JsonValue> array;
  std::map<std::string, JsonValue, std::less<>> object;

  // The member `name` of an object, or nullptr (also when not an object).
  const JsonValue* Find(std::string_view name) const;
};

struct JsonLimits {
  size_t max_depth = 64;
  size_t max_bytes = size_t{64} << 20;
};

// Parses exactly one JSON document (surrounding whitespace allowed).
absl::StatusOr<JsonValue> ParseJson(std::string_view text, const JsonLimits& limits = {});

// Whether `bytes` is well-formed UTF-8 (no overlong forms, no surrogates,
// nothing beyond U+10FFFF).
bool IsUtf8(std::string_view bytes);

// `s` as a JSON string literal, with quotes. Control characters and '<'
// (so the text is safe inside HTML too) are escaped; other bytes are
// copied, so `s` should be UTF-8 (see AppendBytesField).
void AppendJsonString(std::string& out, std::string_view s);
std::string JsonQuote(std::string_view s);

// Standard base64, and its inverse (InvalidArgument naming `field`).
std::string Base64(std::string_view bytes);
absl::StatusOr<std::string> Unbase64(std::string_view in, std::string_view field);

// The member `"name":"text"` if `bytes` is UTF-8, else
// `"name_b64":"base64"`: how every JSON output of peerkv carries keys and
// values that may be any bytes.
void AppendBytesField(std::string& out, std::string_view name, std::string_view bytes);

// An unsigned integer member given as a number or a decimal string (as
// proto3 JSON sends int64 fields); absent: 0. `what` names the object in
// the error.
absl::StatusOr<uint64_t> JsonUint(const JsonValue& object, std::string_view name,
                                  std::string_view what);

// A base64 string member (absent: empty).
absl::StatusOr<std::string> JsonBytes(const JsonValue& object, std::string_view name,
                                      std::string_view what);

}  // namespace peerkv::json

#endif  // PEERKV_COMMON_JSON_H_
