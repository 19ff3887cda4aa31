//! SIGKILL: acknowledged writes survive (key by key, every type, several tenants); the
//! `everysec` loss is measured; digests are preserved; a kill during a snapshot or a compaction
//! leaves a directory that loads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use redis::Commands;

use crate::common::Server;
use crate::util::*;

/// What one writer had acknowledged when the server died.
#[derive(Default, Debug)]
struct Acked {
    strings: Vec<u64>,
    list: Vec<u64>,
    hash: Vec<u64>,
    set: Vec<u64>,
    zset: Vec<u64>,
    /// The operation in flight when the connection broke (maybe applied, maybe not).
    in_flight: Option<u64>,
}

/// Writer `w` cycles through the five types until `stop` or an error (the server died).
fn writer(mut c: redis::Connection, w: usize, stop: Arc<AtomicBool>) -> Acked {
    let mut acked = Acked::default();
    let mut i = 0u64;
    while !stop.load(Relaxed) && i < 1_000_000 {
        let r: redis::RedisResult<redis::Value> = match i % 5 {
            0 => c.set(format!("s:{w}:{i}"), format!("v{i}")),
            1 => c.rpush(format!("l:{w}"), i),
            2 => c.hset(format!("h:{w}"), format!("f{i}"), i),
            3 => c.sadd(format!("set:{w}"), format!("m{i}")),
            _ => c.zadd(format!("z:{w}"), format!("m{i}"), i),
        };
        if r.is_err() {
            acked.in_flight = Some(i);
            break;
        }
        match i % 5 {
            0 => acked.strings.push(i),
            1 => acked.list.push(i),
            2 => acked.hash.push(i),
            3 => acked.set.push(i),
            _ => acked.zset.push(i),
        }
        i += 1;
    }
    acked
}

const TENANTS: [(&str, &str); 3] = [("t0", "p0"), ("t1", "p1"), ("t2", "p2")];

/// The connection writer `w` uses: tenants t0..t2, and the default tenant for the fourth.
fn writer_conn(s: &Server, w: usize) -> redis::Connection {
    match TENANTS.get(w) {
        Some((t, p)) => tenant_conn(s, t, p),
        None => s.conn(),
    }
}

