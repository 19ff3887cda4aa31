#!/usr/bin/env bash
# Server CPU time per request of sorted-set commands, Ferrite builds side by side with redis-server.
#
# For each server (fresh process per test): runs one redis-benchmark test and reads the server's
# CPU time (utime + stime from /proc/<pid>/stat) around it, printing µs of server CPU per request
# and req/s. CPU time per request is far less sensitive to other load on the machine than req/s.
#
#   BINS="new=target/release/ferrite base=/work/coord/ferrite-base" scripts/bench-zset.sh
#
# Tests: ZADD of random members into one set growing to 100k (-P16), ZADD then ZPOPMIN (-P1 and
# -P16), and ZRANK (random member), ZRANGE (10 at the middle rank) and ZRANGEBYSCORE (10 from a
# random score) on a set of 1M members.
# Environment: BINS (name=path pairs), REQUESTS (300000), BIG (1000000), REDIS (redis-server).
set -euo pipefail
[ -n "${TRACE:-}" ] && set -x
BINS=${BINS:-"new=target/release/ferrite"}
REQUESTS=${REQUESTS:-300000}
BIG=${BIG:-1000000}
REDIS=${REDIS:-redis-server}
tick=$(getconf CLK_TCK)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

pid=""
stop() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; pid=""; }
trap stop EXIT

start() { # name path
    port=$(free_port)
    if [ "$1" = redis ]; then
        "$2" --port "$port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
    else
        "$2" --port "$port" --metrics-addr off --log-level warn --appendonly no >/dev/null 2>&1 &
    fi
    pid=$!
    for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && return; sleep 0.1; done
    echo "server $1 did not start" >&2; exit 1
}

# Loads BIG members m<12-digit i> with pseudo-random scores, 1000 per ZADD, as RESP.
load_big() {
    python3 - "$BIG" <<'PY' | redis-cli -p "$port" --pipe >/dev/null
import sys
n = int(sys.argv[1]); out = sys.stdout
for base in range(0, n, 1000):
    args = [b"ZADD", b"big"]
    for i in range(base, min(n, base + 1000)):
        args += [str((i * 7919) % 1000003).encode(), b"m%012d" % i]
    out.write("*%d\r\n" % len(args))
    for a in args:
        out.write("$%d\r\n%s\r\n" % (len(a), a.decode()))
PY
}

run() { # name label benchmark-args...
    local name=$1 label=$2; shift 2
    local t0 t1 out rps
    t0=$(cpu_ticks "$pid")
    out=$(redis-benchmark -p "$port" -c 50 --csv "$@" 2>/dev/null | tail -n +2)
    t1=$(cpu_ticks "$pid")
    # One line per test in the CSV; the CPU time covers them all.
    rps=$(echo "$out" | awk -F'","' '{gsub(/"/,"",$2); printf "%s%s", sep, $2; sep="+"}')
    local n; n=$(echo "$out" | wc -l)
    awk -v n="$n" -v req="$REQUESTS" -v d="$((t1 - t0))" -v tick="$tick" -v name="$name" \
        -v label="$label" -v rps="$rps" \
        'BEGIN { printf "%-6s %-28s cpu %6.2f µs/req  req/s %s\n", name, label, d / tick * 1e6 / (n * req), rps }'
}

for entry in $BINS redis=$REDIS; do
    name=${entry%%=*}; path=${entry#*=}
    start "$name" "$path"; run "$name" "zadd P16" -n "$REQUESTS" -r 100000 -P 16 -t zadd; stop
    start "$name" "$path"; run "$name" "zadd,zpopmin P1" -n "$REQUESTS" -r 100000 -P 1 -t zadd,zpopmin; stop
    start "$name" "$path"; run "$name" "zadd,zpopmin P16" -n "$REQUESTS" -r 100000 -P 16 -t zadd,zpopmin; stop
    start "$name" "$path"; load_big
    run "$name" "zrank 1M P16" -n "$REQUESTS" -r "$BIG" -P 16 ZRANK big m__rand_int__
    # A rank cannot be random (__rand_int__ has leading zeros, which integers refuse): ZRANGE
    # reads 10 at a fixed middle rank; ZRANGEBYSCORE starts at a random score.
    run "$name" "zrange 10 at rank 1M P16" -n "$REQUESTS" -P 16 ZRANGE big $((BIG / 2)) $((BIG / 2 + 9))
    run "$name" "zrangebyscore limit 10 1M P16" -n "$REQUESTS" -r "$BIG" -P 16 ZRANGEBYSCORE big __rand_int__ +inf LIMIT 0 10
    echo "$name zcard big: $(redis-cli -p "$port" zcard big)"
    stop
done
