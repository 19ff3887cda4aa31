//! Streams migrate with their consumer groups: a large stream (sent as a PUT plus APPENDs of
//! items) and a small one, both changed during live sync by XADD, XREADGROUP, XACK, XCLAIM and
//! XTRIM, arrive with the same entries, groups, pending entries and consumers as the source held.

use ferrite_client::{Frame, value};

use crate::util::*;
use crate::{LONG, common::Server};

/// XINFO STREAM FULL of every stream key, as text (radix-tree figures left out: they describe
/// memory layout, not content).
async fn snapshot(c: &mut ferrite_client::Connection, keys: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for key in keys {
        let f = ok(c, &["XINFO", "STREAM", key, "FULL", "COUNT", "0"]).await;
        let pairs = value::as_pairs(&f).expect("XINFO STREAM FULL is a map");
        for (name, v) in pairs {
            if !name.starts_with("radix-tree") {
                out.push(format!("{key} {name} {}", value::display(&v)));
            }
        }
    }
    out
}

async fn group_traffic(t: &mut ferrite_client::Connection, key: &str, round: usize) {
    for i in 0..50 {
        ok(
            t,
            &[
                "XADD",
                key,
                "*",
                "round",
                &round.to_string(),
                "i",
                &i.to_string(),
            ],
        )
        .await;
    }
    let consumer = format!("c{}", round % 3);
    ok(
        t,
        &[
            "XREADGROUP",
            "GROUP",
            "g1",
            &consumer,
            "COUNT",
            "30",
            "STREAMS",
            key,
            ">",
        ],
    )
    .await;
    ok(
        t,
        &[
            "XREADGROUP",
            "GROUP",
            "g2",
            "solo",
            "COUNT",
            "7",
            "STREAMS",
            key,
            ">",
        ],
    )
    .await;
    let pending = ok(t, &["XPENDING", key, "g1", "-", "+", "5"]).await;
    if let Frame::Array { data, .. } = pending {
        for (n, p) in data.iter().enumerate() {
            let Frame::Array { data: fields, .. } = p else {
                continue;
            };
            let id = value::as_string(&fields[0]).unwrap();
            if n % 2 == 0 {
                ok(t, &["XACK", key, "g1", &id]).await;
            } else {
                ok(t, &["XCLAIM", key, "g1", "claimer", "0", &id]).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_with_consumer_groups_migrate_live() {
    let src = Server::start();
    let dst = Server::start();
    let mut a = admin(&src).await;
    ok(
        &mut a,
        &["TENANT.CREATE", "acme", "PASSWORD", "pw", "OPS", "0"],
    )
    .await;
    let mut t = tenant_conn(&src, "acme", "pw").await;
    // 12k entries: more than one chunk of items, so the stream travels as PUT + APPENDs.
    load(
        &mut t,
        (0..12_000)
            .map(|i| s(&["XADD", "big", "*", "n", &i.to_string(), "pad", "xxxxxxxxxx"]))
            .collect(),
    )
    .await;
    for key in ["big", "small"] {
        ok(&mut t, &["XGROUP", "CREATE", key, "g1", "0", "MKSTREAM"]).await;
        ok(&mut t, &["XGROUP", "CREATE", key, "g2", "$"]).await;
    }
    ok(
        &mut t,
        &[
            "XREADGROUP",
            "GROUP",
            "g1",
            "early",
            "COUNT",
            "5000",
            "STREAMS",
            "big",
            ">",
        ],
    )
    .await;
    ok(&mut t, &["XDEL", "big", "0-1"]).await;
    for round in 0..3 {
        group_traffic(&mut t, "small", round).await;
    }

    let id = migrate(&mut a, "acme", &dst, &[]).await;
    wait_state(&mut a, &id, "live_sync", LONG).await;
    // Changes during live sync, to both streams.
    for round in 3..8 {
        group_traffic(&mut t, "small", round).await;
        group_traffic(&mut t, "big", round).await;
    }
    ok(&mut t, &["XTRIM", "big", "MAXLEN", "~", "11000"]).await;
    ok(&mut t, &["XGROUP", "DELCONSUMER", "small", "g1", "c0"]).await;
    let before = snapshot(&mut t, &["big", "small"]).await;
    // Consumers' active-time (Redis 7.2) travels with them: the comparison below covers it.
    let consumers = ok(&mut t, &["XINFO", "CONSUMERS", "small", "g2"]).await;
    assert!(
        value::display(&consumers).contains("inactive"),
        "{}",
        value::display(&consumers)
    );
    let text = before.join("\n");
    let never = text.matches("active-time, -1").count() + text.matches("active-time: -1").count();
    assert!(
        text.matches("active-time").count() > never,
        "no consumer was active: {text:.2000}"
    );
    let digest = digest_of(&ok(&mut a, &["TENANT.DIGEST", "acme"]).await);
    drop(t);

    let r = fields(&ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id]).await);
    assert_eq!(r["status"], "completed", "{r:?}");
    let mut t2 = tenant_conn(&dst, "acme", "pw").await;
    let after = snapshot(&mut t2, &["big", "small"]).await;
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        assert!(b == a, "differs:\n source: {b:.300}\n target: {a:.300}");
    }
    let mut a2 = admin(&dst).await;
    assert_eq!(
        digest_of(&ok(&mut a2, &["TENANT.DIGEST", "acme"]).await),
        digest
    );
    // The groups keep working on the target.
    ok(&mut t2, &["XADD", "small", "*", "after", "move"]).await;
    let f = ok(
        &mut t2,
        &["XREADGROUP", "GROUP", "g2", "solo", "STREAMS", "small", ">"],
    )
    .await;
    assert!(
        value::display(&f).contains("after"),
        "{}",
        value::display(&f)
    );
}
