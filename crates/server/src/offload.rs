//! Long work runs off the threads that serve connections.
//!
//! Connections are tasks on a few worker threads, shared by every tenant. A command that would
//! run for long (its work, estimated before it runs by `ferrite_commands::cost`, is above
//! `LONG_WORK`) is handed to tokio's blocking pool with its tenant's keyspace locked, while the
//! connection's task waits for it without occupying a worker. At most [`long_work_slots`] such
//! commands run at once (one core is left to the workers), first come, first served; a tenant
//! whose long command waits for a slot does not hold its keyspace meanwhile.
//!
//! This needs no `block_in_place`: the blocking pool has its own threads.

use std::sync::Arc;

use ferrite_commands::Garbage;
use ferrite_protocol::ErrorReply;
use ferrite_storage::{Db, Keyspace, OwnedDbGuard};
use tokio::sync::SemaphorePermit;

use crate::shared::Shared;

/// How many long commands may run at once: all cores but one, at least one.
pub fn long_work_slots() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_sub(1)
        .max(1)
}

/// Waits for a slot to run long work.
pub async fn slot(sh: &Shared) -> Result<SemaphorePermit<'_>, ErrorReply> {
    sh.long_work
        .acquire()
        .await
        .map_err(|_| ErrorReply::err("server is shutting down"))
}

/// Runs `job` on the blocking pool with the keyspace locked (the lock is taken after a slot is
/// free) and returns its result. Values the job puts in its garbage are freed
/// after the lock is released.
pub async fn run_locked<R: Send + 'static>(
    sh: &Shared,
    ks: &Arc<Keyspace>,
    job: impl FnOnce(&mut Db, &mut Garbage) -> R + Send + 'static,
) -> Result<R, ErrorReply> {
    let _slot = slot(sh).await?;
    let db = ks.lock_owned().await;
    let (db, r, garbage) = run_with(db, job).await?;
    drop(db);
    crate::dispatch::free_later(garbage);
    Ok(r)
}

/// Runs `job` on the blocking pool with a keyspace already locked by the caller, and gives the
/// lock back (a transaction keeps it between its long parts and the server commands between
/// them) with what the job left to free once the lock is released. The caller holds a slot.
pub async fn run_with<R: Send + 'static>(
    mut db: OwnedDbGuard,
    job: impl FnOnce(&mut Db, &mut Garbage) -> R + Send + 'static,
) -> Result<(OwnedDbGuard, R, Garbage), ErrorReply> {
    tokio::task::spawn_blocking(move || {
        let mut garbage = Garbage::default();
        let r = job(&mut db, &mut garbage);
        (db, r, garbage)
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "a long command failed");
        ErrorReply::err("internal error while running the command")
    })
}
