//! Malformed and oversized input: the right error, the offending connection closed, the server
//! unharmed and other clients unaffected.

use std::io::Write;
use std::time::Duration;

use redis::Commands;

use crate::common::{Server, raw_exchange};

fn assert_serving(s: &Server) {
    let mut c = s.conn();
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn protocol_errors_close_only_the_offender() {
    let s = Server::start_with(&["--log-level", "error"]);
    let mut bystander = s.conn();
    let _: () = bystander.set("k", "v").unwrap();
    let cases: &[(&[u8], &str)] = &[
        (
            b"*1\r\n$999999999999\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*abc\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*99999999\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n*1\r\n$4\r\nPING\r\n",
            "-ERR Protocol error: expected '$', got '*'\r\n",
        ),
        (
            b"*2\r\n$3\r\nGET\r\n:12\r\n",
            "-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"SET \"unterminated\r\n",
            "-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
        (
            b"*1\r\n$3\r\nabcde\r\n",
            "-ERR Protocol error: expected CRLF after bulk string\r\n",
        ),
    ];
    for (input, want) in cases {
        let mut t = s.tcp();
        let got = raw_exchange(&mut t, input, Duration::from_secs(5));
        assert_eq!(String::from_utf8_lossy(&got), *want, "input {input:?}");
        assert_serving(&s);
    }
    // A line of 64 KiB without a newline is refused without waiting for more.
    let mut t = s.tcp();
    let got = raw_exchange(&mut t, &vec![b'A'; 70 * 1024], Duration::from_secs(5));
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR Protocol error: too big inline request\r\n"
    );
    // Binary garbage.
    let garbage: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut t = s.tcp();
    let _ = raw_exchange(&mut t, &garbage, Duration::from_secs(2));
    assert_serving(&s);
    assert_eq!(bystander.get::<_, String>("k").unwrap(), "v");
}

#[test]
fn truncated_frames_wait_for_the_rest() {
    let s = Server::start();
    let mut t = s.tcp();
    let frame = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
    for chunk in frame.chunks(3) {
        t.write_all(chunk).unwrap();
        t.flush().unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let got = crate::common::read_n(&mut t, 16, Duration::from_secs(5));
    assert_eq!(String::from_utf8_lossy(&got), "+OK\r\n$5\r\nvalue\r\n");
}

#[test]
fn command_errors_keep_the_connection() {
    let s = Server::start();
    let mut c = s.conn();
    let _: () = c.rpush("list", "x").unwrap();
    let cases: Vec<(redis::Cmd, &str)> = vec![
        (
            redis::cmd("GET"),
            "wrong number of arguments for 'get' command",
        ),
        (
            redis::cmd("NOPE").arg("a").clone(),
            "unknown command 'NOPE', with args beginning with: 'a'",
        ),
        (
            redis::cmd("GET").arg("list").clone(),
            "Operation against a key holding the wrong kind of value",
        ),
        (
            redis::cmd("SET")
                .arg("a")
                .arg("b")
                .arg("NX")
                .arg("XX")
                .clone(),
            "syntax error",
        ),
        (
            redis::cmd("INCRBY").arg("a").arg("x").clone(),
            "value is not an integer or out of range",
        ),
        (
            redis::cmd("SELECT").arg(1).clone(),
            "DB index is out of range",
        ),
    ];
    for (cmd, want) in cases {
        let e = cmd.query::<redis::Value>(&mut c).unwrap_err();
        assert!(e.to_string().contains(want), "got {e}, want {want}");
    }
    let v: i64 = c.llen("list").unwrap();
    assert_eq!(v, 1, "nothing changed by the failed commands");
}

#[test]
fn oversized_values_are_refused_by_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("f.toml");
    std::fs::write(&cfg, "[limits]\nmax_bulk_len = 2048\n").unwrap();
    let s = Server::start_with(&["--config", cfg.to_str().unwrap()]);
    let mut c = s.conn();
    let _: () = c.set("small", "x".repeat(2000)).unwrap();
    let mut t = s.tcp();
    let big = format!(
        "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4096\r\n{}\r\n",
        "y".repeat(4096)
    );
    let got = raw_exchange(&mut t, big.as_bytes(), Duration::from_secs(5));
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR Protocol error: invalid bulk length\r\n"
    );
    assert!(!c.exists::<_, bool>("k").unwrap());
    let e = c.append::<_, _, i64>("small", "z".repeat(100)).unwrap_err();
    assert!(
        e.to_string()
            .contains("string exceeds maximum allowed size"),
        "{e}"
    );
}
