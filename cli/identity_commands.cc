// cli/identity_commands.cc: init, id, device and friend: a data
// directory's keys and the user's signed device and friend lists
// (auth/identity.h), and the identity `serve` runs as. These commands open
// the data directory itself (--data DIR, default ./peerkv-data); a server
// holding it must be stopped first, except for `id`, `device list` and
// `friend list`, which then ask the server over its local socket.
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <thread>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "auth/identity.h"
#include "auth/ids.h"
#include "cli/command.h"
#include "cli/identity.h"
#include "common/log.h"
#include "common/macros.h"
#include "rpc/client.h"
#include "rpc/status.h"
#include "store/version.h"

namespace peerkv::cli {
namespace {

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

std::string FormatMs(int64_t ms) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMillis(ms), absl::UTCTimeZone());
}

absl::StatusOr<std::string> DataDir(const Context& c) {
  if (c.args.Has("server")) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s works on a data directory (--data DIR), not on a server (--server)", c.command));
  }
  const std::string dir = c.args.Get("data").value_or(kDefaultDataDir);
  if (dir.empty()) return absl::InvalidArgumentError("--data must not be empty");
  return dir;
}

// The store of `dir`, checking reserved records against `user` (null: no
// identity yet, nothing is merged), its replica id minted from `device`
// (null: no device key yet; StoreOptions::replica_id_key). `quiet`: no log
// lines (init's own re-mint of the store it just made).
absl::StatusOr<std::unique_ptr<Store>> OpenStore(const std::string& dir,
                                                 const auth::PublicKey* user,
                                                 const auth::PublicKey* device = nullptr,
                                                 bool quiet = false) {
  StoreOptions options;
  options.dir = dir;
  if (user != nullptr) options.reserved_check = auth::ReservedCheck(*user);
  if (device != nullptr) options.replica_id_key = std::string(device->view());
  if (quiet) options.log = [](const std::string&) {};
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(std::move(options));
  if (!store.ok() && absl::IsFailedPrecondition(store.status()) &&
      store.status().message().find("in use by another process") != absl::string_view::npos) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "a server holds %s: stop it first (init, device and friend open the directory "
        "itself)",
        dir));
  }
  return store;
}

void PrintId(const auth::Identity& id, uint64_t replica_id) {
  std::printf("device %s\n", auth::DeviceId(id.device_key().public_key()).c_str());
  if (id.user_name().empty()) {
    std::printf("user %s (waiting to be added)\n", auth::UserId(id.user()).c_str());
  } else {
    std::printf("user %s %s\n", auth::UserId(id.user()).c_str(), id.user_name().c_str());
  }
  std::printf("replica %s\n", ReplicaIdToString(replica_id).c_str());
}

void PrintJoinHint(const auth::Identity& id) {
  const std::string device = auth::DeviceId(id.device_key().public_key());
  std::fprintf(stderr,
               "This device waits to be added to user %s. On a device of that user run\n"
               "  peerkv device add %s --name NAME\n"
               "and let the two sync (serve this directory with --peer to it, or the other\n"
               "way round): this device then receives its certificate and the user key.\n",
               auth::UserId(id.user()).c_str(), device.c_str());
}

// The identity of `dir` with its store, the join completed if its record
// has arrived.
struct Opened {
  std::unique_ptr<auth::Identity> identity;
  std::unique_ptr<Store> store;
};
absl::StatusOr<Opened> OpenIdentity(const std::string& dir) {
  Opened o;
  PEERKV_ASSIGN_OR_RETURN(o.identity, auth::Identity::Load(dir));
  PEERKV_ASSIGN_OR_RETURN(
      o.store, OpenStore(dir, &o.identity->user(), &o.identity->device_key().public_key()));
  PEERKV_RETURN_IF_ERROR(o.identity->CompleteJoin(*o.store).status());
  return o;
}

