// cli/args.cc: the command-line parser.
#include "cli/args.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"

namespace peerkv::cli {

std::optional<std::string> Args::Get(const std::string& flag) const {
  auto it = values.find(flag);
  if (it == values.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

absl::StatusOr<int64_t> Args::GetInt(const std::string& flag, int64_t fallback,
                                     int64_t min, int64_t max) const {
  const std::optional<std::string> text = Get(flag);
  if (!text.has_value()) return fallback;
  return ParseInt((flag.size() == 1 ? "-" : "--") + flag, *text, min, max);
}

absl::StatusOr<int64_t> ParseInt(const std::string& name, const std::string& text,
                                 int64_t min, int64_t max) {
  int64_t value = 0;
  if (!absl::SimpleAtoi(text, &value) || value < min || value > max) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s must be an integer in %d..%d, got '%s'", name, min, max, text));
  }
  return value;
}

absl::StatusOr<Args> ParseArgs(const std::vector<std::string>& argv,
                               const FlagSpec& spec) {
  Args args;
  bool flags_done = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& arg = argv[i];
    // Single-letter flags in the style of redis-benchmark: -c 50.
    const bool short_flag = arg.size() == 2 && arg[0] == '-' && arg[1] != '-' &&
                            !(arg[1] >= '0' && arg[1] <= '9');
    if (flags_done || (!short_flag && (arg.size() < 2 || arg.rfind("--", 0) != 0))) {
      // "-" alone is a positional argument (stdin).
      args.positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_done = true;
      continue;
    }
    std::string name = arg.substr(short_flag ? 1 : 2);
    const std::string dashes = short_flag ? "-" : "--";
    std::optional<std::string> value;
    if (const size_t eq = name.find('='); !short_flag && eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (spec.switches.count(name) > 0) {
      if (value.has_value()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s%s takes no value", dashes, name));
      }
      args.switches.insert(name);
      continue;
    }
    if (spec.with_value.count(name) == 0) {
      return absl::InvalidArgumentError(absl::StrFormat("unknown flag %s%s", dashes, name));
    }
    if (!value.has_value()) {
      if (i + 1 >= argv.size()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s%s needs a value", dashes, name));
      }
      value = argv[++i];
    }
    std::vector<std::string>& slot = args.values[name];
    if (!slot.empty() && spec.repeatable.count(name) == 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s%s given more than once", dashes, name));
    }
    slot.push_back(*value);
  }
  return args;
}

}  // namespace peerkv::cli
