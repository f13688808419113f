// resp/protocol.cc: the RESP parser and encoder (see protocol.h).
#include "resp/protocol.h"

#include <charconv>
#include <cstring>

namespace peerkv::resp {
namespace {

ParseResult Error(std::string why) {
  return ParseResult{.status = ParseStatus::kError, .consumed = 0,
                     .error = "Protocol error: " + std::move(why)};
}

// A strict decimal: optional '-', 1..18 digits, nothing else.
bool ParseLength(std::string_view text, int64_t* out) {
  bool negative = false;
  if (!text.empty() && text[0] == '-') {
    negative = true;
    text.remove_prefix(1);
  }
  if (text.empty() || text.size() > 18) return false;
  int64_t n = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + (c - '0');
  }
  *out = negative ? -n : n;
  return true;
}

// Finds the "\r\n" that ends the header line starting at `pos` (at its
// type byte). Returns the position of '\r', or npos if the line has not all
// arrived; sets *too_long when the line cannot end within `max`.
size_t FindLineEnd(std::string_view in, size_t pos, size_t max, bool* too_long) {
  const size_t window = std::min(in.size() - pos, max + 2);
  const void* cr = std::memchr(in.data() + pos, '\r', window);
  if (cr == nullptr) {
    *too_long = in.size() - pos > max + 1;
    return std::string_view::npos;
  }
  return static_cast<const char*>(cr) - in.data();
}

ParseResult ParseInline(std::string_view in, const ParseLimits& limits,
                        std::vector<std::string_view>* args) {
  const size_t window = std::min(in.size(), limits.max_inline_bytes + 1);
  const void* nl = std::memchr(in.data(), '\n', window);
  if (nl == nullptr) {
    if (in.size() > limits.max_inline_bytes) return Error("too big inline request");
    return ParseResult{};
  }
  const size_t end = static_cast<const char*>(nl) - in.data();
  std::string_view line = in.substr(0, end);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    if (i == line.size()) break;
    const size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (args->size() == limits.max_args) return Error("too many arguments in inline request");
    args->push_back(line.substr(start, i - start));
  }
  return ParseResult{.status = ParseStatus::kCommand, .consumed = end + 1, .error = {}};
}

}  // namespace

ParseResult ParseCommand(std::string_view in, const ParseLimits& limits,
                         std::vector<std::string_view>* args) {
  args->clear();
  if (in.empty()) return ParseResult{};
  if (in[0] != '*') return ParseInline(in, limits, args);
  bool too_long = false;
  size_t cr = FindLineEnd(in, 0, limits.max_inline_bytes, &too_long);
  if (cr == std::string_view::npos) {
    return too_long ? Error("too big mbulk count string") : ParseResult{};
  }
  if (cr + 1 >= in.size()) return ParseResult{};
  int64_t count = 0;
  if (in[cr + 1] != '\n' || !ParseLength(in.substr(1, cr - 1), &count) ||
      count > static_cast<int64_t>(limits.max_args)) {
    return Error("invalid multibulk length");
  }
  size_t pos = cr + 2;
  if (count <= 0) {
    return ParseResult{.status = ParseStatus::kCommand, .consumed = pos, .error = {}};
  }
  size_t total = 0;
  args->reserve(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    if (pos >= in.size()) return ParseResult{};
    if (in[pos] != '$') {
      const char c = in[pos];
      return Error(std::string("expected '$', got '") +
                   (c >= 0x20 && c < 0x7f ? std::string(1, c) : std::string("\\x") +
                        "0123456789abcdef"[(static_cast<unsigned char>(c) >> 4)] +
                        "0123456789abcdef"[c & 0xf]) +
                   "'");
    }
    cr = FindLineEnd(in, pos, limits.max_inline_bytes, &too_long);
    if (cr == std::string_view::npos) {
      return too_long ? Error("too big bulk count string") : ParseResult{};
    }
    if (cr + 1 >= in.size()) return ParseResult{};
    int64_t length = 0;
    if (in[cr + 1] != '\n' || !ParseLength(in.substr(pos + 1, cr - pos - 1), &length) ||
        length < 0 || static_cast<uint64_t>(length) > limits.max_bulk_bytes) {
      return Error("invalid bulk length");
    }
    total += static_cast<size_t>(length);
    if (total > limits.max_command_bytes) return Error("command too big");
    pos = cr + 2;
    const size_t n = static_cast<size_t>(length);
    if (in.size() - pos < n + 2) {
      args->clear();
      return ParseResult{};
    }
    if (in[pos + n] != '\r' || in[pos + n + 1] != '\n') {
      return Error("bulk string not terminated by CRLF");
    }
    args->push_back(in.substr(pos, n));
    pos += n + 2;
  }
  return ParseResult{.status = ParseStatus::kCommand, .consumed = pos, .error = {}};
}

