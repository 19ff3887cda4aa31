//! Whole RDB files between Ferrite and a real redis-server: a `dump.rdb` that redis-server
//! SAVEd with every type in every encoding it writes (plus streams with consumer groups,
//! function libraries and TTLs) is read by `ferrite_rdb::file::read`, written again by
//! `ferrite_rdb::file::Writer`, and a second redis-server started on that file holds exactly the
//! same keys, values, TTLs and functions.

use std::collections::BTreeMap;
use std::path::Path;

use redis::Connection;

use super::rdb_interop::{RedisServer, content, fill_stream, run, stream_content};

/// An absolute expiry far enough in the future for the test (ms).
pub(crate) fn future_ms(offset: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    now + 3_600_000 + offset
}

pub(crate) const LIBRARY_A: &str =
    "#!lua name=liba\nredis.register_function('fa', function(keys, args) return 1 end)";
pub(crate) const LIBRARY_B: &str = "#!lua name=libb\nredis.register_function{function_name='fb', \
     callback=function(keys, args) return redis.call('GET', keys[1]) end, flags={'no-writes'}}";

/// Fills a server with one key per type and encoding redis-server 7.0 uses (the key's name says
/// which; `redis_encodings` lists the expected OBJECT ENCODING), TTLs on keys of every type, two
/// function libraries. `debug`: also a list with plain quicklist nodes (needs redis-server's
/// DEBUG QUICKLIST-PACKED-THRESHOLD).
pub(crate) fn fill_everything(c: &mut Connection, debug: bool) {
    let many: Vec<String> = (0..2000).map(|i| format!("element-{i}")).collect();
    let ints: Vec<String> = (0..500).map(|i| (i * 7 - 300).to_string()).collect();
    let big_ints: Vec<String> = (0..1000).map(|i| (i * 1_000_003).to_string()).collect();
    let fields: Vec<String> = (0..1000)
        .flat_map(|i| [format!("f{i}"), format!("v{i}")])
        .collect();
    let members: Vec<String> = (0..1000)
        .flat_map(|i| [(f64::from(i) / 7.0).to_string(), format!("m{i}")])
        .collect();
    let long = "L".repeat(100);
    let cmds: Vec<Vec<String>> = vec![
        vec!["SET".into(), "string:int".into(), "12345".into()],
        vec!["SET".into(), "string:int-max".into(), i64::MAX.to_string()],
        vec!["SET".into(), "string:embstr".into(), "hello".into()],
        vec!["SET".into(), "string:empty".into(), "".into()],
        vec!["SET".into(), "string:raw".into(), "abc".repeat(400)],
        vec!["SET".into(), "string:raw-random".into(), "x1y2".repeat(50)],
        vec!["SET".into(), "string:int-lookalike".into(), "007".into()],
        ["RPUSH", "list:small", "a", "1", "-5", "9999999999", ""]
            .map(String::from)
            .to_vec(),
        [vec!["RPUSH".into(), "list:quicklist".into()], many.clone()].concat(),
        [vec!["SADD".into(), "set:intset".into()], ints.clone()].concat(),
        vec![
            "SADD".into(),
            "set:intset-small".into(),
            "1".into(),
            "-70000".into(),
            "5000000000".into(),
        ],
        [
            vec!["SADD".into(), "set:hashtable".into()],
            many[..300].to_vec(),
        ]
        .concat(),
        [vec!["SADD".into(), "set:hashtable-ints".into()], big_ints].concat(),
        vec![
            "SADD".into(),
            "set:hashtable-small".into(),
            "a".into(),
            "b".into(),
        ],
        vec![
            "HSET".into(),
            "hash:listpack".into(),
            "f".into(),
            "v".into(),
            "n".into(),
            "42".into(),
        ],
        [vec!["HSET".into(), "hash:hashtable".into()], fields].concat(),
        vec![
            "HSET".into(),
            "hash:hashtable-long".into(),
            "f".into(),
            long.clone(),
        ],
        vec![
            "ZADD".into(),
            "zset:listpack".into(),
            "1.5".into(),
            "a".into(),
            "-2".into(),
            "b".into(),
            "3".into(),
            "c".into(),
        ],
        [vec!["ZADD".into(), "zset:skiplist".into()], members].concat(),
        vec!["ZADD".into(), "zset:skiplist-long".into(), "1".into(), long],
        vec![
            "ZADD".into(),
            "zset:listpack-inf".into(),
            "inf".into(),
            "top".into(),
            "-inf".into(),
            "bottom".into(),
            "0.1".into(),
            "tenth".into(),
        ],
        vec![
            "XADD".into(),
            "stream:emptied".into(),
            "5-1".into(),
            "f".into(),
            "v".into(),
        ],
        vec!["XDEL".into(), "stream:emptied".into(), "5-1".into()],
        vec![
            "XGROUP".into(),
            "CREATE".into(),
            "stream:mkstream".into(),
            "g".into(),
            "$".into(),
            "MKSTREAM".into(),
        ],
        vec!["FUNCTION".into(), "LOAD".into(), LIBRARY_A.into()],
        vec!["FUNCTION".into(), "LOAD".into(), LIBRARY_B.into()],
    ];
    for args in &cmds {
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        run(c, &words);
    }
    fill_stream(c, "stream:groups");
    if debug {
        run(c, &["DEBUG", "QUICKLIST-PACKED-THRESHOLD", "100"]);
        run(
            c,
            &["RPUSH", "list:quicklist-plain", &"P".repeat(300), "small"],
        );
        run(c, &["RPUSH", "list:quicklist-plain", &"Q".repeat(200)]);
        run(c, &["DEBUG", "QUICKLIST-PACKED-THRESHOLD", "1073741824"]);
    }
    // TTLs on keys of every type (absolute, so two servers can be compared exactly).
    for (i, key) in [
        "string:int",
        "string:raw",
        "list:small",
        "list:quicklist",
        "set:intset",
        "set:hashtable",
        "hash:listpack",
        "hash:hashtable",
        "zset:listpack",
        "zset:skiplist",
        "stream:groups",
    ]
    .iter()
    .enumerate()
    {
        run(
            c,
            &["PEXPIREAT", key, &future_ms(i as u64 * 1000).to_string()],
        );
    }
}

