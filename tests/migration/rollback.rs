//! The old source as a backup after a cutover: the new owner streams the tenant's changes back,
//! TENANT.MIGRATE.ROLLBACK hands the tenant back with a cutover's guarantees, FINALIZE and the
//! retention end the backup. Real processes; writers check every reply and every acknowledged
//! write; faults (a dropped link, SIGKILL of either side) never leave two writable owners.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrite_client::{ConnectOptions, Connection, value};

use crate::common::{Server, scrape};
use crate::proxy::Proxy;
use crate::util::*;
use crate::writers::{Model, check_model, writer};
use crate::{LONG, SHORT, now_ms};

async fn tenant_with_keys(server: &Server, tenant: &str, keys: usize) {
    let mut a = admin(server).await;
    ok(&mut a, &["TENANT.CREATE", tenant, "PASSWORD", "pw"]).await;
    let mut t = tenant_conn(server, tenant, "pw").await;
    load(
        &mut t,
        (0..keys)
            .map(|i| s(&["SET", &format!("k{i}"), &format!("value-{i}")]))
            .collect(),
    )
    .await;
}

/// What a client of `acme` gets from `server` when it tries to write there: refused with a
/// MOVED redirect at AUTH or at the command (the error text).
async fn refused_write(server: &Server) -> String {
    let opts = ConnectOptions::new(server.addr()).tenant("acme", "pw");
    let e = match Connection::connect(opts).await {
        Err(e) => e.to_string(),
        Ok(mut c) => err(&mut c, &["SET", "refused-write", "1"]).await,
    };
    e.to_lowercase()
}

