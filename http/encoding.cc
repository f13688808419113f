// http/encoding.cc: percent-coding, routing, JSON out and in.
#include "http/encoding.h"

#include <cmath>
#include <cstdlib>

#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"

namespace peerkv::http {
namespace {

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

bool IsUtf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (int k = 1; k < len; ++k) {
      const unsigned char d = s[i + k];
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

std::string Base64(std::string_view bytes) { return absl::Base64Escape(A(bytes)); }

absl::StatusOr<std::string> Unbase64(std::string_view in, std::string_view field) {
  std::string out;
  if (!absl::Base64Unescape(A(in), &out)) {
    return absl::InvalidArgumentError(absl::StrFormat("%s is not base64", field));
  }
  return out;
}

void AppendJsonString(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7F) {
          out += "\\u00";
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 15]);
        } else if (c == '<') {
          out += "\\u003c";  // safe inside HTML too
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

void AppendBytesField(std::string& out, std::string_view name, std::string_view bytes) {
  out.push_back('"');
  out += name;
  if (IsUtf8(bytes)) {
    out += "\":";
    AppendJsonString(out, bytes);
  } else {
    out += "_b64\":\"";
    out += Base64(bytes);
    out.push_back('"');
  }
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

const Json* Json::Find(std::string_view name) const {
  for (const auto& [k, v] : object) {
    if (k == name) return &v;
  }
  return nullptr;
}

namespace {

class Parser {
 public:
  explicit Parser(std::string_view text) : s_(text) {}

  absl::StatusOr<Json> Document() {
    Json v;
    absl::Status st = Value(v, 0);
    if (!st.ok()) return st;
    Space();
    if (i_ != s_.size()) return Error("trailing bytes after the JSON value");
    return v;
  }

 private:
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(absl::StrFormat("JSON body: %s at byte %d", what, i_));
  }
  void Space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
      ++i_;
  }
  bool Literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }
  absl::Status Value(Json& v, int depth) {
    if (depth > kMaxJsonDepth) return Error("nested deeper than 16");
    Space();
    if (i_ >= s_.size()) return Error("unexpected end");
    const char c = s_[i_];
    if (c == '{') {
      v.kind = Json::kObject;
      ++i_;
      Space();
      if (i_ < s_.size() && s_[i_] == '}') {
        ++i_;
        return absl::OkStatus();
      }
      for (;;) {
        Space();
        std::string name;
        if (i_ >= s_.size() || s_[i_] != '"') return Error("expected a member name");
        absl::Status st = String(name);
        if (!st.ok()) return st;
        Space();
        if (i_ >= s_.size() || s_[i_] != ':') return Error("expected ':'");
        ++i_;
        Json member;
        st = Value(member, depth + 1);
        if (!st.ok()) return st;
        v.object.emplace_back(std::move(name), std::move(member));
        Space();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (i_ < s_.size() && s_[i_] == '}') {
          ++i_;
          return absl::OkStatus();
        }
        return Error("expected ',' or '}'");
      }
    }
    if (c == '[') {
      v.kind = Json::kArray;
      ++i_;
      Space();
      if (i_ < s_.size() && s_[i_] == ']') {
        ++i_;
        return absl::OkStatus();
      }
      for (;;) {
        Json item;
        absl::Status st = Value(item, depth + 1);
        if (!st.ok()) return st;
        v.array.push_back(std::move(item));
        Space();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (i_ < s_.size() && s_[i_] == ']') {
          ++i_;
          return absl::OkStatus();
        }
        return Error("expected ',' or ']'");
      }
    }
    if (c == '"') {
      v.kind = Json::kString;
      return String(v.string);
    }
    if (Literal("true")) {
      v.kind = Json::kBool;
      v.boolean = true;
      return absl::OkStatus();
    }
    if (Literal("false")) {
      v.kind = Json::kBool;
      return absl::OkStatus();
    }
    if (Literal("null")) return absl::OkStatus();
    if (c == '-' || (c >= '0' && c <= '9')) {
      const size_t start = i_;
      while (i_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[i_])) ||
                                s_[i_] == '-' || s_[i_] == '+' || s_[i_] == '.' || s_[i_] == 'e' ||
                                s_[i_] == 'E'))
        ++i_;
      const std::string num(s_.substr(start, i_ - start));
      char* end = nullptr;
      v.kind = Json::kNumber;
      v.number = std::strtod(num.c_str(), &end);
      if (end != num.c_str() + num.size() || !std::isfinite(v.number)) {
        i_ = start;
        return Error("bad number");
      }
      return absl::OkStatus();
    }
    return Error("unexpected character");
  }
  void AppendUtf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }
  bool Hex4(uint32_t& out) {
    if (i_ + 4 > s_.size()) return false;
    out = 0;
    for (int k = 0; k < 4; ++k) {
      const int h = HexValue(s_[i_ + k]);
      if (h < 0) return false;
      out = out * 16 + static_cast<uint32_t>(h);
    }
    i_ += 4;
    return true;
  }
  absl::Status String(std::string& out) {
    ++i_;  // the opening quote
    const size_t start = i_;
    for (;;) {
      if (i_ >= s_.size()) return Error("unterminated string");
      const unsigned char c = s_[i_];
      if (c == '"') {
        ++i_;
        break;
      }
      if (c < 0x20) return Error("control character in a string");
      if (c != '\\') {
        out.push_back(static_cast<char>(c));
        ++i_;
        continue;
      }
      ++i_;
      if (i_ >= s_.size()) return Error("unterminated escape");
      const char e = s_[i_++];
      switch (e) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          uint32_t cp;
          if (!Hex4(cp)) return Error("bad \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t low;
            if (!Literal("\\u") || !Hex4(low) || low < 0xDC00 || low > 0xDFFF) {
              return Error("unpaired surrogate");
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return Error("unpaired surrogate");
          }
          AppendUtf8(out, cp);
          break;
        }
        default: return Error("bad escape");
      }
    }
    if (!IsUtf8(out)) {
      i_ = start;
      return Error("string is not UTF-8 (use the *_b64 fields for bytes)");
    }
    return absl::OkStatus();
  }

  std::string_view s_;
  size_t i_ = 0;
};

