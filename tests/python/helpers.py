"""Small helpers shared by the redis-py suites."""

from __future__ import annotations

import time

import pytest
import redis


def error_text(e: BaseException) -> str:
    """The error line as the server sent it (without the leading '-').

    redis-py strips known codes (ERR, NOAUTH, WRONGPASS, EXECABORT, ...) from the message and keeps
    them in `status_code`; unknown codes (WRONGTYPE, NOPROTO) stay in the message."""
    msg = str(e)
    code = getattr(e, "status_code", None)
    return f"{code} {msg}" if code else msg


def error_of(fn, *args, **kwargs) -> str:
    """Runs `fn(*args, **kwargs)`, which must fail with an error reply; returns its full text."""
    with pytest.raises(redis.RedisError) as ei:
        fn(*args, **kwargs)
    assert not isinstance(ei.value, (redis.ConnectionError, redis.TimeoutError)) or isinstance(
        ei.value, redis.AuthenticationError
    ), f"expected an error reply, got {ei.value!r}"
    return error_text(ei.value)


def cmd_error(client: redis.Redis, *args) -> str:
    """Full error text of a raw command that must fail."""
    return error_of(client.execute_command, *args)


WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
SYNTAX = "ERR syntax error"
NOT_INTEGER = "ERR value is not an integer or out of range"
NOT_FLOAT = "ERR value is not a valid float"


def arity(cmd: str) -> str:
    return f"ERR wrong number of arguments for '{cmd}' command"


def wait_until(pred, timeout: float = 5.0, interval: float = 0.01, what: str = "condition"):
    """Bounded polling: returns pred()'s first truthy value, fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Conn:
    """One dedicated connection (redis-py pools would otherwise pick any connection): commands are
    sent and their replies read in order, as the wire has them (no reply callbacks)."""

    def __init__(self, client: redis.Redis):
        self.client = client
        self.conn = client.connection_pool.get_connection()

    def __call__(self, *args):
        self.conn.send_command(*args)
        return self.conn.read_response()

    def send(self, *args):
        self.conn.send_command(*args)

    def read(self):
        return self.conn.read_response()

    def error(self, *args) -> str:
        return error_of(self, *args)

    def close(self):
        self.client.connection_pool.release(self.conn)
