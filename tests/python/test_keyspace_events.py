"""Keyspace notifications (`notify-keyspace-events`) through redis-py pub/sub: off by default,
Redis's event names per command family on `__keyspace@0__:<key>` and `__keyevent@0__:<event>`,
expired keys, class filtering, per tenant (a tenant sets its own and never sees another's
events), and CONFIG's all-or-nothing rule."""

from __future__ import annotations

import itertools
import time

import pytest
import redis

TIMEOUT = 10.0


def messages(p, count, timeout=TIMEOUT):
    """The next `count` pub/sub messages as (channel, data) (bounded wait)."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        m = p.get_message(timeout=0.1, ignore_subscribe_messages=True)
        if m is not None:
            got.append((m["channel"], m["data"]))
    return got


def nothing_more(p, wait=0.2):
    return messages(p, 1, timeout=wait) == []


@pytest.fixture
def events_off(admin):
    yield
    admin.config_set("notify-keyspace-events", "")


def test_off_by_default(server, admin):
    assert admin.config_get("notify-keyspace-events") == {"notify-keyspace-events": ""}
    c = server.client(decode_responses=True)
    p = c.pubsub()
    p.psubscribe("__key*__:*")
    messages(p, 1, timeout=0.2)  # the subscription confirmation
    c.set("k", "v")
    c.delete("k")
    assert nothing_more(p)


def test_events_of_each_family(server, admin, events_off):
    admin.config_set("notify-keyspace-events", "KEA")
    assert admin.config_get("notify-keyspace-events") == {"notify-keyspace-events": "AKE"}
    c = server.client(decode_responses=True)
    p = c.pubsub()
    p.psubscribe("__keyevent@0__:*")
    steps = [
        (lambda: c.set("s", "1", ex=100), [("set", "s"), ("expire", "s")]),
        (lambda: c.incr("s"), [("incrby", "s")]),
        (lambda: c.rpush("l", "a", "b"), [("rpush", "l")]),
        (lambda: c.lpop("l"), [("lpop", "l")]),
        (lambda: c.lpop("l"), [("lpop", "l"), ("del", "l")]),
        (lambda: c.sadd("set", "m"), [("sadd", "set")]),
        (lambda: c.hset("h", "f", "v"), [("hset", "h")]),
        (lambda: c.zadd("z", {"m": 1}), [("zadd", "z")]),
        (lambda: c.xadd("x", {"f": "v"}), [("xadd", "x")]),
        (lambda: c.rename("s", "s2"), [("rename_from", "s"), ("rename_to", "s2")]),
        (lambda: c.persist("s2"), [("persist", "s2")]),
        (lambda: c.delete("s2", "missing", "h"), [("del", "s2"), ("del", "h")]),
    ]
    for run, want in steps:
        run()
        got = messages(p, len(want))
        assert got == [(f"__keyevent@0__:{e}", k) for e, k in want], want
    assert nothing_more(p)


def test_stream_consumer_events(server, admin, events_off):
    # unit/pubsub "Keyspace notifications: stream events test": XREADGROUP, XCLAIM and
    # XAUTOCLAIM announce the consumers they create, and only those.
    admin.config_set("notify-keyspace-events", "Kt")
    c = server.client(decode_responses=True)
    p = c.pubsub()
    p.psubscribe("*")
    messages(p, 1, timeout=0.2)
    c.execute_command("XGROUP", "CREATE", "mystream", "mygroup", "$", "MKSTREAM")
    c.execute_command("XGROUP", "CREATECONSUMER", "mystream", "mygroup", "Bob")
    sid = c.xadd("mystream", {"field1": "A"}, id="1")
    c.execute_command("XREADGROUP", "GROUP", "mygroup", "Alice", "STREAMS", "mystream", ">")
    c.execute_command("XCLAIM", "mystream", "mygroup", "Mike", 0, sid, "FORCE")
    c.execute_command("XGROUP", "DELCONSUMER", "mystream", "mygroup", "Lee")
    c.execute_command("XAUTOCLAIM", "mystream", "mygroup", "Bob", 0, sid)
    c.execute_command("XGROUP", "DELCONSUMER", "mystream", "mygroup", "Bob")
    events = [data for _, data in messages(p, 6)]
    assert events == ["xgroup-create", "xgroup-createconsumer", "xadd", "xgroup-createconsumer",
                      "xgroup-createconsumer", "xgroup-delconsumer"]
    assert nothing_more(p)


def test_keyspace_channel_and_expired(server, admin, events_off):
    admin.config_set("notify-keyspace-events", "Kx$")
    c = server.client(decode_responses=True)
    p = c.pubsub()
    p.subscribe("__keyspace@0__:temp")
    c.set("temp", "v", px=50)
    assert messages(p, 1) == [("__keyspace@0__:temp", "set")]
    # Active expiry announces it, without anybody reading the key.
    assert messages(p, 1, timeout=5.0) == [("__keyspace@0__:temp", "expired")]
    # 'g' is off: no del.
    c.set("temp", "v")
    c.delete("temp")
    assert messages(p, 1) == [("__keyspace@0__:temp", "set")]
    assert nothing_more(p)


def test_events_from_transactions_and_scripts(server, admin, events_off):
    admin.config_set("notify-keyspace-events", "E$")
    c = server.client(decode_responses=True)
    p = c.pubsub()
    p.subscribe("__keyevent@0__:set")
    tx = c.pipeline(transaction=True)
    tx.set("a", "1")
    tx.set("b", "2")
    tx.execute()
    c.eval("redis.call('SET', KEYS[1], 'x')", 1, "c")
    assert messages(p, 3) == [
        ("__keyevent@0__:set", "a"),
        ("__keyevent@0__:set", "b"),
        ("__keyevent@0__:set", "c"),
    ]


def test_invalid_flags_are_refused_and_change_nothing(admin, events_off):
    admin.config_set("notify-keyspace-events", "KEl")
    with pytest.raises(redis.ResponseError, match="Invalid event class character"):
        admin.config_set("notify-keyspace-events", "KEQ")
    with pytest.raises(redis.ResponseError):
        admin.execute_command("CONFIG", "SET", "notify-keyspace-events", "KEA",
                              "no-such-parameter", "1")
    assert admin.config_get("notify-keyspace-events") == {"notify-keyspace-events": "lKE"}


_names = (f"kev{n}" for n in itertools.count())


@pytest.mark.ferrite_only
def test_per_tenant(server, admin):
    a, b = next(_names), next(_names)
    for t in (a, b):
        admin.execute_command("TENANT.CREATE", t, "PASSWORD", "pw")
    try:
        ca = redis.Redis(port=server.port, username=a, password="pw", decode_responses=True,
                         socket_timeout=TIMEOUT)
        cb = redis.Redis(port=server.port, username=b, password="pw", decode_responses=True,
                         socket_timeout=TIMEOUT)
        # A tenant sets its own; it still cannot read or change server parameters.
        ca.config_set("notify-keyspace-events", "KEA")
        assert ca.config_get("notify-keyspace-events") == {"notify-keyspace-events": "AKE"}
        assert cb.config_get("notify-keyspace-events") == {"notify-keyspace-events": ""}
        for cmd in (("CONFIG", "GET", "*"), ("CONFIG", "GET", "requirepass"),
                    ("CONFIG", "SET", "maxclients", "1"),
                    ("CONFIG", "SET", "notify-keyspace-events", "KEA", "timeout", "1")):
            with pytest.raises(redis.ResponseError, match="no permission"):
                cb.execute_command(*cmd)
        cb.config_set("notify-keyspace-events", "KEA")
        pa, pb = ca.pubsub(), cb.pubsub()
        pa.psubscribe("__key*")
        pb.psubscribe("__key*")
        messages(pa, 1, 0.2)
        messages(pb, 1, 0.2)
        ca.set("k", "from-a")
        assert sorted(messages(pa, 2)) == [("__keyevent@0__:set", "k"), ("__keyspace@0__:k", "set")]
        assert nothing_more(pb), "b never sees a's events"
        cb.config_set("notify-keyspace-events", "")
        cb.set("k", "from-b")
        assert nothing_more(pb)
        assert nothing_more(pa)
    finally:
        for t in (a, b):
            admin.execute_command("TENANT.DELETE", t, "FORCE")
