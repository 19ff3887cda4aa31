//! Streams survive restarts with their consumer groups: a snapshot (SAVE) plus the log written
//! after it, replayed after SIGKILL, then a clean restart, give back the same entries, metadata,
//! groups, pending entries (delivery times and counts) and consumers.

use redis::Value;

use crate::common::Server;
use crate::util::*;

fn traffic(c: &mut redis::Connection, key: &str, round: usize) {
    for i in 0..40 {
        ok(
            c,
            &[
                "XADD",
                key,
                "MAXLEN",
                "~",
                "150",
                "*",
                "r",
                &round.to_string(),
                "i",
                &i.to_string(),
            ],
        );
    }
    let consumer = format!("c{}", round % 3);
    ok(
        c,
        &[
            "XREADGROUP",
            "GROUP",
            "g1",
            &consumer,
            "COUNT",
            "25",
            "STREAMS",
            key,
            ">",
        ],
    );
    ok(
        c,
        &[
            "XREADGROUP",
            "GROUP",
            "g2",
            "solo",
            "NOACK",
            "COUNT",
            "3",
            "STREAMS",
            key,
            ">",
        ],
    );
    // History reads and claims change delivery counts and owners.
    ok(
        c,
        &[
            "XREADGROUP",
            "GROUP",
            "g1",
            &consumer,
            "COUNT",
            "2",
            "STREAMS",
            key,
            "0",
        ],
    );
    ok(
        c,
        &["XAUTOCLAIM", key, "g1", "auto", "0", "0", "COUNT", "3"],
    );
    if let Value::Array(p) = ok(c, &["XPENDING", key, "g1", "-", "+", "4"]) {
        for (n, e) in p.iter().enumerate() {
            let Value::Array(f) = e else { continue };
            let Value::BulkString(id) = &f[0] else {
                continue;
            };
            let id = String::from_utf8_lossy(id).into_owned();
            if n % 2 == 0 {
                ok(c, &["XACK", key, "g1", &id]);
            } else {
                ok(
                    c,
                    &["XCLAIM", key, "g1", "claimer", "0", &id, "RETRYCOUNT", "9"],
                );
            }
        }
    }
}

/// XINFO STREAM FULL without consumers' seen-time (access metadata: Redis does not propagate
/// it either) and the radix-tree figures (memory layout).
fn content(c: &mut redis::Connection, key: &str) -> String {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut skip = false;
                for it in items {
                    if skip {
                        out.push(Value::Nil);
                        skip = false;
                        continue;
                    }
                    if let Value::BulkString(b) = it
                        && (b == b"seen-time" || b.starts_with(b"radix-tree"))
                    {
                        skip = true;
                    }
                    out.push(strip(it));
                }
                Value::Array(out)
            }
            other => other.clone(),
        }
    }
    format!(
        "{:?}",
        strip(&ok(c, &["XINFO", "STREAM", key, "FULL", "COUNT", "0"]))
    )
}

#[test]
fn streams_with_groups_survive_snapshot_log_replay_and_restart() {
    let dir = data_dir();
    let args = ["--appendfsync", "always"];
    let s = Server::start_in(dir.path(), &args);
    let mut c = s.conn();
    ok(&mut c, &["XGROUP", "CREATE", "x", "g1", "$", "MKSTREAM"]);
    ok(&mut c, &["XGROUP", "CREATE", "x", "g2", "0"]);
    ok(&mut c, &["XGROUP", "CREATECONSUMER", "x", "g2", "idle"]);
    ok(&mut c, &["XGROUP", "CREATE", "empty", "g", "$", "MKSTREAM"]);
    for round in 0..4 {
        traffic(&mut c, "x", round);
    }
    ok(&mut c, &["SAVE"]);
    for round in 4..8 {
        traffic(&mut c, "x", round);
    }
    ok(&mut c, &["XDEL", "x", "0-1"]);
    ok(
        &mut c,
        &[
            "XSETID",
            "empty",
            "5-5",
            "ENTRIESADDED",
            "3",
            "MAXDELETEDID",
            "5-1",
        ],
    );
    let before = (
        content(&mut c, "x"),
        content(&mut c, "empty"),
        digest(&mut c, "default"),
    );
    drop(c);
    sigkill(s);

    let s = Server::start_in(dir.path(), &args);
    let mut c = s.conn();
    let after = (
        content(&mut c, "x"),
        content(&mut c, "empty"),
        digest(&mut c, "default"),
    );
    assert_eq!(after, before, "after SIGKILL: snapshot + log replay");
    drop(c);
    shutdown(s, &[]);

    let s = Server::start_in(dir.path(), &args);
    let mut c = s.conn();
    let again = (
        content(&mut c, "x"),
        content(&mut c, "empty"),
        digest(&mut c, "default"),
    );
    assert_eq!(again, before, "after a clean restart");
    // The restored groups go on where they were.
    ok(&mut c, &["XADD", "x", "*", "after", "restart"]);
    let v = ok(
        &mut c,
        &["XREADGROUP", "GROUP", "g1", "c9", "STREAMS", "x", ">"],
    );
    assert!(format!("{v:?}").contains("restart"), "{v:?}");
}
