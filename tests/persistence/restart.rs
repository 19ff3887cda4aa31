//! What survives a clean restart, the persistence commands and settings, persistence off.

use std::process::Command;
use std::time::Duration;

use redis::{Commands, Value};

use crate::common::{Server, ferrite_bin};
use crate::util::*;

/// Keys of every type, some with a TTL far away.
fn fill(c: &mut redis::Connection, tag: &str) {
    let _: () = c.set("str", tag).unwrap();
    let _: () = c.rpush("list", &[tag, "x", "y"]).unwrap();
    let _: () = c.hset_multiple("hash", &[("f", tag), ("g", "2")]).unwrap();
    let _: () = c.sadd("set", &[tag, "m"]).unwrap();
    let _: () = c.zadd_multiple("zset", &[(1.5, tag), (-2.0, "z")]).unwrap();
    ok(c, &["SET", "ttl", tag, "EX", "100000"]);
    ok(c, &["INCRBYFLOAT", "float", "0.1"]);
    ok(c, &["INCRBYFLOAT", "float", "0.2"]);
    for i in 0..100 {
        let _: () = c.set(format!("{tag}:{i}"), i).unwrap();
    }
}

#[test]
fn tenants_keys_credentials_quotas_and_states_survive_a_restart() {
    let dir = data_dir();
    let s = Server::start_in(dir.path(), &[]);
    let mut adm = s.conn();
    ok(
        &mut adm,
        &[
            "TENANT.CREATE",
            "alpha",
            "PASSWORD",
            "pa",
            "MAXKEYS",
            "1000",
        ],
    );
    ok(
        &mut adm,
        &[
            "TENANT.CREATE",
            "beta",
            "PASSWORD",
            "pb",
            "MAXMEMORY",
            "10mb",
        ],
    );
    ok(&mut adm, &["TENANT.CREATE", "gamma", "PASSWORD", "pc"]);
    ok(&mut adm, &["TENANT.CREATE", "doomed", "PASSWORD", "pd"]);
    ok(&mut adm, &["TENANT.THROTTLE", "beta", "OPS", "5000"]);
    fill(&mut tenant_conn(&s, "alpha", "pa"), "A");
    fill(&mut tenant_conn(&s, "beta", "pb"), "B");
    fill(&mut tenant_conn(&s, "gamma", "pc"), "C");
    fill(&mut adm, "D");
    fill(&mut tenant_conn(&s, "doomed", "pd"), "X");
    // A key that expires while the server is down.
    let mut a = tenant_conn(&s, "alpha", "pa");
    ok(&mut a, &["SET", "short", "v", "PX", "300"]);
    ok(&mut adm, &["TENANT.SUSPEND", "gamma"]);
    ok(&mut adm, &["TENANT.DELETE", "doomed", "FORCE"]);
    // FLUSHDB of a tenant is persisted too.
    let mut b = tenant_conn(&s, "beta", "pb");
    ok(&mut b, &["SET", "before-flush", "1"]);
    ok(&mut b, &["FLUSHDB"]);
    fill(&mut b, "B2");
    let before: Vec<_> = ["alpha", "beta", "gamma", "default"]
        .iter()
        .map(|t| digest(&mut adm, t))
        .collect();
    drop((a, b, adm));
    shutdown(s, &[]);
    std::thread::sleep(Duration::from_millis(350));

    let s = Server::start_in(dir.path(), &[]);
    let mut adm = s.conn();
    let mut after: Vec<_> = ["alpha", "beta", "gamma", "default"]
        .iter()
        .map(|t| digest(&mut adm, t))
        .collect();
    // `short` expired while the server was down: one key fewer in alpha, nothing else changed.
    assert_eq!(after[0].0, before[0].0 - 1, "alpha's expired key is gone");
    after[0] = before[0].clone();
    let mut a = tenant_conn(&s, "alpha", "pa");
    assert!(!a.exists::<_, bool>("short").unwrap());
    // Recompute alpha's expected digest without `short`: compare by content instead.
    assert_eq!(a.get::<_, String>("str").unwrap(), "A");
    assert_eq!(
        a.lrange::<_, Vec<String>>("list", 0, -1).unwrap(),
        ["A", "x", "y"]
    );
    assert_eq!(a.get::<_, String>("float").unwrap(), "0.3");
    let ttl: i64 = a.ttl("ttl").unwrap();
    assert!(
        ttl > 99_000 && ttl <= 100_000,
        "the TTL is kept as an absolute time: {ttl}"
    );
    assert_eq!(&after[1..], &before[1..], "digests of beta, gamma, default");
    // Credentials (as salted hashes on disk), quotas, throttle, state.
    assert!(
        redis::Client::open(format!("redis://alpha:wrong@127.0.0.1:{}/", s.port))
            .unwrap()
            .get_connection()
            .is_err()
    );
    let info = map_of(ok(&mut adm, &["TENANT.INFO", "alpha"]));
    assert_eq!(info.get("maxkeys"), Some(&Value::Int(1000)));
    let info = map_of(ok(&mut adm, &["TENANT.INFO", "beta"]));
    assert_eq!(info.get("maxmemory"), Some(&Value::Int(10 * 1024 * 1024)));
    assert_eq!(info.get("ops_limit"), Some(&Value::Int(5000)));
    let info = map_of(ok(&mut adm, &["TENANT.INFO", "gamma"]));
    assert_eq!(
        info.get("state"),
        Some(&Value::BulkString(b"suspended".to_vec()))
    );
    let mut b = tenant_conn(&s, "beta", "pb");
    assert!(!b.exists::<_, bool>("before-flush").unwrap());
    assert!(err(&mut adm, &["TENANT.INFO", "doomed"]).contains("no such tenant"));
    // No password is stored in clear anywhere in the directory.
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        for pw in [&b"pa"[..], b"pb", b"pc"] {
            assert!(
                !bytes
                    .windows(pw.len() + 2)
                    .any(|w| w[0] == b'"' && &w[1..=pw.len()] == pw && w[pw.len() + 1] == b'"'),
                "{} holds a password",
                entry.display()
            );
        }
    }
    let p = info_of(&mut adm);
    assert_eq!(p["rdb_last_load_keys_expired"], "1");
    assert_eq!(p["aof_enabled"], "1");
}

