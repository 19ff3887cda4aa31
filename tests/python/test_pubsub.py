"""Pub/sub through redis-py and raw sockets: SUBSCRIBE/PSUBSCRIBE/SSUBSCRIBE and their
UNSUBSCRIBEs, PUBLISH/SPUBLISH, PUBSUB, RESP2 and RESP3 push forms, the RESP2 subscribed mode,
per-tenant channels, a slow subscriber cut off by the pub/sub output limit, and subscribers of a
tenant that is cut over."""

from __future__ import annotations

import itertools
import socket
import time

import pytest
import redis

TIMEOUT = 10.0


def read_exact(s: socket.socket, want: bytes) -> bytes:
    got = b""
    deadline = time.monotonic() + TIMEOUT
    while len(got) < len(want) and time.monotonic() < deadline:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def resp3_sock(server) -> socket.socket:
    """A raw connection switched to RESP3 (HELLO 3's reply read and dropped)."""
    s = server.sock()
    s.sendall(b"HELLO 3\r\n")
    time.sleep(0.1)
    s.recv(65536)
    return s


def get_message(p, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = p.get_message(timeout=0.1)
        if m is not None:
            return m
    return None


def test_subscribe_and_publish(r, server):
    p = r.pubsub()
    p.subscribe("news")
    assert get_message(p)["type"] == "subscribe"
    p.psubscribe("n*")
    assert get_message(p)["type"] == "psubscribe"
    assert r.publish("news", "hello") == 2
    m1, m2 = get_message(p), get_message(p)
    assert {m1["type"], m2["type"]} == {"message", "pmessage"}
    pm = m1 if m1["type"] == "pmessage" else m2
    assert pm["pattern"] == "n*" and pm["channel"] == "news" and pm["data"] == "hello"
    assert r.publish("other", "x") == 0
    assert r.publish("nothing-here", "x") == 1, "the pattern matches"
    assert get_message(p)["channel"] == "nothing-here"
    p.unsubscribe("news")
    assert get_message(p)["type"] == "unsubscribe"
    p.punsubscribe()
    assert get_message(p)["type"] == "punsubscribe"
    assert r.publish("news", "gone") == 0
    p.close()


def test_pubsub_introspection(r2, server):
    p = r2.pubsub()
    p.subscribe("a", "b")
    p.psubscribe("x*", "y*")
    get_message(p), get_message(p), get_message(p), get_message(p)
    assert sorted(r2.pubsub_channels()) == ["a", "b"]
    assert r2.pubsub_channels("a*") == ["a"]
    assert r2.pubsub_numsub("a", "zzz") == [("a", 1), ("zzz", 0)]
    assert r2.pubsub_numpat() == 2
    assert r2.execute_command("PUBSUB", "SHARDCHANNELS") == []
    with pytest.raises(redis.ResponseError, match="unknown subcommand"):
        r2.execute_command("PUBSUB", "NOPE")
    p.close()


def test_resp2_wire_forms_and_subscribed_mode(server):
    s = server.sock()
    s.sendall(b"SUBSCRIBE ch\r\n")
    assert read_exact(s, b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n") == b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
    s.sendall(b"GET k\r\n")
    want = (b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / "
            b"RESET are allowed in this context\r\n")
    assert read_exact(s, want) == want
    s.sendall(b"PING\r\n")
    assert read_exact(s, b"*2\r\n$4\r\npong\r\n$0\r\n\r\n") == b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"
    server.client().publish("ch", "hi")
    want = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"
    assert read_exact(s, want) == want
    s.sendall(b"UNSUBSCRIBE\r\nPING\r\n")
    want = b"*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n+PONG\r\n"
    assert read_exact(s, want) == want
    s.sendall(b"UNSUBSCRIBE\r\n")
    want = b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"
    assert read_exact(s, want) == want
    s.close()


def test_resp3_push_forms_and_any_command(server):
    s = resp3_sock(server)
    s.sendall(b"SUBSCRIBE ch\r\nPSUBSCRIBE c?\r\nSSUBSCRIBE sh\r\nGET k\r\nPUBLISH ch m\r\nSPUBLISH sh n\r\n")
    want = (b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
            b">3\r\n$10\r\npsubscribe\r\n$2\r\nc?\r\n:2\r\n"
            b">3\r\n$10\r\nssubscribe\r\n$2\r\nsh\r\n:1\r\n"
            b"_\r\n"
            # A connection publishing to itself gets the messages after the count, as in
            # Redis 7.2 (7.0 sent them before).
            b":2\r\n"
            b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nm\r\n"
            b">4\r\n$8\r\npmessage\r\n$2\r\nc?\r\n$2\r\nch\r\n$1\r\nm\r\n"
            b":1\r\n"
            b">3\r\n$8\r\nsmessage\r\n$2\r\nsh\r\n$1\r\nn\r\n")
    assert read_exact(s, want) == want
    s.close()


def test_resp3_messages_to_self_follow_the_exec_and_script_replies(server):
    # Redis 7.2: a subscribed connection's own messages are not put inside EXEC's array or
    # ahead of a script's reply, but right after them, before the next command's reply.
    s = resp3_sock(server)
    s.sendall(b"SUBSCRIBE foo\r\n")
    want = b">3\r\n$9\r\nsubscribe\r\n$3\r\nfoo\r\n:1\r\n"
    assert read_exact(s, want) == want
    s.sendall(b"MULTI\r\nPING abc\r\nPUBLISH foo bar\r\nPUBLISH foo vaz\r\nPING def\r\nEXEC\r\n"
              b"EVAL \"redis.call('publish','foo','x') return 'bla'\" 0\r\nPING\r\n")
    want = (b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n"
            b"*4\r\n$3\r\nabc\r\n:1\r\n:1\r\n$3\r\ndef\r\n"
            b">3\r\n$7\r\nmessage\r\n$3\r\nfoo\r\n$3\r\nbar\r\n"
            b">3\r\n$7\r\nmessage\r\n$3\r\nfoo\r\n$3\r\nvaz\r\n"
            b"$3\r\nbla\r\n"
            b">3\r\n$7\r\nmessage\r\n$3\r\nfoo\r\n$1\r\nx\r\n"
            b"+PONG\r\n")
    assert read_exact(s, want) == want
    s.close()


def test_shard_channels_are_a_separate_namespace(r2):
    p = r2.pubsub()
    p.execute_command("SSUBSCRIBE", "s1")
    time.sleep(0.1)
    assert r2.execute_command("PUBSUB", "SHARDCHANNELS") == ["s1"]
    assert r2.execute_command("PUBSUB", "SHARDNUMSUB", "s1", "x") == ["s1", 1, "x", 0]
    assert r2.pubsub_channels() == []
    assert r2.publish("s1", "plain") == 0
    assert r2.execute_command("SPUBLISH", "s1", "sharded") == 1
    p.close()


def test_publish_inside_multi(r2):
    p = r2.pubsub()
    p.subscribe("t")
    get_message(p)
    tx = r2.pipeline(transaction=True)
    tx.publish("t", "one")
    tx.set("k", "v")
    assert tx.execute() == [1, True]
    assert get_message(p)["data"] == "one"
    p.close()


def test_scripts_and_functions_publish(r2):
    p = r2.pubsub()
    p.subscribe("t")
    get_message(p)
    p.execute_command("SSUBSCRIBE", "s")
    get_message(p)
    assert r2.eval("return redis.call('publish', KEYS[1], ARGV[1])", 1, "t", "from-lua") == 1
    assert get_message(p)["data"] == "from-lua"
    assert r2.eval("return redis.pcall('spublish', KEYS[1], 'sharded')", 1, "s") == 1
    m = get_message(p)
    assert m["type"] == "smessage" and m["data"] == "sharded"
    assert r2.eval("return redis.call('publish', 'nobody', 'x')", 0) == 0
    r2.execute_command(
        "FUNCTION", "LOAD", "REPLACE",
        "#!lua name=pslib\nredis.register_function('pub', function(keys, args)"
        " return redis.call('publish', keys[1], args[1]) end)")
    try:
        assert r2.execute_command("FCALL", "pub", 1, "t", "from-function") == 1
        assert get_message(p)["data"] == "from-function"
    finally:
        r2.execute_command("FUNCTION", "DELETE", "pslib")
    p.close()


_names = (f"ps{n}" for n in itertools.count())


@pytest.fixture
def two_tenants(admin):
    a, b = next(_names), next(_names)
    for t in (a, b):
        admin.execute_command("TENANT.CREATE", t, "PASSWORD", "pw")
    yield a, b
    for t in (a, b):
        admin.execute_command("TENANT.DELETE", t, "FORCE")


@pytest.mark.ferrite_only
def test_tenants_never_see_each_others_channels(server, two_tenants):
    a, b = two_tenants
    ca = redis.Redis(port=server.port, username=a, password="pw", decode_responses=True)
    cb = redis.Redis(port=server.port, username=b, password="pw", decode_responses=True)
    p = ca.pubsub()
    p.subscribe("secret")
    p.psubscribe("*")
    get_message(p), get_message(p)
    assert cb.publish("secret", "from b") == 0
    assert cb.pubsub_channels() == []
    assert cb.pubsub_numsub("secret") == [("secret", 0)]
    assert cb.pubsub_numpat() == 0
    assert get_message(p, timeout=0.3) is None, "nothing crossed tenants"
    assert ca.publish("secret", "from a") == 2
    assert get_message(p)["data"] == "from a"
    p.close()


@pytest.mark.ferrite_only
def test_a_publisher_follows_new_subscribers_and_its_tenant(server, two_tenants):
    """A connection keeps its tenant's channels between PUBLISHes: a subscriber that arrives
    later is reached, a rebinding (TENANT.USE) publishes to the new tenant's channels, and a
    pipelined burst arrives whole and in order (the subscriber writes it in few sends)."""
    a, b = two_tenants
    pub = server.client(decode_responses=True)
    pub.execute_command("TENANT.USE", a)
    assert pub.publish("ch", "early") == 0, "nobody has subscribed in the tenant yet"
    sa = redis.Redis(port=server.port, username=a, password="pw", decode_responses=True)
    p = sa.pubsub()
    p.subscribe("ch")
    assert get_message(p)["type"] == "subscribe"
    assert pub.publish("ch", "one") == 1
    assert get_message(p)["data"] == "one"
    pub.execute_command("TENANT.USE", b)
    assert pub.publish("ch", "to b") == 0
    assert get_message(p, timeout=0.3) is None, "b's channel is not a's"
    pub.execute_command("TENANT.USE", a)
    pipe = pub.pipeline(transaction=False)
    for i in range(500):
        pipe.publish("ch", str(i))
    assert pipe.execute() == [1] * 500
    got = []
    for _ in range(500):
        m = get_message(p)
        assert m is not None, f"only {len(got)} of 500 messages arrived"
        got.append(m["data"])
    assert got == [str(i) for i in range(500)]
    p.close()


@pytest.mark.ferrite_only
def test_a_slow_subscriber_is_cut_off(server, admin):
    admin.config_set("limits.pubsub_output_buffer_limit", str(1024 * 1024))
    try:
        s = server.sock()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"SUBSCRIBE flood\r\n")
        deadline = time.monotonic() + TIMEOUT
        while admin.pubsub_numsub("flood")[0][1] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        before = int(admin.info("stats")["client_output_buffer_limit_disconnections"])
        payload = "x" * 10_000
        start = time.monotonic()
        # 50 MB published to a subscriber that never reads: it must be cut off, and the
        # publisher never waits for it.
        p = admin.pipeline(transaction=False)
        for _ in range(5000):
            p.publish("flood", payload)
        counts = p.execute()
        assert time.monotonic() - start < 20
        assert counts[-1] == 0, "the subscriber is gone"
        deadline = time.monotonic() + TIMEOUT
        while admin.pubsub_numsub("flood")[0][1] != 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        after = int(admin.info("stats")["client_output_buffer_limit_disconnections"])
        assert after == before + 1
        s.close()
    finally:
        admin.config_set("limits.pubsub_output_buffer_limit", str(32 * 1024 * 1024))
    assert admin.ping()


@pytest.mark.ferrite_only
def test_a_subscriber_above_the_soft_limit_for_its_seconds_is_cut_off(server, admin):
    # Hard limit off: only the soft one (100 KB for more than 1 s) can cut the subscriber off.
    admin.config_set("client-output-buffer-limit", "pubsub 0 100kb 1")
    try:
        assert admin.config_get("limits.pubsub_output_buffer_soft_limit") == {
            "limits.pubsub_output_buffer_soft_limit": str(100 * 1024)}
        s = server.sock()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"SUBSCRIBE soft\r\n")
        deadline = time.monotonic() + TIMEOUT
        while admin.pubsub_numsub("soft")[0][1] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        before = int(admin.info("stats")["client_output_buffer_limit_disconnections"])
        payload = "x" * 10_000
        # Above the soft limit but for less than its second: still subscribed.
        p = admin.pipeline(transaction=False)
        for _ in range(500):
            p.publish("soft", payload)
        assert p.execute()[-1] == 1
        assert admin.pubsub_numsub("soft")[0][1] == 1
        # Still above it more than a second later: the next message cuts it off.
        time.sleep(1.3)
        deadline = time.monotonic() + TIMEOUT
        while admin.publish("soft", payload) != 0:
            assert time.monotonic() < deadline, "never cut off"
            time.sleep(0.05)
        after = int(admin.info("stats")["client_output_buffer_limit_disconnections"])
        assert after == before + 1
        s.close()
    finally:
        admin.config_set("client-output-buffer-limit", "pubsub 32mb 8mb 60")
    assert admin.config_get("client-output-buffer-limit") == {
        "client-output-buffer-limit":
            "normal 1073741824 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60"}


