// rpc/watch_hub_test.cc: the watch hub on a real store: a commit wakes only
// the watches whose keyspace and prefix it touched, reads come from the
// in-memory index of the watch's keyspace (or from the log where the index
// does not reach, after an overflow or an eviction) with the latest value
// of each key in seq order, and a connection's window takes turns.
#include "rpc/watch_hub.h"

#include <set>

#include "absl/strings/str_format.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kj/async-io.h"
#include "store/store.h"
#include "testing/temp_dir.h"

namespace peerkv::rpc {
namespace {

using ::testing::ElementsAre;
using ::testing::SizeIs;

// Small limits, so that filling them is quick.
constexpr WatchHub::Limits kLimits{.index_bytes = size_t{2} << 20, .queue_bytes = size_t{1} << 20};

class WatchHubTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions options;
    options.dir = dir_.Sub("db");
    options.sync = false;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
    ASSERT_THAT(store, IsOk());
    store_ = std::move(*store);
    hub_ = std::make_unique<WatchHub>(*store_, io_->provider->getTimer(), kLimits);
    listener_ = store_->AddCommitListener([this](const Store::CommitInfo& info) {
      if (hub_->OnCommit(info)) ++rings_;
    });
    hub_->Start();
  }
  void TearDown() override { store_->RemoveCommitListener(listener_); }

  void Put(const std::string& keyspace, const std::string& key, const std::string& value) {
    ASSERT_THAT(store_->Put(keyspace, key, value), IsOk());
  }

  // Every record the watch reads after `*cursor`, paging until nothing is
  // left; advances `*cursor`.
  std::vector<Record> ReadAll(const WatchHub::Subscription& watch, uint64_t* cursor) {
    std::vector<Record> out;
    for (int i = 0; i < 100'000; ++i) {
      absl::StatusOr<Changes> changes = hub_->Read(watch, *cursor, 1000, size_t{4} << 20);
      EXPECT_THAT(changes, IsOk());
      if (!changes.ok()) break;
      EXPECT_GE(changes->last_seq, *cursor);
      const bool advanced = changes->last_seq > *cursor;
      *cursor = changes->last_seq;
      for (Record& r : changes->records) out.push_back(std::move(r));
      if (!advanced && changes->records.empty()) break;
    }
    return out;
  }

  static std::vector<std::string> Keys(const std::vector<Record>& records) {
    std::vector<std::string> keys;
    for (const Record& r : records) keys.push_back(r.key + "=" + r.value);
    return keys;
  }

  std::unique_ptr<kj::AsyncIoContext> io_ =
      std::make_unique<kj::AsyncIoContext>(kj::setupAsyncIo());
  testing::TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<WatchHub> hub_;
  int listener_ = 0;
  std::atomic<int> rings_{0};
};

TEST_F(WatchHubTest, CommitsToOtherKeyspacesWakeAndQueueNothing) {
  auto watch = hub_->Subscribe("idle", "");
  uint64_t cursor = 0;
  EXPECT_THAT(ReadAll(*watch, &cursor), SizeIs(0));
  kj::Promise<void> woken = hub_->NextChange(*watch);
  for (int i = 0; i < 100; ++i) Put("busy", absl::StrFormat("k%d", i), "v");
  // Not one of the 100 commits needed the loop.
  EXPECT_EQ(rings_.load(), 0);
  hub_->Drain();
  EXPECT_FALSE(woken.poll(io_->waitScope));
  Put("idle", "k", "v");
  EXPECT_EQ(rings_.load(), 1);
  hub_->Drain();
  EXPECT_TRUE(woken.poll(io_->waitScope));
  EXPECT_THAT(Keys(ReadAll(*watch, &cursor)), ElementsAre("k=v"));
  EXPECT_EQ(cursor, store_->max_seq());
}

TEST_F(WatchHubTest, OnlyAChangeUnderItsPrefixWakesAWatch) {
  auto a = hub_->Subscribe("ks", "a/");
  auto all = hub_->Subscribe("ks", "");
  uint64_t a_cursor = 0, all_cursor = 0;
  EXPECT_THAT(ReadAll(*a, &a_cursor), SizeIs(0));
  kj::Promise<void> a_woken = hub_->NextChange(*a);
  kj::Promise<void> all_woken = hub_->NextChange(*all);
  Put("ks", "b/1", "x");
  hub_->Drain();
  EXPECT_FALSE(a_woken.poll(io_->waitScope));
  EXPECT_TRUE(all_woken.poll(io_->waitScope));
  Put("ks", "a/1", "y");
  hub_->Drain();
  EXPECT_TRUE(a_woken.poll(io_->waitScope));
  EXPECT_THAT(Keys(ReadAll(*a, &a_cursor)), ElementsAre("a/1=y"));
  EXPECT_THAT(Keys(ReadAll(*all, &all_cursor)), ElementsAre("b/1=x", "a/1=y"));
}

TEST_F(WatchHubTest, TheIndexGivesTheLatestValueOfEachKeyInSeqOrder) {
  Put("ks", "old", "in the log only");
  Put("other", "x", "not watched");
  auto watch = hub_->Subscribe("ks", "");
  Put("ks", "k1", "1");
  Put("ks", "k2", "2");
  Put("other", "y", "not watched");
  Put("ks", "k1", "1 again");
  hub_->Drain();
  // From 0: the log up to where the index starts, then the index.
  uint64_t cursor = 0;
  EXPECT_THAT(Keys(ReadAll(*watch, &cursor)),
              ElementsAre("old=in the log only", "k2=2", "k1=1 again"));
  EXPECT_EQ(cursor, store_->max_seq());
  // A change committed but not indexed yet supersedes what the index has;
  // it is read once indexed.
  const uint64_t before = cursor;
  Put("ks", "k3", "3");
  hub_->Drain();
  Put("ks", "k3", "3 again");
  uint64_t early = before;
  EXPECT_THAT(ReadAll(*watch, &early), SizeIs(0));
  hub_->Drain();
  EXPECT_THAT(Keys(ReadAll(*watch, &cursor)), ElementsAre("k3=3 again"));
}

