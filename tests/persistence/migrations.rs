//! Migration records across restarts of the source (docs/persistence.md, "Tenants and
//! migrations"; docs/migration.md, "Restarts"): a running migration comes back failed and RESUME
//! starts it again; queued, waiting, awaiting-approval and grouped migrations come back as they
//! were; an incremental migration's moved patterns stay moved; the history is bounded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::Server;
use crate::util::*;

fn migrate(c: &mut redis::Connection, args: &[&str]) -> String {
    let mut all = vec!["TENANT.MIGRATE"];
    all.extend_from_slice(args);
    let reply = map_of(ok(c, &all));
    text(reply.get("migration_id").expect("migration_id"))
}

fn wait_state(c: &mut redis::Connection, id: &str, want: &str, within: Duration) {
    let mut last = BTreeMap::new();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        last = migration_status(c, id);
        if last.get("state").map(String::as_str) == Some(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{id} never reached {want}: {last:?}");
}

fn fill(s: &Server, tenant: &str, keys: usize) {
    let mut t = tenant_conn(s, tenant, "pw");
    let mut p = redis::pipe();
    for i in 0..keys {
        p.cmd("SET")
            .arg(format!("k{i}"))
            .arg(format!("v{i}"))
            .ignore();
    }
    let _: () = p.query(&mut t).unwrap();
}

fn config(dir: &std::path::Path, body: &str) -> String {
    let path = dir.join("ferrite-test.toml");
    std::fs::write(&path, body).unwrap();
    path.to_string_lossy().into_owned()
}

/// A live migration in live sync; its source is SIGKILLed and started again: STATUS says
/// failed with the reason; RESUME starts it again (a key deleted after the restart proves the
/// target's stale import was not reused); under 4 concurrent writers it reaches live sync, cuts
/// over, and the target holds every acknowledged write, checked key by key.
#[test]
fn a_running_migration_killed_with_its_source_resumes_from_scratch_and_completes() {
    let src_dir = data_dir();
    let dst_dir = data_dir();
    let src = Server::start_in(src_dir.path(), &[]);
    let dst = Server::start_in(dst_dir.path(), &[]);
    let mut a = src.conn();
    ok(&mut a, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]);
    fill(&src, "acme", 3000);
    let id = migrate(
        &mut a,
        &[
            "acme",
            "TARGET",
            &dst.addr(),
            "PARALLEL",
            "2",
            "BATCH_SIZE",
            "50",
            "GROUP",
            "wave",
        ],
    );
    wait_state(&mut a, &id, "live_sync", Duration::from_secs(30));
    drop(a);
    sigkill(src);

    let src = Server::start_in(src_dir.path(), &[]);
    let mut a = src.conn();
    let s = migration_status(&mut a, &id);
    assert_eq!(s["state"], "failed", "{s:?}");
    assert!(
        s["error"].contains("interrupted by a restart") && s["error"].contains("RESUME"),
        "{s:?}"
    );
    // Changed after the restart: the target's stale import still holds k0.
    let mut t = tenant_conn(&src, "acme", "pw");
    ok(&mut t, &["DEL", "k0"]);

    // 4 writers, each on its own keys, remembering the last acknowledged value of each.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let stop = stop.clone();
            let port = src.port;
            std::thread::spawn(move || {
                let url = format!("redis://acme:pw@127.0.0.1:{port}/");
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                let mut acked: BTreeMap<String, String> = BTreeMap::new();
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let key = format!("w{w}:{}", n % 200);
                    let val = format!("{n}");
                    if cmd(&mut c, &["SET", &key, &val]).is_ok() {
                        acked.insert(key, val);
                    }
                    n += 1;
                }
                acked
            })
        })
        .collect();
    ok(&mut a, &["TENANT.MIGRATE.RESUME", &id]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = migration_status(&mut a, &id);
        if s["state"] == "live_sync" {
            break;
        }
        assert!(Instant::now() < deadline, "never live again: {s:?}");
        assert_ne!(s["state"], "failed", "{s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeMap::new();
    for w in writers {
        acked.extend(w.join().unwrap());
    }
    assert!(acked.len() > 100, "the writers wrote: {}", acked.len());
    let s = migration_status(&mut a, &id);
    assert_eq!(s["group"], "wave", "{s:?}");
    assert_eq!(s["parallel"], "2", "original settings: {s:?}");
    let cut = map_of(ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id, "FORCE"]));
    assert_eq!(text(&cut["status"]), "completed");

    let mut b = tenant_conn(&dst, "acme", "pw");
    for i in 1..3000 {
        let v: Option<String> = redis::cmd("GET")
            .arg(format!("k{i}"))
            .query(&mut b)
            .unwrap();
        assert_eq!(v.as_deref(), Some(format!("v{i}").as_str()), "k{i}");
    }
    for (k, v) in &acked {
        let got: Option<String> = redis::cmd("GET").arg(k).query(&mut b).unwrap();
        assert_eq!(got.as_deref(), Some(v.as_str()), "{k}");
    }
    let k0: Option<String> = redis::cmd("GET").arg("k0").query(&mut b).unwrap();
    assert_eq!(k0, None, "a clean copy: the stale import was dropped");
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut b).unwrap();
    assert_eq!(dbsize as usize, 2999 + acked.len());
}

