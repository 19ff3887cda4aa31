//! Scheduled backups and retention (`[backup]` in ferrite.toml).

use std::time::Duration;

use crate::common::Server;
use crate::util::*;

fn listed(
    c: &mut redis::Connection,
    tenant: &str,
) -> Vec<std::collections::BTreeMap<String, String>> {
    match ok(c, &["TENANT.BACKUP.LIST", tenant]) {
        redis::Value::Array(a) => a.into_iter().map(fields).collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn scheduled_backups_run_every_interval_and_keep_the_newest_retention() {
    let conf = tempfile::tempdir().unwrap();
    let backups = conf.path().join("my-backups");
    let file = conf.path().join("ferrite.toml");
    std::fs::write(
        &file,
        format!(
            "[backup]\ndir = \"{}\"\ninterval_secs = 1\nretention = 2\n",
            backups.display()
        ),
    )
    .unwrap();
    let s = Server::start_with(&["--config", &file.to_string_lossy()]);
    let mut c = s.conn();
    ok(&mut c, &["TENANT.CREATE", "acme"]);
    fill(&mut c, "acme", 100);
    let manual = text(&ok(&mut c, &["TENANT.BACKUP", "acme", "NAME", "keep-me"]));
    // Rounds happen; retention keeps two scheduled ones (and never touches the manual one).
    let mut seen = std::collections::BTreeSet::new();
    wait_until("four scheduled rounds", Duration::from_secs(30), || {
        for b in listed(&mut c, "acme") {
            if b.get("scheduled").is_some_and(|s| s == "1") {
                seen.insert(b["id"].clone());
            }
        }
        seen.len() >= 4
    });
    // Retention runs right after each new backup: give a round in progress time to prune.
    let mut now = Vec::new();
    wait_until("retention", Duration::from_secs(10), || {
        now = listed(&mut c, "acme");
        now.iter()
            .filter(|b| b.get("scheduled").is_some_and(|s| s == "1"))
            .count()
            <= 2
    });
    let scheduled: Vec<_> = now
        .iter()
        .filter(|b| b.get("scheduled").is_some_and(|s| s == "1"))
        .collect();
    assert!(scheduled.len() <= 2, "retention 2: {now:?}");
    assert!(now.iter().any(|b| b["id"] == manual), "{now:?}");
    for b in &scheduled {
        assert!(
            b["id"].starts_with("backup_") && b["id"].ends_with("_acme"),
            "{b:?}"
        );
        assert!(
            b["path"].starts_with(&backups.display().to_string()),
            "{b:?}"
        );
        // Each is a complete, restorable backup.
        assert_eq!(b["keys"], digest(&mut c, "acme").0.to_string());
    }
    let newest = scheduled.last().expect("a scheduled backup")["id"].clone();
    ok(
        &mut c,
        &["TENANT.RESTORE", "acme", "BACKUP", &newest, "AS", "copy"],
    );
    assert_eq!(digest_checked(&mut c, "copy").1, digest(&mut c, "acme").1);
}

#[test]
fn by_default_nothing_is_scheduled_and_backups_go_under_the_data_directory() {
    // The shipped ferrite.toml (= the built-in defaults) as the server's configuration.
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../../ferrite.toml");
    let s = Server::start_with(&["--config", shipped]);
    let mut c = s.conn();
    ok(&mut c, &["TENANT.CREATE", "acme"]);
    fill(&mut c, "acme", 10);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        listed(&mut c, "acme").is_empty(),
        "interval_secs = 0 schedules nothing"
    );
    let id = text(&ok(&mut c, &["TENANT.BACKUP", "acme"]));
    let info = fields(ok(&mut c, &["TENANT.BACKUP.INFO", &id]));
    assert_eq!(
        std::path::PathBuf::from(&info["path"]),
        s.data_dir().join("backups").join(format!("{id}.fbak"))
    );
}

/// What an operator meets turning the schedule on: the shipped ferrite.toml with only
/// `interval_secs` set (1 s here, to see rounds quickly). The defaults do the rest: backups of
/// every tenant under `<data dir>/backups`, and the newest 7 scheduled ones kept per tenant.
#[test]
fn the_shipped_settings_with_an_interval_keep_seven_per_tenant_under_the_data_directory() {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../ferrite.toml"))
            .unwrap();
    assert!(shipped.contains("\ninterval_secs = 0\n") && shipped.contains("\nretention = 7\n"));
    let conf = tempfile::tempdir().unwrap();
    let file = conf.path().join("ferrite.toml");
    std::fs::write(
        &file,
        shipped.replace("\ninterval_secs = 0\n", "\ninterval_secs = 1\n"),
    )
    .unwrap();
    let s = Server::start_with(&["--config", &file.to_string_lossy()]);
    let mut c = s.conn();
    ok(&mut c, &["TENANT.CREATE", "acme"]);
    fill(&mut c, "acme", 50);
    // Ten rounds: the first three are deleted by retention.
    let mut seen = Vec::<String>::new();
    wait_until("ten scheduled rounds", Duration::from_secs(60), || {
        for b in listed(&mut c, "acme") {
            if b.get("scheduled").is_some_and(|s| s == "1") && !seen.contains(&b["id"]) {
                seen.push(b["id"].clone());
            }
        }
        seen.len() >= 10
    });
    seen.sort();
    let mut now = Vec::new();
    wait_until("retention", Duration::from_secs(10), || {
        now = listed(&mut c, "acme");
        // (A round in progress lists its backup as running.)
        now.retain(|b| b["status"] == "complete");
        now.len() == 7
    });
    let kept: Vec<String> = now.iter().map(|b| b["id"].clone()).collect();
    for old in &seen[..3] {
        assert!(!kept.contains(old), "{old} kept: {kept:?}");
        assert!(
            !s.data_dir()
                .join("backups")
                .join(format!("{old}.fbak"))
                .exists()
        );
    }
    for b in &now {
        assert_eq!(b["scheduled"], "1", "{b:?}");
        assert_eq!(b["format"], "native", "{b:?}");
        assert_eq!(
            std::path::PathBuf::from(&b["path"]),
            s.data_dir()
                .join("backups")
                .join(format!("{}.fbak", b["id"])),
            "{b:?}"
        );
    }
    // `default` has no keys: it is not backed up.
    assert!(listed(&mut c, "default").is_empty());
}
