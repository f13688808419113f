// cli/main.cc: the peerkv command: global flags, dispatch to subcommands,
// and help. The composition root: the only place that decides which
// backend a command talks to.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "cli/command.h"
#include "replication/transport.h"
#include "store/codec.h"
#include "cli/identity.h"

namespace peerkv::cli {
namespace {

const FlagSpec kGlobalFlags{.with_value = {"data", "server", "identity"},
                            .switches = {"help", "version"}};

std::vector<const Command*> AllCommands() {
  std::vector<const Command*> all;
  for (const Command& c : DataCommands()) all.push_back(&c);
  for (const Command& c : ServerCommands()) all.push_back(&c);
  for (const Command& c : IdentityCommands()) all.push_back(&c);
  for (const Command& c : PolicyCommands()) all.push_back(&c);
  all.push_back(&KeyspaceCommand());
  all.push_back(&TokenCommand());
  all.push_back(&ConflictsCommand());
  all.push_back(&CompactCommand());
  all.push_back(&DemoCommand());
  return all;
}

void PrintUsage(std::FILE* out) {
  std::fprintf(out,
               "peerkv: a replicated last-writer-wins key-value store.\n\n"
               "Usage: peerkv [--data DIR | --server HOST:PORT] COMMAND [ARGS...]\n\n"
               "Global flags:\n"
               "  --server HOST:PORT  talk to a running server over TLS (needs --identity), or\n"
               "                      unix:PATH; default: the server holding ./peerkv-data\n"
               "                      through its socket there, else %s\n"
               "  --data DIR          use the store in DIR directly (embedded mode;\n"
               "                      created if missing), or, when a server holds DIR,\n"
               "                      that server through its socket DIR/peerkv.sock\n"
               "  --identity DIR      the key --server HOST:PORT connects with (TLS): the\n"
               "                      device key of DIR (or $PEERKV_IDENTITY), a device\n"
               "                      added with 'device add'; the server must be a\n"
               "                      device of DIR's user\n"
               "  --help, -h          this text; 'peerkv help COMMAND' or\n"
               "                      'peerkv COMMAND --help' for one command\n"
               "  --version           the version of peerkv, its store format and protocol\n\n"
               "Commands:\n",
               kDefaultServer);
  for (const Command* c : AllCommands()) {
    std::fprintf(out, "  %-9s %s\n", c->name.c_str(), c->summary.c_str());
  }
}

// The global flags `c` takes, as its usage line shows them.
const char* TargetFlags(const Command& c) {
  switch (c.target) {
    case Target::kData:
      return "[--data DIR]";
    case Target::kServer:
      return "[--server HOST:PORT]";
    case Target::kNone:
      return "";
    case Target::kEither:
      break;
  }
  return "[--data DIR | --server HOST:PORT]";
}

void PrintCommandHelp(const Command& c) {
  const std::string target = TargetFlags(c);
  std::printf("Usage: peerkv %s%s%s%s%s\n\n%s.\n", target.c_str(), target.empty() ? "" : " ",
              c.name.c_str(),
              c.synopsis.empty() ? "" : " ", c.synopsis.c_str(), c.summary.c_str());
  if (!c.details.empty()) std::printf("\n%s", c.details.c_str());
}

FlagSpec Merge(const FlagSpec& a, const FlagSpec& b) {
  FlagSpec merged = a;
  merged.with_value.insert(b.with_value.begin(), b.with_value.end());
  merged.switches.insert(b.switches.begin(), b.switches.end());
  merged.repeatable.insert(b.repeatable.begin(), b.repeatable.end());
  return merged;
}

void PrintVersion() {
  std::printf("peerkv %s (store format %llu, replication protocol %u)\n", kPeerkvVersion,
              static_cast<unsigned long long>(codec::kFormatVersion), replication::kProtocolVersion);
}

const Command* FindCommand(const std::string& name) {
  for (const Command* c : AllCommands()) {
    if (c->name == name) return c;
  }
  return nullptr;
}

int Main(int argc, char** argv) {
  std::vector<std::string> raw(argv + 1, argv + argc);
  // -h is --help, wherever it stands (no command takes a flag -h).
  for (std::string& arg : raw) {
    if (arg == "--") break;
    if (arg == "-h") arg = "--help";
  }
  // The command is the first argument that is neither a global flag nor the
  // value of one.
  size_t command_index = raw.size();
  for (size_t i = 0; i < raw.size(); ++i) {
    const std::string& arg = raw[i];
    if (arg.rfind("--", 0) != 0) {
      command_index = i;
      break;
    }
    const std::string name = arg.substr(2, arg.find('=') - 2);
    if (kGlobalFlags.with_value.count(name) > 0 && arg.find('=') == std::string::npos) {
      ++i;  // skip the flag's value
    }
  }
  if (command_index == raw.size()) {
    absl::StatusOr<Args> globals = ParseArgs(raw, kGlobalFlags);
    if (globals.ok() && globals->Has("help")) {
      PrintUsage(stdout);
      return kExitOk;
    }
    if (globals.ok() && globals->Has("version")) {
      PrintVersion();
      return kExitOk;
    }
    if (!globals.ok()) return UsageError("", std::string(globals.status().message()));
    PrintUsage(stderr);
    return kExitUsage;
  }
  const std::string name = raw[command_index];
  if (name == "help") {
    // `peerkv help` lists the commands; `peerkv help CMD` is `CMD --help`.
    if (command_index + 1 == raw.size()) {
      PrintUsage(stdout);
      return kExitOk;
    }
    if (command_index + 2 != raw.size()) {
      return UsageError("help", "give one command: peerkv help COMMAND");
    }
    const Command* topic = FindCommand(raw[command_index + 1]);
    if (topic == nullptr) {
      return UsageError("help", absl::StrFormat("unknown command '%s'; see peerkv --help",
                                                raw[command_index + 1]));
    }
    PrintCommandHelp(*topic);
    return kExitOk;
  }
  const Command* command = FindCommand(name);
  if (command == nullptr) {
    return UsageError("", absl::StrFormat("unknown command '%s'; see peerkv --help", name));
  }
  std::vector<std::string> rest(raw.begin(), raw.begin() + command_index);
  rest.insert(rest.end(), raw.begin() + command_index + 1, raw.end());
  absl::StatusOr<Args> args = ParseArgs(rest, Merge(kGlobalFlags, command->flags));
  if (!args.ok()) return UsageError(name, std::string(args.status().message()));
  if (args->Has("help")) {
    PrintCommandHelp(*command);
    return kExitOk;
  }
  if (args->Has("version")) {
    PrintVersion();
    return kExitOk;
  }
  if (command->target == Target::kNone && (args->Has("data") || args->Has("server"))) {
    return UsageError(name, absl::StrFormat("%s takes neither --data nor --server", name));
  }
  // The key of this process's TCP clients.
  std::optional<std::string> identity = args->Get("identity");
  if (!identity.has_value()) {
    if (const char* env = std::getenv("PEERKV_IDENTITY"); env != nullptr && *env != '\0') {
      identity = env;
    }
  }
  if (identity.has_value()) {
    if (absl::Status installed = InstallClientIdentity(*identity); !installed.ok()) {
      return Fail(name, installed);
    }
  }
  Context context{name, std::move(*args)};
  return command->run(context);
}

}  // namespace

}  // namespace peerkv::cli

int main(int argc, char** argv) { return peerkv::cli::Main(argc, argv); }
