//! Helpers shared by the persistence tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use redis::Value;

use crate::common::Server;

/// A fresh data directory for a test (deleted when dropped).
pub fn data_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ferrite-persist-test-")
        .tempdir()
        .expect("temporary directory")
}

pub fn tenant_conn(s: &Server, id: &str, pw: &str) -> redis::Connection {
    let url = format!("redis://{id}:{pw}@127.0.0.1:{}/", s.port);
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

pub fn cmd(c: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<Value> {
    let mut k = redis::cmd(args[0]);
    for a in &args[1..] {
        k.arg(*a);
    }
    k.query(c)
}

pub fn ok(c: &mut redis::Connection, args: &[&str]) -> Value {
    cmd(c, args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

pub fn err(c: &mut redis::Connection, args: &[&str]) -> String {
    match cmd(c, args) {
        Ok(v) => panic!("{args:?}: expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

/// `INFO <section>` as a map.
pub fn info(c: &mut redis::Connection, section: &str) -> BTreeMap<String, String> {
    let text: String = redis::cmd("INFO").arg(section).query(c).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// `TENANT.DIGEST <id>`: (keys, combined digest).
pub fn digest(c: &mut redis::Connection, tenant: &str) -> (i64, String) {
    let v = ok(c, &["TENANT.DIGEST", tenant]);
    let pairs = map_of(v);
    let keys = match pairs.get("keys") {
        Some(Value::Int(n)) => *n,
        other => panic!("keys: {other:?}"),
    };
    let d = match pairs.get("digest") {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("digest: {other:?}"),
    };
    (keys, d)
}

/// A RESP2 flat array or RESP3 map as a map of names to values.
pub fn map_of(v: Value) -> BTreeMap<String, Value> {
    let items: Vec<(Value, Value)> = match v {
        Value::Map(m) => m,
        Value::Array(a) => a
            .chunks(2)
            .filter_map(|p| match p {
                [k, v] => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect(),
        other => panic!("not a map: {other:?}"),
    };
    items
        .into_iter()
        .filter_map(|(k, v)| match k {
            Value::BulkString(b) => Some((String::from_utf8_lossy(&b).into_owned(), v)),
            Value::SimpleString(s) => Some((s, v)),
            _ => None,
        })
        .collect()
}

/// A reply value as text: a string's bytes, an integer's digits, nil as "".
pub fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        Value::Nil => String::new(),
        other => format!("{other:?}"),
    }
}

/// TENANT.MIGRATE.STATUS of a migration, each field as text.
pub fn migration_status(c: &mut redis::Connection, id: &str) -> BTreeMap<String, String> {
    map_of(ok(c, &["TENANT.MIGRATE.STATUS", id]))
        .into_iter()
        .map(|(k, v)| (k, text(&v)))
        .collect()
}

/// Stops a server with SHUTDOWN (the clean way) and waits for it to exit.
pub fn shutdown(mut s: Server, args: &[&str]) {
    let mut c = s.conn();
    let mut k = redis::cmd("SHUTDOWN");
    for a in args {
        k.arg(*a);
    }
    let _: redis::RedisResult<Value> = k.query(&mut c);
    assert!(
        s.wait_exit(Duration::from_secs(20)).is_some(),
        "the server did not stop: {:?}",
        s.log()
    );
}

/// Kills a server with SIGKILL (no chance to write anything more).
pub fn sigkill(mut s: Server) {
    s.kill();
}

/// Waits until `f` is true (bounded).
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

/// The value of an unlabelled series on a /metrics page.
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
