//! DUMP/RESTORE interoperability with a real redis-server started by the test: a payload DUMPed
//! by Redis restores in Ferrite and the reverse, for every type and every encoding Redis 7 uses
//! (int/raw/LZF strings, listpack and multi-node or plain-node quicklists, intsets and hash
//! tables, listpack and hash-table hashes, listpack and skiplist sorted sets), with TTLs.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::{Commands, Connection};

use crate::common::Server;

/// A redis-server process on a free loopback port; killed on drop.
pub(crate) struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    pub(crate) fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts with extra arguments (e.g. `--dir <d> --dbfilename <f>`).
    pub(crate) fn start_with(extra: &[&str]) -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        let mut server = RedisServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            // E.g. it refused to load its RDB file (see its --logfile).
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("redis-server {extra:?} exited at startup: {status}");
            }
            if let Ok(mut c) = server.try_conn()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not start on port {port}");
    }

    fn try_conn(&self) -> redis::RedisResult<Connection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?;
        client.get_connection_with_timeout(Duration::from_secs(5))
    }

    pub(crate) fn conn(&self) -> Connection {
        self.try_conn().expect("connect to redis-server")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fills a server with one key per type and encoding.
fn fill(c: &mut Connection) -> Vec<&'static str> {
    let _: () = c.set("s:raw", "hello world").unwrap();
    let _: () = c.set("s:int", "12345").unwrap();
    let _: () = c.set("s:lzf", "abc".repeat(400)).unwrap();
    let _: () = c.set("s:bin", (0..=255u8).collect::<Vec<u8>>()).unwrap();
    let _: () = c
        .rpush("l:listpack", &["a", "1", "-5", "9999999999"])
        .unwrap();
    let many: Vec<String> = (0..2000).map(|i| format!("element-{i}")).collect();
    let _: () = c.rpush("l:quicklist", &many).unwrap();
    let _: () = c
        .rpush("l:plain", &["x".repeat(20000), "small".into()])
        .unwrap();
    let _: () = c
        .sadd("set:intset", &[1, 2, 3, -70000, 5_000_000_000i64])
        .unwrap();
    let _: () = c.sadd("set:hashtable", &many).unwrap();
    let _: () = c.sadd("set:small", &["a", "b"]).unwrap();
    let _: () = c
        .hset_multiple("h:listpack", &[("f", "v"), ("n", "42")])
        .unwrap();
    let fields: Vec<(String, String)> = (0..1000)
        .map(|i| (format!("f{i}"), format!("v{i}")))
        .collect();
    let _: () = c.hset_multiple("h:hashtable", &fields).unwrap();
    let _: () = c
        .zadd_multiple("z:listpack", &[(1.5, "a"), (-2.0, "b"), (3.0, "c")])
        .unwrap();
    let members: Vec<(f64, String)> = (0..1000)
        .map(|i| (i as f64 / 7.0, format!("m{i}")))
        .collect();
    let _: () = c.zadd_multiple("z:skiplist", &members).unwrap();
    let _: () = redis::cmd("ZADD")
        .arg("z:inf")
        .arg("inf")
        .arg("top")
        .arg("-inf")
        .arg("bottom")
        .query(c)
        .unwrap();
    vec![
        "s:raw",
        "s:int",
        "s:lzf",
        "s:bin",
        "l:listpack",
        "l:quicklist",
        "l:plain",
        "set:intset",
        "set:hashtable",
        "set:small",
        "h:listpack",
        "h:hashtable",
        "z:listpack",
        "z:skiplist",
        "z:inf",
    ]
}

/// A key's content in a comparable form (sets and hashes sorted).
pub(crate) fn content(c: &mut Connection, key: &str) -> Vec<Vec<u8>> {
    let t: String = redis::cmd("TYPE").arg(key).query(c).unwrap();
    let mut v: Vec<Vec<u8>> = match t.as_str() {
        "string" => vec![c.get(key).unwrap()],
        "list" => c.lrange(key, 0, -1).unwrap(),
        "set" => {
            let mut m: Vec<Vec<u8>> = c.smembers(key).unwrap();
            m.sort();
            m
        }
        "hash" => {
            let mut m: Vec<(Vec<u8>, Vec<u8>)> = c.hgetall(key).unwrap();
            m.sort();
            m.into_iter().flat_map(|(f, v)| [f, v]).collect()
        }
        // Scores compared as numbers: the two servers may print a double differently.
        "zset" => {
            let items: Vec<(Vec<u8>, f64)> = redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query(c)
                .unwrap();
            items
                .into_iter()
                .flat_map(|(m, s)| [m, s.to_bits().to_le_bytes().to_vec()])
                .collect()
        }
        other => panic!("{key}: unexpected type {other}"),
    };
    v.insert(0, t.into_bytes());
    v
}

