#!/usr/bin/env bash
# Runs units of Redis's own TCL test suite against a Ferrite started here (a fresh one for each
# unit), and prints per unit how many tests passed and failed. Usage:
#   scripts/redis-tcl.sh <redis-source-dir> unit/geo [unit/bitops ...]
# TCL_ARGS adds options of the suite's test_helper.tcl, e.g. TCL_ARGS="--tags -needs:debug" skips
# the tests that need DEBUG RELOAD or a runtime `CONFIG SET appendonly yes`.
# <redis-source-dir> is a Redis 7.0 or 7.2 source tree (Debian's redis source package, or
# `git archive 7.2.6` of redis/redis); it is copied, never changed. The copy is run with --singledb (Ferrite has one
# database per tenant), with `FUNCTION FLUSH` made optional until scripting exists, and with every
# client authenticating as the administrator first (Ferrite's secure defaults give CONFIG, DEBUG
# and friends only to the administrator; the suite's client has no AUTH of its own).
# TCL_OUT=<dir> keeps each unit's full output there (<unit>.out). TCL_TARGET=redis runs the same
# copy of the suite, with the same options, against a redis-server (REDIS_SERVER or REDIS_BIN,
# default redis-server, started without persistence) instead: the baseline the Ferrite counts compare with.
# Two runs at the same time need different `--baseport`s in TCL_ARGS (the suite's own port).
set -euo pipefail
src=${1:?redis source dir}; shift
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${FERRITE_BIN:-$root/target/release/ferrite}
work=$(mktemp -d)
pid=
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cp -r "$src/tests" "$work/tests"
mkdir -p "$work/src"
sed -i 's/^    r function flush$/    catch {r function flush}/' "$work/tests/support/server.tcl"
# Authenticate each new connection before the suite uses it.
sed -i 's/^    ::redis::redis_reset_state \$id$/&\n    if {[info exists ::env(FERRITE_TCL_AUTH)]} { set pw $::env(FERRITE_TCL_AUTH); puts -nonewline $fd "*2\\r\\n\\$4\\r\\nAUTH\\r\\n\\$[string length $pw]\\r\\n$pw\\r\\n"; flush $fd; gets $fd }/' "$work/tests/support/redis.tcl"
export FERRITE_TCL_AUTH="tcl-$RANDOM-$RANDOM"
# Each unit gets a fresh server, as the suite gives each unit its own: in external-server mode
# a unit's settings would otherwise leak into the next (type/list and type/set leave
# proto-max-bulk-len at 10 GB, after which type/string fails and unit/protocol hangs).
start_server() {
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    rm -rf "$work/data"
    if [ "${TCL_TARGET:-ferrite}" = redis ]; then
        mkdir -p "$work/data"
        "${REDIS_SERVER:-${REDIS_BIN:-redis-server}}" --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            --daemonize no --dir "$work/data" >"$work/server.log" 2>&1 &
    else
        "$bin" --port "$port" --metrics-addr off --log-level warn --requirepass "$FERRITE_TCL_AUTH" \
            --dir "$work/data" \
            >"$work/server.log" 2>&1 &
    fi
    pid=$!
    for _ in $(seq 50); do
        redis-cli -p "$port" ${FERRITE_TCL_AUTH:+-a "$FERRITE_TCL_AUTH"} --no-auth-warning ping >/dev/null 2>&1 && break
        sleep 0.1
    done
}
stop_server() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
if [ "${TCL_TARGET:-ferrite}" = redis ]; then unset FERRITE_TCL_AUTH; fi
cd "$work"
status=0
for unit in "$@"; do
    start_server
    out="$work/$(basename "$unit").out"
    timeout 900 tclsh tests/test_helper.tcl --host 127.0.0.1 --port "$port" --singledb \
        --single "$unit" --clients 1 ${TCL_ARGS:-} >"$out" 2>&1 || status=1
    stop_server
    # Count each test once: the suite repeats failed ones in its closing summary ("*** [err]: ...").
    plain=$(sed 's/\x1b\[[0-9;]*m//g' "$out")
    ok=$(grep -ac '^\[ok\]: ' <<<"$plain" || true)
    err=$(grep -ac '^\[err\]: ' <<<"$plain" || true)
    exc=$(grep -ac '^\[exception\]: ' <<<"$plain" || true)
    echo "$unit: ok=$ok err=$err exception=$exc"
    if [ -n "${TCL_OUT:-}" ]; then mkdir -p "$TCL_OUT"; cp "$out" "$TCL_OUT/"; fi
    grep -aE '^\[(err|exception)\]: ' <<<"$plain" | sort -u | head -20 || true
done
exit $status
