// replication/executor.h: where the replication engine runs. Every piece of
// engine state is touched only by tasks run on its executor, one at a time,
// so the engine needs no locks; the executor also says what time it is. The
// server runs the engine on a ThreadExecutor; the simulation runs every
// replica on one deterministic, simulated-time executor.
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
};

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

  // Drops every pending task (the one running finishes) and ends the
  // thread. Later posts are dropped. Idempotent.
  void Stop();

 private:
  struct Task {
    absl::Time due;
    uint64_t order;
    mutable absl::AnyInvocable<void()> run;
    bool operator>(const Task& other) const {
      return due != other.due ? due > other.due : order > other.order;
    }
  };

  void Loop();

  absl::Mutex mu_;
  std::priority_queue<Task, std::vector<Task>, std::greater<Task>> tasks_ ABSL_GUARDED_BY(mu_);
  uint64_t next_order_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace peerkv::replication

#endif  // PEERKV_REPLICATION_EXECUTOR_H_
