// tests/store_crash_test.cc: acknowledged writes survive SIGKILL. A child
// process writes through group commit from several threads and tells the
// parent, over a pipe, each write it is about to make and each write the
// store acknowledged. The parent kills it at a random moment, reopens the
// store, and checks every key: its state must be that of its last
// acknowledged write, or of a write issued after it (which may have reached
// the disk without its acknowledgement reaching us). Repeated over one data
// directory, so later rounds also check the survivors of earlier ones.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/store.h"
#include "testing/seed.h"
#include "testing/temp_dir.h"

namespace peerkv {
namespace {

constexpr int kRounds = 24;
constexpr int kThreads = 4;
constexpr int kOpsPerThread = 100'000;  // far more than a round lets happen

// One pipe message; far below PIPE_BUF, so each write() is atomic.
struct Message {
  enum Kind : int32_t { kIntent = 1, kAck = 2 } kind;
  int32_t round;
  int32_t thread;
  int32_t op;
};

// Thread t of round r works on its own keys: op i writes key i/2 (a put at
// even i, a delete at odd i), so every key sees a put then a delete.
std::string KeyFor(int round, int thread, int op) {
  return absl::StrFormat("r%d-t%d-k%d", round, thread, op / 2);
}
bool IsDelete(int op) { return op % 2 == 1; }
std::string ValueFor(int round, int thread, int op) {
  return absl::StrFormat("value of r%d t%d op%d", round, thread, op);
}

[[noreturn]] void RunChild(const std::string& dir, int round, int fd) {
  StoreOptions options;
  options.dir = dir;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
  if (!store.ok()) {
    std::fprintf(stderr, "child: open failed: %s\n", store.status().ToString().c_str());
    _exit(3);
  }
  auto send = [fd](const Message& m) {
    if (write(fd, &m, sizeof(m)) != sizeof(m)) _exit(4);
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int op = 0; op < kOpsPerThread; ++op) {
        send(Message{Message::kIntent, round, t, op});
        const std::string key = KeyFor(round, t, op);
        absl::StatusOr<Version> v = IsDelete(op)
                                        ? (*store)->Delete("ks", key)
                                        : (*store)->Put("ks", key, ValueFor(round, t, op));
        if (!v.ok()) _exit(5);
        send(Message{Message::kAck, round, t, op});
      }
    });
  }
  for (auto& t : threads) t.join();
  _exit(0);
}

// What the parent learned about one thread of one round.
struct ThreadProgress {
  int last_intent = -1;
  int last_ack = -1;
};

TEST(StoreCrashTest, AcknowledgedWritesSurviveSigkill) {
  testing::TempDir dir;
  const std::string db = dir.Sub("db");
  std::mt19937_64 rng(testing::TestSeed());
  std::map<std::pair<int, int>, ThreadProgress> progress;
  int total_acks = 0;

  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(absl::StrFormat("round %d", round));
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    const pid_t child = fork();
    ASSERT_GE(child, 0) << std::strerror(errno);
    if (child == 0) {
      close(fds[0]);
      RunChild(db, round, fds[1]);
    }
    close(fds[1]);

    // Kill after a random number of acknowledgements, then after a random
    // pause, so the kill lands anywhere: mid-transaction, mid-fsync, idle.
    const int acks_before_kill = std::uniform_int_distribution<int>(1, 400)(rng);
    const int pause_us = std::uniform_int_distribution<int>(0, 3000)(rng);
    int acks = 0;
    bool killed = false;
    Message m;
    for (;;) {
      const ssize_t n = read(fds[0], &m, sizeof(m));
      if (n == 0) break;  // the child is gone and the pipe is drained
      if (n < 0 && errno == EINTR) continue;
      ASSERT_EQ(n, static_cast<ssize_t>(sizeof(m)));
      ThreadProgress& p = progress[{m.round, m.thread}];
      if (m.kind == Message::kIntent) {
        ASSERT_EQ(m.op, p.last_intent + 1);
        p.last_intent = m.op;
      } else {
        ASSERT_EQ(m.op, p.last_ack + 1);
        p.last_ack = m.op;
        ++acks;
      }
      if (!killed && acks >= acks_before_kill) {
        std::this_thread::sleep_for(std::chrono::microseconds(pause_us));
        ASSERT_EQ(kill(child, SIGKILL), 0);
        killed = true;
      }
    }
    close(fds[0]);
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "child ended by itself with status " << status;
    total_acks += acks;

    // Reopen and check every key any round touched.
    StoreOptions options;
    options.dir = db;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    ASSERT_THAT(store, IsOk());
    for (const auto& [who, p] : progress) {
      const auto [r, t] = who;
      // Keys whose every op is acknowledged must show exactly the last one;
      // the key of the in-flight op may show it or the acknowledged state.
      for (int op = 0; op <= p.last_intent; op += 2) {
        const std::string key = KeyFor(r, t, op);
        absl::StatusOr<std::optional<Record>> got = (*store)->Get("ks", key);
        ASSERT_THAT(got, IsOk());
        const int acked = p.last_ack;
        const int put = op, del = op + 1;
        std::vector<std::string> allowed;  // "missing", "put", "deleted"
        auto state_after = [&](int last) -> std::string {
          if (last < put) return "missing";
          if (last < del) return "put";
          return "deleted";
        };
        for (int last = acked; last <= p.last_intent; ++last) {
          allowed.push_back(state_after(last));
        }
        std::string actual = "missing";
        if (got->has_value()) {
          actual = (*got)->deleted ? "deleted" : "put";
          if (!(*got)->deleted) {
            ASSERT_EQ((*got)->value, ValueFor(r, t, put)) << key;
          }
        }
        ASSERT_THAT(allowed, ::testing::Contains(actual))
            << key << ": acked up to op " << acked << ", issued up to op "
            << p.last_intent;
      }
    }
    absl::StatusOr<StoreStats> stats = (*store)->Stats();
    ASSERT_THAT(stats, IsOk());
    EXPECT_GE(stats->max_seq, static_cast<uint64_t>(total_acks));
  }
  EXPECT_GT(total_acks, kRounds);
}

}  // namespace
}  // namespace peerkv
