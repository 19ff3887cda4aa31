#!/usr/bin/env python3
"""Asks a redis-server how it writes doubles (ZADD then ZSCORE, in RESP2 and RESP3) and prints
one `<16 hex digits of the f64's bits> <reply text>` line per double.

    scripts/fpconv-reference.py PORT COUNT SEED > file

The doubles: random bit patterns, random decimal-looking numbers (k/10^j and sums like 0.1+0.2),
integers and their neighbours near 2^53, 2^62, 2^63 and 2^64, powers of ten and two with their
neighbours, subnormals and the largest doubles; each also negated. Used to check Ferrite's port of
Redis 7.2's fpconv_dtoa (crates/protocol/src/fpconv.rs) against redis-server 7.2.6.
"""
import math
import random
import socket
import struct
import sys


def bits(x):
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def from_bits(b):
    return struct.unpack("<d", struct.pack("<Q", b))[0]


def doubles(count, seed):
    rng = random.Random(seed)
    out = []
    fixed = [0.1 + 0.2, 1e23, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 1e-7,
             1.2345678901234567e17, 123456789.125, 1e21, 1e22, 9007199254740993.0]
    for e in range(-325, 309):
        p = float(f"1e{e}")
        fixed += [p, math.nextafter(p, 0), math.nextafter(p, math.inf)]
    for e in range(-1074, 1024, 7):
        p = math.ldexp(1.0, e)
        fixed += [p, math.nextafter(p, 0), math.nextafter(p, math.inf)]
    for e in (53, 62, 63, 64):
        base = 2**e
        for d in range(-3, 4):
            fixed.append(float(base + d * 2 ** max(0, e - 52)))
    out += fixed
    while len(out) < count:
        kind = rng.randrange(5)
        if kind == 0:
            x = from_bits(rng.getrandbits(64))
        elif kind == 1:
            x = rng.randrange(1, 10**rng.randrange(1, 18)) / 10 ** rng.randrange(0, 20)
        elif kind == 2:
            x = rng.randrange(1, 1000) / 10 + rng.randrange(1, 1000) / 100
        elif kind == 3:
            x = float(rng.randrange(0, 2**64)) * rng.choice([1.0, 1.0, 0.5, 2.0 ** rng.randrange(-60, 60)])
        else:
            x = math.ldexp(rng.random() + 0.5, rng.randrange(-1074, 1024))
        out.append(x)
    out = [x if i % 2 == 0 else -x for i, x in enumerate(out)] + [-x for x in fixed]
    return [x for x in out if not math.isnan(x) and x != 0.0]


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.f = self.s.makefile("rb")

    def send(self, cmds):
        buf = bytearray()
        for c in cmds:
            buf += b"*%d\r\n" % len(c)
            for a in c:
                a = a if isinstance(a, bytes) else str(a).encode()
                buf += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(buf)

    def read(self):
        line = self.f.readline()[:-2]
        t, rest = line[:1], line[1:]
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode()
        if t == b",":
            return rest.decode()
        if t in (b":", b"+"):
            return rest.decode()
        if t == b"-":
            return ("ERR", rest.decode())
        if t in (b"*", b"%"):
            n = int(rest) * (2 if t == b"%" else 1)
            return [self.read() for _ in range(n)]
        if t == b"_":
            return None
        raise ValueError(line)


def main():
    port, count, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    resp2, resp3 = Conn(port), Conn(port)
    resp3.send([["HELLO", "3"]])
    resp3.read()
    xs = doubles(count, seed)
    key = "fpconv-reference"
    for start in range(0, len(xs), 2000):
        batch = xs[start:start + 2000]
        cmds = [["DEL", key]] + [["ZADD", key, repr(x), i] for i, x in enumerate(batch)]
        resp2.send(cmds)
        replies = [resp2.read() for _ in cmds]
        ok = [x for x, r in zip(batch, replies[1:]) if r == "1"]
        ids = [i for i, r in enumerate(replies[1:]) if r == "1"]
        resp2.send([["ZSCORE", key, i] for i in ids])
        texts2 = [resp2.read() for _ in ids]
        resp3.send([["ZSCORE", key, i] for i in ids])
        texts3 = [resp3.read() for _ in ids]
        for x, t2, t3 in zip(ok, texts2, texts3):
            if t2 != t3:
                sys.exit(f"RESP2 {t2!r} and RESP3 {t3!r} differ for {x!r}")
            print(f"{bits(x):016x} {t2}")
    resp2.send([["DEL", key]])
    resp2.read()


main()
