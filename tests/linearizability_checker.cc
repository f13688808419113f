// tests/linearizability_checker.cc: the WGL search over one register.
#include "tests/linearizability_checker.h"

#include <algorithm>
#include <map>
#include <unordered_set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace peerkv::testing {
namespace {

using Value = std::optional<std::string>;

std::string Show(const Value& v) { return v.has_value() ? absl::StrCat("\"", *v, "\"") : "absent"; }

// Applies `op` to `state` if its recorded result is possible there.
bool Step(const RegisterOp& op, Value& state) {
  const bool known = op.response != kNoResponse;
  switch (op.kind) {
    case RegisterOp::Kind::kGet:
      return !known || op.value == state;
    case RegisterOp::Kind::kPut:
      state = op.value;
      return true;
    case RegisterOp::Kind::kCas: {
      const bool matches = state == op.expected;
      if (known && op.ok != matches) return false;
      if (matches) state = op.value;
      return true;
    }
  }
  return false;
}

// An event in the time-ordered list: an op's call or its return.
struct Entry {
  int op = 0;
  bool is_call = true;
  int64_t time = 0;
  Entry* match = nullptr;  // call -> its return
  Entry* prev = nullptr;
  Entry* next = nullptr;
};

void Lift(Entry* call) {
  call->prev->next = call->next;
  call->next->prev = call->prev;
  Entry* ret = call->match;
  ret->prev->next = ret->next;
  if (ret->next != nullptr) ret->next->prev = ret->prev;
}

void Unlift(Entry* call) {
  Entry* ret = call->match;
  ret->prev->next = ret;
  if (ret->next != nullptr) ret->next->prev = ret;
  call->prev->next = call;
  call->next->prev = call;
}

absl::StatusOr<CheckResult> CheckKey(const std::string& key, const std::vector<RegisterOp>& ops,
                                     const CheckOptions& options) {
  const int n = static_cast<int>(ops.size());
  std::vector<Entry> entries(2 * static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    Entry& call = entries[2 * i];
    Entry& ret = entries[2 * i + 1];
    call = {i, true, ops[i].invoke};
    ret = {i, false, ops[i].response};
    call.match = &ret;
  }
  std::vector<Entry*> order;
  for (Entry& e : entries) order.push_back(&e);
  // Time order; at equal times calls first, so operations that touch are
  // taken as concurrent (the permissive reading of a clock tie).
  std::stable_sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    if (a->time != b->time) return a->time < b->time;
    return a->is_call && !b->is_call;
  });
  Entry head;
  Entry* last = &head;
  for (Entry* e : order) {
    last->next = e;
    e->prev = last;
    last = e;
  }

  const size_t words = (static_cast<size_t>(n) + 63) / 64;
  std::vector<uint64_t> done(words, 0);
  Value state;
  struct Frame {
    Entry* call;
    Value state;
  };
  std::vector<Frame> stack;
  std::unordered_set<std::string> seen;
  auto cache_key = [&](const Value& s) {
    std::string k(reinterpret_cast<const char*>(done.data()), words * 8);
    if (s.has_value()) {
      k.push_back('\1');
      k.append(*s);
    } else {
      k.push_back('\0');
    }
    return k;
  };
  size_t best_depth = 0;
  int stuck_op = -1;
  Value stuck_state;
  uint64_t steps = 0;
  Entry* entry = head.next;
  while (head.next != nullptr) {
    if (++steps > options.max_steps) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "linearizability check of key '", key, "' (", n, " operations) gave up after ",
          options.max_steps, " steps"));
    }
    // The list always ends in a return, which ends every pass.
    if (entry == nullptr) return absl::InternalError("linearizability check: ran off the list");
    if (entry->is_call) {
      Value next_state = state;
      if (Step(ops[entry->op], next_state)) {
        done[entry->op / 64] |= uint64_t{1} << (entry->op % 64);
        if (seen.insert(cache_key(next_state)).second) {
          stack.push_back({entry, state});
          state = std::move(next_state);
          Lift(entry);
          if (stack.size() > best_depth) best_depth = stack.size();
          entry = head.next;
          continue;
        }
        done[entry->op / 64] &= ~(uint64_t{1} << (entry->op % 64));
      }
      entry = entry->next;
    } else {
      // An operation returned before it could take effect: undo the last
      // choice and try the next one.
      if (stack.size() >= best_depth) {
        stuck_op = entry->op;
        stuck_state = state;
      }
      if (stack.empty()) {
        CheckResult result;
        result.linearizable = false;
        result.key = key;
        result.explanation = absl::StrCat(
            "key '", key, "': no order of its ", n, " operations is linearizable; the longest ",
            "prefix found holds ", best_depth, " of them, and then ",
            stuck_op >= 0 ? DescribeOp(ops[stuck_op]) : std::string("?"),
            " had to take effect while the register held ", Show(stuck_state));
        return result;
      }
      Frame frame = std::move(stack.back());
      stack.pop_back();
      state = std::move(frame.state);
      done[frame.call->op / 64] &= ~(uint64_t{1} << (frame.call->op % 64));
      Unlift(frame.call);
      entry = frame.call->next;
    }
  }
  return CheckResult{};
}

}  // namespace

std::string DescribeOp(const RegisterOp& op) {
  std::string what;
  switch (op.kind) {
    case RegisterOp::Kind::kGet:
      what = absl::StrCat("get(", op.key, ") = ", Show(op.value));
      break;
    case RegisterOp::Kind::kPut:
      what = absl::StrCat("put(", op.key, ", ", Show(op.value), ")");
      break;
    case RegisterOp::Kind::kCas:
      what = absl::StrCat("cas(", op.key, ", ", Show(op.expected), " -> ", Show(op.value), ") = ",
                          op.ok ? "true" : "false");
      break;
  }
  return absl::StrCat(what, " by client ", op.client, " in [", op.invoke, ", ",
                      op.response == kNoResponse ? std::string("no response")
                                                 : absl::StrCat(op.response),
                      "]");
}

absl::StatusOr<CheckResult> CheckLinearizable(const std::vector<RegisterOp>& history,
                                              const CheckOptions& options) {
  std::map<std::string, std::vector<RegisterOp>> by_key;
  for (const RegisterOp& op : history) {
    if (op.response < op.invoke) {
      return absl::InvalidArgumentError(
          absl::StrCat("history: response before invocation in ", DescribeOp(op)));
    }
    std::vector<RegisterOp>& ops = by_key[op.key];
    if (ops.size() >= options.max_ops_per_key) {
      return absl::InvalidArgumentError(absl::StrCat("history: key '", op.key, "' has more than ",
                                                     options.max_ops_per_key, " operations"));
    }
    ops.push_back(op);
  }
  for (const auto& [key, ops] : by_key) {
    absl::StatusOr<CheckResult> result = CheckKey(key, ops, options);
    if (!result.ok() || !result->linearizable) return result;
  }
  return CheckResult{};
}

}  // namespace peerkv::testing
