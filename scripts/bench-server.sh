#!/usr/bin/env bash
# Compares Ferrite with Debian's redis-server under redis-benchmark on this machine.
#
# Both servers run with the same settings (loopback, no persistence, quiet logs). For each
# repetition, pipeline depth and test, redis-benchmark runs against one server and then the other;
# the order alternates from one measurement to the next, and for each row from one repetition to
# the next, so that neither server systematically gets the warmer (or quieter) machine. Each cell of the table is the median over the repetitions.
#
#   scripts/bench-server.sh                      # 2M requests per test, 3 repetitions
#   REQUESTS=200000 REPEATS=1 scripts/bench-server.sh   # quick check
#   WIDE=1 REQUESTS=500000 scripts/bench-server.sh      # every row of issue 13 (below)
#
# Environment: REQUESTS (default 2000000), CLIENTS (50), REPEATS (3), PIPELINES ("1 16"),
# TESTS ("set,get"; a test may carry its value size: "set:1024"), DATA_SIZE (redis-benchmark's
# default of 3 bytes), RANDOM_KEYS (redis-benchmark -r: keys drawn from this many; default none),
# WIDE=1 (TESTS = set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,lrange_100,
# lrange_600,mset plus set/get with 1 KiB and 16 KiB values, RANDOM_KEYS=100000),
# COMMANDS=1 (TESTS = evalsha,publish,publish:100,xadd,blpop: issue 14's rows — EVALSHA of a
# small script, PUBLISH to 1 and to 100 subscribers (redis-cli processes), XADD, and a BLPOP/LPUSH
# ping-pong: one client blocks in BLPOP, another pushes, round trip after round trip),
# FERRITE_ARGS (extra arguments for ferrite, e.g. "--threads 1"), NO_BUILD=1 to use an existing
# binary, FERRITE_BIN to pick one. PIN=1 pins both servers to CPU 1 and every client process
# (redis-benchmark, the subscribers, the ping-pong) to CPU 0 with taskset, the same for both
# servers, so that the scheduler never puts a server and its client on one core (on a 2-core
# machine the -P1 rows are bound by the single-threaded redis-benchmark: see docs/benchmarks.md).
#
# The table's "client cpu" columns are the CPU time (user + system) of the client processes per
# request against each server: at -P1 the client takes most of a core, and a row where it got
# less of the machine shows here.
#
# CONTROL=1 adds a second redis-server, measured like the other two (its runs rotate with theirs),
# and a "control" column: the median of its per-repetition ratios to the first redis-server. Two
# identical servers differ only by the machine's noise, so that column shows how far from 1.0 a
# ratio moves by chance (about 50% more time).
#
# MIN_SECONDS (default 0: off) gives every redis-benchmark row at least that many seconds per run:
# before the first repetition each row runs once, unmeasured, against both servers (min(REQUESTS,
# 100000) requests), and the row's count becomes max(REQUESTS, MIN_SECONDS x the faster server's
# rate), the same count for both servers in every repetition. At a fixed count the cheap -P16
# rows last about 0.25 s at 300,000 requests, so one slow phase of the machine decides a median;
# the -P1 rows already last seconds and keep REQUESTS.
set -euo pipefail

REQUESTS=${REQUESTS:-2000000}
MIN_SECONDS=${MIN_SECONDS:-0}
CLIENTS=${CLIENTS:-50}
REPEATS=${REPEATS:-3}
PIPELINES=${PIPELINES:-"1 16"}
if [[ "${WIDE:-0}" == 1 ]]; then
    TESTS=${TESTS:-set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,lrange_100,lrange_600,mset,set:1024,get:1024,set:16384,get:16384}
    RANDOM_KEYS=${RANDOM_KEYS:-100000}
fi
if [[ "${COMMANDS:-0}" == 1 ]]; then
    TESTS=${TESTS:-evalsha,publish,publish:100,xadd,blpop}
fi
TESTS=${TESTS:-set,get}
DATA_SIZE=${DATA_SIZE:-3}
RANDOM_KEYS=${RANDOM_KEYS:-}
FERRITE_ARGS=${FERRITE_ARGS:-}
server_pin=()
client_pin=()
if [[ "${PIN:-0}" == 1 ]]; then
    server_pin=(taskset -c 1)
    client_pin=(taskset -c 0)
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}

for tool in redis-server redis-benchmark redis-cli python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "bench-server: '$tool' not found (apt-get install redis-server redis-tools python3)" >&2
        exit 2
    fi
done

