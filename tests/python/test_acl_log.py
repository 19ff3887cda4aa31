"""ACL LOG as Redis 7 keeps it (refused commands, keys and channels of ACL users, in toplevel,
MULTI and Lua context; failed AUTH and HELLO; similar entries merged; RESET; acllog-max-len),
and INFO commandstats counting the commands scripts run. The tests that are not marked
ferrite_only also run against redis-server (`FERRITE_TEST_REDIS_SERVER`), where the users are
Redis's own; in Ferrite they are users of the `default` tenant, whose log the administrator
reads. The ferrite_only tests check that each tenant has its own log, and that a tenant created
again under a deleted one's name starts with empty logs (ACL LOG, SLOWLOG, LATENCY)."""

from __future__ import annotations

import itertools
import time

import pytest
import redis

from helpers import Conn, cmd_error

_names = (f"acllog{n}" for n in itertools.count())


def entries(client, *args) -> list[dict]:
    """ACL LOG's entries as dicts, from RESP2 (flat pairs) or RESP3 (maps); `client` is a
    redis-py client or a `Conn` (one given connection)."""
    if isinstance(client, Conn):
        raw = client("ACL", "LOG", *args)
    else:
        raw = client.execute_command("ACL", "LOG", *args)
    out = []
    for e in raw:
        if isinstance(e, list):
            e = dict(zip(e[::2], e[1::2]))
        out.append({(k.decode() if isinstance(k, bytes) else k): v for k, v in e.items()})
    return out


@pytest.fixture
def log_admin(admin):
    """The administrator, with an empty ACL log and acllog-max-len restored afterwards."""
    saved = admin.config_get("acllog-max-len")["acllog-max-len"]
    admin.execute_command("ACL", "LOG", "RESET")
    yield admin
    admin.config_set("acllog-max-len", saved)
    admin.execute_command("ACL", "LOG", "RESET")


@pytest.fixture
def user(admin):
    """A fresh user (password `pw`) allowed GET/SET/PUBLISH/EVAL/MULTI/EXEC on keys `k*` and
    channel `chan`; deleted afterwards."""
    name = next(_names)
    admin.execute_command("ACL", "SETUSER", name, "on", ">pw", "~k*", "&chan", "+get", "+set",
                          "+publish", "+eval", "+eval_ro", "+multi", "+exec", "+ping")
    yield name
    admin.execute_command("ACL", "DELUSER", name)


def login(server, name, password="pw") -> Conn:
    c = Conn(server.anon_client())
    assert c("AUTH", name, password) == "OK"
    return c


def test_refused_command_key_and_channel_are_logged(server, log_admin, user):
    c = login(server, user)
    c.error("GET", "other")
    c.error("HSET", "k1", "f", "v")
    c.error("PUBLISH", "elsewhere", "hi")
    log = entries(log_admin)
    assert [(e["reason"], e["object"]) for e in log] == [
        ("channel", "elsewhere"), ("command", "hset"), ("key", "other")]
    for e in log:
        assert e["count"] == 1
        assert e["context"] == "toplevel"
        assert e["username"] == user
        assert 0 <= float(e["age-seconds"]) < 30
        assert f"user={user}" in e["client-info"] and "addr=127.0.0.1:" in e["client-info"]
    # Nothing was changed by the refused commands.
    assert log_admin.exists("k1") == 0


def test_resp3_entries_are_maps_with_a_double_age(server, log_admin, user, raw3):
    c = login(server, user)
    c.error("GET", "other")
    [e] = raw3.execute_command("ACL", "LOG")
    assert isinstance(e, dict)
    e = {(k.decode() if isinstance(k, bytes) else k): v for k, v in e.items()}
    assert isinstance(e["age-seconds"], float) and isinstance(e["count"], int)
    assert e["reason"] in ("key", b"key")


@pytest.mark.redis72
def test_entries_carry_redis_7_2_ids_and_timestamps(server, log_admin, user):
    c = login(server, user)
    before = int(time.time() * 1000)
    c.error("GET", "first")
    c.error("GET", "second")
    log = entries(log_admin)
    assert [e["object"] for e in log] == ["second", "first"]
    assert log[0]["entry-id"] == log[1]["entry-id"] + 1
    for e in log:
        assert before - 1000 <= e["timestamp-created"] <= e["timestamp-last-updated"]
        assert e["timestamp-last-updated"] <= int(time.time() * 1000) + 1000


