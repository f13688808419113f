// cli/conflicts_command.cc: `peerkv conflicts KS [--key K] [--json]`,
// `peerkv conflicts restore KS KEY VERSION` and `peerkv conflicts clear KS`:
// the conflict journal (README "Conflict journal"), over whichever backend
// the global flags name.
#include <cstdio>
#include <ctime>

#include "absl/strings/str_format.h"
#include "cli/command.h"
#include "cli/text.h"
#include "store/validation.h"

namespace peerkv::cli {
namespace {

std::string When(int64_t unix_ms) {
  const std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string EntryJson(const ConflictEntry& e) {
  std::string out = "{";
  out += JsonBytesField("keyspace", e.keyspace);
  out += ",";
  out += JsonBytesField("key", e.key);
  out += absl::StrFormat(",\"loser\":\"%s\"", e.loser.ToString());
  if (e.loser_deleted) {
    out += ",\"loser_deleted\":true";
  } else {
    out += ",";
    out += JsonBytesField("loser_value", e.loser_value);
  }
  out += absl::StrFormat(",\"winner\":\"%s\",\"when_ms\":%d}", e.winner.ToString(), e.when_ms);
  return out;
}

int RunConflicts(const Context& c) {
  const std::vector<std::string>& p = c.args.positional;
  const bool restore = !p.empty() && p[0] == "restore";
  const bool clear = !p.empty() && p[0] == "clear";
  if (restore && p.size() != 4) {
    return UsageError(c.command, "conflicts restore takes KS KEY VERSION");
  }
  if (clear && p.size() != 2) return UsageError(c.command, "conflicts clear takes KS");
  if (!restore && !clear && p.size() != 1) {
    return UsageError(c.command,
                      "give `conflicts KS [--key K] [--json]`, `conflicts restore KS KEY "
                      "VERSION` or `conflicts clear KS`");
  }
  if ((restore || clear) && (c.args.Has("json") || c.args.Has("key"))) {
    return UsageError(c.command, "--key and --json are for listing only");
  }
  const std::string& keyspace = (restore || clear) ? p[1] : p[0];
  if (absl::Status valid = ValidateKeyspace(keyspace); !valid.ok()) {
    return Fail(c.command, valid);
  }
  std::optional<Version> version;
  if (restore) {
    if (absl::Status valid = ValidateKey(p[2]); !valid.ok()) return Fail(c.command, valid);
    absl::StatusOr<Version> v = ParseVersion(p[3], "VERSION");
    if (!v.ok()) return Fail(c.command, v.status());
    version = *v;
  }
  std::optional<std::string> key = c.args.Get("key");
  if (key.has_value()) {
    if (absl::Status valid = ValidateKey(*key); !valid.ok()) {
      return Fail(c.command, absl::InvalidArgumentError(
                                 absl::StrFormat("--key: %s", valid.message())));
    }
  }
  absl::StatusOr<std::unique_ptr<Backend>> backend = c.OpenBackend();
  if (!backend.ok()) return Fail(c.command, backend.status());
  if (restore) {
    absl::StatusOr<Version> written = (*backend)->RestoreConflict(keyspace, p[2], *version);
    if (!written.ok()) return Fail(c.command, written.status());
    std::printf("%s\n", written->ToString().c_str());
    return kExitOk;
  }
  if (clear) {
    absl::StatusOr<uint64_t> cleared = (*backend)->ClearConflicts(keyspace);
    if (!cleared.ok()) return Fail(c.command, cleared.status());
    std::printf("cleared %llu\n", static_cast<unsigned long long>(*cleared));
    return kExitOk;
  }
  absl::StatusOr<ConflictList> list =
      (*backend)->ListConflicts(keyspace, key.has_value() ? std::optional<std::string_view>(*key)
                                                          : std::nullopt);
  if (!list.ok()) return Fail(c.command, list.status());
  const bool json = c.args.Has("json");
  for (const ConflictEntry& e : list->entries) {
    if (json) {
      std::printf("%s\n", EntryJson(e).c_str());
    } else {
      std::printf("%s\t%s\t%s\tlost to %s\t%s\n", EscapeText(e.key).c_str(),
                  e.loser.ToString().c_str(),
                  e.loser_deleted ? "(deleted)" : EscapeText(e.loser_value).c_str(),
                  e.winner.ToString().c_str(), When(e.when_ms).c_str());
    }
  }
  if (list->more) {
    std::fprintf(stderr, "peerkv conflicts: more entries than one answer holds; narrow with --key\n");
  }
  return kExitOk;
}

}  // namespace

const Command& ConflictsCommand() {
  static const auto* command = new Command{
      "conflicts", "KS [--key K] [--json] | restore KS KEY VERSION | clear KS",
      "list, restore or clear values that lost to a concurrent write",
      "When two replicas write one key without having seen each other's write,\n"
      "the later version wins everywhere (last writer wins) and the other one\n"
      "is kept in KS's conflict journal instead of vanishing. A write that had\n"
      "seen the value it replaces is no conflict.\n"
      "  KS                 the journal of KS, oldest first, one line each:\n"
      "                     KEY<TAB>LOSER_VERSION<TAB>VALUE<TAB>lost to WINNER<TAB>WHEN\n"
      "                     (VALUE '(deleted)' for a losing delete)\n"
      "  --key K            only the entries of key K\n"
      "  --json             one JSON object per line (keyspace, key, loser,\n"
      "                     loser_value or loser_deleted, winner, when_ms)\n"
      "  restore KS KEY VERSION\n"
      "                     write the loser VERSION of KEY back as a new write\n"
      "                     (prints its version) and drop it from the journal;\n"
      "                     exits 1 'not found' if the journal does not hold it\n"
      "  clear KS           drop every entry of KS's journal\n"
      "Each replica keeps its own journal, bounded per keyspace (serve\n"
      "--max-conflict-entries, default 1000, and --max-conflict-bytes, default\n"
      "16 MiB); over a bound the oldest entries are dropped and counted in\n"
      "`peerkv status`.\n",
      {.with_value = {"key"}, .switches = {"json"}}, RunConflicts};
  return *command;
}

}  // namespace peerkv::cli
