// cli/keyspace_command.cc: `peerkv keyspace mode KS strong|lww` and
// `peerkv keyspace list`, against a running server.
#include <cstdio>

#include "absl/strings/str_format.h"
#include "cli/command.h"
#include "consensus/strong_keyspaces.h"
#include "rpc/client.h"

namespace peerkv::cli {
namespace {

int RunKeyspace(const Context& c) {
  const std::vector<std::string>& p = c.args.positional;
  if (p.empty() || (p[0] != "mode" && p[0] != "list")) {
    return UsageError(c.command, "give `keyspace mode KS strong|lww` or `keyspace list`");
  }
  if (p[0] == "mode" && p.size() != 3) {
    return UsageError(c.command, "keyspace mode takes KS and strong|lww");
  }
  if (p[0] == "list" && p.size() != 1) {
    return UsageError(c.command, "keyspace list takes no arguments");
  }
  if (c.args.Has("data")) {
    return UsageError(c.command,
                      "keyspace needs a running server (--server HOST:PORT): modes are "
                      "switched through its consensus service");
  }
  if (p[0] == "mode") {
    if (absl::StatusOr<consensus::Mode> mode = consensus::ParseMode(p[2], "mode"); !mode.ok()) {
      return Fail(c.command, mode.status());
    }
  }
  absl::StatusOr<std::unique_ptr<rpc::Client>> client =
      rpc::Client::Connect(rpc::ClientOptions{.address = c.ServerAddress()});
  if (!client.ok()) return Fail(c.command, client.status());
  if (p[0] == "mode") {
    absl::StatusOr<Version> since = (*client)->SetMode(p[1], p[2]);
    if (!since.ok()) return Fail(c.command, since.status());
    std::printf("%s %s since %s\n", p[1].c_str(), p[2].c_str(),
                since->IsValid() ? since->ToString().c_str() : "always");
    return kExitOk;
  }
  absl::StatusOr<std::vector<rpc::KeyspaceModeInfo>> modes = (*client)->ListModes();
  if (!modes.ok()) return Fail(c.command, modes.status());
  for (const rpc::KeyspaceModeInfo& m : *modes) {
    std::printf("%s\t%s\t%llu registers\t%s\t%u switches\n", m.keyspace.c_str(),
                m.strong ? "strong" : "lww", static_cast<unsigned long long>(m.registers),
                m.since.IsValid() ? m.since.ToString().c_str() : "-", m.switches);
  }
  return kExitOk;
}

}  // namespace

const Command& KeyspaceCommand() {
  static const auto* command = new Command{
      "keyspace", "mode KS strong|lww | list", "switch a keyspace's mode; list keyspaces",
      "  mode KS strong   KS's writes go through the server's consensus service\n"
      "                   (serve --etcd): linearizable, with compare-and-set\n"
      "                   (put --if-version/--if-absent, del --if-version)\n"
      "  mode KS lww      back to last-writer-wins; strong versions stay ordinary\n"
      "                   registers\n"
      "  list             every keyspace with its mode, the registers this server\n"
      "                   holds of it (deleted keys included), the last switch's\n"
      "                   version and how many switches\n"
      "                   (KEYSPACE<TAB>MODE<TAB>N registers<TAB>SINCE<TAB>N switches)\n"
      "The switch is online and is itself a committed write with a version V:\n"
      "lww writes with versions below V still merge everywhere; lww writes at or\n"
      "after V are refused by every replica (counted, logged once). Keyspaces\n"
      "starting with 'peerkv.' are reserved. At most 64 switches per keyspace.\n",
      {}, RunKeyspace, Target::kServer};
  return *command;
}

}  // namespace peerkv::cli
