// http/encoding.cc: percent-coding, routing, JSON out and in.
#include "http/encoding.h"


#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace peerkv::http {
namespace {

using json::JsonValue;

// Batch bodies nest three deep; anything deeper is not a batch.
constexpr json::JsonLimits kBatchJsonLimits{.max_depth = 16, .max_bytes = size_t{64} << 20};

absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

absl::StatusOr<std::string> PercentDecode(std::string_view in, std::string_view field,
                                          bool plus_is_space) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '%') {
      const int hi = i + 1 < in.size() ? HexValue(in[i + 1]) : -1;
      const int lo = i + 2 < in.size() ? HexValue(in[i + 2]) : -1;
      if (hi < 0 || lo < 0) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: bad percent-encoding at byte %d ('%%' must be followed by two hex digits)",
            field, i));
      }
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string PercentEncode(std::string_view in) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : in) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

absl::StatusOr<std::map<std::string, std::string>> ParseQuery(std::string_view query) {
  std::map<std::string, std::string> out;
  size_t begin = 0;
  while (begin <= query.size()) {
    size_t end = query.find('&', begin);
    if (end == std::string_view::npos) end = query.size();
    std::string_view part = query.substr(begin, end - begin);
    begin = end + 1;
    if (part.empty()) continue;
    const size_t eq = part.find('=');
    absl::StatusOr<std::string> name =
        PercentDecode(part.substr(0, eq), "query parameter name", true);
    if (!name.ok()) return name.status();
    absl::StatusOr<std::string> value =
        PercentDecode(eq == std::string_view::npos ? std::string_view() : part.substr(eq + 1),
                      "query parameter '" + *name + "'", true);
    if (!value.ok()) return value.status();
    if (!out.emplace(*name, std::move(*value)).second) {
      return absl::InvalidArgumentError(
          absl::StrFormat("query parameter '%s' is given twice", *name));
    }
  }
  return out;
}

absl::StatusOr<Target> ParseTarget(std::string_view target) {
  Target t;
  const size_t q = target.find('?');
  std::string_view path = target.substr(0, q);
  if (q != std::string_view::npos) {
    absl::StatusOr<std::map<std::string, std::string>> query = ParseQuery(target.substr(q + 1));
    if (!query.ok()) return query.status();
    t.query = std::move(*query);
  }
  if (path == "/" || path == "/index.html") {
    t.route = Route::kPage;
    return t;
  }
  if (path == "/metrics") {
    t.route = Route::kMetrics;
    return t;
  }
  if (path == "/v1/status") {
    t.route = Route::kStatus;
    return t;
  }
  if (path == "/v1/batch") {
    t.route = Route::kBatch;
    return t;
  }
  // /v1/kv/{keyspace}[/{key}] and /v1/watch/{keyspace}.
  std::string_view rest;
  bool watch = false;
  if (path.substr(0, 7) == "/v1/kv/") {
    rest = path.substr(7);
  } else if (path.substr(0, 10) == "/v1/watch/") {
    rest = path.substr(10);
    watch = true;
  } else {
    return t;
  }
  const size_t slash = rest.find('/');
  absl::StatusOr<std::string> keyspace = PercentDecode(rest.substr(0, slash), "keyspace");
  if (!keyspace.ok()) return keyspace.status();
  t.keyspace = std::move(*keyspace);
  if (t.keyspace.empty()) return t;
  if (slash == std::string_view::npos) {
    t.route = watch ? Route::kWatch : Route::kScan;
    return t;
  }
  if (watch) return t;
  absl::StatusOr<std::string> key = PercentDecode(rest.substr(slash + 1), "key");
  if (!key.ok()) return key.status();
  t.key = std::move(*key);
  t.route = Route::kRecord;
  return t;
}

void AppendRecordJson(std::string& out, std::string_view keyspace, std::string_view key,
                      const Version& version, bool deleted, std::string_view value, uint64_t seq) {
  out += "{\"keyspace\":";
  AppendJsonString(out, keyspace);
  out.push_back(',');
  AppendBytesField(out, "key", key);
  if (!deleted) {
    out.push_back(',');
    AppendBytesField(out, "value", value);
  }
  absl::StrAppendFormat(&out, ",\"version\":\"%s\",\"seq\":%d,\"deleted\":%s}", version.ToString(),
                        seq, deleted ? "true" : "false");
}

