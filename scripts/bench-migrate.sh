#!/usr/bin/env bash
# The migration benchmark: Ferrite's live tenant migration against Redis moving the same data.
#
#   scripts/bench-migrate.sh                     full run (1M keys of 100 bytes), prints the table
#   scripts/bench-migrate.sh --record            ... and writes it into docs/benchmarks.md
#   scripts/bench-migrate.sh --wait-quiet        first wait (up to 30 min) for an idle machine
#   BENCH_KEYS=100000 BENCH_CUTOVERS=20 scripts/bench-migrate.sh     a quick run
#   BENCH_SKIP=redis scripts/bench-migrate.sh    only Ferrite (or BENCH_SKIP=ferrite)
#
# Ferrite: `cargo bench --bench migrate` (benches/migrate.rs) migrates a tenant between two
# `ferrite` processes, idle, with mixed types, under 20k and 100k writes/s, and 100 cutovers of a
# 100k-key tenant back and forth under 20k writes/s. Redis (Debian's redis-server): the same keys
# moved between two cluster nodes with `redis-cli --cluster reshard` (default pipeline and
# --cluster-pipeline 1000), and a full replication sync to a fresh replica (diskless master; the
# replica loading from disk, redis' default, and diskless). Every server listens on a free
# loopback port and is stopped on exit. Results: target/bench-migrate/results.jsonl and table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

record=0
wait_quiet=0
for a in "$@"; do
  case $a in
    --record) record=1 ;;
    --wait-quiet) wait_quiet=1 ;;
    *) echo "usage: $0 [--record] [--wait-quiet]" >&2; exit 2 ;;
  esac
done

export BENCH_KEYS=${BENCH_KEYS:-1000000}
export BENCH_VALUE=${BENCH_VALUE:-100}
SKIP=${BENCH_SKIP:-}
OUT=${BENCH_OUT:-$ROOT/target/bench-migrate}
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"

