//! A run of a migration on the source: open the import, then the snapshot by cursor, then live
//! sync (changed keys as they happen, large values in chunks, a heartbeat) until a cutover
//! completes. Everything here runs inside the migration's actor and waits only through
//! [`Io`], so requests are answered throughout.
//!
//! Checkpoints: the snapshot cursor, the stream queues (every sealed, unacknowledged batch) and
//! change capture outlive a failed run. Whatever a run had read is either sealed into a queue
//! or marked changed again, so a retry resumes from there against the same import instead of
//! starting over.

use std::collections::VecDeque;
use std::time::Duration;

use ferrite_storage::codec::{put_bytes, put_varint};
use ferrite_storage::{Db, Entry, ValueRef};
use tokio::time::Instant;

use super::actor::{Checkpoint, Io, Link, PendingCutover, Work};
use super::api::{MigrationError, MigrationMode};
use super::cutover;
use super::delta::{DeltaLog, Pending};
use super::import::BeginRequest;
use super::state::{MigrationPhase, MigrationState};
use super::stream::{MAX_BATCH_BYTES, RECONNECT_BACKOFF, StreamQueues, Streams};
use super::target::TargetError;
use super::wire::{Chunk, WIRE_VERSION};

type Res<T> = Result<T, MigrationError>;

fn fail(msg: impl Into<String>) -> MigrationError {
    MigrationError::Failed(msg.into())
}

/// Values with more elements (or bytes) than this are sent in chunks.
const CHUNK_ELEMENTS: usize = 4096;
const CHUNK_BYTES: usize = MAX_BATCH_BYTES;

/// How often live sync proves to the target that the source is alive (the target reaps an
/// import that hears nothing for its `sync_timeout_secs`; a quiet tenant sends no batches) and
/// to itself that the target and the import still are.
pub(super) const HEARTBEAT: Duration = Duration::from_secs(2);
/// A heartbeat without an answer within this marks the control link down.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);

/// RATE: bytes per second over a window that restarts after an idle spell.
#[derive(Default)]
pub(super) struct RateLimiter {
    rate: u64,
    window: Option<(Instant, u64)>,
}

impl RateLimiter {
    /// How long to wait after sending `bytes` at `rate` (0 = unlimited).
    fn after(&mut self, rate: u64, bytes: u64) -> Duration {
        if rate != self.rate {
            self.rate = rate;
            self.window = None;
        }
        if rate == 0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let (start, sent) = self.window.get_or_insert((now, 0));
        // After an idle spell (PAUSE, no changes) the window restarts: otherwise the unused
        // allowance of the idle time would go out at once as a burst above RATE.
        let owed = Duration::from_secs_f64(*sent as f64 / rate as f64);
        if now.duration_since(*start) > owed + Duration::from_secs(1) {
            *start = now;
            *sent = 0;
        }
        *sent += bytes;
        let due = Duration::from_secs_f64(*sent as f64 / rate as f64);
        let elapsed = now.duration_since(*start);
        if elapsed > Duration::from_secs(10) {
            self.window = Some((now, 0));
        }
        due.saturating_sub(elapsed)
    }
}

fn is_large(e: &Entry) -> bool {
    e.value().elements() > CHUNK_ELEMENTS || e.value().mem_size() > CHUNK_BYTES
}

