// cli/command.cc: what every command shares: reaching the backend, and
// turning errors into one line on stderr and an exit code.
#include "cli/command.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace peerkv::cli {

absl::StatusOr<std::unique_ptr<Backend>> Context::OpenBackend() const {
  const std::optional<std::string> data = args.Get("data");
  const std::optional<std::string> server = args.Get("server");
  if (data.has_value() && server.has_value()) {
    return absl::InvalidArgumentError("give --data DIR or --server HOST:PORT, not both");
  }
  if (data.has_value()) {
    if (data->empty()) return absl::InvalidArgumentError("--data must not be empty");
    absl::StatusOr<std::unique_ptr<Backend>> embedded = OpenEmbeddedBackend(*data);
    // A server holds DIR: talk to it over its socket in DIR.
    if (absl::IsFailedPrecondition(embedded.status()) &&
        embedded.status().message().find("in use by another process") !=
            absl::string_view::npos &&
        HasLocalSocket(*data)) {
      return OpenRemoteBackend("unix:" + ShortLocalSocketPath(*data));
    }
    return embedded;
  }
  return OpenRemoteBackend(ServerAddress());
}

std::string LocalSocketPath(const std::string& dir) {
  return dir + "/" + kLocalSocketName;
}

std::string ShortSocketPath(const std::string& path) {
  constexpr size_t kMaxSunPath = sizeof(sockaddr_un{}.sun_path) - 1;
  const size_t slash = path.rfind('/');
  if (path.size() <= kMaxSunPath || slash == std::string::npos) return path;
  // Left open: the name stays valid for the life of the process.
  const std::string dir = slash == 0 ? "/" : path.substr(0, slash);
  const int fd = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return path;  // connect/listen then fails naming it
  return absl::StrFormat("/proc/self/fd/%d/%s", fd, path.substr(slash + 1));
}

std::string ShortLocalSocketPath(const std::string& dir) {
  return ShortSocketPath(LocalSocketPath(dir));
}

bool HasLocalSocket(const std::string& dir) {
  struct stat st;
  return ::stat(LocalSocketPath(dir).c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

std::string Context::ServerAddress() const {
  const std::optional<std::string> server = args.Get("server");
  // No --server: a server holding the default data directory is reached
  // through its local socket (TCP needs an identity, --identity DIR).
  if (!server.has_value()) {
    if (HasLocalSocket(kDefaultDataDir)) return "unix:" + ShortLocalSocketPath(kDefaultDataDir);
    return kDefaultServer;
  }
  constexpr std::string_view kUnix = "unix:";
  if (server->rfind(kUnix, 0) == 0) {
    return "unix:" + ShortSocketPath(server->substr(kUnix.size()));
  }
  return *server;
}

// What a user whose server is not there needs to hear: that it is not
// there, and how to start one or name another.
std::string WithStartHint(const absl::Status& status) {
  std::string message(status.message());
  const bool no_server =
      absl::IsUnavailable(status) && message.find("peerkv server at") != std::string::npos &&
      (message.find("Connection refused") != std::string::npos ||
       message.find("No such file or directory") != std::string::npos);
  if (no_server) {
    absl::StrAppend(&message,
                    "; no server is listening there: start one with 'peerkv serve' (default "
                    "127.0.0.1:7700, data ./peerkv-data), name another with --server "
                    "HOST:PORT, or open a data directory directly with --data DIR");
  }
  return message;
}

int Fail(const std::string& command, const absl::Status& status) {
  const std::string prefix = command.empty() ? "peerkv" : "peerkv " + command;
  std::fprintf(stderr, "%s: %s\n", prefix.c_str(), WithStartHint(status).c_str());
  return status.code() == absl::StatusCode::kInvalidArgument ? kExitUsage : kExitFailure;
}

int UsageError(const std::string& command, const std::string& message) {
  return Fail(command, absl::InvalidArgumentError(message));
}

absl::Status ExpectPositional(const Context& context, size_t min, size_t max,
                              const std::string& synopsis) {
  const size_t n = context.args.positional.size();
  if (n >= min && n <= max) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat(
      "expected %s, got %d argument%s (see peerkv %s --help)", synopsis, n,
      n == 1 ? "" : "s", context.command));
}

}  // namespace peerkv::cli
