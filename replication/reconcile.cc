// replication/reconcile.cc: the reconcile messages' codec with its limits,
// the responder's round (ServeReconcile) and the initiator's session.
#include "replication/reconcile.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/macros.h"
#include "store/validation.h"

namespace peerkv::replication {
namespace {

// ---------------------------------------------------------------- codec

// Builds a message body while collecting its keyspace table; Finish() puts
// the table in front.
class Writer {
 public:
  void Byte(uint8_t b) { body_.push_back(static_cast<char>(b)); }
  void Varint(uint64_t v) {
    while (v >= 0x80) {
      body_.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    body_.push_back(static_cast<char>(v));
  }
  void Bytes(std::string_view s) {
    Varint(s.size());
    body_.append(s);
  }
  void Sum(uint32_t c, int width) {
    for (int i = 0; i < width; ++i) Byte((c >> (8 * i)) & 0xff);
  }
  void Keyspace(const std::string& name) {
    auto [it, inserted] = table_.emplace(name, names_.size());
    if (inserted) names_.push_back(name);
    Varint(it->second);
  }
  void Fingerprint(const rbsr::Fingerprint& fp) {
    body_.append(fp.sum.ToBytes());
    Varint(fp.count);
  }
  void Record(const peerkv::Record& r, bool with_value) {
    Keyspace(r.keyspace);
    Bytes(r.key);
    Varint(r.version.hlc);
    Varint(r.version.origin);
    Byte((r.deleted ? 1 : 0) | (with_value ? 2 : 0) | (r.signature.empty() ? 0 : 4));
    if (with_value) Bytes(r.value);
    if (!r.signature.empty()) Bytes(r.signature);
  }
  std::string Finish(uint8_t first) {
    std::string out;
    Writer head;
    head.Byte(first);
    head.Varint(names_.size());
    for (const std::string& n : names_) head.Bytes(n);
    out = std::move(head.body_);
    out.append(body_);
    return out;
  }

 private:
  std::string body_;
  std::map<std::string, size_t> table_;
  std::vector<std::string> names_;
};

class Reader {
 public:
  Reader(std::string_view bytes, const char* what) : in_(bytes), what_(what) {}

  absl::Status Error(std::string_view field, absl::string_view problem) const {
    return absl::InvalidArgumentError(
        absl::StrCat(what_, ": ", absl::string_view(field.data(), field.size()), ": ", problem));
  }
  absl::StatusOr<uint8_t> Byte(std::string_view field) {
    if (in_.empty()) return Error(field, "truncated");
    const uint8_t b = static_cast<uint8_t>(in_[0]);
    in_.remove_prefix(1);
    return b;
  }
  absl::StatusOr<uint64_t> Varint(std::string_view field) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (in_.empty()) return Error(field, "truncated");
      const uint8_t b = static_cast<uint8_t>(in_[0]);
      in_.remove_prefix(1);
      if (shift == 63 && b > 1) return Error(field, "varint over 64 bits");
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return v;
    }
    return Error(field, "varint over 10 bytes");
  }
  // A count that must not exceed `limit`.
  absl::StatusOr<size_t> Count(std::string_view field, size_t limit) {
    PEERKV_ASSIGN_OR_RETURN(uint64_t n, Varint(field));
    if (n > limit) {
      return Error(field, absl::StrFormat("%d entries; the limit is %d", n, limit));
    }
    return static_cast<size_t>(n);
  }
  absl::StatusOr<std::string_view> Bytes(std::string_view field, size_t limit) {
    PEERKV_ASSIGN_OR_RETURN(uint64_t n, Varint(field));
    if (n > limit) {
      return Error(field, absl::StrFormat("%d bytes; the limit is %d", n, limit));
    }
    if (n > in_.size()) return Error(field, "truncated");
    std::string_view out = in_.substr(0, n);
    in_.remove_prefix(n);
    return out;
  }
  absl::Status Table() {
    PEERKV_ASSIGN_OR_RETURN(size_t n, Count("keyspaces", kMaxReconcileKeyspaces));
    names_.clear();
    for (size_t i = 0; i < n; ++i) {
      PEERKV_ASSIGN_OR_RETURN(std::string_view name, Bytes("keyspace", kMaxKeyspaceBytes));
      if (absl::Status s = ValidateKeyspace(name); !s.ok()) {
        return Error("keyspace", s.message());
      }
      names_.emplace_back(name);
    }
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> Keyspace(std::string_view field) {
    PEERKV_ASSIGN_OR_RETURN(uint64_t i, Varint(field));
    if (i >= names_.size()) {
      return Error(field, absl::StrFormat("keyspace index %d; the message names %d", i,
                                          names_.size()));
    }
    return names_[i];
  }
  absl::StatusOr<rbsr::Fingerprint> Fingerprint(std::string_view field) {
    if (in_.size() < 32) return Error(field, "truncated");
    rbsr::Fingerprint fp;
    if (absl::Status s = rbsr::Sum256::FromBytes(in_.substr(0, 32), fp.sum); !s.ok()) {
      return Error(field, s.message());
    }
    in_.remove_prefix(32);
    PEERKV_ASSIGN_OR_RETURN(fp.count, Varint(field));
    return fp;
  }
  absl::StatusOr<rbsr::NodeId> Node(std::string_view field) {
    PEERKV_ASSIGN_OR_RETURN(uint8_t depth, Byte(field));
    if (depth > rbsr::kMaxDepth) {
      return Error(field, absl::StrFormat("depth %d; the limit is %d", depth, rbsr::kMaxDepth));
    }
    rbsr::NodeId node;
    node.depth = depth;
    PEERKV_ASSIGN_OR_RETURN(node.prefix, Varint(field));
    if (!node.Valid()) {
      return Error(field, absl::StrFormat("prefix %#x does not fit depth %d (at most %d bits)",
                                          node.prefix, depth, depth * rbsr::kBranchBits));
    }
    return node;
  }
  // A record; `keyspace` is checked by the caller's table.
  absl::StatusOr<peerkv::Record> Record(std::string_view field, size_t value_limit,
                                        bool* had_value = nullptr) {
    peerkv::Record r;
    PEERKV_ASSIGN_OR_RETURN(r.keyspace, Keyspace(field));
    PEERKV_ASSIGN_OR_RETURN(std::string_view key, Bytes(field, kMaxKeyBytes));
    r.key = std::string(key);
    PEERKV_ASSIGN_OR_RETURN(r.version.hlc, Varint(field));
    PEERKV_ASSIGN_OR_RETURN(r.version.origin, Varint(field));
    PEERKV_ASSIGN_OR_RETURN(uint8_t flags, Byte(field));
    if (flags > 7) {
      return Error(field, absl::StrFormat("flags %#x; only bits 0, 1 and 2 exist", flags));
    }
    r.deleted = (flags & 1) != 0;
    if (flags & 2) {
      PEERKV_ASSIGN_OR_RETURN(std::string_view value, Bytes(field, value_limit));
      r.value = std::string(value);
    }
    if (flags & 4) {
      // Record::signature; its limit is named by ValidateRemoteRecord below.
      PEERKV_ASSIGN_OR_RETURN(std::string_view signature, Bytes(field, kMaxSignatureBytes));
      r.signature = std::string(signature);
    }
    if (had_value != nullptr) *had_value = (flags & 2) != 0;
    if (absl::Status s = ValidateRemoteRecord(r, value_limit); !s.ok()) {
      return Error(field, s.message());
    }
    return r;
  }
  // A truncated sum or item hash: `width` bytes, little-endian.
  absl::StatusOr<uint32_t> Truncated(std::string_view field, int width) {
    uint32_t out = 0;
    for (int b = 0; b < width; ++b) {
      PEERKV_ASSIGN_OR_RETURN(uint8_t byte, Byte(field));
      out |= static_cast<uint32_t>(byte) << (8 * b);
    }
    return out;
  }
  absl::StatusOr<std::vector<uint32_t>> Children(std::string_view field, int width) {
    std::vector<uint32_t> out(rbsr::kBranching);
    for (uint32_t& c : out) {
      PEERKV_ASSIGN_OR_RETURN(c, Truncated(field, width));
    }
    return out;
  }
  // An item's key and version, as a leaf's items start.
  absl::Status ItemKeyAndVersion(std::string_view field, peerkv::Record& r) {
    PEERKV_ASSIGN_OR_RETURN(std::string_view key, Bytes(field, kMaxKeyBytes));
    if (absl::Status s = ValidateKey(key); !s.ok()) return Error(field, s.message());
    r.key = std::string(key);
    PEERKV_ASSIGN_OR_RETURN(r.version.hlc, Varint(field));
    PEERKV_ASSIGN_OR_RETURN(r.version.origin, Varint(field));
    if (!r.version.IsValid()) return Error(field, "a version of zero");
    return absl::OkStatus();
  }
  absl::StatusOr<uint8_t> Width() {
    PEERKV_ASSIGN_OR_RETURN(uint8_t width, Byte("width"));
    if (width < 1 || width > 4) {
      return Error("width", absl::StrFormat("%d bytes; fingerprints take 1..4", width));
    }
    return width;
  }
  absl::Status End() const {
    if (!in_.empty()) {
      return Error("message", absl::StrFormat("%d bytes after its end", in_.size()));
    }
    return absl::OkStatus();
  }

 private:
  std::string_view in_;
  const char* what_;
  std::vector<std::string> names_;
};

absl::Status CheckSize(std::string_view bytes, const char* what) {
  if (bytes.size() > kMaxReconcileMessageBytes) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %d bytes; the limit is %d", what,
                                                      bytes.size(), kMaxReconcileMessageBytes));
  }
  return absl::OkStatus();
}

