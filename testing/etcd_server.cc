// testing/etcd_server.cc: starting, killing and restarting a real etcd.
#include "testing/etcd_server.h"

#include <filesystem>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "consensus/etcd/http_client.h"

namespace peerkv::testing {
namespace {

constexpr absl::Duration kReadyTimeout = absl::Seconds(20);

// The health check: a linearizable range through the v3 gateway (the path
// the backend uses), which succeeds only once there is a leader.
bool Healthy(consensus::etcd::HttpClient& http) {
  absl::StatusOr<consensus::etcd::HttpResponse> r = http.Post(
      "/v3/kv/range", "{\"key\":\"AA==\"}", absl::Now() + absl::Milliseconds(500), true);
  return r.ok() && r->status == 200 && absl::StrContains(r->body, "\"header\"");
}

}  // namespace

absl::StatusOr<uint16_t> FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int err = errno;
    close(fd);
    return absl::InternalError(absl::StrCat("bind 127.0.0.1:0: ", std::strerror(err)));
  }
  close(fd);
  return ntohs(addr.sin_port);
}

absl::StatusOr<std::unique_ptr<EtcdServer>> EtcdServer::Start(
    const std::vector<std::string>& extra_args) {
  if (access(kEtcdBinary, X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        kEtcdBinary, " is missing: run scripts/setup.sh (installs etcd-server)"));
  }
  // A port picked free may be taken before etcd binds it: try a few pairs.
  absl::Status last;
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto server = std::unique_ptr<EtcdServer>(new EtcdServer());
    server->dir_ = std::make_unique<TempDir>("etcd");
    absl::StatusOr<uint16_t> client_port = FreeLoopbackPort();
    if (!client_port.ok()) return client_port.status();
    absl::StatusOr<uint16_t> peer_port = FreeLoopbackPort();
    if (!peer_port.ok()) return peer_port.status();
    if (*peer_port == *client_port) continue;
    server->client_url_ = absl::StrCat("http://127.0.0.1:", *client_port);
    const std::string peer_url = absl::StrCat("http://127.0.0.1:", *peer_port);
    server->argv_ = {kEtcdBinary,
                     "--name", "peerkv-test",
                     "--data-dir", server->dir_->Sub("data"),
                     "--listen-client-urls", server->client_url_,
                     "--advertise-client-urls", server->client_url_,
                     "--listen-peer-urls", peer_url,
                     "--initial-advertise-peer-urls", peer_url,
                     "--initial-cluster", "peerkv-test=" + peer_url,
                     "--initial-cluster-state", "new",
                     "--logger", "zap",
                     "--log-outputs", "stderr"};
    server->argv_.insert(server->argv_.end(), extra_args.begin(), extra_args.end());
    last = server->Launch();
    if (last.ok()) return server;
  }
  return last;
}

absl::Status EtcdServer::Launch() {
  process_ = std::make_unique<Process>(argv_);
  consensus::etcd::HttpUrl url = *consensus::etcd::ParseHttpUrl(client_url_);
  consensus::etcd::HttpClient http(url);
  const absl::Time deadline = absl::Now() + kReadyTimeout;
  // etcd's "ready to serve" log line does not promise a leader: poll the
  // health check, bounded.
  while (absl::Now() < deadline) {
    if (Healthy(http)) return absl::OkStatus();
    // Between polls, wait up to 50 ms for etcd to exit (a failed start).
    if (process_->Wait(std::chrono::milliseconds(50)).has_value()) {
      return absl::UnavailableError(
          absl::StrCat("etcd exited during start; it printed: ", process_->Output()));
    }
  }
  const std::string output = process_->Output();
  process_->Kill();
  return absl::UnavailableError(absl::StrCat("etcd at ", client_url_, " not healthy within ",
                                             absl::FormatDuration(kReadyTimeout),
                                             "; it printed: ", output));
}

EtcdServer::~EtcdServer() {
  if (process_) Stop();
}

void EtcdServer::Kill9() {
  if (process_) process_->Kill();
}

int EtcdServer::Stop() {
  if (!process_ || !process_->running()) {
    return process_ ? process_->Wait(std::chrono::milliseconds(0)).value_or(-1) : -1;
  }
  process_->Signal(SIGTERM);
  std::optional<int> code = process_->Wait(std::chrono::seconds(5));
  if (code.has_value()) return *code;
  process_->Kill();
  return process_->Wait(std::chrono::milliseconds(0)).value_or(-1);
}

void EtcdServer::Pause() {
  if (!running()) return;
  process_->Signal(SIGSTOP);
  // kill() returns before the stop lands; the child's stop is an event its
  // parent can wait for (WNOWAIT leaves it for Process to reap later).
  siginfo_t info{};
  while (waitid(P_PID, static_cast<id_t>(pid()), &info, WSTOPPED | WNOWAIT) != 0 &&
         errno == EINTR) {
  }
}

void EtcdServer::Resume() {
  if (!running()) return;
  process_->Signal(SIGCONT);
  siginfo_t info{};
  while (waitid(P_PID, static_cast<id_t>(pid()), &info, WCONTINUED | WNOWAIT) != 0 &&
         errno == EINTR) {
  }
}

absl::Status EtcdServer::Restart() {
  if (process_ && process_->running()) Stop();
  return Launch();
}

absl::Status EtcdServer::RecreateEmpty() {
  if (process_ && process_->running()) Stop();
  std::error_code error;
  std::filesystem::remove_all(dir_->Sub("data"), error);
  if (error) {
    return absl::InternalError(absl::StrCat("removing etcd's data: ", error.message()));
  }
  return Launch();
}

}  // namespace peerkv::testing