// For `device list` and `friend list` when OpenIdentity failed with `why`:
// if a server holds DIR, the identity (its keys are files, read without
// the store's lock) and a client of the server's local socket, through
// which the lists are read; else `why`.
struct Served {
  std::unique_ptr<auth::Identity> identity;
  std::unique_ptr<rpc::Client> client;
};
absl::StatusOr<Served> OpenServed(const std::string& dir, const absl::Status& why) {
  if (!absl::IsFailedPrecondition(why) || !HasLocalSocket(dir)) return why;
  Served s;
  PEERKV_ASSIGN_OR_RETURN(s.identity, auth::Identity::Load(dir));
  PEERKV_ASSIGN_OR_RETURN(s.client, rpc::Client::Connect(rpc::ClientOptions{
                                        .address = "unix:" + ShortLocalSocketPath(dir)}));
  return s;
}

auth::ScanPage ScanOf(rpc::Client& client) {
  return [&client](std::string_view keyspace, const ScanOptions& options) {
    return client.Scan(keyspace, options);
  };
}

// The device list starts with the device that made the user. `init --user`
// writes its record; a directory `serve` initialised gets it here, at the
// first device or friend command, so that serve itself writes nothing to
// the store (replicas of different users that are peered today, before
// links are authenticated, would otherwise never converge: neither merges
// the other's signed lists).
absl::Status EnsureOwnDeviceRecord(Opened& o) {
  if (!o.identity->holds_user_key()) return absl::OkStatus();
  const auth::PublicKey self = o.identity->device_key().public_key();
  PEERKV_ASSIGN_OR_RETURN(const std::vector<auth::DeviceEntry> devices,
                          o.identity->Devices(*o.store));
  for (const auth::DeviceEntry& d : devices) {
    if (d.device == self) return absl::OkStatus();
  }
  return o.identity->AddDevice(*o.store, self, DefaultDeviceName(), NowMs());
}

int RunInit(const Context& c) {
  if (absl::Status s = ExpectPositional(c, 0, 0, "no arguments"); !s.ok()) {
    return Fail(c.command, s);
  }
  absl::StatusOr<std::string> dir = DataDir(c);
  if (!dir.ok()) return Fail(c.command, dir.status());
  const std::optional<std::string> user = c.args.Get("user");
  const std::optional<std::string> join = c.args.Get("join");
  if (user.has_value() == join.has_value()) {
    return UsageError(c.command, "give --user NAME (a new user) or --join USER_ID (a new device "
                                 "of a user), one of them");
  }
  if (join.has_value() && c.args.Has("name")) {
    return UsageError(c.command, "--name goes with --user; a joining device is named by "
                                 "'device add ID --name N' on the device that adds it");
  }
  const std::string device_name = c.args.Get("name").value_or(DefaultDeviceName());
  if (user.has_value()) {
    if (absl::Status s = auth::ValidateName(*user, "--user"); !s.ok()) return Fail(c.command, s);
    if (absl::Status s = auth::ValidateName(device_name, "--name"); !s.ok()) {
      return Fail(c.command, s);
    }
  }
  absl::StatusOr<auth::PublicKey> join_user;
  if (join.has_value()) {
    join_user = auth::ParseUserId(*join, "USER_ID");
    if (!join_user.ok()) return Fail(c.command, join_user.status());
  }
  // The store first: its lock keeps a running server (or a second init)
  // out while the keys are made.
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(*dir, nullptr);
  if (!store.ok()) return Fail(c.command, store.status());
  absl::StatusOr<std::unique_ptr<auth::Identity>> id =
      user.has_value() ? auth::Identity::CreateUser(*dir, *user)
                       : auth::Identity::CreateJoining(*dir, *join_user);
  if (!id.ok()) return Fail(c.command, id.status());
  // Made before the device key (its lock kept a server out), the store
  // takes a replica id minted from the key now: reopened with it while its
  // log is still empty, it re-mints in place (Store::Open).
  store->reset();
  store = OpenStore(*dir, nullptr, &(*id)->device_key().public_key(), /*quiet=*/true);
  if (!store.ok()) return Fail(c.command, store.status());
  if (user.has_value()) {
    absl::Status added =
        (*id)->AddDevice(**store, (*id)->device_key().public_key(), device_name, NowMs());
    if (!added.ok()) return Fail(c.command, added);
  }
  PrintId(**id, (*store)->replica_id());
  if (join.has_value()) PrintJoinHint(**id);
  return kExitOk;
}

