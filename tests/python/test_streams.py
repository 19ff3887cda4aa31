"""Streams through redis-py (RESP2 and RESP3): entries, reads, consumer groups, pending entries,
claims, XINFO, and the tenant memory quota on XADD. Explicit ids keep replies independent of the
clock; run with FERRITE_TEST_REDIS_SERVER=/usr/bin/redis-server to check the expectations."""

from __future__ import annotations

import pytest
import redis

from helpers import WRONGTYPE, cmd_error, error_text


def test_add_range_len_del_trim(r):
    assert r.xadd("s", {"a": "1"}, id="1-1") == "1-1"
    assert r.xadd("s", {"b": "2", "c": "3"}, id="1-*") == "1-2"
    assert r.xadd("s", {"d": "4"}, id="2") == "2-0"
    assert r.xlen("s") == 3
    assert r.xrange("s") == [
        ("1-1", {"a": "1"}),
        ("1-2", {"b": "2", "c": "3"}),
        ("2-0", {"d": "4"}),
    ]
    assert r.xrevrange("s", count=1) == [("2-0", {"d": "4"})]
    assert r.xrange("s", min="(1-1", max="(2-0") == [("1-2", {"b": "2", "c": "3"})]
    assert r.xdel("s", "1-2", "9-9") == 1
    assert r.xtrim("s", maxlen=1, approximate=False) == 1
    assert r.xrange("s") == [("2-0", {"d": "4"})]
    assert r.xtrim("s", minid="3-0") == 1
    assert r.xlen("s") == 0 and r.exists("s") == 1, "an emptied stream stays"
    assert r.type("s") == "stream"
    assert r.object("encoding", "s") == "stream"
    assert cmd_error(r, "XADD", "s", "1-0", "a", "1") == (
        "ERR The ID specified in XADD is equal or smaller than the target stream top item"
    )
    assert r.xadd("nokey", {"a": 1}, nomkstream=True) is None
    r.set("str", "x")
    assert cmd_error(r, "XADD", "str", "*", "a", "1") == WRONGTYPE
    assert cmd_error(r, "XLEN", "str") == WRONGTYPE


def test_generated_ids_increase(r):
    ids = [r.xadd("auto", {"n": i}) for i in range(50)]
    parsed = [tuple(int(x) for x in i.split("-")) for i in ids]
    assert parsed == sorted(parsed) and len(set(parsed)) == 50
    assert r.xadd("auto", {"n": "x"}, maxlen=10, approximate=False)
    assert r.xlen("auto") == 10


def test_xread_both_protocols(r):
    r.xadd("a", {"f": "1"}, id="1-0")
    r.xadd("b", {"f": "2"}, id="2-0")
    got = r.xread({"a": "0", "b": "0", "missing": "0"}, count=5)
    expected = {"a": [[("1-0", {"f": "1"})]], "b": [[("2-0", {"f": "2"})]]}
    if isinstance(got, dict):  # RESP3: a map of key -> entries
        assert got == expected
    else:
        assert {k: [v] for k, v in got} == expected
    assert r.xread({"a": "$"}) in (None, [], {})
    # BLOCK inside MULTI answers at once, as if it had timed out.
    p = r.pipeline(transaction=True)
    p.xread({"a": "$"}, block=1000)
    assert p.execute()[0] in (None, [], {})