/// Entry point of a run (first one and retries). Ok once the cutover completed.
pub(super) async fn run(work: &mut Work, io: &mut Io<'_>) -> Res<()> {
    let slots = io.ctl.env.slots.clone();
    let (id, priority, seq) = (io.ctl.info.id.clone(), io.ctl.cfg.priority, io.ctl.info.seq);
    let permit = io
        .until(slots.acquire(&id, priority, seq))
        .await?
        .map_err(|_| fail("the migration slots are gone (server stopping)"))?;
    work.permit = Some(permit);
    io.ctl.transition(MigrationState::Syncing, "start")?;
    io.ctl.publish(|p| {
        p.base_phase = MigrationPhase::Connecting;
        p.error = None;
    });
    io.breakpoint("run:connecting").await?;
    super::restart::drop_stale_import(work, io).await?;
    let import_id = begin(work, io).await?;
    io.ctl.publish(|p| p.import_id = Some(import_id.clone()));
    // Recorded now, not at the next change of state: a restart during the snapshot must know
    // which import to drop on the target (docs/migration.md, "Restarts of the source").
    io.ctl.persist_record();

    let tenant = io.ctl.info.tenant.clone();
    let ks = tenant.keyspace();
    let resumed = work.checkpoint.import_id.as_deref() == Some(import_id.as_str());
    let epoch = {
        let mut db = ks.lock_async().await;
        if !resumed {
            // A new import holds none of the large values copied before.
            for k in io.ctl.info.delta.clear() {
                db.count_changes_by_effects(&k, false);
            }
        }
        db.start_tracking();
        // Change capture and the delta log start in the same instant.
        if work.subscription.is_none() {
            work.subscription = Some(db.subscribe(io.ctl.info.delta.clone()));
        }
        db.tracking_lag().map_or(0, |l| l.flush_epoch)
    };
    if !resumed {
        // A new import (first run, or the target lost the old one): start from scratch.
        let parallel = io.ctl.cfg.parallel.clamp(1, 64);
        work.checkpoint = Checkpoint {
            import_id: Some(import_id.clone()),
            queues: StreamQueues::new(parallel),
            cursor: 0,
            scanned: false,
            snapshot_done: false,
            epoch,
        };
        io.ctl.reset_flight(parallel);
        let keys = ks.len();
        io.ctl.publish(|p| {
            p.keys_at_start = keys;
            p.snapshot_done = false;
        });
    }
    tracing::info!(migration = %io.ctl.info.id, import = %import_id, resumed, "import open on target");
    if io.ctl.info.mode == MigrationMode::Fast {
        // Fast mode: the tenant's writes wait at the gate (then get TRYAGAIN) during the copy;
        // the cutover's downtime counts from here.
        io.ctl.gate_closed_at = Some(Instant::now());
        io.until(tenant.gate().close_and_drain()).await?;
    }
    let queues = std::mem::take(&mut work.checkpoint.queues);
    work.streams = Some(Streams::start(
        &work.target,
        &import_id,
        queues,
        io.ctl.cfg.batch_size,
        work.checkpoint.epoch,
        &io.ctl.events_tx,
        &io.ctl.cancel,
    ));
    replicate(work, io, &import_id).await
}

/// Opens the import, retrying an unreachable target (the reconnect timeout applies).
async fn begin(work: &mut Work, io: &mut Io<'_>) -> Res<String> {
    let t = io.ctl.info.tenant.clone();
    let req = BeginRequest {
        tenant: t.id().to_string(),
        migration_id: io.ctl.info.id.clone(),
        version: WIRE_VERSION,
        source_addr: io.ctl.info.source.clone(),
        source_run_id: io.ctl.env.run_id.clone(),
        credential: t.credential(),
        limits: t.limits(),
        acl_users: t.acl().records(),
        conflict: io.ctl.cfg.conflict,
        backup: io.ctl.info.backup_of.is_some(),
    };
    let mut backoff = RECONNECT_BACKOFF.0;
    loop {
        match io.until(work.target.begin(&req)).await? {
            Ok(id) => {
                io.ctl.link_up(Link::Control);
                return Ok(id);
            }
            Err(e) if e.is_unreachable() => {
                io.ctl.link_down(Link::Control, &e.to_string());
                io.sleep(backoff).await?;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF.1);
            }
            Err(e) => {
                return Err(super::classify_target_error(&io.ctl.info.target, e));
            }
        }
    }
}

fn streams(work: &mut Work) -> Res<&mut Streams> {
    work.streams
        .as_mut()
        .ok_or_else(|| fail("internal: no streams"))
}

