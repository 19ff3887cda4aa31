//! SIGKILL of a migration's source at each step of the cutover, then restarts of both servers:
//! the tenant is never writable on two servers, and its data is never lost (a source that
//! handed the tenant over keeps the data until the hand-over is confirmed).

use std::time::{Duration, Instant};

use redis::Value;

use crate::common::Server;
use crate::util::*;

const POINTS: &[&str] = &[
    "cutover:before_gate",
    "cutover:after_gate",
    "cutover:before_confirm",
    "cutover:after_confirm",
    "cutover:before_activate",
];

/// Can a client of tenant `acme` write on `s`? Refusals must be the ones a moved, importing or
/// absent tenant gets.
fn writable(s: &Server) -> bool {
    let url = format!("redis://acme:pw@127.0.0.1:{}/", s.port);
    let Ok(mut c) = redis::Client::open(url).unwrap().get_connection() else {
        return false;
    };
    match cmd(&mut c, &["SET", "probe", "1"]) {
        Ok(_) => true,
        Err(e) => {
            let t = e.to_string().to_lowercase();
            assert!(
                t.contains("moved") || t.contains("tryagain"),
                "unexpected refusal: {t}"
            );
            false
        }
    }
}

fn source_config(dir: &std::path::Path) -> std::path::PathBuf {
    let cfg = dir.join("source.toml");
    std::fs::write(
        &cfg,
        "[tenancy.migration]\nfault_injection = true\nactivation_timeout_ms = 1000\ncutover_max_lag = 100000\n",
    )
    .unwrap();
    cfg
}

fn kill_source_at(point: &str) {
    let conf_dir = data_dir();
    let cfg = source_config(conf_dir.path());
    let cfg = cfg.to_string_lossy().into_owned();
    let src_dir = data_dir();
    let dst_dir = data_dir();
    let src = Server::start_in(src_dir.path(), &["--config", &cfg]);
    let dst = Server::start_in(dst_dir.path(), &[]);
    let mut a = src.conn();
    ok(&mut a, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]);
    {
        let mut t = tenant_conn(&src, "acme", "pw");
        let mut p = redis::pipe();
        for i in 0..2000 {
            p.cmd("SET").arg(format!("k{i}")).arg(i).ignore();
        }
        let _: () = p.query(&mut t).unwrap();
    }
    let before = digest(&mut a, "acme");
    let reply = map_of(ok(
        &mut a,
        &["TENANT.MIGRATE", "acme", "TARGET", &dst.addr()],
    ));
    let id = match reply.get("migration_id") {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("no migration id: {other:?}"),
    };
    wait_until("live sync", Duration::from_secs(30), || {
        migration_status(&mut a, &id)["state"] == "live_sync"
    });
    ok(&mut a, &["TENANT.MIGRATE.DEBUG", &id, "BREAK", point]);
    let mut a2 = src.conn();
    let idc = id.clone();
    let cutover = std::thread::spawn(move || cmd(&mut a2, &["TENANT.MIGRATE.CUTOVER", &idc]));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let parked = match ok(&mut a, &["TENANT.MIGRATE.DEBUG", &id, "WAITING"]) {
            Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            _ => String::new(),
        };
        if parked == point {
            break;
        }
        assert!(Instant::now() < deadline, "never parked at {point}");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(a);
    sigkill(src);
    let _ = cutover.join();

    let src = Server::start_in(src_dir.path(), &["--config", &cfg]);
    let (sw, dw) = (writable(&src), writable(&dst));
    assert!(
        !(sw && dw),
        "{point}: writable on both servers after the source restarted"
    );
    let handed_over = point == "cutover:before_activate";
    assert_eq!(
        sw, !handed_over,
        "{point}: the source owns the tenant unless the hand-over was recorded"
    );
    // Whatever happened, the source still has the data: a hand-over that was not confirmed
    // can still be undone.
    let mut a = src.conn();
    assert_eq!(
        digest(&mut a, "acme").0,
        before.0 + i64::from(sw),
        "{point}: the source kept the tenant's data"
    );
    // The target restarts too: a staged import is dropped there.
    sigkill(dst);
    let dst = Server::start_in(dst_dir.path(), &[]);
    let (sw2, dw2) = (writable(&src), writable(&dst));
    assert!(
        !(sw2 && dw2),
        "{point}: writable on both after both restarted"
    );
    assert!(!dw2, "{point}: the target never activated the tenant");
    assert_eq!(sw2, sw, "{point}: the source's answer did not change");
    let mut b = dst.conn();
    assert!(
        err(&mut b, &["TENANT.INFO", "acme"]).contains("no such tenant"),
        "{point}: the staged import was dropped"
    );
}

#[test]
fn sigkill_of_the_source_at_each_cutover_step_never_leaves_two_writable_owners() {
    for point in POINTS {
        kill_source_at(point);
    }
}