def test_consumer_group_lifecycle(r):
    assert r.xgroup_create("q", "g", id="$", mkstream=True)
    for i in range(1, 6):
        r.xadd("q", {"job": i}, id=f"{i}-0")
    got = r.xreadgroup("g", "alice", {"q": ">"}, count=3)
    entries = got["q"][0] if isinstance(got, dict) else got[0][1]
    assert [e[0] for e in entries] == ["1-0", "2-0", "3-0"]
    got = r.xreadgroup("g", "bob", {"q": ">"})
    entries = got["q"][0] if isinstance(got, dict) else got[0][1]
    assert [e[0] for e in entries] == ["4-0", "5-0"]
    summary = r.xpending("q", "g")
    assert summary["pending"] == 5
    assert summary["min"] == "1-0" and summary["max"] == "5-0"
    assert sorted((c["name"], c["pending"]) for c in summary["consumers"]) == [
        ("alice", 3),
        ("bob", 2),
    ]
    assert r.xack("q", "g", "1-0", "2-0", "7-0") == 2
    detail = r.xpending_range("q", "g", min="-", max="+", count=10, consumername="alice")
    assert [(d["message_id"], d["times_delivered"]) for d in detail] == [("3-0", 1)]
    assert r.xclaim("q", "g", "carol", 0, ["3-0", "4-0"], justid=True) == ["3-0", "4-0"]
    claimed = r.xautoclaim("q", "g", "dave", 0, start_id="0", count=1)
    assert claimed[0] == "4-0" and [e[0] for e in claimed[1]] == ["3-0"]
    groups = r.xinfo_groups("q")
    assert len(groups) == 1
    g = groups[0]
    assert (g["name"], g["pending"], g["last-delivered-id"], g["entries-read"], g["lag"]) == (
        "g",
        3,
        "5-0",
        5,
        0,
    )
    consumers = {c["name"]: c["pending"] for c in r.xinfo_consumers("q", "g")}
    assert consumers == {"alice": 0, "bob": 1, "carol": 1, "dave": 1}
    assert r.xgroup_delconsumer("q", "g", "dave") == 1
    assert r.xgroup_createconsumer("q", "g", "erin") == 1
    assert r.xgroup_setid("q", "g", "0", entries_read=0)
    info = r.xinfo_stream("q")
    assert info["length"] == 5 and info["groups"] == 1
    assert info["first-entry"] == ("1-0", {"job": "1"})
    assert r.xgroup_destroy("q", "g") == 1
    assert cmd_error(r, "XREADGROUP", "GROUP", "g", "x", "STREAMS", "q", ">") == (
        "NOGROUP No such key 'q' or consumer group 'g' in XREADGROUP with GROUP option"
    )


def test_xinfo_stream_full(r):
    r.xadd("f", {"a": "1"}, id="1-0")
    r.xgroup_create("f", "g", id="0")
    r.xreadgroup("g", "c", {"f": ">"})
    full = r.xinfo_stream("f", full=True)
    assert full["length"] == 1
    # redis-py turns the entries into a dict with RESP3 (and with some versions RESP2 too).
    assert full["entries"] in ([("1-0", {"a": "1"})], {"1-0": {"a": "1"}})
    (g,) = full["groups"]
    assert g["name"] == "g" and g["pel-count"] == 1 and g["entries-read"] == 1
    assert g["pending"][0][0] == "1-0" and g["pending"][0][1] == "c"
    (c,) = g["consumers"]
    assert c["name"] == "c" and c["pel-count"] == 1


@pytest.mark.redis72
def test_consumers_seen_and_active_times(r):
    """Redis 7.2: XINFO CONSUMERS gives `inactive` (ms since the last read that delivered
    entries or claim that claimed, -1 before any) beside `idle` (since the last attempt), and
    XINFO STREAM FULL the consumers' `active-time`; a read that finds nothing still creates the
    consumer."""
    r.xgroup_create("t", "g", id="$", mkstream=True)
    r.xgroup_createconsumer("t", "g", "made")
    assert r.xreadgroup("g", "alice", {"t": ">"}) in (None, [], {})
    consumers = {c["name"]: c for c in r.xinfo_consumers("t", "g")}
    assert set(consumers) == {"alice", "made"}
    assert consumers["alice"]["inactive"] == -1 and consumers["made"]["inactive"] == -1
    r.xadd("t", {"f": "v"}, id="1-0")
    r.xreadgroup("g", "alice", {"t": ">"})
    r.xreadgroup("g", "bob", {"t": "0"})
    c = {c["name"]: c for c in r.xinfo_consumers("t", "g")}
    assert 0 <= c["alice"]["inactive"] < 1000 and c["bob"]["inactive"] == -1
    r.xclaim("t", "g", "carol", 0, ["1-0"])
    (g,) = r.xinfo_stream("t", full=True)["groups"]
    full = {c["name"]: c for c in g["consumers"]}
    assert full["carol"]["active-time"] >= full["alice"]["active-time"] > 0
    assert full["bob"]["active-time"] == -1 and full["bob"]["seen-time"] > 0