/// Snapshot (from the checkpoint cursor), then live sync until a cutover completes.
async fn replicate(work: &mut Work, io: &mut Io<'_>, import_id: &str) -> Res<()> {
    let tenant = io.ctl.info.tenant.clone();
    let ks = tenant.keyspace();
    if !work.checkpoint.snapshot_done {
        io.ctl.set_phase(MigrationPhase::Snapshot);
        let mut cursor = work.checkpoint.cursor;
        // A whole snapshot (not a resumed one) is a measurement of this server's copy speed.
        let measure =
            (cursor == 0 && !work.checkpoint.scanned).then(|| (Instant::now(), ks.used_bytes()));
        let mut next_beat = Instant::now() + HEARTBEAT;
        while !work.checkpoint.scanned {
            paused(work, io, import_id, &mut next_beat).await?;
            reconfigure(work, io).await?;
            cursor = {
                let s = streams(work)?;
                let batch = s.batch_size;
                let mut db = ks.lock_async().await;
                note_flush(s, &db, &io.ctl.info.delta);
                let mut large: Vec<Vec<u8>> = Vec::new();
                let next = db.scan_physical(cursor, batch, |k, e| {
                    if is_large(e) {
                        large.push(k.to_vec());
                    } else {
                        s.put(k, e);
                    }
                });
                // Large values go through change capture: live sync ships them in chunks.
                let now = ferrite_storage::now_ms();
                for k in &large {
                    db.mark_changed(k, now);
                }
                io.ctl.set_unsealed(s.unsealed());
                next
            };
            work.checkpoint.cursor = cursor;
            work.checkpoint.scanned = cursor == 0;
            send_full(work, io).await?;
            io.breakpoint("snapshot:batch").await?;
            // Let the tenant's own commands run between batches on this worker thread.
            tokio::task::yield_now().await;
        }
        send_all(work, io).await?;
        // Live sync starts once the target has acknowledged the whole snapshot.
        io.wait(|c| c.flight_empty()).await?;
        work.checkpoint.snapshot_done = true;
        io.ctl.publish(|p| p.snapshot_done = true);
        tracing::info!(migration = %io.ctl.info.id, keys = ks.len(), "snapshot shipped; live sync");
        if let Some((t0, bytes)) = measure {
            let secs = t0.elapsed().as_secs_f64();
            // Too small a tenant measures start-up costs, not throughput.
            if bytes >= 1 << 20 && secs > 0.01 {
                *io.ctl.env.snapshot_rate.lock() = Some(bytes as f64 / secs);
            }
        }
    }
    io.ctl.set_phase(MigrationPhase::LiveSync);
    if io.ctl.state() == MigrationState::Syncing {
        io.ctl.publish(|p| p.state = MigrationState::LiveSync);
    }
    if io.ctl.info.mode == MigrationMode::Fast {
        while drain(work, io, 100_000).await? > 0 {}
        io.wait(|c| c.flight_empty()).await?;
        let req = PendingCutover {
            force: true,
            retry: false,
            scheduled: false,
            reply: None,
        };
        return cutover::cutover(work, io, &req).await.map(|_| ());
    }
    let mut next_beat = Instant::now() + HEARTBEAT;
    loop {
        paused(work, io, import_id, &mut next_beat).await?;
        if Instant::now() >= next_beat {
            next_beat = heartbeat(work, io, import_id).await?;
        }
        reconfigure(work, io).await?;
        if io.ctl.pending_stop == Some(super::api::StopMode::Graceful) {
            // Ends the run (Err(Stopped)) once the point is confirmed; a refused stop goes on.
            super::stop::graceful(work, io, import_id).await?;
            continue;
        }
        if let Some(req) = io.ctl.pending_cutover.take() {
            io.ctl.running_scheduled = req.scheduled;
            let r = cutover::cutover(work, io, &req).await;
            io.ctl.running_scheduled = false;
            if req.scheduled {
                io.ctl.scheduled_outcome(&r);
            }
            let done = r.is_ok();
            let stop = match &r {
                Err(MigrationError::Cancelled) => Some(MigrationError::Cancelled),
                Err(e) if io.ctl.state() == MigrationState::Failed => Some(e.clone()),
                _ => None,
            };
            if let Some(reply) = req.reply {
                let _ = reply.send(r);
            }
            if done {
                return Ok(());
            }
            if let Some(e) = stop {
                return Err(e);
            }
            continue;
        }
        if let Some(req) = io.ctl.pending_pattern.take() {
            let r = super::pattern::cutover(work, io, req.index, req.force).await;
            let done = r.as_ref().is_ok_and(|c| c.status == "completed");
            let stop = match &r {
                Err(MigrationError::Cancelled) => Some(MigrationError::Cancelled),
                Err(e) if io.ctl.state() == MigrationState::Failed => Some(e.clone()),
                _ => None,
            };
            let _ = req.reply.send(r);
            if done {
                return Ok(());
            }
            if let Some(e) = stop {
                return Err(e);
            }
            continue;
        }
        let max = {
            let s = streams(work)?;
            s.batch_size * s.parallel
        };
        if drain(work, io, max).await? == 0 {
            // Nothing changed: wait for a change, a request or the next heartbeat.
            let changed = ks.changes();
            io.serve(
                tokio::time::timeout_at(next_beat, changed.notified()),
                |c| {
                    c.pending_cutover.is_some()
                        || c.pending_pattern.is_some()
                        || c.is_paused()
                        || c.pending_stop.is_some()
                },
            )
            .await?;
        }
    }
}

