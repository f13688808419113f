// rpc/convert.cc: copies between schema structs and store types.
#include "rpc/convert.h"

#include "absl/strings/str_format.h"

namespace peerkv::rpc {

void ToWire(const absl::Status& status, wire::Error::Builder out) {
  out.setCode(static_cast<uint8_t>(status.code()));
  const std::string message(status.message());
  out.setMessage(AsText(message));
}

absl::Status FromWire(wire::Error::Reader error) {
  const int code = error.getCode();
  const std::string message = ToString(error.getMessage());
  if (code == 0) return absl::OkStatus();
  if (code > static_cast<int>(absl::StatusCode::kUnauthenticated)) {
    return absl::UnknownError(message);
  }
  return absl::Status(static_cast<absl::StatusCode>(code), message);
}

void ToWire(const Version& version, wire::Version::Builder out) {
  out.setHlc(version.hlc);
  out.setOrigin(version.origin);
}

Version FromWire(wire::Version::Reader version) {
  return Version{version.getHlc(), version.getOrigin()};
}

void ToWire(const Record& record, wire::Record::Builder out) {
  out.setKeyspace(AsText(record.keyspace));
  out.setKey(AsData(record.key));
  ToWire(record.version, out.initVersion());
  out.setDeleted(record.deleted);
  out.setValue(AsData(record.value));
  out.setSeq(record.seq);
}

void ToWire(const RecordView& record, wire::Record::Builder out) {
  out.setKeyspace(capnp::Text::Reader(record.keyspace.data(), record.keyspace.size()));
  out.setKey(AsData(record.key));
  ToWire(record.version, out.initVersion());
  out.setDeleted(record.deleted);
  out.setValue(AsData(record.value));
  out.setSeq(record.seq);
}

Record FromWire(wire::Record::Reader record) {
  Record out;
  out.keyspace = ToString(record.getKeyspace());
  out.key = ToString(record.getKey());
  out.version = FromWire(record.getVersion());
  out.deleted = record.getDeleted();
  out.value = ToString(record.getValue());
  out.seq = record.getSeq();
  return out;
}

void ToWire(const Watermarks& watermarks, capnp::List<wire::Watermark>::Builder out) {
  size_t i = 0;
  for (const auto& [origin, hlc] : watermarks) {
    out[i].setOrigin(origin);
    out[i].setHlc(hlc);
    ++i;
  }
}

Watermarks FromWire(capnp::List<wire::Watermark>::Reader watermarks) {
  Watermarks out;
  for (auto w : watermarks) out.Raise(w.getOrigin(), w.getHlc());
  return out;
}

Watermarks WatermarkDelta(const Watermarks& current, Watermarks* sent) {
  Watermarks delta;
  for (const auto& [origin, hlc] : current) {
    uint64_t& told = (*sent)[origin];
    if (hlc > told) {
      delta[origin] = hlc;
      told = hlc;
    }
  }
  return delta;
}

void ApplyWatermarkDelta(const Watermarks& delta, Watermarks* known) {
  known->Merge(delta);
}

absl::Status FromKjException(const kj::Exception& e, std::string_view context) {
  const std::string message =
      absl::StrFormat("%s: %s", context, std::string(e.getDescription().cStr()));
  switch (e.getType()) {
    case kj::Exception::Type::DISCONNECTED:
    case kj::Exception::Type::OVERLOADED:
      return absl::UnavailableError(message);
    case kj::Exception::Type::UNIMPLEMENTED:
      return absl::UnimplementedError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace peerkv::rpc
