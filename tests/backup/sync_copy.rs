//! A restore never writes over a tenant that is still a migration's copy on this server: the
//! target of a continuous sync, whether its copy is an import nobody is served from
//! (`MODE continuous`), served while it syncs (`CONFLICT ...`) or kept after a STOP. Each is
//! refused with what to do instead, and changes nothing; the sync goes on.

use std::time::Duration;

use crate::common::Server;
use crate::util::*;

fn status(c: &mut redis::Connection, id: &str) -> std::collections::BTreeMap<String, String> {
    map_of(ok(c, &["TENANT.MIGRATE.STATUS", id]))
        .into_iter()
        .filter_map(|(k, v)| match v {
            redis::Value::BulkString(_) | redis::Value::SimpleString(_) | redis::Value::Int(_) => {
                Some((k, text(&v)))
            }
            _ => None,
        })
        .collect()
}

fn get(c: &mut redis::Connection, tenant: &str, key: &str) -> Option<String> {
    ok(c, &["TENANT.USE", tenant]);
    let v: Option<String> = redis::cmd("GET").arg(key).query(c).unwrap();
    ok(c, &["TENANT.USE", "default"]);
    v
}

#[test]
fn the_copy_of_a_continuous_sync_is_refused_as_a_restore_destination() {
    let src = Server::start();
    let dst = Server::start();
    let mut a = src.conn();
    let mut d = dst.conn();
    // RDB files of both tenants, readable by the target (same machine).
    let mut rdb = std::collections::BTreeMap::new();
    for t in ["plain", "served"] {
        ok(&mut a, &["TENANT.CREATE", t, "PASSWORD", "pw"]);
        fill(&mut a, t, 300);
        let name = format!("{t}-rdb");
        ok(
            &mut a,
            &["TENANT.BACKUP", t, "NAME", &name, "FORMAT", "rdb"],
        );
        let info = fields(ok(&mut a, &["TENANT.BACKUP.INFO", &name]));
        rdb.insert(t, info["path"].clone());
    }
    let plain = text(
        &map_of(ok(
            &mut a,
            &[
                "TENANT.MIGRATE",
                "plain",
                "TARGET",
                &dst.addr(),
                "MODE",
                "continuous",
            ],
        ))["migration_id"],
    );
    let served = text(
        &map_of(ok(
            &mut a,
            &[
                "TENANT.MIGRATE",
                "served",
                "TARGET",
                &dst.addr(),
                "MODE",
                "continuous",
                "CONFLICT",
                "source_wins",
            ],
        ))["migration_id"],
    );
    for id in [&plain, &served] {
        wait_until("live sync", Duration::from_secs(60), || {
            status(&mut a, id)["state"] == "live_sync"
        });
    }
    // The served copy is a tenant its clients use here, with the source's data.
    wait_until("the copy is complete", Duration::from_secs(30), || {
        digest(&mut d, "served") == digest(&mut a, "served")
    });
    let copy = digest_checked(&mut d, "served");
    // A backup of the copy is allowed (it only reads)...
    ok(&mut d, &["TENANT.BACKUP", "served", "NAME", "of-the-copy"]);

    // ...a restore over it is not: not from an RDB file, not from a backup, REPLACE or not.
    for args in [
        vec!["TENANT.RESTORE", "served", "RDB", &rdb["served"]],
        vec!["TENANT.RESTORE", "served", "RDB", &rdb["served"], "REPLACE"],
        vec![
            "TENANT.RESTORE",
            "served",
            "BACKUP",
            "of-the-copy",
            "REPLACE",
        ],
    ] {
        let e = err(&mut d, &args);
        assert!(
            e.contains("tenant 'served' is the copy of a sync still running from")
                && e.contains(&served)
                && e.contains("TENANT.MIGRATE.STOP")
                && e.contains("AS <new-tenant>"),
            "{args:?}: {e}"
        );
    }
    // The copy that is not served (an import) is refused as being imported.
    let e = err(
        &mut d,
        &["TENANT.RESTORE", "plain", "RDB", &rdb["plain"], "REPLACE"],
    );
    assert!(e.contains("tenant 'plain' is being imported"), "{e}");
    assert_eq!(digest_checked(&mut d, "served"), copy);
    // Restoring the copy's backup as a new tenant is the way to get at it.
    let done = fields(ok(
        &mut d,
        &[
            "TENANT.RESTORE",
            "served",
            "BACKUP",
            "of-the-copy",
            "AS",
            "served-restored",
        ],
    ));
    assert_eq!(done["digest"], copy.1);

    // The sync goes on: a write on the source reaches the copy.
    ok(&mut a, &["TENANT.USE", "served"]);
    ok(&mut a, &["SET", "after-refusal", "1"]);
    ok(&mut a, &["TENANT.USE", "default"]);
    wait_until(
        "the write reaches the copy",
        Duration::from_secs(30),
        || get(&mut d, "served", "after-refusal").as_deref() == Some("1"),
    );

    // Stopped, the copy is kept as the import's: still refused, naming the import to drop.
    let stopped = map_of(ok(&mut a, &["TENANT.MIGRATE.STOP", &served, "GRACEFUL"]));
    assert_eq!(text(&stopped["status"]), "stopped", "{stopped:?}");
    let e = err(
        &mut d,
        &["TENANT.RESTORE", "served", "RDB", &rdb["served"], "REPLACE"],
    );
    assert!(
        e.contains("tenant 'served' is the stopped copy of a continuous sync")
            && e.contains("TENANT.IMPORT.ABORT imp_"),
        "{e}"
    );
    let import = e
        .split("TENANT.IMPORT.ABORT ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the import id")
        .to_string();
    // Once the operator drops the copy, the restore goes through.
    ok(&mut d, &["TENANT.IMPORT.ABORT", &import]);
    let done = fields(ok(
        &mut d,
        &["TENANT.RESTORE", "served", "RDB", &rdb["served"], "REPLACE"],
    ));
    let recorded = fields(ok(&mut a, &["TENANT.BACKUP.INFO", "served-rdb"]));
    assert_eq!(done["digest"], recorded["digest"]);
    assert_eq!(digest_checked(&mut d, "served").1, recorded["digest"]);
}
