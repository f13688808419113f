// cli/policy_commands.cc: `peerkv group` and `peerkv policy` (README
// "Groups and policies"): the user's groups and keyspace policies, signed
// with the user key. With --data DIR the directory is opened itself (or,
// if a server holds it, the server is asked through its socket); with
// --server the server does it with its own user key.
#include <cstdio>
#include <memory>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "auth/ids.h"
#include "auth/policy.h"
#include "cli/command.h"
#include "common/macros.h"
#include "rpc/client.h"

namespace peerkv::cli {
namespace {

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

std::string FormatMs(int64_t ms) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMillis(ms), absl::UTCTimeZone());
}

// The operations, embedded or remote.
class PolicyBackend {
 public:
  virtual ~PolicyBackend() = default;
  virtual absl::Status SetPolicy(std::string_view ks, std::vector<auth::Who> readers,
                                 std::vector<auth::Who> writers) = 0;
  virtual absl::StatusOr<auth::Policy> GetPolicy(std::string_view ks) = 0;
  virtual absl::Status CreateGroup(std::string_view name) = 0;
  virtual absl::Status AddToGroup(std::string_view name,
                                  const std::vector<auth::Member>& members) = 0;
  virtual absl::Status RemoveFromGroup(std::string_view name, const auth::Member& member) = 0;
  virtual absl::StatusOr<std::vector<auth::Group>> ListGroups(
      std::optional<std::string_view> name) = 0;
};

class EmbeddedPolicy final : public PolicyBackend {
 public:
  EmbeddedPolicy(std::unique_ptr<auth::Identity> identity, std::unique_ptr<Store> store)
      : identity_(std::move(identity)), store_(std::move(store)) {}
  absl::Status SetPolicy(std::string_view ks, std::vector<auth::Who> readers,
                         std::vector<auth::Who> writers) override {
    return auth::SetPolicy(*identity_, *store_, ks, std::move(readers), std::move(writers),
                           NowMs());
  }
  absl::StatusOr<auth::Policy> GetPolicy(std::string_view ks) override {
    return auth::GetPolicy(*store_, ks);
  }
  absl::Status CreateGroup(std::string_view name) override {
    return auth::CreateGroup(*identity_, *store_, name, NowMs());
  }
  absl::Status AddToGroup(std::string_view name,
                          const std::vector<auth::Member>& members) override {
    return auth::AddToGroup(*identity_, *store_, name, members, NowMs());
  }
  absl::Status RemoveFromGroup(std::string_view name, const auth::Member& member) override {
    return auth::RemoveFromGroup(*identity_, *store_, name, member, NowMs());
  }
  absl::StatusOr<std::vector<auth::Group>> ListGroups(
      std::optional<std::string_view> name) override {
    return auth::ListGroups(*identity_, *store_, name);
  }

 private:
  std::unique_ptr<auth::Identity> identity_;
  std::unique_ptr<Store> store_;
};

class RemotePolicy final : public PolicyBackend {
 public:
  explicit RemotePolicy(std::unique_ptr<rpc::Client> client) : client_(std::move(client)) {}
  absl::Status SetPolicy(std::string_view ks, std::vector<auth::Who> readers,
                         std::vector<auth::Who> writers) override {
    return client_->SetPolicy(ks, readers, writers);
  }
  absl::StatusOr<auth::Policy> GetPolicy(std::string_view ks) override {
    return client_->GetPolicy(ks);
  }
  absl::Status CreateGroup(std::string_view name) override { return client_->CreateGroup(name); }
  absl::Status AddToGroup(std::string_view name,
                          const std::vector<auth::Member>& members) override {
    return client_->AddToGroup(name, members);
  }
  absl::Status RemoveFromGroup(std::string_view name, const auth::Member& member) override {
    return client_->RemoveFromGroup(name, member);
  }
  absl::StatusOr<std::vector<auth::Group>> ListGroups(
      std::optional<std::string_view> name) override {
    return client_->ListGroups(name);
  }

 private:
  std::unique_ptr<rpc::Client> client_;
};

absl::StatusOr<std::unique_ptr<PolicyBackend>> Remote(const std::string& address) {
  PEERKV_ASSIGN_OR_RETURN(std::unique_ptr<rpc::Client> client,
                          rpc::Client::Connect(rpc::ClientOptions{.address = address}));
  return std::unique_ptr<PolicyBackend>(new RemotePolicy(std::move(client)));
}

