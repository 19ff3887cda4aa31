//! Where things live in a data directory.
//!
//! ```text
//! <dir>/LOCK                               held (flock) by the server using the directory
//! <dir>/catalog.fcat                       tenants, moved records, migration history
//! <dir>/tenants/<incarnation>-<tenant>/    one tenant's data
//!     snap-<generation>.fsnap              the tenant at the start of log <generation>
//!     log-<generation>.flog                effects after that point
//!     *.tmp                                a snapshot being written (deleted at startup)
//! ```
//! The incarnation number (unique per tenant record ever created here) keeps a deleted and
//! re-created tenant, or a staged import, apart from the files of an earlier one, and puts a
//! digit in front of ids such as `..`.

use std::path::{Path, PathBuf};

pub const CATALOG: &str = "catalog.fcat";
pub const LOCK: &str = "LOCK";
pub const TENANTS: &str = "tenants";

pub fn tenant_dir(root: &Path, incarnation: u64, tenant: &str) -> PathBuf {
    root.join(TENANTS).join(format!("{incarnation}-{tenant}"))
}

/// The incarnation and tenant id a tenant directory is named after.
pub fn parse_tenant_dir(name: &str) -> Option<(u64, &str)> {
    let (n, id) = name.split_once('-')?;
    Some((n.parse().ok()?, id))
}

pub fn snapshot_file(generation: u64) -> String {
    format!("snap-{generation:08}.fsnap")
}

pub fn log_file(generation: u64) -> String {
    format!("log-{generation:08}.flog")
}

/// What a file in a tenant directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantFile {
    Snapshot(u64),
    Log(u64),
    Temporary,
    Other,
}

pub fn classify(name: &str) -> TenantFile {
    if name.ends_with(".tmp") {
        return TenantFile::Temporary;
    }
    let number = |s: &str, prefix: &str, suffix: &str| {
        s.strip_prefix(prefix)?
            .strip_suffix(suffix)?
            .parse::<u64>()
            .ok()
    };
    if let Some(g) = number(name, "snap-", ".fsnap") {
        return TenantFile::Snapshot(g);
    }
    if let Some(g) = number(name, "log-", ".flog") {
        return TenantFile::Log(g);
    }
    TenantFile::Other
}

/// Makes a directory's entries (new, renamed, deleted files) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(classify(&snapshot_file(12)), TenantFile::Snapshot(12));
        assert_eq!(classify(&log_file(3)), TenantFile::Log(3));
        assert_eq!(classify("snap-00000001.fsnap.tmp"), TenantFile::Temporary);
        assert_eq!(classify("notes.txt"), TenantFile::Other);
        let d = tenant_dir(Path::new("/d"), 4, "..");
        assert_eq!(d, PathBuf::from("/d/tenants/4-.."));
        assert_eq!(parse_tenant_dir("4-a-b"), Some((4, "a-b")));
        assert_eq!(parse_tenant_dir("x-a"), None);
    }
}
