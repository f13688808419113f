// cli/text.h: how the CLI prints keys and values: JSON strings (with a
// base64 fallback for bytes that are not UTF-8, common/json.h) and escaped
// plain text.
#ifndef PEERKV_CLI_TEXT_H_
#define PEERKV_CLI_TEXT_H_

#include <string>
#include <string_view>

#include "common/json.h"
#include "store/version.h"

namespace peerkv::cli {

// The shared encodings (common/json.h), by their names here.
using json::Base64;
using json::IsUtf8;

// A JSON string literal (quotes included). REQUIRES: IsUtf8(bytes).
std::string JsonString(std::string_view bytes);

// `"name":"..."` for UTF-8 bytes, or `"name_b64":"..."` otherwise (the
// HTTP API's encoding too).
std::string JsonBytesField(std::string_view name, std::string_view bytes);

// One JSON object on one line describing `record`: keyspace, key, value
// (or deleted: true), version, seq.
std::string RecordJson(const Record& record);

// Bytes made safe for one line of text: backslash, tab, newline and other
// control bytes become \\, \t, \n and \xNN; so do bytes >= 0x80 unless
// the whole string is UTF-8.
std::string EscapeText(std::string_view bytes);

}  // namespace peerkv::cli

#endif  // PEERKV_CLI_TEXT_H_
