// replication/snapshot_test.cc: snapshot bootstrap in the engine, driven on
// a ManualExecutor over a transport that answers from a real source store
// (ServePull, ServeSnapshot) and can damage pages: an empty replica copies
// the snapshot and then pulls the log from its point; a truncated,
// reordered or other-incarnation page is refused and the snapshot starts
// again; an engine stopped mid-way resumes from the durable marker; a peer
// that serves no snapshots is pulled instead. And the page checks and the
// server's refusals one by one.
#include "replication/snapshot.h"

#include <functional>

#include "absl/strings/str_format.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "replication/replicator.h"
#include "replication/serve.h"
#include "testing/temp_dir.h"

namespace peerkv::replication {
namespace {

using absl::StatusCode;

// Answers pulls and snapshot pages from `source` at once; `damage` may
// change a page (numbered from 1) or return false to leave it unanswered.
class SourceTransport final : public Transport {
 public:
  explicit SourceTransport(Store* source) : source_(source) {}
  void Connect(const std::string&, absl::AnyInvocable<void(absl::StatusOr<Connected>)> done)
      override {
    done(absl::UnavailableError("no dialling in this test"));
  }
  void Pull(LinkId, const PullRequest& request,
            absl::AnyInvocable<void(absl::StatusOr<PullResponse>)> done) override {
    pulls.push_back(request);
    done(ServePull(*source_, request));
  }
  void Nudge(LinkId, const Watermarks&) override {}
  void Close(LinkId link) override { closed.push_back(link); }
  void Snapshot(LinkId, const SnapshotRequest& request,
                absl::AnyInvocable<void(absl::StatusOr<SnapshotResponse>)> done) override {
    ++pages;
    if (!serves_snapshots) {
      done(absl::UnimplementedError("no snapshots here"));
      return;
    }
    absl::StatusOr<SnapshotResponse> response = ServeSnapshot(*source_, request);
    if (response.ok() && damage && !damage(pages, *response)) return;
    done(std::move(response));
  }

  std::vector<PullRequest> pulls;
  std::vector<LinkId> closed;
  int pages = 0;
  bool serves_snapshots = true;
  std::function<bool(int, SnapshotResponse&)> damage;

 private:
  Store* const source_;
};

constexpr size_t kRecords = 3000;
constexpr uint32_t kPageRecords = 200;

class SnapshotEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    source_ = Open("source");
    target_ = Open("target");
    transport_ = std::make_unique<SourceTransport>(source_.get());
    std::vector<Mutation> batch;
    for (size_t i = 0; i < kRecords; ++i) {
      batch.push_back(Mutation{i % 3 ? "docs" : "notes", absl::StrFormat("k%05d", (i * 7919) % kRecords),
                               absl::StrFormat("value %d", i)});
      if (batch.size() == 500) {
        ASSERT_THAT(source_->Write(std::move(batch)), IsOk());
        batch.clear();
      }
    }
    ASSERT_THAT(source_->Delete("docs", "k00001"), IsOk());
  }

  void TearDown() override { StopReplicator(); }

  std::unique_ptr<Store> Open(const std::string& name) {
    StoreOptions options;
    options.dir = dir_.Sub(name);
    options.sync = false;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    EXPECT_THAT(store, IsOk());
    return store.ok() ? std::move(*store) : nullptr;
  }

  void StartReplicator() {
    ReplicatorOptions options;
    options.gossip_interval = absl::Milliseconds(100);
    options.snapshot_records = kPageRecords;
    options.reconcile_interval = absl::ZeroDuration();
    options.log = [this](const std::string& line) { log_.push_back(line); };
    replicator_ = std::make_unique<Replicator>(target_.get(), &executor_, transport_.get(), options);
    replicator_->Start();
    replicator_->OnInboundLink(
        1, PeerInfo{.replica_id = source_->replica_id(), .incarnation = source_->incarnation()});
  }

  void StopReplicator() {
    if (replicator_ == nullptr) return;
    replicator_->Stop();
    replicator_.reset();
  }

  // Runs the engine until the two stores agree (bounded).
  bool RunUntilConverged() {
    for (int i = 0; i < 200; ++i) {
      executor_.RunUntil(executor_.Now() + absl::Milliseconds(50));
      if (target_->fingerprint() == source_->fingerprint() && !target_->Bootstrap().has_value()) {
        return true;
      }
    }
    return false;
  }

  bool Logged(const std::string& text) const {
    for (const std::string& line : log_) {
      if (line.find(text) != std::string::npos) return true;
    }
    return false;
  }

