"""Doubles as text, as Redis 7.2 writes them (its Grisu2 `fpconv_dtoa`, after exact integers in
±2^62): score replies in RESP2 and RESP3, ZINCRBY, WITHSCORES, ZSCAN, a Lua number given to
`redis.call`, and GEODIST, which 7.2 still writes with four decimals. Every expectation is
redis-server 7.2.6's answer (`FERRITE_TEST_REDIS_SERVER=/work/src/r726/src/redis-server`)."""

from __future__ import annotations

import socket

import pytest

# (score as ZADD is given it, the text 7.2.6 answers for it)
SCORES = [
    ("1e-7", "1e-7"),
    ("0.00001", "0.00001"),
    ("0.1", "0.1"),
    ("1.2345678901234567e17", "123456789012345664"),
    ("4611686018427387904", "4611686018427387904"),
    ("9223372036854775808", "9223372036854776000"),
    ("1e20", "1e+20"),
    ("1e23", "99999999999999990000000"),
    ("-1.5e300", "-1.5e+300"),
    ("5e-324", "5e-324"),
    ("1917934156873070.25", "1917934156873070.3"),
    ("inf", "inf"),
    # The longest text: 25 bytes, past the 24 of fpconv_dtoa's declared buffer.
    ("-1.2345678901234567e23", "-123456789012345670000000"),
]


@pytest.mark.redis72
def test_score_replies_resp2(raw2):
    for i, (score, _) in enumerate(SCORES):
        raw2.execute_command("ZADD", "z", score, f"m{i}")
    for i, (score, text) in enumerate(SCORES):
        assert raw2.execute_command("ZSCORE", "z", f"m{i}") == text, score
    ranged = raw2.execute_command("ZRANGE", "z", "0", "-1", "WITHSCORES")
    assert sorted(ranged[1::2]) == sorted(t for _, t in SCORES)
    assert raw2.execute_command("ZINCRBY", "z", "0.2", "m2") == "0.30000000000000004"
    assert raw2.execute_command("ZINCRBY", "z", "1e-7", "m0") == "2e-7"
    assert raw2.execute_command("ZMSCORE", "z", "m0", "m7") == ["2e-7", "99999999999999990000000"]


def _resp3_line(server, *args: str) -> bytes:
    """The first line of a reply as the server sends it, after HELLO 3."""
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        f = s.makefile("rb")
        def send(*words: str):
            s.sendall(b"*%d\r\n" % len(words) + b"".join(
                b"$%d\r\n%s\r\n" % (len(w.encode()), w.encode()) for w in words))
        send("HELLO", "3")
        # HELLO's map: read its header, then 2 lines (a `$` header and its data, or one line)
        # per element until the count is used up.
        n = int(f.readline()[1:-2]) * 2
        for _ in range(n):
            line = f.readline()
            if line[:1] == b"$":
                f.readline()
            elif line[:1] == b"*":
                for _ in range(int(line[1:-2])):
                    if f.readline()[:1] == b"$":
                        f.readline()
        send(*args)
        return f.readline()


@pytest.mark.redis72
def test_score_replies_resp3(server, raw2):
    for i, (score, _) in enumerate(SCORES):
        raw2.execute_command("ZADD", "z", score, f"m{i}")
    for i, (score, text) in enumerate(SCORES):
        assert _resp3_line(server, "ZSCORE", "z", f"m{i}") == b"," + text.encode() + b"\r\n", score
    assert _resp3_line(server, "ZINCRBY", "z", "0.2", "m2") == b",0.30000000000000004\r\n"


@pytest.mark.redis72
def test_zscan_score_text_follows_the_encoding(raw2):
    raw2.execute_command("ZADD", "small", "0.1", "a", "1e-7", "b")
    reply = raw2.execute_command("ZSCAN", "small", "0")
    assert dict(zip(reply[1][::2], reply[1][1::2])) == {"a": "0.1", "b": "1e-7"}
    # Past zset-max-listpack-entries the set is a skiplist, which 7.2 scans with `%.17Lg`.
    raw2.execute_command("ZADD", "big", *[x for i in range(129) for x in (str(i), f"m{i}")])
    raw2.execute_command("ZADD", "big", "0.1", "a", "1e-7", "b")
    assert raw2.execute_command("OBJECT", "ENCODING", "big") == "skiplist"
    found, cursor = {}, "0"
    while True:
        cursor, page = raw2.execute_command("ZSCAN", "big", cursor)
        found.update(zip(page[::2], page[1::2]))
        if cursor == "0":
            break
    assert found["a"] == "0.10000000000000001"
    assert found["b"] == "9.9999999999999995e-08"
    assert found["m5"] == "5"


@pytest.mark.redis72
def test_lua_numbers_given_to_redis_call(raw2):
    for expr, text in [
        ("0.1+0.2", "0.30000000000000004"),
        ("1e-7", "1e-7"),
        ("2^62", "4611686018427387904"),
        ("2^63", "9223372036854776000"),
        ("1e15", "1000000000000000"),
        ("1e16+0.5", "10000000000000000"),
        ("1e20", "1e+20"),
        ("1e23", "99999999999999990000000"),
        ("-1.5e300", "-1.5e+300"),
        ("-0.0", "0"),
        ("1/0", "inf"),
    ]:
        script = f"redis.call('set', KEYS[1], {expr}); return redis.call('get', KEYS[1])"
        assert raw2.execute_command("EVAL", script, "1", "k") == text, expr
    # A score given as a Lua number reaches ZADD as that text.
    script = "redis.call('zadd', KEYS[1], 0.1+0.2, 'm'); return redis.call('zscore', KEYS[1], 'm')"
    assert raw2.execute_command("EVAL", script, "1", "lz") == "0.30000000000000004"


@pytest.mark.redis72
def test_geodist_keeps_four_decimals(raw2):
    raw2.execute_command("GEOADD", "g", "13.361389", "38.115556", "Palermo",
                         "15.087269", "37.502669", "Catania", "13.361389", "38.115556", "Same")
    assert raw2.execute_command("GEODIST", "g", "Palermo", "Same") == "0.0000"
    assert raw2.execute_command("GEODIST", "g", "Palermo", "Catania", "km") == "166.2742"
    assert raw2.execute_command("GEODIST", "g", "Palermo", "Catania", "mi") == "103.3182"
    # A member's score is its 52-bit geohash, an exact integer.
    assert raw2.execute_command("ZSCORE", "g", "Palermo") == "3479099956230698"
    reply = raw2.execute_command("GEOSEARCH", "g", "FROMLONLAT", "15", "37", "BYRADIUS", "200",
                                 "km", "WITHDIST", "ASC")
    assert sorted(reply) == [["Catania", "56.4413"], ["Palermo", "190.4424"], ["Same", "190.4424"]]
