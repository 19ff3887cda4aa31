#!/usr/bin/env bash
# redis-cli and redis-benchmark against a real ferrite: one-shot commands (raw and formatted
# output), RESP3 (-3), a script of commands on stdin, mass insertion with --pipe, a short
# redis-benchmark run, and the interactive prompt's argument hints and HELP (redis-cli runs in a
# tmux session; those checks are skipped, saying so, when tmux is missing).
#
# Starts its own server on a free port (--port 0; the port is read from the ready line the server
# prints) and kills it on exit. The binary is $FERRITE_BIN, else target/release/ferrite (what scripts/test.sh builds), else target/debug/ferrite.
#
#   FERRITE_BIN=target/debug/ferrite bash tests/shell/redis_cli.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ -n "${FERRITE_BIN:-}" ]; then BIN=$FERRITE_BIN
elif [ -x "$ROOT/target/release/ferrite" ]; then BIN=$ROOT/target/release/ferrite
else BIN=$ROOT/target/debug/ferrite; fi
for tool in redis-cli redis-benchmark timeout; do
  command -v "$tool" >/dev/null || { echo "redis_cli.sh: $tool is not installed" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "redis_cli.sh: no ferrite binary at $BIN (set FERRITE_BIN)" >&2; exit 1; }

WORK=$(mktemp -d)
PID=
# A tmux server of our own (its own socket), so that no other tmux session is touched.
TMUX_SOCKET="ferrite-redis-cli-$$"
TMUX_STARTED=0
cleanup() {
  if [ "$TMUX_STARTED" = 1 ]; then
    timeout 10 tmux -L "$TMUX_SOCKET" kill-server 2>/dev/null || true
    # kill-server leaves the socket file behind.
    rm -f "${TMUX_TMPDIR:-/tmp}/tmux-$(id -u)/$TMUX_SOCKET"
  fi
  if [ -n "$PID" ]; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The generated administrator secret goes to $WORK (not ./data); the checks below run as the
# `default` tenant without AUTH, as a local redis-cli user does, except where they export
# REDISCLI_AUTH for an administrative command.
"$BIN" --port 0 --metrics-addr off --log-level warn --admin-secret-file "$WORK/admin.secret" \
  --dir "$WORK/data" \
  >"$WORK/stdout" 2>"$WORK/stderr" &
PID=$!

# Bounded wait (15 s) for "Ferrite ready to accept connections on 127.0.0.1:<port>".
PORT=
for _ in $(seq 1 150); do
  PORT=$(sed -n 's/^Ferrite ready to accept connections on .*:\([0-9][0-9]*\)$/\1/p' "$WORK/stdout")
  [ -n "$PORT" ] && break
  if ! kill -0 "$PID" 2>/dev/null; then
    echo "redis_cli.sh: ferrite exited before it was ready:" >&2
    cat "$WORK/stderr" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$PORT" ]; then
  echo "redis_cli.sh: ferrite did not print its ready line within 15 s" >&2
  cat "$WORK/stderr" >&2
  exit 1
fi
echo "ferrite pid $PID on port $PORT"

failures=0
checks=0

# expect_eq <what> <expected> <actual>: reports a difference (and keeps going; the exit status
# says whether everything matched).
expect_eq() {
  checks=$((checks + 1))
  if [ "$2" == "$3" ]; then
    printf 'ok   %s\n' "$1"
  else
    failures=$((failures + 1))
    printf 'FAIL %s\n' "$1"
    printf '  expected: %q\n' "$2"
    printf '  actual:   %q\n' "$3"
    if command -v diff >/dev/null; then
      diff <(printf '%s\n' "$2") <(printf '%s\n' "$3") | sed 's/^/  /' || true
    fi
  fi
}

# expect_match <what> <extended regex> <actual>
expect_match() {
  checks=$((checks + 1))
  if [[ "$3" =~ $2 ]]; then
    printf 'ok   %s\n' "$1"
  else
    failures=$((failures + 1))
    printf 'FAIL %s\n  expected to match: %s\n  actual: %q\n' "$1" "$2" "$3"
  fi
}

# Every client call is bounded in time. redis-cli's stdout is not a terminal here, so its default
# output is raw; --no-raw asks for the interactive formatting.
cli() { timeout 30 redis-cli -h 127.0.0.1 -p "$PORT" "$@"; }

expect_eq "PING" "PONG" "$(cli PING)"
expect_eq "FLUSHALL" "OK" "$(cli FLUSHALL)"

# ---- one-shot commands, raw output ----------------------------------------------------------------
expect_eq "SET" "OK" "$(cli SET greeting 'hello world')"
expect_eq "GET" "hello world" "$(cli GET greeting)"
expect_eq "GET missing (raw: empty line)" "" "$(cli GET nope)"
expect_eq "INCR" "1" "$(cli INCR counter)"
expect_eq "INCRBY" "11" "$(cli INCRBY counter 10)"
expect_eq "RPUSH" "3" "$(cli RPUSH list a b c)"
expect_eq "LRANGE" $'a\nb\nc' "$(cli LRANGE list 0 -1)"
expect_eq "HSET" "2" "$(cli HSET hash f1 v1 f2 v2)"
expect_eq "HGET" "v2" "$(cli HGET hash f2)"
expect_eq "SADD" "2" "$(cli SADD set x y)"
expect_eq "SMEMBERS (sorted)" $'x\ny' "$(cli SMEMBERS set | sort)"
expect_eq "ZADD" "2" "$(cli ZADD zset 1.5 one 2 two)"
expect_eq "ZRANGE WITHSCORES" $'one\n1.5\ntwo\n2' "$(cli ZRANGE zset 0 -1 WITHSCORES)"
expect_eq "TYPE" "zset" "$(cli TYPE zset)"
expect_eq "DBSIZE" "6" "$(cli DBSIZE)"
expect_eq "ECHO with spaces and quotes" "it's \"quoted\"" "$(cli ECHO "it's \"quoted\"")"
expect_eq "--raw GET keeps newlines" $'line1\nline2' "$(cli SET ml $'line1\nline2' >/dev/null; cli --raw GET ml)"
expect_eq "error reply text" "ERR unknown command 'NOSUCH', with args beginning with: 'x' " \
  "$(cli NOSUCH x | sed '/^$/d')"
expect_eq "WRONGTYPE" "WRONGTYPE Operation against a key holding the wrong kind of value" \
  "$(cli INCR list | sed '/^$/d')"
expect_eq "arity error" "ERR wrong number of arguments for 'get' command" "$(cli GET | sed '/^$/d')"

# ---- formatted output (--no-raw) ----------------------------------------------------------------
expect_eq "--no-raw integer" "(integer) 12" "$(cli --no-raw INCR counter)"
expect_eq "--no-raw string" '"hello world"' "$(cli --no-raw GET greeting)"
expect_eq "--no-raw nil" "(nil)" "$(cli --no-raw GET nope)"
expect_eq "--no-raw array" $'1) "a"\n2) "b"\n3) "c"' "$(cli --no-raw LRANGE list 0 -1)"
expect_eq "--no-raw empty array" "(empty array)" "$(cli --no-raw LRANGE nope 0 -1)"
expect_eq "--no-raw error" "(error) ERR wrong number of arguments for 'get' command" "$(cli --no-raw GET)"
expect_eq "--no-raw HGETALL (RESP2 flat)" $'1) "f1"\n2) "v1"\n3) "f2"\n4) "v2"' "$(cli --no-raw HGETALL hash)"

# ---- RESP3 (-3) ---------------------------------------------------------------------------------
expect_eq "-3 HGETALL is a map" $'1# "f1" => "v1"\n2# "f2" => "v2"' "$(cli -3 --no-raw HGETALL hash)"
expect_eq "-3 raw HGETALL" $'f1 v1\nf2 v2' "$(cli -3 HGETALL hash)"
expect_eq "-3 ZSCORE is a double" "(double) 1.5" "$(cli -3 --no-raw ZSCORE zset one)"
expect_eq "-3 SMEMBERS of nothing is a set" "(empty set)" "$(cli -3 --no-raw SMEMBERS nope)"
expect_eq "-3 GET missing is null" "(nil)" "$(cli -3 --no-raw GET nope)"
expect_eq "-3 HELLO proto" "3" "$(cli -3 HELLO 3 | sed -n 's/^proto //p')"
expect_eq "-3 HELLO server" "ferrite" "$(cli -3 HELLO 3 | sed -n 's/^server //p')"
# CONFIG is administrative: the administrator secret through REDISCLI_AUTH, as an operator would.
expect_eq "-3 CONFIG GET is a map" '1# "maxclients" => "10000"' \
  "$(REDISCLI_AUTH=$(cat "$WORK/admin.secret") cli -3 --no-raw CONFIG GET maxclients)"
expect_eq "CONFIG without the administrator secret" \
  "(error) NOPERM this connection has no permission to run the 'config' command (administrators only)" \
  "$(cli -3 --no-raw CONFIG GET maxclients)"

# ---- a script of commands on stdin ----------------------------------------------------------------
cat >"$WORK/script.txt" <<'EOF'
SET stdin:a 1
INCR stdin:a
GET stdin:a
RPUSH stdin:l x "y z" 'w'
LRANGE stdin:l 0 -1
EXPIRE stdin:a 100
TTL stdin:a
EXISTS stdin:a stdin:l stdin:none
DEL stdin:a
GET stdin:a
EOF
# (The last reply is nil: an empty line in raw output; END keeps it from being trimmed.)
expect_eq "redis-cli < script" $'OK\n2\n2\n3\nx\ny z\nw\n1\n100\n2\n1\n\nEND' "$(cli <"$WORK/script.txt"; echo END)"

# A script of a transaction: replies in order, EXEC returns every queued reply.
printf 'MULTI\nSET tx:k v\nINCR tx:n\nGET tx:k\nEXEC\n' >"$WORK/tx.txt"
expect_eq "MULTI/EXEC from stdin" $'OK\nQUEUED\nQUEUED\nQUEUED\nOK\n1\nv' "$(cli <"$WORK/tx.txt")"

# ---- mass insertion with --pipe -------------------------------------------------------------------
expect_eq "FLUSHALL before --pipe" "OK" "$(cli FLUSHALL)"
awk 'BEGIN {
  for (i = 0; i < 10000; i++) {
    k = "mass:" i; v = "value-" i
    printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v
  }
}' >"$WORK/mass.resp"
pipe_out=$(timeout 120 redis-cli -h 127.0.0.1 -p "$PORT" --pipe <"$WORK/mass.resp")
expect_match "--pipe reports no errors" "errors: 0, replies: 10000" "$pipe_out"
expect_eq "DBSIZE after --pipe" "10000" "$(cli DBSIZE)"
expect_eq "a piped key" "value-4242" "$(cli GET mass:4242)"
expect_eq "last piped key" "value-9999" "$(cli GET mass:9999)"

