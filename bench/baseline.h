// bench/baseline.h: what both benchmark programs share: scratch directories
// on a real disk, and the raw-LMDB baseline their ratios are measured
// against (plain puts of the same keys and values in durable transactions
// of the same size, no peerkv code in the way).
#ifndef PEERKV_BENCH_BASELINE_H_
#define PEERKV_BENCH_BASELINE_H_

#include <lmdb.h>

#include <cstddef>
#include <string>
#include <vector>

#include "store/store.h"

namespace peerkv::bench {

// A fresh directory under `base`, removed with its contents when the
// object goes away.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& base);
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// An LMDB environment in `dir` (default flags: durable commits) with one
// unnamed database, closed when the object goes away.
class RawLmdb {
 public:
  RawLmdb(const std::string& dir, size_t map_bytes);
  ~RawLmdb();
  RawLmdb(const RawLmdb&) = delete;
  RawLmdb& operator=(const RawLmdb&) = delete;

  // Puts each record's key and value, `batch` records per transaction.
  void Put(const std::vector<Record>& records, size_t batch);

 private:
  MDB_env* env_ = nullptr;
  MDB_dbi dbi_ = 0;
};

}  // namespace peerkv::bench

#endif  // PEERKV_BENCH_BASELINE_H_
