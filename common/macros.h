// common/macros.h: the project's assertion and status-propagation macros.
// The Abseil on Debian 12 (20220623) has no ABSL_CHECK and no
// ABSL_RETURN_IF_ERROR, so peerkv defines them once here. Assertions stay on
// in release builds: a broken invariant in a database must stop the process
// before it writes, not after.
#ifndef PEERKV_COMMON_MACROS_H_
#define PEERKV_COMMON_MACROS_H_

#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Aborts the process with file, line and the failed condition when `cond`
// is false. Never compiled out.
#define PEERKV_CHECK(cond)                                              \
  do {                                                                  \
    if (!(cond)) {                                                      \
      std::fprintf(stderr, "%s:%d: PEERKV_CHECK failed: %s\n", __FILE__, \
                   __LINE__, #cond);                                    \
      std::abort();                                                     \
    }                                                                   \
  } while (0)

// Evaluates `expr` (an absl::Status) and returns it from the enclosing
// function if it is not OK.
#define PEERKV_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::absl::Status peerkv_status_ = (expr);          \
    if (!peerkv_status_.ok()) return peerkv_status_; \
  } while (0)

#define PEERKV_MACRO_CONCAT_INNER(a, b) a##b
#define PEERKV_MACRO_CONCAT(a, b) PEERKV_MACRO_CONCAT_INNER(a, b)

// Evaluates `rexpr` (an absl::StatusOr<T>); on error returns its status from
// the enclosing function, otherwise moves the value into `lhs`, which may be
// a declaration (`auto x`) or an existing variable.
#define PEERKV_ASSIGN_OR_RETURN(lhs, rexpr) \
  PEERKV_ASSIGN_OR_RETURN_IMPL(PEERKV_MACRO_CONCAT(peerkv_or_, __LINE__), lhs, rexpr)

#define PEERKV_ASSIGN_OR_RETURN_IMPL(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                 \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()

#endif  // PEERKV_COMMON_MACROS_H_
