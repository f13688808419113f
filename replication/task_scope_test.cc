// replication/task_scope_test.cc: wrapped tasks run while the scope is
// open and not after; Close() waits for a task running on another thread,
// not for one running on its own; a Ref wraps tasks after the scope is
// gone.
#include "replication/task_scope.h"

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace peerkv::replication {
namespace {

TEST(TaskScopeTest, TasksRunWhileOpenAndNotAfterClose) {
  TaskScope scope;
  int runs = 0;
  absl::AnyInvocable<void()> before = scope.Wrap([&runs] { ++runs; });
  absl::AnyInvocable<void()> after = scope.Wrap([&runs] { ++runs; });
  before();
  EXPECT_EQ(runs, 1);
  scope.Close();
  after();
  EXPECT_EQ(runs, 1);
  scope.Close();  // idempotent
}

TEST(TaskScopeTest, CloseWaitsForATaskRunningOnAnotherThread) {
  TaskScope scope;
  absl::Notification started;
  absl::Notification release;
  std::atomic<bool> finished{false};
  std::thread runner(scope.Wrap([&] {
    started.Notify();
    release.WaitForNotification();
    finished = true;
  }));
  started.WaitForNotification();
  EXPECT_EQ(scope.running(), 1);
  std::atomic<bool> closed{false};
  std::thread closer([&] {
    scope.Close();
    closed = true;
    // The task finished before Close returned.
    EXPECT_TRUE(finished.load());
  });
  // Close cannot return while the task runs; let the task go, and it does.
  EXPECT_FALSE(closed.load());
  release.Notify();
  closer.join();
  runner.join();
  EXPECT_TRUE(closed.load());
  EXPECT_EQ(scope.running(), 0);
}

TEST(TaskScopeTest, ATaskMayCloseItsOwnScope) {
  TaskScope scope;
  int after_close = 0;
  absl::AnyInvocable<void()> later = scope.Wrap([&after_close] { ++after_close; });
  absl::AnyInvocable<void()> closing = scope.Wrap([&] {
    scope.Close();  // would wait for itself forever if it counted itself
    later();
  });
  closing();
  EXPECT_EQ(after_close, 0);
  EXPECT_EQ(scope.running(), 0);
}

TEST(TaskScopeTest, ARefWrapsTasksThatOutliveTheScope) {
  absl::AnyInvocable<void()> orphan;
  int runs = 0;
  {
    TaskScope scope;
    TaskScope::Ref ref = scope.ref();
    ref.Wrap([&runs] { ++runs; })();
    EXPECT_EQ(runs, 1);
    orphan = ref.Wrap([&runs] { ++runs; });
  }
  orphan();  // the scope is gone: nothing runs, nothing breaks
  EXPECT_EQ(runs, 1);
}

}  // namespace
}  // namespace peerkv::replication
