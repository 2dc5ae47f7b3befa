#!/usr/bin/env bash
# Would a second durable write in flight help? Asks the disk and CPU for two
# group-commit loops at once in the simplest way: two independent walship
# primaries with half the clients each, against one primary with all of
# them, in alternating (ABBA) rounds, on fresh data directories.
#
#   benches/scripts/two-loops.sh [rounds] [clients] [requests]
#
# Defaults: 4 rounds, 32 clients, 200000 SETs in all per run;
# `redis-benchmark -t set -d 100 -r 100000`. Extra server flags for every
# node in WALSHIP_ARGS (e.g. WALSHIP_ARGS="--commit-delay-us 0"). Prints the
# total SET/s of each run, then the median of each setup.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source benches/scripts/lib.sh

rounds=${1:-4}
clients=${2:-32}
requests=${3:-200000}
read -r -a extra <<<"${WALSHIP_ARGS:-}"
command -v redis-benchmark >/dev/null || { echo "two-loops: redis-benchmark not found (apt-get install redis-tools)" >&2; exit 1; }
cargo build --release -p walship-server >&2
walship=target/release/walship
init_tmp_and_cleanup

# Starts a primary on a fresh directory; sets `port` to its port.
start() {
    port=$(free_port)
    "$walship" server --data-dir "$tmp/$1" --port "$port" "${extra[@]}" >/dev/null 2>"$tmp/$1.log" &
    pids+=($!)
    wait_port "$port"
}

# SET/s of one redis-benchmark run against port $1 with $2 clients and $3 SETs.
bench() {
    redis-benchmark -p "$1" -t set -c "$2" -n "$3" -d 100 -r 100000 -q --csv 2>/dev/null |
        tail -1 | awk -F'","' '{print $2}'
}

results="$tmp/results"
for round in $(seq 1 "$rounds"); do
    order=(one two)
    ((round % 2 == 0)) && order=(two one)
    for setup in "${order[@]}"; do
        if [[ $setup == one ]]; then
            start "$round-one"
            total=$(bench "$port" "$clients" "$requests")
        else
            start "$round-two-a"
            a=$port
            start "$round-two-b"
            b=$port
            bench "$a" $((clients / 2)) $((requests / 2)) >"$tmp/a" &
            x=$!
            bench "$b" $((clients / 2)) $((requests / 2)) >"$tmp/b" &
            y=$!
            wait "$x" "$y"
            total=$(awk '{s += $1} END {printf "%.0f", s}' "$tmp/a" "$tmp/b")
        fi
        stop_pids
        pids=()
        printf '%s\tround %s\t%.0f SET/s\n' "$setup" "$round" "$total" | tee -a "$results"
    done
done
echo
echo "medians over $rounds rounds, $clients clients in all:"
python3 - "$results" <<'PY'
import statistics, sys
by = {}
for line in open(sys.argv[1]):
    f = line.split("\t")
    by.setdefault(f[0], []).append(float(f[2].split()[0]))
names = {"one": "one primary, all clients", "two": "two primaries, half each"}
for k, v in by.items():
    print(f"  {names[k]}: {statistics.median(v):.0f} SET/s  ({' '.join(f'{x:.0f}' for x in v)})")
PY