int RunId(const Context& c) {
  if (absl::Status s = ExpectPositional(c, 0, 0, "no arguments"); !s.ok()) {
    return Fail(c.command, s);
  }
  absl::StatusOr<std::string> dir = DataDir(c);
  if (!dir.ok()) return Fail(c.command, dir.status());
  absl::StatusOr<Opened> o = OpenIdentity(*dir);
  if (o.ok()) {
    PrintId(*o->identity, o->store->replica_id());
    return kExitOk;
  }
  // A server holds DIR: the replica id is the server's, asked over its
  // socket.
  absl::StatusOr<Served> served = OpenServed(*dir, o.status());
  if (!served.ok()) return Fail(c.command, served.status());
  absl::StatusOr<rpc::ServerStatus> status = served->client->Status();
  if (!status.ok()) return Fail(c.command, status.status());
  PrintId(*served->identity, status->replica_id);
  return kExitOk;
}

int ListDevices(const Context& c, const std::string& dir) {
  std::vector<std::string> invalid;
  absl::StatusOr<std::vector<auth::DeviceEntry>> devices;
  std::unique_ptr<auth::Identity> identity;
  absl::StatusOr<Opened> o = OpenIdentity(dir);
  if (o.ok()) {
    if (absl::Status s = EnsureOwnDeviceRecord(*o); !s.ok()) return Fail(c.command, s);
    devices = o->identity->Devices(*o->store, &invalid);
    identity = std::move(o->identity);
  } else {
    absl::StatusOr<Served> served = OpenServed(dir, o.status());
    if (!served.ok()) return Fail(c.command, served.status());
    devices = served->identity->Devices(ScanOf(*served->client), &invalid);
    identity = std::move(served->identity);
  }
  if (!devices.ok()) return Fail(c.command, devices.status());
  for (const std::string& why : invalid) std::fprintf(stderr, "skipped: %s\n", why.c_str());
  const auth::PublicKey self = identity->device_key().public_key();
  for (const auth::DeviceEntry& d : *devices) {
    std::string line = auth::DeviceId(d.device) + " " + (d.name.empty() ? "(unknown)" : d.name);
    if (!d.name.empty()) {
      line += " added " + FormatMs(d.added_ms);
      if (!d.removed_ms.has_value()) {
        const bool expired = NowMs() - d.expires_ms > auth::kExpiryToleranceMs;
        line += (expired ? " EXPIRED " : " expires ") + FormatMs(d.expires_ms);
        if (d.legacy) line += " (no expiry recorded: a year after it was added)";
      }
    }
    if (d.removed_ms.has_value()) line += " removed " + FormatMs(*d.removed_ms);
    if (d.device == self) line += " (this device)";
    std::printf("%s\n", line.c_str());
  }
  return kExitOk;
}

