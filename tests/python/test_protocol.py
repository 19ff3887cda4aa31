"""The wire protocol and the connection/server commands, against a real ferrite process.

Raw-socket tests: inline commands, pipelined inline and multibulk requests, frames split over many
writes, malformed input (each answered with `-ERR Protocol error: ...` and the connection closed,
while the server and other connections carry on), RESP2/RESP3 reply types on the wire.
Through redis-py: HELLO, CLIENT, COMMAND, CONFIG, INFO, TIME, SELECT, DBSIZE, FLUSHDB/FLUSHALL,
and AUTH against a second server started with --requirepass."""

from __future__ import annotations

import random
import re
import socket
import threading
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from conftest import SOCKET_TIMEOUT, serving
from helpers import NOT_INTEGER, SYNTAX, Conn, arity, cmd_error, wait_until

# =============================================================================================
# A minimal RESP reader over a raw socket


class Wire:
    """A raw connection: send bytes, read exact RESP replies (bounded by the socket timeout)."""

    def __init__(self, server, timeout: float = SOCKET_TIMEOUT):
        self.sock = server.sock(timeout)
        self.buf = b""

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError(f"connection closed; unread: {self.buf!r}")
        self.buf += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def read_raw(self) -> bytes:
        """One complete reply, as the bytes that encode it."""
        consumed = []

        def line():
            ln = self._line()
            consumed.append(ln + b"\r\n")
            return ln

        def exact(n):
            d = self._exact(n)
            consumed.append(d + b"\r\n")
            return d

        def one():
            ln = line()
            t, rest = ln[:1], ln[1:]
            if t in (b"+", b"-", b":", b",", b"#", b"_", b"("):
                return
            if t in (b"$", b"=", b"!"):
                n = int(rest)
                if n >= 0:
                    exact(n)
                return
            if t in (b"*", b"~", b">"):
                for _ in range(max(int(rest), 0)):
                    one()
                return
            if t == b"%":
                for _ in range(2 * int(rest)):
                    one()
                return
            raise AssertionError(f"not a RESP reply: {ln!r}")

        one()
        return b"".join(consumed)

    def cmd(self, *args) -> bytes:
        """Sends one multibulk request and returns the raw reply bytes."""
        self.send(encode(*args))
        return self.read_raw()

    def read_until_closed(self, timeout: float = 5.0) -> bytes:
        """Everything left until the server closes the connection; fails if it does not."""
        deadline = time.monotonic() + timeout
        out = self.buf
        self.buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"server did not close the connection; got {out!r}")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                return out
            if not chunk:
                return out
            out += chunk

    def nothing_pending(self, wait: float = 0.2) -> bool:
        """True when no reply bytes arrive within `wait` seconds (a bounded negative check)."""
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return not self.buf
        finally:
            self.sock.settimeout(SOCKET_TIMEOUT)
        self.buf += chunk
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def encode(*args) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


@pytest.fixture
def wire(server):
    """A raw administrator connection (AUTH with the server's administrator secret)."""
    w = Wire(server)
    if server.admin_secret:
        assert w.cmd("AUTH", server.admin_secret) == b"+OK\r\n"
    yield w
    w.close()


def assert_serving(server):
    """A new connection works, i.e. the server survived whatever came before."""
    w = Wire(server)
    try:
        assert w.cmd("PING") == b"+PONG\r\n"
        assert w.cmd("ECHO", "still here") == b"$10\r\nstill here\r\n"
    finally:
        w.close()


# =============================================================================================
# Inline commands and pipelining


def test_inline_commands(wire):
    wire.send(b"PING\r\n")
    assert wire.read_raw() == b"+PONG\r\n"
    wire.send(b"PING\n")
    assert wire.read_raw() == b"+PONG\r\n", "a bare LF ends an inline command too"
    wire.send(b"ping hello\r\n")
    assert wire.read_raw() == b"$5\r\nhello\r\n"
    wire.send(b"SET \"a key\" 'a value'\r\n")
    assert wire.read_raw() == b"+OK\r\n"
    wire.send(b'GET "a key"\r\n')
    assert wire.read_raw() == b"$7\r\na value\r\n"
    wire.send(b'ECHO "\\x41\\tB\\n"\r\n')
    assert wire.read_raw() == b"$4\r\nA\tB\n\r\n"
    wire.send(b"ECHO 'it\\'s'\r\n")
    assert wire.read_raw() == b"$4\r\nit's\r\n"
    wire.send(b"   \r\n\r\n  PING   \r\n")
    assert wire.read_raw() == b"+PONG\r\n", "empty lines are skipped"
    wire.send(b"ECHO\r\n")
    assert wire.read_raw() == b"-ERR wrong number of arguments for 'echo' command\r\n"


def test_inline_unbalanced_quotes_is_a_protocol_error(server, wire):
    wire.send(b'SET "abc\r\n')
    assert wire.read_until_closed() == b"-ERR Protocol error: unbalanced quotes in request\r\n"
    assert_serving(server)


def test_pipelined_inline_and_multibulk_mix(wire):
    data = (
        b"PING\r\n"
        + encode("SET", "k", "v1")
        + b"GET k\r\n"
        + encode("ECHO", "multi\r\nline")
        + b"INCR counter\r\n"
        + encode("INCR", "counter")
        + b"*0\r\n"
        + b"ECHO last\n"
    )
    wire.send(data)
    expected = [
        b"+PONG\r\n",
        b"+OK\r\n",
        b"$2\r\nv1\r\n",
        b"$11\r\nmulti\r\nline\r\n",
        b":1\r\n",
        b":2\r\n",
        b"$4\r\nlast\r\n",
    ]
    assert [wire.read_raw() for _ in expected] == expected
    assert wire.nothing_pending()


