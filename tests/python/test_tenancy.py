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
