"""Data commands through redis-py, against a real ferrite process: strings, keys and SCAN, expiry,
lists, hashes, sets, sorted sets, transactions and pipelining, plus error replies.

Most tests run twice, over RESP2 and RESP3 (fixture `r`); tests of reply shapes use the `raw`
clients, which return replies as decoded from the wire (no redis-py conversions)."""

from __future__ import annotations

import time

import pytest
import redis

from helpers import (
    NOT_FLOAT,
    NOT_INTEGER,
    SYNTAX,
    WRONGTYPE,
    Conn,
    arity,
    cmd_error,
    wait_until,
)

# =============================================================================================
# Strings


def test_set_get_and_conditions(r):
    assert r.get("k") is None
    assert r.set("k", "v1") is True
    assert r.get("k") == "v1"
    assert r.set("k", "v2", nx=True) is None
    assert r.get("k") == "v1"
    assert r.set("k", "v2", xx=True) is True
    assert r.get("k") == "v2"
    assert r.set("missing", "x", xx=True) is None
    assert r.exists("missing") == 0
    assert r.set("n", "x", nx=True) is True
    # SET ... GET returns the old value (None when absent), also when the condition fails.
    assert r.set("k", "v3", get=True) == "v2"
    assert r.set("new", "a", get=True) is None
    assert r.get("new") == "a"
    assert r.set("k", "v4", nx=True, get=True) == "v3"
    assert r.get("k") == "v3"
    assert r.setnx("k", "zzz") is False
    assert r.setnx("k2", "zzz") is True
    assert r.mget("k", "k2", "nope") == ["v3", "zzz", None]


def test_set_errors(r):
    assert cmd_error(r, "SET", "k", "v", "NX", "XX") == SYNTAX
    assert cmd_error(r, "SET", "k", "v", "BOGUS") == SYNTAX
    assert cmd_error(r, "SET", "k", "v", "EX") == SYNTAX
    assert cmd_error(r, "SET", "k", "v", "EX", "10", "PX", "100") == SYNTAX
    assert cmd_error(r, "SET", "k", "v", "EX", "abc") == NOT_INTEGER
    assert cmd_error(r, "SET", "k", "v", "EX", "0") == "ERR invalid expire time in 'set' command"
    assert cmd_error(r, "SET", "k", "v", "PX", "-5") == "ERR invalid expire time in 'set' command"
    assert cmd_error(r, "SET", "k") == arity("set")
    assert cmd_error(r, "GET") == arity("get")
    assert cmd_error(r, "GET", "a", "b") == arity("get")
    r.rpush("l", "x")
    assert cmd_error(r, "SET", "l", "v", "GET") == WRONGTYPE
    assert r.type("l") == "list", "a failed SET ... GET must not overwrite"
    assert cmd_error(r, "GET", "l") == WRONGTYPE
    assert r.exists("k") == 0


def test_binary_safe_values(server):
    c = server.client(decode_responses=False)
    try:
        value = bytes(range(256)) + b"\r\n\x00end"
        assert c.set(b"bin\x00key", value) is True
        assert c.get(b"bin\x00key") == value
        assert c.strlen(b"bin\x00key") == len(value)
        assert c.append(b"bin\x00key", b"\x00\xff") == len(value) + 2
        assert c.getrange(b"bin\x00key", -2, -1) == b"\x00\xff"
        assert c.set(b"empty", b"") is True
        assert c.get(b"empty") == b""
        assert c.exists(b"empty") == 1
    finally:
        c.close()


def test_getset_getdel_getex(r):
    assert r.getset("k", "a") is None
    assert r.getset("k", "b") == "a"
    assert r.getdel("k") == "b"
    assert r.exists("k") == 0
    assert r.getdel("k") is None
    r.set("k", "v", ex=100)
    assert r.getset("k", "w") == "v"
    assert r.ttl("k") == -1, "GETSET discards the TTL"
    assert r.getex("k", ex=50) == "w"
    assert r.ttl("k") == 50
    assert r.getex("k", persist=True) == "w"
    assert r.ttl("k") == -1
    assert r.getex("k", px=20000) == "w"
    assert 19000 < r.pttl("k") <= 20000
    assert r.getex("k") == "w"
    assert 19000 < r.pttl("k") <= 20000
    assert r.getex("missing", ex=10) is None
    assert cmd_error(r, "GETEX", "k", "EX", "10", "PERSIST") == SYNTAX
    assert cmd_error(r, "GETEX", "k", "EX", "0") == "ERR invalid expire time in 'getex' command"
    r.rpush("l", "x")
    assert cmd_error(r, "GETDEL", "l") == WRONGTYPE
    assert cmd_error(r, "GETSET", "l", "x") == WRONGTYPE
    assert r.llen("l") == 1


def test_mset_msetnx(r):
    assert r.mset({"a": "1", "b": "2", "c": "3"}) is True
    assert r.mget("a", "b", "c", "d") == ["1", "2", "3", None]
    assert r.msetnx({"d": "4", "a": "x"}) is False
    assert r.exists("d") == 0
    assert r.get("a") == "1"
    assert r.msetnx({"d": "4", "e": "5"}) is True
    assert r.mget(["d", "e"]) == ["4", "5"]
    r.rpush("l", "x")
    assert r.mget("a", "l") == ["1", None], "MGET answers nil for a non-string"
    assert cmd_error(r, "MSET", "a", "1", "b") == arity("mset")
    assert cmd_error(r, "MSETNX", "a") == arity("msetnx")


def test_counters(r):
    assert r.incr("n") == 1
    assert r.incr("n") == 2
    assert r.incrby("n", 10) == 12
    assert r.decr("n") == 11
    assert r.decrby("n", 20) == -9
    assert r.incrby("n", -1) == -10
    assert r.get("n") == "-10"
    r.set("n", "9223372036854775806")
    assert r.incr("n") == 9223372036854775807
    assert cmd_error(r, "INCR", "n") == "ERR increment or decrement would overflow"
    assert r.get("n") == "9223372036854775807"
    r.set("m", "-9223372036854775808")
    assert cmd_error(r, "DECR", "m") == "ERR increment or decrement would overflow"
    r.set("s", "abc")
    assert cmd_error(r, "INCR", "s") == NOT_INTEGER
    r.set("s", " 1")
    assert cmd_error(r, "INCR", "s") == NOT_INTEGER
    r.set("s", "1.5")
    assert cmd_error(r, "INCRBY", "s", "1") == NOT_INTEGER
    assert cmd_error(r, "INCRBY", "n2", "1.5") == NOT_INTEGER
    assert cmd_error(r, "INCRBY", "n2", "abc") == NOT_INTEGER
    assert r.exists("n2") == 0
    r.rpush("l", "x")
    assert cmd_error(r, "INCR", "l") == WRONGTYPE


def test_incrbyfloat(raw):
    # The reply is a bulk string in both protocols (not a RESP3 double).
    assert raw.execute_command("SET", "f", "10.50") == "OK"
    assert raw.execute_command("INCRBYFLOAT", "f", "0.1") == "10.6"
    assert raw.execute_command("INCRBYFLOAT", "f", "-5") == "5.6"
    assert raw.execute_command("SET", "g", "5.0e3") == "OK"
    assert raw.execute_command("INCRBYFLOAT", "g", "2.0e2") == "5200"
    assert raw.execute_command("INCRBYFLOAT", "h", "3") == "3"
    assert raw.execute_command("GET", "h") == "3"
    raw.execute_command("SET", "s", "abc")
    assert cmd_error(raw, "INCRBYFLOAT", "s", "1") == NOT_FLOAT
    assert cmd_error(raw, "INCRBYFLOAT", "f", "x") == NOT_FLOAT
    assert cmd_error(raw, "INCRBYFLOAT", "f", "inf") == "ERR increment would produce NaN or Infinity"
    assert raw.execute_command("GET", "f") == "5.6"


def test_incrbyfloat_gives_no_negative_zero(raw):
    # Redis's "No negative zero" (unit/type/incr): 1/41, then -1/41, is 0.
    raw.execute_command("INCRBYFLOAT", "nz", repr(1 / 41))
    assert raw.execute_command("INCRBYFLOAT", "nz", repr(-1 / 41)) == "0"
    assert raw.execute_command("GET", "nz") == "0"
    assert raw.execute_command("INCRBYFLOAT", "nz2", "-0") == "0"
    assert raw.execute_command("INCRBYFLOAT", "nz2", "-0.0") == "0"
    raw.execute_command("SET", "nz3", "-0")
    assert raw.execute_command("INCRBYFLOAT", "nz3", "0") == "0"
    assert raw.execute_command("HINCRBYFLOAT", "nzh", "f", "-0") == "0"


def test_incrbyfloat_long_double_precision(r):
    r.set("f", "0.1")
    assert r.incrbyfloat("f", 0.2) == 0.3
    assert r.get("f") == "0.3"


