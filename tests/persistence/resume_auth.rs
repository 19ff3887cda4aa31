//! A migration to a password-protected target across restarts of its source (docs/migration.md,
//! "Restarts of the source"; docs/persistence.md): started with `AUTH <target's administrator
//! password>`, it comes back `failed` (the password is never written to disk), RESUME without
//! AUTH is refused naming AUTH, RESUME with a wrong password fails visibly and leaves the tenant
//! here, RESUME with the right one copies it afresh and cuts over. The source runs with the
//! default `[tenancy.migration]` settings (no configuration file; the cutover test turns
//! `fault_injection` on before its kill); the target has `requirepass` and no migration token, so
//! the password is the only way in. The same for the two paths that reach the target of such a
//! restored migration: CUTOVER RETRY after a recorded hand-over (`RETRY AUTH <password>`), and
//! CANCEL (`AUTH <password>` drops the target's import; without it the migration is cancelled
//! here and STATUS names the import left on the target).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::Value;

use crate::common::Server;
use crate::util::*;

/// The target's administrator password (its `requirepass`).
const TARGET_PASSWORD: &str = "target-admin-pw-5f1c9e";

/// Polls STATUS until `pred` holds; panics with the last status after `within`.
fn wait_status(
    c: &mut redis::Connection,
    id: &str,
    what: &str,
    within: Duration,
    pred: impl Fn(&BTreeMap<String, String>) -> bool,
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + within;
    loop {
        let s = migration_status(c, id);
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{id}: timed out waiting for {what}: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// RESUME <id> AUTH with the target's password, then waits (60 s) until the migration is in
/// live sync again; it must never fail meanwhile. Returns that status.
fn resume_with_password_until_live(
    a: &mut redis::Connection,
    id: &str,
) -> BTreeMap<String, String> {
    ok(a, &["TENANT.MIGRATE.RESUME", id, "AUTH", TARGET_PASSWORD]);
    wait_status(a, id, "live sync", Duration::from_secs(60), |s| {
        assert_ne!(s["state"], "failed", "{s:?}");
        s["state"] == "live_sync"
    })
}

fn start_target(dir: &std::path::Path) -> Server {
    Server::start_in(dir, &["--requirepass", TARGET_PASSWORD])
}

/// A tenant `name` (password `pw`) with `keys` keys of 100 bytes.
fn tenant_with_keys(src: &Server, name: &str, keys: usize) {
    let mut a = src.conn();
    ok(&mut a, &["TENANT.CREATE", name, "PASSWORD", "pw"]);
    let mut t = tenant_conn(src, name, "pw");
    let mut p = redis::pipe();
    for i in 0..keys {
        p.cmd("SET")
            .arg(format!("k{i}"))
            .arg(format!("{i:0>100}"))
            .ignore();
    }
    let _: () = p.query(&mut t).unwrap();
}

fn migrate_with_auth(
    a: &mut redis::Connection,
    tenant: &str,
    dst: &Server,
    extra: &[&str],
) -> String {
    let addr = dst.addr();
    let mut args = vec![
        "TENANT.MIGRATE",
        tenant,
        "TARGET",
        &addr,
        "AUTH",
        TARGET_PASSWORD,
    ];
    args.extend_from_slice(extra);
    let reply = map_of(ok(a, &args));
    text(reply.get("migration_id").expect("migration_id"))
}

/// Writers on the source, each on its own keys (`<prefix><w>:<n mod 200>`), remembering the last
/// acknowledged value of each key. A writer stops at `stop` or at the first failure (the source
/// died, or the tenant moved).
struct Writers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<BTreeMap<String, String>>>,
}

impl Writers {
    fn start(src: &Server, prefix: &str) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..3)
            .map(|w| {
                let stop = stop.clone();
                let port = src.port;
                let prefix = prefix.to_string();
                std::thread::spawn(move || {
                    let url = format!("redis://acme:pw@127.0.0.1:{port}/");
                    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                    let mut acked = BTreeMap::new();
                    let deadline = Instant::now() + Duration::from_secs(120);
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let key = format!("{prefix}{w}:{}", n % 200);
                        let val = n.to_string();
                        if cmd(&mut c, &["SET", &key, &val]).is_err() {
                            break;
                        }
                        acked.insert(key, val);
                        n += 1;
                    }
                    acked
                })
            })
            .collect();
        Writers { stop, threads }
    }

    fn finish(self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut acked = BTreeMap::new();
        for t in self.threads {
            acked.extend(t.join().unwrap());
        }
        acked
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The password's bytes appear in no file of `dir` (the catalog, the logs, snapshots) nor in
/// the server's own log.
/// Every write the writers saw acknowledged is on `conn`'s tenant, with its value.
fn assert_holds_every_acked_write(conn: &mut redis::Connection, acked: &BTreeMap<String, String>) {
    for (k, v) in acked {
        let got: Option<String> = redis::cmd("GET").arg(k).query(conn).unwrap();
        assert_eq!(got.as_deref(), Some(v.as_str()), "{k}");
    }
}

fn assert_password_not_kept(dir: &std::path::Path, src: &Server) {
    let files = files_under(dir);
    assert!(
        files
            .iter()
            .any(|f| f.to_string_lossy().contains("catalog")),
        "the catalog is in the data directory: {files:?}"
    );
    let needle = TARGET_PASSWORD.as_bytes();
    for f in files {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the AUTH password is written in {}",
            f.display()
        );
    }
    assert!(
        !src.log().iter().any(|l| l.contains(TARGET_PASSWORD)),
        "the AUTH password is in the source's log"
    );
}