fn copy_all(from: &mut Connection, to: &mut Connection, keys: &[&str]) {
    for key in keys {
        let payload: Vec<u8> = redis::cmd("DUMP").arg(*key).query(from).unwrap();
        let r: redis::RedisResult<String> = redis::cmd("RESTORE")
            .arg(*key)
            .arg(60_000)
            .arg(&payload)
            .query(to);
        assert_eq!(r.as_deref(), Ok("OK"), "{key}");
        let (a, b) = (content(from, key), content(to, key));
        // Reported by the first difference: the values can be large.
        let first = a.iter().zip(&b).position(|(x, y)| x != y);
        assert!(
            a.len() == b.len() && first.is_none(),
            "{key}: lengths {} vs {}, first difference at {first:?}",
            a.len(),
            b.len()
        );
        let ttl: i64 = to.pttl(*key).unwrap();
        assert!((50_000..=60_000).contains(&ttl), "{key}: ttl {ttl}");
    }
}

#[test]
fn redis_dumps_restore_in_ferrite() {
    let redis = RedisServer::start();
    let ferrite = Server::start();
    let (mut r, mut f) = (redis.conn(), ferrite.conn());
    let keys = fill(&mut r);
    copy_all(&mut r, &mut f, &keys);
}

#[test]
fn ferrite_dumps_restore_in_redis() {
    let redis = RedisServer::start();
    let ferrite = Server::start();
    let (mut r, mut f) = (redis.conn(), ferrite.conn());
    let keys = fill(&mut f);
    copy_all(&mut f, &mut r, &keys);
    // And back again: the round trip through Redis changes nothing.
    let _: () = redis::cmd("FLUSHALL").query(&mut f).unwrap();
    copy_all(&mut r, &mut f, &keys);
}

#[test]
fn payload_errors_match_redis() {
    let redis = RedisServer::start();
    let ferrite = Server::start();
    let (mut r, mut f) = (redis.conn(), ferrite.conn());
    let _: () = r.set("k", "v").unwrap();
    let good: Vec<u8> = redis::cmd("DUMP").arg("k").query(&mut r).unwrap();
    let mut bad_crc = good.clone();
    let n = bad_crc.len();
    bad_crc[n - 1] ^= 1;
    let mut newer = good.clone();
    newer[n - 10] = 99;
    for payload in [bad_crc, newer, b"short".to_vec()] {
        let e_redis = redis::cmd("RESTORE")
            .arg("x")
            .arg(0)
            .arg(&payload)
            .query::<String>(&mut r)
            .unwrap_err();
        let e_ferrite = redis::cmd("RESTORE")
            .arg("x")
            .arg(0)
            .arg(&payload)
            .query::<String>(&mut f)
            .unwrap_err();
        assert_eq!(e_redis.to_string(), e_ferrite.to_string());
    }
}

