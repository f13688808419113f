// tests/linearizability_checker_test.cc: the checker accepts concurrent
// histories that are linearizable (hand-made, and random ones generated from
// a real register with overlapping intervals) and refuses broken ones: a
// stale read, a lost compare-and-set, a read of a value never written.
#include "tests/linearizability_checker.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "testing/seed.h"

namespace peerkv::testing {
namespace {

using Kind = RegisterOp::Kind;

RegisterOp Get(int64_t from, int64_t to, std::optional<std::string> v, int client = 0) {
  return {Kind::kGet, "k", from, to, std::move(v), std::nullopt, true, client};
}
RegisterOp Put(int64_t from, int64_t to, std::optional<std::string> v, int client = 0) {
  return {Kind::kPut, "k", from, to, std::move(v), std::nullopt, true, client};
}
RegisterOp Cas(int64_t from, int64_t to, std::optional<std::string> expected,
               std::optional<std::string> v, bool ok, int client = 0) {
  return {Kind::kCas, "k", from, to, std::move(v), std::move(expected), ok, client};
}

bool Linearizable(const std::vector<RegisterOp>& h) {
  auto r = CheckLinearizable(h);
  EXPECT_TRUE(r.ok()) << r.status();
  if (r.ok() && !r->linearizable) std::fprintf(stderr, "%s\n", r->explanation.c_str());
  return r.ok() && r->linearizable;
}

TEST(LinearizabilityChecker, AcceptsAConcurrentCorrectHistory) {
  // Two writes overlap a read that sees the second: fine, the read took
  // effect after both. A CAS from "b" wins, a concurrent one from "b" loses.
  EXPECT_TRUE(Linearizable({
      Put(0, 10, "a", 1),
      Put(5, 15, "b", 2),
      Get(8, 20, "b", 3),
      Cas(21, 30, "b", "c", true, 1),
      Cas(22, 31, "b", "d", false, 2),
      Get(32, 33, "c", 3),
  }));
  // Reads concurrent with a write may see either side, in an order that
  // fits one instant for the write.
  EXPECT_TRUE(Linearizable({Put(0, 100, "x", 1), Get(10, 20, std::nullopt, 2),
                            Get(30, 40, "x", 3), Get(50, 60, "x", 2)}));
  EXPECT_TRUE(Linearizable({}));
}

TEST(LinearizabilityChecker, RefusesAStaleRead) {
  // The read starts after the write of "b" returned, yet sees "a".
  auto r = CheckLinearizable({Put(0, 10, "a", 1), Put(20, 30, "b", 2), Get(40, 50, "a", 3)});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->linearizable);
  EXPECT_EQ(r->key, "k");
  EXPECT_NE(r->explanation.find("get(k) = \"a\""), std::string::npos) << r->explanation;
  // A read flipping back after a later read saw the new value.
  EXPECT_FALSE(Linearizable(
      {Put(0, 100, "x", 1), Get(10, 20, "x", 2), Get(30, 40, std::nullopt, 3)}));
}

TEST(LinearizabilityChecker, RefusesALostCompareAndSet) {
  // Both CASes from "0" succeed: one increment is lost.
  EXPECT_FALSE(Linearizable({
      Put(0, 1, "0", 1),
      Cas(2, 10, "0", "1", true, 1),
      Cas(3, 11, "0", "1", true, 2),
  }));
  // A CAS that failed although nothing could have changed the value.
  EXPECT_FALSE(Linearizable({Put(0, 1, "0", 1), Cas(2, 3, "0", "1", false, 2)}));
  // A read of a value nobody wrote.
  EXPECT_FALSE(Linearizable({Put(0, 1, "0", 1), Get(2, 3, "7", 2)}));
}

TEST(LinearizabilityChecker, OperationsWithoutAResponseMayOrMayNotHaveHappened) {
  // A put that timed out, seen later: it happened.
  EXPECT_TRUE(Linearizable({Put(0, kNoResponse, "a", 1), Get(10, 20, "a", 2)}));
  // ... or not seen: it did not (yet).
  EXPECT_TRUE(Linearizable({Put(0, kNoResponse, "a", 1), Get(10, 20, std::nullopt, 2)}));
  // But once seen, it cannot un-happen.
  EXPECT_FALSE(Linearizable({Put(0, kNoResponse, "a", 1), Get(10, 20, "a", 2),
                             Get(30, 40, std::nullopt, 2)}));
}

TEST(LinearizabilityChecker, KeysAreIndependentRegisters) {
  RegisterOp other = Get(40, 50, "a", 3);
  other.key = "other";
  EXPECT_FALSE(Linearizable({Put(0, 10, "a", 1), other}));
  other.value = std::nullopt;
  EXPECT_TRUE(Linearizable({Put(0, 10, "a", 1), other}));
}

TEST(LinearizabilityChecker, RefusesMalformedHistoriesAndStopsAtItsBudget) {
  EXPECT_THAT(CheckLinearizable({Put(10, 5, "a")}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "response before invocation"));
  CheckOptions tight;
  tight.max_ops_per_key = 2;
  EXPECT_THAT(CheckLinearizable({Put(0, 1, "a"), Put(0, 1, "b"), Put(0, 1, "c")}, tight).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "more than 2"));
  // Many fully concurrent writes and a read no order satisfies: the search
  // must try orders until the budget ends it.
  std::vector<RegisterOp> h;
  for (int i = 0; i < 30; ++i) h.push_back(Put(0, 1000, absl::StrCat(i), i));
  h.push_back(Get(0, 1000, "never", 99));
  CheckOptions few;
  few.max_steps = 1000;
  auto r = CheckLinearizable(h, few);
  if (r.ok()) {
    EXPECT_FALSE(r->linearizable);
  } else {
    EXPECT_THAT(r.status(), StatusIs(absl::StatusCode::kResourceExhausted, "gave up"));
  }
}

