#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what the tests need (idempotently),
# then unit tests, doctests and integration tests (cargo), the redis-py suite (pytest), the
# redis-cli suite, BullMQ (tests/node: installs its npm packages into tests/node/node_modules),
# and the Prometheus rule tests.
#
#   scripts/test.sh            everything
#   scripts/test.sh --quick    cargo tests only (no installs)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

quick=0
[ "${1:-}" = "--quick" ] && quick=1

log() { printf '\n== %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi
}

install_deps() {
  local need=()
  command -v redis-cli >/dev/null || need+=(redis-tools)
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v promtool >/dev/null || need+=(prometheus)
  command -v tmux >/dev/null || need+=(tmux)
  command -v nc >/dev/null || need+=(netcat-openbsd)
  # CUTOVER DNS tests start a real named (bind9) and knotd; dnsutils brings nsupdate and dig.
  command -v named >/dev/null || [ -x /usr/sbin/named ] || need+=(bind9)
  command -v knotd >/dev/null || [ -x /usr/sbin/knotd ] || need+=(knot)
  command -v dig >/dev/null || need+=(dnsutils)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    python3 -m venv .venv
  fi
  if ! .venv/bin/python -c 'import redis, pytest' 2>/dev/null; then
    log "installing redis-py and pytest into .venv"
    .venv/bin/pip install -q -r tests/python/requirements.txt
  fi
}

[ $quick = 1 ] || install_deps

# Release profile: the integration tests move hundreds of thousands of keys between real
# processes, and one optimized build is faster overall than a debug build plus slow tests.
log "cargo build --release (binaries used by the integration tests)"
cargo build --release --workspace --bins

log "cargo test --release (unit, doc and integration tests)"
cargo test --release --workspace --no-fail-fast

if [ $quick = 1 ]; then exit 0; fi

export FERRITE_BIN="$ROOT/target/release/ferrite"

log "pytest (redis-py, RESP2 and RESP3)"
.venv/bin/python -m pytest -q tests/python

log "redis-cli suite"
for t in tests/shell/*.sh; do
  bash "$t"
done

log "third-party applications (BullMQ from npm, tests/node)"
bash tests/node/run.sh

if ls deploy/prometheus/*.yml >/dev/null 2>&1; then
  log "promtool"
  promtool check rules deploy/prometheus/ferrite-alerts.yml
  for t in deploy/prometheus/tests/*.yml; do promtool test rules "$t"; done
fi

log "all tests passed"
