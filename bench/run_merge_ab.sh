#!/usr/bin/env bash
# bench/run_merge_ab.sh: the merge benchmark of two builds in alternate
# runs, for a cost measured as a ratio of ratios on a shared machine. Each
# run is `merge_bench --benchmark_filter='RawLmdbPut|MergeFresh'
# --benchmark_min_time=0.5 --benchmark_repetitions=3
# --benchmark_enable_random_interleaving=true` and prints its medians and
# MergeFresh / RawLmdbPut; the base build comes first in each pair.
# Usage: bench/run_merge_ab.sh BASE_BINARY NEW_BINARY [PAIRS]
# (build each with `bazel build -c opt //bench:merge_bench` in its own
# worktree and copy bazel-bin/bench/merge_bench out first).
set -euo pipefail
base=$1
new=$2
pairs=${3:-5}
median() {
  awk -v name="$1" '$1 ~ name && /_median/ {
    for (i = 1; i <= NF; i++) if ($i ~ /^items_per_second=/) {
      v = $i; sub(/items_per_second=/, "", v); m = 1
      if (v ~ /k\/s$/) m = 1e3; else if (v ~ /M\/s$/) m = 1e6
      sub(/[kM]?\/s$/, "", v); print v * m } }'
}
for i in $(seq 1 "$pairs"); do
  for which in base new; do
    bin=$base
    [ "$which" = new ] && bin=$new
    out=$("$bin" --benchmark_filter='RawLmdbPut|MergeFresh' --benchmark_min_time=0.5 \
      --benchmark_repetitions=3 --benchmark_enable_random_interleaving=true 2>/dev/null)
    raw=$(echo "$out" | median BM_RawLmdbPut)
    merge=$(echo "$out" | median BM_MergeFresh)
    awk -v w="$which" -v i="$i" -v r="$raw" -v m="$merge" -v l="$(cut -d' ' -f1 /proc/loadavg)" \
      'BEGIN { printf "%s run %d: RawLmdbPut %.0f/s MergeFresh %.0f/s ratio %.3f (load %s)\n", w, i, r, m, m / r, l }'
  done
done
