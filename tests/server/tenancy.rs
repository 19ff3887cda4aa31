//! Multi-tenancy: isolation of every command family, AUTH binding, quotas, throttles, digests.

use std::time::{Duration, Instant};

use redis::{Commands, Value};

use crate::common::Server;

fn admin(s: &Server) -> redis::Connection {
    s.conn()
}

fn tenant_conn(s: &Server, id: &str, pw: &str) -> redis::Connection {
    let url = format!("redis://{id}:{pw}@127.0.0.1:{}/", s.port);
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

fn create(c: &mut redis::Connection, args: &[&str]) {
    let _: () = redis::cmd("TENANT.CREATE").arg(args).query(c).unwrap();
}

fn err_of(r: redis::RedisResult<Value>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

fn fill(c: &mut redis::Connection, tag: &str) {
    let _: () = c.set("str", tag).unwrap();
    let _: () = c.rpush("list", &[tag, tag]).unwrap();
    let _: () = c.hset("hash", "f", tag).unwrap();
    let _: () = c.sadd("set", tag).unwrap();
    let _: () = c.zadd("zset", tag, 1).unwrap();
    for i in 0..50 {
        let _: () = c.set(format!("{tag}:{i}"), i).unwrap();
    }
}

#[test]
fn tenants_cannot_see_each_other() {
    let s = Server::start();
    let mut adm = admin(&s);
    create(&mut adm, &["alpha", "PASSWORD", "pa"]);
    create(&mut adm, &["beta", "PASSWORD", "pb"]);
    let mut a = tenant_conn(&s, "alpha", "pa");
    let mut b = tenant_conn(&s, "beta", "pb");
    fill(&mut a, "A");
    fill(&mut b, "B");

    // Same key names, different content per tenant, for every type.
    assert_eq!(a.get::<_, String>("str").unwrap(), "A");
    assert_eq!(b.get::<_, String>("str").unwrap(), "B");
    assert_eq!(
        b.lrange::<_, Vec<String>>("list", 0, -1).unwrap(),
        ["B", "B"]
    );
    assert_eq!(b.hget::<_, _, String>("hash", "f").unwrap(), "B");
    assert_eq!(b.smembers::<_, Vec<String>>("set").unwrap(), ["B"]);
    assert_eq!(b.zrange::<_, Vec<String>>("zset", 0, -1).unwrap(), ["B"]);
    assert!(!b.exists::<_, bool>("A:1").unwrap());
    assert_eq!(b.get::<_, Option<String>>("A:1").unwrap(), None);

    // Counting and iteration only see one's own keys.
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut a).unwrap(), 55);
    let keys: Vec<String> = b.keys("*").unwrap();
    assert_eq!(keys.len(), 55);
    assert!(keys.iter().all(|k| !k.starts_with("A:")));
    let mut scanned: Vec<String> = b
        .scan::<String>()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    scanned.sort();
    let mut keys = keys;
    keys.sort();
    assert_eq!(scanned, keys);
    // A cursor obtained in one tenant reveals nothing in another.
    let (cursor, _): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(5)
        .query(&mut a)
        .unwrap();
    let (_, page): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(cursor)
        .arg("COUNT")
        .arg(1000)
        .query(&mut b)
        .unwrap();
    assert!(page.iter().all(|k| !k.starts_with("A:")), "{page:?}");
    for _ in 0..20 {
        let k: String = redis::cmd("RANDOMKEY").query(&mut b).unwrap();
        assert!(!k.starts_with("A:"), "{k}");
    }
    let info: String = redis::cmd("INFO").arg("keyspace").query(&mut b).unwrap();
    assert!(info.contains("db0:keys=55,"), "{info}");

    // Transactions, renames and flushes stay inside the tenant.
    let (x, y): (i64, String) = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("counter")
        .cmd("GET")
        .arg("str")
        .query(&mut b)
        .unwrap();
    assert_eq!((x, y.as_str()), (1, "B"));
    let _: () = b.rename("str", "renamed").unwrap();
    assert_eq!(a.get::<_, String>("str").unwrap(), "A");
    assert!(!a.exists::<_, bool>("renamed").unwrap());
    let _: () = redis::cmd("FLUSHALL").query(&mut b).unwrap();
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut b).unwrap(), 0);
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut a).unwrap(), 55);
    assert_eq!(
        redis::cmd("DBSIZE").query::<i64>(&mut adm).unwrap(),
        0,
        "default tenant untouched"
    );

    // Tenants cannot administer or peek at others.
    let e = err_of(redis::cmd("TENANT.USE").arg("alpha").query(&mut b));
    assert!(e.contains("no permission"), "{e}");
    let e = err_of(redis::cmd("TENANT.INFO").arg("alpha").query(&mut b));
    assert!(e.contains("no such tenant"), "{e}");
    let e = err_of(redis::cmd("TENANT.DIGEST").arg("alpha").query(&mut b));
    assert!(e.contains("no permission"), "{e}");
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut b).unwrap();
    assert!(list.lines().all(|l| l.contains("tenant=beta")), "{list}");
    let cur: String = redis::cmd("TENANT.CURRENT").query(&mut b).unwrap();
    assert_eq!(cur, "beta");
}

