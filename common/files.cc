// common/files.cc: see files.h.
#include "common/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"

namespace peerkv {

absl::Status ReplaceFile(const std::string& path, std::string_view text, mode_t mode) {
  const std::string tmp = absl::StrFormat("%s.tmp.%d", path, ::getpid());
  ::unlink(tmp.c_str());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("create %s: %s", tmp, std::strerror(errno)));
  }
  absl::Status status;
  size_t done = 0;
  while (done < text.size() && status.ok()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      status = absl::InternalError(absl::StrFormat("write %s: %s", tmp, std::strerror(errno)));
    } else {
      done += static_cast<size_t>(n);
    }
  }
  if (status.ok() && ::fsync(fd) != 0) {
    status = absl::InternalError(absl::StrFormat("fsync %s: %s", tmp, std::strerror(errno)));
  }
  ::close(fd);
  if (status.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    status = absl::InternalError(absl::StrFormat("rename %s: %s", path, std::strerror(errno)));
  }
  ::unlink(tmp.c_str());
  if (!status.ok()) return status;
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
  return absl::OkStatus();
}

}  // namespace peerkv
