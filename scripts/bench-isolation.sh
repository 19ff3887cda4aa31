#!/usr/bin/env bash
# The tenant isolation benchmark: another tenant's latency while one tenant runs its heaviest
# commands, on Ferrite and, for reference, on a shared redis-server.
#
#   scripts/bench-isolation.sh                   full run (1M keys, 1M-member set), prints the table
#   scripts/bench-isolation.sh --record          ... and writes it into docs/benchmarks.md
#   scripts/bench-isolation.sh --wait-quiet      first wait (up to 30 min) for an idle machine
#   BENCH_KEYS=100000 BENCH_SET=100000 BENCH_SECS=2 scripts/bench-isolation.sh   a quick run
#   BENCH_VICTIM=GET scripts/bench-isolation.sh the victim sends GET instead of PING
#   BENCH_SKIP=redis scripts/bench-isolation.sh  only Ferrite (or BENCH_SKIP=ferrite)
#   BENCH_FERRITE_ARGS="--threads 1" scripts/bench-isolation.sh   Ferrite on one worker thread
#
# `cargo bench --bench isolation` (benches/isolation.rs) starts a `ferrite` and a `redis-server`
# on free loopback ports (stopped on exit), loads a "hot" tenant (Redis: database 0) and, for
# each scenario, runs its heavy commands in a loop on hot connections while a "victim" tenant
# (Redis: database 1) sends a PING (BENCH_VICTIM=GET: a GET) every millisecond; the victim's latency is measured against
# that schedule. FERRITE_BIN picks another ferrite binary (e.g. an older build, to compare).
# Results: target/bench-isolation/results.jsonl and table.md.
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

OUT=${BENCH_OUT:-$ROOT/target/bench-isolation}
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl

log() { printf '[bench-isolation] %s\n' "$*" >&2; }

for tool in redis-server python3; do
  command -v $tool >/dev/null || { log "$tool is missing (apt-get install redis-server python3)"; exit 2; }
done

quiet_now() {
  # 1-minute load under 0.3 and no process above 10% CPU in a 2 s sample.
  local load busy
  load=$(cut -d' ' -f1 /proc/loadavg)
  busy=$(top -bn2 -d2 | awk '/^top -/{n++} n==2 && $1 ~ /^[0-9]+$/ && $9+0 > 10 {print $12}' | head -3 | tr '\n' ' ')
  python3 -c "import sys; sys.exit(0 if $load < 0.3 else 1)" && [ -z "$busy" ]
}

log "building ferrite and the benchmark (release)"
cargo build --release --quiet --bin ferrite
bench_bin=$(cargo bench --no-run --bench isolation -p ferrite-server 2>&1 |
  sed -n 's/.*Executable.*(\(.*\)).*/\1/p' | tail -1)
[ -x "$bench_bin" ] || { log "could not find the benchmark executable"; exit 1; }

if [ $wait_quiet = 1 ]; then
  for i in $(seq 1 30); do
    quiet_now && break
    log "machine busy (load $(cut -d' ' -f1-3 /proc/loadavg)); waiting 60 s ($i/30)"
    sleep 60
  done
fi

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u '+%Y-%m-%d %H:%M UTC')
"$bench_bin" --bench >"$RESULTS"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$RESULTS" "$OUT/table.md" "$(nproc)" "$load_before" "$load_after" "$started" \
  "${BENCH_FERRITE_ARGS:-}" <<'EOF'
import json, os, sys
path, out_path, cores, before, after, started, fargs = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if l.strip()]
by = {(r["server"], r["scenario"]): r for r in rows}
scenarios = []
for r in rows:
    if r["scenario"] not in scenarios:
        scenarios.append(r["scenario"])
what = {
    "idle": "nothing (floor)",
    "keys": "KEYS * over {keys:,} keys, 1 connection",
    "keys_x4": "KEYS * over {keys:,} keys, 4 connections",
    "glob": "KEYS '*aaa…(20k)…b' against a 200 KB key name",
    "sunionstore": "SUNIONSTORE of a {set:,}-member set",
    "all": "KEYS *, the glob, SUNIONSTORE and SMEMBERS at once",
}
k = rows[0]
lines = [
    f"{cores} cores; load {before} before, {after} after; started {started}"
    + (f"; ferrite {fargs}" if fargs else "")
    + f"; the victim sends {'GET' if os.environ.get('BENCH_VICTIM') == 'GET' else 'PING'} every ms",
    "",
    "| hot tenant runs | Ferrite victim p50 / p99 / max ms | heavy cmds/s | Redis victim p50 / p99 / max ms | heavy cmds/s |",
    "|---|---:|---:|---:|---:|",
]
def cell(r):
    if r is None:
        return "–", "–"
    lat = f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} / {r['max_ms']:.1f}"
    if r.get("errors"):
        lat += f" (error: {r['errors']})"
    return lat, f"{r['heavy_per_s']:.1f}"
for s in scenarios:
    f, rd = cell(by.get(("ferrite", s))), cell(by.get(("redis", s)))
    label = what.get(s, s).format(keys=k["keys"], set=k["set"])
    lines.append(f"| {label} | {f[0]} | {f[1]} | {rd[0]} | {rd[1]} |")
text = "\n".join(lines) + "\n"
open(out_path, "w").write(text)
print(text)
EOF

if [ $record = 1 ]; then
  doc=$ROOT/docs/benchmarks.md
  python3 - "$doc" "$OUT/table.md" <<'EOF'
import os, sys, datetime
doc, table_path = sys.argv[1:]
begin, end = "<!-- bench-isolation:begin -->", "<!-- bench-isolation:end -->"
table = open(table_path).read()
block = (f"{begin}\n_Recorded {datetime.date.today()} by `scripts/bench-isolation.sh --record`._\n\n"
         f"{table}{end}")
text = open(doc).read()
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    text = head + block + rest.split(end, 1)[1]
else:
    text = text.rstrip("\n") + "\n\n## Tenant isolation\n\n" + block + "\n"
open(doc, "w").write(text)
print(f"recorded in {doc}", file=sys.stderr)
EOF
fi