absl::StatusOr<std::unique_ptr<PolicyBackend>> OpenPolicyBackend(const Context& c) {
  const std::optional<std::string> data = c.args.Get("data");
  if (data.has_value() && c.args.Has("server")) {
    return absl::InvalidArgumentError("give --data DIR or --server HOST:PORT, not both");
  }
  if (!data.has_value()) return Remote(c.ServerAddress());
  if (data->empty()) return absl::InvalidArgumentError("--data must not be empty");
  if (HasLocalSocket(*data)) {
    // A server may hold DIR: ask it (its socket answers only if it runs).
    absl::StatusOr<std::unique_ptr<PolicyBackend>> remote =
        Remote("unix:" + ShortLocalSocketPath(*data));
    if (remote.ok()) return remote;
  }
  PEERKV_ASSIGN_OR_RETURN(std::unique_ptr<auth::Identity> identity, auth::Identity::Load(*data));
  StoreOptions options;
  options.dir = *data;
  options.reserved_check = auth::ReservedCheck(identity->user());
  options.replica_id_key = std::string(identity->device_key().public_key().view());
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(std::move(options));
  if (!store.ok()) return store.status();
  PEERKV_RETURN_IF_ERROR(identity->CompleteJoin(**store).status());
  return std::unique_ptr<PolicyBackend>(new EmbeddedPolicy(std::move(identity), std::move(*store)));
}

absl::StatusOr<std::vector<auth::Who>> WhoFlags(const Context& c, const std::string& flag) {
  std::vector<auth::Who> out;
  auto it = c.args.values.find(flag);
  if (it == c.args.values.end()) return out;
  if (it->second.size() > auth::kMaxPolicyEntries) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--%s is given %d times; the limit is %d", flag, it->second.size(),
        auth::kMaxPolicyEntries));
  }
  for (const std::string& text : it->second) {
    PEERKV_ASSIGN_OR_RETURN(auth::Who who, auth::ParseWho(text, "--" + flag));
    out.push_back(std::move(who));
  }
  return out;
}

std::string WhoList(const std::vector<auth::Who>& list) {
  if (list.empty()) return "owner";
  std::vector<std::string> texts;
  for (const auth::Who& w : list) texts.push_back(auth::FormatWho(w));
  return absl::StrJoin(texts, " ");
}

int RunPolicy(const Context& c) {
  const std::vector<std::string>& pos = c.args.positional;
  const std::string sub = pos.empty() ? "" : pos[0];
  if ((sub != "set" && sub != "get") || pos.size() != 2) {
    return UsageError(c.command, "expected 'policy set KS [--read WHO] [--write WHO]' or "
                                 "'policy get KS' (see peerkv policy --help)");
  }
  if (sub == "get" && (c.args.Has("read") || c.args.Has("write"))) {
    return UsageError(c.command, "--read and --write go with 'policy set'");
  }
  absl::StatusOr<std::vector<auth::Who>> readers = WhoFlags(c, "read");
  if (!readers.ok()) return Fail(c.command, readers.status());
  absl::StatusOr<std::vector<auth::Who>> writers = WhoFlags(c, "write");
  if (!writers.ok()) return Fail(c.command, writers.status());
  absl::StatusOr<std::unique_ptr<PolicyBackend>> backend = OpenPolicyBackend(c);
  if (!backend.ok()) return Fail(c.command, backend.status());
  const std::string& ks = pos[1];
  if (sub == "set") {
    const std::string read_text = WhoList(*readers), write_text = WhoList(*writers);
    absl::Status s = (*backend)->SetPolicy(ks, std::move(*readers), std::move(*writers));
    if (!s.ok()) return Fail(c.command, s);
    std::printf("policy of %s: read %s; write %s\n", ks.c_str(), read_text.c_str(),
                write_text.c_str());
    return kExitOk;
  }
  absl::StatusOr<auth::Policy> p = (*backend)->GetPolicy(ks);
  if (!p.ok()) return Fail(c.command, p.status());
  std::printf("keyspace %s\nowner %s\nread %s\nwrite %s\nset %s\n", ks.c_str(),
              auth::UserId(p->owner).c_str(), WhoList(p->readers).c_str(),
              WhoList(p->writers).c_str(), FormatMs(p->time_ms).c_str());
  // Only for a keyspace ever switched (README "Strong keyspaces").
  if (!p->modes.empty()) std::printf("mode %s\n", auth::FormatPolicyModes(p->modes).c_str());
  return kExitOk;
}

