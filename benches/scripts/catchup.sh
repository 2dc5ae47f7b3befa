#!/usr/bin/env bash
# How fast a standby catches up from the primary's WAL, alone on the machine
# (scripts/compare measures the same thing among its other sections):
#
#   benches/scripts/catchup.sh [rounds] [MiB]
#
# Each round: a primary and a standby (both `--fsync always`, the primary
# never checkpointing, so its whole WAL stays) on fresh data directories;
# once the standby streams it is stopped, the primary takes MiB (default
# 1024) of 64 KiB SETs, and the standby starts again. Prints the time from
# that start until the standby's `walship_wal_flushed_lsn` reaches the
# primary's WAL end, the MiB/s, and the CPU seconds each process spent
# meanwhile (user+system, from /proc/PID/stat), then the median MiB/s.
# WALSHIP_BIN picks another binary (default: the one this script builds).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source benches/scripts/lib.sh

rounds=${1:-3}
mib=${2:-1024}
for tool in redis-benchmark redis-cli curl; do
    command -v "$tool" >/dev/null || { echo "catchup: $tool not found" >&2; exit 1; }
done
if [[ -z "${WALSHIP_BIN:-}" ]]; then
    cargo build --release -p walship-server >&2
fi
walship=${WALSHIP_BIN:-target/release/walship}

init_tmp_and_cleanup

# CPU seconds (user + system) of process $1 so far.
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }

rates=()
for round in $(seq 1 "$rounds"); do
    dir=$tmp/$round
    mkdir -p "$dir"
    pport=$(free_port) sport=$(free_port) sadmin=$(free_port)
    "$walship" server --data-dir "$dir/p" --port "$pport" --fsync always \
        --checkpoint-every 1t 2>"$dir/p.log" &
    primary=$!
    pids=("$primary")
    wait_port "$pport"
    standby_args=(server --data-dir "$dir/s" --port "$sport" --admin-port "$sadmin"
        --fsync always --replicate-from "127.0.0.1:$pport" --name s1)
    "$walship" "${standby_args[@]}" 2>>"$dir/s.log" &
    standby=$!
    pids+=("$standby")
    for _ in $(seq 200); do
        redis-cli -p "$pport" info replication | grep -q 'state=online' && break
        sleep 0.05
    done
    kill "$standby"
    wait "$standby" || true
    pids=("$primary")
    redis-benchmark -p "$pport" -t set -d 65536 -n $((mib * 16)) -r 1024 -c 8 -q >/dev/null 2>&1
    end=$(redis-cli -p "$pport" info replication | tr -d '\r' | awk -F: '$1 == "master_repl_offset" { print $2 }')
    sync
    pcpu0=$(cpu_secs "$primary")
    t0=$(date +%s.%N)
    "$walship" "${standby_args[@]}" 2>>"$dir/s.log" &
    standby=$!
    pids+=("$standby")
    while :; do
        # (curl fails until the standby's admin port is open)
        flushed=$(curl -s "localhost:$sadmin/metrics" | awk '$1 == "walship_wal_flushed_lsn" { print $2 }' || true)
        [[ -n "$flushed" && "$flushed" -ge "$end" ]] && break
        sleep 0.02
    done
    t1=$(date +%s.%N)
    secs=$(echo "$t1 - $t0" | bc -l)
    rate=$(echo "$end / 1048576 / $secs" | bc -l)
    rates+=("$rate")
    printf 'round %d\t%.0f MiB in %.2f s\t%.0f MiB/s\tCPU s: primary %.2f, standby %.2f\n' \
        "$round" "$(echo "$end / 1048576" | bc -l)" "$secs" "$rate" \
        "$(echo "$(cpu_secs "$primary") - $pcpu0" | bc -l)" "$(cpu_secs "$standby")"
    stop_pids
    pids=()
    rm -rf "$dir"
done
printf 'median over %d rounds (the lower middle one of an even count): %.0f MiB/s\n' "$rounds" \
    "$(printf '%s\n' "${rates[@]}" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')"