absl::Status CheckFormat(Reader& in) {
  PEERKV_ASSIGN_OR_RETURN(uint8_t format, in.Byte("format"));
  if (format != kReconcileFormat) {
    return in.Error("format", absl::StrFormat("%d; this replica speaks %d", format,
                                              kReconcileFormat));
  }
  return in.Table();
}

size_t RecordBytes(const Record& r) {
  return r.key.size() + r.value.size() + r.signature.size() + 24;
}

// The wire kind of an expansion of children sent sparse.
constexpr uint8_t kSparseChildrenKind = 4;

}  // namespace

std::optional<uint16_t> SparseChildren(uint16_t occupied, int width) {
  const int empty = rbsr::kBranching - __builtin_popcount(occupied);
  if (empty * width > 2) return occupied;
  return std::nullopt;
}

namespace {

// Whether child `i`, ours `mine`, differs from what the other side said of
// it: its truncated sum and, when told, whether it holds registers.
bool ChildDiffers(const rbsr::Fingerprint& mine, int i, uint32_t their_sum,
                  const std::optional<uint16_t>& their_occupied, int pass, int width) {
  if (their_occupied.has_value()) {
    const bool theirs_empty = ((*their_occupied >> i) & 1) == 0;
    if (theirs_empty != (mine.count == 0)) return true;
    if (theirs_empty) return false;
  }
  return TruncatedSum(mine.sum, pass, width) != their_sum;
}

// The children of a node in a message: dense (16 sums) or sparse (the
// occupancy mask, then the sums of the occupied ones).
void WriteChildren(Writer& w, const std::vector<uint32_t>& children,
                   const std::optional<uint16_t>& occupied, int width) {
  PEERKV_CHECK(children.size() == rbsr::kBranching);
  if (occupied.has_value()) {
    w.Byte(*occupied & 0xff);
    w.Byte(*occupied >> 8);
  }
  for (int i = 0; i < rbsr::kBranching; ++i) {
    if (occupied.has_value() && ((*occupied >> i) & 1) == 0) continue;
    w.Sum(children[i], width);
  }
}

absl::Status ReadChildren(Reader& in, std::string_view field, bool sparse, int width,
                          std::vector<uint32_t>& children, std::optional<uint16_t>& occupied) {
  if (!sparse) {
    PEERKV_ASSIGN_OR_RETURN(children, in.Children(field, width));
    return absl::OkStatus();
  }
  PEERKV_ASSIGN_OR_RETURN(uint8_t lo, in.Byte(field));
  PEERKV_ASSIGN_OR_RETURN(uint8_t hi, in.Byte(field));
  const uint16_t mask = static_cast<uint16_t>(lo | (hi << 8));
  if (SparseChildren(mask, width) != mask) {
    return in.Error(field, absl::StrFormat("occupancy %#x would be cheaper sent dense", mask));
  }
  occupied = mask;
  children.assign(rbsr::kBranching, 0);
  for (int i = 0; i < rbsr::kBranching; ++i) {
    if (((mask >> i) & 1) == 0) continue;
    PEERKV_ASSIGN_OR_RETURN(children[i], in.Truncated(field, width));
  }
  return absl::OkStatus();
}

}  // namespace

uint32_t TruncatedSum(const rbsr::Sum256& sum, int pass, int width) {
  const int offset = (pass * 4) % 32;
  uint32_t out = 0;
  for (int i = 0; i < width; ++i) {
    const int byte = (offset + i) % 32;
    const uint64_t b = (sum.limbs[byte / 8] >> (8 * (byte % 8))) & 0xff;
    out |= static_cast<uint32_t>(b << (8 * i));
  }
  return out;
}

