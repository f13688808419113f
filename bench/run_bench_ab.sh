#!/usr/bin/env bash
# bench/run_bench_ab.sh: `peerkv bench` of two peerkv binaries (A, the
# baseline, and B), each against its own servers, over plaintext TCP
# (--insecure-loopback), the Unix socket and TLS 1.3 (a client device of the
# server's user), in interleaved rounds so that a noisy machine weighs on
# both alike. The load is a user's: -c 50 (one request in flight each),
# 100-byte values, keys from 100,000, PUT then GET. Prints every run, then
# per binary and transport the median of the rounds, and the ratios
# (bench/README.md, "Client API over TLS, Unix and TCP"), and the CPU per
# request (median over rounds, µs, of the server's utime+stime from
# /proc/PID/stat over the run plus the client's from /usr/bin/time, for
# PUT and GET together): on a loaded machine the CPU a request costs is
# steadier than the requests per second.
# Usage: bench/run_bench_ab.sh A_PEERKV B_PEERKV [rounds] [requests]
# (build each with `bazel build -c opt //cli:peerkv` and copy the binary).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 A_PEERKV B_PEERKV [rounds] [requests]" >&2; exit 2; }
bins=("$(realpath "$1")" "$(realpath "$2")")
rounds=${3:-5}
requests=${4:-100000}
work=$(mktemp -d /var/tmp/peerkv-bench-ab.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

addr() {  # LOG: the address a server logged, waiting (bounded) for it
  for _ in $(seq 100); do
    a=$(sed -n 's/.*listening on \([^,]*\),.*/\1/p' "$1")
    [ -n "$a" ] && { echo "$a"; return; }
    sleep 0.1
  done
  echo "no server address in $1" >&2
  exit 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # PID: utime+stime
declare -A flags server_pid
for i in 0 1; do
  peerkv=${bins[$i]}
  d="$work/$i"
  "$peerkv" --data "$d/server" init --user bench >/dev/null
  user=$("$peerkv" --data "$d/server" id | awk '/^user/ {print $2}')
  client=$("$peerkv" --data "$d/client" init --join "$user" | awk '/^device/ {print $2}')
  "$peerkv" --data "$d/server" device add "$client" --name bench-client >/dev/null
  "$peerkv" serve --data "$d/server" --listen 127.0.0.1:0 >"$d/server.log" 2>&1 &
  pids+=($!)
  server_pid[$i,unix]=$!
  server_pid[$i,tls]=$!
  "$peerkv" serve --data "$d/plain" --listen 127.0.0.1:0 --insecure-loopback >"$d/plain.log" 2>&1 &
  pids+=($!)
  server_pid[$i,plain]=$!
  flags[$i,plain]="--server $(addr "$d/plain.log")"
  flags[$i,unix]="--server unix:$d/server/peerkv.sock"
  flags[$i,tls]="--identity $d/client --server $(addr "$d/server.log")"
done

echo "== peerkv bench -c 50 -n $requests -d 100 -r 100000 -t put,get, $rounds rounds" \
  "($(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
echo "A: ${bins[0]}"
echo "B: ${bins[1]}"
results="$work/results"
: >"$results"
for round in $(seq "$rounds"); do
  for mode in plain unix tls; do
    for i in 0 1; do
      label=$([ "$i" = 0 ] && echo A || echo B)
      # shellcheck disable=SC2086  # flags are words
      before=$(cpu_ticks "${server_pid[$i,$mode]}")
      # shellcheck disable=SC2086
      out=$(/usr/bin/time -f "client-cpu %U %S" -o "$work/time" \
        "${bins[$i]}" ${flags[$i,$mode]} bench -c 50 -n "$requests" -d 100 -r 100000 -t put,get)
      server_s=$(awk -v a="$before" -v b="$(cpu_ticks "${server_pid[$i,$mode]}")" \
        -v hz="$(getconf CLK_TCK)" 'BEGIN {print (b - a) / hz}')
      echo "$out" | sed "s/^/round $round $label $(printf '%-5s' "$mode") /"
      echo "$out" | awk -v b="$label" -v m="$mode" '/requests per second/ {sub(":", "", $1); print b, m, $1, $2}' >>"$results"
      awk -v b="$label" -v m="$mode" -v s="$server_s" -v n="$((2 * requests))" \
        '$1 == "client-cpu" {printf "%s %s CPU %.1f %.1f\n", b, m, ($2 + $3) * 1e6 / n, s * 1e6 / n}' \
        "$work/time" | tee -a "$results" | sed "s/^/round $round /"
    done
  done
done

echo "== medians (requests/s)"
median() {  # BIN MODE OP
  awk -v b="$1" -v m="$2" -v o="$3" '$1 == b && $2 == m && $3 == o {print $4}' "$results" |
    sort -g | awk '{v[NR] = $1} END {print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
declare -A med
for b in A B; do
  for mode in plain unix tls; do
    for op in PUT GET; do
      med[$b,$mode,$op]=$(median "$b" "$mode" "$op")
    done
    printf '%s %-5s PUT %9.0f  GET %9.0f\n' "$b" "$mode" "${med[$b,$mode,PUT]}" "${med[$b,$mode,GET]}"
  done
done
echo "== CPU per request (µs, median of rounds): client + server = total"
for b in A B; do
  for mode in plain unix tls; do
    c=$(awk -v b="$b" -v m="$mode" '$1 == b && $2 == m && $3 == "CPU" {print $4}' "$results" |
      sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}')
    s=$(awk -v b="$b" -v m="$mode" '$1 == b && $2 == m && $3 == "CPU" {print $5}' "$results" |
      sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}')
    printf '%s %-5s %6.1f + %6.1f = %6.1f\n' "$b" "$mode" "$c" "$s" "$(echo "$c + $s" | bc -l)"
  done
done
echo "== ratios of medians"
for op in PUT GET; do
  awk -v op="$op" -v ap="${med[A,plain,$op]}" -v au="${med[A,unix,$op]}" -v at="${med[A,tls,$op]}" \
      -v bp="${med[B,plain,$op]}" -v bu="${med[B,unix,$op]}" -v bt="${med[B,tls,$op]}" 'BEGIN {
    printf "%s: A unix/plain %.2f tls/plain %.2f | B unix/plain %.2f tls/plain %.2f | B/A plain %.2f unix %.2f tls %.2f | B unix / A plain %.2f, B tls / A plain %.2f\n",
      op, au / ap, at / ap, bu / bp, bt / bp, bp / ap, bu / au, bt / at, bu / ap, bt / ap
  }'
done