def test_append_strlen_ranges(r):
    assert r.append("s", "Hello") == 5
    assert r.append("s", " World") == 11
    assert r.strlen("s") == 11
    assert r.strlen("missing") == 0
    assert r.getrange("s", 0, 4) == "Hello"
    assert r.getrange("s", -5, -1) == "World"
    assert r.getrange("s", 6, 100) == "World"
    assert r.getrange("s", 5, 3) == ""
    assert r.getrange("s", -100, 2) == "Hel"
    assert r.getrange("missing", 0, -1) == ""
    assert r.execute_command("SUBSTR", "s", "0", "0") == "H"
    assert r.setrange("s", 6, "Redis") == 11
    assert r.get("s") == "Hello Redis"
    assert r.setrange("pad", 3, "x") == 4
    assert r.get("pad") == "\x00\x00\x00x"
    assert r.setrange("nothing", 0, "") == 0
    assert r.exists("nothing") == 0
    assert cmd_error(r, "SETRANGE", "s", "-1", "x") == "ERR offset is out of range"
    assert cmd_error(r, "GETRANGE", "s", "a", "1") == NOT_INTEGER
    r.rpush("l", "x")
    assert cmd_error(r, "APPEND", "l", "x") == WRONGTYPE
    assert cmd_error(r, "STRLEN", "l") == WRONGTYPE


# =============================================================================================
# Keys


def test_del_exists_type(r):
    r.set("s", "1")
    r.rpush("l", "a")
    r.hset("h", "f", "v")
    r.sadd("set", "m")
    r.zadd("z", {"m": 1})
    assert [r.type(k) for k in ("s", "l", "h", "set", "z", "none")] == [
        "string",
        "list",
        "hash",
        "set",
        "zset",
        "none",
    ]
    assert r.exists("s", "l", "s", "missing") == 3, "EXISTS counts repeated keys"
    assert r.touch("s", "l", "missing") == 2
    assert r.dbsize() == 5
    assert r.delete("s", "l", "missing", "s") == 2
    assert r.unlink("h", "set", "h") == 2
    assert r.dbsize() == 1
    assert r.exists("z") == 1
    assert cmd_error(r, "DEL") == arity("del")
    assert cmd_error(r, "EXISTS") == arity("exists")


def test_keys_patterns(r):
    for k in ("hello", "hallo", "hxllo", "hllo", "heeeello", "h*llo", "other"):
        r.set(k, "1")
    assert sorted(r.keys("*")) == sorted(
        ["hello", "hallo", "hxllo", "hllo", "heeeello", "h*llo", "other"]
    )
    assert sorted(r.keys("h?llo")) == ["h*llo", "hallo", "hello", "hxllo"]
    assert sorted(r.keys("h*llo")) == ["h*llo", "hallo", "heeeello", "hello", "hllo", "hxllo"]
    assert sorted(r.keys("h[ae]llo")) == ["hallo", "hello"]
    assert sorted(r.keys("h[^e]llo")) == ["h*llo", "hallo", "hxllo"]
    assert sorted(r.keys("h[a-b]llo")) == ["hallo"]
    assert r.keys("h\\*llo") == ["h*llo"]
    assert r.keys("nomatch*") == []


def test_rename_and_copy(r):
    r.set("a", "1", ex=100)
    assert r.rename("a", "b") is True
    assert r.exists("a") == 0
    assert r.get("b") == "1"
    assert r.ttl("b") == 100, "RENAME keeps the TTL"
    assert cmd_error(r, "RENAME", "a", "c") == "ERR no such key"
    assert cmd_error(r, "RENAMENX", "a", "c") == "ERR no such key"
    r.set("c", "3")
    assert r.renamenx("b", "c") is False
    assert r.renamenx("b", "d") is True
    assert r.rename("d", "c") is True
    assert r.get("c") == "1"
    assert r.rename("c", "c") is True
    assert r.renamenx("c", "c") is False
    # COPY
    r.rpush("src", "x", "y")
    assert r.copy("src", "dst") is True
    assert r.lrange("dst", 0, -1) == ["x", "y"]
    r.rpush("dst", "z")
    assert r.lrange("src", 0, -1) == ["x", "y"], "COPY is deep"
    assert r.copy("src", "dst") is False
    assert r.copy("src", "dst", replace=True) is True
    assert r.lrange("dst", 0, -1) == ["x", "y"]
    assert r.copy("missing", "dst2") is False
    assert cmd_error(r, "COPY", "src", "src") == "ERR source and destination objects are the same"
    assert cmd_error(r, "COPY", "src", "x", "BOGUS") == SYNTAX


@pytest.mark.ferrite_only
def test_copy_to_other_db_is_refused(r):
    # Ferrite has database 0 only.
    r.set("src", "v")
    assert cmd_error(r, "COPY", "src", "x", "DB", "1") == "ERR DB index is out of range"
    assert r.copy("src", "x", destination_db=0) is True
    assert r.get("x") == "v"


def test_copy_same_key_is_refused_before_lookup(r):
    # Redis compares source and destination before looking the source up.
    assert cmd_error(r, "COPY", "missing", "missing") == "ERR source and destination objects are the same"


def test_randomkey(r):
    assert r.randomkey() is None
    keys = {f"k{i}" for i in range(20)}
    r.mset({k: "1" for k in keys})
    seen = {r.randomkey() for _ in range(50)}
    assert seen <= keys
    assert len(seen) > 1


def _scan_all(r, **kw):
    cursor, seen, calls = 0, [], 0
    while True:
        cursor, batch = r.scan(cursor=cursor, **kw)
        seen.extend(batch)
        calls += 1
        assert calls < 10000, "SCAN did not terminate"
        if cursor == 0:
            return seen, calls


def test_scan_full_iteration(r):
    strings = {f"str:{i}" for i in range(300)}
    lists = {f"list:{i}" for i in range(50)}
    hashes = {f"hash:{i}" for i in range(50)}
    r.mset({k: "v" for k in strings})
    p = r.pipeline(transaction=False)
    for k in lists:
        p.rpush(k, "x")
    for k in hashes:
        p.hset(k, "f", "v")
    p.execute()
    everything = strings | lists | hashes

    seen, calls = _scan_all(r, count=10)
    assert set(seen) == everything, "every key present for the whole scan is returned"
    assert calls > 10, "COUNT 10 must split 400 keys over several calls"

    seen, _ = _scan_all(r, count=1000)
    assert set(seen) == everything

    seen, _ = _scan_all(r, match="list:*", count=20)
    assert set(seen) == lists
    seen, _ = _scan_all(r, match="str:1?", count=20)
    assert set(seen) == {f"str:{i}" for i in range(10, 20)}
    seen, _ = _scan_all(r, _type="hash", count=20)
    assert set(seen) == hashes
    seen, _ = _scan_all(r, _type="string", match="*:7*", count=20)
    assert set(seen) == {k for k in strings if k.startswith("str:7")}
    seen, _ = _scan_all(r, _type="zset")
    assert seen == []
    # redis-py's iterator agrees.
    assert set(r.scan_iter(match="hash:*", count=7)) == hashes


def test_scan_while_modifying(r):
    """Keys present for the whole iteration are returned even while others come and go."""
    stable = {f"stable:{i}" for i in range(200)}
    r.mset({k: "1" for k in stable})
    cursor, seen, i = 0, set(), 0
    while True:
        cursor, batch = r.scan(cursor=cursor, count=15)
        seen.update(batch)
        r.set(f"churn:{i}", "1")
        if i >= 3:
            r.delete(f"churn:{i - 3}")
        i += 1
        assert i < 5000
        if cursor == 0:
            break
    assert stable <= seen


def test_scan_errors(r):
    assert cmd_error(r, "SCAN", "abc") == "ERR invalid cursor"
    assert cmd_error(r, "SCAN", "1x") == "ERR invalid cursor"
    assert cmd_error(r, "SCAN", "0", "COUNT", "0") == SYNTAX
    assert cmd_error(r, "SCAN", "0", "COUNT", "x") == NOT_INTEGER
    assert cmd_error(r, "SCAN", "0", "MATCH") == SYNTAX
    assert cmd_error(r, "SCAN", "0", "BOGUS", "1") == SYNTAX
    assert cmd_error(r, "SCAN") == arity("scan")


def test_dbsize_and_flush(r):
    r.mset({"a": "1", "b": "2"})
    r.sadd("s", "x")
    assert r.dbsize() == 3
    assert r.flushdb() is True
    assert r.dbsize() == 0
    r.set("a", "1")
    assert r.execute_command("FLUSHALL", "ASYNC") is True
    assert r.dbsize() == 0
    assert r.execute_command("FLUSHDB", "SYNC") is True
    assert cmd_error(r, "FLUSHDB", "NOW") == SYNTAX


# =============================================================================================
# Expiry


def test_ttl_precision(r):
    r.set("k", "v")
    assert r.ttl("k") == -1
    assert r.pttl("k") == -1
    assert r.ttl("missing") == -2
    assert r.pttl("missing") == -2
    assert r.expire("k", 100) is True
    assert r.ttl("k") == 100
    pttl = r.pttl("k")
    assert 99000 < pttl <= 100000
    assert r.pexpire("k", 1500) is True
    assert 1000 < r.pttl("k") <= 1500
    # TTL rounds to the nearest second (as Redis: (ms + 500) / 1000).
    r.pexpire("k", 10400)
    assert r.ttl("k") == 10
    r.pexpire("k", 10900)
    assert r.ttl("k") == 11
    assert r.persist("k") is True
    assert r.persist("k") is False
    assert r.ttl("k") == -1
    assert r.persist("missing") is False
    assert r.expire("missing", 10) is False