std::string EncodeReconcileRequest(const ReconcileRequest& request) {
  Writer w;
  w.Byte(request.pass);
  w.Byte(request.width);
  w.Byte(request.compare ? (request.verify_only ? 2 : 1) : 0);
  w.Varint(request.max_answer_bytes);
  w.Varint(request.roots.size());
  for (const KeyspaceRoot& root : request.roots) {
    w.Keyspace(root.keyspace);
    w.Fingerprint(root.fingerprint);
  }
  w.Varint(request.expand.size());
  for (const NodeRef& ref : request.expand) {
    w.Keyspace(ref.keyspace);
    w.Byte(ref.node.depth);
    w.Varint(ref.node.prefix);
    w.Byte(ref.children.empty() ? 0 : (ref.occupied.has_value() ? 2 : 1));
    if (!ref.children.empty()) WriteChildren(w, ref.children, ref.occupied, request.width);
  }
  w.Varint(request.fetch.size());
  for (const KeyRef& ref : request.fetch) {
    w.Keyspace(ref.keyspace);
    w.Bytes(ref.key);
  }
  w.Varint(request.push.size());
  for (const Record& r : request.push) w.Record(r, /*with_value=*/true);
  return w.Finish(kReconcileFormat);
}

absl::StatusOr<ReconcileRequest> DecodeReconcileRequest(std::string_view bytes,
                                                        size_t value_limit) {
  constexpr const char* kWhat = "reconcile request";
  PEERKV_RETURN_IF_ERROR(CheckSize(bytes, kWhat));
  Reader in(bytes, kWhat);
  PEERKV_RETURN_IF_ERROR(CheckFormat(in));
  ReconcileRequest out;
  PEERKV_ASSIGN_OR_RETURN(out.pass, in.Byte("pass"));
  if (out.pass >= kMaxPasses) {
    return in.Error("pass", absl::StrFormat("%d; the limit is %d", out.pass, kMaxPasses - 1));
  }
  PEERKV_ASSIGN_OR_RETURN(out.width, in.Width());
  PEERKV_ASSIGN_OR_RETURN(uint8_t compare, in.Byte("compare"));
  if (compare > 2) return in.Error("compare", "must be 0, 1 or 2 (roots only)");
  out.compare = compare >= 1;
  out.verify_only = compare == 2;
  PEERKV_ASSIGN_OR_RETURN(out.max_answer_bytes, in.Varint("max_answer_bytes"));
  PEERKV_ASSIGN_OR_RETURN(size_t roots, in.Count("roots", kMaxReconcileKeyspaces));
  if (roots > 0 && !out.compare) return in.Error("roots", "sent without compare");
  std::set<std::string> seen;
  for (size_t i = 0; i < roots; ++i) {
    KeyspaceRoot root;
    PEERKV_ASSIGN_OR_RETURN(root.keyspace, in.Keyspace("roots"));
    if (!seen.insert(root.keyspace).second) {
      return in.Error("roots", absl::StrCat("keyspace ", root.keyspace, " twice"));
    }
    PEERKV_ASSIGN_OR_RETURN(root.fingerprint, in.Fingerprint("roots"));
    out.roots.push_back(std::move(root));
  }
  PEERKV_ASSIGN_OR_RETURN(size_t nodes, in.Count("expand", kMaxReconcileNodes));
  out.expand.reserve(nodes);
  for (size_t i = 0; i < nodes; ++i) {
    NodeRef ref;
    PEERKV_ASSIGN_OR_RETURN(ref.keyspace, in.Keyspace("expand"));
    PEERKV_ASSIGN_OR_RETURN(ref.node, in.Node("expand"));
    PEERKV_ASSIGN_OR_RETURN(uint8_t with_children, in.Byte("expand"));
    if (with_children > 2) {
      return in.Error("expand", "children flag must be 0, 1 (dense) or 2 (sparse)");
    }
    if (with_children >= 1) {
      if (ref.node.depth >= rbsr::kMaxDepth) {
        return in.Error("expand", "children of a node at the deepest level");
      }
      PEERKV_RETURN_IF_ERROR(ReadChildren(in, "expand", with_children == 2, out.width,
                                          ref.children, ref.occupied));
    }
    out.expand.push_back(std::move(ref));
  }
  PEERKV_ASSIGN_OR_RETURN(size_t fetch, in.Count("fetch", kMaxReconcileFetch));
  out.fetch.reserve(fetch);
  for (size_t i = 0; i < fetch; ++i) {
    KeyRef ref;
    PEERKV_ASSIGN_OR_RETURN(ref.keyspace, in.Keyspace("fetch"));
    PEERKV_ASSIGN_OR_RETURN(std::string_view key, in.Bytes("fetch", kMaxKeyBytes));
    if (absl::Status s = ValidateKey(key); !s.ok()) return in.Error("fetch", s.message());
    ref.key = std::string(key);
    out.fetch.push_back(std::move(ref));
  }
  // A push is merged by one Store::Merge, which refuses more than
  // kMaxBatchRecords whole: refuse it here, naming the count and that limit.
  PEERKV_ASSIGN_OR_RETURN(size_t push, in.Count("push", kMaxBatchRecords));
  out.push.reserve(push);
  for (size_t i = 0; i < push; ++i) {
    bool had_value = false;
    PEERKV_ASSIGN_OR_RETURN(Record r, in.Record("push", value_limit, &had_value));
    if (!had_value && !r.deleted) return in.Error("push", "a pushed record without its value");
    out.push.push_back(std::move(r));
  }
  PEERKV_RETURN_IF_ERROR(in.End());
  return out;
}