/// Can a client of tenant `acme` write on `s`? The refusals must be the ones a moved, importing
/// or absent tenant gets; `Err` carries the refusal.
fn write_probe(s: &Server) -> Result<(), String> {
    let url = format!("redis://acme:pw@127.0.0.1:{}/", s.port);
    let mut c = match redis::Client::open(url).unwrap().get_connection() {
        Ok(c) => c,
        Err(e) => return Err(e.to_string()),
    };
    cmd(&mut c, &["SET", "probe", "1"])
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `-MOVED tenant:acme <target>` for a write on the old source.
fn assert_moved_to(src: &Server, dst: &Server) {
    let e = write_probe(src).expect_err("the old source refuses writes");
    // (The client library spells the MOVED reply `Moved`.)
    let upper = e.to_uppercase();
    assert!(
        upper.contains("MOVED") && e.contains("tenant:acme") && e.contains(&dst.addr()),
        "{e}"
    );
}

/// The migration is kept from starting while this holds: the tenant stays writable on the
/// source only, never on the target.
fn assert_owned_by_source_only(src: &Server, dst: &Server, when: &str) {
    write_probe(src).unwrap_or_else(|e| panic!("{when}: the source refused a write: {e}"));
    // A staged import answers -TRYAGAIN; no tenant there at all refuses the login.
    let e = write_probe(dst).expect_err("the target is not the owner");
    assert!(
        e.to_lowercase().contains("tryagain") || e.contains("AuthenticationFailed"),
        "{when}: unexpected refusal on the target: {e}"
    );
}

/// Cuts over, retrying while the lag is over `cutover_max_lag` (the default, 1000 keys).
fn cut_over(a: &mut redis::Connection, id: &str) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match cmd(a, &["TENANT.MIGRATE.CUTOVER", id]) {
            Ok(v) => return map_of(v),
            Err(e) if e.to_string().contains("cutover_max_lag") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("CUTOVER {id}: {e}"),
        }
    }
}

/// What the restarted source must say about a migration started with AUTH.
fn assert_interrupted_asking_for_auth(a: &mut redis::Connection, id: &str, was: &str) {
    let s = migration_status(a, id);
    assert_eq!(s["state"], "failed", "{s:?}");
    assert!(
        s["error"].contains(&format!(
            "interrupted by a restart of this server (it was {was})"
        )) && s["error"].contains(&format!("TENANT.MIGRATE.RESUME {id} AUTH <password>")),
        "{s:?}"
    );
    // RESUME without AUTH: refused, naming AUTH, and nothing changes.
    let e = err(a, &["TENANT.MIGRATE.RESUME", id]);
    assert!(e.contains("AUTH <password>"), "{e}");
    let after = migration_status(a, id);
    assert_eq!(after["state"], "failed", "{after:?}");
    assert_eq!(
        after["error"], s["error"],
        "RESUME without AUTH changed nothing"
    );
}

