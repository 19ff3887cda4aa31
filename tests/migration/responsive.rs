//! Operators are answered at once whatever the target does: a target SIGKILLed mid-snapshot, a
//! silent partition. With the default settings (only fault injection switched on, to stop the
//! snapshot at an exact batch): STATUS says what is wrong while the migration retries, and every
//! command answers within a second; CANCEL succeeds and the source stays the owner.

use std::time::{Duration, Instant};

use ferrite_client::{Connection, value};

use crate::common::Server;
use crate::proxy::Proxy;
use crate::util::*;
use crate::{LONG, SHORT};

/// Default settings, plus TENANT.MIGRATE.DEBUG breakpoints.
fn source_with_breakpoints() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("source.toml");
    std::fs::write(&cfg, "[tenancy.migration]\nfault_injection = true\n").expect("config");
    let s = Server::start_with(&["--config", cfg.to_str().expect("utf8 path")]);
    (s, dir)
}

/// A command must answer (OK or an error) within one second.
async fn timed(c: &mut Connection, args: &[&str]) -> Result<ferrite_client::Frame, String> {
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), c.cmd(args))
        .await
        .unwrap_or_else(|_| panic!("{args:?} did not answer within 5 s"));
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(1), "{args:?} took {took:?}");
    r.map_err(|e| e.to_string())
}

async fn wait_parked(a: &mut Connection, id: &str, point: &str) {
    let deadline = Instant::now() + SHORT;
    loop {
        let parked =
            value::as_string(&ok(a, &["TENANT.MIGRATE.DEBUG", id, "WAITING"]).await).unwrap();
        if parked == point {
            return;
        }
        assert!(Instant::now() < deadline, "never parked at {point}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn assert_source_owns(a: &mut Connection, src: &Server, digest: &str) {
    let info = fields(&ok(a, &["TENANT.INFO", "acme"]).await);
    assert_eq!(info["state"], "active");
    assert_eq!(
        digest_of(&ok(a, &["TENANT.DIGEST", "acme"]).await),
        digest,
        "source unchanged"
    );
    let mut t = tenant_conn(src, "acme", "pw").await;
    ok(&mut t, &["SET", "still-mine", "1"]).await;
    ok(&mut t, &["DEL", "still-mine"]).await;
}

/// The reproduction: a 200k-key tenant, the target SIGKILLed mid-snapshot, five times in
/// a row. Before: STATUS said `syncing` with an empty error and CANCEL blocked 30 s and failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_target_killed_mid_snapshot_is_reported_and_cancel_answers_at_once() {
    let (src, _cfg) = source_with_breakpoints();
    let mut a = admin(&src).await;
    ok(&mut a, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]).await;
    let mut t = tenant_conn(&src, "acme", "pw").await;
    let v = "v".repeat(100);
    load(
        &mut t,
        (0..200_000)
            .map(|i| s(&["SET", &format!("key:{i}"), &v]))
            .collect(),
    )
    .await;
    let digest = digest_of(&ok(&mut a, &["TENANT.DIGEST", "acme"]).await);
    for round in 0..5 {
        let mut dst = Server::start();
        let id = migrate(&mut a, "acme", &dst, &[]).await;
        ok(
            &mut a,
            &["TENANT.MIGRATE.DEBUG", &id, "BREAK", "snapshot:batch"],
        )
        .await;
        wait_parked(&mut a, &id, "snapshot:batch").await;
        dst.kill();
        ok(&mut a, &["TENANT.MIGRATE.DEBUG", &id, "CONTINUE"]).await;
        let st = wait_for(&mut a, &id, SHORT, "reconnecting", |s| {
            s["phase"] == "reconnecting"
                && s["target_unreachable_seconds"]
                    .parse::<f64>()
                    .unwrap_or(0.0)
                    >= 1.0
        })
        .await;
        assert_eq!(st["state"], "syncing", "round {round}: {st:?}");
        assert!(
            st["error"].contains("unreachable") && st["error"].contains("refused"),
            "round {round}: the error says what is wrong: {st:?}"
        );
        assert!(!st["last_error_at"].is_empty(), "{st:?}");
        assert!(st["reconnects"].parse::<u64>().unwrap() > 0, "{st:?}");
        let st = fields(
            &timed(&mut a, &["TENANT.MIGRATE.STATUS", &id])
                .await
                .unwrap(),
        );
        assert_eq!(st["state"], "syncing");
        timed(&mut a, &["TENANT.MIGRATE.PAUSE", &id]).await.unwrap();
        let e = timed(&mut a, &["TENANT.MIGRATE.CUTOVER", &id])
            .await
            .unwrap_err();
        assert!(e.contains("is paused"), "{e}");
        timed(&mut a, &["TENANT.MIGRATE.RESUME", &id])
            .await
            .unwrap();
        timed(&mut a, &["TENANT.MIGRATE.UPDATE", &id, "RATE", "0"])
            .await
            .unwrap();
        timed(&mut a, &["TENANT.MIGRATE.CANCEL", &id])
            .await
            .unwrap();
        let st = status(&mut a, &id).await;
        assert_eq!(st["state"], "cancelled", "round {round}: {st:?}");
        assert_source_owns(&mut a, &src, &digest).await;
    }
}

