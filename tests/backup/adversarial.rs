//! Backups and restores that must be refused, changing nothing.

use crate::common::Server;
use crate::util::*;

#[test]
fn ids_that_leave_the_backup_directory_and_unknown_ids_are_refused() {
    let s = Server::start();
    let mut c = s.conn();
    ok(&mut c, &["TENANT.CREATE", "acme"]);
    fill(&mut c, "acme", 10);
    // A file beside the backup directory that a traversal would reach.
    std::fs::write(s.data_dir().join("secret.fbak"), b"not yours").unwrap();
    for id in [
        "../secret",
        "..",
        "../../etc/passwd",
        "a/b",
        ".hidden",
        "x\\y",
    ] {
        for args in [
            vec!["TENANT.BACKUP", "acme", "NAME", id],
            vec!["TENANT.BACKUP.INFO", id],
            vec!["TENANT.BACKUP.DELETE", id],
            vec!["TENANT.RESTORE", "acme", "BACKUP", id, "AS", "x"],
        ] {
            let e = err(&mut c, &args);
            assert!(e.contains("invalid backup id"), "{args:?}: {e}");
        }
    }
    assert!(s.data_dir().join("secret.fbak").exists());
    for args in [
        vec!["TENANT.BACKUP.INFO", "nope"],
        vec!["TENANT.BACKUP.DELETE", "nope"],
        vec!["TENANT.RESTORE", "acme", "BACKUP", "nope", "AS", "x"],
    ] {
        let e = err(&mut c, &args);
        assert!(e.contains("no such backup 'nope'"), "{args:?}: {e}");
    }
    assert!(err(&mut c, &["TENANT.BACKUP", "nobody"]).contains("no such tenant"));
    // Nothing was created by the refused restores.
    assert!(err(&mut c, &["TENANT.INFO", "x"]).contains("no such tenant"));
    // A backup of one tenant is not restored as another by mistake.
    let id = text(&ok(&mut c, &["TENANT.BACKUP", "acme"]));
    ok(&mut c, &["TENANT.CREATE", "other"]);
    let e = err(&mut c, &["TENANT.RESTORE", "other", "BACKUP", &id]);
    assert!(e.contains("is of tenant 'acme'"), "{e}");
    // Named backups are never overwritten.
    ok(&mut c, &["TENANT.BACKUP", "acme", "NAME", "n1"]);
    assert!(err(&mut c, &["TENANT.BACKUP", "acme", "NAME", "n1"]).contains("already exists"));
}

#[test]
fn damaged_or_truncated_backups_are_refused_and_nothing_changes() {
    let s = Server::start();
    let mut c = s.conn();
    ok(&mut c, &["TENANT.CREATE", "acme"]);
    fill(&mut c, "acme", 3000);
    let id = text(&ok(&mut c, &["TENANT.BACKUP", "acme", "NAME", "good"]));
    let path = std::path::PathBuf::from(&fields(ok(&mut c, &["TENANT.BACKUP.INFO", &id]))["path"]);
    let bytes = std::fs::read(&path).unwrap();
    // The live tenant changes after the backup; a refused restore must leave it so.
    ok(&mut c, &["TENANT.USE", "acme"]);
    ok(&mut c, &["SET", "live", "1"]);
    ok(&mut c, &["TENANT.USE", "default"]);
    let live = digest_checked(&mut c, "acme");
    let dir = path.parent().unwrap().to_path_buf();

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut flipped = bytes.clone();
    let mid = bytes.len() / 2;
    flipped[mid] ^= 0x55;
    cases.push(("flipped", flipped));
    cases.push(("truncated", bytes[..bytes.len() - 7].to_vec()));
    cases.push(("half", bytes[..mid].to_vec()));
    cases.push(("header-only", bytes[..8].to_vec()));
    cases.push(("empty", Vec::new()));
    let mut garbage = bytes.clone();
    for b in garbage.iter_mut().skip(200) {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    cases.push(("garbage", garbage));
    for (name, data) in &cases {
        std::fs::write(dir.join(format!("{name}.fbak")), data).unwrap();
    }
    for (name, _) in &cases {
        let e = err(
            &mut c,
            &["TENANT.RESTORE", "acme", "BACKUP", name, "REPLACE"],
        );
        assert!(
            e.contains("refused") || e.contains("cannot be read"),
            "{name}: {e}"
        );
        let e = err(
            &mut c,
            &["TENANT.RESTORE", "acme", "BACKUP", name, "AS", "fresh"],
        );
        assert!(
            e.contains("refused") || e.contains("cannot be read"),
            "{name}: {e}"
        );
        assert_eq!(digest_checked(&mut c, "acme"), live, "{name}");
        assert!(
            err(&mut c, &["TENANT.INFO", "fresh"]).contains("no such tenant"),
            "{name}"
        );
    }
    // LIST shows the damaged files as unreadable (those whose description cannot be read).
    let listed = match ok(&mut c, &["TENANT.BACKUP.LIST"]) {
        redis::Value::Array(a) => a,
        other => panic!("{other:?}"),
    };
    let statuses: Vec<(String, String)> = listed
        .into_iter()
        .map(|v| {
            let f = fields(v);
            (f["id"].clone(), f["status"].clone())
        })
        .collect();
    assert!(
        statuses.contains(&("good".into(), "complete".into())),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&("empty".into(), "unreadable".into())),
        "{statuses:?}"
    );
    // The good one still restores.
    ok(
        &mut c,
        &["TENANT.RESTORE", "acme", "BACKUP", "good", "AS", "fresh"],
    );
    assert_eq!(
        fields(ok(&mut c, &["TENANT.BACKUP.INFO", "good"]))["digest"],
        digest_checked(&mut c, "fresh").1
    );
    assert!(
        s.log().iter().all(|l| !l.contains("panicked")),
        "{:?}",
        s.log()
    );
}