std::string EncodeReconcileResponse(const ReconcileResponse& response) {
  Writer w;
  w.Byte(response.width);
  w.Varint(response.differing.size());
  for (const KeyspaceRoot& root : response.differing) {
    w.Keyspace(root.keyspace);
    w.Fingerprint(root.fingerprint);
  }
  w.Varint(response.expanded);
  PEERKV_CHECK(response.masks.size() == response.expanded);
  for (uint16_t mask : response.masks) {
    w.Byte(mask & 0xff);
    w.Byte(mask >> 8);
  }
  w.Varint(response.expansions.size());
  for (const Expansion& e : response.expansions) {
    // Sparse children travel as kind 4.
    w.Byte(e.kind == Expansion::Kind::kChildren && e.occupied.has_value()
               ? kSparseChildrenKind
               : static_cast<uint8_t>(e.kind));
    if (e.kind == Expansion::Kind::kChildren) {
      WriteChildren(w, e.children, e.occupied, response.width);
    } else if (e.kind == Expansion::Kind::kItemKeys) {
      PEERKV_CHECK(e.hashes.size() == e.items.size());
      w.Varint(e.items.size());
      for (size_t i = 0; i < e.items.size(); ++i) {
        const Record& r = e.items[i];
        w.Bytes(r.key);
        w.Varint(r.version.hlc);
        w.Varint(r.version.origin);
        w.Byte(r.deleted ? 1 : 0);
        w.Sum(e.hashes[i], response.width);
      }
    } else {
      w.Varint(e.items.size());
      for (const Record& r : e.items) {
        // Items are their node's keyspace's: no keyspace index.
        w.Bytes(r.key);
        w.Varint(r.version.hlc);
        w.Varint(r.version.origin);
        const bool with_value = e.kind == Expansion::Kind::kItems && !r.deleted;
        w.Byte((r.deleted ? 1 : 0) | (with_value ? 2 : 0));
        if (with_value) w.Bytes(r.value);
      }
    }
  }
  w.Varint(response.fetched.size());
  // Keyspace and key are the request's (fetched[j] answers fetch[j]).
  for (const std::optional<Record>& r : response.fetched) {
    w.Byte(r.has_value() ? 1 : 0);
    if (!r.has_value()) continue;
    w.Varint(r->version.hlc);
    w.Varint(r->version.origin);
    w.Byte((r->deleted ? 1 : 0) | (r->signature.empty() ? 0 : 2));
    if (!r->deleted) w.Bytes(r->value);
    if (!r->signature.empty()) w.Bytes(r->signature);
  }
  w.Varint(response.push_won);
  w.Varint(response.push_refused);
  return w.Finish(kReconcileFormat);
}

absl::StatusOr<ReconcileResponse> DecodeReconcileResponse(std::string_view bytes,
                                                          size_t value_limit) {
  constexpr const char* kWhat = "reconcile answer";
  PEERKV_RETURN_IF_ERROR(CheckSize(bytes, kWhat));
  Reader in(bytes, kWhat);
  PEERKV_RETURN_IF_ERROR(CheckFormat(in));
  ReconcileResponse out;
  PEERKV_ASSIGN_OR_RETURN(out.width, in.Width());
  PEERKV_ASSIGN_OR_RETURN(size_t differing, in.Count("differing", kMaxReconcileKeyspaces));
  for (size_t i = 0; i < differing; ++i) {
    KeyspaceRoot root;
    PEERKV_ASSIGN_OR_RETURN(root.keyspace, in.Keyspace("differing"));
    if (!out.differing.empty() && root.keyspace <= out.differing.back().keyspace) {
      return in.Error("differing", "keyspaces not in strictly increasing name order");
    }
    PEERKV_ASSIGN_OR_RETURN(root.fingerprint, in.Fingerprint("differing"));
    out.differing.push_back(std::move(root));
  }
  PEERKV_ASSIGN_OR_RETURN(out.expanded, in.Count("expanded", kMaxReconcileNodes));
  size_t bits = 0;
  for (uint64_t j = 0; j < out.expanded; ++j) {
    PEERKV_ASSIGN_OR_RETURN(uint8_t lo, in.Byte("masks"));
    PEERKV_ASSIGN_OR_RETURN(uint8_t hi, in.Byte("masks"));
    const uint16_t mask = static_cast<uint16_t>(lo | (hi << 8));
    bits += static_cast<size_t>(__builtin_popcount(mask));
    out.masks.push_back(mask);
  }
  // Each answered node adds one expansion per differing child, or one for
  // itself (checked against the request by the session).
  const size_t most = differing + std::max<size_t>(bits, out.expanded);
  PEERKV_ASSIGN_OR_RETURN(size_t expansions, in.Count("expansions", most));
  size_t records = 0;
  for (size_t i = 0; i < expansions; ++i) {
    Expansion e;
    PEERKV_ASSIGN_OR_RETURN(uint8_t kind, in.Byte("expansion kind"));
    if (kind > kSparseChildrenKind) {
      return in.Error("expansion kind", absl::StrFormat("%d; kinds are 0..4", kind));
    }
    e.kind = kind == kSparseChildrenKind ? Expansion::Kind::kChildren
                                         : static_cast<Expansion::Kind>(kind);
    if (e.kind == Expansion::Kind::kChildren) {
      PEERKV_RETURN_IF_ERROR(ReadChildren(in, "children", kind == kSparseChildrenKind, out.width,
                                          e.children, e.occupied));
    } else if (e.kind == Expansion::Kind::kItemKeys) {
      PEERKV_ASSIGN_OR_RETURN(size_t n, in.Count("items", kMaxReconcileRecords - records));
      records += n;
      for (size_t j = 0; j < n; ++j) {
        Record r;
        PEERKV_RETURN_IF_ERROR(in.ItemKeyAndVersion("items", r));
        PEERKV_ASSIGN_OR_RETURN(uint8_t flags, in.Byte("items"));
        if (flags > 1) return in.Error("items", "unknown flags");
        r.deleted = flags == 1;
        PEERKV_ASSIGN_OR_RETURN(uint32_t hash, in.Truncated("items", out.width));
        e.items.push_back(std::move(r));
        e.hashes.push_back(hash);
      }
    } else {
      PEERKV_ASSIGN_OR_RETURN(size_t n, in.Count("items", kMaxReconcileRecords - records));
      records += n;
      for (size_t j = 0; j < n; ++j) {
        Record r;
        PEERKV_RETURN_IF_ERROR(in.ItemKeyAndVersion("items", r));
        PEERKV_ASSIGN_OR_RETURN(uint8_t flags, in.Byte("items"));
        if (flags > 3) return in.Error("items", "unknown flags");
        r.deleted = (flags & 1) != 0;
        const bool with_value = (flags & 2) != 0;
        if (with_value != (e.kind == Expansion::Kind::kItems && !r.deleted)) {
          return in.Error("items", "a value where none belongs, or none where one does");
        }
        if (with_value) {
          PEERKV_ASSIGN_OR_RETURN(std::string_view value, in.Bytes("items", value_limit));
          r.value = std::string(value);
        }
        e.items.push_back(std::move(r));
      }
    }
    out.expansions.push_back(std::move(e));
  }
  PEERKV_ASSIGN_OR_RETURN(size_t fetched, in.Count("fetched", kMaxReconcileFetch));
  for (size_t i = 0; i < fetched; ++i) {
    PEERKV_ASSIGN_OR_RETURN(uint8_t held, in.Byte("fetched"));
    if (held > 1) return in.Error("fetched", "must be 0 or 1");
    if (held == 0) {
      out.fetched.emplace_back();
      continue;
    }
    // Keyspace and key are the request's: the session fills them in and
    // validates the whole record (ValidateRemoteRecord).
    Record r;
    PEERKV_ASSIGN_OR_RETURN(r.version.hlc, in.Varint("fetched"));
    PEERKV_ASSIGN_OR_RETURN(r.version.origin, in.Varint("fetched"));
    if (!r.version.IsValid()) return in.Error("fetched", "a version of zero");
    PEERKV_ASSIGN_OR_RETURN(uint8_t flags, in.Byte("fetched"));
    if (flags > 3) return in.Error("fetched", "unknown flags");
    r.deleted = (flags & 1) != 0;
    if (!r.deleted) {
      PEERKV_ASSIGN_OR_RETURN(std::string_view value, in.Bytes("fetched", value_limit));
      r.value = std::string(value);
    }
    if ((flags & 2) != 0) {
      // Record::signature (bit 1).
      PEERKV_ASSIGN_OR_RETURN(std::string_view signature,
                              in.Bytes("fetched", kMaxSignatureBytes));
      r.signature = std::string(signature);
    }
    out.fetched.push_back(std::move(r));
  }
  PEERKV_ASSIGN_OR_RETURN(out.push_won, in.Varint("push_won"));
  PEERKV_ASSIGN_OR_RETURN(out.push_refused, in.Varint("push_refused"));
  PEERKV_RETURN_IF_ERROR(in.End());
  return out;
}

