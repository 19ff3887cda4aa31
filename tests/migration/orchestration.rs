//! Many migrations as one operation: priorities (queue order and bandwidth share),
//! dependencies (AFTER), groups, approvals and the aggregate view, on real servers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ferrite_client::{Connection, value};

use crate::common::Server;
use crate::util::*;
use crate::{LONG, SHORT};

/// A tenant with `keys` keys of `size`-byte values.
async fn tenant_with(server: &Server, tenant: &str, keys: usize, size: usize) {
    let mut a = admin(server).await;
    ok(&mut a, &["TENANT.CREATE", tenant, "PASSWORD", "pw"]).await;
    let mut t = tenant_conn(server, tenant, "pw").await;
    let filler = "x".repeat(size);
    load(
        &mut t,
        (0..keys)
            .map(|i| s(&["SET", &format!("k{i}"), &format!("{i}-{filler}")]))
            .collect(),
    )
    .await;
}

async fn config_set(a: &mut Connection, key: &str, value: &str) {
    ok(a, &["CONFIG", "SET", key, value]).await;
}

/// The migrations STATUS ALL lists.
async fn count_all(a: &mut Connection) -> usize {
    let (totals, members) = group_reply(&ok(a, &["TENANT.MIGRATE.STATUS", "ALL"]).await);
    assert_eq!(totals["migrations_total"], members.len().to_string());
    members.len()
}

/// VERIFY must find the target equal to the source's frozen copy.
async fn verified(a: &mut Connection, id: &str) {
    let v = fields(&ok(a, &["TENANT.MIGRATE.VERIFY", id]).await);
    assert_eq!(v["status"], "verified", "{id}: {v:?}");
}

