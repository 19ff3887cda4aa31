//! One-shot mode: replies printed like redis-cli (RESP2 and RESP3), `--raw`, `--json`, errors
//! and exit codes, bad flags, unreachable servers, tenants, commands from standard input.

use std::collections::HashSet;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use crate::{cli, cli_command, cli_ok, free_port, run, run_cmd_bytes, server};

fn lines(s: &str) -> HashSet<&str> {
    s.lines().collect()
}

#[test]
fn strings_numbers_and_nil_in_both_protocols() {
    let s = server(&[]);
    assert_eq!(cli_ok(&s, &["SET", "greeting", "hello world"]), "OK\n");
    for proto in ["-2", "-3"] {
        assert_eq!(
            cli_ok(&s, &[proto, "GET", "greeting"]),
            "\"hello world\"\n",
            "{proto}"
        );
        assert_eq!(cli_ok(&s, &[proto, "GET", "missing"]), "(nil)\n", "{proto}");
        assert_eq!(cli_ok(&s, &[proto, "EXISTS", "greeting"]), "(integer) 1\n");
    }
    // -2 speaks RESP2 on the wire, -3 (the default) RESP3.
    for (flags, resp) in [
        (&["-2"][..], "resp=2"),
        (&["-3"], "resp=3"),
        (&[], "resp=3"),
    ] {
        let mut args = flags.to_vec();
        args.extend(["CLIENT", "INFO"]);
        let info = cli_ok(&s, &args);
        assert!(
            info.split_whitespace().any(|f| f == resp),
            "{flags:?}: {info}"
        );
    }
    // A RESP2 session switched to RESP3 by hand still decodes (and shows RESP2's shapes).
    assert!(cli_ok(&s, &["-2", "HELLO", "3"]).contains("\"proto\"\n"));
    assert_eq!(
        cli_ok(&s, &["INCRBY", "n", "-5"]),
        "(integer) -5\n",
        "negative arguments are arguments"
    );
    // Escapes: quotes, newlines and non-ASCII bytes are shown escaped, as redis-cli does.
    cli_ok(&s, &["SET", "odd", "say \"hi\"\n\u{e9}"]);
    assert_eq!(
        cli_ok(&s, &["GET", "odd"]),
        "\"say \\\"hi\\\"\\n\\xc3\\xa9\"\n"
    );
    assert_eq!(cli_ok(&s, &["--raw", "GET", "odd"]), "say \"hi\"\n\u{e9}\n");
    // Doubles are typed in RESP3 and plain strings in RESP2.
    cli_ok(&s, &["ZADD", "z", "1.5", "a", "2", "b"]);
    assert_eq!(cli_ok(&s, &["ZSCORE", "z", "a"]), "(double) 1.5\n");
    assert_eq!(cli_ok(&s, &["-2", "ZSCORE", "z", "a"]), "\"1.5\"\n");
    // Nested arrays line up under their index.
    assert_eq!(
        cli_ok(&s, &["ZRANGE", "z", "0", "-1", "WITHSCORES"]),
        "1) 1) \"a\"\n   2) (double) 1.5\n2) 1) \"b\"\n   2) (double) 2\n"
    );
    assert_eq!(
        cli_ok(&s, &["-2", "ZRANGE", "z", "0", "-1", "WITHSCORES"]),
        "1) \"a\"\n2) \"1.5\"\n3) \"b\"\n4) \"2\"\n"
    );
    assert_eq!(
        cli_ok(&s, &["LRANGE", "nolist", "0", "-1"]),
        "(empty array)\n"
    );
}