if [[ -z "${FERRITE_BIN:-}" ]]; then
    if [[ "${NO_BUILD:-0}" != 1 ]]; then
        (cd "$root" && cargo build --release --quiet --bin ferrite)
    fi
    FERRITE_BIN=$target/release/ferrite
fi

BENCH_NAME=bench-server
source "$root/scripts/lib/bench.sh"
start_scratch

wait_ready() { # port name
    for _ in $(seq 1 100); do
        if [[ "$(redis-cli -p "$1" ping 2>/dev/null)" == PONG ]]; then
            return 0
        fi
        sleep 0.1
    done
    echo "bench-server: $2 did not answer PING on port $1" >&2
    exit 1
}

redis_port=$(free_port)
"${server_pin[@]}" redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no --logfile "$work/redis.log" &
redis_pid=$!
pids+=("$redis_pid")
wait_ready "$redis_port" redis-server

redis2_port=
if [[ "${CONTROL:-0}" == 1 ]]; then
    redis2_port=$(free_port)
    "${server_pin[@]}" redis-server --port "$redis2_port" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no --logfile "$work/redis2.log" &
    redis2_pid=$!
    pids+=("$redis2_pid")
    wait_ready "$redis2_port" "redis-server (control)"
fi

ferrite_port=$(free_port)
# shellcheck disable=SC2086 # FERRITE_ARGS is a list of words on purpose
# Like the redis-server above (no RDB, no AOF): scripts/bench-persistence.sh measures persistence.
persist_args="--appendonly no"
[[ " $FERRITE_ARGS " == *" --appendonly "* || " $FERRITE_ARGS " == *" --dir "* ]] && persist_args=
# shellcheck disable=SC2086 # FERRITE_ARGS is a list of words on purpose
"${server_pin[@]}" "$FERRITE_BIN" --port "$ferrite_port" --metrics-addr off --log-level warn $persist_args \
    --admin-secret-file "$work/admin.secret" $FERRITE_ARGS \
    >"$work/ferrite.log" 2>&1 &
ferrite_pid=$!
pids+=("$ferrite_pid")
wait_ready "$ferrite_port" ferrite

# The EVALSHA row's script, loaded on both servers (same SHA1).
script_sha=
if [[ ",$TESTS," == *,evalsha,* ]]; then
    for port in "$redis_port" "$ferrite_port"; do
        script_sha=$(redis-cli -h 127.0.0.1 -p "$port" script load "return redis.call('INCR', KEYS[1])")
    done
fi

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "redis:   $(redis-server --version | cut -d' ' -f3-4), redis-benchmark $(redis-benchmark --version | cut -d' ' -f2)"
echo "ferrite: $FERRITE_BIN $FERRITE_ARGS"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
[[ "${PIN:-0}" == 1 ]] && echo "pinned: servers on CPU 1, clients on CPU 0 (PIN=1)"
echo "command: redis-benchmark -h 127.0.0.1 -p PORT -c $CLIENTS -n $REQUESTS -d SIZE${RANDOM_KEYS:+ -r $RANDOM_KEYS} -t TEST -P N --csv for TEST[:SIZE] in $TESTS (SIZE default $DATA_SIZE), N in $PIPELINES; repeats $REPEATS"
[[ -n $redis2_port ]] && echo "control: a second redis-server, measured the same way (CONTROL=1)"
[[ $MIN_SECONDS != 0 ]] && echo "min seconds per run: $MIN_SECONDS (rows whose $REQUESTS requests take less run more; counts below)"
echo

# One line per measurement: server pipeline test rps p50 p99 cpu-us-per-request
# client-cpu-us-per-request
results=$work/results
: >"$results"

# CPU time (user + system, in clock ticks) a process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ticks_per_sec=$(getconf CLK_TCK)
# CPU time of this shell's finished children (the clients of a measurement, once waited for).
children_ticks() { awk '{ print $16 + $17 }' "/proc/$$/stat"; }

# Waits until `count` clients are subscribed to bench:channel.
wait_subscribers() { # port count
    for _ in $(seq 1 200); do
        if [[ "$(redis-cli -h 127.0.0.1 -p "$1" pubsub numsub bench:channel | tail -1)" -ge $2 ]]; then
            return 0
        fi
        sleep 0.05
    done
    echo "bench-server: subscribers did not subscribe on port $1" >&2
    exit 1
}

