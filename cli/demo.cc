// cli/demo.cc: `peerkv demo`, the seed's first scenario on three real
// replica servers (phone, tablet, pc) on loopback, in a temporary
// directory, on free ports. A device that is "asleep" or "offline" has its
// server stopped; the user's app keeps writing to its local store, as an
// offline device does. Devices that are up replicate over Cap'n Proto RPC:
// anti-entropy pulls, nudges after each write, gossip rounds.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "auth/identity.h"
#include "auth/ids.h"
#include "cli/command.h"
#include "cli/identity.h"
#include "cli/text.h"
#include "common/macros.h"
#include "rpc/peer_auth.h"
#include "rpc/server.h"
#include "store/store.h"

namespace peerkv::cli {
namespace {

const char* const kKeyspaces[] = {"contacts", "drafts", "sent"};
constexpr absl::Duration kConvergeTimeout = absl::Seconds(30);

struct Device {
  std::string name;
  std::unique_ptr<auth::Identity> identity;
  std::unique_ptr<Store> store;
  std::unique_ptr<rpc::Server> server;  // null while asleep
  std::string address;                  // kept across restarts
  int listener = 0;
};

class Demo {
 public:
  explicit Demo(std::string dir) : dir_(std::move(dir)), start_(absl::Now()) {}

  ~Demo() {
    for (Device& d : devices_) {
      d.server.reset();
      if (d.store != nullptr) d.store->RemoveCommitListener(d.listener);
    }
  }

