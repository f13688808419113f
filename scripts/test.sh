#!/usr/bin/env bash
# scripts/test.sh: runs every test with Bazel twice, plainly and under
# AddressSanitizer (--config=asan, which has caught use-after-free and
# double-free bugs the plain run did not), and ends with the plain line
# "N passed, N failed" counted from Bazel's per-target summaries of both
# runs. Exits non-zero if any test failed or if no test ran at all.
set -uo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT

status=0
for config in "" "--config=asan"; do
  echo "=== bazel test ${config:-(plain)} //..." | tee -a "$log"
  bazel test ${config} //... "$@" 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done

# Summary lines look like "//store:store_test   PASSED in 0.5s" or
# "//x:y   (cached) PASSED in 0.5s" or "//x:y   FAILED in 3 out of 3 in 9s".
passed=$(grep -E '^//[^ ]+ +(\(cached\) )?PASSED' "$log" | wc -l)
failed=$(grep -E '^//[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD|INCOMPLETE|FLAKY)' "$log" | wc -l)
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  # A build failed before any test could report.
  failed=1
fi
echo "${passed} passed, ${failed} failed"
if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$passed" -eq 0 ]; then
  exit 1
fi
