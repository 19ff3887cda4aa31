"""Multi-tenancy through redis-py: AUTH binds a connection to a tenant (username = tenant), every
command family is scoped to it, quotas refuse writes with -OOM, bad credentials get WRONGPASS."""

from __future__ import annotations

import itertools

import pytest
import redis

from helpers import error_text

pytestmark = pytest.mark.ferrite_only

_names = (f"pyt{n}" for n in itertools.count())


@pytest.fixture
def tenant(admin):
    """A fresh tenant with password 'pw', deleted afterwards."""
    name = next(_names)
    admin.execute_command("TENANT.CREATE", name, "PASSWORD", "pw")
    yield name
    admin.execute_command("TENANT.DELETE", name, "FORCE")


@pytest.fixture
def other(admin):
    name = next(_names)
    admin.execute_command("TENANT.CREATE", name, "PASSWORD", "pw2")
    yield name
    admin.execute_command("TENANT.DELETE", name, "FORCE")


def connect(server, user, password, protocol=2):
    # No retries: a refused AUTH must fail at once, not after redis-py's default backoff.
    return redis.Redis(
        retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
        host=server.host,
        port=server.port,
        username=user,
        password=password,
        protocol=protocol,
        decode_responses=True,
        socket_timeout=10,
    )


@pytest.mark.parametrize("protocol", [2, 3])
def test_every_family_is_scoped_to_the_tenant(server, admin, tenant, other, protocol):
    a = connect(server, tenant, "pw", protocol)
    b = connect(server, other, "pw2", protocol)
    for c, tag in ((a, "A"), (b, "B")):
        c.set("s", tag)
        c.rpush("l", tag)
        c.hset("h", "f", tag)
        c.sadd("set", tag)
        c.zadd("z", {tag: 1})
        c.set("only-" + tag, 1, px=100_000)
    assert a.get("s") == "A" and b.get("s") == "B"
    assert b.lrange("l", 0, -1) == ["B"]
    assert b.hgetall("h") == {"f": "B"}
    assert b.smembers("set") == {"B"}
    assert b.zrange("z", 0, -1) == ["B"]
    assert b.exists("only-A") == 0
    assert sorted(b.keys("*")) == sorted(["s", "l", "h", "set", "z", "only-B"])
    assert sorted(b.scan_iter("*")) == sorted(b.keys("*"))
    assert b.dbsize() == 6
    with b.pipeline(transaction=True) as p:
        p.incr("n").get("s")
        assert p.execute() == [1, "B"]
    b.flushall()
    assert b.dbsize() == 0 and a.dbsize() == 6
    assert admin.dbsize() == 0, "the default tenant never saw any of it"
    assert a.execute_command("TENANT.CURRENT") == tenant


def test_wrong_credentials_are_refused(server, tenant):
    with pytest.raises(redis.exceptions.AuthenticationError) as e:
        connect(server, tenant, "nope").ping()
    assert "WRONGPASS" in error_text(e.value) or "invalid username-password" in error_text(e.value)
    with pytest.raises(redis.exceptions.AuthenticationError):
        connect(server, "no-such-tenant", "pw").ping()


def test_tenants_cannot_administer(server, tenant, other):
    a = connect(server, tenant, "pw")
    with pytest.raises(redis.exceptions.ResponseError) as e:
        a.execute_command("TENANT.USE", other)
    assert "no permission" in error_text(e.value)
    with pytest.raises(redis.exceptions.ResponseError) as e:
        a.execute_command("TENANT.INFO", other)
    assert "no such tenant" in error_text(e.value)


def test_quota_refuses_writes_but_keeps_reads_and_deletes(server, admin):
    name = next(_names)
    admin.execute_command("TENANT.CREATE", name, "PASSWORD", "pw", "MAXKEYS", "3")
    try:
        c = connect(server, name, "pw")
        c.mset({"a": 1, "b": 2, "c": 3})
        with pytest.raises(redis.exceptions.ResponseError) as e:
            c.set("d", 4)
        text = error_text(e.value)
        assert text.startswith("OOM") and f"'{name}'" in text, text
        assert c.get("a") == "1"
        assert c.delete("a") == 1
        assert c.set("d", 4) is True
        info = dict(zip(*[iter(admin.execute_command("TENANT.INFO", name))] * 2))
        assert int(info["keys"]) == 3
        assert int(info["rejected_total"]) >= 1
    finally:
        admin.execute_command("TENANT.DELETE", name, "FORCE")


