// store/data_dir.h: a store's data directory as an operating-system
// resource. Open() creates and canonicalises it, registers it as open in
// this process (LMDB must not open one environment twice in a process: its
// locks are per process, so a second open would corrupt it) and takes the
// lock file against other processes. Also the one place that asks the OS
// about the directory: the data file's size, and why a write failed (a full
// disk or a file-size limit, told apart from a failing disk). Every OS call
// of the store outside LMDB is here.
#ifndef PEERKV_STORE_DATA_DIR_H_
#define PEERKV_STORE_DATA_DIR_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace peerkv {

class DataDir {
 public:
  // Creates `dir` (with parents) if missing and locks it. Errors:
  // FailedPrecondition if it is not a directory, is open in this process, or
  // is locked by another process; PermissionDenied if it cannot be written;
  // ResourceExhausted if the disk is full.
  static absl::StatusOr<std::unique_ptr<DataDir>> Open(const std::string& dir);

  // Releases the lock and the registration. REQUIRES: the LMDB environment
  // in it is closed.
  ~DataDir();

  DataDir(const DataDir&) = delete;
  DataDir& operator=(const DataDir&) = delete;

  // The canonical path (symlinks resolved).
  const std::string& path() const { return path_; }

  // Size in bytes of LMDB's data file.
  absl::StatusOr<uint64_t> DataFileBytes() const;

  // `failure` from a commit of about `group_bytes`, relabelled
  // ResourceExhausted (naming the limit) if the disk is full or the data
  // file reached this process's RLIMIT_FSIZE: LMDB reports those short
  // writes as EIO, which would otherwise look like a failing disk. Else
  // `failure` unchanged.
  absl::Status ExplainWriteFailure(const absl::Status& failure,
                                   size_t group_bytes) const;

 private:
  DataDir(std::string path, int lock_fd) : path_(std::move(path)), lock_fd_(lock_fd) {}

  const std::string path_;
  const int lock_fd_;
};

}  // namespace peerkv

#endif  // PEERKV_STORE_DATA_DIR_H_