def test_multi_and_lua_contexts(server, log_admin, user):
    c = login(server, user)
    assert c("MULTI") == "OK"
    c.error("GET", "inmulti")
    assert "EXECABORT" in c.error("EXEC")
    c.error("EVAL", "return redis.call('get', 'inlua')", 0)
    c.error("EVAL", "return redis.call('hset', 'k1', 'f', 'v')", 0)
    log = entries(log_admin)
    got = [(e["reason"], e["context"], e["object"]) for e in log]
    assert got == [("command", "lua", "hset"), ("key", "lua", "inlua"),
                   ("key", "multi", "inmulti")], got


def test_rules_changed_before_exec_are_logged_in_multi_context(server, log_admin, user):
    c = login(server, user)
    assert c("MULTI") == "OK"
    assert c("GET", "k1") == "QUEUED"
    log_admin.execute_command("ACL", "SETUSER", user, "-get")
    reply = c("EXEC")
    assert isinstance(reply[0], redis.ResponseError)
    [e] = entries(log_admin)
    assert (e["reason"], e["context"], e["object"]) == ("command", "multi", "get")


def test_failed_auth_and_hello_are_logged(server, log_admin, user):
    anon = Conn(server.anon_client())
    with pytest.raises(redis.AuthenticationError):
        anon("AUTH", user, "wrong")
    with pytest.raises(redis.AuthenticationError):
        anon("HELLO", "3", "AUTH", user, "wrong")
    log = entries(log_admin)
    assert [(e["reason"], e["object"].upper(), e["username"], e["context"]) for e in log] == [
        ("auth", "HELLO", user, "toplevel"), ("auth", "AUTH", user, "toplevel")]
    # A right password logs nothing.
    login(server, user)
    assert len(entries(log_admin)) == 2


def test_similar_entries_are_merged_and_reset_empties(server, log_admin, user):
    c = login(server, user)
    for _ in range(3):
        c.error("GET", "other")
    anon = Conn(server.anon_client())
    for _ in range(2):
        with pytest.raises(redis.AuthenticationError):
            anon("AUTH", user, "wrong")
    log = entries(log_admin)
    assert [(e["reason"], e["count"]) for e in log] == [("auth", 2), ("key", 3)]
    # A merged entry moves to the front when it recurs.
    c.error("GET", "other")
    assert [(e["reason"], e["count"]) for e in entries(log_admin)] == [("key", 4), ("auth", 2)]
    assert log_admin.execute_command("ACL", "LOG", "RESET") in ("OK", True, b"OK")
    assert entries(log_admin) == []


def test_count_argument_and_default_length(server, log_admin, user):
    assert log_admin.config_get("acllog-max-len") == {"acllog-max-len": "128"}
    c = login(server, user)
    for i in range(12):
        c.error("GET", f"other{i}")
    assert len(entries(log_admin)) == 10
    assert [e["object"] for e in entries(log_admin, 2)] == ["other11", "other10"]
    assert len(entries(log_admin, 100)) == 12
    # As in Redis, a negative count shows nothing.
    assert entries(log_admin, "-1") == [] and entries(log_admin, "0") == []
    assert "not an integer" in cmd_error(log_admin, "ACL", "LOG", "many")


def test_acllog_max_len_bounds_the_log(server, log_admin, user):
    log_admin.config_set("acllog-max-len", 2)
    c = login(server, user)
    for i in range(5):
        c.error("GET", f"other{i}")
    assert [e["object"] for e in entries(log_admin, 100)] == ["other4", "other3"]
    # Bad values change nothing.
    assert "acllog-max-len" in cmd_error(log_admin, "CONFIG", "SET", "acllog-max-len", "lots")
    assert log_admin.config_get("acllog-max-len") == {"acllog-max-len": "2"}


def test_the_default_acllog_max_len_keeps_the_newest_128(server, log_admin, user):
    assert log_admin.config_get("acllog-max-len") == {"acllog-max-len": "128"}
    c = login(server, user)
    for i in range(140):
        c.error("GET", f"other{i}")
    objects = [e["object"] for e in entries(log_admin, 1000)]
    assert len(objects) == 128
    assert objects[0] == "other139" and objects[-1] == "other12"


