"""Blocking pops through redis-py: BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP, BZPOPMIN, BZPOPMAX,
BZMPOP. Fairness (first blocked, first served), timeouts (fractional ones too), CLIENT UNBLOCK,
no blocking inside MULTI, a closed connection never takes a value, tenants never see each other's
blocked clients, thousands of blocked clients, and a blocked client of a tenant that is cut over
gets the redirect."""

from __future__ import annotations

import itertools
import socket
import threading
import time

import pytest
import redis

from conftest import serving
from helpers import error_text

TIMEOUT = 10.0


@pytest.fixture(scope="module", params=["log", "no-log"])
def server(request):
    """Every test runs against a server with a log (the default: a served client's reply waits
    until the write that served it is logged, and its connection writes it) and one without
    (the serving write sends the reply on the client's socket itself)."""
    yield from serving(["--appendonly", "no"] if request.param == "no-log" else None)


def blocked_count(admin) -> int:
    return int(admin.info("clients")["blocked_clients"])


def wait_blocked(admin, n: int):
    """Waits (bounded) until the server counts `n` blocked clients."""
    deadline = time.monotonic() + TIMEOUT
    while blocked_count(admin) != n:
        assert time.monotonic() < deadline, f"never {n} blocked clients: {blocked_count(admin)}"
        time.sleep(0.01)


def bc(server, protocol=2):
    """A client whose replies are exactly as decoded from the wire (bytes, no conversions)."""
    return server.client(protocol=protocol, raw=True, decode_responses=False)


class Background:
    """Runs one blocking command on its own connection in a thread; `result()` waits for it."""

    def __init__(self, client, *cmd):
        self.client = client
        self.cmd = cmd
        self.value = None
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.value = self.client.execute_command(*self.cmd)
        except Exception as e:  # the test looks at it
            self.error = e

    def result(self):
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), f"{self.cmd} never returned"
        if self.error is not None:
            raise self.error
        return self.value


def test_first_blocked_first_served(server, admin):
    clients = [bc(server) for _ in range(3)]
    waits = []
    for i, c in enumerate(clients):
        waits.append(Background(c, "BLPOP", "q", "0"))
        wait_blocked(admin, i + 1)
    pusher = server.client(decode_responses=True)
    assert pusher.rpush("q", "a", "b", "c") == 3
    got = [w.result() for w in waits]
    assert got == [[b"q", b"a"], [b"q", b"b"], [b"q", b"c"]]
    assert pusher.exists("q") == 0
    assert blocked_count(admin) == 0


def test_one_value_serves_one_client(server, admin):
    a, b = Background(bc(server), "BRPOP", "q", "0"), None
    wait_blocked(admin, 1)
    b = Background(bc(server), "BRPOP", "q", "0")
    wait_blocked(admin, 2)
    server.client().lpush("q", "x")
    assert a.result() == [b"q", b"x"]
    time.sleep(0.1)
    assert blocked_count(admin) == 1, "the second client still waits"
    server.client().lpush("q", "y")
    assert b.result() == [b"q", b"y"]


def test_timeouts_including_fractional(r2):
    start = time.monotonic()
    assert r2.blpop(["nothing"], timeout=0.2) is None
    took = time.monotonic() - start
    assert 0.18 <= took < 2.0, took
    start = time.monotonic()
    assert r2.execute_command("BLPOP", "nothing", "0.001") is None
    assert time.monotonic() - start < 2.0
    assert r2.execute_command("BZPOPMIN", "nothing", "0.05") is None
    assert r2.execute_command("BLMOVE", "nothing", "d", "LEFT", "LEFT", "0.05") is None
    assert r2.execute_command("BLMPOP", "0.05", "1", "nothing", "LEFT") is None
    with pytest.raises(redis.ResponseError, match="timeout is negative"):
        r2.execute_command("BLPOP", "q", "-1")
    with pytest.raises(redis.ResponseError, match="timeout is not a float or out of range"):
        r2.execute_command("BLPOP", "q", "soon")