/// OBJECT ENCODING each key should have on redis-server 7.0 after `fill_everything`.
pub(crate) fn redis_encodings() -> Vec<(&'static str, &'static str)> {
    vec![
        ("string:int", "int"),
        ("string:int-max", "int"),
        ("string:embstr", "embstr"),
        ("string:empty", "embstr"),
        ("string:raw", "raw"),
        ("string:raw-random", "raw"),
        ("string:int-lookalike", "embstr"),
        ("list:small", "quicklist"),
        ("list:quicklist", "quicklist"),
        ("list:quicklist-plain", "quicklist"),
        ("set:intset", "intset"),
        ("set:intset-small", "intset"),
        ("set:hashtable", "hashtable"),
        ("set:hashtable-ints", "hashtable"),
        ("set:hashtable-small", "hashtable"),
        ("hash:listpack", "listpack"),
        ("hash:hashtable", "hashtable"),
        ("hash:hashtable-long", "hashtable"),
        ("zset:listpack", "listpack"),
        ("zset:skiplist", "skiplist"),
        ("zset:skiplist-long", "skiplist"),
        ("zset:listpack-inf", "listpack"),
        ("stream:groups", "stream"),
        ("stream:emptied", "stream"),
        ("stream:mkstream", "stream"),
    ]
}

/// One key as both servers must agree on it: type, content, absolute expiry (-1: none).
#[derive(Debug, PartialEq)]
pub(crate) struct KeyState {
    content: Vec<Vec<u8>>,
    expire_at_ms: i64,
}

/// Every key of the connection's database, with its content and absolute expiry.
pub(crate) fn dataset(c: &mut Connection) -> BTreeMap<String, KeyState> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(c).unwrap();
    let mut out = BTreeMap::new();
    for key in keys {
        let t: String = redis::cmd("TYPE").arg(&key).query(c).unwrap();
        let content = if t == "stream" {
            vec![
                t.into_bytes(),
                format!("{:?}", stream_content(c, &key)).into_bytes(),
            ]
        } else {
            content(c, &key)
        };
        let expire_at_ms: i64 = redis::cmd("PEXPIRETIME").arg(&key).query(c).unwrap();
        out.insert(
            key,
            KeyState {
                content,
                expire_at_ms,
            },
        );
    }
    out
}

