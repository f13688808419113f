// store/write_request.h: what a caller hands the store's writer thread, as
// one std::variant of its kinds: local writes (stamped by the writer),
// a batch of remote records to merge, conditional re-stamps (Fork), a
// full log compaction, or a repair of the range fingerprints. Each kind
// carries its own input, its result and its typed callback; the writer
// dispatches on the kind with std::visit, so a new kind (a consensus apply
// of committed entries, say) is one more alternative that every visit must
// handle, not one more flag. Internal to store/.
#ifndef PEERKV_STORE_WRITE_REQUEST_H_
#define PEERKV_STORE_WRITE_REQUEST_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "store/range_table.h"
#include "store/types.h"
#include "store/version.h"

namespace peerkv::writer {

// Local writes: versions are stamped by the writer in commit order.
struct LocalWrite {
  std::vector<Mutation> mutations;
  // The result, recomputed on every attempt of the group.
  std::vector<Version> versions;
  absl::AnyInvocable<void(absl::StatusOr<std::vector<Version>>)> done;
};

// Remote records, validated and sorted by records key, and the checkpoint
// (and watermarks) to commit with them.
struct RemoteBatch {
  std::vector<Record> records;
  std::optional<CheckpointUpdate> checkpoint;
  // Valid records whose clock is too far ahead: quarantined, not merged.
  std::vector<Record> too_far_ahead;
  // Quarantine table keys to delete (Store::RetryQuarantined: the records
  // are in `records`, or refused, or back in `too_far_ahead`).
  std::vector<std::string> release;
  // A snapshot page (Store::LoadSnapshotPage): records in records-table
  // order are appended to the records tree where they come after every
  // stored key; and the bootstrap marker is written (set) or cleared.
  bool append = false;
  bool sets_bootstrap = false;
  std::optional<BootstrapMarker> bootstrap;
  // Store::MergeOptions: false lets the group commit without fsync if no
  // other request in it waits for one; a meta entry to write with it.
  bool wait_for_sync = true;
  std::optional<std::pair<std::string, std::string>> ext_meta;
  // The result: records refused at submission, and (recomputed on every
  // attempt) how many won.
  MergeResult result;
  absl::AnyInvocable<void(absl::StatusOr<MergeResult>)> done;
};

// Store::RestampIfUnchanged(): each mutation is written again as a new
// local write (a fresh version of this replica), but only if its key still
// holds `expected` when the writer's transaction reads it; a write that
// committed since the caller read the key is kept.
struct RestampBatch {
  std::vector<RestampRecord> records;
  // The result, recomputed on every attempt of the group.
  uint64_t restamped = 0;
  absl::AnyInvocable<void(absl::StatusOr<uint64_t>)> done;
};

// A change of the store's identity meta (Fork's switch to a new replica
// id, ForgetRetiredIds), run by the writer between groups, alone: every
// write queued before it commits under the old state and every write
// queued after it under the new one, and nothing is queued on its behalf
// as a barrier. Runs alone.
struct MetaSwitch {
  absl::AnyInvocable<absl::Status()> apply;
  absl::AnyInvocable<void(absl::Status)> done;
};

// CompactLog(): a full pass over the log instead of a write. Runs alone.
struct Compaction {
  uint64_t removed = 0;
  absl::AnyInvocable<void(absl::StatusOr<uint64_t>)> done;
};

// Store::ScrubRangeFingerprints(): deltas that make the "ranges" table
// (and the 64-bit fingerprint) agree with the records again, computed from
// a snapshot; adding them is right whatever committed since, since every
// commit adds true deltas. Runs alone.
struct RangeRepair {
  ranges::Deltas deltas;
  uint64_t fingerprint_delta = 0;
  absl::AnyInvocable<void(absl::Status)> done;
};

// For std::visit over the kinds with one lambda per kind.
template <class... Fs>
struct Overloaded : Fs... {
  using Fs::operator()...;
};
template <class... Fs>
Overloaded(Fs...) -> Overloaded<Fs...>;

// One caller's request, waiting for (or inside) a group commit.
struct WriteRequest {
  std::variant<LocalWrite, RemoteBatch, RestampBatch, Compaction, RangeRepair, MetaSwitch> kind;
  // Records and estimated bytes, for the group and queue bounds.
  size_t records = 0;
  size_t bytes = 0;

  // A compaction, a range repair or a meta switch is never grouped with
  // anything.
  bool RunsAlone() const {
    return std::holds_alternative<Compaction>(kind) || std::holds_alternative<RangeRepair>(kind) ||
           std::holds_alternative<MetaSwitch>(kind);
  }

  // Runs the callback (on the writer thread, or on the submitting one if
  // the request is refused before it is queued) with `status` if it failed,
  // else with the kind's result.
  void Finish(absl::Status status) {
    std::visit(Overloaded{
                   [&](LocalWrite& w) {
                     if (status.ok()) {
                       w.done(std::move(w.versions));
                     } else {
                       w.done(std::move(status));
                     }
                   },
                   [&](RemoteBatch& b) {
                     if (status.ok()) {
                       b.done(std::move(b.result));
                     } else {
                       b.done(std::move(status));
                     }
                   },
                   [&](RestampBatch& r) {
                     if (status.ok()) {
                       r.done(r.restamped);
                     } else {
                       r.done(std::move(status));
                     }
                   },
                   [&](Compaction& c) {
                     if (status.ok()) {
                       c.done(c.removed);
                     } else {
                       c.done(std::move(status));
                     }
                   },
                   [&](RangeRepair& r) { r.done(std::move(status)); },
                   [&](MetaSwitch& m) { m.done(std::move(status)); },
               },
               kind);
  }
};

}  // namespace peerkv::writer

#endif  // PEERKV_STORE_WRITE_REQUEST_H_
