#!/usr/bin/env bash
# The RDB load benchmark (issue 15): the same dump.rdb, written by redis-server, loaded by
# redis-server at startup and by ferrite's `TENANT.RESTORE <tenant> RDB <path> REPLACE`, in the
# same run.
#
#   scripts/bench-rdb.sh                 full run (1M keys), prints the table
#   scripts/bench-rdb.sh --record        ... and writes it into docs/benchmarks.md
#   KEYS=100000 REPEATS=1 scripts/bench-rdb.sh      a quick run
#
# 1. A redis-server is filled with KEYS keys (scripts: python3 generator piped into
#    `redis-cli --pipe`): 70% strings (16-100 bytes, some integers), then hashes (8 fields),
#    lists (8 elements), sets of integers (intsets) and of strings, sorted sets (8 members), in
#    Redis's compact encodings as redis-server 7 keeps them; 10% of the keys with a TTL. SAVE.
# 2. redis-server is started REPEATS times on that file (`--save ""`, nothing else to do); its
#    own log line "DB loaded from disk: <s> seconds" is its load time.
# 3. ferrite (defaults: persistence on, so the restored keyspace is made durable as part of the
#    restore) is started once; `TENANT.RESTORE bench RDB <file> REPLACE` is timed REPEATS times
#    from send to reply (redis-cli), and DBSIZE of the tenant is checked after each.
# The repetitions of 2. and 3. alternate which goes first, so both see about the same background
# load; each also reads the server's CPU time (utime + stime from /proc), which a shared machine
# disturbs far less than wall time.
# ratio = redis load time / ferrite restore time (>= 1.0: ferrite is at least as fast). Medians.
# Every server listens on a free loopback port and is stopped on exit. Results go to
# target/bench-rdb/{results,table.md}.
set -euo pipefail
BENCH_NAME=bench-rdb
source "$(dirname "$0")/lib/bench.sh"

KEYS=${KEYS:-1000000}
REPEATS=${REPEATS:-3}
OUT=${BENCH_OUT:-$ROOT/target/bench-rdb}
mkdir -p "$OUT"
results=$OUT/results
: >"$results"

