// tests/sim/sim_main.cc: runs the replication simulation over many seeds.
//   sim_test                 200 seeds and a few that once failed, those
//                            with and without reconcile (what `make test`
//                            runs)
//   sim_test --seeds N       seeds 1..N
//   sim_test --no-restores   without backing up and restoring replicas
//                            (issue 8; on by default)
//   sim_test --no-clones     without cloned data directories
//   sim_test --no-far-clocks without clocks a day ahead, later corrected
//   sim_test --no-reconcile  without reconcile sessions (the transport
//                            answers Unimplemented): logs and pulls alone
//   sim_test --no-identities without users, friends, policies and the
//                            lying device (every replica one user's, links
//                            unauthenticated); the once-failing seeds run
//                            so, as they failed
//   sim_test --break-friend-filter | --break-bindings | --break-gate
//                            test-only: a check must then fail
//                            (sim_checks_test)
//   sim_test --seed S [-v]   one seed, optionally printing every event
// Every seed also runs twice to prove it replays exactly (same trace hash)
// when --check-replay is given (the default for the first 20 seeds).
// Exit status 0 only if every seed passed, and (over 20 seeds or more) some
// pull was pipelined and (unless --no-reconcile) some reconcile session
// repaired a register, and (over 5 clones or more) some clone was refused:
// the simulation must keep covering those paths; with identities (over 20
// seeds) some records must have reached a friend, some revocation, lying
// claim and forged record must have been refused, and a stranger's dial.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "tests/sim/simulation.h"