def test_many_pipelined_requests_in_one_write(wire):
    n = 5000
    wire.send(b"".join(encode("RPUSH", "l", str(i)) for i in range(n)) + encode("LLEN", "l"))
    for i in range(n):
        assert wire.read_raw() == b":%d\r\n" % (i + 1)
    assert wire.read_raw() == b":%d\r\n" % n
    wire.send(encode("LRANGE", "l", "0", "2") + encode("LINDEX", "l", "-1"))
    assert wire.read_raw() == b"*3\r\n$1\r\n0\r\n$1\r\n1\r\n$1\r\n2\r\n"
    assert wire.read_raw() == b"$4\r\n4999\r\n"


def test_frames_split_over_many_writes(wire):
    wire.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    value = "x" * 3000 + "end"
    frame = encode("SET", "split", value) + encode("GET", "split") + b"PING\r\n"
    # Byte by byte over the headers, then uneven chunks: every split point of a header is hit.
    cut = frame.index(b"xxxx")
    for i in range(cut):
        wire.send(frame[i : i + 1])
        if i % 7 == 0:
            time.sleep(0.001)  # pacing, so the server sees separate reads
    assert wire.nothing_pending(0.1), "no reply before the request is complete"
    pos = cut
    sizes = [1, 2, 3, 5, 8, 13, 100, 1000]
    k = 0
    while pos < len(frame) - 1:
        step = sizes[k % len(sizes)]
        wire.send(frame[pos : min(pos + step, len(frame) - 1)])
        pos = min(pos + step, len(frame) - 1)
        k += 1
        time.sleep(0.0005)
    # SET and GET are complete, PING lacks its last byte: two replies, not three.
    assert wire.read_raw() == b"+OK\r\n"
    assert wire.read_raw() == b"$%d\r\n%s\r\n" % (len(value), value.encode())
    assert wire.nothing_pending(0.1)
    wire.send(frame[-1:])
    assert wire.read_raw() == b"+PONG\r\n"


def test_large_bulk_arrives_in_pieces(wire):
    value = random.Random(7).randbytes(300_000)
    frame = encode("SET", "big", value)
    for i in range(0, len(frame), 4096):
        wire.send(frame[i : i + 4096])
    assert wire.read_raw() == b"+OK\r\n"
    wire.send(encode("STRLEN", "big"))
    assert wire.read_raw() == b":300000\r\n"
    wire.send(encode("GET", "big"))
    assert wire.read_raw() == b"$300000\r\n" + value + b"\r\n"


def test_big_pipeline_sent_before_reading_any_reply(server):
    s = socket.socket()
    # Small client buffers make the deadlock (if any) reproducible with a few MB of requests.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.settimeout(10)
    try:
        s.connect(server.addr)
        value = b"v" * 100
        s.sendall(encode("SET", "k", value))
        assert s.recv(16) == b"+OK\r\n"
        n = 400_000  # 8.8 MB of requests, 43 MB of replies
        s.sendall(encode("GET", "k") * n)  # times out when the server stops reading
        want = n * len(b"$100\r\n" + value + b"\r\n")
        got = 0
        while got < want:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
        assert got == want
    finally:
        s.close()
    assert_serving(server)


def test_empty_and_null_multibulk_are_skipped(wire):
    wire.send(b"*0\r\n*-1\r\n" + encode("PING"))
    assert wire.read_raw() == b"+PONG\r\n"
    assert wire.nothing_pending()


def test_quit_closes_after_reply(server, wire):
    wire.send(encode("QUIT") + encode("PING"))
    assert wire.read_until_closed() == b"+OK\r\n"
    assert_serving(server)


# =============================================================================================
# Malformed input: answered, connection closed, server and other clients unaffected

