#!/usr/bin/env bash
# walship against Redis with the same durability, in one run on one machine.
#
#   benches/scripts/vs-redis.sh [rounds] [extra redis-benchmark args]
#
# Starts walship (fsync=always) and Redis 7 (appendonly yes, appendfsync
# always) on free loopback ports with fresh temporary data directories, then
# runs `redis-benchmark -c 32 -n 200000 -d 100 -r 100000 -t set,get` against
# each, alternating, for `rounds` rounds (default 3), and prints the median
# requests per second of each and their ratio. The machine is shared and
# noisy: compare the ratio, not the absolute figures.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source benches/scripts/lib.sh

rounds=${1:-3}
shift || true
bench_args=(-c 32 -n 200000 -d 100 -r 100000 -t set,get "$@")

for tool in redis-server redis-benchmark redis-cli; do
    command -v "$tool" >/dev/null || { echo "vs-redis: $tool not found (apt-get install redis-server redis-tools)" >&2; exit 1; }
done
cargo build --release -p walship-server >&2
walship=target/release/walship

init_tmp_and_cleanup

wport=$(free_port)
"$walship" server --data-dir "$tmp/walship" --port "$wport" --fsync always 2>"$tmp/walship.log" &
pids+=($!)
rport=$(free_port)
mkdir -p "$tmp/redis"
redis-server --port "$rport" --dir "$tmp/redis" --save "" --appendonly yes --appendfsync always \
    --daemonize no --logfile "$tmp/redis.log" &
pids+=($!)
wait_port "$wport"
wait_port "$rport"

declare -A results
for round in $(seq 1 "$rounds"); do
    for target in walship redis; do
        port=$wport; [[ $target == redis ]] && port=$rport
        out=$(redis-benchmark -p "$port" "${bench_args[@]}" -q 2>/dev/null | tr '\r' '\n' | grep -E '^(SET|GET): [0-9]')
        while read -r line; do
            test=${line%%:*}
            rps=$(sed -E 's/^[A-Z]+: ([0-9.]+) requests per second.*/\1/' <<<"$line")
            p50=$(sed -nE 's/.*p50=([0-9.]+) msec.*/\1/p' <<<"$line")
            results[$target.$test]+="$rps "
            results[$target.$test.p50]+="${p50:-nan} "
            echo "round $round $target $test: $rps req/s, p50 ${p50:-?} ms" >&2
        done <<<"$out"
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo
echo "redis-benchmark ${bench_args[*]}, median of $rounds rounds"
printf '| test | walship req/s | Redis (appendfsync always) req/s | walship / Redis | walship p50 ms | Redis p50 ms |\n|---|---:|---:|---:|---:|---:|\n'
for test in SET GET; do
    w=$(median <<<"${results[walship.$test]}")
    r=$(median <<<"${results[redis.$test]}")
    wp=$(median <<<"${results[walship.$test.p50]}")
    rp=$(median <<<"${results[redis.$test.p50]}")
    ratio=$(awk -v a="$w" -v b="$r" 'BEGIN {printf "%.2f", a/b}')
    printf '| %s | %s | %s | %sx | %s | %s |\n' "$test" "$w" "$r" "$ratio" "$wp" "$rp"
done
