//! TENANT.MIGRATE.STOP of a continuous sync (`MODE continuous`).
//!
//! GRACEFUL brings the target to one *consistency point* without pausing the tenant's writes:
//! the last drain takes every changed key in one hold of the tenant's lock and records, in that
//! same hold, the instant, the key count and the digest it left the source at. Once the target
//! has acknowledged everything shipped and reports the same key count and digest, its copy is
//! exactly the source as of that instant (writes after it stay on the source only). When large
//! values had to be copied whole (each in a hold of its own) or the target does not match, it
//! tries again, a few times; failing that, the stop is refused and the sync goes on.
//!
//! IMMEDIATE interrupts the run wherever it waits, and reports what the target may be missing:
//! the keys of batches it had not acknowledged (sent or not) and the changes not read yet.
//!
//! Either way the source stays the owner, untouched (change capture stops), and the target is
//! asked to keep its copy as a *stopped import* (not reaped; clients still get TRYAGAIN there;
//! TENANT.IMPORT.ABORT drops it, a new migration of the tenant to that server replaces it).

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;

use super::actor::{Checkpoint, Io, Work};
use super::api::{MISSING_SAMPLE, MigrationError, StopMode, StopResult};
use super::cutover::wait_acked;
use super::source::{drain, drain_to_point};
use super::state::{MigrationPhase, MigrationState};
use super::target::TargetError;
use super::wire::{Batch, Record};

type Res<T> = Result<T, MigrationError>;

/// How many times a graceful stop looks for its point before it gives up.
const POINT_ATTEMPTS: usize = 5;
/// Catch-up drains before the last one (each takes up to a batch per stream).
const CATCH_UP_DRAINS: usize = 50;
/// How long STOP waits for the target to say it keeps the copy (IMMEDIATE answers at once).
const KEEP_WAIT: Duration = Duration::from_millis(500);
const KEEP_WAIT_GRACEFUL: Duration = Duration::from_secs(3);
/// Keys read per hold of the lock when listing what an unfinished snapshot had not reached.
const SCAN_STEP: usize = 10_000;

/// The source as the last drain of a graceful stop left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Point {
    pub at_ms: u64,
    pub keys: u64,
    pub digest: u64,
}

impl Point {
    pub fn of(db: &ferrite_storage::Db) -> Point {
        Point {
            at_ms: ferrite_storage::now_ms(),
            keys: db.len() as u64,
            digest: db.digest().combined(),
        }
    }
}

