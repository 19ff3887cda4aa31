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

# 2. redis-server loading it at startup.
redis_times=()
for r in $(seq 1 "$REPEATS"); do
    port=$(free_port)
    logf=$work/redis-load-$r.log
    redis-server --port "$port" --bind 127.0.0.1 --dir "$src" --dbfilename dump.rdb --save "" \
        --appendonly no --logfile "$logf" &
    pid=$!
    pids+=("$pid")
    wait_pong "$port"
    secs=$(sed -n 's/.*DB loaded from disk: \([0-9.]*\) seconds.*/\1/p' "$logf" | tail -1)
    [[ -n "$secs" ]] || die "no load time in $logf"
    got=$(redis-cli -p "$port" dbsize)
    [[ "$got" == "$KEYS" ]] || die "redis-server loaded $got keys"
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    wait "$pid" 2>/dev/null || true
    log "redis-server load $r: $secs s"
    redis_times+=("$secs")
    echo "redis load_s=$secs" >>"$results"
done

# 3. ferrite restoring it into a tenant.
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
ferrite_times=()
for r in $(seq 1 "$REPEATS"); do
    t0=$(now_ns)
    reply=$(fcli tenant.restore bench rdb "$rdb" replace 2>&1)
    t1=$(now_ns)
    [[ "$reply" != *ERR* ]] || die "TENANT.RESTORE: $reply"
    secs=$(python3 -c "print(round(($t1 - $t0) / 1e9, 3))")
    got=$(printf 'TENANT.USE bench\nDBSIZE\n' | fcli | tail -1)
    [[ "$got" == "$KEYS" ]] || die "ferrite restored $got keys, expected $KEYS"
    log "ferrite restore $r: $secs s"
    ferrite_times+=("$secs")
    echo "ferrite restore_s=$secs" >>"$results"
done

rmed=$(median "${redis_times[@]}")
fmed=$(median "${ferrite_times[@]}")
ratio=$(python3 -c "print(round($rmed / $fmed, 2))")
load=$(cut -d' ' -f1-3 /proc/loadavg)
table=$OUT/table.md
{
    echo "| keys | dump.rdb | redis-server startup load | ferrite TENANT.RESTORE RDB | ratio (redis / ferrite) |"
    echo "|---:|---:|---:|---:|---:|"
    echo "| $KEYS | $((size / 1024 / 1024)) MiB | ${rmed} s | ${fmed} s | ${ratio}x |"
    echo
    echo "Medians of $REPEATS runs; load average during the run: $load; $(nproc) cores."
} >"$table"
cat "$table"

if ((record)); then
    python3 - "$ROOT/docs/benchmarks.md" "$table" "KEYS=$KEYS REPEATS=$REPEATS scripts/bench-rdb.sh --record" <<'EOF'
import sys, re
doc_path, table_path, command = sys.argv[1:]
doc = open(doc_path).read()
table = open(table_path).read().strip()
section = ("## RDB load\n\nThe same `dump.rdb` (written by redis-server 7.0) loaded by redis-server at "
           "startup and by `TENANT.RESTORE <tenant> RDB <path> REPLACE` into a tenant of a ferrite with "
           "its defaults (persistence on: the restore includes making the new keyspace durable). "
           "Command: `" + command + "`.\n\n" + table + "\n")
pattern = re.compile(r"## RDB load\n.*?(?=\n## |\Z)", re.S)
doc = pattern.sub(lambda m: section, doc) if pattern.search(doc) else doc.rstrip() + "\n\n" + section
open(doc_path, "w").write(doc)
EOF
    log "recorded in docs/benchmarks.md"
fi
