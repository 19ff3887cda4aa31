#!/usr/bin/env bash
# Memory per key: Ferrite against Debian's redis-server, the same keys written to both.
#
# For each shape, a fresh redis-server and a fresh ferrite are started (no persistence, loopback),
# the same commands are piped into each with `redis-cli --pipe`, and the process's resident set
# (VmRSS from /proc) is read before and after loading. "bytes/key" is the growth of the RSS
# divided by the number of keys, so the empty process's own size is left out; `used_memory` from
# INFO memory is shown beside it (Redis: its allocator's count; Ferrite: its own estimate, whose
# relation to the RSS the last column shows).
#
#   scripts/bench-memory.sh                      # every shape, default sizes
#   SHAPES="str100 hash1" KEYS=200000 scripts/bench-memory.sh
#
# Shape list1m is one list of 1M 10-byte elements; its "bytes/key" columns are per element.
# Environment: SHAPES (default: all), KEYS (overrides every shape's key count), FERRITE_BIN,
# NO_BUILD=1 to use an existing binary.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
ALL_SHAPES="str100 str4k int hash1 hash5 set5 intset5 zset5 list5 list1m"
SHAPES=${SHAPES:-$ALL_SHAPES}

for tool in redis-server redis-cli python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "bench-memory: '$tool' not found (apt-get install redis-server redis-tools python3)" >&2
        exit 2
    fi
done

if [[ -z "${FERRITE_BIN:-}" ]]; then
    if [[ "${NO_BUILD:-0}" != 1 ]]; then
        (cd "$root" && cargo build --release --quiet --bin ferrite)
    fi
    FERRITE_BIN=$target/release/ferrite
fi

work=$(mktemp -d)
pid=
cleanup() {
    if [[ -n "$pid" ]]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Writes the RESP commands of one shape: keys key:000000000000 ... with values as described.
cat >"$work/gen.py" <<'EOF'
import sys

shape, n = sys.argv[1], int(sys.argv[2])
out = sys.stdout.buffer

def cmd(*a):
    parts = [b"*%d\r\n" % len(a)]
    for x in a:
        x = x.encode() if isinstance(x, str) else x
        parts.append(b"$%d\r\n%s\r\n" % (len(x), x))
    return b"".join(parts)

buf = []
if shape == "list1m":    # ONE list of n 10-byte elements (per-element cost of a long list)
    for i in range(0, n, 1000):
        out.write(cmd("RPUSH", "biglist", *["e:%08d" % j for j in range(i, min(n, i + 1000))]))
    sys.exit(0)
for i in range(n):
    k = "key:%012d" % i
    if shape == "str100":    # 100-byte strings
        c = cmd("SET", k, "v" * 100)
    elif shape == "str4k":   # 4 KiB strings
        c = cmd("SET", k, "v" * 4096)
    elif shape == "int":     # counters
        c = cmd("SET", k, str(i))
    elif shape == "hash1":   # a hash of one field with a 32-byte value
        c = cmd("HSET", k, "field:%012d" % i, "x" * 32)
    elif shape == "hash5":   # five fields of 2 + 16 bytes
        a = ["HSET", k]
        for j in range(5):
            a += ["f%d" % j, "value-%010d" % (i + j)]
        c = cmd(*a)
    elif shape == "set5":    # five 15-byte members
        c = cmd("SADD", k, *["member:%08d" % (i + j) for j in range(5)])
    elif shape == "intset5": # five integers
        c = cmd("SADD", k, *[str(i + j) for j in range(5)])
    elif shape == "zset5":   # five 15-byte members with integer scores
        a = ["ZADD", k]
        for j in range(5):
            a += [str(i + j), "member:%08d" % (i + j)]
        c = cmd(*a)
    elif shape == "list5":   # five 16-byte elements
        c = cmd("RPUSH", k, *["element:%08d" % (i + j) for j in range(5)])
    else:
        sys.exit("unknown shape " + shape)
    buf.append(c)
    if len(buf) >= 10000:
        out.write(b"".join(buf))
        buf = []
out.write(b"".join(buf))
EOF

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_ready() { # port
    for _ in $(seq 1 100); do
        if [[ "$(redis-cli -p "$1" ping 2>/dev/null)" == PONG ]]; then
            return 0
        fi
        sleep 0.1
    done
    echo "bench-memory: server on port $1 did not answer PING" >&2
    exit 1
}

rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
info_field() { redis-cli -p "$1" info memory | tr -d '\r' | awk -F: -v f="$2" '$1 == f { print $2 }'; }

keys_for() {
    if [[ -n "${KEYS:-}" ]]; then
        echo "$KEYS"
        return
    fi
    case $1 in
        str4k) echo 100000 ;;
        str100 | int | list1m) echo 1000000 ;;
        *) echo 500000 ;;
    esac
}

# measure server shape n → "rss_bytes_per_key used_memory_per_key"
measure() {
    local server=$1 shape=$2 n=$3 port r0 r1 used keys
    port=$(free_port)
    if [[ $server == redis ]]; then
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            --daemonize no --logfile "$work/redis.log" >/dev/null 2>&1 &
    else
        # Persistence off (as for the redis-server above) and a fresh data directory per run,
        # so a shape never starts with the previous shape's keys.
        rm -rf "$work/ferrite-data"
        "$FERRITE_BIN" --port "$port" --metrics-addr off --log-level warn --appendonly no \
            --dir "$work/ferrite-data" >"$work/ferrite.log" 2>&1 &
    fi
    pid=$!
    wait_ready "$port"
    r0=$(rss_kb "$pid")
    redis-cli -p "$port" --pipe <"$work/$shape.resp" >"$work/pipe.log"
    keys=$(redis-cli -p "$port" dbsize)
    # list1m is one key of n elements: its "bytes/key" is per element.
    if [[ $keys != "$n" && ! ($shape == list1m && $keys == 1) ]]; then
        echo "bench-memory: $server holds $keys keys, expected $n" >&2
        cat "$work/pipe.log" >&2
        exit 1
    fi
    sleep 0.3
    r1=$(rss_kb "$pid")
    used=$(info_field "$port" used_memory)
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
    awk -v a="$r0" -v b="$r1" -v u="$used" -v n="$n" \
        'BEGIN { printf "%.1f %.1f\n", (b - a) * 1024 / n, u / n }'
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "redis:   $(redis-server --version | cut -d' ' -f3-4)"
echo "ferrite: $FERRITE_BIN"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| shape | keys | Redis bytes/key | Ferrite bytes/key | Ferrite/Redis | Redis used_memory/key | Ferrite used_memory/key (estimate) | estimate/RSS |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for shape in $SHAPES; do
    n=$(keys_for "$shape")
    python3 "$work/gen.py" "$shape" "$n" >"$work/$shape.resp"
    # Run in this shell (not a subshell), so the exit trap can stop a server left running.
    measure redis "$shape" "$n" >"$work/m"
    read -r r_rss r_used <"$work/m"
    measure ferrite "$shape" "$n" >"$work/m"
    read -r f_rss f_used <"$work/m"
    rm -f "$work/$shape.resp"
    awk -v s="$shape" -v n="$n" -v rr="$r_rss" -v fr="$f_rss" -v ru="$r_used" -v fu="$f_used" \
        'BEGIN { printf "| %s | %d | %.0f | %.0f | %.2f | %.0f | %.0f | %.2f |\n", s, n, rr, fr, fr / rr, ru, fu, fu / fr }'
done
