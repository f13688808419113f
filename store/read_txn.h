// store/read_txn.h: Store::ReadTxn, the read-only transaction of one
// store call, shared by store.cc and store_rbsr.cc. Internal to store/.
#ifndef PEERKV_STORE_READ_TXN_H_
#define PEERKV_STORE_READ_TXN_H_

#include <lmdb.h>

#include "absl/synchronization/mutex.h"
#include "store/lmdb_util.h"
#include "store/store.h"

namespace peerkv {

// A read-only transaction for one store call: holds the resize lock shared,
// and takes a reset transaction from the store's pool (renewing it) instead
// of beginning a new one; gives it back reset.
class Store::ReadTxn {
 public:
  explicit ReadTxn(const Store& store)
      : store_(store), lock_(&store.resize_mu_) {}
  ~ReadTxn() {
    if (txn_ == nullptr) return;
    mdb_txn_reset(txn_);
    store_.read_pool_.Give(txn_);
  }
  ReadTxn(const ReadTxn&) = delete;
  ReadTxn& operator=(const ReadTxn&) = delete;

  absl::Status Begin() {
    txn_ = store_.read_pool_.Take();
    if (txn_ != nullptr) {
      const int rc = mdb_txn_renew(txn_);
      if (rc == MDB_SUCCESS) return absl::OkStatus();
      mdb_txn_abort(txn_);
      txn_ = nullptr;
      return lmdb::Error(rc, "mdb_txn_renew");
    }
    const int rc = mdb_txn_begin(store_.env_, nullptr, MDB_RDONLY, &txn_);
    if (rc != MDB_SUCCESS) txn_ = nullptr;
    return lmdb::Error(rc, "mdb_txn_begin (read)");
  }

  MDB_txn* get() const { return txn_; }

 private:
  const Store& store_;
  absl::ReaderMutexLock lock_;
  MDB_txn* txn_ = nullptr;
};

}  // namespace peerkv

#endif  // PEERKV_STORE_READ_TXN_H_
