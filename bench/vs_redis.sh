#!/usr/bin/env bash
# bench/vs_redis.sh: peerkv against Debian's redis-server, in one run, on
# loopback, with the same load: redis-benchmark drives two Redis servers
# (appendonly yes with appendfsync always, and with everysec) and peerkv's
# RESP port; `peerkv bench` drives peerkv's Cap'n Proto API the two ways a
# user reaches it: over the server's Unix socket and over TLS 1.3 as a
# device of the server's user (plaintext TCP is refused since TLS landed).
# peerkv acknowledges a SET only once its transaction is fsync'd, like Redis with
# appendfsync always (everysec acknowledges before the data is on disk).
# Every server lives in a temporary directory under /var/tmp (on disk) and
# is stopped by its PID however the script ends. Prints each tool's lines,
# then the ratios with their targets (issue 12).
#
# Usage: bench/vs_redis.sh [-n REQUESTS] [-d VALUE_BYTES] [-c CLIENTS] [-t RESP_THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."

requests=200000
value_bytes=100
clients=50
resp_threads=1
while getopts "n:d:c:t:" opt; do
  case $opt in
    n) requests=$OPTARG ;;
    d) value_bytes=$OPTARG ;;
    c) clients=$OPTARG ;;
    t) resp_threads=$OPTARG ;;
    *) echo "usage: $0 [-n REQUESTS] [-d VALUE_BYTES] [-c CLIENTS] [-t RESP_THREADS]" >&2; exit 2 ;;
  esac
done

bash scripts/setup.sh redis-server redis-tools
bazel build -c opt //cli:peerkv
peerkv=./bazel-bin/cli/peerkv

work=$(mktemp -d /var/tmp/peerkv-vs-redis.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT

# A free loopback port: the first of a random run that nothing answers on.
free_port() {
  for _ in $(seq 1 50); do
    local candidate=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
      echo "$candidate"
      return
    fi
  done
  echo "no free port found" >&2
  exit 1
}

start_redis() {  # NAME FSYNC PORT
  mkdir -p "$work/$1"
  redis-server --port "$3" --bind 127.0.0.1 --save "" --appendonly yes \
    --appendfsync "$2" --dir "$work/$1" --daemonize no >"$work/$1.log" 2>&1 &
  pids+=($!)
}
always_port=$(free_port)
start_redis always always "$always_port"
everysec_port=$(free_port)
start_redis everysec everysec "$everysec_port"
# peerkv with a user, and a client device of that user for TLS.
"$peerkv" --data "$work/peerkv" init --user bench >/dev/null
user=$("$peerkv" --data "$work/peerkv" id | awk '/^user/ {print $2}')
client=$("$peerkv" --data "$work/client" init --join "$user" | awk '/^device/ {print $2}')
"$peerkv" --data "$work/peerkv" device add "$client" --name bench-client >/dev/null
"$peerkv" serve --data "$work/peerkv" --listen 127.0.0.1:0 --resp-listen 127.0.0.1:0 \
  --resp-insecure-loopback --resp-threads "$resp_threads" 2>"$work/peerkv.log" &
pids+=($!)

# Wait (bounded) for all three to answer.
for _ in $(seq 1 100); do
  redis-cli -p "$always_port" ping >/dev/null 2>&1 &&
    redis-cli -p "$everysec_port" ping >/dev/null 2>&1 &&
    grep -q "listening on" "$work/peerkv.log" && break
  sleep 0.1
done
peerkv_addr=$(sed -n 's/.*listening on \([^,]*\),.*/\1/p' "$work/peerkv.log")
resp_port=$(sed -n 's/.*RESP clients: [^ ]*:\([0-9]*\) .*/\1/p' "$work/peerkv.log")
[ -n "$peerkv_addr" ] && [ -n "$resp_port" ] ||
  { echo "peerkv did not start:" >&2; cat "$work/peerkv.log" >&2; exit 1; }

echo "date: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)," \
  "redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'), peerkv -c opt," \
  "RESP loops $resp_threads"
echo "same load for all: -c $clients -n $requests -d $value_bytes -r 100000 (SET then GET)"

declare -A rate
bench_resp() {  # LABEL PORT PIPELINE
  local out
  out=$(redis-benchmark -h 127.0.0.1 -p "$2" -c "$clients" -n "$requests" -P "$3" \
    -d "$value_bytes" -r 100000 -t set,get -q 2>/dev/null | tr '\r' '\n' |
    grep "requests per second" | sed 's/^ *//')
  echo "$out" | sed "s/^/$(printf '%-15s' "$1:") /"
  rate[$1_set_$3]=$(echo "$out" | awk '/^SET:/ {print $2}')
  rate[$1_get_$3]=$(echo "$out" | awk '/^GET:/ {print $2}')
}
for pipeline in 1 16; do
  echo
  echo "-P $pipeline"
  bench_resp redis-always "$always_port" "$pipeline"
  bench_resp redis-everysec "$everysec_port" "$pipeline"
  bench_resp peerkv-resp "$resp_port" "$pipeline"
  bench_capnp() {  # LABEL KEY peerkv-flags...
    local label=$1 key=$2 out
    shift 2
    out=$("$peerkv" "$@" bench -c "$clients" -n "$requests" -P "$pipeline" \
      -d "$value_bytes" -r 100000 -t put,get)
    echo "$out" | sed "s/^/$(printf '%-15s' "$label:") /"
    rate[${key}_get_$pipeline]=$(echo "$out" | awk '/^GET:/ {print $2}')
  }
  bench_capnp capnp-unix capnp_unix --server "unix:$work/peerkv/peerkv.sock"
  bench_capnp capnp-tls capnp_tls --identity "$work/client" --server "$peerkv_addr"
done

echo
echo "ratios (peerkv / redis; Redis GET is the faster of the two Redis servers' GETs):"
for pipeline in 1 16; do
  awk -v p="$pipeline" \
      -v rg="${rate[peerkv-resp_get_$pipeline]}" -v sg1="${rate[redis-everysec_get_$pipeline]}" \
      -v sg2="${rate[redis-always_get_$pipeline]}" \
      -v rs="${rate[peerkv-resp_set_$pipeline]}" -v as="${rate[redis-always_set_$pipeline]}" \
      -v es="${rate[redis-everysec_set_$pipeline]}" -v cu="${rate[capnp_unix_get_$pipeline]}" \
      -v ct="${rate[capnp_tls_get_$pipeline]}" \
      'BEGIN {
         sg = sg1 > sg2 ? sg1 : sg2
         printf "  -P %-2s RESP GET %.2fx (>= 1.0)  RESP SET / always %.2fx (>= 1.0)  RESP SET / everysec %.2fx (>= 0.5)\n",
                p, rg / sg, rs / as, rs / es
         printf "        capnp GET over the Unix socket %.2fx, over TLS %.2fx (>= 0.8)\n", cu / sg, ct / sg
       }'
done