/// Asserts a migration stays in `state` for `d` (it is not started by anything meanwhile).
async fn stays(a: &mut Connection, id: &str, state: &str, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        let st = status(a, id).await;
        assert_eq!(st["state"], state, "{id}: {st:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_queue_starts_higher_priorities_first() {
    let src = Server::start();
    let dst = Server::start();
    let mut a = admin(&src).await;
    config_set(&mut a, "tenancy.migration.max_concurrent", "1").await;
    for t in ["t0", "low", "normal", "high", "late"] {
        tenant_with(&src, t, 300, 20).await;
    }
    let m0 = migrate(&mut a, "t0", &dst, &[]).await;
    let st = wait_state(&mut a, &m0, "live_sync", LONG).await;
    assert_eq!(st["priority"], "normal", "the default priority: {st:?}");

    // Bad input is refused and creates nothing.
    let before = count_all(&mut a).await;
    let e = err(
        &mut a,
        &[
            "TENANT.MIGRATE",
            "low",
            "TARGET",
            &dst.addr(),
            "PRIORITY",
            "urgent",
        ],
    )
    .await;
    assert!(e.contains("invalid PRIORITY 'urgent'"), "{e}");
    let e = err(
        &mut a,
        &["TENANT.MIGRATE", "low", "TARGET", &dst.addr(), "PRIORITY"],
    )
    .await;
    assert!(e.contains("syntax"), "{e}");
    assert_eq!(count_all(&mut a).await, before);

    let low = migrate(&mut a, "low", &dst, &["PRIORITY", "low"]).await;
    let normal = migrate(&mut a, "normal", &dst, &["PRIORITY", "NORMAL"]).await;
    let high = migrate(&mut a, "high", &dst, &["PRIORITY", "high"]).await;
    let late = migrate(&mut a, "late", &dst, &[]).await;
    // Raised while queued: ahead of the older normal one, behind the older high one.
    ok(
        &mut a,
        &["TENANT.MIGRATE.UPDATE", &late, "PRIORITY", "high"],
    )
    .await;
    let e = err(&mut a, &["TENANT.MIGRATE.UPDATE", &late, "PRIORITY", "max"]).await;
    assert!(e.contains("invalid PRIORITY"), "{e}");
    assert_eq!(status(&mut a, &late).await["priority"], "high");
    // Their places in the queue: high (oldest first), then normal, then low.
    for (m, place) in [(&high, "1"), (&late, "2"), (&normal, "3"), (&low, "4")] {
        assert_eq!(status(&mut a, m).await["queue_position"], place, "{m}");
    }
    assert_eq!(status(&mut a, &m0).await["queue_position"], "", "running");
    for m in [&low, &normal, &high, &late] {
        assert_eq!(status(&mut a, m).await["state"], "queued");
    }

    let mut running = m0.clone();
    for next in [&high, &late, &normal, &low] {
        ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &running]).await;
        wait_state(&mut a, next, "live_sync", LONG).await;
        // Only the next one started: every other unfinished one still waits.
        for other in [&low, &normal, &high, &late] {
            let st = status(&mut a, other).await;
            if other != next && st["state"] != "completed" {
                assert_eq!(st["state"], "queued", "{other} after {next}: {st:?}");
            }
        }
        running = next.clone();
    }
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &running]).await;
    for m in [&m0, &high, &late, &normal, &low] {
        verified(&mut a, m).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn running_migrations_share_the_bandwidth_by_weight() {
    let src = Server::start();
    let dst = Server::start();
    let mut a = admin(&src).await;
    // 2 MB per tenant: at 150 KB/s in all, neither finishes its snapshot within the window.
    tenant_with(&src, "big-high", 10_000, 200).await;
    tenant_with(&src, "big-low", 10_000, 200).await;
    config_set(
        &mut a,
        "tenancy.migration.max_bandwidth_bytes_per_sec",
        "150000",
    )
    .await;
    let opts = |p: &'static str| ["PRIORITY", p, "BATCH_SIZE", "20"];
    let high = migrate(&mut a, "big-high", &dst, &opts("high")).await;
    let low = migrate(&mut a, "big-low", &dst, &opts("low")).await;
    wait_for(&mut a, &low, SHORT, "the low one to ship", |s| {
        s["bytes_sent"] != "0"
    })
    .await;
    let h = status(&mut a, &high).await;
    let l = status(&mut a, &low).await;
    assert_eq!(h["rate_limit"], "120000", "4/5 of the total: {h:?}");
    assert_eq!(l["rate_limit"], "30000", "1/5 of the total: {l:?}");

    let sent = |s: &HashMap<String, String>| s["bytes_sent"].parse::<u64>().unwrap_or(0);
    let (h0, l0) = (sent(&h), sent(&l));
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (h1, l1) = (
        sent(&status(&mut a, &high).await),
        sent(&status(&mut a, &low).await),
    );
    let secs = started.elapsed().as_secs_f64();
    let (hr, lr) = ((h1 - h0) as f64 / secs, (l1 - l0) as f64 / secs);
    for (m, st) in [(&high, "high"), (&low, "low")] {
        let s = status(&mut a, m).await;
        assert_eq!(s["state"], "syncing", "{st} still copying: {s:?}");
    }
    // Each stays near its share (one batch of slack either way), and high gets ~4× low.
    assert!(hr < 150_000.0 && hr > 60_000.0, "high: {hr:.0} B/s");
    assert!(lr < 60_000.0 && lr > 10_000.0, "low: {lr:.0} B/s");
    let ratio = hr / lr;
    assert!((2.5..6.5).contains(&ratio), "high/low = {ratio:.2}");

    // Lifting the limit lets both finish; both copies are whole.
    config_set(&mut a, "tenancy.migration.max_bandwidth_bytes_per_sec", "0").await;
    assert_eq!(status(&mut a, &high).await["rate_limit"], "0");
    for m in [&high, &low] {
        wait_state(&mut a, m, "live_sync", LONG).await;
        ok(&mut a, &["TENANT.MIGRATE.CUTOVER", m]).await;
        verified(&mut a, m).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_waits_for_its_dependencies_and_refuses_cycles() {
    let src = Server::start();
    let dst = Server::start();
    let mut a = admin(&src).await;
    for t in ["ref", "customers", "orders", "stray"] {
        tenant_with(&src, t, 500, 20).await;
    }
    let reference = migrate(&mut a, "ref", &dst, &[]).await;
    wait_state(&mut a, &reference, "live_sync", LONG).await;

    // Unknown ids are refused and create nothing.
    let before = count_all(&mut a).await;
    let e = err(
        &mut a,
        &[
            "TENANT.MIGRATE",
            "stray",
            "TARGET",
            &dst.addr(),
            "AFTER",
            "mig_nope",
        ],
    )
    .await;
    assert!(e.contains("no such migration 'mig_nope'"), "{e}");
    let e = err(
        &mut a,
        &["TENANT.MIGRATE", "stray", "TARGET", &dst.addr(), "AFTER"],
    )
    .await;
    assert!(e.contains("AFTER needs at least one"), "{e}");
    assert_eq!(count_all(&mut a).await, before);

    let customers = migrate(&mut a, "customers", &dst, &["AFTER", &reference]).await;
    let orders = migrate(
        &mut a,
        "orders",
        &dst,
        &["AFTER", &reference, &customers, "PARALLEL", "2"],
    )
    .await;
    let st = wait_state(&mut a, &customers, "waiting", SHORT).await;
    assert_eq!(st["waiting_for"], reference, "{st:?}");
    let st = wait_state(&mut a, &orders, "waiting", SHORT).await;
    assert_eq!(st["waiting_for"], format!("{reference} {customers}"));
    assert_eq!(
        st["parallel"], "2",
        "options after AFTER still apply: {st:?}"
    );

    // customers → orders → customers would never start.
    let e = err(
        &mut a,
        &["TENANT.MIGRATE.UPDATE", &customers, "AFTER", &orders],
    )
    .await;
    assert!(e.contains("cycle"), "{e}");
    assert!(
        e.contains(&format!("{customers} → {orders} → {customers}")),
        "{e}"
    );
    let e = err(
        &mut a,
        &["TENANT.MIGRATE.UPDATE", &customers, "AFTER", &customers],
    )
    .await;
    assert!(e.contains("cycle"), "{e}");
    let e = err(
        &mut a,
        &["TENANT.MIGRATE.UPDATE", &customers, "AFTER", "mig_nope"],
    )
    .await;
    assert!(e.contains("no such migration"), "{e}");
    // Refusals changed nothing.
    assert_eq!(status(&mut a, &customers).await["waiting_for"], reference);
    let e = err(
        &mut a,
        &["TENANT.MIGRATE.UPDATE", &reference, "AFTER", &orders],
    )
    .await;
    assert!(
        e.contains(&format!("{reference} → {orders} → {reference}")),
        "{e}"
    );

    stays(&mut a, &customers, "waiting", Duration::from_millis(500)).await;
    // The default (after_requires = completed): a cutover releases the dependents.
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &reference]).await;
    wait_state(&mut a, &customers, "live_sync", LONG).await;
    let st = status(&mut a, &orders).await;
    assert_eq!(st["state"], "waiting");
    assert_eq!(st["waiting_for"], customers, "{st:?}");
    // Only a migration still waiting takes new dependencies.
    let e = err(
        &mut a,
        &["TENANT.MIGRATE.UPDATE", &customers, "AFTER", &reference],
    )
    .await;
    assert!(e.contains("only while waiting"), "{e}");
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &customers]).await;
    wait_state(&mut a, &orders, "live_sync", LONG).await;
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &orders]).await;
    for m in [&reference, &customers, &orders] {
        verified(&mut a, m).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_dependency_fails_its_dependents_with_the_reason() {
    let src = Server::start();
    let dst = Server::start();
    let mut a = admin(&src).await;
    for t in ["base", "mid", "top"] {
        tenant_with(&src, t, 300, 20).await;
    }
    let base = migrate(&mut a, "base", &dst, &[]).await;
    wait_state(&mut a, &base, "live_sync", LONG).await;
    let mid = migrate(&mut a, "mid", &dst, &["AFTER", &base]).await;
    let top = migrate(&mut a, "top", &dst, &["AFTER", &mid]).await;
    wait_state(&mut a, &top, "waiting", SHORT).await;
    ok(&mut a, &["TENANT.MIGRATE.CANCEL", &base]).await;
    let st = wait_state(&mut a, &mid, "failed", SHORT).await;
    assert_eq!(st["error"], format!("dependency {base} was cancelled"));
    let st = wait_state(&mut a, &top, "failed", SHORT).await;
    assert_eq!(
        st["error"],
        format!("dependency {mid} failed: dependency {base} was cancelled")
    );
    // Nothing was staged for them, and a failed dependency cannot be named any more.
    let mut d = admin(&dst).await;
    for t in ["mid", "top"] {
        let e = err(&mut d, &["TENANT.INFO", t]).await;
        assert!(e.contains("no such tenant"), "{t}: {e}");
    }
    let e = err(
        &mut a,
        &[
            "TENANT.MIGRATE",
            "base",
            "TARGET",
            &dst.addr(),
            "AFTER",
            &mid,
        ],
    )
    .await;
    assert!(e.contains("failed: it will never complete"), "{e}");
    // The tenants stayed here, writable.
    let mut t = tenant_conn(&src, "mid", "pw").await;
    ok(&mut t, &["SET", "still", "here"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_requires_verified_waits_for_verify() {
    let src = Server::start();
    let dst = Server::start();
    let mut a = admin(&src).await;
    let e = err(
        &mut a,
        &["CONFIG", "SET", "tenancy.migration.after_requires", "done"],
    )
    .await;
    assert!(e.contains("not one of: completed, verified"), "{e}");
    config_set(&mut a, "tenancy.migration.after_requires", "verified").await;
    for t in ["first", "second"] {
        tenant_with(&src, t, 300, 20).await;
    }
    let first = migrate(&mut a, "first", &dst, &[]).await;
    wait_state(&mut a, &first, "live_sync", LONG).await;
    let second = migrate(&mut a, "second", &dst, &["AFTER", &first]).await;
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &first]).await;
    stays(&mut a, &second, "waiting", Duration::from_millis(700)).await;
    verified(&mut a, &first).await;
    wait_state(&mut a, &second, "live_sync", LONG).await;
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &second]).await;
    verified(&mut a, &second).await;
}

