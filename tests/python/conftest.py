"""Fixtures for the redis-py suites: real `ferrite` processes, one per test module.

The binary comes from `FERRITE_BIN`, else `target/release/ferrite` (what scripts/test.sh builds),
else `target/debug/ferrite`, under the repository root. Each
server listens on `--port 0`; the port is read from the line
`Ferrite ready to accept connections on 127.0.0.1:<port>` it prints on stdout.
Servers are always killed on teardown, also when a test or the start-up fails. Every wait is
bounded.

Administrator access: each server gets its own temporary directory for its generated
administrator secret (`--admin-secret-file`), and `FerriteServer.client()` authenticates with it
(or with `--requirepass` when given), so clients are administrators as before the secure
defaults; `anon_client()` is a connection that has not authenticated (with the defaults: the
`default` tenant, no administrator rights). Servers share one migration token, like the servers
of one cluster, unless the test passes `--requirepass` or `--migration-token`.

Fixtures:
  server      the module's server (a `FerriteServer`)
  r2, r3      redis-py clients speaking RESP2 / RESP3, `decode_responses=True`
  r           parametrized: the same test once with RESP2 and once with RESP3
  raw2, raw3  like r2/r3 but without redis-py's reply callbacks: replies exactly as decoded from
              the wire (RESP3 maps are dicts, doubles floats; RESP2 maps are flat lists)
Every test starts with an empty keyspace (FLUSHALL through an administrative connection).

Calibration against real Redis: with `FERRITE_TEST_REDIS_SERVER=/usr/bin/redis-server` the same
suites run against redis-server instead, to check that the expectations are Redis's. Tests of
Ferrite-specific behaviour are marked `ferrite_only` and skipped then; `redis72` marks tests of
Redis 7.2 behaviour that an older redis-server lacks (skipped against one older than 7.2, run
against 7.2, e.g. `FERRITE_TEST_REDIS_SERVER=/work/src/r726/src/redis-server`). Tests marked xfail (known Ferrite bugs) must
pass against Redis: that checks that what they expect is what Redis does.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
READY_PREFIX = "Ferrite ready to accept connections on "
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
# Every client operation is bounded: a hung server fails the test instead of hanging the suite.
SOCKET_TIMEOUT = 10.0

REDIS_SERVER = os.environ.get("FERRITE_TEST_REDIS_SERVER")
# What every test server presents to the others for migrations (see the module docstring).
TEST_MIGRATION_TOKEN = "ferrite-integration-test-token"


def ferrite_bin() -> str:
    if os.environ.get("FERRITE_BIN"):
        return os.environ["FERRITE_BIN"]
    release = ROOT / "target" / "release" / "ferrite"
    return str(release if release.exists() else ROOT / "target" / "debug" / "ferrite")


def _pdeathsig_setter():
    """On Linux, a function for the child to run before exec so that the server gets SIGKILL if
    pytest itself dies: not even a killed test run leaves servers behind. Resolved here, in the
    parent, so that the child (forked from a threaded process) only makes one libc call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        import signal

        prctl = ctypes.CDLL(None, use_errno=True).prctl
        pr_set_pdeathsig, sigkill = 1, int(signal.SIGKILL)
    except Exception:
        return None

    def set_pdeathsig():
        prctl(pr_set_pdeathsig, sigkill)

    return set_pdeathsig