/// Waits until the old source's /metrics shows `line` (series are refreshed on a timer).
async fn wait_metric(s: &Server, line: &str) {
    let deadline = Instant::now() + SHORT;
    loop {
        let page = scrape(s);
        if page.lines().any(|l| l == line) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no '{line}' in /metrics:\n{}",
            page.lines()
                .filter(|l| l.contains("backup"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// CUTOVER, asked again while writers keep the lag above the limit.
async fn cut_over(a: &mut Connection, id: &str) {
    let deadline = Instant::now() + LONG;
    loop {
        match cmd(a, &["TENANT.MIGRATE.CUTOVER", id]).await {
            Ok(r) => {
                assert_eq!(fields(&r)["status"], "completed");
                return;
            }
            Err(e)
                if (e.to_string().contains("cutover_max_lag")
                    || e.to_string().contains("still being copied"))
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cutover failed: {e}"),
        }
    }
}

async fn wait_backup(
    a: &mut Connection,
    id: &str,
    state: &str,
    timeout: Duration,
) -> HashMap<String, String> {
    wait_for(a, id, timeout, &format!("backup_state {state}"), |s| {
        s["backup_state"] == state
    })
    .await
}

/// Migrates `acme` from `src` to `to` (the new owner, or a proxy in front of it), cuts over and
/// waits until the backup streams.
async fn cut_over_with_backup(a: &mut Connection, to: &str, extra: &[&str]) -> String {
    let mut args = vec!["TENANT.MIGRATE", "acme", "TARGET", to];
    args.extend_from_slice(extra);
    let id = fields(&ok(a, &args).await)["migration_id"].clone();
    wait_state(a, &id, "live_sync", LONG).await;
    cut_over(a, &id).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollback_under_writers_keeps_every_acknowledged_write() {
    let src = Server::start();
    let dst = Server::start();
    tenant_with_keys(&src, "acme", 20_000).await;
    let mut a = admin(&src).await;
    let far = now_ms() + 86_400_000;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|n| tokio::spawn(writer(n, src.addr(), "acme", stop.clone(), far, false)))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // No RETENTION: the default (rollback_retention_secs = 3600) keeps a backup.
    let id = cut_over_with_backup(&mut a, &dst.addr(), &[]).await;
    let st = wait_backup(&mut a, &id, "streaming", LONG).await;
    assert_eq!(st["state"], "completed");
    assert!(!st["backup_migration"].is_empty(), "{st:?}");
    assert!(!st["backup_until"].is_empty(), "{st:?}");
    // The old source keeps answering MOVED while it is a backup.
    let e = refused_write(&src).await;
    assert!(e.contains("moved") && e.contains(&dst.addr()), "{e}");
    // The new owner knows the reverse stream as the backup of its import.
    let mut b = admin(&dst).await;
    let back = status(&mut b, &st["backup_migration"]).await;
    assert_eq!(back["backup_of"], st["import_id"], "{back:?}");
    assert_eq!(back["mode"], "continuous");

    // Writers go on against the new owner, then the tenant goes back under them.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let r = fields(&ok(&mut a, &["TENANT.MIGRATE.ROLLBACK", &id]).await);
    assert_eq!(r["status"], "rolled_back", "{r:?}");
    let downtime: f64 = r["downtime_ms"].parse().unwrap();
    assert!(downtime >= 0.0);
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::SeqCst);
    let mut models: Vec<(usize, HashMap<String, Model>)> = Vec::new();
    let mut redirects = 0;
    for (n, w) in writers.into_iter().enumerate() {
        let (model, ops, followed, _) = w.await.expect("writer");
        assert!(ops > 0, "writer {n} did nothing");
        redirects += followed;
        models.push((n, model));
    }
    assert!(
        redirects >= 8,
        "every writer followed the cutover and the rollback: {redirects}"
    );

    let st = status(&mut a, &id).await;
    assert_eq!(st["state"], "rolled_back", "{st:?}");
    assert_eq!(st["backup_state"], "rolled_back", "{st:?}");
    // Every acknowledged write, from before the cutover, on the new owner, and after the
    // rollback, is on the old source, key by key.
    let mut t = tenant_conn(&src, "acme", "pw").await;
    for (n, model) in &models {
        check_model(&mut t, *n, model).await;
    }
    for i in (0..20_000).step_by(997) {
        let v = ok(&mut t, &["GET", &format!("k{i}")]).await;
        assert_eq!(
            value::as_opt_string(&v).unwrap().as_deref(),
            Some(format!("value-{i}").as_str())
        );
    }
    // One writable owner: the new owner sends the tenant back.
    let e = refused_write(&dst).await;
    assert!(e.contains("moved") && e.contains(&src.addr()), "{e}");
    let info = fields(&ok(&mut b, &["TENANT.INFO", "acme"]).await);
    assert_eq!(info["state"], "moved");
    // A second ROLLBACK is refused, naming the state.
    let e = err(&mut a, &["TENANT.MIGRATE.ROLLBACK", &id]).await;
    assert!(e.contains("rolled_back"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn finalize_ends_the_stream_and_frees_the_copy() {
    let src = Server::start_with(&["--metrics-addr", "127.0.0.1:0"]);
    let dst = Server::start();
    tenant_with_keys(&src, "acme", 3000).await;
    let mut a = admin(&src).await;
    let id = cut_over_with_backup(&mut a, &dst.addr(), &[]).await;
    let st = wait_backup(&mut a, &id, "streaming", LONG).await;
    let back = st["backup_migration"].clone();
    wait_metric(
        &src,
        "ferrite_tenant_migration_backup_state{tenant=\"acme\",state=\"streaming\"} 1",
    )
    .await;
    assert!(scrape(&src).contains("ferrite_tenant_migration_backup_lag_seconds{tenant=\"acme\"}"));
    // Writes on the new owner reach the backup.
    let mut on_dst = tenant_conn(&dst, "acme", "pw").await;
    ok(&mut on_dst, &["SET", "after-cutover", "1"]).await;

    ok(&mut a, &["TENANT.MIGRATE.FINALIZE", &id]).await;
    let st = status(&mut a, &id).await;
    assert_eq!(st["backup_state"], "ended", "{st:?}");
    assert_eq!(st["state"], "completed");
    wait_metric(
        &src,
        "ferrite_tenant_migration_backup_state{tenant=\"acme\",state=\"ended\"} 1",
    )
    .await;
    // The stream on the new owner is over, and the copy here is gone (the frozen one too).
    let mut b = admin(&dst).await;
    let bs = status(&mut b, &back).await;
    assert_eq!(bs["state"], "cancelled", "{bs:?}");
    let info = fields(&ok(&mut a, &["TENANT.INFO", "acme"]).await);
    assert_eq!(
        (info["state"].as_str(), info["keys"].as_str()),
        ("moved", "0")
    );
    let e = err(&mut a, &["TENANT.MIGRATE.VERIFY", &id]).await;
    assert!(e.contains("released"), "{e}");
    // No more ROLLBACK; clients still go to the new owner, which keeps serving.
    let e = err(&mut a, &["TENANT.MIGRATE.ROLLBACK", &id]).await;
    assert!(e.contains("ended"), "{e}");
    let e = refused_write(&src).await;
    assert!(e.contains("moved") && e.contains(&dst.addr()), "{e}");
    ok(&mut on_dst, &["SET", "after-finalize", "1"]).await;
    let e = err(&mut a, &["TENANT.MIGRATE.FINALIZE", &id]).await;
    assert!(e.contains("ended"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_ends_the_backup_and_zero_turns_it_off() {
    let src = Server::start();
    let dst = Server::start();
    tenant_with_keys(&src, "acme", 500).await;
    let mut a = admin(&src).await;
    let id = cut_over_with_backup(&mut a, &dst.addr(), &["RETENTION", "3"]).await;
    let st = wait_backup(&mut a, &id, "ended", SHORT).await;
    assert_eq!(st["state"], "completed");
    let e = err(&mut a, &["TENANT.MIGRATE.ROLLBACK", &id]).await;
    assert!(e.contains("ended"), "{e}");
    let mut b = admin(&dst).await;
    let bs = status(&mut b, &st["backup_migration"]).await;
    assert_eq!(bs["state"], "cancelled", "{bs:?}");

    // RETENTION 0: no backup at all; ROLLBACK says so.
    tenant_with_keys(&src, "beta", 10).await;
    let args = [
        "TENANT.MIGRATE",
        "beta",
        "TARGET",
        &dst.addr(),
        "RETENTION",
        "0",
    ];
    let id = fields(&ok(&mut a, &args).await)["migration_id"].clone();
    wait_state(&mut a, &id, "live_sync", LONG).await;
    cut_over(&mut a, &id).await;
    let st = status(&mut a, &id).await;
    assert_eq!(st["backup_state"], "", "{st:?}");
    let e = err(&mut a, &["TENANT.MIGRATE.ROLLBACK", &id]).await;
    assert!(e.contains("no backup"), "{e}");
    // Bad RETENTION values are refused and start nothing.
    tenant_with_keys(&src, "gamma", 1).await;
    for bad in ["-1", "abc", "99999999"] {
        let args = [
            "TENANT.MIGRATE",
            "gamma",
            "TARGET",
            &dst.addr(),
            "RETENTION",
            bad,
        ];
        let e = err(&mut a, &args).await;
        assert!(e.starts_with("ERR") || e.contains("ERR"), "{e}");
    }
    let all = fields(&ok(&mut a, &["TENANT.MIGRATE.STATUS", "ALL"]).await);
    assert!(!all["migrations"].contains("gamma"), "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropped_link_breaks_the_backup_and_rollback_is_refused() {
    let src = Server::start();
    let dst = Server::start();
    tenant_with_keys(&src, "acme", 2000).await;
    let proxy = Proxy::start(dst.addr()).await;
    let mut a = admin(&src).await;
    let id = cut_over_with_backup(&mut a, &proxy.addr, &[]).await;
    wait_backup(&mut a, &id, "streaming", LONG).await;

    // The old source loses its link to the new owner.
    proxy.refuse(true);
    proxy.cut();
    let st = wait_backup(&mut a, &id, "broken", SHORT).await;
    assert!(!st["backup_error"].is_empty(), "{st:?}");
    let e = err(&mut a, &["TENANT.MIGRATE.ROLLBACK", &id]).await;
    assert!(e.contains("broken"), "{e}");
    // Never two writers: the new owner serves, the old source redirects.
    let mut on_dst = tenant_conn(&dst, "acme", "pw").await;
    ok(&mut on_dst, &["SET", "during-outage", "1"]).await;
    let e = refused_write(&src).await;
    assert!(e.contains("moved"), "{e}");

    // The link comes back: the backup streams again, with the write made meanwhile, and
    // ROLLBACK works.
    proxy.refuse(false);
    wait_backup(&mut a, &id, "streaming", SHORT).await;
    let r = fields(&ok(&mut a, &["TENANT.MIGRATE.ROLLBACK", &id]).await);
    assert_eq!(r["status"], "rolled_back");
    let mut t = tenant_conn(&src, "acme", "pw").await;
    let v = ok(&mut t, &["GET", "during-outage"]).await;
    assert_eq!(value::as_opt_string(&v).unwrap().as_deref(), Some("1"));
    let e = err(&mut on_dst, &["GET", "during-outage"])
        .await
        .to_lowercase();
    assert!(e.contains("moved") && e.contains(&src.addr()), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_new_owner_refuses_rollback_and_leaves_no_second_writer() {
    let src = Server::start_with(&["--metrics-addr", "127.0.0.1:0"]);
    let mut dst = Server::start();
    tenant_with_keys(&src, "acme", 2000).await;
    let mut a = admin(&src).await;
    let id = cut_over_with_backup(&mut a, &dst.addr(), &[]).await;
    wait_backup(&mut a, &id, "streaming", LONG).await;
    dst.kill();
    let st = wait_backup(&mut a, &id, "broken", SHORT).await;
    assert!(!st["backup_error"].is_empty(), "{st:?}");
    let e = err(&mut a, &["TENANT.MIGRATE.ROLLBACK", &id]).await;
    assert!(e.contains("broken"), "{e}");
    wait_metric(
        &src,
        "ferrite_tenant_migration_backup_state{tenant=\"acme\",state=\"broken\"} 1",
    )
    .await;
    // The old source does not take writes for a tenant it handed over.
    let e = refused_write(&src).await;
    assert!(e.contains("moved") && e.contains(&dst.addr()), "{e}");
    // FINALIZE still ends the broken backup and drops its copy here.
    ok(&mut a, &["TENANT.MIGRATE.FINALIZE", &id]).await;
    let st = status(&mut a, &id).await;
    assert_eq!(st["backup_state"], "ended", "{st:?}");
    let info = fields(&ok(&mut a, &["TENANT.INFO", "acme"]).await);
    assert_eq!(
        (info["state"].as_str(), info["keys"].as_str()),
        ("moved", "0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_old_source_leaves_the_new_owner_serving_with_the_backup_broken() {
    let mut src = Server::start();
    let dst = Server::start();
    tenant_with_keys(&src, "acme", 2000).await;
    let mut a = admin(&src).await;
    let id = cut_over_with_backup(&mut a, &dst.addr(), &[]).await;
    let st = wait_backup(&mut a, &id, "streaming", LONG).await;
    let (back, import) = (st["backup_migration"].clone(), st["import_id"].clone());
    drop(a);
    src.kill();
    let mut b = admin(&dst).await;
    let deadline = Instant::now() + SHORT;
    loop {
        let r = fields(&ok(&mut b, &["TENANT.IMPORT.BACKUP", &import, "STATUS"]).await);
        if r["backup_state"] == "broken" {
            assert!(!r["backup_error"].is_empty(), "{r:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backup never reported broken: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bs = status(&mut b, &back).await;
    assert_eq!(bs["backup_of"], import);
    // The new owner keeps serving its tenant.
    let mut on_dst = tenant_conn(&dst, "acme", "pw").await;
    ok(&mut on_dst, &["SET", "after-kill", "1"]).await;
    let v = ok(&mut on_dst, &["GET", "k7"]).await;
    assert_eq!(
        value::as_opt_string(&v).unwrap().as_deref(),
        Some("value-7")
    );
    // A new migration of the tenant from the new owner ends the backup (it held the claim).
    let third = Server::start();
    let args = ["TENANT.MIGRATE", "acme", "TARGET", &third.addr()];
    let next = fields(&ok(&mut b, &args).await)["migration_id"].clone();
    let bs = status(&mut b, &back).await;
    assert_eq!(bs["state"], "cancelled", "{bs:?}");
    wait_state(&mut b, &next, "live_sync", LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_without_a_shared_token_get_no_backup_and_say_why() {
    let src = Server::start();
    // The target takes imports with its requirepass (AUTH on TENANT.MIGRATE), and has no token
    // to log in to the source with.
    let dst = Server::start_with(&["--requirepass", "secret"]);
    tenant_with_keys(&src, "acme", 100).await;
    let mut a = admin(&src).await;
    let id = cut_over_with_backup(&mut a, &dst.addr(), &["AUTH", "secret"]).await;
    let st = wait_backup(&mut a, &id, "ended", SHORT).await;
    assert!(
        st["backup_error"].contains("shared tenancy.migration.token"),
        "{st:?}"
    );
    let e = err(&mut a, &["TENANT.MIGRATE.ROLLBACK", &id]).await;
    assert!(e.contains("ended"), "{e}");
    let e = refused_write(&src).await;
    assert!(e.contains("moved") && e.contains(&dst.addr()), "{e}");
}
