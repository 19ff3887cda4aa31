#!/usr/bin/env bash
# The contention benchmark (issue 17): another tenant's p99 latency, measured by redis-benchmark,
# while a large tenant migrates away from the same server — idle, during a migration with
# contention management on, and during one with it off.
#
#   scripts/bench-contention.sh              full run (MOVER_KEYS=400000), prints the table
#   scripts/bench-contention.sh --record     ... and writes it into docs/benchmarks.md
#   MOVER_KEYS=100000 scripts/bench-contention.sh   a quick run
#
# 1. A source and a target ferrite (defaults, persistence off) on free loopback ports.
#    Tenant `mover` gets MOVER_KEYS mixed keys (scripts/lib/fill_mixed.py), tenant `bystander`
#    10,000 keys.
# 2. Idle: redis-benchmark (GET and SET of the bystander's keys, CLIENTS connections, pipeline 1,
#    REQUESTS requests) against the source: its p50/p99 are the baseline.
# 3. For each of contention on (thresholds from the idle run as the source measured it: p99_ms =
#    THRESHOLD_FACTOR × its p99 bucket, at least P99_FLOOR_MS; cpu_percent = THRESHOLD_FACTOR ×
#    its CPU, at least 5; window_secs = 2) and off: TENANT.MIGRATE mover, the same
#    redis-benchmark while the snapshot runs, then the migration is waited for until live_sync
#    (its duration recorded: it must still finish), cancelled, and the next run starts from the
#    same data.
# Results: target/bench-contention/table.md.
set -euo pipefail
BENCH_NAME=bench-contention
source "$(dirname "$0")/lib/bench.sh"

MOVER_KEYS=${MOVER_KEYS:-400000}
CLIENTS=${CLIENTS:-20}
REQUESTS=${REQUESTS:-200000}
THRESHOLD_FACTOR=${THRESHOLD_FACTOR:-1.5}
P99_FLOOR_MS=${P99_FLOOR_MS:-0.1}
OUT=${BENCH_OUT:-$ROOT/target/bench-contention}
mkdir -p "$OUT"

need_tools redis-cli redis-benchmark python3
ferrite_bin

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

token=bench-contention-token
pass=bench-contention-secret
printf '[tenancy.migration.contention]\nwindow_secs = 2\n' >"$work/ferrite.toml"
start() { # name port
    "$FERRITE_BIN" --config "$work/ferrite.toml" --port "$2" --bind 127.0.0.1 --dir "$work/$1" --appendonly no \
        --requirepass "$pass" --migration-token "$token" --metrics-addr off \
        --log-level info >"$work/$1.log" 2>&1 &
    pids+=($!)
    wait_pong "$2" -a "$pass" --no-auth-warning
}
src=$(free_port)
start source "$src"
dst=$(free_port)
start target "$dst"
scli() { redis-cli -p "$src" -a "$pass" --no-auth-warning "$@"; }

[[ "$(scli tenant.create mover PASSWORD pw)" == OK ]] || die "TENANT.CREATE mover failed"
[[ "$(scli tenant.create bystander PASSWORD pw)" == OK ]] || die "TENANT.CREATE bystander failed"
log "filling tenant mover with $MOVER_KEYS keys"
python3 "$ROOT/scripts/lib/fill_mixed.py" "$MOVER_KEYS" |
    redis-cli -p "$src" --user mover -a pw --no-auth-warning --pipe >/dev/null
redis-benchmark -p "$src" --user bystander -a pw -t set -n 10000 -r 10000 -q >/dev/null 2>&1

# p50 and p99 (ms) of GET and SET together, from redis-benchmark's CSV.
bench() {
    redis-benchmark -p "$src" --user bystander -a pw -t get,set -n "$REQUESTS" -r 10000 \
        -c "$CLIENTS" --csv 2>/dev/null | python3 -c '
import csv, sys
rows = [r for r in csv.DictReader(sys.stdin)]
p50 = max(float(r["p50_latency_ms"]) for r in rows)
p99 = max(float(r["p99_latency_ms"]) for r in rows)
rps = sum(float(r["rps"]) for r in rows) / len(rows)
print(p50, p99, rps)'
}

state() { # migration id
    scli TENANT.MIGRATE.STATUS "$1" | python3 -c '
import sys
l = sys.stdin.read().split("\n")
print(dict(zip(l[0::2], l[1::2])).get("state", "?"))'
}

