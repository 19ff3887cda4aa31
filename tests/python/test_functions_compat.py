"""FUNCTION / FCALL details as Redis 7.0 has them (unit/functions of Redis's suite): function names
are case-insensitive, `name="foo"` in the library header is unquoted, Redis's error texts, COMMAND
GETKEYS of FCALL and SORT, and a FUNCTION KILL that does not outlive the killed function."""

from __future__ import annotations

import pytest

from helpers import Conn, cmd_error, error_text, wait_until


def lib(name: str, fname: str = "test", body: str = "return 'hello'") -> str:
    return f"#!lua name={name}\nredis.register_function('{fname}', function(KEYS, ARGV) {body} end)"


@pytest.fixture(autouse=True)
def _flush_functions(r2):
    r2.execute_command("FUNCTION", "FLUSH")
    yield
    r2.execute_command("FUNCTION", "FLUSH")


def test_function_names_are_case_insensitive(r2):
    assert r2.execute_command("FUNCTION", "LOAD", lib("test")) == "test"
    assert r2.execute_command("FCALL", "TEST", 0) == "hello"
    r2.execute_command("FUNCTION", "LOAD", "#!lua name=ro\nredis.register_function{"
                       "function_name='ReadOnly', callback=function() return 'ro' end, "
                       "flags={'no-writes'}}")
    assert r2.execute_command("FCALL_RO", "readonly", 0) == "ro"
    # The registered spelling is kept.
    r2.execute_command("FUNCTION", "LOAD", lib("lib2", "MixedCase"))
    listed = r2.execute_command("FUNCTION", "LIST", "LIBRARYNAME", "lib2")
    assert listed[0][5][0][1] == "MixedCase"
    assert "Function mixedcase already exists" in cmd_error(
        r2, "FUNCTION", "LOAD", lib("lib3", "mixedcase"))


def test_library_name_in_quotes(r2):
    code = "#!lua name=\"foo\"\nredis.register_function('foo', function() return 1 end)"
    assert r2.execute_command("FUNCTION", "LOAD", "REPLACE", code) == "foo"
    assert r2.execute_command("FCALL", "foo", 0) == 1
    bad = "#!lua name=\"foo\nredis.register_function('foo', function() return 1 end)"
    assert cmd_error(r2, "FUNCTION", "LOAD", bad) == "ERR Invalid library metadata"


def test_error_texts(server, r2):
    assert cmd_error(r2, "FUNCTION", "LOAD", "foo", "bar", lib("test")) == \
        "ERR Unknown option given: foo"
    assert r2.execute_command("FUNCTION", "LOAD", "REPLACE", "replace", lib("test")) == "test"
    assert cmd_error(r2, "FUNCTION", "LOAD", lib("test")) == "ERR Library 'test' already exists"
    assert cmd_error(r2, "FCALL", "test", "bad_arg") == "ERR Bad number of keys provided"
    assert cmd_error(r2, "EVAL", "return 1", "bad_arg") == \
        "ERR value is not an integer or out of range"
    assert cmd_error(r2, "FUNCTION", "LIST", "LIBRARYNAME") == \
        "ERR library name argument was not given"
    assert cmd_error(r2, "FUNCTION", "LIST", "bad_argument") == "ERR Unknown argument bad_argument"
    names = "Library names can only contain letters, numbers, or underscores(_) and must be at least one character long"
    assert names in cmd_error(r2, "FUNCTION", "LOAD", lib("bad-name"))
    assert names in cmd_error(r2, "FUNCTION", "LOAD", lib("ok", "bad-name"))
    binary = server.client(decode_responses=False)
    dump = binary.execute_command("FUNCTION", "DUMP")
    assert "Library test already exists" in error_text(
        pytest.raises(Exception, binary.execute_command, "FUNCTION", "RESTORE", dump).value)


def test_command_getkeys_of_fcall_and_sort(raw2):
    r2 = raw2
    assert r2.execute_command("COMMAND", "GETKEYS", "fcall", "test", 1, "x", "foo") == ["x"]
    assert r2.execute_command("COMMAND", "GETKEYS", "fcall_ro", "test", 1, "x", "foo") == ["x"]
    assert r2.execute_command("COMMAND", "GETKEYS", "eval", "return 1", 2, "a", "b", "c") == \
        ["a", "b"]
    assert r2.execute_command("COMMAND", "GETKEYS", "sort", "abc", "store", "def") == \
        ["abc", "def"]
    assert r2.execute_command("COMMAND", "GETKEYS", "sort", "abc", "store", "invalid", "store",
                              "stillbad", "store", "def") == ["abc", "def"]
    assert r2.execute_command("COMMAND", "GETKEYS", "zunionstore", "d", 2, "a", "b") == \
        ["d", "a", "b"]
    assert r2.execute_command("COMMAND", "GETKEYS", "xread", "COUNT", 2, "STREAMS", "s1", "s2",
                              "0", "0") == ["s1", "s2"]


def test_load_replace_after_function_kill(server, admin, r2):
    admin.config_set("busy-reply-threshold", 50)
    try:
        code = lib("test", "test", "local a = 1 while true do a = a + 1 end")
        r2.execute_command("FUNCTION", "LOAD", code)
        runner = Conn(server.client())
        runner.send("FCALL", "test", 0)
        other = Conn(server.client())

        def killed():
            try:
                return other("FUNCTION", "KILL") == "OK"
            except Exception as e:  # noqa: BLE001 - NOTBUSY until the function runs
                assert "NOTBUSY" in error_text(e), e
                return False

        wait_until(killed, timeout=10, what="FUNCTION KILL")
        with pytest.raises(Exception) as ei:
            runner.read()
        assert "killed by user" in str(ei.value)
        for _ in range(2):
            assert runner("FUNCTION", "LOAD", "REPLACE", code) == "test"
        assert runner("FUNCTION", "LOAD", "REPLACE", lib("test")) == "test"
        assert runner("FCALL", "test", 0) == "hello"
    finally:
        admin.config_set("busy-reply-threshold", 5000)
