// cli/backend_test.cc: facts as JSON (`info --json`, `status --json`):
// numbers stay numbers, ids and names stay strings, repeated names become
// arrays in the place they first appear.
#include "cli/backend.h"

#include "gtest/gtest.h"

namespace peerkv::cli {
namespace {

TEST(FactsJsonMembersTest, NumbersTextAndRepeatedNames) {
  EXPECT_EQ(FactsJsonMembers({{"live_records", "12"},
                              {"quarantined_from", "a1"},
                              {"replica_id", "0042"},
                              {"quarantined_from", "b2"},
                              {"offset", "-7"},
                              {"leading_zero", "007"}}),
            "\"live_records\":12,\"quarantined_from\":[\"a1\",\"b2\"],"
            "\"replica_id\":\"0042\",\"offset\":-7,\"leading_zero\":\"007\"");
  EXPECT_EQ(FactsJsonMembers({}), "");
}

}  // namespace
}  // namespace peerkv::cli
