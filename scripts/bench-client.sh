#!/usr/bin/env bash
# What redis-benchmark (the client) and the server do per request, against redis-server and one
# or more Ferrite builds in turn, the same minutes: the client's CPU (user/system) and syscalls
# (epoll_wait, recvfrom, sendto: hiredis reads with recv and writes with send), the servers'
# syscalls (epoll_wait, reads, writes) and context switches. Counts, unlike rates, are not
# distorted by a loaded machine (issue 13: why the client spends more CPU per request against
# Ferrite at -P16 on a quiet machine; see docs/benchmarks.md).
#
#   scripts/bench-client.sh                                  # main's release build, -P16 then -P1
#   BINS="old:/path/a new:target/release/ferrite" TESTS="lpush set" PIPES=16 REPEATS=3 \
#       scripts/bench-client.sh
#
# Environment: BINS (label:binary pairs; default "ferrite:target/release/ferrite"), TESTS
# (redis-benchmark tests, space-separated; default "lpush lpop rpop set get"), PIPES ("16 1"),
# REQUESTS (300000), CLIENTS (50), RANDOM_KEYS (100000), REPEATS (1). Every server gets
# FLUSHALL before each measurement, and LPOP/RPOP an unmeasured LPUSH run of as many elements
# first (redis-benchmark pushes to and pops from one list, `mylist`).
#
# Columns, per request: rps (redis-benchmark's), cli_us (the client's task-clock), srv_us (the
# server's user+system time from /proc, 10 ms ticks), c_epw/c_recv (client epoll_wait and
# recvfrom calls), c_ev/epw (recvfroms per epoll_wait: about the sockets found ready per call),
# s_epw/s_read/s_write (server epoll_wait, read+recvfrom, write+writev+sendto calls), s_cs (server
# context switches), c_user/c_sys (client user and system time, 10 ms resolution), c_wake (wakeups
# the client caused: `sched_waking`, which fires in the waker; `sched_wakeup` fires on the wakee's
# CPU when the wakeup is queued to an idle one and so missed most of the client's wakeups of the
# server), c_cs (client context switches), c_ipi (interprocessor interrupts the client sent: a
# wakeup of the server on the other core, a VM exit on a virtual machine), s_sleep (the server's
# main thread's voluntary context switches: how often it went to sleep and had to be woken), and
# other (the CPU, in % of one core, that other processes used in the half second before the
# row: the load that makes a row's rate and CPU figures move). Needs perf with syscall and ipi
# tracepoints.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BINS=${BINS:-"ferrite:$root/target/release/ferrite"}
TESTS=${TESTS:-"lpush lpop rpop set get"}
PIPES=${PIPES:-"16 1"}
REQUESTS=${REQUESTS:-300000}
CLIENTS=${CLIENTS:-50}
RANDOM_KEYS=${RANDOM_KEYS:-100000}
REPEATS=${REPEATS:-1}

BENCH_NAME=bench-client
source "$root/scripts/lib/bench.sh"
need_tools redis-server redis-benchmark redis-cli perf python3
start_scratch

declare -A port pid
servers=(redis)
port[redis]=$(free_port)
redis-server --port "${port[redis]}" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no --logfile "$work/redis.log" &
pid[redis]=$!
pids+=("$!")
for entry in $BINS; do
    label=${entry%%:*}
    bin=${entry#*:}
    servers+=("$label")
    port[$label]=$(free_port)
    "$bin" --port "${port[$label]}" --metrics-addr off --log-level warn --appendonly no \
        --admin-secret-file "$work/$label.secret" >"$work/$label.log" 2>&1 &
    pid[$label]=$!
    pids+=("$!")
done
for s in "${servers[@]}"; do
    wait_pong "${port[$s]}"
done

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
sleeps() { awk '/^voluntary_ctxt_switches/ { print $2 }' "/proc/$1/status"; }
# CPU (% of one core) of the processes other than the servers over half a second.
other_cpu() {
    python3 - "${pid[@]}" <<'PY'
import os, sys, time
mine = set(sys.argv[1:]) | {str(os.getpid())}
def ticks():
    t = {}
    for p in filter(str.isdigit, os.listdir('/proc')):
        if p in mine:
            continue
        try:
            with open('/proc/%s/stat' % p) as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rindex(')') + 2:].split()
        t[p] = int(fields[11]) + int(fields[12])
    return t
a = ticks()
time.sleep(0.5)
b = ticks()
print('%.0f' % (sum(v - a.get(p, v) for p, v in b.items()) * 100 / os.sysconf('SC_CLK_TCK') / 0.5))
PY
}
ticks_per_sec=$(getconf CLK_TCK)
count() { # event file
    grep -m1 ",$1," "$2" | cut -d, -f1 | sed 's/<not counted>/0/'
}

