// replication/executor.h: where the replication engine runs. Every piece of
// engine state is touched only by tasks run on its executor, one at a time,
// so the engine needs no locks; the executor also says what time it is. The
// server runs the engine on a ThreadExecutor; the simulation runs every
// replica on one deterministic ManualExecutor.
#ifndef PEERKV_REPLICATION_EXECUTOR_H_
#define PEERKV_REPLICATION_EXECUTOR_H_

#include <cstdint>
#include <queue>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace peerkv::replication {

class Executor {
 public:
  virtual ~Executor() = default;
  // Runs `task` on the executor after `delay`: tasks run one at a time, in
  // order of due time, then of posting. Callable from any thread. Tasks
  // posted after the executor stopped are dropped.
  virtual void Post(absl::AnyInvocable<void()> task,
                    absl::Duration delay = absl::ZeroDuration()) = 0;
  // The executor's clock.
  virtual absl::Time Now() const = 0;
  // True on the executor, inside one of its tasks: code that owns state
  // only the executor touches checks it (PEERKV_CHECK).
  virtual bool IsCurrent() const = 0;
};

// A task due at a time; among equal times, the first posted runs first.
struct TimedTask {
  absl::Time due;
  uint64_t order;
  mutable absl::AnyInvocable<void()> run;
  bool operator>(const TimedTask& other) const {
    return due != other.due ? due > other.due : order > other.order;
  }
};
using TaskQueue = std::priority_queue<TimedTask, std::vector<TimedTask>, std::greater<TimedTask>>;

// An executor with its own thread and the real clock.
class ThreadExecutor final : public Executor {
 public:
  ThreadExecutor();
  // Stop(), then joins the thread.
  ~ThreadExecutor() override;
  ThreadExecutor(const ThreadExecutor&) = delete;
  ThreadExecutor& operator=(const ThreadExecutor&) = delete;

  void Post(absl::AnyInvocable<void()> task,
            absl::Duration delay = absl::ZeroDuration()) override;
  absl::Time Now() const override { return absl::Now(); }
  // The executor's thread is the calling one.
  bool IsCurrent() const override;

  // Drops every pending task (the one running finishes) and ends the
  // thread. Later posts are dropped. Idempotent.
  void Stop();

 private:
  void Loop();

  absl::Mutex mu_;
  TaskQueue tasks_ ABSL_GUARDED_BY(mu_);
  uint64_t next_order_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// An executor in simulated time: tasks run only when RunUntil() is called,
// on the calling thread, and the clock moves to each task's due time. The
// simulation runs every replica on one; tests drive the engine with one.
// Post() and Now() may be called from any thread.
class ManualExecutor final : public Executor {
 public:
  explicit ManualExecutor(absl::Time start) : now_(start) {}

  void Post(absl::AnyInvocable<void()> task,
            absl::Duration delay = absl::ZeroDuration()) override;
  absl::Time Now() const override;
  // A task of RunUntil() runs on the calling thread now.
  bool IsCurrent() const override;

  // Runs the tasks due up to `until`, including those they post, then sets
  // the clock to `until`. Returns false if the queue ran dry.
  bool RunUntil(absl::Time until);
  // Tasks run so far.
  uint64_t tasks_run() const;

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
  TaskQueue tasks_ ABSL_GUARDED_BY(mu_);
  uint64_t next_order_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t tasks_run_ ABSL_GUARDED_BY(mu_) = 0;
  // The thread running a task now; none between tasks.
  std::thread::id running_on_ ABSL_GUARDED_BY(mu_);
};

}  // namespace peerkv::replication

#endif  // PEERKV_REPLICATION_EXECUTOR_H_
