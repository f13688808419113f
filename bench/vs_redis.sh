#!/usr/bin/env bash
# bench/vs_redis.sh: peerkv's server against Debian's redis-server, side by
# side on loopback, with the same clients, requests, pipeline and value size.
# Redis runs with appendonly yes / appendfsync everysec (it acknowledges
# before its data is on disk); peerkv acknowledges a PUT only once its
# transaction is fsync'd. Both servers live in a temporary directory under
# /var/tmp (on disk) and are stopped by PID however the script ends.
#
# Usage: bench/vs_redis.sh [-n REQUESTS] [-d VALUE_BYTES] [-c CLIENTS]
# Prints each tool's lines, then the ratios peerkv/redis for -P 1 and -P 16.
set -euo pipefail
cd "$(dirname "$0")/.."

requests=200000
value_bytes=100
clients=50
while getopts "n:d:c:" opt; do
  case $opt in
    n) requests=$OPTARG ;;
    d) value_bytes=$OPTARG ;;
    c) clients=$OPTARG ;;
    *) echo "usage: $0 [-n REQUESTS] [-d VALUE_BYTES] [-c CLIENTS]" >&2; exit 2 ;;
  esac
done

bash scripts/setup.sh redis-server redis-tools
bazel build -c opt //cli:peerkv
peerkv=./bazel-bin/cli/peerkv

work=$(mktemp -d /var/tmp/peerkv-vs-redis.XXXXXX)
redis_pid=""
peerkv_pid=""
cleanup() {
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
  [ -n "$peerkv_pid" ] && kill "$peerkv_pid" 2>/dev/null && wait "$peerkv_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# A free loopback port for Redis: the first of a random run that nothing
# answers on.
redis_port=""
for _ in $(seq 1 50); do
  candidate=$((20000 + RANDOM % 40000))
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
    redis_port=$candidate
    break
  fi
done
[ -n "$redis_port" ] || { echo "no free port found for redis" >&2; exit 1; }

mkdir -p "$work/redis"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly yes \
  --appendfsync everysec --dir "$work/redis" --daemonize no >"$work/redis.log" 2>&1 &
redis_pid=$!
"$peerkv" serve --data "$work/peerkv" --listen 127.0.0.1:0 2>"$work/peerkv.log" &
peerkv_pid=$!

# Wait (bounded) for both to answer.
for _ in $(seq 1 100); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && grep -q "listening on" "$work/peerkv.log" && break
  sleep 0.1
done
peerkv_addr=$(sed -n 's/.*listening on \([^,]*\),.*/\1/p' "$work/peerkv.log")
[ -n "$peerkv_addr" ] || { echo "peerkv did not start:" >&2; cat "$work/peerkv.log" >&2; exit 1; }

echo "date: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')"
echo "same load for both: -c $clients -n $requests -d $value_bytes, keys drawn from 100000"
declare -A rate
for pipeline in 1 16; do
  echo
  echo "-P $pipeline"
  redis_out=$(redis-benchmark -h 127.0.0.1 -p "$redis_port" -c "$clients" -n "$requests" \
    -P "$pipeline" -d "$value_bytes" -r 100000 -t set,get -q | tr '\r' '\n' |
    grep "requests per second" | sed 's/^ *//')
  echo "redis:  ${redis_out//$'\n'/$'\n'redis:  }"
  peerkv_out=$("$peerkv" --server "$peerkv_addr" bench -c "$clients" -n "$requests" \
    -P "$pipeline" -d "$value_bytes" -r 100000 -t put,get)
  echo "peerkv: ${peerkv_out//$'\n'/$'\n'peerkv: }"
  rate[redis_set_$pipeline]=$(echo "$redis_out" | awk '/^SET:/ {print $2}')
  rate[redis_get_$pipeline]=$(echo "$redis_out" | awk '/^GET:/ {print $2}')
  rate[peerkv_put_$pipeline]=$(echo "$peerkv_out" | awk '/^PUT:/ {print $2}')
  rate[peerkv_get_$pipeline]=$(echo "$peerkv_out" | awk '/^GET:/ {print $2}')
done

echo
echo "ratios (peerkv / redis):"
for pipeline in 1 16; do
  awk -v p="$pipeline" -v pg="${rate[peerkv_get_$pipeline]}" -v rg="${rate[redis_get_$pipeline]}" \
      -v pp="${rate[peerkv_put_$pipeline]}" -v rs="${rate[redis_set_$pipeline]}" \
      'BEGIN { printf "  -P %-2s  GET %.2fx (target >= 1.0)   durable PUT / SET %.2fx (target >= 0.5)\n", p, pg / rg, pp / rs }'
done
