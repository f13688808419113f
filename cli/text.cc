// cli/text.cc: JSON and plain-text rendering of records.
#include "cli/text.h"

#include "absl/strings/str_format.h"

namespace peerkv::cli {

std::string JsonString(std::string_view bytes) { return json::JsonQuote(bytes); }

std::string JsonBytesField(std::string_view name, std::string_view bytes) {
  std::string out;
  json::AppendBytesField(out, name, bytes);
  return out;
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