int main(int argc, char** argv) {
  uint64_t first = 1, last = 200;
  bool verbose = false;
  bool restores = true;
  bool clones_on = true;
  bool far_clocks = true;
  bool reconcile = true;
  bool identities = true;
  bool break_friend_filter = false, break_bindings = false, break_gate = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--seeds" && i + 1 < argc) {
      last = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "--from" && i + 1 < argc) {
      // With --seeds N: seeds F..N (to split a long run between processes).
      first = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "--seed" && i + 1 < argc) {
      first = last = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "-v") {
      verbose = true;
    } else if (arg == "--restores") {
      restores = true;
    } else if (arg == "--no-restores") {
      restores = false;
    } else if (arg == "--no-clones") {
      clones_on = false;
    } else if (arg == "--no-far-clocks") {
      far_clocks = false;
    } else if (arg == "--no-reconcile") {
      reconcile = false;
    } else if (arg == "--no-identities") {
      identities = false;
    } else if (arg == "--break-friend-filter") {
      break_friend_filter = true;
    } else if (arg == "--break-bindings") {
      break_bindings = true;
    } else if (arg == "--break-gate") {
      break_gate = true;
    } else {
      std::fprintf(stderr, "usage: %s [--seeds N | --seed S [-v]] [--no-restores] [--no-clones] [--no-far-clocks] [--no-reconcile] [--no-identities] [--break-friend-filter | --break-bindings | --break-gate]\n", argv[0]);
      return 2;
    }
  }
  if (first == 0 || last < first) {
    std::fprintf(stderr, "seeds must be 1..N with N >= 1\n");
    return 2;
  }
  // Seeds beyond the first 200 that once failed, each for a cause fixed
  // since (the commits say which): the default run replays them too, and
  // again without reconcile sessions, which would otherwise repair what
  // the logs and hellos missed (8149, 2537: a restore nothing showed).
  // 456, 644, 4090, 9445: a deleted or overwritten key came back after its
  // tombstone was collected (644, 4090: a fresh-clock fork dropped the
  // watermarks that told stale records; 4090: an old tombstone merged
  // over nothing; 9445: a record released from quarantine; 456: see
  // bench/README, once-failing at the commit that found it).
  // They run without identities, as they failed (identities change the
  // topology and the workload).
  struct Run {
    uint64_t seed;
    bool reconcile;
    bool identities;
  };
  std::vector<Run> seeds;
  for (uint64_t seed = first; seed <= last; ++seed) seeds.push_back({seed, reconcile, identities});
  if (first == 1 && last == 200) {
    for (uint64_t seed : {240, 340, 1601, 7496, 2537, 3110, 5577, 8149, 456, 644, 4090, 9445}) {
      seeds.push_back({seed, reconcile, false});
      seeds.push_back({seed, false, false});
    }
    // With reconcile only: a restore that nothing showed, which only a
    // session can repair, with a replica whose value limit (64 bytes) is
    // below a value the session carried (5603: that failed every session
    // and closed the link).
    seeds.push_back({5603, reconcile, false});
    // With identities, as they failed in the sweep of 2026-12-02
    // (bench/README): 5971, a fresh tombstone answering a stale record
    // deleted a newer write the answering replica had not received; 4073
    // and 9136, the checker kept a tombstone that only the replica then
    // restored from its backup had collected (no other replica held it);
    // 9051 and 9140, a friend's device, down while Jane's replica collected
    // a tombstone it lacked, kept an older one of the key for good (a
    // friend's device is now waited for by its merged checkpoint); 3807, a
    // restored replica's signed writes kept their old-id versions, under
    // the lost life's clock, and were refused as stale; 1557, a restore
    // fork kept nothing of its old id, and a copy-era write of it offered
    // by a friend's device after its key's tombstone was collected merged
    // over nothing (the fork now keeps the old id up to its second open's
    // floor; the seed's run reached that shape at b72f0e6, no longer since,
    // store/tombstones_test RestoreForkTest holds it).
    for (uint64_t seed : {4073, 5971, 9136, 9051, 9140, 3807, 1557}) {
      seeds.push_back({seed, reconcile, identities});
    }
    // 7845: a clock a day ahead, not yet known to be, aged a tombstone
    // written seconds before past the minimum age; collected, an older
    // delete by a replica it had never heard of merged over nothing.
    seeds.push_back({7845, reconcile, identities});
    // 1341: r0, restored from its backup, lacked its own signed write that
    // only a friend's device held; it refused the friend's page (a
    // friend's word does not fork a replica) and never got it back. A
    // friend's page now forks it when each such write is signed by a
    // device of r0's own user.
    seeds.push_back({1341, reconcile, identities});
  }
  int passed = 0, failed = 0;
  uint64_t pages_prefetched = 0;
  uint64_t clones = 0, clones_refused = 0;
  uint64_t reconcile_rounds = 0, reconciles = 0, reconcile_records = 0;
  uint64_t tombstones_collected = 0;
  uint64_t revoked = 0, sent_to_friends = 0, liars = 0, claims_refused = 0, forged_offered = 0,
           strangers_refused = 0, unmapped_answers = 0;
  for (const auto& [seed, with_reconcile, with_identities] : seeds) {
    peerkv::sim::SimOptions options;
    options.seed = seed;
    options.verbose = verbose;
    options.restores = restores;
    options.clones = clones_on;
    options.far_clocks = far_clocks;
    options.reconcile = with_reconcile;
    options.identities = with_identities;
    options.break_friend_filter = break_friend_filter;
    options.break_bindings = break_bindings;
    options.break_gate = break_gate;
    const peerkv::sim::SimResult result = peerkv::sim::Run(options);
    bool ok = result.passed;
    pages_prefetched += result.pages_prefetched;
    clones += result.cloned ? 1 : 0;
    clones_refused += result.clones_refused;
    reconcile_rounds += result.reconcile_rounds;
    reconciles += result.reconciles;
    reconcile_records += result.reconcile_records;
    tombstones_collected += result.tombstones_collected;
    revoked += result.revoked ? 1 : 0;
    sent_to_friends += result.sent_to_friends;
    liars += result.liar ? 1 : 0;
    claims_refused += result.claims_refused;
    forged_offered += result.forged_offered;
    strangers_refused += result.strangers_refused;
    unmapped_answers += result.unmapped_answers;
    std::string message = result.message;
    if (ok && seed - first < 20 && !verbose) {
      const peerkv::sim::SimResult again = peerkv::sim::Run(options);
      if (again.trace_hash != result.trace_hash) {
        ok = false;
        message = "replaying the seed gave a different run";
      }
    }
    if (ok) {
      ++passed;
      if (verbose || first == last) std::printf("seed %llu: ok: %s\n", (unsigned long long)seed, message.c_str());
    } else {
      ++failed;
      std::printf("seed %llu: FAILED: %s (replay: --seed %llu%s%s -v)\n", (unsigned long long)seed,
                  message.c_str(), (unsigned long long)seed,
                  with_reconcile ? "" : " --no-reconcile",
                  with_identities ? "" : " --no-identities");
    }
    std::fflush(stdout);
  }
  std::printf("simulation: %d seeds passed, %d failed; %llu pulled pages were pipelined; %llu "
              "clones started, %llu links refused as clones; %llu reconcile sessions, %llu "
              "rounds answered, %llu registers repaired\n",
              passed, failed, (unsigned long long)pages_prefetched, (unsigned long long)clones,
              (unsigned long long)clones_refused, (unsigned long long)reconciles,
              (unsigned long long)reconcile_rounds, (unsigned long long)reconcile_records);
  std::printf("simulation: %llu tombstones collected (collection runs in every seed; a seed "
              "fails if a register ever goes back)\n",
              (unsigned long long)tombstones_collected);
  std::printf("simulation: identities: %llu records and keys reached other users' replicas; "
              "%llu revocations; %llu lying devices, %llu claims of another's replica id "
              "refused, %llu forged records offered; %llu strangers refused; %llu reconcile "
              "answers not checked item by item\n",
              (unsigned long long)sent_to_friends, (unsigned long long)revoked,
              (unsigned long long)liars, (unsigned long long)claims_refused,
              (unsigned long long)forged_offered, (unsigned long long)strangers_refused,
              (unsigned long long)unmapped_answers);
  if (identities && last - first + 1 >= 20 &&
      (sent_to_friends == 0 || revoked == 0 || claims_refused == 0 || forged_offered == 0 ||
       strangers_refused == 0)) {
    std::printf("simulation: identities are no longer covered (a count above is 0)\n");
    return 1;
  }
  if (last - first + 1 >= 20 && tombstones_collected == 0) {
    std::printf("simulation: no tombstone was collected: collection is no longer covered\n");
    return 1;
  }
  if (clones >= 5 && clones_refused == 0) {
    std::printf("simulation: no clone was refused: cloned directories are no longer covered\n");
    return 1;
  }
  if (reconcile && last - first + 1 >= 20 && reconcile_records == 0) {
    std::printf("simulation: no reconcile session repaired a register: reconciliation is no "
                "longer covered\n");
    return 1;
  }
  if (last - first + 1 >= 20 && pages_prefetched == 0) {
    std::printf("simulation: no pull was pipelined: multi-page pulls are no longer covered\n");
    return 1;
  }
  return failed == 0 ? 0 : 1;
}