// Random histories from a real register: each op takes effect at a distinct
// instant t and its interval is [t - a, t + b]: linearizable by construction.
// Then one read is made stale on purpose: refused.
TEST(LinearizabilityChecker, RandomHistoriesOfARealRegisterPassAndAStaleReadFails) {
  const uint64_t seed = TestSeed();
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 50; ++round) {
    std::vector<RegisterOp> h;
    std::optional<std::string> reg;
    std::vector<std::optional<std::string>> past = {std::nullopt};
    int writes = 0;
    for (int i = 0; i < 40; ++i) {
      const int64_t t = 100 * (i + 1);
      const int64_t from = t - static_cast<int64_t>(rng() % 250);
      const int64_t to = t + static_cast<int64_t>(rng() % 250);
      const int client = static_cast<int>(rng() % 5);
      switch (rng() % 3) {
        case 0:
          h.push_back(Get(from, to, reg, client));
          break;
        case 1:
          reg = absl::StrCat("w", ++writes);
          past.push_back(reg);
          h.push_back(Put(from, to, reg, client));
          break;
        default: {
          std::optional<std::string> expected =
              rng() % 2 ? reg : past[rng() % past.size()];
          const bool ok = expected == reg;
          std::optional<std::string> v = absl::StrCat("w", ++writes);
          if (ok) {
            reg = v;
            past.push_back(v);
          }
          h.push_back(Cas(from, to, expected, v, ok, client));
        }
      }
    }
    auto r = CheckLinearizable(h);
    ASSERT_TRUE(r.ok()) << r.status() << " seed " << seed;
    ASSERT_TRUE(r->linearizable) << r->explanation << " seed " << seed << " round " << round;

    // Break it: a read strictly after two completed writes returns the
    // value before both.
    const int64_t end = 100 * 50;
    h.push_back(Put(end, end + 1, "p", 0));
    h.push_back(Put(end + 2, end + 3, "q", 0));
    h.push_back(Get(end + 4, end + 5, "p", 1));
    r = CheckLinearizable(h);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_FALSE(r->linearizable) << "seed " << seed << " round " << round;
  }
}

}  // namespace
}  // namespace peerkv::testing
