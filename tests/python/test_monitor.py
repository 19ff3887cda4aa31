"""MONITOR: a tenant sees only its own clients' commands; an administrator sees every tenant's,
with the tenant named; AUTH arguments are redacted as Redis does."""

from __future__ import annotations

import itertools
import socket
import time

import pytest
import redis

TIMEOUT = 5
_names = (f"mon{n}" for n in itertools.count())


def _monitor_socket(server, user: str | None, password: str) -> socket.socket:
    s = server.sock()
    auth = ["AUTH", user, password] if user else ["AUTH", password]
    for args in (auth, ["MONITOR"]):
        s.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in args))
        assert _read_line(s) == b"+OK"
    return s


_buffers: dict[int, bytes] = {}


def _read_line(s: socket.socket, timeout: float = TIMEOUT) -> bytes | None:
    buf = _buffers.get(s.fileno(), b"")
    deadline = time.monotonic() + timeout
    while b"\r\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            _buffers[s.fileno()] = buf
            return None
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            break
        buf += chunk
    line, _, rest = buf.partition(b"\r\n")
    _buffers[s.fileno()] = rest
    return line


def _lines_until(s: socket.socket, marker: bytes) -> list[bytes]:
    """Monitor lines up to and including the first that contains `marker`."""
    seen = []
    for _ in range(1000):
        line = _read_line(s)
        assert line is not None, f"no line with {marker!r} after {seen}"
        seen.append(line)
        if marker in line:
            return seen
    raise AssertionError("too many lines")


@pytest.mark.ferrite_only
def test_a_tenant_monitors_only_its_own_commands(server, admin):
    a, b = next(_names), next(_names)
    for t in (a, b):
        admin.execute_command("TENANT.CREATE", t, "PASSWORD", "pw")
    try:
        mon_a = _monitor_socket(server, a, "pw")
        mon_admin = _monitor_socket(server, None, server.admin_secret)
        ca = redis.Redis(port=server.port, username=a, password="pw", decode_responses=True,
                         socket_timeout=TIMEOUT)
        cb = redis.Redis(port=server.port, username=b, password="pw", decode_responses=True,
                         socket_timeout=TIMEOUT)
        cb.set("b-secret", "hidden")
        ca.set("k", "v\n1")
        ca.execute_command("AUTH", a, "pw")
        ca.get("done")

        own = _lines_until(mon_a, b'"done"')
        text = b"\n".join(own)
        assert b'"SET" "k" "v\\n1"' in text, own
        assert b'"AUTH" "(redacted)" "(redacted)"' in text, own
        assert b"pw" not in text
        assert b"b-secret" not in text, "a tenant never sees another tenant's commands"
        assert all(line.startswith(b"+") and b"] " in line for line in own), own
        assert all(b"tenant=" not in line for line in own)

        every = b"\n".join(_lines_until(mon_admin, b'"done"'))
        assert f"tenant={b}] \"SET\" \"b-secret\" \"hidden\"".encode() in every, every
        assert f"tenant={a}] \"SET\" \"k\"".encode() in every, every
        # Administrative commands are never shown (as in Redis), nor tenancy ones (passwords).
        admin.config_get("maxclients")
        admin.execute_command("TENANT.INFO", a)
        ca.execute_command("TENANT.INFO", a)
        ca.get("done2")
        tail = b"\n".join(_lines_until(mon_admin, b'"done2"'))
        assert b"TENANT.INFO" not in tail.upper() and b"CONFIG" not in tail.upper(), tail
        mon_a.close()
        mon_admin.close()
    finally:
        for t in (a, b):
            admin.execute_command("TENANT.DELETE", t, "FORCE")


@pytest.mark.ferrite_only
def test_redis_py_monitor_reads_a_tenants_commands(server, admin):
    t = next(_names)
    admin.execute_command("TENANT.CREATE", t, "PASSWORD", "pw")
    try:
        c = redis.Redis(port=server.port, username=t, password="pw", decode_responses=True,
                        socket_timeout=TIMEOUT)
        with c.monitor() as m:
            other = redis.Redis(port=server.port, username=t, password="pw",
                                decode_responses=True, socket_timeout=TIMEOUT)
            other.set("watched", "1")
            for _ in range(20):
                cmd = m.next_command()
                if "watched" in cmd["command"]:
                    break
            assert cmd["command"] == "SET watched 1"
            assert cmd["db"] == 0
            other.close()
    finally:
        admin.execute_command("TENANT.DELETE", t, "FORCE")


def test_monitor_is_refused_inside_multi(r2):
    r2.execute_command("MULTI")
    with pytest.raises(redis.ResponseError):
        r2.execute_command("MONITOR")
    with pytest.raises(redis.exceptions.ExecAbortError):
        r2.execute_command("EXEC")


@pytest.mark.ferrite_only
def test_a_monitor_that_never_reads_is_cut_off_at_the_pubsub_limit(server, admin):
    t = next(_names)
    admin.execute_command("TENANT.CREATE", t, "PASSWORD", "pw")
    admin.config_set("limits.pubsub_output_buffer_limit", str(1024 * 1024))
    try:
        mon = _monitor_socket(server, t, "pw")
        mon.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        before = int(admin.info("stats")["client_output_buffer_limit_disconnections"])
        c = redis.Redis(port=server.port, username=t, password="pw", socket_timeout=TIMEOUT)
        payload = b"x" * 10_000
        p = c.pipeline(transaction=False)
        for i in range(2000):  # about 20 MB of monitor lines
            p.set(f"k{i % 10}", payload)
        p.execute()
        deadline = time.monotonic() + TIMEOUT
        while int(admin.info("stats")["client_output_buffer_limit_disconnections"]) == before:
            assert time.monotonic() < deadline, "the monitor was never cut off"
            time.sleep(0.05)
        # The tenant's own clients, and everyone else, carry on.
        assert c.get("k1") == payload
        assert admin.ping()
        mon.close()
    finally:
        admin.config_set("limits.pubsub_output_buffer_limit", str(32 * 1024 * 1024))
        admin.execute_command("TENANT.DELETE", t, "FORCE")