void Encoder::Header(char type, uint64_t n) {
  char buf[24];
  buf[0] = type;
  auto [end, ec] = std::to_chars(buf + 1, buf + sizeof(buf) - 2, n);
  *end++ = '\r';
  *end++ = '\n';
  out_->append(buf, end - buf);
}

void Encoder::Simple(std::string_view text) {
  out_->push_back('+');
  const size_t start = out_->size();
  out_->append(text);
  for (size_t i = start; i < out_->size(); ++i) {
    if ((*out_)[i] == '\r' || (*out_)[i] == '\n') (*out_)[i] = ' ';
  }
  out_->append("\r\n");
}

void Encoder::Error(std::string_view text) {
  out_->push_back('-');
  const size_t start = out_->size();
  out_->append(text);
  for (size_t i = start; i < out_->size(); ++i) {
    if ((*out_)[i] == '\r' || (*out_)[i] == '\n') (*out_)[i] = ' ';
  }
  out_->append("\r\n");
}

void Encoder::Integer(int64_t n) {
  char buf[24];
  buf[0] = ':';
  auto [end, ec] = std::to_chars(buf + 1, buf + sizeof(buf) - 2, n);
  *end++ = '\r';
  *end++ = '\n';
  out_->append(buf, end - buf);
}

void Encoder::Bulk(std::string_view data) {
  Header('$', data.size());
  out_->append(data);
  out_->append("\r\n");
}

void Encoder::Null() { out_->append(protocol_ >= 3 ? "_\r\n" : "$-1\r\n"); }

void Encoder::Array(size_t n) { Header('*', n); }

void Encoder::Map(size_t pairs) {
  if (protocol_ >= 3) {
    Header('%', pairs);
  } else {
    Header('*', 2 * pairs);
  }
}

void Encoder::Set(size_t n) { Header(protocol_ >= 3 ? '~' : '*', n); }

void Encoder::Verbatim(std::string_view text) {
  if (protocol_ < 3) {
    Bulk(text);
    return;
  }
  Header('=', text.size() + 4);
  out_->append("txt:");
  out_->append(text);
  out_->append("\r\n");
}

bool EqualsUpper(std::string_view name, std::string_view upper) {
  if (name.size() != upper.size()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    if (c != upper[i]) return false;
  }
  return true;
}

namespace {

// Whether the one pattern element at p[*pi] (not '*') matches `c`; moves
// *pi past it.
bool MatchOne(std::string_view p, size_t* pi, char c) {
  size_t i = *pi;
  if (p[i] == '?') {
    *pi = i + 1;
    return true;
  }
  if (p[i] == '\\' && i + 1 < p.size()) {
    *pi = i + 2;
    return p[i + 1] == c;
  }
  if (p[i] != '[') {
    *pi = i + 1;
    return p[i] == c;
  }
  ++i;
  bool negate = false;
  if (i < p.size() && p[i] == '^') {
    negate = true;
    ++i;
  }
  bool match = false;
  while (i < p.size() && p[i] != ']') {
    if (p[i] == '\\' && i + 1 < p.size()) {
      if (p[i + 1] == c) match = true;
      i += 2;
    } else if (i + 2 < p.size() && p[i + 1] == '-' && p[i + 2] != ']') {
      char lo = p[i];
      char hi = p[i + 2];
      if (lo > hi) std::swap(lo, hi);
      if (c >= lo && c <= hi) match = true;
      i += 3;
    } else {
      if (p[i] == c) match = true;
      ++i;
    }
  }
  // An unterminated class ends with the pattern (as Redis treats it).
  *pi = i < p.size() ? i + 1 : i;
  return negate ? !match : match;
}

}  // namespace

bool GlobMatch(std::string_view p, std::string_view s) {
  size_t pi = 0;
  size_t si = 0;
  size_t star = std::string_view::npos;
  size_t mark = 0;
  // Greedy with one backtrack point (the last star): O(|p| * |s|).
  while (si < s.size()) {
    if (pi < p.size() && p[pi] == '*') {
      star = pi++;
      mark = si;
      continue;
    }
    size_t next = pi;
    if (pi < p.size() && MatchOne(p, &next, s[si])) {
      pi = next;
      ++si;
      continue;
    }
    if (star != std::string_view::npos) {
      pi = star + 1;
      si = ++mark;
      continue;
    }
    return false;
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

}  // namespace peerkv::resp