/// While paused: wait (answering requests), keeping the heartbeat going so that a long PAUSE
/// does not let the target reap the import.
async fn paused(
    work: &mut Work,
    io: &mut Io<'_>,
    import: &str,
    next_beat: &mut Instant,
) -> Res<()> {
    io.poll()?;
    while io.ctl.is_paused() {
        let beat = *next_beat;
        io.serve(tokio::time::sleep_until(beat), |c| !c.is_paused())
            .await?;
        if io.ctl.is_paused() && Instant::now() >= *next_beat {
            *next_beat = heartbeat(work, io, import).await?;
        }
    }
    Ok(())
}

/// One heartbeat (`TENANT.IMPORT.RESUME` refreshes the import); returns when the next is due.
/// The target refusing means the import is gone: the migration fails, saying so, and a retry
/// starts a new one. No answer marks the control link down (the reconnect timeout then
/// applies, and catches a silent partition where no connection resets).
async fn heartbeat(work: &mut Work, io: &mut Io<'_>, import: &str) -> Res<Instant> {
    let answer = io
        .until(tokio::time::timeout(
            HEARTBEAT_TIMEOUT,
            work.target.resume(import),
        ))
        .await?;
    match answer {
        Ok(Ok(_)) => {
            io.ctl.link_up(Link::Control);
            if io.ctl.cfg.conflict.is_some() {
                report_conflicts(work, io, import).await?;
            }
            Ok(Instant::now() + HEARTBEAT)
        }
        Ok(Err(TargetError::ImportGone(msg))) => Err(fail(format!(
            "the target dropped the import ({msg}); RESUME or CUTOVER RETRY starts a new one"
        ))),
        Ok(Err(e)) if !e.is_unreachable() => {
            Err(fail(format!("the target refused the heartbeat: {e}")))
        }
        Ok(Err(e)) => {
            io.ctl.link_down(Link::Control, &e.to_string());
            Ok(Instant::now() + Duration::from_millis(500))
        }
        Err(_) => {
            io.ctl.link_down(
                Link::Control,
                &format!(
                    "no answer to a heartbeat within {} s",
                    HEARTBEAT_TIMEOUT.as_secs()
                ),
            );
            Ok(Instant::now() + Duration::from_millis(500))
        }
    }
}

/// Brings the conflicts the target resolved into STATUS (a sync whose target takes writes).
/// Best effort: an unanswered report leaves the last figures.
async fn report_conflicts(work: &mut Work, io: &mut Io<'_>, import: &str) -> Res<()> {
    let answer = io
        .until(tokio::time::timeout(
            HEARTBEAT_TIMEOUT,
            work.target.report(import),
        ))
        .await?;
    if let Ok(Ok(r)) = answer {
        io.ctl.publish(|p| {
            p.conflicts = r.conflicts;
            p.conflict_sample = r.conflict_sample;
        });
    }
    Ok(())
}

/// Applies UPDATE PARALLEL: waits until everything sent is acknowledged, then re-routes keys
/// over the new number of streams (sequence numbers continue per stream index).
async fn reconfigure(work: &mut Work, io: &mut Io<'_>) -> Res<()> {
    let want = io.ctl.cfg.parallel.clamp(1, 64);
    {
        let s = streams(work)?;
        s.batch_size = io.ctl.cfg.batch_size.max(1);
        if want == s.parallel {
            return Ok(());
        }
    }
    send_all(work, io).await?;
    io.wait(|c| c.flight_empty()).await?;
    let Some(old) = work.streams.take() else {
        return Ok(());
    };
    let epoch = old.epoch;
    let (kept, _) = old.stop().await;
    let queues = StreamQueues {
        queues: (0..want).map(|_| Default::default()).collect(),
        sealed: (0..want)
            .map(|i| kept.sealed.get(i).copied().unwrap_or(0))
            .collect(),
    };
    io.ctl.reset_flight(want);
    let import = work.checkpoint.import_id.clone().unwrap_or_default();
    work.streams = Some(Streams::start(
        &work.target,
        &import,
        queues,
        io.ctl.cfg.batch_size,
        epoch,
        &io.ctl.events_tx,
        &io.ctl.cancel,
    ));
    tracing::info!(migration = %io.ctl.info.id, parallel = want, "streams reconfigured");
    Ok(())
}

