// http/encoding.h: the byte-level pieces of the HTTP front end, kept apart
// from kj so they can be unit-tested and fuzzed: strict percent-decoding of
// path segments and query strings, request routing, UTF-8 checks, JSON
// output (keys and values that are not UTF-8 go in "*_b64" fields, base64
// standard alphabet; common/json.h) and batch bodies read with the strict
// JSON reader. README "HTTP API" documents the encoding.
#ifndef PEERKV_HTTP_ENCODING_H_
#define PEERKV_HTTP_ENCODING_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/json.h"
#include "store/version.h"

namespace peerkv::http {

// `%XX` decoded (two hex digits, any byte); a `%` not followed by two hex
// digits is InvalidArgument naming `field`. With `plus_is_space` (query
// strings, as browsers send them) '+' is a space.
absl::StatusOr<std::string> PercentDecode(std::string_view in, std::string_view field,
                                          bool plus_is_space = false);
// Every byte but unreserved ones (A-Z a-z 0-9 - . _ ~) as %XX.
std::string PercentEncode(std::string_view in);

// A query string ("a=1&b=2", without '?'): decoded names to decoded values.
// InvalidArgument on bad percent-encoding or a repeated name.
absl::StatusOr<std::map<std::string, std::string>> ParseQuery(std::string_view query);

enum class Route {
  kPage,       // GET /
  kMetrics,    // GET /metrics
  kStatus,     // GET /v1/status
  kRecord,     // /v1/kv/{keyspace}/{key}
  kScan,       // GET /v1/kv/{keyspace}
  kBatch,      // POST /v1/batch
  kWatch,      // GET /v1/watch/{keyspace}
  kNotFound,
};
struct Target {
  Route route = Route::kNotFound;
  std::string keyspace;
  std::string key;
  std::map<std::string, std::string> query;
};
// Splits a request target ("/v1/kv/ks/a%2Fb?x=1") into its route, its
// decoded keyspace and key (the key is everything after the keyspace's
// '/', decoded, so it may hold '/'), and its query.
absl::StatusOr<Target> ParseTarget(std::string_view target);

// The shared encodings (common/json.h), by their names here.
using json::AppendBytesField;
using json::AppendJsonString;
using json::Base64;
using json::IsUtf8;
using json::Unbase64;

// {"keyspace":..,"key":..,"value":..,"version":..,"seq":N,"deleted":B}
// (the value left out for tombstones).
void AppendRecordJson(std::string& out, std::string_view keyspace, std::string_view key,
                      const Version& version, bool deleted, std::string_view value, uint64_t seq);
// {"error":{"code":"NOT_FOUND","message":"..."}}
std::string ErrorJson(const absl::Status& status);
// The HTTP status code for an absl status code.
int HttpCode(absl::StatusCode code);
// "NOT_FOUND" for kNotFound...
std::string CodeName(absl::StatusCode code);

// A batch body: {"writes":[{"keyspace":"ks","key":"k","value":"v"},
// {"keyspace":"ks","key_b64":"..","value_b64":".."},
// {"keyspace":"ks","key":"k","delete":true}]}: at most `max_writes`.
absl::StatusOr<std::vector<Mutation>> ParseBatch(std::string_view body, size_t max_writes);

}  // namespace peerkv::http

#endif  // PEERKV_HTTP_ENCODING_H_