absl::StatusOr<std::string> BytesField(const Json& write, std::string_view name, size_t index,
                                       bool* present) {
  const Json* plain = write.Find(name);
  const Json* b64 = write.Find(std::string(name) + "_b64");
  *present = plain != nullptr || b64 != nullptr;
  if (plain != nullptr && b64 != nullptr) {
    return absl::InvalidArgumentError(
        absl::StrFormat("writes[%d]: give %s or %s_b64, not both", index, name, name));
  }
  const Json* v = plain != nullptr ? plain : b64;
  if (v == nullptr) return std::string();
  if (v->kind != Json::kString) {
    return absl::InvalidArgumentError(absl::StrFormat("writes[%d].%s%s must be a string", index,
                                                      name, b64 != nullptr ? "_b64" : ""));
  }
  if (plain != nullptr) return v->string;
  return Unbase64(v->string, absl::StrFormat("writes[%d].%s_b64", index, name));
}

}  // namespace

absl::StatusOr<Json> ParseJson(std::string_view text) { return Parser(text).Document(); }

absl::StatusOr<std::vector<Mutation>> ParseBatch(std::string_view body, size_t max_writes) {
  absl::StatusOr<Json> doc = ParseJson(body);
  if (!doc.ok()) return doc.status();
  const Json* writes = doc->kind == Json::kObject ? doc->Find("writes") : nullptr;
  if (writes == nullptr || writes->kind != Json::kArray) {
    return absl::InvalidArgumentError("the body must be {\"writes\":[...]}");
  }
  if (writes->array.empty() || writes->array.size() > max_writes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "writes holds %d entries; give 1..%d", writes->array.size(), max_writes));
  }
  std::vector<Mutation> out;
  for (size_t i = 0; i < writes->array.size(); ++i) {
    const Json& w = writes->array[i];
    if (w.kind != Json::kObject) {
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
    const Json* ks = w.Find("keyspace");
    if (ks == nullptr || ks->kind != Json::kString) {
      return absl::InvalidArgumentError(
          absl::StrFormat("writes[%d].keyspace must be a string", i));
    }
    m.keyspace = ks->string;
    bool has_key, has_value;
    absl::StatusOr<std::string> key = BytesField(w, "key", i, &has_key);
    if (!key.ok()) return key.status();
    if (!has_key) return absl::InvalidArgumentError(absl::StrFormat("writes[%d] has no key", i));
    m.key = std::move(*key);
    absl::StatusOr<std::string> value = BytesField(w, "value", i, &has_value);
    if (!value.ok()) return value.status();
    const Json* del = w.Find("delete");
    const bool is_delete = del != nullptr && del->kind == Json::kBool && del->boolean;
    if (del != nullptr && del->kind != Json::kBool) {
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