@pytest.mark.ferrite_only
def test_client_output_buffer_limit_config_syntax(admin):
    original = admin.config_get("client-output-buffer-limit")["client-output-buffer-limit"]
    try:
        admin.config_set("client-output-buffer-limit", "normal 512mb 0 0 replica 1mb 1mb 10")
        got = admin.config_get("client-output-buffer-limit")["client-output-buffer-limit"]
        assert got.startswith("normal 536870912 0 0 slave 1048576 1048576 10 pubsub ")
        assert admin.config_get("limits.client_output_buffer_limit") == {
            "limits.client_output_buffer_limit": "536870912"}
        for bad, why in (("pubsub 1mb", "Wrong number of arguments"),
                         ("nosuch 1 1 1", "Invalid client class"),
                         ("pubsub x 1 1", "Error in hard, soft or soft_seconds"),
                         ("pubsub 1mb 1mb 10 normal 1mb 1mb 10", "only a hard limit")):
            with pytest.raises(redis.ResponseError, match=why):
                admin.config_set("client-output-buffer-limit", bad)
            # A refused value changes nothing, not even its valid classes.
            assert admin.config_get("client-output-buffer-limit")["client-output-buffer-limit"] == got
    finally:
        admin.config_set("client-output-buffer-limit", original)


def test_the_default_pubsub_limit_is_redis_hard_limit(admin):
    assert admin.config_get("limits.pubsub_output_buffer_limit") == {
        "limits.pubsub_output_buffer_limit": str(32 * 1024 * 1024)
    }