def test_absolute_expiry_round_trip(r):
    r.set("k", "v")
    at_ms = int(time.time() * 1000) + 3_600_123
    assert r.pexpireat("k", at_ms) is True
    assert r.pexpiretime("k") == at_ms
    # EXPIRETIME rounds to the nearest second, like TTL.
    assert r.expiretime("k") == (at_ms + 500) // 1000
    assert r.pexpireat("k", 4102444800499) is True
    assert r.expiretime("k") == 4102444800
    assert r.pexpireat("k", 4102444800500) is True
    assert r.expiretime("k") == 4102444801
    at_s = int(time.time()) + 7200
    assert r.expireat("k", at_s) is True
    assert r.expiretime("k") == at_s
    assert r.pexpiretime("k") == at_s * 1000
    assert 7190 <= r.ttl("k") <= 7200
    assert r.expiretime("missing") == -2
    r.set("p", "v")
    assert r.expiretime("p") == -1
    assert r.pexpiretime("p") == -1


def test_expire_options(r):
    r.set("k", "v")
    assert r.expire("k", 100, xx=True) is False
    assert r.ttl("k") == -1
    assert r.expire("k", 100, gt=True) is False, "no TTL counts as infinite for GT"
    assert r.expire("k", 100, nx=True) is True
    assert r.expire("k", 200, nx=True) is False
    assert r.expire("k", 50, gt=True) is False
    assert r.expire("k", 200, gt=True) is True
    assert r.ttl("k") == 200
    assert r.expire("k", 300, lt=True) is False
    assert r.expire("k", 150, lt=True) is True
    assert r.expire("k", 120, xx=True) is True
    assert r.ttl("k") == 120
    r.set("p", "v")
    assert r.expire("p", 10, lt=True) is True
    assert (
        cmd_error(r, "EXPIRE", "k", "10", "NX", "XX")
        == "ERR NX and XX, GT or LT options at the same time are not compatible"
    )
    assert (
        cmd_error(r, "EXPIRE", "k", "10", "GT", "LT")
        == "ERR GT and LT options at the same time are not compatible"
    )
    assert cmd_error(r, "EXPIRE", "k", "10", "FOO") == "ERR Unsupported option FOO"
    assert cmd_error(r, "EXPIRE", "k", "ten") == NOT_INTEGER
    assert (
        cmd_error(r, "EXPIRE", "k", "9223372036854775807")
        == "ERR invalid expire time in 'expire' command"
    )
    assert r.ttl("k") == 120


def test_set_expiry_options(r):
    r.set("k", "v", ex=100)
    assert r.ttl("k") == 100
    r.set("k", "v2")
    assert r.ttl("k") == -1, "plain SET clears the TTL"
    r.set("k", "v", px=50000)
    assert 49000 < r.pttl("k") <= 50000
    r.set("k", "v3", keepttl=True)
    assert 49000 < r.pttl("k") <= 50000
    assert r.get("k") == "v3"
    r.set("k", "v", exat=int(time.time()) + 1000)
    assert 990 <= r.ttl("k") <= 1000
    at = int(time.time() * 1000) + 500_000
    r.set("k", "v", pxat=at)
    assert r.pexpiretime("k") == at
    assert r.setex("e", 30, "v") is True
    assert r.ttl("e") == 30
    assert r.psetex("pe", 30000, "v") is True
    assert 29000 < r.pttl("pe") <= 30000
    assert cmd_error(r, "SETEX", "e", "0", "v") == "ERR invalid expire time in 'setex' command"
    assert cmd_error(r, "PSETEX", "e", "-1", "v") == "ERR invalid expire time in 'psetex' command"
    assert cmd_error(r, "SETEX", "e", "x", "v") == NOT_INTEGER


def test_expire_in_the_past_deletes(r):
    r.set("a", "1")
    assert r.expire("a", -1) is True
    assert r.exists("a") == 0
    r.set("b", "1")
    assert r.pexpireat("b", 1000) is True
    assert r.exists("b") == 0
    r.set("c", "1")
    assert r.execute_command("SET", "c", "2", "PXAT", "1") is True
    assert r.exists("c") == 0


def test_expired_keys_never_come_back(r):
    r.set("s", "v", px=100)
    r.rpush("l", "a", "b")
    r.pexpire("l", 100)
    r.hset("h", "f", "v")
    r.pexpire("h", 100)
    r.set("keep", "v")
    assert r.exists("s", "l", "h") == 3
    # Bounded polling until the keys are gone to every read path.
    wait_until(lambda: r.exists("s", "l", "h") == 0, timeout=5, what="keys to expire")
    # Active expiry reclaims them too (DBSIZE counts keys not yet reclaimed, as Redis).
    wait_until(lambda: r.dbsize() == 1, timeout=5, what="active expiry")
    for _ in range(20):
        assert r.get("s") is None
        assert r.ttl("s") == -2
        assert r.pttl("l") == -2
        assert r.type("h") == "none"
        assert r.lrange("l", 0, -1) == []
        assert r.hgetall("h") == {}
        assert r.keys("*") == ["keep"]
        assert r.scan(0, count=100) == (0, ["keep"])
        assert r.randomkey() == "keep"
        assert r.dbsize() == 1
    # Writes on an expired key start from scratch.
    r.set("c", "41", px=50)
    wait_until(lambda: r.exists("c") == 0, timeout=5, what="counter to expire")
    assert r.incr("c") == 1
    assert r.ttl("c") == -1
    r.rpush("l2", "old")
    r.pexpire("l2", 50)
    wait_until(lambda: r.exists("l2") == 0, timeout=5, what="list to expire")
    assert r.rpush("l2", "new") == 1
    assert r.lrange("l2", 0, -1) == ["new"]


def test_expired_key_and_persist_race(r):
    """Keys whose TTL is removed in time survive; those left to expire never reappear."""
    keys = [f"k{i}" for i in range(50)]
    p = r.pipeline(transaction=False)
    for k in keys:
        p.set(k, "v", px=200)
    p.execute()
    for k in keys[:25]:
        assert r.persist(k) is True
    wait_until(lambda: r.exists(*keys[25:]) == 0, timeout=5, what="half to expire")
    assert r.exists(*keys[:25]) == 25
    assert sorted(r.keys("k*")) == sorted(keys[:25])


# =============================================================================================
# Lists


def test_push_pop_range(r):
    assert r.rpush("l", "a", "b", "c") == 3
    assert r.lpush("l", "z", "y") == 5
    assert r.lrange("l", 0, -1) == ["y", "z", "a", "b", "c"]
    assert r.lrange("l", 1, 2) == ["z", "a"]
    assert r.lrange("l", -2, -1) == ["b", "c"]
    assert r.lrange("l", -100, 100) == ["y", "z", "a", "b", "c"]
    assert r.lrange("l", 3, 1) == []
    assert r.lrange("l", 5, 10) == []
    assert r.lrange("missing", 0, -1) == []
    assert r.llen("l") == 5
    assert r.llen("missing") == 0
    assert r.lpop("l") == "y"
    assert r.rpop("l") == "c"
    assert r.lpop("l", 2) == ["z", "a"]
    assert r.rpop("l", 5) == ["b"]
    assert r.exists("l") == 0, "an emptied list is deleted"
    assert r.lpop("l") is None
    assert r.lpop("l", 2) is None
    r.rpush("l", "x")
    assert r.lpop("l", 0) == []
    assert r.lpushx("missing", "a") == 0
    assert r.exists("missing") == 0
    assert r.rpushx("l", "y", "z") == 3
    assert r.lpushx("l", "w") == 4
    assert r.lrange("l", 0, -1) == ["w", "x", "y", "z"]


def test_list_index_set_insert(r):
    r.rpush("l", "a", "b", "c")
    assert r.lindex("l", 0) == "a"
    assert r.lindex("l", -1) == "c"
    assert r.lindex("l", 3) is None
    assert r.lindex("missing", 0) is None
    assert r.lset("l", 1, "B") is True
    assert r.lset("l", -1, "C") is True
    assert r.lrange("l", 0, -1) == ["a", "B", "C"]
    assert cmd_error(r, "LSET", "l", "3", "x") == "ERR index out of range"
    assert cmd_error(r, "LSET", "missing", "0", "x") == "ERR no such key"
    assert cmd_error(r, "LINDEX", "l", "x") == NOT_INTEGER
    assert r.linsert("l", "BEFORE", "B", "a2") == 4
    assert r.linsert("l", "AFTER", "C", "D") == 5
    assert r.linsert("l", "AFTER", "nope", "x") == -1
    assert r.linsert("missing", "AFTER", "a", "x") == 0
    assert r.lrange("l", 0, -1) == ["a", "a2", "B", "C", "D"]
    assert cmd_error(r, "LINSERT", "l", "MIDDLE", "a", "x") == SYNTAX


def test_lrem_ltrim(r):
    r.rpush("l", "a", "b", "a", "c", "a", "b")
    assert r.lrem("l", 2, "a") == 2
    assert r.lrange("l", 0, -1) == ["b", "c", "a", "b"]
    assert r.lrem("l", -1, "b") == 1
    assert r.lrange("l", 0, -1) == ["b", "c", "a"]
    assert r.lrem("l", 0, "x") == 0
    r.rpush("l", "b", "b")
    assert r.lrem("l", 0, "b") == 3
    assert r.lrange("l", 0, -1) == ["c", "a"]
    assert r.lrem("missing", 0, "a") == 0
    r.delete("l")
    r.rpush("l", *"abcdefg")
    assert r.ltrim("l", 1, -2) is True
    assert r.lrange("l", 0, -1) == list("bcdef")
    assert r.ltrim("l", -2, 100) is True
    assert r.lrange("l", 0, -1) == ["e", "f"]
    assert r.ltrim("l", 5, 10) is True
    assert r.exists("l") == 0
    assert r.ltrim("missing", 0, 1) is True