#[test]
fn admin_binding_and_management() {
    let s = Server::start();
    let mut adm = admin(&s);
    create(
        &mut adm,
        &["t1", "PASSWORD", "pw", "MAXKEYS", "100", "OPS", "0"],
    );
    let _: () = redis::cmd("TENANT.USE").arg("t1").query(&mut adm).unwrap();
    let _: () = adm.set("k", "v").unwrap();
    let cur: String = redis::cmd("TENANT.CURRENT").query(&mut adm).unwrap();
    assert_eq!(cur, "t1");
    let mut t = tenant_conn(&s, "t1", "pw");
    assert_eq!(t.get::<_, String>("k").unwrap(), "v");

    let info: std::collections::HashMap<String, Value> =
        redis::cmd("TENANT.INFO").arg("t1").query(&mut adm).unwrap();
    assert_eq!(info["state"], Value::BulkString(b"active".to_vec()));
    assert_eq!(info["keys"], Value::Int(1));
    assert_eq!(info["maxkeys"], Value::Int(100));
    // The tenant's own client; the administrator's TENANT.USE visit is not one of them.
    assert_eq!(info["connected_clients"], Value::Int(1));

    // Bad input: each a clear error, nothing changed.
    for (args, want) in [
        (vec!["TENANT.CREATE", "t1"], "already exists"),
        (vec!["TENANT.CREATE", "bad id"], "invalid tenant id"),
        (vec!["TENANT.CREATE", &"x".repeat(65)], "invalid tenant id"),
        (
            vec!["TENANT.CREATE", "t2", "MAXKEYS", "-1"],
            "must be positive",
        ),
        (vec!["TENANT.CREATE", "t2", "COLOUR", "red"], "syntax error"),
        (vec!["TENANT.INFO", "nope"], "no such tenant 'nope'"),
        (vec!["TENANT.USE", "nope"], "no such tenant 'nope'"),
        (vec!["TENANT.DELETE", "default"], "cannot be deleted"),
        (vec!["TENANT.RESUME", "t1"], "is active, not suspended"),
    ] {
        let e = err_of(redis::cmd(args[0]).arg(&args[1..]).query(&mut adm));
        assert!(e.contains(want), "{args:?}: {e}");
    }
    let list: Vec<Value> = redis::cmd("TENANT.LIST").query(&mut adm).unwrap();
    assert_eq!(list.len(), 2, "default and t1 only");

    // Wrong password and unknown tenants: WRONGPASS, connection stays on its old binding.
    let e = err_of(redis::cmd("AUTH").arg("t1").arg("nope").query(&mut t));
    assert!(
        e.contains("WRONGPASS") || e.contains("invalid username-password"),
        "{e}"
    );
    let e = err_of(redis::cmd("AUTH").arg("ghost").arg("pw").query(&mut t));
    assert!(
        e.contains("WRONGPASS") || e.contains("invalid username-password"),
        "{e}"
    );
    assert_eq!(t.get::<_, String>("k").unwrap(), "v");

    // Suspend refuses the tenant's commands; resume restores them.
    let _: () = redis::cmd("TENANT.SUSPEND")
        .arg("t1")
        .query(&mut adm)
        .unwrap();
    let e = err_of(redis::cmd("GET").arg("k").query(&mut t));
    assert!(e.contains("suspended"), "{e}");
    let _: () = redis::cmd("TENANT.RESUME")
        .arg("t1")
        .query(&mut adm)
        .unwrap();
    assert_eq!(t.get::<_, String>("k").unwrap(), "v");

    // DELETE refuses while clients are connected, FORCE deletes and disconnects them.
    let _: () = redis::cmd("TENANT.USE")
        .arg("default")
        .query(&mut adm)
        .unwrap();
    let e = err_of(redis::cmd("TENANT.DELETE").arg("t1").query(&mut adm));
    assert!(e.contains("connected client"), "{e}");
    let _: () = redis::cmd("TENANT.DELETE")
        .arg("t1")
        .arg("FORCE")
        .query(&mut adm)
        .unwrap();
    assert!(
        t.get::<_, String>("k").is_err(),
        "the tenant's connection was closed"
    );
    let e = err_of(redis::cmd("TENANT.INFO").arg("t1").query(&mut adm));
    assert!(e.contains("no such tenant"), "{e}");
}