_SET_PDEATHSIG = _pdeathsig_setter()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FerriteServer:
    """A server process; `stop()` kills it (idempotent)."""

    def __init__(self, extra_args: list[str] | None = None):
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen | None = None
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._lines: queue.Queue = queue.Queue()
        self._pumps: list[threading.Thread] = []
        self.data_dir: str | None = None
        # The secret that makes a connection administrator (None: no such secret).
        self.admin_secret: str | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> "FerriteServer":
        if REDIS_SERVER:
            return self._start_redis()
        binary = ferrite_bin()
        if not os.access(binary, os.X_OK):
            raise RuntimeError(
                f"ferrite binary not found at {binary}: build it "
                "(cargo build -p ferrite-server --bin ferrite) or set FERRITE_BIN"
            )
        self.data_dir = tempfile.mkdtemp(prefix="ferrite-pytest-")
        secret_file = os.path.join(self.data_dir, "admin.secret")
        args = [binary, "--port", "0", "--metrics-addr", "off", "--log-level", "warn",
                "--admin-secret-file", secret_file]
        if "--requirepass" not in self.extra_args and "--migration-token" not in self.extra_args:
            args += ["--migration-token", TEST_MIGRATION_TOKEN]
        # Persistence keeps the server's data in the same directory of its own (removed by stop()).
        if "--dir" not in self.extra_args and "--appendonly" not in self.extra_args:
            args += ["--dir", self.data_dir]
        args += self.extra_args
        # FERRITE_TEST_THREADS=N runs the suite's servers with `--threads N` (e.g. 1: the
        # current-thread runtime) unless a test picks its own count.
        if os.environ.get("FERRITE_TEST_THREADS") and "--threads" not in args:
            args += ["--threads", os.environ["FERRITE_TEST_THREADS"]]
        self._spawn(args)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"ferrite did not become ready in {START_TIMEOUT}s: {self.log()}")
                try:
                    line = self._lines.get(timeout=min(left, 0.2))
                except queue.Empty:
                    if self.proc.poll() is not None:
                        raise RuntimeError(
                            f"ferrite exited with {self.proc.returncode} before it was ready: {self.log()}"
                        )
                    continue
                if line is None:
                    # stdout closed: the process is exiting.
                    self.proc.wait(timeout=STOP_TIMEOUT)
                    raise RuntimeError(
                        f"ferrite exited with {self.proc.returncode} before it was ready: {self.log()}"
                    )
                if line.startswith(READY_PREFIX):
                    addr = line[len(READY_PREFIX):].strip()
                    host, _, port = addr.rpartition(":")
                    self.host, self.port = host, int(port)
                    self.admin_secret = self._requirepass()
                    if self.admin_secret is None:
                        with open(secret_file) as f:
                            self.admin_secret = f.read().strip()
                    return self
        except BaseException:
            self.stop()
            raise

    def _start_redis(self) -> "FerriteServer":
        """Calibration mode: a redis-server with the equivalent settings."""
        self.port = _free_port()
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--loglevel", "warning"]
        it = iter(self.extra_args)
        for a in it:
            if a == "--requirepass":
                args += ["--requirepass", next(it)]
            else:
                raise RuntimeError(f"no redis-server equivalent for {a}")
        # Redis's default user needs no password; with requirepass, that is the admin secret.
        self.admin_secret = self._requirepass()
        self._spawn(args)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def _requirepass(self) -> str | None:
        args = self.extra_args
        for i, a in enumerate(args[:-1]):
            if a == "--requirepass":
                return args[i + 1]
        return None

    def _spawn(self, args: list[str]):
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            preexec_fn=_SET_PDEATHSIG,
        )
        for stream, is_stdout in ((self.proc.stdout, True), (self.proc.stderr, False)):
            t = threading.Thread(target=self._pump, args=(stream, is_stdout), daemon=True)
            t.start()
            self._pumps.append(t)

    def _pump(self, stream, is_stdout: bool):
        for line in stream:
            line = line.rstrip("\n")
            if is_stdout:
                self.stdout_lines.append(line)
                self._lines.put(line)
            else:
                self.stderr_lines.append(line)
        if is_stdout:
            self._lines.put(None)

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        # The pipes reach EOF once the process is gone; let the readers finish before closing.
        for t in self._pumps:
            t.join(timeout=2)
        for s in (self.proc.stdout, self.proc.stderr):
            try:
                s.close()
            except Exception:
                pass
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def panics(self) -> list[str]:
        return [line for line in self.stderr_lines if "panicked" in line]

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return "\n".join(self.stderr_lines[-50:])

    # -- clients ---------------------------------------------------------------------------------

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)

    def client(self, protocol: int = 2, raw: bool = False, **kw) -> redis.Redis:
        """An administrator client, unless `password` (and `username`) say otherwise."""
        if "password" not in kw and self.admin_secret:
            kw["password"] = self.admin_secret
        return self.anon_client(protocol=protocol, raw=raw, **kw)

    def anon_client(self, protocol: int = 2, raw: bool = False, **kw) -> redis.Redis:
        """A client that authenticates only if `password` is given."""
        kw.setdefault("socket_timeout", SOCKET_TIMEOUT)
        kw.setdefault("socket_connect_timeout", SOCKET_TIMEOUT)
        kw.setdefault("decode_responses", True)
        c = redis.Redis(host=self.host, port=self.port, protocol=protocol, **kw)
        if raw:
            # Replies as decoded from the wire, without redis-py's per-command conversions.
            c.response_callbacks.clear()
        return c

    def sock(self, timeout: float = SOCKET_TIMEOUT) -> socket.socket:
        s = socket.create_connection(self.addr, timeout=timeout)
        s.settimeout(timeout)
        return s