def test_lpos(r):
    r.rpush("l", "a", "b", "c", "1", "2", "3", "c", "c")
    assert r.lpos("l", "c") == 2
    assert r.lpos("l", "c", rank=2) == 6
    assert r.lpos("l", "c", rank=-1) == 7
    assert r.lpos("l", "c", rank=-3) == 2
    assert r.lpos("l", "c", count=2) == [2, 6]
    assert r.lpos("l", "c", count=0) == [2, 6, 7]
    assert r.lpos("l", "c", rank=-1, count=2) == [7, 6]
    assert r.lpos("l", "c", maxlen=2) is None
    assert r.lpos("l", "c", maxlen=3) == 2
    assert r.lpos("l", "x") is None
    assert r.lpos("l", "x", count=2) == []
    assert r.lpos("missing", "x") is None
    assert (
        cmd_error(r, "LPOS", "l", "c", "RANK", "0")
        == "ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... "
        "or use negative to start from the end of the list"
    )
    assert cmd_error(r, "LPOS", "l", "c", "COUNT", "-1") == "ERR COUNT can't be negative"
    assert cmd_error(r, "LPOS", "l", "c", "MAXLEN", "-1") == "ERR MAXLEN can't be negative"


def test_lmove_rpoplpush(r):
    r.rpush("a", "1", "2", "3")
    assert r.lmove("a", "b", "RIGHT", "LEFT") == "3"
    assert r.lmove("a", "b", "LEFT", "RIGHT") == "1"
    assert r.lrange("a", 0, -1) == ["2"]
    assert r.lrange("b", 0, -1) == ["3", "1"]
    assert r.rpoplpush("b", "a") == "1"
    assert r.lrange("a", 0, -1) == ["1", "2"]
    # Rotation of one list.
    assert r.lmove("a", "a", "LEFT", "RIGHT") == "1"
    assert r.lrange("a", 0, -1) == ["2", "1"]
    assert r.rpoplpush("b", "b") == "3"
    assert r.lrange("b", 0, -1) == ["3"]
    assert r.lmove("missing", "a", "LEFT", "LEFT") is None
    assert r.rpoplpush("b", "new") == "3"
    assert r.exists("b") == 0
    assert r.lrange("new", 0, -1) == ["3"]
    r.set("str", "x")
    assert cmd_error(r, "LMOVE", "a", "str", "LEFT", "LEFT") == WRONGTYPE
    assert r.lrange("a", 0, -1) == ["2", "1"], "a WRONGTYPE destination leaves the source as it was"
    assert cmd_error(r, "LMOVE", "a", "b", "UP", "LEFT") == SYNTAX


def test_list_errors(r):
    r.rpush("l", "a")
    assert cmd_error(r, "LPOP", "l", "-1") == "ERR value is out of range, must be positive"
    assert cmd_error(r, "LPOP", "l", "x") == "ERR value is out of range, must be positive"
    assert cmd_error(r, "LPOP", "l", "1", "2") == arity("lpop")
    assert cmd_error(r, "LPUSH", "l") == arity("lpush")
    assert cmd_error(r, "LRANGE", "l", "0") == arity("lrange")
    assert cmd_error(r, "LRANGE", "l", "a", "b") == NOT_INTEGER
    r.set("s", "x")
    for args in (("LPUSH", "s", "a"), ("RPOP", "s"), ("LRANGE", "s", "0", "-1"), ("LLEN", "s")):
        assert cmd_error(r, *args) == WRONGTYPE, args
    assert r.lrange("l", 0, -1) == ["a"]


# =============================================================================================
# Hashes


def test_hash_basics(r):
    assert r.hset("h", mapping={"a": "1", "b": "2"}) == 2
    assert r.hset("h", mapping={"b": "3", "c": "4"}) == 1
    assert r.hget("h", "b") == "3"
    assert r.hget("h", "zz") is None
    assert r.hget("missing", "a") is None
    assert r.hmget("h", "a", "zz", "c") == ["1", None, "4"]
    assert r.hgetall("h") == {"a": "1", "b": "3", "c": "4"}
    assert r.hgetall("missing") == {}
    assert r.hlen("h") == 3
    assert r.hexists("h", "a") is True
    assert r.hexists("h", "zz") is False
    assert sorted(r.hkeys("h")) == ["a", "b", "c"]
    assert sorted(r.hvals("h")) == ["1", "3", "4"]
    assert r.hsetnx("h", "a", "x") == 0
    assert r.hsetnx("h", "d", "x") == 1
    assert r.hget("h", "a") == "1"
    assert r.hstrlen("h", "d") == 1
    assert r.hstrlen("h", "zz") == 0
    assert r.hdel("h", "a", "zz", "b") == 2
    assert r.execute_command("HMSET", "h", "e", "5") is True  # the old name still works
    assert sorted(r.hkeys("h")) == ["c", "d", "e"]
    assert r.hdel("h", "c", "d", "e") == 3
    assert r.exists("h") == 0, "an emptied hash is deleted"


def test_hash_counters(r):
    assert r.hincrby("h", "n", 5) == 5
    assert r.hincrby("h", "n", -7) == -2
    assert r.hincrbyfloat("h", "f", 1.5) == 1.5
    assert r.hincrbyfloat("h", "f", "0.25") == 1.75
    assert r.hget("h", "f") == "1.75"
    r.hset("h", "s", "abc")
    assert cmd_error(r, "HINCRBY", "h", "s", "1") == "ERR hash value is not an integer"
    assert cmd_error(r, "HINCRBYFLOAT", "h", "s", "1") == "ERR hash value is not a float"
    assert cmd_error(r, "HINCRBY", "h", "n", "x") == NOT_INTEGER
    r.hset("h", "big", "9223372036854775807")
    assert cmd_error(r, "HINCRBY", "h", "big", "1") == "ERR increment or decrement would overflow"


def test_hash_errors(r):
    assert cmd_error(r, "HSET", "h", "f") == arity("hset")
    assert cmd_error(r, "HSET", "h", "f", "v", "g") == arity("hset")
    assert cmd_error(r, "HGET", "h") == arity("hget")
    r.set("s", "x")
    for args in (("HSET", "s", "f", "v"), ("HGET", "s", "f"), ("HGETALL", "s"), ("HLEN", "s")):
        assert cmd_error(r, *args) == WRONGTYPE, args


def test_hgetall_shape(raw, proto):
    raw.execute_command("HSET", "h", "a", "1", "b", "2")
    reply = raw.execute_command("HGETALL", "h")
    if proto == 2:
        assert isinstance(reply, list)
        assert dict(zip(reply[::2], reply[1::2])) == {"a": "1", "b": "2"}
        assert len(reply) == 4
    else:
        assert reply == {"a": "1", "b": "2"}
    empty = raw.execute_command("HGETALL", "missing")
    assert empty == ([] if proto == 2 else {})


def test_hrandfield(r, raw, proto):
    fields = {f"f{i}": str(i) for i in range(10)}
    r.hset("h", mapping=fields)
    assert r.hrandfield("h") in fields
    assert r.hrandfield("missing") is None
    assert r.hrandfield("missing", 3) == []
    got = r.hrandfield("h", 5)
    assert len(got) == 5 and len(set(got)) == 5 and set(got) <= set(fields)
    got = r.hrandfield("h", 50)
    assert sorted(got) == sorted(fields), "a count above the size returns every field once"
    got = r.hrandfield("h", -30)
    assert len(got) == 30 and set(got) <= set(fields)
    reply = raw.execute_command("HRANDFIELD", "h", "3", "WITHVALUES")
    if proto == 2:
        assert len(reply) == 6
        pairs = list(zip(reply[::2], reply[1::2]))
    else:
        assert len(reply) == 3
        assert all(isinstance(p, list) and len(p) == 2 for p in reply)
        pairs = [tuple(p) for p in reply]
    for f, v in pairs:
        assert fields[f] == v


def test_hscan(r):
    big = {f"field:{i}": str(i) for i in range(1000)}
    r.hset("h", mapping=big)
    cursor, got, calls = 0, {}, 0
    while True:
        cursor, batch = r.hscan("h", cursor, count=50)
        got.update(batch)
        calls += 1
        assert calls < 10000
        if cursor == 0:
            break
    assert got == big
    assert calls > 1
    matched = dict(r.hscan_iter("h", match="field:99*", count=100))
    assert matched == {k: v for k, v in big.items() if k.startswith("field:99")}
    # Small hash: one call returns everything.
    r.hset("small", mapping={"a": "1", "b": "2"})
    assert r.hscan("small", 0) == (0, {"a": "1", "b": "2"})
    assert r.hscan("missing", 0) == (0, {})
    assert cmd_error(r, "HSCAN", "h", "x") == "ERR invalid cursor"
    assert cmd_error(r, "HSCAN", "h", "0", "COUNT", "0") == SYNTAX


