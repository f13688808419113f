// rpc/convert_test.cc: every conversion in convert.h through a real capnp
// message and back, and the per-connection watermark channel: deltas carry
// only what grew, and the bound on origins is applied one way (entries per
// message and origins after merging; nothing kept on refusal).
#include "rpc/convert.h"

#include <string>
#include <vector>

#include "capnp/message.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peerkv::rpc {
namespace {

using absl::StatusCode;

// Builds a message of `T`, lets `fill` write it, and returns `read` of it.
template <typename T, typename Fill, typename Read>
auto ThroughWire(Fill fill, Read read) {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<T>();
  fill(root);
  return read(root.asReader());
}

Mutation MutationRoundTrip(const Mutation& m) {
  return ThroughWire<wire::Mutation>([&](auto b) { ToWire(m, b); },
                                     [](auto r) { return FromWire(r); });
}

TEST(ConvertTest, MutationsRoundTrip) {
  const std::vector<Mutation> mutations = {
      Mutation{"contacts", "bob", std::string("Bob <bob@x>")},
      Mutation{"contacts", std::string("k\0ey", 4), std::string("v\0\xff", 3)},
      Mutation{"contacts", "bob", std::string()},  // a put of an empty value
      Mutation{"contacts", "bob", std::nullopt},   // a delete
  };
  for (const Mutation& m : mutations) {
    const Mutation back = MutationRoundTrip(m);
    EXPECT_EQ(back.keyspace, m.keyspace);
    EXPECT_EQ(back.key, m.key);
    EXPECT_EQ(back.value, m.value);
  }
}

TEST(ConvertTest, SingleWriteParamsAreMutations) {
  const Mutation put = ThroughWire<wire::Kv::PutParams>(
      [](auto b) {
        b.setKeyspace("ks");
        b.setKey(AsData("k"));
        b.setValue(AsData(""));
      },
      [](auto r) { return FromWire(r); });
  EXPECT_EQ(put.keyspace, "ks");
  EXPECT_EQ(put.key, "k");
  EXPECT_EQ(put.value, std::optional<std::string>(""));
  const Mutation del = ThroughWire<wire::Kv::DeleteParams>(
      [](auto b) {
        b.setKeyspace("ks");
        b.setKey(AsData("k"));
      },
      [](auto r) { return FromWire(r); });
  EXPECT_EQ(del.value, std::nullopt);
}

TEST(ConvertTest, RecordViewNeedsNoNulAfterItsKeyspace) {
  // The keyspace is the first 8 bytes of a longer buffer: no NUL after it.
  const std::string buffer = "contactsXYZ";
  const RecordView view{std::string_view(buffer).substr(0, 8), "bob",
                        Version{MakeHlc(100, 1), 7}, true, "v", 42};
  const Record back = ThroughWire<wire::Record>([&](auto b) { ToWire(view, b); },
                                                [](auto r) { return FromWire(r); });
  EXPECT_EQ(back, (Record{"contacts", "bob", Version{MakeHlc(100, 1), 7}, true, "v", 42}));
}

TEST(ConvertTest, ErrorsRoundTripAndUnknownCodesAreNotTrusted) {
  const absl::Status refused = absl::InvalidArgumentError("key is 401 bytes; the limit is 400");
  EXPECT_EQ(ThroughWire<wire::Error>([&](auto b) { ToWire(refused, b); },
                                     [](auto r) { return FromWire(r); }),
            refused);
  EXPECT_THAT(ThroughWire<wire::Error>([](auto b) { ToWire(absl::OkStatus(), b); },
                                       [](auto r) { return FromWire(r); }),
              IsOk());
  EXPECT_THAT(ThroughWire<wire::Error>(
                  [](auto b) {
                    b.setCode(200);
                    b.setMessage("from the future");
                  },
                  [](auto r) { return FromWire(r); }),
              StatusIs(StatusCode::kUnknown, "from the future"));
}

TEST(ConvertTest, ResultsCarryTheirOwnStatus) {
  absl::StatusOr<std::optional<Record>> missing = ThroughWire<wire::GetResult>(
      [](auto) {}, [](auto r) { return FromWire(r); });
  ASSERT_THAT(missing, IsOk());
  EXPECT_EQ(*missing, std::nullopt);
  absl::StatusOr<std::optional<Record>> full = ThroughWire<wire::GetResult>(
      [](auto b) { ToWire(absl::ResourceExhaustedError("answer full"), b.initError()); },
      [](auto r) { return FromWire(r); });
  EXPECT_THAT(full, StatusIs(StatusCode::kResourceExhausted));
  absl::StatusOr<Version> written = ThroughWire<wire::WriteResult>(
      [](auto b) { ToWire(Version{5, 6}, b.initVersion()); }, [](auto r) { return FromWire(r); });
  ASSERT_THAT(written, IsOk());
  EXPECT_EQ(*written, (Version{5, 6}));
}

TEST(ConvertTest, ScanOptionsRoundTripButTheReplyBound) {
  ScanOptions options;
  options.prefix = std::string("p\0", 2);
  options.start_after = "pa";
  options.limit = 7;
  options.include_tombstones = true;
  options.max_bytes = 10;  // the server's own: not sent
  const ScanOptions back = ThroughWire<wire::Kv::ScanParams>(
      [&](auto b) { ToWire(options, b); }, [](auto r) { return FromWire(r); });
  EXPECT_EQ(back.prefix, options.prefix);
  EXPECT_EQ(back.start_after, "pa");
  EXPECT_EQ(back.limit, 7u);
  EXPECT_TRUE(back.include_tombstones);
  EXPECT_EQ(back.max_bytes, ScanOptions().max_bytes);
}

PeerStatus SamplePeer() {
  PeerStatus p;
  p.name = "tablet";
  p.address = "10.0.0.2:7700";
  p.replica_id = 0xabc;
  p.inbound = true;
  p.reachable = true;
  p.last_exchange = absl::FromUnixMillis(1764590000123);
  p.checkpoint_seq = 40;
  p.behind = 2;
  p.refused = 3;
  p.last_error = "peer 10.0.0.2:7700: no answer within 10 s";
  p.links = 2;
  p.suspect_links = 1;
  p.dead_links = 9;
  return p;
}

void ExpectSamePeer(const PeerStatus& a, const PeerStatus& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.address, b.address);
  EXPECT_EQ(a.replica_id, b.replica_id);
  EXPECT_EQ(a.inbound, b.inbound);
  EXPECT_EQ(a.reachable, b.reachable);
  EXPECT_EQ(a.last_exchange, b.last_exchange);
  EXPECT_EQ(a.checkpoint_seq, b.checkpoint_seq);
  EXPECT_EQ(a.behind, b.behind);
  EXPECT_EQ(a.refused, b.refused);
  EXPECT_EQ(a.last_error, b.last_error);
  EXPECT_EQ(a.links, b.links);
  EXPECT_EQ(a.suspect_links, b.suspect_links);
  EXPECT_EQ(a.dead_links, b.dead_links);
}

