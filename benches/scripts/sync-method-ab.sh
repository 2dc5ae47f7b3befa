#!/usr/bin/env bash
# Two or more walship setups side by side: a primary plus one synchronous
# standby (FIRST 1; the defaults `--fsync always` and synchronous_commit on),
# both nodes on the same setup unless a variant gives per-node flags.
#
#   benches/scripts/sync-method-ab.sh [rounds] [clients] [requests] [variants...]
#
# A variant is a WAL sync method of the binary this script builds
# (`fdatasync`, `open_datasync`), or LABEL=PATH, another walship binary on its
# default method (e.g. `before=/tmp/walship.old after=target/release/walship`,
# to A/B a change), or LABEL:PRIMARY-FLAGS:STANDBY-FLAGS, the built binary
# with extra flags for each node (e.g. `nofsync:--fsync never:--fsync never`
# or `standby-nofsync::--fsync never`). Defaults: 5 rounds, 32 clients, 100000 SETs, variants
# fdatasync and open_datasync. Each round runs every variant once, on a
# fresh pair of data directories, in the reverse order of the round before
# (ABBA), so neither variant always runs first;
# `redis-benchmark -t set -d 100 -r 100000`.
# Prints per run: SET/s, p50 and p99 ms, CPU µs per SET of the primary and
# of the standby (from /proc/<pid>/stat), and how busy the machine was
# (from /proc/stat, redis-benchmark included); then the median SET/s and p50
# of each variant. The machine is shared and noisy: compare within one run.
# Extra server flags for both nodes can be passed in WALSHIP_ARGS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source benches/scripts/lib.sh

rounds=${1:-5}
clients=${2:-32}
requests=${3:-100000}
shift 3 2>/dev/null || shift $#
variants=("$@")
((${#variants[@]})) || variants=(fdatasync open_datasync)
read -r -a extra <<<"${WALSHIP_ARGS:-}"

for tool in redis-benchmark redis-cli; do
    command -v "$tool" >/dev/null || { echo "sync-method-ab: $tool not found (apt-get install redis-tools)" >&2; exit 1; }
done
cargo build --release -p walship-server >&2
walship=target/release/walship

init_tmp_and_cleanup

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
machine() { awk '/^cpu /{busy = $2 + $3 + $4 + $7 + $8; print busy, busy + $5 + $6}' /proc/stat; }

results="$tmp/results"
for round in $(seq 1 "$rounds"); do
    order=("${variants[@]}")
    if ((round % 2 == 0)); then
        order=()
        for ((i = ${#variants[@]} - 1; i >= 0; i--)); do order+=("${variants[$i]}"); done
    fi
    for v in "${order[@]}"; do
        pextra=() sextra=()
        if [[ $v == *:* ]]; then
            IFS=: read -r m pflags sflags <<<"$v"
            bin=$walship method=()
            read -r -a pextra <<<"$pflags"
            read -r -a sextra <<<"$sflags"
        elif [[ $v == *=* ]]; then
            m=${v%%=*} bin=${v#*=} method=()
        else
            m=$v bin=$walship method=(--wal-sync-method "$v")
        fi
        dir="$tmp/$round-$m"
        pport=$(free_port)
        "$bin" server --data-dir "$dir/p" --port "$pport" "${method[@]}" \
            --synchronous-standby-names 's1' "${extra[@]}" "${pextra[@]}" 2>"$dir.p.log" &
        ppid=$!
        pids+=("$ppid")
        wait_port "$pport"
        sport=$(free_port)
        "$bin" server --data-dir "$dir/s" --port "$sport" "${method[@]}" \
            --replicate-from "127.0.0.1:$pport" --name s1 "${extra[@]}" "${sextra[@]}" 2>"$dir.s.log" &
        spid=$!
        pids+=("$spid")
        for _ in $(seq 1 200); do
            redis-cli -p "$pport" info replication 2>/dev/null | grep -q 'state=online' && break
            sleep 0.05
        done
        p0=$(cpu_ticks "$ppid")
        s0=$(cpu_ticks "$spid")
        read -r b0 t0 < <(machine)
        csv=$(redis-benchmark -p "$pport" -t set -c "$clients" -n "$requests" -d 100 -r 100000 -q --csv 2>/dev/null | tail -1)
        p1=$(cpu_ticks "$ppid")
        s1=$(cpu_ticks "$spid")
        read -r b1 t1 < <(machine)
        kill "$spid" "$ppid"
        wait "$spid" "$ppid" 2>/dev/null || true
        hz=$(getconf CLK_TCK)
        python3 - "$m" "$round" "$csv" "$requests" "$hz" "$p0" "$p1" "$s0" "$s1" "$b0" "$b1" "$t0" "$t1" <<'EOF' | tee -a "$results"
import sys
m, rnd, csv, n, hz = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
p0, p1, s0, s1, b0, b1, t0, t1 = map(int, sys.argv[6:14])
f = csv.split('","')
rps, p50, p99 = float(f[1]), float(f[4]), float(f[6])
us = lambda a, b: (b - a) / hz / n * 1e6
print(f"{m}\tround {rnd}\t{rps:.0f} SET/s\tp50 {p50:.3f} ms\tp99 {p99:.3f} ms\t"
      f"primary {us(p0, p1):.1f} us/SET\tstandby {us(s0, s1):.1f} us/SET\t"
      f"machine {100 * (b1 - b0) / max(1, t1 - t0):.0f}% busy")
EOF
    done
done

echo
echo "medians over $rounds rounds, $clients clients:"
python3 - "$results" <<'EOF'
import statistics, sys
by = {}
for line in open(sys.argv[1]):
    f = line.split("\t")
    by.setdefault(f[0], []).append((float(f[2].split()[0]), float(f[3].split()[1])))
for m, runs in by.items():
    print(f"  {m}: {statistics.median(r for r, _ in runs):.0f} SET/s, p50 {statistics.median(p for _, p in runs):.3f} ms")
EOF