fn interrupted_live_migration_resumes_with_auth(kill: bool) {
    let src_dir = data_dir();
    let dst_dir = data_dir();
    let src = Server::start_in(src_dir.path(), &[]);
    let dst = start_target(dst_dir.path());
    tenant_with_keys(&src, "acme", 3000);
    let mut a = src.conn();
    // SIGKILL during the snapshot (RATE keeps it going ~3 s); SHUTDOWN in live sync.
    let extra: &[&str] = if kill {
        &["RATE", "100000", "BATCH_SIZE", "50"]
    } else {
        &["BATCH_SIZE", "50"]
    };
    let id = migrate_with_auth(&mut a, "acme", &dst, extra);
    let writers = Writers::start(&src, "pre");
    let was = if kill {
        wait_status(
            &mut a,
            &id,
            "snapshot under way",
            Duration::from_secs(30),
            |s| s["state"] == "syncing" && s["keys_synced"].parse::<u64>().unwrap_or(0) > 300,
        );
        "syncing"
    } else {
        wait_status(&mut a, &id, "live sync", Duration::from_secs(60), |s| {
            s["state"] == "live_sync"
        });
        std::thread::sleep(Duration::from_millis(200));
        "live_sync"
    };
    drop(a);
    if kill {
        sigkill(src);
    } else {
        shutdown(src, &[]);
    }
    let pre_acked = writers.finish();
    assert!(
        !pre_acked.is_empty(),
        "the writers wrote before the restart"
    );

    let src = Server::start_in(src_dir.path(), &[]);
    let mut a = src.conn();
    assert_interrupted_asking_for_auth(&mut a, &id, was);
    assert_password_not_kept(src_dir.path(), &src);
    // A second restart before RESUME: it still knows a password is needed.
    drop(a);
    if kill {
        sigkill(src);
    } else {
        shutdown(src, &[]);
    }
    let src = Server::start_in(src_dir.path(), &[]);
    let mut a = src.conn();
    assert_interrupted_asking_for_auth(&mut a, &id, was);
    if !kill {
        // A clean shutdown loses no acknowledged write.
        let mut t = tenant_conn(&src, "acme", "pw");
        assert_holds_every_acked_write(&mut t, &pre_acked);
    }
    // Changed after the restart: the target's stale import still holds k0.
    let mut t = tenant_conn(&src, "acme", "pw");
    ok(&mut t, &["DEL", "k0"]);
    assert_owned_by_source_only(&src, &dst, "after the restart");

    // A wrong password: accepted as a request, then the run fails and says why; the tenant
    // stays here.
    ok(
        &mut a,
        &["TENANT.MIGRATE.RESUME", &id, "AUTH", "not-the-password"],
    );
    let s = wait_status(
        &mut a,
        &id,
        "the wrong password to fail",
        Duration::from_secs(30),
        |s| s["state"] == "failed" && !s["error"].contains("interrupted by a restart"),
    );
    eprintln!("after RESUME with a wrong password: {s:?}");
    let e = s["error"].to_lowercase();
    assert!(
        e.contains("wrongpass") || e.contains("password") || e.contains("auth"),
        "the error names the authentication failure: {s:?}"
    );
    assert_owned_by_source_only(&src, &dst, "after RESUME with a wrong password");
    assert_password_not_kept(src_dir.path(), &src);

    // The right password: a fresh copy under concurrent writers, then the cutover.
    let writers = Writers::start(&src, "post");
    resume_with_password_until_live(&mut a, &id);
    std::thread::sleep(Duration::from_millis(300));
    let acked = writers.finish();
    assert!(acked.len() > 50, "the writers wrote: {}", acked.len());
    let before = digest(&mut a, "acme");
    let cut = cut_over(&mut a, &id);
    assert_eq!(text(&cut["status"]), "completed", "{cut:?}");

    let mut b = dst.conn();
    assert_eq!(
        digest(&mut b, "acme"),
        before,
        "the target holds the source's copy"
    );
    let mut bt = tenant_conn(&dst, "acme", "pw");
    assert_holds_every_acked_write(&mut bt, &acked);
    let k0: Option<String> = redis::cmd("GET").arg("k0").query(&mut bt).unwrap();
    assert_eq!(k0, None, "a clean copy: the stale import was dropped");
    assert_moved_to(&src, &dst);
    assert_password_not_kept(src_dir.path(), &src);

    // One more restart of the source: still moved, the migration still completed.
    drop(t);
    drop(a);
    if kill {
        sigkill(src);
    } else {
        shutdown(src, &[]);
    }
    let src = Server::start_in(src_dir.path(), &[]);
    let mut a = src.conn();
    assert_eq!(migration_status(&mut a, &id)["state"], "completed");
    assert_moved_to(&src, &dst);
    write_probe(&dst).expect("the target owns the tenant");
    assert_password_not_kept(src_dir.path(), &src);
}

/// SIGKILL of the source during the snapshot of a migration started with AUTH, then RESUME
/// without AUTH, with a wrong password, and with the right one (see the module docs).
#[test]
fn a_migration_with_auth_killed_mid_sync_resumes_only_with_the_targets_password() {
    interrupted_live_migration_resumes_with_auth(true);
}