// ------------------------------------------------------------ responder

namespace {

// The responder's expansion of one node; nullopt if it does not fit in
// `room` (and `first` is false: the first always goes, without values).
// The depth below which a node of up to kDeepLeafItems is a leaf: where
// nodes hold one register on average, plus one.
absl::StatusOr<int> DeepDepth(rbsr::RangeView& view) {
  PEERKV_ASSIGN_OR_RETURN(rbsr::Fingerprint root, view.FingerprintOf(rbsr::NodeId{}));
  int depth = 0;
  for (uint64_t n = 1; n < root.count && depth < rbsr::kMaxDepth; n <<= rbsr::kBranchBits) {
    ++depth;
  }
  return depth + 1;
}

absl::StatusOr<std::optional<Expansion>> Expand(ReconcileSource& source,
                                               std::string_view keyspace,
                                               rbsr::RangeView& view, const rbsr::NodeId& node,
                                               const ReconcileRequest& request, size_t room,
                                               bool first, size_t& used) {
  PEERKV_ASSIGN_OR_RETURN(rbsr::Fingerprint fp, view.FingerprintOf(node));
  Expansion e;
  bool leaf = fp.count <= kLeafItems || node.depth >= rbsr::kMaxDepth;
  if (!leaf && fp.count <= kDeepLeafItems) {
    PEERKV_ASSIGN_OR_RETURN(int deep, DeepDepth(view));
    leaf = node.depth >= deep;
  }
  if (!leaf) {
    e.kind = Expansion::Kind::kChildren;
    e.children.reserve(rbsr::kBranching);
    uint16_t occupied = 0;
    for (int i = 0; i < rbsr::kBranching; ++i) {
      PEERKV_ASSIGN_OR_RETURN(rbsr::Fingerprint child, view.FingerprintOf(node.Child(i)));
      e.children.push_back(TruncatedSum(child.sum, request.pass, request.width));
      if (child.count > 0) occupied |= static_cast<uint16_t>(1u << i);
    }
    e.occupied = SparseChildren(occupied, request.width);
    used += 1 + (e.occupied.has_value() ? 2 + __builtin_popcount(occupied) * request.width
                                        : rbsr::kBranching * request.width);
    return e;
  }
  if (fp.count > kMaxReconcileRecords) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "node at depth %d holds %d registers; an answer carries at most %d", node.depth,
        fp.count, kMaxReconcileRecords));
  }
  // A leaf: its keys, versions and truncated hashes; the initiator fetches
  // the values it lacks (most of the time half of what differs is newer
  // there, and a value sent for it would be wasted).
  e.kind = Expansion::Kind::kItemKeys;
  size_t bytes = 2;
  PEERKV_RETURN_IF_ERROR(view.ForEachItem(node, [&](const rbsr::RangeItem& item) {
    Record r;
    r.key = std::string(item.key);
    r.version = item.version;
    r.deleted = item.deleted;
    bytes += r.key.size() + 12 + request.width;
    e.items.push_back(std::move(r));
    e.hashes.push_back(TruncatedSum(item.hash, request.pass, request.width));
  }));
  // The first node of an answer goes whatever its size, so that every
  // answer makes progress.
  if (used + bytes > room && !first) return std::nullopt;
  used += bytes;
  return e;
}

}  // namespace