TEST(ConvertTest, PeerStatusRoundTripsAndNeverTravelsAsZero) {
  const PeerStatus p = SamplePeer();
  ExpectSamePeer(ThroughWire<wire::PeerStatus>([&](auto b) { ToWire(p, b); },
                                               [](auto r) { return FromWire(r); }),
                 p);
  PeerStatus never = p;
  never.last_exchange = absl::InfinitePast();
  const int64_t ms = ThroughWire<wire::PeerStatus>([&](auto b) { ToWire(never, b); },
                                                   [](auto r) { return r.getLastExchangeMs(); });
  EXPECT_EQ(ms, 0);
  EXPECT_EQ(ThroughWire<wire::PeerStatus>([&](auto b) { ToWire(never, b); },
                                          [](auto r) { return FromWire(r); })
                .last_exchange,
            absl::InfinitePast());
}

// Record::signature on the wire (README "Signed records"); the status
// counts the merge gate's refusals.
TEST(ConvertTest, RecordsCarryTheirSignature) {
  const Record signed_record{"blog", "post", Version{MakeHlc(100, 1), 7}, false, "v", 42,
                             std::nullopt, "SIG"};
  Record back = ThroughWire<wire::Record>([&](auto b) { ToWire(signed_record, b); },
                                          [](auto r) { return FromWire(r); });
  EXPECT_EQ(back, signed_record);
  const RecordView view{"blog", "post", Version{MakeHlc(100, 1), 7}, false, "v", 42, "SIG"};
  back = ThroughWire<wire::Record>([&](auto b) { ToWire(view, b); },
                                   [](auto r) { return FromWire(r); });
  EXPECT_EQ(back, signed_record);
  ServerStatus s;
  s.gate_refused = 5;
  const ServerStatus status = ThroughWire<wire::ServerStatus>([&](auto b) { ToWire(s, b); },
                                                              [](auto r) { return FromWire(r); });
  EXPECT_EQ(status.gate_refused, 5u);
}

