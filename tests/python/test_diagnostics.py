"""SLOWLOG, LATENCY, MEMORY, ACL, WAIT, SWAPDB/MOVE/SELECT and the Redis CONFIG parameters tools
set, through redis-py. The per-tenant tests (marked ferrite_only) check that a tenant sees only
its own slow commands and only itself as a user; the rest also run against redis-server."""

from __future__ import annotations

import itertools

import pytest
import redis

from helpers import cmd_error

_names = (f"diag{n}" for n in itertools.count())


def _slow_command(r):
    """A command that takes milliseconds: LCS over two 2000-byte strings (4M table cells)."""
    r.set("lcs:a", "ab" * 1000)
    r.set("lcs:b", "ba" * 1000)
    r.execute_command("LCS", "lcs:a", "lcs:b", "LEN")


@pytest.fixture
def tunable(admin):
    """Restores the diagnostics parameters a test changes."""
    names = ("slowlog-log-slower-than", "slowlog-max-len", "latency-monitor-threshold")
    saved = {n: admin.config_get(n)[n] for n in names}
    yield admin
    for n, v in saved.items():
        admin.config_set(n, v)
    admin.execute_command("SLOWLOG", "RESET")
    admin.execute_command("LATENCY", "RESET")


def test_slowlog_records_with_the_configured_threshold(tunable, r):
    admin = tunable
    assert admin.config_get("slowlog-log-slower-than") == {"slowlog-log-slower-than": "10000"}
    assert admin.config_get("slowlog-max-len") == {"slowlog-max-len": "128"}
    admin.config_set("slowlog-log-slower-than", 0)
    r.execute_command("SLOWLOG", "RESET")
    r.set("k", "v")
    r.get("k")
    entries = r.execute_command("SLOWLOG", "GET", "-1")
    assert len(entries) >= 2
    newest = entries[0]
    assert len(newest) == 6 and isinstance(newest[0], int) and isinstance(newest[2], int)
    assert [a.decode() if isinstance(a, bytes) else a for a in newest[3]] == ["GET", "k"]
    assert r.execute_command("SLOWLOG", "LEN") >= 2
    admin.config_set("slowlog-max-len", 2)
    for i in range(5):
        r.set(f"x{i}", i)
    assert r.execute_command("SLOWLOG", "LEN") == 2
    admin.config_set("slowlog-log-slower-than", -1)
    r.execute_command("SLOWLOG", "RESET")
    r.set("y", 1)
    assert r.execute_command("SLOWLOG", "LEN") == 0
    assert cmd_error(r, "SLOWLOG", "GET", "-2") == "ERR count should be greater than or equal to -1"
    assert cmd_error(r, "SLOWLOG", "NOPE") == "ERR unknown subcommand 'NOPE'. Try SLOWLOG HELP."


def test_slowlog_truncates_long_arguments(tunable, r):
    tunable.config_set("slowlog-log-slower-than", 0)
    r.execute_command("SLOWLOG", "RESET")
    r.execute_command("RPUSH", "l", "a" * 200, *range(40))
    entry = r.execute_command("SLOWLOG", "GET", "1")[0]
    args = [a.decode() if isinstance(a, bytes) else a for a in entry[3]]
    assert len(args) == 32
    assert args[2] == "a" * 128 + "... (72 more bytes)"
    assert args[-1] == "... (12 more arguments)"


def test_latency_monitor(tunable, r):
    admin = tunable
    assert admin.config_get("latency-monitor-threshold") == {"latency-monitor-threshold": "0"}
    r.execute_command("LATENCY", "RESET")
    _slow_command(r)
    assert r.execute_command("LATENCY", "LATEST") == []
    admin.config_set("latency-monitor-threshold", 1)
    _slow_command(r)
    latest = r.execute_command("LATENCY", "LATEST")
    assert len(latest) == 1
    name = latest[0][0].decode() if isinstance(latest[0][0], bytes) else latest[0][0]
    assert name == "command" and latest[0][2] >= 1 and latest[0][3] >= latest[0][2]
    history = r.execute_command("LATENCY", "HISTORY", "command")
    assert len(history) == 1 and history[0][1] >= 1
    assert r.execute_command("LATENCY", "RESET") == 1
    assert r.execute_command("LATENCY", "LATEST") == []


@pytest.mark.ferrite_only
def test_slowlog_ids_do_not_count_other_tenants_commands(server, tunable):
    """Ids are per tenant: gaps between a tenant's ids would otherwise tell it how many slow
    commands the other tenants ran."""
    admin = tunable
    a, b = next(_names), next(_names)
    for t in (a, b):
        admin.execute_command("TENANT.CREATE", t, "PASSWORD", "pw")
    try:
        admin.config_set("slowlog-log-slower-than", 0)
        ca = server.anon_client(username=a, password="pw")
        cb = server.anon_client(username=b, password="pw")
        ca.set("first", "1")
        for i in range(50):
            cb.set(f"other-{i}", "1")
        ca.set("second", "1")
        ids = {e[3][1]: e[0] for e in ca.execute_command("SLOWLOG", "GET", "-1") if len(e[3]) > 1}
        assert ids["first"] + 1 == ids["second"], ids
        # RESET empties the log; ids keep counting (as in Redis).
        ca.execute_command("SLOWLOG", "RESET")
        ca.set("third", "1")
        after = {e[3][1]: e[0] for e in ca.execute_command("SLOWLOG", "GET", "-1") if len(e[3]) > 1}
        assert after["third"] > ids["second"]
    finally:
        for t in (a, b):
            admin.execute_command("TENANT.DELETE", t, "FORCE")


