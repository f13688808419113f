// replication/executor.cc: the thread-backed executor.
#include "replication/executor.h"


namespace peerkv::replication {

ThreadExecutor::ThreadExecutor() : thread_([this] { Loop(); }) {}

ThreadExecutor::~ThreadExecutor() {
  Stop();
  if (thread_.joinable()) thread_.join();
}

void ThreadExecutor::Post(absl::AnyInvocable<void()> task, absl::Duration delay) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  tasks_.push(Task{absl::Now() + delay, next_order_++, std::move(task)});
}

void ThreadExecutor::Stop() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
}

void ThreadExecutor::Loop() {
  for (;;) {
    absl::AnyInvocable<void()> task;
    std::vector<absl::AnyInvocable<void()>> dropped;
    {
      absl::MutexLock lock(&mu_);
      for (;;) {
        if (stopping_) {
          // Drop what is pending; the tasks are destroyed outside the lock.
          while (!tasks_.empty()) {
            dropped.push_back(std::move(tasks_.top().run));
            tasks_.pop();
          }
          break;
        }
        if (!tasks_.empty() && tasks_.top().due <= absl::Now()) {
          task = std::move(tasks_.top().run);
          tasks_.pop();
          break;
        }
        const absl::Time wake = tasks_.empty() ? absl::InfiniteFuture() : tasks_.top().due;
        // Wake at the first task's due time, or earlier if a task due
        // sooner is posted, or on Stop().
        auto changed = [this, wake]() {
          mu_.AssertHeld();
          return stopping_ || (!tasks_.empty() && tasks_.top().due < wake);
        };
        mu_.AwaitWithDeadline(absl::Condition(&changed), wake);
      }
    }
    if (!task) return;  // stopping
    task();
  }
}

}  // namespace peerkv::replication