// Writes `count` distinct keys of 400 bytes to `keyspace`, 1000 a commit;
// with `drain`, the hub drains after each commit.
void WriteMany(Store& store, WatchHub& hub, const std::string& keyspace, int count, bool drain) {
  for (int begin = 0; begin < count; begin += 1000) {
    std::vector<Mutation> batch;
    for (int i = begin; i < std::min(count, begin + 1000); ++i) {
      std::string key = absl::StrFormat("%06d", i);
      key.resize(kMaxKeyBytes, '.');
      batch.push_back(Mutation{keyspace, key, "v"});
    }
    ASSERT_THAT(store.Write(std::move(batch)), IsOk());
    if (drain) hub.Drain();
  }
}

TEST_F(WatchHubTest, AQueueOverflowWakesEveryWatchToReadTheLog) {
  auto watch = hub_->Subscribe("ks", "");
  uint64_t cursor = 0;
  EXPECT_THAT(ReadAll(*watch, &cursor), SizeIs(0));
  kj::Promise<void> woken = hub_->NextChange(*watch);
  // More than the queue's limit of keys while the loop does not drain.
  const int count = kLimits.queue_bytes / kMaxKeyBytes + 1000;
  WriteMany(*store_, *hub_, "ks", count, /*drain=*/false);
  Put("other", "x", "y");
  hub_->Drain();
  EXPECT_EQ(hub_->indexed_bytes(), 0u);
  EXPECT_TRUE(woken.poll(io_->waitScope));
  std::vector<Record> records = ReadAll(*watch, &cursor);
  ASSERT_THAT(records, SizeIs(count));
  EXPECT_EQ(records.front().key.substr(0, 6), "000000");
  EXPECT_EQ(cursor, store_->max_seq());
  // Then the index again.
  kj::Promise<void> again = hub_->NextChange(*watch);
  Put("ks", "new", "v");
  hub_->Drain();
  EXPECT_TRUE(again.poll(io_->waitScope));
  EXPECT_THAT(Keys(ReadAll(*watch, &cursor)), ElementsAre("new=v"));
}

TEST_F(WatchHubTest, TheIndexStaysInItsBudgetAndAWatchBehindItReadsTheLog) {
  auto watch = hub_->Subscribe("ks", "");
  const uint64_t start = store_->max_seq();
  const int count = kLimits.index_bytes / kMaxKeyBytes + 1000;
  WriteMany(*store_, *hub_, "ks", count, /*drain=*/true);
  EXPECT_LE(hub_->indexed_bytes(), kLimits.index_bytes);
  EXPECT_GT(hub_->indexed_bytes(), 0u);
  uint64_t cursor = start;
  std::vector<Record> records = ReadAll(*watch, &cursor);
  ASSERT_THAT(records, SizeIs(count));
  std::set<std::string> keys;
  for (size_t i = 0; i < records.size(); ++i) {
    keys.insert(records[i].key);
    if (i > 0) EXPECT_LT(records[i - 1].seq, records[i].seq);
  }
  EXPECT_THAT(keys, SizeIs(count));
}

TEST_F(WatchHubTest, WindowTurnsComeInOrderAndAWholeTurnIsNotOvertaken) {
  auto window = kj::refcounted<WatchWindow>();
  int a, b, c, d;
  kj::Promise<void> first = window->Enter(&a, false);
  EXPECT_TRUE(first.poll(io_->waitScope));
  EXPECT_EQ(window->Room(), kWatchWindowBytes);
  window->Charge(kWatchWindowBytes - kWatchMinRoomBytes / 2);
  window->Leave(&a);
  // Less than the minimum room left: b waits, and c behind it.
  kj::Promise<void> second = window->Enter(&b, false);
  kj::Promise<void> third = window->Enter(&c, true);
  EXPECT_FALSE(second.poll(io_->waitScope));
  window->Release(kWatchMinRoomBytes);
  EXPECT_TRUE(second.poll(io_->waitScope));
  EXPECT_FALSE(third.poll(io_->waitScope));
  window->Leave(&b);
  // c wants the whole window: it waits until nothing is in flight, and d
  // does not overtake it meanwhile.
  kj::Promise<void> fourth = window->Enter(&d, false);
  EXPECT_FALSE(third.poll(io_->waitScope));
  EXPECT_FALSE(fourth.poll(io_->waitScope));
  window->Release(window->in_flight());
  EXPECT_TRUE(third.poll(io_->waitScope));
  EXPECT_FALSE(fourth.poll(io_->waitScope));
  window->Leave(&c);
  EXPECT_TRUE(fourth.poll(io_->waitScope));
  // A watch that goes away while queued leaves no hole.
  window->Charge(kWatchWindowBytes);
  int e, f;
  kj::Promise<void> fifth = window->Enter(&e, false);
  kj::Promise<void> sixth = window->Enter(&f, false);
  window->Leave(&d);
  window->Leave(&e);
  window->Release(kWatchWindowBytes);
  EXPECT_TRUE(sixth.poll(io_->waitScope));
}

}  // namespace
}  // namespace peerkv::rpc
