// consensus/etcd/json.h: a small strict JSON reader for etcd's v3 JSON
// gateway answers, and string quoting for the requests we build. Strict:
// RFC 8259 grammar only, bounded nesting and size, numbers kept as their
// text (etcd sends int64 fields as strings anyway). A malformed document is
// InvalidArgument naming the byte offset and what was expected.
#ifndef PEERKV_CONSENSUS_ETCD_JSON_H_
#define PEERKV_CONSENSUS_ETCD_JSON_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace peerkv::consensus::etcd {

// A parsed JSON value. Objects keep their last member of a repeated name.
struct JsonValue {
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };
  Type type = Type::kNull;
  bool boolean = false;
  // kString: the decoded string; kNumber: the number's text.
  std::string text;
  std::vector<JsonValue> array;
  std::map<std::string, JsonValue, std::less<>> object;

  // The member `name` of an object, or nullptr (also when not an object).
  const JsonValue* Find(absl::string_view name) const;
};

// Limits on what Parse accepts.
inline constexpr size_t kJsonMaxDepth = 64;
inline constexpr size_t kJsonMaxBytes = size_t{64} << 20;

// Parses exactly one JSON document (surrounding whitespace allowed).
absl::StatusOr<JsonValue> ParseJson(absl::string_view text);

// `s` as a JSON string literal, with quotes.
std::string JsonQuote(absl::string_view s);

// Reads an etcd int64/uint64 field: etcd's gateway sends them as decimal
// strings (proto3 JSON) and omits zero values. Absent: 0. `what` names the
// field in the error.
absl::StatusOr<uint64_t> JsonUint(const JsonValue& object, absl::string_view name,
                                  absl::string_view what);

// Reads a base64 bytes field (absent: empty).
absl::StatusOr<std::string> JsonBytes(const JsonValue& object, absl::string_view name,
                                      absl::string_view what);

}  // namespace peerkv::consensus::etcd

#endif  // PEERKV_CONSENSUS_ETCD_JSON_H_