/// A group reply: the totals as text, and the members' STATUS.
fn group_reply(
    f: &ferrite_client::Frame,
) -> (HashMap<String, String>, Vec<HashMap<String, String>>) {
    let pairs = value::as_pairs(f).expect("map");
    let mut totals = HashMap::new();
    let mut members = Vec::new();
    for (k, v) in pairs {
        if k == "migrations" {
            members = value::as_array(&v)
                .expect("members")
                .iter()
                .map(fields)
                .collect();
        } else {
            let text = value::as_string(&v)
                .or_else(|_| value::as_int(&v).map(|n| n.to_string()))
                .unwrap_or_default();
            totals.insert(k, text);
        }
    }
    (totals, members)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_report_totals_and_roll_out_in_phases() {
    let src = Server::start();
    let dst = Server::start();
    let mut a = admin(&src).await;
    for (t, keys) in [("eu", 400), ("us", 500), ("apac", 600), ("solo", 100)] {
        tenant_with(&src, t, keys, 20).await;
    }
    let e = err(
        &mut a,
        &[
            "TENANT.MIGRATE",
            "eu",
            "TARGET",
            &dst.addr(),
            "GROUP",
            "wave one",
        ],
    )
    .await;
    assert!(e.contains("invalid GROUP"), "{e}");
    let eu = migrate(&mut a, "eu", &dst, &["GROUP", "wave1"]).await;
    let us = migrate(&mut a, "us", &dst, &["GROUP", "wave1"]).await;
    let apac = migrate(&mut a, "apac", &dst, &["GROUP", "wave1"]).await;
    let solo = migrate(&mut a, "solo", &dst, &[]).await;
    for m in [&eu, &us, &apac, &solo] {
        wait_state(&mut a, m, "live_sync", LONG).await;
    }
    let (totals, members) =
        group_reply(&ok(&mut a, &["TENANT.MIGRATE.STATUS", "GROUP", "wave1"]).await);
    assert_eq!(totals["group"], "wave1");
    assert_eq!(totals["migrations_total"], "3", "{totals:?}");
    assert_eq!(totals["state_live_sync"], "3", "{totals:?}");
    assert_eq!(totals["state_queued"], "0");
    assert_eq!(totals["keys_total"], "1500", "{totals:?}");
    assert_eq!(totals["keys_synced"], "1500", "{totals:?}");
    assert_eq!(totals["keys_remaining"], "0", "{totals:?}");
    let ids: Vec<&str> = members.iter().map(|m| m["migration_id"].as_str()).collect();
    assert_eq!(ids, [eu.as_str(), us.as_str(), apac.as_str()]);
    assert!(members.iter().all(|m| m["group"] == "wave1"));
    let e = err(&mut a, &["TENANT.MIGRATE.STATUS", "GROUP", "nope"]).await;
    assert!(e.contains("no migration in group 'nope'"), "{e}");

    // PAUSE and RESUME by group touch only the group.
    let r = fields(&ok(&mut a, &["TENANT.MIGRATE.PAUSE", "GROUP", "wave1"]).await);
    assert_eq!(r.len(), 3);
    assert!(r.values().all(|v| v == "OK"), "{r:?}");
    for m in [&eu, &us, &apac] {
        assert_eq!(status(&mut a, m).await["state"], "paused");
    }
    assert_eq!(status(&mut a, &solo).await["state"], "live_sync");
    let r = fields(&ok(&mut a, &["TENANT.MIGRATE.RESUME", "GROUP", "wave1"]).await);
    assert!(r.values().all(|v| v == "OK"), "{r:?}");
    for m in [&eu, &us, &apac] {
        wait_state(&mut a, m, "live_sync", SHORT).await;
    }

    // Phased: a member that cannot cut over stops the rollout; the ones after it are left.
    ok(&mut a, &["TENANT.MIGRATE.PAUSE", &us]).await;
    let r = fields(&ok(&mut a, &["TENANT.MIGRATE.CUTOVER", "GROUP", "wave1"]).await);
    assert!(r[&eu].starts_with("completed"), "{r:?}");
    assert!(r[&us].contains("is paused: cannot cut over"), "{r:?}");
    assert!(
        r[&apac].contains(&format!("the rollout stopped at {us}")),
        "{r:?}"
    );
    assert_eq!(status(&mut a, &apac).await["state"], "live_sync");
    ok(&mut a, &["TENANT.MIGRATE.RESUME", &us]).await;
    wait_state(&mut a, &us, "live_sync", SHORT).await;
    let r = fields(&ok(&mut a, &["TENANT.MIGRATE.CUTOVER", "GROUP", "wave1"]).await);
    assert_eq!(r[&eu], "already completed", "{r:?}");
    assert!(
        r[&us].starts_with("completed") && r[&apac].starts_with("completed"),
        "{r:?}"
    );
    let (totals, _) = group_reply(&ok(&mut a, &["TENANT.MIGRATE.STATUS", "GROUP", "wave1"]).await);
    assert_eq!(totals["state_completed"], "3", "{totals:?}");
    assert_eq!(
        totals["estimated_completion"], "",
        "nothing left: {totals:?}"
    );
    for m in [&eu, &us, &apac] {
        verified(&mut a, m).await;
    }
    // CANCEL by group answers for each member (completed ones refuse), and solo is untouched.
    let r = fields(&ok(&mut a, &["TENANT.MIGRATE.CANCEL", "GROUP", "wave1"]).await);
    assert!(r.values().all(|v| v.contains("cannot cancel")), "{r:?}");
    assert_eq!(status(&mut a, &solo).await["state"], "live_sync");
    let e = err(&mut a, &["TENANT.MIGRATE.PAUSE", "GROUP"]).await;
    assert!(
        e.contains("syntax") || e.contains("no such migration"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approval_shows_the_plan_and_records_who_decided() {
    // Info level: the test reads the log.
    let src = Server::start_with(&["--log-level", "info"]);
    let dst = Server::start();
    let mut a = admin(&src).await;
    for t in ["asked", "rejected", "by-config"] {
        tenant_with(&src, t, 300, 20).await;
    }
    let asked = migrate(&mut a, "asked", &dst, &["APPROVAL"]).await;
    let st = wait_for(&mut a, &asked, SHORT, "the plan", |s| {
        s["state"] == "awaiting_approval" && s["plan"].contains("result")
    })
    .await;
    assert_eq!(st["approval"], "pending");
    assert!(st["plan"].contains("connectivity: ok"), "{st:?}");
    assert!(st["plan"].contains("capacity: ok"), "{st:?}");
    assert!(st["plan"].ends_with("result: ok"), "{st:?}");
    stays(
        &mut a,
        &asked,
        "awaiting_approval",
        Duration::from_millis(500),
    )
    .await;
    let mut d = admin(&dst).await;
    let e = err(&mut d, &["TENANT.INFO", "asked"]).await;
    assert!(
        e.contains("no such tenant"),
        "nothing staged before approval: {e}"
    );

    ok(&mut a, &["CLIENT", "SETNAME", "alice"]).await;
    ok(&mut a, &["TENANT.MIGRATE.APPROVE", &asked]).await;
    let st = wait_state(&mut a, &asked, "live_sync", LONG).await;
    assert_eq!(st["approval"], "approved");
    assert!(st["approval_by"].starts_with("alice@127.0.0.1:"), "{st:?}");
    assert!(!st["approval_at"].is_empty(), "{st:?}");
    let e = err(&mut a, &["TENANT.MIGRATE.APPROVE", &asked]).await;
    assert!(e.contains("is live_sync: cannot approve"), "{e}");
    assert!(
        src.log()
            .iter()
            .any(|l| l.contains("approval decided") && l.contains("alice@")),
        "the decision is logged"
    );

    // The setting asks it of every migration; REJECT ends it, saying who and why.
    config_set(&mut a, "tenancy.migration.require_approval", "yes").await;
    let rejected = migrate(&mut a, "rejected", &dst, &[]).await;
    wait_state(&mut a, &rejected, "awaiting_approval", SHORT).await;
    let dependent = migrate(&mut a, "by-config", &dst, &["AFTER", &rejected]).await;
    wait_state(&mut a, &dependent, "waiting", SHORT).await;
    ok(
        &mut a,
        &[
            "TENANT.MIGRATE.REJECT",
            &rejected,
            "wrong maintenance window",
        ],
    )
    .await;
    let st = wait_state(&mut a, &rejected, "cancelled", SHORT).await;
    assert_eq!(st["approval"], "rejected");
    assert_eq!(st["approval_reason"], "wrong maintenance window");
    assert!(st["approval_by"].starts_with("alice@"), "{st:?}");
    let e = err(&mut a, &["TENANT.MIGRATE.APPROVE", &rejected]).await;
    assert!(e.contains("cancelled"), "{e}");
    let e = err(&mut d, &["TENANT.INFO", "rejected"]).await;
    assert!(e.contains("no such tenant"), "{e}");
    // Its dependent fails, saying who rejected it and why.
    let st = wait_state(&mut a, &dependent, "failed", SHORT).await;
    assert!(
        st["error"].starts_with(&format!("dependency {rejected} was rejected by alice@")),
        "{st:?}"
    );
    assert!(
        st["error"].ends_with(": wrong maintenance window"),
        "{st:?}"
    );
    let e = err(&mut a, &["TENANT.MIGRATE.REJECT", &asked, "a", "b"]).await;
    assert!(e.contains("syntax"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contention_slows_the_lowest_priority_first_and_lets_go_highest_first() {
    // Info level: the test reads the log.
    let src = Server::start_with(&["--log-level", "info"]);
    let dst = Server::start();
    let mut a = admin(&src).await;
    tenant_with(&src, "bulk-low", 2000, 50).await;
    tenant_with(&src, "bulk-high", 2000, 50).await;
    tenant_with(&src, "busy", 10, 10).await;
    let low = migrate(&mut a, "bulk-low", &dst, &["PRIORITY", "low"]).await;
    let high = migrate(&mut a, "bulk-high", &dst, &["PRIORITY", "high"]).await;
    for m in [&low, &high] {
        wait_state(&mut a, m, "live_sync", LONG).await;
    }
    // The defaults: on, and an idle server is far below them.
    let (totals, _) = group_reply(&ok(&mut a, &["TENANT.MIGRATE.STATUS", "ALL"]).await);
    assert_eq!(totals["throttle_low"], "100%", "{totals:?}");
    assert_eq!(status(&mut a, &low).await["throttle"], "100%");
    let e = err(
        &mut a,
        &[
            "CONFIG",
            "SET",
            "tenancy.migration.contention.cpu_percent",
            "150",
        ],
    )
    .await;
    assert!(e.contains("at most 100"), "{e}");

    // Another tenant's commands give the server a p99 to measure (at least 100 per window).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pinger = {
        let stop = stop.clone();
        let mut c = tenant_conn(&src, "busy", "pw").await;
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(120);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < until {
                let _ = c.cmd(&["GET", "k1"]).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    // Any latency is over a threshold of a nanosecond.
    config_set(&mut a, "tenancy.migration.contention.p99_ms", "0.000001").await;
    let st = wait_for(&mut a, &low, SHORT, "low to be slowed down", |s| {
        s["throttle"] != "100%"
    })
    .await;
    assert!(
        st["rate_limit"] != "0",
        "a throttled migration has a limit: {st:?}"
    );
    assert_eq!(status(&mut a, &high).await["throttle"], "100%", "low first");
    wait_for(&mut a, &low, SHORT, "low at its minimum", |s| {
        s["throttle"] == "3.1%"
    })
    .await;
    wait_for(&mut a, &high, SHORT, "then high", |s| {
        s["throttle"] != "100%"
    })
    .await;
    let (totals, _) = group_reply(&ok(&mut a, &["TENANT.MIGRATE.STATUS", "ALL"]).await);
    assert!(!totals["load_p99_ms"].is_empty(), "{totals:?}");
    assert!(
        src.log()
            .iter()
            .any(|l| l.contains("contention: slowing migrations down")),
        "logged"
    );

    // Back under 70% of a generous threshold: high recovers first, then low, step by step.
    config_set(&mut a, "tenancy.migration.contention.p99_ms", "10000").await;
    wait_for(&mut a, &high, SHORT, "high back", |s| {
        s["throttle"] == "100%"
    })
    .await;
    assert_ne!(status(&mut a, &low).await["throttle"], "100%", "high first");
    wait_for(&mut a, &low, SHORT, "low back", |s| s["throttle"] == "100%").await;

    // Switched off, every factor is back to 1 at once.
    config_set(&mut a, "tenancy.migration.contention.p99_ms", "0.000001").await;
    wait_for(&mut a, &low, SHORT, "slowed again", |s| {
        s["throttle"] != "100%"
    })
    .await;
    config_set(&mut a, "tenancy.migration.contention.enabled", "no").await;
    wait_for(&mut a, &low, SHORT, "released", |s| s["throttle"] == "100%").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = pinger.await;

    for m in [&low, &high] {
        ok(&mut a, &["TENANT.MIGRATE.CUTOVER", m]).await;
        verified(&mut a, m).await;
    }
}
