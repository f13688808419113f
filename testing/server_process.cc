// testing/server_process.cc: starting and stopping `peerkv serve`.
#include "testing/server_process.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <signal.h>

#include <algorithm>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace peerkv::testing {

std::vector<std::string> ReplicaArgs(const std::string& name,
                                     const std::vector<std::string>& peers) {
  std::vector<std::string> args = {"--replica-name", name, "--gossip-interval-ms", "100"};
  for (const std::string& p : peers) {
    args.push_back("--peer");
    args.push_back(p);
  }
  return args;
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const std::string& data_dir, const std::vector<std::string>& extra_args,
    const ProcessOptions& options) {
  std::vector<std::string> argv = {RunfilePath("cli/peerkv"), "serve", "--data", data_dir};
  // A free port, unless the caller names one (a restart at the same address).
  if (std::find(extra_args.begin(), extra_args.end(), "--listen") == extra_args.end()) {
    argv.insert(argv.end(), {"--listen", "127.0.0.1:0"});
  }
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

int ConnectTcp(const std::string& address) {
  const std::vector<std::string> parts = absl::StrSplit(address, ':');
  if (parts.size() != 2) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(parts[1])));
  if (inet_pton(AF_INET, parts[0].c_str(), &addr.sin_addr) != 1) return -1;
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
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
