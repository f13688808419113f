// store/data_dir.cc: creating, registering and locking a data directory,
// and the questions the store asks the OS about it.
#include "store/data_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <system_error>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "store/lmdb_util.h"

namespace peerkv {
namespace {

// Directories open in this process: see the file comment. Like LevelDB's
// PosixLockTable, kept beside the lock file because flock does not protect
// against a second open from the same process.
absl::Mutex open_dirs_mu(absl::kConstInit);
absl::flat_hash_set<std::string>& OpenDirs() ABSL_EXCLUSIVE_LOCKS_REQUIRED(open_dirs_mu) {
  static auto* dirs = new absl::flat_hash_set<std::string>();
  return *dirs;
}

}  // namespace

absl::StatusOr<std::unique_ptr<DataDir>> DataDir::Open(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return lmdb::Error(ec.value(), absl::StrCat("create store directory ", dir));
  const std::filesystem::path canonical = std::filesystem::canonical(dir, ec);
  if (ec) return lmdb::Error(ec.value(), absl::StrCat("resolve ", dir));
  if (!std::filesystem::is_directory(canonical, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("store path ", dir, " is not a directory"));
  }
  const std::string path = canonical.string();
  {
    absl::MutexLock lock(&open_dirs_mu);
    if (!OpenDirs().insert(path).second) {
      return absl::FailedPreconditionError(
          absl::StrCat("store directory ", path, " is already open in this process"));
    }
  }
  auto unregister = [&path] {
    absl::MutexLock lock(&open_dirs_mu);
    OpenDirs().erase(path);
  };
  const std::string lock_path = path + "/peerkv.lock";
  const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int err = errno;
    unregister();
    return lmdb::Error(err, absl::StrCat("open ", lock_path));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    unregister();
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(
          "store directory ", path,
          " is in use by another process (a running peerkv server? use "
          "--server to talk to it)"));
    }
    return lmdb::Error(err, absl::StrCat("lock ", lock_path));
  }
  return std::unique_ptr<DataDir>(new DataDir(path, fd));
}

DataDir::~DataDir() {
  ::close(lock_fd_);
  absl::MutexLock lock(&open_dirs_mu);
  OpenDirs().erase(path_);
}

absl::StatusOr<uint64_t> DataDir::DataFileBytes() const {
  const std::string data_path = path_ + "/data.mdb";
  struct stat st;
  if (::stat(data_path.c_str(), &st) != 0) {
    return lmdb::Error(errno, absl::StrCat("stat ", data_path));
  }
  return static_cast<uint64_t>(st.st_size);
}

absl::Status DataDir::ExplainWriteFailure(const absl::Status& failure,
                                          size_t group_bytes) const {
  // The caller's remedy differs: free space (or raise the limit), or alert.
  const std::string data_path = path_ + "/data.mdb";
  struct stat st;
  struct statvfs fs;
  rlimit fsize;
  const uint64_t needed = std::max<uint64_t>(uint64_t{64} << 20, 2 * group_bytes);
  if (::stat(data_path.c_str(), &st) == 0) {
    if (::getrlimit(RLIMIT_FSIZE, &fsize) == 0 && fsize.rlim_cur != RLIM_INFINITY &&
        static_cast<uint64_t>(st.st_size) + needed > fsize.rlim_cur) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "%s: the data file (%d bytes) reached this process's file size limit "
          "(%d bytes); nothing from the failed commit was acknowledged",
          failure.message(), st.st_size, fsize.rlim_cur));
    }
  }
  if (::statvfs(path_.c_str(), &fs) == 0) {
    const uint64_t free_bytes = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
    if (free_bytes < needed) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "%s: the disk holding %s is full (%d bytes free); nothing from the "
          "failed commit was acknowledged",
          failure.message(), path_, free_bytes));
    }
  }
  return failure;
}

}  // namespace peerkv
