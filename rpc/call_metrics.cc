// rpc/call_metrics.cc: the Kv call metrics, with the per-method children
// looked up once (metrics::OpMetrics) so a call costs a clock read, an
// Observe and an Add.
#include "rpc/call_metrics.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "capnp/dynamic.h"
#include "capnp/schema.h"
#include "common/metrics.h"
#include "rpc/peerkv.capnp.h"

namespace peerkv::rpc {
namespace {

struct MethodMetrics {
  capnp::StructSchema results;
  std::unique_ptr<metrics::OpMetrics> counts;
};

const std::vector<MethodMetrics>& Methods() {
  static const auto* methods = [] {
    auto* out = new std::vector<MethodMetrics>();
    for (capnp::InterfaceSchema::Method method : capnp::Schema::from<wire::Kv>().getMethods()) {
      MethodMetrics m;
      m.results = method.getResultType();
      m.counts = std::make_unique<metrics::OpMetrics>("rpc", method.getProto().getName().cStr());
      out->push_back(std::move(m));
    }
    return out;
  }();
  return *methods;
}

const MethodMetrics* Find(uint16_t method) {
  const std::vector<MethodMetrics>& methods = Methods();
  return method < methods.size() ? &methods[method] : nullptr;
}

}  // namespace

void CountKvCall(uint16_t method, capnp::AnyPointer::Builder results, absl::Time start) {
  const MethodMetrics* m = Find(method);
  if (m == nullptr) return;
  absl::StatusCode code = absl::StatusCode::kOk;
  if (!results.isNull()) {
    capnp::DynamicStruct::Builder answer = results.getAs<capnp::DynamicStruct>(m->results);
    if (answer.has("error")) {
      code = static_cast<absl::StatusCode>(
          answer.get("error").as<wire::Error>().getCode());
    }
  }
  m->counts->Count(absl::ToDoubleSeconds(absl::Now() - start),
                   code == absl::StatusCode::kOk ? "OK" : absl::StatusCodeToString(code));
}

void CountKvCallException(uint16_t method, absl::Time start) {
  const MethodMetrics* m = Find(method);
  if (m == nullptr) return;
  m->counts->Count(absl::ToDoubleSeconds(absl::Now() - start), "EXCEPTION");
}

}  // namespace peerkv::rpc
