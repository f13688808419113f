// resp/session.cc: the RESP commands (see session.h and README.md's RESP
// section for what each maps to).
#include "resp/session.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "auth/access_check.h"
#include "store/validation.h"

namespace peerkv::resp {
namespace {

// Debian's Abseil has its own string_view (ABSL_OPTION_USE_STD_STRING_VIEW
// 0), so StrCat takes no std::string_view: these copy.
std::string S(std::string_view v) { return std::string(v); }
std::string Lower(std::string_view v) {
  std::string s(v);
  for (char& c : s) c = absl::ascii_tolower(static_cast<unsigned char>(c));
  return s;
}
std::string Upper(std::string_view v) {
  std::string s(v);
  for (char& c : s) c = absl::ascii_toupper(static_cast<unsigned char>(c));
  return s;
}
bool IEq(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (absl::ascii_tolower(static_cast<unsigned char>(a[i])) !=
        absl::ascii_tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

// The Redis version whose commands and replies this front end follows (for
// clients that look at HELLO's or INFO's version).
constexpr std::string_view kRedisCompatVersion = "7.0.0";

struct CommandSpec {
  std::string_view name;  // lower case, as COMMAND lists it
  int arity;              // Redis's: negative means "at least -arity"
  std::vector<std::string_view> flags;
  int first_key, last_key, step;
};

const std::vector<CommandSpec>& Commands() {
  static const auto* commands = new std::vector<CommandSpec>{
      {"auth", -2, {"noscript", "loading", "stale", "fast", "no_auth"}, 0, 0, 0},
      {"client", -2, {"noscript", "loading", "stale"}, 0, 0, 0},
      {"command", -1, {"loading", "stale"}, 0, 0, 0},
      {"config", -2, {"admin", "noscript", "loading", "stale"}, 0, 0, 0},
      {"dbsize", 1, {"readonly", "fast"}, 0, 0, 0},
      {"del", -2, {"write"}, 1, -1, 1},
      {"echo", 2, {"fast"}, 0, 0, 0},
      {"exists", -2, {"readonly", "fast"}, 1, -1, 1},
      {"get", 2, {"readonly", "fast"}, 1, 1, 1},
      {"hello", -1, {"noscript", "loading", "stale", "fast", "no_auth"}, 0, 0, 0},
      {"info", -1, {"loading", "stale"}, 0, 0, 0},
      {"keys", 2, {"readonly"}, 0, 0, 0},
      {"mget", -2, {"readonly", "fast"}, 1, -1, 1},
      {"mset", -3, {"write", "denyoom"}, 1, -1, 2},
      {"ping", -1, {"fast"}, 0, 0, 0},
      {"quit", -1, {"noscript", "loading", "stale", "fast", "no_auth"}, 0, 0, 0},
      {"scan", -2, {"readonly"}, 0, 0, 0},
      {"select", 2, {"loading", "stale", "fast"}, 0, 0, 0},
      {"set", -3, {"write", "denyoom"}, 1, 1, 1},
      {"type", 2, {"readonly", "fast"}, 1, 1, 1},
  };
  return *commands;
}

const CommandSpec* FindCommand(std::string_view name) {
  for (const CommandSpec& c : Commands()) {
    if (IEq(name, c.name)) {
      return &c;
    }
  }
  return nullptr;
}

// The metrics of each command of Commands(), by index, and of unknown
// commands (last), looked up once.
const std::vector<std::unique_ptr<metrics::OpMetrics>>& CommandMetrics() {
  static const auto* ops = [] {
    auto* out = new std::vector<std::unique_ptr<metrics::OpMetrics>>();
    for (const CommandSpec& c : Commands()) {
      out->push_back(std::make_unique<metrics::OpMetrics>("resp", std::string(c.name)));
    }
    out->push_back(std::make_unique<metrics::OpMetrics>("resp", "unknown"));
    return out;
  }();
  return *ops;
}

const metrics::OpMetrics* MetricsOf(const CommandSpec* spec) {
  const auto& ops = CommandMetrics();
  return spec == nullptr ? ops.back().get() : ops[spec - Commands().data()].get();
}

const metrics::OpMetrics* GetMetrics() {
  static const metrics::OpMetrics* get = MetricsOf(FindCommand("get"));
  return get;
}

int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The code a reply appended at `from` is counted under: "OK", or an error
// reply's first word when it is 1..16 capital letters (every error this
// front end sends), else "ERR".
std::string_view ReplyCode(const std::string& out, size_t from) {
  if (from >= out.size() || out[from] != '-') return "OK";
  std::string_view rest(out.data() + from + 1, out.size() - from - 1);
  size_t n = 0;
  while (n < rest.size() && n <= 16 && rest[n] >= 'A' && rest[n] <= 'Z') ++n;
  if (n == 0 || n > 16 || n == rest.size() || (rest[n] != ' ' && rest[n] != '\r')) return "ERR";
  return rest.substr(0, n);
}

bool ArityOk(const CommandSpec& c, size_t argc) {
  return c.arity >= 0 ? argc == static_cast<size_t>(c.arity)
                      : argc >= static_cast<size_t>(-c.arity);
}

void WrongArity(Encoder& e, std::string_view name) {
  e.Error(absl::StrCat("ERR wrong number of arguments for '", Lower(name),
                       "' command"));
}

// Redis's text: the command and up to 128 bytes of each argument, while the
// list stays under 128 bytes.
void UnknownCommand(Encoder& e, const std::vector<std::string_view>& args) {
  std::string text =
      absl::StrCat("ERR unknown command '", S(args[0].substr(0, 128)), "', with args beginning with: ");
  size_t listed = 0;
  for (size_t i = 1; i < args.size() && listed < 128; ++i) {
    std::string_view a = args[i].substr(0, 128 - listed);
    absl::StrAppend(&text, "'", S(a), "' ");
    listed += a.size();
  }
  e.Error(text);
}

bool ParseInt(std::string_view text, int64_t* out) {
  if (text.empty() || text.size() > 20) return false;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && ptr == text.data() + text.size();
}

// The literal prefix of a glob pattern (before its first special char).
std::string_view GlobPrefix(std::string_view pattern) {
  size_t i = 0;
  while (i < pattern.size() && pattern[i] != '*' && pattern[i] != '?' && pattern[i] != '[' &&
         pattern[i] != '\\') {
    ++i;
  }
  return pattern.substr(0, i);
}

}  // namespace

std::string ErrorText(const absl::Status& status) {
  std::string code = "ERR";
  if (status.code() == absl::StatusCode::kUnavailable ||
      status.code() == absl::StatusCode::kResourceExhausted) {
    code = "BUSY";
  } else if (status.code() == absl::StatusCode::kPermissionDenied) {
    code = "NOPERM";  // Redis's code for an ACL refusal
  }
  return absl::StrCat(code, " ", status.message());
}

uint64_t CursorTable::Add(std::string keyspace, std::string start_after) {
  absl::MutexLock lock(&mu_);
  const uint64_t cursor = next_++;
  cursors_.emplace(cursor, std::make_pair(std::move(keyspace), std::move(start_after)));
  while (cursors_.size() > kMaxCursors) cursors_.erase(cursors_.begin());
  return cursor;
}

std::optional<std::string> CursorTable::Find(uint64_t cursor, std::string_view keyspace) {
  absl::MutexLock lock(&mu_);
  auto it = cursors_.find(cursor);
  if (it == cursors_.end() || it->second.first != keyspace) return std::nullopt;
  return it->second.second;
}

Session::Session(Store& store, const SessionConfig& config, CursorTable& cursors,
                 const FrontEndStats& stats, uint64_t id)
    : store_(store),
      config_(config),
      cursors_(cursors),
      stats_(stats),
      id_(id),
      keyspace_(config.default_keyspace),
      authenticated_(!config.require_auth) {}

bool Session::MayRunWithWritesInFlight(const std::vector<std::string_view>& args) {
  const std::string_view n = args[0];
  return EqualsUpper(n, "GET") || EqualsUpper(n, "SET") || EqualsUpper(n, "MGET") ||
         EqualsUpper(n, "MSET") || EqualsUpper(n, "DEL") || EqualsUpper(n, "EXISTS") ||
         EqualsUpper(n, "TYPE") || EqualsUpper(n, "PING") || EqualsUpper(n, "ECHO");
}

void Session::Track(PendingWrite* write) {
  write->tracked.clear();
  for (const Mutation& m : write->mutations) {
    std::string id = absl::StrCat(m.keyspace, std::string(1, '\0'), m.key);
    InFlight& f = in_flight_[id];
    f.value = m.value;
    ++f.count;
    write->tracked.push_back(std::move(id));
  }
}

const Session::InFlight* Session::FindInFlight(std::string_view key) const {
  if (in_flight_.empty()) return nullptr;
  std::string id = absl::StrCat(keyspace_, std::string(1, '\0'), S(key));
  auto it = in_flight_.find(id);
  return it == in_flight_.end() ? nullptr : &it->second;
}

Session::Outcome Session::Execute(const std::vector<std::string_view>& args, std::string* out,
                                  PendingWrite* write) {
  const int64_t start_ns = SteadyNs();
  const size_t from = out->size();
  Encoder e(out, protocol_);
  const Outcome outcome = Dispatch(args, e, write);
  if (outcome == Outcome::kWrite) {
    Track(write);
    write->op = op_;
    write->start_ns = start_ns;
  } else {
    op_->Count(static_cast<double>(SteadyNs() - start_ns) * 1e-9, ReplyCode(*out, from));
  }
  return outcome;
}

Session::Outcome Session::Dispatch(const Args& args, Encoder& e, PendingWrite* write) {
  const std::string_view name = args[0];
  // The hot pair first, without the table walk.
  if (EqualsUpper(name, "GET") && args.size() == 2 && authenticated_) {
    op_ = GetMetrics();
    Get(args, e);
    return Outcome::kDone;
  }
  const CommandSpec* spec = FindCommand(name);
  op_ = MetricsOf(spec);
  if (spec == nullptr) {
    if (!authenticated_) {
      e.Error("NOAUTH Authentication required.");
    } else {
      UnknownCommand(e, args);
    }
    return Outcome::kDone;
  }
  if (!ArityOk(*spec, args.size())) {
    WrongArity(e, name);
    return Outcome::kDone;
  }
  const std::string_view n = spec->name;
  if (n == "quit") {
    e.Simple("OK");
    return Outcome::kClose;
  }
  if (n == "auth") {
    Auth(args, e);
    return Outcome::kDone;
  }
  if (n == "hello") {
    Hello(args, e);
    return Outcome::kDone;
  }
  if (n == "ping" && !authenticated_ && args.size() == 1) {
    // Redis answers PING before AUTH only with NOAUTH too, except in HELLO
    // clients' health checks; we answer it (it reveals nothing).
    e.Simple("PONG");
    return Outcome::kDone;
  }
  if (!authenticated_) {
    e.Error("NOAUTH Authentication required.");
    return Outcome::kDone;
  }
  if (n == "get") Get(args, e);
  else if (n == "set") return Set(args, e, write);
  else if (n == "del") return Del(args, e, write);
  else if (n == "mset") return MSet(args, e, write);
  else if (n == "exists") Exists(args, e);
  else if (n == "mget") MGet(args, e);
  else if (n == "scan") Scan(args, e);
  else if (n == "keys") Keys(args, e);
  else if (n == "type") Type(args, e);
  else if (n == "dbsize") DbSize(args, e);
  else if (n == "select") Select(args, e);
  else if (n == "client") Client(args, e);
  else if (n == "command") Command(args, e);
  else if (n == "info") Info(args, e);
  else if (n == "config") Config(args, e);
  else if (n == "ping") {
    if (args.size() == 1) {
      e.Simple("PONG");
    } else if (args.size() == 2) {
      e.Bulk(args[1]);
    } else {
      WrongArity(e, name);
    }
  } else if (n == "echo") {
    e.Bulk(args[1]);
  } else {
    UnknownCommand(e, args);
  }
  return Outcome::kDone;
}

void Session::Auth(const Args& args, Encoder& e) {
  if (args.size() > 3) {
    e.Error("ERR syntax error");
    return;
  }
  const std::string_view user = args.size() == 3 ? args[1] : std::string_view("default");
  const std::string_view token = args.back();
  if (!config_.authenticate) {
    e.Error(config_.require_auth
                ? "ERR AUTH is not available: this server has no token authenticator"
                : "ERR AUTH <password> called without any password configured for the default "
                  "user. Are you sure your configuration is correct?");
    return;
  }
  absl::StatusOr<std::string> identity = config_.authenticate(token);
  if (!identity.ok() || (user != "default" && user != *identity)) {
    e.Error("WRONGPASS invalid username-password pair or user is disabled.");
    return;
  }
  authenticated_ = true;
  identity_ = *identity;
  e.Simple("OK");
}

void Session::Hello(const Args& args, Encoder& e) {
  int protocol = protocol_;
  size_t i = 1;
  if (args.size() >= 2) {
    int64_t v = 0;
    if (!ParseInt(args[1], &v)) {
      e.Error("ERR Protocol version is not an integer or out of range");
      return;
    }
    if (v != 2 && v != 3) {
      e.Error("NOPROTO unsupported protocol version");
      return;
    }
    protocol = static_cast<int>(v);
    i = 2;
  }
  std::optional<std::string> setname;
  for (; i < args.size(); ++i) {
    if (EqualsUpper(args[i], "AUTH") && i + 2 < args.size()) {
      Args auth = {"AUTH", args[i + 1], args[i + 2]};
      std::string reply;
      Encoder auth_e(&reply, protocol_);
      Auth(auth, auth_e);
      if (reply[0] == '-') {
        e.Error(std::string_view(reply).substr(1, reply.size() - 3));
        return;
      }
      i += 2;
    } else if (EqualsUpper(args[i], "SETNAME") && i + 1 < args.size()) {
      setname = std::string(args[++i]);
    } else {
      e.Error(absl::StrCat("ERR Syntax error in HELLO option '", S(args[i]), "'"));
      return;
    }
  }
  if (!authenticated_) {
    e.Error("NOAUTH HELLO must be called with the client already authenticated, otherwise the "
            "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
            "select the RESP protocol version at the same time");
    return;
  }
  if (setname) name_ = *setname;
  protocol_ = protocol;
  e.set_protocol(protocol);
  e.Map(7);
  e.Bulk("server");
  e.Bulk("peerkv");
  e.Bulk("version");
  e.Bulk(kRedisCompatVersion);
  e.Bulk("proto");
  e.Integer(protocol_);
  e.Bulk("id");
  e.Integer(static_cast<int64_t>(id_));
  e.Bulk("mode");
  e.Bulk("standalone");
  e.Bulk("role");
  e.Bulk("master");
  e.Bulk("modules");
  e.Array(0);
}

absl::Status Session::Lookup(std::string_view key, std::optional<std::string>* value) const {
  if (absl::Status s = ValidateKey(key); !s.ok()) return s;
  if (const InFlight* f = FindInFlight(key)) {
    *value = f->value;
    return absl::OkStatus();
  }
  return store_.GetView(keyspace_, key, [value](const RecordView* r) {
    if (r != nullptr && !r->deleted) *value = std::string(r->value);
  });
}

absl::Status Session::Holds(std::string_view key, bool* holds) const {
  *holds = false;
  if (absl::Status s = ValidateKey(key); !s.ok()) return s;
  if (const InFlight* f = FindInFlight(key)) {
    *holds = f->value.has_value();
    return absl::OkStatus();
  }
  return store_.GetView(keyspace_, key,
                        [holds](const RecordView* r) { *holds = r != nullptr && !r->deleted; });
}

absl::Status Session::ReadRefusal() const {
  return auth::CheckRead(config_.access.get(), config_.user, keyspace_);
}

bool Session::RefuseRead(Encoder& e) const {
  absl::Status s = ReadRefusal();
  if (s.ok()) return false;
  e.Error(ErrorText(s));
  return true;
}

absl::Status Session::WriteRefusal() const {
  if (absl::Status s = auth::CheckWrite(config_.access.get(), config_.user, keyspace_); !s.ok()) {
    return s;
  }
  if (absl::Status s = ValidateNotReserved(keyspace_); !s.ok()) return s;
  if (config_.is_strong && config_.is_strong(keyspace_)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "keyspace '%s' is strong: RESP cannot write through consensus; use `peerkv put`",
        keyspace_));
  }
  return absl::OkStatus();
}

void Session::Get(const Args& args, Encoder& e) {
  if (RefuseRead(e)) return;
  const std::string_view key = args[1];
  if (absl::Status s = ValidateKey(key); !s.ok()) {
    e.Error(ErrorText(s));
    return;
  }
  if (const InFlight* f = FindInFlight(key)) {
    if (f->value) {
      e.Bulk(*f->value);
    } else {
      e.Null();
    }
    return;
  }
  bool found = false;
  absl::Status s = store_.GetView(keyspace_, key, [&](const RecordView* r) {
    if (r != nullptr && !r->deleted) {
      found = true;
      e.Bulk(r->value);
    }
  });
  if (!s.ok()) {
    e.Error(ErrorText(s));
  } else if (!found) {
    e.Null();
  }
}

Session::Outcome Session::Set(const Args& args, Encoder& e, PendingWrite* write) {
  const std::string_view key = args[1];
  const std::string_view value = args[2];
  bool nx = false, xx = false, get = false;
  for (size_t i = 3; i < args.size(); ++i) {
    if (EqualsUpper(args[i], "NX")) {
      nx = true;
    } else if (EqualsUpper(args[i], "XX")) {
      xx = true;
    } else if (EqualsUpper(args[i], "GET")) {
      get = true;
    } else if (EqualsUpper(args[i], "EX") || EqualsUpper(args[i], "PX") ||
               EqualsUpper(args[i], "EXAT") || EqualsUpper(args[i], "PXAT") ||
               EqualsUpper(args[i], "KEEPTTL")) {
      e.Error(absl::StrCat("ERR SET option '", Upper(args[i]),
                           "' is not supported: peerkv records do not expire"));
      return Outcome::kDone;
    } else {
      e.Error("ERR syntax error");
      return Outcome::kDone;
    }
  }
  if (nx && xx) {
    e.Error("ERR syntax error");
    return Outcome::kDone;
  }
  Mutation m{keyspace_, std::string(key), std::string(value)};
  absl::Status valid = WriteRefusal();
  // NX, XX and GET read the key too.
  if (valid.ok() && (nx || xx || get)) valid = ReadRefusal();
  if (valid.ok()) valid = ValidateMutation(m, store_.options().max_value_bytes);
  if (!valid.ok()) {
    e.Error(ErrorText(valid));
    return Outcome::kDone;
  }
  write->mutations.clear();
  write->reply = get ? PendingWrite::Reply::kOldValue : PendingWrite::Reply::kOk;
  write->old_value.reset();
  if (nx || xx || get) {
    // Checked against this replica's record just before the write is
    // submitted: not atomic against other connections or replicas (LWW).
    if (absl::Status s = Lookup(key, &write->old_value); !s.ok()) {
      e.Error(ErrorText(s));
      return Outcome::kDone;
    }
    const bool exists = write->old_value.has_value();
    if ((nx && exists) || (xx && !exists)) {
      if (get && exists) {
        e.Bulk(*write->old_value);
      } else {
        e.Null();
      }
      return Outcome::kDone;
    }
  }
  write->mutations.push_back(std::move(m));
  return Outcome::kWrite;
}

Session::Outcome Session::Del(const Args& args, Encoder& e, PendingWrite* write) {
  // DEL answers how many keys held a value: a read too.
  absl::Status refusal = WriteRefusal();
  if (refusal.ok()) refusal = ReadRefusal();
  if (absl::Status s = refusal; !s.ok()) {
    e.Error(ErrorText(s));
    return Outcome::kDone;
  }
  if (args.size() - 1 > kMaxBatchRecords) {
    e.Error(absl::StrFormat("ERR DEL names %d keys; the limit is %d", args.size() - 1,
                            kMaxBatchRecords));
    return Outcome::kDone;
  }
  write->mutations.clear();
  write->reply = PendingWrite::Reply::kCount;
  write->count = 0;
  for (size_t i = 1; i < args.size(); ++i) {
    bool holds = false;
    if (absl::Status s = Holds(args[i], &holds); !s.ok()) {
      e.Error(ErrorText(s));
      return Outcome::kDone;
    }
    if (!holds) continue;
    ++write->count;
    write->mutations.push_back(Mutation{keyspace_, std::string(args[i]), std::nullopt});
  }
  if (write->mutations.empty()) {
    e.Integer(0);
    return Outcome::kDone;
  }
  return Outcome::kWrite;
}

Session::Outcome Session::MSet(const Args& args, Encoder& e, PendingWrite* write) {
  if (args.size() % 2 == 0) {
    WrongArity(e, args[0]);
    return Outcome::kDone;
  }
  if (absl::Status s = WriteRefusal(); !s.ok()) {
    e.Error(ErrorText(s));
    return Outcome::kDone;
  }
  const size_t pairs = (args.size() - 1) / 2;
  if (pairs > kMaxBatchRecords) {
    e.Error(absl::StrFormat("ERR MSET carries %d pairs; the limit is %d", pairs,
                            kMaxBatchRecords));
    return Outcome::kDone;
  }
  write->mutations.clear();
  write->reply = PendingWrite::Reply::kOk;
  size_t bytes = 0;
  for (size_t i = 1; i + 1 < args.size(); i += 2) {
    Mutation m{keyspace_, std::string(args[i]), std::string(args[i + 1])};
    if (absl::Status s = ValidateMutation(m, store_.options().max_value_bytes); !s.ok()) {
      e.Error(ErrorText(s));
      return Outcome::kDone;
    }
    bytes += m.key.size() + m.value->size();
    write->mutations.push_back(std::move(m));
  }
  if (bytes > kMaxBatchBytes) {
    e.Error(absl::StrFormat("ERR MSET carries %d bytes; the limit is %d", bytes, kMaxBatchBytes));
    return Outcome::kDone;
  }
  return Outcome::kWrite;
}

void Session::FinishWrite(const PendingWrite& write,
                          const absl::StatusOr<std::vector<Version>>& result, std::string* out) {
  for (const std::string& id : write.tracked) {
    auto it = in_flight_.find(id);
    if (it != in_flight_.end() && --it->second.count == 0) in_flight_.erase(it);
  }
  const size_t from = out->size();
  FinishReply(write, result, out);
  if (write.op != nullptr) {
    write.op->Count(static_cast<double>(SteadyNs() - write.start_ns) * 1e-9,
                    ReplyCode(*out, from));
  }
}

void Session::FinishReply(const PendingWrite& write,
                          const absl::StatusOr<std::vector<Version>>& result, std::string* out) {
  Encoder e(out, protocol_);
  if (!result.ok()) {
    e.Error(ErrorText(result.status()));
    return;
  }
  switch (write.reply) {
    case PendingWrite::Reply::kOk:
      e.Simple("OK");
      break;
    case PendingWrite::Reply::kCount:
      e.Integer(write.count);
      break;
    case PendingWrite::Reply::kOldValue:
      if (write.old_value) {
        e.Bulk(*write.old_value);
      } else {
        e.Null();
      }
      break;
  }
}

void Session::Exists(const Args& args, Encoder& e) {
  if (RefuseRead(e)) return;
  int64_t n = 0;
  for (size_t i = 1; i < args.size(); ++i) {
    bool holds = false;
    if (absl::Status s = Holds(args[i], &holds); !s.ok()) {
      e.Error(ErrorText(s));
      return;
    }
    n += holds ? 1 : 0;
  }
  e.Integer(n);
}

void Session::MGet(const Args& args, Encoder& e) {
  if (RefuseRead(e)) return;
  for (size_t i = 1; i < args.size(); ++i) {
    if (absl::Status s = ValidateKey(args[i]); !s.ok()) {
      e.Error(ErrorText(s));
      return;
    }
  }
  e.Array(args.size() - 1);
  for (size_t i = 1; i < args.size(); ++i) {
    if (const InFlight* f = FindInFlight(args[i])) {
      if (f->value) {
        e.Bulk(*f->value);
      } else {
        e.Null();
      }
      continue;
    }
    bool found = false;
    absl::Status s = store_.GetView(keyspace_, args[i], [&](const RecordView* r) {
      if (r != nullptr && !r->deleted) {
        found = true;
        e.Bulk(r->value);
      }
    });
    // An element cannot be an error mid-array in RESP2: a failed read is
    // a null element (the store only fails on I/O errors).
    if (!s.ok() || !found) e.Null();
  }
}

void Session::Scan(const Args& args, Encoder& e) {
  if (RefuseRead(e)) return;
  uint64_t cursor = 0;
  {
    auto [ptr, ec] = std::from_chars(args[1].data(), args[1].data() + args[1].size(), cursor);
    if (ec != std::errc() || ptr != args[1].data() + args[1].size()) {
      e.Error("ERR invalid cursor");
      return;
    }
  }
  std::string_view pattern;
  int64_t count = 10;
  for (size_t i = 2; i < args.size(); ++i) {
    if (EqualsUpper(args[i], "MATCH") && i + 1 < args.size()) {
      pattern = args[++i];
    } else if (EqualsUpper(args[i], "COUNT") && i + 1 < args.size()) {
      if (!ParseInt(args[++i], &count)) {
        e.Error("ERR value is not an integer or out of range");
        return;
      }
      if (count < 1) {
        e.Error("ERR syntax error");
        return;
      }
    } else if (EqualsUpper(args[i], "TYPE") && i + 1 < args.size()) {
      if (!EqualsUpper(args[++i], "STRING")) {
        // Only strings exist here: any other type matches nothing.
        pattern = "";
        count = 0;
      }
    } else {
      e.Error("ERR syntax error");
      return;
    }
  }
  ScanOptions options;
  if (cursor != 0) {
    std::optional<std::string> after = cursors_.Find(cursor, keyspace_);
    if (!after) {
      e.Error("ERR invalid cursor");
      return;
    }
    options.start_after = std::move(*after);
  }
  if (count == 0) {
    e.Array(2);
    e.Bulk("0");
    e.Array(0);
    return;
  }
  options.prefix = std::string(pattern.empty() ? std::string_view() : GlobPrefix(pattern));
  options.limit = static_cast<size_t>(std::min<int64_t>(count, kMaxScanLimit));
  absl::StatusOr<ScanResult> page = store_.Scan(keyspace_, options);
  if (!page.ok()) {
    e.Error(ErrorText(page.status()));
    return;
  }
  std::vector<std::string_view> keys;
  for (const Record& r : page->records) {
    if (pattern.empty() || GlobMatch(pattern, r.key)) keys.push_back(r.key);
  }
  const uint64_t next = page->more && !page->records.empty()
                            ? cursors_.Add(keyspace_, page->records.back().key)
                            : 0;
  e.Array(2);
  e.Bulk(absl::StrCat(next));
  e.Array(keys.size());
  for (std::string_view k : keys) e.Bulk(k);
}

void Session::Keys(const Args& args, Encoder& e) {
  if (RefuseRead(e)) return;
  const std::string_view pattern = args[1];
  ScanOptions options;
  options.prefix = std::string(GlobPrefix(pattern));
  options.limit = kMaxScanLimit;
  std::vector<std::string> keys;
  size_t bytes = 0;
  while (true) {
    absl::StatusOr<ScanResult> page = store_.Scan(keyspace_, options);
    if (!page.ok()) {
      e.Error(ErrorText(page.status()));
      return;
    }
    if (page->records.empty()) break;
    std::string last = page->records.back().key;
    for (Record& r : page->records) {
      if (!GlobMatch(pattern, r.key)) continue;
      bytes += r.key.size() + 16;
      if (bytes > config_.max_keys_reply_bytes) {
        e.Error(absl::StrFormat("ERR KEYS would answer more than %d bytes; use SCAN",
                                config_.max_keys_reply_bytes));
        return;
      }
      keys.push_back(std::move(r.key));
    }
    if (!page->more) break;
    options.start_after = std::move(last);
  }
  e.Array(keys.size());
  for (const std::string& k : keys) e.Bulk(k);
}

void Session::Type(const Args& args, Encoder& e) {
  if (RefuseRead(e)) return;
  bool holds = false;
  if (absl::Status s = Holds(args[1], &holds); !s.ok()) {
    e.Error(ErrorText(s));
    return;
  }
  e.Simple(holds ? "string" : "none");
}

void Session::DbSize(const Args&, Encoder& e) {
  if (RefuseRead(e)) return;
  // Live keys of the keyspace: a scan (tombstones are left out by it).
  ScanOptions options;
  options.limit = kMaxScanLimit;
  int64_t n = 0;
  while (true) {
    absl::StatusOr<ScanResult> page = store_.Scan(keyspace_, options);
    if (!page.ok()) {
      e.Error(ErrorText(page.status()));
      return;
    }
    n += static_cast<int64_t>(page->records.size());
    if (!page->more || page->records.empty()) break;
    options.start_after = page->records.back().key;
  }
  e.Integer(n);
}

void Session::Select(const Args& args, Encoder& e) {
  const std::string_view target = args[1];
  std::string keyspace;
  int64_t db = 0;
  if (target.substr(0, 3) == "ks:") {
    keyspace = std::string(target.substr(3));
  } else if (ParseInt(target, &db) && db >= 0) {
    keyspace = db == 0 ? config_.default_keyspace : absl::StrCat("db", db);
  } else {
    e.Error("ERR SELECT takes a database number (0 is the default keyspace, N is keyspace 'dbN') "
            "or ks:KEYSPACE");
    return;
  }
  if (absl::Status s = ValidateKeyspace(keyspace); !s.ok()) {
    e.Error(ErrorText(s));
    return;
  }
  keyspace_ = std::move(keyspace);
  e.Simple("OK");
}

void Session::Client(const Args& args, Encoder& e) {
  const std::string_view sub = args[1];
  if (EqualsUpper(sub, "SETNAME") && args.size() == 3) {
    for (char c : args[2]) {
      if (c < '!' || c > '~') {
        e.Error("ERR Client names cannot contain spaces, newlines or special characters.");
        return;
      }
    }
    if (args[2].size() > 256) {
      e.Error("ERR client name is longer than 256 bytes");
      return;
    }
    name_ = std::string(args[2]);
    e.Simple("OK");
  } else if (EqualsUpper(sub, "GETNAME") && args.size() == 2) {
    if (name_.empty()) {
      e.Null();
    } else {
      e.Bulk(name_);
    }
  } else if (EqualsUpper(sub, "ID") && args.size() == 2) {
    e.Integer(static_cast<int64_t>(id_));
  } else if (EqualsUpper(sub, "SETINFO") && args.size() == 4) {
    e.Simple("OK");
  } else if (EqualsUpper(sub, "INFO") && args.size() == 2) {
    e.Bulk(absl::StrFormat("id=%d name=%s db=0 keyspace=%s user=%s resp=%d\n", id_, name_,
                           keyspace_, identity_.empty() ? "default" : identity_, protocol_));
  } else {
    e.Error(absl::StrCat("ERR unknown subcommand '", S(sub.substr(0, 128)),
                         "'. Try CLIENT SETNAME, GETNAME, ID, INFO."));
  }
}

void Session::Command(const Args& args, Encoder& e) {
  auto entry = [&e](const CommandSpec& c) {
    e.Array(6);
    e.Bulk(c.name);
    e.Integer(c.arity);
    e.Set(c.flags.size());
    for (std::string_view f : c.flags) e.Simple(f);
    e.Integer(c.first_key);
    e.Integer(c.last_key);
    e.Integer(c.step);
  };
  if (args.size() == 1) {
    e.Array(Commands().size());
    for (const CommandSpec& c : Commands()) entry(c);
    return;
  }
  const std::string_view sub = args[1];
  if (EqualsUpper(sub, "COUNT") && args.size() == 2) {
    e.Integer(static_cast<int64_t>(Commands().size()));
  } else if (EqualsUpper(sub, "DOCS")) {
    // No documentation: an empty map (redis-cli then shows no hints).
    e.Map(0);
  } else if (EqualsUpper(sub, "LIST") && args.size() == 2) {
    e.Array(Commands().size());
    for (const CommandSpec& c : Commands()) e.Bulk(c.name);
  } else if (EqualsUpper(sub, "INFO")) {
    e.Array(args.size() - 2);
    for (size_t i = 2; i < args.size(); ++i) {
      const CommandSpec* c = FindCommand(args[i]);
      if (c == nullptr) {
        e.Null();
      } else {
        entry(*c);
      }
    }
  } else {
    e.Error(absl::StrCat("ERR unknown subcommand '", S(sub.substr(0, 128)),
                         "'. Try COMMAND COUNT, DOCS, INFO, LIST."));
  }
}

void Session::Info(const Args& args, Encoder& e) {
  bool all = args.size() == 1;
  auto want = [&](std::string_view section) {
    if (all) return true;
    for (size_t i = 1; i < args.size(); ++i) {
      if (IEq(args[i], section) || EqualsUpper(args[i], "ALL") ||
          EqualsUpper(args[i], "EVERYTHING") || EqualsUpper(args[i], "DEFAULT")) {
        return true;
      }
    }
    return false;
  };
  std::string text;
  if (want("server")) {
    const std::string port = config_.address.substr(config_.address.rfind(':') + 1);
    absl::StrAppendFormat(
        &text,
        "# Server\r\nredis_version:%s\r\nserver_name:peerkv\r\nredis_mode:standalone\r\n"
        "process_id:%d\r\ntcp_port:%s\r\nuptime_in_seconds:%d\r\nreplica_id:%s\r\n"
        "replica_name:%s\r\nresp_default_keyspace:%s\r\n\r\n",
        kRedisCompatVersion, static_cast<int>(::getpid()), port,
        absl::ToInt64Seconds(absl::Now() - config_.started), ReplicaIdToString(store_.replica_id()),
        config_.replica_name, config_.default_keyspace);
  }
  if (want("clients")) {
    absl::StrAppendFormat(&text,
                          "# Clients\r\nconnected_clients:%d\r\ntotal_connections_received:%d\r\n"
                          "rejected_connections:%d\r\n\r\n",
                          stats_.connections.load(), stats_.connections_total.load(),
                          stats_.rejected_connections.load());
  }
  // The keyspaces held here (reserved ones left out) that the user may
  // read, with their registers; whether that is all of them (not known:
  // no). Listed only for the sections that use it.
  std::vector<std::pair<std::string, uint64_t>> readable;
  bool reads_all = false;
  absl::StatusOr<std::vector<std::pair<std::string, rbsr::Fingerprint>>> roots;
  if (want("stats") || want("keyspace")) roots = store_.KeyspaceFingerprints();
  if (roots.ok()) {
    reads_all = true;
    for (const auto& [name, fp] : *roots) {
      if (IsReservedKeyspace(name)) continue;
      if (auth::CheckRead(config_.access.get(), config_.user, name).ok()) {
        readable.emplace_back(name, fp.count);
      } else {
        reads_all = false;
      }
    }
  }
  if (want("stats")) {
    absl::StrAppendFormat(&text, "# Stats\r\ntotal_commands_processed:%d\r\nprotocol_errors:%d\r\n",
                          stats_.commands.load(), stats_.protocol_errors.load());
    // The store's figures are the whole store's: only for a user who may
    // read every keyspace held here (else they would count, and date, the
    // records of keyspaces the user may not read).
    if (reads_all) {
      absl::StatusOr<StoreStats> s = store_.Stats();
      absl::StrAppendFormat(&text,
                            "store_live_records:%d\r\nstore_tombstones:%d\r\nstore_max_seq:%d\r\n"
                            "store_commits:%d\r\nstore_disk_bytes:%d\r\n",
                            s.ok() ? s->live_records : 0, s.ok() ? s->tombstones : 0,
                            s.ok() ? s->max_seq : 0, s.ok() ? s->commits : 0,
                            s.ok() ? s->disk_bytes : 0);
    }
    text += "\r\n";
  }
  if (want("replication")) {
    // peerkv is multi-master: every replica takes writes; its peers are
    // listed as Redis lists replicas, with peerkv's own facts.
    std::vector<replication::PeerStatus> peers =
        config_.peer_statuses ? config_.peer_statuses() : std::vector<replication::PeerStatus>{};
    absl::StrAppendFormat(&text, "# Replication\r\nrole:master\r\npeerkv_role:peer\r\npeers:%d\r\n",
                          peers.size());
    for (size_t i = 0; i < peers.size(); ++i) {
      const replication::PeerStatus& p = peers[i];
      const std::string last =
          p.last_exchange == absl::InfinitePast()
              ? "-1"
              : absl::StrCat(absl::ToInt64Milliseconds(absl::Now() - p.last_exchange));
      absl::StrAppendFormat(&text,
                            "peer%d:name=%s,address=%s,replica_id=%s,state=%s,behind=%d,"
                            "checkpoint=%d,refused=%d,last_exchange_ms_ago=%s\r\n",
                            i, p.name.empty() ? "-" : p.name,
                            p.address.empty() ? "inbound" : p.address,
                            p.replica_id == 0 ? "-" : ReplicaIdToString(p.replica_id),
                            p.reachable ? "reachable" : "unreachable", p.behind, p.checkpoint_seq,
                            p.refused, last);
    }
    text += "\r\n";
  }
  if (want("keyspace")) {
    // Registers per keyspace (tombstones included) from the in-memory
    // range roots: O(keyspaces), no scan.
    // Only what the user may read: an unreadable keyspace is not named.
    text += "# Keyspace\r\n";
    for (const auto& [name, registers] : readable) {
      absl::StrAppendFormat(&text, "ks:%s:registers=%d\r\n", name, registers);
    }
    text += "\r\n";
  }
  e.Verbatim(text);
}

void Session::Config(const Args& args, Encoder& e) {
  // redis-benchmark asks CONFIG GET save / appendonly: there is no Redis
  // configuration here, so every parameter is unknown (an empty answer,
  // as Redis gives for an unknown one).
  if (EqualsUpper(args[1], "GET") && args.size() >= 3) {
    e.Map(0);
    return;
  }
  e.Error("ERR CONFIG: only CONFIG GET is answered (with nothing): peerkv is configured by "
          "`peerkv serve` flags");
}

}  // namespace peerkv::resp
