// store/watermarks.cc: the watermark lattice's join, order and coverage.
#include "store/watermarks.h"

#include <algorithm>

namespace peerkv {

void Watermarks::Merge(const Watermarks& other) {
  for (const auto& [origin, hlc] : other.map_) Raise(origin, hlc);
}

void Watermarks::Raise(uint64_t origin, uint64_t hlc) {
  uint64_t& mine = map_[origin];
  mine = std::max(mine, hlc);
}

bool Watermarks::Covers(const Version& version) const {
  auto it = map_.find(version.origin);
  return it != map_.end() && version.hlc <= it->second;
}

bool Watermarks::Dominates(const Watermarks& other) const {
  for (const auto& [origin, hlc] : other.map_) {
    auto it = map_.find(origin);
    if (it == map_.end() || it->second < hlc) return false;
  }
  return true;
}

}  // namespace peerkv
