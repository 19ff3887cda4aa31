"""The server-wide `maxmemory` (Redis's, policy `noeviction`), set by the administrator with CONFIG
SET: past it, writes that add data are refused with Redis's -OOM text, reads and deletes keep
working, scripts without `allow-oom` that may write are refused before they start, and neither a
transaction nor a script nor one large request gets around it. `maxmemory 0` (the default) is no
cap. The tests that run without `ferrite_only` also pass against redis-server."""

from __future__ import annotations

import itertools
import socket
import time

import pytest
import redis

from helpers import cmd_error, error_text

OOM = "OOM command not allowed when used memory > 'maxmemory'."

_names = (f"mm{n}" for n in itertools.count())


@pytest.fixture
def capped(admin):
    """Sets the server's maxmemory to what the test asks, and always back to 0 (the module's
    server is shared: a cap left behind would fail every later test)."""

    def cap(value):
        assert admin.config_set("maxmemory", value) is True

    yield cap
    admin.config_set("maxmemory", 0)


def test_defaults_are_no_cap_and_noeviction(admin, r2):
    assert admin.config_get("maxmemory") == {"maxmemory": "0"}
    assert admin.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert admin.info("memory")["maxmemory"] == 0
    # No cap: a megabyte value is stored.
    assert r2.set("big", "x" * (1 << 20)) is True
    assert r2.strlen("big") == 1 << 20


def test_past_maxmemory_writes_are_refused_reads_and_deletes_work(admin, r2, capped):
    r2.set("a", "1")
    r2.rpush("l", "x")
    capped(1)
    assert admin.config_get("maxmemory") == {"maxmemory": "1"}
    assert admin.info("memory")["maxmemory"] == 1
    for args in (("SET", "b", "1"), ("RPUSH", "l", "y"), ("SADD", "s", "m"),
                 ("APPEND", "a", "more"), ("SETRANGE", "a", "10", "z")):
        assert cmd_error(r2, *args) == OOM, args
    assert r2.get("a") == "1"
    assert r2.lrange("l", 0, -1) == ["x"]
    assert r2.exists("b", "s") == 0
    # Deleting frees memory and is never refused.
    assert r2.delete("a") == 1
    assert r2.lpop("l") == "x"
    capped(0)
    assert r2.set("b", "1") is True


def test_memory_sizes_are_accepted_and_bad_values_refused(admin, capped):
    capped("1gb")
    assert admin.config_get("maxmemory") == {"maxmemory": str(1 << 30)}
    text = cmd_error(admin, "CONFIG", "SET", "maxmemory", "bla")
    assert text.startswith("ERR CONFIG SET failed (possibly related to argument 'maxmemory')"), text
    assert admin.config_get("maxmemory") == {"maxmemory": str(1 << 30)}


def test_a_transaction_is_refused_whole(admin, r2, capped):
    r2.set("x", "value")
    p = r2.pipeline(transaction=True)
    p.set("a", "1")
    p.get("x")
    capped(1)
    with pytest.raises(redis.ResponseError) as e:
        p.execute()
    # Redis and Ferrite refuse the SET as it is queued (EXECABORT follows; redis-py raises the OOM).
    text = error_text(e.value)
    assert text.startswith("OOM") and "command not allowed when used memory > 'maxmemory'" in text
    assert r2.exists("a") == 0, "not half-applied"
    assert r2.get("x") == "value"


def test_scripts_are_checked_as_redis_checks_them(r2, capped):
    r2.set("x", "123")
    capped(1)
    # No shebang: runs, and its write is refused like the command sent alone.
    assert cmd_error(r2, "EVAL", "redis.call('set','x',1) return 1", 1, "x").startswith(OOM[:-1])
    assert r2.eval("return redis.call('get','x')", 1, "x") == "123"
    assert r2.eval("local t = redis.pcall('set','x','y') return t['err']", 1, "x") == OOM
    # A script that may write (default flags) is refused before it starts, whatever it does.
    assert cmd_error(r2, "EVAL", "#!lua\nreturn 1", 0).startswith("OOM ")
    # allow-oom lets it start (to free memory, here); no-writes implies it.
    assert r2.eval("#!lua flags=no-writes\nreturn redis.call('get','x')", 1, "x") == "123"
    assert r2.eval("#!lua flags=allow-oom\nreturn redis.call('del','x')", 1, "x") == 1
    capped(0)
    assert r2.eval("#!lua\nreturn 1", 0) == 1


