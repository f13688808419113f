// replication/executor.cc: the thread-backed and the manual executor.
#include "replication/executor.h"

#include <algorithm>

namespace peerkv::replication {

ThreadExecutor::ThreadExecutor() : thread_([this] { Loop(); }) {}

ThreadExecutor::~ThreadExecutor() {
  Stop();
  if (thread_.joinable()) thread_.join();
}

void ThreadExecutor::Post(absl::AnyInvocable<void()> task, absl::Duration delay) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  tasks_.push(TimedTask{absl::Now() + delay, next_order_++, std::move(task)});
}

bool ThreadExecutor::IsCurrent() const { return std::this_thread::get_id() == thread_.get_id(); }

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

void ManualExecutor::Post(absl::AnyInvocable<void()> task, absl::Duration delay) {
  absl::MutexLock lock(&mu_);
  tasks_.push(TimedTask{now_ + std::max(delay, absl::ZeroDuration()), next_order_++,
                        std::move(task)});
}

absl::Time ManualExecutor::Now() const {
  absl::MutexLock lock(&mu_);
  return now_;
}

bool ManualExecutor::RunUntil(absl::Time until) {
  // Bounded by what the tasks post: each turn runs one.
  for (;;) {
    absl::AnyInvocable<void()> task;
    {
      absl::MutexLock lock(&mu_);
      if (tasks_.empty() || tasks_.top().due > until) {
        now_ = std::max(now_, until);
        return !tasks_.empty();
      }
      now_ = std::max(now_, tasks_.top().due);
      task = std::move(tasks_.top().run);
      tasks_.pop();
      ++tasks_run_;
      running_on_ = std::this_thread::get_id();
    }
    task();
    absl::MutexLock lock(&mu_);
    running_on_ = std::thread::id();
  }
}

bool ManualExecutor::IsCurrent() const {
  absl::MutexLock lock(&mu_);
  return running_on_ == std::this_thread::get_id();
}

uint64_t ManualExecutor::tasks_run() const {
  absl::MutexLock lock(&mu_);
  return tasks_run_;
}

}  // namespace peerkv::replication
