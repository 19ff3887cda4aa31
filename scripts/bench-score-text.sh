#!/bin/bash
# Instructions per ZRANGE z 0 -1 WITHSCORES of 1000 members (issue 14, branch dtoa14): the server
# under callgrind with one worker; 50 requests warm up, then 500 with fractional scores (i/7) and
# 500 with integer scores (i), each dumped; Ir / 500 = per request.
# usage: scripts/bench-score-text.sh BINARY LABEL PORT   (needs valgrind, redis-cli, redis-benchmark)
set -e
bin=$1; label=$2; port=$3
out=${TMPDIR:-/tmp}/bench-score-text-$label
rm -rf $out; mkdir -p $out/data
valgrind --tool=callgrind --compress-strings=no --callgrind-out-file=$out/cg.out \
    $bin --port $port --metrics-addr off --log-level warn --threads 1 --dir $out/data > $out/server.log 2>&1 &
vg=$!
for i in $(seq 1 120); do redis-cli -p $port ping >/dev/null 2>&1 && break; sleep 1; done
python3 - $port <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def cmd(*a):
    return b"*%d\r\n" % len(a) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in (str(y).encode() for y in a))
buf = b"".join(cmd("ZADD", "zf", repr(i / 7), f"m{i}") + cmd("ZADD", "zi", i, f"m{i}") for i in range(1000))
s.sendall(buf)
f = s.makefile("rb")
for _ in range(2000): f.readline()
PY
redis-cli -p $port zcard zf; redis-cli -p $port zrange zf 0 2 withscores | tr '\n' ' '; echo
redis-benchmark -p $port -c 1 -n 50 zrange zf 0 -1 withscores > /dev/null
callgrind_control -z $vg > /dev/null
redis-benchmark -p $port -c 1 -n 500 zrange zf 0 -1 withscores > /dev/null
callgrind_control -d frac $vg > /dev/null
redis-benchmark -p $port -c 1 -n 500 zrange zi 0 -1 withscores > /dev/null
callgrind_control -d int $vg > /dev/null
kill $vg; wait $vg 2>/dev/null || true
for f in $out/cg.out.*; do echo "$label $f $(grep -m1 '^summary:\|^totals:' $f)"; done