@pytest.mark.ferrite_only
def test_hscan_novalues(r):
    r.hset("h", mapping={"a": "1", "b": "2"})
    cursor, fields = r.hscan("h", 0, no_values=True)
    assert cursor == 0
    assert sorted(fields) == ["a", "b"]


# =============================================================================================
# Sets


def test_set_basics(r):
    assert r.sadd("s", "a", "b", "c", "a") == 3
    assert r.sadd("s", "c", "d") == 1
    assert r.scard("s") == 4
    assert r.scard("missing") == 0
    assert r.smembers("s") == {"a", "b", "c", "d"}
    assert r.smembers("missing") == set()
    assert r.sismember("s", "a") == 1
    assert r.sismember("s", "z") == 0
    assert r.smismember("s", ["a", "z", "d"]) == [True, False, True]
    assert r.srem("s", "a", "z") == 1
    assert r.smove("s", "t", "b") is True
    assert r.smove("s", "t", "zz") is False
    assert r.smembers("t") == {"b"}
    assert r.smembers("s") == {"c", "d"}
    assert r.srem("s", "c", "d") == 2
    assert r.exists("s") == 0
    r.set("str", "x")
    assert cmd_error(r, "SADD", "str", "a") == WRONGTYPE
    assert cmd_error(r, "SMOVE", "t", "str", "b") == WRONGTYPE
    assert r.smembers("t") == {"b"}
    assert cmd_error(r, "SADD", "s") == arity("sadd")


def test_set_algebra(r):
    r.sadd("a", "1", "2", "3", "4")
    r.sadd("b", "3", "4", "5")
    r.sadd("c", "4", "6")
    assert r.sinter("a", "b") == {"3", "4"}
    assert r.sinter("a", "b", "c") == {"4"}
    assert r.sinter("a", "missing") == set()
    assert r.sunion("a", "b", "c") == {"1", "2", "3", "4", "5", "6"}
    assert r.sunion("missing") == set()
    assert r.sdiff("a", "b") == {"1", "2"}
    assert r.sdiff("a", "b", "c") == {"1", "2"}
    assert r.sdiff("a", "missing") == {"1", "2", "3", "4"}
    assert r.sdiff("missing", "a") == set()
    assert r.sintercard(2, ["a", "b"]) == 2
    assert r.sintercard(2, ["a", "b"], limit=1) == 1
    assert r.sintercard(3, ["a", "b", "c"]) == 1
    assert r.sintercard(2, ["a", "missing"]) == 0
    # STORE variants overwrite the destination and return its size.
    r.set("dst", "not a set")
    assert r.sinterstore("dst", ["a", "b"]) == 2
    assert r.smembers("dst") == {"3", "4"}
    assert r.sunionstore("dst", ["b", "c"]) == 4
    assert r.smembers("dst") == {"3", "4", "5", "6"}
    assert r.sdiffstore("dst", ["a", "b"]) == 2
    assert r.smembers("dst") == {"1", "2"}
    assert r.sinterstore("dst", ["a", "missing"]) == 0
    assert r.exists("dst") == 0, "an empty result deletes the destination"
    # The destination may be a source.
    assert r.sunionstore("a", ["a", "c"]) == 5
    assert r.smembers("a") == {"1", "2", "3", "4", "6"}
    r.set("str", "x")
    assert cmd_error(r, "SINTER", "a", "str") == WRONGTYPE
    assert cmd_error(r, "SUNIONSTORE", "d", "a", "str") == WRONGTYPE
    assert cmd_error(r, "SINTERCARD", "0", "a") == "ERR numkeys should be greater than 0"
    assert cmd_error(r, "SINTERCARD", "3", "a", "b") == "ERR Number of keys can't be greater than number of args"
    assert cmd_error(r, "SINTERCARD", "2", "a", "b", "LIMIT", "-1") == "ERR LIMIT can't be negative"


def test_spop_srandmember(r):
    members = {str(i) for i in range(20)}
    r.sadd("s", *members)
    m = r.srandmember("s")
    assert m in members
    got = r.srandmember("s", 5)
    assert len(got) == 5 and len(set(got)) == 5 and set(got) <= members
    assert sorted(r.srandmember("s", 100), key=int) == sorted(members, key=int)
    got = r.srandmember("s", -50)
    assert len(got) == 50 and set(got) <= members
    assert r.scard("s") == 20, "SRANDMEMBER does not remove"
    assert r.srandmember("missing") is None
    assert r.srandmember("missing", 3) == []
    popped = r.spop("s")
    assert popped in members
    rest = r.spop("s", 5)
    assert len(rest) == 5 and popped not in rest
    assert r.scard("s") == 14
    remaining = r.spop("s", 100)
    assert set(remaining) | set(rest) | {popped} == members
    assert r.exists("s") == 0
    assert r.spop("missing") is None
    assert r.spop("missing", 2) == []
    assert cmd_error(r, "SPOP", "s", "-1") == "ERR value is out of range, must be positive"


def test_smembers_and_sismember_shapes(raw, proto):
    raw.execute_command("SADD", "s", "x", "y")
    assert sorted(raw.execute_command("SMEMBERS", "s")) == ["x", "y"]
    # SISMEMBER and SMISMEMBER answer integers in both protocols.
    assert raw.execute_command("SISMEMBER", "s", "x") == 1
    assert raw.execute_command("SISMEMBER", "s", "z") == 0
    assert raw.execute_command("SMISMEMBER", "s", "x", "z") == [1, 0]


def test_sscan(r):
    members = {f"m:{i}" for i in range(1000)}
    r.sadd("s", *members)
    cursor, got, calls = 0, [], 0
    while True:
        cursor, batch = r.sscan("s", cursor, count=40)
        got.extend(batch)
        calls += 1
        assert calls < 10000
        if cursor == 0:
            break
    assert set(got) == members
    assert calls > 1
    assert set(r.sscan_iter("s", match="m:5?", count=100)) == {f"m:{i}" for i in range(50, 60)}
    r.sadd("small", "x", "y", "z")
    cursor, batch = r.sscan("small", 0)
    assert cursor == 0 and sorted(batch) == ["x", "y", "z"]
    assert r.sscan("missing", 0) == (0, [])
    r.set("str", "x")
    assert cmd_error(r, "SSCAN", "str", "0") == WRONGTYPE


# =============================================================================================
# Sorted sets


@pytest.fixture
def zabc(r):
    r.zadd("z", {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5})
    return r


def test_zadd_options(r):
    assert r.zadd("z", {"a": 1, "b": 2}) == 2
    assert r.zadd("z", {"a": 1, "b": 3, "c": 4}) == 1
    assert r.zadd("z", {"a": 5, "b": 3, "d": 6}, ch=True) == 2
    assert r.zadd("z", {"a": 9, "e": 7}, nx=True) == 1
    assert r.zscore("z", "a") == 5
    assert r.zadd("z", {"a": 9, "f": 8}, xx=True) == 0
    assert r.zscore("z", "a") == 9
    assert r.zscore("z", "f") is None
    assert r.zadd("z", {"a": 1, "b": 10}, gt=True, ch=True) == 1
    assert r.zscore("z", "a") == 9
    assert r.zadd("z", {"a": 100, "b": 1}, lt=True, ch=True) == 1
    assert r.zscore("z", "b") == 1
    assert r.zadd("z", {"a": 1}, incr=True) == 10
    assert r.zadd("z", {"a": 1}, nx=True, incr=True) is None
    assert r.zincrby("z", 2.5, "a") == 12.5
    assert r.zincrby("z", -0.5, "new") == -0.5
    assert r.zcard("z") == 6
    assert r.zadd("missing", {"a": 1}, xx=True) == 0
    assert r.exists("missing") == 0


def test_zadd_errors(r):
    assert cmd_error(r, "ZADD", "z", "x", "a") == NOT_FLOAT
    assert cmd_error(r, "ZADD", "z", "nan", "a") == NOT_FLOAT
    assert cmd_error(r, "ZADD", "z", "1", "a", "2") == SYNTAX
    assert (
        cmd_error(r, "ZADD", "z", "NX", "XX", "1", "a")
        == "ERR XX and NX options at the same time are not compatible"
    )
    assert (
        cmd_error(r, "ZADD", "z", "GT", "LT", "1", "a")
        == "ERR GT, LT, and/or NX options at the same time are not compatible"
    )
    assert (
        cmd_error(r, "ZADD", "z", "INCR", "1", "a", "2", "b")
        == "ERR INCR option supports a single increment-element pair"
    )
    assert cmd_error(r, "ZADD", "z", "1") == arity("zadd")
    r.zadd("z", {"i": float("inf")})
    assert cmd_error(r, "ZINCRBY", "z", "-inf", "i") == "ERR resulting score is not a number (NaN)"
    assert r.exists("z") == 1
    r.set("s", "x")
    assert cmd_error(r, "ZADD", "s", "1", "a") == WRONGTYPE
    assert cmd_error(r, "ZSCORE", "s", "a") == WRONGTYPE
    assert cmd_error(r, "ZRANGE", "s", "0", "-1") == WRONGTYPE


def test_zrange_by_rank(zabc):
    r = zabc
    assert r.zrange("z", 0, -1) == ["a", "b", "c", "d", "e"]
    assert r.zrange("z", 1, 2) == ["b", "c"]
    assert r.zrange("z", -2, -1) == ["d", "e"]
    assert r.zrange("z", 3, 1) == []
    assert r.zrange("z", 0, 1, desc=True) == ["e", "d"]
    assert r.zrevrange("z", 0, 2) == ["e", "d", "c"]
    assert r.zrange("missing", 0, -1) == []


