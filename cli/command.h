// cli/command.h: the shape of a peerkv subcommand and what every command
// receives: its parsed arguments and a way to reach the replica named by
// the global flags. Exit codes: 0 success, 1 failure or not found, 2 bad
// input (usage, or a value outside a limit).
#ifndef PEERKV_CLI_COMMAND_H_
#define PEERKV_CLI_COMMAND_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cli/args.h"
#include "cli/backend.h"

namespace peerkv::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// Where `peerkv serve` listens by default, and where commands look for a
// server when neither --data nor --server is given.
inline constexpr char kDefaultServer[] = "127.0.0.1:7700";
inline constexpr char kDefaultDataDir[] = "./peerkv-data";

// What `peerkv --version` prints first.
inline constexpr char kPeerkvVersion[] = "0.5.0";

// Which of the global flags a command takes: the store in a data directory
// (--data), a running server (--server), either, or neither (demo). Its
// usage line lists only those.
enum class Target { kEither, kData, kServer, kNone };

struct Context {
  std::string command;
  Args args;
  // The replica the global flags name: --data DIR opens it embedded,
  // otherwise --server HOST:PORT (default 127.0.0.1:7700) connects to it.
  absl::StatusOr<std::unique_ptr<Backend>> OpenBackend() const;
  // --server, or the default.
  std::string ServerAddress() const;
};

// The Unix socket a server holding data directory `dir` listens on.
inline constexpr char kLocalSocketName[] = "peerkv.sock";
std::string LocalSocketPath(const std::string& dir);
// That socket as a path short enough for sun_path (107 bytes): the path
// itself, or the same file through /proc/self/fd/N of `dir` (opened for the
// life of the process) when it is longer.
std::string ShortLocalSocketPath(const std::string& dir);
// Any socket path made short enough the same way (for --server unix:PATH).
std::string ShortSocketPath(const std::string& path);
// Whether a socket file is at LocalSocketPath(dir).
bool HasLocalSocket(const std::string& dir);

struct Command {
  std::string name;
  // "put KS KEY VALUE": the arguments after the command name.
  std::string synopsis;
  // One line for the command list.
  std::string summary;
  // The rest of `peerkv COMMAND --help`.
  std::string details;
  FlagSpec flags;
  int (*run)(const Context& context);
  Target target = Target::kEither;
};

// Prints "peerkv COMMAND: message" on stderr and returns the exit code for
// `status`: 2 for InvalidArgument, 1 otherwise.
int Fail(const std::string& command, const absl::Status& status);
// Same, for a usage error in the arguments.
int UsageError(const std::string& command, const std::string& message);
// Checks the number of positional arguments; the error names the synopsis.
absl::Status ExpectPositional(const Context& context, size_t min, size_t max,
                              const std::string& synopsis);

// The commands, in help order.
const std::vector<Command>& DataCommands();
const std::vector<Command>& ServerCommands();
const std::vector<Command>& IdentityCommands();
// `peerkv group` and `peerkv policy` (cli/policy_commands.cc).
const std::vector<Command>& PolicyCommands();
const Command& DemoCommand();
const Command& KeyspaceCommand();
// `peerkv token` (cli/token_command.cc).
const Command& TokenCommand();
const Command& ConflictsCommand();
// `peerkv compact [KS]` (cli/compact_command.cc).
const Command& CompactCommand();
// `peerkv demo strong` (cli/demo_strong.cc).
int RunStrongDemo(const Context& context);
// `peerkv demo blog` (cli/demo_blog.cc).
int RunBlogDemo(const Context& context);

}  // namespace peerkv::cli

#endif  // PEERKV_CLI_COMMAND_H_
