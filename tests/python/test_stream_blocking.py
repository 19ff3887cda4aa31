"""XREAD / XREADGROUP with BLOCK through redis-py: woken by an XADD from another client (`$`
resolved when it blocked), timeouts, BLOCK 0, CLIENT UNBLOCK, XREADGROUP `>` with a consumer
group (one entry delivered to one consumer), the stream deleted / retyped / flushed while a reader
waits (Redis 7.2: XREAD keeps waiting, XREADGROUP runs again and gets that command's own
`-NOGROUP` / `-WRONGTYPE`, or data after a RENAME), XGROUP DESTROY (`-NOGROUP`), a woken
reader answering every stream with entries for it (7.2 runs it again whole), RESP3, no blocking
inside MULTI, and the journal/digest effects of a served XREADGROUP."""

from __future__ import annotations

import time

import pytest
import redis

from test_blocking import TIMEOUT, Background, bc, blocked_count, wait_blocked


def test_xread_block_dollar_is_woken_by_xadd(server, admin):
    w = server.client(decode_responses=True)
    w.xadd("s", {"old": "1"}, id="1-1")
    r = Background(bc(server), "XREAD", "BLOCK", "0", "STREAMS", "s", "$")
    wait_blocked(admin, 1)
    w.xadd("s", {"f": "v"}, id="2-1")
    assert r.result() == [[b"s", [[b"2-1", [b"f", b"v"]]]]]
    assert blocked_count(admin) == 0


def test_xread_block_on_a_missing_stream_and_several_keys(server, admin):
    w = server.client(decode_responses=True)
    w.xadd("b", {"x": "1"}, id="5-0")
    r = Background(bc(server), "XREAD", "COUNT", "10", "BLOCK", "0", "STREAMS", "a", "b", "$", "$")
    wait_blocked(admin, 1)
    w.xadd("a", {"f": "1"}, id="1-0")
    assert r.result() == [[b"a", [[b"1-0", [b"f", b"1"]]]]]


def test_every_blocked_xread_reader_sees_the_entry(server, admin):
    readers = [Background(bc(server), "XREAD", "BLOCK", "0", "STREAMS", "s", "$") for _ in range(3)]
    wait_blocked(admin, 3)
    server.client().xadd("s", {"k": "v"}, id="7-0")
    for r in readers:
        assert r.result() == [[b"s", [[b"7-0", [b"k", b"v"]]]]]


def test_xread_block_timeout(r2, raw2):
    start = time.monotonic()
    assert raw2.execute_command("XREAD", "BLOCK", "150", "STREAMS", "s", "$") is None
    took = time.monotonic() - start
    assert 0.14 <= took < 2.0, took
    with pytest.raises(redis.ResponseError, match="timeout is negative"):
        r2.execute_command("XREAD", "BLOCK", "-1", "STREAMS", "s", "$")
    with pytest.raises(redis.ResponseError, match="timeout is not an integer or out of range"):
        r2.execute_command("XREAD", "BLOCK", "soon", "STREAMS", "s", "$")
    # Data already there: served at once, BLOCK or not.
    r2.xadd("s", {"a": "1"}, id="1-0")
    assert raw2.execute_command("XREAD", "BLOCK", "0", "STREAMS", "s", "0") == [
        ["s", [["1-0", ["a", "1"]]]]
    ]


def test_xread_block_0_waits_until_data(server, admin):
    r = Background(bc(server), "XREAD", "BLOCK", "0", "STREAMS", "s", "$")
    wait_blocked(admin, 1)
    time.sleep(0.3)
    assert blocked_count(admin) == 1, "BLOCK 0 waits forever"
    server.client().xadd("s", {"f": "v"}, id="3-0")
    assert r.result() == [[b"s", [[b"3-0", [b"f", b"v"]]]]]


def test_resp3_reply_and_timeout(server, admin):
    c3 = server.client(protocol=3, raw=True)
    assert c3.execute_command("XREAD", "BLOCK", "10", "STREAMS", "s", "$") is None
    r = Background(bc(server, 3), "XREAD", "BLOCK", "0", "STREAMS", "s", "$")
    wait_blocked(admin, 1)
    server.client().xadd("s", {"f": "v"}, id="4-0")
    assert r.result() == {b"s": [[b"4-0", [b"f", b"v"]]]}


