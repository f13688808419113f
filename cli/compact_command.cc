// cli/compact_command.cc: `peerkv compact [KS]`: a tombstone collection pass
// and a repack of the tables now (README "Tombstone collection"), over
// whichever backend the global flags name, and what they did.
#include <cstdio>

#include "absl/strings/str_format.h"
#include "cli/command.h"
#include "store/validation.h"

namespace peerkv::cli {
namespace {

int RunCompact(const Context& c) {
  if (absl::Status s = ExpectPositional(c, 0, 1, "[KS]"); !s.ok()) return Fail(c.command, s);
  const std::string keyspace = c.args.positional.empty() ? "" : c.args.positional[0];
  if (!keyspace.empty()) {
    if (absl::Status valid = ValidateKeyspace(keyspace); !valid.ok()) return Fail(c.command, valid);
  }
  absl::StatusOr<std::unique_ptr<Backend>> backend = c.OpenBackend();
  if (!backend.ok()) return Fail(c.command, backend.status());
  absl::StatusOr<CompactResult> done = (*backend)->Compact(keyspace);
  if (!done.ok()) return Fail(c.command, done.status());
  std::printf("tombstones collected: %llu%s\n",
              static_cast<unsigned long long>(done->tombstones_collected),
              keyspace.empty() ? "" : absl::StrFormat(" (keyspace %s)", keyspace).c_str());
  std::printf("log entries compacted: %llu\n",
              static_cast<unsigned long long>(done->log_entries_compacted));
  std::printf("entries repacked: %llu\n", static_cast<unsigned long long>(done->entries_copied));
  std::printf("pages in use: %llu before, %llu after\n",
              static_cast<unsigned long long>(done->pages_before),
              static_cast<unsigned long long>(done->pages_after));
  return kExitOk;
}

}  // namespace

const Command& CompactCommand() {
  static const auto* command = new Command{
      "compact", "[KS]", "collect tombstones and repack the tables now",
      "Runs a tombstone collection pass now, over KS's registers or, without\n"
      "KS, over every keyspace (the background pass runs every minute), then\n"
      "compacts the log and repacks the store's tables (records, log,\n"
      "ks_changes: shared by every keyspace) so their pages are full again;\n"
      "writes wait for the repack. Prints the tombstones\n"
      "collected, the log entries compacted, the entries repacked and the\n"
      "LMDB pages in use (used minus free, as mdb_stat -ef counts them)\n"
      "before and after. A tombstone is collected only under the rules of\n"
      "README \"Tombstone collection\" (old enough, acknowledged by every\n"
      "peer): `peerkv status` shows what holds the rest back. The data file\n"
      "does not shrink; freed pages are reused by later writes. On a server\n"
      "(--server) only for the local user; a call that takes longer than 30 s\n"
      "fails (DeadlineExceeded) while the server finishes it.\n",
      {}, RunCompact};
  return *command;
}

}  // namespace peerkv::cli
