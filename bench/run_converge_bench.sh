#!/usr/bin/env bash
# bench/run_converge_bench.sh: builds //bench:converge_bench with -c opt,
# runs it (R = 3, 10, 30; the heal variant; 1,000,000-record loads and
# pulls with sequential and random doc ids, three runs each), and
# draws bench/out/converge.png with gnuplot: the fraction of replicas
# converged over time, one line per R, for each scenario and mode.
# Usage: bench/run_converge_bench.sh [converge_bench flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh gnuplot-nox
bazel build -c opt //bench:converge_bench
out=bench/out
mkdir -p "$out"
./bazel-bin/bench/converge_bench --out "$out" "$@" 2> "$out/converge.log"

# One data file per (scenario, mode, R) for gnuplot.
plot=""
for scenario in spread heal; do
  for mode in eager gossip; do
    for r in $(awk -F, -v s="$scenario" -v m="$mode" 'NR > 1 && $1 == s && $2 == m {print $3}' "$out/curve.csv" | sort -un); do
      f="$out/curve-$scenario-$mode-$r.dat"
      awk -F, -v s="$scenario" -v m="$mode" -v r="$r" 'NR > 1 && $1 == s && $2 == m && $3 == r {print $4, $5}' "$out/curve.csv" > "$f"
    done
  done
done

gnuplot <<GNUPLOT
set terminal pngcairo size 1200,900 font ",10"
set output "$out/converge.png"
set multiplot layout 2,2 title "peerkv: fraction of replicas converged over time ($(date -u +%Y-%m-%d), $(nproc) cores, loopback)"
set xlabel "ms since last write (spread) or heal"
set ylabel "fraction converged"
set yrange [0:1.05]
set key bottom right
do for [scenario in "spread heal"] {
  do for [mode in "eager gossip"] {
    set title scenario." / ".mode
    files = system("ls $out/curve-".scenario."-".mode."-*.dat 2>/dev/null | sort -t- -k4 -n")
    plot for [f in files] f using 1:2 with steps lw 2 title "R=".system("basename ".f." .dat | sed 's/.*-//'")
  }
}
unset multiplot
GNUPLOT
echo "wrote $out/converge.csv, $out/curve.csv, $out/pull.csv, $out/converge.png"
