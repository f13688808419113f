// testing/subprocess.h: running the real peerkv binary from tests. Run()
// waits for a command and captures its output; Process starts a long-lived
// one (a server) and stops it by its own PID, always, in its destructor.
#ifndef PEERKV_TESTING_SUBPROCESS_H_
#define PEERKV_TESTING_SUBPROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <thread>
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

// The word after `label` and a space at the start of a line of `out`: the
// ids `peerkv init` and `peerkv id` print ("user <id> <name>", "device
// <id>"). Empty if no line starts so.
std::string IdAfter(const std::string& out, const std::string& label);

// How a child is started besides its argv.
struct ProcessOptions {
  // If set, RLIMIT_NOFILE (soft and hard) of the child, set before exec.
  std::optional<int> max_open_files;
};

// A child process whose stdout and stderr are collected in memory.
class Process {
 public:
  // Starts argv (argv[0] is the path of the program).
  explicit Process(const std::vector<std::string>& argv, const ProcessOptions& options = {});
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
  // Everything it printed so far.
  std::string Output() const;
  // Waits up to `timeout` until its output contains `text` (at least
  // `occurrences` times); returns the output then, or nullopt if it did not
  // appear (or the process ended first).
  std::optional<std::string> WaitForOutput(const std::string& text,
                                           std::chrono::milliseconds timeout,
                                           int occurrences = 1);

 private:
  struct OutputBuffer;
  void DrainOutput();
  pid_t pid_ = -1;
  std::optional<int> exit_status_;
  std::shared_ptr<OutputBuffer> output_;
  std::thread reader_;
};

}  // namespace peerkv::testing

#endif  // PEERKV_TESTING_SUBPROCESS_H_