/// A silent partition (nothing moves, no connection resets) during live sync: the heartbeat
/// notices within seconds, STATUS says so, every command answers at once, CANCEL succeeds, and
/// the staged import is dropped once the network is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_partition_is_reported_and_the_import_is_dropped_after_cancel() {
    let src = Server::start();
    let dst = Server::start();
    let mut a = admin(&src).await;
    ok(&mut a, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]).await;
    let mut t = tenant_conn(&src, "acme", "pw").await;
    load(
        &mut t,
        (0..5000)
            .map(|i| s(&["SET", &format!("k{i}"), "value"]))
            .collect(),
    )
    .await;
    let digest = digest_of(&ok(&mut a, &["TENANT.DIGEST", "acme"]).await);
    let proxy = Proxy::start(dst.addr()).await;
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
            ],
        )
        .await,
    )["migration_id"]
        .clone();
    wait_state(&mut a, &id, "live_sync", LONG).await;
    proxy.stall(true);
    // Heartbeats go every 2 s and wait 3 s for an answer.
    let st = wait_for(&mut a, &id, SHORT, "reconnecting", |s| {
        s["phase"] == "reconnecting"
    })
    .await;
    assert!(st["error"].contains("heartbeat"), "{st:?}");
    assert_eq!(st["state"], "live_sync");
    let e = timed(&mut a, &["TENANT.MIGRATE.CUTOVER", &id])
        .await
        .unwrap_err();
    assert!(e.contains("unreachable"), "{e}");
    timed(&mut a, &["TENANT.MIGRATE.PAUSE", &id]).await.unwrap();
    timed(&mut a, &["TENANT.MIGRATE.RESUME", &id])
        .await
        .unwrap();
    timed(&mut a, &["TENANT.MIGRATE.UPDATE", &id, "BATCH_SIZE", "500"])
        .await
        .unwrap();
    timed(&mut a, &["TENANT.MIGRATE.CANCEL", &id])
        .await
        .unwrap();
    assert_eq!(status(&mut a, &id).await["state"], "cancelled");
    assert_source_owns(&mut a, &src, &digest).await;
    let mut d = admin(&dst).await;
    let staged = fields(&ok(&mut d, &["TENANT.INFO", "acme"]).await);
    assert_eq!(
        staged["state"], "importing",
        "still staged behind the partition"
    );
    proxy.stall(false);
    let deadline = Instant::now() + SHORT;
    while !cmd(&mut d, &["TENANT.INFO", "acme"])
        .await
        .is_err_and(|e| e.to_string().contains("no such tenant"))
    {
        assert!(
            Instant::now() < deadline,
            "the target kept the staged import after the partition healed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
