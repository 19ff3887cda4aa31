"""Writes, as RESP on stdout for `redis-cli --pipe`, N keys of mixed types for the benchmarks:
70% strings of 16-100 bytes, then small hashes (8 fields), lists (8 items), integer sets, string
sets and sorted sets (8 members), 10% of the keys with a TTL.

    python3 scripts/lib/fill_mixed.py N [--integers] | redis-cli ... --pipe
"""
import sys
n = int(sys.argv[1])
# --integers: every 7th string is an integer (RDB files then hold int-encoded strings too).
integers = "--integers" in sys.argv[2:]
out = sys.stdout.buffer
def cmd(*args):
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    out.write(b"".join(parts))
for i in range(n):
    key = "key:%08d" % i
    kind = i % 20
    if kind < 14:
        if integers and i % 7 == 0:
            cmd("SET", key, i * 31)
        else:
            cmd("SET", key, ("v%d-" % i) * (1 + i % 12))
    elif kind == 14:
        cmd("HSET", key, *[x for f in range(8) for x in ("field%d" % f, "value-%d-%d" % (i, f))])
    elif kind == 15:
        cmd("RPUSH", key, *["item-%d-%d" % (i, e) for e in range(8)])
    elif kind == 16:
        cmd("SADD", key, *[i + e * 1000 for e in range(8)])
    elif kind == 17:
        cmd("SADD", key, *["m-%d-%d" % (i, e) for e in range(8)])
    else:
        cmd("ZADD", key, *[x for e in range(8) for x in (e * 1.5 + i % 100, "z-%d-%d" % (i, e))])
    if i % 10 == 3:
        cmd("PEXPIRE", key, 86_400_000 + i)
