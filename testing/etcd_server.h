// testing/etcd_server.h: a real single-member etcd (/usr/bin/etcd, Debian's
// etcd-server) for tests and benchmarks: client and peer URLs on free
// loopback ports, data in a directory under TEST_TMPDIR, ready when its
// /health endpoint says so (polled, bounded), always stopped by its own PID.
// Kill9() and Restart() bring it down and back on the same ports and data,
// for the tests of an etcd that goes away.
#ifndef PEERKV_TESTING_ETCD_SERVER_H_
#define PEERKV_TESTING_ETCD_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "testing/subprocess.h"
#include "testing/temp_dir.h"

namespace peerkv::testing {

// Where etcd is installed (scripts/setup.sh installs etcd-server).
inline constexpr char kEtcdBinary[] = "/usr/bin/etcd";

class EtcdServer {
 public:
  // Starts etcd and waits (up to 20 s) until it is healthy. Unavailable with
  // its output if it does not get there. `extra_args` are appended to etcd's
  // command line.
  static absl::StatusOr<std::unique_ptr<EtcdServer>> Start(
      const std::vector<std::string>& extra_args = {});

  // Stops etcd (SIGTERM, then SIGKILL after 5 s) and removes its data.
  ~EtcdServer();
  EtcdServer(const EtcdServer&) = delete;
  EtcdServer& operator=(const EtcdServer&) = delete;

  // "http://127.0.0.1:PORT".
  const std::string& client_url() const { return client_url_; }
  pid_t pid() const { return process_ ? process_->pid() : -1; }
  bool running() const { return process_ && process_->running(); }
  std::string Log() const { return process_ ? process_->Output() : ""; }

  // SIGKILL and reap (a crash: no clean shutdown).
  void Kill9();
  // SIGTERM, bounded wait, then SIGKILL. Returns the exit code.
  int Stop();
  // SIGSTOP, and returns once the kernel reports it stopped (a hung etcd:
  // connections accepted, nothing answered). Resume() sends SIGCONT and
  // returns once it runs again.
  void Pause();
  void Resume();
  // Starts it again on the same ports and data (after Kill9 or Stop) and
  // waits until it is healthy.
  absl::Status Restart();
  // Stops it, deletes its data and starts a new, empty etcd on the same
  // ports with the same names (an operator recreating it): its revisions
  // start over.
  absl::Status RecreateEmpty();

 private:
  EtcdServer() = default;
  absl::Status Launch();

  std::unique_ptr<TempDir> dir_;
  std::vector<std::string> argv_;
  std::string client_url_;
  std::unique_ptr<Process> process_;
};

// A free TCP port on 127.0.0.1 (bound to port 0 and released; etcd cannot be
// told to pick one and report it).
absl::StatusOr<uint16_t> FreeLoopbackPort();

}  // namespace peerkv::testing

#endif  // PEERKV_TESTING_ETCD_SERVER_H_