def test_client_unblock_of_xread(server, admin):
    c = bc(server)
    cid = c.client_id()
    r = Background(c, "XREAD", "BLOCK", "0", "STREAMS", "s", "$")
    wait_blocked(admin, 1)
    assert admin.client_unblock(cid) == 1
    assert r.result() is None
    r = Background(c, "XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s", ">")
    # The group does not exist: answered at once.
    with pytest.raises(redis.ResponseError, match="NOGROUP"):
        r.result()
    admin.xgroup_create("s", "g", id="$", mkstream=True)
    r = Background(c, "XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s", ">")
    wait_blocked(admin, 1)
    assert admin.client_unblock(cid, error=True) == 1
    with pytest.raises(redis.ResponseError, match="UNBLOCKED client unblocked via CLIENT UNBLOCK"):
        r.result()
    assert c.ping()


def test_xreadgroup_block_new_entries_go_to_one_consumer(server, admin):
    w = server.client(decode_responses=True)
    w.xgroup_create("s", "g", id="$", mkstream=True)
    alice = Background(bc(server), "XREADGROUP", "GROUP", "g", "alice", "BLOCK", "0",
                       "STREAMS", "s", ">")
    wait_blocked(admin, 1)
    bob = Background(bc(server), "XREADGROUP", "GROUP", "g", "bob", "BLOCK", "0",
                     "STREAMS", "s", ">")
    wait_blocked(admin, 2)
    w.xadd("s", {"job": "1"}, id="1-0")
    # First blocked, first served; bob keeps waiting for the next entry.
    assert alice.result() == [[b"s", [[b"1-0", [b"job", b"1"]]]]]
    time.sleep(0.1)
    assert blocked_count(admin) == 1
    w.xadd("s", {"job": "2"}, id="2-0")
    assert bob.result() == [[b"s", [[b"2-0", [b"job", b"2"]]]]]
    pending = w.xpending_range("s", "g", "-", "+", 10)
    assert [(p["message_id"], p["consumer"]) for p in pending] == [
        ("1-0", "alice"),
        ("2-0", "bob"),
    ]
    info = {g["name"]: g for g in w.xinfo_groups("s")}
    assert info["g"]["last-delivered-id"] == "2-0"


def test_xreadgroup_block_timeout_and_noack(server, admin):
    w = server.client(decode_responses=True)
    w.xgroup_create("s", "g", id="$", mkstream=True)
    c = bc(server)
    start = time.monotonic()
    assert c.execute_command("XREADGROUP", "GROUP", "g", "c", "BLOCK", "100",
                             "STREAMS", "s", ">") is None
    assert time.monotonic() - start >= 0.09
    r = Background(bc(server), "XREADGROUP", "GROUP", "g", "c", "NOACK", "BLOCK", "0",
                   "STREAMS", "s", ">")
    wait_blocked(admin, 1)
    w.xadd("s", {"f": "v"}, id="9-0")
    assert r.result() == [[b"s", [[b"9-0", [b"f", b"v"]]]]]
    assert w.xpending("s", "g")["pending"] == 0


@pytest.mark.redis72
def test_stream_deleted_while_blocked(server, admin):
    w = server.client(decode_responses=True)
    w.xadd("s", {"f": "v"}, id="1-0")
    w.xgroup_create("s", "g", id="$")
    xread = Background(bc(server), "XREAD", "BLOCK", "0", "STREAMS", "s", "$")
    group = Background(bc(server), "XREADGROUP", "GROUP", "g", "c", "BLOCK", "0",
                       "STREAMS", "s", ">")
    wait_blocked(admin, 2)
    w.delete("s")
    with pytest.raises(redis.ResponseError,
                       match="^NOGROUP No such key 's' or consumer group 'g' in XREADGROUP with GROUP option$"):
        group.result()
    # XREAD keeps waiting, through a change of type too, and gets the next entry.
    w.set("s", "not a stream")
    time.sleep(0.1)
    assert blocked_count(admin) == 1
    w.delete("s")
    w.xadd("s", {"f": "new"}, id="2-0")
    assert xread.result() == [[b"s", [[b"2-0", [b"f", b"new"]]]]]


