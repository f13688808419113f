// common/status_matchers.h: gMock matchers for absl::Status and StatusOr in
// tests (Abseil 20220623 ships none). Tests check the specific code, and
// optionally a substring of the message, never just `!ok()`.
#ifndef PEERKV_COMMON_STATUS_MATCHERS_H_
#define PEERKV_COMMON_STATUS_MATCHERS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"

namespace peerkv {
namespace testing_internal {

inline const absl::Status& GetStatus(const absl::Status& status) {
  return status;
}
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

}  // namespace testing_internal

// Matches a Status or StatusOr whose code is `code`.
MATCHER_P(StatusIs, code,
          std::string("has status code ") +
              absl::StatusCodeToString(static_cast<absl::StatusCode>(code))) {
  const absl::Status& status = testing_internal::GetStatus(arg);
  *result_listener << "status is " << status;
  return status.code() == code;
}

// Matches a Status or StatusOr whose code is `code` and whose message
// contains `substring`.
MATCHER_P2(StatusIs, code, substring,
           std::string("has status code ") +
               absl::StatusCodeToString(static_cast<absl::StatusCode>(code)) +
               " and a message containing \"" + std::string(substring) + "\"") {
  const absl::Status& status = testing_internal::GetStatus(arg);
  *result_listener << "status is " << status;
  return status.code() == code &&
         status.message().find(substring) != absl::string_view::npos;
}

// Matches an OK Status or StatusOr.
MATCHER(IsOk, "is OK") {
  const absl::Status& status = testing_internal::GetStatus(arg);
  *result_listener << "status is " << status;
  return status.ok();
}

}  // namespace peerkv

#endif  // PEERKV_COMMON_STATUS_MATCHERS_H_
