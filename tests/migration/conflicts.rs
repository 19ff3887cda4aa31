//! CONFLICT policies of a continuous sync whose target is written directly, between real
//! processes, with a writer going on on the source: three tenants synced to one target, one per
//! policy; both sides write the same keys in both orders (the target first, then the source; the
//! source first while the sync is paused, then the target more than the clock-skew tolerance
//! later); every key is then checked on the target against what the policy says, conflicts are
//! counted in STATUS and in the metrics, and logged with sampled key names.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferrite_client::{Client, ConnectOptions, value};

use crate::common::{Server, scrape};
use crate::util::*;
use crate::{LONG, SHORT};

const KEYS: usize = 100;
/// Keys 0..HALF: the target writes, then the source (later). HALF..2*HALF: the source writes
/// while the sync is paused, then the target, more than the clock-skew tolerance later.
const HALF: usize = 25;

async fn get(c: &mut ferrite_client::Connection, k: &str) -> Option<String> {
    value::as_opt_string(&ok(c, &["GET", k]).await).unwrap()
}

/// Writes `w:<n % 50>` on the source until `stop`; returns the last value written per key.
async fn source_writer(
    addr: String,
    tenant: String,
    stop: Arc<AtomicBool>,
) -> HashMap<String, String> {
    let mut c = Client::connect(ConnectOptions::new(addr).tenant(&tenant, "pw"))
        .await
        .expect("writer connects");
    let mut last = HashMap::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && n < 1_000_000 {
        let k = format!("w:{}", n % 50);
        let v = n.to_string();
        c.cmd(&["SET", &k, &v]).await.expect("SET on the source");
        last.insert(k, v);
        n += 1;
        if n.is_multiple_of(100) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_policy_decides_every_key_both_sides_wrote() {
    let src = Server::start_with(&["--metrics-addr", "127.0.0.1:0"]);
    let dst = Server::start();
    let mut a = admin(&src).await;
    let policies = ["source_wins", "target_wins", "newest_wins"];
    let mut ids = HashMap::new();
    for p in policies {
        let tenant = p.replace('_', "-");
        ok(&mut a, &["TENANT.CREATE", &tenant, "PASSWORD", "pw"]).await;
        let mut t = tenant_conn(&src, &tenant, "pw").await;
        load(
            &mut t,
            (0..KEYS)
                .map(|i| s(&["SET", &format!("k{i}"), "src0"]))
                .collect(),
        )
        .await;
        let id = migrate(
            &mut a,
            &tenant,
            &dst,
            &["MODE", "continuous", "CONFLICT", p],
        )
        .await;
        ids.insert(p, (tenant, id));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = policies
        .iter()
        .map(|p| tokio::spawn(source_writer(src.addr(), ids[p].0.clone(), stop.clone())))
        .collect();
    for p in policies {
        let (_, id) = &ids[p];
        let st = wait_for(&mut a, id, LONG, "caught up", |s| {
            s["state"] == "live_sync" && s["keys_synced"].parse::<u64>().unwrap_or(0) >= KEYS as u64
        })
        .await;
        assert_eq!(st["conflict_policy"], p);
    }
    // The target's copies are served while synced (that is what a policy allows).
    let mut on_dst = HashMap::new();
    let mut on_src = HashMap::new();
    for p in policies {
        let tenant = &ids[p].0;
        let mut d = tenant_conn(&dst, tenant, "pw").await;
        assert_eq!(get(&mut d, "k1").await.as_deref(), Some("src0"));
        on_dst.insert(p, d);
        on_src.insert(p, tenant_conn(&src, tenant, "pw").await);
    }
    // Keys 0..HALF: the target first, then the source.
    for p in policies {
        let d = on_dst.get_mut(p).unwrap();
        for i in 0..HALF {
            ok(d, &["SET", &format!("k{i}"), "dst-first"]).await;
        }
        ok(d, &["SET", "only-dst", "mine"]).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    for p in policies {
        let t = on_src.get_mut(p).unwrap();
        for i in 0..HALF {
            ok(t, &["SET", &format!("k{i}"), "src-later"]).await;
        }
    }
    // Keys HALF..2*HALF: the source first (held back by PAUSE), then the target 1.5 s later.
    for p in policies {
        ok(&mut a, &["TENANT.MIGRATE.PAUSE", &ids[p].1]).await;
        let t = on_src.get_mut(p).unwrap();
        for i in HALF..2 * HALF {
            ok(t, &["SET", &format!("k{i}"), "src-first"]).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for p in policies {
        let d = on_dst.get_mut(p).unwrap();
        for i in HALF..2 * HALF {
            ok(d, &["SET", &format!("k{i}"), "dst-later"]).await;
        }
        ok(&mut a, &["TENANT.MIGRATE.RESUME", &ids[p].1]).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut last = Vec::new();
    for w in writers {
        last.push(w.await.expect("writer"));
    }
    for (n, p) in policies.iter().enumerate() {
        let (_, id) = &ids[p];
        // Caught up, and the heartbeat (every 2 s) has brought the target's conflict count.
        let st = wait_for(&mut a, id, SHORT, "conflicts reported", |s| {
            s["lag_keys"] == "0" && s["conflicts"] == (2 * HALF).to_string()
        })
        .await;
        assert!(!st["conflict_sample"].is_empty(), "{st:?}");
        let d = on_dst.get_mut(p).unwrap();
        for i in 0..KEYS {
            let k = format!("k{i}");
            let want = match (*p, i) {
                (_, i) if i >= 2 * HALF => "src0",
                ("source_wins", i) if i < HALF => "src-later",
                ("source_wins", _) => "src-first",
                ("target_wins", i) if i < HALF => "dst-first",
                ("target_wins", _) => "dst-later",
                ("newest_wins", i) if i < HALF => "src-later",
                ("newest_wins", _) => "dst-later",
                _ => unreachable!(),
            };
            assert_eq!(get(d, &k).await.as_deref(), Some(want), "{p}: {k}");
        }
        assert_eq!(get(d, "only-dst").await.as_deref(), Some("mine"), "{p}");
        // Keys only the source wrote, with its writer going on: the target has each last value.
        for (k, v) in &last[n] {
            assert_eq!(get(d, k).await.as_deref(), Some(v.as_str()), "{p}: {k}");
        }
    }
    // Metrics count them; the target's log names sampled keys.
    let page = scrape(&src);
    for p in policies {
        let line = format!(
            "ferrite_tenant_migration_conflicts_total{{tenant=\"{}\"}} {}",
            ids[p].0,
            2 * HALF
        );
        assert!(page.contains(&line), "{line} not in the metrics page");
    }
    let log = dst.log().join("\n");
    assert!(
        log.contains("conflict: both sides changed a key") && log.contains("key=k"),
        "no sampled conflict in the target's log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflict_needs_continuous_mode_and_a_known_policy_and_blocks_cutover() {
    let src = Server::start();
    let dst = Server::start();
    let mut a = admin(&src).await;
    ok(&mut a, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]).await;
    let addr = dst.addr();
    let e = err(
        &mut a,
        &[
            "TENANT.MIGRATE",
            "acme",
            "TARGET",
            &addr,
            "CONFLICT",
            "source_wins",
        ],
    )
    .await;
    assert!(e.contains("MODE continuous"), "{e}");
    let e = err(
        &mut a,
        &[
            "TENANT.MIGRATE",
            "acme",
            "TARGET",
            &addr,
            "MODE",
            "continuous",
            "CONFLICT",
            "manual",
        ],
    )
    .await;
    assert!(e.contains("source_wins, target_wins or newest_wins"), "{e}");
    let all = ok(&mut a, &["TENANT.MIGRATE.STATUS", "ALL"]).await;
    let all = value::as_pairs(&all).unwrap();
    assert_eq!(
        value::field_int(&all, "migrations_total"),
        Some(0),
        "refused migrations leave nothing behind"
    );
    let id = migrate(
        &mut a,
        "acme",
        &dst,
        &["MODE", "continuous", "CONFLICT", "newest_wins"],
    )
    .await;
    wait_state(&mut a, &id, "live_sync", LONG).await;
    let e = err(&mut a, &["TENANT.MIGRATE.CUTOVER", &id]).await;
    assert!(e.contains("CONFLICT"), "{e}");
    // A graceful stop confirms every change up to its instant was applied; the copies differ
    // by design, so no digest is claimed.
    let r = fields(&ok(&mut a, &["TENANT.MIGRATE.STOP", &id, "GRACEFUL"]).await);
    assert_eq!(r["mode"], "graceful", "{r:?}");
    assert!(!r["consistent_as_of"].is_empty(), "{r:?}");
    assert_eq!(r["digest"], "", "{r:?}");
}
