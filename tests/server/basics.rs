//! Commands through redis-rs in RESP2 and RESP3, pipelining and transactions.

use redis::{Commands, Value};

use crate::common::Server;

#[test]
fn strings_lists_hashes_sets_zsets_through_redis_rs() {
    let s = Server::start();
    let mut c = s.conn();
    let _: () = c.set("k", "v").unwrap();
    assert_eq!(c.get::<_, String>("k").unwrap(), "v");
    assert_eq!(c.incr::<_, _, i64>("n", 5).unwrap(), 5);
    let _: () = c.rpush("l", &["a", "b", "c"]).unwrap();
    assert_eq!(
        c.lrange::<_, Vec<String>>("l", 0, -1).unwrap(),
        ["a", "b", "c"]
    );
    let _: () = c.hset_multiple("h", &[("f1", "1"), ("f2", "2")]).unwrap();
    let mut h: Vec<(String, String)> = c.hgetall("h").unwrap();
    h.sort();
    assert_eq!(h, [("f1".into(), "1".into()), ("f2".into(), "2".into())]);
    let _: () = c.sadd("s", &["x", "y", "x"]).unwrap();
    assert_eq!(c.scard::<_, i64>("s").unwrap(), 2);
    let _: () = c.zadd_multiple("z", &[(1.5, "a"), (0.5, "b")]).unwrap();
    assert_eq!(
        c.zrange_withscores::<_, Vec<(String, f64)>>("z", 0, -1)
            .unwrap(),
        [("b".into(), 0.5), ("a".into(), 1.5)]
    );
    assert_eq!(c.get::<_, Option<String>>("missing").unwrap(), None);
    let err = c.incr::<_, _, i64>("l", 1).unwrap_err();
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
}

#[test]
fn resp3_shapes() {
    let s = Server::start();
    let mut c = s.conn3();
    let _: () = c.hset("h", "f", "v").unwrap();
    let v: Value = redis::cmd("HGETALL").arg("h").query(&mut c).unwrap();
    assert!(matches!(v, Value::Map(ref m) if m.len() == 1), "{v:?}");
    let _: () = c.zadd("z", "m", 2.5).unwrap();
    let v: Value = redis::cmd("ZSCORE")
        .arg("z")
        .arg("m")
        .query(&mut c)
        .unwrap();
    assert_eq!(v, Value::Double(2.5));
    let v: Value = redis::cmd("GET").arg("nope").query(&mut c).unwrap();
    assert_eq!(v, Value::Nil);
}

#[test]
fn pipelines_keep_order() {
    let s = Server::start();
    let mut c = s.conn();
    let mut p = redis::pipe();
    for i in 0..2000 {
        p.cmd("SET").arg(format!("k{i}")).arg(i).ignore();
        p.cmd("INCR").arg(format!("k{i}"));
    }
    let replies: Vec<i64> = p.query(&mut c).unwrap();
    assert_eq!(replies, (1..=2000).collect::<Vec<i64>>());
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 2000);
}

#[test]
fn transactions_and_watch() {
    let s = Server::start();
    let mut c = s.conn();
    let mut other = s.conn();
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("x")
        .cmd("INCRBY")
        .arg("x")
        .arg(10)
        .query(&mut c)
        .unwrap();
    assert_eq!((a, b), (1, 11));
    // A write between WATCH and EXEC aborts the transaction.
    let _: () = redis::cmd("WATCH").arg("x").query(&mut c).unwrap();
    let _: () = other.set("x", 100).unwrap();
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: () = redis::cmd("INCR").arg("x").query(&mut c).unwrap();
    let r: Value = redis::cmd("EXEC").query(&mut c).unwrap();
    assert_eq!(r, Value::Nil);
    assert_eq!(c.get::<_, i64>("x").unwrap(), 100);
    // A queuing error aborts EXEC.
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let e = redis::cmd("GET").query::<Value>(&mut c).unwrap_err();
    assert!(e.to_string().contains("wrong number of arguments"), "{e}");
    let e = redis::cmd("EXEC").query::<Value>(&mut c).unwrap_err();
    assert!(
        e.to_string()
            .contains("Transaction discarded because of previous errors"),
        "{e}"
    );
    let e = redis::cmd("EXEC").query::<Value>(&mut c).unwrap_err();
    assert!(e.to_string().contains("EXEC without MULTI"), "{e}");
}

#[test]
fn expired_keys_never_come_back() {
    let s = Server::start();
    let mut c = s.conn();
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("e{i}"))
            .arg("v")
            .arg("PX")
            .arg(30)
            .query(&mut c)
            .unwrap();
    }
    let _: () = c.set("keep", "v").unwrap();
    // The active cycle reclaims them without anyone reading them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
        if n == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {n} keys");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let keys: Vec<String> = c.keys("*").unwrap();
    assert_eq!(keys, ["keep"]);
    let info: String = redis::cmd("INFO").arg("stats").query(&mut c).unwrap();
    assert!(info.contains("expired_keys:200"), "{info}");
}
