"""A script that has run past busy-reply-threshold: the tenant's other clients get -BUSY for every
command Redis does not flag allow-busy (PING included), a transaction with a refused command is
discarded at EXEC, and EXEC itself while busy discards the transaction (Redis 7.0's
processCommand / rejectCommand; unit/multi "... and script timeout")."""

from __future__ import annotations

import pytest

from helpers import Conn, error_text, wait_until

BUSY_EVAL = "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."
BUSY_FUNCTION = (
    "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE."
)


@pytest.fixture
def busy_threshold(admin):
    admin.config_set("busy-reply-threshold", 50)
    yield
    admin.config_set("busy-reply-threshold", 5000)


def start_endless(server, *cmd):
    """Sends an endless script on a connection of its own; returns that connection."""
    c = Conn(server.client())
    c.send(*cmd)
    return c


def first_busy(c: Conn, *cmd) -> str:
    """Repeats `cmd` until it is refused (the script has reached the threshold): the error."""

    def attempt():
        try:
            c(*cmd)
        except Exception as e:  # noqa: BLE001 - the error reply is what we wait for
            return error_text(e)
        return None

    return wait_until(attempt, timeout=10, interval=0.02, what="-BUSY")


def kill_and_join(c: Conn, runner: Conn, sub: str = "SCRIPT"):
    assert c(sub, "KILL") == "OK"
    with pytest.raises(Exception) as ei:
        runner.read()
    assert "killed by user" in str(ei.value)


def test_ping_and_data_commands_are_busy(server, busy_threshold):
    runner = start_endless(server, "EVAL", "while true do end", 0)
    c = Conn(server.client())
    assert first_busy(c, "PING") == BUSY_EVAL
    assert c.error("GET", "k") == BUSY_EVAL
    assert c.error("ECHO", "x") == BUSY_EVAL
    assert c.error("FUNCTION", "KILL").startswith("BUSY")
    kill_and_join(c, runner)
    assert c("PING", "asdf") == "asdf"


def test_multi_with_a_command_refused_as_busy_is_discarded(server, busy_threshold):
    c = Conn(server.client())
    c("SET", "xx", "1")
    runner = start_endless(server, "EVAL", "while true do end", 0)
    first_busy(c, "PING")
    assert c("MULTI") == "OK"  # allow-busy
    assert c.error("INCR", "xx") == BUSY_EVAL
    kill_and_join(Conn(server.client()), runner)
    assert c("INCR", "xx") == "QUEUED"
    assert c.error("EXEC") == "EXECABORT Transaction discarded because of previous errors."
    assert c("GET", "xx") == "1"
    assert c("PING", "asdf") == "asdf"


def test_exec_while_busy_discards_the_transaction(server, busy_threshold):
    c = Conn(server.client())
    c("SET", "xx", "1")
    assert c("MULTI") == "OK"
    assert c("INCR", "xx") == "QUEUED"
    runner = start_endless(server, "EVAL", "while true do end", 0)
    other = Conn(server.client())
    first_busy(other, "PING")
    assert c.error("EXEC") == "EXECABORT Transaction discarded because of: " + BUSY_EVAL
    kill_and_join(other, runner)
    assert c("GET", "xx") == "1"
    # The connection has left MULTI.
    assert c("PING", "asdf") == "asdf"


def test_a_busy_function_names_function_kill(server, busy_threshold):
    c = Conn(server.client())
    c("FUNCTION", "LOAD", "REPLACE",
      "#!lua name=busy\nredis.register_function('loop', function() while true do end end)")
    runner = start_endless(server, "FCALL", "loop", 0)
    assert first_busy(c, "PING") == BUSY_FUNCTION
    assert c.error("SCRIPT", "KILL") == BUSY_FUNCTION
    stats = c("FUNCTION", "STATS")  # allow-busy
    assert stats[1][1] == "loop"
    kill_and_join(c, runner, "FUNCTION")
    c("FUNCTION", "FLUSH")


def test_watch_is_allowed_while_busy(server, busy_threshold):
    # WATCH is allow-busy in Redis: it answers at once, and a transaction on keys the script
    # did not touch runs after the script ends.
    runner = start_endless(server, "EVAL", "while true do end", 0)
    c = Conn(server.client())
    first_busy(c, "PING")
    assert c("WATCH", "watched-while-busy") == "OK"
    kill_and_join(c, runner)
    assert c("MULTI") == "OK"
    assert c("SET", "watched-while-busy", "1") == "QUEUED"
    assert c("EXEC") == ["OK"]


def test_watch_while_busy_sees_the_scripts_writes(server, admin, busy_threshold):
    # A script that writes the watched key after the WATCH (it runs a second or two, then
    # writes) aborts the transaction, as in Redis.
    script = ("local stop = tonumber(redis.call('TIME')[1]) + 1 "
              "while tonumber(redis.call('TIME')[1]) <= stop do end "
              "redis.call('SET', KEYS[1], 'by-script') return 1")
    runner = start_endless(server, "EVAL", script, 1, "written-while-busy")
    c = Conn(server.client())
    first_busy(c, "PING")
    assert c("WATCH", "written-while-busy") == "OK"
    assert runner.read() == 1
    assert c("MULTI") == "OK"
    assert c("SET", "written-while-busy", "by-transaction") == "QUEUED"
    assert c("EXEC") is None
    assert admin.get("written-while-busy") == "by-script"
