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

/// XINFO STREAM FULL without consumers' seen-time and active-time (access metadata: Redis does
/// not propagate them either; a replayed log sets them to the time of the replayed change) and the radix-tree figures (memory layout).
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
                        && (b == b"seen-time"
                            || b == b"active-time"
                            || b.starts_with(b"radix-tree"))
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

/// Every consumer's seen-time and active-time (Redis 7.2's XINFO STREAM FULL), as
/// `group/consumer seen active` lines.
fn consumer_times(c: &mut redis::Connection, key: &str) -> Vec<String> {
    let full = map_of(ok(c, &["XINFO", "STREAM", key, "FULL", "COUNT", "0"]));
    let Some(Value::Array(groups)) = full.get("groups") else {
        panic!("no groups in {full:?}");
    };
    let mut out = Vec::new();
    for g in groups {
        let g = map_of(g.clone());
        let name = format!("{:?}", g["name"]);
        let Some(Value::Array(consumers)) = g.get("consumers") else {
            panic!("no consumers in {g:?}");
        };
        for cv in consumers {
            let cv = map_of(cv.clone());
            let int = |v: &Value| match v {
                Value::Int(n) => *n,
                other => panic!("not an integer: {other:?}"),
            };
            out.push(format!(
                "{name}/{:?} {} {}",
                cv["name"],
                int(&cv["seen-time"]),
                int(&cv["active-time"])
            ));
        }
    }
    out
}

/// Redis 7.2's active-time (the last read that delivered entries, the last claim that claimed;
/// -1 for never) is kept exactly by a snapshot, through a SIGKILL and a clean restart alike,
/// beside the seen-time, for a consumer that never was active too (written in the layout of
/// before active times existed).
#[test]
fn consumers_active_time_survives_restarts() {
    let dir = data_dir();
    let args = ["--appendfsync", "always"];
    let s = Server::start_in(dir.path(), &args);
    let mut c = s.conn();
    ok(&mut c, &["XGROUP", "CREATE", "x", "g", "$", "MKSTREAM"]);
    ok(&mut c, &["XGROUP", "CREATECONSUMER", "x", "g", "never"]);
    ok(&mut c, &["XADD", "x", "1-0", "f", "v"]);
    ok(&mut c, &["XADD", "x", "2-0", "f", "v"]);
    ok(
        &mut c,
        &["XREADGROUP", "GROUP", "g", "reader", "STREAMS", "x", ">"],
    );
    std::thread::sleep(std::time::Duration::from_millis(30));
    ok(&mut c, &["XCLAIM", "x", "g", "claimer", "0", "1-0"]);
    // Seen later than active: a read that found nothing.
    std::thread::sleep(std::time::Duration::from_millis(30));
    ok(
        &mut c,
        &["XREADGROUP", "GROUP", "g", "reader", "STREAMS", "x", ">"],
    );
    ok(&mut c, &["SAVE"]);
    let before = consumer_times(&mut c, "x");
    assert_eq!(before.len(), 3, "{before:?}");
    let never = before.iter().find(|l| l.contains("never")).unwrap();
    assert!(never.ends_with(" -1"), "{never}");
    let reader = before.iter().find(|l| l.contains("reader")).unwrap();
    let times: Vec<&str> = reader.split(' ').skip(1).collect();
    assert_ne!(times[0], times[1], "seen after active: {reader}");
    assert!(!reader.ends_with(" -1"), "{reader}");
    drop(c);
    sigkill(s);

    let s = Server::start_in(dir.path(), &args);
    let mut c = s.conn();
    assert_eq!(consumer_times(&mut c, "x"), before, "after SIGKILL");
    drop(c);
    shutdown(s, &[]);
    let s = Server::start_in(dir.path(), &args);
    let mut c = s.conn();
    assert_eq!(consumer_times(&mut c, "x"), before, "after a clean restart");
}
