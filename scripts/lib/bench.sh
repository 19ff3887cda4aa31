# Shared by scripts/bench-*.sh (sourced, after `set -euo pipefail`): the `--record` flag, logging,
# required tools, the ferrite binary, a scratch directory whose processes are stopped on exit, free
# loopback ports and waiting for a server's PONG.
# The sourcing script sets BENCH_NAME (its log prefix) first.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

# `--record` (write the result into docs/benchmarks.md) is the only argument the scripts take.
record=0
for a in "$@"; do
    case $a in
    --record) record=1 ;;
    *)
        echo "usage: $0 [--record]" >&2
        exit 2
        ;;
    esac
done

log() { printf '[%s] %s\n' "$BENCH_NAME" "$*" >&2; }
die() {
    log "FAILED: $*"
    exit 1
}

need_tools() { # tool...
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool is missing (apt-get install redis-server redis-tools python3)"
    done
}

# FERRITE_BIN, built in release mode unless given.
ferrite_bin() {
    if [[ -z "${FERRITE_BIN:-}" ]]; then
        cargo build --release --quiet --bin ferrite
        FERRITE_BIN=$CARGO_TARGET_DIR/release/ferrite
    fi
}

# A scratch directory ($work) and the processes the script starts (append their pids to $pids):
# on exit, however it comes, the processes are stopped and the directory removed.
start_scratch() {
    work=$(mktemp -d)
    pids=()
    trap stop_scratch EXIT
    trap 'exit 130' INT TERM
}
stop_scratch() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_pong() { # port [redis-cli options...]
    local port=$1
    shift
    for _ in $(seq 1 60000); do
        if [[ "$(redis-cli -p "$port" "$@" ping 2>/dev/null)" == PONG ]]; then
            return 0
        fi
        sleep 0.01
    done
    die "no PONG on port $port"
}