#[test]
fn quotas_refuse_writes_but_keep_reads_and_deletes() {
    let s = Server::start();
    let mut adm = admin(&s);
    create(
        &mut adm,
        &[
            "small",
            "PASSWORD",
            "pw",
            "MAXKEYS",
            "10",
            "MAXMEMORY",
            "20kb",
        ],
    );
    let mut t = tenant_conn(&s, "small", "pw");
    for i in 0..10 {
        let _: () = t.set(format!("k{i}"), i).unwrap();
    }
    let e = err_of(redis::cmd("SET").arg("k10").arg("x").query(&mut t));
    assert!(e.contains("OOM") || e.contains("key limit"), "{e}");
    assert!(e.contains("'small'"), "names the tenant: {e}");
    // Overwriting an existing key creates nothing and is allowed.
    let _: () = t.set("k3", "again").unwrap();
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut t).unwrap(), 10);
    // Memory: a write that would cross the limit is refused whole, even as the first to do so.
    let e = err_of(
        redis::cmd("SET")
            .arg("k0")
            .arg("x".repeat(25 * 1024))
            .query(&mut t),
    );
    assert!(e.contains("used memory > 'maxmemory'"), "{e}");
    let big = "x".repeat(15 * 1024);
    let _: () = t.set("k0", &big).unwrap();
    let e = err_of(
        redis::cmd("APPEND")
            .arg("k1")
            .arg("y".repeat(6 * 1024))
            .query(&mut t),
    );
    assert!(e.contains("used memory > 'maxmemory'"), "{e}");
    // Reads and deletes still work and nothing stored was lost.
    assert_eq!(t.get::<_, String>("k0").unwrap().len(), big.len());
    assert_eq!(t.get::<_, String>("k3").unwrap(), "again");
    let _: () = t.del("k0").unwrap();
    let _: () = t.set("k1", "fits again").unwrap();
    let info: std::collections::HashMap<String, Value> = redis::cmd("TENANT.INFO")
        .arg("small")
        .query(&mut adm)
        .unwrap();
    assert!(
        matches!(info["rejected_total"], Value::Int(n) if n >= 2),
        "{info:?}"
    );
}

