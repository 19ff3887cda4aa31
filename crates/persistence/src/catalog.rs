//! The tenant catalog: one record per tenant (credential as its salted hash, quotas, throttle,
//! state, moved address), and the history of migrations. An append-only file of frames whose
//! payloads are JSON (small, rare, and readable with a hex dump when something goes wrong);
//! rewritten whole (temporary file, fsync, rename) when superseded records pile up.
//!
//! Every change is fsynced before the call returns: a tenant whose `moved` record was saved is
//! never served again by this server, even after a power loss.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::format::{FrameError, FrameReader, Kind, put_file_header, put_frame};
use crate::paths;
use crate::snapshot::LoadError;

/// A tenant as the catalog keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub id: String,
    /// Which directory holds its data (see [`crate::paths`]).
    pub incarnation: u64,
    /// The encoded salted hash (`Credential::encode`), never a password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    pub maxmemory: u64,
    pub maxkeys: u64,
    pub ops: u64,
    /// Added after the first catalogs were written: absent = 0 (unlimited).
    #[serde(default)]
    pub maxclients: u64,
    /// `active`, `suspended` or `moved`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_to: Option<String>,
    pub created_ms: u64,
    /// The tenant's ACL users (ACL SETUSER), each as its name and rule tokens (passwords only as
    /// salted hashes). Added later: absent = none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acl_users: Vec<AclUserRecord>,
}

/// One ACL user of a tenant (`ferrite_tenancy::acl::UserRecord`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclUserRecord {
    pub name: String,
    pub rules: Vec<String>,
}

/// One catalog record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Record {
    Tenant(TenantRecord),
    Delete {
        id: String,
        incarnation: u64,
    },
    /// A migration's record as the migration manager describes it (opaque here).
    Migration {
        id: String,
        record: serde_json::Value,
    },
    ForgetMigration {
        id: String,
    },
    /// The next incarnation number to hand out.
    Next {
        incarnation: u64,
    },
}

/// The catalog, in memory and on disk.
pub struct Catalog {
    path: PathBuf,
    file: File,
    tenants: BTreeMap<String, TenantRecord>,
    migrations: BTreeMap<String, serde_json::Value>,
    next_incarnation: u64,
    /// Records in the file, for deciding when to rewrite it.
    records: usize,
}

/// What loading found besides the records.
#[derive(Debug, Default)]
pub struct CatalogLoad {
    /// A torn last record was dropped: (offset, reason).
    pub torn: Option<(u64, String)>,
}

impl Catalog {
    /// Opens (creating) the catalog of a data directory. A torn last record is cut off (it was
    /// never acknowledged); damage elsewhere refuses, naming the file and offset.
    pub fn open(root: &Path) -> Result<(Catalog, CatalogLoad), LoadError> {
        Self::open_with(root, true)
    }

