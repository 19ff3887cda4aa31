"""HyperLogLog commands through redis-py (RESP2 and RESP3): PFADD, PFCOUNT, PFMERGE, PFDEBUG.
The values are Redis's bytes: run with FERRITE_TEST_REDIS_SERVER to check the expectations."""

from __future__ import annotations

import redis

from helpers import WRONGTYPE, cmd_error

NOT_HLL = "WRONGTYPE Key is not a valid HyperLogLog string value."
# What redis-server 7.0 stores after PFADD a a b c foo bar (cache invalid, sparse).
REDIS_BYTES = bytes.fromhex("48594c4c0100000000000000000000805cb390443e804621804a8e844bfb80425a")


def test_pfadd_pfcount_pfmerge(r):
    assert r.pfadd("h", "a", "b", "c") == 1
    assert r.pfadd("h", "a") == 0
    assert r.pfcount("h") == 3
    assert r.pfadd("h2", "c", "d", "e") == 1
    assert r.pfcount("h", "h2") == 5
    assert r.pfcount("h", "h2", "missing") == 5
    assert r.pfmerge("m", "h", "h2")
    assert r.pfcount("m") == 5
    assert r.pfcount("missing") == 0
    assert r.pfadd("empty") == 1
    assert r.pfadd("empty") == 0
    assert r.pfcount("empty") == 0


def test_type_errors(r):
    r.set("s", "not an hll")
    assert cmd_error(r, "PFADD", "s", "a") == NOT_HLL
    assert cmd_error(r, "PFCOUNT", "s") == NOT_HLL
    assert cmd_error(r, "PFMERGE", "d", "s") == NOT_HLL
    r.rpush("l", "x")
    assert cmd_error(r, "PFADD", "l", "a") == WRONGTYPE
    assert cmd_error(r, "PFCOUNT", "h", "l") == WRONGTYPE


def test_raw_bytes_are_redis_bytes(server):
    c = redis.Redis(host=server.host, port=server.port)
    try:
        c.pfadd("h", "a", "b", "c", "foo", "bar")
        assert c.get("h") == REDIS_BYTES
        c.set("copy", REDIS_BYTES)
        assert c.pfcount("copy") == 5
        assert c.pfadd("copy", "foo") == 0
    finally:
        c.close()


def test_sparse_to_dense_promotion_and_accuracy(r):
    elements = [f"ele:{i}" for i in range(20000)]
    for i in range(0, len(elements), 1000):
        r.pfadd("big", *elements[i : i + 1000])
    assert r.execute_command("PFDEBUG", "ENCODING", "big") == "dense"
    n = r.pfcount("big")
    assert abs(n - 20000) / 20000 < 0.02
    r.pfadd("small", "x", "y")
    assert r.execute_command("PFDEBUG", "ENCODING", "small") == "sparse"
    assert r.execute_command("PFDEBUG", "DECODE", "small").startswith(("Z:", "z:", "v:"))
    regs = r.execute_command("PFDEBUG", "GETREG", "small")
    assert len(regs) == 16384 and sum(1 for x in regs if x) == 2
    assert r.execute_command("PFDEBUG", "ENCODING", "small") == "dense"
    assert r.pfcount("small") == 2


def test_pfmerge_keeps_the_destination(r):
    r.pfadd("dst", "a", "b")
    r.pfadd("src", "c")
    assert r.pfmerge("dst", "src")
    assert r.pfcount("dst") == 3
    assert r.pfmerge("alone")
    assert r.pfcount("alone") == 0
