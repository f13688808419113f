// testing/server_process.cc: starting and stopping `peerkv serve`.
#include "testing/server_process.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <signal.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "auth/identity.h"
#include "auth/ids.h"
#include "rpc/client.h"

namespace peerkv::testing {
namespace {

// serve's default user name, so the test user looks like a fresh serve's.
constexpr char kTestUserName[] = "me";

struct TestUser {
  std::unique_ptr<auth::SigningKey> key;
  std::string client_dir;
};

TestUser& TheTestUser() {
  static TestUser* user = [] {
    auto* u = new TestUser();
    u->key = auth::SigningKey::Generate();
    const char* tmp = std::getenv("TEST_TMPDIR");
    std::string pattern = absl::StrFormat("%s/peerkv-test-user.XXXXXX", tmp ? tmp : "/tmp");
    if (::mkdtemp(pattern.data()) == nullptr) std::abort();
    u->client_dir = pattern + "/client";
    absl::StatusOr<std::unique_ptr<auth::Identity>> client =
        auth::Identity::CreateDeviceOf(u->client_dir, *u->key, kTestUserName);
    if (!client.ok()) {
      std::fprintf(stderr, "test user: %s\n", std::string(client.status().message()).c_str());
      std::abort();
    }
    absl::StatusOr<std::unique_ptr<auth::SigningKey>> device =
        auth::SigningKey::FromSeed((*client)->device_key().seed());
    absl::StatusOr<std::string> cert =
        (*client)->IssueOwnCertificate("test-client", absl::ToUnixMillis(absl::Now()));
    if (!device.ok() || !cert.ok()) std::abort();
    rpc::SetDefaultClientTls(rpc::TlsIdentity{std::move(*device), *cert}, u->key->public_key());
    ::setenv("PEERKV_IDENTITY", u->client_dir.c_str(), 1);
    return u;
  }();
  return *user;
}

bool HasIdentity(const std::string& data_dir) {
  struct stat st;
  return ::stat((data_dir + "/keys").c_str(), &st) == 0;
}

}  // namespace

void UseTestUser() { TheTestUser(); }

std::string TestIdentityDir() { return TheTestUser().client_dir; }

std::string TestUserId() { return auth::UserId(TheTestUser().key->public_key()); }

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
  TestUser& user = TheTestUser();
  bool own_user = false;
  for (const std::string& a : extra_args) own_user = own_user || a == "--user";
  if (!own_user && !HasIdentity(data_dir)) {
    absl::StatusOr<std::unique_ptr<auth::Identity>> device =
        auth::Identity::CreateDeviceOf(data_dir, *user.key, kTestUserName);
    if (!device.ok()) return device.status();
  }
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

int ConnectLocal(const std::string& data_dir) {
  // A sandbox's paths are longer than sun_path: go through the directory.
  const int dir = ::open(data_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return -1;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "/proc/self/fd/%d/peerkv.sock", dir);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const bool ok = fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(dir);
  if (!ok && fd >= 0) close(fd);
  return ok ? fd : -1;
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
