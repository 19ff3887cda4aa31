//! CANCEL at each phase leaves the target without the tenant and the source unchanged;
//! PAUSE/RESUME keep capturing changes and the result stays exact.

use std::time::Duration;

use ferrite_client::value;

use crate::common::Server;
use crate::util::*;
use crate::{LONG, SHORT};

async fn setup(src: &Server, tenant: &str, keys: usize) -> String {
    let mut a = admin(src).await;
    ok(&mut a, &["TENANT.CREATE", tenant, "PASSWORD", "pw"]).await;
    let mut t = tenant_conn(src, tenant, "pw").await;
    load(
        &mut t,
        (0..keys)
            .map(|i| s(&["SET", &format!("k{i}"), &format!("{i}-{}", "v".repeat(200))]))
            .collect(),
    )
    .await;
    ok(&mut t, &["HSET", "h", "a", "1", "b", "2"]).await;
    digest_of(&ok(&mut a, &["TENANT.DIGEST", tenant]).await)
}

/// After a cancel: the target has no trace of the tenant, the source is as before and writable.
async fn assert_cancelled_cleanly(
    src: &Server,
    dst: &Server,
    tenant: &str,
    id: &str,
    digest: &str,
) {
    let mut a = admin(src).await;
    let st = wait_state(&mut a, id, "cancelled", SHORT).await;
    assert_eq!(st["phase"], "stopped");
    let mut d = admin(dst).await;
    let e = err(&mut d, &["TENANT.INFO", tenant]).await;
    assert!(
        e.contains("no such tenant"),
        "target still has {tenant}: {e}"
    );
    let info = value::display(&ok(&mut d, &["INFO", "replication"]).await);
    assert!(
        !info
            .lines()
            .any(|l| l.contains(&format!("tenant={tenant},")) && l.contains("state=receiving")),
        "{info}"
    );
    assert_eq!(
        digest_of(&ok(&mut a, &["TENANT.DIGEST", tenant]).await),
        digest,
        "source unchanged"
    );
    let info = fields(&ok(&mut a, &["TENANT.INFO", tenant]).await);
    assert_eq!(info["state"], "active");
    let mut t = tenant_conn(src, tenant, "pw").await;
    ok(&mut t, &["SET", "after-cancel", "1"]).await;
    ok(&mut t, &["DEL", "after-cancel"]).await;
    let e = err(&mut a, &["TENANT.MIGRATE.CUTOVER", id]).await;
    assert!(e.contains("cancelled"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_in_every_phase() {
    let src = Server::start();
    let dst = Server::start();
    let mut a = admin(&src).await;

    // Queued: one slot, taken by a paused migration of another tenant.
    ok(
        &mut a,
        &["CONFIG", "SET", "tenancy.migration.max_concurrent", "1"],
    )
    .await;
    let d1 = setup(&src, "one", 1000).await;
    let d2 = setup(&src, "two", 1000).await;
    let m1 = migrate(&mut a, "one", &dst, &[]).await;
    wait_state(&mut a, &m1, "live_sync", LONG).await;
    let m2 = migrate(&mut a, "two", &dst, &[]).await;
    let st = status(&mut a, &m2).await;
    assert_eq!(st["state"], "queued", "{st:?}");
    ok(&mut a, &["TENANT.MIGRATE.CANCEL", &m2]).await;
    assert_cancelled_cleanly(&src, &dst, "two", &m2, &d2).await;
    let st = status(&mut a, &m2).await;
    assert_eq!(st["progress"], "0%", "it never ran: {st:?}");

    // Live sync (with changes captured meanwhile).
    ok(&mut a, &["TENANT.MIGRATE.CANCEL", &m1]).await;
    assert_cancelled_cleanly(&src, &dst, "one", &m1, &d1).await;
    ok(
        &mut a,
        &["CONFIG", "SET", "tenancy.migration.max_concurrent", "5"],
    )
    .await;

    // Snapshot: slowed down by a shipping rate limit so it is still copying when cancelled.
    let d3 = setup(&src, "three", 30_000).await;
    let m3 = migrate(
        &mut a,
        "three",
        &dst,
        &["PARALLEL", "1", "BATCH_SIZE", "100", "RATE", "200000"],
    )
    .await;
    wait_for(&mut a, &m3, SHORT, "snapshot progress", |s| {
        s["phase"] == "snapshot" && s["keys_synced"].parse::<u64>().unwrap_or(0) > 0
    })
    .await;
    ok(&mut a, &["TENANT.MIGRATE.CANCEL", &m3]).await;
    assert_cancelled_cleanly(&src, &dst, "three", &m3, &d3).await;

    // Paused.
    let m4 = migrate(&mut a, "three", &dst, &[]).await;
    wait_state(&mut a, &m4, "live_sync", LONG).await;
    ok(&mut a, &["TENANT.MIGRATE.PAUSE", &m4]).await;
    ok(&mut a, &["TENANT.MIGRATE.CANCEL", &m4]).await;
    assert_cancelled_cleanly(&src, &dst, "three", &m4, &d3).await;

    // After completion a cancel is refused (a reverse migration undoes it instead).
    let m5 = migrate(&mut a, "three", &dst, &[]).await;
    wait_state(&mut a, &m5, "live_sync", LONG).await;
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &m5]).await;
    let e = err(&mut a, &["TENANT.MIGRATE.CANCEL", &m5]).await;
    assert!(e.contains("is completed: cannot cancel"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_and_resume_keep_capturing_changes() {
    let src = Server::start();
    let dst = Server::start();
    let mut a = admin(&src).await;
    setup(&src, "acme", 5000).await;
    let id = migrate(&mut a, "acme", &dst, &[]).await;
    wait_state(&mut a, &id, "live_sync", LONG).await;
    ok(&mut a, &["TENANT.MIGRATE.PAUSE", &id]).await;
    let e = err(&mut a, &["TENANT.MIGRATE.PAUSE", &id]).await;
    assert!(e.contains("is paused: cannot pause"), "{e}");
    let e = err(&mut a, &["TENANT.MIGRATE.CUTOVER", &id]).await;
    assert!(e.contains("is paused"), "{e}");

    // Changes while paused: overwrites, deletes, new keys, collection edits, expiries.
    let mut t = tenant_conn(&src, "acme", "pw").await;
    let mut cmds = Vec::new();
    for i in 0..1000 {
        cmds.push(s(&["SET", &format!("k{i}"), &format!("changed-{i}")]));
        cmds.push(s(&["DEL", &format!("k{}", 1000 + i)]));
        cmds.push(s(&["RPUSH", &format!("new{i}"), "a", "b"]));
    }
    cmds.push(s(&["HSET", "h", "c", "3"]));
    cmds.push(s(&["HDEL", "h", "a"]));
    cmds.push(s(&["EXPIRE", "k4000", "100000"]));
    load(&mut t, cmds).await;
    let st = status(&mut a, &id).await;
    assert_eq!(st["state"], "paused");
    let lag: u64 = st["lag_keys"].parse().unwrap();
    assert!(lag >= 3000, "changes are captured while paused: lag {lag}");
    assert!(st["lag_bytes"].parse::<u64>().unwrap() > 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st2 = status(&mut a, &id).await;
    assert_eq!(
        st2["lag_keys"], st["lag_keys"],
        "nothing shipped while paused"
    );

    ok(&mut a, &["TENANT.MIGRATE.RESUME", &id]).await;
    wait_for(&mut a, &id, LONG, "lag drained", |s| {
        s["state"] == "live_sync" && s["lag_keys"] == "0"
    })
    .await;
    let source_digest = digest_of(&ok(&mut a, &["TENANT.DIGEST", "acme"]).await);
    let r = fields(&ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id]).await);
    assert_eq!(r["status"], "completed");
    let v = fields(&ok(&mut a, &["TENANT.MIGRATE.VERIFY", &id]).await);
    assert_eq!(v["status"], "verified", "{v:?}");
    let mut d = admin(&dst).await;
    assert_eq!(
        digest_of(&ok(&mut d, &["TENANT.DIGEST", "acme"]).await),
        source_digest
    );
    let mut t = tenant_conn(&dst, "acme", "pw").await;
    assert_eq!(
        value::as_string(&ok(&mut t, &["GET", "k7"]).await).unwrap(),
        "changed-7"
    );
    assert!(matches!(
        ok(&mut t, &["GET", "k1007"]).await,
        ferrite_client::Frame::Null
    ));
    assert_eq!(
        value::as_int(&ok(&mut t, &["LLEN", "new999"]).await).unwrap(),
        2
    );
    assert_eq!(value::as_int(&ok(&mut t, &["HLEN", "h"]).await).unwrap(), 2);
    assert!(value::as_int(&ok(&mut t, &["TTL", "k4000"]).await).unwrap() > 90_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_migrating_tenant_needs_force_and_cancels_the_migration() {
    let src = Server::start();
    let dst = Server::start();
    setup(&src, "acme", 2000).await;
    let mut a = admin(&src).await;
    let id = migrate(&mut a, "acme", &dst, &[]).await;
    wait_state(&mut a, &id, "live_sync", LONG).await;
    let e = err(&mut a, &["TENANT.DELETE", "acme"]).await;
    assert!(e.contains("is being migrated") && e.contains(&id), "{e}");
    ok(&mut a, &["TENANT.DELETE", "acme", "FORCE"]).await;
    wait_state(&mut a, &id, "cancelled", SHORT).await;
    let mut d = admin(&dst).await;
    let deadline = std::time::Instant::now() + SHORT;
    while !err(&mut d, &["TENANT.INFO", "acme"])
        .await
        .contains("no such tenant")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the target kept the staged tenant"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
