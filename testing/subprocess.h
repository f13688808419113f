// testing/subprocess.h: running the real peerkv binary from tests. Run()
// waits for a command and captures its output; Process starts a long-lived
// one (a server) and stops it by its own PID, always, in its destructor.
#ifndef PEERKV_TESTING_SUBPROCESS_H_
#define PEERKV_TESTING_SUBPROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace peerkv::testing {

struct RunResult {
  // Exit code, or 128 + signal number if killed by a signal, or -1 if it
  // did not finish within the timeout (it is then killed).
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs argv[0] with `argv`, feeding `input` on stdin. Bounded by `timeout`.
RunResult Run(const std::vector<std::string>& argv, const std::string& input = "",
              std::chrono::milliseconds timeout = std::chrono::seconds(60));

// Path of a binary built by Bazel and listed in the test's `data`, e.g.
// "cli/peerkv".
std::string RunfilePath(const std::string& relative);

// A child process with stdout and stderr sent to a log file.
class Process {
 public:
  // Starts argv; output goes to `log_path`.
  Process(const std::vector<std::string>& argv, const std::string& log_path);
  // Kills (SIGKILL) the process if it is still running, and reaps it.
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0 && !exit_status_.has_value(); }
  // Sends `signal` to the process.
  void Signal(int signal);
  // Waits up to `timeout` for the process to end; returns its exit code
  // (128 + signal if killed), or nullopt if it is still running.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  // SIGKILL and reap.
  void Kill();
  // The log so far.
  std::string Log() const;

 private:
  pid_t pid_ = -1;
  std::string log_path_;
  std::optional<int> exit_status_;
};

}  // namespace peerkv::testing

#endif  // PEERKV_TESTING_SUBPROCESS_H_