/// Function libraries: (name, code), sorted.
pub(crate) fn functions(c: &mut Connection) -> Vec<(String, String)> {
    let redis::Value::Array(libs) = run(c, &["FUNCTION", "LIST", "WITHCODE"]) else {
        panic!("FUNCTION LIST is not an array");
    };
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        other => format!("{other:?}"),
    };
    let mut out = Vec::new();
    for lib in libs {
        let fields: Vec<redis::Value> = match lib {
            redis::Value::Array(a) => a,
            redis::Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            other => panic!("library {other:?}"),
        };
        let get = |name: &str| {
            fields
                .chunks(2)
                .find(|p| text(&p[0]) == name)
                .map(|p| text(&p[1]))
                .unwrap_or_default()
        };
        out.push((get("library_name"), get("library_code")));
    }
    out.sort();
    out
}

/// Asserts two servers hold the same keys (key by key: content and expiry) and functions.
pub(crate) fn assert_same_data(a: &mut Connection, b: &mut Connection) {
    let (da, db) = (dataset(a), dataset(b));
    let names = |d: &BTreeMap<String, KeyState>| d.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&da), names(&db), "key names differ");
    for (key, state) in &da {
        let other = &db[key];
        assert_eq!(
            state.expire_at_ms, other.expire_at_ms,
            "{key}: expiry differs"
        );
        if state.content != other.content {
            let first = state
                .content
                .iter()
                .zip(&other.content)
                .position(|(x, y)| x != y);
            panic!(
                "{key}: content differs: {} vs {} elements, first difference at {first:?}",
                state.content.len(),
                other.content.len()
            );
        }
    }
    assert_eq!(functions(a), functions(b), "function libraries differ");
}

/// A fresh temporary directory (removed on drop).
pub(crate) fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Starts redis-server on `dir/dump.rdb` (loaded at startup if present), logging to
/// `dir/redis.log`.
pub(crate) fn redis_on(dir: &Path, extra: &[&str]) -> RedisServer {
    let d = dir.to_str().expect("utf-8 temp path");
    let log = dir.join("redis.log");
    let log = log.to_str().expect("utf-8 temp path");
    let mut args = vec!["--dir", d, "--dbfilename", "dump.rdb", "--logfile", log];
    args.extend_from_slice(extra);
    RedisServer::start_with(&args)
}

/// redis-server filled with everything, SAVEd to `dir/dump.rdb`.
pub(crate) fn redis_with_everything(dir: &Path) -> RedisServer {
    let redis = redis_on(dir, &["--enable-debug-command", "yes"]);
    let mut c = redis.conn();
    fill_everything(&mut c, true);
    for (key, encoding) in redis_encodings() {
        let got: String = redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg(key)
            .query(&mut c)
            .unwrap();
        assert_eq!(got, encoding, "{key}: the fill must produce this encoding");
    }
    run(&mut c, &["SAVE"]);
    redis
}

#[test]
fn redis_rdb_file_reads_and_rewrites_exactly() {
    let (dir_a, dir_b) = (temp_dir(), temp_dir());
    let a = redis_with_everything(dir_a.path());
    let bytes = std::fs::read(dir_a.path().join("dump.rdb")).unwrap();
    let mut entries = Vec::new();
    let info = ferrite_rdb::file::read(bytes.as_slice(), 1 << 30, |e| {
        entries.push(e);
        Ok(())
    })
    .unwrap();
    assert_eq!(info.version, 10);
    assert!(info.checksum_verified);
    assert_eq!(info.functions.len(), 2);
    let mut ca = a.conn();
    let dbsize: u64 = redis::cmd("DBSIZE").query(&mut ca).unwrap();
    assert_eq!(entries.len() as u64, dbsize);
    assert!(entries.iter().all(|e| e.db == 0));
    // Write it again with Ferrite's writer and start a second redis-server on it.
    let mut w = ferrite_rdb::file::Writer::new(Vec::new()).unwrap();
    w.aux(b"redis-bits", b"64").unwrap();
    for code in &info.functions {
        w.function(code).unwrap();
    }
    let expires = entries.iter().filter(|e| e.expire_at_ms.is_some()).count();
    w.select_db(0, entries.len() as u64, expires as u64)
        .unwrap();
    for e in &entries {
        w.key(&e.key, e.expire_at_ms, &e.value).unwrap();
    }
    std::fs::write(dir_b.path().join("dump.rdb"), w.finish().unwrap()).unwrap();
    let b = redis_on(dir_b.path(), &[]);
    assert_same_data(&mut ca, &mut b.conn());
}

