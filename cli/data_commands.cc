// cli/data_commands.cc: put, get, del, scan and info, over whichever backend
// the global flags name.
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "absl/strings/str_format.h"
#include "cli/command.h"
#include "cli/text.h"
#include "consensus/strong_keyspaces.h"
#include "rpc/client.h"
#include "store/validation.h"

namespace peerkv::cli {
namespace {

// Reads stdin up to `limit` bytes; more is an error naming the limit.
absl::StatusOr<std::string> ReadStdin(size_t limit) {
  std::string value;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(STDIN_FILENO, buf, sizeof(buf));
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrFormat("reading stdin: %s", strerror(errno)));
    }
    value.append(buf, static_cast<size_t>(n));
    if (value.size() > limit) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "VALUE from stdin is more than %d bytes, the limit", limit));
    }
  }
  return value;
}

void WriteAll(std::string_view bytes) {
  std::fwrite(bytes.data(), 1, bytes.size(), stdout);
}

// --if-version V / --if-absent (put) or --if-version V (del): the write's
// precondition. InvalidArgument naming the flag for a version that does not
// parse or both flags at once.
absl::StatusOr<consensus::Precondition> WritePrecondition(const Context& c) {
  consensus::Precondition pre;
  const std::optional<std::string> version = c.args.Get("if-version");
  if (version.has_value() && c.args.Has("if-absent")) {
    return absl::InvalidArgumentError("give --if-version or --if-absent, not both");
  }
  if (version.has_value()) {
    absl::StatusOr<Version> v = ParseVersion(*version, "--if-version");
    if (!v.ok()) return v.status();
    pre.kind = consensus::Precondition::Kind::kIfVersion;
    pre.version = *v;
  } else if (c.args.Has("if-absent")) {
    pre.kind = consensus::Precondition::Kind::kIfAbsent;
  }
  return pre;
}

// A client for the calls only a server answers (compare-and-set, stale
// reads): a data directory opened embedded has no consensus service.
absl::StatusOr<std::unique_ptr<rpc::Client>> StrongClient(const Context& c,
                                                          std::string_view what) {
  if (c.args.Has("data")) {
    return absl::InvalidArgumentError(absl::StrCat(
        std::string(what), " needs a running server (--server HOST:PORT): a data directory "
              "opened embedded (--data) has no consensus service"));
  }
  return rpc::Client::Connect(rpc::ClientOptions{.address = c.ServerAddress()});
}

// put/del with a precondition, through a server.
int RunConditionalWrite(const Context& c, const consensus::Precondition& pre,
                        std::optional<std::string> value) {
  absl::StatusOr<std::unique_ptr<rpc::Client>> client =
      StrongClient(c, pre.kind == consensus::Precondition::Kind::kIfAbsent ? "--if-absent"
                                                                           : "--if-version");
  if (!client.ok()) return Fail(c.command, client.status());
  std::optional<std::string_view> v;
  if (value.has_value()) v = *value;
  absl::StatusOr<Version> version =
      (*client)->WriteIf(c.args.positional[0], c.args.positional[1], v, pre);
  if (!version.ok()) return Fail(c.command, version.status());
  std::printf("%s\n", version->ToString().c_str());
  return kExitOk;
}

int RunPut(const Context& c) {
  if (absl::Status s = ExpectPositional(c, 3, 3, "KS KEY VALUE"); !s.ok()) {
    return Fail(c.command, s);
  }
  absl::StatusOr<consensus::Precondition> pre = WritePrecondition(c);
  if (!pre.ok()) return Fail(c.command, pre.status());
  absl::StatusOr<std::unique_ptr<Backend>> backend = c.OpenBackend();
  if (!backend.ok()) return Fail(c.command, backend.status());
  std::string value = c.args.positional[2];
  if (value == "-") {
    absl::StatusOr<std::string> in = ReadStdin((*backend)->max_value_bytes());
    if (!in.ok()) return Fail(c.command, in.status());
    value = std::move(*in);
  }
  if (pre->kind != consensus::Precondition::Kind::kNone) {
    return RunConditionalWrite(c, *pre, std::move(value));
  }
  absl::StatusOr<Version> version =
      (*backend)->Put(c.args.positional[0], c.args.positional[1], value);
  if (!version.ok()) return Fail(c.command, version.status());
  std::printf("%s\n", version->ToString().c_str());
  return kExitOk;
}