/// Seals stream `s`'s batch and hands it to its sender once there is room (back-pressure),
/// then honours RATE.
pub(super) async fn send(work: &mut Work, io: &mut Io<'_>, s: usize) -> Res<()> {
    let room = {
        let st = streams(work)?;
        if st.is_empty(s) {
            return Ok(());
        }
        st.reserve(s)
    };
    let permit = io
        .until(room)
        .await?
        .map_err(|_| fail("internal: a stream sender stopped"))?;
    let st = streams(work)?;
    let Some((batch, meta)) = st.seal(s) else {
        return Ok(());
    };
    let unsealed = st.unsealed();
    io.ctl.sealed(s, meta);
    io.ctl.set_unsealed(unsealed);
    permit.send(batch);
    let pause = work
        .rate
        .after(super::schedule::effective_rate(io.ctl), meta.bytes);
    if !pause.is_zero() {
        io.sleep(pause).await?;
    }
    Ok(())
}

async fn send_full(work: &mut Work, io: &mut Io<'_>) -> Res<()> {
    let parallel = streams(work)?.parallel;
    for s in 0..parallel {
        if streams(work)?.is_full(s) {
            send(work, io, s).await?;
        }
    }
    Ok(())
}

pub(super) async fn send_all(work: &mut Work, io: &mut Io<'_>) -> Res<()> {
    let parallel = streams(work)?.parallel;
    for s in 0..parallel {
        send(work, io, s).await?;
    }
    Ok(())
}

/// Large values drained from change capture, in order, with their size when drained; the
/// first is the one being sent.
type LargeQueue = VecDeque<(Vec<u8>, u64)>;

/// Notes a flush of the keyspace (FLUSHALL, or a restore replacing it) that the streams have not
/// sent yet: a FLUSH record goes out on every stream, and the delta log forgets every key (the
/// target deletes its copies; keys written since are new keys).
fn note_flush(s: &mut Streams, db: &Db, delta: &DeltaLog) {
    if let Some(l) = db.tracking_lag() {
        if l.flush_epoch > s.epoch {
            delta.clear();
        }
        s.note_epoch(l.flush_epoch);
    }
}

/// Ships up to `max` changed keys (oldest first), then the large values among them (and the
/// small changes that happen meanwhile); returns how many changed keys were taken.
pub(super) async fn drain(work: &mut Work, io: &mut Io<'_>, max: usize) -> Res<usize> {
    let mut large = LargeQueue::new();
    let n = read_changes(work, io, max, &mut large, None).await?;
    ship_all_large(work, io, large).await?;
    if n > 0 {
        send_all(work, io).await?;
    }
    Ok(n)
}

/// Like [`drain`], for a cutover with the gate closed: large values that must be copied whole
/// are not copied (that would hold the gate for the copy) but left marked changed and returned,
/// for the cutover to copy with the gate open. Their effects (the usual case) are shipped.
pub(super) async fn drain_gated(
    work: &mut Work,
    io: &mut Io<'_>,
    max: usize,
) -> Res<(usize, Vec<Vec<u8>>)> {
    let mut large = LargeQueue::new();
    let n = read_changes(work, io, max, &mut large, None).await?;
    if !large.is_empty() {
        let ks = io.ctl.info.tenant.keyspace();
        let mut db = ks.lock_async().await;
        let now = ferrite_storage::now_ms();
        for (k, _) in &large {
            db.mark_changed(k, now);
        }
        drop(db);
        io.ctl.set_large_left(0, 0);
    }
    if n > 0 {
        send_all(work, io).await?;
    }
    Ok((n, large.into_iter().map(|(k, _)| k).collect()))
}

/// Copies `keys` whole now (the cutover does this with the gate open, then closes it again).
pub(super) async fn copy_whole(work: &mut Work, io: &mut Io<'_>, keys: Vec<Vec<u8>>) -> Res<()> {
    let mut large = LargeQueue::new();
    {
        let ks = io.ctl.info.tenant.keyspace();
        let db = ks.lock_async().await;
        for k in keys {
            let size = db.peek(&k).map_or(0, |e| e.value().mem_size() as u64);
            large.push_back((k, size));
        }
    }
    ship_all_large(work, io, large).await?;
    send_all(work, io).await
}