/// A map reply (RESP2 flat array or RESP3 map) as text fields.
fn fields(v: redis::Value) -> BTreeMap<String, String> {
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Int(n) => n.to_string(),
        other => format!("{other:?}"),
    };
    let pairs: Vec<(redis::Value, redis::Value)> = match v {
        redis::Value::Map(m) => m,
        redis::Value::Array(a) => a
            .chunks(2)
            .filter_map(|p| match p {
                [k, v] => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect(),
        other => panic!("not a map: {other:?}"),
    };
    pairs.iter().map(|(k, v)| (text(k), text(v))).collect()
}

/// Runs a command expected to fail; its error text.
fn refused(c: &mut Connection, args: &[&str]) -> String {
    let mut k = redis::cmd(args[0]);
    for a in &args[1..] {
        k.arg(*a);
    }
    match k.query::<redis::Value>(c) {
        Ok(v) => panic!("{args:?}: expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[test]
fn redis_dump_restores_into_a_tenant_exactly() {
    let dir = temp_dir();
    let redis = redis_with_everything(dir.path());
    let ferrite = crate::common::Server::start();
    let mut f = ferrite.conn();
    let rdb = dir.path().join("dump.rdb");
    // The tenant does not exist yet: the restore creates it.
    let done = fields(run(
        &mut f,
        &["TENANT.RESTORE", "acme", "RDB", path_str(&rdb)],
    ));
    let mut r = redis.conn();
    let dbsize: u64 = redis::cmd("DBSIZE").query(&mut r).unwrap();
    assert_eq!(done["keys"], dbsize.to_string(), "{done:?}");
    run(&mut f, &["TENANT.USE", "acme"]);
    assert_same_data(&mut r, &mut f);
    // The restored data works: functions run, collections take writes.
    let v: i64 = redis::cmd("FCALL").arg("fa").arg(0).query(&mut f).unwrap();
    assert_eq!(v, 1);
    run(&mut f, &["SADD", "set:intset", "hello"]);
    run(&mut f, &["XADD", "stream:groups", "*", "k", "v"]);
    // Over a tenant with data: refused without REPLACE, replaces everything with it.
    run(&mut f, &["TENANT.USE", "default"]);
    let e = refused(&mut f, &["TENANT.RESTORE", "acme", "RDB", path_str(&rdb)]);
    assert!(e.contains("REPLACE") || e.contains("BUSYKEY"), "{e}");
    run(
        &mut f,
        &["TENANT.RESTORE", "acme", "RDB", path_str(&rdb), "REPLACE"],
    );
    run(&mut f, &["TENANT.USE", "acme"]);
    assert_same_data(&mut r, &mut f);
}

#[test]
fn tenant_rdb_backup_loads_in_redis_server() {
    let ferrite = crate::common::Server::start();
    let mut f = ferrite.conn();
    run(&mut f, &["TENANT.CREATE", "acme"]);
    run(&mut f, &["TENANT.USE", "acme"]);
    fill_everything(&mut f, false);
    run(&mut f, &["TENANT.USE", "default"]);
    let id = match run(&mut f, &["TENANT.BACKUP", "acme", "FORMAT", "rdb"]) {
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
        other => panic!("{other:?}"),
    };
    let info = fields(run(&mut f, &["TENANT.BACKUP.INFO", &id]));
    assert_eq!(info["format"], "rdb");
    let dir = temp_dir();
    std::fs::copy(&info["path"], dir.path().join("dump.rdb")).unwrap();
    let redis = redis_on(dir.path(), &[]);
    let mut r = redis.conn();
    let dbsize: u64 = redis::cmd("DBSIZE").query(&mut r).unwrap();
    assert_eq!(info["keys"], dbsize.to_string());
    run(&mut f, &["TENANT.USE", "acme"]);
    assert_same_data(&mut f, &mut r);
    // The backup also restores into Ferrite (its recorded digest is verified).
    run(&mut f, &["TENANT.USE", "default"]);
    run(
        &mut f,
        &["TENANT.RESTORE", "acme", "BACKUP", &id, "AS", "acme2"],
    );
    run(&mut f, &["TENANT.USE", "acme2"]);
    assert_same_data(&mut f, &mut r);
}

/// A file of a version 10 header, `body` and EOF with a correct checksum.
fn handmade(body: &[u8]) -> Vec<u8> {
    let mut b = b"REDIS0010".to_vec();
    b.extend_from_slice(body);
    b.push(255);
    let crc = ferrite_rdb::crc64(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn refused_rdb_files_change_nothing() {
    let ferrite = crate::common::Server::start();
    let mut f = ferrite.conn();
    run(&mut f, &["TENANT.CREATE", "acme"]);
    run(&mut f, &["TENANT.USE", "acme"]);
    run(&mut f, &["SET", "keep", "me"]);
    run(&mut f, &["RPUSH", "list", "a", "b"]);
    run(&mut f, &["TENANT.USE", "default"]);
    let before = fields(run(&mut f, &["TENANT.DIGEST", "acme"]));

    let dir = temp_dir();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    // A real dump with a string key first, so a refusal comes after keys were read.
    let redis = redis_on(dir.path(), &[]);
    let mut r = redis.conn();
    for i in 0..100 {
        run(&mut r, &["SET", &format!("k{i}"), "v"]);
    }
    run(&mut r, &["SAVE"]);
    let good = std::fs::read(dir.path().join("dump.rdb")).unwrap();
    let mut flipped = good.clone();
    let n = flipped.len();
    flipped[n / 2] ^= 0x20;
    let string_key = [0u8, 1, b'a', 1, b'v'];
    let module_aux = [&string_key[..], &[247, 0x81, 1, 2, 3, 4, 5, 6, 7, 8]].concat();
    let module_value = [
        &string_key[..],
        &[7, 2, b'm', b'k', 0x81, 1, 2, 3, 4, 5, 6, 7],
    ]
    .concat();
    let unknown_opcode = [&string_key[..], &[200, 0]].concat();
    let mut two_dbs = ferrite_rdb::file::Writer::new(Vec::new()).unwrap();
    for (db, key) in [(0, "zero"), (3, "three")] {
        two_dbs.select_db(db, 1, 0).unwrap();
        two_dbs
            .key(
                key.as_bytes(),
                None,
                &ferrite_rdb::Value::String(b"v".to_vec()),
            )
            .unwrap();
    }
    let two_dbs = two_dbs.finish().unwrap();
    let mut bad_lua = ferrite_rdb::file::Writer::new(Vec::new()).unwrap();
    bad_lua
        .function(b"#!lua name=bad\nthis is not lua(")
        .unwrap();
    bad_lua
        .key(b"x", None, &ferrite_rdb::Value::String(b"v".to_vec()))
        .unwrap();
    let bad_lua = bad_lua.finish().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            good[..good.len() - 20].to_vec(),
            "unexpected end",
        ),
        ("flipped", flipped, "RDB file refused"),
        (
            "module-aux",
            handmade(&module_aux),
            "Ferrite loads no modules",
        ),
        (
            "module-value",
            handmade(&module_value),
            "key 'mk': value type 7",
        ),
        (
            "unknown",
            handmade(&unknown_opcode),
            "unknown RDB opcode or value type 200",
        ),
        ("two-dbs", two_dbs.clone(), "DB <n>"),
        ("bad-lua", bad_lua, "function library does not load"),
        (
            "not-rdb",
            b"hello world, not an rdb".to_vec(),
            "not an RDB file",
        ),
    ];
    for (name, bytes, why) in cases {
        let p = write(&format!("{name}.rdb"), &bytes);
        let e = refused(
            &mut f,
            &["TENANT.RESTORE", "acme", "RDB", path_str(&p), "REPLACE"],
        );
        assert!(e.contains(why), "{name}: {e}");
        assert!(e.contains("was not changed"), "{name}: {e}");
        let now = fields(run(&mut f, &["TENANT.DIGEST", "acme"]));
        assert_eq!(now, before, "{name}: the tenant changed");
    }
    let e = refused(
        &mut f,
        &[
            "TENANT.RESTORE",
            "acme",
            "RDB",
            "/nonexistent/dump.rdb",
            "REPLACE",
        ],
    );
    assert!(e.contains("/nonexistent/dump.rdb"), "{e}");
    // DB <n> picks the database: only its keys are loaded.
    let p = write("two-dbs.rdb", &two_dbs);
    run(
        &mut f,
        &[
            "TENANT.RESTORE",
            "acme",
            "RDB",
            path_str(&p),
            "DB",
            "3",
            "REPLACE",
        ],
    );
    run(&mut f, &["TENANT.USE", "acme"]);
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut f).unwrap();
    assert_eq!(keys, ["three"]);
}

/// Every `.tmp` file under `dir` (snapshots being written).
fn tmp_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(tmp_files(&p));
        } else if p.to_string_lossy().ends_with(".tmp") {
            out.push(p);
        }
    }
    out
}