#[test]
fn hashes_as_maps_arrays_raw_and_json() {
    let s = server(&[]);
    assert_eq!(cli_ok(&s, &["HSET", "one", "f", "v"]), "(integer) 1\n");
    assert_eq!(cli_ok(&s, &["HGETALL", "one"]), "f: \"v\"\n");
    assert_eq!(
        cli_ok(&s, &["-2", "HGETALL", "one"]),
        "1) \"f\"\n2) \"v\"\n"
    );
    cli_ok(&s, &["HSET", "h", "f1", "v1", "f2", "v2"]);
    // Field order is the hash's; compare as sets.
    let out = cli_ok(&s, &["-3", "HGETALL", "h"]);
    assert_eq!(lines(&out), lines("f1: \"v1\"\nf2: \"v2\"\n"), "{out}");
    let out = cli_ok(&s, &["-2", "HGETALL", "h"]);
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(
        out.starts_with("1) \"f") && out.contains("\n4) \"v"),
        "{out}"
    );
    // --raw prints RESP3 map entries as `key value` lines, as redis-cli -3 --raw does; RESP2
    // sends a flat array, one element per line.
    let raw = cli_ok(&s, &["--raw", "HGETALL", "h"]);
    assert_eq!(lines(&raw), lines("f1 v1\nf2 v2\n"), "{raw}");
    let raw = cli_ok(&s, &["-2", "--raw", "HGETALL", "h"]);
    assert_eq!(raw.lines().count(), 4, "{raw}");
    assert_eq!(lines(&raw), lines("f1\nv1\nf2\nv2\n"));

    let json: serde_json::Value =
        serde_json::from_str(&cli_ok(&s, &["--json", "HGETALL", "h"])).expect("json");
    assert_eq!(json, serde_json::json!({"f1": "v1", "f2": "v2"}));
    let json: serde_json::Value =
        serde_json::from_str(&cli_ok(&s, &["--json", "-2", "HGETALL", "one"])).expect("json");
    assert_eq!(json, serde_json::json!(["f", "v"]), "RESP2 has no maps");
    assert_eq!(cli_ok(&s, &["--json", "GET", "nothing"]), "null\n");
    assert_eq!(cli_ok(&s, &["--json", "HLEN", "h"]), "2\n");
    assert_eq!(cli_ok(&s, &["--raw", "GET", "nothing"]), "\n");
}

#[test]
fn maps_keep_the_servers_field_order() {
    let s = server(&[]);
    let hello = cli_ok(&s, &["HELLO", "3"]);
    let fields: Vec<&str> = hello
        .lines()
        .filter_map(|l| l.split(':').next())
        .take(3)
        .collect();
    assert_eq!(fields, ["server", "version", "proto"], "{hello}");
    assert!(
        cli_ok(&s, &["-2", "HELLO", "3"]).starts_with(" 1) \"server\"\n 2) \"ferrite\"\n"),
        "RESP2 shows the map as a flat list in the same order"
    );
}

#[test]
fn info_prints_its_lines() {
    let s = server(&[]);
    for proto in ["-2", "-3"] {
        let out = cli_ok(&s, &[proto, "INFO", "server"]);
        assert!(out.starts_with("# Server\n"), "{proto}: {out}");
        assert!(!out.contains("\\r\\n") && !out.contains('\r'), "{out}");
    }
}

#[test]
fn error_replies_exit_1_on_stderr() {
    let s = server(&[]);
    let r = cli(&s, &["GET"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stdout, "");
    assert_eq!(
        r.stderr.trim_end(),
        "(error) ERR wrong number of arguments for 'get' command"
    );
    cli_ok(&s, &["LPUSH", "l", "x"]);
    let r = cli(&s, &["GET", "l"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.starts_with("(error) WRONGTYPE"), "{r:?}");
    let r = cli(&s, &["NOSUCHCOMMAND", "x"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.starts_with("(error) ERR unknown command"), "{r:?}");
    // --raw prints errors bare, as redis-cli --raw does (still on stderr, still exit 1).
    let r = cli(&s, &["--raw", "GET"]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (1, "", "ERR wrong number of arguments for 'get' command\n"),
        "{r:?}"
    );
    let port = s.port.to_string();
    let r = run(&["-p", &port, "--raw"], Some("GET\nGET l\n"));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.starts_with("ERR wrong number"), "{r:?}");
    assert!(r.stderr.contains("\nWRONGTYPE "), "{r:?}");
    // A migration that does not exist is a failed command, not a crash.
    let r = cli(&s, &["migrate", "verify", "mig_nope"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("no such migration 'mig_nope'"), "{r:?}");
}

#[test]
fn bad_flags_exit_2_with_usage() {
    for args in [
        &["--bogus", "PING"][..],
        &["-p", "notaport", "PING"],
        &["-p", "70000", "PING"],
        &["--user", "acme", "PING"],
        &["-2", "-3", "PING"],
        &["--raw", "--json", "PING"],
        &["migrate"],
        &["migrate", "start", "acme"],
        &["migrate", "start", "acme", "h:1", "--mode", "slow"],
        &["migrate", "watch", "--interval-ms", "1"],
        &["migrate", "status", "mig_1", "--all"],
        &["migrate", "explode", "mig_1"],
    ] {
        let r = run(args, None);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stderr.contains("Usage:"), "{args:?}: {r:?}");
        assert!(!r.stderr.contains("panicked"), "{r:?}");
    }
    let r = run(&["--help"], None);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains("-h, --host") && r.stdout.contains("migrate watch"),
        "{r:?}"
    );
    let r = run(&["migrate", "watch", "--help"], None);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("--interval-ms"), "{r:?}");
}

