"""What plain Python clients (redis-py, valkey-py) and redis-cli do when a tenant moves.

Each test runs a real live migration between two ferrite processes and asserts the behaviour
docs/clients.md describes, including the recommended handling. The servers are started by the
small helpers below (from FERRITE_BIN, else target/release/ferrite), independent of conftest.py.
"""

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis
import valkey

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60  # seconds; bounds every wait below


def ferrite_bin():
    path = os.environ.get("FERRITE_BIN") or str(ROOT / "target" / "release" / "ferrite")
    if not Path(path).exists():
        pytest.fail(f"no ferrite binary at {path}: run `cargo build --release` or set FERRITE_BIN")
    return path


class Ferrite:
    """A ferrite process on a free loopback port; stop() kills it."""

    def __init__(self):
        # Its own directory for the generated administrator secret; the two servers of a test
        # share a migration token, like the servers of one cluster.
        self.dir = tempfile.TemporaryDirectory(prefix="ferrite-redirects-")
        secret_file = os.path.join(self.dir.name, "admin.secret")
        self.proc = subprocess.Popen(
            [ferrite_bin(), "--port", "0", "--metrics-addr", "off", "--log-level", "warn",
             "--admin-secret-file", secret_file, "--migration-token", "ferrite-redirects-test",
             "--dir", self.dir.name]
            # As conftest.py: FERRITE_TEST_THREADS=N runs the servers with `--threads N`.
            + (["--threads", os.environ["FERRITE_TEST_THREADS"]]
               if os.environ.get("FERRITE_TEST_THREADS") else []),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        deadline = time.monotonic() + TIMEOUT
        self.port = None
        while self.port is None and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.search(r"ready to accept connections on .*:(\d+)", line)
            if m:
                self.port = int(m.group(1))
        if self.port is None:
            self.stop()
            pytest.fail("ferrite did not become ready")
        with open(secret_file) as f:
            self.admin_secret = f.read().strip()

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def admin(self):
        return redis.Redis(port=self.port, password=self.admin_secret, socket_timeout=TIMEOUT)

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=TIMEOUT)
        self.dir.cleanup()


def as_dict(reply):
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2]))


class Migration:
    """Tenant `acme` (password `pw`, keys k0..k99 = v0..v99) migrating from src to dst, in
    live sync until cutover() is called."""

    def __init__(self, src, dst):
        self.src, self.dst = src, dst
        admin = src.admin()
        admin.execute_command("TENANT.CREATE", "acme", "PASSWORD", "pw")
        tenant = redis.Redis(port=src.port, username="acme", password="pw")
        tenant.mset({f"k{i}": f"v{i}" for i in range(100)})
        reply = as_dict(admin.execute_command("TENANT.MIGRATE", "acme", "TARGET", dst.addr))
        self.id = reply[b"migration_id"].decode()
        self.wait_state("live_sync")

    def status(self):
        return as_dict(self.src.admin().execute_command("TENANT.MIGRATE.STATUS", self.id))

    def wait_state(self, state):
        deadline = time.monotonic() + TIMEOUT
        while True:
            st = self.status()
            if st[b"state"].decode() == state:
                return st
            assert time.monotonic() < deadline, f"never reached {state}: {st}"
            time.sleep(0.02)

    def cutover(self):
        reply = as_dict(self.src.admin().execute_command("TENANT.MIGRATE.CUTOVER", self.id))
        assert reply[b"status"] == b"completed", reply


@pytest.fixture
def migration():
    src, dst = Ferrite(), Ferrite()
    try:
        yield Migration(src, dst)
    finally:
        src.stop()
        dst.stop()


def tenant_redis(server, **kw):
    return redis.Redis(
        port=server.port, username="acme", password="pw", socket_timeout=TIMEOUT, **kw
    )


def tenant_valkey(server, **kw):
    return valkey.Valkey(
        port=server.port, username="acme", password="pw", socket_timeout=TIMEOUT, **kw
    )


