// store/watermarks.h: what a replica claims to hold, per origin. For each
// origin replica id, an hlc such that the holder has every write of that
// origin up to it, or a newer version of the same key. Watermarks form a
// join semilattice: Merge is the join (per-origin max; an origin missing
// is below every hlc, 0 included) and Dominates its order. Map-like
// (ordered by origin) so that codecs and the wire iterate it directly.
#ifndef PEERKV_STORE_WATERMARKS_H_
#define PEERKV_STORE_WATERMARKS_H_

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <utility>

#include "store/version.h"

namespace peerkv {

class Watermarks {
 public:
  using Map = std::map<uint64_t, uint64_t>;
  using value_type = Map::value_type;
  using iterator = Map::iterator;
  using const_iterator = Map::const_iterator;

  Watermarks() = default;
  Watermarks(std::initializer_list<value_type> entries) : map_(entries) {}

  // The join: every origin of either, at the greater hlc.
  void Merge(const Watermarks& other);
  // Merge with a single (origin, hlc).
  void Raise(uint64_t origin, uint64_t hlc);
  // True if the holder has `version` (or newer): its origin is claimed at
  // or above its hlc.
  bool Covers(const Version& version) const;
  // True if these claim everything `other` does: every origin of `other`
  // is here, at an hlc at least as great. The lattice order.
  bool Dominates(const Watermarks& other) const;

  // Map access, as std::map.
  uint64_t& operator[](uint64_t origin) { return map_[origin]; }
  // Throws std::out_of_range for an origin not claimed.
  uint64_t at(uint64_t origin) const { return map_.at(origin); }
  const_iterator find(uint64_t origin) const { return map_.find(origin); }
  iterator find(uint64_t origin) { return map_.find(origin); }
  const_iterator begin() const { return map_.begin(); }
  const_iterator end() const { return map_.end(); }
  iterator begin() { return map_.begin(); }
  iterator end() { return map_.end(); }
  size_t size() const { return map_.size(); }
  bool empty() const { return map_.empty(); }
  void clear() { map_.clear(); }
  size_t erase(uint64_t origin) { return map_.erase(origin); }
  size_t count(uint64_t origin) const { return map_.count(origin); }
  const Map& map() const { return map_; }

  friend bool operator==(const Watermarks&, const Watermarks&) = default;

 private:
  Map map_;
};

}  // namespace peerkv

#endif  // PEERKV_STORE_WATERMARKS_H_