/// Changed keys taken from change capture per hold of the tenant's lock. The migration runs
/// on a runtime worker like the connections: with one worker (`threads = 1`, or a one-core
/// machine) a drain of 100,000 changes in one hold kept every other tenant waiting for the
/// worker for the whole drain (a cutover's drain, under the gate, most of all). In holds of
/// this many keys (well under a millisecond each) the worker serves other connections between
/// them.
const DRAIN_HOLD_KEYS: usize = 1_000;

/// Takes up to `max` changed keys from change capture into the batch builders; large values
/// join `large` instead (once: a value already waiting there is read whole when its turn
/// comes). A large value already copied ships the effects that changed it since
/// ([`super::delta`]), unless its whole value is cheaper or its effects cannot be trusted.
/// `copying` is a large value whose copy is going out: it stays marked changed (its effects
/// must follow the whole copy). Returns how many changed keys were taken.
///
/// The keys are taken in holds of [`DRAIN_HOLD_KEYS`], each ending as the one hold did (every
/// key taken is in a builder or `large`, STATUS published), then full builders are sent and the
/// worker is yielded. Change capture gives each changed key once, oldest first, so splitting
/// the holds loses and repeats nothing; a change made between two holds is taken by a later
/// one (or the next drain), as a change made after the one hold was. A graceful STOP's
/// consistency point (`work.probe`) describes one instant, so that drain stays one hold.
async fn read_changes(
    work: &mut Work,
    io: &mut Io<'_>,
    max: usize,
    large: &mut LargeQueue,
    copying: Option<&[u8]>,
) -> Res<usize> {
    let hold = if work.probe.is_some() {
        max
    } else {
        DRAIN_HOLD_KEYS
    };
    let mut taken = 0;
    loop {
        let step = (max - taken).min(hold);
        let n = read_changes_held(work, io, step, large, copying).await?;
        taken += n;
        if n < step || taken >= max {
            return Ok(taken);
        }
        send_full(work, io).await?;
        tokio::task::yield_now().await;
    }
}

/// [`read_changes`] in one hold of the tenant's lock.
async fn read_changes_held(
    work: &mut Work,
    io: &mut Io<'_>,
    max: usize,
    large: &mut LargeQueue,
    copying: Option<&[u8]>,
) -> Res<usize> {
    let ks = io.ctl.info.tenant.keyspace();
    let delta = io.ctl.info.delta.clone();
    let s = streams(work)?;
    let mut db = ks.lock_async().await;
    note_flush(s, &db, &delta);
    let mut later: Vec<Vec<u8>> = Vec::new();
    let mut untrack: Vec<Vec<u8>> = Vec::new();
    // The front is being sent: a change to it meanwhile queues it again, to be sent whole.
    let waiting = |q: &LargeQueue, k: &[u8]| q.iter().skip(1).any(|(x, _)| x.as_slice() == k);
    // `MODE incremental`: keys of a pattern the target serves now change only there (here
    // only by expiry); shipping them would overwrite what the target's clients wrote.
    let split = io.ctl.info.tenant.active_split();
    let moved = |k: &[u8]| {
        split
            .as_ref()
            .is_some_and(|s| s.owner_of(k) == crate::patterns::Owner::There)
    };
    let n = db.drain_changes(max, |k, e| match e {
        _ if moved(k) => {}
        _ if copying == Some(k) => later.push(k.to_vec()),
        None => {
            s.del(k);
            untrack.push(k.to_vec());
        }
        Some(_) if waiting(large, k) => {}
        Some(e) => match delta.take(k, e.value().mem_size()) {
            Pending::Effects(list) => s.writer(k).1.effects(k, &list),
            Pending::Whole | Pending::Untracked if is_large(e) => {
                large.push_back((k.to_vec(), e.value().mem_size() as u64));
            }
            Pending::Whole => {
                s.put(k, e);
                untrack.push(k.to_vec());
            }
            Pending::Untracked => s.put(k, e),
        },
    });
    for k in &untrack {
        if delta.forget(k) {
            db.count_changes_by_effects(k, false);
        }
    }
    let now = ferrite_storage::now_ms();
    for k in &later {
        db.mark_changed(k, now);
    }
    // Published before the lock is released: STATUS never sees these keys nowhere.
    io.ctl.set_unsealed(s.unsealed());
    publish_large(io, large, None);
    if let Some(point) = work.probe.as_mut() {
        *point = Some(super::stop::Point::of(&db));
    }
    Ok(n)
}

