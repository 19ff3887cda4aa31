//! Native backup files: the persistence crate's snapshot format (file header, framed records
//! with a CRC-32 each, an end record that counts the entries), with the backup's description
//! ([`BackupMeta`], JSON) as the frame after the snapshot header — so a backup file describes
//! itself and `ferrite --check-data`-style readers can read it like any snapshot.

use std::path::Path;
use std::sync::Arc;

use ferrite_persistence::record::FileHeader;
use ferrite_persistence::snapshot;
use ferrite_storage::Keyspace;

use super::store::{self, BackupMeta, Format};
use super::{OpenedCopy, Progress};

/// Writes the copy to `<dir>/<meta.id>.fbak` (through a `.tmp` file, fsynced, renamed, the
/// directory fsynced). Returns the file's size.
pub fn write(
    opened: OpenedCopy,
    dir: &Path,
    meta: &BackupMeta,
    progress: &Progress,
) -> Result<u64, String> {
    let path = store::data_path(dir, &meta.id, Format::Native);
    let tmp = dir.join(format!("{}.fbak.tmp", meta.id));
    let description = serde_json::to_vec(meta).map_err(|e| e.to_string())?;
    let header = FileHeader {
        tenant: meta.tenant.clone(),
        incarnation: 0,
        generation: 0,
        version: opened.copy.version(),
        created_ms: meta.created_ms,
        keys: Some(meta.keys),
    };
    let written = snapshot::write_file(
        opened.copy,
        &tmp,
        &header,
        Some(&description),
        &opened.libraries,
        &|n| progress.set_done(n),
    )?;
    if let Err(e) = std::fs::rename(&tmp, &path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot rename {}: {e}", tmp.display()));
    }
    ferrite_persistence::paths::sync_dir(dir)
        .map_err(|e| format!("cannot sync {}: {e}", dir.display()))?;
    Ok(written.bytes)
}

/// Reads a native backup's description (its first two frames, checksums checked).
pub fn read_meta(path: &Path) -> Result<BackupMeta, String> {
    let (header, description) = snapshot::read_backup_info(path).map_err(|e| e.to_string())?;
    let meta: BackupMeta = serde_json::from_slice(&description)
        .map_err(|e| format!("{}: not a backup description: {e}", path.display()))?;
    if meta.tenant != header.tenant || meta.format != Format::Native {
        return Err(format!(
            "{}: the description does not match the file",
            path.display()
        ));
    }
    Ok(meta)
}

/// Loads a native backup into a fresh keyspace nobody else sees, checking every frame's
/// checksum, the entry count of the end record, and that the loaded keys and digest are the
/// ones recorded when the backup was taken. Nothing outside the returned keyspace changes,
/// whatever the file holds.
pub fn load(path: &Path, progress: &Progress) -> Result<(BackupMeta, Arc<Keyspace>), String> {
    let meta = read_meta(path)?;
    progress.set_total(meta.keys);
    let fresh = Arc::new(Keyspace::new());
    {
        let mut db = fresh.lock();
        // The recorded count sizes the table once (capped by what the file can hold: the
        // file's word is checked later).
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        db.reserve(ferrite_persistence::record::reservation(
            Some(meta.keys),
            size,
        ));
        snapshot::load_counting(path, &mut db, &|n| progress.set_done(n))
            .map_err(|e| e.to_string())?;
    }
    verify(&meta, &fresh)?;
    Ok((meta, fresh))
}

/// Checks that `fresh` holds what `meta` recorded: key count and digest.
pub fn verify(meta: &BackupMeta, fresh: &Keyspace) -> Result<(), String> {
    let db = fresh.lock();
    let d = db.digest();
    let digest = BackupMeta::digest_hex(d.combined());
    if d.keys() != meta.keys || digest != meta.digest {
        return Err(format!(
            "backup '{}' does not load to what it recorded: {} keys with digest {digest}, expected {} keys with digest {}",
            meta.id,
            d.keys(),
            meta.keys,
            meta.digest
        ));
    }
    Ok(())
}