log "idle"
read -r idle50 idle99 idlerps < <(bench)
# What the server itself measured meanwhile (its histogram's p99 bucket bound).
read -r server_idle server_cpu < <(scli TENANT.MIGRATE.STATUS ALL | python3 -c '
import sys
l = sys.stdin.read().split("\n")
d = dict(zip(l[0::2], l[1::2]))
print(d.get("load_p99_ms") or "0", d.get("load_cpu_percent") or "0")')
threshold=$(python3 -c "print(max($P99_FLOOR_MS, $server_idle * $THRESHOLD_FACTOR))")
cpu_threshold=$(python3 -c "print(round(min(100, max(5, $server_cpu * $THRESHOLD_FACTOR)), 1))")
log "idle: p50 ${idle50} ms, p99 ${idle99} ms (the source measured: p99 bucket ${server_idle} ms, CPU ${server_cpu}%; thresholds ${threshold} ms, ${cpu_threshold}%)"

results=()
for mode in on off; do
    if [[ $mode == on ]]; then
        scli CONFIG SET tenancy.migration.contention.enabled yes >/dev/null
        scli CONFIG SET tenancy.migration.contention.p99_ms "$threshold" >/dev/null
        scli CONFIG SET tenancy.migration.contention.cpu_percent "$cpu_threshold" >/dev/null
    else
        scli CONFIG SET tenancy.migration.contention.enabled no >/dev/null
    fi
    id=$(scli TENANT.MIGRATE mover TARGET "127.0.0.1:$dst" | sed -n 2p)
    [[ $id == mig_* ]] || die "TENANT.MIGRATE failed: $id"
    t0=$(date +%s.%N)
    read -r p50 p99 rps < <(bench)
    for _ in $(seq 1 6000); do
        [[ "$(state "$id")" == live_sync ]] && break
        sleep 0.1
    done
    [[ "$(state "$id")" == live_sync ]] || die "migration $id never reached live_sync"
    took=$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")
    log "contention $mode: p50 ${p50} ms, p99 ${p99} ms, snapshot done in ${took} s"
    results+=("$mode $p50 $p99 $rps $took")
    scli TENANT.MIGRATE.CANCEL "$id" >/dev/null
    # The target drops the import; wait until it has before the next run.
    sleep 2
done

load=$(cut -d' ' -f1-3 /proc/loadavg)
throttle_steps=$(grep -c "slowing migrations down" "$work/source.log" || true)
python3 - "$OUT/table.md" "$idle50" "$idle99" "$idlerps" "$threshold" "$load" "$MOVER_KEYS" \
    "$CLIENTS" "$cpu_threshold" "$throttle_steps" "${results[@]}" <<'EOF'
import os, sys
out, i50, i99, irps, threshold, load, keys, clients, cpu_threshold, steps = sys.argv[1:11]
runs = [r.split() for r in sys.argv[11:]]
lines = [
    f"| run | bystander p50 | bystander p99 | p99 / idle | requests/s | mover's snapshot ({int(keys):,} keys) |",
    "|---|---|---|---|---|---|",
    f"| idle (no migration) | {float(i50):.3f} ms | {float(i99):.3f} ms | 1.00× | {float(irps):,.0f} | – |",
]
for mode, p50, p99, rps, took in runs:
    label = (f"migrating, contention management on (p99_ms = {float(threshold):.3f}, cpu_percent = {cpu_threshold}; {steps} slow-down steps)"
             if mode == "on" else "migrating, contention management off")
    lines.append(f"| {label} | {float(p50):.3f} ms | {float(p99):.3f} ms | "
                 f"{float(p99) / max(float(i99), 1e-9):.2f}× | {float(rps):,.0f} | {float(took):.1f} s |")
lines += ["", f"redis-benchmark -t get,set -c {clients}, pipeline 1, against the bystander tenant of the "
          f"source. Load average at the end: {load}; {os.cpu_count()} cores."]
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF

if ((record)); then
    python3 - "$ROOT/docs/benchmarks.md" "$OUT/table.md" "MOVER_KEYS=$MOVER_KEYS scripts/bench-contention.sh --record" <<'EOF'
import re, sys
doc_path, table_path, command = sys.argv[1:]
doc = open(doc_path).read()
table = open(table_path).read().strip()
section = ("## Migrations and other tenants' latency (contention management)\n\n"
           "Another tenant's p99 on the source while a large tenant migrates away, idle and during "
           "the migration's snapshot with contention management on and off (it slows the migration "
           "down when the source's own p99 or CPU crosses its threshold). Target: p99 during the "
           "migration ≤ 1.5× idle with management on, and the migration still finishes. Command: `"
           + command + "`.\n\n" + table + "\n")
pattern = re.compile(r"## Migrations and other tenants' latency \(contention management\)\n.*?(?=\n## |\Z)", re.S)
doc = pattern.sub(lambda m: section, doc) if pattern.search(doc) else doc.rstrip() + "\n\n" + section
open(doc_path, "w").write(doc)
EOF
    log "recorded in docs/benchmarks.md"
fi