def test_resp3_timeout_and_replies(server, admin):
    c3 = server.client(protocol=3, raw=True)
    assert c3.execute_command("BLPOP", "q", "0.01") is None
    w = Background(bc(server, 3), "BZPOPMAX", "z", "0")
    wait_blocked(admin, 1)
    server.client().zadd("z", {"m": 2.5})
    assert w.result() == [b"z", b"m", 2.5]


def test_every_blocking_command_is_woken(server, admin):
    pusher = server.client(decode_responses=True)
    cases = [
        (("BLPOP", "l1", "0"), lambda: pusher.rpush("l1", "v"), [b"l1", b"v"]),
        (("BRPOP", "l2", "0"), lambda: pusher.rpush("l2", "u", "v"), [b"l2", b"v"]),
        (("BRPOPLPUSH", "l3", "d3", "0"), lambda: pusher.rpush("l3", "v"), b"v"),
        (("BLMOVE", "l4", "d4", "LEFT", "RIGHT", "0"), lambda: pusher.rpush("l4", "v"), b"v"),
        (
            ("BLMPOP", "0", "2", "x5", "l5", "RIGHT", "COUNT", "2"),
            lambda: pusher.rpush("l5", "a", "b", "c"),
            [b"l5", [b"c", b"b"]],
        ),
        (("BZPOPMIN", "z6", "0"), lambda: pusher.zadd("z6", {"a": 1, "b": 2}), [b"z6", b"a", b"1"]),
        (("BZPOPMAX", "z7", "0"), lambda: pusher.zadd("z7", {"a": 1, "b": 2}), [b"z7", b"b", b"2"]),
        (
            ("BZMPOP", "0", "1", "z8", "MIN", "COUNT", "5"),
            lambda: pusher.zadd("z8", {"a": 1}),
            [b"z8", [[b"a", b"1"]]],
        ),
    ]
    for cmd, wake, want in cases:
        w = Background(bc(server), *cmd)
        wait_blocked(admin, 1)
        wake()
        assert w.result() == want, cmd
        wait_blocked(admin, 0)
    assert pusher.lrange("d3", 0, -1) == ["v"]
    assert pusher.lrange("d4", 0, -1) == ["v"]
    assert pusher.lrange("l5", 0, -1) == ["a"]


def test_blmove_into_a_key_of_another_type_gets_wrongtype(server, admin):
    c = server.client(decode_responses=True)
    c.set("target", "string")
    w = Background(bc(server), "BLMOVE", "src", "target", "LEFT", "LEFT", "0")
    wait_blocked(admin, 1)
    c.rpush("src", "foo")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        w.result()
    assert c.lrange("src", 0, -1) == ["foo"]


def test_a_key_of_another_type_does_not_wake(server, admin):
    w = Background(bc(server), "BLPOP", "k", "0")
    wait_blocked(admin, 1)
    c = server.client(decode_responses=True)
    c.set("k", "string")
    time.sleep(0.1)
    assert blocked_count(admin) == 1
    c.delete("k")
    c.rpush("k", "v")
    assert w.result() == [b"k", b"v"]


def test_blmove_chain_is_served_in_one_round(server, admin):
    """A served BLMOVE pushes into a key another client waits for: served at once too."""
    first = Background(bc(server), "BLMOVE", "a", "b", "LEFT", "LEFT", "0")
    wait_blocked(admin, 1)
    second = Background(bc(server), "BLPOP", "b", "0")
    wait_blocked(admin, 2)
    server.client().rpush("a", "v")
    assert first.result() == b"v"
    assert second.result() == [b"b", b"v"]


def test_no_blocking_inside_multi(r2):
    p = r2.pipeline(transaction=True)
    p.blpop(["q"], timeout=0)
    p.execute_command("BLMOVE", "q", "d", "LEFT", "LEFT", "0")
    p.rpush("q", "v")
    p.blpop(["q"], timeout=0)
    assert p.execute() == [None, None, 1, ("q", "v")]


