// bench/baseline.h: what the benchmark programs share: scratch directories
// on a real disk, batches of records, and the raw-LMDB baseline their ratios are measured
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

// Where benchmarks put their stores: $PEERKV_BENCH_DIR, or /var/tmp (on
// disk, unlike /tmp on many machines) when it is unset or empty.
std::string BenchBase();

// A fresh directory under `base`, removed with its contents when the
// object goes away.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& base = BenchBase());
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

// `records` cut into consecutive batches of at most `batch` records.
std::vector<std::vector<Record>> SplitIntoBatches(const std::vector<Record>& records,
                                                  size_t batch);

}  // namespace peerkv::bench

#endif  // PEERKV_BENCH_BASELINE_H_
