//! Compact encodings through a real server: OBJECT ENCODING, the thresholds as CONFIG parameters
//! (Redis names and ziplist aliases) changed at run time, and digests, HSCAN and WATCH across a
//! conversion.

use std::collections::{BTreeMap, HashMap};

use redis::{Commands, Value};

use crate::common::Server;

fn encoding(c: &mut redis::Connection, key: &str) -> String {
    redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(key)
        .query(c)
        .unwrap()
}

fn digest_matches_recomputation(c: &mut redis::Connection) -> bool {
    let v: HashMap<String, Value> = redis::cmd("TENANT.DIGEST")
        .arg("default")
        .arg("FULL")
        .query(c)
        .unwrap();
    matches!(v["recomputed_match"], Value::Int(1) | Value::Boolean(true))
}

/// With the defaults an operator meets: small values are compact, and each kind converts at
/// Redis's thresholds.
#[test]
fn default_thresholds_and_object_encoding() {
    let s = Server::start();
    let mut c = s.conn();
    let cfg: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("*-max-*")
        .query(&mut c)
        .unwrap();
    let cfg: BTreeMap<_, _> = cfg
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect();
    assert_eq!(cfg["hash-max-listpack-entries"], "128");
    assert_eq!(cfg["hash-max-ziplist-value"], "64");
    assert_eq!(cfg["set-max-intset-entries"], "512");
    assert_eq!(cfg["zset-max-listpack-entries"], "128");
    assert_eq!(cfg["list-max-listpack-size"], "-2");

    let _: () = c.set("n", 42).unwrap();
    assert_eq!(encoding(&mut c, "n"), "int");
    let _: () = c.set("s", "short").unwrap();
    assert_eq!(encoding(&mut c, "s"), "embstr");
    for i in 0..128 {
        let _: () = c.hset("h", format!("f{i}"), i).unwrap();
        let _: () = c.zadd("z", format!("m{i}"), i).unwrap();
    }
    for i in 0..512 {
        let _: () = c.sadd("si", i).unwrap();
    }
    assert_eq!(encoding(&mut c, "h"), "listpack");
    assert_eq!(encoding(&mut c, "z"), "listpack");
    assert_eq!(encoding(&mut c, "si"), "intset");
    let _: () = c.hset("h", "one-more", 1).unwrap();
    let _: () = c.zadd("z", "one-more", 1).unwrap();
    let _: () = c.sadd("si", 512).unwrap();
    assert_eq!(encoding(&mut c, "h"), "hashtable");
    assert_eq!(encoding(&mut c, "z"), "skiplist");
    assert_eq!(encoding(&mut c, "si"), "hashtable");
    for i in 0..400 {
        let _: () = c.rpush("l", format!("element-{i:08}")).unwrap();
    }
    assert_eq!(encoding(&mut c, "l"), "listpack", "400 x 17 bytes < 8 KiB");
    for i in 0..200 {
        let _: () = c.rpush("l", format!("element-{i:08}")).unwrap();
    }
    assert_eq!(encoding(&mut c, "l"), "quicklist");
    let _: () = c.ltrim("l", 0, 99).unwrap();
    assert_eq!(
        encoding(&mut c, "l"),
        "listpack",
        "packed again under half the limit"
    );
    assert!(digest_matches_recomputation(&mut c));
}

/// CONFIG SET changes the thresholds at run time (ziplist aliases included); bad values are
/// refused with Redis's wording and change nothing.
#[test]
fn thresholds_change_at_run_time() {
    let s = Server::start();
    let mut c = s.conn();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("hash-max-ziplist-entries")
        .arg("2")
        .query(&mut c)
        .unwrap();
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("hash-max-listpack-entries")
        .query(&mut c)
        .unwrap();
    assert_eq!(got, ["hash-max-listpack-entries", "2"]);
    let _: () = c.hset("h", "a", 1).unwrap();
    let _: () = c.hset("h", "b", 2).unwrap();
    assert_eq!(encoding(&mut c, "h"), "listpack");
    let _: () = c.hset("h", "c", 3).unwrap();
    assert_eq!(encoding(&mut c, "h"), "hashtable");
    let err = redis::cmd("CONFIG")
        .arg("SET")
        .arg("zset-max-listpack-value")
        .arg("-1")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(
        err.to_string().contains("argument must be between 0 and"),
        "{err}"
    );
    // As in Redis, any int: below -5 counts as -5 (the list-max-listpack-size tests below).
    let err = redis::cmd("CONFIG")
        .arg("SET")
        .arg("list-max-listpack-size")
        .arg("-2147483649")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(err.to_string().contains("between -2147483648 and"), "{err}");
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("zset-max-listpack-value")
        .query(&mut c)
        .unwrap();
    assert_eq!(got, ["zset-max-listpack-value", "64"]);
}

/// A conversion in the middle of an HSCAN loses nothing, counts as a write for WATCH, and keeps
/// the maintained digest equal to a recomputation.
#[test]
fn scan_watch_and_digest_across_a_conversion() {
    let s = Server::start();
    let mut c = s.conn();
    let mut other = s.conn();
    for i in 0..100 {
        let _: () = c.hset("h", format!("f{i}"), i).unwrap();
    }
    assert_eq!(encoding(&mut c, "h"), "listpack");
    // A packed hash is returned whole by the first call, with cursor 0 (as Redis does).
    let (cursor, items): (u64, Vec<String>) = redis::cmd("HSCAN")
        .arg("h")
        .arg(0)
        .arg("COUNT")
        .arg(5)
        .query(&mut c)
        .unwrap();
    assert_eq!((cursor, items.len()), (0, 200));

    let _: () = redis::cmd("WATCH").arg("h").query(&mut c).unwrap();
    for i in 100..300 {
        let _: () = other.hset("h", format!("f{i}"), i).unwrap();
    }
    assert_eq!(encoding(&mut other, "h"), "hashtable");
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: () = redis::cmd("HSET")
        .arg("h")
        .arg("x")
        .arg(1)
        .query(&mut c)
        .unwrap();
    let r: Value = redis::cmd("EXEC").query(&mut c).unwrap();
    assert_eq!(
        r,
        Value::Nil,
        "the conversion was a write the transaction saw"
    );

    let mut seen = std::collections::HashSet::new();
    let mut cursor = 0u64;
    let mut calls = 0;
    loop {
        let (next, items): (u64, Vec<String>) = redis::cmd("HSCAN")
            .arg("h")
            .arg(cursor)
            .arg("COUNT")
            .arg(7)
            .query(&mut c)
            .unwrap();
        seen.extend(items.chunks(2).map(|p| p[0].clone()));
        // Grow and shrink the table between calls: fields present throughout are still seen.
        if calls % 3 == 0 {
            for j in 0..40 {
                let _: () = other.hset("h", format!("tmp{calls}-{j}"), j).unwrap();
            }
        } else {
            for j in 0..40 {
                let _: () = other.hdel("h", format!("tmp{}-{j}", calls - 1)).unwrap();
            }
        }
        calls += 1;
        cursor = next;
        if cursor == 0 || calls > 10_000 {
            break;
        }
    }
    for i in 0..300 {
        assert!(seen.contains(&format!("f{i}")), "f{i} missed");
    }
    assert!(digest_matches_recomputation(&mut c));
}
