// bench/access_check_bench.cc: what one client-API access check costs
// (bench/README.md, "Access checks"), beside the store work of the request
// it guards, in one run. A store of one user with a group `readers` (one
// friend in it) and five policies (shared1..5 readable by it), as
// bench/run_access_bench.sh sets up, and auth::StoreAccess attached as the
// server attaches it:
//   BM_CheckRead/BM_CheckWrite  auth::CheckRead/CheckWrite of the local
//                               user (a Unix-socket client: what `peerkv
//                               bench` is) on 'bench', which has no policy;
//   BM_CheckReadFriend          a friend's read of shared1 (through the group);
//   BM_StoreGet                 Store::Get of one 3-byte record of 'bench' (the
//                               smallest part of a GET the check guards).
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "auth/access_check.h"
#include "auth/identity.h"
#include "auth/policy.h"
#include "bench/baseline.h"
#include "benchmark/benchmark.h"
#include "common/macros.h"
#include "store/store.h"

namespace peerkv {
namespace {

struct Fixture {
  bench::ScratchDir dir;
  std::unique_ptr<auth::Identity> identity;
  std::unique_ptr<auth::SigningKey> friend_key = auth::SigningKey::Generate();
  std::shared_ptr<auth::StoreAccess> access;
  std::unique_ptr<Store> store;

  Fixture() {
    absl::StatusOr<std::unique_ptr<auth::Identity>> id =
        auth::Identity::CreateUser(dir.path() + "/id", "bench");
    PEERKV_CHECK(id.ok());
    identity = std::move(*id);
    access = std::make_shared<auth::StoreAccess>(identity->user());
    StoreOptions options;
    options.dir = dir.path() + "/store";
    options.sync = false;
    options.reserved_check = auth::ReservedCheckWithPolicies(identity->user(), access);
    absl::StatusOr<std::unique_ptr<Store>> opened = Store::Open(std::move(options));
    PEERKV_CHECK(opened.ok());
    store = std::move(*opened);
    access->Attach(store.get());
    PEERKV_CHECK(auth::CreateGroup(*identity, *store, "readers", 1).ok());
    PEERKV_CHECK(auth::AddToGroup(*identity, *store, "readers",
                                  {auth::Member{friend_key->public_key(), ""}}, 2)
                     .ok());
    for (int i = 1; i <= 5; ++i) {
      PEERKV_CHECK(auth::SetPolicy(*identity, *store, absl::StrCat("shared", i),
                                   {auth::Who{auth::Who::Kind::kGroup, {}, "readers"}}, {}, 3)
                       .ok());
    }
    PEERKV_CHECK(store->Put("bench", "key:1", "abc").ok());
  }
  ~Fixture() { access->Detach(); }
};

Fixture& F() {
  static Fixture* f = new Fixture;
  return *f;
}

void BM_CheckRead(benchmark::State& state) {
  const auth::Principal who = auth::LocalPrincipal(F().identity.get());
  for (auto _ : state) benchmark::DoNotOptimize(auth::CheckRead(F().access.get(), who, "bench"));
}

void BM_CheckWrite(benchmark::State& state) {
  const auth::Principal who = auth::LocalPrincipal(F().identity.get());
  for (auto _ : state) benchmark::DoNotOptimize(auth::CheckWrite(F().access.get(), who, "bench"));
}

void BM_CheckReadFriend(benchmark::State& state) {
  const auth::Principal who{F().friend_key->public_key(), false};
  for (auto _ : state) benchmark::DoNotOptimize(auth::CheckRead(F().access.get(), who, "shared1"));
}

void BM_StoreGet(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(F().store->Get("bench", "key:1"));
}

BENCHMARK(BM_CheckRead);
BENCHMARK(BM_CheckWrite);
BENCHMARK(BM_CheckReadFriend);
BENCHMARK(BM_StoreGet);

}  // namespace
}  // namespace peerkv

BENCHMARK_MAIN();
