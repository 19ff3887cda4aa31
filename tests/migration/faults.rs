//! Faults a migration must survive, with real processes and a proxy that breaks the network:
//! dropped connections (resume from the checkpoint), a target that disappears (fail cleanly,
//! source keeps serving, retry later), a failure at each step of the cutover (never two writable
//! owners, no acknowledged write lost), a slow target (lag grows and shrinks, memory bounded).
//! Writers check every reply against their model throughout: clients may see -MOVED/-TRYAGAIN,
//! never a wrong value.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrite_client::{ConnectOptions, Connection, value};

use crate::common::Server;
use crate::proxy::Proxy;
use crate::util::*;
use crate::writers::{Model, check_model, writer};
use crate::{LONG, SHORT, now_ms};

/// A source server whose config enables fault-injection breakpoints and short timeouts.
fn source_with_faults() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("source.toml");
    std::fs::write(
        &cfg,
        "[tenancy.migration]\nfault_injection = true\nactivation_timeout_ms = 1500\ncutover_max_lag = 100000\n\n[tenancy.migration.client_handling]\nredirect_timeout_ms = 1000\n",
    )
    .expect("write config");
    let s = Server::start_with(&["--config", cfg.to_str().expect("utf8 path")]);
    (s, dir)
}

async fn create_tenant(s: &Server, keys: usize, value_len: usize) {
    let mut a = admin(s).await;
    ok(&mut a, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]).await;
    let mut t = tenant_conn(s, "acme", "pw").await;
    let v = "v".repeat(value_len);
    load(
        &mut t,
        (0..keys)
            .map(|i| s_(&["SET", &format!("k{i}"), &v]))
            .collect(),
    )
    .await;
}

fn s_(v: &[&str]) -> Vec<String> {
    s(v)
}

fn num(st: &HashMap<String, String>, f: &str) -> u64 {
    st[f].parse().unwrap_or(0)
}