/// Takes every changed key in one lock hold and ships it (a graceful STOP's last drain):
/// returns the point the target will hold once it acknowledges everything, or None when large
/// values had to be copied whole (in holds of their own, so no single instant describes the
/// copy; the caller tries again).
pub(super) async fn drain_to_point(
    work: &mut Work,
    io: &mut Io<'_>,
) -> Res<Option<super::stop::Point>> {
    let mut large = LargeQueue::new();
    work.probe = Some(None);
    let read = read_changes(work, io, usize::MAX, &mut large, None).await;
    let point = work.probe.take().flatten();
    read?;
    let whole = !large.is_empty();
    ship_all_large(work, io, large).await?;
    send_all(work, io).await?;
    Ok(point.filter(|_| !whole))
}

/// Publishes the large values not read to their end: `front_left` is what is left of the
/// first one (None: all of it).
fn publish_large(io: &mut Io<'_>, large: &LargeQueue, front_left: Option<u64>) {
    let bytes = large
        .iter()
        .enumerate()
        .map(|(i, (_, size))| match (i, front_left) {
            (0, Some(left)) => left,
            _ => (*size).max(1),
        })
        .sum();
    io.ctl.set_large_left(large.len() as u64, bytes);
}

/// A large value read whole, as the chunks it is sent in: strings by `CHUNK_BYTES`, other
/// values by `CHUNK_ELEMENTS` elements (or about `CHUNK_BYTES`), already encoded in the wire's
/// value layout (`ferrite_storage::codec`).
pub(super) fn copy_chunks(v: ValueRef<'_>) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut body = Vec::new();
    let mut n = 0usize;
    let cut = |body: &mut Vec<u8>, n: &mut usize, out: &mut Vec<Chunk>| {
        let mut b = Vec::with_capacity(body.len() + 10);
        put_varint(&mut b, *n as u64);
        b.extend_from_slice(body);
        out.push(Chunk::Encoded(b, *n));
        body.clear();
        *n = 0;
    };
    macro_rules! each {
        ($iter:expr, |$b:ident, $item:pat_param| $enc:expr) => {{
            for $item in $iter {
                let $b = &mut body;
                $enc;
                n += 1;
                if n >= CHUNK_ELEMENTS || body.len() >= CHUNK_BYTES {
                    cut(&mut body, &mut n, &mut out);
                }
            }
            if n > 0 || out.is_empty() {
                cut(&mut body, &mut n, &mut out);
            }
        }};
    }
    match v {
        ValueRef::Str(s) => {
            let b = s.as_bytes();
            out.extend(b.chunks(CHUNK_BYTES).map(|c| Chunk::Bytes(c.to_vec())));
            if out.is_empty() {
                out.push(Chunk::Bytes(Vec::new()));
            }
        }
        ValueRef::List(l) => each!(l.iter(), |b, x| put_bytes(b, x)),
        ValueRef::Hash(h) => each!(h.iter(), |b, (f, x)| {
            put_bytes(b, f);
            put_bytes(b, x)
        }),
        ValueRef::Set(s) => each!(s.iter(), |b, m| put_bytes(b, m)),
        ValueRef::ZSet(z) => each!(z.iter(), |b, (m, sc)| {
            put_bytes(b, m);
            b.extend_from_slice(&sc.to_le_bytes())
        }),
        ValueRef::Stream(x) => {
            // Positions are indexes into the stream's items (entries, groups, consumers,
            // pending entries, metadata); each chunk stands alone.
            let mut pos = 0;
            loop {
                let mut buf = Vec::new();
                let next = x.encode_chunk(pos, CHUNK_ELEMENTS, CHUNK_BYTES, &mut buf);
                let covered = next.unwrap_or(x.item_count()).saturating_sub(pos) as usize;
                out.push(Chunk::Encoded(buf, covered));
                match next {
                    Some(p) if p > pos => pos = p,
                    _ => break,
                }
            }
        }
    }
    out
}

