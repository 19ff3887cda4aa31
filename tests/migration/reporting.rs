//! What STATUS, CUTOVER and VALIDATE report must be what happened: lag counts what the target
//! has not acknowledged, fast mode's downtime is the whole write suspension, PAUSE stops a large
//! value mid-way, a scheduled cutover can be withdrawn while it waits and not after it runs.

use std::time::{Duration, Instant};

use ferrite_client::value;

use crate::common::Server;
use crate::util::*;
use crate::{LONG, SHORT};

async fn tenant_with(s: &Server, tenant: &str, cmds: Vec<Vec<String>>) {
    let mut a = admin(s).await;
    ok(&mut a, &["TENANT.CREATE", tenant, "PASSWORD", "pw"]).await;
    let mut t = tenant_conn(s, tenant, "pw").await;
    load(&mut t, cmds).await;
}

fn small_keys(n: usize) -> Vec<Vec<String>> {
    (0..n)
        .map(|i| s(&["SET", &format!("k{i}"), &format!("value-{i}")]))
        .collect()
}

/// A tenant with `n` small keys plus one string of `big_mb` MB (shipped in chunks).
fn with_big_value(n: usize, big_mb: usize) -> Vec<Vec<String>> {
    let mut cmds = small_keys(n);
    cmds.push(vec!["SET".into(), "big".into(), "x".repeat(big_mb << 20)]);
    cmds
}

async fn key_count(s: &Server, tenant: &str) -> i64 {
    let mut a = admin(s).await;
    let f = fields(&ok(&mut a, &["TENANT.DIGEST", tenant]).await);
    f["keys"].parse().expect("keys field")
}

async fn digest(s: &Server, tenant: &str) -> String {
    let mut a = admin(s).await;
    digest_of(&ok(&mut a, &["TENANT.DIGEST", tenant]).await)
}

