// testing/server_process.cc: starting and stopping `peerkv serve`.
#include "testing/server_process.h"

#include <dirent.h>
#include <signal.h>

#include "absl/strings/str_format.h"

namespace peerkv::testing {

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const std::string& data_dir, const std::vector<std::string>& extra_args,
    const ProcessOptions& options) {
  std::vector<std::string> argv = {RunfilePath("cli/peerkv"), "serve", "--data", data_dir,
                                   "--listen", "127.0.0.1:0"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  auto server = std::unique_ptr<ServerProcess>(new ServerProcess());
  server->process_ = std::make_unique<Process>(argv, options);
  const std::string marker = "listening on ";
  std::optional<std::string> log =
      server->process_->WaitForOutput(marker, std::chrono::seconds(30));
  if (!log.has_value()) {
    return absl::UnavailableError(absl::StrFormat(
        "peerkv serve did not start; it printed: %s", server->process_->Output()));
  }
  const size_t at = log->find(marker) + marker.size();
  server->address_ = log->substr(at, log->find(',', at) - at);
  return server;
}

int ServerProcess::Stop(int signal) {
  process_->Signal(signal);
  return process_->Wait(std::chrono::seconds(30)).value_or(-1);
}

int OpenFileDescriptors(pid_t pid) {
  const std::string path = absl::StrFormat("/proc/%d/fd", pid);
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) return -1;
  int count = 0;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(dir);
  return count;
}

}  // namespace peerkv::testing