  absl::Status Run() {
    // Pairing, as README's walkthrough does it with `init --user`, `init
    // --join` and `device add`: the phone is the user's first device, the
    // tablet and the pc join and the phone adds them. Every link below is
    // TLS, each device checked by its key against the user's device list.
    auth::PublicKey user;
    for (const char* name : {"phone", "tablet", "pc"}) {
      Device d;
      d.name = name;
      StoreOptions options;
      options.dir = dir_ + "/" + name;
      std::filesystem::create_directories(options.dir);
      if (devices_.empty()) {
        PEERKV_ASSIGN_OR_RETURN(d.identity, auth::Identity::CreateUser(options.dir, "me"));
        user = d.identity->user();
      } else {
        PEERKV_ASSIGN_OR_RETURN(d.identity, auth::Identity::CreateJoining(options.dir, user));
      }
      options.reserved_check = auth::ReservedCheck(user);
      options.replica_id_key = std::string(d.identity->device_key().public_key().view());
      PEERKV_ASSIGN_OR_RETURN(d.store, Store::Open(options));
      // Every commit anywhere wakes the waiter that checks convergence.
      d.listener = d.store->AddCommitListener([this](const Store::CommitInfo&) {
        absl::MutexLock lock(&mu_);
        ++commits_;
      });
      devices_.push_back(std::move(d));
    }
    const int64_t now_ms = absl::ToUnixMillis(absl::Now());
    for (size_t i = 1; i < devices_.size(); ++i) {
      PEERKV_RETURN_IF_ERROR(devices_[0].identity->AddDevice(
          *devices_[0].store, devices_[i].identity->device_key().public_key(), devices_[i].name,
          now_ms));
    }
    std::printf("user %s: phone %s (first device); tablet %s and pc %s joined and were added "
                "by the phone\n",
                auth::UserId(user).c_str(),
                auth::DeviceId(devices_[0].identity->device_key().public_key()).c_str(),
                auth::DeviceId(devices_[1].identity->device_key().public_key()).c_str(),
                auth::DeviceId(devices_[2].identity->device_key().public_key()).c_str());
    for (Device& d : devices_) PEERKV_RETURN_IF_ERROR(Wake(d, /*first=*/true));
    // Everyone dials everyone they know.
    for (Device& d : devices_) {
      for (Device& other : devices_) {
        if (&other != &d) d.server->AddPeer(other.address);
      }
    }
    Device& phone = devices_[0];
    Device& tablet = devices_[1];
    Device& pc = devices_[2];
    for (const Device& d : devices_) {
      std::printf("%-6s replica %s serving on %s\n", d.name.c_str(),
                  ReplicaIdToString(d.store->replica_id()).c_str(), d.address.c_str());
    }

    Step("On the phone, the user adds Bob to the address book.");
    PEERKV_RETURN_IF_ERROR(Put(phone, "contacts", "bob", "Bob Smith <bob@example.org>"));
    PEERKV_RETURN_IF_ERROR(WaitConverged({&phone, &tablet, &pc}));
    // The phone's device records reached the tablet and the pc: each opens
    // the user key sealed to it.
    for (Device* d : {&tablet, &pc}) {
      PEERKV_ASSIGN_OR_RETURN(const bool joined, d->identity->CompleteJoin(*d->store));
      if (!joined) return absl::InternalError(d->name + " did not receive its device record");
    }
    std::printf("           (the tablet and the pc received their certificates: all three are "
                "devices of the user, over TLS links)\n");
    Show();

    Step("The pc goes to sleep. On the tablet the user starts a mail to Bob and\n"
         "           leaves it in drafts, unfinished.");
    Sleep(pc);
    PEERKV_RETURN_IF_ERROR(Put(tablet, "drafts", "mail-1",
                               "To: bob@example.org | Hi Bob, about Saturday"));
    PEERKV_RETURN_IF_ERROR(WaitConverged({&phone, &tablet}));
    Show();

    Step("The pc wakes up and catches up with the others.");
    PEERKV_RETURN_IF_ERROR(Wake(pc, /*first=*/false));
    PEERKV_RETURN_IF_ERROR(WaitConverged({&phone, &tablet, &pc}));
    Show();

    Step("On the pc the user finishes the draft and sends it: the draft is\n"
         "           deleted and the mail is filed under sent.");
    PEERKV_RETURN_IF_ERROR(Put(pc, "sent", "mail-1",
                               "To: bob@example.org | Hi Bob, about Saturday: dinner at 8? "
                               "See you, A."));
    PEERKV_RETURN_IF_ERROR(Delete(pc, "drafts", "mail-1"));
    PEERKV_RETURN_IF_ERROR(WaitConverged({&phone, &tablet, &pc}));
    Show();

    Step("Everyone goes offline. The phone, then the tablet, change Bob's\n"
         "           address: two conflicting edits that cannot see each other.");
    Sleep(phone);
    Sleep(tablet);
    Sleep(pc);
    PEERKV_RETURN_IF_ERROR(Put(phone, "contacts", "bob", "Bob Smith <bob@work.example>"));
    // Later by a few milliseconds: the hybrid clocks order the edits.
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    PEERKV_RETURN_IF_ERROR(Put(tablet, "contacts", "bob", "Bob Smith <bob@home.example>"));
    Show();

    Step("They meet again. Last writer wins: the tablet's later edit replaces the\n"
         "           phone's on every device.");
    PEERKV_RETURN_IF_ERROR(Wake(phone, false));
    PEERKV_RETURN_IF_ERROR(Wake(tablet, false));
    PEERKV_RETURN_IF_ERROR(Wake(pc, false));
    PEERKV_RETURN_IF_ERROR(WaitConverged({&phone, &tablet, &pc}));
    Show();

    Step("The phone's edit is not lost: the devices that saw both edits keep\n"
         "           it in their conflict journals (peerkv conflicts contacts), from\n"
         "           where `peerkv conflicts restore` can bring it back.");
    PEERKV_RETURN_IF_ERROR(ShowConflicts("contacts"));

    std::printf("\nFingerprints of the three replicas (equal means identical registers):\n");
    for (const Device& d : devices_) {
      std::printf("  %-6s %016llx\n", d.name.c_str(),
                  static_cast<unsigned long long>(d.store->fingerprint()));
    }
    std::printf("Converged. Stopping the servers.\n");
    for (Device& d : devices_) d.server.reset();
    return absl::OkStatus();
  }

