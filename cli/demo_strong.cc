// cli/demo_strong.cc: `peerkv demo strong`: a unique-username registry as a
// strong keyspace. Three devices are replica servers on loopback; phone and
// laptop reach the cloud's etcd (started here on free ports, or the one
// --etcd names), the tablet cannot. Phone and laptop race to claim the same
// name: exactly one wins. The tablet receives the winner by gossip, and
// refuses to claim names itself while it cannot reach the service.
#include <signal.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "cli/command.h"
#include "common/macros.h"
#include "consensus/etcd/etcd_consensus_log.h"
#include "consensus/strong_keyspaces.h"
#include "rpc/server.h"
#include "store/store.h"

extern char** environ;

namespace peerkv::cli {
namespace {

constexpr char kRegistry[] = "usernames";

// A free loopback TCP port (bound to 0 and released).
absl::StatusOr<int> FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    return absl::InternalError("cannot find a free port");
  }
  const int port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

// An etcd started for the demo, stopped by its PID.
class DemoEtcd {
 public:
  ~DemoEtcd() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
  }
  absl::Status Start(const std::string& dir) {
    PEERKV_ASSIGN_OR_RETURN(const int client, FreePort());
    PEERKV_ASSIGN_OR_RETURN(const int peer, FreePort());
    url_ = absl::StrFormat("http://127.0.0.1:%d", client);
    const std::string peer_url = absl::StrFormat("http://127.0.0.1:%d", peer);
    std::vector<std::string> args = {"/usr/bin/etcd",
                                     "--data-dir", dir,
                                     "--name", "demo",
                                     "--listen-client-urls", url_,
                                     "--advertise-client-urls", url_,
                                     "--listen-peer-urls", peer_url,
                                     "--initial-advertise-peer-urls", peer_url,
                                     "--initial-cluster", "demo=" + peer_url,
                                     "--initial-cluster-state", "new",
                                     "--logger", "zap",
                                     "--log-outputs", "stderr"};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    const int rc = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      pid_ = 0;
      return absl::FailedPreconditionError(
          "cannot start /usr/bin/etcd (install etcd-server: scripts/setup.sh), or give "
          "--etcd http://HOST:PORT");
    }
    return absl::OkStatus();
  }
  const std::string& url() const { return url_; }

 private:
  pid_t pid_ = 0;
  std::string url_;
};

struct Device {
  std::string name;
  consensus::ModeTable modes;
  std::unique_ptr<consensus::ConsensusLog> log;  // null: no cloud access
  std::unique_ptr<Store> store;
  std::unique_ptr<consensus::StrongKeyspaces> strong;
  std::unique_ptr<rpc::Server> server;
};

absl::Status StartDevice(Device& d, const std::string& dir, const std::string& etcd_url,
                         const std::vector<std::string>& peers) {
  if (!etcd_url.empty()) {
    PEERKV_ASSIGN_OR_RETURN(d.log,
                            consensus::EtcdConsensusLog::Create({.url = etcd_url,
                                                                 .prefix = "demo/"}));
  }
  d.modes.SetLog([](const std::string&) {});
  StoreOptions options;
  options.dir = dir + "/" + d.name;
  d.modes.AttachTo(&options);
  PEERKV_ASSIGN_OR_RETURN(d.store, Store::Open(options));
  PEERKV_RETURN_IF_ERROR(d.modes.Load(*d.store));
  consensus::StrongOptions strong_options;
  strong_options.workers = 2;
  strong_options.log = [](const std::string&) {};
  d.strong = std::make_unique<consensus::StrongKeyspaces>(d.store.get(), &d.modes, d.log.get(),
                                                          strong_options);
  d.strong->Start();
  rpc::ServerOptions server_options;
  server_options.listen = "127.0.0.1:0";
  server_options.replica_name = d.name;
  server_options.strong = d.strong.get();
  server_options.replication.peers = peers;
  server_options.replication.gossip_interval = absl::Milliseconds(100);
  server_options.replication.log = [](const std::string&) {};
  PEERKV_ASSIGN_OR_RETURN(d.server, rpc::Server::Start(d.store.get(), server_options));
  std::printf("%-6s replica %s on %s, %s\n", d.name.c_str(),
              ReplicaIdToString(d.store->replica_id()).c_str(), d.server->address().c_str(),
              d.log ? ("reaches " + d.log->Describe()).c_str() : "cannot reach the cloud");
  return absl::OkStatus();
}

void Step(const std::string& text) { std::printf("\n== %s\n", text.c_str()); }

std::string Holder(Device& d, const std::string& name) {
  absl::StatusOr<std::optional<Record>> r = d.store->Get(kRegistry, name);
  if (!r.ok()) return r.status().ToString();
  if (!r->has_value() || (*r)->deleted) return "(free)";
  return absl::StrFormat("%s (version %s)", (*r)->value, (*r)->version.ToString());
}

