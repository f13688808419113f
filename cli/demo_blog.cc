// cli/demo_blog.cc: `peerkv demo blog`, the seed's second scenario on five
// real `peerkv serve` processes (this binary, started as children) on free
// loopback ports in a temporary directory: Jane's laptop and phone,
// Josephine's phone and laptop, Mallory's laptop. Every step is a real
// `peerkv` command, run as a child in that directory and printed as typed;
// every fact is checked and printed with its evidence (counts, refusals,
// the bytes of Mallory's data directory), and the demo fails (exit 1) if
// one does not hold. Waits are bounded polls of a condition through the
// CLI (a server's local socket), never fixed sleeps.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "cli/command.h"
#include "common/macros.h"

namespace peerkv::cli {
namespace {

constexpr absl::Duration kWaitTimeout = absl::Seconds(30);
constexpr absl::Duration kPollInterval = absl::Milliseconds(50);
constexpr char kBlog[] = "jane.blog";
constexpr char kGroup[] = "blog-readers";

struct Ran {
  int code = -1;  // exit code, 128 + signal if killed
  std::string out;
  std::string err;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

int Occurrences(const std::string& hay, const std::string& needle) {
  int n = 0;
  for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + 1)) ++n;
  return n;
}

// `arg` as a shell would need it typed.
std::string ShellQuoted(const std::string& arg) {
  if (!arg.empty() && arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                            "0123456789-_.,:/@=+") == std::string::npos) {
    return arg;
  }
  if (arg.find('\'') == std::string::npos) return "'" + arg + "'";
  return "\"" + arg + "\"";  // the demo's texts hold no $, `, \ or "
}

struct Device {
  std::string name;  // also its data directory, relative to the demo's
  std::string user;  // jane, josephine, mallory
  std::string address;
  pid_t pid = -1;
};

class BlogDemo {
 public:
  BlogDemo(std::string dir, std::string self) : dir_(std::move(dir)), self_(std::move(self)) {}

  ~BlogDemo() {
    for (Device* d : {&jane_laptop_, &jane_phone_, &jos_phone_, &jos_laptop_, &mallory_}) {
      if (d->pid > 0) {
        ::kill(d->pid, SIGKILL);
        ::waitpid(d->pid, nullptr, 0);
      }
    }
  }

  absl::Status Run() {
    PEERKV_RETURN_IF_ERROR(Setup());
    PEERKV_RETURN_IF_ERROR(StartServers());
    PEERKV_RETURN_IF_ERROR(Share());
    PEERKV_RETURN_IF_ERROR(Post());
    // The facts below do not depend on each other: each is checked, and
    // one that does not hold is reported without hiding the others.
    std::vector<std::string> failed;
    for (absl::Status fact : {MalloryGetsNothing(), JosephineMayNotPost(), DraftsStayHome(),
                              Revoke()}) {
      if (fact.ok()) continue;
      std::printf("    FACT DOES NOT HOLD: %s\n", std::string(fact.message()).c_str());
      failed.emplace_back(fact.message());
    }
    Step("The end: every server is stopped (SIGTERM).");
    for (Device* d : All()) PEERKV_RETURN_IF_ERROR(StopServer(*d));
    if (!failed.empty()) {
      return absl::InternalError(absl::StrFormat("%d facts of the story did not hold: %s",
                                                 failed.size(), absl::StrJoin(failed, "; ")));
    }
    std::printf("\nEvery fact of the story held.\n");
    return absl::OkStatus();
  }

 private:
  std::vector<Device*> All() {
    return {&jane_laptop_, &jane_phone_, &jos_phone_, &jos_laptop_, &mallory_};
  }

  // ---- the story ----

