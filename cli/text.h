// cli/text.h: how the CLI prints keys and values: JSON strings (with a
// base64 fallback for bytes that are not UTF-8) and escaped plain text.
#ifndef PEERKV_CLI_TEXT_H_
#define PEERKV_CLI_TEXT_H_

#include <string>
#include <string_view>

#include "store/version.h"

namespace peerkv::cli {

// True if `bytes` is well-formed UTF-8.
bool IsUtf8(std::string_view bytes);

// A JSON string literal (quotes included). REQUIRES: IsUtf8(bytes).
std::string JsonString(std::string_view bytes);

// `"name":"..."` for UTF-8 bytes, or `"name_base64":"..."` otherwise.
std::string JsonBytesField(std::string_view name, std::string_view bytes);

// One JSON object on one line describing `record`: keyspace, key, value
// (or deleted: true), version, seq.
std::string RecordJson(const Record& record);

// Bytes made safe for one line of text: backslash, tab, newline and other
// control bytes become \\, \t, \n and \xNN; so do bytes >= 0x80 unless
// the whole string is UTF-8.
std::string EscapeText(std::string_view bytes);

std::string Base64(std::string_view bytes);

}  // namespace peerkv::cli

#endif  // PEERKV_CLI_TEXT_H_
