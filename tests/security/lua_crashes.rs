//! Scripts that crashed the whole server (every tenant's): Lua 5.1's `unpack` computes the count
//! of a range in a C int, which `unpack({1,2,3}, -2, 2147483647)` overflows, and the `bit`
//! library's `tohex` negated `INT32_MIN` and wrote past its buffer. Both come from the tests
//! Debian's Redis 7.0.15 security update adds to unit/scripting; each script below ended the
//! process before the fix. Now each gets an error or its result, and the server keeps serving.

use crate::common::Server;

#[test]
fn scripts_cannot_crash_the_server_through_unpack_or_bit_tohex() {
    let s = Server::start();
    let mut c = s.conn();
    for range in ["-2, 2147483647", "0, 2147483647", "-2147483648, -2"] {
        let script = format!("return {{unpack({{1,2,3}}, {range})}}");
        let e = redis::cmd("EVAL")
            .arg(&script)
            .arg(0)
            .query::<redis::Value>(&mut c)
            .expect_err("a range past the stack is refused");
        assert!(
            e.to_string().contains("too many results to unpack"),
            "{range}: {e}"
        );
    }
    // In-range calls are unpack's own, nil slots included.
    let n: i64 = redis::cmd("EVAL")
        .arg("return select('#', unpack({1,2,3}, -1, 5))")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 7);
    let hex: String = redis::cmd("EVAL")
        .arg("return bit.tohex(65535, -2147483648)")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(hex, "0000FFFF");
    // The same server, a new connection: it survived.
    let pong: String = redis::cmd("PING").query(&mut s.conn()).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn an_argument_echoed_in_an_error_cannot_inject_a_reply() {
    let s = Server::start();
    let mut c = s.conn();
    let e = redis::cmd("FUNCTION")
        .arg("LIST")
        .arg("X\r\n+INJECTED")
        .query::<redis::Value>(&mut c)
        .expect_err("an unknown argument is refused");
    assert!(
        e.to_string().contains("Unknown argument X  +INJECTED"),
        "{e}"
    );
    // The next reply is the next command's, not the injected one.
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
}