absl::StatusOr<ReconcileResponse> ServeReconcile(ReconcileSource& source,
                                                 const ReconcileRequest& request,
                                                 size_t max_bytes) {
  if (request.max_answer_bytes > 0) max_bytes = std::min<uint64_t>(max_bytes, request.max_answer_bytes);
  ReconcileResponse out;
  out.width = request.width;
  size_t used = 0;
  std::map<std::string, std::unique_ptr<rbsr::RangeView>, std::less<>> views;
  auto view = [&](const std::string& keyspace) -> absl::StatusOr<rbsr::RangeView*> {
    auto it = views.find(keyspace);
    if (it == views.end()) {
      PEERKV_ASSIGN_OR_RETURN(std::unique_ptr<rbsr::RangeView> v, source.View(keyspace));
      it = views.emplace(keyspace, std::move(v)).first;
    }
    return it->second.get();
  };
  if (request.compare) {
    PEERKV_ASSIGN_OR_RETURN(std::vector<KeyspaceRoot> ours, source.Roots());
    std::map<std::string, rbsr::Fingerprint> all;
    // A keyspace the initiator names that this side does not reconcile
    // with it (a friend's link: one it may not read here) is answered as
    // equal: nothing of it is told, and the initiator does not push it.
    for (const KeyspaceRoot& root : request.roots) {
      if (source.Reconciles(root.keyspace)) all[root.keyspace];
    }
    for (const KeyspaceRoot& root : ours) {
      if (source.Reconciles(root.keyspace)) all[root.keyspace] = root.fingerprint;
    }
    std::map<std::string, rbsr::Fingerprint> theirs;
    for (const KeyspaceRoot& root : request.roots) theirs[root.keyspace] = root.fingerprint;
    for (const auto& [keyspace, mine] : all) {
      auto it = theirs.find(keyspace);
      const rbsr::Fingerprint other = it == theirs.end() ? rbsr::Fingerprint{} : it->second;
      if (other == mine) continue;
      out.differing.push_back({keyspace, mine});
      if (request.verify_only) continue;
      PEERKV_ASSIGN_OR_RETURN(rbsr::RangeView * v, view(keyspace));
      PEERKV_ASSIGN_OR_RETURN(std::optional<Expansion> e,
                              Expand(source, keyspace, *v, rbsr::NodeId{}, request, max_bytes,
                                     /*first=*/true, used));
      out.expansions.push_back(std::move(*e));
    }
  }
  for (const NodeRef& ref : request.expand) {
    if (used >= max_bytes) break;
    PEERKV_ASSIGN_OR_RETURN(rbsr::RangeView * v, view(ref.keyspace));
    const bool first = out.expanded == 0 && out.differing.empty();
    std::vector<Expansion> answer;
    uint16_t mask = 0;
    bool fits = true;
    size_t would_use = used;
    std::vector<rbsr::NodeId> nodes;
    if (ref.children.empty()) {
      nodes.push_back(ref.node);
    } else {
      for (int i = 0; i < rbsr::kBranching; ++i) {
        PEERKV_ASSIGN_OR_RETURN(rbsr::Fingerprint child, v->FingerprintOf(ref.node.Child(i)));
        if (ChildDiffers(child, i, ref.children[i], ref.occupied, request.pass, request.width)) {
          mask |= static_cast<uint16_t>(1u << i);
          nodes.push_back(ref.node.Child(i));
        }
      }
      would_use += 2;
    }
    for (const rbsr::NodeId& node : nodes) {
      PEERKV_ASSIGN_OR_RETURN(std::optional<Expansion> e,
                              Expand(source, ref.keyspace, *v, node, request, max_bytes,
                                     first && answer.empty(), would_use));
      if (!e.has_value()) {
        fits = false;
        break;
      }
      answer.push_back(std::move(*e));
    }
    if (!fits && !first) break;
    // The first node is answered whatever its size (without values where
    // they do not fit), so that every answer makes progress.
    used = would_use;
    for (Expansion& e : answer) out.expansions.push_back(std::move(e));
    out.masks.push_back(mask);
    ++out.expanded;
  }
  for (const KeyRef& ref : request.fetch) {
    if (used >= max_bytes && !out.fetched.empty()) break;
    PEERKV_ASSIGN_OR_RETURN(std::optional<Record> r, source.Get(ref.keyspace, ref.key));
    if (r.has_value()) {
      used += RecordBytes(*r);
      // As the wire carries it: the request names keyspace and key.
      r->seq = 0;
      r->keyspace.clear();
      r->key.clear();
      if (r->deleted) r->value.clear();
    }
    out.fetched.push_back(std::move(r));
  }
  return out;
}

// ------------------------------------------------------------ initiator

namespace {

// After a verify: `local` (our roots now) equals what the responder holds:
// `theirs` for the keyspaces it listed as differing from `sent` (our roots
// as the verify carried them), `sent` for the others.
bool RootsMatch(const std::vector<KeyspaceRoot>& local, const std::vector<KeyspaceRoot>& sent,
                const std::vector<KeyspaceRoot>& theirs) {
  std::map<std::string, rbsr::Fingerprint> expected;
  for (const KeyspaceRoot& root : sent) expected[root.keyspace] = root.fingerprint;
  for (const KeyspaceRoot& root : theirs) expected[root.keyspace] = root.fingerprint;
  std::map<std::string, rbsr::Fingerprint> now;
  for (const KeyspaceRoot& root : local) now[root.keyspace] = root.fingerprint;
  for (const auto& [keyspace, fp] : expected) {
    auto it = now.find(keyspace);
    if ((it == now.end() ? rbsr::Fingerprint{} : it->second) != fp) return false;
  }
  for (const auto& [keyspace, fp] : now) {
    if (expected.count(keyspace) == 0 && fp != rbsr::Fingerprint{}) return false;
  }
  return true;
}

}  // namespace

ReconcileSession::ReconcileSession(ReconcileSource& local, ReconcileLimits limits,
                                   absl::Time now)
    : local_(local), limits_(limits), start_(now) {}

KeyspaceDiff& ReconcileSession::Diff(const std::string& keyspace) {
  auto it = std::lower_bound(
      report_.keyspaces.begin(), report_.keyspaces.end(), keyspace,
      [](const KeyspaceDiff& d, const std::string& k) { return d.keyspace < k; });
  if (it == report_.keyspaces.end() || it->keyspace != keyspace) {
    it = report_.keyspaces.insert(it, KeyspaceDiff{keyspace});
  }
  return *it;
}

absl::StatusOr<rbsr::RangeView*> ReconcileSession::LocalView(const std::string& keyspace) {
  for (auto& [name, view] : views_) {
    if (name == keyspace) return view.get();
  }
  PEERKV_ASSIGN_OR_RETURN(std::unique_ptr<rbsr::RangeView> v, local_.View(keyspace));
  views_.emplace_back(keyspace, std::move(v));
  return views_.back().second.get();
}