  absl::Status Setup() {
    Step("Five devices, three users. Jane's laptop and Josephine's phone are\n"
         "           their users' first devices; the phones/laptops join and are added.\n"
         "           Mallory has one laptop.");
    PEERKV_ASSIGN_OR_RETURN(jane_, InitUser(jane_laptop_, "jane", "laptop"));
    PEERKV_RETURN_IF_ERROR(Join(jane_phone_, jane_, jane_laptop_, "phone"));
    PEERKV_ASSIGN_OR_RETURN(josephine_, InitUser(jos_phone_, "josephine", "phone"));
    PEERKV_RETURN_IF_ERROR(Join(jos_laptop_, josephine_, jos_phone_, "laptop"));
    PEERKV_ASSIGN_OR_RETURN(mallory_id_, InitUser(mallory_, "mallory", "laptop"));

    Step("Friends. Jane and Josephine are friends; Mallory is Josephine's friend,\n"
         "           and Jane's too: she is connected to both, so nothing but the blog's\n"
         "           policy keeps it from her.");
    PEERKV_RETURN_IF_ERROR(Must(jane_laptop_, {"friend", "add", josephine_, "--name", "josephine"}));
    PEERKV_RETURN_IF_ERROR(Must(jane_laptop_, {"friend", "add", mallory_id_, "--name", "mallory"}));
    PEERKV_RETURN_IF_ERROR(Must(jos_phone_, {"friend", "add", jane_, "--name", "jane"}));
    PEERKV_RETURN_IF_ERROR(Must(jos_phone_, {"friend", "add", mallory_id_, "--name", "mallory"}));
    PEERKV_RETURN_IF_ERROR(Must(mallory_, {"friend", "add", josephine_, "--name", "josephine"}));
    PEERKV_RETURN_IF_ERROR(Must(mallory_, {"friend", "add", jane_, "--name", "jane"}));
    return absl::OkStatus();
  }

  absl::Status StartServers() {
    Step("Five servers. Links: Jane's phone <-> Jane's laptop; Josephine's phone ->\n"
         "           Jane's laptop; Josephine's laptop -> Josephine's phone only (it never\n"
         "           talks to Jane); Mallory -> Jane's laptop and Josephine's phone.");
    PEERKV_RETURN_IF_ERROR(StartServer(jane_laptop_, {}));
    PEERKV_RETURN_IF_ERROR(StartServer(jane_phone_, {&jane_laptop_}));
    PEERKV_RETURN_IF_ERROR(StartServer(jos_phone_, {&jane_laptop_}));
    PEERKV_RETURN_IF_ERROR(StartServer(jos_laptop_, {&jos_phone_}));
    PEERKV_RETURN_IF_ERROR(StartServer(mallory_, {&jane_laptop_, &jos_phone_}));
    // The joined devices receive their device records and the user key.
    for (Device* d : {&jane_phone_, &jos_laptop_}) {
      PEERKV_RETURN_IF_ERROR(WaitFor(d->name + " completes its join", [&] {
        return absl::StrContains(ReadFile(LogPath(*d)), "this device is now a device of user");
      }));
    }
    std::printf("           (Jane's phone and Josephine's laptop completed their joins)\n");
    return absl::OkStatus();
  }

  absl::Status Share() {
    Step("Jane makes the group blog-readers with Josephine, and makes her blog\n"
         "           readable by it. Keyspace names are one namespace per store, so a\n"
         "           shared one is prefixed with its owner's name.");
    PEERKV_RETURN_IF_ERROR(Must(jane_laptop_, {"group", "create", kGroup}));
    PEERKV_RETURN_IF_ERROR(Must(jane_laptop_, {"group", "add", kGroup, josephine_}));
    PEERKV_RETURN_IF_ERROR(Must(jane_laptop_, {"policy", "set", kBlog, "--read", kGroup}));
    PEERKV_RETURN_IF_ERROR(Must(jane_laptop_, {"policy", "get", kBlog}));
    // What everyone may read: the marker that shows a link has served a
    // friend everything up to it (pulls are in commit order).
    PEERKV_RETURN_IF_ERROR(Must(jane_laptop_, {"policy", "set", "jane.news", "--read", "public"}));
    PEERKV_RETURN_IF_ERROR(
        Must(jos_phone_, {"policy", "set", "josephine.news", "--read", "public"}));
    return absl::OkStatus();
  }

  absl::Status Post() {
    Step("Jane writes a private draft and posts twice to her blog, on her laptop;\n"
         "           then a public news item (written after the posts).");
    PEERKV_RETURN_IF_ERROR(Must(jane_laptop_, {"put", "drafts", "d1", "half an idea, not for anyone"}));
    PEERKV_RETURN_IF_ERROR(Must(jane_laptop_, {"put", kBlog, "post-1", "Hello from Jane's blog"}));
    PEERKV_RETURN_IF_ERROR(Must(jane_laptop_, {"put", kBlog, "post-2", "Second post: the garden"}));
    PEERKV_RETURN_IF_ERROR(Must(jane_laptop_, {"put", "jane.news", "n1", "Jane has news"}));

    Step("Josephine's phone pulls from Jane's laptop; Josephine's laptop, which\n"
         "           never talks to Jane, gets the posts from Josephine's phone.");
    PEERKV_RETURN_IF_ERROR(WaitForKeys(jos_phone_, kBlog, {"post-1", "post-2"}));
    PEERKV_RETURN_IF_ERROR(WaitForKeys(jos_laptop_, kBlog, {"post-1", "post-2"}));
    PEERKV_RETURN_IF_ERROR(WaitForKeys(jane_phone_, kBlog, {"post-1", "post-2"}));
    PEERKV_RETURN_IF_ERROR(Must(jos_laptop_, {"get", kBlog, "post-1"}));
    PEERKV_RETURN_IF_ERROR(Must(jos_laptop_, {"scan", kBlog}));
    return absl::OkStatus();
  }