/// Carries out a pending graceful stop in live sync. Returns `Err(Stopped)` once the point is
/// confirmed (the run ends and [`conclude`] reports it); `Ok` when the stop was refused (its
/// callers are told why) and live sync goes on; any other error ends the run as usual.
pub(super) async fn graceful(work: &mut Work, io: &mut Io<'_>, import: &str) -> Res<()> {
    io.ctl.transition(MigrationState::Stopping, "stop")?;
    let budget = io.ctl.env.settings.read().redirect_timeout;
    let mut last = String::from("no attempt");
    for attempt in 0..POINT_ATTEMPTS {
        if !io.ctl.links_up() {
            last = "a link to the target is down (reconnecting)".into();
            break;
        }
        // Catch up first, so that the last drain (one lock hold) is short.
        let max = work
            .streams
            .as_ref()
            .map_or(1000, |s| s.batch_size * s.parallel);
        for _ in 0..CATCH_UP_DRAINS {
            if drain(work, io, max).await? < max {
                break;
            }
        }
        let Some(point) = drain_to_point(work, io).await? else {
            last = "large values were being copied whole".into();
            continue;
        };
        if let Err(e) = wait_acked(io, budget).await {
            last = e.to_string();
            break;
        }
        if io.ctl.cfg.conflict.is_some() {
            // The target takes writes too: the copies differ by design, so the point is
            // confirmed by every change up to it being applied (by the policy), not by digest.
            tracing::info!(migration = %io.ctl.info.id, at_ms = point.at_ms, "graceful stop: every change up to the point applied");
            io.ctl.stop_point = Some(StopResult {
                mode: StopMode::Graceful,
                consistent_as_of: Some(point.at_ms),
                keys: point.keys,
                digest: None,
                missing_keys: 0,
                missing_bytes: 0,
                missing_sample: Vec::new(),
                target_kept: Ok(()),
            });
            return Err(MigrationError::Stopped);
        }
        let answer = io
            .until(tokio::time::timeout(budget, work.target.prepare(import)))
            .await?;
        match answer {
            Ok(Ok(p)) if p.keys == point.keys && p.digest == point.digest => {
                tracing::info!(migration = %io.ctl.info.id, at_ms = point.at_ms, keys = point.keys, attempt, "graceful stop: target consistent");
                io.ctl.stop_point = Some(StopResult {
                    mode: StopMode::Graceful,
                    consistent_as_of: Some(point.at_ms),
                    keys: point.keys,
                    digest: Some(point.digest),
                    missing_keys: 0,
                    missing_bytes: 0,
                    missing_sample: Vec::new(),
                    target_kept: Ok(()),
                });
                return Err(MigrationError::Stopped);
            }
            Ok(Ok(p)) => {
                last = format!(
                    "the target does not match the source (source {} keys, digest {:016x}; target {} keys, digest {:016x})",
                    point.keys, point.digest, p.keys, p.digest
                );
                // As at cutover: values kept up to date by their effects go whole next time.
                let suspects = io.ctl.info.delta.invalidate_all();
                if !suspects.is_empty() {
                    let ks = io.ctl.info.tenant.keyspace();
                    let mut db = ks.lock_async().await;
                    let now = ferrite_storage::now_ms();
                    for k in &suspects {
                        db.count_changes_by_effects(k, false);
                        db.mark_changed(k, now);
                    }
                }
            }
            Ok(Err(e)) => {
                last = format!("the target did not report its copy: {e}");
                break;
            }
            Err(_) => {
                last = format!(
                    "the target did not report its copy within {} ms",
                    budget.as_millis()
                );
                break;
            }
        }
    }
    let msg = format!(
        "graceful stop refused, the sync goes on: no consistency point confirmed ({last}); try again, or STOP IMMEDIATE"
    );
    tracing::warn!(migration = %io.ctl.info.id, "{msg}");
    io.ctl.pending_stop = None;
    if io.ctl.state() == MigrationState::Stopping {
        io.ctl.publish(|p| p.state = MigrationState::LiveSync);
    }
    io.ctl.note_error(&msg);
    for r in io.ctl.stop_replies.drain(..) {
        let _ = r.send(Err(MigrationError::Failed(msg.clone())));
    }
    Ok(())
}

/// What the target may be missing after an immediate stop.
#[derive(Default)]
struct Missing {
    keys: HashSet<Vec<u8>>,
    sample: Vec<Vec<u8>>,
    bytes: u64,
}

impl Missing {
    fn key(&mut self, k: &[u8]) {
        if !self.keys.contains(k) {
            if self.sample.len() < MISSING_SAMPLE {
                self.sample.push(k.to_vec());
            }
            self.keys.insert(k.to_vec());
        }
    }

    /// The keys of a batch the target may not have applied.
    fn batch(&mut self, payload: &[u8]) {
        self.bytes += payload.len() as u64;
        let Ok(batch) = Batch::parse(payload) else {
            return;
        };
        for r in batch.records().unwrap_or_default() {
            match r {
                Record::Put { key, .. }
                | Record::Append { key, .. }
                | Record::Del { key }
                | Record::Effect { key, .. } => self.key(key),
                // A flush of the stream's keys: every key the target still holds on it may be
                // one the source has deleted; named as the record it is.
                Record::Flush { stream, .. } => {
                    self.key(format!("<flush of stream {stream}>").as_bytes())
                }
            }
        }
    }
}