/// The same after a clean SHUTDOWN of the source in live sync.
#[test]
fn a_migration_with_auth_shut_down_in_live_sync_resumes_only_with_the_targets_password() {
    interrupted_live_migration_resumes_with_auth(false);
}

/// A migration started with AUTH that was still queued (`max_concurrent` reached) comes back
/// `failed` too, and RESUME AUTH starts it; the running one it queued behind resumes as well.
#[test]
fn a_queued_migration_with_auth_comes_back_failed_and_resume_auth_starts_it() {
    let src_dir = data_dir();
    let dst_dir = data_dir();
    let src = Server::start_in(src_dir.path(), &[]);
    let dst = start_target(dst_dir.path());
    tenant_with_keys(&src, "acme", 500);
    tenant_with_keys(&src, "other", 500);
    let mut a = src.conn();
    // At runtime only: the restarted server runs with the default (5).
    ok(
        &mut a,
        &["CONFIG", "SET", "tenancy.migration.max_concurrent", "1"],
    );
    let running = migrate_with_auth(&mut a, "other", &dst, &[]);
    wait_status(
        &mut a,
        &running,
        "live sync",
        Duration::from_secs(30),
        |s| s["state"] == "live_sync",
    );
    let queued = migrate_with_auth(&mut a, "acme", &dst, &["PRIORITY", "high"]);
    let q = migration_status(&mut a, &queued);
    assert_eq!(q["state"], "queued", "{q:?}");
    drop(a);
    sigkill(src);

    let src = Server::start_in(src_dir.path(), &[]);
    let mut a = src.conn();
    assert_interrupted_asking_for_auth(&mut a, &queued, "queued");
    assert_interrupted_asking_for_auth(&mut a, &running, "live_sync");
    assert_password_not_kept(src_dir.path(), &src);
    assert_owned_by_source_only(&src, &dst, "after the restart");

    let writers = Writers::start(&src, "w");
    let s = resume_with_password_until_live(&mut a, &queued);
    assert_eq!(s["priority"], "high", "its settings are kept: {s:?}");
    std::thread::sleep(Duration::from_millis(200));
    let acked = writers.finish();
    let before = digest(&mut a, "acme");
    let cut = cut_over(&mut a, &queued);
    assert_eq!(text(&cut["status"]), "completed", "{cut:?}");
    let mut b = dst.conn();
    assert_eq!(digest(&mut b, "acme"), before);
    let mut bt = tenant_conn(&dst, "acme", "pw");
    assert_holds_every_acked_write(&mut bt, &acked);
    assert_moved_to(&src, &dst);

    // The one it queued behind resumes too; killed again in live sync, it still asks for the
    // password (the RESUME's password is not written either), and then cuts over.
    resume_with_password_until_live(&mut a, &running);
    drop(a);
    sigkill(src);
    let src = Server::start_in(src_dir.path(), &[]);
    let mut a = src.conn();
    assert_interrupted_asking_for_auth(&mut a, &running, "live_sync");
    assert_password_not_kept(src_dir.path(), &src);
    assert_moved_to(&src, &dst);
    resume_with_password_until_live(&mut a, &running);
    let before = digest(&mut a, "other");
    let cut = cut_over(&mut a, &running);
    assert_eq!(text(&cut["status"]), "completed", "{cut:?}");
    assert_eq!(digest(&mut b, "other"), before);
    assert_password_not_kept(src_dir.path(), &src);
}

/// `TENANT.IMPORT.STATUS <import>` on the target: the import's state, or the refusal (`no such
/// import ...` once it was dropped).
fn import_state(dst: &Server, import: &str) -> Result<String, String> {
    let mut b = dst.conn();
    cmd(&mut b, &["TENANT.IMPORT.STATUS", import])
        .map(|v| text(map_of(v).get("state").expect("state")))
        .map_err(|e| e.to_string())
}

/// The target's count of refused logins (`INFO stats` `auth_failures`).
fn auth_failures(dst: &Server) -> u64 {
    let mut b = dst.conn();
    info(&mut b, "stats")["auth_failures"].parse().unwrap()
}

/// The target dropped `import` (it keeps an aborted import's record for a while).
fn assert_import_dropped(dst: &Server, import: &str) {
    match import_state(dst, import) {
        Ok(state) => assert_eq!(state, "aborted", "import {import}"),
        Err(e) => assert!(e.contains("no such import"), "{e}"),
    }
}

/// The source's configuration for the cutover test: `fault_injection`, so the test can park
/// the cutover after the hand-over was recorded (tests only; everything else is the default).
fn fault_injection_config(dir: &std::path::Path) -> String {
    let cfg = dir.join("source.toml");
    std::fs::write(&cfg, "[tenancy.migration]\nfault_injection = true\n").unwrap();
    cfg.to_string_lossy().into_owned()
}