@pytest.mark.redis72
def test_stream_retyped_or_flushed_or_group_destroyed_while_blocked(server, admin):
    w = server.client(decode_responses=True)

    def blocked_reader():
        w.delete("s")
        w.xgroup_create("s", "g", id="$", mkstream=True)
        r = Background(bc(server), "XREADGROUP", "GROUP", "g", "c", "BLOCK", "0",
                       "STREAMS", "s", ">")
        wait_blocked(admin, 1)
        return r

    nogroup = "^NOGROUP No such key 's' or consumer group 'g' in XREADGROUP with GROUP option$"
    r = blocked_reader()
    w.set("s", "x")
    with pytest.raises(redis.ResponseError, match="^WRONGTYPE"):
        r.result()
    r = blocked_reader()
    p = w.pipeline(transaction=True)
    p.delete("s")
    p.sadd("s", "member")
    p.execute()
    with pytest.raises(redis.ResponseError, match="^WRONGTYPE"):
        r.result()
    r = blocked_reader()
    w.eval("redis.call('DEL', KEYS[1]); redis.call('RPUSH', KEYS[1], 'x')", 1, "s")
    with pytest.raises(redis.ResponseError, match="^WRONGTYPE"):
        r.result()
    r = blocked_reader()
    admin.flushall()
    with pytest.raises(redis.ResponseError, match=nogroup):
        r.result()
    r = blocked_reader()
    w.xgroup_destroy("s", "g")
    with pytest.raises(redis.ResponseError, match=nogroup):
        r.result()
    assert blocked_count(admin) == 0


@pytest.mark.redis72
def test_rename_onto_a_blocked_xreadgroup_key(server, admin):
    """7.2 runs the command again: a stream renamed onto the key serves the client if it has the
    group, and answers -NOGROUP if it has not."""
    w = server.client(decode_responses=True)
    w.xgroup_create("s", "g", id="$", mkstream=True)
    r = Background(bc(server), "XREADGROUP", "GROUP", "g", "c", "BLOCK", "0",
                   "STREAMS", "s", ">")
    wait_blocked(admin, 1)
    w.xgroup_create("s2", "g", id="$", mkstream=True)
    w.xadd("s2", {"f1": "v1"}, id="100-0")
    w.rename("s2", "s")
    assert r.result() == [[b"s", [[b"100-0", [b"f1", b"v1"]]]]]
    r = Background(bc(server), "XREADGROUP", "GROUP", "g", "c", "BLOCK", "0",
                   "STREAMS", "s", ">")
    wait_blocked(admin, 1)
    w.xadd("s3", {"f1": "v1"}, id="100-0")
    w.rename("s3", "s")
    with pytest.raises(redis.ResponseError, match="^NOGROUP No such key 's' or consumer group 'g'"):
        r.result()
    assert blocked_count(admin) == 0


@pytest.mark.redis72
def test_a_wake_up_with_nothing_to_read_keeps_the_original_timeout(server, admin):
    """Two readers of one group: the first takes the entry; the second runs again, finds nothing
    and keeps waiting until its own deadline (not one restarted at the wake-up)."""
    w = server.client(decode_responses=True)
    w.xgroup_create("s", "g", id="$", mkstream=True)
    first = Background(bc(server), "XREADGROUP", "GROUP", "g", "c", "BLOCK", "0",
                       "STREAMS", "s", ">")
    wait_blocked(admin, 1)
    start = time.monotonic()
    second = Background(bc(server), "XREADGROUP", "GROUP", "g", "c", "BLOCK", "1000",
                        "STREAMS", "s", ">")
    wait_blocked(admin, 2)
    time.sleep(0.4)
    w.xadd("s", {"f": "v"}, id="1-0")
    assert first.result() == [[b"s", [[b"1-0", [b"f", b"v"]]]]]
    # A change that leaves the group and the key as they were wakes nobody into an answer.
    w.xgroup_createconsumer("s", "g", "other")
    assert second.result() is None
    took = time.monotonic() - start
    assert 0.95 <= took < 1.35, took
    assert blocked_count(admin) == 0


@pytest.mark.redis72
def test_resp3_xreadgroup_rerun_errors(server, admin):
    w = server.client(decode_responses=True)
    w.xgroup_create("s", "g", id="$", mkstream=True)
    r = Background(bc(server, 3), "XREADGROUP", "GROUP", "g", "c", "BLOCK", "0",
                   "STREAMS", "s", ">")
    wait_blocked(admin, 1)
    w.delete("s")
    with pytest.raises(redis.ResponseError, match="^NOGROUP No such key 's' or consumer group 'g'"):
        r.result()