def test_values_pushed_in_a_transaction_are_served_after_it(server, admin):
    w = Background(bc(server), "BLPOP", "q", "0")
    wait_blocked(admin, 1)
    c = server.client(decode_responses=True)
    p = c.pipeline(transaction=True)
    p.rpush("q", "a", "b")
    p.lrange("q", 0, -1)
    # The transaction sees both: the blocked client is served only after EXEC.
    assert p.execute() == [2, ["a", "b"]]
    assert w.result() == [b"q", b"a"]
    assert c.lrange("q", 0, -1) == ["b"]


def test_client_unblock(server, admin):
    c = server.client()
    cid = c.client_id()
    w = Background(c, "BLPOP", "q", "0")
    wait_blocked(admin, 1)
    assert admin.client_unblock(cid) == 1
    assert w.result() is None
    assert admin.client_unblock(cid) == 0, "not blocked any more"
    w = Background(c, "BLPOP", "q", "0")
    wait_blocked(admin, 1)
    assert admin.client_unblock(cid, error=True) == 1
    with pytest.raises(redis.ResponseError, match="UNBLOCKED client unblocked via CLIENT UNBLOCK"):
        w.result()
    with pytest.raises(redis.ResponseError, match="TIMEOUT or ERROR"):
        admin.execute_command("CLIENT", "UNBLOCK", cid, "MAYBE")
    assert admin.execute_command("CLIENT", "UNBLOCK", 999999) == 0
    # The connection keeps working after it.
    assert c.ping()


def test_a_closed_connection_never_takes_a_value(server, admin):
    s = server.sock()
    s.sendall(b"BLPOP q 0\r\n")
    wait_blocked(admin, 1)
    s.close()
    wait_blocked(admin, 0)
    c = server.client(decode_responses=True)
    c.rpush("q", "kept")
    assert c.lrange("q", 0, -1) == ["kept"]


def test_commands_sent_behind_a_blocking_one_run_after_it(server, admin):
    s = server.sock()
    s.sendall(b"BLPOP q 0\r\nPING\r\n")
    wait_blocked(admin, 1)
    server.client().rpush("q", "v")
    want = b"*2\r\n$1\r\nq\r\n$1\r\nv\r\n+PONG\r\n"
    got = b""
    deadline = time.monotonic() + TIMEOUT
    while len(got) < len(want) and time.monotonic() < deadline:
        got += s.recv(4096)
    assert got == want
    s.close()


def recv_exactly(s, n: int) -> bytes:
    got = b""
    deadline = time.monotonic() + TIMEOUT
    while len(got) < n and time.monotonic() < deadline:
        chunk = s.recv(n - len(got))
        if not chunk:
            break
        got += chunk
    return got


def test_pipelined_commands_around_a_blocking_one_keep_their_order(server, admin):
    # Replies before the BLPOP, the served BLPOP, then what was sent behind it: in order, on
    # both kinds of server (whoever writes the served reply).
    s = server.sock()
    s.sendall(b"PING\r\nECHO before\r\nBLPOP q 0\r\nECHO after\r\n")
    want = b"+PONG\r\n$6\r\nbefore\r\n"
    assert recv_exactly(s, len(want)) == want
    wait_blocked(admin, 1)
    assert server.client().rpush("q", "v") == 1
    want = b"*2\r\n$1\r\nq\r\n$1\r\nv\r\n$5\r\nafter\r\n"
    assert recv_exactly(s, len(want)) == want
    # A second wait on the same connection is served the same way.
    s.sendall(b"BRPOP q 0\r\n")
    wait_blocked(admin, 1)
    server.client().rpush("q", "w")
    want = b"*2\r\n$1\r\nq\r\n$1\r\nw\r\n"
    assert recv_exactly(s, len(want)) == want
    s.close()


