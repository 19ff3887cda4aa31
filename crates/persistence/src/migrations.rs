//! Migration records in the catalog: the JSON form of `ferrite_tenancy::MigrationRecord`
//! ([`encode`], [`decode`]) and [`MigrationStore`], the migration manager's record sink, which
//! keeps the history bounded (`tenancy.migration.history_max` finished records; unfinished ones
//! are never dropped).
//!
//! The JSON carries a version (`v`); fields added after version 1 have defaults, so a record
//! written before them loads (its settings and orchestration as the defaults).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use ferrite_tenancy::migration::{
    MigrationRecord, MigrationRecordSink, RecordedAuth, RecordedOrchestration, RecordedSettings,
};
use ferrite_tenancy::{
    Approval, ConflictPolicy, MigrationMode, MigrationSettings, MigrationState, Priority,
};
use serde::{Deserialize, Serialize};

use crate::Persistence;

/// Version of the record's JSON written now.
const RECORD_VERSION: u32 = 2;

#[derive(Debug, Serialize, Deserialize)]
struct Json {
    #[serde(default = "one")]
    v: u32,
    id: String,
    tenant: String,
    source: String,
    target: String,
    redirect: String,
    mode: String,
    state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    import_id: Option<String>,
    started_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completed_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    downtime_ms: Option<f64>,
    #[serde(default)]
    keys_migrated: u64,
    #[serde(default)]
    bytes_synced: u64,
    seq: u64,
    // -- version 2 --
    #[serde(default)]
    settings: SettingsJson,
    #[serde(default)]
    orchestration: OrchestrationJson,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    patterns_moved: Vec<usize>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct SettingsJson {
    /// Each pattern's bytes (patterns need not be UTF-8).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    patterns: Vec<Vec<u8>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    conflict: Option<String>,
    parallel: usize,
    batch_size: usize,
    rate_bytes_per_sec: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
    /// `default` or `password` (the password itself is never written).
    auth: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    retention_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backup_of: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct OrchestrationJson {
    priority: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    after: Vec<String>,
    needs_approval: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<ApprovalJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    plan: Vec<(String, String)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ApprovalJson {
    decision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// The record as the catalog keeps it.
pub fn encode(r: &MigrationRecord) -> serde_json::Value {
    let s = &r.settings;
    let o = &r.orchestration;
    let json = Json {
        v: RECORD_VERSION,
        id: r.id.clone(),
        tenant: r.tenant.clone(),
        source: r.source.clone(),
        target: r.target.clone(),
        redirect: r.redirect.clone(),
        mode: r.mode.name().into(),
        state: r.state.name().into(),
        error: r.error.clone(),
        import_id: r.import_id.clone(),
        started_at_ms: r.started_at_ms,
        completed_at_ms: r.completed_at_ms,
        downtime_ms: r.downtime_ms,
        keys_migrated: r.keys_migrated,
        bytes_synced: r.bytes_synced,
        seq: r.seq,
        settings: SettingsJson {
            patterns: s.patterns.clone(),
            conflict: s.conflict.map(|c| c.name().to_string()),
            parallel: s.parallel,
            batch_size: s.batch_size,
            rate_bytes_per_sec: s.rate_bytes_per_sec,
            timeout_ms: s.timeout_ms,
            auth: s.auth.name().into(),
            retention_ms: s.retention_ms,
            backup_of: s.backup_of.clone(),
        },
        orchestration: OrchestrationJson {
            priority: o.priority.name().into(),
            group: o.group.clone(),
            after: o.after.clone(),
            needs_approval: o.needs_approval,
            approval: o.approval.as_ref().map(|a| ApprovalJson {
                decision: a.decision.into(),
                by: a.by.clone(),
                at_ms: a.at_ms,
                reason: a.reason.clone(),
            }),
            plan: o.plan.clone(),
        },
        patterns_moved: r.patterns_moved.clone(),
    };
    serde_json::to_value(json).unwrap_or(serde_json::Value::Null)
}

/// A record back from the catalog; `Err` names what is wrong with it.
pub fn decode(v: &serde_json::Value) -> Result<MigrationRecord, String> {
    let j: Json = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    if j.v > RECORD_VERSION {
        return Err(format!(
            "record version {} is newer than this server's {RECORD_VERSION}",
            j.v
        ));
    }
    let mode = MigrationMode::parse(&j.mode).ok_or_else(|| format!("unknown mode '{}'", j.mode))?;
    let state = MigrationState::ALL
        .into_iter()
        .find(|s| s.name() == j.state)
        .ok_or_else(|| format!("unknown state '{}'", j.state))?;
    let s = j.settings;
    let o = j.orchestration;
    let conflict = match &s.conflict {
        None => None,
        Some(c) => {
            Some(ConflictPolicy::parse(c).ok_or_else(|| format!("unknown conflict policy '{c}'"))?)
        }
    };
    let approval = match o.approval {
        None => None,
        Some(a) => Some(Approval {
            decision: match a.decision.as_str() {
                "pending" => "pending",
                "approved" => "approved",
                "rejected" => "rejected",
                other => return Err(format!("unknown approval decision '{other}'")),
            },
            by: a.by,
            at_ms: a.at_ms,
            reason: a.reason,
        }),
    };
    Ok(MigrationRecord {
        id: j.id,
        tenant: j.tenant,
        source: j.source,
        target: j.target,
        redirect: j.redirect,
        mode,
        state,
        error: j.error,
        import_id: j.import_id,
        started_at_ms: j.started_at_ms,
        completed_at_ms: j.completed_at_ms,
        downtime_ms: j.downtime_ms,
        keys_migrated: j.keys_migrated,
        bytes_synced: j.bytes_synced,
        seq: j.seq,
        settings: RecordedSettings {
            patterns: s.patterns,
            conflict,
            parallel: s.parallel,
            batch_size: s.batch_size,
            rate_bytes_per_sec: s.rate_bytes_per_sec,
            timeout_ms: s.timeout_ms,
            auth: RecordedAuth::parse(&s.auth).unwrap_or_default(),
            retention_ms: s.retention_ms,
            backup_of: s.backup_of,
        },
        orchestration: RecordedOrchestration {
            priority: Priority::parse(&o.priority).unwrap_or_default(),
            group: o.group,
            after: o.after,
            needs_approval: o.needs_approval,
            approval,
            plan: o.plan,
        },
        patterns_moved: j.patterns_moved,
    })
}

/// Finished: nothing will change it but a VERIFY (history).
fn finished(state: &str) -> bool {
    matches!(
        state,
        "completed" | "verified" | "cancelled" | "stopped" | "rolled_back"
    )
}

/// The migration manager's record sink: every record into the catalog (fsynced), and the
/// history kept to `history_max` finished records.
pub struct MigrationStore {
    persistence: Arc<Persistence>,
    history_max: AtomicUsize,
}

impl MigrationStore {
    pub fn new(persistence: Arc<Persistence>) -> MigrationStore {
        MigrationStore {
            persistence,
            history_max: AtomicUsize::new(ferrite_tenancy::migration::DEFAULT_HISTORY_MAX),
        }
    }

    /// The kept records, decoded (one that does not decode is logged and left out).
    pub fn load(&self) -> Vec<MigrationRecord> {
        let mut out = Vec::new();
        for (id, v) in self.persistence.migrations() {
            match decode(&v) {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(migration = %id, error = %e, "catalog: migration record not understood; left out")
                }
            }
        }
        // The bound may have been lowered since the last run.
        self.trim();
        out.retain(|r| self.persistence.has_migration(&r.id));
        out
    }

    /// Drops the oldest finished records beyond `history_max`.
    fn trim(&self) {
        let max = self.history_max.load(Relaxed);
        let mut done: Vec<(u64, String)> = self
            .persistence
            .migrations()
            .into_iter()
            .filter(|(_, v)| {
                v.get("state")
                    .and_then(|s| s.as_str())
                    .is_some_and(finished)
            })
            .map(|(id, v)| (v.get("seq").and_then(|s| s.as_u64()).unwrap_or(0), id))
            .collect();
        if done.len() <= max {
            return;
        }
        done.sort();
        let excess = done.len() - max;
        for (_, id) in done.into_iter().take(excess) {
            if let Err(e) = self.persistence.forget_migration(&id) {
                tracing::warn!(migration = %id, error = %e, "catalog: could not drop an old migration record");
                return;
            }
        }
    }

    fn put(&self, record: &MigrationRecord) -> Result<(), String> {
        self.persistence.put_migration(&record.id, encode(record))?;
        if finished(record.state.name()) {
            self.trim();
        }
        Ok(())
    }
}

impl MigrationRecordSink for MigrationStore {
    fn record(&self, record: &MigrationRecord) {
        if let Err(e) = self.put(record) {
            tracing::warn!(migration = %record.id, error = %e, "catalog: migration record not written");
        }
    }

    fn record_durably(&self, record: &MigrationRecord) -> Result<(), String> {
        self.put(record)
    }

    fn settings_changed(&self, settings: &MigrationSettings) {
        let before = self.history_max.swap(settings.history_max, Relaxed);
        if settings.history_max < before {
            self.trim();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FsyncPolicy, Settings};
    use ferrite_tenancy::{Registry, TenancySettings};

    fn record(id: &str, seq: u64, state: MigrationState) -> MigrationRecord {
        MigrationRecord {
            id: id.into(),
            tenant: "acme".into(),
            source: "10.0.0.1:6379".into(),
            target: "10.0.0.2:6379".into(),
            redirect: "10.0.0.3:6379".into(),
            mode: MigrationMode::Incremental,
            state,
            error: Some("why".into()),
            import_id: Some("imp_1".into()),
            started_at_ms: 5,
            completed_at_ms: None,
            downtime_ms: Some(1.5),
            keys_migrated: 7,
            bytes_synced: 8,
            seq,
            settings: RecordedSettings {
                patterns: vec![b"user:*".to_vec(), b"\xff*".to_vec()],
                conflict: Some(ConflictPolicy::NewestWins),
                parallel: 3,
                batch_size: 17,
                rate_bytes_per_sec: 1000,
                timeout_ms: Some(9000),
                auth: RecordedAuth::Password,
                retention_ms: Some(0),
                backup_of: Some("imp_1".into()),
            },
            orchestration: RecordedOrchestration {
                priority: Priority::High,
                group: Some("g".into()),
                after: vec!["mig_a".into()],
                needs_approval: true,
                approval: Some(Approval {
                    decision: "approved",
                    by: Some("alice@1.2.3.4:5".into()),
                    at_ms: Some(77),
                    reason: None,
                }),
                plan: vec![("connectivity".into(), "ok".into())],
            },
            patterns_moved: vec![0],
        }
    }

    #[test]
    fn records_round_trip_and_never_hold_a_password() {
        let r = record("m1", 4, MigrationState::LiveSync);
        let json = encode(&r);
        assert_eq!(decode(&json).unwrap(), r);
        let text = json.to_string();
        assert!(text.contains("\"auth\":\"password\""), "{text}");
        assert_eq!(json["v"], 2);
    }

    #[test]
    fn a_version_1_record_loads_with_default_settings() {
        let old = serde_json::json!({
            "id": "m1", "tenant": "acme", "source": "a:1", "target": "b:2", "redirect": "b:2",
            "mode": "live", "state": "completed", "started_at_ms": 1, "seq": 3,
            "keys_migrated": 10, "bytes_synced": 20
        });
        let r = decode(&old).unwrap();
        assert_eq!(r.state, MigrationState::Completed);
        assert_eq!(r.settings, RecordedSettings::default());
        assert_eq!(r.orchestration.priority, Priority::Normal);
        assert!(r.patterns_moved.is_empty());
        // A record from a newer server, or with an unknown state, is refused (not guessed).
        let mut newer = old.clone();
        newer["v"] = 3.into();
        assert!(decode(&newer).is_err());
        let mut bad = old;
        bad["state"] = "dancing".into();
        assert!(decode(&bad).unwrap_err().contains("dancing"));
    }

    fn settings(dir: &std::path::Path) -> Settings {
        Settings {
            dir: dir.to_path_buf(),
            appendfsync: FsyncPolicy::Everysec,
            save: Vec::new(),
            auto_compact_percentage: 100,
            auto_compact_min_size: 64 << 20,
        }
    }

    #[test]
    fn history_keeps_the_newest_finished_records_and_every_unfinished_one() {
        let dir = tempfile::tempdir().unwrap();
        let registry = || Arc::new(Registry::new(TenancySettings::default()));
        {
            let p = Persistence::open(settings(dir.path()), &registry()).unwrap();
            let store = MigrationStore::new(p.clone());
            store.settings_changed(&MigrationSettings {
                history_max: 3,
                ..Default::default()
            });
            store.record(&record("running", 1, MigrationState::LiveSync));
            for i in 2..10 {
                store.record(&record(&format!("done{i}"), i, MigrationState::Cancelled));
            }
            store.record(&record("queued", 10, MigrationState::Queued));
            // (The store holds the persistence, and with it the directory's lock.)
            drop(store);
            p.shutdown();
        }
        let p = Persistence::open(settings(dir.path()), &registry()).unwrap();
        let store = MigrationStore::new(p.clone());
        let mut ids: Vec<String> = store.load().into_iter().map(|r| r.id).collect();
        ids.sort();
        assert_eq!(ids, ["done7", "done8", "done9", "queued", "running"]);
        // Lowering the bound drops more at once; the default (1000) keeps all of them.
        store.settings_changed(&MigrationSettings {
            history_max: 1,
            ..Default::default()
        });
        assert_eq!(store.load().len(), 3);
        assert_eq!(MigrationSettings::default().history_max, 1000);
        p.shutdown();
    }
}