fn num(st: &std::collections::HashMap<String, String>, field: &str) -> f64 {
    st[field]
        .trim_end_matches('%')
        .parse()
        .unwrap_or_else(|_| panic!("{field} is not a number: {st:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lag_counts_what_the_target_has_not_acknowledged() {
    let src = Server::start();
    let dst = Server::start();
    tenant_with(&src, "acme", small_keys(3000)).await;
    let mut a = admin(&src).await;
    // A slow link (40 kB/s): 300 changes of 300 bytes take seconds to reach the target.
    let id = migrate(&mut a, "acme", &dst, &["RATE", "40000"]).await;
    wait_state(&mut a, &id, "live_sync", LONG).await;
    wait_for(&mut a, &id, LONG, "snapshot acknowledged", |s| {
        s["lag_keys"] == "0"
    })
    .await;
    let mut t = tenant_conn(&src, "acme", "pw").await;
    load(
        &mut t,
        (0..300)
            .map(|i| s(&["SET", &format!("new{i}"), &"v".repeat(300)]))
            .collect(),
    )
    .await;
    let first = status(&mut a, &id).await;
    assert!(num(&first, "lag_keys") > 5.0, "{first:?}");
    assert!(num(&first, "lag_bytes") > 0.0, "{first:?}");
    assert!(num(&first, "progress") < 100.0, "{first:?}");
    // Whenever STATUS says nothing is left, the target holds every key.
    let deadline = Instant::now() + LONG;
    let mut lagging_samples = 0;
    loop {
        let st = status(&mut a, &id).await;
        if st["lag_keys"] == "0" {
            assert_eq!(key_count(&dst, "acme").await, 3300, "{st:?}");
            break;
        }
        lagging_samples += 1;
        assert!(Instant::now() < deadline, "lag never drained: {st:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(lagging_samples > 3, "the slow link was visible as lag");
    let st = status(&mut a, &id).await;
    assert_eq!(st["keys_synced"], st["keys_total"], "{st:?}");
    assert_eq!(st["keys_total"], "3300", "{st:?}");
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id]).await;
    let v = fields(&ok(&mut a, &["TENANT.MIGRATE.VERIFY", &id]).await);
    assert_eq!(v["status"], "verified", "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fast_mode_downtime_is_the_whole_write_suspension() {
    let src = Server::start();
    let dst = Server::start();
    tenant_with(&src, "acme", small_keys(20_000)).await;
    let mut a = admin(&src).await;
    // About 1 MB of batches at 1 MB/s: the copy, and so the suspension, takes about a second.
    let id = migrate(&mut a, "acme", &dst, &["MODE", "fast", "RATE", "1000000"]).await;
    let mut c = ferrite_client::Client::connect(
        ferrite_client::ConnectOptions::new(src.addr()).tenant("acme", "pw"),
    )
    .await
    .expect("client");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    c.cmd(&["SET", "during-fast", "1"])
        .await
        .expect("held, then redirected");
    let held_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let st = wait_state(&mut a, &id, "completed", LONG).await;
    let downtime = num(&st, "downtime_ms");
    assert!(
        held_ms > 300.0,
        "the write was held by the copy ({held_ms} ms)"
    );
    assert!(
        downtime >= held_ms * 0.8,
        "downtime_ms {downtime} must cover the {held_ms} ms the write was held"
    );
    let mut t = tenant_conn(&dst, "acme", "pw").await;
    assert_eq!(
        value::as_int(&ok(&mut t, &["DBSIZE"]).await).unwrap(),
        20_001
    );
    let v = fields(&ok(&mut a, &["TENANT.MIGRATE.VERIFY", &id]).await);
    assert_eq!(v["status"], "verified", "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_stops_a_large_value_mid_way_and_cancel_does_not_wait_for_it() {
    let src = Server::start();
    let dst = Server::start();
    tenant_with(&src, "acme", with_big_value(1000, 8)).await;
    let before = digest(&src, "acme").await;
    let mut a = admin(&src).await;
    // 8 MB at 1 MB/s: live sync ships the value in chunks for about 8 s.
    let id = migrate(&mut a, "acme", &dst, &["RATE", "1000000"]).await;
    wait_state(&mut a, &id, "live_sync", LONG).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let st = status(&mut a, &id).await;
    assert!(
        num(&st, "lag_bytes") > 1e6,
        "the unsent rest is lag: {st:?}"
    );
    assert!(num(&st, "progress") < 100.0, "{st:?}");
    ok(&mut a, &["TENANT.MIGRATE.PAUSE", &id]).await;
    // What was already queued may still go out; then nothing.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let sent = status(&mut a, &id).await["bytes_sent"].clone();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let later = status(&mut a, &id).await;
    assert_eq!(later["bytes_sent"], sent, "paused: {later:?}");
    assert_eq!(later["state"], "paused");
    let t0 = Instant::now();
    ok(&mut a, &["TENANT.MIGRATE.RESUME", &id]).await;
    ok(&mut a, &["TENANT.MIGRATE.CANCEL", &id]).await;
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "CANCEL did not wait for the value ({:?})",
        t0.elapsed()
    );
    wait_state(&mut a, &id, "cancelled", SHORT).await;
    assert_eq!(digest(&src, "acme").await, before, "source unchanged");
    let mut d = admin(&dst).await;
    let e = err(&mut d, &["TENANT.INFO", "acme"]).await;
    assert!(e.contains("no such tenant"), "{e}");

    // Interrupted and resumed, the value still arrives whole.
    let id = migrate(&mut a, "acme", &dst, &["RATE", "4000000"]).await;
    wait_state(&mut a, &id, "live_sync", LONG).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    ok(&mut a, &["TENANT.MIGRATE.PAUSE", &id]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ok(&mut a, &["TENANT.MIGRATE.RESUME", &id]).await;
    wait_for(&mut a, &id, LONG, "lag drained", |s| s["lag_keys"] == "0").await;
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id]).await;
    let v = fields(&ok(&mut a, &["TENANT.MIGRATE.VERIFY", &id]).await);
    assert_eq!(v["status"], "verified", "{v:?}");
    assert_eq!(digest(&dst, "acme").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduled_cutover_is_withdrawn_while_it_waits() {
    let src = Server::start();
    let dst = Server::start();
    tenant_with(&src, "acme", with_big_value(1000, 6)).await;
    let mut a = admin(&src).await;
    let id = migrate(&mut a, "acme", &dst, &["RATE", "1000000"]).await;
    wait_state(&mut a, &id, "live_sync", LONG).await;
    let e = err(
        &mut a,
        &[
            "TENANT.MIGRATE.CUTOVER",
            &id,
            "SCHEDULED",
            "2020-01-01T00:00:00Z",
        ],
    )
    .await;
    assert!(e.contains("in the past"), "{e}");
    let e = err(&mut a, &["TENANT.MIGRATE.CUTOVER", &id, "UNSCHEDULE"]).await;
    assert!(e.contains("no scheduled cutover"), "{e}");
    // Due in half a second, while the 6 MB value still takes seconds to ship: the cutover
    // request waits behind it, and can still be withdrawn.
    let at = crate::production::rfc3339(crate::now_ms() + 500);
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id, "SCHEDULED", &at]).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let st = status(&mut a, &id).await;
    assert_eq!(st["state"], "live_sync", "{st:?}");
    assert_ne!(st["scheduled_cutover"], "", "still planned while it waits");
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id, "UNSCHEDULE"]).await;
    wait_for(&mut a, &id, LONG, "lag drained", |s| s["lag_keys"] == "0").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let st = status(&mut a, &id).await;
    assert_eq!(st["state"], "live_sync", "withdrawn: {st:?}");
    assert_eq!(st["scheduled_cutover"], "");
    assert_eq!(st["error"], "", "{st:?}");
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id]).await;
    let v = fields(&ok(&mut a, &["TENANT.MIGRATE.VERIFY", &id]).await);
    assert_eq!(v["status"], "verified", "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn validate_lists_every_check_and_names_the_one_that_failed() {
    let src = Server::start();
    let dst = Server::start();
    let locked = Server::start_with(&["--requirepass", "secret"]);
    tenant_with(&src, "acme", small_keys(100)).await;
    let mut a = admin(&src).await;
    let all = [
        "connectivity",
        "authentication",
        "version_compatible",
        "target_tenant",
        "capacity",
        "network_latency",
        "estimated_duration",
    ];
    let locked_addr = locked.addr();
    let r = fields(
        &ok(
            &mut a,
            &["TENANT.MIGRATE.VALIDATE", "acme", "TARGET", &locked_addr],
        )
        .await,
    );
    for f in all {
        assert!(r.contains_key(f), "{f} missing: {r:?}");
    }
    assert!(r["authentication"].starts_with("failed"), "{r:?}");
    assert_eq!(
        r["capacity"], "not checked (authentication failed)",
        "{r:?}"
    );
    // The target already holds a tenant of that name: a compatible Ferrite, wrong state.
    let mut d = admin(&dst).await;
    ok(&mut d, &["TENANT.CREATE", "acme"]).await;
    let dst_addr = dst.addr();
    let r = fields(
        &ok(
            &mut a,
            &["TENANT.MIGRATE.VALIDATE", "acme", "TARGET", &dst_addr],
        )
        .await,
    );
    assert!(r["version_compatible"].starts_with("ok"), "{r:?}");
    assert!(r["target_tenant"].starts_with("failed"), "{r:?}");
    assert!(r["target_tenant"].contains("already has tenant"), "{r:?}");
    assert_eq!(r["result"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quiet_tenant_keeps_its_import_and_a_lost_import_fails_the_migration() {
    let src = Server::start();
    let dst = Server::start();
    tenant_with(&src, "acme", small_keys(500)).await;
    let mut a = admin(&src).await;
    let mut d = admin(&dst).await;
    // The target reaps an import that hears nothing for 3 s.
    ok(
        &mut d,
        &["CONFIG", "SET", "tenancy.migration.sync_timeout_secs", "3"],
    )
    .await;
    let id = migrate(&mut a, "acme", &dst, &[]).await;
    wait_state(&mut a, &id, "live_sync", LONG).await;
    // No writes for twice the reaper's limit: the source's heartbeat keeps the import.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let st = status(&mut a, &id).await;
    assert_eq!(st["state"], "live_sync", "{st:?}");
    let import = st["import_id"].clone();
    let info = fields(&ok(&mut d, &["TENANT.IMPORT.STATUS", &import]).await);
    assert_eq!(info["state"], "receiving", "{info:?}");
    // Nor does a PAUSE longer than that lose it.
    ok(&mut a, &["TENANT.MIGRATE.PAUSE", &id]).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    ok(&mut a, &["TENANT.MIGRATE.RESUME", &id]).await;
    let info = fields(&ok(&mut d, &["TENANT.IMPORT.STATUS", &import]).await);
    assert_eq!(info["state"], "receiving", "after a long pause: {info:?}");

    // The target drops the import behind the source's back: STATUS says so within seconds.
    ok(&mut d, &["TENANT.IMPORT.ABORT", &import]).await;
    let st = wait_state(&mut a, &id, "failed", SHORT).await;
    assert!(st["error"].contains("dropped the import"), "{st:?}");
    // RETRY starts a new import and completes.
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id, "RETRY"]).await;
    let v = fields(&ok(&mut a, &["TENANT.MIGRATE.VERIFY", &id]).await);
    assert_eq!(v["status"], "verified", "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_that_reached_the_target_are_sent_back_when_the_import_is_cancelled() {
    let src = Server::start();
    let dst = Server::start();
    tenant_with(&src, "acme", small_keys(500)).await;
    let mut a = admin(&src).await;
    let id = migrate(&mut a, "acme", &dst, &[]).await;
    wait_state(&mut a, &id, "live_sync", LONG).await;
    let mut early = tenant_conn(&dst, "acme", "pw").await;
    let e = err(&mut early, &["GET", "k1"]).await;
    assert!(e.contains("TRYAGAIN"), "{e}");
    ok(&mut a, &["TENANT.MIGRATE.CANCEL", &id]).await;
    wait_state(&mut a, &id, "cancelled", SHORT).await;
    let e = err(&mut early, &["GET", "k1"]).await;
    assert!(
        e.contains(&format!("tenant 'acme' moved to {}", src.addr())),
        "sent back to the source: {e}"
    );
    // The target itself ends without the tenant.
    let mut d = admin(&dst).await;
    let e = err(&mut d, &["TENANT.INFO", "acme"]).await;
    assert!(e.contains("no such tenant"), "{e}");
    let mut home = tenant_conn(&src, "acme", "pw").await;
    assert_eq!(
        value::as_string(&ok(&mut home, &["GET", "k1"]).await).unwrap(),
        "value-1"
    );
}
