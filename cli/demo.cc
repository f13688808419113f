// cli/demo.cc: `peerkv demo`, the seed's first scenario on three embedded
// replicas (phone, tablet, pc) in a temporary directory. Devices that meet
// exchange the changes the other lacks, pulled from each other's change log
// after a per-peer checkpoint, exactly as replication does over the network.
// A simulated wall clock makes the story (and who wins the conflict)
// reproducible.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "cli/command.h"
#include "cli/text.h"
#include "common/macros.h"
#include "store/store.h"

namespace peerkv::cli {
namespace {

constexpr int64_t kMinute = 60'000;
const char* const kKeyspaces[] = {"contacts", "drafts", "sent"};

struct Device {
  std::string name;
  std::unique_ptr<Store> store;
};

class Demo {
 public:
  explicit Demo(std::string dir) : dir_(std::move(dir)) {
    const int64_t now = SystemWallClock().NowMillis();
    const int64_t day = 24 * 60 * kMinute;
    wall_ = std::make_unique<ManualWallClock>(now - now % day + 9 * 60 * kMinute);
  }

  absl::Status Run() {
    for (const char* name : {"phone", "tablet", "pc"}) {
      StoreOptions options;
      options.dir = dir_ + "/" + name;
      options.wall_clock = wall_.get();
      PEERKV_ASSIGN_OR_RETURN(std::unique_ptr<Store> store, Store::Open(options));
      std::printf("%-6s replica %s in %s\n", name,
                  ReplicaIdToString(store->replica_id()).c_str(), options.dir.c_str());
      devices_.push_back(Device{name, std::move(store)});
    }
    Device& phone = devices_[0];
    Device& tablet = devices_[1];
    Device& pc = devices_[2];

    Step("On the phone, the user adds Bob to the address book.");
    PEERKV_RETURN_IF_ERROR(
        Put(phone, "contacts", "bob", "Bob Smith <bob@example.org>"));
    PEERKV_RETURN_IF_ERROR(Meet(phone, tablet));
    Show();

    Advance(10);
    Step("On the tablet, away from the pc, the user starts a mail to Bob and\n"
         "         leaves it in drafts, unfinished.");
    PEERKV_RETURN_IF_ERROR(Put(tablet, "drafts", "mail-1",
                               "To: bob@example.org | Hi Bob, about Saturday"));
    Show();

    Advance(20);
    Step("At home the tablet and the pc meet.");
    PEERKV_RETURN_IF_ERROR(Meet(tablet, pc));
    Show();

    Advance(5);
    Step("On the pc the user finishes the draft and sends it: the draft is\n"
         "         deleted and the mail is filed under sent.");
    PEERKV_RETURN_IF_ERROR(Put(pc, "sent", "mail-1",
                               "To: bob@example.org | Hi Bob, about Saturday: "
                               "dinner at 8? See you, A."));
    PEERKV_RETURN_IF_ERROR(Delete(pc, "drafts", "mail-1"));
    PEERKV_RETURN_IF_ERROR(Meet(pc, tablet));
    Show();

    Advance(25);
    Step("Apart from each other, the phone and the tablet both change Bob's\n"
         "         address: first the phone...");
    PEERKV_RETURN_IF_ERROR(Put(phone, "contacts", "bob", "Bob Smith <bob@work.example>"));
    Advance(5);
    Step("...then, five minutes later, the tablet.");
    PEERKV_RETURN_IF_ERROR(Put(tablet, "contacts", "bob", "Bob Smith <bob@home.example>"));
    Show();

    Advance(30);
    Step("All three meet. Last writer wins: the tablet's later edit replaces the\n"
         "         phone's everywhere, and the phone learns about the sent mail.");
    PEERKV_RETURN_IF_ERROR(Meet(phone, tablet));
    PEERKV_RETURN_IF_ERROR(Meet(tablet, pc));
    PEERKV_RETURN_IF_ERROR(Meet(pc, phone));
    Show();

    std::printf("\nDigests of the three replicas (equal means identical registers):\n");
    uint64_t first = 0;
    bool equal = true;
    for (size_t i = 0; i < devices_.size(); ++i) {
      PEERKV_ASSIGN_OR_RETURN(const uint64_t digest, devices_[i].store->Digest());
      std::printf("  %-6s %016llx\n", devices_[i].name.c_str(),
                  static_cast<unsigned long long>(digest));
      if (i == 0) first = digest;
      equal = equal && digest == first;
    }
    if (!equal) return absl::InternalError("the replicas did not converge");
    std::printf("Converged.\n");
    return absl::OkStatus();
  }

