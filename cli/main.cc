// cli/main.cc: the peerkv command: global flags, dispatch to subcommands,
// and help. The composition root: the only place that decides which
// backend a command talks to.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "cli/command.h"
#include "cli/identity.h"

namespace peerkv::cli {
namespace {

const FlagSpec kGlobalFlags{.with_value = {"data", "server", "identity"}, .switches = {"help"}};

std::vector<const Command*> AllCommands() {
  std::vector<const Command*> all;
  for (const Command& c : DataCommands()) all.push_back(&c);
  for (const Command& c : ServerCommands()) all.push_back(&c);
  for (const Command& c : IdentityCommands()) all.push_back(&c);
  all.push_back(&KeyspaceCommand());
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
               "                      created if missing; fails if a server has it open)\n"
               "  --identity DIR      the key --server HOST:PORT connects with (TLS): the\n"
               "                      device key of DIR (or $PEERKV_IDENTITY), a device\n"
               "                      added with 'device add'; the server must be a\n"
               "                      device of DIR's user\n"
               "  --help              this text; 'peerkv COMMAND --help' for one command\n\n"
               "Commands:\n",
               kDefaultServer);
  for (const Command* c : AllCommands()) {
    std::fprintf(out, "  %-6s %s\n", c->name.c_str(), c->summary.c_str());
  }
}

void PrintCommandHelp(const Command& c) {
  std::printf("Usage: peerkv [--data DIR | --server HOST:PORT] %s %s\n\n%s.\n", c.name.c_str(),
              c.synopsis.c_str(), c.summary.c_str());
  if (!c.details.empty()) std::printf("\n%s", c.details.c_str());
}

FlagSpec Merge(const FlagSpec& a, const FlagSpec& b) {
  FlagSpec merged = a;
  merged.with_value.insert(b.with_value.begin(), b.with_value.end());
  merged.switches.insert(b.switches.begin(), b.switches.end());
  merged.repeatable.insert(b.repeatable.begin(), b.repeatable.end());
  return merged;
}

int Main(int argc, char** argv) {
  std::vector<std::string> raw(argv + 1, argv + argc);
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
    if (!globals.ok()) return UsageError("", std::string(globals.status().message()));
    PrintUsage(stderr);
    return kExitUsage;
  }
  const std::string name = raw[command_index];
  if (name == "help") {
    PrintUsage(stdout);
    return kExitOk;
  }
  const Command* command = nullptr;
  for (const Command* c : AllCommands()) {
    if (c->name == name) command = c;
  }
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