#[test]
fn unreachable_server_exits_3_naming_it() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    for args in [
        vec!["-p", &port.to_string(), "PING"],
        vec!["-p", &port.to_string(), "migrate", "status", "--all"],
        vec!["-h", "127.0.0.1", "-p", &port.to_string()],
    ] {
        let args: Vec<&str> = args.iter().map(|s| s.as_ref()).collect();
        let r = run(&args, None);
        assert_eq!(r.code, 3, "{args:?}: {r:?}");
        assert!(
            r.stderr
                .contains(&format!("Could not connect to Ferrite at {addr}")),
            "{r:?}"
        );
        assert!(!r.stderr.contains("panicked"), "{r:?}");
    }
}

#[test]
fn tenants_authenticate_and_are_isolated() {
    let s = server(&[]);
    assert_eq!(
        cli_ok(&s, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]),
        "OK\n"
    );
    let as_acme = ["--user", "acme", "-a", "pw"];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = base.to_vec();
        v.extend_from_slice(extra);
        v
    }
    assert_eq!(
        cli_ok(&s, &with(&as_acme, &["SET", "k", "tenant value"])),
        "OK\n"
    );
    assert_eq!(
        cli_ok(&s, &with(&as_acme, &["-2", "GET", "k"])),
        "\"tenant value\"\n"
    );
    assert_eq!(
        cli_ok(&s, &["GET", "k"]),
        "(nil)\n",
        "the default tenant sees nothing"
    );
    let r = cli(&s, &["--user", "acme", "-a", "wrong", "PING"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("WRONGPASS"), "{r:?}");
    // The password may come from the environment instead of the command line.
    let port = s.port.to_string();
    let mut c = crate::cli_command(&["-p", &port, "--user", "acme", "GET", "k"]);
    c.env("FERRITE_CLI_AUTH", "pw");
    let r = crate::run_cmd(c, None);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "\"tenant value\"\n"),
        "{r:?}"
    );
}

#[test]
fn requirepass_needs_a_password() {
    let s = server(&["--requirepass", "secret"]);
    let port = s.port.to_string();
    let r = run(&["-p", &port, "PING"], None);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.starts_with("(error) NOAUTH") && r.stderr.contains("-a <password>"),
        "{r:?}"
    );
    assert_eq!(cli_ok(&s, &["-a", "secret", "PING"]), "PONG\n");
    let r = cli(&s, &["-a", "wrong", "PING"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.starts_with("(error) WRONGPASS"), "{r:?}");
}

#[test]
fn commands_from_standard_input() {
    let s = server(&[]);
    let port = s.port.to_string();
    let r = run(
        &["-p", &port],
        Some("SET a 1\nGET a\n\nINCR a\nSET b \"two words\"\nGET b\n"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "OK\n\"1\"\n(integer) 2\nOK\n\"two words\"\n");
    // A failing line is reported and the rest still runs; the exit code says something failed.
    let r = run(&["-p", &port, "--raw"], Some("GET\nGET b\n"));
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stdout, "two words\n");
    assert!(r.stderr.contains("wrong number of arguments"), "{r:?}");
}