TEST(ConvertTest, ServerStatusRoundTripsWithItsStoreStats) {
  ServerStatus s;
  s.replica_id = 1;
  s.incarnation = 2;
  s.live_records = 3;
  s.tombstones = 4;
  s.max_seq = 5;
  s.disk_bytes = 6;
  s.fingerprint = 7;
  s.log_entries = 8;  // not carried
  s.replica_name = "pc";
  s.data_dir = "/data";
  s.max_value_bytes = 1000;
  s.uptime_ms = 9;
  s.connected_clients = 10;
  s.peers = {SamplePeer(), PeerStatus{}};
  s.peers_omitted = 11;
  const ServerStatus back = ThroughWire<wire::ServerStatus>([&](auto b) { ToWire(s, b); },
                                                            [](auto r) { return FromWire(r); });
  EXPECT_EQ(back.replica_id, 1u);
  EXPECT_EQ(back.incarnation, 2u);
  EXPECT_EQ(back.live_records, 3u);
  EXPECT_EQ(back.tombstones, 4u);
  EXPECT_EQ(back.max_seq, 5u);
  EXPECT_EQ(back.disk_bytes, 6u);
  EXPECT_EQ(back.fingerprint, 7u);
  EXPECT_EQ(back.log_entries, 0u);
  EXPECT_EQ(back.replica_name, "pc");
  EXPECT_EQ(back.data_dir, "/data");
  EXPECT_EQ(back.max_value_bytes, 1000u);
  EXPECT_EQ(back.uptime_ms, 9u);
  EXPECT_EQ(back.connected_clients, 10u);
  EXPECT_EQ(back.peers_omitted, 11u);
  ASSERT_EQ(back.peers.size(), 2u);
  ExpectSamePeer(back.peers[0], s.peers[0]);
  ExpectSamePeer(back.peers[1], PeerStatus{});
}

TEST(ConvertTest, ServerStatusCarriesTheQuarantineWithinItsListBound) {
  ServerStatus s;
  s.quarantine_records = 40;
  s.quarantine_origins = 40;
  s.quarantine_dropped = 2;
  for (uint64_t i = 1; i <= 40; ++i) {
    s.quarantined.push_back(QuarantinedOrigin{i, 1, static_cast<int64_t>(1000 * i),
                                              static_cast<int64_t>(2000 * i)});
  }
  const ServerStatus back = ThroughWire<wire::ServerStatus>([&](auto b) { ToWire(s, b); },
                                                            [](auto r) { return FromWire(r); });
  EXPECT_EQ(back.quarantine_records, 40u);
  EXPECT_EQ(back.quarantine_origins, 40u);
  EXPECT_EQ(back.quarantine_dropped, 2u);
  ASSERT_EQ(back.quarantined.size(), kMaxQuarantineOriginsListed);
  EXPECT_EQ(back.quarantined[1].origin, 2u);
  EXPECT_EQ(back.quarantined[1].records, 1u);
  EXPECT_EQ(back.quarantined[1].first_due_ms, 2000);
  EXPECT_EQ(back.quarantined[1].last_due_ms, 4000);
}

// A nudge message carrying `entries` as they are (duplicates included),
// received on `channel`.
absl::StatusOr<Watermarks> Receive(WatermarkChannel& channel,
                                   const std::vector<std::pair<uint64_t, uint64_t>>& entries) {
  capnp::MallocMessageBuilder message;
  auto nudge = message.initRoot<wire::Replica::NudgeParams>();
  auto list = nudge.initWatermarks(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    list[i].setOrigin(entries[i].first);
    list[i].setHlc(entries[i].second);
  }
  absl::StatusOr<const Watermarks*> known =
      Incoming(channel, "nudge", nudge.asReader().getWatermarks());
  if (!known.ok()) return known.status();
  return **known;
}

// `n` distinct origins starting at `first`, each at hlc 1.
Watermarks Origins(uint64_t first, size_t n) {
  Watermarks w;
  for (size_t i = 0; i < n; ++i) w[first + i] = 1;
  return w;
}

