"""ZUNION/ZINTER/ZDIFF (+STORE), ZINTERCARD, ZRANDMEMBER, ZMPOP, LMPOP and LCS through redis-py,
RESP2 and RESP3. Run with FERRITE_TEST_REDIS_SERVER to check the expectations against Redis."""

from __future__ import annotations

from helpers import SYNTAX, WRONGTYPE, cmd_error


def _pairs(reply):
    """[member, score] pairs from either protocol's shape (RESP2 flat or tuples, RESP3 nested)."""
    if reply and not isinstance(reply[0], (list, tuple)):
        reply = list(zip(reply[::2], reply[1::2]))
    return [[m, float(s)] for m, s in reply]


def _data(r):
    r.zadd("a", {"x": 1, "y": 2, "z": 3})
    r.zadd("b", {"y": 10, "z": 20, "w": 30})
    r.sadd("s", "x", "w")


def test_union_inter_diff(r):
    _data(r)
    assert _pairs(r.zunion(["a", "b"], withscores=True)) == [["x", 1.0], ["y", 12.0], ["z", 23.0], ["w", 30.0]]
    assert r.zinter({"a": 2, "b": 1}, aggregate="MAX") == ["y", "z"]
    assert _pairs(r.zinter(["a", "b"], aggregate="MIN", withscores=True)) == [["y", 2.0], ["z", 3.0]]
    assert r.zdiff(["a", "b"]) == ["x"]
    assert _pairs(r.zinter(["a", "s"], withscores=True)) == [["x", 2.0]]
    assert r.zunionstore("d", ["a", "b", "s"]) == 4
    assert r.zscore("d", "w") == 31
    assert r.zinterstore("d", ["a", "missing"]) == 0
    assert r.exists("d") == 0
    assert r.zdiffstore("d", ["a"]) == 3
    assert r.zintercard(2, ["a", "b"]) == 2
    assert r.zintercard(2, ["a", "b"], limit=1) == 1
    assert cmd_error(r, "ZUNION", "0", "a") == "ERR at least 1 input key is needed for 'zunion' command"
    assert cmd_error(r, "ZUNION", "3", "a", "b") == SYNTAX
    r.set("str", "v")
    assert cmd_error(r, "ZUNION", "2", "a", "str") == WRONGTYPE


def test_zrandmember(r):
    r.zadd("z", {"a": 1, "b": 2, "c": 3})
    assert r.zrandmember("z") in ("a", "b", "c")
    assert sorted(r.zrandmember("z", 5)) == ["a", "b", "c"]
    assert len(r.zrandmember("z", -7)) == 7
    pairs = _pairs(r.zrandmember("z", 2, withscores=True))
    assert len(pairs) == 2 and all(p[1] in (1.0, 2.0, 3.0) for p in pairs)
    assert r.zrandmember("missing") is None
    assert r.zrandmember("missing", 2) == []


def test_zmpop_and_lmpop(r):
    r.zadd("z", {"a": 1, "b": 2, "c": 3})
    key, popped = r.zmpop(2, ["none", "z"], min=True, count=2)
    assert key == "z" and _pairs(popped) == [["a", 1.0], ["b", 2.0]]
    key, popped = r.zmpop(1, ["z"], max=True)
    assert key == "z" and _pairs(popped) == [["c", 3.0]]
    assert r.zmpop(1, ["z"], max=True) is None
    assert cmd_error(r, "ZMPOP", "0", "z", "MIN") == "ERR numkeys should be greater than 0"
    assert cmd_error(r, "ZMPOP", "1", "z", "MIN", "COUNT", "0") == "ERR count should be greater than 0"
    r.rpush("l", "1", "2", "3")
    assert r.lmpop(2, "none", "l", direction="LEFT", count=2) == ["l", ["1", "2"]]
    assert r.lmpop(1, "l", direction="RIGHT") == ["l", ["3"]]
    assert r.exists("l") == 0
    assert r.lmpop(1, "l", direction="RIGHT") is None
    assert cmd_error(r, "LMPOP", "1", "l", "UP") == SYNTAX
    r.set("str", "v")
    assert cmd_error(r, "LMPOP", "1", "str", "LEFT") == WRONGTYPE


def test_lcs(r):
    r.mset({"key1": "ohmytext", "key2": "mynewtext"})
    assert r.lcs("key1", "key2") == "mytext"
    assert r.lcs("key1", "key2", len=True) == 6
    res = r.lcs("key1", "key2", idx=True, minmatchlen=4, withmatchlen=True)
    if isinstance(res, list):
        res = dict(zip(res[::2], res[1::2]))
    assert res["matches"] == [[[4, 7], [5, 8], 4]] and res["len"] == 6
    r.rpush("l", "x")
    assert cmd_error(r, "LCS", "key1", "l") == "ERR The specified keys must contain string values"
