#!/usr/bin/env bash
# The backup benchmark (issue 15): TENANT.BACKUP and TENANT.RESTORE of a tenant of KEYS keys,
# and the tenant's write latency while its backup runs.
#
#   scripts/bench-backup.sh               full run (1M keys), prints the table
#   scripts/bench-backup.sh --record      ... and writes it into docs/benchmarks.md
#   KEYS=100000 scripts/bench-backup.sh   a quick run
#
# 1. ferrite with its defaults (persistence on) and a tenant `bench` filled with KEYS keys
#    (python3 generator piped into `redis-cli --pipe`: strings of 16-100 bytes, small hashes,
#    lists, sets and sorted sets, 10% with a TTL).
# 2. A writer (one connection of the tenant, SET of random keys back to back, each timed) runs
#    throughout. Its latencies in the WINDOW seconds before the backup are the baseline.
# 3. TENANT.BACKUP bench is timed from send to reply; the writer's latencies meanwhile are the
#    "during backup" column. TENANT.BACKUP.INFO gives the file size and key count.
# 4. TENANT.RESTORE bench BACKUP <id> AS restored is timed (the restore verifies checksums and
#    the recorded digest); DBSIZE of `restored` must be the backup's key count.
# Every server listens on a free loopback port and is stopped on exit. Results go to
# target/bench-backup/table.md.
set -euo pipefail
BENCH_NAME=bench-backup
source "$(dirname "$0")/lib/bench.sh"

KEYS=${KEYS:-1000000}
WINDOW=${WINDOW:-5}
OUT=${BENCH_OUT:-$ROOT/target/bench-backup}
mkdir -p "$OUT"

need_tools redis-cli python3
ferrite_bin

work=$(mktemp -d)
fpid=
cleanup() {
    [[ -n $fpid ]] && kill "$fpid" 2>/dev/null && wait "$fpid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(free_port)
pass=bench-backup-secret
"$FERRITE_BIN" --port "$port" --bind 127.0.0.1 --dir "$work/data" --requirepass "$pass" \
    --metrics-addr off --log-level warn >"$work/ferrite.log" 2>&1 &
fpid=$!
wait_pong "$port" -a "$pass" --no-auth-warning
fcli() { redis-cli -p "$port" -a "$pass" --no-auth-warning "$@"; }
[[ "$(fcli tenant.create bench PASSWORD benchpw)" == OK ]] || die "TENANT.CREATE failed"

log "filling tenant bench with $KEYS keys"
python3 "$ROOT/scripts/lib/fill_mixed.py" "$KEYS" | redis-cli -p "$port" --user bench -a benchpw --no-auth-warning --pipe >/dev/null

python3 - "$port" "$pass" "$KEYS" "$WINDOW" "$OUT/table.md" <<'EOF'
import os, random, socket, statistics, sys, threading, time

port, password, keys, window, table = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]

class Conn:
    def __init__(self, *auth):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        if auth:
            self.call("AUTH", *auth)
    def send(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.s.sendall(b"".join(out))
    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(1 << 16)
            if not chunk:
                raise SystemExit("connection closed")
            self.buf += chunk
        l, _, self.buf = self.buf.partition(b"\r\n")
        return l
    def reply(self):
        l = self.line()
        t, rest = l[:1], l[1:]
        if t == b"-":
            raise SystemExit("error reply: " + rest.decode())
        if t in (b"+", b":"):
            return rest.decode()
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.s.recv(1 << 16)
            v, self.buf = self.buf[:n], self.buf[n + 2:]
            return v.decode()
        if t == b"*":
            return [self.reply() for _ in range(int(rest))]
        raise SystemExit("unexpected reply " + repr(l))
    def call(self, *args):
        self.send(*args)
        return self.reply()

samples = []  # (time, latency seconds)
stop = threading.Event()
def writer():
    c = Conn("bench", "benchpw")
    rnd = random.Random(1)
    while not stop.is_set():
        k = "key:%08d" % rnd.randrange(keys)
        t0 = time.perf_counter()
        c.call("SET", k, "written-during-the-benchmark")
        samples.append((t0, time.perf_counter() - t0))
t = threading.Thread(target=writer, daemon=True)
t.start()

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000 if xs else float("nan")
def between(a, b):
    return [l for (s, l) in samples if a <= s < b]

admin = Conn(password)
time.sleep(1)
base0 = time.perf_counter()
time.sleep(window)
base1 = time.perf_counter()
b0 = time.perf_counter()
backup_id = admin.call("TENANT.BACKUP", "bench")
b1 = time.perf_counter()
during = between(b0, b1)
info = admin.call("TENANT.BACKUP.INFO", backup_id)
info = dict(zip(info[0::2], info[1::2]))
stop.set()
t.join()
r0 = time.perf_counter()
admin.call("TENANT.RESTORE", "bench", "BACKUP", backup_id, "AS", "restored")
r1 = time.perf_counter()
admin.call("TENANT.USE", "restored")
restored = int(admin.call("DBSIZE"))
backed = int(info["keys"])
if restored != backed:
    raise SystemExit(f"restored {restored} keys, the backup holds {backed}")
if backed < keys:
    raise SystemExit(f"the backup holds {backed} keys, the tenant had at least {keys}")
base = between(base0, base1)
size_mb = int(info["size"]) / 1e6
bt, rt = b1 - b0, r1 - r0
load = open("/proc/loadavg").read().split()[:3]
lines = [
    "| keys | backup file | TENANT.BACKUP | TENANT.RESTORE … AS | writer p50 / p99 idle | writer p50 / p99 during the backup | writes during the backup |",
    "|---:|---:|---:|---:|---:|---:|---:|",
    f"| {backed} | {size_mb:.0f} MB | {bt:.2f} s ({backed / bt / 1e3:.0f}k keys/s) | {rt:.2f} s ({backed / rt / 1e3:.0f}k keys/s) | "
    f"{pct(base, 0.5):.3f} / {pct(base, 0.99):.3f} ms | {pct(during, 0.5):.3f} / {pct(during, 0.99):.3f} ms | {len(during)} |",
    "",
    f"Load average at the end: {' '.join(load)}; {os.cpu_count()} cores. The writer is one Python connection doing SET back to back.",
]
open(table, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF

if ((record)); then
    python3 - "$ROOT/docs/benchmarks.md" "$OUT/table.md" "KEYS=$KEYS scripts/bench-backup.sh --record" <<'EOF'
import re, sys
doc_path, table_path, command = sys.argv[1:]
doc = open(doc_path).read()
table = open(table_path).read().strip()
section = ("## Backup and restore\n\nA tenant of a ferrite with its defaults (persistence on): "
           "TENANT.BACKUP (a point-in-time copy, writes keep running) and TENANT.RESTORE … AS a new "
           "tenant (checksums and the recorded digest verified), timed from send to reply, with the "
           "tenant's write latency before and during the backup. Command: `" + command + "`.\n\n"
           + table + "\n")
pattern = re.compile(r"## Backup and restore\n.*?(?=\n## |\Z)", re.S)
doc = pattern.sub(lambda m: section, doc) if pattern.search(doc) else doc.rstrip() + "\n\n" + section
open(doc_path, "w").write(doc)
EOF
    log "recorded in docs/benchmarks.md"
fi
