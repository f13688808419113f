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

// The flags of a replica in a replication test: its name, a 100 ms gossip
// interval, and `--peer P` for each of `peers`.
std::vector<std::string> ReplicaArgs(const std::string& name,
                                     const std::vector<std::string>& peers = {});

// Every server a test starts is a device of one test user, so that the
// servers of a test trust each other over TLS as the devices of one user
// do: a DATA_DIR without an identity (and no --user in EXTRA) is first
// made a device of that user, holding its key (auth::Identity::
// CreateDeviceOf, the state `init --join` + `device add` + sync leaves).
// The test process's own clients use a device of the same user: rpc::Client
// by default (rpc::SetDefaultClientTls) and `peerkv --server` children
// through $PEERKV_IDENTITY. Set up on the first Start; call it directly to
// use the identity before any server starts.
void UseTestUser();
// The directory holding the test process's client identity (a device of
// the test user), as $PEERKV_IDENTITY names it.
std::string TestIdentityDir();
// The test user's id (auth::UserId), for tests that check it.
std::string TestUserId();

class ServerProcess {
 public:
  // Starts `peerkv serve --data DATA_DIR --listen 127.0.0.1:0 EXTRA...`
  // (without the --listen when EXTRA has one: a restart at an address) and
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
  // The log once it holds `text` (at least `occurrences` times), waiting up
  // to 10 s for the server to write it: a line about an event the client
  // has seen may still be on its way through the pipe. On a timeout, the
  // log as it is (so the caller's expectation fails and shows it).
  std::string WaitForLog(const std::string& text, int occurrences = 1) const {
    return process_->WaitForOutput(text, std::chrono::seconds(10), occurrences)
        .value_or(process_->Output());
  }

  // Sends `signal` and waits (up to 30 s) for the exit code; -1 on timeout.
  int Stop(int signal);

 private:
  std::unique_ptr<Process> process_;
  std::string address_;
};

// A blocking TCP connection to `address` ("HOST:PORT", IPv4), or -1.
// A server's TCP port speaks TLS only (rpc/tls.h).
int ConnectTcp(const std::string& address);

// A blocking connection to the local socket of the server holding
// `data_dir` (DATA_DIR/peerkv.sock: plaintext Cap'n Proto, for tests of
// the RPC layer under TLS), or -1.
int ConnectLocal(const std::string& data_dir);

// Number of open file descriptors of process `pid`.
int OpenFileDescriptors(pid_t pid);

}  // namespace peerkv::testing

#endif  // PEERKV_TESTING_SERVER_PROCESS_H_
