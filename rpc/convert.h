// rpc/convert.h: the one place where schema structs and store types meet.
// Every conversion copies: no capnp reader outlives its message, and no
// store type points into one. Internal to rpc/.
#ifndef PEERKV_RPC_CONVERT_H_
#define PEERKV_RPC_CONVERT_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "capnp/blob.h"
#include "kj/exception.h"
#include "rpc/peerkv.capnp.h"
#include "store/types.h"
#include "store/version.h"

namespace peerkv::rpc {

inline std::string ToString(capnp::Data::Reader data) {
  return std::string(reinterpret_cast<const char*>(data.begin()), data.size());
}
inline std::string ToString(capnp::Text::Reader text) {
  return std::string(text.begin(), text.size());
}
inline capnp::Data::Reader AsData(std::string_view bytes) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size());
}
inline capnp::Text::Reader AsText(const std::string& text) {
  return capnp::Text::Reader(text.data(), text.size());
}

// absl::Status <-> wire Error. An unknown code from the wire becomes
// Unknown rather than being trusted.
void ToWire(const absl::Status& status, wire::Error::Builder out);
absl::Status FromWire(wire::Error::Reader error);

void ToWire(const Version& version, wire::Version::Builder out);
Version FromWire(wire::Version::Reader version);

void ToWire(const Record& record, wire::Record::Builder out);
// Copies straight from a store's memory map (see Store::GetView).
void ToWire(const RecordView& record, wire::Record::Builder out);
Record FromWire(wire::Record::Reader record);

// Origins a connection may tell us watermarks for: far more replicas than
// a user or a group of friends has, few enough to bound the memory.
inline constexpr size_t kMaxWatermarks = 4096;

void ToWire(const Watermarks& watermarks, capnp::List<wire::Watermark>::Builder out);
Watermarks FromWire(capnp::List<wire::Watermark>::Reader watermarks);

// The entries of `current` that grew since `sent` (what the other side
// last heard on this connection); updates `sent`.
Watermarks WatermarkDelta(const Watermarks& current, Watermarks* sent);
// Applies a received delta to `known` (what the other side told us so far).
void ApplyWatermarkDelta(const Watermarks& delta, Watermarks* known);

// A kj exception (a broken connection, a refused message) as a status:
// DISCONNECTED and OVERLOADED are Unavailable (retry), the rest Internal.
absl::Status FromKjException(const kj::Exception& e, std::string_view context);

}  // namespace peerkv::rpc

#endif  // PEERKV_RPC_CONVERT_H_