need_tools redis-server redis-cli python3
ferrite_bin

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
median() { python3 -c 'import sys, statistics; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

# 1. The file.
src=$work/src
mkdir -p "$src"
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --dir "$src" --dbfilename dump.rdb --save "" \
    --appendonly no --logfile "$src/fill.log" &
rpid=$!
pids+=("$rpid")
wait_pong "$rport"
log "filling redis-server with $KEYS keys"
python3 "$ROOT/scripts/lib/fill_mixed.py" "$KEYS" --integers | redis-cli -p "$rport" --pipe >/dev/null
got=$(redis-cli -p "$rport" dbsize)
[[ "$got" == "$KEYS" ]] || die "redis-server holds $got keys, expected $KEYS"
redis-cli -p "$rport" save >/dev/null
redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true
wait "$rpid" 2>/dev/null || true
rdb=$src/dump.rdb
size=$(stat -c %s "$rdb")
log "dump.rdb: $size bytes"

# 2. and 3., alternating which goes first in each repetition.
cpu_secs() { # pid: utime + stime so far
    python3 -c 'import os, sys
f = open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")", 1)[1].split()
print(round((int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"), 2))' "$1"
}
redis_load() { # repetition
    local r=$1 port logf pid secs got cpu load_avg
    port=$(free_port)
    logf=$work/redis-load-$r.log
    load_avg=$(cut -d' ' -f1 /proc/loadavg)
    redis-server --port "$port" --bind 127.0.0.1 --dir "$src" --dbfilename dump.rdb --save "" \
        --appendonly no --logfile "$logf" &
    pid=$!
    pids+=("$pid")
    wait_pong "$port"
    cpu=$(cpu_secs "$pid")
    secs=$(sed -n 's/.*DB loaded from disk: \([0-9.]*\) seconds.*/\1/p' "$logf" | tail -1)
    [[ -n "$secs" ]] || die "no load time in $logf"
    got=$(redis-cli -p "$port" dbsize)
    [[ "$got" == "$KEYS" ]] || die "redis-server loaded $got keys"
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    wait "$pid" 2>/dev/null || true
    log "redis-server load $r: $secs s, cpu $cpu s (load $load_avg)"
    redis_times+=("$secs")
    redis_cpus+=("$cpu")
    loads+=("$load_avg")
    echo "redis load_s=$secs cpu_s=$cpu load=$load_avg" >>"$results"
}

fdir=$work/ferrite
mkdir -p "$fdir"
fport=$(free_port)
pass=bench-rdb-secret
"$FERRITE_BIN" --port "$fport" --bind 127.0.0.1 --dir "$fdir" --requirepass "$pass" \
    --metrics-addr off --log-level warn 2>"$fdir/ferrite.log" &
fpid=$!
pids+=("$fpid")
wait_pong "$fport" -a "$pass" --no-auth-warning
fcli() { redis-cli -p "$fport" -a "$pass" --no-auth-warning "$@"; }
[[ "$(fcli tenant.create bench)" == OK ]] || die "TENANT.CREATE failed"
ferrite_restore() { # repetition
    local r=$1 t0 t1 c0 c1 reply secs got cpu load_avg
    load_avg=$(cut -d' ' -f1 /proc/loadavg)
    c0=$(cpu_secs "$fpid")
    t0=$(now_ns)
    reply=$(fcli tenant.restore bench rdb "$rdb" replace 2>&1)
    t1=$(now_ns)
    c1=$(cpu_secs "$fpid")
    [[ "$reply" != *ERR* ]] || die "TENANT.RESTORE: $reply"
    secs=$(python3 -c "print(round(($t1 - $t0) / 1e9, 3))")
    cpu=$(python3 -c "print(round($c1 - $c0, 2))")
    got=$(printf 'TENANT.USE bench\nDBSIZE\n' | fcli | tail -1)
    [[ "$got" == "$KEYS" ]] || die "ferrite restored $got keys, expected $KEYS"
    log "ferrite restore $r: $secs s, cpu $cpu s (load $load_avg)"
    ferrite_times+=("$secs")
    ferrite_cpus+=("$cpu")
    loads+=("$load_avg")
    echo "ferrite restore_s=$secs cpu_s=$cpu load=$load_avg" >>"$results"
    # The replaced contents are freed in the background after the reply: let that finish
    # before the next measurement.
    sleep 2
}

redis_times=() redis_cpus=() ferrite_times=() ferrite_cpus=() loads=()
for r in $(seq 1 "$REPEATS"); do
    if ((r % 2)); then
        redis_load "$r"
        ferrite_restore "$r"
    else
        ferrite_restore "$r"
        redis_load "$r"
    fi
done

rmed=$(median "${redis_times[@]}")
fmed=$(median "${ferrite_times[@]}")
rcpu=$(median "${redis_cpus[@]}")
fcpu=$(median "${ferrite_cpus[@]}")
ratio=$(python3 -c "print(round($rmed / $fmed, 2))")
cpu_ratio=$(python3 -c "print(round($rcpu / $fcpu, 2))")
load_range=$(python3 -c 'import sys; v = [float(x) for x in sys.argv[1:]]; print(f"{min(v):.2f}–{max(v):.2f}")' "${loads[@]}")
table=$OUT/table.md
{
    echo "| keys | dump.rdb | redis-server startup load | ferrite TENANT.RESTORE RDB | ratio (redis / ferrite) | redis CPU | ferrite CPU | CPU ratio (redis / ferrite) |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
    echo "| $KEYS | $((size / 1024 / 1024)) MiB | ${rmed} s | ${fmed} s | ${ratio}x | ${rcpu} s | ${fcpu} s | ${cpu_ratio}x |"
    echo
    echo "Medians of $REPEATS runs each, alternating which server goes first; CPU = the process's utime + stime (redis-server: at its first PONG after the load, startup included; ferrite: around the restore); 1-minute load average before each run: $load_range; $(nproc) cores."
} >"$table"
cat "$table"

if ((record)); then
    python3 - "$ROOT/docs/benchmarks.md" "$table" "KEYS=$KEYS REPEATS=$REPEATS scripts/bench-rdb.sh --record" <<'EOF'
import datetime, sys, re
doc_path, table_path, command = sys.argv[1:]
when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
doc = open(doc_path).read()
table = open(table_path).read().strip()
begin, end = "<!-- bench-rdb:begin -->", "<!-- bench-rdb:end -->"
block = f"{begin}\n_Recorded {when} by `{command}`._\n\n{table}\n{end}"
if begin in doc and end in doc:
    # Only the recorded block is replaced: the reading around it stays.
    doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
else:
    section = ("## RDB load\n\nThe same `dump.rdb` (written by redis-server 7.0) loaded by redis-server at "
               "startup and by `TENANT.RESTORE <tenant> RDB <path> REPLACE` into a tenant of a ferrite with "
               "its defaults (persistence on: the restore includes making the new keyspace durable).\n\n"
               + block + "\n")
    pattern = re.compile(r"## RDB load\n.*?(?=\n## |\Z)", re.S)
    doc = pattern.sub(lambda m: section, doc) if pattern.search(doc) else doc.rstrip() + "\n\n" + section
open(doc_path, "w").write(doc)
EOF
    log "recorded in docs/benchmarks.md"
fi