int RunDevice(const Context& c) {
  const std::vector<std::string>& pos = c.args.positional;
  const std::string sub = pos.empty() ? "" : pos[0];
  const std::string what = "peerkv device " + sub;
  if (sub == "list") {
    if (pos.size() != 1) return UsageError(c.command, "expected 'device list' with no arguments");
  } else if (sub == "add" || sub == "remove" || sub == "renew") {
    if (pos.size() != 2) {
      return UsageError(c.command, absl::StrFormat("expected 'device %s DEVICE_ID'", sub));
    }
  } else {
    return UsageError(c.command, absl::StrFormat(
        "expected add DEVICE_ID, list, renew DEVICE_ID or remove DEVICE_ID%s (see peerkv device "
        "--help)",
        sub.empty() ? "" : ", got '" + sub + "'"));
  }
  if (c.args.Has("name") && sub != "add") {
    return UsageError(c.command, "--name goes with 'device add'");
  }
  if (c.args.Has("valid-for") && sub != "add" && sub != "renew") {
    return UsageError(c.command, "--valid-for goes with 'device add' and 'device renew'");
  }
  std::optional<int64_t> valid_for;
  if (const std::optional<std::string> v = c.args.Get("valid-for")) {
    absl::StatusOr<int64_t> parsed = auth::ParseValidity(*v, "--valid-for");
    if (!parsed.ok()) return Fail(c.command, parsed.status());
    valid_for = *parsed;
  }
  absl::StatusOr<std::string> dir = DataDir(c);
  if (!dir.ok()) return Fail(c.command, dir.status());
  if (sub == "list") return ListDevices(c, *dir);
  absl::StatusOr<auth::PublicKey> device = auth::ParseDeviceId(pos[1], "DEVICE_ID");
  if (!device.ok()) return Fail(c.command, device.status());
  const std::string name = c.args.Get("name").value_or("unnamed");
  if (absl::Status s = auth::ValidateName(name, "--name"); !s.ok()) return Fail(c.command, s);
  absl::StatusOr<Opened> o = OpenIdentity(*dir);
  if (!o.ok()) return Fail(c.command, o.status());
  if (absl::Status s = EnsureOwnDeviceRecord(*o); !s.ok()) return Fail(c.command, s);
  if (sub == "add") {
    const int64_t now = NowMs();
    const int64_t validity = valid_for.value_or(auth::kDefaultValidityMs);
    absl::Status s = o->identity->AddDevice(*o->store, *device, name, now, validity);
    if (!s.ok()) return Fail(c.command, s);
    std::printf("added device %s as %s, certified until %s\n", auth::DeviceId(*device).c_str(),
                name.c_str(), FormatMs(now + validity).c_str());
    return kExitOk;
  }
  if (sub == "renew") {
    absl::StatusOr<auth::DeviceCertificate> cert =
        o->identity->RenewDevice(*o->store, *device, NowMs(), valid_for);
    if (!cert.ok()) return Fail(c.command, cert.status());
    std::printf("renewed device %s (%s), certified until %s\n", auth::DeviceId(*device).c_str(),
                cert->name.c_str(), FormatMs(cert->ExpiresMs()).c_str());
    return kExitOk;
  }
  absl::Status s = o->identity->RemoveDevice(*o->store, *device, NowMs());
  if (!s.ok()) return Fail(c.command, s);
  std::printf("removed device %s\n", auth::DeviceId(*device).c_str());
  return kExitOk;
}

int ListFriends(const Context& c, const std::string& dir) {
  std::vector<std::string> invalid;
  absl::StatusOr<std::vector<auth::FriendEntry>> friends;
  absl::StatusOr<Opened> o = OpenIdentity(dir);
  if (o.ok()) {
    if (absl::Status s = EnsureOwnDeviceRecord(*o); !s.ok()) return Fail(c.command, s);
    friends = o->identity->Friends(*o->store, &invalid);
  } else {
    absl::StatusOr<Served> served = OpenServed(dir, o.status());
    if (!served.ok()) return Fail(c.command, served.status());
    friends = served->identity->Friends(ScanOf(*served->client), &invalid);
  }
  if (!friends.ok()) return Fail(c.command, friends.status());
  for (const std::string& why : invalid) std::fprintf(stderr, "skipped: %s\n", why.c_str());
  for (const auth::FriendEntry& f : *friends) {
    std::printf("%s %s added %s\n", auth::UserId(f.user).c_str(), f.name.c_str(),
                FormatMs(f.added_ms).c_str());
  }
  return kExitOk;
}