/// Starts a cutover on another connection, retrying while the lag is over the limit, and waits
/// until it is parked at the fault-injection point `point` (armed first).
fn cutover_parked_at(src: &Server, id: &str, point: &str) -> JoinHandle<()> {
    let mut a = src.conn();
    ok(&mut a, &["TENANT.MIGRATE.DEBUG", id, "BREAK", point]);
    let mut a2 = src.conn();
    let idc = id.to_string();
    // Its answer never comes: the source is killed while it is parked.
    let cutover = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = cmd(&mut a2, &["TENANT.MIGRATE.CUTOVER", &idc]) {
            if !e.to_string().contains("cutover_max_lag") || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    wait_until("the cutover parked", Duration::from_secs(30), || {
        text(&ok(&mut a, &["TENANT.MIGRATE.DEBUG", id, "WAITING"])) == point
    });
    cutover
}

/// A migration started with AUTH whose source was SIGKILLed after it recorded the hand-over and
/// before the target confirmed activation: the restarted source answers `-MOVED`, and only
/// `CUTOVER <id> RETRY AUTH <password>` finishes it (docs/migration.md, "Restarts of the
/// source"). The restarted source runs with the default settings; before the kill it has
/// `fault_injection` on to park the cutover at `cutover:before_activate`.
/// A source (default settings after its restart) SIGKILLed with a migration started with AUTH
/// parked at `cutover:before_activate` (the hand-over recorded, the target not activated), under
/// writers; `fault_injection` is on before the kill only.
struct HandedOver {
    _conf_dir: tempfile::TempDir,
    src_dir: tempfile::TempDir,
    _dst_dir: tempfile::TempDir,
    src: Server,
    dst: Server,
    id: String,
    import: String,
    /// TENANT.DIGEST of the source's frozen copy.
    frozen: (i64, String),
    /// The writers' acknowledged writes.
    acked: BTreeMap<String, String>,
}

fn handed_over_then_restarted() -> HandedOver {
    let conf_dir = data_dir();
    let cfg = fault_injection_config(conf_dir.path());
    let src_dir = data_dir();
    let dst_dir = data_dir();
    let src = Server::start_in(src_dir.path(), &["--config", &cfg]);
    let dst = start_target(dst_dir.path());
    tenant_with_keys(&src, "acme", 2000);
    let mut a = src.conn();
    let id = migrate_with_auth(&mut a, "acme", &dst, &["BATCH_SIZE", "50"]);
    let writers = Writers::start(&src, "w");
    wait_status(&mut a, &id, "live sync", Duration::from_secs(60), |s| {
        s["state"] == "live_sync"
    });
    std::thread::sleep(Duration::from_millis(200));
    let cutover = cutover_parked_at(&src, &id, "cutover:before_activate");
    // Parked after the hand-over: the writers stopped at MOVED; the source's copy is frozen.
    let acked = writers.finish();
    assert!(acked.len() > 50, "the writers wrote: {}", acked.len());
    let frozen = digest(&mut a, "acme");
    let import = migration_status(&mut a, &id)["import_id"].clone();
    assert!(!import.is_empty());
    drop(a);
    sigkill(src);
    let _ = cutover.join();
    let src = Server::start_in(src_dir.path(), &[]);
    HandedOver {
        _conf_dir: conf_dir,
        src_dir,
        _dst_dir: dst_dir,
        src,
        dst,
        id,
        import,
        frozen,
        acked,
    }
}

#[test]
fn a_handed_over_migration_with_auth_is_finished_by_cutover_retry_auth_after_a_restart() {
    let HandedOver {
        _conf_dir,
        src_dir,
        _dst_dir,
        src,
        dst,
        id,
        import,
        frozen,
        acked,
    } = handed_over_then_restarted();
    let mut a = src.conn();
    let s = migration_status(&mut a, &id);
    assert_eq!(s["state"], "failed", "{s:?}");
    assert!(
        s["error"].contains(&format!(
            "TENANT.MIGRATE.CUTOVER {id} RETRY AUTH <password>"
        )),
        "{s:?}"
    );
    assert_moved_to(&src, &dst);
    assert!(write_probe(&dst).is_err(), "the target was never activated");
    assert_eq!(digest(&mut a, "acme"), frozen, "the source kept its copy");
    assert_password_not_kept(src_dir.path(), &src);
    // A second restart first: the restored migration's record was written again when it came
    // back, and must still say a password is needed (the RETRY without AUTH below checks it).
    drop(a);
    sigkill(src);
    let src = Server::start_in(src_dir.path(), &[]);
    let mut a = src.conn();
    let again = migration_status(&mut a, &id);
    assert_eq!(again["error"], s["error"], "{again:?}");
    let s = again;
    let unchanged = |a: &mut redis::Connection, when: &str| {
        let now = migration_status(a, &id);
        assert_eq!(now["state"], "failed", "{when}: {now:?}");
        assert_moved_to(&src, &dst);
        assert!(
            write_probe(&dst).is_err(),
            "{when}: the target is not active"
        );
        let st = import_state(&dst, &import).unwrap_or_else(|e| panic!("{when}: {e}"));
        assert_ne!(st, "active", "{when}");
        now
    };

    // Without AUTH: refused, naming AUTH; nothing changes (not even a login tried there).
    let refused_logins = auth_failures(&dst);
    let e = err(&mut a, &["TENANT.MIGRATE.CUTOVER", &id, "RETRY"]);
    assert!(
        e.contains(&format!("CUTOVER {id} RETRY AUTH <password>")),
        "{e}"
    );
    let after = unchanged(&mut a, "after RETRY without AUTH");
    assert_eq!(
        after["error"], s["error"],
        "RETRY without AUTH changed nothing"
    );
    assert_eq!(auth_failures(&dst), refused_logins, "no login was tried");

    // A wrong password: refused with the target's answer, at once (not after the default 30 s
    // activation timeout), also in STATUS.
    let asked = Instant::now();
    let e = err(
        &mut a,
        &[
            "TENANT.MIGRATE.CUTOVER",
            &id,
            "RETRY",
            "AUTH",
            "not-the-password",
        ],
    );
    assert!(e.contains("WRONGPASS"), "{e}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "a refused login is final: {:?}",
        asked.elapsed()
    );
    let after = unchanged(&mut a, "after RETRY with a wrong password");
    assert!(after["error"].contains("WRONGPASS"), "{after:?}");
    assert_password_not_kept(src_dir.path(), &src);

    // The right one: the target activates the copy the source handed over.
    let cut = map_of(ok(
        &mut a,
        &[
            "TENANT.MIGRATE.CUTOVER",
            &id,
            "RETRY",
            "AUTH",
            TARGET_PASSWORD,
        ],
    ));
    assert_eq!(text(&cut["status"]), "completed", "{cut:?}");
    assert_eq!(migration_status(&mut a, &id)["state"], "completed");
    assert_eq!(import_state(&dst, &import).as_deref(), Ok("active"));
    let mut b = dst.conn();
    assert_eq!(
        digest(&mut b, "acme"),
        frozen,
        "the target holds the source's frozen copy"
    );
    let mut bt = tenant_conn(&dst, "acme", "pw");
    assert_holds_every_acked_write(&mut bt, &acked);
    write_probe(&dst).expect("the target owns the tenant");
    assert_moved_to(&src, &dst);
    assert_password_not_kept(src_dir.path(), &src);

    // One more restart: still completed, still moved.
    drop(a);
    sigkill(src);
    let src = Server::start_in(src_dir.path(), &[]);
    let mut a = src.conn();
    assert_eq!(migration_status(&mut a, &id)["state"], "completed");
    assert_moved_to(&src, &dst);
    write_probe(&dst).expect("the target still owns the tenant");
    assert_password_not_kept(src_dir.path(), &src);
}

/// A source (default settings) with a migration started with AUTH that a restart interrupted
/// in live sync (SIGKILL or SHUTDOWN), and the import it had opened on the target.
struct Interrupted {
    src_dir: tempfile::TempDir,
    _dst_dir: tempfile::TempDir,
    src: Server,
    dst: Server,
    id: String,
    import: String,
}

fn interrupted_in_live_sync(kill: bool) -> Interrupted {
    let src_dir = data_dir();
    let dst_dir = data_dir();
    let src = Server::start_in(src_dir.path(), &[]);
    let dst = start_target(dst_dir.path());
    tenant_with_keys(&src, "acme", 2000);
    let mut a = src.conn();
    let id = migrate_with_auth(&mut a, "acme", &dst, &["BATCH_SIZE", "50"]);
    let s = wait_status(&mut a, &id, "live sync", Duration::from_secs(60), |s| {
        s["state"] == "live_sync"
    });
    let import = s["import_id"].clone();
    drop(a);
    if kill {
        sigkill(src);
    } else {
        shutdown(src, &[]);
    }
    let src = Server::start_in(src_dir.path(), &[]);
    let mut a = src.conn();
    assert_interrupted_asking_for_auth(&mut a, &id, "live_sync");
    assert_eq!(
        import_state(&dst, &import).as_deref(),
        Ok("receiving"),
        "the interrupted run's import is still on the target"
    );
    assert_owned_by_source_only(&src, &dst, "after the restart");
    Interrupted {
        src_dir,
        _dst_dir: dst_dir,
        src,
        dst,
        id,
        import,
    }
}

/// CANCEL <id> AUTH <password> of a migration started with AUTH that a restart interrupted:
/// a wrong password is refused and changes nothing; the right one cancels, and the target
/// drops the interrupted run's import.
#[test]
fn cancel_auth_of_a_restored_migration_drops_the_targets_import() {
    let Interrupted {
        src_dir,
        _dst_dir,
        src,
        dst,
        id,
        import,
    } = interrupted_in_live_sync(false);
    let mut a = src.conn();
    let before = migration_status(&mut a, &id);

    let e = err(
        &mut a,
        &["TENANT.MIGRATE.CANCEL", &id, "AUTH", "not-the-password"],
    );
    assert!(
        e.contains("WRONGPASS") && e.contains("nothing was cancelled"),
        "{e}"
    );
    let after = migration_status(&mut a, &id);
    assert_eq!(after["state"], "failed", "{after:?}");
    assert_eq!(
        after["error"], before["error"],
        "a refused CANCEL changed nothing"
    );
    assert_eq!(import_state(&dst, &import).as_deref(), Ok("receiving"));
    assert_owned_by_source_only(&src, &dst, "after CANCEL with a wrong password");

    ok(
        &mut a,
        &["TENANT.MIGRATE.CANCEL", &id, "AUTH", TARGET_PASSWORD],
    );
    let s = migration_status(&mut a, &id);
    assert_eq!(s["state"], "cancelled", "{s:?}");
    assert_eq!(s["error"], "", "the target dropped its import: {s:?}");
    assert_import_dropped(&dst, &import);
    let mut b = dst.conn();
    assert!(
        err(&mut b, &["TENANT.INFO", "acme"]).contains("no such tenant"),
        "nothing of the tenant is left on the target"
    );
    write_probe(&src).expect("the source owns the tenant");
    assert_password_not_kept(src_dir.path(), &src);

    // After one more restart: still cancelled, still served here only.
    drop(a);
    shutdown(src, &[]);
    let src = Server::start_in(src_dir.path(), &[]);
    let mut a = src.conn();
    assert_eq!(migration_status(&mut a, &id)["state"], "cancelled");
    write_probe(&src).expect("the source owns the tenant");
    assert!(write_probe(&dst).is_err());
}

/// CANCEL without AUTH of a migration started with AUTH that a restart interrupted: cancelled
/// here at once (the source stays the only owner), the target is not contacted (the login would
/// be refused), and STATUS says its import was left there and how to drop it; the target's
/// TENANT.IMPORT.ABORT does.
#[test]
fn cancel_without_auth_of_a_restored_migration_cancels_here_and_names_the_import_left_behind() {
    let Interrupted {
        src_dir,
        _dst_dir,
        src,
        dst,
        id,
        import,
    } = interrupted_in_live_sync(true);
    let mut a = src.conn();
    let refused_logins = auth_failures(&dst);
    let asked = Instant::now();
    ok(&mut a, &["TENANT.MIGRATE.CANCEL", &id]);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(
        auth_failures(&dst),
        refused_logins,
        "no login the target would refuse was tried"
    );
    let s = migration_status(&mut a, &id);
    assert_eq!(s["state"], "cancelled", "{s:?}");
    assert!(
        s["error"].contains(&format!("import {import} was not dropped"))
            && s["error"].contains(&format!("TENANT.MIGRATE.CANCEL {id} AUTH <password>"))
            && s["error"].contains("sync_timeout_secs")
            && s["error"].contains(&format!("TENANT.IMPORT.ABORT {import}")),
        "{s:?}"
    );
    // Never writable on two servers: the stale import stays unwritable there.
    assert_eq!(import_state(&dst, &import).as_deref(), Ok("receiving"));
    assert_owned_by_source_only(&src, &dst, "after CANCEL without AUTH");

    // The remedy STATUS names, on the target.
    let mut b = dst.conn();
    ok(&mut b, &["TENANT.IMPORT.ABORT", &import]);
    assert_import_dropped(&dst, &import);
    assert!(err(&mut b, &["TENANT.INFO", "acme"]).contains("no such tenant"));
    write_probe(&src).expect("the source owns the tenant");
    assert_password_not_kept(src_dir.path(), &src);
}

/// CANCEL of the same handed-over migration after the restart: without AUTH it is refused
/// naming AUTH (the tenant comes back only once the target drops its import) and changes
/// nothing; with a wrong password refused; with the right one the target drops its import and
/// the source serves the tenant again, with the frozen copy's data.
#[test]
fn a_handed_over_migration_with_auth_is_cancelled_only_with_the_targets_password() {
    let HandedOver {
        _conf_dir,
        src_dir,
        _dst_dir,
        src,
        dst,
        id,
        import,
        frozen,
        acked: _,
    } = handed_over_then_restarted();
    let mut a = src.conn();
    let refused_logins = auth_failures(&dst);
    let e = err(&mut a, &["TENANT.MIGRATE.CANCEL", &id]);
    assert!(
        e.contains(&format!("TENANT.MIGRATE.CANCEL {id} AUTH <password>")),
        "{e}"
    );
    let e = err(
        &mut a,
        &["TENANT.MIGRATE.CANCEL", &id, "AUTH", "not-the-password"],
    );
    assert!(e.contains("WRONGPASS"), "{e}");
    let s = migration_status(&mut a, &id);
    assert_eq!(
        s["state"], "failed",
        "after CANCEL without AUTH and with a wrong password: {s:?}"
    );
    assert_moved_to(&src, &dst);
    assert!(write_probe(&dst).is_err(), "the target is not active");
    assert_ne!(import_state(&dst, &import).as_deref(), Ok("active"));
    assert_eq!(
        auth_failures(&dst),
        refused_logins + 1,
        "only the wrong password was tried"
    );

    ok(
        &mut a,
        &["TENANT.MIGRATE.CANCEL", &id, "AUTH", TARGET_PASSWORD],
    );
    let s = migration_status(&mut a, &id);
    assert_eq!(s["state"], "cancelled", "{s:?}");
    assert_import_dropped(&dst, &import);
    let mut b = dst.conn();
    assert!(err(&mut b, &["TENANT.INFO", "acme"]).contains("no such tenant"));
    assert_eq!(digest(&mut a, "acme"), frozen, "the source serves its copy");
    assert_owned_by_source_only(&src, &dst, "after CANCEL AUTH");
    assert_password_not_kept(src_dir.path(), &src);
}

/// CUTOVER <id> RETRY of a migration started with AUTH that a restart interrupted before the
/// hand-over: refused without AUTH (no login tried there, nothing changes); with the target's
/// password it starts the migration again from scratch and cuts over once live, and the target
/// holds the source's copy.
#[test]
fn cutover_retry_auth_of_a_migration_interrupted_before_the_hand_over_resumes_and_cuts_over() {
    let Interrupted {
        src_dir,
        _dst_dir,
        src,
        dst,
        id,
        import: _,
    } = interrupted_in_live_sync(true);
    let mut a = src.conn();
    let before = migration_status(&mut a, &id);

    let refused_logins = auth_failures(&dst);
    let e = err(&mut a, &["TENANT.MIGRATE.CUTOVER", &id, "RETRY"]);
    assert!(e.contains("AUTH <password>"), "{e}");
    assert_eq!(auth_failures(&dst), refused_logins, "no login was tried");
    let after = migration_status(&mut a, &id);
    assert_eq!(after["state"], "failed", "{after:?}");
    assert_eq!(
        after["error"], before["error"],
        "RETRY without AUTH changed nothing"
    );
    assert_owned_by_source_only(&src, &dst, "after CUTOVER RETRY without AUTH");

    // Nothing writes to the tenant from here on: its digest is what the target must hold.
    let frozen = digest(&mut a, "acme");
    let cut = map_of(ok(
        &mut a,
        &[
            "TENANT.MIGRATE.CUTOVER",
            &id,
            "RETRY",
            "AUTH",
            TARGET_PASSWORD,
        ],
    ));
    if text(&cut["status"]) != "completed" {
        wait_status(&mut a, &id, "completed", Duration::from_secs(60), |s| {
            s["state"] == "completed"
        });
    }
    let mut b = dst.conn();
    assert_eq!(
        digest(&mut b, "acme"),
        frozen,
        "the target holds the source's copy"
    );
    let mut bt = tenant_conn(&dst, "acme", "pw");
    let k0: Option<String> = redis::cmd("GET").arg("k0").query(&mut bt).unwrap();
    assert!(k0.is_some(), "the copy has the tenant's keys");
    write_probe(&dst).expect("the target owns the tenant");
    assert_moved_to(&src, &dst);
    assert_password_not_kept(src_dir.path(), &src);
}