# BLPOP/LPUSH ping-pong: `pipeline` pairs of connections; in each pair one connection blocks in
# BLPOP on its own list and the other pushes to it, then the next round trip starts. Prints
# "BLPOP rps p50-ms p99-ms round-trips" like the redis-benchmark rows, plus the number of round
# trips, which the CPU columns are divided by (it is not REQUESTS). The client is Python: it
# spends about three times the server's CPU per round trip, so the rate is mostly the client's
# and the server CPU per round trip is the measure of the server. REQUESTS / 20 round trips
# (15,000 at 300,000: about two seconds), not / 100, which made a run half a second long.
cat >"$work/pingpong.py" <<'PY'
import socket, statistics, sys, time
port, requests, pairs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rounds = max(1000, requests // 20)
def conn():
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s
def cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out
def read_reply(s, buf):
    # Enough of RESP for these replies: +OK / :n / *2 of two bulks.
    while True:
        if buf.startswith(b"*2\r\n"):
            parts = buf.split(b"\r\n")
            if len(parts) >= 6:
                used = sum(len(p) + 2 for p in parts[:5])
                return buf[used:]
        elif b"\r\n" in buf and not buf.startswith(b"*"):
            return buf[buf.index(b"\r\n") + 2:]
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("connection closed")
        buf += chunk
pairs = [(conn(), conn(), f"bench:pingpong:{i}") for i in range(pairs)]
for popper, pusher, key in pairs:
    popper.sendall(cmd("DEL", key)); read_reply(popper, b"")
lat = []
start = time.perf_counter()
for _ in range(rounds // len(pairs)):
    t0 = time.perf_counter()
    for popper, pusher, key in pairs:
        popper.sendall(cmd("BLPOP", key, "0"))
    time.sleep(0)
    for popper, pusher, key in pairs:
        pusher.sendall(cmd("LPUSH", key, "x"))
    for popper, pusher, key in pairs:
        read_reply(pusher, b"")
        read_reply(popper, b"")
    lat.append((time.perf_counter() - t0) * 1000)
elapsed = time.perf_counter() - start
lat.sort()
n = len(lat) * len(pairs)
print("BLPOP", n / elapsed, f"{lat[len(lat) // 2]:.3f}", f"{lat[int(len(lat) * 0.99)]:.3f}", n)
PY

# The request count of each row (pipeline/test), when MIN_SECONDS set it; REQUESTS otherwise.
declare -A row_requests
bench() { # server port pid pipeline test[:size]
    local server=$1 port=$2 pid=$3 pipeline=$4 case=$5 test size label before after line
    local requests=${row_requests[$4/$5]:-$REQUESTS}
    local done_requests=$requests
    test=${case%%:*}
    size=$DATA_SIZE
    label=${test^^}
    if [[ $case == *:* ]]; then
        size=${case#*:}
        label="${label}_${size}B"
    fi
    # Issue 14's command rows run a command line of their own instead of a built-in test.
    local command=() subscribers=()
    case $test in
        evalsha) command=(EVALSHA "$script_sha" 1 "bench:counter:__rand_int__") ;;
        xadd) command=(XADD bench:stream '*' field value) ;;
        publish)
            [[ $case == *:* ]] || size=1
            label=PUBLISH_${size}SUBS
            for _ in $(seq 1 "$size"); do
                "${client_pin[@]}" redis-cli -h 127.0.0.1 -p "$port" subscribe bench:channel >/dev/null 2>&1 &
                subscribers+=($!)
            done
            wait_subscribers "$port" "$size"
            command=(PUBLISH bench:channel hello)
            size=$DATA_SIZE
            ;;
    esac
    before=$(cpu_ticks "$pid")
    local clients_before clients_after
    clients_before=$(children_ticks)
    if [[ $test == blpop ]]; then
        # A client library round trip in Python on both servers: the ratio, not the rate, counts.
        line=$("${client_pin[@]}" python3 "$work/pingpong.py" "$port" "$REQUESTS" "$pipeline")
        done_requests=${line##* }
        line=${line% *}
    elif ((${#command[@]})); then
        # shellcheck disable=SC2086 # the -r option is one or no words on purpose
        line=$("${client_pin[@]}" redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n "$requests" \
            ${RANDOM_KEYS:+-r "$RANDOM_KEYS"} -P "$pipeline" --csv "${command[@]}" |
            tr -d '"\r' |
            awk -F, -v want="${command[0]}" -v label="$label" \
                'NR > 1 && NF >= 7 { split($1, w, " "); if (w[1] == want) { print label, $2, $5, $7; exit } }')
    else
        # Only the requested test's line: LRANGE tests also report the LPUSH that fills the list.
        # shellcheck disable=SC2086 # the -r option is one or no words on purpose
        line=$("${client_pin[@]}" redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n "$requests" -d "$size" \
            ${RANDOM_KEYS:+-r "$RANDOM_KEYS"} -t "$test" -P "$pipeline" --csv |
            tr -d '"\r' |
            awk -F, -v want="${test^^}" -v label="$label" \
                'NR > 1 && NF >= 7 { split($1, w, " "); if (w[1] == want) { print label, $2, $5, $7; exit } }')
    fi
    after=$(cpu_ticks "$pid")
    for sub in "${subscribers[@]}"; do
        kill "$sub" 2>/dev/null || true
        wait "$sub" 2>/dev/null || true
    done
    clients_after=$(children_ticks)
    [[ $test == xadd ]] && redis-cli -h 127.0.0.1 -p "$port" del bench:stream >/dev/null
    if [[ -z $line ]]; then
        echo "bench-server: no result for $case from $server" >&2
        return
    fi
    # The server's CPU time per request (per round trip for the ping-pong): less sensitive than
    # req/s to what else runs on the machine (redis-benchmark itself takes most of one core).
    line="$server $pipeline $line $(awk -v t=$((after - before)) -v c=$((clients_after - clients_before)) \
        -v hz="$ticks_per_sec" -v n="$done_requests" 'BEGIN { printf "%.2f %.2f", t / hz * 1e6 / n, c / hz * 1e6 / n }')"
    echo "$line" >>"$results"
    awk '{ printf "  %-7s P=%-3s %-12s %12.0f req/s  p50 %s ms  p99 %s ms  server cpu %s us/req  client cpu %s\n", $1, $2, $3, $4, $5, $6, $7, $8 }' <<<"$line"
}

# CPU time stolen by the hypervisor and spent by other processes tells how quiet the machine was.
cpu_sample() { awk '/^cpu / { print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $9 }' /proc/stat; }
read -r total0 steal0 < <(cpu_sample)

# Each test is run against both servers back to back, in an order that alternates from one
# measurement to the next and, for each row, from one repetition to the next, so that a change
# in background load, or what the runs just before left on the machine, hits both about
# equally. (The order used to alternate only from one measurement to the next: with an even
# number of rows, as in WIDE=1's 38, every row then had the same order in every repetition, and
# SET of 16 KiB at -P1 always ran ferrite first, right after ferrite's own GET of 1 KiB.)
IFS=, read -r -a test_list <<<"$TESTS"

# MIN_SECONDS: one unmeasured run of each redis-benchmark row against both servers (the same
# commands on both, so their data stays alike) sets the row's count for every repetition.
calibration_rate() { # port pipeline test[:size] requests
    local test=${3%%:*} size=$DATA_SIZE
    [[ $3 == *:* ]] && size=${3#*:}
    # shellcheck disable=SC2086 # the -r option is one or no words on purpose
    "${client_pin[@]}" redis-benchmark -h 127.0.0.1 -p "$1" -c "$CLIENTS" -n "$4" -d "$size" \
        ${RANDOM_KEYS:+-r "$RANDOM_KEYS"} -t "$test" -P "$2" --csv |
        tr -d '"\r' |
        awk -F, -v want="${test^^}" 'NR > 1 && NF >= 7 { split($1, w, " "); if (w[1] == want) { print $2; exit } }'
}
if [[ $MIN_SECONDS != 0 ]]; then
    calibration_requests=$((REQUESTS < 100000 ? REQUESTS : 100000))
    for pipeline in $PIPELINES; do
        for test in "${test_list[@]}"; do
            case ${test%%:*} in evalsha | xadd | publish | blpop) continue ;; esac
            rate_redis=$(calibration_rate "$redis_port" "$pipeline" "$test" "$calibration_requests")
            rate_ferrite=$(calibration_rate "$ferrite_port" "$pipeline" "$test" "$calibration_requests")
            # The control gets the same commands, so that its data stays like the others'.
            [[ -n $redis2_port ]] &&
                calibration_rate "$redis2_port" "$pipeline" "$test" "$calibration_requests" >/dev/null
            row_requests[$pipeline/$test]=$(awk -v r="${rate_redis:-0}" -v f="${rate_ferrite:-0}" \
                -v s="$MIN_SECONDS" -v n="$REQUESTS" \
                'BEGIN { m = (r > f ? r : f) * s; printf "%d", (m > n ? int(m / 1000 + 1) * 1000 : n) }')
            echo "  P=$pipeline $test: ${row_requests[$pipeline/$test]} requests per run (calibration: redis ${rate_redis:-?}, ferrite ${rate_ferrite:-?} req/s)"
        done
    done
fi

servers=(redis ferrite)
[[ -n $redis2_port ]] && servers+=(redis2)
for rep in $(seq 1 "$REPEATS"); do
    echo "repetition $rep/$REPEATS"
    flip=$rep
    for pipeline in $PIPELINES; do
        for test in "${test_list[@]}"; do
            # Two servers alternate; three rotate, and every other round of three runs them in
            # the reverse order, so that each runs right after each of the others.
            order=()
            for i in "${!servers[@]}"; do
                order+=("${servers[(flip + i) % ${#servers[@]}]}")
            done
            if ((${#servers[@]} == 3 && flip / 3 % 2 == 1)); then
                order=("${order[2]}" "${order[1]}" "${order[0]}")
            fi
            flip=$((flip + 1))
            for server in "${order[@]}"; do
                case $server in
                    redis) bench redis "$redis_port" "$redis_pid" "$pipeline" "$test" ;;
                    ferrite) bench ferrite "$ferrite_port" "$ferrite_pid" "$pipeline" "$test" ;;
                    redis2) bench redis2 "$redis2_port" "$redis2_pid" "$pipeline" "$test" ;;
                esac
            done
        done
    done
done
read -r total1 steal1 < <(cpu_sample)
awk -v t=$((total1 - total0)) -v s=$((steal1 - steal0)) \
    'BEGIN { printf "cpu time stolen by the hypervisor during the runs: %.1f%%\n", t ? 100 * s / t : 0 }'
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# Medians per (server, pipeline, test), then one row per (test, pipeline) with the ratio.
python3 - "$results" "$PIPELINES" "$TESTS" "$REPEATS" <<'EOF'
import statistics
import sys

path, pipelines, tests, repeats = sys.argv[1:5]
rows = {}
for line in open(path):
    server, pipeline, test, rps, p50, p99, cpu, client_cpu = line.split()
    rows.setdefault((server, int(pipeline), test), []).append(
        (float(rps), float(p50), float(p99), float(cpu), float(client_cpu)))

def med(server, pipeline, test):
    samples = rows.get((server, pipeline, test))
    if not samples:
        return None
    return tuple(statistics.median(s[i] for s in samples) for i in range(5))

print(f"medians of {repeats} runs each; paired = median of the per-repetition ratios (the runs of")
print("a repetition are back to back, so they share the background load); cpu = server CPU time")
print("(user + system) per request (per BLPOP/LPUSH round trip for BLPOP); client cpu = the same for")
print("the client processes (redis-benchmark, subscribers, ping-pong) against each server")
control = any(server == "redis2" for server, _, _ in rows)
if control:
    print("control = the same paired ratio for a second, identical redis-server: how far chance moves it")
print()
print("| test | pipeline | Redis req/s | Ferrite req/s | Ferrite/Redis | paired |"
      + (" control |" if control else "")
      + " Redis p50/p99 ms | Ferrite p50/p99 ms | Redis cpu µs | Ferrite cpu µs | client cpu µs (Redis / Ferrite) |")
print("|------|---------:|------------:|--------------:|--------------:|-------:|"
      + ("--------:|" if control else "")
      + "-----------------:|-------------------:|-------------:|---------------:|--------------------------------:|")
worst = None
controls = []
def label(case):
    test, _, size = case.partition(":")
    if test == "publish":
        return f"PUBLISH_{size or 1}SUBS"
    return test.upper() + (f"_{size}B" if size else "")

for test in [label(t) for t in tests.split(",")]:
    for pipeline in [int(p) for p in pipelines.split()]:
        r, f = med("redis", pipeline, test), med("ferrite", pipeline, test)
        if r is None or f is None:
            continue
        ratio = f[0] / r[0]
        pairs = zip(rows[("redis", pipeline, test)], rows[("ferrite", pipeline, test)])
        paired = statistics.median(fs[0] / rs[0] for rs, fs in pairs)
        worst = ratio if worst is None else min(worst, ratio)
        control_cell = ""
        if control and rows.get(("redis2", pipeline, test)):
            pairs = zip(rows[("redis", pipeline, test)], rows[("redis2", pipeline, test)])
            controls.append(statistics.median(cs[0] / rs[0] for rs, cs in pairs))
            control_cell = f" {controls[-1]:.2f} |"
        print(f"| {test} | {pipeline} | {r[0]:,.0f} | {f[0]:,.0f} | {ratio:.2f} | {paired:.2f} |{control_cell} "
              f"{r[1]:.3f} / {r[2]:.3f} | {f[1]:.3f} / {f[2]:.3f} | {r[3]:.2f} | {f[3]:.2f} | "
              f"{r[4]:.2f} / {f[4]:.2f} |")
if worst is not None:
    print(f"\nlowest ratio of medians: {worst:.2f}")
if controls:
    print(f"control (redis-server against redis-server): {min(controls):.2f} to {max(controls):.2f}")
EOF