  absl::Status MalloryGetsNothing() {
    Step("Mallory, linked to Jane's laptop and Josephine's phone, gets nothing of\n"
         "           the blog and never learns its name. Josephine publishes a news item\n"
         "           after her phone holds the posts; Mallory waits for both news items\n"
         "           (so both links have served her past the posts).");
    PEERKV_RETURN_IF_ERROR(Must(jos_phone_, {"put", "josephine.news", "n1", "Josephine says hi"}));
    PEERKV_RETURN_IF_ERROR(WaitForKeys(mallory_, "jane.news", {"n1"}));
    PEERKV_RETURN_IF_ERROR(WaitForKeys(mallory_, "josephine.news", {"n1"}));
    PEERKV_ASSIGN_OR_RETURN(const std::vector<std::string> records, Keys(mallory_, kBlog, false));
    PEERKV_ASSIGN_OR_RETURN(const std::vector<std::string> keys, Keys(mallory_, kBlog, true));
    PEERKV_ASSIGN_OR_RETURN(const int listed, KeyspaceListMentions(mallory_, "blog"));
    const int in_files = BytesMentioning(mallory_, {kBlog, kGroup, "post-1", "Hello from Jane"});
    const int control = BytesMentioning(jos_laptop_, {kBlog});
    std::printf("    Mallory: %zu records, %zu keys (tombstones included) of %s; %d keyspace\n"
                "             names mentioning \"blog\" in `keyspace list`; %d occurrences of\n"
                "             %s, %s, a post's key or text in her data directory and log\n"
                "             (Josephine's laptop, for comparison: %d of %s)\n",
                records.size(), keys.size(), kBlog, listed, in_files, kBlog, kGroup, control,
                kBlog);
    if (!records.empty() || !keys.empty() || listed != 0 || in_files != 0) {
      return absl::InternalError("Mallory holds something of the blog");
    }
    if (control == 0) return absl::InternalError("the byte search finds nothing where it should");
    return absl::OkStatus();
  }

  absl::Status JosephineMayNotPost() {
    Step("Josephine tries to post to Jane's blog from her phone: refused (she may\n"
         "           read it, not write it), and nothing of it leaves her phone.");
    PEERKV_RETURN_IF_ERROR(
        MustFail(jos_phone_, {"put", kBlog, "post-x", "Josephine was here"}, "may not write"));
    PEERKV_ASSIGN_OR_RETURN(const std::vector<std::string> keys, Keys(jos_phone_, kBlog, true));
    std::printf("    Josephine's phone still holds %zu keys of %s (%s)\n", keys.size(), kBlog,
                absl::StrJoin(keys, ", ").c_str());
    if (keys.size() != 2) return absl::InternalError("the refused post was written");
    return absl::OkStatus();
  }

  absl::Status DraftsStayHome() {
    Step("Jane's drafts (no policy: private to her devices) never leave them.");
    PEERKV_RETURN_IF_ERROR(WaitForKeys(jane_phone_, "drafts", {"d1"}));
    for (Device* d : All()) {
      PEERKV_ASSIGN_OR_RETURN(const std::vector<std::string> keys, Keys(*d, "drafts", true));
      const int bytes = BytesMentioning(*d, {"half an idea"});
      std::printf("    %-16s drafts: %zu keys; the draft's text in its files: %d\n",
                  d->name.c_str(), keys.size(), bytes);
      const bool janes = d->user == "jane";
      if (janes != (keys.size() == 1) || (!janes && bytes != 0)) {
        return absl::InternalError("drafts are where they should not be: " + d->name);
      }
    }
    return absl::OkStatus();
  }

