// store/lineage.cc: the lineage's byte layout (see lineage.h):
//   replica_id(8) n_gaps(8) n_retired(8) {after(8) before(8) seq(8)}* {id(8)}*
//   [n_opens(8) opens_dropped(8) n_forgotten(8) {nonce(8) seq(8)}* {id(8)}*]
// little-endian; the bracketed tail is absent in lineages written before
// opens were recorded (read as no opens, opens_dropped). FirstOpen (meta
// "first_open"): replica_id(8) nonce(8) next_open_floor(8) seen(8).
#include "store/lineage.h"

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace peerkv {
namespace {

void Put64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

uint64_t Get64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return v;
}

}  // namespace

void Lineage::AddGap(ClockGap gap) {
  if (gap.before <= gap.after + 1) return;
  gaps.push_back(gap);
  if (gaps.size() > kMaxClockGaps) gaps.erase(gaps.begin());
}

void Lineage::AddOpen(OpenMark open) {
  opens.push_back(open);
  if (opens.size() > kMaxOpens) {
    opens.erase(opens.begin());
    opens_dropped = true;
  }
}

std::string EncodeFirstOpen(const FirstOpen& first) {
  std::string out;
  Put64(&out, first.replica_id);
  Put64(&out, first.nonce);
  Put64(&out, first.next_open_floor);
  Put64(&out, first.next_open_seen ? 1 : 0);
  return out;
}

absl::StatusOr<FirstOpen> DecodeFirstOpen(std::string_view stored) {
  if (stored.size() != 32) {
    return absl::DataLossError(
        absl::StrFormat("meta first_open is %d bytes; 32 expected", stored.size()));
  }
  const uint64_t seen = Get64(stored.data() + 24);
  if (seen > 1) {
    return absl::DataLossError(
        absl::StrFormat("meta first_open says next_open_seen=%d; 0 or 1 expected", seen));
  }
  return FirstOpen{Get64(stored.data()), Get64(stored.data() + 8), Get64(stored.data() + 16),
                   seen == 1};
}

std::string EncodeLineage(const Lineage& lineage) {
  std::string out;
  Put64(&out, lineage.replica_id);
  Put64(&out, lineage.gaps.size());
  Put64(&out, lineage.retired_ids.size());
  for (const ClockGap& gap : lineage.gaps) {
    Put64(&out, gap.after);
    Put64(&out, gap.before);
    Put64(&out, gap.seq);
  }
  for (uint64_t id : lineage.retired_ids) Put64(&out, id);
  Put64(&out, lineage.opens.size());
  Put64(&out, lineage.opens_dropped ? 1 : 0);
  Put64(&out, lineage.forgotten_ids.size());
  for (const OpenMark& open : lineage.opens) {
    Put64(&out, open.nonce);
    Put64(&out, open.seq);
  }
  for (uint64_t id : lineage.forgotten_ids) Put64(&out, id);
  return out;
}

absl::StatusOr<Lineage> DecodeLineage(std::string_view stored) {
  if (stored.size() < 24) {
    return absl::DataLossError(
        absl::StrFormat("meta lineage is %d bytes; at least 24 expected", stored.size()));
  }
  Lineage lineage;
  lineage.replica_id = Get64(stored.data());
  const uint64_t gaps = Get64(stored.data() + 8);
  const uint64_t retired = Get64(stored.data() + 16);
  if (gaps > Lineage::kMaxClockGaps || retired > Lineage::kMaxRetiredIds) {
    return absl::DataLossError(absl::StrFormat(
        "meta lineage lists %d gaps and %d retired ids; the limits are %d and %d", gaps,
        retired, Lineage::kMaxClockGaps, Lineage::kMaxRetiredIds));
  }
  const uint64_t head = 24 + gaps * 24 + retired * 8;
  uint64_t opens = 0;
  uint64_t forgotten = 0;
  if (stored.size() >= head + 24) {
    opens = Get64(stored.data() + head);
    forgotten = Get64(stored.data() + head + 16);
    if (opens > Lineage::kMaxOpens || forgotten > Lineage::kMaxForgottenIds) {
      return absl::DataLossError(absl::StrFormat(
          "meta lineage lists %d opens and %d forgotten ids; the limits are %d and %d", opens,
          forgotten, Lineage::kMaxOpens, Lineage::kMaxForgottenIds));
    }
    if (stored.size() != head + 24 + opens * 16 + forgotten * 8) {
      return absl::DataLossError(absl::StrFormat(
          "meta lineage is %d bytes; %d gaps, %d ids, %d opens and %d forgotten ids take %d",
          stored.size(), gaps, retired, opens, forgotten,
          head + 24 + opens * 16 + forgotten * 8));
    }
    lineage.opens_dropped = Get64(stored.data() + head + 8) != 0;
  } else if (stored.size() == head) {
    lineage.opens_dropped = true;  // written before opens were recorded
  } else {
    return absl::DataLossError(absl::StrFormat(
        "meta lineage is %d bytes; %d gaps and %d ids take %d", stored.size(), gaps, retired,
        head));
  }
  const char* p = stored.data() + 24;
  for (uint64_t i = 0; i < gaps; ++i, p += 24) {
    lineage.gaps.push_back(ClockGap{Get64(p), Get64(p + 8), Get64(p + 16)});
  }
  for (uint64_t i = 0; i < retired; ++i, p += 8) lineage.retired_ids.push_back(Get64(p));
  p += 24;
  for (uint64_t i = 0; i < opens; ++i, p += 16) {
    lineage.opens.push_back(OpenMark{Get64(p), Get64(p + 8)});
  }
  for (uint64_t i = 0; i < forgotten; ++i, p += 8) lineage.forgotten_ids.push_back(Get64(p));
  return lineage;
}

}  // namespace peerkv