/// Ends a stopped sync: what the target holds (the graceful point, or what it may miss), change
/// capture stopped, the target asked to keep its copy, STOP answered. The source is untouched.
pub(super) async fn conclude(work: &mut Work, io: &mut Io<'_>) {
    let tenant = io.ctl.info.tenant.clone();
    let point = io.ctl.stop_point.take();
    let mut missing = Missing::default();
    if point.is_none() {
        // Sealed batches not acknowledged (in flight or queued): kept by the stopped streams.
        for q in &work.checkpoint.queues.queues {
            for o in q {
                missing.batch(&o.payload);
            }
        }
    }
    if point.is_none() && !work.checkpoint.scanned {
        // Stopped during the snapshot: the keys its walk had not reached were never sent. Read
        // in bounded holds of the lock, so that the tenant's commands run in between.
        let ks = tenant.keyspace();
        let mut cursor = work.checkpoint.cursor;
        loop {
            let db = ks.lock_async().await;
            cursor = db.scan_physical(cursor, SCAN_STEP, |k, e| {
                missing.bytes += e.value().mem_size() as u64;
                missing.key(k);
            });
            drop(db);
            if cursor == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    {
        let ks = tenant.keyspace();
        let mut db = ks.lock_async().await;
        if point.is_none() {
            if let Some(l) = db.tracking_lag() {
                missing.bytes += l.bytes;
            }
            db.drain_changes(usize::MAX, |k, _| missing.key(k));
        }
        work.stop_capture(&mut db, &io.ctl.info.delta);
    }
    if tenant.gate().is_closed() && tenant.state() == crate::tenant::TenantState::Active {
        tenant.gate().open();
    }
    let import = io
        .ctl
        .published()
        .import_id
        .clone()
        .or_else(|| work.checkpoint.import_id.clone());
    let wait = if point.is_some() {
        KEEP_WAIT_GRACEFUL
    } else {
        KEEP_WAIT
    };
    let kept = match &import {
        None => Err("no import was opened on the target".to_string()),
        Some(import) => match tokio::time::timeout(wait, work.target.stop(import)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(TargetError::ImportGone(m))) => {
                Err(format!("the target no longer has the import ({m})"))
            }
            Ok(Err(e)) => Err(format!(
                "the target did not keep the copy ({e}); its reaper drops the import after sync_timeout_secs"
            )),
            Err(_) => Err(format!(
                "the target did not answer within {} ms; its reaper drops the import after sync_timeout_secs",
                wait.as_millis()
            )),
        },
    };
    let result = match point {
        Some(p) => StopResult {
            target_kept: kept,
            ..p
        },
        None => StopResult {
            mode: StopMode::Immediate,
            consistent_as_of: None,
            keys: 0,
            digest: None,
            missing_keys: missing.keys.len() as u64,
            missing_bytes: missing.bytes,
            missing_sample: missing.sample,
            target_kept: kept,
        },
    };
    work.checkpoint = Checkpoint::default();
    io.ctl.reset_flight(0);
    io.ctl.drop_schedule();
    io.ctl.clear_interrupts();
    io.ctl.pending_stop = None;
    let shown = result.clone();
    io.ctl.publish(|p| {
        p.state = MigrationState::Stopped;
        p.base_phase = MigrationPhase::Stopped;
        p.finished = Some(Instant::now());
        p.error = None;
        p.stop = Some(shown);
    });
    io.ctl.env.release_claim(&io.ctl.info);
    tracing::info!(migration = %io.ctl.info.id, mode = result.mode.name(), consistent_as_of = ?result.consistent_as_of, missing_keys = result.missing_keys, "sync stopped; the source still owns the tenant");
    for r in io.ctl.stop_replies.drain(..) {
        let _ = r.send(Ok(result.clone()));
    }
    let id = io.ctl.info.id.clone();
    let stopped = |op: &'static str| MigrationError::WrongState {
        id: id.clone(),
        state: "stopped",
        op,
    };
    for r in io.ctl.pending_cancel.drain(..) {
        let _ = r.send(Err(stopped("cancel")));
    }
    if let Some(c) = io.ctl.pending_cutover.take()
        && let Some(r) = c.reply
    {
        let _ = r.send(Err(stopped("cut over")));
    }
    if let Some(r) = io.ctl.pending_activation_retry.take() {
        let _ = r.send(Err(stopped("retry the cutover")));
    }
}
