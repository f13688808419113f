// store/version.cc: formatting of versions and replica ids.
#include "store/version.h"

#include "absl/strings/str_format.h"

namespace peerkv {

std::string Version::ToString() const {
  return absl::StrFormat("%d.%d@%s", HlcMillis(hlc), HlcLogical(hlc),
                         ReplicaIdToString(origin));
}

std::string ReplicaIdToString(uint64_t id) { return absl::StrFormat("%016x", id); }

}  // namespace peerkv