absl::StatusOr<std::optional<ReconcileRequest>> ReconcileSession::Next(absl::Time now) {
  if (done_) return std::nullopt;
  if (report_.rounds >= limits_.max_rounds) {
    report_.incomplete = absl::StrFormat("stopped after %d rounds (the limit)", report_.rounds);
  } else if (now - start_ > limits_.max_time) {
    report_.incomplete =
        absl::StrCat("stopped after ", absl::FormatDuration(limits_.max_time), " (the limit)");
  }
  if (!report_.incomplete.empty()) {
    done_ = true;
    report_.time = now - start_;
    return std::nullopt;
  }
  if (verify_pending_) {
    // The last round's records are merged: do we now hold what the peer
    // holds?
    verify_pending_ = false;
    PEERKV_ASSIGN_OR_RETURN(std::vector<KeyspaceRoot> local, local_.Roots());
    if (RootsMatch(local, verify_sent_, verify_theirs_)) {
      report_.in_sync = true;
      report_.passes = pass_ + 1;
      done_ = true;
      report_.time = now - start_;
      return std::nullopt;
    }
    if (pass_ + 1 >= kMaxPasses) {
      report_.incomplete = absl::StrFormat("roots still differ after %d passes", kMaxPasses);
      report_.passes = kMaxPasses;
      done_ = true;
      report_.time = now - start_;
      return std::nullopt;
    }
    // A truncated fingerprint hid a difference, or writes came in: descend
    // again, with other bytes of the sums.
    ++pass_;
    full_compare_next_ = true;
  }
  ReconcileRequest request;
  request.pass = static_cast<uint8_t>(pass_);
  request.max_answer_bytes = limits_.max_message_bytes;
  request.width = static_cast<uint8_t>(std::min(limits_.max_nodes, expand_.size()) > kWideAbove
                                           ? kWideChildFingerprintBytes
                                           : kChildFingerprintBytes);
  for (size_t i = 0; i < limits_.max_nodes && !expand_.empty(); ++i) {
    NodeRef ref = std::move(expand_.front());
    expand_.pop_front();
    if (ref.node.depth < rbsr::kMaxDepth && ref.children.empty()) {
      PEERKV_ASSIGN_OR_RETURN(rbsr::RangeView * view, LocalView(ref.keyspace));
      ref.children.reserve(rbsr::kBranching);
      uint16_t occupied = 0;
      for (int c = 0; c < rbsr::kBranching; ++c) {
        PEERKV_ASSIGN_OR_RETURN(rbsr::Fingerprint fp, view->FingerprintOf(ref.node.Child(c)));
        ref.children.push_back(TruncatedSum(fp.sum, pass_, request.width));
        if (fp.count > 0) occupied |= static_cast<uint16_t>(1u << c);
      }
      ref.occupied = SparseChildren(occupied, request.width);
    }
    request.expand.push_back(std::move(ref));
  }
  report_.nodes_expanded += request.expand.size();
  for (size_t i = 0; i < kMaxReconcileFetch && !fetch_.empty(); ++i) {
    request.fetch.push_back(std::move(fetch_.front()));
    fetch_.pop_front();
  }
  size_t bytes = 0;
  const size_t max_push = std::min({limits_.max_push_records, kMaxReconcileRecords,
                                    kMaxBatchRecords});
  while (!push_.empty() && request.push.size() < std::max<size_t>(max_push, 1) &&
         (request.push.empty() || bytes + RecordBytes(push_.front()) <= limits_.max_message_bytes)) {
    bytes += RecordBytes(push_.front());
    request.push.push_back(std::move(push_.front()));
    push_.pop_front();
  }
  // Nothing left to ask after this one: compare in the same round. After
  // the first, it verifies (roots only): the responder merges the push
  // first, and the records fetched here are merged before Next() compares.
  const bool verify = compares_ > 0 && !full_compare_next_;
  if (expand_.empty() && fetch_.empty() && push_.empty() && request.expand.empty() &&
      (verify || request.fetch.empty())) {
    request.compare = true;
    request.verify_only = verify;
    full_compare_next_ = false;
    // Roots are read fresh; so are the views of the next pass.
    views_.clear();
    PEERKV_ASSIGN_OR_RETURN(request.roots, local_.Roots());
    ++compares_;
  }
  ++report_.rounds;
  sent_ = request;
  return request;
}

