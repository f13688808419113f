// cli/token_command.cc: `peerkv token create NAME | list | remove NAME`:
// the access tokens of a data directory (auth/tokens.h), which the HTTP
// (and RESP) front ends accept as bearer tokens. Works on the directory's
// files directly, also while a server runs (it sees the change at the
// next request).
#include <cstdio>

#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "auth/tokens.h"
#include "cli/command.h"

namespace peerkv::cli {
namespace {

int RunToken(const Context& c) {
  const std::vector<std::string>& p = c.args.positional;
  if (p.empty() || (p[0] != "create" && p[0] != "list" && p[0] != "remove")) {
    return UsageError(c.command, "give `token create NAME`, `token list` or `token remove NAME`");
  }
  if ((p[0] == "list") != (p.size() == 1) || p.size() > 2) {
    return UsageError(c.command, p[0] == "list" ? "token list takes no arguments"
                                                : "token " + p[0] + " takes one NAME");
  }
  if (c.args.Has("server")) {
    return UsageError(c.command, "token works on a data directory (--data DIR), not --server");
  }
  const std::string dir = c.args.Get("data").value_or(kDefaultDataDir);
  if (dir.empty()) return UsageError(c.command, "--data must not be empty");
  auth::TokenStore tokens(dir);
  if (p[0] == "create") {
    absl::StatusOr<std::string> secret = tokens.Create(p[1]);
    if (!secret.ok()) return Fail(c.command, secret.status());
    std::printf("%s\n", secret->c_str());
    std::fprintf(stderr,
                 "token '%s' created; the secret above is shown only now. Send it as\n"
                 "  Authorization: Bearer %s\n",
                 p[1].c_str(), secret->c_str());
    return kExitOk;
  }
  if (p[0] == "remove") {
    absl::Status removed = tokens.Remove(p[1]);
    if (!removed.ok()) return Fail(c.command, removed);
    return kExitOk;
  }
  absl::StatusOr<std::vector<auth::TokenInfo>> list = tokens.List();
  if (!list.ok()) return Fail(c.command, list.status());
  for (const auth::TokenInfo& t : *list) {
    std::printf("%s created %s\n", t.name.c_str(),
                absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(t.created_unix),
                                 absl::UTCTimeZone())
                    .c_str());
  }
  return kExitOk;
}

}  // namespace

const Command& TokenCommand() {
  static const auto* command = new Command{
      "token", "create NAME | list | remove NAME",
      "create, list or remove access tokens for the HTTP and RESP front ends",
      "  create NAME  make a token called NAME (1..64 of [A-Za-z0-9._-]) and print\n"
      "               its secret (pkv_...) on stdout: the only time it is shown\n"
      "  list         every token: NAME created TIME\n"
      "  remove NAME  revoke the token NAME\n"
      "Only a hash of each secret is kept, in DIR/keys/tokens (mode 0600). A\n"
      "running server sees tokens created or removed from its next request on.\n",
      {}, RunToken};
  return *command;
}

}  // namespace peerkv::cli