int RunFriend(const Context& c) {
  const std::vector<std::string>& pos = c.args.positional;
  const std::string sub = pos.empty() ? "" : pos[0];
  if (sub == "list") {
    if (pos.size() != 1) return UsageError(c.command, "expected 'friend list' with no arguments");
  } else if (sub == "add" || sub == "remove") {
    if (pos.size() != 2) {
      return UsageError(c.command, absl::StrFormat("expected 'friend %s USER_ID'", sub));
    }
  } else {
    return UsageError(c.command, absl::StrFormat(
        "expected add USER_ID --name N, list or remove USER_ID%s (see peerkv friend --help)",
        sub.empty() ? "" : ", got '" + sub + "'"));
  }
  if (sub == "add" && !c.args.Has("name")) {
    return UsageError(c.command, "friend add needs --name N (how the friend is shown)");
  }
  if (sub != "add" && c.args.Has("name")) {
    return UsageError(c.command, "--name goes with 'friend add'");
  }
  absl::StatusOr<std::string> dir = DataDir(c);
  if (!dir.ok()) return Fail(c.command, dir.status());
  if (sub == "list") return ListFriends(c, *dir);
  absl::StatusOr<auth::PublicKey> user = auth::ParseUserId(pos[1], "USER_ID");
  if (!user.ok()) return Fail(c.command, user.status());
  const std::string name = c.args.Get("name").value_or("");
  if (sub == "add") {
    if (absl::Status s = auth::ValidateName(name, "--name"); !s.ok()) return Fail(c.command, s);
  }
  absl::StatusOr<Opened> o = OpenIdentity(*dir);
  if (!o.ok()) return Fail(c.command, o.status());
  if (absl::Status s = EnsureOwnDeviceRecord(*o); !s.ok()) return Fail(c.command, s);
  if (sub == "add") {
    absl::Status s = o->identity->AddFriend(*o->store, *user, name, NowMs());
    if (!s.ok()) return Fail(c.command, s);
    std::printf("added friend %s as %s\n", auth::UserId(*user).c_str(), name.c_str());
    return kExitOk;
  }
  absl::Status s = o->identity->RemoveFriend(*o->store, *user, NowMs());
  if (!s.ok()) return Fail(c.command, s);
  std::printf("removed friend %s\n", auth::UserId(*user).c_str());
  return kExitOk;
}

}  // namespace

std::string DefaultDeviceName() {
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) == 0 && auth::ValidateName(host, "hostname").ok()) {
    return host;
  }
  return "device";
}

absl::StatusOr<rpc::TlsIdentity> TlsIdentityOf(const auth::Identity& identity) {
  rpc::TlsIdentity out;
  PEERKV_ASSIGN_OR_RETURN(std::unique_ptr<auth::SigningKey> key,
                          auth::SigningKey::FromSeed(identity.device_key().seed()));
  out.key = std::move(key);
  if (identity.holds_user_key()) {
    PEERKV_ASSIGN_OR_RETURN(out.device_certificate,
                            identity.IssueOwnCertificate(DefaultDeviceName(),
                                                         absl::ToUnixMillis(absl::Now())));
  }
  return out;
}

absl::StatusOr<rpc::TlsIdentity> ShownTlsIdentity(const auth::Identity& identity, Store& store,
                                                  int64_t now_ms) {
  PEERKV_ASSIGN_OR_RETURN(std::optional<auth::DeviceCertificate> listed,
                          identity.ListedCertificate(store, identity.device_key().public_key()));
  if (!listed.has_value() || !auth::CheckNotExpired(*listed, now_ms, 0).ok()) {
    return TlsIdentityOf(identity);
  }
  rpc::TlsIdentity out;
  PEERKV_ASSIGN_OR_RETURN(out.key, auth::SigningKey::FromSeed(identity.device_key().seed()));
  out.device_certificate = listed->Encode();
  return out;
}

