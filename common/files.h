// common/files.h: replacing a small file on disk whole, so that a reader
// (or a crash) sees the old contents or the new, never a part of either.
#ifndef PEERKV_COMMON_FILES_H_
#define PEERKV_COMMON_FILES_H_

#include <sys/types.h>

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace peerkv {

// Writes `text` to PATH.tmp.PID (created with `mode`, never through a
// symlink), fsyncs it, renames it over `path` and fsyncs the directory.
// FailedPrecondition if the temporary file cannot be created, Internal if
// writing, syncing or renaming it fails (the message names the file and
// the system's reason); the temporary file never stays behind.
absl::Status ReplaceFile(const std::string& path, std::string_view text, mode_t mode);

}  // namespace peerkv

#endif  // PEERKV_COMMON_FILES_H_
