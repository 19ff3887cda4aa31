"""EVAL, EVALSHA and FCALL queued by MULTI run at EXEC, atomically with the rest of the
transaction, as in Redis (they used to be refused inside MULTI)."""

from __future__ import annotations

import pytest
import redis

LIB = """#!lua name=mlib
redis.register_function('bump', function(keys, args) return redis.call('INCRBY', keys[1], args[1]) end)
redis.register_function{function_name='peek', callback=function(keys) return redis.call('GET', keys[1]) end, flags={'no-writes'}}
"""


@pytest.fixture
def lib(r2):
    r2.function_load(LIB, replace=True)
    yield
    r2.function_flush()


def test_scripts_run_at_exec_in_order(r2, lib):
    sha = r2.script_load("return redis.call('INCR', KEYS[1])")
    tx = r2.pipeline(transaction=True)
    tx.set("n", "1")
    tx.eval("return redis.call('INCR', KEYS[1])", 1, "n")
    tx.evalsha(sha, 1, "n")
    tx.fcall("bump", 1, "n", 10)
    tx.fcall_ro("peek", 1, "n")
    tx.eval_ro("return redis.call('GET', KEYS[1])", 1, "n")
    tx.get("n")
    assert tx.execute() == [True, 2, 3, 13, "13", "13", "13"]


def test_queued_replies_and_errors_inside_exec(raw2):
    c = raw2
    c.execute_command("MULTI")
    for cmd in (("EVAL", "return 1", 0), ("EVAL", "return redis.call('NOSUCH')", 0),
                ("EVALSHA", "0" * 40, 0), ("EVAL", "return 2", 5), ("SET", "after", "yes")):
        assert c.execute_command(*cmd) == "QUEUED"
    replies = c.execute_command("EXEC")
    assert replies[0] == 1
    assert isinstance(replies[1], redis.ResponseError)
    assert "Unknown Redis command called from script" in str(replies[1])
    assert isinstance(replies[2], redis.ResponseError) and "No matching script" in str(replies[2])
    assert isinstance(replies[3], redis.ResponseError)
    assert "Number of keys can't be greater than number of args" in str(replies[3])
    assert replies[4] == "OK"
    assert c.get("after") == "yes"


def test_watch_aborts_a_transaction_with_a_script(server, r2):
    r2.set("w", "0")
    r2.execute_command("WATCH", "w")
    r2.execute_command("MULTI")
    r2.execute_command("EVAL", "return redis.call('SET', KEYS[1], 'script')", 1, "w")
    server.client().set("w", "other")
    assert r2.execute_command("EXEC") is None
    assert r2.get("w") == "other"


def test_a_script_in_multi_sees_the_transactions_writes(r2):
    tx = r2.pipeline(transaction=True)
    tx.rpush("l", "a", "b")
    tx.eval("return redis.call('LLEN', KEYS[1])", 1, "l")
    tx.delete("l")
    tx.eval("return redis.call('EXISTS', KEYS[1])", 1, "l")
    assert tx.execute() == [2, 2, 1, 0]


@pytest.mark.ferrite_only
def test_an_endless_script_in_multi_is_busy_and_killable(server, admin):
    import threading
    import time

    admin.config_set("busy-reply-threshold", 100)
    try:
        c = server.client(decode_responses=True)
        result = {}

        def run():
            tx = c.pipeline(transaction=True)
            tx.set("before", "1")
            tx.eval("while true do end", 0)
            result["r"] = tx.execute(raise_on_error=False)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        other = server.client(decode_responses=True)
        deadline = time.monotonic() + 10
        while True:
            assert time.monotonic() < deadline, "never busy"
            try:
                other.get("before")
            except redis.ResponseError as e:
                assert str(e).startswith("BUSY"), e
                break
            time.sleep(0.05)
        assert other.execute_command("SCRIPT", "KILL") == "OK"
        t.join(10)
        assert not t.is_alive()
        assert result["r"][0] is True
        assert "Script killed by user" in str(result["r"][1])
        assert other.get("before") == "1"
    finally:
        admin.config_set("busy-reply-threshold", 5000)