fn info_of(c: &mut redis::Connection) -> std::collections::BTreeMap<String, String> {
    info(c, "persistence")
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn save_bgsave_lastsave_bgrewriteaof_info_and_config() {
    let dir = data_dir();
    let s = Server::start_in(dir.path(), &[]);
    let mut c = s.conn();
    for i in 0..1000 {
        let _: () = c.set(format!("k{i}"), i).unwrap();
    }
    let p = info_of(&mut c);
    assert_eq!(p["loading"], "0");
    assert_eq!(p["aof_enabled"], "1");
    assert_eq!(p["aof_last_write_status"], "ok");
    assert_eq!(p["rdb_bgsave_in_progress"], "0");
    assert_eq!(p["rdb_changes_since_last_save"], "1000");
    assert_eq!(p["appendfsync"], "everysec");
    let last0: i64 = redis::cmd("LASTSAVE").query(&mut c).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(ok(&mut c, &["SAVE"]), Value::Okay);
    let last1: i64 = redis::cmd("LASTSAVE").query(&mut c).unwrap();
    assert!(last1 > last0, "LASTSAVE moves: {last0} -> {last1}");
    let p = info_of(&mut c);
    assert_eq!(p["rdb_changes_since_last_save"], "0");
    assert_eq!(p["rdb_saves"], "1");
    assert_eq!(p["rdb_last_bgsave_status"], "ok");
    // The snapshot replaced the log: the directory holds a snapshot of generation 2 now.
    let files: Vec<String> = walk(dir.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().any(|f| f == "snap-00000002.fsnap"),
        "{files:?}"
    );
    assert!(!files.iter().any(|f| f == "log-00000001.flog"), "{files:?}");

    let r = ok(&mut c, &["BGSAVE"]);
    assert_eq!(r, Value::SimpleString("Background saving started".into()));
    wait_until("BGSAVE", Duration::from_secs(20), || {
        let p = info_of(&mut c);
        p["rdb_bgsave_in_progress"] == "0" && p["rdb_saves"] == "2"
    });
    let r = ok(&mut c, &["BGREWRITEAOF"]);
    assert_eq!(
        r,
        Value::SimpleString("Background append only file rewriting started".into())
    );
    wait_until("BGREWRITEAOF", Duration::from_secs(20), || {
        let p = info_of(&mut c);
        p["aof_rewrite_in_progress"] == "0" && p["aof_rewrites"] == "1"
    });
    assert!(err(&mut c, &["BGSAVE", "NOW"]).contains("syntax"));

    // CONFIG: Redis's names and ferrite.toml's.
    let get = |c: &mut redis::Connection, k: &str| -> Vec<String> {
        redis::cmd("CONFIG").arg("GET").arg(k).query(c).unwrap()
    };
    assert_eq!(get(&mut c, "appendonly"), ["appendonly", "yes"]);
    assert_eq!(get(&mut c, "appendfsync"), ["appendfsync", "everysec"]);
    assert_eq!(get(&mut c, "save"), ["save", "3600 1 300 100 60 10000"]);
    let d = get(&mut c, "dir");
    assert_eq!(
        std::path::Path::new(&d[1]).canonicalize().unwrap(),
        dir.path().canonicalize().unwrap()
    );
    ok(&mut c, &["CONFIG", "SET", "appendfsync", "always"]);
    assert_eq!(info_of(&mut c)["appendfsync"], "always");
    assert_eq!(
        get(&mut c, "persistence.appendfsync"),
        ["persistence.appendfsync", "always"]
    );
    let _: () = c.set("after-always", 1).unwrap();
    assert!(info_of(&mut c)["aof_fsyncs"].parse::<u64>().unwrap() > 0);
    let e = err(&mut c, &["CONFIG", "SET", "appendfsync", "sometimes"]);
    assert!(e.contains("appendfsync"), "{e}");
    assert_eq!(get(&mut c, "appendfsync"), ["appendfsync", "always"]);
    let e = err(&mut c, &["CONFIG", "SET", "save", "60"]);
    assert!(e.contains("save"), "{e}");
    ok(&mut c, &["CONFIG", "SET", "save", ""]);
    assert!(err(&mut c, &["CONFIG", "SET", "dir", "/tmp"]).contains("immutable"));
    ok(
        &mut c,
        &["CONFIG", "SET", "auto-aof-rewrite-min-size", "1mb"],
    );
    assert_eq!(
        get(&mut c, "persistence.auto_compact_min_size"),
        ["persistence.auto_compact_min_size", "1048576"]
    );
    // An automatic compaction counts as Redis's automatic AOF rewrite does: in `aof_rewrites`
    // (the BGREWRITEAOF above is the first) and its status.
    let big = "x".repeat(64 * 1024);
    for i in 0..24 {
        let _: () = c.set(format!("big{i}"), &big).unwrap();
    }
    wait_until("an automatic compaction", Duration::from_secs(20), || {
        let p = info_of(&mut c);
        let compactions: u64 = p["compactions"].parse().unwrap();
        compactions >= 1
            && p["aof_rewrites"] == (1 + compactions).to_string()
            && p["aof_last_bgrewrite_status"] == "ok"
            && p["aof_rewrites_consecutive_failures"] == "0"
    });
    // A tenant connection may not save.
    ok(&mut c, &["TENANT.CREATE", "t", "PASSWORD", "p"]);
    let mut t = tenant_conn(&s, "t", "p");
    assert!(err(&mut t, &["SAVE"]).contains("permission"));
    let _: Value = redis::cmd("LASTSAVE").query(&mut t).unwrap();
    drop((c, t));
    shutdown(s, &["SAVE"]);
    let s = Server::start_in(dir.path(), &[]);
    let mut c = s.conn();
    assert_eq!(c.get::<_, i64>("k999").unwrap(), 999);
    assert_eq!(c.get::<_, i64>("after-always").unwrap(), 1);
}

#[test]
fn shutdown_nosave_still_keeps_every_acknowledged_write() {
    let dir = data_dir();
    let s = Server::start_in(dir.path(), &["--appendfsync", "no"]);
    let mut c = s.conn();
    for i in 0..500 {
        let _: () = c.rpush("l", i).unwrap();
    }
    drop(c);
    shutdown(s, &["NOSAVE"]);
    let s = Server::start_in(dir.path(), &[]);
    let mut c = s.conn();
    assert_eq!(c.llen::<_, i64>("l").unwrap(), 500);
}

#[test]
fn persistence_can_be_turned_off() {
    let cwd = data_dir();
    let s = Server::start_with(&["--appendonly", "no"]);
    let mut c = s.conn();
    let _: () = c.set("k", "v").unwrap();
    assert!(err(&mut c, &["SAVE"]).contains("persistence is disabled"));
    assert!(err(&mut c, &["BGSAVE"]).contains("persistence is disabled"));
    let _: i64 = redis::cmd("LASTSAVE").query(&mut c).unwrap();
    assert_eq!(info_of(&mut c)["aof_enabled"], "0");
    let v: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query(&mut c)
        .unwrap();
    assert_eq!(v, ["appendonly", "no"]);
    drop(cwd);
}

/// The README's first command: `ferrite` with no options keeps its data in `./data`, created
/// when missing, with the default policy (`everysec`) and snapshot triggers, and finds it there
/// again after a clean shutdown and after a SIGKILL.
#[test]
fn the_default_directory_is_data_under_the_working_directory() {
    let cwd = data_dir();
    let s = Server::start_in_dir(cwd.path(), &[]);
    let mut c = s.conn();
    let p = info_of(&mut c);
    assert_eq!(p["aof_enabled"], "1");
    assert_eq!(p["appendfsync"], "everysec");
    let save: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .query(&mut c)
        .unwrap();
    assert_eq!(save, ["save", "3600 1 300 100 60 10000"]);
    let _: () = c.set("k", "v").unwrap();
    drop(c);
    shutdown(s, &[]);
    assert!(cwd.path().join("data").join("catalog.fcat").exists());
    let s = Server::start_in_dir(cwd.path(), &[]);
    let mut c = s.conn();
    assert_eq!(c.get::<_, String>("k").unwrap(), "v");
    // A crash with the defaults: every acknowledged write is back (everysec hands each write
    // to the kernel before replying; only a power loss can take the last second).
    for i in 0..300 {
        let _: () = c.rpush("crash", i).unwrap();
    }
    drop(c);
    sigkill(s);
    let s = Server::start_in_dir(cwd.path(), &[]);
    let mut c = s.conn();
    assert_eq!(c.get::<_, String>("k").unwrap(), "v");
    let l: Vec<i64> = c.lrange("crash", 0, -1).unwrap();
    assert_eq!(l, (0..300).collect::<Vec<i64>>());
}

#[test]
fn two_servers_cannot_share_a_directory() {
    let dir = data_dir();
    let _s = Server::start_in(dir.path(), &[]);
    let out = Command::new(ferrite_bin())
        .args(["--port", "0", "--metrics-addr", "off", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("in use by another ferrite"), "{e}");
}

/// A snapshot whose header claims an absurd key count (a damaged or forged file; the count is
/// the optional field added after the first release) still loads, and nothing is sized by that
/// count: under a 1.5 GiB address-space limit (where reserving the table for the 16M keys of the
/// loader's absolute cap would already fail), the server starts and holds exactly the file's
/// keys. A snapshot with no count at all (as written before the field existed) loads too.
#[test]
fn a_forged_or_missing_key_count_in_a_snapshot_loads_and_reserves_nothing_for_it() {
    use ferrite_persistence::format::put_frame;
    use ferrite_persistence::record::{self, FileHeader};
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Server::start_in(dir.path(), &[]);
        let mut c = s.conn();
        for i in 0..1000 {
            let _: () = c.set(format!("k{i}"), "v").unwrap();
        }
        let _: Value = redis::cmd("SAVE").query(&mut c).unwrap();
    }
    let snap = walk(dir.path())
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "fsnap"))
        .expect("a snapshot");
    let original = std::fs::read(&snap).unwrap();
    // File header (8 bytes), then the first frame: len, !len, crc (12 bytes), the header record.
    let len = u32::from_le_bytes(original[8..12].try_into().unwrap()) as usize;
    let header = record::read_header(&original[20..20 + len], record::SNAPSHOT_HEADER).unwrap();
    assert_eq!(header.keys, Some(1000), "this build writes the count");
    let with_count = |keys: Option<u64>| {
        let mut payload = Vec::new();
        record::put_snapshot_header(
            &mut payload,
            &FileHeader {
                keys,
                ..header.clone()
            },
        );
        let mut out = original[..8].to_vec();
        put_frame(&mut out, &payload);
        out.extend_from_slice(&original[20 + len..]);
        out
    };
    for keys in [Some(u64::MAX >> 1), None] {
        std::fs::write(&snap, with_count(keys)).unwrap();
        let dir_arg = dir.path().to_string_lossy().into_owned();
        let s = Server::start_with_memory_limit(1536 * 1024, &["--dir", &dir_arg]);
        let mut c = s.conn();
        let n: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
        assert_eq!(n, 1000, "{keys:?}");
        let v: String = c.get("k999").unwrap();
        assert_eq!(v, "v");
    }
}
