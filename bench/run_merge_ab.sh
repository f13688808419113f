#!/usr/bin/env bash
# bench/run_merge_ab.sh: the merge benchmark of two builds in alternate
# runs, for a cost measured as a ratio of ratios on a shared machine. Each
# run is `merge_bench --benchmark_filter='RawLmdbPut|MergeFresh'
# --benchmark_min_time=0.5 --benchmark_repetitions=3
# --benchmark_enable_random_interleaving=true` and prints its medians and
# MergeFresh / RawLmdbPut; the base build comes first in each pair.
# Usage: bench/run_merge_ab.sh BASE_BINARY NEW_BINARY [PAIRS [BENCHMARK [NEW_BENCHMARK]]]
# (BENCHMARK: another merge benchmark in MergeFresh's place, e.g.
# MergeOverwrite; NEW_BENCHMARK: its name in the new build when it differs,
# e.g. 'MergeOverwrite/detect:1'; a name matches with or without the
# '/iterations:3/real_time' suffix Google Benchmark appends.)
# (build each with `bazel build -c opt //bench:merge_bench` in its own
# worktree and copy bazel-bin/bench/merge_bench out first).
set -euo pipefail
base=$1
new=$2
pairs=${3:-5}
base_name=${4:-MergeFresh}
new_name=${5:-$base_name}
median() {
  awk -v name="$1" '$1 ~ name {
    for (i = 1; i <= NF; i++) if ($i ~ /^items_per_second=/) {
      v = $i; sub(/items_per_second=/, "", v); m = 1
      if (v ~ /k\/s$/) m = 1e3; else if (v ~ /M\/s$/) m = 1e6
      sub(/[kM]?\/s$/, "", v); print v * m } }'
}
for i in $(seq 1 "$pairs"); do
  for which in base new; do
    bin=$base
    name=$base_name
    [ "$which" = new ] && bin=$new && name=$new_name
    out=$("$bin" --benchmark_filter="RawLmdbPut|BM_${name}(/|\$)" --benchmark_min_time=0.5 \
      --benchmark_repetitions=3 --benchmark_enable_random_interleaving=true 2>/dev/null)
    raw=$(echo "$out" | median "^BM_RawLmdbPut(/.*)?_median\$")
    merge=$(echo "$out" | median "^BM_${name}(/.*)?_median\$")
    awk -v w="$which" -v i="$i" -v r="$raw" -v m="$merge" -v l="$(cut -d' ' -f1 /proc/loadavg)" \
      -v n="$name" 'BEGIN { printf "%s run %d: RawLmdbPut %.0f/s %s %.0f/s ratio %.3f (load %s)\n", w, i, r, n, m, m / r, l }'
  done
done
