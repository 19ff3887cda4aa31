//! Integration tests of backups and restores (TENANT.BACKUP*, TENANT.RESTORE; docs/backup.md):
//! real `ferrite` processes, real backup files, damaged on purpose.

#[path = "../common/mod.rs"]
mod common;

mod util;

mod adversarial;
mod basics;
mod rollback;
mod schedule;
mod sync_copy;
