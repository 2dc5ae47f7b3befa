# Helpers shared by the benchmark scripts; sourced from the repository root.

# A free TCP port on loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits until a Redis-protocol server answers PING on port $1, polling every
# 50 ms up to WAIT_PORT_TRIES times (default 200, 10 s); exits otherwise.
wait_port() {
    for _ in $(seq 1 "${WAIT_PORT_TRIES:-200}"); do
        redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "port $1 never answered" >&2
    exit 1
}

# Stops every process in the caller's `pids` array and reaps them.
stop_pids() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}

# Sets `tmp` to a new temporary directory and `pids` to an empty array, and
# on exit stops every process in `pids` and removes `tmp`.
init_tmp_and_cleanup() {
    tmp=$(mktemp -d)
    pids=()
    trap 'stop_pids; rm -rf "$tmp"' EXIT
}