int RunGet(const Context& c) {
  if (absl::Status s = ExpectPositional(c, 2, 2, "KS KEY"); !s.ok()) {
    return Fail(c.command, s);
  }
  std::optional<Record> found;
  if (c.args.Has("stale-ok")) {
    absl::StatusOr<std::unique_ptr<rpc::Client>> client = StrongClient(c, "--stale-ok");
    if (!client.ok()) return Fail(c.command, client.status());
    absl::StatusOr<rpc::StrongReadResult> read =
        (*client)->GetStrong(c.args.positional[0], c.args.positional[1], true);
    if (!read.ok()) return Fail(c.command, read.status());
    if (read->stale) {
      if (read->staleness_ms < 0) {
        std::fprintf(stderr,
                     "stale: this replica's local copy; how old is not known (it has no "
                     "consensus service, or never caught up with it)\n");
      } else {
        std::fprintf(stderr, "stale: this replica's local copy, up to %lld ms old\n",
                     static_cast<long long>(read->staleness_ms));
      }
    }
    found = std::move(read->record);
  } else {
    absl::StatusOr<std::unique_ptr<Backend>> backend = c.OpenBackend();
    if (!backend.ok()) return Fail(c.command, backend.status());
    absl::StatusOr<std::optional<Record>> got =
        (*backend)->Get(c.args.positional[0], c.args.positional[1]);
    if (!got.ok()) return Fail(c.command, got.status());
    found = std::move(*got);
  }
  const std::optional<Record>* record = &found;
  if (!record->has_value() || (*record)->deleted) {
    std::fprintf(stderr, "not found\n");
    return kExitFailure;
  }
  if (c.args.Has("json")) {
    std::printf("%s\n", RecordJson(**record).c_str());
  } else {
    WriteAll((*record)->value);
  }
  return kExitOk;
}

int RunDel(const Context& c) {
  if (absl::Status s = ExpectPositional(c, 2, 2, "KS KEY"); !s.ok()) {
    return Fail(c.command, s);
  }
  if (c.args.Has("if-absent")) {
    return UsageError(c.command, "del takes --if-version VERSION, not --if-absent");
  }
  absl::StatusOr<consensus::Precondition> pre = WritePrecondition(c);
  if (!pre.ok()) return Fail(c.command, pre.status());
  if (pre->kind != consensus::Precondition::Kind::kNone) {
    return RunConditionalWrite(c, *pre, std::nullopt);
  }
  absl::StatusOr<std::unique_ptr<Backend>> backend = c.OpenBackend();
  if (!backend.ok()) return Fail(c.command, backend.status());
  absl::StatusOr<Version> version =
      (*backend)->Delete(c.args.positional[0], c.args.positional[1]);
  if (!version.ok()) return Fail(c.command, version.status());
  std::printf("%s\n", version->ToString().c_str());
  return kExitOk;
}

int RunScan(const Context& c) {
  if (absl::Status s = ExpectPositional(c, 1, 1, "KS"); !s.ok()) {
    return Fail(c.command, s);
  }
  constexpr int64_t kNoLimit = int64_t{1} << 62;
  absl::StatusOr<int64_t> limit = c.args.GetInt("limit", kNoLimit, 1, kNoLimit);
  if (!limit.ok()) return Fail(c.command, limit.status());
  ScanOptions page;
  page.prefix = c.args.Get("prefix").value_or("");
  page.start_after = c.args.Get("start-after").value_or("");
  page.include_tombstones = c.args.Has("tombstones");
  if (page.prefix.size() > kMaxKeyBytes) {
    return Fail(c.command, absl::InvalidArgumentError(absl::StrFormat(
                               "--prefix is %d bytes; the limit is %d",
                               page.prefix.size(), kMaxKeyBytes)));
  }
  absl::StatusOr<std::unique_ptr<Backend>> backend = c.OpenBackend();
  if (!backend.ok()) return Fail(c.command, backend.status());
  const bool json = c.args.Has("json");
  int64_t remaining = *limit;
  // Pages of at most 1000 records, so a large keyspace streams out.
  for (int64_t pages = 0; remaining > 0 && pages < kNoLimit; ++pages) {
    page.limit = static_cast<size_t>(std::min<int64_t>(remaining, 1000));
    absl::StatusOr<ScanResult> result = (*backend)->Scan(c.args.positional[0], page);
    if (!result.ok()) return Fail(c.command, result.status());
    for (const Record& r : result->records) {
      if (json) {
        std::printf("%s\n", RecordJson(r).c_str());
      } else if (r.deleted) {
        std::printf("%s\t(deleted)\n", EscapeText(r.key).c_str());
      } else {
        std::printf("%s\t%s\n", EscapeText(r.key).c_str(), EscapeText(r.value).c_str());
      }
    }
    remaining -= static_cast<int64_t>(result->records.size());
    if (!result->more || result->records.empty()) break;
    page.start_after = result->records.back().key;
  }
  return kExitOk;
}

