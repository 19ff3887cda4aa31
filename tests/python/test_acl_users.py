"""ACL users (ACL SETUSER/DELUSER/DRYRUN, AUTH as a user) as Redis has them: command, key and
channel rules checked for every request, for commands queued in MULTI (when queued and again at
EXEC) and for every call of a script; `redis.acl_check_cmd`. Run against redis-server too
(`FERRITE_TEST_REDIS_SERVER`): the users are Redis's global users there, and users of the
`default` tenant in Ferrite (docs/security.md says how users stay inside their tenant)."""

from __future__ import annotations

import itertools

import pytest
import redis

from helpers import Conn

_names = (f"acluser{n}" for n in itertools.count())


@pytest.fixture
def user(admin):
    """A fresh user name; the user is deleted afterwards."""
    name = next(_names)
    yield name
    admin.execute_command("ACL", "DELUSER", name)


def login(server, name, password) -> Conn:
    c = Conn(server.anon_client())
    assert c("AUTH", name, password) == "OK"
    return c


def noperm(text: str, what: str) -> bool:
    """Redis 7.2 says "NOPERM User u has no permissions to run the 'set' command" (and "No
    permissions to access a key"); 7.0 "NOPERM this user has no permissions to ...": both name
    the command or say key/channel (redis-py may strip the NOPERM code)."""
    return "permissions" in text and what in text


def test_script_acl_check(server, admin, user):
    # Redis's own "Script ACL check" (unit/scripting).
    admin.execute_command("ACL", "SETUSER", user, "on", ">123", "+@scripting", "+set", "~x*")
    c = login(server, user, "123")
    assert c("EVAL", "return redis.acl_check_cmd('set','xx',1)", 1, "xx") == 1
    assert c("EVAL", "return redis.acl_check_cmd('hset','xx','f',1)", 1, "xx") is None
    assert c("EVAL", "return redis.acl_check_cmd('set','yy',1)", 0) is None
    err = c.error("EVAL", "return redis.acl_check_cmd('invalid-cmd','arg')", 0)
    assert "Invalid command passed to redis.acl_check_cmd()" in err
    # The same rules hold for the script's calls.
    assert c("EVAL", "return redis.call('set','xx','1')", 1, "xx") == "OK"
    err = c.error("EVAL", "return redis.call('hset','xx','f','1')", 1, "xx")
    assert noperm(err, "hset") or "can't run this command" in err, err
    err = c.error("EVAL", "return redis.call('set','yy','1')", 0)
    assert noperm(err, "key") or "can't access at least one of the keys" in err, err
    assert noperm(c.error("GET", "xx"), "get")


def test_commands_keys_and_whoami(server, admin, user):
    admin.execute_command("ACL", "SETUSER", user, "on", ">pw", "~k*", "+get", "+set",
                          "+acl|whoami")
    c = login(server, user, "pw")
    assert c("ACL", "WHOAMI") == user
    assert any(cl.get("user") == user for cl in admin.client_list())
    assert c("SET", "k1", "v") == "OK"
    assert c("GET", "k1") == "v"
    assert noperm(c.error("SET", "other", "v"), "key")
    assert noperm(c.error("HSET", "k1", "f", "v"), "hset")
    assert noperm(c.error("ACL", "LIST"), "acl|list")
    # Nothing changed by the refused commands.
    assert admin.exists("other") == 0
    # A wrong password or a disabled user changes nothing either.
    with pytest.raises(redis.AuthenticationError):
        Conn(server.anon_client())("AUTH", user, "wrong")
    admin.execute_command("ACL", "SETUSER", user, "off")
    with pytest.raises(redis.AuthenticationError):
        Conn(server.anon_client())("AUTH", user, "pw")
    # ... but a connection already authenticated goes on (as in Redis).
    assert c("GET", "k1") == "v"


def test_transactions_are_checked_when_queued_and_at_exec(server, admin, user):
    admin.execute_command("ACL", "SETUSER", user, "on", ">pw", "~k*", "+multi", "+exec",
                          "+get", "+set")
    c = login(server, user, "pw")
    assert c("MULTI") == "OK"
    assert noperm(c.error("SET", "other", "v"), "key")
    assert c.error("EXEC").startswith("EXECABORT")
    assert admin.exists("other") == 0
    assert c("MULTI") == "OK"
    assert c("SET", "k1", "v") == "QUEUED"
    assert c("GET", "k1") == "QUEUED"
    # The rules change between queueing and EXEC: EXEC checks again.
    admin.execute_command("ACL", "SETUSER", user, "-get")
    replies = c("EXEC")
    assert replies[0] == "OK"
    assert isinstance(replies[1], redis.ResponseError)
    assert "ACLs rules changed between the moment the transaction was accumulated and the EXEC " \
        "call. This command is no longer allowed for the following reason: no permission to " \
        "execute the command or subcommand" in str(replies[1])


def test_channels(server, admin, user):
    admin.execute_command("ACL", "SETUSER", user, "on", "nopass", "+@all", "~*",
                          "resetchannels", "&news.*")
    c = login(server, user, "anything")
    assert c("PUBLISH", "news.today", "m") == 0
    assert noperm(c.error("PUBLISH", "sports", "m"), "channel")
    assert noperm(c.error("SUBSCRIBE", "news.today", "sports"), "channel")
    assert noperm(c.error("PSUBSCRIBE", "news.t*"), "channel")


def test_dryrun(admin, user):
    admin.execute_command("ACL", "SETUSER", user, "on", "nopass", "~k*", "+get", "+set")
    assert admin.execute_command("ACL", "DRYRUN", user, "SET", "k1", "v") == "OK"
    assert admin.execute_command("ACL", "DRYRUN", user, "SET", "x", "v") == \
        "This user has no permissions to access the 'x' key"
    assert admin.execute_command("ACL", "DRYRUN", user, "HSET", "k1", "f", "v") == \
        "This user has no permissions to run the 'hset' command"
    with pytest.raises(redis.ResponseError, match="User 'nosuchuser' not found"):
        admin.execute_command("ACL", "DRYRUN", "nosuchuser", "GET", "k")
    with pytest.raises(redis.ResponseError, match="Command 'NOSUCHCOMMAND' not found"):
        admin.execute_command("ACL", "DRYRUN", user, "NOSUCHCOMMAND")


def test_bad_rules_change_nothing(admin, user):
    admin.execute_command("ACL", "SETUSER", user, "on", "nopass", "+get")
    before = admin.execute_command("ACL", "GETUSER", user)
    for bad in ("+nosuchcommand", "+@nosuchcategory", "notarule"):
        with pytest.raises(redis.ResponseError, match="Error in ACL SETUSER modifier"):
            admin.execute_command("ACL", "SETUSER", user, "off", bad)
    assert admin.execute_command("ACL", "GETUSER", user) == before


def test_deluser_closes_its_connections(server, admin, user):
    admin.execute_command("ACL", "SETUSER", user, "on", ">pw", "+@all", "~*")
    c = login(server, user, "pw")
    assert c("PING") == "PONG"
    assert admin.execute_command("ACL", "DELUSER", user) == 1
    with pytest.raises(redis.ConnectionError):
        c("PING")
    assert admin.execute_command("ACL", "DELUSER", user) == 0