echo "servers: ${servers[*]} ($BINS)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "command: redis-benchmark -h 127.0.0.1 -p PORT -c $CLIENTS -n $REQUESTS -r $RANDOM_KEYS -P N -t TEST --csv"
printf '%-6s %3s %-8s %9s %7s %7s %7s %7s %6s | %7s %7s %7s %7s | %6s %6s %7s %7s %7s %7s %5s\n' \
    test P server rps cli_us srv_us c_epw c_recv c_ev/epw s_epw s_read s_write s_cs \
    c_user c_sys c_wake c_cs c_ipi s_sleep other
server_events=syscalls:sys_enter_epoll_wait,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom
server_events+=,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto
server_events+=,context-switches
client_events=syscalls:sys_enter_epoll_wait,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto
client_events+=,task-clock,sched:sched_waking,context-switches,ipi:ipi_send_cpu
for _ in $(seq 1 "$REPEATS"); do
    for P in $PIPES; do
        for t in $TESTS; do
            for s in "${servers[@]}"; do
                redis-cli -p "${port[$s]}" flushall >/dev/null
                if [[ $t == lpop || $t == rpop ]]; then
                    # Something to pop, as in bench-server.sh, where they follow LPUSH/RPUSH.
                    redis-benchmark -h 127.0.0.1 -p "${port[$s]}" -c "$CLIENTS" -n "$REQUESTS" \
                        -P 16 -t lpush -q >/dev/null 2>&1
                fi
                other=$(other_cpu)
                perf stat -x, -o "$work/server.perf" -p "${pid[$s]}" -e "$server_events" &
                server_perf=$!
                sleep 0.2
                before=$(cpu_ticks "${pid[$s]}")
                slept_before=$(sleeps "${pid[$s]}")
                perf stat -x, -o "$work/client.perf" -e "$client_events" \
                    /usr/bin/time -f '%U %S' -o "$work/client.time" \
                    redis-benchmark -h 127.0.0.1 -p "${port[$s]}" -c "$CLIENTS" -n "$REQUESTS" \
                    -r "$RANDOM_KEYS" -P "$P" -t "$t" --csv >"$work/out" 2>/dev/null
                after=$(cpu_ticks "${pid[$s]}")
                slept=$(($(sleeps "${pid[$s]}") - slept_before))
                kill -INT "$server_perf"
                wait "$server_perf" || true
                rps=$(tail -1 "$work/out" | cut -d, -f2 | tr -d '"')
                read -r user sys <"$work/client.time"
                c=$work/client.perf
                v=$work/server.perf
                python3 - "$t" "$P" "$s" "$rps" "$REQUESTS" "$ticks_per_sec" "$((after - before))" \
                    "$(count task-clock "$c")" "$(count syscalls:sys_enter_epoll_wait "$c")" \
                    "$(count syscalls:sys_enter_recvfrom "$c")" \
                    "$(count syscalls:sys_enter_epoll_wait "$v")" \
                    "$(($(count syscalls:sys_enter_read "$v") + $(count syscalls:sys_enter_recvfrom "$v")))" \
                    "$(($(count syscalls:sys_enter_write "$v") + $(count syscalls:sys_enter_writev "$v") + $(count syscalls:sys_enter_sendto "$v")))" \
                    "$(count context-switches "$v")" "$user" "$sys" \
                    "$(count sched:sched_waking "$c")" "$(count context-switches "$c")" \
                    "$(count ipi:ipi_send_cpu "$c")" "$slept" "$other" <<'PY'
import sys
t, p, s, rps = sys.argv[1:5]
n, hz, ticks = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
task_ms, c_epw, c_recv, s_epw, s_read, s_write, s_cs = map(float, sys.argv[8:15])
user, system, wake, c_cs, c_ipi, slept = map(float, sys.argv[15:21])
other = sys.argv[21]
print('%-6s %3s %-8s %9.0f %7.3f %7.3f %7.4f %7.4f %6.2f | %7.4f %7.4f %7.4f %7.4f | %6.3f %6.3f %7.4f %7.4f %7.4f %7.4f %5s' % (
    t, p, s, float(rps), task_ms * 1000 / n, ticks * 1e6 / hz / n, c_epw / n, c_recv / n,
    c_recv / max(c_epw, 1), s_epw / n, s_read / n, s_write / n, s_cs / n,
    user * 1e6 / n, system * 1e6 / n, wake / n, c_cs / n, c_ipi / n, slept / n, other))
PY
            done
        done
    done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