 private:
  // Starts the device's server: on a free port the first time, on the same
  // port afterwards (so the others find it again), dialling the others.
  absl::Status Wake(Device& d, bool first) {
    rpc::ServerOptions options;
    options.listen = first ? "127.0.0.1:0" : d.address;
    options.replica_name = d.name;
    options.replication.gossip_interval = absl::Milliseconds(200);
    options.replication.backoff_max = absl::Milliseconds(500);
    options.replication.log = [](const std::string&) {};
    if (!first) {
      for (const Device& other : devices_) {
        if (&other != &d) options.replication.peers.push_back(other.address);
      }
    }
    PEERKV_ASSIGN_OR_RETURN(options.tls, TlsIdentityOf(*d.identity));
    options.trust = rpc::StoreTrust(d.identity.get(), d.store.get());
    PEERKV_ASSIGN_OR_RETURN(d.server, rpc::Server::Start(d.store.get(), options));
    d.address = d.server->address();
    if (!first) std::printf("           (%s is awake on %s)\n", d.name.c_str(), d.address.c_str());
    return absl::OkStatus();
  }

  void Sleep(Device& d) {
    d.server.reset();
    std::printf("           (%s is asleep: its server is stopped)\n", d.name.c_str());
  }

  // Waits until the devices hold the same registers. Commits on any store
  // wake the wait; the timeout bounds it.
  absl::Status WaitConverged(const std::vector<Device*>& devices) {
    auto same = [&]() {
      for (const Device* d : devices) {
        if (d->store->fingerprint() != devices.front()->store->fingerprint()) return false;
      }
      return true;
    };
    const absl::Time deadline = absl::Now() + kConvergeTimeout;
    absl::MutexLock lock(&mu_);
    for (;;) {
      if (same()) break;
      const uint64_t seen = commits_;
      auto changed = [this, seen]() {
        mu_.AssertHeld();
        return commits_ != seen;
      };
      if (!mu_.AwaitWithDeadline(absl::Condition(&changed), deadline) && !same()) {
        return absl::DeadlineExceededError("the devices did not converge within 30 s");
      }
    }
    std::string names;
    for (const Device* d : devices) names += (names.empty() ? "" : ", ") + d->name;
    std::printf("           in sync after %s: %s\n",
                absl::FormatDuration(absl::Trunc(absl::Now() - step_start_, absl::Milliseconds(1)))
                    .c_str(),
                names.c_str());
    return absl::OkStatus();
  }

  void Step(const std::string& text) {
    step_start_ = absl::Now();
    std::printf("\n[+%5.2fs] %s\n", absl::ToDoubleSeconds(step_start_ - start_), text.c_str());
  }

  absl::Status Put(Device& d, const std::string& ks, const std::string& key,
                   const std::string& value) {
    PEERKV_ASSIGN_OR_RETURN(const Version v, d.store->Put(ks, key, value));
    std::printf("           %s%s: put %s/%s (version %s)\n", d.name.c_str(),
                d.server == nullptr ? " (offline)" : "", ks.c_str(), key.c_str(),
                v.ToString().c_str());
    return absl::OkStatus();
  }

  absl::Status Delete(Device& d, const std::string& ks, const std::string& key) {
    PEERKV_ASSIGN_OR_RETURN(const Version v, d.store->Delete(ks, key));
    std::printf("           %s: delete %s/%s (version %s)\n", d.name.c_str(), ks.c_str(),
                key.c_str(), v.ToString().c_str());
    return absl::OkStatus();
  }

  // Each device's conflict journal of `keyspace`. A device journals the
  // loser in the merge that brings the second edit, which may commit just
  // after the registers agree: waits (bounded) until one holds it.
  absl::Status ShowConflicts(const std::string& keyspace) {
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    for (bool any = false; !any && absl::Now() < deadline;) {
      for (Device& d : devices_) {
        PEERKV_ASSIGN_OR_RETURN(ConflictList list, d.store->ListConflicts(keyspace));
        any = any || !list.entries.empty();
      }
      if (!any) absl::SleepFor(absl::Milliseconds(10));
    }
    for (Device& d : devices_) {
      PEERKV_ASSIGN_OR_RETURN(ConflictList list, d.store->ListConflicts(keyspace));
      const std::string label = d.name + ":";
      if (list.entries.empty()) {
        std::printf("    %-16s (no conflict journaled)\n", label.c_str());
        continue;
      }
      for (size_t i = 0; i < list.entries.size(); ++i) {
        const ConflictEntry& e = list.entries[i];
        std::printf("    %-16s %s/%s = %s (version %s) lost to %s\n", i == 0 ? label.c_str() : "",
                    keyspace.c_str(), EscapeText(e.key).c_str(),
                    e.loser_deleted ? "(deleted)" : EscapeText(e.loser_value).c_str(),
                    e.loser.ToString().c_str(), e.winner.ToString().c_str());
      }
    }
    return absl::OkStatus();
  }

