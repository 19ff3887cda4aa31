//! Helpers shared by the backup tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use redis::Value;

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

pub fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        other => panic!("not text: {other:?}"),
    }
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
    items.into_iter().map(|(k, v)| (text(&k), v)).collect()
}

/// A map reply's fields as text.
pub fn fields(v: Value) -> BTreeMap<String, String> {
    map_of(v).into_iter().map(|(k, v)| (k, text(&v))).collect()
}

/// `TENANT.DIGEST <id>`: (keys, combined digest).
pub fn digest(c: &mut redis::Connection, tenant: &str) -> (u64, String) {
    let f = map_of(ok(c, &["TENANT.DIGEST", tenant]));
    (text(&f["keys"]).parse().unwrap(), text(&f["digest"]))
}

/// `TENANT.DIGEST <id> FULL` agrees with the incremental digest.
pub fn digest_checked(c: &mut redis::Connection, tenant: &str) -> (u64, String) {
    let f = map_of(ok(c, &["TENANT.DIGEST", tenant, "FULL"]));
    assert!(
        matches!(
            f.get("recomputed_match"),
            Some(Value::Boolean(true)) | Some(Value::Int(1))
        ),
        "digest of {tenant} differs from its recomputation: {f:?}"
    );
    (text(&f["keys"]).parse().unwrap(), text(&f["digest"]))
}

/// Every key of `tenant` with its type and a canonical dump of its value and TTL presence.
pub fn contents(c: &mut redis::Connection, tenant: &str) -> BTreeMap<String, String> {
    ok(c, &["TENANT.USE", tenant]);
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(c).unwrap();
    let mut out = BTreeMap::new();
    for k in keys {
        let ty: String = redis::cmd("TYPE").arg(&k).query(c).unwrap();
        let v = match ty.as_str() {
            "string" => format!("{:?}", ok(c, &["GET", &k])),
            "list" => format!("{:?}", ok(c, &["LRANGE", &k, "0", "-1"])),
            "hash" => {
                let mut m: Vec<(String, String)> = redis::cmd("HGETALL").arg(&k).query(c).unwrap();
                m.sort();
                format!("{m:?}")
            }
            "set" => {
                let mut m: Vec<String> = redis::cmd("SMEMBERS").arg(&k).query(c).unwrap();
                m.sort();
                format!("{m:?}")
            }
            "zset" => format!("{:?}", ok(c, &["ZRANGE", &k, "0", "-1", "WITHSCORES"])),
            "stream" => format!("{:?}", ok(c, &["XRANGE", &k, "-", "+"])),
            other => other.to_string(),
        };
        let ttl: i64 = redis::cmd("PTTL").arg(&k).query(c).unwrap();
        out.insert(k, format!("{ty} {v} ttl={}", ttl > 0));
    }
    ok(c, &["TENANT.USE", "default"]);
    out
}

/// Fills `tenant` with every type, some keys with a TTL, and `n` plain strings.
pub fn fill(c: &mut redis::Connection, tenant: &str, n: usize) {
    ok(c, &["TENANT.USE", tenant]);
    ok(c, &["SET", "s:ttl", "v", "EX", "1000"]);
    ok(c, &["RPUSH", "list", "a", "b", "c"]);
    ok(c, &["HSET", "hash", "f1", "v1", "f2", "v2"]);
    ok(c, &["SADD", "set", "x", "y", "1"]);
    ok(c, &["SADD", "intset", "1", "2", "3"]);
    ok(c, &["ZADD", "zset", "1.5", "a", "2", "b"]);
    ok(c, &["XADD", "stream", "1-1", "f", "v"]);
    let mut p = redis::pipe();
    for i in 0..n {
        p.cmd("SET")
            .arg(format!("k{i}"))
            .arg(format!("value-{i}"))
            .ignore();
    }
    let _: () = p.query(c).unwrap();
    ok(c, &["TENANT.USE", "default"]);
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
