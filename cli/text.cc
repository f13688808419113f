// cli/text.cc: JSON and plain-text rendering of records.
#include "cli/text.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"

namespace peerkv::cli {

bool IsUtf8(std::string_view bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    const unsigned char c = static_cast<unsigned char>(bytes[i]);
    int extra;
    uint32_t code;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      extra = 1;
      code = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      extra = 2;
      code = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      extra = 3;
      code = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= bytes.size()) return false;
    for (int k = 1; k <= extra; ++k) {
      const unsigned char cc = static_cast<unsigned char>(bytes[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      code = (code << 6) | (cc & 0x3f);
    }
    // Overlong forms, surrogates and values beyond U+10FFFF are not UTF-8.
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (code < kMin[extra] || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) {
      return false;
    }
    i += extra + 1;
  }
  return true;
}

std::string JsonString(std::string_view bytes) {
  std::string out = "\"";
  for (char ch : bytes) {
    const unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out.push_back(ch);
        }
    }
  }
  out += "\"";
  return out;
}

std::string Base64(std::string_view bytes) {
  return absl::Base64Escape(absl::string_view(bytes.data(), bytes.size()));
}

std::string JsonBytesField(std::string_view name, std::string_view bytes) {
  if (IsUtf8(bytes)) {
    return absl::StrFormat("\"%s\":%s", name, JsonString(bytes));
  }
  return absl::StrFormat("\"%s_base64\":\"%s\"", name, Base64(bytes));
}

std::string RecordJson(const Record& record) {
  std::string out = "{";
  out += JsonBytesField("keyspace", record.keyspace);
  out += ",";
  out += JsonBytesField("key", record.key);
  if (record.deleted) {
    out += ",\"deleted\":true";
  } else {
    out += ",";
    out += JsonBytesField("value", record.value);
  }
  out += absl::StrFormat(",\"version\":\"%s\",\"seq\":%d}", record.version.ToString(),
                         record.seq);
  return out;
}

std::string EscapeText(std::string_view bytes) {
  std::string out;
  const bool utf8 = IsUtf8(bytes);
  for (char ch : bytes) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c == 0x7f || (c > 0x7f && !utf8)) {
      out += absl::StrFormat("\\x%02x", c);
    } else {
      out.push_back(ch);
    }
  }
  return out;
}

}  // namespace peerkv::cli