/// With persistence on (the default), a restore of an RDB file over a tenant that is here
/// writes the tenant's snapshot while the file loads: after a restart (the server killed, no
/// SAVE) the tenant is exactly the file's data plus what was written after the restore; a
/// refused file changes nothing on disk either (no snapshot left behind, the old data
/// reloads).
#[test]
fn an_rdb_restore_over_a_tenant_is_what_a_restart_loads() {
    let dir = temp_dir();
    let redis = redis_with_everything(dir.path());
    let rdb = dir.path().join("dump.rdb");
    let good = std::fs::read(&rdb).unwrap();
    let truncated = dir.path().join("truncated.rdb");
    std::fs::write(&truncated, &good[..good.len() - 20]).unwrap();
    let data = temp_dir();
    {
        let ferrite = crate::common::Server::start_in(data.path(), &[]);
        let mut f = ferrite.conn();
        run(&mut f, &["TENANT.CREATE", "acme"]);
        run(&mut f, &["TENANT.USE", "acme"]);
        run(&mut f, &["SET", "old", "1"]);
        run(&mut f, &["TENANT.USE", "default"]);
        let e = refused(
            &mut f,
            &[
                "TENANT.RESTORE",
                "acme",
                "RDB",
                path_str(&truncated),
                "REPLACE",
            ],
        );
        assert!(e.contains("was not changed"), "{e}");
        assert_eq!(tmp_files(data.path()), Vec::<std::path::PathBuf>::new());
        run(
            &mut f,
            &["TENANT.RESTORE", "acme", "RDB", path_str(&rdb), "REPLACE"],
        );
        assert_eq!(tmp_files(data.path()), Vec::<std::path::PathBuf>::new());
        run(&mut f, &["TENANT.USE", "acme"]);
        run(&mut f, &["SET", "after", "1"]);
        // Dropped: killed without a SAVE.
    }
    let ferrite = crate::common::Server::start_in(data.path(), &[]);
    let mut f = ferrite.conn();
    run(&mut f, &["TENANT.USE", "acme"]);
    let after: Option<String> = redis::cmd("GET").arg("after").query(&mut f).unwrap();
    assert_eq!(after.as_deref(), Some("1"));
    let old: Option<String> = redis::cmd("GET").arg("old").query(&mut f).unwrap();
    assert_eq!(old, None);
    run(&mut f, &["DEL", "after"]);
    assert_same_data(&mut redis.conn(), &mut f);
}

