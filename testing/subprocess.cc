// testing/subprocess.cc: fork/exec with captured output and bounded waits.
#include "testing/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "common/macros.h"

namespace peerkv::testing {
namespace {

int DecodeWaitStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::vector<char*> CArgv(const std::vector<std::string>& argv) {
  std::vector<char*> out;
  for (const std::string& a : argv) out.push_back(const_cast<char*>(a.c_str()));
  out.push_back(nullptr);
  return out;
}

}  // namespace

std::string IdAfter(const std::string& out, const std::string& label) {
  const std::string prefix = label + " ";
  for (size_t line = 0; line < out.size();) {
    size_t end = out.find('\n', line);
    if (end == std::string::npos) end = out.size();
    if (out.compare(line, prefix.size(), prefix) == 0) {
      const size_t id = line + prefix.size();
      const size_t stop = out.find_first_of(" \n", id);
      return out.substr(id, (stop == std::string::npos ? out.size() : stop) - id);
    }
    line = end + 1;
  }
  return "";
}

std::string RunfilePath(const std::string& relative) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir != nullptr && workspace != nullptr) {
    return std::string(srcdir) + "/" + workspace + "/" + relative;
  }
  return relative;
}

RunResult Run(const std::vector<std::string>& argv, const std::string& input,
              std::chrono::milliseconds timeout) {
  int in_pipe[2], out_pipe[2], err_pipe[2];
  PEERKV_CHECK(pipe2(in_pipe, O_CLOEXEC) == 0);
  PEERKV_CHECK(pipe2(out_pipe, O_CLOEXEC) == 0);
  PEERKV_CHECK(pipe2(err_pipe, O_CLOEXEC) == 0);
  std::vector<char*> cargv = CArgv(argv);
  const pid_t pid = fork();
  PEERKV_CHECK(pid >= 0);
  if (pid == 0) {
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    execv(cargv[0], cargv.data());
    std::fprintf(stderr, "exec %s: %s\n", cargv[0], std::strerror(errno));
    _exit(127);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  // Feed stdin from a thread so a child that writes a lot before reading
  // cannot deadlock against us.
  std::thread feeder([fd = in_pipe[1], &input] {
    signal(SIGPIPE, SIG_IGN);
    size_t off = 0;
    while (off < input.size()) {
      const ssize_t n = write(fd, input.data() + off, input.size() - off);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    close(fd);
  });
  RunResult result;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  bool timed_out = false;
  while (open_fds > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    const int ready = poll(fds, 2, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    PEERKV_CHECK(ready >= 0);
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[65536];
      const ssize_t n = read(fds[i].fd, buf, sizeof(buf));
      if (n <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      } else {
        (i == 0 ? result.out : result.err).append(buf, static_cast<size_t>(n));
      }
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) close(f.fd);
  }
  if (timed_out) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  feeder.join();
  result.exit_code = timed_out ? -1 : DecodeWaitStatus(status);
  return result;
}

struct Process::OutputBuffer {
  absl::Mutex mu;
  std::string text ABSL_GUARDED_BY(mu);
  bool closed ABSL_GUARDED_BY(mu) = false;
};

Process::Process(const std::vector<std::string>& argv, const ProcessOptions& options)
    : output_(std::make_shared<OutputBuffer>()) {
  std::vector<char*> cargv = CArgv(argv);
  int out_pipe[2];
  PEERKV_CHECK(pipe2(out_pipe, O_CLOEXEC) == 0);
  pid_ = fork();
  PEERKV_CHECK(pid_ >= 0);
  if (pid_ == 0) {
    const int null_fd = open("/dev/null", O_RDONLY);
    dup2(null_fd, 0);
    dup2(out_pipe[1], 1);
    dup2(out_pipe[1], 2);
    if (options.max_open_files.has_value()) {
      const rlimit limit{static_cast<rlim_t>(*options.max_open_files),
                         static_cast<rlim_t>(*options.max_open_files)};
      if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
        std::fprintf(stderr, "setrlimit(RLIMIT_NOFILE): %s\n", std::strerror(errno));
        _exit(127);
      }
    }
    execv(cargv[0], cargv.data());
    std::fprintf(stderr, "exec %s: %s\n", cargv[0], std::strerror(errno));
    _exit(127);
  }
  close(out_pipe[1]);
  // Drains the pipe until the process (and any child holding the pipe)
  // closes it, so the child never blocks on a full pipe.
  reader_ = std::thread([fd = out_pipe[0], output = output_] {
    char buf[65536];
    for (;;) {
      const ssize_t n = read(fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      absl::MutexLock lock(&output->mu);
      if (n <= 0) {
        output->closed = true;
        break;
      }
      output->text.append(buf, static_cast<size_t>(n));
    }
    close(fd);
  });
}

Process::~Process() {
  Kill();
  if (reader_.joinable()) reader_.join();
}

void Process::Signal(int signal) {
  if (running()) kill(pid_, signal);
}

std::optional<int> Process::Wait(std::chrono::milliseconds timeout) {
  if (exit_status_.has_value()) return exit_status_;
  if (pid_ <= 0) return std::nullopt;
  // A pidfd becomes readable when the process exits: wait on that event.
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
  PEERKV_CHECK(pidfd >= 0);
  pollfd pfd{pidfd, POLLIN, 0};
  int ready;
  do {
    ready = poll(&pfd, 1, static_cast<int>(timeout.count()));
  } while (ready < 0 && errno == EINTR);
  close(pidfd);
  if (ready == 0) return std::nullopt;
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  exit_status_ = DecodeWaitStatus(status);
  DrainOutput();
  return exit_status_;
}

void Process::DrainOutput() {
  // The process is gone; its last words may still be in the pipe. Wait for
  // the reader to reach end-of-file (bounded, in case a grandchild holds
  // the pipe open).
  absl::MutexLock lock(&output_->mu);
  auto closed = [this]() {
    output_->mu.AssertHeld();
    return output_->closed;
  };
  output_->mu.AwaitWithTimeout(absl::Condition(&closed), absl::Seconds(10));
}

void Process::Kill() {
  if (!running()) return;
  kill(pid_, SIGKILL);
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  exit_status_ = DecodeWaitStatus(status);
  DrainOutput();
}

std::string Process::Output() const {
  absl::MutexLock lock(&output_->mu);
  return output_->text;
}

std::optional<std::string> Process::WaitForOutput(const std::string& text,
                                                  std::chrono::milliseconds timeout,
                                                  int occurrences) {
  absl::MutexLock lock(&output_->mu);
  auto count = [this, &text, occurrences]() {
    output_->mu.AssertHeld();
    int n = 0;
    for (size_t at = output_->text.find(text); at != std::string::npos && n < occurrences;
         at = output_->text.find(text, at + text.size())) {
      ++n;
    }
    return n;
  };
  auto seen = [this, &count, occurrences]() {
    output_->mu.AssertHeld();
    return output_->closed || count() >= occurrences;
  };
  output_->mu.AwaitWithTimeout(absl::Condition(&seen), absl::Milliseconds(timeout.count()));
  if (count() < occurrences) return std::nullopt;
  return output_->text;
}

}  // namespace peerkv::testing