# --- The recommended handling for plain clients ------------------------------------------------


def enable_redirect(connection):
    """redis_connect_func / valkey_connect_func: the usual handshake, then CLIENT CAPA redirect,
    so that a moved tenant is answered with `-REDIRECT host:port` on every pooled connection."""
    connection.on_connect()
    connection.send_command("CLIENT", "CAPA", "redirect")
    if connection.read_response() not in (b"OK", "OK"):
        raise RuntimeError("CLIENT CAPA redirect refused")


def new_home(error):
    """The address a REDIRECT / MOVED tenant:... error points to, or None."""
    text = str(error)
    m = re.match(r"^(?:REDIRECT|MOVED tenant:\S+) (\S+:\d+)$", text)
    return m.group(1) if m else None


class FollowingClient:
    """Wraps a redis-py/valkey-py client factory: on a redirect error, reconnects to the address
    in the message (same credentials) and sends the command again. Only refused commands are
    re-sent: a REDIRECT/MOVED means the server did not run it."""

    def __init__(self, make, addr, error_class, max_hops=5):
        self.make, self.error_class, self.max_hops = make, error_class, max_hops
        self.addr = addr
        self.client = make(addr)
        self.redirects = 0

    def __call__(self, *args):
        for _ in range(self.max_hops):
            try:
                return self.client.execute_command(*args)
            except self.error_class as e:
                addr = new_home(e)
                if addr is None:
                    raise
                self.client.close()
                self.addr, self.client = addr, self.make(addr)
                self.redirects += 1
        raise RuntimeError(f"more than {self.max_hops} redirects")


def redis_at(addr, **kw):
    host, port = addr.rsplit(":", 1)
    return redis.Redis(
        host=host, port=int(port), username="acme", password="pw", socket_timeout=TIMEOUT, **kw
    )


def valkey_at(addr, **kw):
    host, port = addr.rsplit(":", 1)
    return valkey.Valkey(
        host=host, port=int(port), username="acme", password="pw", socket_timeout=TIMEOUT, **kw
    )


# --- redis-py 7.4.1 ----------------------------------------------------------------------------


def test_redis_py_gets_try_again_from_an_importing_target(migration):
    on_target = tenant_redis(migration.dst)
    with pytest.raises(redis.exceptions.TryAgainError) as e:
        on_target.get("k1")
    assert str(e.value) == "tenant 'acme' is being imported; retry shortly"
    assert isinstance(e.value, redis.exceptions.ResponseError)
    migration.cutover()
    assert on_target.get("k1") == b"v1"


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_raises_value_error_on_moved_tenant(migration, protocol):
    c = tenant_redis(migration.src, protocol=protocol)
    assert c.get("k1") == b"v1"
    migration.cutover()
    # redis-py maps -MOVED to MovedError, whose constructor parses a cluster slot number:
    # int('tenant:acme') fails, and a bare ValueError escapes (not a RedisError), without the
    # new address. The connection is dropped; the next command reconnects to the old server
    # and fails the same way: redis-py never reaches the target by itself.
    for _ in range(2):
        with pytest.raises(ValueError) as e:
            c.get("k1")
        assert str(e.value) == "invalid literal for int() with base 10: 'tenant:acme'"
        assert not isinstance(e.value, redis.exceptions.RedisError)
        assert migration.dst.addr not in str(e.value)


def test_redis_py_with_capa_redirect_gets_the_address_and_can_follow(migration):
    c = tenant_redis(migration.src, redis_connect_func=enable_redirect)
    assert c.get("k1") == b"v1"
    migration.cutover()
    with pytest.raises(redis.exceptions.ResponseError) as e:
        c.get("k1")
    assert str(e.value) == f"REDIRECT {migration.dst.addr}"
    assert type(e.value) is redis.exceptions.ResponseError

    # The recommended handling: catch it, reconnect to the address, send the command again.
    follow = FollowingClient(
        lambda a: redis_at(a, redis_connect_func=enable_redirect),
        migration.src.addr,
        redis.exceptions.ResponseError,
    )
    assert follow("GET", "k2") == b"v2"
    assert follow("SET", "after", "1") is True
    assert (follow.addr, follow.redirects) == (migration.dst.addr, 1)
    assert tenant_redis(migration.dst).get("after") == b"1"


