// store/quarantine.cc: the quarantine table's layout and its in-memory
// index.
#include "store/quarantine.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "store/codec.h"
#include "store/validation.h"

namespace peerkv::quarantine {

std::string EncodeKey(const Record& record) {
  std::string out;
  codec::PutBigEndian64(&out, record.version.hlc);
  codec::PutBigEndian64(&out, record.version.origin);
  out += codec::RecordKey(record.keyspace, record.key);
  return out;
}

std::string EncodeValue(const Record& record) {
  std::string out;
  out.reserve(1 + 2 + record.signature.size() + record.value.size());
  out.push_back(static_cast<char>((record.deleted ? 1 : 0) | (record.signature.empty() ? 0 : 2)));
  if (!record.signature.empty()) {
    out.push_back(static_cast<char>(record.signature.size() & 0xff));
    out.push_back(static_cast<char>(record.signature.size() >> 8));
    out += record.signature;
  }
  out += record.value;
  return out;
}

absl::StatusOr<Record> Decode(std::string_view key, std::string_view value,
                              size_t max_value_bytes) {
  if (key.size() < 16 + 2) {
    return absl::DataLossError(
        absl::StrFormat("quarantine key is %d bytes; at least 18 expected", key.size()));
  }
  if (value.empty() || static_cast<unsigned char>(value[0]) > 3) {
    return absl::DataLossError(
        "quarantine value lacks its tombstone flag (flags byte: bit 0 tombstone, bit 1 signed)");
  }
  Record r;
  r.version.hlc = codec::GetBigEndian64(key.data());
  r.version.origin = codec::GetBigEndian64(key.data() + 8);
  std::string_view keyspace, doc;
  if (absl::Status split = codec::SplitRecordKey(key.substr(16), &keyspace, &doc); !split.ok()) {
    return absl::DataLossError(absl::StrFormat("quarantine key: %s", split.message()));
  }
  r.keyspace = std::string(keyspace);
  r.key = std::string(doc);
  r.deleted = (value[0] & 1) != 0;
  size_t at = 1;
  if ((value[0] & 2) != 0) {
    if (value.size() < 3) return absl::DataLossError("quarantine value lacks its signature length");
    const size_t n = static_cast<unsigned char>(value[1]) |
                     (static_cast<size_t>(static_cast<unsigned char>(value[2])) << 8);
    if (n == 0 || value.size() < 3 + n) {
      return absl::DataLossError(absl::StrFormat(
          "quarantine value of %d bytes claims a %d-byte signature", value.size(), n));
    }
    r.signature = std::string(value.substr(3, n));
    at = 3 + n;
  }
  r.value = std::string(value.substr(at));
  if (absl::Status valid = ValidateRemoteRecord(r, max_value_bytes); !valid.ok()) return valid;
  return r;
}

void Index::Add(const std::string& key, const Entry& entry) {
  entries_.emplace(key, entry);
  by_origin_[entry.origin].insert(entry.hlc);
  bytes_ += entry.bytes;
}

void Index::Remove(const std::string& key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  auto origin = by_origin_.find(it->second.origin);
  origin->second.erase(origin->second.find(it->second.hlc));
  if (origin->second.empty()) by_origin_.erase(origin);
  bytes_ -= it->second.bytes;
  entries_.erase(it);
}

std::optional<uint64_t> Index::MinHlcOf(uint64_t origin) const {
  auto it = by_origin_.find(origin);
  if (it == by_origin_.end()) return std::nullopt;
  return *it->second.begin();
}

void Index::Cap(Watermarks& claims) const {
  for (auto& [origin, hlc] : claims) {
    const std::optional<uint64_t> min = MinHlcOf(origin);
    if (min.has_value() && hlc >= *min) hlc = *min - 1;
  }
}

std::vector<QuarantinedOrigin> Index::Summary(int64_t max_skew_ms, size_t limit) const {
  std::vector<QuarantinedOrigin> out;
  for (const auto& [origin, hlcs] : by_origin_) {
    QuarantinedOrigin q;
    q.origin = origin;
    q.records = hlcs.size();
    q.first_due_ms = static_cast<int64_t>(HlcMillis(*hlcs.begin())) - max_skew_ms;
    q.last_due_ms = static_cast<int64_t>(HlcMillis(*hlcs.rbegin())) - max_skew_ms;
    out.push_back(q);
  }
  std::sort(out.begin(), out.end(), [](const QuarantinedOrigin& a, const QuarantinedOrigin& b) {
    return a.first_due_ms < b.first_due_ms;
  });
  if (out.size() > limit) out.resize(limit);
  return out;
}

}  // namespace peerkv::quarantine