def test_script_calls_count_in_commandstats(server, log_admin, r):
    log_admin.config_resetstat()
    assert r.eval("redis.call('set', KEYS[1], 'a'); return redis.call('set', KEYS[1], 'b')",
                  1, "k") == "OK"
    stats = log_admin.info("commandstats")
    assert stats["cmdstat_set"]["calls"] == 2, stats
    assert stats["cmdstat_eval"]["calls"] == 1, stats
    # A call the script may not make is a rejected call of its command.
    with pytest.raises(redis.ResponseError):
        r.eval_ro("return redis.call('incr', KEYS[1])", 1, "n")
    stats = log_admin.info("commandstats")
    assert stats["cmdstat_incr"]["rejected_calls"] == 1, stats
    assert stats["cmdstat_incr"]["calls"] == 0, stats
    # A call that runs and fails is a failed call.
    with pytest.raises(redis.ResponseError):
        r.eval("return redis.call('incr', KEYS[1])", 1, "k")
    stats = log_admin.info("commandstats")
    assert stats["cmdstat_incr"]["calls"] == 1 and stats["cmdstat_incr"]["failed_calls"] == 1


# -- per tenant (Ferrite) ---------------------------------------------------------------------


@pytest.fixture
def two_tenants(admin):
    names = [next(_names), next(_names)]
    for t in names:
        admin.execute_command("TENANT.CREATE", t, "PASSWORD", "pw")
    yield names
    for t in names:
        try:
            admin.execute_command("TENANT.DELETE", t, "FORCE")
        except redis.ResponseError:
            pass


@pytest.mark.ferrite_only
def test_each_tenant_sees_only_its_own_log(server, log_admin, two_tenants):
    a, b = two_tenants
    ta = Conn(server.anon_client(username=a, password="pw"))
    tb = Conn(server.anon_client(username=b, password="pw"))
    assert ta("ACL", "SETUSER", "bob", "on", ">x", "~k*", "+get") == "OK"
    bob = Conn(server.anon_client())
    assert bob("AUTH", f"{a}:bob", "x") == "OK"
    bob.error("GET", "secret-of-a")
    anon = Conn(server.anon_client())
    for name in (a, f"{a}:bob"):
        with pytest.raises(redis.AuthenticationError):
            anon("AUTH", name, "wrong")
    la = entries(ta.client)
    assert [(e["reason"], e["object"], e["username"]) for e in la] == [
        ("auth", "AUTH", "bob"), ("auth", "AUTH", a), ("key", "secret-of-a", "bob")], la
    # The entry of a connection that is not the tenant's tells nothing about it.
    assert la[0]["client-info"].startswith("id=0 ") and f"tenant={a}" in la[0]["client-info"]
    assert f"tenant={a}" in la[2]["client-info"]
    # Tenant B, the administrator's default view and anonymous clients of `default` see none.
    assert entries(tb.client) == []
    assert not any("secret-of-a" in str(e) for e in entries(log_admin))
    # B's RESET leaves A's log alone.
    tb("ACL", "LOG", "RESET")
    assert len(entries(ta.client)) == 3
    # An administrator that visits A sees A's log.
    visitor = Conn(server.client())
    visitor("TENANT.USE", a)
    assert len(entries(visitor)) == 3


@pytest.mark.ferrite_only
def test_logins_naming_no_tenant_are_for_administrators_only(server, log_admin):
    anon = Conn(server.anon_client())
    with pytest.raises(redis.AuthenticationError):
        anon("AUTH", "no-such-tenant:bob", "wrong")
    with pytest.raises(redis.RedisError):
        anon("AUTH", "not-the-admin-secret")
    # A password typed before its user name is a plain name that is nobody's.
    with pytest.raises(redis.AuthenticationError):
        anon("AUTH", "s3cret-typed-first", "bob")
    seen = [(e["reason"], e["username"]) for e in entries(log_admin)]
    assert seen == [("auth", "s3cret-typed-first"), ("auth", "default"),
                    ("auth", "no-such-tenant:bob")], seen
    # A client of `default` that is no administrator sees neither, nor can it erase them.
    assert entries(server.anon_client()) == []
    server.anon_client().execute_command("ACL", "LOG", "RESET")
    assert len(entries(log_admin)) == 3