#[test]
fn binary_values_from_arguments_and_standard_input() {
    let s = server(&[]);
    let port = s.port.to_string();
    let value = b"\xff\x01a\x80 \xc3";
    let mut set = cli_command(&["-p", &port, "SET"]);
    set.arg(OsStr::from_bytes(b"bin\xfe"))
        .arg(OsStr::from_bytes(value));
    let r = run_cmd_bytes(set, None);
    assert_eq!((r.code, r.stdout.as_str()), (0, "OK\n"), "{r:?}");
    let get = |flags: &[&str]| {
        let mut c = cli_command(&["-p", &port]);
        c.args(flags).arg("GET").arg(OsStr::from_bytes(b"bin\xfe"));
        run_cmd_bytes(c, None)
    };
    // --raw: the exact bytes.
    let r = get(&["--raw"]);
    assert_eq!(r.stdout_bytes, b"\xff\x01a\x80 \xc3\n", "{r:?}");
    // The default form escapes them, as redis-cli does.
    assert_eq!(get(&[]).stdout, "\"\\xff\\x01a\\x80 \\xc3\"\n");
    // JSON cannot hold them: lossy, documented.
    assert_eq!(
        get(&["--json"]).stdout,
        "\"\u{fffd}\\u0001a\u{fffd} \u{fffd}\"\n"
    );

    // Standard input is read as bytes, line by line: a non-UTF-8 line works, and so do the
    // lines after it.
    let mut input = b"SET in \xfe\xfd\nGET in\n".to_vec();
    input.extend_from_slice(b"SET q1 a\"b c\"\r\nGET q1\nGET bin\xfe\n");
    let r = run_cmd_bytes(cli_command(&["-p", &port, "--raw"]), Some(&input));
    assert_eq!(r.code, 0, "{r:?}");
    let mut want = b"OK\n\xfe\xfd\nOK\nab c\n".to_vec();
    want.extend_from_slice(value);
    want.push(b'\n');
    assert_eq!(r.stdout_bytes, want, "{r:?}");
}

#[test]
fn quotes_split_like_redis_cli() {
    let s = server(&[]);
    let port = s.port.to_string();
    let r = run(
        &["-p", &port],
        Some("SET q1 a\"b c\"\nGET q1\nSET q2 'x y'z\nSET q3 \"a\"b\nGET q2\n"),
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stdout, "OK\n\"ab c\"\n(nil)\n", "{r:?}");
    assert_eq!(
        r.stderr,
        "Invalid argument(s): SET q2 'x y'z\nInvalid argument(s): SET q3 \"a\"b\n"
    );
}

#[test]
fn a_server_that_wants_a_password_first_accepts_auth_from_standard_input() {
    let s = server(&["--requirepass", "secret"]);
    let port = s.port.to_string();
    let r = run(&["-p", &port], Some("PING\nAUTH secret\nPING\nSET a 1\n"));
    assert_eq!(r.stdout, "OK\nPONG\nOK\n", "{r:?}");
    assert_eq!(r.code, 1, "the refused PING counts as a failure: {r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "(error) NOAUTH Authentication required by 127.0.0.1:{port}: type AUTH <password>, \
             or AUTH <tenant> <password>\n(error) NOAUTH Authentication required.\n"
        )
    );
}

/// A listener on a free port whose connections are handed to `serve` on a thread each.
fn fake_server(serve: fn(std::net::TcpStream)) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || serve(conn));
        }
    });
    port
}

#[test]
fn a_peer_that_is_not_a_redis_server_is_named_plainly() {
    let http = fake_server(|mut c| {
        let mut buf = [0u8; 512];
        let _ = c.read(&mut buf);
        let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    });
    let r = run(&["-p", &http.to_string(), "PING"], None);
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "Protocol error from 127.0.0.1:{http}: got \"H\" as reply type byte (is it a \
             Redis-protocol server?)\n"
        )
    );
}

#[test]
fn a_server_that_never_answers_the_handshake_times_out_with_the_connect_timeout() {
    let silent = fake_server(|c| {
        std::thread::sleep(Duration::from_secs(120));
        drop(c);
    });
    let t = Instant::now();
    let r = run(&["-p", &silent.to_string(), "PING"], None);
    let took = t.elapsed();
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "Could not connect to Ferrite at 127.0.0.1:{silent}: timed out waiting for its reply\n"
        )
    );
    // The 5 s connect timeout, not the 90 s command timeout.
    assert!(took < Duration::from_secs(15), "{took:?}");
}