int RunInfo(const Context& c) {
  if (absl::Status s = ExpectPositional(c, 0, 0, "no arguments"); !s.ok()) {
    return Fail(c.command, s);
  }
  absl::StatusOr<std::unique_ptr<Backend>> backend = c.OpenBackend();
  if (!backend.ok()) return Fail(c.command, backend.status());
  auto info = (*backend)->Info();
  if (!info.ok()) return Fail(c.command, info.status());
  if (c.args.Has("json")) {
    std::printf("{%s}\n", FactsJsonMembers(*info).c_str());
    return kExitOk;
  }
  for (const auto& [name, value] : *info) {
    std::printf("%s: %s\n", name.c_str(), value.c_str());
  }
  return kExitOk;
}

}  // namespace

const std::vector<Command>& DataCommands() {
  static const auto* commands = new std::vector<Command>{
      {"put", "KS KEY VALUE [--if-version VERSION | --if-absent]",
       "write VALUE under KEY in keyspace KS",
       "VALUE '-' reads the value from stdin. Prints the version assigned once\n"
       "the write is durable.\n"
       "Limits: KS matches [a-z0-9][a-z0-9._-]{0,63}; KEY is 1..400 bytes;\n"
       "VALUE is at most 4 MiB (or the server's --max-value-bytes).\n"
       "In a strong keyspace (see `peerkv keyspace`) the write goes through the\n"
       "server's consensus service and is linearizable; compare-and-set:\n"
       "  --if-version VERSION  write only if KEY's current version is VERSION\n"
       "                        (as put prints it: MILLIS.LOGICAL@ORIGIN)\n"
       "  --if-absent           write only if KEY is absent or deleted\n"
       "A failed precondition exits 1 naming the current version; a server that\n"
       "cannot reach its consensus service answers unavailable within 2 s.\n",
       {.with_value = {"if-version"}, .switches = {"if-absent"}}, RunPut},
      {"get", "KS KEY [--json] [--stale-ok]", "print the value of KEY",
       "Prints the raw value on stdout (no newline added). Exits 1 with\n"
       "'not found' on stderr if KEY was never written or is deleted.\n"
       "In a strong keyspace the read is linearizable (asks the consensus\n"
       "service) and fails with unavailable when it cannot be reached.\n"
       "  --json       print keyspace, key, value, version and seq as one JSON line\n"
       "  --stale-ok   serve the server's local copy without asking; stderr says\n"
       "               'stale: ... up to N ms old' (N: time since it last had every\n"
       "               committed write)\n",
       {.switches = {"json", "stale-ok"}}, RunGet},
      {"del", "KS KEY [--if-version VERSION]", "delete KEY (writes a tombstone)",
       "Prints the version of the tombstone. Deleting a missing key succeeds:\n"
       "the tombstone still wins over older writes arriving from peers.\n"
       "  --if-version VERSION  (strong keyspaces) delete only if KEY's current\n"
       "                        version is VERSION\n",
       {.with_value = {"if-version"}}, RunDel},
      {"scan", "KS [--prefix P] [--limit N] [--start-after K] [--tombstones] [--json]",
       "list records of KS in key order",
       "Prints KEY<TAB>VALUE per line (control bytes escaped as \\xNN), or one\n"
       "JSON object per line with --json (keys and values that are not UTF-8\n"
       "appear base64-encoded as key_b64/value_b64).\n"
       "  --prefix P        only keys starting with P\n"
       "  --limit N         at most N records (default: all)\n"
       "  --start-after K   only keys after K (to continue a previous scan)\n"
       "  --tombstones      include deleted keys\n",
       {.with_value = {"prefix", "limit", "start-after"}, .switches = {"json", "tombstones"}},
       RunScan},
      {"info", "[--json]", "show replica id, incarnation, record counts, max seq, size on disk",
       "Prints NAME: VALUE per line, or with --json one JSON object (integers\n"
       "as numbers) on one line.\n",
       {.switches = {"json"}}, RunInfo},
  };
  return *commands;
}

}  // namespace peerkv::cli