def test_a_served_reply_larger_than_the_socket_takes_is_delivered_whole(server, admin):
    # The waiting client reads nothing until the push: a 16 MiB reply does not fit the
    # socket's buffers at once; what the serving write could not send, the client's connection
    # sends later, before anything else.
    s = server.sock()
    big = b"x" * (16 << 20)
    s.sendall(b"BLPOP big 0\r\nECHO after\r\n")
    wait_blocked(admin, 1)
    assert server.client().rpush("big", big) == 1
    want = b"*2\r\n$3\r\nbig\r\n$%d\r\n" % len(big) + big + b"\r\n$5\r\nafter\r\n"
    got = recv_exactly(s, len(want))
    assert len(got) == len(want)
    assert got == want
    s.close()


def test_a_client_with_its_reply_is_no_longer_blocked(server, admin):
    # However the reply was sent (by the serving write or by the connection), a client that has
    # it is neither counted blocked nor a target of CLIENT UNBLOCK (as in Redis, which unblocks
    # it as it serves it).
    popper = server.sock()
    popper.sendall(b"CLIENT ID\r\n")
    line = recv_exactly(popper, 3)
    while not line.endswith(b"\r\n"):
        line += recv_exactly(popper, 1)
    cid = int(line[1:-2])
    pusher = server.client()
    for i in range(20):
        popper.sendall(b"BLPOP nb 0\r\n")
        wait_blocked(admin, 1)
        pusher.rpush("nb", "v")
        want = b"*2\r\n$2\r\nnb\r\n$1\r\nv\r\n"
        assert recv_exactly(popper, len(want)) == want
        assert blocked_count(admin) == 0, f"round {i}"
        assert admin.client_unblock(cid) == 0, f"round {i}"
    popper.close()


@pytest.mark.ferrite_only
def test_a_served_reply_goes_out_before_the_pushers_without_a_log(server, admin, request):
    # Without a log, the push serves the waiter and sends its reply before its own, as Redis
    # does: once the pusher has its reply, the waiter's is already there to read. With a log,
    # the waiter's reply is sent once the write is logged, by its own connection.
    if "no-log" not in request.node.callspec.id:
        pytest.skip("the serving write sends the reply only when there is no log")
    popper, pusher = server.sock(), server.sock()
    for i in range(50):
        popper.sendall(b"BLPOP pp 0\r\n")
        wait_blocked(admin, 1)
        pusher.sendall(b"LPUSH pp %d\r\n" % i)
        assert recv_exactly(pusher, 4) == b":1\r\n"
        want = b"*2\r\n$2\r\npp\r\n$%d\r\n%d\r\n" % (len(str(i)), i)
        popper.setblocking(False)
        try:
            got = popper.recv(len(want))
        except BlockingIOError:
            got = b""
        popper.settimeout(TIMEOUT)
        assert got == want, f"round {i}: the waiter's reply was not there yet"
    popper.close()
    pusher.close()


def test_client_list_flags_blocked_clients(server, admin):
    c = server.client()
    cid = c.client_id()
    w = Background(c, "BLPOP", "q", "0")
    wait_blocked(admin, 1)
    line = [l for l in admin.execute_command("CLIENT", "LIST").splitlines() if f"id={cid} " in l]
    assert "flags=b" in line[0]
    admin.client_unblock(cid)
    w.result()


_names = (f"blk{n}" for n in itertools.count())


@pytest.fixture
def two_tenants(admin):
    a, b = next(_names), next(_names)
    for t in (a, b):
        admin.execute_command("TENANT.CREATE", t, "PASSWORD", "pw")
    yield a, b
    for t in (a, b):
        admin.execute_command("TENANT.DELETE", t, "FORCE")