@pytest.mark.ferrite_only
def test_failed_logins_cannot_grow_the_log_past_its_bound(server, log_admin, two_tenants):
    a, _ = two_tenants
    ta = server.anon_client(username=a, password="pw")
    log_admin.config_set("acllog-max-len", 5)
    # One connection, no client-side retries: each AUTH is one attempt.
    anon = Conn(server.anon_client())
    for i in range(40):
        with pytest.raises(redis.AuthenticationError):
            anon("AUTH", f"{a}:user{i}", "wrong")
    assert [e["username"] for e in entries(ta, 1000)] == [f"user{i}" for i in range(39, 34, -1)]
    # One user guessed over and over: the address's attempts are refused after
    # auth_failure_limit failures (the rate limiter still works), and refused attempts are not
    # logged: the entry counts the passwords actually checked.
    ta.execute_command("ACL", "LOG", "RESET")
    wrongpass = refused = 0
    for _ in range(15):
        try:
            anon("AUTH", f"{a}:guessed", "wrong")
        except redis.AuthenticationError:
            wrongpass += 1
        except redis.ResponseError as e:
            assert "too many failed authentication attempts" in str(e)
            refused += 1
    assert refused > 0 and wrongpass > 0
    [e] = entries(ta)
    assert (e["username"], e["count"]) == ("guessed", wrongpass)


@pytest.mark.ferrite_only
def test_script_calls_count_in_the_tenants_commandstats(server, two_tenants):
    a, b = two_tenants
    ta = server.anon_client(username=a, password="pw")
    tb = server.anon_client(username=b, password="pw")
    before = ta.info("commandstats").get("cmdstat_set", {}).get("calls", 0)
    ta.eval("redis.call('set', 'x', 1); redis.call('set', 'y', 2)", 0)
    stats = ta.info("commandstats")
    assert stats["cmdstat_set"]["calls"] == before + 2
    assert stats["cmdstat_eval"]["calls"] == 1
    assert "cmdstat_set" not in tb.info("commandstats")


@pytest.mark.ferrite_only
def test_a_recreated_tenant_starts_with_empty_logs(server, log_admin):
    name = next(_names)
    saved = {n: log_admin.config_get(n)[n] for n in
             ("slowlog-log-slower-than", "latency-monitor-threshold")}
    log_admin.execute_command("TENANT.CREATE", name, "PASSWORD", "pw")
    try:
        log_admin.config_set("slowlog-log-slower-than", 0)
        log_admin.config_set("latency-monitor-threshold", 1)
        t = Conn(server.anon_client(username=name, password="pw"))
        assert t("ACL", "SETUSER", "bob", "on", ">x", "~k*", "+get") == "OK"
        bob = Conn(server.anon_client())
        assert bob("AUTH", f"{name}:bob", "x") == "OK"
        bob.error("GET", "old-secret")
        t("SET", "lcs:a", "ab" * 1000)
        t("SET", "lcs:b", "ba" * 1000)
        deadline = time.monotonic() + 10
        while not t("LATENCY", "LATEST") and time.monotonic() < deadline:
            t("LCS", "lcs:a", "lcs:b", "LEN")
        assert t("LATENCY", "LATEST"), "no latency event recorded"
        assert t("SLOWLOG", "LEN") > 0
        assert len(entries(t.client)) == 1
        log_admin.execute_command("TENANT.DELETE", name, "FORCE")
        log_admin.execute_command("TENANT.CREATE", name, "PASSWORD", "pw2")
        fresh = server.anon_client(username=name, password="pw2")
        assert entries(fresh) == []
        assert fresh.execute_command("LATENCY", "LATEST") == []
        assert not any("old-secret" in str(e) or "lcs" in str(e)
                       for e in fresh.execute_command("SLOWLOG", "GET", "-1"))
    finally:
        for n, v in saved.items():
            log_admin.config_set(n, v)
        try:
            log_admin.execute_command("TENANT.DELETE", name, "FORCE")
        except redis.ResponseError:
            pass