/// Files written by old Redis versions (Redis's own test assets, crates/rdb/tests/data): zipmap
/// and ziplist hashes, ziplist lists and sorted sets, intsets, quicklists of ziplists, RDB
/// version 4 with text scores, restore into a tenant with the contents Redis's tests expect.
#[test]
fn old_encodings_restore_into_a_tenant() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rdb/tests/data");
    let ferrite = crate::common::Server::start();
    let mut f = ferrite.conn();
    let load = |f: &mut Connection, file: &str| {
        let p = data.join(file);
        run(f, &["TENANT.USE", "default"]);
        run(
            f,
            &["TENANT.RESTORE", "old", "RDB", path_str(&p), "REPLACE"],
        );
        run(f, &["TENANT.USE", "old"]);
    };
    load(&mut f, "hash-zipmap.rdb");
    let h: BTreeMap<String, String> = redis::cmd("HGETALL").arg("hash").query(&mut f).unwrap();
    assert_eq!(
        h,
        [("f1", "v1"), ("f2", "v2")]
            .map(|(a, b)| (a.into(), b.into()))
            .into()
    );
    load(&mut f, "hash-ziplist.rdb");
    let n: u64 = redis::cmd("HLEN").arg("hash").query(&mut f).unwrap();
    assert_eq!(n, 2);
    load(&mut f, "zset-ziplist.rdb");
    let n: u64 = redis::cmd("ZCARD").arg("zset").query(&mut f).unwrap();
    assert_eq!(n, 2);
    load(&mut f, "list-quicklist.rdb");
    let first: String = redis::cmd("LINDEX")
        .arg("list")
        .arg(0)
        .query(&mut f)
        .unwrap();
    assert_eq!(first, "7");
    load(&mut f, "encodings.rdb");
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut f).unwrap();
    assert_eq!(keys.len(), 13, "{keys:?}");
    let l: Vec<String> = redis::cmd("LRANGE")
        .arg("list_zipped")
        .arg(0)
        .arg(-1)
        .query(&mut f)
        .unwrap();
    assert_eq!(l, ["1", "2", "3", "a", "b", "c", "100000", "6000000000"]);
    let mut s: Vec<String> = redis::cmd("SMEMBERS")
        .arg("set_zipped_2")
        .query(&mut f)
        .unwrap();
    s.sort();
    assert_eq!(s, ["100000", "200000", "300000", "400000"]);
    let z: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg("zset_zipped")
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(&mut f)
        .unwrap();
    assert_eq!(z, [("a".into(), 1.0), ("b".into(), 2.0), ("c".into(), 3.0)]);
    let score: f64 = redis::cmd("ZSCORE")
        .arg("zset")
        .arg("bbbb")
        .query(&mut f)
        .unwrap();
    assert_eq!(score, 5_000_000_000.0);
    let v: String = redis::cmd("HGET")
        .arg("hash")
        .arg("eee")
        .query(&mut f)
        .unwrap();
    assert_eq!(v, "5000000000");
    let c: String = redis::cmd("GET").arg("compressible").query(&mut f).unwrap();
    assert_eq!(c, "a".repeat(137));
}