    /// [`Catalog::open`]; without `repair` a torn tail is reported but left in place (and a
    /// missing file is not created): for checking a directory without changing it.
    pub fn open_with(root: &Path, repair: bool) -> Result<(Catalog, CatalogLoad), LoadError> {
        let path = root.join(paths::CATALOG);
        let mut load = CatalogLoad::default();
        let mut tenants = BTreeMap::new();
        let mut migrations = BTreeMap::new();
        let mut next_incarnation = 1u64;
        let mut records = 0usize;
        let exists = path.exists();
        if exists {
            let file = File::open(&path).map_err(|e| LoadError::new(&path, e.to_string()))?;
            let size = file
                .metadata()
                .map_err(|e| LoadError::new(&path, e.to_string()))?
                .len();
            let mut good_end = 0u64;
            match FrameReader::open(BufReader::new(file), size, Kind::Catalog) {
                Err(FrameError::Torn { offset, reason }) => {
                    load.torn = Some((offset, reason.to_string()));
                }
                Err(e) => return Err(LoadError::frame(&path, e)),
                Ok(mut r) => {
                    let mut buf = Vec::new();
                    loop {
                        match r.next_frame(&mut buf) {
                            Ok(Some(at)) => {
                                let rec: Record = serde_json::from_slice(&buf).map_err(|e| {
                                    LoadError::corrupt(&path, at, format!("bad record: {e}"))
                                })?;
                                records += 1;
                                apply(&mut tenants, &mut migrations, &mut next_incarnation, rec);
                            }
                            Ok(None) => break,
                            Err(FrameError::Torn { offset, reason }) => {
                                load.torn = Some((offset, reason.to_string()));
                                break;
                            }
                            Err(e) => return Err(LoadError::frame(&path, e)),
                        }
                        good_end = r.offset();
                    }
                    if load.torn.is_none() {
                        good_end = size;
                    }
                }
            }
            if let (false, Some(_)) = (repair, &load.torn) {
                let file = File::open(&path).map_err(|e| LoadError::new(&path, e.to_string()))?;
                return Ok((
                    Catalog {
                        path,
                        file,
                        tenants,
                        migrations,
                        next_incarnation,
                        records,
                    },
                    load,
                ));
            }
            if let Some((offset, reason)) = &load.torn {
                tracing::warn!(file = %path.display(), offset, reason = %reason, "catalog: dropping a torn last record (it was never acknowledged)");
                let keep = if *offset < 8 {
                    0
                } else {
                    good_end.max(*offset)
                };
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| LoadError::new(&path, e.to_string()))?;
                f.set_len(keep)
                    .and_then(|_| f.sync_all())
                    .map_err(|e| LoadError::new(&path, format!("cannot truncate: {e}")))?;
            }
        }
        if !repair && !exists {
            return Err(LoadError::new(
                &path,
                "no catalog: not a Ferrite data directory",
            ));
        }
        let mut file = OpenOptions::new()
            .create(repair)
            .append(true)
            .open(&path)
            .map_err(|e| LoadError::new(&path, e.to_string()))?;
        let len = file
            .metadata()
            .map_err(|e| LoadError::new(&path, e.to_string()))?
            .len();
        if len == 0 {
            let mut head = Vec::new();
            put_file_header(&mut head, Kind::Catalog);
            file.write_all(&head)
                .and_then(|_| file.sync_all())
                .map_err(|e| LoadError::new(&path, e.to_string()))?;
            paths::sync_dir(root).map_err(|e| LoadError::new(root, e.to_string()))?;
        }
        Ok((
            Catalog {
                path,
                file,
                tenants,
                migrations,
                next_incarnation,
                records,
            },
            load,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn tenants(&self) -> impl Iterator<Item = &TenantRecord> {
        self.tenants.values()
    }

    pub fn tenant(&self, id: &str) -> Option<&TenantRecord> {
        self.tenants.get(id)
    }

    pub fn migrations(&self) -> impl Iterator<Item = (&String, &serde_json::Value)> {
        self.migrations.iter()
    }

    /// Hands out an incarnation number (durable before it is used for a directory).
    pub fn new_incarnation(&mut self) -> std::io::Result<u64> {
        let n = self.next_incarnation;
        self.append(Record::Next { incarnation: n + 1 })?;
        Ok(n)
    }

    pub fn put_tenant(&mut self, r: TenantRecord) -> std::io::Result<()> {
        if self.tenants.get(&r.id) == Some(&r) {
            return Ok(());
        }
        self.append(Record::Tenant(r))
    }

    pub fn delete_tenant(&mut self, id: &str, incarnation: u64) -> std::io::Result<()> {
        if self
            .tenants
            .get(id)
            .is_none_or(|r| r.incarnation != incarnation)
        {
            return Ok(());
        }
        self.append(Record::Delete {
            id: id.to_string(),
            incarnation,
        })
    }

    pub fn put_migration(&mut self, id: &str, record: serde_json::Value) -> std::io::Result<()> {
        if self.migrations.get(id) == Some(&record) {
            return Ok(());
        }
        self.append(Record::Migration {
            id: id.to_string(),
            record,
        })
    }

    pub fn forget_migration(&mut self, id: &str) -> std::io::Result<()> {
        if !self.migrations.contains_key(id) {
            return Ok(());
        }
        self.append(Record::ForgetMigration { id: id.to_string() })
    }

    /// Appends one record and fsyncs it; then applies it in memory.
    fn append(&mut self, rec: Record) -> std::io::Result<()> {
        let payload = serde_json::to_vec(&rec).map_err(std::io::Error::other)?;
        let mut frame = Vec::with_capacity(payload.len() + 16);
        put_frame(&mut frame, &payload);
        self.file.write_all(&frame)?;
        self.file.sync_data()?;
        self.records += 1;
        apply(
            &mut self.tenants,
            &mut self.migrations,
            &mut self.next_incarnation,
            rec,
        );
        let live = self.tenants.len() + self.migrations.len() + 1;
        // The appended record is durable; the rewrite is only housekeeping.
        if self.records > 4 * live + 64
            && let Err(e) = self.rewrite()
        {
            tracing::warn!(file = %self.path.display(), error = %e, "catalog: rewrite failed");
        }
        Ok(())
    }

    /// Replaces the file with one holding only the live records.
    pub fn rewrite(&mut self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("fcat.tmp");
        let mut out = Vec::new();
        put_file_header(&mut out, Kind::Catalog);
        let mut records = 0;
        let mut add = |rec: &Record, out: &mut Vec<u8>| -> std::io::Result<()> {
            let payload = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
            put_frame(out, &payload);
            records += 1;
            Ok(())
        };
        add(
            &Record::Next {
                incarnation: self.next_incarnation,
            },
            &mut out,
        )?;
        for t in self.tenants.values() {
            add(&Record::Tenant(t.clone()), &mut out)?;
        }
        for (id, m) in &self.migrations {
            add(
                &Record::Migration {
                    id: id.clone(),
                    record: m.clone(),
                },
                &mut out,
            )?;
        }
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&out)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            paths::sync_dir(dir)?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.records = records;
        Ok(())
    }
}

fn apply(
    tenants: &mut BTreeMap<String, TenantRecord>,
    migrations: &mut BTreeMap<String, serde_json::Value>,
    next: &mut u64,
    rec: Record,
) {
    match rec {
        Record::Tenant(t) => {
            *next = (*next).max(t.incarnation + 1);
            tenants.insert(t.id.clone(), t);
        }
        Record::Delete { id, incarnation } => {
            if tenants
                .get(&id)
                .is_some_and(|t| t.incarnation == incarnation)
            {
                tenants.remove(&id);
            }
        }
        Record::Migration { id, record } => {
            migrations.insert(id, record);
        }
        Record::ForgetMigration { id } => {
            migrations.remove(&id);
        }
        Record::Next { incarnation } => *next = (*next).max(incarnation),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, inc: u64, state: &str) -> TenantRecord {
        TenantRecord {
            id: id.into(),
            incarnation: inc,
            credential: Some("sha256:00:11".into()),
            maxmemory: 1,
            maxkeys: 2,
            ops: 3,
            maxclients: 4,
            state: state.into(),
            moved_to: (state == "moved").then(|| "10.0.0.1:6379".to_string()),
            created_ms: 9,
            acl_users: vec![AclUserRecord {
                name: "bob".into(),
                rules: vec!["reset".into(), "on".into(), "~x*".into()],
            }],
        }
    }

    #[test]
    fn records_written_before_maxclients_existed_load_as_unlimited() {
        let old = r#"{"id":"a","incarnation":1,"maxmemory":1,"maxkeys":2,"ops":3,"state":"active","created_ms":9}"#;
        let r: TenantRecord = serde_json::from_str(old).unwrap();
        assert_eq!(r.maxclients, 0);
        assert!(r.acl_users.is_empty(), "and without ACL users");
    }

    #[test]
    fn records_survive_reopening_and_rewrites() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut c, _) = Catalog::open(dir.path()).unwrap();
            let a = c.new_incarnation().unwrap();
            c.put_tenant(rec("a", a, "active")).unwrap();
            let b = c.new_incarnation().unwrap();
            c.put_tenant(rec("b", b, "active")).unwrap();
            c.put_tenant(rec("b", b, "moved")).unwrap();
            c.delete_tenant("a", a).unwrap();
            c.put_migration("m1", serde_json::json!({"state": "completed"}))
                .unwrap();
        }
        let (mut c, load) = Catalog::open(dir.path()).unwrap();
        assert!(load.torn.is_none());
        assert!(c.tenant("a").is_none());
        assert_eq!(c.tenant("b").unwrap().state, "moved");
        assert_eq!(c.tenant("b").unwrap().maxclients, 4);
        assert_eq!(
            c.tenant("b").unwrap().acl_users,
            rec("b", 0, "moved").acl_users
        );
        assert_eq!(c.migrations().count(), 1);
        let next = c.new_incarnation().unwrap();
        assert!(next >= 3, "incarnations are never reused");
        c.rewrite().unwrap();
        drop(c);
        let (c, _) = Catalog::open(dir.path()).unwrap();
        assert_eq!(
            c.tenant("b").unwrap().moved_to.as_deref(),
            Some("10.0.0.1:6379")
        );
        assert!(c.next_incarnation > next);
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_damage_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut c, _) = Catalog::open(dir.path()).unwrap();
            c.put_tenant(rec("a", 1, "active")).unwrap();
            c.put_tenant(rec("b", 2, "active")).unwrap();
        }
        let path = dir.path().join(paths::CATALOG);
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 3]).unwrap();
        let (c, load) = Catalog::open(dir.path()).unwrap();
        assert!(load.torn.is_some());
        assert!(c.tenant("a").is_some() && c.tenant("b").is_none());
        drop(c);
        // Appending after the cut works and reads back.
        {
            let (mut c, _) = Catalog::open(dir.path()).unwrap();
            c.put_tenant(rec("c", 3, "active")).unwrap();
        }
        let (c, load) = Catalog::open(dir.path()).unwrap();
        assert!(load.torn.is_none());
        assert!(c.tenant("c").is_some());
        drop(c);
        let mut bad = std::fs::read(&path).unwrap();
        bad[20] ^= 0x55;
        std::fs::write(&path, &bad).unwrap();
        let err = Catalog::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("catalog.fcat"), "{err}");
        assert!(err.to_string().contains("offset"), "{err}");
    }
}