def test_zrange_byscore(zabc):
    r = zabc
    assert r.zrange("z", 2, 4, byscore=True) == ["b", "c", "d"]
    assert r.zrange("z", "(2", "(4", byscore=True) == ["c"]
    assert r.zrange("z", "-inf", "+inf", byscore=True) == ["a", "b", "c", "d", "e"]
    assert r.zrange("z", 2, "+inf", byscore=True, offset=1, num=2) == ["c", "d"]
    assert r.zrange("z", 2, "+inf", byscore=True, offset=1, num=-1) == ["c", "d", "e"]
    assert r.zrange("z", 2, "+inf", byscore=True, offset=10, num=2) == []
    # REV takes max first.
    assert r.zrange("z", 4, 2, byscore=True, desc=True) == ["d", "c", "b"]
    assert r.zrange("z", "+inf", "(3", byscore=True, desc=True, offset=1, num=1) == ["d"]
    assert r.zrange("z", 5, 1, byscore=True) == []
    assert r.zrangebyscore("z", 1, 2) == ["a", "b"]
    assert r.zrangebyscore("z", "(1", 5, start=0, num=2) == ["b", "c"]
    assert r.zrevrangebyscore("z", 5, "(3") == ["e", "d"]
    assert r.zrevrangebyscore("z", "+inf", "-inf", start=1, num=2) == ["d", "c"]
    assert r.zcount("z", "(1", 3) == 2
    assert r.zcount("z", "-inf", "+inf") == 5
    assert r.zcount("z", 3, 1) == 0


def test_zrange_withscores(zabc, proto):
    r = zabc
    got = r.zrange("z", 0, 1, withscores=True)
    assert [tuple(x) for x in got] == [("a", 1.0), ("b", 2.0)]
    got = r.zrange("z", 3, "+inf", byscore=True, withscores=True, desc=False)
    assert [tuple(x) for x in got] == [("c", 3.0), ("d", 4.0), ("e", 5.0)]
    got = r.zrevrangebyscore("z", 5, 4, withscores=True)
    assert [tuple(x) for x in got] == [("e", 5.0), ("d", 4.0)]


def test_zrange_withscores_shape(raw, proto):
    raw.execute_command("ZADD", "z", "1.5", "a", "2", "b", "-3", "c")
    reply = raw.execute_command("ZRANGE", "z", "0", "-1", "WITHSCORES")
    if proto == 2:
        assert reply == ["c", "-3", "a", "1.5", "b", "2"]
    else:
        assert reply == [["c", -3.0], ["a", 1.5], ["b", 2.0]]
    reply = raw.execute_command("ZRANGE", "z", "0", "-1")
    assert reply == ["c", "a", "b"]
    reply = raw.execute_command("ZSCORE", "z", "a")
    assert reply == ("1.5" if proto == 2 else 1.5)
    assert raw.execute_command("ZSCORE", "z", "nope") is None
    reply = raw.execute_command("ZMSCORE", "z", "b", "nope")
    assert reply == (["2", None] if proto == 2 else [2.0, None])
    reply = raw.execute_command("ZINCRBY", "z", "1", "a")
    assert reply == ("2.5" if proto == 2 else 2.5)
    # ZPOPMIN: flat without COUNT; nested pairs with COUNT in RESP3.
    reply = raw.execute_command("ZPOPMIN", "z")
    assert reply == (["c", "-3"] if proto == 2 else ["c", -3.0])
    reply = raw.execute_command("ZPOPMAX", "z", "2")
    assert reply == (["a", "2.5", "b", "2"] if proto == 2 else [["a", 2.5], ["b", 2.0]])
    assert raw.execute_command("ZPOPMIN", "z") == []


@pytest.mark.redis72
def test_score_text_is_shortest_round_trip(raw2):
    raw2.execute_command("ZADD", "z", "0.1", "a", "1e20", "d")
    assert raw2.execute_command("ZSCORE", "z", "a") == "0.1"
    assert raw2.execute_command("ZSCORE", "z", "d") == "1e+20"
    assert raw2.execute_command("ZINCRBY", "z", "0.2", "a") == "0.30000000000000004"


@pytest.mark.redis72
def test_score_text_exponent_form_as_7_2(raw2):
    raw2.execute_command("ZADD", "z", "1e-7", "b", "123456789012345678", "c")
    assert raw2.execute_command("ZSCORE", "z", "b") == "1e-7"
    assert raw2.execute_command("ZSCORE", "z", "c") == "123456789012345680"


def test_zrange_bylex(r):
    r.zadd("z", {m: 0 for m in ("a", "b", "c", "d", "e", "f", "g")})
    assert r.zrange("z", "[b", "[d", bylex=True) == ["b", "c", "d"]
    assert r.zrange("z", "(b", "(d", bylex=True) == ["c"]
    assert r.zrange("z", "-", "+", bylex=True) == list("abcdefg")
    assert r.zrange("z", "-", "(c", bylex=True) == ["a", "b"]
    assert r.zrange("z", "[e", "+", bylex=True) == ["e", "f", "g"]
    assert r.zrange("z", "-", "+", bylex=True, offset=2, num=3) == ["c", "d", "e"]
    assert r.zrange("z", "+", "-", bylex=True, desc=True, offset=0, num=2) == ["g", "f"]
    assert r.zrange("z", "[d", "[b", bylex=True, desc=True) == ["d", "c", "b"]
    assert r.zrangebylex("z", "[aa", "(c") == ["b"]
    assert r.zrevrangebylex("z", "[c", "-") == ["c", "b", "a"]
    assert r.zlexcount("z", "-", "+") == 7
    assert r.zlexcount("z", "[b", "(e") == 3
    assert r.zremrangebylex("z", "[f", "+") == 2
    assert r.zrange("z", 0, -1) == list("abcde")
    assert cmd_error(r, "ZRANGE", "z", "b", "d", "BYLEX") == "ERR min or max not valid string range item"
    assert cmd_error(r, "ZLEXCOUNT", "z", "a", "+") == "ERR min or max not valid string range item"


def test_zrange_errors(zabc):
    r = zabc
    assert (
        cmd_error(r, "ZRANGE", "z", "0", "-1", "LIMIT", "0", "1")
        == "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"
    )
    assert (
        cmd_error(r, "ZRANGE", "z", "-", "+", "BYLEX", "WITHSCORES")
        == "ERR syntax error, WITHSCORES not supported in combination with BYLEX"
    )
    assert cmd_error(r, "ZRANGE", "z", "a", "b", "BYSCORE") == "ERR min or max is not a float"
    assert cmd_error(r, "ZRANGEBYSCORE", "z", "(x", "2") == "ERR min or max is not a float"
    assert cmd_error(r, "ZRANGE", "z", "0", "-1", "BOGUS") == SYNTAX
    assert cmd_error(r, "ZRANGE", "z", "a", "-1") == NOT_INTEGER
    assert cmd_error(r, "ZRANGE", "z", "0") == arity("zrange")
    assert cmd_error(r, "ZCOUNT", "z", "x", "1") == "ERR min or max is not a float"


def test_zrank_zrem_zremrange(zabc):
    r = zabc
    assert r.zrank("z", "a") == 0
    assert r.zrank("z", "e") == 4
    assert r.zrevrank("z", "e") == 0
    assert r.zrank("z", "zz") is None
    assert r.zrank("missing", "a") is None
    assert r.zrem("z", "a", "zz", "a") == 1
    assert r.zremrangebyrank("z", 0, 0) == 1
    assert r.zrange("z", 0, -1) == ["c", "d", "e"]
    assert r.zremrangebyscore("z", "(3", 4) == 1
    assert r.zrange("z", 0, -1) == ["c", "e"]
    assert r.zremrangebyrank("z", 0, -1) == 2
    assert r.exists("z") == 0, "an emptied sorted set is deleted"
    assert r.zrem("missing", "a") == 0


@pytest.mark.redis72
def test_zrank_withscore(zabc, raw, proto):
    assert raw.execute_command("ZRANK", "z", "c", "WITHSCORE") == ([2, "3"] if proto == 2 else [2, 3.0])
    assert raw.execute_command("ZREVRANK", "z", "c", "WITHSCORE") == ([2, "3"] if proto == 2 else [2, 3.0])
    assert raw.execute_command("ZRANK", "z", "nope", "WITHSCORE") is None
    assert cmd_error(raw, "ZRANK", "z", "c", "WITHSCORES") == SYNTAX


def test_zrangestore(zabc):
    r = zabc
    assert r.zrangestore("dst", "z", 1, 3) == 3
    got = r.zrange("dst", 0, -1, withscores=True)
    assert [tuple(x) for x in got] == [("b", 2.0), ("c", 3.0), ("d", 4.0)]
    assert r.zrangestore("dst", "z", "(4", "+inf", byscore=True) == 1
    assert r.zrange("dst", 0, -1) == ["e"]
    assert r.zrangestore("dst", "z", 10, 20) == 0
    assert r.exists("dst") == 0
    assert r.zrangestore("z", "z", 0, 1) == 2
    assert r.zrange("z", 0, -1) == ["a", "b"]