log() { printf '[bench-migrate] %s\n' "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

for tool in redis-server redis-cli python3; do
  command -v $tool >/dev/null || die "$tool is missing (apt-get install redis-server redis-tools python3)"
done

TMP=$(mktemp -d)
PIDS=()
BENCH_PGID=
cleanup() {
  [ -z "$BENCH_PGID" ] || kill -- -"$BENCH_PGID" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ns() { date +%s%N; }
secs_since() { python3 -c "import sys; print(round(($(now_ns) - $1) / 1e9, 3))"; }

# A free loopback port below 55535 whose cluster bus port (+10000) is free too.
free_port() {
  python3 - <<'PY'
import random, socket
for _ in range(1000):
    p = random.randint(20000, 45000)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
        print(p); break
    except OSError:
        pass
PY
}

rc() { local p=$1; shift; redis-cli -h 127.0.0.1 -p "$p" "$@"; }

# start_redis NAME PORT [redis-server options...]; its pid goes into PIDS.
start_redis() {
  local name=$1 port=$2; shift 2
  mkdir -p "$TMP/$name"
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$TMP/$name" \
    --enable-debug-command local --logfile "$TMP/$name.log" "$@" &
  PIDS+=($!)
  for _ in $(seq 1 100); do
    [ "$(rc "$port" PING 2>/dev/null)" = PONG ] && return 0
    sleep 0.05
  done
  die "redis-server $name on port $port did not start: $(tail -5 "$TMP/$name.log")"
}

stop_redis() { rc "$1" SHUTDOWN NOSAVE >/dev/null 2>&1 || true; }

# Waits until COND (a command) succeeds, polling every 10 ms, for at most LIMIT seconds.
wait_until() {
  local limit=$1; shift
  local deadline=$(( $(date +%s) + limit ))
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.01
  done
}

emit() { echo "$1" | tee -a "$RESULTS"; }

quiet_now() {
  # 1-minute load under 0.3 and no process above 10% CPU in a 2 s sample.
  local load busy
  load=$(cut -d' ' -f1 /proc/loadavg)
  busy=$(top -bn2 -d2 | awk '/^top -/{n++} n==2 && $1 ~ /^[0-9]+$/ && $9+0 > 10 {print $12}' | head -3 | tr '\n' ' ')
  python3 -c "import sys; sys.exit(0 if $load < 0.3 else 1)" && [ -z "$busy" ]
}

conditions() {
  local cpu
  cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
  python3 - "$cpu" "$(nproc)" "$(free -g | awk '/Mem:/{print $2}')" "$(cut -d' ' -f1-3 /proc/loadavg)" \
    "$(redis-server --version | grep -o 'v=[0-9.]*' | cut -d= -f2)" "$(rustc --version 2>/dev/null || echo '?')" <<'EOF'
import json, sys
cpu, cores, mem, load, redis, rust = sys.argv[1:]
print(json.dumps({"bench": "machine", "cpu": cpu, "cores": int(cores), "mem_gb": int(mem),
                  "loadavg": load, "redis": redis, "rustc": rust}))
EOF
}

if [ $wait_quiet = 1 ]; then
  for i in $(seq 1 30); do
    quiet_now && break
    log "machine busy (load $(cut -d' ' -f1-3 /proc/loadavg)); waiting 60 s ($i/30)"
    sleep 60
  done
fi
emit "$(conditions)"
log "top processes at start:"; top -bn1 | sed -n '7,12p' >&2

N=$BENCH_KEYS
V=$BENCH_VALUE

# ---------------------------------------------------------------------------------------------
# Redis: cluster reshard between two nodes.
reshard() {
  local pipeline=$1 pa pb ida idb t0 secs a b
  pa=$(free_port); pb=$(free_port)
  local copts=(--cluster-enabled yes --cluster-node-timeout 5000)
  start_redis "ra$pipeline" "$pa" "${copts[@]}" --cluster-config-file "$TMP/ra$pipeline/nodes.conf"
  start_redis "rb$pipeline" "$pb" "${copts[@]}" --cluster-config-file "$TMP/rb$pipeline/nodes.conf"
  # `--cluster create` wants three masters: give node A every slot and introduce B instead.
  rc "$pa" CLUSTER ADDSLOTSRANGE 0 16383 >/dev/null
  rc "$pa" CLUSTER MEET 127.0.0.1 "$pb" >/dev/null
  cluster_ok() {
    for p in "$pa" "$pb"; do
      rc "$p" CLUSTER INFO | grep -q 'cluster_state:ok' || return 1
      rc "$p" CLUSTER INFO | grep -q 'cluster_known_nodes:2' || return 1
    done
  }
  wait_until 30 cluster_ok || die "the two-node cluster did not form"
  rc "$pa" DEBUG POPULATE "$N" key "$V" >/dev/null
  [ "$(rc "$pa" DBSIZE)" = "$N" ] || die "redis node A holds $(rc "$pa" DBSIZE) keys, expected $N"
  ida=$(rc "$pa" CLUSTER MYID); idb=$(rc "$pb" CLUSTER MYID)
  local extra=()
  [ "$pipeline" = default ] || extra=(--cluster-pipeline "$pipeline")
  log "redis reshard of $N keys, pipeline $pipeline"
  t0=$(now_ns)
  redis-cli --cluster reshard "127.0.0.1:$pa" --cluster-from "$ida" --cluster-to "$idb" \
    --cluster-slots 16384 --cluster-yes "${extra[@]}" >"$OUT/reshard-$pipeline.log" 2>&1 \
    || die "reshard failed: $(tail -5 "$OUT/reshard-$pipeline.log")"
  secs=$(secs_since "$t0")
  a=$(rc "$pa" DBSIZE); b=$(rc "$pb" DBSIZE)
  [ "$b" = "$N" ] && [ "$a" = 0 ] || die "after the reshard A holds $a keys and B $b (expected 0 and $N)"
  emit "{\"bench\":\"redis\",\"scenario\":\"reshard\",\"pipeline\":\"$pipeline\",\"keys\":$N,\"value_bytes\":$V,\"total_s\":$secs,\"keys_per_s\":$(python3 -c "print(round($N / $secs))"),\"target_has_every_key\":true}"
  stop_redis "$pa"; stop_redis "$pb"
}

# Redis: full sync of a fresh replica from a diskless master.
fullsync() {
  local load=$1 pm pr t0 secs
  pm=$(free_port); pr=$(free_port)
  start_redis "rm$load" "$pm" --repl-diskless-sync yes --repl-diskless-sync-delay 0
  start_redis "rr$load" "$pr" --repl-diskless-load "$load"
  rc "$pm" DEBUG POPULATE "$N" key "$V" >/dev/null
  [ "$(rc "$pm" DBSIZE)" = "$N" ] || die "redis master holds $(rc "$pm" DBSIZE) keys, expected $N"
  synced() {
    rc "$pr" INFO replication | grep -q 'master_link_status:up' && [ "$(rc "$pr" DBSIZE)" = "$N" ]
  }
  log "redis full sync of $N keys (replica repl-diskless-load $load)"
  t0=$(now_ns)
  rc "$pr" REPLICAOF 127.0.0.1 "$pm" >/dev/null
  wait_until 300 synced || die "the replica did not sync within 300 s"
  secs=$(secs_since "$t0")
  emit "{\"bench\":\"redis\",\"scenario\":\"fullsync\",\"replica_load\":\"$load\",\"keys\":$N,\"value_bytes\":$V,\"total_s\":$secs,\"keys_per_s\":$(python3 -c "print(round($N / $secs))"),\"target_has_every_key\":true}"
  stop_redis "$pr"; stop_redis "$pm"
}

if [[ $SKIP != *redis* ]]; then
  reshard default
  reshard 1000
  fullsync disabled
  fullsync on-empty-db
fi

# ---------------------------------------------------------------------------------------------
# Ferrite.
if [[ $SKIP != *ferrite* ]]; then
  log "building the benchmark (cargo bench --no-run)"
  cargo bench -p ferrite-server --bench migrate --no-run >&2
  log "running benches/migrate.rs"
  # In its own process group, so that an interrupted run also stops the ferrite processes the
  # benchmark started (see cleanup).
  setsid cargo bench -q -p ferrite-server --bench migrate >"$OUT/ferrite.jsonl" &
  BENCH_PGID=$!
  set +e
  wait "$BENCH_PGID"
  status=$?
  set -e
  BENCH_PGID=
  cat "$OUT/ferrite.jsonl"
  cat "$OUT/ferrite.jsonl" >>"$RESULTS"
  [ "$status" = 0 ] || log "the Ferrite benchmark reported a failure (exit $status); see above"
fi

# ---------------------------------------------------------------------------------------------
# The table.
python3 - "$RESULTS" "$OUT/table.md" "$*" <<'EOF'
import json, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
out_path, args = sys.argv[2], sys.argv[3]
def find(bench, scenario, **kw):
    for r in rows:
        if r.get("bench") == bench and r.get("scenario") == scenario and all(r.get(k) == v for k, v in kw.items()):
            return r
    return None

m = find("machine", None) or next((r for r in rows if r.get("bench") == "machine"), {})
idle, mixed, load, heavy, cut = (find("ferrite", s) for s in ("idle", "mixed", "load", "heavy", "cutovers"))
rs_def, rs_1000 = find("redis", "reshard", pipeline="default"), find("redis", "reshard", pipeline="1000")
fs = [r for r in rows if r.get("bench") == "redis" and r.get("scenario") == "fullsync"]
fs_best = min(fs, key=lambda r: r["total_s"]) if fs else None

def g(r, k):
    return None if r is None or r.get(k) is None else r[k]
def f(x, unit="", nd=2):
    if x is None: return "—"
    if isinstance(x, bool): return "yes" if x else "no"
    if isinstance(x, (int, float)) and abs(x) >= 1000: return f"{x:,.0f}{unit}"
    if isinstance(x, int) and unit == "": return f"{x}"
    return f"{x:.{nd}f}{unit}"
def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b
def met(ok):
    return "—" if ok is None else ("**met**" if ok else "**not met**")

keys = g(idle, "keys") or g(rs_def, "keys") or 0
lines = []
lines.append(f"Machine: {m.get('cpu','?')}, {m.get('cores','?')} cores, {m.get('mem_gb','?')} GB; "
             f"load average at start {m.get('loadavg','?')}; redis-server {m.get('redis','?')}; {m.get('rustc','?')}.")
lines.append("")
lines.append(f"Data: {keys:,} keys of {g(idle,'value_bytes') or g(rs_def,'value_bytes')} bytes "
             "(`key:<i>`; Redis filled with `DEBUG POPULATE`, Ferrite with pipelined SETs).")
lines.append("")
lines.append("| Measure | Ferrite | Reference | Ratio | Goal | |")
lines.append("|---|---|---|---|---|---|")
t = g(idle, "total_s")
for name, ref in (("reshard, default pipeline", rs_def), ("reshard, `--cluster-pipeline 1000`", rs_1000)):
    r = ratio(g(ref, "total_s"), t)
    lines.append(f"| Move {keys:,} keys, idle: MIGRATE → `completed` vs Redis {name} | {f(t,' s')} | {f(g(ref,'total_s'),' s')} | {f(r,'×',1)} | ≥ 10× | {met(None if r is None else r >= 10)} |")
for r_ in sorted(fs, key=lambda r: r["replica_load"]):
    r = ratio(g(r_, "total_s"), t)
    lines.append(f"| Same, vs Redis full sync to a fresh replica (diskless master, replica load `{r_['replica_load']}`) | {f(t,' s')} | {f(r_['total_s'],' s')} | {f(r,'×',2)} | faster (> 1×) | {met(None if r is None else r > 1)} |")
kps = g(idle, "snapshot_keys_per_s")
lines.append(f"| Snapshot rate, idle | {f(kps,' keys/s')} ({f(g(idle,'snapshot_mb_per_s'),' MB/s',1)} of keys+values, {f(g(idle,'snapshot_wire_mb_per_s'),' MB/s',1)} on the wire) | {f(g(rs_1000,'keys_per_s'),' keys/s')} (reshard 1000) | | ≥ 1,000,000 keys/s | {met(None if kps is None else kps >= 1e6)} |")
p99 = g(cut, "downtime_p99_ms")
lines.append(f"| `downtime_ms` over {g(cut,'cutovers')} cutovers of a {f(g(cut,'keys'))}-key tenant under {f(g(cut,'write_rate_target'))} writes/s: p50 / p99 / max | {f(g(cut,'downtime_p50_ms'),' ms')} / {f(p99,' ms')} / {f(g(cut,'downtime_max_ms'),' ms')} | | | p99 < 5 ms | {met(None if p99 is None else p99 < 5)} |")
lag = g(load, "lag_p99_ms")
probe = g(load, "probe_p99_ms")
worst = None if lag is None or probe is None else max(lag, probe)
lines.append(f"| Steady live-sync lag at {f(g(load,'write_rate_achieved'))} writes/s, {g(load,'lag_samples')} samples: STATUS `lag_seconds` p50 / p99 / max; end-to-end probe (write on the source → visible in the target's staged copy) p50 / p99 / max | {f(g(load,'lag_p50_ms'),' ms',0)} / {f(lag,' ms',0)} / {f(g(load,'lag_max_ms'),' ms',0)}; probe {f(g(load,'probe_p50_ms'),' ms',1)} / {f(probe,' ms',1)} / {f(g(load,'probe_max_ms'),' ms',1)} | | | < 100 ms | {met(None if worst is None else worst < 100)} |")
hv_ok = None if heavy is None else (heavy.get("error") is None and g(heavy, "target_has_every_key") is True and g(heavy, "writes_lost") == 0)
lines.append(f"| Migration under {f(g(heavy,'write_rate_target'))} writes/s target ({f(g(heavy,'write_rate_achieved'))} achieved): completes | {f(hv_ok)}; {f(g(heavy,'total_s'),' s')} total, catch-up {f(g(heavy,'catchup_s'),' s')}, {g(heavy,'cutover_attempts')} CUTOVER attempt(s){', FORCE' if g(heavy,'cutover_forced') else ''}, downtime {f(g(heavy,'downtime_ms'),' ms')} | | | completes | {met(hv_ok)} |")
lines.append("")
lines.append("| Ferrite run | snapshot | keys/s | catch-up | to `completed` | downtime | VERIFY | source RSS before → peak (overhead) | writes acked / errors / lost |")
lines.append("|---|---|---|---|---|---|---|---|---|")
for name, r in (("idle, strings", idle), ("idle, mixed types", mixed), (f"{f(g(load,'write_rate_target'))} writes/s", load), (f"{f(g(heavy,'write_rate_target'))} writes/s", heavy)):
    if r is None: continue
    if r.get("error"):
        lines.append(f"| {name} | failed: {r['error']} |||||||| ")
        continue
    total = f(g(r,'total_s'),' s')
    if g(r, "lag_samples"):
        total += f" ({f(g(r,'total_without_watch_s'),' s')} without the {f(g(r,'watch_s'),' s',0)} lag watch)"
    w = "—" if g(r, "writes_acked") is None else f"{f(g(r,'writes_acked'))} / {g(r,'write_errors')} / {g(r,'writes_lost')}"
    lines.append(f"| {name} | {f(g(r,'snapshot_s'),' s')} | {f(g(r,'snapshot_keys_per_s'))} | {f(g(r,'catchup_s'),' s',3)} | {total} | {f(g(r,'downtime_ms'),' ms')} | {f(g(r,'verify_s'),' s',3)} | {f(g(r,'src_rss_before_mb'),' MB',0)} → {f(g(r,'src_rss_peak_mb'),' MB',0)} (+{f(g(r,'src_rss_overhead_mb'),' MB',0)}, {f(g(r,'src_rss_overhead_pct'),'%',0)}) | {w} |")
if cut:
    lines.append(f"| {g(cut,'cutovers')} × {f(g(cut,'keys'))} keys back and forth, {f(g(cut,'write_rate_target'))} writes/s | p50 {f(g(cut,'snapshot_p50_s'),' s',3)} | | | p50 {f(g(cut,'total_p50_s'),' s',3)}, p99 {f(g(cut,'total_p99_s'),' s',3)} | p50 {f(g(cut,'downtime_p50_ms'),' ms')}, p99 {f(g(cut,'downtime_p99_ms'),' ms')} | p50 {f(g(cut,'verify_p50_s'),' s',3)}, {g(cut,'verify_failures')} mismatches | | {f(g(cut,'writes_acked'))} / {g(cut,'write_errors')} / {g(cut,'writes_lost')} |")
errors = [r for r in rows if r.get("error")]
if errors:
    lines.append("")
    for r in errors:
        lines.append(f"- {r.get('bench')} {r.get('scenario')} failed: {r['error']}")
text = "\n".join(lines) + "\n"
open(out_path, "w").write(text)
print(text)
EOF

if [ $record = 1 ]; then
  doc=$ROOT/docs/benchmarks.md
  python3 - "$doc" "$OUT/table.md" "$BENCH_KEYS" <<'EOF'
import os, sys, datetime
doc, table_path, keys = sys.argv[1:]
begin, end = "<!-- bench-migrate:begin -->", "<!-- bench-migrate:end -->"
table = open(table_path).read()
block = (f"{begin}\n_Recorded {datetime.date.today()} by `scripts/bench-migrate.sh --record` "
         f"(BENCH_KEYS={keys})._\n\n{table}{end}")
text = open(doc).read() if os.path.exists(doc) else "# Benchmarks\n"
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    text = head + block + rest.split(end, 1)[1]
else:
    if "## Migration" not in text:
        text = text.rstrip("\n") + "\n\n## Migration\n"
    text = text.rstrip("\n") + "\n\n" + block + "\n"
open(doc, "w").write(text)
print(f"recorded in {doc}", file=sys.stderr)
EOF
fi
