// resp/protocol.h: the RESP wire format, without any I/O: an incremental
// parser of client commands (multibulk arrays, as every client library
// sends, and inline commands, as telnet does) and an encoder of replies in
// RESP2 or RESP3. No kj, no sockets: the front end (resp/server.cc) feeds it
// the bytes it read, and the unit and fuzz tests feed it anything.
#ifndef PEERKV_RESP_PROTOCOL_H_
#define PEERKV_RESP_PROTOCOL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace peerkv::resp {

// What one command may carry. A frame beyond any of them is a protocol
// error (the connection is answered with -ERR Protocol error and closed, as
// Redis does), never truncated.
struct ParseLimits {
  // Largest bulk string (one argument): the store's value limit (a key is
  // smaller than a value).
  size_t max_bulk_bytes = size_t{4} << 20;
  // Arguments in one command (MSET of 10,000 pairs is 20,001).
  size_t max_args = 20'001;
  // Bytes of one command in all (its arguments together).
  size_t max_command_bytes = size_t{64} << 20;
  // Longest inline command, and longest header line (`*N`, `$N`).
  size_t max_inline_bytes = 64 * 1024;
};

enum class ParseStatus {
  kCommand,     // one whole command parsed (args may be empty: a blank line)
  kIncomplete,  // more bytes are needed; nothing consumed
  kError,       // a protocol error; the connection must be closed
};

struct ParseResult {
  ParseStatus status = ParseStatus::kIncomplete;
  // Bytes of the input the command took (kCommand only).
  size_t consumed = 0;
  // Why (kError only), in Redis's words: "Protocol error: ...".
  std::string error;
};

// Parses the first command in `in`. On kCommand, `args` holds views into
// `in` (valid as long as those bytes are), and `consumed` says how far the
// command went. An inline command (a line not starting with '*') is split
// on spaces and tabs; empty lines give a command with no arguments.
ParseResult ParseCommand(std::string_view in, const ParseLimits& limits,
                         std::vector<std::string_view>* args);

// Appends replies to a string in one protocol version (2 or 3). RESP2 has
// no null, map, set, double or boolean type: they are sent as RESP2 sends
// them ($-1, flat arrays, bulk strings, integers).
class Encoder {
 public:
  Encoder(std::string* out, int protocol) : out_(out), protocol_(protocol) {}

  int protocol() const { return protocol_; }
  void set_protocol(int protocol) { protocol_ = protocol; }

  // +text (no CR or LF in `text`: they are replaced with spaces).
  void Simple(std::string_view text);
  // -text: `text` starts with its code, e.g. "ERR wrong number of ...".
  void Error(std::string_view text);
  void Integer(int64_t n);
  void Bulk(std::string_view data);
  // $-1 (RESP2) or _ (RESP3).
  void Null();
  // *N; then N elements follow.
  void Array(size_t n);
  // RESP3 %N then 2N elements; RESP2 *2N.
  void Map(size_t pairs);
  // RESP3 ~N; RESP2 *N.
  void Set(size_t n);
  // RESP3 =N txt:...; RESP2 a bulk string (what INFO answers).
  void Verbatim(std::string_view text);

 private:
  void Header(char type, uint64_t n);

  std::string* out_;
  int protocol_;
};

// True if `name` equals `upper` ignoring ASCII case (`upper` in capitals).
bool EqualsUpper(std::string_view name, std::string_view upper);

// Redis's glob match (KEYS, SCAN MATCH): * ? [abc] [^a] [a-z] and \x.
bool GlobMatch(std::string_view pattern, std::string_view text);

}  // namespace peerkv::resp

#endif  // PEERKV_RESP_PROTOCOL_H_