/// Starts the four writers (one per `writer_conn`), each until `stop`.
fn spawn_writers(s: &Server, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<Acked>> {
    (0..4)
        .map(|w| {
            let c = writer_conn(s, w);
            let stop = stop.clone();
            std::thread::spawn(move || writer(c, w, stop))
        })
        .collect()
}

fn create_tenants(s: &Server) {
    let mut adm = s.conn();
    for (t, p) in TENANTS {
        ok(&mut adm, &["TENANT.CREATE", t, "PASSWORD", p]);
    }
}

/// Runs four writers for `run`, then SIGKILLs the server under them; returns what each had
/// acknowledged.
fn write_then_kill(s: Server, run: Duration) -> Vec<Acked> {
    let stop = Arc::new(AtomicBool::new(false));
    let handles = spawn_writers(&s, &stop);
    std::thread::sleep(run);
    sigkill(s);
    stop.store(true, Relaxed);
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Checks every acknowledged write of every writer; returns how many were missing.
fn missing_writes(s: &Server, acked: &[Acked]) -> usize {
    let mut missing = 0;
    for (w, a) in acked.iter().enumerate() {
        let mut c = writer_conn(s, w);
        for chunk in a.strings.chunks(500) {
            let keys: Vec<String> = chunk.iter().map(|i| format!("s:{w}:{i}")).collect();
            let got: Vec<Option<String>> = c.mget(&keys).unwrap();
            for (i, v) in chunk.iter().zip(got) {
                if v.as_deref() != Some(format!("v{i}").as_str()) {
                    missing += 1;
                }
            }
        }
        let list: Vec<u64> = c.lrange(format!("l:{w}"), 0, -1).unwrap();
        // The list holds the acknowledged pushes in order, then at most the one in flight.
        let ok_prefix = list.len() >= a.list.len() && list[..a.list.len()] == a.list[..];
        let extra_ok = list.len() <= a.list.len() + 1;
        if !ok_prefix || !extra_ok {
            missing += a.list.len().saturating_sub(list.len()).max(1);
        }
        let hash: BTreeMap<String, u64> = c.hgetall(format!("h:{w}")).unwrap();
        missing += a
            .hash
            .iter()
            .filter(|i| hash.get(&format!("f{i}")) != Some(i))
            .count();
        let set: std::collections::HashSet<String> = c.smembers(format!("set:{w}")).unwrap();
        missing += a
            .set
            .iter()
            .filter(|i| !set.contains(&format!("m{i}")))
            .count();
        let zset: Vec<(String, f64)> = c.zrange_withscores(format!("z:{w}"), 0, -1).unwrap();
        let zset: BTreeMap<String, f64> = zset.into_iter().collect();
        missing += a
            .zset
            .iter()
            .filter(|i| zset.get(&format!("m{i}")) != Some(&(**i as f64)))
            .count();
    }
    missing
}

fn total(acked: &[Acked]) -> usize {
    acked
        .iter()
        .map(|a| a.strings.len() + a.list.len() + a.hash.len() + a.set.len() + a.zset.len())
        .sum()
}

#[test]
fn sigkill_with_always_loses_no_acknowledged_write() {
    let dir = data_dir();
    let s = Server::start_in(dir.path(), &["--appendfsync", "always"]);
    create_tenants(&s);
    let acked = write_then_kill(s, Duration::from_millis(1500));
    let n = total(&acked);
    assert!(n > 200, "the writers got through only {n} writes");
    let s = Server::start_in(dir.path(), &["--appendfsync", "always"]);
    let missing = missing_writes(&s, &acked);
    assert_eq!(missing, 0, "{missing} of {n} acknowledged writes lost");
    // Group commit: the writers shared fsyncs (fewer fsyncs than writes) — it is what keeps
    // `always` usable; checked on the restarted server with a burst of parallel writes.
    let mut adm = s.conn();
    let before: u64 = info(&mut adm, "persistence")["aof_fsyncs"].parse().unwrap();
    let threads: Vec<_> = (0..8)
        .map(|w| {
            let mut c = s.conn();
            std::thread::spawn(move || {
                let mut p = redis::pipe();
                for i in 0..50 {
                    p.set(format!("burst:{w}:{i}"), i).ignore();
                }
                let _: () = p.query(&mut c).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let after: u64 = info(&mut adm, "persistence")["aof_fsyncs"].parse().unwrap();
    assert!(
        after - before < 8 * 50,
        "400 acknowledged writes took {} fsyncs",
        after - before
    );
}

/// With `everysec` a write is handed to the kernel before it is acknowledged, so a process
/// crash loses none of them (only a machine failure can lose the last second). Measured here;
/// docs/persistence.md states the bound.
#[test]
fn sigkill_with_everysec_loses_no_acknowledged_write_either() {
    let dir = data_dir();
    let s = Server::start_in(dir.path(), &[]);
    create_tenants(&s);
    let acked = write_then_kill(s, Duration::from_millis(1000));
    let n = total(&acked);
    assert!(n > 1000, "the writers got through only {n} writes");
    let s = Server::start_in(dir.path(), &[]);
    let missing = missing_writes(&s, &acked);
    eprintln!("everysec, SIGKILL after {n} acknowledged writes: {missing} lost");
    assert_eq!(missing, 0, "{missing} of {n} acknowledged writes lost");
}

/// Every tenant's digest after a SIGKILL and a restart equals the digest before the kill, with
/// commands whose effects are rewritten (relative TTLs, random pops, float increments),
/// transactions, deletes and FLUSHDB in the history.
#[test]
fn a_restart_after_sigkill_preserves_every_tenant_digest() {
    let dir = data_dir();
    let s = Server::start_in(dir.path(), &[]);
    create_tenants(&s);
    for w in 0..4 {
        let mut c = writer_conn(&s, w);
        for i in 0..300 {
            let k = format!("k{}", i % 50);
            match i % 10 {
                0 => ok(&mut c, &["SET", &k, "x", "EX", "100000"]),
                1 => ok(&mut c, &["INCRBYFLOAT", "f", "0.1"]),
                2 => ok(&mut c, &["SADD", "s", &format!("m{i}"), "a", "b"]),
                3 => ok(&mut c, &["SPOP", "s"]),
                4 => ok(&mut c, &["HINCRBYFLOAT", "h", &k, "1.5"]),
                5 => ok(&mut c, &["EXPIRE", &k, "200000"]),
                6 => ok(&mut c, &["RPUSH", "l", &k]),
                7 => ok(&mut c, &["ZINCRBY", "z", "2.5", &k]),
                8 => ok(&mut c, &["DEL", &format!("k{}", (i + 7) % 50)]),
                _ => ok(&mut c, &["GETEX", &k, "PERSIST"]),
            };
        }
        let _: () = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg("tx")
            .arg("1")
            .ignore()
            .cmd("INCR")
            .arg("tx")
            .ignore()
            .cmd("SPOP")
            .arg("s")
            .arg("2")
            .ignore()
            .query(&mut c)
            .unwrap();
        if w == 1 {
            ok(&mut c, &["FLUSHDB"]);
            ok(&mut c, &["SET", "after-flush", "1"]);
        }
    }
    let mut adm = s.conn();
    let ids = ["t0", "t1", "t2", "default"];
    let before: Vec<_> = ids.iter().map(|t| digest(&mut adm, t)).collect();
    drop(adm);
    sigkill(s);
    let s = Server::start_in(dir.path(), &[]);
    let mut adm = s.conn();
    let after: Vec<_> = ids.iter().map(|t| digest(&mut adm, t)).collect();
    assert_eq!(after, before);
    // And once more after a snapshot replaced the logs.
    ok(&mut adm, &["SAVE"]);
    drop(adm);
    sigkill(s);
    let s = Server::start_in(dir.path(), &[]);
    let mut adm = s.conn();
    let again: Vec<_> = ids.iter().map(|t| digest(&mut adm, t)).collect();
    assert_eq!(again, before);
}

/// Kills the server while a snapshot (BGSAVE) or a compaction (BGREWRITEAOF) is being written,
/// with writers running: the directory loads, with every acknowledged write.
#[test]
fn sigkill_during_a_snapshot_or_a_compaction_leaves_a_directory_that_loads() {
    for (round, command) in ["BGSAVE", "BGREWRITEAOF", "BGSAVE"].iter().enumerate() {
        let dir = data_dir();
        let s = Server::start_in(dir.path(), &[]);
        create_tenants(&s);
        {
            // Enough data that the snapshot takes a while.
            let mut c = s.conn();
            for chunk in 0..20 {
                let mut p = redis::pipe();
                for i in 0..10_000 {
                    p.set(format!("bulk:{chunk}:{i}"), "x".repeat(64)).ignore();
                }
                let _: () = p.query(&mut c).unwrap();
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let handles = spawn_writers(&s, &stop);
        std::thread::sleep(Duration::from_millis(100));
        let mut adm = s.conn();
        ok(&mut adm, &[command]);
        // Kill while it runs: at its start, or a little later.
        let deadline = Instant::now() + Duration::from_secs(10);
        let tmp_seen = loop {
            let tmp = walk_files(dir.path())
                .iter()
                .any(|p| p.to_string_lossy().ends_with(".tmp"));
            if tmp || Instant::now() > deadline {
                break tmp;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        std::thread::sleep(Duration::from_millis(20 * round as u64));
        sigkill(s);
        stop.store(true, Relaxed);
        let acked: Vec<Acked> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(tmp_seen, "{command} never started writing");
        let s = Server::start_in(dir.path(), &[]);
        assert_eq!(missing_writes(&s, &acked), 0, "{command}, round {round}");
        let mut c = s.conn();
        assert_eq!(c.get::<_, String>("bulk:19:9999").unwrap(), "x".repeat(64));
        // The unfinished snapshot was removed.
        assert!(
            !walk_files(dir.path())
                .iter()
                .any(|p| p.to_string_lossy().ends_with(".tmp"))
        );
    }
}

/// Kills the server under `always` writers at moments around a rotation (BGSAVE switches every
/// tenant's writers to a new log and fsyncs the old one off their path): after the restart every
/// acknowledged write is there, key by key — a reply on the new log never precedes the old
/// log's fsync.
#[test]
fn sigkill_around_a_rotation_with_always_loses_no_acknowledged_write() {
    for (round, delay_ms) in [0u64, 1, 3, 8].into_iter().enumerate() {
        let dir = data_dir();
        let s = Server::start_in(dir.path(), &["--appendfsync", "always"]);
        create_tenants(&s);
        {
            let mut c = s.conn();
            let mut p = redis::pipe();
            for i in 0..20_000 {
                p.set(format!("bulk:{i}"), "x".repeat(32)).ignore();
            }
            let _: () = p.query(&mut c).unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let handles = spawn_writers(&s, &stop);
        std::thread::sleep(Duration::from_millis(150));
        let mut adm = s.conn();
        // Earlier rotations finished, then one the kill lands around.
        for _ in 0..round {
            ok(&mut adm, &["BGSAVE"]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while info(&mut adm, "persistence")["rdb_bgsave_in_progress"] != "0" {
                assert!(Instant::now() < deadline, "a BGSAVE did not end in 10 s");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        ok(&mut adm, &["BGSAVE"]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        sigkill(s);
        stop.store(true, Relaxed);
        let acked: Vec<Acked> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let n = total(&acked);
        assert!(
            n > 50,
            "round {round}: the writers got through only {n} writes"
        );
        let s = Server::start_in(dir.path(), &["--appendfsync", "always"]);
        let missing = missing_writes(&s, &acked);
        assert_eq!(
            missing, 0,
            "round {round} (kill {delay_ms} ms after BGSAVE): {missing} of {n} acknowledged writes lost"
        );
        let mut c = s.conn();
        assert_eq!(c.get::<_, String>("bulk:19999").unwrap(), "x".repeat(32));
    }
}

pub fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
