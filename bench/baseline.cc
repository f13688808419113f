// bench/baseline.cc: scratch directories, batches and the raw-LMDB baseline.
#include "bench/baseline.h"

#include <stdlib.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "common/macros.h"

namespace peerkv::bench {

std::string BenchBase() {
  const char* base = std::getenv("PEERKV_BENCH_DIR");
  return base != nullptr && *base != '\0' ? base : "/var/tmp";
}

std::vector<std::vector<Record>> SplitIntoBatches(const std::vector<Record>& records,
                                                  size_t batch) {
  std::vector<std::vector<Record>> batches;
  for (size_t i = 0; i < records.size(); i += batch) {
    batches.emplace_back(records.begin() + i,
                         records.begin() + std::min(records.size(), i + batch));
  }
  return batches;
}

ScratchDir::ScratchDir(const std::string& base) {
  std::string pattern = base + "/peerkv-bench.XXXXXX";
  PEERKV_CHECK(mkdtemp(pattern.data()) != nullptr);
  path_ = pattern;
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

RawLmdb::RawLmdb(const std::string& dir, size_t map_bytes) {
  PEERKV_CHECK(mdb_env_create(&env_) == 0);
  PEERKV_CHECK(mdb_env_set_mapsize(env_, map_bytes) == 0);
  PEERKV_CHECK(mdb_env_open(env_, dir.c_str(), MDB_NOTLS, 0600) == 0);
  MDB_txn* txn;
  PEERKV_CHECK(mdb_txn_begin(env_, nullptr, 0, &txn) == 0);
  PEERKV_CHECK(mdb_dbi_open(txn, nullptr, 0, &dbi_) == 0);
  PEERKV_CHECK(mdb_txn_commit(txn) == 0);
}

RawLmdb::~RawLmdb() { mdb_env_close(env_); }

void RawLmdb::Put(const std::vector<Record>& records, size_t batch) {
  for (size_t i = 0; i < records.size(); i += batch) {
    MDB_txn* txn;
    PEERKV_CHECK(mdb_txn_begin(env_, nullptr, 0, &txn) == 0);
    for (size_t j = i; j < std::min(records.size(), i + batch); ++j) {
      MDB_val k{records[j].key.size(), const_cast<char*>(records[j].key.data())};
      MDB_val v{records[j].value.size(), const_cast<char*>(records[j].value.data())};
      PEERKV_CHECK(mdb_put(txn, dbi_, &k, &v, 0) == 0);
    }
    PEERKV_CHECK(mdb_txn_commit(txn) == 0);
  }
}

}  // namespace peerkv::bench
