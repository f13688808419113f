// testing/server_process.h: a real `peerkv serve` process for tests: on a
// free loopback port (the server binds port 0 and logs the one it got), in
// a directory the test owns, always stopped by its own PID.
#ifndef PEERKV_TESTING_SERVER_PROCESS_H_
#define PEERKV_TESTING_SERVER_PROCESS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "testing/subprocess.h"

namespace peerkv::testing {

class ServerProcess {
 public:
  // Starts `peerkv serve --data DATA_DIR --listen 127.0.0.1:0 EXTRA...` and
  // waits (up to 30 s) for its "listening on" line.
  // `options` say how the process is started (resource limits).
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(
      const std::string& data_dir, const std::vector<std::string>& extra_args = {},
      const ProcessOptions& options = {});

  // SIGKILL if still running.
  ~ServerProcess() = default;

  const std::string& address() const { return address_; }
  pid_t pid() const { return process_->pid(); }
  Process& process() { return *process_; }
  std::string Log() const { return process_->Output(); }

  // Sends `signal` and waits (up to 30 s) for the exit code; -1 on timeout.
  int Stop(int signal);

 private:
  std::unique_ptr<Process> process_;
  std::string address_;
};

// Number of open file descriptors of process `pid`.
int OpenFileDescriptors(pid_t pid);

}  // namespace peerkv::testing

#endif  // PEERKV_TESTING_SERVER_PROCESS_H_