#[test]
fn throttle_delays_then_refuses() {
    let s = Server::start();
    let mut adm = admin(&s);
    create(&mut adm, &["busy", "PASSWORD", "pw"]);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("tenancy.throttle_max_delay_ms")
        .arg(300)
        .query(&mut adm)
        .unwrap();
    let _: () = redis::cmd("TENANT.THROTTLE")
        .arg("busy")
        .arg("OPS")
        .arg(20)
        .query(&mut adm)
        .unwrap();
    // 20 ops/s with one second of burst, and a command may wait at most 300 ms (6 slots): ten
    // connections asking at once get the burst, then paced service, then refusals naming the
    // limit. Nothing is dropped silently: every command either succeeds or gets the error.
    let started = Instant::now();
    let port = s.port;
    let workers: Vec<_> = (0..10)
        .map(|w| {
            std::thread::spawn(move || {
                let url = format!("redis://busy:pw@127.0.0.1:{port}/");
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                let (mut ok, mut refused) = (0, 0);
                for i in 0..15 {
                    match c.set::<_, _, ()>(format!("w{w}:{i}"), i) {
                        Ok(()) => ok += 1,
                        Err(e) => {
                            assert!(e.to_string().contains("20 ops/s"), "{e}");
                            refused += 1;
                        }
                    }
                }
                (ok, refused)
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for w in workers {
        let (o, r) = w.join().unwrap();
        ok += o;
        refused += r;
    }
    assert_eq!(ok + refused, 150);
    assert!(ok >= 20, "ok={ok}");
    assert!(refused >= 10, "refused={refused}");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "delayed ones waited"
    );
    let mut t = tenant_conn(&s, "busy", "pw");
    let stored: i64 = redis::cmd("DBSIZE").query(&mut t).unwrap();
    assert_eq!(
        stored, ok as i64,
        "exactly the acknowledged writes are stored"
    );
    let _: () = redis::cmd("TENANT.THROTTLE")
        .arg("busy")
        .arg("OPS")
        .arg(0)
        .query(&mut adm)
        .unwrap();
    for i in 0..500 {
        let _: () = t.set(format!("x{i}"), i).unwrap();
    }
    // The default tenant was never throttled.
    for i in 0..300 {
        let _: () = adm.set(format!("d{i}"), i).unwrap();
    }
}

/// A connection keeps its tenant's lock from one data command of a pipelined batch to the next
/// (`dispatch::Held`), but never while it waits: a pipeline paced by the throttle (the default
/// `throttle_max_delay_ms`) leaves the tenant's data to others between its commands, and every
/// one of its writes lands, in order.
#[test]
fn a_pipeline_waiting_at_the_throttle_holds_no_lock() {
    let s = Server::start();
    let mut adm = admin(&s);
    create(&mut adm, &["paced", "PASSWORD", "pw"]);
    let _: () = redis::cmd("TENANT.THROTTLE")
        .arg("paced")
        .arg("OPS")
        .arg(20)
        .query(&mut adm)
        .unwrap();
    let port = s.port;
    let started = Instant::now();
    let pipeline = std::thread::spawn(move || {
        let url = format!("redis://paced:pw@127.0.0.1:{port}/");
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let mut p = redis::pipe();
        for _ in 0..50 {
            p.cmd("INCR").arg("n");
        }
        let replies: Vec<i64> = p.query(&mut c).unwrap();
        replies
    });
    // 20 ops/s after a one-second burst: the pipeline's last 30 commands are paced over about
    // 1.5 s. Meanwhile the administrator's TENANT.DIGEST, which takes the tenant's lock and is
    // not throttled, is answered at once, again and again.
    std::thread::sleep(Duration::from_millis(300));
    let mut answered = 0;
    while !pipeline.is_finished() && answered < 8 {
        let t = Instant::now();
        let _ = digest(&mut adm, "paced");
        assert!(
            t.elapsed() < Duration::from_millis(400),
            "TENANT.DIGEST waited {:?} behind a paced pipeline",
            t.elapsed()
        );
        answered += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        answered >= 3,
        "the pipeline ended too early to tell ({answered} digests)"
    );
    assert_eq!(pipeline.join().unwrap(), (1..=50).collect::<Vec<i64>>());
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
}

fn digest(c: &mut redis::Connection, tenant: &str) -> (String, Vec<String>) {
    let v: std::collections::HashMap<String, Value> =
        redis::cmd("TENANT.DIGEST").arg(tenant).query(c).unwrap();
    let d = match &v["digest"] {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("{other:?}"),
    };
    let buckets = match &v["buckets"] {
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                other => panic!("{other:?}"),
            })
            .collect(),
        other => panic!("{other:?}"),
    };
    (d, buckets)
}

#[test]
fn digests_match_for_equal_content_in_any_order() {
    let s = Server::start();
    let mut adm = admin(&s);
    create(&mut adm, &["d1", "PASSWORD", "pw"]);
    create(&mut adm, &["d2", "PASSWORD", "pw"]);
    let mut x = tenant_conn(&s, "d1", "pw");
    let mut y = tenant_conn(&s, "d2", "pw");
    let expire_at = 4_000_000_000_000u64;
    // d1: insertion order ascending; d2: descending, with detours (overwrites, deletes).
    for i in 0..300 {
        let _: () = x.set(format!("s{i}"), format!("v{i}")).unwrap();
        let _: () = x.hset("h", format!("f{i}"), i).unwrap();
        let _: () = x.sadd("set", i).unwrap();
        let _: () = x.zadd("z", format!("m{i}"), i as f64 / 3.0).unwrap();
    }
    let _: () = x.rpush("l", &["a", "b", "c"]).unwrap();
    let _: () = redis::cmd("PEXPIREAT")
        .arg("s7")
        .arg(expire_at)
        .query(&mut x)
        .unwrap();
    for i in (0..300).rev() {
        let _: () = y.set(format!("s{i}"), "temp").unwrap();
        let _: () = y.set(format!("s{i}"), format!("v{i}")).unwrap();
        let _: () = y.hset("h", format!("f{i}"), i).unwrap();
        let _: () = y.sadd("set", i).unwrap();
        let _: () = y.zadd("z", format!("m{i}"), 99).unwrap();
        let _: () = y.zadd("z", format!("m{i}"), i as f64 / 3.0).unwrap();
    }
    let _: () = y.sadd("set", "extra").unwrap();
    let _: () = y.srem("set", "extra").unwrap();
    let _: () = y.lpush("l", &["c", "b"]).unwrap();
    let _: () = y.lpush("l", "a").unwrap();
    let _: () = redis::cmd("PEXPIREAT")
        .arg("s7")
        .arg(expire_at)
        .query(&mut y)
        .unwrap();
    let (d1, b1) = digest(&mut adm, "d1");
    let (d2, b2) = digest(&mut adm, "d2");
    assert_eq!(d1, d2);
    assert_eq!(b1, b2);
    // One byte changed in one value: a different digest, in exactly one bucket.
    let _: () = y.set("s42", "v4X").unwrap();
    let (d2, b2) = digest(&mut adm, "d2");
    assert_ne!(d1, d2);
    let differing = b1.iter().zip(&b2).filter(|(p, q)| p != q).count();
    assert_eq!(differing, 1);
    // Expiry is part of the content.
    let _: () = y.set("s42", "v42").unwrap();
    assert_eq!(digest(&mut adm, "d2").0, d1);
    let _: () = redis::cmd("PEXPIREAT")
        .arg("s8")
        .arg(expire_at)
        .query(&mut y)
        .unwrap();
    assert_ne!(digest(&mut adm, "d2").0, d1);
    // The maintained digest equals a full recomputation.
    let v: std::collections::HashMap<String, Value> = redis::cmd("TENANT.DIGEST")
        .arg("d2")
        .arg("FULL")
        .query(&mut adm)
        .unwrap();
    assert!(
        matches!(v["recomputed_match"], Value::Int(1) | Value::Boolean(true)),
        "{:?}",
        v["recomputed_match"]
    );
}

#[test]
fn redis_cli_user_flag_binds_the_tenant() {
    let s = Server::start();
    let mut adm = admin(&s);
    create(&mut adm, &["acme-corp", "PASSWORD", "s3cret"]);
    let port = s.port.to_string();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port, "--no-auth-warning"])
            .args(args)
            .output()
            .expect("redis-cli is installed (scripts/test.sh installs redis-tools)");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        cli(&[
            "--user",
            "acme-corp",
            "--pass",
            "s3cret",
            "SET",
            "who",
            "acme"
        ]),
        "OK"
    );
    assert_eq!(
        cli(&["--user", "acme-corp", "--pass", "s3cret", "GET", "who"]),
        "acme"
    );
    assert_eq!(
        cli(&["--user", "acme-corp", "--pass", "s3cret", "TENANT.CURRENT"]),
        "acme-corp"
    );
    assert_eq!(
        cli(&["GET", "who"]),
        "",
        "the default tenant does not see it"
    );
    assert_eq!(adm.get::<_, Option<String>>("who").unwrap(), None);
}