absl::Status InstallClientIdentity(const std::string& dir) {
  absl::StatusOr<std::unique_ptr<auth::Identity>> id = auth::Identity::Load(dir);
  if (absl::IsNotFound(id.status())) {
    return absl::NotFoundError(absl::StrFormat(
        "--identity %s has no identity; make one with 'peerkv --data %s init --join USER_ID' "
        "and add it with 'peerkv device add' on a device of that user",
        dir, dir));
  }
  if (!id.ok()) return id.status();
  PEERKV_ASSIGN_OR_RETURN(rpc::TlsIdentity tls, TlsIdentityOf(**id));
  rpc::SetDefaultClientTls(std::move(tls), (*id)->user());
  return absl::OkStatus();
}

absl::StatusOr<ServeIdentity> PrepareServeIdentity(const std::string& data_dir,
                                                   const std::string& user_name,
                                                   StoreOptions* options) {
  ServeIdentity out;
  absl::StatusOr<std::unique_ptr<auth::Identity>> id = auth::Identity::Load(data_dir);
  if (absl::IsNotFound(id.status())) {
    PEERKV_RETURN_IF_ERROR(auth::ValidateName(user_name, "--user"));
    id = auth::Identity::CreateUser(data_dir, user_name);
    out.created = true;
  }
  if (!id.ok()) return id.status();
  out.identity = std::move(*id);
  options->reserved_check = auth::ReservedCheck(out.identity->user());
  // Replica ids minted from the device key, which peers check each hello
  // against (rpc::CheckReplicaClaim); an older directory forks to one.
  options->replica_id_key = std::string(out.identity->device_key().public_key().view());
  return out;
}

// Completes a pending join on its own thread (the commit listener runs on
// the store's writer thread, which must not read the store).
class PendingJoin : public JoinWatcher {
 public:
  PendingJoin(auth::Identity& id, Store& store) : id_(id), store_(store) {
    own_key_ = "device/" + auth::DeviceId(id_.device_key().public_key());
    listener_ = store_.AddCommitListener([this](const Store::CommitInfo& info) {
      for (const CommitChange& change : *info.changes) {
        if (change.keyspace == auth::kDevicesKeyspace && change.key == own_key_) {
          absl::MutexLock lock(&mu_);
          pending_ = true;
        }
      }
    });
    thread_ = std::thread([this] { Run(); });
  }
  void OnJoined(std::function<void()> joined) override {
    {
      absl::MutexLock lock(&mu_);
      if (!joined_) {
        on_joined_ = std::move(joined);
        return;
      }
    }
    joined();
  }

  ~PendingJoin() override {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    thread_.join();
    store_.RemoveCommitListener(listener_);
  }

 private:
  void Run() {
    for (;;) {
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](PendingJoin* w) { return w->pending_ || w->stop_; }, this));
        if (stop_) return;
        pending_ = false;
      }
      absl::StatusOr<bool> joined = id_.CompleteJoin(store_);
      if (!joined.ok()) {
        LogLine(absl::StrFormat("peerkv: this device's record arrived but the join failed: %s",
                                joined.status().message()));
      } else if (*joined) {
        LogLine(absl::StrFormat("peerkv: this device is now a device of user %s %s",
                                auth::UserId(id_.user()), id_.user_name()));
        std::function<void()> then;
        {
          absl::MutexLock lock(&mu_);
          joined_ = true;
          then = std::move(on_joined_);
        }
        if (then) then();
        return;
      }
    }
  }

  auth::Identity& id_;
  Store& store_;
  std::string own_key_;
  int listener_ = 0;
  absl::Mutex mu_;
  bool pending_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool joined_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> on_joined_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

absl::StatusOr<std::unique_ptr<JoinWatcher>> StartServeIdentity(ServeIdentity& id, Store& store) {
  auth::Identity& identity = *id.identity;
  PEERKV_ASSIGN_OR_RETURN(const bool joined, identity.CompleteJoin(store));
  LogLine(absl::StrFormat(
      "peerkv: %sdevice %s, user %s %s", id.created ? "created identity: " : "",
      auth::DeviceId(identity.device_key().public_key()), auth::UserId(identity.user()),
      joined ? identity.user_name() : "(this device waits to be added)"));
  if (joined) return std::unique_ptr<JoinWatcher>();
  return std::unique_ptr<JoinWatcher>(new PendingJoin(identity, store));
}