@pytest.mark.ferrite_only
def test_a_tenant_sees_only_its_own_slowlog_and_itself(server, tunable):
    admin = tunable
    a, b = next(_names), next(_names)
    for t in (a, b):
        admin.execute_command("TENANT.CREATE", t, "PASSWORD", "pw")
    try:
        admin.config_set("slowlog-log-slower-than", 0)
        ca = server.anon_client(username=a, password="pw")
        cb = server.anon_client(username=b, password="pw")
        ca.execute_command("SLOWLOG", "RESET")
        cb.execute_command("SLOWLOG", "RESET")
        ca.set("secret-of-a", "1")
        logged = [str(e[3]) for e in cb.execute_command("SLOWLOG", "GET", "-1")]
        assert not any("secret-of-a" in e for e in logged)
        assert any("secret-of-a" in str(e[3]) for e in ca.execute_command("SLOWLOG", "GET", "-1"))
        assert ca.execute_command("ACL", "WHOAMI") == a
        assert ca.execute_command("ACL", "USERS") == [a]
        assert ca.execute_command("ACL", "GETUSER", b) is None
        assert len(ca.execute_command("ACL", "LIST")) == 1
        assert a in admin.execute_command("ACL", "USERS") and b in admin.execute_command("ACL", "USERS")
        # AUTH arguments never reach the slow log.
        ca.execute_command("AUTH", a, "pw")
        auths = [e[3] for e in ca.execute_command("SLOWLOG", "GET", "-1") if "AUTH" in str(e[3]).upper()]
        assert auths and all("pw" not in str(x) for x in auths)
    finally:
        for t in (a, b):
            admin.execute_command("TENANT.DELETE", t, "FORCE")


def test_memory_commands(r):
    r.set("k", "v" * 100)
    usage = r.memory_usage("k")
    assert 100 <= usage < 1000
    assert r.memory_usage("missing") is None
    stats = r.execute_command("MEMORY", "STATS")
    if isinstance(stats, list):
        stats = dict(zip(stats[::2], stats[1::2]))
    assert stats["keys.count"] == 1
    assert r.execute_command("MEMORY", "DOCTOR")


@pytest.mark.ferrite_only
def test_one_database(r):
    assert r.execute_command("SELECT", 0) in (True, "OK")
    assert cmd_error(r, "SELECT", 1) == "ERR DB index is out of range"
    r.set("k", "v")
    assert cmd_error(r, "MOVE", "k", 0) == "ERR source and destination objects are the same"
    assert cmd_error(r, "MOVE", "k", 1) == "ERR DB index is out of range"
    assert cmd_error(r, "SWAPDB", 0, 1) == "ERR DB index is out of range"
    assert cmd_error(r, "SWAPDB", "x", 0) == "ERR invalid first DB index"
    assert r.execute_command("WAIT", 0, 0) == 0
    assert r.execute_command("WAIT", 1, 100) == 0
    assert cmd_error(r, "WAIT", 0, -1) == "ERR timeout is negative"


def test_acl_categories(r):
    cats = r.execute_command("ACL", "CAT")
    for c in ("string", "sortedset", "hyperloglog", "geo", "bitmap", "read", "write"):
        assert c in cats
    assert "pfadd" in r.execute_command("ACL", "CAT", "hyperloglog")
    assert cmd_error(r, "ACL", "CAT", "nope") == "ERR Unknown category 'nope'"
    assert len(r.execute_command("ACL", "GENPASS")) == 64
    assert r.execute_command("ACL", "LOG") == []


@pytest.mark.ferrite_only
def test_tool_parameters(admin):
    assert admin.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert admin.config_set("maxmemory-policy", "noeviction")
    with pytest.raises(redis.ResponseError):
        admin.config_set("maxmemory-policy", "allkeys-lru")
    old = admin.config_get("hll-sparse-max-bytes")["hll-sparse-max-bytes"]
    assert old == "3000"
    try:
        admin.config_set("hll-sparse-max-bytes", 30)
        admin.pfadd("h", *[f"e{i}" for i in range(20)])
        assert admin.execute_command("PFDEBUG", "ENCODING", "h") == "dense"
    finally:
        admin.config_set("hll-sparse-max-bytes", old)
    assert admin.config_get("lua-time-limit") == {"lua-time-limit": "5000"}
