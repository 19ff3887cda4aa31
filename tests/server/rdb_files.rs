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
