#!/usr/bin/env bash
# Synchronous replication cost, walship beside PostgreSQL 15, in one run.
#
#   benches/scripts/replication-bench.sh [seconds-per-pgbench-run]
#
# walship (fsync=always), each with redis-benchmark SET, 100-byte values over
# 100k keys, at 32 clients and at 1 client:
#   - primary alone
#   - primary + one asynchronous standby
#   - primary + one synchronous standby (FIRST 1 (s1), synchronous_commit=on),
#     with the default commit-delay-us and with it off
# PostgreSQL 15 (/usr/lib/postgresql/15, run as the postgres user): primary +
# streaming standby with synchronous_standby_names = 'FIRST 1 (s1)', 32
# pgbench clients upserting 100-byte values over 100k keys, with
# synchronous_commit on and local, and on with commit_delay = 200 us.
# Prints a Markdown table; every figure comes from this one run. Needs root
# (to run PostgreSQL as postgres), redis-benchmark and redis-cli.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source benches/scripts/lib.sh
WAIT_PORT_TRIES=400
secs=${1:-20}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

cargo build --release -p walship-server >&2
walship=$PWD/target/release/walship
tmp=$(mktemp -d /tmp/walship-repl-bench.XXXXXX)
chmod 755 "$tmp"
pids=()
cleanup() {
    stop_pids
    if [[ -d $tmp/pgs ]]; then runuser -u postgres -- "$PGBIN/pg_ctl" -D "$tmp/pgs" stop -m immediate >/dev/null 2>&1 || true; fi
    if [[ -d $tmp/pgp ]]; then runuser -u postgres -- "$PGBIN/pg_ctl" -D "$tmp/pgp" stop -m immediate >/dev/null 2>&1 || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# redis-benchmark → "rps p50 p99"
rb() {
    local port=$1 clients=$2 n=$3
    redis-benchmark -p "$port" -c "$clients" -n "$n" -d 100 -r 100000 -t set 2>/dev/null | tr '\r' '\n' | awk '
        /throughput summary:/ {rps=$3}
        /latency summary/ {getline; getline; p50=$3; p99=$5}
        END {print rps, p50, p99}'
}

rows=()
run_walship() {
    local label=$1 standby=$2 sync=$3
    local extra=("${@:4}")
    local dir=$tmp/w-$RANDOM p s
    p=$(free_port)
    local args=(server --data-dir "$dir/p" --port "$p" --fsync always)
    if [[ $sync == yes ]]; then args+=(--synchronous-standby-names 'FIRST 1 (s1)'); fi
    args+=("${extra[@]}")
    "$walship" "${args[@]}" 2>"$dir.p.log" &
    local ppid=$!
    pids+=("$ppid")
    wait_port "$p"
    local spid=""
    if [[ $standby == yes ]]; then
        s=$(free_port)
        "$walship" server --data-dir "$dir/s" --port "$s" --replicate-from "127.0.0.1:$p" --name s1 2>"$dir.s.log" &
        spid=$!
        pids+=("$spid")
        wait_port "$s"
        # Wait until it streams (a synchronous write completes only then).
        for _ in $(seq 1 200); do
            redis-cli -p "$p" info replication | grep -q 'state=online' && break
            sleep 0.05
        done
    fi
    read -r rps32 p50_32 p99_32 < <(rb "$p" 32 100000)
    read -r rps1 p50_1 p99_1 < <(rb "$p" 1 5000)
    rows+=("| walship: $label | $rps32 | $p50_32 | $p99_32 | $rps1 | $p50_1 | $p99_1 |")
    echo "walship $label: 32 clients $rps32 req/s (p50 $p50_32 ms), 1 client $rps1 req/s (p50 $p50_1 ms)" >&2
    if [[ -n $spid ]]; then kill "$spid"; wait "$spid" 2>/dev/null || true; fi
    kill "$ppid"
    wait "$ppid" 2>/dev/null || true
}

run_walship "primary alone" no no
run_walship "+ async standby" yes no
run_walship "+ sync standby (on)" yes yes
run_walship "+ sync standby (on), commit-delay-us 0" yes yes --commit-delay-us 0

# PostgreSQL: primary + streaming standby, synchronous.
if [[ -x $PGBIN/initdb ]] && id postgres >/dev/null 2>&1; then
    pport=$(free_port)
    sport=$(free_port)
    chown postgres "$tmp"
    runuser -u postgres -- "$PGBIN/initdb" -D "$tmp/pgp" -A trust -U postgres >/dev/null
    cat >>"$tmp/pgp/postgresql.conf" <<CONF
port = $pport
listen_addresses = '127.0.0.1'
unix_socket_directories = '$tmp'
wal_level = replica
max_wal_senders = 4
synchronous_standby_names = 'FIRST 1 (s1)'
synchronous_commit = on
fsync = on
shared_buffers = 256MB
CONF
    echo "host replication all 127.0.0.1/32 trust" >>"$tmp/pgp/pg_hba.conf"
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$tmp/pgp" -l "$tmp/pgp.log" -w start >/dev/null
    runuser -u postgres -- "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$pport" -U postgres -D "$tmp/pgs" -R >/dev/null
    cat >>"$tmp/pgs/postgresql.conf" <<CONF
port = $sport
CONF
    echo "primary_conninfo = 'host=127.0.0.1 port=$pport user=postgres application_name=s1'" >>"$tmp/pgs/postgresql.auto.conf"
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$tmp/pgs" -l "$tmp/pgs.log" -w start >/dev/null
    psql=("$PGBIN/psql" -h 127.0.0.1 -p "$pport" -U postgres -qAt)
    for _ in $(seq 1 100); do
        [[ $(runuser -u postgres -- "${psql[@]}" -c "select sync_state from pg_stat_replication where application_name='s1'") == sync ]] && break
        sleep 0.1
    done
    runuser -u postgres -- "${psql[@]}" -c "create table kv (k int primary key, v text)"
    runuser -u postgres -- "${psql[@]}" -c "insert into kv select g, repeat('x', 100) from generate_series(1, 100000) g"
    cat >"$tmp/upsert.sql" <<'SQL'
\set k random(1, 100000)
INSERT INTO kv VALUES (:k, repeat('y', 100)) ON CONFLICT (k) DO UPDATE SET v = excluded.v;
SQL
    chmod 644 "$tmp/upsert.sql"
    for level in on local delay; do
        for clients in 32 1; do
            opts="-c synchronous_commit=$level"
            if [[ $level == delay ]]; then
                # The same group-commit delay walship uses by default.
                [[ $clients == 1 ]] && continue
                opts="-c synchronous_commit=on -c commit_delay=200 -c commit_siblings=5"
            fi
            out=$(runuser -u postgres -- env PGOPTIONS="$opts" "$PGBIN/pgbench" -n -h 127.0.0.1 -p "$pport" -U postgres \
                -c "$clients" -j 2 -T "$secs" -f "$tmp/upsert.sql" postgres 2>&1)
            tps=$(sed -nE 's/^tps = ([0-9.]+).*/\1/p' <<<"$out" | head -1)
            lat=$(sed -nE 's/^latency average = ([0-9.]+) ms.*/\1/p' <<<"$out")
            echo "PostgreSQL synchronous_commit=$level, $clients clients: $tps tps, avg $lat ms" >&2
            declare "pg_${level}_${clients}=$tps" "pglat_${level}_${clients}=$lat"
        done
    done
    rows+=("| PostgreSQL 15: + sync standby (on) | ${pg_on_32} | avg ${pglat_on_32} | | ${pg_on_1} | avg ${pglat_on_1} | |")
    rows+=("| PostgreSQL 15: + sync standby (on), commit_delay=200 | ${pg_delay_32} | avg ${pglat_delay_32} | | | | |")
    rows+=("| PostgreSQL 15: + standby, synchronous_commit=local | ${pg_local_32} | avg ${pglat_local_32} | | ${pg_local_1} | avg ${pglat_local_1} | |")
else
    echo "PostgreSQL 15 not found under $PGBIN (or no postgres user): skipping it" >&2
fi

echo
echo "| setup | 32 clients req/s | p50 ms | p99 ms | 1 client req/s | p50 ms | p99 ms |"
echo "|---|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
