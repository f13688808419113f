// testing/temp_dir.h: a fresh directory per test under Bazel's TEST_TMPDIR
// (or /tmp), removed with its contents when the object goes away.
#ifndef PEERKV_TESTING_TEMP_DIR_H_
#define PEERKV_TESTING_TEMP_DIR_H_

#include <string>

namespace peerkv::testing {

class TempDir {
 public:
  // Creates a new, empty directory whose name starts with `tag`.
  explicit TempDir(const std::string& tag = "peerkv");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path() + "/" + name.
  std::string Sub(const std::string& name) const;

 private:
  std::string path_;
};

}  // namespace peerkv::testing

#endif  // PEERKV_TESTING_TEMP_DIR_H_