def test_functions_are_checked_too(r2, capped):
    r2.execute_command(
        "FUNCTION", "LOAD", "REPLACE",
        "#!lua name=mmlib\n"
        "redis.register_function('w', function(keys) return redis.call('set', keys[1], 1) end)\n"
        "redis.register_function{function_name='r', callback=function(keys)"
        " return redis.call('get', keys[1]) end, flags={'no-writes'}}\n")
    try:
        r2.set("k", "v")
        capped(1)
        assert cmd_error(r2, "FCALL", "w", 1, "k").startswith("OOM ")
        assert r2.execute_command("FCALL", "r", 1, "k") == "v"
        assert r2.execute_command("FCALL_RO", "r", 1, "k") == "v"
    finally:
        r2.execute_command("FUNCTION", "DELETE", "mmlib")


@pytest.mark.ferrite_only
def test_the_request_being_written_counts(admin, r2, capped):
    # Ferrite refuses the write that would cross the cap (Redis only looks at the memory in use
    # before the command), so one large request cannot overshoot it.
    r2.set("seed", "1")
    used = admin.info("memory")["used_memory"]
    capped(used + 64 * 1024)
    assert cmd_error(r2, "SET", "big", "x" * (1 << 20)) == OOM
    assert cmd_error(r2, "SETRANGE", "seed", str(10 << 20), "x") == OOM
    assert cmd_error(r2, "RPUSH", "l", *(["y" * 100] * 2000)) == OOM
    assert cmd_error(r2, "EVAL", "return redis.call('set', KEYS[1], ARGV[1])", 1, "big",
                     "x" * (1 << 20)).startswith(OOM[:-1])
    assert r2.exists("big", "l") == 0 and r2.strlen("seed") == 1
    assert r2.set("small", "1") is True


@pytest.mark.ferrite_only
def test_allow_oom_does_not_lift_the_cap_from_a_scripts_writes(r2, capped):
    # In Redis, allow-oom lets a script write past maxmemory. In Ferrite the cap protects the
    # whole server from every tenant, so the flag only lets the script start: each write is still
    # checked, as the same command sent alone.
    r2.set("x", "1")
    capped(1)
    assert cmd_error(r2, "EVAL", "#!lua flags=allow-oom\nreturn redis.call('set','y',1)", 1,
                     "y").startswith(OOM[:-1])
    assert r2.exists("y") == 0


@pytest.mark.ferrite_only
def test_the_cap_is_over_all_tenants_and_only_the_administrator_sets_it(server, admin, capped):
    name = next(_names)
    admin.execute_command("TENANT.CREATE", name, "PASSWORD", "pw")
    try:
        t = redis.Redis(host=server.host, port=server.port, username=name, password="pw",
                        decode_responses=True, socket_timeout=10)
        # A tenant cannot change the server's cap.
        with pytest.raises(redis.ResponseError):
            t.config_set("maxmemory", 0)
        # Another tenant's data counts: the default tenant fills the server...
        admin.set("fill", "x" * (256 * 1024))
        capped(admin.info("memory")["used_memory"] + 1024)
        # ... and this tenant, with no quota of its own, cannot add 4 KB.
        assert cmd_error(t, "SET", "k", "x" * 4096) == OOM
        assert t.set("k", "v") is True
        # Freeing the other tenant's data makes room.
        admin.delete("fill")
        assert t.set("k", "x" * 4096) is True
        # Its INFO shows its own quota (none), the administrator's the server's cap.
        assert t.info("memory")["maxmemory"] == 0
        assert admin.info("memory")["maxmemory"] > 0
        t.close()
    finally:
        admin.execute_command("TENANT.DELETE", name, "FORCE")


@pytest.mark.ferrite_only
def test_eviction_policies_are_refused_with_a_reason(admin):
    text = cmd_error(admin, "CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    assert text.startswith("ERR CONFIG SET failed (possibly related to argument 'maxmemory-policy')")
    assert "never evicts" in text, text
    assert admin.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}


@pytest.mark.ferrite_only
def test_unread_replies_count_against_the_cap(server, admin, r2, capped):
    # A client that asks for large replies and never reads them holds server memory: it counts
    # (INFO mem_clients_normal, as Redis's used_memory counts client buffers).
    r2.set("v", "x" * (1 << 20))
    hog = socket.create_connection(server.addr, timeout=10)
    try:
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.sendall(b"AUTH %s\r\n" % server.admin_secret.encode())
        hog.sendall(b"GET v\r\n" * 40)
        deadline = time.monotonic() + 10
        while admin.info("memory")["mem_clients_normal"] < (16 << 20):
            assert time.monotonic() < deadline, admin.info("memory")
            time.sleep(0.05)
        mem = admin.info("memory")
        # Room for the data and half the unsent replies: the unsent replies take it over.
        capped(mem["used_memory"] + mem["mem_clients_normal"] // 2)
        assert cmd_error(r2, "SET", "k", "1") == OOM
    finally:
        hog.close()
    deadline = time.monotonic() + 10
    while admin.info("memory")["mem_clients_normal"] > (1 << 20):
        assert time.monotonic() < deadline, admin.info("memory")
        time.sleep(0.05)
    assert r2.set("k", "1") is True
