// replication/task_scope.h: typed cancellation for tasks and callbacks
// that point at an object: a TaskScope hands out wrapped tasks that run
// only while the scope is open, and holds the scope open while one runs.
// Close() (and the destructor) waits for a wrapped task running on another
// thread to finish; tasks that start later do nothing. So an object that
// owns a TaskScope and closes it first may be destroyed as soon as Close()
// returns, whatever order its owner resets other things in (KJ's TaskSet
// semantics; it replaces a shared_ptr/weak_ptr pair that checked, but did
// not hold, the object's liveness while a task ran).
#ifndef PEERKV_REPLICATION_TASK_SCOPE_H_
#define PEERKV_REPLICATION_TASK_SCOPE_H_

#include <memory>

#include "absl/functional/any_invocable.h"

namespace peerkv::replication {

class TaskScope {
  struct State;

 public:
  TaskScope();
  // Close().
  ~TaskScope();
  TaskScope(const TaskScope&) = delete;
  TaskScope& operator=(const TaskScope&) = delete;

  // A task that runs `task` if the scope is still open when it is called,
  // and does nothing otherwise. Callable from any thread; the wrapped task
  // may outlive the scope.
  absl::AnyInvocable<void()> Wrap(absl::AnyInvocable<void()> task) const;

  // A copyable handle that wraps tasks for this scope later, from any
  // thread, even after the scope is gone (its tasks then do nothing).
  class Ref {
   public:
    absl::AnyInvocable<void()> Wrap(absl::AnyInvocable<void()> task) const;

   private:
    friend class TaskScope;
    explicit Ref(std::shared_ptr<State> state) : state_(std::move(state)) {}
    std::shared_ptr<State> state_;
  };
  Ref ref() const { return Ref(state_); }

  // Closes the scope: waits until no wrapped task runs on another thread
  // (one running on the calling thread, which is closing its own scope,
  // finishes after Close returns); from then on wrapped tasks do nothing.
  // Idempotent.
  void Close();

  // Wrapped tasks running now (for tests).
  int running() const;

 private:
  const std::shared_ptr<State> state_;
};

}  // namespace peerkv::replication

#endif  // PEERKV_REPLICATION_TASK_SCOPE_H_