int RunGroup(const Context& c) {
  const std::vector<std::string>& pos = c.args.positional;
  const std::string sub = pos.empty() ? "" : pos[0];
  const bool ok_shape = (sub == "create" && pos.size() == 2) ||
                        (sub == "add" && pos.size() >= 3) ||
                        (sub == "remove" && pos.size() == 3) ||
                        (sub == "list" && pos.size() <= 2);
  if (!ok_shape) {
    return UsageError(c.command,
                      "expected 'group create NAME', 'group add NAME USER_ID...', 'group remove "
                      "NAME USER_ID' or 'group list [NAME]' (see peerkv group --help)");
  }
  std::vector<auth::Member> members;
  if (pos.size() - 2 > auth::kMaxGroupMembers && sub == "add") {
    return UsageError(c.command, absl::StrFormat("group add takes at most %d members",
                                                 auth::kMaxGroupMembers));
  }
  for (size_t i = 2; i < pos.size() && (sub == "add" || sub == "remove"); ++i) {
    absl::StatusOr<auth::Member> m = auth::ParseMember(pos[i], "USER_ID");
    if (!m.ok()) return Fail(c.command, m.status());
    members.push_back(std::move(*m));
  }
  if (pos.size() >= 2) {
    if (absl::Status s = auth::ValidateGroupName(pos[1], "NAME"); !s.ok()) {
      return Fail(c.command, s);
    }
  }
  absl::StatusOr<std::unique_ptr<PolicyBackend>> backend = OpenPolicyBackend(c);
  if (!backend.ok()) return Fail(c.command, backend.status());
  if (sub == "create") {
    if (absl::Status s = (*backend)->CreateGroup(pos[1]); !s.ok()) return Fail(c.command, s);
    std::printf("created group %s\n", pos[1].c_str());
    return kExitOk;
  }
  if (sub == "add") {
    if (absl::Status s = (*backend)->AddToGroup(pos[1], members); !s.ok()) {
      return Fail(c.command, s);
    }
    std::printf("added %d member%s to group %s\n", static_cast<int>(members.size()),
                members.size() == 1 ? "" : "s", pos[1].c_str());
    return kExitOk;
  }
  if (sub == "remove") {
    if (absl::Status s = (*backend)->RemoveFromGroup(pos[1], members[0]); !s.ok()) {
      return Fail(c.command, s);
    }
    std::printf("removed %s from group %s\n", pos[2].c_str(), pos[1].c_str());
    return kExitOk;
  }
  std::optional<std::string_view> name;
  if (pos.size() == 2) name = pos[1];
  absl::StatusOr<std::vector<auth::Group>> groups = (*backend)->ListGroups(name);
  if (!groups.ok()) return Fail(c.command, groups.status());
  for (const auth::Group& g : *groups) {
    if (name.has_value()) {
      for (const auth::Member& m : g.members) std::printf("%s\n", auth::FormatMember(m).c_str());
      continue;
    }
    std::vector<std::string> texts;
    for (const auth::Member& m : g.members) texts.push_back(auth::FormatMember(m));
    std::printf("%s%s%s\n", g.name.c_str(), texts.empty() ? "" : " ",
                absl::StrJoin(texts, " ").c_str());
  }
  return kExitOk;
}

}  // namespace

const std::vector<Command>& PolicyCommands() {
  static const auto* commands = new std::vector<Command>{
      {"group", "create NAME | add NAME USER_ID... | remove NAME USER_ID | list [NAME]",
       "the user's groups (who a policy may name)",
       "  create NAME              a new, empty group NAME ([a-z0-9][a-z0-9._-]{0,63})\n"
       "  add NAME USER_ID...      add users (user ids) or groups (group:OTHER) to NAME;\n"
       "                           a group that would contain itself is refused\n"
       "  remove NAME USER_ID      remove one member (USER_ID or group:OTHER)\n"
       "  list [NAME]              every group with its members, or NAME's members\n"
       "                           one per line\n"
       "Groups are records signed by the user key (only devices holding it change\n"
       "them). They replicate with the keyspaces whose policies name them: a\n"
       "group's members learn its member list. Removing a member revokes, from\n"
       "then on, what a policy gave through the group; what the member already\n"
       "has stays theirs.\n",
       {}, RunGroup, Target::kEither},
      {"policy", "set KS [--read WHO]... [--write WHO]... | get KS",
       "who may read and write a keyspace",
       "  set KS   replace KS's policy: --read and --write (repeatable) each name\n"
       "           WHO: 'owner', 'public', a user id, or a group of yours; writers\n"
       "           may also read. Without either, KS is the owner's alone.\n"
       "  get KS   print KS's policy: keyspace, owner, read, write, set TIME\n"
       "A keyspace without a policy is private to its owner's devices. Only the\n"
       "owner's devices (those holding the user key) set a policy; a keyspace\n"
       "whose policy another user signed is that user's. Every replica that holds\n"
       "the keyspace enforces it: a refused call is PermissionDenied naming the\n"
       "keyspace and the missing right.\n",
       {.with_value = {"read", "write"}, .repeatable = {"read", "write"}}, RunPolicy,
       Target::kEither},
  };
  return *commands;
}

}  // namespace peerkv::cli
