// rpc/call_metrics.cc: the Kv call metrics, with the per-method children
// looked up once so a call costs two atomic adds and a clock read.
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
  std::string name;
  capnp::StructSchema results;
  metrics::Histogram* seconds = nullptr;
  metrics::Counter* ok = nullptr;
};

const std::vector<MethodMetrics>& Methods() {
  static const auto* methods = [] {
    auto* out = new std::vector<MethodMetrics>();
    for (capnp::InterfaceSchema::Method method : capnp::Schema::from<wire::Kv>().getMethods()) {
      MethodMetrics m;
      m.name = method.getProto().getName().cStr();
      m.results = method.getResultType();
      m.seconds = &metrics::Global().request_seconds.Get({"rpc", m.name});
      m.ok = &metrics::Global().requests.Get({"rpc", m.name, "OK"});
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
  m->seconds->Observe(absl::ToDoubleSeconds(absl::Now() - start));
  absl::StatusCode code = absl::StatusCode::kOk;
  if (!results.isNull()) {
    capnp::DynamicStruct::Builder answer = results.getAs<capnp::DynamicStruct>(m->results);
    if (answer.has("error")) {
      code = static_cast<absl::StatusCode>(
          answer.get("error").as<wire::Error>().getCode());
    }
  }
  if (code == absl::StatusCode::kOk) {
    m->ok->Add();
  } else {
    metrics::Global().requests.Get({"rpc", m->name, absl::StatusCodeToString(code)}).Add();
  }
}

void CountKvCallException(uint16_t method, absl::Time start) {
  const MethodMetrics* m = Find(method);
  if (m == nullptr) return;
  m->seconds->Observe(absl::ToDoubleSeconds(absl::Now() - start));
  metrics::Global().requests.Get({"rpc", m->name, "EXCEPTION"}).Add();
}

}  // namespace peerkv::rpc