@pytest.mark.redis72
def test_a_woken_xread_answers_every_stream_with_entries(server, admin):
    """Redis 7.2 runs a blocked XREAD again when one of its keys is ready: streams written
    together (one transaction, one script) all come in the reply, in the order the keys were
    given, not only the one that woke it."""
    w = server.client(decode_responses=True)
    w.xadd("b", {"old": "0"}, id="1-0")
    r = Background(bc(server), "XREAD", "BLOCK", "0", "STREAMS", "a", "b", "c", "$", "$", "$")
    wait_blocked(admin, 1)
    with w.pipeline(transaction=True) as p:
        p.xadd("c", {"f": "c"}, id="2-0")
        p.xadd("b", {"f": "b"}, id="3-0")
        p.execute()
    assert r.result() == [[b"b", [[b"3-0", [b"f", b"b"]]]], [b"c", [[b"2-0", [b"f", b"c"]]]]]
    # A script, and RESP3 (a map, in the keys' order).
    r = Background(bc(server, 3), "XREAD", "COUNT", "1", "BLOCK", "0", "STREAMS", "c", "a",
                   "$", "$")
    wait_blocked(admin, 1)
    w.eval("redis.call('XADD', KEYS[1], '5-0', 'f', 'a') "
           "redis.call('XADD', KEYS[1], '6-0', 'f', 'a2') "
           "redis.call('XADD', KEYS[2], '7-0', 'f', 'c') return 1", 2, "a", "c")
    got = r.result()
    assert got == {b"c": [[b"7-0", [b"f", b"c"]]], b"a": [[b"5-0", [b"f", b"a"]]]}
    assert list(got) == [b"c", b"a"]
    # A blocked XREADGROUP (already run again whole) likewise gets both streams.
    for key in ("a", "b"):
        w.xgroup_create(key, "g", id="$")
    r = Background(bc(server), "XREADGROUP", "GROUP", "g", "alice", "BLOCK", "0",
                   "STREAMS", "a", "b", ">", ">")
    wait_blocked(admin, 1)
    with w.pipeline(transaction=True) as p:
        p.xadd("b", {"f": "b"}, id="8-0")
        p.xadd("a", {"f": "a"}, id="9-0")
        p.execute()
    assert r.result() == [[b"a", [[b"9-0", [b"f", b"a"]]]], [b"b", [[b"8-0", [b"f", b"b"]]]]]


@pytest.mark.redis72
def test_a_woken_xread_answers_what_a_new_run_would(server, admin):
    """Run again whole, a blocked XREAD answers -WRONGTYPE when another of its keys was given
    another type meanwhile (that write alone does not wake it), as Redis 7.2 does."""
    w = server.client(decode_responses=True)
    r = Background(bc(server), "XREAD", "BLOCK", "0", "STREAMS", "a", "b", "$", "$")
    wait_blocked(admin, 1)
    w.set("b", "not a stream")
    time.sleep(0.1)
    assert blocked_count(admin) == 1
    w.xadd("a", {"f": "v"}, id="1-0")
    with pytest.raises(redis.ResponseError, match="^WRONGTYPE"):
        r.result()
    assert blocked_count(admin) == 0


def blocking_keys(admin) -> tuple[int, int]:
    info = admin.info("clients")
    return int(info["total_blocking_keys"]), int(info["total_blocking_keys_on_nokey"])


@pytest.mark.redis72
def test_info_counts_blocking_keys(server, admin):
    """INFO `total_blocking_keys` (distinct keys clients wait for) and
    `total_blocking_keys_on_nokey` (those a deletion must wake: a blocked XREADGROUP's), from
    the registrations, back to 0 when the waiters leave."""
    w = server.client(decode_responses=True)
    assert blocking_keys(admin) == (0, 0)
    pop = Background(bc(server), "BLPOP", "s", "0")
    wait_blocked(admin, 1)
    assert blocking_keys(admin) == (1, 0)
    w.xadd("other", {"f": "v"}, id="1-0")
    w.xgroup_create("other", "g", id="$")
    xread = Background(bc(server), "XREAD", "BLOCK", "0", "STREAMS", "other", "s", "$", "$")
    wait_blocked(admin, 2)
    assert blocking_keys(admin) == (2, 0)
    group = Background(bc(server), "XREADGROUP", "GROUP", "g", "c", "BLOCK", "0",
                       "STREAMS", "other", ">")
    wait_blocked(admin, 3)
    assert blocking_keys(admin) == (2, 1)
    w.delete("other")
    with pytest.raises(redis.ResponseError, match="^NOGROUP"):
        group.result()
    assert blocking_keys(admin) == (2, 0)
    w.rpush("s", "x")
    assert pop.result() == [b"s", b"x"]
    assert blocking_keys(admin) == (2, 0), "XREAD still waits on both keys"
    w.xadd("other", {"f": "new"}, id="2-0")
    assert xread.result() == [[b"other", [[b"2-0", [b"f", b"new"]]]]]
    assert blocking_keys(admin) == (0, 0)


def test_no_blocking_inside_multi(raw2):
    p = raw2.pipeline(transaction=True)
    p.execute_command("XREAD", "BLOCK", "0", "STREAMS", "s", "$")
    start = time.monotonic()
    assert p.execute() == [None]
    assert time.monotonic() - start < TIMEOUT / 2