/// Pending migrations after a clean SHUTDOWN and a SIGKILL: a queued one (priority, group), one
/// awaiting approval (with its plan) and one waiting for a dependency come back as they were;
/// the dependency, interrupted by the restart, keeps its dependent waiting until RESUME.
#[test]
fn queued_waiting_and_awaiting_approval_migrations_survive_restarts() {
    let conf = data_dir();
    let cfg = config(
        conf.path(),
        "[tenancy.migration]\nmax_concurrent = 1\ncutover_max_lag = 100000\n",
    );
    let src_dir = data_dir();
    let dst_dir = data_dir();
    let mut src = Server::start_in(src_dir.path(), &["--config", &cfg]);
    let dst = Server::start_in(dst_dir.path(), &[]);
    let mut a = src.conn();
    for t in ["ta", "tb", "tc", "td"] {
        ok(&mut a, &["TENANT.CREATE", t, "PASSWORD", "pw"]);
        fill(&src, t, 100);
    }
    let dst_addr = dst.addr();
    let running = migrate(&mut a, &["ta", "TARGET", &dst_addr]);
    wait_state(&mut a, &running, "live_sync", Duration::from_secs(30));
    let queued = migrate(
        &mut a,
        &["tb", "TARGET", &dst_addr, "PRIORITY", "high", "GROUP", "g1"],
    );
    let approval = migrate(
        &mut a,
        &["tc", "TARGET", &dst_addr, "APPROVAL", "GROUP", "g1"],
    );
    let waiting = migrate(&mut a, &["td", "TARGET", &dst_addr, "AFTER", &running]);
    wait_state(&mut a, &queued, "queued", Duration::from_secs(5));
    wait_state(
        &mut a,
        &approval,
        "awaiting_approval",
        Duration::from_secs(10),
    );
    wait_state(&mut a, &waiting, "waiting", Duration::from_secs(5));
    // The plan (VALIDATE's report) is made once it awaits approval.
    let mut plan_before = migration_status(&mut a, &approval);
    let deadline = Instant::now() + Duration::from_secs(10);
    while plan_before["plan"].is_empty() {
        assert!(Instant::now() < deadline, "no plan: {plan_before:?}");
        std::thread::sleep(Duration::from_millis(20));
        plan_before = migration_status(&mut a, &approval);
    }

    for kill in [false, true] {
        drop(a);
        if kill {
            sigkill(src);
        } else {
            shutdown(src, &[]);
        }
        src = Server::start_in(src_dir.path(), &["--config", &cfg]);
        a = src.conn();
        let r = migration_status(&mut a, &running);
        assert_eq!(r["state"], "failed", "kill={kill}: {r:?}");
        // The restart freed the running one's slot: the queued one takes it (and a SIGKILL
        // while it runs brings it back failed), keeping its priority and group.
        let q = migration_status(&mut a, &queued);
        let expected: &[&str] = if kill {
            &["failed"]
        } else {
            &["queued", "syncing", "live_sync"]
        };
        assert!(
            expected.contains(&q["state"].as_str()),
            "kill={kill}: {q:?}"
        );
        assert_eq!(q["priority"], "high");
        assert_eq!(q["group"], "g1");
        if !kill {
            wait_state(&mut a, &queued, "live_sync", Duration::from_secs(30));
        }
        let p = migration_status(&mut a, &approval);
        assert_eq!(p["state"], "awaiting_approval", "kill={kill}: {p:?}");
        assert_eq!(p["approval"], "pending");
        for (k, v) in &plan_before {
            if k.starts_with("plan") {
                assert_eq!(p.get(k), Some(v), "the plan is kept: {k}");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let w = migration_status(&mut a, &waiting);
            assert!(
                ["queued", "waiting"].contains(&w["state"].as_str()),
                "kill={kill}: {w:?}"
            );
            if w["state"] == "waiting" && w["waiting_for"].contains(&running) {
                break;
            }
            assert!(Instant::now() < deadline, "kill={kill}: {w:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let g = map_of(ok(&mut a, &["TENANT.MIGRATE.STATUS", "GROUP", "g1"]));
        let members = format!("{:?}", g.get("migrations"));
        assert!(
            members.contains(&queued) && members.contains(&approval),
            "{g:?}"
        );
    }
    // The decision is recorded with who took it, and survives a restart too.
    ok(&mut a, &["CLIENT", "SETNAME", "alice"]);
    ok(&mut a, &["TENANT.MIGRATE.APPROVE", &approval]);
    let decided = migration_status(&mut a, &approval);
    assert!(decided["approval_by"].contains("alice"), "{decided:?}");
    // The interrupted dependency resumes (with room for it: the approved one took the slot),
    // completes, and its dependent starts.
    ok(
        &mut a,
        &["CONFIG", "SET", "tenancy.migration.max_concurrent", "5"],
    );
    ok(&mut a, &["TENANT.MIGRATE.RESUME", &running]);
    wait_state(&mut a, &running, "live_sync", Duration::from_secs(30));
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &running, "FORCE"]);
    wait_state(&mut a, &running, "completed", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let w = migration_status(&mut a, &waiting);
        if w["state"] != "waiting" {
            assert_ne!(w["state"], "failed", "{w:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{w:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(a);
    shutdown(src, &[]);
    let src = Server::start_in(src_dir.path(), &["--config", &cfg]);
    let mut a = src.conn();
    let d = migration_status(&mut a, &approval);
    assert!(
        d["approval_by"].contains("alice") && d["approval"] == "approved",
        "{d:?}"
    );
    assert_eq!(migration_status(&mut a, &running)["state"], "completed");
    drop(dst);
}

/// MODE incremental with one pattern handed over, then a SIGKILL of the source: after the
/// restart that pattern's keys are still redirected (never writable here again), the other
/// keys are writable, and RESUME explains why it cannot start the migration again.
#[test]
fn an_incremental_migrations_moved_pattern_stays_moved_after_a_restart() {
    let src_dir = data_dir();
    let dst_dir = data_dir();
    let src = Server::start_in(src_dir.path(), &[]);
    let dst = Server::start_in(dst_dir.path(), &[]);
    let mut a = src.conn();
    ok(&mut a, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]);
    {
        let mut t = tenant_conn(&src, "acme", "pw");
        for i in 0..50 {
            ok(&mut t, &["SET", &format!("user:{i}"), "u"]);
            ok(&mut t, &["SET", &format!("order:{i}"), "o"]);
        }
    }
    let id = migrate(
        &mut a,
        &[
            "acme",
            "TARGET",
            &dst.addr(),
            "MODE",
            "incremental",
            "PATTERNS",
            "user:*",
            "*",
        ],
    );
    wait_state(&mut a, &id, "live_sync", Duration::from_secs(30));
    let r = map_of(ok(
        &mut a,
        &["TENANT.MIGRATE.CUTOVER", &id, "PATTERN", "user:*"],
    ));
    assert_eq!(text(&r["status"]), "pattern_moved");
    drop(a);
    sigkill(src);

    let src = Server::start_in(src_dir.path(), &[]);
    let mut t = tenant_conn(&src, "acme", "pw");
    // (The client library spells the MOVED reply `Moved`.)
    let e = err(&mut t, &["SET", "user:1", "again"]).to_uppercase();
    assert!(e.contains("MOVED") && e.contains(&dst.addr()), "{e}");
    let e = err(&mut t, &["GET", "user:2"]).to_uppercase();
    assert!(e.contains("MOVED"), "{e}");
    ok(&mut t, &["SET", "order:1", "still here"]);
    let v: String = redis::cmd("GET").arg("order:1").query(&mut t).unwrap();
    assert_eq!(v, "still here");
    let mut a = src.conn();
    let s = migration_status(&mut a, &id);
    assert_eq!(s["state"], "failed", "{s:?}");
    assert!(s["error"].contains("patterns handed over"), "{s:?}");
    let e = err(&mut a, &["TENANT.MIGRATE.RESUME", &id]);
    assert!(e.contains("handed patterns over"), "{e}");
    // The target still serves the moved pattern.
    let mut b = tenant_conn(&dst, "acme", "pw");
    let v: String = redis::cmd("GET").arg("user:1").query(&mut b).unwrap();
    assert_eq!(v, "u");
    // And a second restart (clean) keeps it so.
    drop(t);
    drop(a);
    shutdown(src, &[]);
    let src = Server::start_in(src_dir.path(), &[]);
    let mut t = tenant_conn(&src, "acme", "pw");
    assert!(
        err(&mut t, &["SET", "user:3", "x"])
            .to_uppercase()
            .contains("MOVED")
    );
}

/// Finished migrations beyond `history_max` are dropped from the catalog (oldest first);
/// unfinished ones are always kept. Checked with the default (1000: nothing dropped) and with
/// a small bound set by CONFIG SET.
#[test]
fn the_migration_history_is_bounded_by_history_max() {
    let src_dir = data_dir();
    let dst_dir = data_dir();
    let src = Server::start_in(src_dir.path(), &[]);
    let dst = Server::start_in(dst_dir.path(), &[]);
    let mut a = src.conn();
    let default = map_of(ok(
        &mut a,
        &["CONFIG", "GET", "tenancy.migration.history_max"],
    ));
    assert_eq!(text(&default["tenancy.migration.history_max"]), "1000");
    ok(&mut a, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]);
    ok(&mut a, &["TENANT.CREATE", "other", "PASSWORD", "pw"]);
    let mut ids = Vec::new();
    for _ in 0..6 {
        let id = migrate(&mut a, &["acme", "TARGET", &dst.addr(), "APPROVAL"]);
        wait_state(&mut a, &id, "awaiting_approval", Duration::from_secs(10));
        ok(&mut a, &["TENANT.MIGRATE.REJECT", &id, "not now"]);
        wait_state(&mut a, &id, "cancelled", Duration::from_secs(10));
        ids.push(id);
    }
    let pending = migrate(&mut a, &["other", "TARGET", &dst.addr(), "APPROVAL"]);
    wait_state(
        &mut a,
        &pending,
        "awaiting_approval",
        Duration::from_secs(10),
    );
    drop(a);
    shutdown(src, &[]);

    let src = Server::start_in(src_dir.path(), &[]);
    let mut a = src.conn();
    for id in &ids {
        assert_eq!(
            migration_status(&mut a, id)["state"],
            "cancelled",
            "default keeps {id}"
        );
    }
    ok(
        &mut a,
        &["CONFIG", "SET", "tenancy.migration.history_max", "2"],
    );
    drop(a);
    sigkill(src);

    let src = Server::start_in(src_dir.path(), &[]);
    let mut a = src.conn();
    for (i, id) in ids.iter().enumerate() {
        let r = cmd(&mut a, &["TENANT.MIGRATE.STATUS", id]);
        if i < ids.len() - 2 {
            let e = r.expect_err("dropped").to_string();
            assert!(e.contains("no such migration"), "{id}: {e}");
        } else {
            let all: Vec<String> =
                crate::util::map_of(ok(&mut a, &["TENANT.MIGRATE.STATUS", "ALL"]))
                    .get("migrations")
                    .map(|v| format!("{v:?}"))
                    .into_iter()
                    .collect();
            assert!(r.is_ok(), "the newest 2 are kept: {id}: {r:?} {all:?}");
        }
    }
    assert_eq!(
        migration_status(&mut a, &pending)["state"],
        "awaiting_approval"
    );
    // A bad value is refused and changes nothing.
    let e = err(
        &mut a,
        &["CONFIG", "SET", "tenancy.migration.history_max", "-1"],
    );
    assert!(e.contains("CONFIG SET failed"), "{e}");
    let now = map_of(ok(
        &mut a,
        &["CONFIG", "GET", "tenancy.migration.history_max"],
    ));
    assert_eq!(text(&now["tenancy.migration.history_max"]), "1000");
    drop(dst);
}