BAD_INPUTS = {
    "huge_bulk_length": (b"*1\r\n$999999999999\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    "negative_bulk_length": (b"*1\r\n$-1\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    "non_numeric_bulk_length": (b"*1\r\n$abc\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    "invalid_multibulk_length": (b"*abc\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    "too_many_arguments": (b"*99999999999\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    "nested_arrays": (b"*1\r\n*1\r\n", b"-ERR Protocol error: expected '$', got '*'\r\n"),
    "integer_instead_of_bulk": (b"*2\r\n$4\r\nECHO\r\n:1\r\n", b"-ERR Protocol error: expected '$', got ':'\r\n"),
    "garbage_after_header": (b"*1\r\nxyz\r\n", b"-ERR Protocol error: expected '$', got 'x'\r\n"),
    "inline_line_over_64k": (b"A" * (64 * 1024 + 100), b"-ERR Protocol error: too big inline request\r\n"),
    "multibulk_count_line_over_64k": (b"*" + b"1" * (64 * 1024 + 100), b"-ERR Protocol error: too big mbulk count string\r\n"),
    "bulk_count_line_over_64k": (b"*1\r\n$" + b"1" * (64 * 1024 + 100), b"-ERR Protocol error: too big bulk count string\r\n"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_protocol_errors_close_only_that_connection(server, name):
    data, expected = BAD_INPUTS[name]
    bystander = Wire(server)
    bad = Wire(server)
    try:
        # A bystander connection in the middle of a transaction, with data of its own.
        assert bystander.cmd("SET", "mine", "safe") == b"+OK\r\n"
        assert bystander.cmd("MULTI") == b"+OK\r\n"
        assert bystander.cmd("INCR", "n") == b"+QUEUED\r\n"
        # Commands before the bad input on the same connection are answered first.
        bad.send(encode("PING") + data)
        assert bad.read_raw() == b"+PONG\r\n"
        assert bad.read_until_closed() == expected
        assert bystander.cmd("EXEC") == b"*1\r\n:1\r\n"
        assert bystander.cmd("GET", "mine") == b"$4\r\nsafe\r\n"
        assert_serving(server)
    finally:
        bystander.close()
        bad.close()


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"*01\r\n$4\r\nPING\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n$04\r\nPING\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    ],
    ids=["multibulk", "bulk"],
)
def test_lengths_with_leading_zeros_are_refused(wire, data, expected):
    wire.send(data)
    assert wire.read_until_closed(timeout=1) == expected


def test_valid_requests_before_a_protocol_error_in_one_write(wire):
    wire.send(encode("SET", "a", "1") + encode("INCR", "a") + b"*1\r\n$-5\r\n" + encode("INCR", "a"))
    assert wire.read_until_closed() == b"+OK\r\n:2\r\n-ERR Protocol error: invalid bulk length\r\n"


def test_binary_garbage(server):
    rng = random.Random(20240601)
    bystander = Wire(server)
    try:
        assert bystander.cmd("SET", "k", "v") == b"+OK\r\n"
        for round_ in range(20):
            w = Wire(server, timeout=5)
            try:
                garbage = rng.randbytes(rng.randint(1, 4096))
                # No '*': a multibulk header could leave the server waiting for a payload that
                # never comes (multibulk errors have their own tests above).
                garbage = garbage.replace(b"*", b"?")
                try:
                    w.send(garbage + b"\r\n" + encode("PING"))
                except (BrokenPipeError, ConnectionResetError):
                    pass
                # Whatever arrives is made of error replies, possibly followed by PONG if the
                # garbage was read as (unknown) inline commands; nothing else.
                got = b""
                deadline = time.monotonic() + 2
                while not got.endswith(b"+PONG\r\n") and time.monotonic() < deadline:
                    try:
                        chunk = w.sock.recv(65536)
                    except (socket.timeout, ConnectionResetError):
                        break
                    if not chunk:
                        break
                    got += chunk
                body = got[: -len(b"+PONG\r\n")] if got.endswith(b"+PONG\r\n") else got
                for line in body.split(b"\r\n"):
                    assert line == b"" or line.startswith(b"-"), (round_, line[:80])
            finally:
                w.close()
        assert bystander.cmd("GET", "k") == b"$1\r\nv\r\n"
        assert_serving(server)
    finally:
        bystander.close()


def test_unknown_inline_command_keeps_connection(wire):
    wire.send(b"\x01\x02\xffFOO bar\r\n")
    reply = wire.read_raw()
    assert reply.startswith(b"-ERR unknown command '")
    assert reply.endswith(b"', with args beginning with: 'bar' \r\n")
    assert wire.cmd("PING") == b"+PONG\r\n"


def test_half_sent_request_then_disconnect(server):
    w = Wire(server)
    w.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nabc")
    w.close()
    assert_serving(server)
    c = server.client()
    try:
        assert c.exists("k") == 0
    finally:
        c.close()


# =============================================================================================
# RESP2 / RESP3 reply types on the wire


def test_reply_types_on_the_wire(wire):
    wire.cmd("SADD", "s", "m")
    wire.cmd("HSET", "h", "f", "v")
    wire.cmd("ZADD", "z", "1.5", "m")
    resp2 = {
        ("GET", "missing"): b"$-1\r\n",
        ("SMEMBERS", "s"): b"*1\r\n$1\r\nm\r\n",
        ("HGETALL", "h"): b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n",
        ("ZSCORE", "z", "m"): b"$3\r\n1.5\r\n",
        ("ZRANGE", "z", "0", "-1", "WITHSCORES"): b"*2\r\n$1\r\nm\r\n$3\r\n1.5\r\n",
        ("LPOP", "missing", "2"): b"*-1\r\n",
        ("SISMEMBER", "s", "m"): b":1\r\n",
        ("CONFIG", "GET", "maxclients"): b"*2\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n",
    }
    for args, expected in resp2.items():
        assert wire.cmd(*args) == expected, args
    assert wire.cmd("INFO", "keyspace").startswith(b"$")
    hello = wire.cmd("HELLO", "3")
    assert hello.startswith(b"%7\r\n") or hello.startswith(b"%8\r\n"), hello
    resp3 = {
        ("GET", "missing"): b"_\r\n",
        ("SMEMBERS", "s"): b"~1\r\n$1\r\nm\r\n",
        ("HGETALL", "h"): b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n",
        ("ZSCORE", "z", "m"): b",1.5\r\n",
        ("ZRANGE", "z", "0", "-1", "WITHSCORES"): b"*1\r\n*2\r\n$1\r\nm\r\n,1.5\r\n",
        ("LPOP", "missing", "2"): b"_\r\n",
        ("SISMEMBER", "s", "m"): b":1\r\n",
        ("CONFIG", "GET", "maxclients"): b"%1\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n",
        ("HGETALL", "missing"): b"%0\r\n",
        ("SMEMBERS", "missing"): b"~0\r\n",
    }
    for args, expected in resp3.items():
        assert wire.cmd(*args) == expected, args
    info = wire.cmd("INFO", "keyspace")
    assert re.match(rb"^=\d+\r\ntxt:# Keyspace\r\n", info), info
    # Back to RESP2 on the same connection.
    assert wire.cmd("HELLO", "2").startswith(b"*1")
    assert wire.cmd("GET", "missing") == b"$-1\r\n"
    assert wire.cmd("SMEMBERS", "s") == b"*1\r\n$1\r\nm\r\n"


# =============================================================================================
# HELLO


def test_hello(raw2, raw3):
    h3 = raw3.execute_command("HELLO", "3")
    assert h3["proto"] == 3
    assert h3["mode"] == "standalone"
    assert h3["role"] == "master"
    assert h3["modules"] == []
    assert isinstance(h3["id"], int)
    assert h3["id"] == raw3.execute_command("CLIENT", "ID")
    h2 = raw2.execute_command("HELLO", "2")
    assert isinstance(h2, list)
    d2 = dict(zip(h2[::2], h2[1::2]))
    assert d2["proto"] == 2
    assert d2["id"] == raw2.execute_command("CLIENT", "ID")
    # Without a version: the current protocol is kept.
    assert raw3.execute_command("HELLO")["proto"] == 3


@pytest.mark.ferrite_only
def test_hello_reports_ferrite_and_redis_7_2(raw3):
    h3 = raw3.execute_command("HELLO", "3")
    assert h3["server"] == "ferrite"
    assert h3["version"] == "7.2.0"


def test_hello_errors(wire):
    assert wire.cmd("HELLO", "4") == b"-NOPROTO unsupported protocol version\r\n"
    assert wire.cmd("HELLO", "1") == b"-NOPROTO unsupported protocol version\r\n"
    assert wire.cmd("HELLO", "abc") == b"-ERR Protocol version is not an integer or out of range\r\n"
    assert wire.cmd("HELLO", "3", "FOO") == b"-ERR Syntax error in HELLO option 'FOO'\r\n"
    # A failed HELLO leaves the protocol as it was.
    assert wire.cmd("GET", "missing") == b"$-1\r\n"
    assert b" resp=2" in wire.cmd("CLIENT", "INFO")
    reply = wire.cmd("HELLO", "3", "SETNAME", "conn-name")
    assert reply.startswith(b"%") and b"$5\r\nproto\r\n:3\r\n" in reply
    assert wire.cmd("CLIENT", "GETNAME") == b"$9\r\nconn-name\r\n"
    assert b" resp=3" in wire.cmd("CLIENT", "INFO")
    assert wire.cmd("HELLO", "2", "SETNAME", "bad name") == (
        b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
    )
    assert wire.cmd("GET", "missing") == b"_\r\n", "still RESP3 after the failed HELLO 2"
    assert wire.cmd("CLIENT", "GETNAME") == b"$9\r\nconn-name\r\n"


# =============================================================================================
# CLIENT


def test_client_name_id_list_info(r, server):
    my_id = r.client_id()
    assert isinstance(my_id, int) and my_id > 0
    other = server.client()
    try:
        other_id = other.client_id()
        assert other_id != my_id
        assert r.client_getname() is None
        assert r.client_setname("tester") is True
        assert r.client_getname() == "tester"
        assert (
            cmd_error(r, "CLIENT", "SETNAME", "has space")
            == "ERR Client names cannot contain spaces, newlines or special characters."
        )
        assert r.client_getname() == "tester"
        info = r.client_info()
        assert info["id"] == my_id
        assert info["name"] == "tester"
        assert info["db"] == 0
        listing = r.client_list()
        by_id = {int(c["id"]): c for c in listing}
        assert set(by_id) >= {my_id, other_id}
        assert by_id[my_id]["name"] == "tester"
        assert by_id[my_id]["cmd"] in ("client|list", "client")
        assert by_id[other_id]["name"] == ""
        assert by_id[other_id]["addr"] != by_id[my_id]["addr"]
        only = r.client_list(client_id=[other_id])
        assert [int(c["id"]) for c in only] == [other_id]
        assert r.client_setname("") is True
        assert r.client_getname() is None
    finally:
        other.close()


def test_client_kill_id(server):
    killer = server.client()
    victim = Wire(server)
    try:
        victim_id = int(victim.cmd("CLIENT", "ID")[1:-2])
        assert killer.client_kill_filter(_id=victim_id) == 1
        # The victim's connection is closed by the server (bounded wait).
        assert victim.read_until_closed() == b""
        assert killer.client_kill_filter(_id=victim_id) == 0
        wait_until(
            lambda: victim_id not in {int(c["id"]) for c in killer.client_list()},
            what="killed client to leave CLIENT LIST",
        )
        assert killer.ping() is True
        assert cmd_error(killer, "CLIENT", "KILL", "ID", "abc") == "ERR client-id should be greater than 0"
        assert cmd_error(killer, "CLIENT", "KILL", "1.2.3.4:5") == "ERR No such client"
        assert cmd_error(killer, "CLIENT", "NOSUCH") == "ERR unknown subcommand 'NOSUCH'. Try CLIENT HELP."
        assert cmd_error(killer, "CLIENT", "LIST", "TYPE", "bogus") == "ERR Unknown client type 'bogus'"
    finally:
        victim.close()
        killer.close()


def test_client_kill_addr_and_skipme(server):
    c = server.client()
    w = Wire(server)
    try:
        addr = "%s:%d" % w.sock.getsockname()
        assert c.client_kill(addr) is True
        assert w.read_until_closed() == b""
        me = Conn(c)
        my_id = me("CLIENT", "ID")
        my_addr = [x for x in c.client_list() if int(x["id"]) == my_id][0]["addr"]
        assert me("CLIENT", "KILL", "ADDR", my_addr, "SKIPME", "yes") == 0
        assert me("PING") == "PONG"
        me.close()
    finally:
        w.close()
        c.close()


def _kill_filter_outcome(server, *filters):
    """Runs CLIENT KILL <filters> from one connection while two others are open; returns the
    reply and how many of the two others still answer PING."""
    others = [Wire(server) for _ in range(2)]
    killer = server.client()
    try:
        for w in others:
            assert w.cmd("PING") == b"+PONG\r\n"
        reply = killer.execute_command("CLIENT", "KILL", *filters)
        alive = 0
        for w in others:
            try:
                w.sock.settimeout(2)
                alive += w.cmd("PING") == b"+PONG\r\n"
            except (EOFError, OSError):
                pass
        return reply, alive
    finally:
        killer.close()
        for w in others:
            w.close()


def test_client_kill_type_normal(server):
    # Every other normal connection goes (other fixtures' connections too, hence >= 2).
    killed, alive = _kill_filter_outcome(server, "TYPE", "normal", "SKIPME", "yes")
    assert killed >= 2 and alive == 0
    assert_serving(server)


@pytest.mark.parametrize(
    "filters",
    [("TYPE", "master"), ("TYPE", "pubsub"), ("TYPE", "replica"), ("LADDR", "1.2.3.4:5")],
    ids=lambda f: " ".join(f),
)
def test_client_kill_filters_that_match_nobody(server, filters):
    assert _kill_filter_outcome(server, *filters) == (0, 2)


# =============================================================================================
# COMMAND


def test_command_count_info_docs(raw2):
    count = raw2.execute_command("COMMAND", "COUNT")
    assert isinstance(count, int) and count > 50
    assert len(raw2.execute_command("COMMAND")) == count
    names = raw2.execute_command("COMMAND", "LIST")
    for must in ("get", "set", "hset", "zadd", "sadd", "lpush", "multi", "exec", "hello", "scan"):
        assert must in names, must
    get, setc, ping, nosuch = raw2.execute_command("COMMAND", "INFO", "get", "SET", "ping", "nosuch")
    assert get[:2] == ["get", 2]
    assert {"readonly", "fast"} <= set(get[2])
    assert get[3:6] == [1, 1, 1]
    assert setc[:2] == ["set", -3]
    assert {"write", "denyoom"} <= set(setc[2])
    assert setc[3:6] == [1, 1, 1]
    assert ping[:2] == ["ping", -1]
    assert ping[3:6] == [0, 0, 0]
    assert nosuch is None
    assert len(get) == 10
    mset = raw2.execute_command("COMMAND", "INFO", "mset")[0]
    assert mset[1] == -3 and mset[3:6] == [1, -1, 2]
    docs = raw2.execute_command("COMMAND", "DOCS", "get", "nosuch")
    assert isinstance(docs, list) and docs[0] == "get" and len(docs) == 2
    get_docs = dict(zip(docs[1][::2], docs[1][1::2]))
    assert get_docs["group"] == "string"
    assert get_docs["since"] == "1.0.0"
    assert isinstance(get_docs["summary"], str) and get_docs["summary"]
    assert raw2.execute_command("COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2") == ["a", "b"]
    assert cmd_error(raw2, "COMMAND", "FOO") == "ERR unknown subcommand 'FOO'. Try COMMAND HELP."


def test_command_list_filters_and_subcommand_arity(raw2):
    assert raw2.execute_command("COMMAND", "LIST", "FILTERBY", "PATTERN", "zad*") == ["zadd"]
    zset = raw2.execute_command("COMMAND", "LIST", "FILTERBY", "ACLCAT", "sortedset")
    assert "zadd" in zset and "get" not in zset
    assert raw2.execute_command("COMMAND", "LIST", "FILTERBY", "MODULE", "nosuch") == []
    assert cmd_error(raw2, "COMMAND", "LIST", "foo") == "ERR syntax error"
    get = raw2.execute_command("COMMAND", "INFO", "get")[0]
    assert {"@string", "@read", "@fast"} <= set(get[6])
    for args, name in (
        (("CLIENT", "SETNAME"), "client|setname"),
        (("CLIENT", "GETNAME", "x"), "client|getname"),
        (("CLIENT", "ID", "x"), "client|id"),
        (("COMMAND", "COUNT", "x"), "command|count"),
    ):
        assert cmd_error(raw2, *args) == arity(name), args


def test_client_list_and_kill_filters(raw2):
    assert raw2.execute_command("CLIENT", "LIST", "TYPE", "normal")
    for t in ("master", "replica", "slave", "pubsub"):
        assert raw2.execute_command("CLIENT", "LIST", "TYPE", t) == "", t
    assert cmd_error(raw2, "CLIENT", "LIST", "TYPE", "foo") == "ERR Unknown client type 'foo'"
    assert cmd_error(raw2, "CLIENT", "KILL", "ID", "0") == "ERR client-id should be greater than 0"
    assert cmd_error(raw2, "CLIENT", "KILL", "ID", "1", "SKIPME", "maybe") == "ERR syntax error"


def test_shutdown_option_conflicts_are_refused(raw2):
    assert cmd_error(raw2, "SHUTDOWN", "SAVE", "NOSAVE") == "ERR syntax error"
    assert cmd_error(raw2, "SHUTDOWN", "NOW", "ABORT") == "ERR syntax error"
    assert raw2.execute_command("PING") == "PONG", "the server keeps running"


def test_command_docs_resp3_is_a_map(raw3):
    docs = raw3.execute_command("COMMAND", "DOCS", "set")
    assert list(docs) == ["set"]
    assert docs["set"]["group"] == "string"


# =============================================================================================
# CONFIG


def test_config_get_set_maxclients(r):
    assert r.config_get("maxclients") == {"maxclients": "10000"}
    got = r.config_get("max*")
    assert {"maxclients", "maxmemory"} <= set(got)
    assert r.config_get("nosuchparam") == {}
    try:
        assert r.config_set("maxclients", 123) is True
        assert r.config_get("maxclients") == {"maxclients": "123"}
        assert r.info("clients")["maxclients"] == 123
    finally:
        assert r.config_set("maxclients", 10000) is True
    assert r.config_get("maxclients") == {"maxclients": "10000"}
    err = cmd_error(r, "CONFIG", "SET", "maxclients", "abc")
    assert err.startswith("ERR CONFIG SET failed (possibly related to argument 'maxclients') - "), err
    assert cmd_error(r, "CONFIG", "SET", "databases", "5") == (
        "ERR CONFIG SET failed (possibly related to argument 'databases') - can't set immutable config"
    )
    assert cmd_error(r, "CONFIG", "GET") == arity("config|get")
    assert cmd_error(r, "CONFIG", "NOPE") == "ERR unknown subcommand 'NOPE'. Try CONFIG HELP."
    assert any("RESETSTAT" in line for line in r.execute_command("CONFIG", "HELP"))


@pytest.mark.ferrite_only
def test_config_set_validates_levels_units_and_duplicates(r):
    level = r.config_get("loglevel")
    err = cmd_error(r, "CONFIG", "SET", "loglevel", "bogus")
    assert err.startswith("ERR CONFIG SET failed (possibly related to argument 'loglevel')"), err
    assert r.config_get("loglevel") == level, "unchanged"
    try:
        assert r.config_set("loglevel", "notice") is True
        assert r.config_get("loglevel") == {"loglevel": "notice"}
    finally:
        r.config_set("loglevel", level["loglevel"])
    err = cmd_error(r, "CONFIG", "SET", "maxclients", "100", "maxclients", "200")
    assert err.endswith("duplicate parameter"), err
    assert r.config_get("maxclients") == {"maxclients": "10000"}, "all or nothing"
    old = r.config_get("proto-max-bulk-len")["proto-max-bulk-len"]
    try:
        assert r.config_set("proto-max-bulk-len", "1mb") is True
        assert r.config_get("proto-max-bulk-len") == {"proto-max-bulk-len": str(1 << 20)}
    finally:
        r.config_set("proto-max-bulk-len", old)
    assert r.config_get("maxclients") == {"maxclients": "10000"}


def test_config_set_unknown_parameter_text(r2):
    assert cmd_error(r2, "CONFIG", "SET", "nosuch", "1") == (
        "ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'"
    )


def test_config_set_non_numeric_text(r2):
    assert cmd_error(r2, "CONFIG", "SET", "maxclients", "abc") == (
        "ERR CONFIG SET failed (possibly related to argument 'maxclients') - "
        "argument couldn't be parsed into an integer"
    )


def test_maxclients_is_enforced(server, r):
    held = []
    try:
        connected = r.info("clients")["connected_clients"]
        assert r.config_set("maxclients", connected + 1) is True
        ok = Wire(server)
        held.append(ok)
        assert ok.cmd("PING") == b"+PONG\r\n"
        refused = Wire(server)
        held.append(refused)
        assert refused.read_until_closed() == b"-ERR max number of clients reached\r\n"
        assert ok.cmd("PING") == b"+PONG\r\n"
        assert r.ping() is True
    finally:
        r.config_set("maxclients", 10000)
        for w in held:
            w.close()
    assert_serving(server)


def test_config_set_requirepass_round_trip(server, r):
    try:
        assert r.config_set("requirepass", "s3cret") is True
        assert r.config_get("requirepass") == {"requirepass": "s3cret"}
        # The connection that set it stays authenticated.
        assert r.ping() is True
        assert r.set("k", "v") is True
        # (A raw connection: redis-py's own handshake would fail on NOAUTH, as with Redis 7.2.)
        fresh = Anon(server)
        try:
            assert fresh.error("GET", "k") == "NOAUTH Authentication required."
            assert fresh.error("AUTH", "wrong") == (
                "WRONGPASS invalid username-password pair or user is disabled."
            )
            assert fresh("AUTH", "s3cret") == "OK"
            assert fresh("GET", "k") == "v"
        finally:
            fresh.close()
        pw = server.client(password="s3cret")
        try:
            assert pw.get("k") == "v"
        finally:
            pw.close()
    finally:
        assert r.config_set("requirepass", "") is True
    assert r.config_get("requirepass") == {"requirepass": ""}
    open_again = server.client()
    try:
        assert open_again.get("k") == "v"
    finally:
        open_again.close()


# =============================================================================================
# INFO


def info_dict(text: str) -> dict:
    out = {}
    for line in text.split("\r\n"):
        if line and not line.startswith("#"):
            k, _, v = line.partition(":")
            out[k] = v
    return out


def info_sections(text: str) -> list[str]:
    return [line[2:] for line in text.split("\r\n") if line.startswith("# ")]


def test_info_sections_and_fields(server, raw2):
    full = raw2.execute_command("INFO")
    sections = info_sections(full)
    for s in ("Server", "Clients", "Memory", "Stats", "Keyspace"):
        assert s in sections, (s, sections)
    server_info = info_dict(raw2.execute_command("INFO", "server"))
    assert info_sections(raw2.execute_command("INFO", "server")) == ["Server"]
    assert server_info["redis_mode"] == "standalone"
    assert int(server_info["tcp_port"]) == server.port
    assert int(server_info["process_id"]) == server.proc.pid
    assert int(server_info["uptime_in_seconds"]) >= 0
    assert re.fullmatch(r"[0-9a-f]{40}", server_info["run_id"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", server_info["redis_version"])
    both = raw2.execute_command("INFO", "clients", "memory")
    assert info_sections(both) == ["Clients", "Memory"]
    assert raw2.execute_command("INFO", "nosuchsection") == ""
    everything = raw2.execute_command("INFO", "everything")
    assert "Commandstats" in info_sections(everything)


@pytest.mark.ferrite_only
def test_info_server_version(raw2):
    server_info = info_dict(raw2.execute_command("INFO", "server"))
    assert server_info["redis_version"] == "7.2.0"
    assert server_info["ferrite_version"]


def test_info_clients_counts_connections(server, r):
    base = r.info("clients")["connected_clients"]
    extra = [Wire(server) for _ in range(5)]
    try:
        for w in extra:
            assert w.cmd("PING") == b"+PONG\r\n"
        assert r.info("clients")["connected_clients"] == base + 5
    finally:
        for w in extra:
            w.close()
    wait_until(lambda: r.info("clients")["connected_clients"] == base, what="connected_clients to drop")


def test_info_memory_grows(r):
    before = r.info("memory")["used_memory"]
    assert isinstance(before, int)
    assert r.info("memory")["used_memory_human"]
    r.set("big", "x" * 2_000_000)
    after = r.info("memory")["used_memory"]
    assert after - before >= 2_000_000
    r.delete("big")
    assert r.info("memory")["used_memory"] < after - 1_000_000


def test_info_stats_counts(server, r):
    c = Conn(r)
    try:
        before = info_dict(c("INFO", "stats"))
        for _ in range(10):
            c("PING")
        after = info_dict(c("INFO", "stats"))
        assert int(after["total_commands_processed"]) - int(before["total_commands_processed"]) == 11
        conns = int(after["total_connections_received"])
        w = Wire(server)
        try:
            assert w.cmd("PING") == b"+PONG\r\n"
        finally:
            w.close()
        now = info_dict(c("INFO", "stats"))
        assert int(now["total_connections_received"]) == conns + 1
        expired = int(now["expired_keys"])
        c("SET", "e1", "v", "PX", "30")
        c("SET", "e2", "v", "PX", "30")
        wait_until(
            lambda: int(info_dict(c("INFO", "stats"))["expired_keys"]) == expired + 2,
            what="expired_keys to count two expiries",
        )
        assert int(info_dict(c("INFO", "stats"))["total_net_input_bytes"]) > 0
    finally:
        c.close()


def test_info_keyspace(r):
    assert r.info("keyspace") == {}
    r.set("a", "1")
    r.set("b", "2", ex=100)
    r.rpush("l", "x")
    ks = r.info("keyspace")
    assert ks["db0"]["keys"] == 3
    assert ks["db0"]["expires"] == 1
    r.flushall()
    assert r.info("keyspace") == {}


def test_info_commandstats(r):
    c = Conn(r)
    try:
        assert c("CONFIG", "RESETSTAT") == "OK"
        c("SET", "a", "1")
        c("SET", "b", "2")
        c("SET", "c", "3")
        c("GET", "a")
        assert c.error("GET") == arity("get")  # rejected before running
        c("RPUSH", "l", "x")
        assert c.error("GET", "l").startswith("WRONGTYPE")  # ran and failed
        stats = info_dict(c("INFO", "commandstats"))
        def fields(name):
            return dict(kv.split("=") for kv in stats[f"cmdstat_{name}"].split(","))
        s = fields("set")
        assert s["calls"] == "3" and s["failed_calls"] == "0" and s["rejected_calls"] == "0"
        g = fields("get")
        assert g["calls"] == "2" and g["failed_calls"] == "1" and g["rejected_calls"] == "1"
        assert fields("rpush")["calls"] == "1"
        assert "cmdstat_hset" not in stats
        for name in ("set", "get"):
            f = fields(name)
            assert int(f["usec"]) >= 0 and float(f["usec_per_call"]) >= 0
    finally:
        c.close()


# =============================================================================================
# TIME, SELECT, DBSIZE, FLUSHDB / FLUSHALL, PING, ECHO


def test_time(raw):
    secs, micros = raw.execute_command("TIME")
    assert isinstance(secs, str) and isinstance(micros, str)
    t = int(secs) + int(micros) / 1e6
    assert abs(t - time.time()) < 5
    assert 0 <= int(micros) < 1_000_000


def test_select(r, proto):
    assert r.execute_command("SELECT", "0") is True
    assert cmd_error(r, "SELECT", "abc") == NOT_INTEGER
    assert cmd_error(r, "SELECT", "16") == "ERR DB index is out of range"
    assert cmd_error(r, "SELECT") == arity("select")


@pytest.mark.ferrite_only
def test_select_1_is_out_of_range(r):
    # Ferrite has one database.
    assert cmd_error(r, "SELECT", "1") == "ERR DB index is out of range"
    r.set("k", "v")
    assert r.get("k") == "v", "the failed SELECT left the connection on database 0"


def test_dbsize_flushdb_flushall_across_connections(server, r):
    other = server.client()
    try:
        r.mset({f"k{i}": i for i in range(100)})
        assert other.dbsize() == 100
        assert other.flushdb() is True
        assert r.dbsize() == 0
        assert r.get("k1") is None
        r.set("a", "1")
        assert other.dbsize() == 1
        assert other.flushall() is True
        assert r.dbsize() == 0
    finally:
        other.close()


def test_ping_echo(r, raw, proto):
    assert r.ping() is True
    assert raw.execute_command("PING") == "PONG"
    assert raw.execute_command("PING", "hi") == "hi"
    assert raw.execute_command("ECHO", "") == ""
    assert cmd_error(raw, "PING", "a", "b") == arity("ping")


# =============================================================================================
# Concurrency


def test_concurrent_clients_increment_one_counter(server):
    threads, per = 10, 200
    errors = []

    def worker():
        c = server.client()
        try:
            p = c.pipeline(transaction=False)
            for _ in range(per):
                p.incr("counter")
            p.execute()
            for _ in range(per):
                c.incr("counter")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            c.close()

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
        assert not t.is_alive(), "worker hung"
    assert errors == []
    c = server.client()
    try:
        assert c.get("counter") == str(threads * per * 2)
    finally:
        c.close()


# =============================================================================================
# AUTH / requirepass (a second server)


@pytest.fixture(scope="module")
def auth_server():
    yield from serving(["--requirepass", "secret"])


class Anon(Wire):
    """A raw connection that has not authenticated (redis-py would fail its own handshake)."""

    def __call__(self, *args) -> str:
        reply = self.cmd(*args)
        assert reply[:1] == b"+" or reply[:1] == b"$", reply
        return reply.split(b"\r\n")[-2 if reply[:1] == b"$" else 0].lstrip(b"+").decode()

    def error(self, *args) -> str:
        reply = self.cmd(*args)
        assert reply[:1] == b"-", reply
        return reply[1:-2].decode()


@pytest.fixture
def anon(auth_server):
    c = Anon(auth_server)
    yield c
    c.close()


def test_noauth_before_auth(anon):
    assert anon.error("PING") == "NOAUTH Authentication required."
    assert anon.error("GET", "k") == "NOAUTH Authentication required."
    assert anon.error("SET", "k", "v") == "NOAUTH Authentication required."
    assert anon.error("CLIENT", "ID") == "NOAUTH Authentication required."
    assert anon.error("MULTI") == "NOAUTH Authentication required."


def test_auth_wrong_then_right(anon):
    wrongpass = "WRONGPASS invalid username-password pair or user is disabled."
    assert anon.error("AUTH", "nope") == wrongpass
    assert anon.error("AUTH", "default", "nope") == wrongpass
    assert anon.error("GET", "k") == "NOAUTH Authentication required."
    assert anon("AUTH", "secret") == "OK"
    assert anon("SET", "k", "v") == "OK"
    assert anon("GET", "k") == "v"
    assert anon("AUTH", "default", "secret") == "OK"
    assert anon("PING") == "PONG"
    assert anon.error("AUTH", "a", "b", "c") == SYNTAX


@pytest.mark.redis72
def test_hello_requires_auth_text(anon):
    assert anon.error("HELLO", "3") == (
        "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
        "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
        "select the RESP protocol version at the same time"
    )


def test_hello_requires_auth(anon):
    assert anon.error("HELLO", "3").startswith("NOAUTH HELLO must be called with the client already authenticated")
    assert anon.error("HELLO", "3", "AUTH", "default", "wrong") == (
        "WRONGPASS invalid username-password pair or user is disabled."
    )
    assert anon.error("GET", "k") == "NOAUTH Authentication required."


def test_hello_3_auth_default_secret(auth_server):
    w = Wire(auth_server)
    try:
        assert w.cmd("GET", "k").startswith(b"-NOAUTH")
        hello = w.cmd("HELLO", "3", "AUTH", "default", "secret")
        assert hello.startswith(b"%")
        assert b"$5\r\nproto\r\n:3\r\n" in hello
        assert w.cmd("SET", "resp3key", "v") == b"+OK\r\n"
        assert w.cmd("GET", "nothing") == b"_\r\n"
        assert w.cmd("HGETALL", "nothing") == b"%0\r\n"
    finally:
        w.close()


def test_redis_py_with_password(auth_server):
    for proto in (2, 3):
        c = auth_server.client(protocol=proto, password="secret")
        try:
            assert c.set(f"p{proto}", "v") is True
            assert c.get(f"p{proto}") == "v"
        finally:
            c.close()
    bad = auth_server.client(password="wrong", retry=Retry(NoBackoff(), 0))
    try:
        with pytest.raises(redis.AuthenticationError):
            bad.ping()
    finally:
        bad.close()


def test_quit_needs_no_auth(auth_server):
    w = Wire(auth_server)
    try:
        w.send(encode("QUIT"))
        assert w.read_until_closed() == b"+OK\r\n"
    finally:
        w.close()


def test_info_stats_counts_error_replies(r):
    before = r.info("stats")["total_error_replies"]
    for args in (("INCR",), ("LPUSH", "k")):
        with pytest.raises(redis.ResponseError):
            r.execute_command(*args)
    r.set("s", "text")
    with pytest.raises(redis.ResponseError):
        r.incr("s")
    assert r.info("stats")["total_error_replies"] == before + 3
