// tests/linearizability_checker.h: checks that a recorded history of
// operations on registers (one per key) is linearizable: that there is one
// order of the operations, each taking effect at an instant between its
// invocation and its response, in which every result is what a single
// register would give. Wing & Gong's search with Lowe's memoisation of
// (operations done, register state), as in Knossos and Porcupine; keys are
// independent registers and are checked one by one. Bounded by a step budget.
#ifndef PEERKV_TESTS_LINEARIZABILITY_CHECKER_H_
#define PEERKV_TESTS_LINEARIZABILITY_CHECKER_H_

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace peerkv::testing {

// No response was seen (a timeout, a crash): the operation may have taken
// effect at any instant after its invocation, or never.
inline constexpr int64_t kNoResponse = std::numeric_limits<int64_t>::max();

// One operation on the register `key`. Register values are strings;
// nullopt is "absent" (never written, or deleted), the initial state.
struct RegisterOp {
  enum class Kind {
    kGet,  // read: `value` is what it returned
    kPut,  // write `value` (nullopt: delete); always succeeds
    kCas,  // if the register holds `expected`, write `value`; `ok` says
           // whether it did (a failed CAS changes nothing)
  };
  Kind kind = Kind::kGet;
  std::string key;
  // Any clock common to all clients (e.g. steady_clock nanoseconds).
  // REQUIRES: invoke <= response.
  int64_t invoke = 0;
  int64_t response = kNoResponse;
  std::optional<std::string> value;
  std::optional<std::string> expected;  // kCas only
  bool ok = true;                       // kCas only, with a response
  // Who issued it (for messages only).
  int client = 0;
};

struct CheckOptions {
  // Search steps allowed per key before giving up (ResourceExhausted).
  uint64_t max_steps = 10'000'000;
  // Operations allowed per key (InvalidArgument above it).
  size_t max_ops_per_key = 10'000;
};

struct CheckResult {
  bool linearizable = true;
  // When not: the key, and what could not be placed.
  std::string key;
  std::string explanation;
};

// Checks `history`. InvalidArgument for a malformed operation (response
// before invocation, a key with too many operations); ResourceExhausted when
// a key's search exceeds the step budget (neither proven nor refuted).
absl::StatusOr<CheckResult> CheckLinearizable(const std::vector<RegisterOp>& history,
                                              const CheckOptions& options = {});

// "cas(k, a -> b) = true by client 3 in [10, 20]", for messages.
std::string DescribeOp(const RegisterOp& op);

}  // namespace peerkv::testing

#endif  // PEERKV_TESTS_LINEARIZABILITY_CHECKER_H_