void StopJoinWatcher(std::unique_ptr<JoinWatcher>& watcher) { watcher.reset(); }

namespace {

class Renewer : public CertificateRenewer {
 public:
  Renewer(auth::Identity& id, Store& store, const WallClock& clock, absl::Duration interval,
          std::string shown, std::function<void(const rpc::TlsIdentity&)> show)
      : id_(id), store_(store), clock_(clock), interval_(interval), show_(std::move(show)),
        shown_(std::move(shown)), shown_issued_ms_(NowMs()) {
    absl::StatusOr<std::optional<auth::DeviceCertificate>> listed =
        id_.ListedCertificate(store_, id_.device_key().public_key());
    shown_self_issued_ = !(listed.ok() && listed->has_value() && (*listed)->Encode() == shown_);
    thread_ = std::thread([this] { Run(); });
  }
  ~Renewer() override {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    thread_.join();
  }

 private:
  void Run() {
    for (;;) {
      absl::StatusOr<std::vector<auth::DeviceCertificate>> renewed =
          id_.RenewDue(store_, clock_.NowMillis());
      if (!renewed.ok()) {
        LogLine(absl::StrFormat("peerkv: renewing device certificates failed: %s",
                                renewed.status().message()));
      } else {
        for (const auth::DeviceCertificate& cert : *renewed) {
          LogLine(absl::StrFormat("peerkv: renewed the certificate of device %s (%s) until %s",
                                  auth::DeviceId(cert.device), cert.name,
                                  FormatMs(cert.ExpiresMs())));
        }
      }
      if (show_) ShowCurrent();
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stop_), interval_)) return;
    }
  }

  // Shows the listed certificate if it changed (a renewal) and has not
  // expired; else keeps a self-issued one until the last third of its
  // validity (it was issued at the system clock, for the default one).
  void ShowCurrent() {
    absl::StatusOr<std::optional<auth::DeviceCertificate>> listed =
        id_.ListedCertificate(store_, id_.device_key().public_key());
    if (!listed.ok()) {
      LogLine(absl::StrFormat("peerkv: reading this device's certificate failed: %s",
                              listed.status().message()));
      return;
    }
    const bool listed_valid = listed->has_value() &&
                              auth::CheckNotExpired(**listed, clock_.NowMillis(), 0).ok();
    if (listed_valid ? (*listed)->Encode() == shown_
                     : shown_self_issued_ &&
                           NowMs() - shown_issued_ms_ <= auth::kDefaultValidityMs * 2 / 3) {
      return;
    }
    absl::StatusOr<rpc::TlsIdentity> tls = ShownTlsIdentity(id_, store_, clock_.NowMillis());
    if (!tls.ok()) {
      LogLine(absl::StrFormat("peerkv: renewing the TLS certificate failed: %s",
                              tls.status().message()));
      return;
    }
    shown_ = tls->device_certificate;
    shown_self_issued_ = !listed_valid;
    shown_issued_ms_ = NowMs();
    show_(*tls);
  }

  auth::Identity& id_;
  Store& store_;
  const WallClock& clock_;
  const absl::Duration interval_;
  const std::function<void(const rpc::TlsIdentity&)> show_;
  // The certificate shown (encoded), whether it was issued by this device
  // rather than read from the list, and when it was chosen (system clock).
  std::string shown_;
  bool shown_self_issued_ = false;
  int64_t shown_issued_ms_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace

std::unique_ptr<CertificateRenewer> StartCertificateRenewer(
    auth::Identity& identity, Store& store, const WallClock& clock, absl::Duration interval,
    std::string shown, std::function<void(const rpc::TlsIdentity&)> show) {
  if (!identity.holds_user_key()) return nullptr;
  return std::make_unique<Renewer>(identity, store, clock, interval, std::move(shown),
                                   std::move(show));
}

