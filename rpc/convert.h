// rpc/convert.h: conversions between the schema's structs and the store's
// and client's plain types, both directions side by side in convert.cc
// (the replication engine's messages are in peer_convert.h, which needs
// the engine). Every conversion copies: no capnp reader outlives its
// message, and no store type points into one. Internal to rpc/.
#ifndef PEERKV_RPC_CONVERT_H_
#define PEERKV_RPC_CONVERT_H_

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "capnp/blob.h"
#include "capnp/list.h"
#include "kj/exception.h"
#include "replication/watermark_channel.h"
#include "rpc/peerkv.capnp.h"
#include "rpc/status.h"
#include "store/types.h"
#include "store/version.h"

namespace peerkv::rpc {

// The bytes of a Text or Data field, valid while its message is.
inline std::string_view View(capnp::Text::Reader text) {
  return std::string_view(text.begin(), text.size());
}
inline std::string_view View(capnp::Data::Reader data) {
  return std::string_view(reinterpret_cast<const char*>(data.begin()), data.size());
}
inline std::string ToString(capnp::Data::Reader data) { return std::string(View(data)); }
inline std::string ToString(capnp::Text::Reader text) { return std::string(View(text)); }
inline capnp::Data::Reader AsData(std::string_view bytes) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size());
}
// A std::string because capnp's Text needs the NUL after the bytes, which
// a std::string always has and a string_view may not.
inline capnp::Text::Reader AsText(const std::string& text) {
  return capnp::Text::Reader(text.data(), text.size());
}

// absl::Status <-> wire Error. An unknown code from the wire becomes
// Unknown rather than being trusted.
void ToWire(const absl::Status& status, wire::Error::Builder out);
absl::Status FromWire(wire::Error::Reader error);

// The status carried in a response's (or result's) error field: OK if it
// has none.
template <typename Response>
absl::Status ResponseStatus(const Response& response) {
  return response.hasError() ? FromWire(response.getError()) : absl::OkStatus();
}
// The same test without building the status (the load generator's count).
template <typename Response>
bool Failed(const Response& response) {
  return response.hasError() && response.getError().getCode() != 0;
}

void ToWire(const Version& version, wire::Version::Builder out);
Version FromWire(wire::Version::Reader version);

void ToWire(const Record& record, wire::Record::Builder out);
// Copies straight from a store's memory map (see Store::GetView). The
// keyspace is copied into the message, so unlike AsText it needs no NUL
// after its bytes.
void ToWire(const RecordView& record, wire::Record::Builder out);
Record FromWire(wire::Record::Reader record);
// A conflict journal entry (its keyspace is the call's).
void ToWire(const ConflictEntry& entry, wire::ConflictEntry::Builder out);
ConflictEntry FromWire(std::string_view keyspace, wire::ConflictEntry::Reader entry);

// A write: a put when `value` is set, a delete otherwise. The first form
// writes the fields without a Mutation to copy them into (the load
// generator sends one value many times).
void ToWire(std::string_view keyspace, std::string_view key, std::optional<std::string_view> value,
            wire::Mutation::Builder out);
void ToWire(const Mutation& mutation, wire::Mutation::Builder out);
Mutation FromWire(wire::Mutation::Reader mutation);
// The single-write calls carry a mutation's fields as their parameters.
Mutation FromWire(wire::Kv::PutParams::Reader put);
Mutation FromWire(wire::Kv::DeleteParams::Reader del);

// A key to get (getMany's list).
void ToWire(std::string_view keyspace, std::string_view key, wire::KeyRef::Builder out);

// A scan's options but the reply bound (max_bytes, the server's own). A
// limit of 0 travels as 0: the server applies its default.
void ToWire(const ScanOptions& options, wire::Kv::ScanParams::Builder out);
ScanOptions FromWire(wire::Kv::ScanParams::Reader scan);

// One answer of getMany (absent: not found) and of putMany.
absl::StatusOr<std::optional<Record>> FromWire(wire::GetResult::Reader result);
absl::StatusOr<Version> FromWire(wire::WriteResult::Reader result);

// A peer's status; a last exchange of InfinitePast (never) travels as 0.
void ToWire(const replication::ReconcileReport& report, wire::ReconcileReport::Builder out);
replication::ReconcileReport FromWire(wire::ReconcileReport::Reader report);
void ToWire(const PeerStatus& peer, wire::PeerStatus::Builder out);
PeerStatus FromWire(wire::PeerStatus::Reader peer);
// Every field, and every peer in `status.peers` (the server trims the list
// to its reply budget first and counts the rest in peers_omitted).
void ToWire(const ServerStatus& status, wire::ServerStatus::Builder out);
ServerStatus FromWire(wire::ServerStatus::Reader status);

// Whole watermarks; duplicate origins from the wire are joined (max).
void ToWire(const Watermarks& watermarks, capnp::List<wire::Watermark>::Builder out);
Watermarks FromWire(capnp::List<wire::Watermark>::Reader watermarks);

using replication::kMaxWatermarks;
using replication::WatermarkChannel;
// A delta received on `channel` in message `what` (see
// WatermarkChannel::Incoming): decoded only if within the bound.
absl::StatusOr<const Watermarks*> Incoming(WatermarkChannel& channel, std::string_view what,
                                           capnp::List<wire::Watermark>::Reader delta);

// A kj exception (a broken connection, a refused message) as a status:
// DISCONNECTED and OVERLOADED are Unavailable (retry), the rest Internal.
absl::Status FromKjException(const kj::Exception& e, std::string_view context);

}  // namespace peerkv::rpc

#endif  // PEERKV_RPC_CONVERT_H_
