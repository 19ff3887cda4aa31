//! One-shot mode: replies printed like redis-cli (RESP2 and RESP3), `--raw`, `--json`, errors
//! and exit codes, bad flags, unreachable servers, tenants, commands from standard input.

use std::collections::HashSet;

use crate::{cli, cli_ok, free_port, run, server};

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
    let raw = cli_ok(&s, &["--raw", "HGETALL", "h"]);
    let raw_lines: Vec<&str> = raw.lines().collect();
    assert_eq!(raw_lines.len(), 4, "{raw}");
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
    let r = cli(&s, &["PING"]);
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
