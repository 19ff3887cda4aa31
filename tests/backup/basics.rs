//! Backups and restores that work.

use std::time::Duration;

use crate::common::Server;
use crate::util::*;

#[test]
fn a_backup_restores_as_a_new_tenant_to_the_recorded_point_in_time() {
    let s = Server::start();
    let mut c = s.conn();
    ok(&mut c, &["TENANT.CREATE", "acme"]);
    fill(&mut c, "acme", 500);
    let before = contents(&mut c, "acme");
    let (keys, d) = digest_checked(&mut c, "acme");
    let id = text(&ok(&mut c, &["TENANT.BACKUP", "acme"]));
    // backup_<yyyymmddThhmmssZ>_<tenant>
    assert!(id.starts_with("backup_") && id.ends_with("Z_acme"), "{id}");
    assert_eq!(id.len(), "backup_20240115T103000Z_acme".len(), "{id}");

    let info = fields(ok(&mut c, &["TENANT.BACKUP.INFO", &id]));
    assert_eq!(info["tenant"], "acme");
    assert_eq!(info["status"], "complete");
    assert_eq!(info["format"], "native");
    assert_eq!(info["keys"], keys.to_string());
    assert_eq!(info["digest"], d);
    assert_eq!(info["scheduled"], "0");
    let path = std::path::PathBuf::from(&info["path"]);
    assert_eq!(
        path,
        s.data_dir().join("backups").join(format!("{id}.fbak"))
    );
    assert_eq!(
        info["size"],
        std::fs::metadata(&path).unwrap().len().to_string()
    );
    assert!(info["created"].ends_with('Z'), "{info:?}");

    // Later writes are not in the backup.
    ok(&mut c, &["TENANT.USE", "acme"]);
    ok(&mut c, &["SET", "after", "1"]);
    ok(&mut c, &["DEL", "k1"]);
    ok(&mut c, &["TENANT.USE", "default"]);

    let listed = match ok(&mut c, &["TENANT.BACKUP.LIST", "acme"]) {
        redis::Value::Array(a) => a,
        other => panic!("{other:?}"),
    };
    assert_eq!(listed.len(), 1);
    assert_eq!(fields(listed[0].clone())["id"], id);
    let none = ok(&mut c, &["TENANT.BACKUP.LIST", "other"]);
    assert_eq!(none, redis::Value::Array(vec![]));

    let done = fields(ok(
        &mut c,
        &[
            "TENANT.RESTORE",
            "acme",
            "BACKUP",
            &id,
            "AS",
            "acme-restored",
        ],
    ));
    assert_eq!(done["tenant"], "acme-restored");
    assert_eq!(done["keys"], keys.to_string());
    assert_eq!(done["digest"], d);
    assert_eq!(digest_checked(&mut c, "acme-restored"), (keys, d.clone()));
    assert_eq!(contents(&mut c, "acme-restored"), before);
    // The source tenant kept its later writes.
    assert_ne!(digest(&mut c, "acme").1, d);

    // Restoring again into the now non-empty tenant needs REPLACE.
    ok(&mut c, &["TENANT.USE", "acme-restored"]);
    ok(&mut c, &["SET", "extra", "x"]);
    ok(&mut c, &["TENANT.USE", "default"]);
    let e = err(
        &mut c,
        &[
            "TENANT.RESTORE",
            "acme",
            "BACKUP",
            &id,
            "AS",
            "acme-restored",
        ],
    );
    assert!(e.contains("BUSYKEY") && e.contains("REPLACE"), "{e}");
    ok(
        &mut c,
        &[
            "TENANT.RESTORE",
            "acme",
            "BACKUP",
            &id,
            "AS",
            "acme-restored",
            "REPLACE",
        ],
    );
    assert_eq!(contents(&mut c, "acme-restored"), before);

    ok(&mut c, &["TENANT.BACKUP.DELETE", &id]);
    assert!(!path.exists());
    let e = err(&mut c, &["TENANT.BACKUP.INFO", &id]);
    assert!(e.contains("no such backup"), "{e}");
}

