#!/usr/bin/env bash
# bench/resp_metrics_ab.sh: the cost of counting RESP commands in /metrics:
# redis-benchmark GET (-c 50 -n N -d 100 -r 100000 -P 16) against two peerkv
# binaries, A (without the RESP metrics) and B (with them), in alternating
# rounds in one run, each server on its own store under /var/tmp, stopped
# by its PID; the order alternates by round. Prints each round's requests/s and the median ratio B/A.
# Usage: bench/resp_metrics_ab.sh PEERKV_A PEERKV_B [ROUNDS] [N]
set -euo pipefail
a=$1 b=$2 rounds=${3:-5} n=${4:-200000}
work=$(mktemp -d /var/tmp/peerkv-resp-ab.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
start() {  # NAME BINARY -> sets $addr to its RESP address
  "$2" serve --data "$work/$1" --listen 127.0.0.1:0 \
    --resp-listen 127.0.0.1:0 --resp-insecure-loopback >/dev/null 2>"$work/$1.log" &
  pids+=($!)
  for _ in $(seq 1 300); do
    grep -q "RESP clients" "$work/$1.log" && break
    sleep 0.1
  done
  addr=$(sed -n 's/.*RESP clients: \([0-9.:]*\) .*/\1/p' "$work/$1.log")
}
start a "$a"; ra=$addr
start b "$b"; rb=$addr
for addr in "$ra" "$rb"; do
  redis-benchmark -h 127.0.0.1 -p "${addr##*:}" -t set -c 50 -n 100000 -d 100 -r 100000 -P 16 -q >/dev/null
done
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  host: $(nproc) cpu  load: $(cut -d' ' -f1-3 /proc/loadavg)"
get() {  # ADDR -> requests/s
  redis-benchmark -h 127.0.0.1 -p "${1##*:}" -t get -c 50 -n "$n" -d 100 -r 100000 -P 16 -q 2>/dev/null |
    grep -o '[0-9.]* requests per second' | cut -d' ' -f1
}
ratios=()
for r in $(seq 1 "$rounds"); do
  # The order alternates, so neither side always runs first.
  if (( r % 2 )); then
    ga=$(get "$ra"); gb=$(get "$rb")
  else
    gb=$(get "$rb"); ga=$(get "$ra")
  fi
  ratio=$(python3 -c "print('%.3f' % ($gb / $ga))")
  ratios+=("$ratio")
  echo "round $r: A $ga req/s, B $gb req/s, B/A $ratio"
done
python3 -c "import statistics,sys; print('median B/A = %.3f' % statistics.median(map(float, sys.argv[1:])))" "${ratios[@]}"