const std::vector<Command>& IdentityCommands() {
  static const auto* commands = new std::vector<Command>{
      {"init", "--user NAME [--name DEVICE_NAME] | --join USER_ID",
       "make this data directory's device key (and user key)",
       "  --user NAME     a new user NAME: makes the device key, the user key and\n"
       "                  this device's certificate (the first device of NAME)\n"
       "  --name N        this device's name in the device list (default: the\n"
       "                  hostname)\n"
       "  --join USER_ID  a new device of an existing user: makes the device key\n"
       "                  and prints the device id; run 'peerkv device add ID' on a\n"
       "                  device of that user, then let the two sync\n"
       "Prints 'device ID', 'user ID NAME' and 'replica HEX'. Keys live in DIR/keys\n"
       "(mode 0700; files 0600) and never leave it. Fails if DIR is initialised\n"
       "already or a server holds it. 'serve' on an uninitialised directory does\n"
       "'init --user' by itself (--user, default 'me').\n",
       {.with_value = {"user", "join", "name"}}, RunInit, Target::kData},
      {"id", "", "print this directory's device id, user id and name, and replica id",
       "Prints 'device ID', 'user ID NAME' and 'replica HEX', one per line. On a\n"
       "device waiting to be added, the user line says so; if the device's record\n"
       "has arrived, the join is completed first.\n",
       {}, RunId, Target::kData},
      {"device",
       "add DEVICE_ID [--name N] [--valid-for D] | list | renew DEVICE_ID [--valid-for D] | "
       "remove DEVICE_ID",
       "add, list, renew or remove the user's devices",
       "  add DEVICE_ID [--name N]  certify DEVICE_ID (printed by its 'init --join')\n"
       "                            as a device of this user, named N (default\n"
       "                            'unnamed'); it receives its certificate and the\n"
       "                            user key (sealed to it) when it syncs\n"
       "  --valid-for D             how long the certificate is valid: 365d (the\n"
       "                            default), 30d, 12h, 1y...; 1m to 3650d\n"
       "  list                      every device: ID NAME added TIME expires TIME\n"
       "                            (EXPIRED TIME once past) [removed TIME]\n"
       "  renew DEVICE_ID           certify it again from now, for --valid-for D or\n"
       "                            as long as its certificate was valid; the way\n"
       "                            back for a device whose certificate expired\n"
       "  remove DEVICE_ID          remove a device (a lost one): recorded for good;\n"
       "                            a removed device is never added again\n"
       "Runs on any device holding the user key. The list is signed by the user\n"
       "key and replicates to the user's devices; every device that has the\n"
       "removal refuses the removed device's TLS connections, and closes those\n"
       "it had open when the removal arrived. A device whose\n"
       "certificate expired (5 minutes of clock skew allowed) is refused too, until\n"
       "renewed. 'serve' on a device holding the user key renews, at start and\n"
       "hourly, every certificate in the last third of its validity that has not\n"
       "expired yet; an expired one only 'device renew' brings back. A server\n"
       "shows its own listed certificate on new links, a renewed one from its next\n"
       "pass; it closes a link the moment its peer's certificate expires. 'device\n"
       "list' on a directory a server holds asks the server (its local socket).\n",
       {.with_value = {"name", "valid-for"}}, RunDevice, Target::kData},
      {"friend", "add USER_ID --name N | list | remove USER_ID",
       "add, list or remove friends (users whose devices may connect)",
       "  add USER_ID --name N  trust user USER_ID, shown as N\n"
       "  list                  current friends: USER_ID NAME added TIME (through\n"
       "                        the server's local socket while one holds DIR)\n"
       "  remove USER_ID        stop trusting USER_ID (its devices' open\n"
       "                        connections close once the removal arrives)\n"
       "A friend's certified devices may connect (TLS) as that friend: they may\n"
       "call the Kv API on the keyspaces your policies let the friend read or\n"
       "write (see peerkv policy --help), nothing else.\n",
       {.with_value = {"name"}}, RunFriend, Target::kData},
  };
  return *commands;
}

}  // namespace peerkv::cli