  absl::Status Revoke() {
    Step("Jane removes Josephine from blog-readers and posts again; then a news\n"
         "           item, which Josephine's phone gets (so Jane's laptop has served her\n"
         "           past the new post).");
    PEERKV_RETURN_IF_ERROR(Must(jane_laptop_, {"group", "remove", kGroup, josephine_}));
    PEERKV_RETURN_IF_ERROR(Must(jane_laptop_, {"group", "list", kGroup}));
    PEERKV_RETURN_IF_ERROR(Must(jane_laptop_, {"put", kBlog, "post-3", "Third post, for fewer eyes"}));
    PEERKV_RETURN_IF_ERROR(Must(jane_laptop_, {"put", "jane.news", "n2", "Jane posted again"}));
    PEERKV_RETURN_IF_ERROR(WaitForKeys(jane_phone_, kBlog, {"post-1", "post-2", "post-3"}));
    PEERKV_RETURN_IF_ERROR(WaitForKeys(jos_phone_, "jane.news", {"n1", "n2"}));
    PEERKV_RETURN_IF_ERROR(WaitForKeys(jos_laptop_, "jane.news", {"n1", "n2"}));
    for (Device* d : {&jos_phone_, &jos_laptop_}) {
      PEERKV_ASSIGN_OR_RETURN(const std::vector<std::string> keys, Keys(*d, kBlog, true));
      std::printf("    %-16s %s: %s (post-3 %s)\n", d->name.c_str(), kBlog,
                  absl::StrJoin(keys, ", ").c_str(),
                  absl::c_linear_search(keys, "post-3") ? "ARRIVED" : "did not arrive");
      if (absl::c_linear_search(keys, "post-3")) {
        return absl::InternalError("the post after the removal reached Josephine");
      }
      if (!absl::c_linear_search(keys, "post-1") || !absl::c_linear_search(keys, "post-2")) {
        return absl::InternalError("Josephine lost what she had");
      }
    }
    std::printf("    What Josephine had before the removal stays hers (post-1, post-2).\n");
    return absl::OkStatus();
  }

  // ---- devices and servers ----

  absl::StatusOr<std::string> InitUser(Device& d, const std::string& user,
                                       const std::string& device) {
    d.user = user;
    PEERKV_ASSIGN_OR_RETURN(const Ran r, Command(d, {"init", "--user", user, "--name", device}));
    Print(d, r);
    // "user ID NAME"
    for (absl::string_view line : absl::StrSplit(r.out, '\n')) {
      if (absl::ConsumePrefix(&line, "user ")) {
        return std::string(line.substr(0, line.find(' ')));
      }
    }
    return absl::InternalError("init printed no user id: " + r.out);
  }

  absl::Status Join(Device& d, const std::string& user_id, Device& first,
                    const std::string& name) {
    d.user = first.user;
    PEERKV_ASSIGN_OR_RETURN(const Ran r, Command(d, {"init", "--join", user_id}));
    Print(d, r);
    absl::string_view out = r.out;
    if (!absl::ConsumePrefix(&out, "device ")) {
      return absl::InternalError("init --join printed no device id: " + r.out);
    }
    const std::string device(out.substr(0, out.find_first_of(" \n")));
    return Must(first, {"device", "add", device, "--name", name});
  }

  std::string LogPath(const Device& d) const { return dir_ + "/" + d.name + ".log"; }

  absl::Status StartServer(Device& d, const std::vector<Device*>& peers) {
    std::vector<std::string> args = {"serve", "--data", d.name, "--listen", "127.0.0.1:0",
                                     "--replica-name", d.name, "--gossip-interval-ms", "100"};
    for (const Device* p : peers) {
      args.push_back("--peer");
      args.push_back(p->address);
    }
    std::printf("    $ peerkv %s > %s.log &\n", absl::StrJoin(args, " ").c_str(), d.name.c_str());
    PEERKV_ASSIGN_OR_RETURN(d.pid, Spawn(args, LogPath(d), LogPath(d)));
    const std::string marker = "listening on ";
    std::string log;
    PEERKV_RETURN_IF_ERROR(WaitFor(d.name + " listens", [&] {
      log = ReadFile(LogPath(d));
      return absl::StrContains(log, marker);
    }));
    const size_t at = log.find(marker) + marker.size();
    d.address = log.substr(at, log.find(',', at) - at);
    std::printf("      (%s: %s's, listening on %s, pid %d)\n", d.name.c_str(), d.user.c_str(),
                d.address.c_str(), static_cast<int>(d.pid));
    return absl::OkStatus();
  }