def test_xsetid_and_errors(r):
    r.xadd("m", {"a": "1"}, id="5-0")
    assert cmd_error(r, "XSETID", "m", "4-0") == (
        "ERR The ID specified in XSETID is smaller than the target stream top item"
    )
    assert r.execute_command("XSETID", "m", "10-0", "ENTRIESADDED", "9", "MAXDELETEDID", "7-0")
    info = r.xinfo_stream("m")
    assert info["last-generated-id"] == "10-0"
    assert info["entries-added"] == 9 and info["max-deleted-entry-id"] == "7-0"
    assert cmd_error(r, "XRANGE", "m", "bad", "+") == (
        "ERR Invalid stream ID specified as stream command argument"
    )
    assert cmd_error(r, "XGROUP", "CREATE", "nokey", "g", "$").startswith(
        "ERR The XGROUP subcommand requires the key to exist."
    )


@pytest.mark.ferrite_only
def test_xadd_respects_the_tenant_memory_quota(server, admin):
    name = "streamquota"
    admin.execute_command("TENANT.CREATE", name, "PASSWORD", "pw", "MAXMEMORY", "200000")
    try:
        c = redis.Redis(
            host=server.host, port=server.port, username=name, password="pw", decode_responses=True
        )
        # XGROUP CREATE is denyoom (as in Redis): create the group before the tenant is full.
        c.xgroup_create("s", "g", id="0", mkstream=True)
        refused = None
        for i in range(5000):
            try:
                c.xadd("s", {"payload": "x" * 100, "i": i})
            except redis.ResponseError as e:
                refused = error_text(e)
                break
        assert refused is not None and refused.startswith("OOM"), refused
        stored = c.xlen("s")
        assert 0 < stored < 5000
        info = dict(zip(*[iter(admin.execute_command("TENANT.INFO", name))] * 2))
        # The quota admits a write by its request size; a block growing its buffer may add a few KiB.
        assert int(info["memory_used"]) <= 200000 + 8192, info
        # A transaction of XADDs over the quota is refused whole.
        p = c.pipeline(transaction=True)
        for _ in range(50):
            p.xadd("s", {"payload": "y" * 1000})
        with pytest.raises(redis.ResponseError):
            p.execute()
        assert c.xlen("s") == stored
        # Consumers can still read, acknowledge and trim at the quota.
        c.xreadgroup("g", "c", {"s": ">"}, count=5)
        assert c.xack("s", "g", *[e for e, _ in c.xrange("s", count=5)]) == 5
        assert c.xtrim("s", maxlen=10, approximate=False) == stored - 10
        c.xadd("s", {"payload": "fits again"})
    finally:
        admin.execute_command("TENANT.DELETE", name, "FORCE")


@pytest.mark.redis72
def test_xsetid_never_goes_below_the_max_deleted_id(r2):
    for i in (1, 2, 3):
        r2.xadd("x", {"f": i}, id=f"1-{i}")
    r2.xdel("x", "1-2", "1-3")
    assert r2.xinfo_stream("x")["max-deleted-entry-id"] == "1-3"
    assert cmd_error(r2, "XSETID", "x", "1-2") == \
        "ERR The ID specified in XSETID is smaller than current max_deleted_entry_id"
    assert r2.execute_command("XSETID", "x", "1-3") == "OK"


@pytest.mark.redis72
def test_unbalanced_stream_lists_name_the_command(r2):
    r2.xgroup_create("s", "g", id="$", mkstream=True)
    assert cmd_error(r2, "XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "STREAMS", "s") == \
        "ERR Unbalanced 'xreadgroup' list of streams: for each stream key an ID or '>' must be specified."
    assert cmd_error(r2, "XREAD", "COUNT", "1", "STREAMS", "s") == \
        "ERR Unbalanced 'xread' list of streams: for each stream key an ID or '$' must be specified."
