// tests/sim/sim_checks_test.cc: each identity check of the simulation can
// fail. With a test-only breakage (SimOptions::break_*), a seed that
// exercises the path fails with the check's own message; the same seed
// passes unbroken.
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/sim/simulation.h"

namespace peerkv::sim {
namespace {

using ::testing::HasSubstr;

SimOptions Seed(uint64_t seed) {
  SimOptions options;
  options.seed = seed;
  return options;
}

// Seed 3: Jane's replicas serve Josephine's (all seeds have friends).
TEST(SimChecksTest, AnUnfilteredFriendLinkLeaks) {
  SimOptions options = Seed(3);
  EXPECT_TRUE(sim::Run(options).passed);
  options.break_friend_filter = true;
  const SimResult broken = sim::Run(options);
  EXPECT_FALSE(broken.passed);
  EXPECT_THAT(broken.message, HasSubstr("(josephine's) notes/"));
  EXPECT_THAT(broken.message, HasSubstr("which josephine may not have"));
}

// `seed` passes with a lying device whose claims of other replicas' ids
// are refused, and fails once the claim check is broken.
void ExpectClaimsRefusedAndCheckable(uint64_t seed) {
  SimOptions options = Seed(seed);
  const SimResult ok = sim::Run(options);
  EXPECT_TRUE(ok.passed) << ok.message;
  EXPECT_TRUE(ok.liar);
  EXPECT_GT(ok.claims_refused, 0u);
  options.break_bindings = true;
  const SimResult broken = sim::Run(options);
  EXPECT_FALSE(broken.passed);
  EXPECT_THAT(broken.message, HasSubstr("a device's claim of another replica's id was accepted"));
}

// Seed 7: a lying device of Josephine's claims the replica id of r0.
TEST(SimChecksTest, AnUncheckedReplicaIdIsTaken) {
  ExpectClaimsRefusedAndCheckable(7);
}

// Seed 344: the lying device claims r3's id at r2, which is restored
// from a backup in between; with bindings stored in the store's meta, the
// restored r2 had forgotten r3's and accepted the next claim. A claim is
// now checked against the liar's key alone.
TEST(SimChecksTest, ARestoredReplicaStillRefusesAClaimOfAnotherDevicesId) {
  ExpectClaimsRefusedAndCheckable(344);
}

// Seed 24: the lying device offers forged records (seed 12 did before
// replica ids were minted from device keys, which changed its schedule).
TEST(SimChecksTest, AForgedRecordGetsInWithoutTheGate) {
  SimOptions options = Seed(24);
  const SimResult ok = sim::Run(options);
  EXPECT_TRUE(ok.passed) << ok.message;
  EXPECT_GT(ok.forged_offered, 0u);
  options.break_gate = true;
  const SimResult broken = sim::Run(options);
  EXPECT_FALSE(broken.passed);
  EXPECT_THAT(broken.message, HasSubstr("forged"));
}

}  // namespace
}  // namespace peerkv::sim