/// An RDB restore's progress has real totals while it runs: TENANT.BACKUP.JOBS shows the bytes
/// of the file read against its size from the start, and the keys loaded against the count
/// redis-server announced for the database (RESIZEDB) — what `ferrite-cli backup restore
/// --rdb` draws its bar from.
#[test]
fn an_rdb_restore_shows_its_progress_against_the_file_size_and_key_count() {
    const KEYS: u64 = 2_000_000;
    let dir = temp_dir();
    let redis = redis_on(dir.path(), &["--enable-debug-command", "yes"]);
    let mut r = redis.conn();
    run(
        &mut r,
        &["DEBUG", "POPULATE", &KEYS.to_string(), "key", "100"],
    );
    run(&mut r, &["SAVE"]);
    let rdb = dir.path().join("dump.rdb");
    let size = std::fs::metadata(&rdb).unwrap().len();
    let ferrite = crate::common::Server::start();
    let mut f = ferrite.conn();
    let path = path_str(&rdb).to_string();
    let mut restorer = ferrite.conn();
    let restore = std::thread::spawn(move || {
        fields(run(&mut restorer, &["TENANT.RESTORE", "big", "RDB", &path]))
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut seen: Vec<BTreeMap<String, String>> = Vec::new();
    while !restore.is_finished() {
        assert!(std::time::Instant::now() < deadline, "the restore hangs");
        let redis::Value::Array(jobs) = run(&mut f, &["TENANT.BACKUP.JOBS"]) else {
            panic!("JOBS is not an array");
        };
        seen.extend(
            jobs.into_iter()
                .map(fields)
                .filter(|j| j["kind"] == "restore" && j["tenant"] == "big"),
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let done = restore.join().unwrap();
    assert_eq!(done["keys"], KEYS.to_string());
    let loading: Vec<_> = seen.iter().filter(|j| j["phase"] == "loading").collect();
    assert!(!loading.is_empty(), "the restore was never seen loading");
    let mut last_bytes = 0;
    for j in &loading {
        let n = |k: &str| j[k].parse::<u64>().unwrap();
        assert_eq!(n("total_bytes"), size, "{j:?}");
        assert!(
            n("done_bytes") <= size && n("done_bytes") >= last_bytes,
            "{j:?}"
        );
        last_bytes = n("done_bytes");
        // The count comes with the first database's header, before any key: the reader hands
        // it to the inserting side ahead of the first batch (the bytes read may already be
        // past it, as the reader runs ahead of the inserts).
        assert!(n("total_keys") == KEYS || n("done_keys") == 0, "{j:?}");
        assert!(n("done_keys") <= KEYS, "{j:?}");
    }
    assert!(
        loading.iter().any(|j| j["total_keys"] == KEYS.to_string()),
        "{loading:?}"
    );
}

/// Limits of an RDB file, tested as an adversary: a string whose length field claims more than
/// the 512 MB limit (or a terabyte) is refused before anything is allocated for it; a forged
/// RESIZEDB count (2^60 keys) sizes nothing beyond the capped reservation and the file's one
/// key loads; a file that stops in the middle of a long string is refused as truncated. In each
/// refused case the tenant is unchanged.
#[test]
fn rdb_files_claiming_huge_sizes_are_refused_clearly() {
    let ferrite = crate::common::Server::start();
    let mut f = ferrite.conn();
    run(&mut f, &["TENANT.CREATE", "acme"]);
    run(&mut f, &["TENANT.USE", "acme"]);
    run(&mut f, &["SET", "keep", "me"]);
    run(&mut f, &["TENANT.USE", "default"]);
    let before = fields(run(&mut f, &["TENANT.DIGEST", "acme"]));
    let dir = temp_dir();
    // A string key "k" whose value's 64-bit length field (0x81) claims `n` bytes.
    let claiming = |n: u64| {
        let mut body = vec![0u8, 1, b'k', 0x81];
        body.extend_from_slice(&n.to_be_bytes());
        body.extend_from_slice(b"short");
        handmade(&body)
    };
    let limit = 512u64 * 1024 * 1024;
    for (name, bytes, why) in [
        (
            "over-limit",
            claiming(limit + 1),
            format!("string of {} bytes exceeds the limit", limit + 1),
        ),
        (
            "terabyte",
            claiming(1 << 40),
            format!("string of {} bytes exceeds the limit", 1u64 << 40),
        ),
        // At the limit it is read, and the file ends first.
        ("at-limit", claiming(limit), "unexpected end".to_string()),
    ] {
        let p = dir.path().join(format!("{name}.rdb"));
        std::fs::write(&p, bytes).unwrap();
        let e = refused(
            &mut f,
            &["TENANT.RESTORE", "acme", "RDB", path_str(&p), "REPLACE"],
        );
        assert!(
            e.contains(&why) && e.contains("was not changed"),
            "{name}: {e}"
        );
        assert_eq!(
            fields(run(&mut f, &["TENANT.DIGEST", "acme"])),
            before,
            "{name}"
        );
    }
    // SELECTDB 0, RESIZEDB claiming 2^60 keys (0x81: a 64-bit length) and 0 expires, one key.
    let mut body = vec![254u8, 0, 251, 0x81];
    body.extend_from_slice(&(1u64 << 60).to_be_bytes());
    body.extend_from_slice(&[0, 0, 1, b'k', 1, b'v']);
    let p = dir.path().join("forged-count.rdb");
    std::fs::write(&p, handmade(&body)).unwrap();
    let done = fields(run(
        &mut f,
        &["TENANT.RESTORE", "forged", "RDB", path_str(&p)],
    ));
    assert_eq!(done["keys"], "1");
    assert!(
        ferrite.log().iter().all(|l| !l.contains("panicked")),
        "{:?}",
        ferrite.log()
    );
}