absl::Status ReconcileSession::TakeExpansion(rbsr::RangeView& view, const NodeRef& ref,
                                             const Expansion& e, std::vector<Record>& merge) {
  if (e.kind == Expansion::Kind::kChildren) {
    if (ref.node.depth >= rbsr::kMaxDepth) {
      return absl::InvalidArgumentError(
          "reconcile answer: expansions: children of a node at the deepest level");
    }
    for (int i = 0; i < rbsr::kBranching; ++i) {
      const rbsr::NodeId child = ref.node.Child(i);
      PEERKV_ASSIGN_OR_RETURN(rbsr::Fingerprint mine, view.FingerprintOf(child));
      if (ChildDiffers(mine, i, e.children[i], e.occupied, sent_->pass, sent_->width)) {
        expand_.push_back({ref.keyspace, child});
      }
    }
    return absl::OkStatus();
  }
  struct Local {
    Version version;
    bool deleted;
    rbsr::Sum256 hash;
    bool matched = false;
  };
  std::map<std::string, Local, std::less<>> local;
  PEERKV_RETURN_IF_ERROR(view.ForEachItem(ref.node, [&](const rbsr::RangeItem& item) {
    local.emplace(std::string(item.key), Local{item.version, item.deleted, item.hash});
  }));
  if (e.kind == Expansion::Kind::kItemKeys && e.hashes.size() != e.items.size()) {
    return absl::InvalidArgumentError("reconcile answer: items: a hash missing");
  }
  std::set<std::string_view> seen;
  KeyspaceDiff& diff = Diff(ref.keyspace);
  for (size_t i = 0; i < e.items.size(); ++i) {
    const Record& theirs = e.items[i];
    if (!ref.node.Contains(rbsr::KeyPosition(theirs.key))) {
      return absl::InvalidArgumentError(
          "reconcile answer: items: a key outside the node it was asked about");
    }
    if (!seen.insert(theirs.key).second) {
      return absl::InvalidArgumentError("reconcile answer: items: a key twice in one node");
    }
    auto it = local.find(theirs.key);
    if (it != local.end()) it->second.matched = true;
    if (it == local.end() || it->second.version < theirs.version) {
      if (e.kind == Expansion::Kind::kItems) {
        Record r = theirs;
        r.keyspace = ref.keyspace;
        merge.push_back(std::move(r));
        ++diff.fetched;
      } else {
        fetch_.push_back({ref.keyspace, theirs.key});
      }
    } else if (theirs.version < it->second.version) {
      PEERKV_ASSIGN_OR_RETURN(std::optional<Record> mine, local_.Get(ref.keyspace, theirs.key));
      if (mine.has_value()) {
        mine->seq = 0;
        push_.push_back(std::move(*mine));
        ++diff.peer_lacked;
      }
    } else if (theirs.deleted != it->second.deleted ||
               (e.kind == Expansion::Kind::kItems &&
                rbsr::ItemHash(ref.keyspace, theirs.key, theirs.version, theirs.deleted,
                               theirs.value) != it->second.hash) ||
               (e.kind == Expansion::Kind::kItemKeys &&
                TruncatedSum(it->second.hash, sent_->pass, sent_->width) != e.hashes[i])) {
      ++report_.conflicts;
    }
  }
  for (const auto& [key, mine] : local) {
    if (mine.matched) continue;
    PEERKV_ASSIGN_OR_RETURN(std::optional<Record> record, local_.Get(ref.keyspace, key));
    if (record.has_value()) {
      record->seq = 0;
      push_.push_back(std::move(*record));
      ++diff.peer_lacked;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Record>> ReconcileSession::OnResponse(
    const ReconcileResponse& response, size_t encoded_bytes, absl::Time now) {
  PEERKV_CHECK(sent_.has_value());
  report_.bytes_received += encoded_bytes;
  const ReconcileRequest& sent = *sent_;
  auto fail = [&](absl::Status status) {
    done_ = true;
    sent_.reset();
    views_.clear();
    return status;
  };
  size_t expected = sent.verify_only ? 0 : response.differing.size();
  bool masks_ok = response.masks.size() == response.expanded;
  for (size_t j = 0; masks_ok && j < response.expanded && j < sent.expand.size(); ++j) {
    if (sent.expand[j].children.empty()) {
      masks_ok = response.masks[j] == 0;
      ++expected;
    } else {
      expected += static_cast<size_t>(__builtin_popcount(response.masks[j]));
    }
  }
  if (response.expanded > sent.expand.size() || response.fetched.size() > sent.fetch.size() ||
      !masks_ok || response.expansions.size() != expected) {
    return fail(absl::InvalidArgumentError(absl::StrFormat(
        "reconcile answer: %d expansions and %d records for %d nodes and %d keys asked",
        response.expansions.size(), response.fetched.size(), sent.expand.size(),
        sent.fetch.size())));
  }
  if (response.width != sent.width) {
    return fail(absl::InvalidArgumentError(absl::StrFormat(
        "reconcile answer: width: %d bytes; the request asked for %d", response.width,
        sent.width)));
  }
  if (!sent.compare && !response.differing.empty()) {
    return fail(absl::InvalidArgumentError("reconcile answer: differing: roots nobody asked for"));
  }
  if ((!sent.expand.empty() || !sent.fetch.empty()) && response.expanded == 0 &&
      response.fetched.empty()) {
    return fail(absl::ResourceExhaustedError(
        "reconcile answer: the peer answered none of the nodes or keys asked"));
  }
  report_.refused_there += response.push_refused;
  // Roots of keyspaces this side does not reconcile with the peer count as
  // equal (ReconcileSource::Reconciles): dropped with their expansions.
  std::optional<ReconcileResponse> shared;
  for (const KeyspaceRoot& root : response.differing) {
    if (local_.Reconciles(root.keyspace)) continue;
    shared.emplace();
    shared->width = response.width;
    for (size_t i = 0; i < response.differing.size(); ++i) {
      if (!local_.Reconciles(response.differing[i].keyspace)) continue;
      shared->differing.push_back(response.differing[i]);
      if (!sent.verify_only) shared->expansions.push_back(response.expansions[i]);
    }
    for (size_t i = sent.verify_only ? 0 : response.differing.size();
         i < response.expansions.size(); ++i) {
      shared->expansions.push_back(response.expansions[i]);
    }
    shared->expanded = response.expanded;
    shared->masks = response.masks;
    shared->fetched = response.fetched;
    shared->push_won = response.push_won;
    shared->push_refused = response.push_refused;
    break;
  }
  return TakeResponse(shared.has_value() ? *shared : response, now);
}

absl::StatusOr<std::vector<Record>> ReconcileSession::TakeResponse(
    const ReconcileResponse& response, absl::Time now) {
  const ReconcileRequest& sent = *sent_;
  auto fail = [&](absl::Status status) {
    done_ = true;
    sent_.reset();
    views_.clear();
    return status;
  };
  std::vector<Record> merge;
  if (sent.compare && sent.verify_only) {
    if (response.differing.empty() && sent.fetch.empty()) {
      report_.in_sync = true;
      report_.passes = pass_ + 1;
      done_ = true;
      sent_.reset();
      report_.time = now - start_;
      return merge;
    }
    // Decided in Next(), once what this answer fetched is merged.
    verify_pending_ = true;
    verify_theirs_ = response.differing;
    verify_sent_ = sent.roots;
  } else if (sent.compare) {
    if (response.differing.empty()) {
      report_.in_sync = true;
      report_.was_in_sync = compares_ == 1;
      report_.passes = pass_ + 1;
      done_ = true;
      sent_.reset();
      report_.time = now - start_;
      return merge;
    }
    report_.passes = std::max(report_.passes, pass_ + 1);
  }
  for (size_t i = 0; !sent.verify_only && i < response.differing.size(); ++i) {
    const std::string& keyspace = response.differing[i].keyspace;
    Diff(keyspace);
    absl::StatusOr<rbsr::RangeView*> view = LocalView(keyspace);
    if (!view.ok()) return fail(view.status());
    if (absl::Status s = TakeExpansion(**view, NodeRef{keyspace, rbsr::NodeId{}},
                                       response.expansions[i], merge);
        !s.ok()) {
      return fail(s);
    }
  }
  size_t next = sent.verify_only ? 0 : response.differing.size();
  for (size_t j = 0; j < response.expanded; ++j) {
    const NodeRef& ref = sent.expand[j];
    absl::StatusOr<rbsr::RangeView*> view = LocalView(ref.keyspace);
    if (!view.ok()) return fail(view.status());
    std::vector<rbsr::NodeId> nodes;
    if (ref.children.empty()) {
      nodes.push_back(ref.node);
    } else {
      for (int i = 0; i < rbsr::kBranching; ++i) {
        if (response.masks[j] & (1u << i)) nodes.push_back(ref.node.Child(i));
      }
    }
    for (const rbsr::NodeId& node : nodes) {
      if (absl::Status s = TakeExpansion(**view, NodeRef{ref.keyspace, node, {}},
                                         response.expansions[next++], merge);
          !s.ok()) {
        return fail(s);
      }
    }
  }
  // What was not answered is asked again first.
  for (size_t j = sent.expand.size(); j > response.expanded; --j) {
    NodeRef again = sent.expand[j - 1];
    again.children.clear();  // recomputed when sent
    again.occupied.reset();
    expand_.push_front(std::move(again));
  }
  report_.nodes_expanded -= sent.expand.size() - response.expanded;
  for (size_t j = 0; j < response.fetched.size(); ++j) {
    if (!response.fetched[j].has_value()) continue;
    Record r = *response.fetched[j];
    r.keyspace = sent.fetch[j].keyspace;
    r.key = sent.fetch[j].key;
    if (absl::Status s = ValidateRemoteRecord(r, kMaxValueBytes); !s.ok()) {
      return fail(absl::InvalidArgumentError(
          absl::StrCat("reconcile answer: fetched: ", s.message())));
    }
    ++Diff(r.keyspace).fetched;
    merge.push_back(std::move(r));
  }
  for (size_t j = sent.fetch.size(); j > response.fetched.size(); --j) {
    fetch_.push_front(sent.fetch[j - 1]);
  }
  sent_.reset();
  return merge;
}

size_t DropValuesOverLimit(std::vector<Record>& records, size_t value_limit) {
  const size_t before = records.size();
  std::erase_if(records, [value_limit](const Record& r) { return r.value.size() > value_limit; });
  return before - records.size();
}

void ReconcileSession::NoteMerged(uint64_t won, uint64_t refused) {
  report_.won_here += won;
  report_.refused_here += refused;
}

}  // namespace peerkv::replication