  testing::TempDir dir_;
  std::unique_ptr<Store> source_;
  std::unique_ptr<Store> target_;
  std::unique_ptr<SourceTransport> transport_;
  ManualExecutor executor_{absl::FromUnixSeconds(1'700'000'000)};
  std::unique_ptr<Replicator> replicator_;
  std::vector<std::string> log_;
};

TEST_F(SnapshotEngineTest, AnEmptyReplicaCopiesTheSnapshotThenPullsTheLogFromItsPoint) {
  const uint64_t point = source_->max_seq();
  StartReplicator();
  ASSERT_TRUE(RunUntilConverged());
  const ReplicatorCounters counters = replicator_->Counters();
  EXPECT_EQ(counters.snapshots_started, 1u);
  EXPECT_EQ(counters.snapshots_completed, 1u);
  EXPECT_EQ(counters.snapshot_restarts, 0u);
  EXPECT_EQ(counters.snapshot_records, kRecords);
  EXPECT_GE(counters.snapshot_pages, kRecords / kPageRecords);
  EXPECT_TRUE(Logged("copied the snapshot of peer"));
  absl::StatusOr<std::optional<PeerCheckpoint>> checkpoint =
      target_->GetCheckpoint(source_->replica_id());
  ASSERT_THAT(checkpoint, IsOk());
  ASSERT_TRUE(checkpoint->has_value());
  EXPECT_GE((*checkpoint)->seq, point);
  EXPECT_TRUE(target_->GetWatermarks().Dominates(Watermarks{}));
  // The log is pulled from the snapshot's point, not from zero.
  ASSERT_FALSE(transport_->pulls.empty());
  EXPECT_EQ(transport_->pulls.front().after_seq, point);
  EXPECT_EQ(transport_->pulls.front().incarnation, source_->incarnation());
  // Deltas after it arrive as usual.
  ASSERT_THAT(source_->Put("docs", "after", "delta"), IsOk());
  replicator_->OnNudged(1, Watermarks{});
  ASSERT_TRUE(RunUntilConverged());
  absl::StatusOr<std::optional<Record>> delta = target_->Get("docs", "after");
  ASSERT_THAT(delta, IsOk());
  ASSERT_TRUE(delta->has_value());
  EXPECT_EQ((*delta)->value, "delta");
  EXPECT_EQ(replicator_->Counters().snapshots_started, 1u);
}

TEST_F(SnapshotEngineTest, ATruncatedPageIsRefusedAndTheSnapshotStartsAgain) {
  transport_->damage = [](int page, SnapshotResponse& r) {
    if (page == 3) r.records.pop_back();  // count still says what was sent
    return true;
  };
  StartReplicator();
  ASSERT_TRUE(RunUntilConverged());
  const ReplicatorCounters counters = replicator_->Counters();
  EXPECT_EQ(counters.snapshot_restarts, 1u);
  EXPECT_EQ(counters.snapshots_started, 2u);
  EXPECT_EQ(counters.snapshots_completed, 1u);
  EXPECT_TRUE(Logged("truncated"));
}

TEST_F(SnapshotEngineTest, AReorderedPageIsRefusedAndTheSnapshotStartsAgain) {
  transport_->damage = [](int page, SnapshotResponse& r) {
    if (page == 2) std::swap(r.records[3], r.records[4]);
    return true;
  };
  StartReplicator();
  ASSERT_TRUE(RunUntilConverged());
  EXPECT_EQ(replicator_->Counters().snapshot_restarts, 1u);
  EXPECT_TRUE(Logged("reordered"));
}

TEST_F(SnapshotEngineTest, APageFromAnotherIncarnationIsRefusedAndTheSnapshotStartsAgain) {
  transport_->damage = [](int page, SnapshotResponse& r) {
    if (page == 4) r.incarnation ^= 1;
    return true;
  };
  StartReplicator();
  ASSERT_TRUE(RunUntilConverged());
  EXPECT_EQ(replicator_->Counters().snapshot_restarts, 1u);
  EXPECT_TRUE(Logged("changed incarnation mid-way"));
}

TEST_F(SnapshotEngineTest, AnEngineStoppedMidwayResumesFromTheDurableMarker) {
  // Pages after the fifth are never answered: the engine is stopped with
  // the sixth in flight, its store closed and opened again.
  transport_->damage = [](int page, SnapshotResponse&) { return page <= 5; };
  StartReplicator();
  for (int i = 0; i < 20; ++i) executor_.RunUntil(executor_.Now() + absl::Milliseconds(10));
  StopReplicator();
  target_.reset();
  target_ = Open("target");
  const std::optional<BootstrapMarker> marker = target_->Bootstrap();
  ASSERT_TRUE(marker.has_value());
  EXPECT_EQ(marker->peer_id, source_->replica_id());
  EXPECT_EQ(marker->records, 5 * kPageRecords);
  // Not complete, and it does not claim to be: no checkpoint of the peer.
  absl::StatusOr<std::optional<PeerCheckpoint>> checkpoint =
      target_->GetCheckpoint(source_->replica_id());
  ASSERT_THAT(checkpoint, IsOk());
  EXPECT_FALSE(checkpoint->has_value());
  EXPECT_NE(target_->fingerprint(), source_->fingerprint());

  transport_->damage = nullptr;
  StartReplicator();
  ASSERT_TRUE(RunUntilConverged());
  const ReplicatorCounters counters = replicator_->Counters();
  EXPECT_EQ(counters.snapshots_started, 0u);  // resumed, not begun again
  EXPECT_EQ(counters.snapshots_completed, 1u);
  EXPECT_EQ(counters.snapshot_records, kRecords - 5 * kPageRecords);
  EXPECT_TRUE(Logged("resuming the snapshot"));
}

TEST_F(SnapshotEngineTest, APeerThatServesNoSnapshotsIsPulled) {
  transport_->serves_snapshots = false;
  StartReplicator();
  ASSERT_TRUE(RunUntilConverged());
  EXPECT_EQ(replicator_->Counters().snapshots_completed, 0u);
  EXPECT_EQ(transport_->pulls.front().after_seq, 0u);
  EXPECT_EQ(transport_->pages, 1);  // asked once, then never again
}

TEST_F(SnapshotEngineTest, TheServerRefusesToContinueAnotherIncarnationOrABeyondPoint) {
  SnapshotRequest request{.requester = 9, .incarnation = source_->incarnation() ^ 1,
                          .point_seq = 1, .max_records = 10, .max_bytes = 1 << 20};
  EXPECT_THAT(ServeSnapshot(*source_, request),
              StatusIs(StatusCode::kFailedPrecondition, "start the snapshot again"));
  request.incarnation = source_->incarnation();
  request.point_seq = source_->max_seq() + 1;
  EXPECT_THAT(ServeSnapshot(*source_, request),
              StatusIs(StatusCode::kFailedPrecondition, "beyond this replica's log"));
  request.point_seq = source_->max_seq();
  absl::StatusOr<SnapshotResponse> page = ServeSnapshot(*source_, request);
  ASSERT_THAT(page, IsOk());
  EXPECT_EQ(page->records.size(), 10u);
  EXPECT_TRUE(page->watermarks.empty());  // told with a new snapshot only
  request.incarnation = 0;
  page = ServeSnapshot(*source_, request);
  ASSERT_THAT(page, IsOk());
  EXPECT_EQ(page->point_seq, source_->max_seq());
  EXPECT_FALSE(page->watermarks.empty());
}

TEST(ValidateSnapshotPageTest, NamesWhatIsWrong) {
  const auto rec = [](const std::string& ks, const std::string& key) {
    return Record{ks, key, Version{1, 2}, false, "v", 0};
  };
  SnapshotRequest request{.incarnation = 5, .point_seq = 10, .after_keyspace = "b",
                          .after_key = "k5", .max_records = 3};
  SnapshotResponse good{.replica_id = 7, .incarnation = 5, .point_seq = 10,
                        .records = {rec("b", "k6"), rec("b", "k7"), rec("c", "a")}, .count = 3};
  EXPECT_THAT(ValidateSnapshotPage(7, request, good), IsOk());

  SnapshotResponse r = good;
  EXPECT_THAT(ValidateSnapshotPage(8, request, r),
              StatusIs(StatusCode::kFailedPrecondition, "expected replica"));
  r.incarnation = 6;
  EXPECT_THAT(ValidateSnapshotPage(7, request, r),
              StatusIs(StatusCode::kFailedPrecondition, "changed incarnation"));
  r = good;
  r.point_seq = 11;
  EXPECT_THAT(ValidateSnapshotPage(7, request, r),
              StatusIs(StatusCode::kFailedPrecondition, "changed incarnation"));
  r = good;
  r.records.pop_back();
  EXPECT_THAT(ValidateSnapshotPage(7, request, r), StatusIs(StatusCode::kDataLoss, "truncated"));
  r = good;
  std::swap(r.records[0], r.records[1]);
  EXPECT_THAT(ValidateSnapshotPage(7, request, r),
              StatusIs(StatusCode::kInvalidArgument, "reordered"));
  r = good;
  r.records[0] = rec("b", "k5");  // not after the requested register
  EXPECT_THAT(ValidateSnapshotPage(7, request, r),
              StatusIs(StatusCode::kInvalidArgument, "record 0"));
  r = good;
  r.records.push_back(rec("d", "x"));
  r.count = 4;
  EXPECT_THAT(ValidateSnapshotPage(7, request, r),
              StatusIs(StatusCode::kInvalidArgument, "at most 3"));
  r = good;
  r.incarnation = 0;
  EXPECT_THAT(ValidateSnapshotPage(7, request, r),
              StatusIs(StatusCode::kInvalidArgument, "incarnation is 0"));
  // A new snapshot: any incarnation and point of the peer's.
  request.incarnation = 0;
  request.after_keyspace.clear();
  request.after_key.clear();
  r = good;
  r.incarnation = 99;
  EXPECT_THAT(ValidateSnapshotPage(7, request, r), IsOk());
}

}  // namespace
}  // namespace peerkv::replication
