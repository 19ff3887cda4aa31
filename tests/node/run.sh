#!/usr/bin/env bash
# BullMQ, a real job-queue library from npm, against a real ferrite: starts its own server on a
# free port (--port 0, the port read from the ready line), creates a tenant, and runs
# tests/node/bullmq.mjs as that tenant (Lua scripts, blocking commands, streams). Installs the
# pinned packages of tests/node/package.json into tests/node/node_modules first, only when they are
# missing (idempotent; needs npm and the registry the first time).
#
#   FERRITE_BIN=target/debug/ferrite bash tests/node/run.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/tests/node"
if [ -n "${FERRITE_BIN:-}" ]; then BIN=$FERRITE_BIN
elif [ -x "$ROOT/target/release/ferrite" ]; then BIN=$ROOT/target/release/ferrite
else BIN=$ROOT/target/debug/ferrite; fi
for tool in node npm timeout redis-cli; do
  command -v "$tool" >/dev/null || { echo "tests/node/run.sh: $tool is not installed" >&2; exit 1; }
done

if ! (cd "$HERE" && node -e 'for (const p of ["bullmq","ioredis"]) { const want = require("./package.json").dependencies[p]; if (require(`./node_modules/${p}/package.json`).version !== want) process.exit(1); }') 2>/dev/null; then
  echo "tests/node: installing $(cd "$HERE" && node -p 'Object.entries(require("./package.json").dependencies).map(e => e.join("@")).join(" ")')"
  (cd "$HERE" && timeout 600 npm install --no-audit --no-fund --no-package-lock --loglevel=error)
fi

WORK=$(mktemp -d)
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
SECRET="node-test-$RANDOM$RANDOM"
"$BIN" --port 0 --metrics-addr off --log-level warn --requirepass "$SECRET" --dir "$WORK/data" \
  >"$WORK/out.log" 2>&1 &
PID=$!
PORT=
for _ in $(seq 100); do
  PORT=$(sed -n 's/^Ferrite ready to accept connections on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$WORK/out.log")
  [ -n "$PORT" ] && break
  sleep 0.1
done
[ -n "$PORT" ] || { echo "tests/node/run.sh: ferrite did not start:" >&2; cat "$WORK/out.log" >&2; exit 1; }
redis-cli -p "$PORT" -a "$SECRET" --no-auth-warning TENANT.CREATE bullmq PASSWORD bullmq-pw >/dev/null

(cd "$HERE" && timeout 120 node bullmq.mjs "$PORT" bullmq bullmq-pw)
echo "tests/node: bullmq passed"