/// Ships the first large key of `large`: read whole in one hold of the keyspace lock (a
/// consistent copy, taken in the same hold that starts the delta log of its later effects and
/// clears its change mark), then sent in chunks without the lock. Each time a batch of chunks
/// goes out, the small changes made meanwhile are taken too (large values found among them
/// join `large`; the value being sent stays marked changed, its effects follow the copy): a
/// large value in transit does not hold back the rest of the tenant. Returns false when PAUSE
/// interrupted it half way: the caller forgets its delta log and marks it changed, so it is
/// copied again whole after RESUME (replacing the target's partial copy).
async fn ship_large(work: &mut Work, io: &mut Io<'_>, large: &mut LargeQueue) -> Res<bool> {
    let Some((key, _)) = large.front().cloned() else {
        return Ok(true);
    };
    let key = key.as_slice();
    let ks = io.ctl.info.tenant.keyspace();
    let delta = io.ctl.info.delta.clone();
    io.poll()?;
    if io.ctl.is_paused() {
        return Ok(false);
    }
    let (chunks, ty, expire, modified, epoch) = {
        let s = streams(work)?;
        let mut db = ks.lock_async().await;
        note_flush(s, &db, &delta);
        let e = match db.peek(key) {
            Some(e) if is_large(e) => e,
            other => {
                // Deleted or small by now: sent as it is, with the same hold's consistency.
                match other {
                    Some(e) => s.put(key, e),
                    None => s.del(key),
                }
                db.unmark_changed(key);
                if delta.forget(key) {
                    db.count_changes_by_effects(key, false);
                }
                io.ctl.set_unsealed(s.unsealed());
                return Ok(true);
            }
        };
        let chunks = copy_chunks(e.value());
        let meta = (
            e.value_type(),
            e.expire_at().unwrap_or(0),
            e.modified_ms(),
            e.value().mem_size(),
        );
        // Everything changed so far is in the copy; effects from here on go to the delta log.
        db.unmark_changed(key);
        // A target that takes writes may hold its own version of the value, on which the
        // source's effects would not give the source's value: such a value goes whole each
        // time it changes (a conflict then replaces or keeps it as a whole).
        if io.ctl.cfg.conflict.is_none() {
            delta.track(key, meta.3);
            db.count_changes_by_effects(key, true);
        }
        (chunks, meta.0, meta.1, meta.2, s.epoch)
    };
    let mut left: u64 = chunks.iter().map(|c| c.len() as u64).sum();
    let total = left.max(1);
    let size = large.front().map_or(0, |(_, s)| *s);
    let count = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        io.poll()?;
        if io.ctl.is_paused() {
            return Ok(false);
        }
        let s = streams(work)?;
        if s.epoch != epoch {
            // Flushed meanwhile: the FLUSH record is out, the rest of the copy is void.
            return Ok(true);
        }
        let (stream, w) = s.writer(key);
        if i == 0 {
            w.put_partial(key, ty, expire, modified, &chunk);
        } else {
            w.append(key, ty, &chunk);
        }
        left = left.saturating_sub(chunk.len() as u64);
        // Not yet sent: part of the lag STATUS reports.
        publish_large(io, large, Some((size * left / total).max(1)));
        if streams(work)?.is_full(stream) {
            send(work, io, stream).await?;
            let max = {
                let s = streams(work)?;
                s.batch_size * s.parallel
            };
            if read_changes(work, io, max, large, Some(key)).await? > 0 {
                send_full(work, io).await?;
            }
        }
        if i + 1 < count {
            io.breakpoint("large:chunk").await?;
        }
    }
    Ok(true)
}

/// Ships large keys; if that stops half way (an error, or PAUSE), the keys not fully shipped
/// are marked changed again (the interrupted one to be copied whole again).
async fn ship_all_large(work: &mut Work, io: &mut Io<'_>, mut large: LargeQueue) -> Res<()> {
    while !large.is_empty() {
        let shipped = ship_large(work, io, &mut large).await;
        if !matches!(shipped, Ok(true)) {
            // Interrupted: whatever was not read to its end goes back to change capture.
            let ks = io.ctl.info.tenant.keyspace();
            let mut db = ks.lock_async().await;
            let now = ferrite_storage::now_ms();
            if let Some((k, _)) = large.front()
                && io.ctl.info.delta.forget(k)
            {
                db.count_changes_by_effects(k, false);
            }
            for (k, _) in &large {
                db.mark_changed(k, now);
            }
            drop(db);
            io.ctl.set_large_left(0, 0);
            return shipped.map(|_| ());
        }
        large.pop_front();
        publish_large(io, &large, None);
    }
    Ok(())
}
