// cli/identity.h: what `serve` needs of the identity commands: a data
// directory's identity made on first serve (as `init --user` would), the
// check of its reserved keyspaces for the store, and, on a device waiting
// to be added, completing the join when its record arrives.
#ifndef PEERKV_CLI_IDENTITY_H_
#define PEERKV_CLI_IDENTITY_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "auth/identity.h"
#include "rpc/peer_auth.h"
#include "store/store.h"

namespace peerkv::cli {

// The identity `serve` runs as.
struct ServeIdentity {
  std::unique_ptr<auth::Identity> identity;
  // Made by this call (logged so). Its own device record is written by the
  // first device or friend command, not by serve.
  bool created = false;
};

// Loads the identity of `data_dir`, or creates it for user `user_name`
// (the first device of a new user), and sets options->reserved_check.
absl::StatusOr<ServeIdentity> PrepareServeIdentity(const std::string& data_dir,
                                                   const std::string& user_name,
                                                   StoreOptions* options);

// After the store opened: logs who this device is (serve writes nothing to
// the store for it); on a device waiting to be added, tries to
// complete the join now and again whenever the device list changes.
// Destroy the result before the store.
class JoinWatcher {
 public:
  virtual ~JoinWatcher() = default;
  // Runs `joined` once the join completes (at once if it has), on the
  // watcher's thread: serve shows the new device certificate on its TLS
  // links from then on.
  virtual void OnJoined(std::function<void()> joined) = 0;
};
absl::StatusOr<std::unique_ptr<JoinWatcher>> StartServeIdentity(ServeIdentity& id, Store& store);
void StopJoinWatcher(std::unique_ptr<JoinWatcher>& watcher);

// On a device holding the user key (at start; one that joins while
// serving starts renewing at its next start): renews the device
// certificates due (auth::Identity::RenewDue) at start and every
// `interval` (an hour; tests shorten it), at `clock`'s time, logging each.
// Each pass also calls `show` (on its own thread) with what this device
// should show on its TLS links when that changed from `shown` (what it
// shows at start, ShownTlsIdentity): its listed certificate once renewed,
// here or by a renewal replicated from another device, or a certificate
// issued anew when its self-issued one is in the last third of its
// validity. Null without the user key. Destroy the result before the
// store.
class CertificateRenewer {
 public:
  virtual ~CertificateRenewer() = default;
};
std::unique_ptr<CertificateRenewer> StartCertificateRenewer(
    auth::Identity& identity, Store& store, const WallClock& clock, absl::Duration interval,
    std::string shown, std::function<void(const rpc::TlsIdentity&)> show);

// What this device shows on its TLS links: its certificate in the device
// list while that one has not expired at `now_ms` (the store's clock), so
// that new links carry a renewal; else, holding the user key, one issued
// now by it (a directory `serve` initialised is not listed yet, and a
// device whose listed one expired stays reachable: Authorize lets a valid
// certificate of the user outrank an expired listed one); else the key
// alone (a device waiting to be added).
absl::StatusOr<rpc::TlsIdentity> ShownTlsIdentity(const auth::Identity& identity, Store& store,
                                                  int64_t now_ms);

// What this device shows on TLS links (rpc/peer_auth.h): its device key,
// and a certificate issued now by the user key if it holds it.
absl::StatusOr<rpc::TlsIdentity> TlsIdentityOf(const auth::Identity& identity);

// For the CLI's TCP clients (--server HOST:PORT): the identity of the data
// directory `dir` (--identity DIR, or $PEERKV_IDENTITY) becomes the key of
// every rpc::Client of this process, and its user the one the server must
// belong to.
absl::Status InstallClientIdentity(const std::string& dir);

// A device name for this machine: its hostname if it is a valid name,
// else "device".
std::string DefaultDeviceName();

}  // namespace peerkv::cli

#endif  // PEERKV_CLI_IDENTITY_H_
