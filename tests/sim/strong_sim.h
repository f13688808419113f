// tests/sim/strong_sim.h: the simulation's strong-keyspace driver (issue
// 11), apart from simulation.cc so the two grow without stepping on each
// other. Three to five replicas, each a real Store with a ModeTable and a
// StrongKeyspaces, share one deterministic FakeConsensusLog (one replica
// in half the seeds has no access to it). The workload, from one seed:
// compare-and-set increments (--if-version, --if-absent) and unconditional
// strong puts and deletes of keyspace "ledger" (strong from the start),
// linearizable reads of it, lww puts of keyspace "flip" whose mode
// switches online (lww -> strong -> lww ...), followers reading the log,
// and gossip (one replica's registers merged into another's, some
// dropped). The fake goes unreachable for windows and commits slowly
// (proposals in flight whose caller saw Unavailable) at times. Checks:
// - the history of "ledger" operations is linearizable per key
//   (tests/linearizability_checker.h; a write whose caller saw Unavailable
//   is an operation without a response);
// - after healing, every replica holds each "ledger" key exactly as the
//   log's last commit of it (value and the version the commit assigned);
// - the barrier: no replica ever loses an lww write of "flip" that the
//   rules admit (made before a switch to strong or after a switch back),
//   and what a replica holds beyond that fold is only an lww write inside
//   a strong interval that it took before it learned the switch (the
//   README's documented window); after one more write of every key,
//   every replica holds the same "flip" registers, except where a replica
//   keeps such a window write whose version is above the final write's
//   (counted: kept_in_window; any other difference fails).
// Versions come from the stores' own hybrid clocks (wall time), so a seed
// replays the same operations and faults, not the same versions.
#ifndef PEERKV_TESTS_SIM_STRONG_SIM_H_
#define PEERKV_TESTS_SIM_STRONG_SIM_H_

#include <cstdint>
#include <string>

namespace peerkv::sim {

struct StrongSimOptions {
  uint64_t seed = 1;
  int steps = 400;
  bool verbose = false;
};

struct StrongSimResult {
  bool passed = false;
  std::string message;
  int replicas = 0;
  int ledger_ops = 0;
  int committed = 0;
  int unknown_outcomes = 0;   // writes whose caller saw Unavailable
  int refused_by_barrier = 0; // lww records refused at merge
  int switches = 0;           // mode switches of "flip"
  // "flip" registers still divergent after the final writes because a
  // replica keeps an lww write it took inside a strong interval before it
  // learned the switch, with a version above the key's final write (the
  // README's documented limit of the barrier).
  int kept_in_window = 0;
};

StrongSimResult RunStrong(const StrongSimOptions& options);

}  // namespace peerkv::sim

#endif  // PEERKV_TESTS_SIM_STRONG_SIM_H_