absl::Status RunScenario(const std::string& dir, std::string etcd_url) {
  DemoEtcd etcd;
  if (etcd_url.empty()) {
    PEERKV_RETURN_IF_ERROR(etcd.Start(dir + "/etcd"));
    etcd_url = etcd.url();
  }
  std::vector<std::unique_ptr<Device>> devices;
  for (const char* name : {"phone", "laptop", "tablet"}) {
    devices.push_back(std::make_unique<Device>());
    devices.back()->name = name;
  }
  Device& phone = *devices[0];
  Device& laptop = *devices[1];
  Device& tablet = *devices[2];
  PEERKV_RETURN_IF_ERROR(StartDevice(phone, dir, etcd_url, {}));
  PEERKV_RETURN_IF_ERROR(StartDevice(laptop, dir, etcd_url, {phone.server->address()}));
  PEERKV_RETURN_IF_ERROR(StartDevice(tablet, dir, "", {phone.server->address()}));

  Step("The app makes 'usernames' a strong keyspace (through etcd).");
  absl::StatusOr<Version> on = absl::UnavailableError("etcd not ready");
  // A freshly started etcd takes a moment to elect itself: retry, bounded.
  for (int i = 0; i < 100 && !on.ok() && on.status().code() == absl::StatusCode::kUnavailable;
       ++i) {
    on = phone.strong->SetMode(kRegistry, consensus::Mode::kStrong);
    if (!on.ok()) absl::SleepFor(absl::Milliseconds(100));
  }
  if (!on.ok()) return on.status();
  std::printf("usernames is strong since %s (the barrier: lww writes after it are refused)\n",
              on->ToString().c_str());

  Step("Phone and laptop both try to claim 'alice' at the same moment (put --if-absent).");
  absl::Notification go;
  absl::StatusOr<Version> results[2] = {absl::UnknownError(""), absl::UnknownError("")};
  std::thread racers[2];
  Device* racing[2] = {&phone, &laptop};
  for (int i = 0; i < 2; ++i) {
    racers[i] = std::thread([&, i] {
      go.WaitForNotification();
      Mutation m{kRegistry, "alice", racing[i]->name};
      results[i] = racing[i]->strong->Write(
          m, consensus::Precondition{consensus::Precondition::Kind::kIfAbsent, {}});
    });
  }
  go.Notify();
  for (std::thread& t : racers) t.join();
  int winners = 0;
  for (int i = 0; i < 2; ++i) {
    if (results[i].ok()) {
      ++winners;
      std::printf("%-6s WON 'alice' at version %s\n", racing[i]->name.c_str(),
                  results[i]->ToString().c_str());
    } else {
      std::printf("%-6s lost: %s\n", racing[i]->name.c_str(),
                  std::string(results[i].status().message()).c_str());
    }
  }
  if (winners != 1) {
    return absl::InternalError(absl::StrFormat("%d winners; expected exactly one", winners));
  }

  Step("The tablet cannot reach the cloud. Gossip brings it the winner anyway.");
  const Version won = results[0].ok() ? *results[0] : *results[1];
  bool arrived = false;
  for (int i = 0; i < 300 && !arrived; ++i) {
    absl::StatusOr<std::optional<Record>> r = tablet.store->Get(kRegistry, "alice");
    arrived = r.ok() && r->has_value() && (*r)->version == won;
    if (!arrived) absl::SleepFor(absl::Milliseconds(20));
  }
  for (Device* d : {&phone, &laptop, &tablet}) {
    std::printf("%-6s sees alice -> %s\n", d->name.c_str(), Holder(*d, "alice").c_str());
  }
  if (!arrived) return absl::DeadlineExceededError("the tablet did not receive the winner");

  Step("On the tablet the user tries to claim 'bob'; and reads 'alice' linearizably.");
  Mutation bob{kRegistry, "bob", "tablet"};
  absl::StatusOr<Version> claim = tablet.strong->Write(
      bob, consensus::Precondition{consensus::Precondition::Kind::kIfAbsent, {}});
  std::printf("tablet claim bob: %s\n",
              claim.ok() ? claim->ToString().c_str() : claim.status().ToString().c_str());
  absl::StatusOr<consensus::StrongRead> read = tablet.strong->Read(kRegistry, "alice", false);
  std::printf("tablet get alice: %s\n",
              read.ok() ? "ok" : read.status().ToString().c_str());
  absl::StatusOr<consensus::StrongRead> stale = tablet.strong->Read(kRegistry, "alice", true);
  if (stale.ok() && stale->record.has_value()) {
    std::printf("tablet get alice --stale-ok: %s (stale: the tablet's own copy)\n",
                stale->record->value.c_str());
  }
  std::printf("Names are claimed only where the cloud answers: the tablet can never\n"
              "hand out a name someone else holds; once online it claims like the rest.\n");
  for (auto& d : devices) d->server.reset();
  for (auto& d : devices) d->strong.reset();
  return absl::OkStatus();
}

}  // namespace

int RunStrongDemo(const Context& c) {
  std::string pattern =
      (std::filesystem::temp_directory_path() / "peerkv-demo-strong.XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) {
    return Fail(c.command, absl::InternalError("cannot create a temporary directory"));
  }
  std::printf("peerkv demo strong: a unique-username registry as a strong keyspace.\n"
              "Data in %s (removed at the end).\n", pattern.c_str());
  const absl::Status status = RunScenario(pattern, c.args.Get("etcd").value_or(""));
  std::error_code ec;
  std::filesystem::remove_all(pattern, ec);
  if (!status.ok()) return Fail(c.command, status);
  return kExitOk;
}

}  // namespace peerkv::cli