def serving(extra_args: list[str] | None = None):
    """A module fixture's server: started, yielded, stopped. A panic in any connection task
    fails the module even if every reply looked right."""
    srv = FerriteServer(extra_args)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
    assert not srv.panics(), f"the server panicked: {srv.panics()}"


# -- markers ------------------------------------------------------------------------------------


def pytest_configure(config):
    config.addinivalue_line("markers", "ferrite_only: Ferrite-specific behaviour (skipped against redis-server)")
    config.addinivalue_line("markers", "redis72: Redis 7.2 behaviour (skipped against an older redis-server)")


def redis_server_version() -> tuple[int, ...]:
    """The calibration redis-server's version (`redis-server --version`: `... v=7.2.6 ...`)."""
    out = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True,
                         timeout=STOP_TIMEOUT, check=True).stdout
    field = next(f for f in out.split() if f.startswith("v="))
    return tuple(int(n) for n in field[2:].split("."))


def pytest_collection_modifyitems(config, items):
    if not REDIS_SERVER:
        return
    skip = pytest.mark.skip(reason="Ferrite-specific behaviour; calibrating against redis-server")
    skip_72 = pytest.mark.skip(reason="Redis 7.2 behaviour; calibrating against an older redis-server")
    is_72 = redis_server_version() >= (7, 2)
    for item in items:
        if "ferrite_only" in item.keywords:
            item.add_marker(skip)
        elif "redis72" in item.keywords and not is_72:
            item.add_marker(skip_72)
        # Tests marked xfail document where Ferrite differs from Redis: against Redis they must
        # pass, which checks that the behaviour they expect really is Redis's.
        item.own_markers = [m for m in item.own_markers if m.name != "xfail"]


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    yield from serving()


@pytest.fixture(scope="module")
def admin(server):
    c = server.client()
    yield c
    c.close()


@pytest.fixture(autouse=True)
def _empty_keyspace(request):
    """Every test starts from an empty keyspace (only for modules that use the shared server)."""
    if "server" in request.fixturenames:
        srv = request.getfixturevalue("server")
        assert srv.is_running(), f"server died: {srv.log()}"
        a = request.getfixturevalue("admin")
        assert a.flushall() is True
        assert a.dbsize() == 0
    yield


def _client(server, protocol, raw=False):
    c = server.client(protocol=protocol, raw=raw)
    return c


@pytest.fixture
def r2(server):
    c = _client(server, 2)
    yield c
    c.close()


@pytest.fixture
def r3(server):
    c = _client(server, 3)
    yield c
    c.close()


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def proto(request):
    return request.param


@pytest.fixture
def r(server, proto):
    c = _client(server, proto)
    yield c
    c.close()


@pytest.fixture
def raw(server, proto):
    """Callback-free client with the parametrized protocol."""
    c = _client(server, proto, raw=True)
    yield c
    c.close()


@pytest.fixture
def raw2(server):
    c = _client(server, 2, raw=True)
    yield c
    c.close()


@pytest.fixture
def raw3(server):
    c = _client(server, 3, raw=True)
    yield c
    c.close()
