"""INFO errorstats (error replies counted by code, reset by CONFIG RESETSTAT) and INFO memory's
number_of_cached_scripts, as Redis has them; a tenant sees only its own clients' errors."""

from __future__ import annotations

import itertools

import pytest
import redis

_names = (f"errs{n}" for n in itertools.count())


def errorstats(c) -> dict[str, int]:
    info = c.info("errorstats")
    return {k[len("errorstat_"):]: v["count"] for k, v in info.items()
            if k.startswith("errorstat_")}


def fail(c, *cmd):
    with pytest.raises(redis.ResponseError):
        c.execute_command(*cmd)


def test_errors_counted_by_code(admin):
    admin.execute_command("CONFIG", "RESETSTAT")
    assert errorstats(admin) == {}
    admin.set("s", "v")
    fail(admin, "LPUSH", "s", "x")
    fail(admin, "LPUSH", "s", "x")
    fail(admin, "NOSUCHCOMMAND")
    fail(admin, "INCR", "s")
    fail(admin, "EVAL", "return redis.error_reply('MYCODE something')", 0)
    assert errorstats(admin) == {"WRONGTYPE": 2, "ERR": 2, "MYCODE": 1}
    assert admin.info("all")["errorstat_WRONGTYPE"] == {"count": 2}
    admin.execute_command("CONFIG", "RESETSTAT")
    assert errorstats(admin) == {}


def test_number_of_cached_scripts(admin):
    admin.script_flush()
    for j in range(5):
        admin.script_load(f"return {j}")
    assert admin.info("memory")["number_of_cached_scripts"] == 5
    admin.script_flush()
    assert admin.info("memory")["number_of_cached_scripts"] == 0


@pytest.mark.ferrite_only
def test_a_tenant_sees_its_own_errors_only(server, admin):
    a, b = next(_names), next(_names)
    for t in (a, b):
        admin.execute_command("TENANT.CREATE", t, "PASSWORD", "pw")
    try:
        ca = server.anon_client(username=a, password="pw")
        cb = server.anon_client(username=b, password="pw")
        admin.execute_command("CONFIG", "RESETSTAT")
        ca.set("s", "v")
        fail(ca, "LPUSH", "s", "x")
        fail(cb, "NOSUCHCOMMAND")
        fail(cb, "NOSUCHCOMMAND")
        assert errorstats(ca) == {"WRONGTYPE": 1}
        assert errorstats(cb) == {"ERR": 2}
        assert errorstats(admin) == {"WRONGTYPE": 1, "ERR": 2}
        ca.script_load("return 1")
        assert ca.info("memory")["number_of_cached_scripts"] == 1
        assert cb.info("memory")["number_of_cached_scripts"] == 0
    finally:
        for t in (a, b):
            admin.execute_command("TENANT.DELETE", t, "FORCE")


def test_the_error_of_a_blocked_command_is_counted(server, admin):
    from helpers import Conn, wait_until

    admin.execute_command("CONFIG", "RESETSTAT")
    admin.execute_command("XGROUP", "CREATE", "mystream", "mygroup", "$", "MKSTREAM")
    c = Conn(server.client())
    c.send("XREADGROUP", "GROUP", "mygroup", "Alice", "BLOCK", 0, "STREAMS", "mystream", ">")
    wait_until(lambda: admin.info("clients")["blocked_clients"] == 1, what="blocked")
    admin.execute_command("XGROUP", "DESTROY", "mystream", "mygroup")
    with pytest.raises(redis.ResponseError) as ei:
        c.read()
    assert str(ei.value).startswith("NOGROUP")
    assert errorstats(admin)["NOGROUP"] == 1
    stat = admin.info("commandstats")["cmdstat_xreadgroup"]
    assert (stat["calls"], stat["rejected_calls"], stat["failed_calls"]) == (1, 0, 1)


def test_errors_inside_exec_and_scripts_are_counted(admin):
    # As Redis's "errorstats: failed call within MULTI/EXEC" and "... within LUA": an error inside
    # EXEC's reply counts; a failed call inside a script counts once, whether the script caught
    # it (pcall) or raised it (call).
    admin.execute_command("CONFIG", "RESETSTAT")
    admin.set("s", "v")
    pipe = admin.pipeline(transaction=True)
    pipe.set("a", "b")
    pipe.lpush("s", "x")
    pipe.execute(raise_on_error=False)
    assert errorstats(admin) == {"WRONGTYPE": 1}
    assert admin.eval("redis.pcall('LPUSH', 's', 'x') return 1", 0) == 1
    assert errorstats(admin) == {"WRONGTYPE": 2}
    fail(admin, "EVAL", "return redis.call('LPUSH', 's', 'x')", 0)
    assert errorstats(admin) == {"WRONGTYPE": 3}
    fail(admin, "EVAL", "return redis.call('NOSUCHCOMMAND')", 0)
    assert errorstats(admin) == {"WRONGTYPE": 3, "ERR": 1}
    assert admin.info("stats")["total_error_replies"] == 4