  void Show() {
    for (Device& d : devices_) {
      std::vector<std::string> lines;
      for (const char* ks : kKeyspaces) {
        absl::StatusOr<ScanResult> scan = d.store->Scan(ks, ScanOptions{});
        if (!scan.ok()) {
          lines.push_back(std::string(scan.status().message()));
          continue;
        }
        for (const Record& r : scan->records) {
          lines.push_back(absl::StrFormat("%s/%s = %s", ks, EscapeText(r.key), EscapeText(r.value)));
        }
      }
      if (lines.empty()) lines.push_back("(nothing yet)");
      const std::string label = d.name + (d.server == nullptr ? " (asleep)" : "") + ":";
      for (size_t i = 0; i < lines.size(); ++i) {
        std::printf("    %-16s %s\n", i == 0 ? label.c_str() : "", lines[i].c_str());
      }
    }
  }

  const std::string dir_;
  const absl::Time start_;
  absl::Time step_start_ = absl::Now();
  std::vector<Device> devices_;
  absl::Mutex mu_;
  uint64_t commits_ ABSL_GUARDED_BY(mu_) = 0;
};

int RunDemo(const Context& c) {
  if (absl::Status s = ExpectPositional(c, 0, 1, "[strong|blog]"); !s.ok()) {
    return Fail(c.command, s);
  }
  if (!c.args.positional.empty()) {
    if (c.args.positional[0] == "blog") return RunBlogDemo(c);
    if (c.args.positional[0] != "strong") {
      return UsageError(c.command, "the named demos are `demo strong` and `demo blog`");
    }
    return RunStrongDemo(c);
  }
  std::string pattern =
      (std::filesystem::temp_directory_path() / "peerkv-demo.XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) {
    return Fail(c.command, absl::InternalError("cannot create a temporary directory"));
  }
  std::printf("peerkv demo: one user, three devices, each a full replica with its own\n"
              "server on loopback. Data in %s (removed at the end).\n", pattern.c_str());
  absl::Status status;
  {
    Demo demo(pattern);
    status = demo.Run();
  }
  std::error_code ec;
  std::filesystem::remove_all(pattern, ec);
  if (!status.ok()) return Fail(c.command, status);
  return kExitOk;
}

}  // namespace

const Command& DemoCommand() {
  static const auto* command = new Command{
      "demo", "[strong [--etcd http://HOST:PORT] | blog]",
      "walk through the phone/tablet/pc scenario on three replica servers",
      "Starts three replica servers (phone, tablet, pc) on free loopback ports in\n"
      "a temporary directory and plays the seed's first scenario: a contact\n"
      "added on the phone, a draft written on the tablet while the pc sleeps,\n"
      "finished and sent on the pc, and a conflicting edit made offline on two\n"
      "devices, resolved by last writer wins. Prints what each device sees at\n"
      "each step, then stops the servers.\n"
      "`demo strong`: a unique-username registry as a strong keyspace. Starts\n"
      "etcd (/usr/bin/etcd, or uses --etcd URL) and three devices; phone and\n"
      "laptop race to claim the same name (exactly one wins), the tablet cannot\n"
      "reach etcd: it receives the winner by gossip and refuses to claim names.\n"
      "`demo blog`: Jane's private blog on five `peerkv serve` processes (Jane's\n"
      "laptop and phone, Josephine's phone and laptop, Mallory's laptop): a\n"
      "group, a read policy, posts relayed to Josephine's laptop, nothing for\n"
      "Mallory, Josephine's post refused, drafts kept home, and a revocation.\n"
      "Prints each command and the evidence of each fact; exit 1 if one fails.\n",
      {.with_value = {"etcd"}}, RunDemo, Target::kNone};
  return *command;
}

}  // namespace peerkv::cli
