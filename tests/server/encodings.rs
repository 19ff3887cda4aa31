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

/// A long list (many quicklist nodes) through every list command against a model, with the
/// digest, MEMORY USAGE and DUMP/RESTORE checked on it, then Redis 7.2's conversions both ways.
#[test]
fn a_long_list_through_every_command_and_both_conversions() {
    let s = Server::start();
    let mut c = s.conn();
    let mut model: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    for batch in 0..40 {
        let items: Vec<String> = (0..1000).map(|i| format!("e{batch}:{i}")).collect();
        if batch % 2 == 0 {
            let _: () = c.rpush("big", &items).unwrap();
            model.extend(items);
        } else {
            let _: () = c.lpush("big", &items).unwrap();
            for i in items {
                model.push_front(i);
            }
        }
    }
    assert_eq!(encoding(&mut c, "big"), "quicklist");
    for _ in 0..300 {
        let a: String = c.lpop("big", None).unwrap();
        assert_eq!(Some(a), model.pop_front());
        let b: String = c.rpop("big", None).unwrap();
        assert_eq!(Some(b), model.pop_back());
    }
    let popped: Vec<String> = c.rpop("big", std::num::NonZeroUsize::new(5)).unwrap();
    let want: Vec<String> = (0..5).filter_map(|_| model.pop_back()).collect();
    assert_eq!(popped, want);
    for i in [0usize, 7, 17_000, 25_000, model.len() - 1] {
        let _: () = c.lset("big", i as isize, format!("set{i}")).unwrap();
        model[i] = format!("set{i}");
        let got: String = c.lindex("big", i as isize).unwrap();
        assert_eq!(got, model[i]);
    }
    let n: i64 = c.linsert_before("big", "set17000", "inserted").unwrap();
    let at = model.iter().position(|e| e == "set17000").unwrap();
    model.insert(at, "inserted".into());
    assert_eq!(n as usize, model.len());
    let pos: Option<usize> = redis::cmd("LPOS")
        .arg("big")
        .arg("inserted")
        .query(&mut c)
        .unwrap();
    assert_eq!(pos, Some(at));
    let removed: i64 = c.lrem("big", 0, "set25000").unwrap();
    model.retain(|e| e != "set25000");
    assert_eq!(removed, 1);
    let got: Vec<String> = c.lrange("big", 0, -1).unwrap();
    assert_eq!(got, Vec::from(model.clone()));
    let tail: Vec<String> = c.lrange("big", -700, -600).unwrap();
    assert_eq!(
        tail[..],
        Vec::from(model.clone())[model.len() - 700..model.len() - 599]
    );
    assert!(digest_matches_recomputation(&mut c));

    // The estimate: the elements' bytes and a few per element, far below a box per element.
    let usage: usize = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg("big")
        .query(&mut c)
        .unwrap();
    let content: usize = model.iter().map(|e| e.len()).sum();
    assert!(
        usage > content && usage < content + 8 * model.len() + 4096,
        "MEMORY USAGE {usage} for {content} bytes in {} elements",
        model.len()
    );
    let dump: Vec<u8> = redis::cmd("DUMP").arg("big").query(&mut c).unwrap();
    let _: () = redis::cmd("RESTORE")
        .arg("copy")
        .arg(0)
        .arg(dump)
        .query(&mut c)
        .unwrap();
    let copy: Vec<String> = c.lrange("copy", 0, -1).unwrap();
    assert_eq!(copy, got);
    assert_eq!(encoding(&mut c, "copy"), "quicklist");
    let _: () = c.ltrim("big", 10, 19).unwrap();
    assert_eq!(
        encoding(&mut c, "big"),
        "listpack",
        "packed again after LTRIM"
    );
    let got: Vec<String> = c.lrange("big", 0, -1).unwrap();
    assert_eq!(got, Vec::from(model.clone())[10..20]);
    assert!(digest_matches_recomputation(&mut c));

    // Redis 7.2's conversions with a count limit of 3: LSET on a full listpack converts (the
    // new element is counted besides the old), LINSERT and LMOVE past the limit convert, and
    // RPOP, LREM, LTRIM and LSET back within half of it pack again.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("list-max-listpack-size")
        .arg(3)
        .query(&mut c)
        .unwrap();
    let fresh = |c: &mut redis::Connection, key: &str, items: &[&str]| {
        let _: () = c.del(key).unwrap();
        let _: () = c.rpush(key, items).unwrap();
    };
    fresh(&mut c, "l", &["a", "b", "c"]);
    assert_eq!(encoding(&mut c, "l"), "listpack");
    let _: () = c.lset("l", 0, "x").unwrap();
    assert_eq!(
        encoding(&mut c, "l"),
        "quicklist",
        "LSET on a full listpack"
    );
    fresh(&mut c, "l", &["a", "b", "c"]);
    let _: i64 = c.linsert_after("l", "b", "x").unwrap();
    assert_eq!(encoding(&mut c, "l"), "quicklist", "LINSERT past the limit");
    fresh(&mut c, "src", &["a"]);
    fresh(&mut c, "dst", &["d", "e", "f"]);
    let _: String = redis::cmd("LMOVE")
        .arg("src")
        .arg("dst")
        .arg("RIGHT")
        .arg("RIGHT")
        .query(&mut c)
        .unwrap();
    assert_eq!(encoding(&mut c, "dst"), "quicklist", "LMOVE past the limit");
    fresh(&mut c, "l", &["a", "b", "c", "d"]);
    assert_eq!(encoding(&mut c, "l"), "quicklist");
    let _: Vec<String> = c.rpop("l", std::num::NonZeroUsize::new(3)).unwrap();
    assert_eq!(encoding(&mut c, "l"), "listpack", "RPOP to one element");
    fresh(&mut c, "l", &["a", "a", "a", "d"]);
    let _: i64 = c.lrem("l", 3, "a").unwrap();
    assert_eq!(encoding(&mut c, "l"), "listpack", "LREM to one element");
    fresh(&mut c, "l", &["a", "b", "c", "d"]);
    let _: () = c.ltrim("l", 1, 1).unwrap();
    assert_eq!(encoding(&mut c, "l"), "listpack", "LTRIM to one element");
    let got: Vec<String> = c.lrange("l", 0, -1).unwrap();
    assert_eq!(got, ["b"]);
    assert!(digest_matches_recomputation(&mut c));
}
