// rpc/batch_codec.cc: encoding and checked decoding of record batches.
//
// Per record:  varint keyspace length (0: same keyspace as the previous
// record), keyspace, varint key length, key, flags byte (bit 0: deleted;
// bit 1: a causal mark follows the version; bit 2: a signature follows),
// hlc (8, little-endian), origin (8), [mark hlc (8), mark origin (8)],
// [varint signature length (1..kMaxSignatureBytes), signature], varint seq,
// varint value length, value.
#include "rpc/batch_codec.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "store/validation.h"

namespace peerkv::rpc {
namespace {

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

void PutFixed64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}

  bool done() const { return pos_ == bytes_.size(); }
  size_t pos() const { return pos_; }

  bool Varint(uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= bytes_.size()) return false;
      const uint8_t b = static_cast<uint8_t>(bytes_[pos_++]);
      *v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return true;
    }
    return false;
  }
  bool Fixed64(uint64_t* v) {
    if (bytes_.size() - pos_ < 8) return false;
    *v = 0;
    for (int i = 7; i >= 0; --i) *v = (*v << 8) | static_cast<uint8_t>(bytes_[pos_ + i]);
    pos_ += 8;
    return true;
  }
  bool Byte(uint8_t* v) {
    if (pos_ >= bytes_.size()) return false;
    *v = static_cast<uint8_t>(bytes_[pos_++]);
    return true;
  }
  bool Bytes(uint64_t n, std::string* out) {
    if (n > bytes_.size() - pos_) return false;
    out->assign(bytes_.data() + pos_, n);
    pos_ += n;
    return true;
  }

 private:
  std::string_view bytes_;
  size_t pos_ = 0;
};

}  // namespace

std::string EncodeBatch(const std::vector<Record>& records) {
  std::string out;
  size_t size = 0;
  for (const Record& r : records) {
    size += r.keyspace.size() + r.key.size() + r.value.size() + r.signature.size() + 32;
  }
  out.reserve(size);
  const std::string* previous = nullptr;
  for (const Record& r : records) {
    if (previous != nullptr && *previous == r.keyspace) {
      PutVarint(&out, 0);
    } else {
      PutVarint(&out, r.keyspace.size());
      out.append(r.keyspace);
    }
    previous = &r.keyspace;
    PutVarint(&out, r.key.size());
    out.append(r.key);
    out.push_back(static_cast<char>((r.deleted ? 1 : 0) | (r.replaces.has_value() ? 2 : 0) |
                                    (r.signature.empty() ? 0 : 4)));
    PutFixed64(&out, r.version.hlc);
    PutFixed64(&out, r.version.origin);
    if (r.replaces.has_value()) {
      PutFixed64(&out, r.replaces->hlc);
      PutFixed64(&out, r.replaces->origin);
    }
    if (!r.signature.empty()) {
      PutVarint(&out, r.signature.size());
      out.append(r.signature);
    }
    PutVarint(&out, r.seq);
    PutVarint(&out, r.value.size());
    out.append(r.value);
  }
  return out;
}

absl::StatusOr<std::vector<Record>> DecodeBatch(std::string_view bytes, size_t max_records,
                                                size_t expected_records) {
  std::vector<Record> records;
  // A record takes at least 20 bytes (lengths, flags, version, seq): a
  // claim beyond what the bytes can hold reserves no more than they can.
  records.reserve(std::min({expected_records, max_records, bytes.size() / 20}));
  Reader in(bytes);
  std::string keyspace;
  while (!in.done()) {
    if (records.size() == max_records) {
      return absl::InvalidArgumentError(
          absl::StrFormat("batch holds more than %d records", max_records));
    }
    const size_t start = in.pos();
    auto bad = [&](const char* what) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "batch record %d (byte %d): %s runs past the end of %d bytes", records.size(), start,
          what, bytes.size()));
    };
    Record r;
    uint64_t n = 0;
    if (!in.Varint(&n)) return bad("keyspace length");
    if (n == 0) {
      if (records.empty()) {
        return absl::InvalidArgumentError("batch record 0 repeats a keyspace it never gave");
      }
    } else if (!in.Bytes(n, &keyspace)) {
      return bad("keyspace");
    }
    r.keyspace = keyspace;
    if (!in.Varint(&n) || !in.Bytes(n, &r.key)) return bad("key");
    uint8_t flags = 0;
    if (!in.Byte(&flags)) return bad("flags");
    if ((flags & ~7u) != 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("batch record %d has unknown flags 0x%02x", records.size(), flags));
    }
    r.deleted = (flags & 1) != 0;
    if (!in.Fixed64(&r.version.hlc) || !in.Fixed64(&r.version.origin)) return bad("version");
    if ((flags & 2) != 0) {
      Version mark;
      if (!in.Fixed64(&mark.hlc) || !in.Fixed64(&mark.origin)) return bad("causal mark");
      r.replaces = mark;
    }
    if ((flags & 4) != 0) {
      if (!in.Varint(&n)) return bad("signature length");
      if (n == 0 || n > kMaxSignatureBytes) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "batch record %d has a %d-byte signature; it must be 1..%d bytes", records.size(), n,
            kMaxSignatureBytes));
      }
      if (!in.Bytes(n, &r.signature)) return bad("signature");
    }
    if (!in.Varint(&r.seq)) return bad("seq");
    if (!in.Varint(&n) || !in.Bytes(n, &r.value)) return bad("value");
    records.push_back(std::move(r));
  }
  return records;
}

}  // namespace peerkv::rpc