/// Runs a command given as words.
pub(crate) fn run(c: &mut Connection, args: &[&str]) -> redis::Value {
    let mut k = redis::cmd(args[0]);
    for a in &args[1..] {
        k.arg(*a);
    }
    k.query(c).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// A stream with everything an RDB stream carries: entries over several blocks (100 per block
/// on both servers), deleted entries, metadata, two consumer groups with pending entries (one
/// deleted from the stream since), consumers with and without pending entries.
pub(crate) fn fill_stream(c: &mut Connection, key: &str) {
    for i in 1..=250u64 {
        let id = format!("{i}-{}", i % 4);
        let n = i.to_string();
        let pad = "x".repeat(i as usize % 50);
        if i % 3 == 0 {
            run(c, &["XADD", key, &id, "n", &n]);
        } else {
            run(c, &["XADD", key, &id, "n", &n, "pad", &pad]);
        }
    }
    run(c, &["XDEL", key, "5-1", "120-0"]);
    run(c, &["XGROUP", "CREATE", key, "g1", "0"]);
    run(
        c,
        &["XGROUP", "CREATE", key, "g2", "100-0", "ENTRIESREAD", "90"],
    );
    for (group, consumer, count) in [
        ("g1", "alice", "30"),
        ("g1", "bob", "5"),
        ("g2", "carol", "3"),
    ] {
        run(
            c,
            &[
                "XREADGROUP",
                "GROUP",
                group,
                consumer,
                "COUNT",
                count,
                "STREAMS",
                key,
                ">",
            ],
        );
    }
    run(c, &["XACK", key, "g1", "2-2", "3-3"]);
    run(
        c,
        &[
            "XCLAIM",
            key,
            "g1",
            "dave",
            "0",
            "4-0",
            "RETRYCOUNT",
            "7",
            "JUSTID",
        ],
    );
    run(c, &["XGROUP", "CREATECONSUMER", key, "g2", "idle"]);
    run(c, &["XDEL", key, "10-2"]);
}

/// A consumer's `active-time` pair left out, wherever it is: Redis 7.0 has none (Ferrite answers
/// as 7.2), and RDB 10's stream form (what both write) does not carry it.
fn without_active_time(v: &redis::Value) -> redis::Value {
    match v {
        redis::Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            let mut i = 0;
            while i < items.len() {
                if matches!(&items[i], redis::Value::BulkString(b) if b == b"active-time") {
                    i += 2;
                    continue;
                }
                out.push(without_active_time(&items[i]));
                i += 1;
            }
            redis::Value::Array(out)
        }
        other => other.clone(),
    }
}

/// XINFO STREAM FULL without the radix-tree figures (how each server lays entries out) and
/// consumers' active-time (see [`without_active_time`]).
pub(crate) fn stream_content(c: &mut Connection, key: &str) -> Vec<redis::Value> {
    let redis::Value::Array(info) = run(c, &["XINFO", "STREAM", key, "FULL", "COUNT", "0"]) else {
        panic!("XINFO STREAM FULL is not an array");
    };
    let mut out = Vec::new();
    for pair in info.chunks(2) {
        let name = match &pair[0] {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("{other:?}"),
        };
        if !name.starts_with("radix-tree") {
            out.push(pair[0].clone());
            out.extend(pair.get(1).map(without_active_time));
        }
    }
    out
}

#[test]
fn streams_with_consumer_groups_dump_and_restore_both_ways() {
    let redis = RedisServer::start();
    let ferrite = Server::start();
    let (mut r, mut f) = (redis.conn(), ferrite.conn());
    fill_stream(&mut r, "from-redis");
    fill_stream(&mut f, "from-ferrite");
    for redis_to_ferrite in [true, false] {
        let (src, dst, key) = if redis_to_ferrite {
            (&mut r, &mut f, "from-redis")
        } else {
            (&mut f, &mut r, "from-ferrite")
        };
        let payload: Vec<u8> = redis::cmd("DUMP").arg(key).query(src).unwrap();
        let _: String = redis::cmd("RESTORE")
            .arg(key)
            .arg(0)
            .arg(&payload)
            .query(dst)
            .unwrap();
        assert_eq!(stream_content(src, key), stream_content(dst, key), "{key}");
    }
    // Both servers built the same stream from the same commands: entries and pending summaries
    // (which do not depend on the clock) are equal.
    for cmd in [
        ["XRANGE", "-", "+"],
        ["XPENDING", "g1", ""],
        ["XPENDING", "g2", ""],
    ] {
        let args: Vec<&str> = cmd.iter().copied().filter(|a| !a.is_empty()).collect();
        let a: redis::Value = redis::cmd(args[0])
            .arg("from-redis")
            .arg(&args[1..])
            .query(&mut r)
            .unwrap();
        let b: redis::Value = redis::cmd(args[0])
            .arg("from-ferrite")
            .arg(&args[1..])
            .query(&mut r)
            .unwrap();
        assert_eq!(a, b, "{cmd:?}");
    }
    // The restored copy keeps working: new entries, reads by group, XINFO.
    for c in [&mut r, &mut f] {
        run(c, &["XADD", "from-redis", "*", "new", "1"]);
        let read = [
            "XREADGROUP",
            "GROUP",
            "g2",
            "carol",
            "COUNT",
            "1",
            "STREAMS",
            "from-redis",
            ">",
        ];
        let v = run(c, &read);
        assert!(matches!(v, redis::Value::Array(_)), "{v:?}");
    }
}
