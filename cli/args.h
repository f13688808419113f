// cli/args.h: command-line parsing for the peerkv command: positional
// arguments, `--flag value`, `--flag=value` and boolean switches, with
// errors that name the argument. Numbers are checked against their range.
#ifndef PEERKV_CLI_ARGS_H_
#define PEERKV_CLI_ARGS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace peerkv::cli {

// Which flags a command accepts: those that take a value, and switches.
// A flag may repeat only if listed in `repeatable`.
struct FlagSpec {
  std::set<std::string> with_value;
  std::set<std::string> switches;
  std::set<std::string> repeatable;
};

struct Args {
  std::vector<std::string> positional;
  // Every value given for each flag, in order.
  std::map<std::string, std::vector<std::string>> values;
  std::set<std::string> switches;

  bool Has(const std::string& flag) const {
    return values.count(flag) > 0 || switches.count(flag) > 0;
  }
  // The last value of `flag`, or nullopt.
  std::optional<std::string> Get(const std::string& flag) const;
  // The value of `flag` as an integer in [min, max]; `fallback` if absent.
  // InvalidArgument names the flag and the range.
  absl::StatusOr<int64_t> GetInt(const std::string& flag, int64_t fallback,
                                 int64_t min, int64_t max) const;
};

// Parses `argv` (without the program and command names). "--" ends flags.
// InvalidArgument for unknown flags, missing values and repeats.
absl::StatusOr<Args> ParseArgs(const std::vector<std::string>& argv,
                               const FlagSpec& spec);

// Parses an integer in [min, max] for the argument called `name`.
absl::StatusOr<int64_t> ParseInt(const std::string& name, const std::string& text,
                                 int64_t min, int64_t max);

}  // namespace peerkv::cli

#endif  // PEERKV_CLI_ARGS_H_