  absl::Status StopServer(Device& d) {
    if (d.pid <= 0) return absl::OkStatus();
    ::kill(d.pid, SIGTERM);
    int status = 0;
    ::waitpid(d.pid, &status, 0);
    d.pid = -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      return absl::InternalError(absl::StrFormat("%s's server did not stop cleanly; its log: %s",
                                                 d.name, ReadFile(LogPath(d))));
    }
    return absl::OkStatus();
  }

  // ---- commands ----

  // Starts `self_ ARGS` in the demo's directory, stdout and stderr to the
  // files given (appended).
  absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& args, const std::string& out,
                              const std::string& err) {
    std::vector<std::string> argv = {self_};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> c_argv;
    for (std::string& a : argv) c_argv.push_back(a.data());
    c_argv.push_back(nullptr);
    std::fflush(stdout);
    const pid_t pid = ::fork();
    if (pid < 0) return absl::InternalError("fork failed");
    if (pid == 0) {
      const int in_fd = ::open("/dev/null", O_RDONLY);
      const int out_fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      const int err_fd = out == err ? out_fd : ::open(err.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      if (in_fd < 0 || out_fd < 0 || err_fd < 0 || ::chdir(dir_.c_str()) != 0) ::_exit(127);
      ::dup2(in_fd, 0);
      ::dup2(out_fd, 1);
      ::dup2(err_fd, 2);
      ::execv(c_argv[0], c_argv.data());
      ::_exit(127);
    }
    return pid;
  }

  // Runs `peerkv --data D.name ARGS` (or `peerkv ARGS` if ARGS start with
  // --server) and waits for it.
  absl::StatusOr<Ran> Command(const Device& d, std::vector<std::string> args) {
    if (args[0] != "--server" && args[0] != "--identity") args.insert(args.begin(), {"--data", d.name});
    const std::string out = dir_ + "/cmd.out";
    const std::string err = dir_ + "/cmd.err";
    std::filesystem::remove(out);
    std::filesystem::remove(err);
    PEERKV_ASSIGN_OR_RETURN(const pid_t pid, Spawn(args, out, err));
    int status = 0;
    ::waitpid(pid, &status, 0);
    Ran r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = ReadFile(out);
    r.err = ReadFile(err);
    last_args_ = "peerkv " + absl::StrJoin(args, " ", [](std::string* out, const std::string& a) {
                   out->append(ShellQuoted(a));
                 });
    return r;
  }

  void Print(const Device& d, const Ran& r) {
    std::printf("    %s$ %s\n", d.name.c_str(), last_args_.c_str());
    for (const std::string* text : {&r.out, &r.err}) {
      for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
        std::printf("        %.*s\n", static_cast<int>(line.size()), line.data());
      }
    }
    if (r.code != 0) std::printf("        (exit %d)\n", r.code);
  }

  // A step that must succeed; printed.
  absl::Status Must(const Device& d, std::vector<std::string> args) {
    PEERKV_ASSIGN_OR_RETURN(const Ran r, Command(d, std::move(args)));
    Print(d, r);
    if (r.code != 0) {
      return absl::InternalError(absl::StrFormat("`%s` failed (exit %d)", last_args_, r.code));
    }
    return absl::OkStatus();
  }

  // A step that must be refused (exit 1) with `expected` in its message.
  absl::Status MustFail(const Device& d, std::vector<std::string> args,
                        const std::string& expected) {
    PEERKV_ASSIGN_OR_RETURN(const Ran r, Command(d, std::move(args)));
    Print(d, r);
    if (r.code != 1 || !absl::StrContains(r.err, expected)) {
      return absl::InternalError(absl::StrFormat("`%s` was not refused with '%s' (exit %d)",
                                                 last_args_, expected, r.code));
    }
    return absl::OkStatus();
  }

  // The keys of KS on D (with tombstones if asked): `scan KS`.
  absl::StatusOr<std::vector<std::string>> Keys(const Device& d, const std::string& ks,
                                                bool tombstones) {
    std::vector<std::string> args = {"scan", ks};
    if (tombstones) args.push_back("--tombstones");
    PEERKV_ASSIGN_OR_RETURN(const Ran r, Command(d, args));
    if (r.code != 0) {
      return absl::InternalError(absl::StrFormat("`%s` failed: %s", last_args_, r.err));
    }
    std::vector<std::string> keys;
    for (absl::string_view line : absl::StrSplit(r.out, '\n', absl::SkipEmpty())) {
      keys.emplace_back(line.substr(0, line.find('\t')));
    }
    return keys;
  }

  // Lines of `keyspace list` on D's server that mention `word`.
  absl::StatusOr<int> KeyspaceListMentions(const Device& d, const std::string& word) {
    PEERKV_ASSIGN_OR_RETURN(const Ran r,
                            Command(d, {"--server", "unix:" + d.name + "/peerkv.sock", "keyspace",
                                        "list"}));
    Print(d, r);
    if (r.code != 0) return absl::InternalError("keyspace list failed: " + r.err);
    int n = 0;
    for (absl::string_view line : absl::StrSplit(r.out, '\n', absl::SkipEmpty())) {
      n += absl::StrContains(line, word) ? 1 : 0;
    }
    return n;
  }

  // Occurrences of any of `needles` in the bytes of D's data directory
  // (the store's files, keys) and its server's log.
  int BytesMentioning(const Device& d, const std::vector<std::string>& needles) {
    std::vector<std::string> texts = {ReadFile(LogPath(d))};
    std::error_code ec;
    for (const auto& entry :
         std::filesystem::recursive_directory_iterator(dir_ + "/" + d.name, ec)) {
      if (entry.is_regular_file(ec)) texts.push_back(ReadFile(entry.path().string()));
    }
    int n = 0;
    for (const std::string& t : texts) {
      for (const std::string& needle : needles) n += Occurrences(t, needle);
    }
    return n;
  }

  // Polls `done` (bounded by kWaitTimeout).
  absl::Status WaitFor(const std::string& what, const std::function<bool()>& done) {
    const absl::Time deadline = absl::Now() + kWaitTimeout;
    while (!done()) {
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(absl::StrFormat(
            "waited %s for: %s", absl::FormatDuration(kWaitTimeout), what));
      }
      absl::SleepFor(kPollInterval);
    }
    return absl::OkStatus();
  }

  absl::Status WaitForKeys(const Device& d, const std::string& ks,
                           const std::vector<std::string>& want) {
    const absl::Time start = absl::Now();
    absl::Status last;
    PEERKV_RETURN_IF_ERROR(WaitFor(
        absl::StrFormat("%s to hold %s/%s", d.name, ks, absl::StrJoin(want, ",")), [&] {
          absl::StatusOr<std::vector<std::string>> keys = Keys(d, ks, false);
          if (!keys.ok()) return false;
          for (const std::string& k : want) {
            if (!absl::c_linear_search(*keys, k)) return false;
          }
          return true;
        }));
    std::printf("    %-16s holds %s: %s (after %s)\n", d.name.c_str(), ks.c_str(),
                absl::StrJoin(want, ", ").c_str(),
                absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Milliseconds(1)))
                    .c_str());
    return absl::OkStatus();
  }

  void Step(const std::string& text) {
    std::printf("\n[+%5.2fs] %s\n", absl::ToDoubleSeconds(absl::Now() - start_), text.c_str());
  }

  const std::string dir_;
  const std::string self_;
  const absl::Time start_ = absl::Now();
  std::string last_args_;
  Device jane_laptop_{"jane-laptop"};
  Device jane_phone_{"jane-phone"};
  Device jos_phone_{"josephine-phone"};
  Device jos_laptop_{"josephine-laptop"};
  Device mallory_{"mallory-laptop"};
  std::string jane_, josephine_, mallory_id_;  // user ids
};

}  // namespace

int RunBlogDemo(const Context& c) {
  std::error_code ec;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  if (ec) return Fail(c.command, absl::InternalError("cannot find this program (/proc/self/exe)"));
  std::string pattern =
      (std::filesystem::temp_directory_path() / "peerkv-demo-blog.XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) {
    return Fail(c.command, absl::InternalError("cannot create a temporary directory"));
  }
  std::printf("peerkv demo blog: Jane's private blog, on five peerkv servers (this binary)\n"
              "on loopback. Commands run in %s (removed at the end).\n", pattern.c_str());
  absl::Status status;
  {
    BlogDemo demo(pattern, self);
    status = demo.Run();
  }
  std::filesystem::remove_all(pattern, ec);
  if (!status.ok()) return Fail(c.command, status);
  return kExitOk;
}

}  // namespace peerkv::cli