def test_zscan(r):
    big = {f"m{i}": float(i) for i in range(600)}
    r.zadd("z", big)
    got, cursor, calls = {}, 0, 0
    while True:
        cursor, batch = r.zscan("z", cursor, count=30)
        got.update(dict(batch))
        calls += 1
        assert calls < 10000
        if cursor == 0:
            break
    assert got == big
    assert dict(r.zscan_iter("z", match="m59?")) == {f"m{i}": float(i) for i in range(590, 600)}
    assert r.zscan("missing", 0) == (0, [])


def test_zset_score_edge_values(r):
    r.zadd("z", {"ninf": float("-inf"), "pinf": float("inf"), "zero": 0, "neg": -1.5})
    assert r.zrange("z", 0, -1) == ["ninf", "neg", "zero", "pinf"]
    assert r.zscore("z", "pinf") == float("inf")
    assert r.zscore("z", "ninf") == float("-inf")
    assert r.zrangebyscore("z", "-inf", "-inf") == ["ninf"]
    assert r.zrangebyscore("z", "(-inf", "(inf") == ["neg", "zero"]
    # Equal scores order by member.
    r.zadd("same", {"b": 1, "a": 1, "c": 1})
    assert r.zrange("same", 0, -1) == ["a", "b", "c"]


# =============================================================================================
# Transactions


@pytest.fixture
def conn(r):
    c = Conn(r)
    yield c
    c.close()


def test_multi_exec(conn, proto):
    assert conn("MULTI") == "OK"
    assert conn("SET", "a", "1") == "QUEUED"
    assert conn("INCR", "a") == "QUEUED"
    assert conn("RPUSH", "l", "x", "y") == "QUEUED"
    assert conn("GET", "a") == "QUEUED"
    assert conn("PING") == "QUEUED"
    reply = conn("EXEC")
    assert reply == ["OK", 2, 2, "2", "PONG"]


def test_exec_runtime_error_does_not_abort(conn):
    conn("SET", "s", "text")
    conn("MULTI")
    conn("INCR", "s")
    conn("SET", "b", "2")
    reply = conn("EXEC")
    assert isinstance(reply[0], redis.ResponseError)
    assert str(reply[0]) == "value is not an integer or out of range"
    assert reply[1] == "OK"
    assert conn("GET", "b") == "2"


def test_exec_abort_after_queueing_error(conn):
    conn("MULTI")
    assert conn("SET", "a", "1") == "QUEUED"
    assert (
        conn.error("NOSUCHCOMMAND", "x")
        == "ERR unknown command 'NOSUCHCOMMAND', with args beginning with: 'x' "
    )
    assert conn.error("GET") == arity("get")
    assert conn.error("EXEC") == "EXECABORT Transaction discarded because of previous errors."
    assert conn("EXISTS", "a") == 0
    # The connection is out of MULTI again.
    assert conn.error("EXEC") == "ERR EXEC without MULTI"


def test_discard_and_misuse(conn):
    assert conn.error("EXEC") == "ERR EXEC without MULTI"
    assert conn.error("DISCARD") == "ERR DISCARD without MULTI"
    conn("MULTI")
    assert conn.error("MULTI") == "ERR MULTI calls can not be nested"
    assert conn.error("WATCH", "k") == "ERR WATCH inside MULTI is not allowed"
    conn("SET", "a", "1")
    assert conn("DISCARD") == "OK"
    assert conn("EXISTS", "a") == 0
    conn("MULTI")
    assert conn("EXEC") == []


def test_watch_concurrent_modification_aborts(conn, r, server):
    other = server.client()
    try:
        conn("SET", "k", "1")
        assert conn("WATCH", "k") == "OK"
        assert other.set("k", "2") is True
        conn("MULTI")
        conn("SET", "k", "mine")
        conn("SET", "side", "effect")
        assert conn("EXEC") is None
        assert r.get("k") == "2"
        assert r.exists("side") == 0, "an aborted transaction runs nothing"
        # Watches are cleared by EXEC: the next transaction runs.
        conn("MULTI")
        conn("SET", "k", "mine")
        assert conn("EXEC") == ["OK"]
        assert r.get("k") == "mine"
    finally:
        other.close()


def test_watch_variants(conn, r, server):
    other = server.client()
    try:
        # Unmodified watched key: EXEC runs.
        conn("SET", "k", "1")
        conn("WATCH", "k")
        other.get("k")
        conn("MULTI")
        conn("INCR", "k")
        assert conn("EXEC") == [2]
        # A missing key that another client creates.
        conn("WATCH", "absent")
        other.set("absent", "now")
        conn("MULTI")
        conn("SET", "absent", "mine")
        assert conn("EXEC") is None
        assert r.get("absent") == "now"
        # A key another client deletes.
        conn("WATCH", "k")
        other.delete("k")
        conn("MULTI")
        conn("SET", "k", "x")
        assert conn("EXEC") is None
        assert r.exists("k") == 0
        # A key another client gives a TTL.
        conn("SET", "t", "v")
        conn("WATCH", "t")
        other.expire("t", 100)
        conn("MULTI")
        conn("GET", "t")
        assert conn("EXEC") is None
        # UNWATCH forgets.
        conn("WATCH", "k")
        conn("UNWATCH")
        other.set("k", "changed")
        conn("MULTI")
        conn("GET", "k")
        assert conn("EXEC") == ["changed"]
        # DISCARD forgets too.
        conn("WATCH", "k")
        conn("MULTI")
        conn("DISCARD")
        other.set("k", "again")
        conn("MULTI")
        conn("GET", "k")
        assert conn("EXEC") == ["again"]
        # Several keys: one change is enough.
        conn("WATCH", "a", "b", "c")
        other.rpush("b", "x")
        conn("MULTI")
        conn("PING")
        assert conn("EXEC") is None
    finally:
        other.close()


def test_watch_same_value_write_aborts(conn, server):
    other = server.client()
    try:
        conn("SET", "k", "same")
        conn("WATCH", "k")
        other.set("k", "same")
        conn("MULTI")
        conn("SET", "k", "mine")
        assert conn("EXEC") is None
    finally:
        other.close()


def test_watch_ignores_writes_that_change_nothing(conn, server):
    """Redis signals a watched key only when a write changed it: a LREM/SREM/HDEL that matches
    nothing, or a command that fails with WRONGTYPE, leaves the transaction alone."""
    other = server.client()
    try:
        conn("RPUSH", "l", "a")
        conn("SADD", "s", "a")
        conn("HSET", "h", "f", "v")
        conn("SET", "str", "text")
        conn("WATCH", "l", "s", "h", "str")
        assert other.lrem("l", 0, "zz") == 0
        assert other.srem("s", "zz") == 0
        assert other.hdel("h", "zz") == 0
        with pytest.raises(redis.ResponseError):
            other.lpush("str", "x")
        with pytest.raises(redis.ResponseError):
            other.incr("str")
        conn("MULTI")
        conn("PING")
        assert conn("EXEC") == ["PONG"]
        # A write that does change the list still aborts.
        conn("WATCH", "l")
        assert other.lrem("l", 0, "a") == 1
        conn("MULTI")
        conn("PING")
        assert conn("EXEC") is None
    finally:
        other.close()


def test_unwatch_is_queued_inside_multi(conn):
    conn("WATCH", "k")
    conn("MULTI")
    assert conn("UNWATCH") == "QUEUED"
    assert conn("EXEC") == ["OK"]


def test_redis_py_transaction_with_watch(r, server):
    """redis-py's optimistic-locking idiom: WatchError on a concurrent change, then a retry."""
    other = server.client()
    try:
        r.set("counter", "10")
        attempts = 0
        with r.pipeline() as p:
            while True:
                attempts += 1
                try:
                    p.watch("counter")
                    v = int(p.get("counter"))
                    if attempts == 1:
                        other.incr("counter")  # interferes exactly once
                    p.multi()
                    p.set("counter", v * 2)
                    p.execute()
                    break
                except redis.WatchError:
                    assert attempts == 1
                    continue
        assert attempts == 2
        assert r.get("counter") == "22"
    finally:
        other.close()


# =============================================================================================
# Pipelining


def test_pipeline_many_commands_in_order(r):
    n = 2000
    p = r.pipeline(transaction=False)
    for i in range(n):
        p.set(f"k{i}", i)
        p.incrby(f"k{i}", i)
        p.get(f"k{i}")
    replies = p.execute()
    assert len(replies) == 3 * n
    for i in range(n):
        assert replies[3 * i : 3 * i + 3] == [True, 2 * i, str(2 * i)], i
    assert r.dbsize() == n


def test_pipeline_mixed_types_and_errors(r):
    p = r.pipeline(transaction=False)
    p.rpush("l", "a", "b")
    p.incr("l")  # WRONGTYPE, in the middle
    p.lrange("l", 0, -1)
    p.execute_command("NOPE")
    p.hset("h", "f", "v")
    p.hgetall("h")
    p.zadd("z", {"m": 1.5})
    p.zscore("z", "m")
    p.echo("end")
    replies = p.execute(raise_on_error=False)
    assert replies[0] == 2
    assert isinstance(replies[1], redis.ResponseError) and str(replies[1]) == WRONGTYPE
    assert replies[2] == ["a", "b"]
    assert isinstance(replies[3], redis.ResponseError)
    assert str(replies[3]) == "unknown command 'NOPE', with args beginning with: "
    assert replies[4:] == [1, {"f": "v"}, 1, 1.5, "end"]


