// cli/data_commands.cc: put, get, del, scan and info, over whichever backend
// the global flags name.
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "absl/strings/str_format.h"
#include "cli/command.h"
#include "cli/text.h"
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

int RunPut(const Context& c) {
  if (absl::Status s = ExpectPositional(c, 3, 3, "KS KEY VALUE"); !s.ok()) {
    return Fail(c.command, s);
  }
  absl::StatusOr<std::unique_ptr<Backend>> backend = c.OpenBackend();
  if (!backend.ok()) return Fail(c.command, backend.status());
  std::string value = c.args.positional[2];
  if (value == "-") {
    absl::StatusOr<std::string> in = ReadStdin((*backend)->max_value_bytes());
    if (!in.ok()) return Fail(c.command, in.status());
    value = std::move(*in);
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
  absl::StatusOr<std::unique_ptr<Backend>> backend = c.OpenBackend();
  if (!backend.ok()) return Fail(c.command, backend.status());
  absl::StatusOr<std::optional<Record>> record =
      (*backend)->Get(c.args.positional[0], c.args.positional[1]);
  if (!record.ok()) return Fail(c.command, record.status());
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
  for (const auto& [name, value] : *info) {
    std::printf("%s: %s\n", name.c_str(), value.c_str());
  }
  return kExitOk;
}

}  // namespace

const std::vector<Command>& DataCommands() {
  static const auto* commands = new std::vector<Command>{
      {"put", "KS KEY VALUE", "write VALUE under KEY in keyspace KS",
       "VALUE '-' reads the value from stdin. Prints the version assigned once\n"
       "the write is durable.\n"
       "Limits: KS matches [a-z0-9][a-z0-9._-]{0,63}; KEY is 1..400 bytes;\n"
       "VALUE is at most 4 MiB (or the server's --max-value-bytes).\n",
       {}, RunPut},
      {"get", "KS KEY [--json]", "print the value of KEY",
       "Prints the raw value on stdout (no newline added). Exits 1 with\n"
       "'not found' on stderr if KEY was never written or is deleted.\n"
       "  --json   print keyspace, key, value, version and seq as one JSON line\n",
       {.switches = {"json"}}, RunGet},
      {"del", "KS KEY", "delete KEY (writes a tombstone)",
       "Prints the version of the tombstone. Deleting a missing key succeeds:\n"
       "the tombstone still wins over older writes arriving from peers.\n",
       {}, RunDel},
      {"scan", "KS [--prefix P] [--limit N] [--start-after K] [--tombstones] [--json]",
       "list records of KS in key order",
       "Prints KEY<TAB>VALUE per line (control bytes escaped as \\xNN), or one\n"
       "JSON object per line with --json (keys and values that are not UTF-8\n"
       "appear base64-encoded as key_base64/value_base64).\n"
       "  --prefix P        only keys starting with P\n"
       "  --limit N         at most N records (default: all)\n"
       "  --start-after K   only keys after K (to continue a previous scan)\n"
       "  --tombstones      include deleted keys\n",
       {.with_value = {"prefix", "limit", "start-after"}, .switches = {"json", "tombstones"}},
       RunScan},
      {"info", "", "show replica id, incarnation, record counts, max seq, size on disk",
       "", {}, RunInfo},
  };
  return *commands;
}

}  // namespace peerkv::cli