# Inline commands through --pipe too, with one bad command in the middle.
{ printf 'SET inline:1 a\r\n'; printf 'NOSUCHCMD\r\n'; printf 'SET inline:2 b\r\n'; } >"$WORK/inline.txt"
pipe_out=$(timeout 60 redis-cli -h 127.0.0.1 -p "$PORT" --pipe <"$WORK/inline.txt" 2>&1 || true)
expect_match "--pipe counts the error" "errors: 1, replies: 3" "$pipe_out"
expect_eq "inline keys after --pipe" $'a\nb' "$(cli MGET inline:1 inline:2)"

# ---- redis-benchmark ------------------------------------------------------------------------------
bench_rc=0
bench_out=$(timeout 300 redis-benchmark -h 127.0.0.1 -p "$PORT" -q -n 2000 -c 5 \
  -t set,get,incr,lpush,rpop,sadd,hset,spop,zadd,lrange_100 2>&1) || bench_rc=$?
expect_eq "redis-benchmark exit status" "0" "$bench_rc"
echo "$bench_out" | tr '\r' '\n' | grep 'requests per second' | sed 's/^/  /' || true
for t in SET GET INCR LPUSH RPOP SADD HSET SPOP ZADD LRANGE_100; do
  expect_match "redis-benchmark ran $t" "(^|[[:space:]])${t}( \\(first 100 elements\\))?: [0-9.]+ requests per second" \
    "$(echo "$bench_out" | tr '\r' '\n')"
