//! The design's rollback flow after a cutover (docs/backup.md, docs/migration.md): back up,
//! migrate live, cut over, keep writing on the target, then restore the backup on the original
//! server as a new tenant and check it is exactly the backed-up data.

use std::time::Duration;

use crate::common::Server;
use crate::util::*;

fn tenant(s: &Server, id: &str, pw: &str) -> redis::Connection {
    let url = format!("redis://{id}:{pw}@127.0.0.1:{}/", s.port);
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

#[test]
fn rollback_after_cutover_restores_the_backup_as_a_new_tenant() {
    let src = Server::start();
    let dst = Server::start();
    let mut a = src.conn();
    ok(&mut a, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]);
    fill(&mut a, "acme", 3000);
    let backed_up = contents(&mut a, "acme");
    let recorded = digest_checked(&mut a, "acme");

    // 1. Back up, while a client keeps writing (the copy is of the moment it was taken).
    let mut w = tenant(&src, "acme", "pw");
    let id = text(&ok(&mut a, &["TENANT.BACKUP", "acme"]));
    for i in 0..100 {
        ok(&mut w, &["SET", &format!("after-backup:{i}"), "x"]);
    }
    let info = fields(ok(&mut a, &["TENANT.BACKUP.INFO", &id]));
    assert_eq!((info["keys"].parse::<u64>().unwrap(), info["digest"].clone()), recorded);

    // 2. Migrate live and cut over.
    let reply = map_of(ok(&mut a, &["TENANT.MIGRATE", "acme", "TARGET", &dst.addr()]));
    let mid = text(&reply["migration_id"]);
    wait_until("live sync", Duration::from_secs(60), || {
        text(&map_of(ok(&mut a, &["TENANT.MIGRATE.STATUS", &mid]))["state"]) == "live_sync"
    });
    let mut cut = None;
    for _ in 0..100 {
        match cmd(&mut a, &["TENANT.MIGRATE.CUTOVER", &mid]) {
            Ok(r) => {
                cut = Some(fields(r));
                break;
            }
            Err(e) if e.to_string().contains("cutover_max_lag") => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("cutover failed: {e}"),
        }
    }
    assert_eq!(cut.expect("cutover accepted")["status"], "completed");

    // 3. Clients keep writing on the target.
    let mut t = tenant(&dst, "acme", "pw");
    for i in 0..200 {
        ok(&mut t, &["SET", &format!("on-target:{i}"), "y"]);
    }
    let mut d = dst.conn();
    let target_after = digest_checked(&mut d, "acme");
    assert_ne!(target_after, recorded);

    // 4. Roll back on the original server: over the moved tenant it is refused, clearly...
    let e = err(&mut a, &["TENANT.RESTORE", "acme", "BACKUP", &id]);
    assert!(e.contains("has moved to") && e.contains("AS <new-tenant>"), "{e}");
    let e = err(&mut a, &["TENANT.RESTORE", "acme", "BACKUP", &id, "REPLACE"]);
    assert!(e.contains("has moved to"), "{e}");
    // ...and as a new tenant it is the backed-up data exactly.
    let done = fields(ok(
        &mut a,
        &["TENANT.RESTORE", "acme", "BACKUP", &id, "AS", "acme-rollback"],
    ));
    assert_eq!(done["digest"], recorded.1);
    assert_eq!(digest_checked(&mut a, "acme-rollback"), recorded);
    assert_eq!(contents(&mut a, "acme-rollback"), backed_up);
    // It is served here and writable; the target still has the tenant and its new writes.
    ok(&mut a, &["TENANT.USE", "acme-rollback"]);
    ok(&mut a, &["SET", "rolled-back", "1"]);
    assert_eq!(digest_checked(&mut d, "acme"), target_after);
    let moved = err(&mut w, &["GET", "k1"]);
    assert!(moved.to_lowercase().contains("moved"), "{moved}");
}
