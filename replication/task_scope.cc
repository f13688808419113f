// replication/task_scope.cc: the open flag, the running count and the wait.
#include "replication/task_scope.h"

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/macros.h"

namespace peerkv::replication {

struct TaskScope::State {
  mutable absl::Mutex mu;
  bool closed ABSL_GUARDED_BY(mu) = false;
  int running ABSL_GUARDED_BY(mu) = 0;
};

namespace {
// The scope whose wrapped task runs on this thread now, if any (for the
// innermost one): Close() from inside it must not wait for itself.
thread_local const void* current_scope = nullptr;
}  // namespace

TaskScope::TaskScope() : state_(std::make_shared<State>()) {}

TaskScope::~TaskScope() { Close(); }

absl::AnyInvocable<void()> TaskScope::Wrap(absl::AnyInvocable<void()> task) const {
  return ref().Wrap(std::move(task));
}

absl::AnyInvocable<void()> TaskScope::Ref::Wrap(absl::AnyInvocable<void()> task) const {
  return [state = state_, task = std::move(task)]() mutable {
    {
      absl::MutexLock lock(&state->mu);
      if (state->closed) return;
      ++state->running;
    }
    const void* outer = current_scope;
    current_scope = state.get();
    task();
    current_scope = outer;
    absl::MutexLock lock(&state->mu);
    PEERKV_CHECK(state->running > 0);
    --state->running;
  };
}

void TaskScope::Close() {
  State* state = state_.get();
  const int own = current_scope == state ? 1 : 0;
  absl::MutexLock lock(&state->mu);
  state->closed = true;
  auto others_done = [state, own]() {
    state->mu.AssertHeld();
    return state->running <= own;
  };
  state->mu.Await(absl::Condition(&others_done));
}

int TaskScope::running() const {
  absl::MutexLock lock(&state_->mu);
  return state_->running;
}

}  // namespace peerkv::replication