/// Can a tenant client write on this server right now? Ok(true) = accepted, Ok(false) = refused
/// with MOVED/TRYAGAIN.
async fn writable(s: &Server) -> bool {
    let Ok(mut c) = Connection::connect(ConnectOptions::new(s.addr()).tenant("acme", "pw")).await
    else {
        return false;
    };
    match c.cmd(&["SET", "probe", "1"]).await {
        Ok(_) => true,
        Err(e) => {
            let t = e.to_string();
            assert!(
                t.contains("MOVED") || t.contains("moved to") || t.contains("TRYAGAIN"),
                "unexpected refusal: {t}"
            );
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropped_connections_resume_from_the_checkpoint() {
    let src = Server::start();
    let dst = Server::start();
    create_tenant(&src, 40_000, 200).await;
    let proxy = Proxy::start(dst.addr()).await;
    let mut a = admin(&src).await;
    let target = proxy.addr.clone();
    // Rate-limited so the snapshot is still running when the network breaks.
    let id = fields(
        &ok(
            &mut a,
            &[
                "TENANT.MIGRATE",
                "acme",
                "TARGET",
                &target,
                "REDIRECT",
                &dst.addr(),
                "PARALLEL",
                "2",
                "RATE",
                "3000000",
            ],
        )
        .await,
    )["migration_id"]
        .clone();
    wait_for(&mut a, &id, SHORT, "a third of the snapshot", |s| {
        s["phase"] == "snapshot" && num(s, "keys_synced") > 13_000
    })
    .await;
    proxy.cut();
    let st = wait_for(&mut a, &id, LONG, "reconnect and live sync", |s| {
        s["state"] == "live_sync"
    })
    .await;
    assert!(num(&st, "reconnects") >= 1, "{st:?}");
    let snapshot = num(&st, "bytes_synced");
    let resent = num(&st, "bytes_sent") - snapshot;
    // Only unacknowledged batches were sent again, not the whole snapshot.
    assert!(resent < snapshot / 4, "resent {resent} of {snapshot} bytes");
    ok(&mut a, &["TENANT.MIGRATE.UPDATE", &id, "RATE", "0"]).await;

    // Mid live sync, under writes: cut again.
    let stop = Arc::new(AtomicBool::new(false));
    let far = now_ms() + 86_400_000;
    let writers: Vec<_> = (0..2)
        .map(|n| tokio::spawn(writer(n, src.addr(), "acme", stop.clone(), far, false)))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = num(&status(&mut a, &id).await, "reconnects");
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let st = wait_for(&mut a, &id, SHORT, "lag drained after the cut", |s| {
        s["state"] == "live_sync" && num(s, "lag_keys") < 1000
    })
    .await;
    assert!(num(&st, "reconnects") > before, "{st:?}");
    let cut = fields(&ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id]).await);
    assert_eq!(cut["status"], "completed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut t = tenant_conn(&dst, "acme", "pw").await;
    for (n, w) in writers.into_iter().enumerate() {
        let (model, _, _, _) = w.await.expect("writer");
        check_model(&mut t, n, &model).await;
    }
    let v = fields(&ok(&mut a, &["TENANT.MIGRATE.VERIFY", &id]).await);
    assert_eq!(v["status"], "verified", "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_outage_fails_cleanly_and_a_retry_resumes() {
    let src = Server::start();
    let dst = Server::start();
    create_tenant(&src, 30_000, 200).await;
    let proxy = Proxy::start(dst.addr()).await;
    let mut a = admin(&src).await;
    let digest = digest_of(&ok(&mut a, &["TENANT.DIGEST", "acme"]).await);
    let target = proxy.addr.clone();
    let id = fields(
        &ok(
            &mut a,
            &[
                "TENANT.MIGRATE",
                "acme",
                "TARGET",
                &target,
                "REDIRECT",
                &dst.addr(),
                "TIMEOUT",
                "2",
                "RATE",
                "2000000",
            ],
        )
        .await,
    )["migration_id"]
        .clone();
    wait_for(&mut a, &id, SHORT, "snapshot progress", |s| {
        num(s, "keys_synced") > 5_000
    })
    .await;
    proxy.refuse(true);
    proxy.cut();
    let st = wait_state(&mut a, &id, "failed", SHORT).await;
    assert!(st["error"].contains("reconnect timeout"), "{st:?}");
    // The source is untouched: active, same content, serving.
    let info = fields(&ok(&mut a, &["TENANT.INFO", "acme"]).await);
    assert_eq!(info["state"], "active");
    assert_eq!(
        digest_of(&ok(&mut a, &["TENANT.DIGEST", "acme"]).await),
        digest
    );
    let mut t = tenant_conn(&src, "acme", "pw").await;
    ok(&mut t, &["SET", "after-failure", "1"]).await;
    // The target shows no tenant to clients (staged, invisible).
    let e = err(&mut tenant_conn(&dst, "acme", "pw").await, &["GET", "k1"]).await;
    assert!(e.contains("TRYAGAIN"), "{e}");

    // Network back; retry resumes from the checkpoint instead of starting over.
    let synced_before = num(&st, "keys_shipped");
    proxy.refuse(false);
    ok(&mut a, &["TENANT.MIGRATE.UPDATE", &id, "RATE", "0"]).await;
    ok(&mut a, &["TENANT.MIGRATE.RESUME", &id]).await;
    let st = wait_state(&mut a, &id, "live_sync", LONG).await;
    let total = num(&st, "keys_shipped");
    assert!(
        total < 30_001 + synced_before / 2,
        "the retry re-sent most of what was already acknowledged: {total} keys shipped in all, {synced_before} before the failure"
    );
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id]).await;
    let v = fields(&ok(&mut a, &["TENANT.MIGRATE.VERIFY", &id]).await);
    assert_eq!(v["status"], "verified", "{v:?}");
    let mut t = tenant_conn(&dst, "acme", "pw").await;
    assert_eq!(
        value::as_string(&ok(&mut t, &["GET", "after-failure"]).await).unwrap(),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn target_killed_mid_sync() {
    let src = Server::start();
    let mut dst = Server::start();
    create_tenant(&src, 30_000, 200).await;
    let mut a = admin(&src).await;
    let id = migrate(&mut a, "acme", &dst, &["TIMEOUT", "2", "RATE", "2000000"]).await;
    wait_for(&mut a, &id, SHORT, "snapshot progress", |s| {
        num(s, "keys_synced") > 3_000
    })
    .await;

    // Another client writes to the source throughout; it must never pause.
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let addr = src.addr();
    let probe = tokio::spawn(async move {
        let mut c = Connection::connect(ConnectOptions::new(addr).tenant("acme", "pw"))
            .await
            .unwrap();
        let mut worst = Duration::ZERO;
        let mut i = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            let t0 = Instant::now();
            c.cmd(&["SET", &format!("live{}", i % 100), &i.to_string()])
                .await
                .expect("source keeps serving");
            worst = worst.max(t0.elapsed());
            i += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (worst, i)
    });
    dst.kill();
    let st = wait_state(&mut a, &id, "failed", SHORT).await;
    assert!(!st["error"].is_empty(), "{st:?}");
    stop.store(true, Ordering::Relaxed);
    let (worst, writes) = probe.await.unwrap();
    assert!(writes > 50, "{writes}");
    assert!(
        worst < Duration::from_millis(200),
        "a source write waited {worst:?}"
    );
    let info = fields(&ok(&mut a, &["TENANT.INFO", "acme"]).await);
    assert_eq!(info["state"], "active");

    // A new migration to a restarted target succeeds (the failed one is superseded).
    let dst2 = Server::start();
    let id2 = migrate(&mut a, "acme", &dst2, &[]).await;
    wait_state(&mut a, &id2, "live_sync", LONG).await;
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id2]).await;
    let v = fields(&ok(&mut a, &["TENANT.MIGRATE.VERIFY", &id2]).await);
    assert_eq!(v["status"], "verified", "{v:?}");
    assert_eq!(status(&mut a, &id).await["state"], "cancelled");
}

/// One cutover attempt with the target made unreachable at `point`.
async fn fault_at(point: &str) {
    let (src, _cfg) = source_with_faults();
    let dst = Server::start();
    create_tenant(&src, 5_000, 100).await;
    let proxy = Proxy::start(dst.addr()).await;
    let mut a = admin(&src).await;
    let target = proxy.addr.clone();
    let id = fields(
        &ok(
            &mut a,
            &[
                "TENANT.MIGRATE",
                "acme",
                "TARGET",
                &target,
                "REDIRECT",
                &dst.addr(),
                "TIMEOUT",
                "3",
            ],
        )
        .await,
    )["migration_id"]
        .clone();
    wait_state(&mut a, &id, "live_sync", LONG).await;

    let stop = Arc::new(AtomicBool::new(false));
    let far = now_ms() + 86_400_000;
    let writers: Vec<_> = (0..2)
        .map(|n| tokio::spawn(writer(n, src.addr(), "acme", stop.clone(), far, true)))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    ok(&mut a, &["TENANT.MIGRATE.DEBUG", &id, "BREAK", point]).await;
    let mut a2 = admin(&src).await;
    let idc = id.clone();
    let cut = tokio::spawn(async move { a2.cmd(&["TENANT.MIGRATE.CUTOVER", &idc]).await });
    let deadline = Instant::now() + SHORT;
    loop {
        let parked = value::as_string(&ok(&mut a, &["TENANT.MIGRATE.DEBUG", &id, "WAITING"]).await)
            .unwrap_or_default();
        if parked == point {
            break;
        }
        assert!(Instant::now() < deadline, "never reached {point}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The fault: the target becomes unreachable exactly here.
    proxy.refuse(true);
    proxy.cut();
    ok(&mut a, &["TENANT.MIGRATE.DEBUG", &id, "CONTINUE"]).await;
    let r = cut.await.unwrap();
    let e = r
        .expect_err("the cutover cannot complete without the target")
        .to_string();

    // Never two writable owners; STATUS says who owns the tenant.
    let src_w = writable(&src).await;
    let dst_w = writable(&dst).await;
    assert!(!(src_w && dst_w), "{point}: both servers accept writes");
    let st = status(&mut a, &id).await;
    if point == "cutover:before_activate" {
        assert!(
            !src_w && !dst_w,
            "{point}: handed over, not yet active anywhere"
        );
        assert!(
            e.contains("RETRY") && st["error"].contains("handed the tenant over"),
            "{e} / {st:?}"
        );
        assert_eq!(st["state"], "failed");
        // Network back: CUTOVER RETRY confirms the activation; the target owns the tenant.
        proxy.refuse(false);
        let r = fields(&ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id, "RETRY"]).await);
        assert_eq!(r["status"], "completed");
        assert!(writable(&dst).await && !writable(&src).await);
    } else {
        assert!(src_w, "{point}: the source must still own the tenant ({e})");
        assert!(
            e.contains("the source still owns the tenant"),
            "{point}: {e}"
        );
        // Network back: the migration goes on (or is retried) and cuts over.
        proxy.refuse(false);
        let r = fields(&ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id, "RETRY"]).await);
        assert_eq!(r["status"], "completed", "{point}");
        assert!(writable(&dst).await && !writable(&src).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    // No acknowledged write was lost: every writer's model is on the owner.
    let mut t = tenant_conn(&dst, "acme", "pw").await;
    let mut models: Vec<HashMap<String, Model>> = Vec::new();
    for w in writers {
        let (m, ops, _, _) = w.await.expect("writer");
        assert!(ops > 10, "{point}: writer made progress");
        models.push(m);
    }
    for (n, m) in models.iter().enumerate() {
        check_model(&mut t, n, m).await;
    }
    let v = fields(&ok(&mut a, &["TENANT.MIGRATE.VERIFY", &id]).await);
    assert_eq!(v["checksum_match"], "1", "{point}: {v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cutover_fault_before_gate() {
    fault_at("cutover:before_gate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cutover_fault_during_drain() {
    fault_at("cutover:after_gate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cutover_fault_before_target_confirms() {
    fault_at("cutover:before_confirm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cutover_fault_after_target_confirms() {
    fault_at("cutover:after_confirm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cutover_fault_before_activation() {
    fault_at("cutover:before_activate").await;
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_target_lag_grows_then_shrinks_with_bounded_memory() {
    let src = Server::start();
    let dst = Server::start();
    create_tenant(&src, 20_000, 100).await;
    let proxy = Proxy::start(dst.addr()).await;
    let mut a = admin(&src).await;
    let target = proxy.addr.clone();
    let id =
        fields(&ok(&mut a, &["TENANT.MIGRATE", "acme", "TARGET", &target]).await)["migration_id"]
            .clone();
    wait_state(&mut a, &id, "live_sync", LONG).await;
    let base_rss = rss_kb(src.pid());

    // A writer faster than the throttled, delayed link.
    let connections = proxy.connections();
    assert!(
        connections >= 2,
        "control and data streams go through the proxy"
    );
    proxy.bandwidth(100_000);
    proxy.latency(Duration::from_millis(5));
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let addr = src.addr();
    let load = tokio::spawn(async move {
        let mut c = Connection::connect(ConnectOptions::new(addr).tenant("acme", "pw"))
            .await
            .unwrap();
        let v = "x".repeat(200);
        let mut i = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            let cmds: Vec<Vec<String>> = (0..50)
                .map(|j| s(&["SET", &format!("hot{}", (i * 50 + j) % 50_000), &v]))
                .collect();
            c.pipeline(&cmds).await.expect("writes go on");
            i += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let mut peak_lag = 0;
    let mut peak_rss = base_rss;
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        let st = status(&mut a, &id).await;
        peak_lag = peak_lag.max(num(&st, "lag_keys"));
        peak_rss = peak_rss.max(rss_kb(src.pid()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let grown = status(&mut a, &id).await;
    assert!(peak_lag > 1000, "lag grew behind the slow link: {peak_lag}");
    assert!(
        grown["lag_seconds"].parse::<f64>().unwrap() > 0.5,
        "{grown:?}"
    );
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    // Link restored: the lag drains.
    let forwarded = proxy.forwarded();
    proxy.bandwidth(0);
    proxy.latency(Duration::ZERO);
    let st = wait_for(&mut a, &id, LONG, "lag drained", |s| {
        num(s, "lag_keys") == 0
    })
    .await;
    assert_eq!(st["state"], "live_sync");
    assert!(
        proxy.forwarded() > forwarded,
        "the backlog went through the proxy"
    );
    // Memory stayed bounded: change capture holds keys, not every write; queues are bounded.
    let growth_mb = (peak_rss.saturating_sub(base_rss)) / 1024;
    eprintln!(
        "slow target: peak lag {peak_lag} keys, source RSS {base_rss} kB -> peak {peak_rss} kB (+{growth_mb} MB)"
    );
    assert!(growth_mb < 200, "source memory grew by {growth_mb} MB");
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id]).await;
    let v = fields(&ok(&mut a, &["TENANT.MIGRATE.VERIFY", &id]).await);
    assert_eq!(v["status"], "verified", "{v:?}");
}