std::vector<std::pair<uint64_t, uint64_t>> Entries(const Watermarks& w) {
  return std::vector<std::pair<uint64_t, uint64_t>>(w.begin(), w.end());
}

TEST(WatermarkChannelTest, OutgoingSendsOnlyWhatGrew) {
  WatermarkChannel channel;
  EXPECT_EQ(channel.Outgoing(Watermarks{{1, 10}, {2, 20}, {3, 0}}),
            (Watermarks{{1, 10}, {2, 20}}));
  EXPECT_EQ(channel.Outgoing(Watermarks{{1, 10}, {2, 20}}), Watermarks{});
  EXPECT_EQ(channel.Outgoing(Watermarks{{1, 11}, {2, 20}, {4, 5}}),
            (Watermarks{{1, 11}, {4, 5}}));
  // Lower than told: nothing (the other side keeps the join).
  EXPECT_EQ(channel.Outgoing(Watermarks{{1, 3}}), Watermarks{});
  EXPECT_EQ(channel.sent(), (Watermarks{{1, 11}, {2, 20}, {4, 5}}));
}

TEST(WatermarkChannelTest, DeltasRebuildTheSendersWatermarks) {
  WatermarkChannel sender;
  WatermarkChannel receiver;
  const std::vector<Watermarks> history = {
      {{1, 10}}, {{1, 10}, {2, 5}}, {{1, 12}, {2, 5}, {3, 1}}, {{1, 12}, {2, 9}, {3, 1}}};
  for (const Watermarks& current : history) {
    absl::StatusOr<Watermarks> known = Receive(receiver, Entries(sender.Outgoing(current)));
    ASSERT_THAT(known, IsOk());
    EXPECT_EQ(*known, current);
  }
}

TEST(WatermarkChannelTest, DuplicateOriginsInOneMessageAreJoined) {
  WatermarkChannel channel;
  absl::StatusOr<Watermarks> known = Receive(channel, {{1, 5}, {1, 9}, {1, 7}});
  ASSERT_THAT(known, IsOk());
  EXPECT_EQ(*known, (Watermarks{{1, 9}}));
}

TEST(WatermarkChannelTest, RefusesAMessageOverTheBoundWithoutDecodingIt) {
  WatermarkChannel channel;
  bool decoded = false;
  absl::StatusOr<const Watermarks*> refused =
      channel.Incoming("pull", kMaxWatermarks + 1, [&decoded] {
        decoded = true;
        return Watermarks{};
      });
  EXPECT_THAT(refused, StatusIs(StatusCode::kInvalidArgument,
                                "pull carries 4097 watermarks; the limit is 4096"));
  EXPECT_FALSE(decoded);
  // Duplicates count: the bound is on what the message carries.
  std::vector<std::pair<uint64_t, uint64_t>> same(kMaxWatermarks + 1, {1, 1});
  EXPECT_THAT(Receive(channel, same), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_TRUE(channel.received().empty());
}

TEST(WatermarkChannelTest, BoundsOriginsPerConnectionAfterMerging) {
  WatermarkChannel channel;
  ASSERT_THAT(Receive(channel, Entries(Origins(1, kMaxWatermarks - 10))), IsOk());
  // Within the bound per message, but past it once merged: refused, and
  // nothing of it kept (the dialler used to test the size before merging).
  EXPECT_THAT(Receive(channel, Entries(Origins(1'000'000, 11))),
              StatusIs(StatusCode::kInvalidArgument,
                       "more than 4096 origins' watermarks on one connection"));
  EXPECT_EQ(channel.received(), Origins(1, kMaxWatermarks - 10));
  // Up to the bound exactly is fine, and so are known origins beyond it.
  ASSERT_THAT(Receive(channel, Entries(Origins(1'000'000, 10))), IsOk());
  EXPECT_EQ(channel.received().size(), kMaxWatermarks);
  absl::StatusOr<Watermarks> raised = Receive(channel, {{1, 99}, {1'000'000, 99}});
  ASSERT_THAT(raised, IsOk());
  EXPECT_EQ(raised->at(1), 99u);
  EXPECT_THAT(Receive(channel, {{1, 100}, {2'000'000, 1}}),
              StatusIs(StatusCode::kInvalidArgument));
  EXPECT_EQ(channel.received().at(1), 99u);
}

}  // namespace
}  // namespace peerkv::rpc
