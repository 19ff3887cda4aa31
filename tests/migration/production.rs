//! Operating migrations: VALIDATE, fast mode, UPDATE on a running migration, scheduled cutover,
//! the concurrency limit with its queue.

use std::time::{Duration, Instant};

use ferrite_client::value;

use crate::common::Server;
use crate::util::*;
use crate::{LONG, SHORT};

async fn tenant_with_keys(s: &Server, tenant: &str, keys: usize) {
    let mut a = admin(s).await;
    ok(&mut a, &["TENANT.CREATE", tenant, "PASSWORD", "pw"]).await;
    let mut t = tenant_conn(s, tenant, "pw").await;
    load(
        &mut t,
        (0..keys)
            .map(|i| s_(&["SET", &format!("k{i}"), &format!("value-{i}")]))
            .collect(),
    )
    .await;
}

fn s_(v: &[&str]) -> Vec<String> {
    s(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn validate_reports_each_check() {
    let src = Server::start();
    let dst = Server::start();
    let locked = Server::start_with(&["--requirepass", "secret"]);
    tenant_with_keys(&src, "acme", 2000).await;
    let mut a = admin(&src).await;
    let dst_addr = dst.addr();
    let r = fields(
        &ok(
            &mut a,
            &["TENANT.MIGRATE.VALIDATE", "acme", "TARGET", &dst_addr],
        )
        .await,
    );
    assert_eq!(r["connectivity"], "ok");
    assert_eq!(r["authentication"], "ok");
    assert!(r["version_compatible"].starts_with("ok"), "{r:?}");
    assert!(r["capacity"].starts_with("ok ("), "{r:?}");
    assert!(r["capacity"].contains("free, need"), "{r:?}");
    assert!(r["network_latency"].ends_with("ms"), "{r:?}");
    assert!(r["estimated_duration"].contains("measured"), "{r:?}");
    assert_eq!(r["result"], "ok");

    let locked_addr = locked.addr();
    let r = fields(
        &ok(
            &mut a,
            &["TENANT.MIGRATE.VALIDATE", "acme", "TARGET", &locked_addr],
        )
        .await,
    );
    assert!(r["authentication"].starts_with("failed"), "{r:?}");
    assert_eq!(r["result"], "failed");
    let r = fields(
        &ok(
            &mut a,
            &[
                "TENANT.MIGRATE.VALIDATE",
                "acme",
                "TARGET",
                &locked_addr,
                "AUTH",
                "secret",
            ],
        )
        .await,
    );
    assert_eq!(r["result"], "ok", "{r:?}");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let r = fields(
        &ok(
            &mut a,
            &["TENANT.MIGRATE.VALIDATE", "acme", "TARGET", &closed],
        )
        .await,
    );
    assert!(r["connectivity"].starts_with("failed"), "{r:?}");
    assert_eq!(r["result"], "failed");
    let e = err(
        &mut a,
        &["TENANT.MIGRATE.VALIDATE", "ghost", "TARGET", &dst_addr],
    )
    .await;
    assert!(e.contains("no such tenant"), "{e}");
    // Nothing was created on the target.
    let mut d = admin(&dst).await;
    assert!(
        err(&mut d, &["TENANT.INFO", "acme"])
            .await
            .contains("no such tenant")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fast_mode_holds_writes_then_switches() {
    let src = Server::start();
    let dst = Server::start();
    tenant_with_keys(&src, "acme", 50_000).await;
    let mut a = admin(&src).await;
    let id = migrate(&mut a, "acme", &dst, &["MODE", "fast"]).await;
    // A write during the copy waits at the gate, then is answered MOVED (never dropped): the
    // client library follows it to the target, where it lands.
    let mut c = ferrite_client::Client::connect(
        ferrite_client::ConnectOptions::new(src.addr()).tenant("acme", "pw"),
    )
    .await
    .unwrap();
    c.cmd(&["SET", "during-fast", "1"])
        .await
        .expect("held, then redirected");
    let st = wait_state(&mut a, &id, "completed", LONG).await;
    assert_eq!(st["mode"], "fast");
    let downtime: f64 = st["downtime_ms"].parse().unwrap();
    assert!(downtime > 0.0, "{st:?}");
    let v = fields(&ok(&mut a, &["TENANT.MIGRATE.VERIFY", &id]).await);
    assert_eq!(v["status"], "verified", "{v:?}");
    let mut t = tenant_conn(&dst, "acme", "pw").await;
    assert_eq!(
        value::as_int(&ok(&mut t, &["DBSIZE"]).await).unwrap(),
        50_001
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn update_takes_effect_on_a_running_migration() {
    let src = Server::start();
    let dst = Server::start();
    tenant_with_keys(&src, "acme", 20_000).await;
    let mut a = admin(&src).await;
    let id = migrate(&mut a, "acme", &dst, &["PARALLEL", "1", "RATE", "400000"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let slow = status(&mut a, &id).await;
    assert_eq!(
        slow["phase"], "snapshot",
        "rate-limited: still copying ({slow:?})"
    );
    ok(
        &mut a,
        &[
            "TENANT.MIGRATE.UPDATE",
            &id,
            "PARALLEL",
            "4",
            "BATCH_SIZE",
            "500",
            "RATE",
            "0",
        ],
    )
    .await;
    let st = wait_state(&mut a, &id, "live_sync", LONG).await;
    assert_eq!(st["parallel"], "4");
    assert_eq!(st["batch_size"], "500");
    // Writes in live sync are routed over the new streams; the result stays exact.
    let mut t = tenant_conn(&src, "acme", "pw").await;
    load(
        &mut t,
        (0..2000)
            .map(|i| s_(&["SET", &format!("k{i}"), "updated"]))
            .collect(),
    )
    .await;
    ok(&mut a, &["TENANT.MIGRATE.UPDATE", &id, "PARALLEL", "2"]).await;
    load(
        &mut t,
        (0..2000)
            .map(|i| s_(&["DEL", &format!("k{}", 10_000 + i)]))
            .collect(),
    )
    .await;
    wait_for(&mut a, &id, LONG, "lag drained", |s| {
        s["lag_keys"] == "0" && s["parallel"] == "2"
    })
    .await;
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id]).await;
    let v = fields(&ok(&mut a, &["TENANT.MIGRATE.VERIFY", &id]).await);
    assert_eq!(v["status"], "verified", "{v:?}");
    let e = err(&mut a, &["TENANT.MIGRATE.UPDATE", &id, "PARALLEL", "3"]).await;
    assert!(e.contains("cannot update"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduled_cutover_runs_at_its_time_and_can_be_unscheduled() {
    let src = Server::start();
    let dst = Server::start();
    tenant_with_keys(&src, "acme", 1000).await;
    tenant_with_keys(&src, "beta", 1000).await;
    let mut a = admin(&src).await;
    let id = migrate(&mut a, "acme", &dst, &[]).await;
    wait_state(&mut a, &id, "live_sync", LONG).await;
    let at_ms = crate::now_ms() + 1500;
    let at = rfc3339(at_ms);
    let r = fields(&ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id, "SCHEDULED", &at]).await);
    assert_eq!(r["status"], "scheduled");
    let st = status(&mut a, &id).await;
    assert_eq!(st["scheduled_cutover"], r["scheduled_cutover"]);
    assert_eq!(st["state"], "live_sync", "not before its time");
    let st = wait_state(&mut a, &id, "completed", SHORT).await;
    assert!(crate::now_ms() >= at_ms);
    assert_eq!(st["scheduled_cutover"], "");

    // Unscheduled: nothing happens at that time.
    let id2 = migrate(&mut a, "beta", &dst, &[]).await;
    wait_state(&mut a, &id2, "live_sync", LONG).await;
    let at = rfc3339(crate::now_ms() + 800);
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id2, "SCHEDULED", &at]).await;
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id2, "UNSCHEDULE"]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let st = status(&mut a, &id2).await;
    assert_eq!(st["state"], "live_sync");
    assert_eq!(st["scheduled_cutover"], "");
    let e = err(
        &mut a,
        &["TENANT.MIGRATE.CUTOVER", &id2, "SCHEDULED", "tomorrow"],
    )
    .await;
    assert!(e.contains("invalid time"), "{e}");
}

pub(crate) fn rfc3339(ms: u64) -> String {
    // Seconds and milliseconds since the epoch, formatted by hand (UTC).
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{:03}Z",
        ms % 1000
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_limit_queues_in_order() {
    let src = Server::start();
    let dst = Server::start();
    let mut a = admin(&src).await;
    ok(
        &mut a,
        &["CONFIG", "SET", "tenancy.migration.max_concurrent", "1"],
    )
    .await;
    for t in ["t1", "t2", "t3"] {
        tenant_with_keys(&src, t, 500).await;
    }
    let m1 = migrate(&mut a, "t1", &dst, &[]).await;
    wait_state(&mut a, &m1, "live_sync", LONG).await;
    let m2 = migrate(&mut a, "t2", &dst, &[]).await;
    let m3 = migrate(&mut a, "t3", &dst, &[]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status(&mut a, &m2).await["state"], "queued");
    assert_eq!(status(&mut a, &m3).await["state"], "queued");
    let all = ok(&mut a, &["TENANT.MIGRATE.STATUS", "ALL"]).await;
    let all = value::as_pairs(&all).unwrap();
    let listed = all.iter().find(|(k, _)| k == "migrations").unwrap();
    assert_eq!(value::as_array(&listed.1).unwrap().len(), 3);
    // Finishing the running one starts the oldest queued one, and only it.
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &m1]).await;
    wait_state(&mut a, &m2, "live_sync", LONG).await;
    assert_eq!(status(&mut a, &m3).await["state"], "queued");
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &m2]).await;
    wait_state(&mut a, &m3, "live_sync", LONG).await;
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &m3]).await;
    let started = Instant::now();
    for m in [&m1, &m2, &m3] {
        let v = fields(&ok(&mut a, &["TENANT.MIGRATE.VERIFY", m]).await);
        assert_eq!(v["status"], "verified", "{v:?}");
    }
    assert!(started.elapsed() < SHORT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frozen_copy_is_released_after_retention_and_moved_outlives_it() {
    let src = Server::start();
    let dst = Server::start();
    tenant_with_keys(&src, "acme", 3000).await;
    let mut a = admin(&src).await;
    ok(
        &mut a,
        &["CONFIG", "SET", "tenancy.migration.retention_secs", "1"],
    )
    .await;
    // Without a backup: the backup's copy would be what TENANT.INFO shows here meanwhile.
    let id = migrate(&mut a, "acme", &dst, &["RETENTION", "0"]).await;
    wait_state(&mut a, &id, "live_sync", LONG).await;
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id]).await;
    // Within the retention the frozen copy is there (VERIFY works on it).
    let info = fields(&ok(&mut a, &["TENANT.INFO", "acme"]).await);
    assert_eq!(
        (info["state"].as_str(), info["keys"].as_str()),
        ("moved", "3000")
    );
    let v = fields(&ok(&mut a, &["TENANT.MIGRATE.VERIFY", &id]).await);
    assert_eq!(v["status"], "verified", "{v:?}");
    // After it, the copy is freed but clients are still redirected.
    let deadline = Instant::now() + SHORT;
    loop {
        let info = fields(&ok(&mut a, &["TENANT.INFO", "acme"]).await);
        if info["keys"] == "0" {
            assert_eq!(info["state"], "moved");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "frozen copy never released: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut t = tenant_conn(&src, "acme", "pw").await;
    let e = err(&mut t, &["GET", "k1"]).await;
    assert!(e.contains(&dst.addr()), "{e}");
    let e = err(&mut a, &["TENANT.MIGRATE.VERIFY", &id]).await;
    assert!(e.contains("released"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_authenticate_to_each_other_with_the_migration_token() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("f.toml");
    std::fs::write(&cfg, "[tenancy.migration]\ntoken = \"cluster-secret\"\n").unwrap();
    let cfg = cfg.to_str().unwrap();
    let src = Server::start_with(&["--config", cfg]);
    // The target has an admin password the source does not know: the token is enough, and it
    // only opens the internal import commands.
    let dst = Server::start_with(&["--config", cfg, "--requirepass", "admin-only"]);
    tenant_with_keys(&src, "acme", 500).await;
    let mut a = admin(&src).await;
    let id = migrate(&mut a, "acme", &dst, &[]).await;
    wait_state(&mut a, &id, "live_sync", LONG).await;
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id]).await;
    let v = fields(&ok(&mut a, &["TENANT.MIGRATE.VERIFY", &id]).await);
    assert_eq!(v["status"], "verified", "{v:?}");
    let mut peer = ferrite_client::Connection::connect(
        ferrite_client::ConnectOptions::new(dst.addr())
            .tenant("ferrite-migration", "cluster-secret"),
    )
    .await
    .unwrap();
    let e = err(&mut peer, &["CONFIG", "GET", "port"]).await;
    assert!(e.contains("no permission"), "{e}");
    let e = err(&mut peer, &["TENANT.IMPORT.CHECK", "x", "99", "someone"]).await;
    assert!(
        e.contains("source speaks v99, target speaks v3"),
        "an incompatible peer is told both versions: {e}"
    );
    assert!(
        ferrite_client::Connection::connect(
            ferrite_client::ConnectOptions::new(dst.addr()).tenant("ferrite-migration", "wrong"),
        )
        .await
        .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flushdb_during_a_migration_reaches_the_target_in_order() {
    let src = Server::start();
    let dst = Server::start();
    tenant_with_keys(&src, "acme", 20_000).await;
    let mut a = admin(&src).await;
    // During the snapshot (rate-limited so it is still running).
    let id = migrate(&mut a, "acme", &dst, &["RATE", "300000"]).await;
    wait_for(&mut a, &id, SHORT, "snapshot progress", |s| {
        s["phase"] == "snapshot" && s["keys_synced"].parse::<u64>().unwrap_or(0) > 1000
    })
    .await;
    let mut t = tenant_conn(&src, "acme", "pw").await;
    ok(&mut t, &["FLUSHDB"]).await;
    load(
        &mut t,
        (0..500)
            .map(|i| s_(&["SET", &format!("after{i}"), "1"]))
            .collect(),
    )
    .await;
    ok(&mut a, &["TENANT.MIGRATE.UPDATE", &id, "RATE", "0"]).await;
    wait_state(&mut a, &id, "live_sync", LONG).await;
    // And again during live sync.
    ok(&mut t, &["FLUSHALL"]).await;
    load(
        &mut t,
        (0..300)
            .map(|i| s_(&["SET", &format!("last{i}"), "2"]))
            .collect(),
    )
    .await;
    wait_for(&mut a, &id, LONG, "lag drained", |s| s["lag_keys"] == "0").await;
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id]).await;
    let v = fields(&ok(&mut a, &["TENANT.MIGRATE.VERIFY", &id]).await);
    assert_eq!(v["status"], "verified", "{v:?}");
    let mut d = tenant_conn(&dst, "acme", "pw").await;
    assert_eq!(value::as_int(&ok(&mut d, &["DBSIZE"]).await).unwrap(), 300);
    assert_eq!(
        value::as_string(&ok(&mut d, &["GET", "last7"]).await).unwrap(),
        "2"
    );
}
