#!/usr/bin/env bash
# The persistence benchmark: Ferrite with its append-only logs and snapshots against Debian's
# redis-server with `appendonly yes`, the same `appendfsync` policy, in the same run.
#
#   scripts/bench-persistence.sh                  full run, prints the table
#   scripts/bench-persistence.sh --record         ... and writes it into docs/benchmarks.md
#   REQUESTS=100000 KEYS=100000 scripts/bench-persistence.sh     a quick run
#
# 1. Throughput: for each policy in POLICIES ("everysec always"), a fresh redis-server
#    (`--appendonly yes --appendfsync <policy>`, its default save points) and a fresh ferrite
#    (`--appendfsync <policy>`, persistence on as by default, its default snapshot triggers),
#    each in its own directory of the same filesystem; redis-benchmark -c CLIENTS -n REQUESTS -t
#    set, then -t get, -P 1 and -P 16 against one and then the other, alternating which goes
#    first; the median of REPEATS runs, and the median of the REPEATS ratios of the two servers'
#    runs in each repeat ("paired"), with the server's CPU time per request. Each keyspace in
#    KEYSPACES ("1 100000") is measured: 1 is redis-benchmark's one key (`key:__rand_int__`
#    unexpanded: every SET overwrites it), N > 1 adds `-r N` (keys drawn from N, as in
#    bench-server.sh's wide run). With one key the -P16 GET row is bound by redis-benchmark's own
#    CPU for both servers (docs/benchmarks.md, Persistence).
# 2. Snapshot under load (`cargo bench --bench persistence`, benches/persistence.rs): KEYS keys
#    of VALUE bytes, then RATE paced SETs/s to random keys while idle and while SNAPSHOTS
#    BGSAVEs (5, PAUSE_MS apart) run one after the other on each server (policy everysec): the
#    median BGSAVE duration, the largest extra memory, and the write p99 over every round sent
#    while any BGSAVE ran (pooled: one 0.2 s snapshot holds too few rounds for a p99) vs idle.
# 3. Restart: BGREWRITEAOF on both (each compacts its own files), SHUTDOWN, then REPEATS
#    restarts of each on the same directory, alternating which goes first; time from exec to the
#    first PONG (redis-server answers -LOADING until it has loaded; ferrite accepts connections
#    only once loaded), the server's CPU time at that PONG, and DBSIZE afterwards.
#
# PIN=1 pins the servers of part 1 to CPU 1 and redis-benchmark to CPU 0 (taskset, the same for
# both servers): on a 2-core machine the -P1 rows otherwise depend on whether the scheduler puts
# a server and redis-benchmark on one core, run by run (docs/benchmarks.md). SNAPSHOT=0 skips
# parts 2 and 3. Neither can be combined with --record, which records the default run.
#
# Every server listens on a free loopback port and is stopped on exit. Results go to
# target/bench-persistence/{results,table.md}.
set -euo pipefail
BENCH_NAME=bench-persistence
source "$(dirname "$0")/lib/bench.sh"

REQUESTS=${REQUESTS:-1000000}
CLIENTS=${CLIENTS:-50}
REPEATS=${REPEATS:-3}
POLICIES=${POLICIES:-"everysec always"}
PIPELINES=${PIPELINES:-"1 16"}
KEYSPACES=${KEYSPACES:-"1 100000"}
KEYS=${KEYS:-1000000}
VALUE=${VALUE:-100}
RATE=${RATE:-20000}
SNAPSHOTS=${SNAPSHOTS:-5}
PAUSE_MS=${PAUSE_MS:-2000}
SNAPSHOT=${SNAPSHOT:-1}
server_pin=()
client_pin=()
if [[ "${PIN:-0}" == 1 ]]; then
    client_pin=(taskset -c 0)
fi
OUT=${BENCH_OUT:-$ROOT/target/bench-persistence}
mkdir -p "$OUT"
results=$OUT/results
: >"$results"

need_tools redis-server redis-cli redis-benchmark python3
if [[ $record == 1 && ("${PIN:-0}" == 1 || $SNAPSHOT != 1) ]]; then
    die "--record records the default run: drop PIN and SNAPSHOT"