std::string CodeName(absl::StatusCode code) {
  std::string name = absl::StatusCodeToString(code);
  for (char& c : name) {
    if (c == ' ') c = '_';
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return name;
}

std::string ErrorJson(const absl::Status& status) {
  std::string out = "{\"error\":{\"code\":\"" + CodeName(status.code()) + "\",\"message\":";
  const std::string message(status.message());
  AppendJsonString(out, IsUtf8(message) ? message : absl::CHexEscape(A(message)));
  out += "}}\n";
  return out;
}

int HttpCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted: return 409;
    case absl::StatusCode::kFailedPrecondition: return 412;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kUnimplemented: return 501;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

namespace {

absl::StatusOr<std::string> BytesField(const JsonValue& write, std::string_view name, size_t index,
                                       bool* present) {
  const JsonValue* plain = write.Find(name);
  const JsonValue* b64 = write.Find(std::string(name) + "_b64");
  *present = plain != nullptr || b64 != nullptr;
  if (plain != nullptr && b64 != nullptr) {
    return absl::InvalidArgumentError(
        absl::StrFormat("writes[%d]: give %s or %s_b64, not both", index, name, name));
  }
  const JsonValue* v = plain != nullptr ? plain : b64;
  if (v == nullptr) return std::string();
  if (v->type != JsonValue::Type::kString) {
    return absl::InvalidArgumentError(absl::StrFormat("writes[%d].%s%s must be a string", index,
                                                      name, b64 != nullptr ? "_b64" : ""));
  }
  if (plain != nullptr) return v->text;
  return Unbase64(v->text, absl::StrFormat("writes[%d].%s_b64", index, name));
}

}  // namespace


absl::StatusOr<std::vector<Mutation>> ParseBatch(std::string_view body, size_t max_writes) {
  absl::StatusOr<JsonValue> doc = json::ParseJson(body, kBatchJsonLimits);
  if (!doc.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("invalid JSON body: ", doc.status().message()));
  }
  const JsonValue* writes = doc->Find("writes");
  if (writes == nullptr || writes->type != JsonValue::Type::kArray) {
    return absl::InvalidArgumentError("the body must be {\"writes\":[...]}");
  }
  if (writes->array.empty() || writes->array.size() > max_writes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "writes holds %d entries; give 1..%d", writes->array.size(), max_writes));
  }
  std::vector<Mutation> out;
  for (size_t i = 0; i < writes->array.size(); ++i) {
    const JsonValue& w = writes->array[i];
    if (w.type != JsonValue::Type::kObject) {
      return absl::InvalidArgumentError(absl::StrFormat("writes[%d] must be an object", i));
    }
    for (const auto& [name, unused] : w.object) {
      if (name != "keyspace" && name != "key" && name != "key_b64" && name != "value" &&
          name != "value_b64" && name != "delete") {
        return absl::InvalidArgumentError(
            absl::StrFormat("writes[%d] has an unknown field '%s'", i, name));
      }
    }
    Mutation m;
    const JsonValue* ks = w.Find("keyspace");
    if (ks == nullptr || ks->type != JsonValue::Type::kString) {
      return absl::InvalidArgumentError(
          absl::StrFormat("writes[%d].keyspace must be a string", i));
    }
    m.keyspace = ks->text;
    bool has_key, has_value;
    absl::StatusOr<std::string> key = BytesField(w, "key", i, &has_key);
    if (!key.ok()) return key.status();
    if (!has_key) return absl::InvalidArgumentError(absl::StrFormat("writes[%d] has no key", i));
    m.key = std::move(*key);
    absl::StatusOr<std::string> value = BytesField(w, "value", i, &has_value);
    if (!value.ok()) return value.status();
    const JsonValue* del = w.Find("delete");
    const bool is_delete = del != nullptr && del->type == JsonValue::Type::kBool && del->boolean;
    if (del != nullptr && del->type != JsonValue::Type::kBool) {
      return absl::InvalidArgumentError(absl::StrFormat("writes[%d].delete must be true/false", i));
    }
    if (is_delete == has_value) {
      return absl::InvalidArgumentError(
          absl::StrFormat("writes[%d]: give a value, or \"delete\":true", i));
    }
    if (!is_delete) m.value = std::move(*value);
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace peerkv::http