@pytest.mark.ferrite_only
def test_tenants_never_see_each_others_blocked_clients(server, admin, two_tenants):
    a, b = two_tenants
    ca = redis.Redis(port=server.port, username=a, password="pw", socket_timeout=TIMEOUT)
    ca.response_callbacks.clear()
    cb = redis.Redis(port=server.port, username=b, password="pw", socket_timeout=TIMEOUT,
                     decode_responses=True)
    a_id = ca.client_id()
    w = Background(ca, "BLPOP", "q", "0")
    wait_blocked(admin, 1)
    # The other tenant's push to its own "q" wakes nobody of tenant a.
    cb.rpush("q", "b-value")
    time.sleep(0.1)
    assert blocked_count(admin) == 1
    assert cb.lrange("q", 0, -1) == ["b-value"]
    # It cannot unblock, list or count tenant a's blocked client.
    # (Each tenant numbers its own clients: b's own connection may carry the same id.)
    assert cb.execute_command("CLIENT", "UNBLOCK", a_id) == 0
    assert "flags=b" not in cb.execute_command("CLIENT", "LIST")
    assert int(cb.info("clients")["blocked_clients"]) == 0
    assert blocked_count(admin) == 1
    ra = redis.Redis(port=server.port, username=a, password="pw", decode_responses=True)
    assert int(ra.info("clients")["blocked_clients"]) == 1
    # The keys waited for (Redis 7.2's total_blocking_keys) are counted per tenant too; the
    # administrator sees every tenant's.
    keys = lambda c: int(c.info("clients")["total_blocking_keys"])  # noqa: E731
    assert (keys(ra), keys(cb), keys(admin)) == (1, 0, 1)
    ra.rpush("q", "a-value")
    assert w.result() == [b"q", b"a-value"]
    assert (keys(ra), keys(admin)) == (0, 0)


@pytest.mark.ferrite_only
def test_thousands_of_blocked_clients_are_bounded(server, admin):
    """1000 connections wait in BLPOP on 20 keys: the server keeps answering others at once,
    and one push per client serves each exactly once."""
    n, keys = 1000, 20
    socks = []
    try:
        for i in range(n):
            s = socket.create_connection(server.addr, timeout=3 * TIMEOUT)
            s.sendall(f"BLPOP k{i % keys} 0\r\n".encode())
            socks.append(s)
        wait_blocked(admin, n)
        start = time.monotonic()
        assert admin.ping()
        assert time.monotonic() - start < 0.5
        c = server.client()
        p = c.pipeline(transaction=False)
        for k in range(keys):
            p.rpush(f"k{k}", *[f"v{k}-{j}" for j in range(n // keys)])
        p.execute()
        got = set()
        for s in socks:
            buf = b""
            while buf.count(b"\r\n") < 5:
                chunk = s.recv(4096)
                assert chunk, "connection closed"
                buf += chunk
            got.add(buf.split(b"\r\n")[4])
        assert len(got) == n, "every value went to exactly one client"
        assert blocked_count(admin) == 0
        assert c.dbsize() == 0
    finally:
        for s in socks:
            s.close()


@pytest.mark.ferrite_only
def test_a_blocked_client_of_a_tenant_that_is_cut_over_gets_the_redirect():
    from test_redirects import Ferrite, Migration

    src, dst = Ferrite(), Ferrite()
    try:
        m = Migration(src, dst)
        # A raw connection: redis-py cannot parse a tenant MOVED (docs/clients.md).
        s = socket.create_connection(("127.0.0.1", src.port), timeout=TIMEOUT)
        s.sendall(b"AUTH acme pw\r\nBLPOP q 0\r\n")
        wait_blocked(src.admin(), 1)
        m.cutover()
        got = b""
        while got.count(b"\r\n") < 2:
            chunk = s.recv(4096)
            assert chunk, got
            got += chunk
        assert got == f"+OK\r\n-MOVED tenant:acme {dst.addr}\r\n".encode(), got
        s.close()
        wait_blocked(src.admin(), 0)
        # On the new home the tenant blocks and is served as usual.
        d = redis.Redis(port=dst.port, username="acme", password="pw", socket_timeout=TIMEOUT)
        d.response_callbacks.clear()
        w = Background(d, "BLPOP", "q", "0")
        wait_blocked(dst.admin(), 1)
        redis.Redis(port=dst.port, username="acme", password="pw").rpush("q", "v")
        assert w.result() == [b"q", b"v"]
    finally:
        src.stop()
        dst.stop()