def test_redis_py_with_redirect_mode_error_gets_a_plain_error_naming_the_target(migration):
    admin = migration.src.admin()
    admin.config_set("tenancy.migration.client_handling.redirect_mode", "error")
    c = tenant_redis(migration.src)
    migration.cutover()
    with pytest.raises(redis.exceptions.ResponseError) as e:
        c.get("k1")
    assert str(e.value) == f"tenant 'acme' has moved to {migration.dst.addr}"


# --- valkey-py 6.2.0 ---------------------------------------------------------------------------


def test_valkey_py_gets_moved_as_a_response_error_with_the_address(migration):
    c = tenant_valkey(migration.src)
    assert c.get("k1") == b"v1"
    on_target = tenant_valkey(migration.dst)
    with pytest.raises(valkey.exceptions.ResponseError) as e:
        on_target.get("k1")
    assert type(e.value) is valkey.exceptions.ResponseError
    assert str(e.value) == "TRYAGAIN tenant 'acme' is being imported; retry shortly"
    migration.cutover()
    # valkey-py's standalone client has no MOVED class: a plain ResponseError with the full text.
    for _ in range(2):
        with pytest.raises(valkey.exceptions.ResponseError) as e:
            c.get("k1")
        assert str(e.value) == f"MOVED tenant:acme {migration.dst.addr}"
    assert new_home(e.value) == migration.dst.addr


def test_valkey_py_does_not_follow_redirect_after_client_capa_redirect(migration):
    c = tenant_valkey(migration.src, valkey_connect_func=enable_redirect)
    assert c.get("k1") == b"v1"
    migration.cutover()
    # It accepts CLIENT CAPA redirect but does not act on -REDIRECT: the error reaches the caller
    # every time (6.2.0).
    for _ in range(2):
        with pytest.raises(valkey.exceptions.ResponseError) as e:
            c.get("k1")
        assert str(e.value) == f"REDIRECT {migration.dst.addr}"

    follow = FollowingClient(
        lambda a: valkey_at(a, valkey_connect_func=enable_redirect),
        migration.src.addr,
        valkey.exceptions.ResponseError,
    )
    assert follow("GET", "k3") == b"v3"
    assert (follow.addr, follow.redirects) == (migration.dst.addr, 1)


# --- redis-cli ---------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli not installed")
def test_redis_cli_prints_moved_and_follows_it_with_dash_c(migration):
    migration.cutover()
    base = ["redis-cli", "-p", str(migration.src.port), "--user", "acme", "--pass", "pw",
            "--no-auth-warning"]

    def run(*args, stdin=None):
        return subprocess.run(
            [*base, *args], input=stdin, capture_output=True, text=True, timeout=TIMEOUT
        )

    # Without -c: the error is printed (and the exit status is 0, as for any error reply).
    r = run("GET", "k1")
    assert r.stdout.strip() == f"MOVED tenant:acme {migration.dst.addr}"
    assert r.returncode == 0
    # With -c (cluster mode) redis-cli reads the address after the "slot", reconnects there
    # with the same --user/--pass and sends the command again.
    r = run("-c", "GET", "k1")
    assert r.stdout.strip() == "v1", r
    r = run("-c", "SET", "from-cli", "x")
    assert r.stdout.strip() == "OK"
    assert tenant_redis(migration.dst).get("from-cli") == b"x"
    # Reading commands from standard input it also says where it went ("slot [0]": redis-cli
    # reads the slot with atoi, which gives 0 for "tenant:acme").
    r = run("-c", stdin="GET k1\n")
    assert f"-> Redirected to slot [0] located at {migration.dst.addr}" in r.stdout
