//! Backups and restores that are running, with their progress: what TENANT.BACKUP.JOBS lists,
//! what TENANT.BACKUP.INFO shows for a backup not finished yet, and what keeps two jobs from
//! writing the same backup or restoring into the same tenant at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use parking_lot::Mutex;

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Backup,
    Restore,
}

impl JobKind {
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Restore => "restore",
        }
    }
}

/// The progress of one job, updated by the thread doing the work and read by anybody.
#[derive(Debug)]
pub struct Progress {
    /// Entries written (backup) or loaded (restore) so far.
    pub done: AtomicU64,
    /// Entries expected (the key count at the copy's version, the backup's recorded count, or
    /// the count an RDB file announces for the database loaded, `RESIZEDB`); 0 while unknown
    /// (an RDB file without that announcement, as Redis before 3.2 wrote).
    pub total: AtomicU64,
    /// Bytes of the file read so far and the file's size (restores of an RDB file: its size is
    /// a total known from the start, whatever the file announces); 0 and 0 otherwise.
    pub done_bytes: AtomicU64,
    pub total_bytes: AtomicU64,
    phase: Mutex<&'static str>,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            done_bytes: AtomicU64::new(0),
            total_bytes: AtomicU64::new(0),
            phase: Mutex::new("starting"),
        }
    }

    pub fn set_phase(&self, phase: &'static str) {
        *self.phase.lock() = phase;
    }

    pub fn phase(&self) -> &'static str {
        *self.phase.lock()
    }

    pub fn set_done(&self, n: u64) {
        self.done.store(n, Relaxed);
    }

    pub fn set_total(&self, n: u64) {
        self.total.store(n, Relaxed);
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// One running job.
#[derive(Debug)]
pub struct Job {
    /// The backup id (backups, and restores from a backup) or `rdb:<path>`.
    pub id: String,
    pub kind: JobKind,
    /// The tenant copied (backup) or written (restore).
    pub tenant: String,
    pub started: Instant,
    pub started_ms: u64,
    pub progress: Progress,
}

/// The running jobs, by key (`backup:<id>`, `restore:<tenant>`).
#[derive(Default)]
pub struct Jobs {
    running: Mutex<BTreeMap<String, Arc<Job>>>,
}

/// Removes its job when dropped (finished, failed or cancelled alike).
pub struct JobGuard<'a> {
    jobs: &'a Jobs,
    key: String,
    pub job: Arc<Job>,
}

impl Drop for JobGuard<'_> {
    fn drop(&mut self) {
        self.jobs.running.lock().remove(&self.key);
    }
}

/// An owned [`JobGuard`], for work handed to another thread.
pub struct OwnedJob {
    jobs: Arc<Jobs>,
    key: String,
    pub job: Arc<Job>,
}

impl Drop for OwnedJob {
    fn drop(&mut self) {
        self.jobs.running.lock().remove(&self.key);
    }
}

impl Jobs {
    /// Registers a job; `Err` with the running one if a job with the same key runs already.
    pub fn start(
        self: &Arc<Self>,
        kind: JobKind,
        id: &str,
        tenant: &str,
    ) -> Result<OwnedJob, Arc<Job>> {
        let key = match kind {
            JobKind::Backup => format!("backup:{id}"),
            JobKind::Restore => format!("restore:{tenant}"),
        };
        let mut running = self.running.lock();
        if let Some(j) = running.get(&key) {
            return Err(j.clone());
        }
        let job = Arc::new(Job {
            id: id.to_string(),
            kind,
            tenant: tenant.to_string(),
            started: Instant::now(),
            started_ms: ferrite_storage::now_ms(),
            progress: Progress::new(),
        });
        running.insert(key.clone(), job.clone());
        Ok(OwnedJob {
            jobs: self.clone(),
            key,
            job,
        })
    }

    /// The running backup with this id.
    pub fn backup(&self, id: &str) -> Option<Arc<Job>> {
        self.running.lock().get(&format!("backup:{id}")).cloned()
    }

    /// Every running job, oldest first.
    pub fn list(&self) -> Vec<Arc<Job>> {
        let mut v: Vec<Arc<Job>> = self.running.lock().values().cloned().collect();
        v.sort_by_key(|j| j.started);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_job_per_backup_id_and_per_restored_tenant_until_it_ends() {
        let jobs = Arc::new(Jobs::default());
        let a = jobs.start(JobKind::Backup, "b1", "acme").unwrap();
        assert!(jobs.start(JobKind::Backup, "b1", "acme").is_err());
        assert!(jobs.start(JobKind::Backup, "b2", "acme").is_ok());
        let r = jobs.start(JobKind::Restore, "b1", "acme").unwrap();
        assert!(jobs.start(JobKind::Restore, "b2", "acme").is_err());
        assert!(jobs.backup("b1").is_some());
        drop(a);
        drop(r);
        assert!(jobs.backup("b1").is_none());
        assert!(jobs.start(JobKind::Restore, "b2", "acme").is_ok());
        assert!(jobs.list().is_empty());
    }
}