#[test]
fn restore_over_a_live_tenant_is_atomic_and_what_restarts_is_the_restored_data() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), &[]);
    let mut c = s.conn();
    ok(&mut c, &["TENANT.CREATE", "acme"]);
    fill(&mut c, "acme", 2000);
    let id = text(&ok(
        &mut c,
        &["TENANT.BACKUP", "acme", "NAME", "before-change"],
    ));
    assert_eq!(id, "before-change");
    let backed = contents(&mut c, "acme");
    let recorded = digest(&mut c, "acme");

    // Changes after the backup, then a client that watches a key.
    ok(&mut c, &["TENANT.USE", "acme"]);
    ok(&mut c, &["FLUSHALL"]);
    ok(&mut c, &["SET", "k1", "changed"]);
    let mut w = s.conn();
    ok(&mut w, &["TENANT.USE", "acme"]);
    ok(&mut w, &["WATCH", "k1"]);
    // A client blocked on a key the backup holds is served by the restore.
    let mut b = s.conn();
    ok(&mut b, &["TENANT.USE", "acme"]);
    let blocked = std::thread::spawn(move || cmd(&mut b, &["BLPOP", "list", "10"]));
    std::thread::sleep(Duration::from_millis(200));

    // A reader polling during the restore sees either the old or the new data, never a mix.
    let addr = s.admin_url();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut r = redis::Client::open(addr).unwrap().get_connection().unwrap();
        ok(&mut r, &["TENANT.USE", "acme"]);
        let mut seen = std::collections::BTreeSet::new();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let (n, k1): (i64, Option<String>) = redis::pipe()
                .atomic()
                .cmd("DBSIZE")
                .cmd("GET")
                .arg("k1")
                .query(&mut r)
                .unwrap();
            seen.insert((n, k1));
        }
        seen
    });
    ok(&mut c, &["TENANT.USE", "default"]);
    let e = err(&mut c, &["TENANT.RESTORE", "acme", "BACKUP", &id]);
    assert!(e.contains("BUSYKEY"), "{e}");
    ok(
        &mut c,
        &["TENANT.RESTORE", "acme", "BACKUP", &id, "REPLACE"],
    );
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.join().unwrap();
    for (n, k1) in &seen {
        let old = *n == 1 && k1.as_deref() == Some("changed");
        let new = *n as u64 == recorded.0 && k1.as_deref() == Some("value-1");
        assert!(old || new, "a mix was visible: {n} keys, k1 = {k1:?}");
    }

    // The WATCH fails; the blocked client got the restored list's head.
    ok(&mut w, &["MULTI"]);
    ok(&mut w, &["SET", "k1", "from-watch"]);
    assert_eq!(ok(&mut w, &["EXEC"]), redis::Value::Nil);
    let popped = blocked.join().unwrap().unwrap();
    assert_eq!(
        format!("{popped:?}"),
        format!(
            "{:?}",
            redis::Value::Array(vec![
                redis::Value::BulkString(b"list".to_vec()),
                redis::Value::BulkString(b"a".to_vec())
            ])
        )
    );
    // The pop is a write after the restore; so is this one.
    ok(&mut c, &["TENANT.USE", "acme"]);
    ok(&mut c, &["SET", "after-restore", "1"]);
    ok(&mut c, &["TENANT.USE", "default"]);
    let mut expected = backed.clone();
    expected.insert("list".into(), contents(&mut c, "acme")["list"].clone());
    expected.insert(
        "after-restore".into(),
        contents(&mut c, "acme")["after-restore"].clone(),
    );
    assert_eq!(contents(&mut c, "acme"), expected);
    let now = digest_checked(&mut c, "acme");

    // What a restart brings back is the restored data plus the writes after it.
    drop(c);
    drop(w);
    let mut s = s;
    let _ = cmd(&mut s.conn(), &["SHUTDOWN"]);
    assert!(
        s.wait_exit(Duration::from_secs(20)).is_some(),
        "{:?}",
        s.log()
    );
    drop(s);
    let s = Server::start_in(dir.path(), &[]);
    let mut c = s.conn();
    assert_eq!(digest_checked(&mut c, "acme"), now);
    assert_eq!(contents(&mut c, "acme"), expected);
}

/// A backup does not pause its tenant: while the file is being written (the job listed as
/// `writing`), a client's writes are answered, and none of them is in the backup, which
/// restores to exactly the digest the tenant had when it was taken.
#[test]
fn writes_are_answered_while_a_backup_is_written_and_none_is_in_it() {
    const KEYS: usize = 400_000;
    let s = Server::start();
    let mut c = s.conn();
    ok(&mut c, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]);
    let mut w = s.tenant_conn("acme", "pw");
    for start in (0..KEYS).step_by(10_000) {
        let mut p = redis::pipe();
        for k in start..(start + 10_000).min(KEYS) {
            p.cmd("SET")
                .arg(format!("key:{k}"))
                .arg(format!("value-{k}"))
                .ignore();
        }
        p.query::<()>(&mut w).unwrap();
    }
    let at_start = digest_checked(&mut c, "acme");
    let mut backer = s.conn();
    let backup = std::thread::spawn(move || {
        text(&ok(
            &mut backer,
            &["TENANT.BACKUP", "acme", "NAME", "during"],
        ))
    });
    let writing = |c: &mut redis::Connection| match ok(c, &["TENANT.BACKUP.JOBS"]) {
        redis::Value::Array(jobs) => jobs
            .into_iter()
            .map(fields)
            .any(|j| j["id"] == "during" && j["phase"] == "writing"),
        other => panic!("{other:?}"),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    // Writes answered while the backup was still being written after them.
    let mut answered_during = 0;
    let mut n = 0;
    while !backup.is_finished() {
        assert!(std::time::Instant::now() < deadline, "the backup hangs");
        if !writing(&mut c) {
            continue;
        }
        ok(&mut w, &["SET", &format!("key:{n}"), "changed"]);
        ok(&mut w, &["SET", &format!("new:{n}"), "x"]);
        n += 1;
        if writing(&mut c) {
            answered_during += 1;
        }
    }
    assert_eq!(backup.join().unwrap(), "during");
    assert!(
        answered_during > 0,
        "no write was answered while the backup was written"
    );
    let info = fields(ok(&mut c, &["TENANT.BACKUP.INFO", "during"]));
    assert_eq!(
        (info["keys"].parse::<u64>().unwrap(), info["digest"].clone()),
        at_start
    );
    ok(
        &mut c,
        &["TENANT.RESTORE", "acme", "BACKUP", "during", "AS", "snap"],
    );
    assert_eq!(digest_checked(&mut c, "snap"), at_start);
    ok(&mut c, &["TENANT.USE", "snap"]);
    assert_eq!(text(&ok(&mut c, &["GET", "key:0"])), "value-0");
    assert_eq!(ok(&mut c, &["EXISTS", "new:0"]), redis::Value::Int(0));
    ok(&mut c, &["TENANT.USE", "default"]);
    assert_ne!(digest(&mut c, "acme"), at_start);
}
