// cli/command.cc: what every command shares: reaching the backend, and
// turning errors into one line on stderr and an exit code.
#include "cli/command.h"

#include <cstdio>

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
    return OpenEmbeddedBackend(*data);
  }
  return OpenRemoteBackend(ServerAddress());
}

std::string Context::ServerAddress() const {
  return args.Get("server").value_or(kDefaultServer);
}

int Fail(const std::string& command, const absl::Status& status) {
  const std::string prefix = command.empty() ? "peerkv" : "peerkv " + command;
  std::fprintf(stderr, "%s: %s\n", prefix.c_str(), std::string(status.message()).c_str());
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