def test_pipeline_transaction(r):
    p = r.pipeline(transaction=True)
    p.set("a", "1").incr("a").sadd("s", "x", "y").scard("s")
    assert p.execute() == [True, 2, 2, 2]


def test_large_values_round_trip(r):
    big = "x" * (5 * 1024 * 1024) + "end"
    assert r.set("big", big) is True
    assert r.strlen("big") == len(big)
    assert r.get("big") == big
    members = [f"member-{i}" for i in range(20000)]
    assert r.rpush("biglist", *members) == 20000
    assert r.lrange("biglist", 0, -1) == members


# =============================================================================================
# Errors common to all commands


def test_unknown_command_and_arity(r):
    assert (
        cmd_error(r, "FOOBAR", "a", "b")
        == "ERR unknown command 'FOOBAR', with args beginning with: 'a' 'b' "
    )
    assert cmd_error(r, "FOOBAR") == "ERR unknown command 'FOOBAR', with args beginning with: "
    for args, name in (
        (("SET", "k"), "set"),
        (("HGET", "h"), "hget"),
        (("ZADD", "z"), "zadd"),
        (("SADD", "s"), "sadd"),
        (("LLEN",), "llen"),
        (("EXPIRE", "k"), "expire"),
        (("TTL", "a", "b"), "ttl"),
        (("GETRANGE", "k", "0"), "getrange"),
    ):
        assert cmd_error(r, *args) == arity(name), args


def test_wrongtype_everywhere(r):
    r.set("str", "x")
    r.rpush("list", "x")
    r.hset("hash", "f", "v")
    r.sadd("set", "x")
    r.zadd("zset", {"x": 1})
    cases = [
        ("GET", "list"),
        ("APPEND", "hash", "x"),
        ("LPUSH", "str", "x"),
        ("LINDEX", "set", "0"),
        ("HGET", "zset", "f"),
        ("HSET", "list", "f", "v"),
        ("SADD", "hash", "x"),
        ("SMEMBERS", "str"),
        ("SINTER", "set", "list"),
        ("ZADD", "set", "1", "x"),
        ("ZRANGE", "hash", "0", "-1"),
        ("ZSCORE", "str", "x"),
        ("HSCAN", "set", "0"),
        ("SSCAN", "zset", "0"),
        ("ZSCAN", "list", "0"),
    ]
    for args in cases:
        assert cmd_error(r, *args) == WRONGTYPE, args
    # Nothing changed.
    assert r.get("str") == "x"
    assert r.lrange("list", 0, -1) == ["x"]
    assert r.hgetall("hash") == {"f": "v"}
    assert r.smembers("set") == {"x"}
    assert r.zrange("zset", 0, -1) == ["x"]


def test_not_an_integer_everywhere(r):
    r.rpush("l", "a")
    for args in (
        ("LRANGE", "l", "x", "1"),
        ("LINDEX", "l", "1.0"),
        ("EXPIRE", "l", "1e3"),
        ("INCRBY", "n", "0x10"),
        ("SETRANGE", "k", "one", "v"),
        ("LTRIM", "l", "0", "-1a"),
        ("ZREMRANGEBYRANK", "z", "0", "x"),
        ("HINCRBY", "h", "f", "9223372036854775808"),
    ):
        assert cmd_error(r, *args) == NOT_INTEGER, args


# =============================================================================================
# Edge cases found by running the same commands against redis-server (see conftest: calibration)


def test_decrby_most_negative_text(r):
    r.set("n", "5")
    assert cmd_error(r, "DECRBY", "n", "-9223372036854775808") == "ERR decrement would overflow"
    assert r.get("n") == "5"
    r.set("n", "0")
    assert r.decrby("n", 9223372036854775807) == -9223372036854775807
    assert cmd_error(r, "DECRBY", "n", "2") == "ERR increment or decrement would overflow"


def test_getrange_both_ends_negative_and_crossed(r):
    r.set("s", "abc")
    assert r.getrange("s", -1, -5) == ""
    assert r.getrange("s", -1, -2) == ""
    assert r.getrange("s", -100, -50) == "a"
    assert r.getrange("s", -2, -2) == "b"
    r.set("one", "x")
    assert r.getrange("one", -1, -5) == ""
    assert r.getrange("one", 0, -5) == "x"


def test_getex_checks_key_and_type_before_the_number(r):
    r.rpush("l", "x")
    assert cmd_error(r, "GETEX", "l", "EX", "0") == WRONGTYPE
    assert cmd_error(r, "GETEX", "l", "EX", "abc") == WRONGTYPE
    assert r.execute_command("GETEX", "missing", "EX", "abc") is None
    assert r.execute_command("GETEX", "missing", "PX", "0") is None
    assert cmd_error(r, "GETEX", "missing", "BOGUS") == SYNTAX
    assert cmd_error(r, "GETEX", "missing", "EX", "1", "PERSIST") == SYNTAX
    r.set("s", "v")
    assert cmd_error(r, "GETEX", "s", "EX", "abc") == NOT_INTEGER
    assert cmd_error(r, "GETEX", "s", "PX", "0") == "ERR invalid expire time in 'getex' command"
    assert r.ttl("s") == -1


def test_expiry_options_may_repeat(r):
    assert r.execute_command("SET", "k", "v", "EX", "10", "EX", "20") is True
    assert r.ttl("k") == 20
    assert r.execute_command("SET", "k", "v", "EX", "abc", "EX", "30") is True
    assert r.ttl("k") == 30
    assert r.execute_command("SET", "k", "w", "KEEPTTL", "KEEPTTL") is True
    assert r.ttl("k") == 30
    assert cmd_error(r, "SET", "k", "v", "EX", "abc", "BOGUS") == SYNTAX
    assert cmd_error(r, "SET", "k", "v", "KEEPTTL", "EX", "1") == SYNTAX
    assert r.execute_command("GETEX", "k", "PX", "5000", "PX", "9000") == "w"
    assert 8000 < r.pttl("k") <= 9000
    assert r.execute_command("GETEX", "k", "PERSIST", "PERSIST") == "w"
    assert r.ttl("k") == -1


def test_setrange_checks_type_before_size(r):
    r.rpush("l", "x")
    assert cmd_error(r, "SETRANGE", "l", "536870912", "x") == WRONGTYPE
    too_big = "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
    assert cmd_error(r, "SETRANGE", "n", "536870912", "x") == too_big
    assert r.setrange("n", 536870912, "") == 0
    r.set("s", "abc")
    assert r.setrange("s", 536870912, "") == 3
    assert cmd_error(r, "SETRANGE", "s", "536870911", "xy") == too_big
    assert cmd_error(r, "APPEND", "l", "x") == WRONGTYPE


def test_incrbyfloat_checks_type_first(r):
    r.rpush("l", "x")
    assert cmd_error(r, "INCRBYFLOAT", "l", "abc") == WRONGTYPE


def test_float_increments_read_back_their_own_long_results(r):
    # 1e300 is written as 301 plain digits; the next increment must be able to read it.
    assert r.incrbyfloat("f", 1e300) == 1e300
    assert len(r.get("f")) > 300
    assert r.incrbyfloat("f", 1e300) == 2e300
    assert float(r.get("f")) == 2e300
    h1 = r.hincrbyfloat("h", "f", 1e300)
    assert h1 == 1e300
    assert r.hincrbyfloat("h", "f", 1e300) == 2e300
    assert float(r.hget("h", "f")) == 2e300


def test_glob_unterminated_class(r):
    r.mset({"a": "1", "[abc": "2"})
    assert r.keys("[abc") == ["a"]


def test_hexadecimal_floats(r):
    assert r.execute_command("ZADD", "z", "0x10", "m") == 1
    assert r.zscore("z", "m") == 16.0


def test_nested_multi_does_not_abort_the_transaction(conn):
    conn("MULTI")
    conn("SET", "a", "1")
    assert conn.error("MULTI") == "ERR MULTI calls can not be nested"
    assert conn.error("WATCH", "x") == "ERR WATCH inside MULTI is not allowed"
    assert conn("EXEC") == ["OK"]


def test_server_commands_inside_multi(conn):
    conn("MULTI")
    assert conn("CLIENT", "ID") == "QUEUED"
    assert conn("INFO", "keyspace") == "QUEUED"
    assert conn("CONFIG", "GET", "maxclients") == "QUEUED"
    reply = conn("EXEC")
    assert isinstance(reply[0], int)
    assert reply[1].startswith("# Keyspace")


def test_list_max_listpack_size_takes_any_int_as_redis(admin, r2):
    # Redis 7.2's unit/type/list: 0 counts as 1 element, below -5 as -5 (64 KB).
    try:
        assert admin.config_set("list-max-listpack-size", 0) is True
        r2.rpush("l0", "a")
        assert r2.object("encoding", "l0") == "listpack"
        r2.rpush("l0", "b")
        assert r2.object("encoding", "l0") == "quicklist"
        assert admin.config_set("list-max-listpack-size", -6) is True
        r2.rpush("l6", "x" * 60000)
        assert r2.object("encoding", "l6") == "listpack"
        r2.rpush("l6", "x" * 5536)
        assert r2.object("encoding", "l6") == "quicklist"
    finally:
        admin.config_set("list-max-listpack-size", -2)