def _limited(admin, *limits):
    name = next(_names)
    admin.execute_command("TENANT.CREATE", name, "PASSWORD", "pw", *limits)
    return name


def test_every_key_creating_write_respects_maxkeys(server, admin):
    name = _limited(admin, "MAXKEYS", "3")
    try:
        c = connect(server, name, "pw")
        c.sadd("src", *range(10))
        c.smove("src", "d1", 1)
        c.smove("src", "d2", 2)
        for create in (
            lambda: c.smove("src", "d3", 3),
            lambda: c.copy("src", "d3"),
            lambda: c.sinterstore("d3", ["src"]),
        ):
            with pytest.raises(redis.exceptions.ResponseError) as e:
                create()
            assert error_text(e.value).startswith("OOM"), error_text(e.value)
        assert c.dbsize() == 3
        # A key named twice in one MSET is one new key, not two.
        c.delete("d2")
        assert c.execute_command("MSET", "n", "1", "n", "2") is True
        assert c.get("n") == "2" and c.dbsize() == 3
    finally:
        admin.execute_command("TENANT.DELETE", name, "FORCE")


def test_maxmemory_counts_the_request_being_written(server, admin):
    name = _limited(admin, "MAXMEMORY", "1000")
    try:
        c = connect(server, name, "pw")
        with pytest.raises(redis.exceptions.ResponseError) as e:
            c.set("big", "x" * 5000)
        text = error_text(e.value)
        assert text == "OOM command not allowed when used memory > 'maxmemory'.", text
        with pytest.raises(redis.exceptions.ResponseError):
            c.rpush("l", *(["y" * 10] * 500))
        assert c.dbsize() == 0, "nothing of a refused write is stored"
        assert c.set("small", "1") is True
    finally:
        admin.execute_command("TENANT.DELETE", name, "FORCE")


def test_a_transaction_over_quota_is_refused_whole(server, admin):
    name = _limited(admin, "MAXKEYS", "1")
    try:
        c = connect(server, name, "pw")
        p = c.pipeline(transaction=True)
        p.set("a", 1)
        p.set("b", 1)
        with pytest.raises(redis.exceptions.ResponseError) as e:
            p.execute()
        # Refused whole at EXEC, as Redis refuses an EXEC.
        text = error_text(e.value)
        assert text.startswith("EXECABORT Transaction discarded because of: OOM"), text
        assert c.dbsize() == 0, "not half-applied"
        p = c.pipeline(transaction=True)
        p.set("a", 1)
        p.get("a")
        assert p.execute() == [True, "1"]
    finally:
        admin.execute_command("TENANT.DELETE", name, "FORCE")


def test_transactions_count_against_the_ops_throttle(server, admin):
    name = _limited(admin, "OPS", "5")
    try:
        c = connect(server, name, "pw")
        p = c.pipeline(transaction=True)
        for _ in range(100):
            p.incr("n")
        with pytest.raises(redis.exceptions.ResponseError) as e:
            p.execute()
        assert error_text(e.value).startswith("THROTTLED"), error_text(e.value)
        assert c.get("n") is None, "a refused transaction runs nothing"
    finally:
        admin.execute_command("TENANT.DELETE", name, "FORCE")


def test_info_clients_counts_the_tenants_own_connections(server, admin, tenant, other):
    others = [connect(server, other, "pw2") for _ in range(3)]
    try:
        for o in others:
            o.ping()
        mine = connect(server, tenant, "pw")
        assert mine.info("clients")["connected_clients"] == 1
        assert admin.info("clients")["connected_clients"] >= 5
    finally:
        for o in others:
            o.close()