fi
ferrite_bin
log "building the snapshot driver (benches/persistence.rs)"
# Its path from cargo itself: tests/persistence builds a binary of the same name.
bench_bin=$(cargo bench -p ferrite-server --bench persistence --no-run --message-format=json |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "persistence" and "bench" in m["target"]["kind"]:
        print(m["executable"])')

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ns() { date +%s%N; }

# Waits for PONG (not -LOADING); sets ready_secs to the seconds since $3 (ns) when it came.
ready_secs=
wait_loaded() { # port auth start_ns
    local port=$1 auth=$2 start=$3
    for _ in $(seq 1 60000); do
        # shellcheck disable=SC2086 # auth is zero or three words on purpose
        if [[ "$(redis-cli -p "$port" $auth ping 2>/dev/null)" == PONG ]]; then
            ready_secs=$(python3 -c "print(round(($(now_ns) - $start) / 1e9, 3))")
            return 0
        fi
        sleep 0.005
    done
    die "no PONG on port $port"
}

# Server state: port, pid, auth words for redis-cli, directory.
declare -A port pid auth dir

start_redis() { # policy dir
    local p
    p=$(free_port)
    mkdir -p "$2"
    local t0
    t0=$(now_ns)
    "${server_pin[@]}" redis-server --port "$p" --bind 127.0.0.1 --dir "$2" --appendonly yes --appendfsync "$1" \
        --daemonize no --logfile "$2/redis.log" &
    pid[redis]=$!
    pids+=("${pid[redis]}")
    port[redis]=$p
    auth[redis]=""
    dir[redis]=$2
    wait_loaded "$p" "" "$t0"
}

start_ferrite() { # policy dir
    local p
    p=$(free_port)
    mkdir -p "$2"
    local t0
    t0=$(now_ns)
    "${server_pin[@]}" "$FERRITE_BIN" --port "$p" --metrics-addr off --log-level warn --dir "$2" --appendfsync "$1" \
        --admin-secret-file "$work/ferrite.secret" >>"$2.log" 2>&1 &
    pid[ferrite]=$!
    pids+=("${pid[ferrite]}")
    port[ferrite]=$p
    for _ in $(seq 1 1000); do
        [[ -s "$work/ferrite.secret" ]] && break
        sleep 0.01
    done
    auth[ferrite]="-a $(cat "$work/ferrite.secret") --no-auth-warning"
    dir[ferrite]=$2
    wait_loaded "$p" "${auth[ferrite]}" "$t0"
}

stop() { # server
    local s=$1
    # shellcheck disable=SC2086
    redis-cli -p "${port[$s]}" ${auth[$s]} shutdown >/dev/null 2>&1 || true
    wait "${pid[$s]}" 2>/dev/null || true
}

cli() { # server args...
    local s=$1
    shift
    # shellcheck disable=SC2086
    redis-cli -p "${port[$s]}" ${auth[$s]} "$@"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" | tee "$OUT/machine"
echo "redis: $(redis-server --version | cut -d' ' -f3-4); filesystem of the data: $(df -T "$work" | awk 'NR == 2 { print $2 }')" | tee -a "$OUT/machine"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine"

# ---------------------------------------------------------------------------------------------
# 1. Throughput
if [[ "${PIN:-0}" == 1 ]]; then
    server_pin=(taskset -c 1)
    echo "pinned: servers on CPU 1, redis-benchmark on CPU 0 (PIN=1)" | tee -a "$OUT/machine"
fi
# CPU time (user + system, in clock ticks) a process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ticks_per_sec=$(getconf CLK_TCK)
for policy in $POLICIES; do
    start_redis "$policy" "$work/redis-$policy"
    start_ferrite "$policy" "$work/ferrite-$policy"
    for rep in $(seq 1 "$REPEATS"); do
        # Who goes first alternates per repetition at each pipeline depth. (It used to
        # alternate per run, which with two depths fixed the order per depth: ferrite's -P16
        # always came right after both -P1 runs and their ~40k fsyncs each, redis-server's
        # after ferrite's -P16.)
        n=$rep
        for pl in $PIPELINES; do
            order="redis ferrite"
            ((n++ % 2)) && order="ferrite redis"
            for keyspace in $KEYSPACES; do
                rand_args=()
                if [[ $keyspace != 1 ]]; then rand_args=(-r "$keyspace"); fi
                for test in set get; do
                    for s in $order; do
                        before=$(cpu_ticks "${pid[$s]}")
                        line=$("${client_pin[@]}" redis-benchmark -h 127.0.0.1 -p "${port[$s]}" ${auth[$s]:+-a "$(cat "$work/ferrite.secret")"} \
                            -c "$CLIENTS" -n "$REQUESTS" "${rand_args[@]}" \
                            -t "$test" -P "$pl" --csv 2>/dev/null |
                            tr -d '"\r' | awk -F, 'NR > 1 && NF >= 7 { print $1, $2, $7; exit }')
                        after=$(cpu_ticks "${pid[$s]}")
                        [[ -n $line ]] || die "no result for $test -P $pl from $s"
                        cpu_us=$(awk -v t=$((after - before)) -v hz="$ticks_per_sec" -v n="$REQUESTS" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
                        echo "tput $policy $s $pl $line $rep $keyspace $cpu_us" | tee -a "$results"
                    done
                done
            done
        done
    done
    # Both must have logged what they acknowledged: the AOF / logs exist and hold data.
    [[ -n "$(find "$work/redis-$policy" -name '*.aof*' -size +0 | head -1)" ]] || die "redis wrote no AOF"
    [[ -n "$(find "$work/ferrite-$policy" -name '*.flog' -size +1k | head -1)" ]] || die "ferrite wrote no log"
    stop redis
    stop ferrite
done

server_pin=()

# The server's CPU time (utime + stime from /proc), in seconds.
cpu_secs() { # pid
    python3 -c 'import os, sys
f = open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")", 1)[1].split()
print(round((int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"), 2))' "$1"
}

if [[ $SNAPSHOT == 1 ]]; then
    # ---------------------------------------------------------------------------------------------
    # 2. Snapshot under load, then each server compacts its files for part 3
    [[ -x "$bench_bin" ]] || die "benches/persistence.rs was not built"
    declare -A keys_before disk
    for s in redis ferrite; do
        "start_$s" everysec "$work/$s-snap"
        log "$s: $KEYS keys, snapshot under $RATE writes/s"
        password=""
        [[ $s == ferrite ]] && password=$(cat "$work/ferrite.secret")
        json=$(BENCH_ADDR="127.0.0.1:${port[$s]}" BENCH_PID="${pid[$s]}" BENCH_PASSWORD="$password" \
            BENCH_KEYS=$KEYS BENCH_VALUE=$VALUE BENCH_RATE=$RATE \
            BENCH_SNAPSHOTS=$SNAPSHOTS BENCH_PAUSE_MS=$PAUSE_MS "$bench_bin" --bench)
        echo "snap $s $json" | tee -a "$results"
        # Compact (each server's own way); part 3 restarts on these files.
        cli "$s" bgrewriteaof >/dev/null
        for _ in $(seq 1 6000); do
            [[ "$(cli "$s" info persistence | tr -d '\r' | grep -c -E '^(aof_rewrite_in_progress|aof_rewrite_scheduled|rdb_bgsave_in_progress):1')" == 0 ]] && break
            sleep 0.05
        done
        sleep 0.5
        keys_before[$s]=$(cli "$s" dbsize)
        disk[$s]=$(du -sb "${dir[$s]}" | cut -f1)
        stop "$s"
    done

    # ---------------------------------------------------------------------------------------------
    # 3. Restart: REPEATS times each, alternating which server goes first; wall time from exec to
    #    the first PONG, and the server's CPU time (utime + stime from /proc) at that PONG: the
    #    load's CPU cost, which background load on a shared machine disturbs far less than wall time.
    for r in $(seq 1 "$REPEATS"); do
        order="redis ferrite"
        ((r % 2 == 0)) && order="ferrite redis"
        for s in $order; do
            load_avg=$(cut -d' ' -f1 /proc/loadavg)
            "start_$s" everysec "$work/$s-snap"
            secs=$ready_secs
            cpu=$(cpu_secs "${pid[$s]}")
            keys_after=$(cli "$s" dbsize)
            [[ "$keys_after" == "${keys_before[$s]}" ]] || die "$s: ${keys_before[$s]} keys before the restart, $keys_after after"
            echo "load $s $secs $keys_after ${disk[$s]} $cpu $load_avg" | tee -a "$results"
            stop "$s"
        done
    done
fi

# ---------------------------------------------------------------------------------------------
# The table
python3 - "$results" "$OUT/machine" "$KEYS" "$VALUE" "$RATE" "$REQUESTS" "$CLIENTS" "$REPEATS" >"$OUT/table.md" <<'EOF'
import json, statistics, sys
results, machine, keys, value, rate, requests, clients, repeats = sys.argv[1:]
tput, snap, load, cpu = {}, {}, {}, {}
# (policy, pipeline, test) -> repeat -> server -> req/s: the pairs measured one after the other.
pairs = {}
for line in open(results):
    w = line.split()
    if w[0] == "tput":
        # tput policy server pipeline test req/s p99 repeat keyspace cpu-µs-per-request
        _, pol, s, pl, test, rps = w[:6]
        keyspace = w[8] if len(w) >= 10 else "1"
        row = (pol, pl, test, keyspace)
        tput.setdefault(row, {}).setdefault(s, []).append(float(rps))
        if len(w) >= 10:
            cpu.setdefault(row, {}).setdefault(s, []).append(float(w[9]))
        if len(w) >= 8:
            pairs.setdefault(row, {}).setdefault(w[7], {})[s] = float(rps)
    elif w[0] == "snap":
        snap[w[1]] = json.loads(line.split(" ", 2)[2])
    elif w[0] == "load":
        # server, seconds, keys, bytes on disk, CPU seconds, load average before
        load.setdefault(w[1], []).append((float(w[2]), int(w[3]), int(w[4]), float(w[5]), float(w[6])))
out = []
out.append(" ".join(l.strip() for l in open(machine)) + "\n")
out.append(f"Throughput: `redis-benchmark -c {clients} -n {requests} [-r KEYS] -t set|get -P N`, median of {repeats}. "
           "\"keys\": 1 is redis-benchmark's single key (no `-r`), otherwise `-r` of that many. "
           "\"paired\": the median of the ratios of the two servers' runs in each repeat (seconds apart, "
           "alternating which goes first), which a slow phase of the machine lasting several runs "
           "moves less. CPU: the server's user + system time per request, median.\n")
out.append("| appendfsync | pipeline | keys | test | redis-server (req/s) | ferrite (req/s) | ferrite / redis | paired | CPU µs/req (redis / ferrite) |")
out.append("|---|---|---:|---|---:|---:|---:|---:|---:|")
def cpu_cell(row):
    by = cpu.get(row, {})
    if "redis" not in by or "ferrite" not in by:
        return "—"
    return f"{statistics.median(by['redis']):.2f} / {statistics.median(by['ferrite']):.2f}"
for row, by in sorted(tput.items(), key=lambda kv: (kv[0][0] != "everysec", int(kv[0][1]), int(kv[0][3]), kv[0][2])):
    pol, pl, test, keyspace = row
    r = statistics.median(by.get("redis", [float("nan")]))
    f = statistics.median(by.get("ferrite", [float("nan")]))
    ratios = [p["ferrite"] / p["redis"] for p in pairs.get(row, {}).values()
              if "ferrite" in p and "redis" in p]
    paired = f"{statistics.median(ratios):.2f}×" if ratios else "—"
    out.append(f"| {pol} | {pl} | {int(keyspace):,} | {test} | {r:,.0f} | {f:,.0f} | {f / r:.2f}× | {paired} | {cpu_cell(row)} |")
out.append("")
if snap:
    out.append(f"Snapshot of {int(keys):,} keys of {value} bytes while {int(rate):,} SETs/s run (appendfsync everysec):\n")
    out.append("| | redis-server (BGSAVE, fork) | ferrite (BGSAVE, no fork) |")
    out.append("|---|---:|---:|")
    def g(s, k, unit="", fmt="{:,.3f}"):
        v = snap.get(s, {}).get(k)
        return "—" if v is None or isinstance(v, str) and not v else (fmt.format(v) if not isinstance(v, str) else v) + unit
    nsnap = int(snap.get("ferrite", snap.get("redis", {})).get("snapshots", 1) or 1)
    rows = [(f"duration (median of {nsnap})", "snapshot_secs", " s", "{:,.2f}"),
            ("server RSS before", "rss_before_mb", " MB", "{:,.0f}"),
            (f"extra RSS of the server process (peak, largest of {nsnap})", "rss_extra_mb", " MB", "{:,.1f}"),
            ("pages copied by the fork (Redis's `rdb_last_cow_size`)", "cow_mb", " MB", "{:,.1f}"),
            ("write p50 idle", "idle_p50_ms", " ms", "{:,.3f}"),
            ("write p99 idle", "idle_p99_ms", " ms", "{:,.3f}"),
            (f"write p99 during the snapshots (rounds of all {nsnap} pooled)", "snapshot_p99_ms", " ms", "{:,.3f}"),
            ("write max during the snapshots", "snapshot_max_ms", " ms", "{:,.3f}"),
            ("rounds during the snapshots", "snapshot_rounds", "", "{:,.0f}"),
            ("writes/s achieved during it", "snapshot_rate", "", "{:,.0f}")]
    for label, k, unit, fmt in rows:
        out.append(f"| {label} | {g('redis', k, unit, fmt)} | {g('ferrite', k, unit, fmt)} |")
    for s in ("redis", "ferrite"):
        d = snap.get(s, {})
        if d.get("idle_p99_ms") and d.get("snapshot_p99_ms"):
            out.append(f"| {s}: p99 during / idle | {d['snapshot_p99_ms'] / d['idle_p99_ms']:.2f}× | |" if s == "redis"
                       else f"| {s}: p99 during / idle | | {d['snapshot_p99_ms'] / d['idle_p99_ms']:.2f}× |")
    out.append("")
if load:
    out.append(f"Restart after BGREWRITEAOF (each server loading its own compacted files), exec to first PONG; "
               f"median of {repeats} restarts each, alternating which server goes first; CPU = the server's "
               f"utime + stime at the PONG:\n")
    out.append("| | keys | on disk | load time | keys/s | CPU time | load average before (min–max) |")
    out.append("|---|---:|---:|---:|---:|---:|---|")
    med = {}
    for s in ("redis", "ferrite"):
        if s in load:
            runs = load[s]
            secs = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[3] for r in runs)
            n, disk = runs[0][1], runs[0][2]
            la = [r[4] for r in runs]
            med[s] = (secs, cpu)
            out.append(f"| {s} | {n:,} | {disk / 1e6:,.0f} MB | {secs:.2f} s | {n / secs:,.0f} | {cpu:.2f} s | {min(la):.2f}–{max(la):.2f} |")
    if "redis" in med and "ferrite" in med:
        out.append(f"\nFerrite loads {med['redis'][0] / med['ferrite'][0]:.2f}× as fast as redis-server "
                   f"(wall time), using {med['ferrite'][1] / med['redis'][1]:.2f}× its CPU time.")
print("\n".join(out))
EOF
cat "$OUT/table.md"

if [[ $record == 1 ]]; then
    python3 - "$ROOT/docs/benchmarks.md" "$OUT/table.md" <<'EOF'
import datetime, sys
doc, table_path = sys.argv[1:]
begin, end = "<!-- bench-persistence:begin -->", "<!-- bench-persistence:end -->"
block = (f"{begin}\n_Recorded {datetime.date.today()} by `scripts/bench-persistence.sh --record`._\n\n"
         f"{open(table_path).read()}{end}")
text = open(doc).read()
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    text = head + block + rest.split(end, 1)[1]
else:
    text = text.rstrip("\n") + "\n\n## Persistence\n\n" + block + "\n"
open(doc, "w").write(text)
print(f"recorded in {doc}", file=sys.stderr)
EOF
fi