done
if echo "$bench_out" | grep -qiE 'error|ERR '; then
  expect_eq "redis-benchmark printed no errors" "" "$(echo "$bench_out" | grep -iE 'error|ERR ')"
fi
expect_eq "server alive after the benchmark" "PONG" "$(cli PING)"

# ---- interactive prompt: argument hints and HELP (tmux) ------------------------------------------
# redis-cli builds the hint shown after a typed command name, and its HELP text, from COMMAND DOCS;
# both need a terminal, so redis-cli runs in a detached tmux session and the screen is read back.
# TENANT.MIGRATE and HELP's summary line cannot come from redis-cli's own built-in help table.
if command -v tmux >/dev/null; then
  tmx() { timeout 10 tmux -L "$TMUX_SOCKET" "$@"; }
  PROMPT="127.0.0.1:$PORT> "

  # start_cli <session> [redis-cli options]: a wide window, so that long hints are not wrapped.
  start_cli() {
    local session=$1
    shift
    TMUX_STARTED=1
    tmx new-session -d -s "$session" -x 500 -y 50 \
      "REDISCLI_HISTFILE=/dev/null redis-cli -h 127.0.0.1 -p $PORT $*"
    # Bounded wait (5 s) for the prompt.
    for _ in $(seq 1 50); do
      tmx capture-pane -t "$session" -p | grep -qF "${PROMPT% }" && return 0
      sleep 0.1
    done
    echo "redis_cli.sh: no redis-cli prompt in tmux session $session within 5 s" >&2
  }

  # screen_line <session>: the last non-empty line of the screen.
  screen_line() { tmx capture-pane -t "$1" -p | sed '/^$/d' | tail -n 1; }

  # hint_for <session> <typed text>: types the text without Enter (after clearing the line with
  # Ctrl-U) and prints the prompt line once something follows the typed text (the hint), or after
  # 3 s as it is.
  hint_for() {
    local session=$1 line=
    tmx send-keys -t "$session" C-u "$2"
    for _ in $(seq 1 30); do
      line=$(screen_line "$session")
      [[ "$line" == "$PROMPT$2"?* ]] && break
      sleep 0.1
    done
    printf '%s' "$line"
    tmx send-keys -t "$session" C-u
  }

  # help_for <session> <command>: runs HELP on a cleared screen and prints what it showed (up to the
  # next prompt), waiting at most 3 s for the summary line.
  help_for() {
    local session=$1 screen=
    tmx send-keys -t "$session" C-u C-l
    tmx send-keys -t "$session" "HELP $2" Enter
    for _ in $(seq 1 30); do
      screen=$(tmx capture-pane -t "$session" -p)
      grep -q '^  summary: ' <<<"$screen" && break
      sleep 0.1
    done
    # (tmux drops trailing blanks, so the empty prompt ends without its space)
    sed '/^$/d' <<<"$screen" | grep -v -F "${PROMPT% }"
  }

  start_cli hints
  expect_eq "hint for SET" \
    "${PROMPT}SET key value [NX|XX] [GET] [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|KEEPTTL]" \
    "$(hint_for hints "SET ")"
  expect_eq "hint for ZADD" \
    "${PROMPT}ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...]" \
    "$(hint_for hints "ZADD ")"
  expect_eq "hint for TENANT.MIGRATE" \
    "${PROMPT}TENANT.MIGRATE tenant TARGET host:port [MODE LIVE|FAST|CONTINUOUS|INCREMENTAL] [CONFLICT SOURCE_WINS|TARGET_WINS|NEWEST_WINS] [PATTERNS pattern [pattern ...]] [PARALLEL streams] [BATCH_SIZE keys] [TIMEOUT seconds] [RATE bytes-per-sec] [AUTH password] [REDIRECT client-facing-host:port] [PRIORITY HIGH|NORMAL|LOW] [AFTER migration-id [migration-id ...]] [GROUP group] [APPROVAL] [RETENTION seconds]" \
    "$(hint_for hints "TENANT.MIGRATE ")"
  expect_eq "hint for TENANT.MIGRATE.CUTOVER" \
    "${PROMPT}TENANT.MIGRATE.CUTOVER migration-id|GROUP group [FORCE|RETRY [AUTH password] [FORCE]|SCHEDULED rfc3339-time [FORCE]|UNSCHEDULE|PATTERN pattern [FORCE]|DNS dns-name [FORCE]]" \
    "$(hint_for hints "TENANT.MIGRATE.CUTOVER ")"
  # A subcommand of a container command (COMMAND DOCS "subcommands").
  expect_eq "hint for CLIENT LIST" \
    "${PROMPT}CLIENT LIST [TYPE NORMAL|MASTER] [ID client-id [client-id ...]]" \
    "$(hint_for hints "CLIENT LIST ")"
  # Names are case-insensitive for redis-cli's hints too.
  expect_eq "hint for lower-case lmove" \
    "${PROMPT}lmove source destination LEFT|RIGHT LEFT|RIGHT" "$(hint_for hints "lmove ")"

  # HELP shows the syntax line and Ferrite's own summary (read back from COMMAND DOCS).
  set_summary=$(cli COMMAND DOCS set | sed -n 3p)
  expect_match "COMMAND DOCS set has a summary" "^Sets the string value" "$set_summary"
  expect_eq "HELP SET" \
    "$(printf '%s\n' \
      "  SET key value [NX|XX] [GET] [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|KEEPTTL]" \
      "  summary: $set_summary" \
      "  since: 1.0.0" \
      "  group: string")" \
    "$(help_for hints SET)"
  expect_match "HELP TENANT.MIGRATE.STATUS" \
    $'  TENANT.MIGRATE.STATUS migration-id\\|ALL\\|GROUP group\n  summary: Progress, lag and phase of a migration' \
    "$(help_for hints TENANT.MIGRATE.STATUS)"

  # RESP3: COMMAND DOCS is then a map of maps, which redis-cli reads too.
  start_cli hints3 -3
  expect_eq "hint for TENANT.MIGRATE.VALIDATE (RESP3)" \
    "${PROMPT}TENANT.MIGRATE.VALIDATE tenant TARGET host:port [AUTH password]" \
    "$(hint_for hints3 "TENANT.MIGRATE.VALIDATE ")"
else
  echo "skip interactive hint and HELP checks: tmux is not installed (scripts/test.sh installs it)"
fi

# ---- the server did not log errors or panics ------------------------------------------------------
if grep -qiE 'panic|ERROR' "$WORK/stderr"; then
  expect_eq "no errors in the server log" "" "$(grep -iE 'panic|ERROR' "$WORK/stderr")"
fi

echo
if [ "$failures" -ne 0 ]; then
  echo "redis_cli.sh: $failures of $checks checks FAILED"
  exit 1
fi
echo "redis_cli.sh: all $checks checks passed"