 private:
  void Advance(int minutes) { wall_->Advance(minutes * kMinute); }

  std::string Clock() const {
    const int64_t minutes = wall_->NowMillis() / kMinute % (24 * 60);
    return absl::StrFormat("%02d:%02d", minutes / 60, minutes % 60);
  }

  void Step(const std::string& text) {
    std::printf("\n[%s] %s\n", Clock().c_str(), text.c_str());
  }

  absl::Status Put(Device& d, const std::string& ks, const std::string& key,
                   const std::string& value) {
    PEERKV_ASSIGN_OR_RETURN(const Version v, d.store->Put(ks, key, value));
    std::printf("         %s: put %s/%s (version %s)\n", d.name.c_str(), ks.c_str(),
                key.c_str(), v.ToString().c_str());
    return absl::OkStatus();
  }

  absl::Status Delete(Device& d, const std::string& ks, const std::string& key) {
    PEERKV_ASSIGN_OR_RETURN(const Version v, d.store->Delete(ks, key));
    std::printf("         %s: delete %s/%s (version %s)\n", d.name.c_str(), ks.c_str(),
                key.c_str(), v.ToString().c_str());
    return absl::OkStatus();
  }

  // `into` pulls what it lacks from `from`'s log, after its checkpoint.
  absl::StatusOr<size_t> Pull(Device& into, Device& from) {
    PEERKV_ASSIGN_OR_RETURN(std::optional<PeerCheckpoint> checkpoint,
                            into.store->GetCheckpoint(from.store->replica_id()));
    uint64_t after = 0;
    if (checkpoint.has_value() && checkpoint->incarnation == from.store->incarnation()) {
      after = checkpoint->seq;
    }
    size_t won = 0;
    for (int pages = 0; pages < 1'000'000; ++pages) {
      PEERKV_ASSIGN_OR_RETURN(Changes changes, from.store->ChangesSince(after, 1000));
      if (changes.last_seq == after) break;
      PEERKV_ASSIGN_OR_RETURN(
          MergeResult result,
          into.store->Merge(std::move(changes.records),
                            CheckpointUpdate{from.store->replica_id(),
                                             {from.store->incarnation(), changes.last_seq}}));
      won += result.won;
      after = changes.last_seq;
    }
    return won;
  }

  absl::Status Meet(Device& a, Device& b) {
    PEERKV_ASSIGN_OR_RETURN(const size_t to_a, Pull(a, b));
    PEERKV_ASSIGN_OR_RETURN(const size_t to_b, Pull(b, a));
    std::printf("         %s <-> %s meet: %s takes %zu change%s, %s takes %zu\n",
                a.name.c_str(), b.name.c_str(), a.name.c_str(), to_a,
                to_a == 1 ? "" : "s", b.name.c_str(), to_b);
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
          lines.push_back(absl::StrFormat("%s/%s = %s", ks, EscapeText(r.key),
                                          EscapeText(r.value)));
        }
      }
      if (lines.empty()) lines.push_back("(nothing yet)");
      for (size_t i = 0; i < lines.size(); ++i) {
        std::printf("    %-7s %s\n", i == 0 ? (d.name + ":").c_str() : "", lines[i].c_str());
      }
    }
  }

  const std::string dir_;
  std::unique_ptr<ManualWallClock> wall_;
  std::vector<Device> devices_;
};

int RunDemo(const Context& c) {
  if (absl::Status s = ExpectPositional(c, 0, 0, "no arguments"); !s.ok()) {
    return Fail(c.command, s);
  }
  std::string pattern = (std::filesystem::temp_directory_path() / "peerkv-demo.XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) {
    return Fail(c.command, absl::InternalError("cannot create a temporary directory"));
  }
  std::printf("peerkv demo: one user, three devices, each a full replica.\n");
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
      "demo", "", "walk through the phone/tablet/pc scenario on three replicas",
      "Three stores in a temporary directory play the seed's first scenario:\n"
      "a contact added on the phone, a draft written on the tablet while apart,\n"
      "finished and sent on the pc, and a conflicting edit resolved by last\n"
      "writer wins. Prints what each device sees at each step.\n",
      {}, RunDemo};
  return *command;
}

}  // namespace peerkv::cli