#[test]
fn only_administrators_back_up_and_restore() {
    let s = Server::start();
    let mut c = s.conn();
    ok(&mut c, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]);
    let id = text(&ok(&mut c, &["TENANT.BACKUP", "acme"]));
    let mut anon = s.anon_conn();
    let mut tenant = s.tenant_conn("acme", "pw");
    for conn in [&mut anon, &mut tenant] {
        for args in [
            vec!["TENANT.BACKUP", "acme"],
            vec!["TENANT.BACKUP.LIST"],
            vec!["TENANT.BACKUP.INFO", &id],
            vec!["TENANT.BACKUP.DELETE", &id],
            vec!["TENANT.BACKUP.JOBS"],
            vec!["TENANT.RESTORE", "acme", "BACKUP", &id, "REPLACE"],
            vec!["TENANT.RESTORE", "acme", "RDB", "/etc/passwd", "REPLACE"],
        ] {
            let e = err(conn, &args);
            assert!(e.contains("NOPERM") || e.contains("admin"), "{args:?}: {e}");
        }
    }
    // Still there.
    assert_eq!(
        fields(ok(&mut c, &["TENANT.BACKUP.INFO", &id]))["status"],
        "complete"
    );
}

#[test]
fn backups_and_restores_are_not_allowed_in_transactions() {
    let s = Server::start();
    let mut c = s.conn();
    ok(&mut c, &["MULTI"]);
    let e = err(&mut c, &["TENANT.BACKUP", "default"]);
    assert!(e.contains("not allowed") || e.contains("MULTI"), "{e}");
    let _ = cmd(&mut c, &["DISCARD"]);
}

/// The digest check after a restore: an RDB backup whose description beside it (`.rdb.json`,
/// which no checksum covers) no longer matches its data — another key count, another digest —
/// is refused after loading, and nothing is created or changed.
#[test]
fn a_backup_that_does_not_load_to_its_recorded_digest_is_refused() {
    let s = Server::start();
    let mut c = s.conn();
    ok(&mut c, &["TENANT.CREATE", "acme"]);
    fill(&mut c, "acme", 100);
    ok(
        &mut c,
        &["TENANT.BACKUP", "acme", "NAME", "r1", "FORMAT", "rdb"],
    );
    let info = fields(ok(&mut c, &["TENANT.BACKUP.INFO", "r1"]));
    let meta_path = format!("{}.json", info["path"]);
    let meta = std::fs::read_to_string(&meta_path).unwrap();
    let digest = &info["digest"];
    // The same digest with its first hex digit changed.
    let other_digest = match digest.strip_prefix('0') {
        Some(rest) => format!("1{rest}"),
        None => format!("0{}", &digest[1..]),
    };
    let keys = format!("\"keys\": {}", info["keys"]);
    assert!(
        meta.contains(&keys) && meta.contains(digest.as_str()),
        "{meta}"
    );
    for (what, forged) in [
        ("digest", meta.replace(digest.as_str(), &other_digest)),
        ("keys", meta.replace(&keys, "\"keys\": 1")),
    ] {
        std::fs::write(&meta_path, &forged).unwrap();
        let e = err(
            &mut c,
            &["TENANT.RESTORE", "acme", "BACKUP", "r1", "AS", "fresh"],
        );
        assert!(
            e.contains("does not load to what it recorded") && e.contains("was not changed"),
            "{what}: {e}"
        );
        assert!(err(&mut c, &["TENANT.INFO", "fresh"]).contains("no such tenant"));
    }
    std::fs::write(&meta_path, &meta).unwrap();
    ok(
        &mut c,
        &["TENANT.RESTORE", "acme", "BACKUP", "r1", "AS", "fresh"],
    );
    assert_eq!(&digest_checked(&mut c, "fresh").1, digest);
}