@pytest.mark.ferrite_only
def test_subscribers_of_a_tenant_that_is_cut_over_get_the_redirect():
    from test_redirects import Ferrite, Migration

    src, dst = Ferrite(), Ferrite()
    try:
        m = Migration(src, dst)
        s = socket.create_connection(("127.0.0.1", src.port), timeout=TIMEOUT)
        s.sendall(b"AUTH acme pw\r\nSUBSCRIBE news\r\n")
        want = b"+OK\r\n*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
        assert read_exact(s, want) == want
        m.cutover()
        want = f"-MOVED tenant:acme {dst.addr}\r\n".encode()
        assert read_exact(s, want) == want
        assert s.recv(100) == b"", "closed: the client resubscribes on the new home"
        s.close()
        d = redis.Redis(port=dst.port, username="acme", password="pw", decode_responses=True)
        p = d.pubsub()
        p.subscribe("news")
        get_message(p)
        assert d.publish("news", "moved") == 1
        assert get_message(p)["data"] == "moved"
        p.close()
    finally:
        src.stop()
        dst.stop()


def test_resp3_unsubscribe_inside_multi(server):
    # Redis 7.2's "unsubscribe inside multi, and publish to self": the confirmations are
    # elements of EXEC's reply, and a later PUBLISH to self answers before its message.
    s = resp3_sock(server)
    s.sendall(b"SUBSCRIBE foo bar baz\r\n")
    want = (b">3\r\n$9\r\nsubscribe\r\n$3\r\nfoo\r\n:1\r\n"
            b">3\r\n$9\r\nsubscribe\r\n$3\r\nbar\r\n:2\r\n"
            b">3\r\n$9\r\nsubscribe\r\n$3\r\nbaz\r\n:3\r\n")
    assert read_exact(s, want) == want
    s.sendall(b"MULTI\r\nPING abc\r\nUNSUBSCRIBE bar\r\nUNSUBSCRIBE baz\r\nPING def\r\nEXEC\r\n"
              b"PUBLISH foo vaz\r\nPUBLISH bar no\r\n")
    want = (b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n"
            b"*4\r\n$3\r\nabc\r\n"
            b">3\r\n$11\r\nunsubscribe\r\n$3\r\nbar\r\n:2\r\n"
            b">3\r\n$11\r\nunsubscribe\r\n$3\r\nbaz\r\n:1\r\n"
            b"$3\r\ndef\r\n"
            b":1\r\n>3\r\n$7\r\nmessage\r\n$3\r\nfoo\r\n$3\r\nvaz\r\n"
            b":0\r\n")
    assert read_exact(s, want) == want
    s.close()


