"""Scripts as Redis runs them (unit/scripting of Redis's suite): blocking commands run without
blocking inside scripts (Redis 7.2; 7.0 refused them), XREAD/XREADGROUP with BLOCK are refused, and `unpack` takes as many values as Redis's Lua
allows (LUAI_MAXCSTACK)."""

from __future__ import annotations

import pytest
import redis

from helpers import cmd_error


@pytest.mark.parametrize("call", [
    "redis.pcall('blpop','empty_list',0)",
    "redis.pcall('brpop','empty_list',0)",
    "redis.pcall('brpoplpush','empty_list1','empty_list2',0)",
    "redis.pcall('blmove','empty_list1','empty_list2','LEFT','LEFT',0)",
    "redis.pcall('bzpopmin','empty_zset',0)",
    "redis.pcall('bzpopmax','empty_zset',0)",
])
@pytest.mark.redis72
def test_blocking_commands_run_without_blocking_in_scripts(r2, call):
    # Redis 7.2 (7.0 refused them as not allowed from script): an empty key answers nil at once.
    r2.rpush("x", "a")
    assert r2.execute_command("EVAL", f"return {call}", 0) is None
    # Nothing else was touched.
    assert r2.lrange("x", 0, -1) == ["a"]


@pytest.mark.redis72
def test_blpop_in_a_script_pops_what_is_there(r2):
    r2.rpush("x", "a", "b")
    assert r2.execute_command("EVAL", "return redis.call('blpop', KEYS[1], 0)", 1, "x") \
        == ["x", "a"]
    assert r2.execute_command("EVAL", "return redis.call('bzpopmin', KEYS[1], 0)", 1, "z") \
        is None


@pytest.mark.redis72
def test_wait_and_select_from_scripts(r2):
    assert r2.execute_command("EVAL", "return redis.pcall('wait','1','0')", 0) == 0
    assert r2.execute_command("EVAL", "return redis.call('select','0')", 0) == "OK"
    assert cmd_error(r2, "EVAL", "return redis.call('select',99)", 0).startswith(
        "ERR DB index is out of range")


def test_blmpop_and_bzmpop_run_without_blocking_in_scripts(r2):
    # Redis 7.0 does not flag them noscript: they answer at once, as inside MULTI.
    r2.rpush("l", "a")
    assert r2.execute_command("EVAL", "return redis.call('blmpop',0,1,KEYS[1],'LEFT')", 1, "l") \
        == ["l", ["a"]]
    assert r2.execute_command("EVAL", "return redis.call('bzmpop',0,1,KEYS[1],'MIN')", 1, "z") \
        is None


def test_xread_with_block_is_not_allowed_from_scripts(r2):
    r2.execute_command("XGROUP", "CREATE", "s", "g", "$", "MKSTREAM")
    assert r2.execute_command("EVAL", "return redis.pcall('xread','STREAMS','s','$')", 1, "s") \
        is None
    assert cmd_error(r2, "EVAL", "return redis.pcall('xread','BLOCK',0,'STREAMS','s','$')", 1,
                     "s") == "ERR xread command is not allowed with BLOCK option from scripts"
    assert r2.execute_command(
        "EVAL", "return redis.pcall('xreadgroup','group','g','c','STREAMS','s','>')", 1, "s") \
        is None
    assert cmd_error(
        r2, "EVAL", "return redis.pcall('xreadgroup','group','g','c','BLOCK',0,'STREAMS','s','>')",
        1, "s") == "ERR xreadgroup command is not allowed with BLOCK option from scripts"


def test_unpack_of_7999_values(r2):
    fill = "local a = {} for i = 1, 7999 do a[i] = 1 end "
    assert r2.execute_command("EVAL", fill + "return redis.call('lpush', KEYS[1], unpack(a))",
                              1, "l") == 7999
    assert len(r2.execute_command("EVAL", fill + "return {unpack(a)}", 0)) == 7999
    assert "too many results to unpack" in cmd_error(
        r2, "EVAL", fill + "a[8000] = 1 return {unpack(a)}", 0)


def test_sort_by_constant_is_ordered_for_scripts(r2):
    members = "a b c d e f g h i l m n o p q r s t u v z aa aaa azz".split()
    r2.sadd("myset", *members)
    assert r2.execute_command("EVAL", "return redis.call('sort',KEYS[1],'by','_')", 1,
                              "myset") == sorted(members)
    r2.delete("myset")
    r2.sadd("myset", "c", "a", "b")
    assert r2.execute_command(
        "EVAL", "return redis.call('sort',KEYS[1],'by','_','get','#','get','_:*')", 1,
        "myset") == ["a", None, "b", None, "c", None]
    # Lists keep their own order.
    r2.rpush("l", "b", "a")
    assert r2.execute_command("EVAL", "return redis.call('sort',KEYS[1],'by','_')", 1, "l") == \
        ["b", "a"]


def test_min_replicas_to_write_refuses_writes(admin):
    # Redis's "not enough good replicas" (unit/scripting): Ferrite has no replicas, so any
    # min-replicas-to-write above 0 refuses writes; reads and no-writes scripts go on.
    admin.set("x", "some value")
    admin.config_set("min-replicas-to-write", 1)
    try:
        with pytest.raises(redis.ResponseError, match="Not enough good replicas to write"):
            admin.set("x", "other")
        assert admin.get("x") == "some value"
        assert admin.eval("#!lua flags=no-writes\nreturn redis.call('get','x')", 1, "x") == \
            "some value"
        assert admin.eval("return redis.call('get','x')", 1, "x") == "some value"
        with pytest.raises(redis.ResponseError, match="Not enough good replicas to write"):
            admin.eval("#!lua\nreturn redis.call('get','x')", 1, "x")
        with pytest.raises(redis.ResponseError, match="Not enough good replicas to write"):
            admin.eval("return redis.call('set','x', 1)", 1, "x")
        assert admin.get("x") == "some value"
    finally:
        admin.config_set("min-replicas-to-write", 0)
    assert admin.set("x", "after") is True
