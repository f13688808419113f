// auth/recent_cache.h: a map that keeps at most a fixed number of its most
// recently used entries, approximately: two generations of up to half the
// bound each. New entries go to the newer one; when it is full it becomes
// the older one and the older one is dropped. An entry found in the older
// generation moves to the newer, so what is used again stays while what is
// not ages out, and the map never forgets everything at once (as one map
// cleared at its bound would). Every operation is O(1). Not thread-safe.
#ifndef PEERKV_AUTH_RECENT_CACHE_H_
#define PEERKV_AUTH_RECENT_CACHE_H_

#include <cstddef>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "common/macros.h"

namespace peerkv::auth {

template <typename Key, typename Value>
class RecentCache {
 public:
  // REQUIRES: max_entries >= 2 (one per generation at least).
  explicit RecentCache(size_t max_entries) : generation_limit_(max_entries / 2) {
    PEERKV_CHECK(max_entries >= 2);
  }

  // The value of `key` (of a type the map's hash can look up by), or
  // nullptr. The pointer is good until the next Find or Insert.
  template <typename K>
  const Value* Find(const K& key) {
    if (auto it = newer_.find(key); it != newer_.end()) return &it->second;
    auto it = older_.find(key);
    if (it == older_.end()) return nullptr;
    Key moved_key = it->first;
    Value moved_value = std::move(it->second);
    older_.erase(it);
    return &Put(std::move(moved_key), std::move(moved_value));
  }

  // Adds or replaces the entry of `key`.
  void Insert(Key key, Value value) {
    older_.erase(key);
    Put(std::move(key), std::move(value));
  }

  size_t size() const { return newer_.size() + older_.size(); }

 private:
  // REQUIRES: `key` is in neither generation, or only in the newer.
  Value& Put(Key key, Value value) {
    if (auto it = newer_.find(key); it != newer_.end()) {
      it->second = std::move(value);
      return it->second;
    }
    if (newer_.size() >= generation_limit_) {
      older_.swap(newer_);
      newer_.clear();
    }
    return newer_.emplace(std::move(key), std::move(value)).first->second;
  }

  const size_t generation_limit_;
  absl::flat_hash_map<Key, Value> newer_;
  absl::flat_hash_map<Key, Value> older_;
};

}  // namespace peerkv::auth

#endif  // PEERKV_AUTH_RECENT_CACHE_H_