def test_resp2_subscribe_inside_multi(server):
    # RESP2: the confirmation is an element of EXEC's reply, and the connection is subscribed
    # afterwards (only pub/sub commands then).
    s = server.sock()
    s.sendall(b"MULTI\r\nSUBSCRIBE ch\r\nEXEC\r\nGET k\r\n")
    want = (b"+OK\r\n+QUEUED\r\n*1\r\n*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
            b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / "
            b"RESET are allowed in this context\r\n")
    assert read_exact(s, want) == want
    server.client().publish("ch", "hello")
    want = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n"
    assert read_exact(s, want) == want
    s.close()


@pytest.mark.redis72
def test_ssubscribe_inside_multi_and_scripts(server):
    # Redis 7.2 queues SSUBSCRIBE in MULTI and answers an error for it inside EXEC (which runs
    # DENY BLOCKING), the other commands running; SUNSUBSCRIBE runs there. Scripts may call
    # neither (`noscript`).
    s = server.sock()
    s.sendall(b"MULTI\r\nSSUBSCRIBE a b\r\nSUNSUBSCRIBE a\r\nPING x\r\nEXEC\r\nGET k\r\n")
    want = (b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n"
            b"*3\r\n-ERR SSUBSCRIBE isn't allowed for a DENY BLOCKING client\r\n"
            b"*3\r\n$12\r\nsunsubscribe\r\n$1\r\na\r\n:0\r\n"
            b"$1\r\nx\r\n"
            # Not subscribed afterwards: any command runs.
            b"$-1\r\n")
    assert read_exact(s, want) == want
    c = server.client(decode_responses=True)
    assert c.spublish("a", "m") == 0
    s.close()
    # RESP3 (MULTI while subscribed): SUNSUBSCRIBE's confirmation is an element of EXEC's reply.
    s = resp3_sock(server)
    s.sendall(b"SSUBSCRIBE a\r\nMULTI\r\nSUNSUBSCRIBE a\r\nSSUBSCRIBE b\r\nEXEC\r\n")
    want = (b">3\r\n$10\r\nssubscribe\r\n$1\r\na\r\n:1\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n"
            b"*2\r\n>3\r\n$12\r\nsunsubscribe\r\n$1\r\na\r\n:0\r\n"
            b"-ERR SSUBSCRIBE isn't allowed for a DENY BLOCKING client\r\n")
    assert read_exact(s, want) == want
    assert c.spublish("a", "m") == 0
    assert c.spublish("b", "m") == 0
    s.close()
    for call in ("redis.call", "redis.pcall"):
        for cmd in ("ssubscribe", "sunsubscribe"):
            with pytest.raises(redis.ResponseError,
                               match="This Redis command is not allowed from script"):
                c.eval(f"return {call}('{cmd}', 'a')", 0)
