// tests/local_socket_test.cc: a server's Unix socket in its data directory:
// the CLI with --data DIR reaches a running server through it, --server
// unix:PATH names one, the file is owner-only, another user is refused
// (by the file's mode, and by the peer's uid when the mode was widened),
// and a stale file left by a dead server is replaced.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/server_process.h"
#include "testing/subprocess.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

using ::testing::HasSubstr;
using testing::RunResult;

constexpr uid_t kNobody = 65534;

RunResult Peerkv(std::vector<std::string> args) {
  args.insert(args.begin(), testing::RunfilePath("cli/peerkv"));
  return testing::Run(args);
}

// Connects to the socket file `path` in directory `dir` as user `uid` in a
// child process (through /proc/self/fd, as sun_path is short); returns the
// errno of connect (0 if it connected), or, when it connected, 1000 + the
// bytes a read got before the server closed (0: closed at once).
int ConnectAs(uid_t uid, const std::string& dir, const std::string& name) {
  const pid_t child = ::fork();
  if (child == 0) {
    const int dir_fd = ::open(dir.c_str(), O_PATH | O_DIRECTORY);
    if (dir_fd < 0) ::_exit(200);
    if (::setgid(uid) != 0 || ::setuid(uid) != 0) ::_exit(201);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "/proc/self/fd/%d/%s", dir_fd,
                  name.c_str());
    const int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
    if (::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) ::_exit(errno);
    // The server closes a refused connection without a word: read sees EOF.
    timeval timeout{10, 0};
    ::setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    char buf[64];
    const ssize_t n = ::read(s, buf, sizeof(buf));
    ::_exit(n < 0 ? 199 : static_cast<int>(100 + std::min<ssize_t>(n, 50)));
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return code >= 100 && code < 199 ? 1000 + (code - 100) : code;
}

class LocalSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = dir_.Sub("data");
    auto server = testing::ServerProcess::Start(data_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }
  testing::TempDir dir_;
  std::string data_;
  std::unique_ptr<testing::ServerProcess> server_;
};

TEST_F(LocalSocketTest, TheCliWithDataReachesTheRunningServer) {
  EXPECT_THAT(server_->Log(), HasSubstr("local clients: " + data_ + "/peerkv.sock"));
  struct stat st;
  ASSERT_EQ(::stat((data_ + "/peerkv.sock").c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600);

  RunResult put = Peerkv({"--data", data_, "put", "ks", "k", "v"});
  ASSERT_EQ(put.exit_code, 0) << put.err;
  RunResult get = Peerkv({"--server", server_->address(), "get", "ks", "k"});
  EXPECT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(get.out, "v");
  RunResult info = Peerkv({"--data", data_, "info"});
  EXPECT_EQ(info.exit_code, 0) << info.err;
  EXPECT_THAT(info.out, HasSubstr("uptime_ms: "));  // a server's facts
  RunResult id = Peerkv({"--data", data_, "id"});
  EXPECT_EQ(id.exit_code, 0) << id.err;
  const size_t at = info.out.find("replica_id: ");
  ASSERT_NE(at, std::string::npos);
  EXPECT_THAT(id.out, HasSubstr("replica " + info.out.substr(at + 12, 16) + "\n"));
  EXPECT_THAT(id.out, HasSubstr(" me\n"));
  // The lists are read through the server; changing them still needs the
  // directory itself.
  RunResult friends = Peerkv({"--data", data_, "friend", "list"});
  EXPECT_EQ(friends.exit_code, 0) << friends.err;
  const std::string device = id.out.substr(7, id.out.find('\n') - 7);
  RunResult renew = Peerkv({"--data", data_, "device", "renew", device});
  EXPECT_EQ(renew.exit_code, 1) << renew.out;
  EXPECT_THAT(renew.err, HasSubstr("a server holds"));

  ASSERT_EQ(server_->Stop(SIGTERM), 0);
  EXPECT_NE(::stat((data_ + "/peerkv.sock").c_str(), &st), 0) << "socket left behind";
  // Embedded again, with what the server wrote.
  RunResult after = Peerkv({"--data", data_, "get", "ks", "k"});
  EXPECT_EQ(after.exit_code, 0) << after.err;
  EXPECT_EQ(after.out, "v");
}

TEST_F(LocalSocketTest, ServerUnixNamesTheSocket) {
  // A short name for the socket, as a user would type it: a symlink to DIR.
  const std::string link = "/tmp/peerkv-sock-test-" + std::to_string(::getpid());
  ::unlink(link.c_str());
  ASSERT_EQ(::symlink(data_.c_str(), link.c_str()), 0);
  RunResult put = Peerkv({"--server", "unix:" + link + "/peerkv.sock", "put", "ks", "a", "b"});
  EXPECT_EQ(put.exit_code, 0) << put.err;
  RunResult get = Peerkv({"--data", data_, "get", "ks", "a"});
  EXPECT_EQ(get.out, "b");
  ::unlink(link.c_str());
  RunResult none = Peerkv({"--server", "unix:" + dir_.Sub("nothing.sock"), "get", "ks", "a"});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_THAT(none.err, HasSubstr("nothing.sock"));
}

TEST_F(LocalSocketTest, AnotherUserIsRefused) {
  // Needs a real setuid (the test runs unsandboxed, as root): without one
  // nothing here would be shown.
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  // By the modes: the directory is 0700 and the socket 0600.
  EXPECT_EQ(ConnectAs(kNobody, data_, "peerkv.sock"), EACCES);
  // With the modes widened by mistake, by the peer's uid.
  ASSERT_EQ(::chmod(data_.c_str(), 0755), 0);
  ASSERT_EQ(::chmod((data_ + "/peerkv.sock").c_str(), 0666), 0);
  EXPECT_EQ(ConnectAs(kNobody, data_, "peerkv.sock"), 1000);  // connected, closed unanswered
  EXPECT_THAT(server_->WaitForLog("refused a local connection from uid 65534"),
              HasSubstr("refused a local connection from uid 65534"));
  // The owner still gets in.
  RunResult put = Peerkv({"--data", data_, "put", "ks", "k", "v"});
  EXPECT_EQ(put.exit_code, 0) << put.err;
}

TEST(LocalSocketStaleTest, AStaleSocketFileIsReplaced) {
  testing::TempDir dir;
  const std::string data = dir.Sub("data");
  {
    auto first = testing::ServerProcess::Start(data);
    ASSERT_TRUE(first.ok()) << first.status();
    (*first)->process().Kill();  // leaves the socket file
  }
  struct stat st;
  ASSERT_EQ(::stat((data + "/peerkv.sock").c_str(), &st), 0);
  auto second = testing::ServerProcess::Start(data);
  ASSERT_TRUE(second.ok()) << second.status();
  RunResult put = Peerkv({"--data", data, "put", "ks", "k", "v"});
  EXPECT_EQ(put.exit_code, 0) << put.err;
}

}  // namespace
}  // namespace peerkv
