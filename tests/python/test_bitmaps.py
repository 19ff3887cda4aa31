"""Bitmap commands through redis-py (RESP2 and RESP3): SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP,
BITFIELD, BITFIELD_RO. Run with FERRITE_TEST_REDIS_SERVER to check the expectations against Redis."""

from __future__ import annotations

import random

from helpers import SYNTAX, WRONGTYPE, cmd_error

BAD_OFFSET = "ERR bit offset is not an integer or out of range"


def test_setbit_getbit_and_growth(r):
    assert r.setbit("b", 7, 1) == 0
    assert r.get("b") == "\x01"
    assert r.setbit("b", 7, 1) == 1
    assert r.getbit("b", 7) == 1
    assert r.getbit("b", 8000) == 0
    assert r.setbit("pad", 23, 0) == 0
    assert r.strlen("pad") == 3
    assert cmd_error(r, "SETBIT", "b", "-1", "1") == BAD_OFFSET
    assert cmd_error(r, "SETBIT", "b", str(2**32), "1") == BAD_OFFSET
    assert cmd_error(r, "SETBIT", "b", "0", "2") == "ERR bit is not an integer or out of range"
    r.rpush("l", "x")
    assert cmd_error(r, "SETBIT", "l", "0", "1") == WRONGTYPE
    assert cmd_error(r, "GETBIT", "l", "0") == WRONGTYPE


def test_bitcount_and_bitpos(r):
    r.set("k", "foobar")
    assert r.bitcount("k") == 26
    assert r.bitcount("k", 1, 1) == 6
    assert r.execute_command("BITCOUNT", "k", 5, 30, "BIT") == 17
    assert r.execute_command("BITCOUNT", "k", -1, -2) == 0
    assert cmd_error(r, "BITCOUNT", "k", "0") == SYNTAX
    r.set("z", b"\x00\xff\xf0")
    assert r.bitpos("z", 1) == 8
    assert r.bitpos("z", 1, 2) == 16
    assert r.execute_command("BITPOS", "z", 1, 7, 15, "BIT") == 8
    r.set("ones", b"\xff\xff")
    assert r.bitpos("ones", 0) == 16
    assert r.bitpos("ones", 0, 0, -1) == -1
    assert r.bitpos("missing", 0) == 0
    assert r.bitpos("missing", 1) == -1
    assert cmd_error(r, "BITPOS", "z", "2") == "ERR The bit argument must be 1 or 0."


def test_bitop(r):
    r.set("a", "foobar")
    r.set("b", "abcdef")
    assert r.bitop("AND", "d", "a", "b") == 6
    assert r.get("d") == "`bc`ab"
    assert r.bitop("OR", "d", "a", "b") == 6
    assert r.get("d") == "goofev"
    assert r.bitop("XOR", "d", "a", "a") == 6
    assert r.bitcount("d") == 0
    r.set("short", "a")
    assert r.bitop("NOT", "d", "short") == 1
    # NOT "a" (0x61) is 0x9e: five bits set.
    assert r.bitcount("d") == 5 and r.strlen("d") == 1
    assert r.bitop("OR", "d", "nope1", "nope2") == 0
    assert r.exists("d") == 0
    assert cmd_error(r, "BITOP", "NOT", "d", "a", "b") == (
        "ERR BITOP NOT must be called with a single source key."
    )
    assert cmd_error(r, "BITOP", "NAND", "d", "a") == SYNTAX
    r.rpush("l", "x")
    assert cmd_error(r, "BITOP", "OR", "d", "a", "l") == WRONGTYPE


def test_bitfield(r):
    assert r.execute_command("BITFIELD", "f", "SET", "i8", 0, 100, "GET", "u4", 0) == [0, 6]
    assert r.execute_command("BITFIELD", "f", "INCRBY", "i8", 0, 100) == [-56]
    assert r.execute_command("BITFIELD", "f", "OVERFLOW", "SAT", "INCRBY", "i8", 0, -100) == [-128]
    assert r.execute_command("BITFIELD", "f", "OVERFLOW", "FAIL", "INCRBY", "i8", 0, -1) == [None]
    assert r.execute_command("BITFIELD", "g", "SET", "u8", "#1", 255, "GET", "u8", 8) == [0, 255]
    assert r.execute_command("BITFIELD_RO", "g", "GET", "u8", 8) == [255]
    assert cmd_error(r, "BITFIELD_RO", "g", "SET", "u8", 0, 1) == (
        "ERR BITFIELD_RO only supports the GET subcommand"
    )
    assert cmd_error(r, "BITFIELD", "g", "GET", "u64", 0).startswith("ERR Invalid bitfield type")
    assert cmd_error(r, "BITFIELD", "g", "OVERFLOW", "X") == "ERR Invalid OVERFLOW type specified"
    assert r.execute_command("BITFIELD", "nope", "GET", "i64", 0) == [0]
    assert r.exists("nope") == 0


def test_bitfield_agrees_with_setbit_on_random_fields(r):
    rnd = random.Random(5)
    for _ in range(50):
        bits = rnd.randint(1, 63)
        offset = rnd.randint(0, 200)
        value = rnd.randint(0, 2**bits - 1)
        r.delete("x")
        r.execute_command("BITFIELD", "x", "SET", f"u{bits}", offset, value)
        read = 0
        for i in range(bits):
            read = (read << 1) | r.getbit("x", offset + i)
        assert read == value


def test_bit_commands_in_a_transaction(r):
    p = r.pipeline(transaction=True)
    p.setbit("t", 3, 1)
    p.bitcount("t")
    p.execute_command("BITFIELD", "t", "INCRBY", "u4", 0, 1)
    assert p.execute() == [0, 1, [2]]


def test_setbit_offset_limit_follows_proto_max_bulk_len(admin, r):
    old = admin.config_get("proto-max-bulk-len")["proto-max-bulk-len"]
    try:
        admin.config_set("proto-max-bulk-len", "1048576")
        assert cmd_error(r, "SETBIT", "lim", str(8 * 1048576), "1") == BAD_OFFSET
        assert r.setbit("lim", 8 * 1048576 - 1, 1) == 0
        assert r.strlen("lim") == 1048576
    finally:
        admin.config_set("proto-max-bulk-len", old)
