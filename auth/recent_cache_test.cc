// auth/recent_cache_test.cc: the bounded map of recently used entries: it
// never holds more than its bound, keeps what is used again, and ages out
// what is not.
#include "auth/recent_cache.h"

#include <string>

#include "gtest/gtest.h"

namespace peerkv::auth {
namespace {

TEST(RecentCacheTest, FindsWhatWasInserted) {
  RecentCache<std::string, int> cache(4);
  EXPECT_EQ(cache.Find(std::string("a")), nullptr);
  cache.Insert("a", 1);
  cache.Insert("b", 2);
  ASSERT_NE(cache.Find(std::string("a")), nullptr);
  EXPECT_EQ(*cache.Find(std::string("a")), 1);
  cache.Insert("a", 3);
  EXPECT_EQ(*cache.Find(std::string("a")), 3);
  EXPECT_EQ(cache.size(), 2u);
}

TEST(RecentCacheTest, NeverHoldsMoreThanItsBound) {
  for (size_t bound : {2, 3, 4, 10}) {
    RecentCache<int, int> cache(bound);
    for (int i = 0; i < 100; ++i) {
      cache.Insert(i, i);
      if (i % 3 == 0) cache.Find(i / 2);  // moves an older entry forward
      ASSERT_LE(cache.size(), bound) << "bound " << bound << " after " << i;
    }
    // The newest entry is always there.
    ASSERT_NE(cache.Find(99), nullptr);
  }
}

TEST(RecentCacheTest, KeepsWhatIsUsedAndAgesOutWhatIsNot) {
  RecentCache<int, int> cache(4);
  cache.Insert(-1, -1);
  for (int i = 0; i < 20; ++i) {
    cache.Insert(i, i);
    ASSERT_NE(cache.Find(-1), nullptr) << "after " << i;
  }
  EXPECT_EQ(cache.Find(0), nullptr);
  EXPECT_EQ(cache.Find(15), nullptr);
  EXPECT_NE(cache.Find(19), nullptr);
}

}  // namespace
}  // namespace peerkv::auth
