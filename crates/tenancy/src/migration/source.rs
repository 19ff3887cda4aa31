//! The source side of a migration: the coordinator task that reads the keyspace (snapshot by
//! cursor, then changed keys) and feeds the streams.
//!
//! Checkpoints: the snapshot cursor, the stream queues (every sealed, unacknowledged batch) and
//! change capture all live in the [`Migration`]. If the coordinator stops on an error, whatever
//! it had read is either sealed into a queue or marked changed again, so a retry resumes from
//! there against the same import instead of starting over.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use ferrite_client::{ClientError, ConnectOptions, Connection, value};
use ferrite_storage::{Entry, ValueRef, ValueType};

use super::cutover;
use super::stream::{MAX_BATCH_BYTES, StreamState, Streams};
use super::wire::{Chunk, WIRE_VERSION};
use super::{
    Migration, MigrationError, MigrationManager, MigrationMode, MigrationPhase, MigrationState,
};
use crate::tenant::TenantState;

/// Values with more elements (or bytes) than this are sent in chunks.
const CHUNK_ELEMENTS: usize = 4096;
const CHUNK_BYTES: usize = MAX_BATCH_BYTES;

/// Stops the coordinator: cancel requested (not an error).
pub(super) const CANCELLED: &str = "\u{0}cancelled";

pub(super) type Res<T> = Result<T, MigrationError>;

pub(super) fn fail(msg: impl Into<String>) -> MigrationError {
    MigrationError::Failed(msg.into())
}

/// Where a migration can resume from.
#[derive(Default)]
pub(super) struct Checkpoint {
    /// The import on the target the queues belong to.
    pub import_id: Option<String>,
    pub streams: Vec<Arc<StreamState>>,
    /// Next snapshot cursor (every key before it is sealed into a queue or marked changed).
    pub cursor: u64,
    pub snapshot_done: bool,
    /// Flush epoch the target knows about.
    pub epoch: u64,
}

fn is_large(e: &Entry) -> bool {
    e.value().elements() > CHUNK_ELEMENTS || e.value().mem_size() > CHUNK_BYTES
}

/// Reads the next chunk of a large value at `pos` (an index, byte offset or table cursor).
/// Returns the chunk and the next position (None when this was the last chunk).
fn read_chunk(v: ValueRef<'_>, pos: u64) -> (Chunk, Option<u64>) {
    match v {
        ValueRef::Str(s) => {
            let b = s.as_bytes();
            let start = (pos as usize).min(b.len());
            let end = (start + CHUNK_BYTES).min(b.len());
            (
                Chunk::Bytes(b[start..end].to_vec()),
                (end < b.len()).then_some(end as u64),
            )
        }
        ValueRef::List(l) => {
            let start = pos as usize;
            let end = (start + CHUNK_ELEMENTS).min(l.len());
            let items = l.range(start, end).map(<[u8]>::to_vec).collect();
            (Chunk::Items(items), (end < l.len()).then_some(end as u64))
        }
        ValueRef::Hash(h) => {
            let mut items = Vec::new();
            let next = h.scan(pos, CHUNK_ELEMENTS, |f, v| {
                items.push((f.to_vec(), v.to_vec()))
            });
            (Chunk::Pairs(items), (next != 0).then_some(next))
        }
        ValueRef::Set(s) => {
            let mut items = Vec::new();
            let next = s.scan(pos, CHUNK_ELEMENTS, |m| items.push(m.to_vec()));
            (Chunk::Items(items), (next != 0).then_some(next))
        }
        ValueRef::ZSet(z) => {
            let mut items = Vec::new();
            let next = z.scan(pos, CHUNK_ELEMENTS, |m, s| items.push((m.to_vec(), s)));
            (Chunk::Scored(items), (next != 0).then_some(next))
        }
        ValueRef::Stream(x) => {
            // Positions are indexes into the stream's items (entries, groups, consumers,
            // pending entries, metadata).
            let mut buf = Vec::new();
            let next = x.encode_chunk(pos, CHUNK_ELEMENTS, CHUNK_BYTES, &mut buf);
            let covered = next.unwrap_or(x.item_count()).saturating_sub(pos) as usize;
            (Chunk::Stream(buf, covered), next)
        }
    }
}

/// Items (or bytes, for a string) in a chunk: how far through a large value shipping is.
fn chunk_len(c: &Chunk) -> usize {
    match c {
        Chunk::Bytes(b) => b.len(),
        Chunk::Items(v) => v.len(),
        Chunk::Pairs(v) => v.len(),
        Chunk::Scored(v) => v.len(),
        Chunk::Stream(_, n) => *n,
    }
}

/// Ships one large key in chunks, taking the keyspace lock once per chunk. A change meanwhile
/// marks the key changed, so it is shipped again whole. Returns false when PAUSE interrupted it
/// half way: the caller marks the key changed, so it is shipped again whole after RESUME (the
/// target's partial copy is replaced then, and a cutover's digest check would catch it if not).
async fn ship_large(m: &Migration, streams: &mut Streams, key: &[u8]) -> Res<bool> {
    let ks = m.tenant.keyspace();
    let mut pos: Option<u64> = Some(0);
    let mut first: Option<ValueType> = None;
    let mut done = 0usize;
    while let Some(p) = pos {
        if m.cancel.load(Relaxed) {
            return Err(fail(CANCELLED));
        }
        if m.paused.load(Relaxed) {
            return Ok(false);
        }
        let (chunk, next, ty, expire, modified, left) = {
            let db = ks.lock_async().await;
            if let Some(l) = db.tracking_lag() {
                if l.flush_epoch > streams.epoch {
                    streams.note_epoch(l.flush_epoch);
                    return Ok(true);
                }
            }
            let Some(e) = db.peek(key) else {
                return Ok(true);
            };
            if first.is_some_and(|t| t != e.value_type()) {
                return Ok(true);
            }
            let (chunk, next) = read_chunk(e.value(), p);
            done += chunk_len(&chunk);
            let total = match e.value() {
                ValueRef::Str(s) => s.as_bytes().len(),
                ValueRef::Stream(x) => x.item_count() as usize,
                v => v.elements(),
            }
            .max(1);
            let left =
                e.value().mem_size() as u64 * total.saturating_sub(done) as u64 / total as u64;
            (
                chunk,
                next,
                e.value_type(),
                e.expire_at().unwrap_or(0),
                e.modified_ms(),
                left,
            )
        };
        // Not yet read from the keyspace: part of the lag STATUS reports.
        m.large_bytes_left.store(left.max(1), Relaxed);
        let (s, w) = streams.writer(key);
        match first {
            None => w.put_partial(key, ty, expire, modified, &chunk),
            Some(_) => w.append(key, ty, &chunk),
        }
        first = Some(ty);
        if streams.is_full(s) {
            streams.send(s).await?;
        }
        pos = next;
    }
    Ok(true)
}

/// Ships large keys; if that stops half way (an error, or PAUSE), the keys not fully shipped are
/// marked changed again.
async fn ship_all_large(m: &Migration, streams: &mut Streams, keys: Vec<Vec<u8>>) -> Res<()> {
    for (i, k) in keys.iter().enumerate() {
        let shipped = ship_large(m, streams, k).await;
        m.large_bytes_left.store(0, Relaxed);
        if !matches!(shipped, Ok(true)) {
            let ks = m.tenant.keyspace();
            let mut db = ks.lock_async().await;
            let now = ferrite_storage::now_ms();
            for k in &keys[i..] {
                db.mark_changed(k, now);
            }
            return shipped.map(|_| ());
        }
    }
    Ok(())
}

/// Checks PAUSE / CANCEL; waits while paused (refusing cutover requests meanwhile).
async fn checkpoint(m: &Migration) -> Res<()> {
    checkpoint_until(m, None).await
}

/// Like [`checkpoint`], but a wait while paused ends at `until` (the caller has work to do
/// even while paused, and checks `paused` again).
async fn checkpoint_until(m: &Migration, until: Option<Instant>) -> Res<()> {
    loop {
        if m.cancel.load(Relaxed) {
            return Err(fail(CANCELLED));
        }
        if !m.paused.load(Relaxed) || until.is_some_and(|u| Instant::now() >= u) {
            return Ok(());
        }
        if let Some(req) = m.cutover.lock().take() {
            let _ = req.reply.send(Err(MigrationError::WrongState {
                id: m.id.clone(),
                state: "paused",
                op: "cut over",
            }));
        }
        let wake = m.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        if m.cancel.load(Relaxed) || !m.paused.load(Relaxed) {
            continue;
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), wake).await;
    }
}

/// Entry point of the coordinator task (first run and retries).
pub(super) async fn run(mgr: MigrationManager, m: Arc<Migration>, control: Option<Connection>) {
    m.task_done.store(false, Relaxed);
    let slots = mgr.inner.slots.clone();
    let permit = tokio::select! {
        p = slots.acquire_owned() => p.ok(),
        _ = wait_cancel(&m) => None,
    };
    let result = match permit {
        Some(_) if m.cancel.load(Relaxed) => Err(fail(CANCELLED)),
        Some(permit) => {
            let r = run_migration(&mgr, &m, control).await;
            drop(permit);
            r
        }
        None => Err(fail(CANCELLED)),
    };
    finish(&mgr, &m, result).await;
    m.task_done.store(true, Relaxed);
    m.finished.notify_waiters();
}

async fn wait_cancel(m: &Migration) {
    loop {
        let wake = m.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        if m.cancel.load(Relaxed) {
            return;
        }
        wake.await;
    }
}

pub(super) fn connect_options(_mgr: &MigrationManager, m: &Migration) -> ConnectOptions {
    m.connect.clone()
}

async fn begin(mgr: &MigrationManager, m: &Migration, control: &mut Connection) -> Res<String> {
    let t = &m.tenant;
    let l = t.limits();
    let mut args: Vec<String> = vec![
        "TENANT.IMPORT.BEGIN".into(),
        t.id().into(),
        m.id.clone(),
        WIRE_VERSION.to_string(),
        m.source.clone(),
        mgr.inner.run_id.clone(),
        "MAXMEMORY".into(),
        l.maxmemory.to_string(),
        "MAXKEYS".into(),
        l.maxkeys.to_string(),
        "OPS".into(),
        l.ops.to_string(),
    ];
    // Only when set: a tenant without a client limit still migrates to a target that predates
    // MAXCLIENTS.
    if l.maxclients > 0 {
        args.extend(["MAXCLIENTS".into(), l.maxclients.to_string()]);
    }
    // The salted hash, never the password: the target checks the same password without
    // learning it.
    if let Some(c) = t.credential() {
        args.extend(["CREDENTIAL".into(), c.encode()]);
    }
    let reply = control
        .cmd(&args)
        .await
        .map_err(|e| super::classify_target_error(&m.target, e))?;
    value::as_pairs(&reply)
        .ok()
        .and_then(|p| value::field_str(&p, "import_id"))
        .ok_or_else(|| fail("the target did not return an import id"))
}

async fn run_migration(
    mgr: &MigrationManager,
    m: &Arc<Migration>,
    control: Option<Connection>,
) -> Res<()> {
    m.transition(MigrationState::Syncing, "start")?;
    m.set_phase(MigrationPhase::Connecting);
    m.progress.lock().error = None;
    let mut control = match control {
        Some(c) => c,
        None => Connection::connect(connect_options(mgr, m))
            .await
            .map_err(|e| super::classify_target_error(&m.target, e))?,
    };
    let import_id = begin(mgr, m, &mut control).await?;
    m.progress.lock().import_id = Some(import_id.clone());

    let ks = m.tenant.keyspace();
    let epoch = {
        let mut db = ks.lock_async().await;
        db.start_tracking();
        db.tracking_lag().map_or(0, |l| l.flush_epoch)
    };
    let (states, resumed) = {
        let mut cp = m.checkpoint.lock();
        let resumed = cp.import_id.as_deref() == Some(import_id.as_str());
        if !resumed {
            // A new import (first run, or the target lost the old one): start from scratch.
            let parallel = m.settings().parallel.clamp(1, 64);
            *cp = Checkpoint {
                import_id: Some(import_id.clone()),
                streams: (0..parallel)
                    .map(|_| Arc::new(StreamState::default()))
                    .collect(),
                cursor: 0,
                snapshot_done: false,
                epoch,
            };
            m.keys_total.store(ks.len(), Relaxed);
        }
        (cp.streams.clone(), resumed)
    };
    tracing::info!(migration = %m.id, import = %import_id, resumed, "import open on target");
    if m.mode == MigrationMode::Fast {
        // Fast mode: the tenant's writes wait at the gate (then get TRYAGAIN) during the copy;
        // the cutover's downtime counts from here.
        *m.gate_closed_at.lock() = Some(std::time::Instant::now());
        m.tenant.gate().close_and_drain().await;
    }
    let timeout = m.settings().timeout.unwrap_or(mgr.settings().sync_timeout);
    let cp_epoch = m.checkpoint.lock().epoch;
    let mut streams = Streams::start(
        m,
        states,
        &connect_options(mgr, m),
        &import_id,
        timeout,
        cp_epoch,
    );
    let result = replicate(mgr, m, &mut streams, &mut control, &import_id).await;
    // Keep everything read so far: seal it into the queues that stay with the migration.
    streams.seal_all();
    streams.stop();
    {
        let mut cp = m.checkpoint.lock();
        cp.epoch = streams.epoch;
        cp.streams = streams.states.clone();
    }
    if m.mode == MigrationMode::Fast
        && m.tenant.state() == TenantState::Active
        && m.tenant.gate().is_closed()
    {
        m.tenant.gate().open();
    }
    result
}

/// Snapshot (from the checkpoint cursor), then live sync until a cutover completes.
async fn replicate(
    mgr: &MigrationManager,
    m: &Arc<Migration>,
    streams: &mut Streams,
    control: &mut Connection,
    import_id: &str,
) -> Res<()> {
    let ks = m.tenant.keyspace();
    let timeout = m.settings().timeout.unwrap_or(mgr.settings().sync_timeout);
    if !m.checkpoint.lock().snapshot_done {
        m.set_phase(MigrationPhase::Snapshot);
        let mut cursor = m.checkpoint.lock().cursor;
        // A whole snapshot (not a resumed one) is a measurement of this server's copy speed.
        let measure = (cursor == 0).then(|| (std::time::Instant::now(), ks.used_bytes()));
        loop {
            checkpoint(m).await?;
            if let Some(e) = streams.error() {
                return Err(fail(e));
            }
            reconfigure(m, streams, timeout).await?;
            let batch = streams.batch_size;
            cursor = {
                let mut db = ks.lock_async().await;
                if let Some(l) = db.tracking_lag() {
                    streams.note_epoch(l.flush_epoch);
                }
                let mut large: Vec<Vec<u8>> = Vec::new();
                let next = db.scan_physical(cursor, batch, |k, e| {
                    if is_large(e) {
                        large.push(k.to_vec());
                    } else {
                        streams.put(k, e);
                    }
                });
                // Large values go through change capture: live sync ships them in chunks.
                let now = ferrite_storage::now_ms();
                for k in &large {
                    db.mark_changed(k, now);
                }
                next
            };
            m.checkpoint.lock().cursor = cursor;
            streams.send_full().await?;
            // Let the tenant's own commands run between batches on this worker thread.
            tokio::task::yield_now().await;
            if cursor == 0 {
                break;
            }
        }
        streams.send_all().await?;
        // Live sync starts once the target has acknowledged the whole snapshot.
        streams.wait_acked(timeout).await?;
        m.checkpoint.lock().snapshot_done = true;
        tracing::info!(migration = %m.id, keys = m.keys_total.load(Relaxed), "snapshot shipped; live sync");
        if let Some((t0, bytes)) = measure {
            let secs = t0.elapsed().as_secs_f64();
            // Too small a tenant measures start-up costs, not throughput.
            if bytes >= 1 << 20 && secs > 0.01 {
                *mgr.inner.snapshot_rate.lock() = Some(bytes as f64 / secs);
            }
        }
    }
    m.set_phase(MigrationPhase::LiveSync);
    {
        let mut p = m.progress.lock();
        if p.state == MigrationState::Syncing {
            p.state = MigrationState::LiveSync;
        }
    }
    if m.mode == MigrationMode::Fast {
        while drain(m, streams, 100_000).await? > 0 {}
        streams.wait_acked(timeout).await?;
        return cutover::cutover(mgr, m, streams, control, import_id, true)
            .await
            .map(|_| ());
    }
    let mut next_beat = Instant::now() + HEARTBEAT;
    loop {
        // While paused, wake for the heartbeat too: a long PAUSE must not let the target reap
        // the import.
        checkpoint_until(m, Some(next_beat)).await?;
        if Instant::now() >= next_beat {
            heartbeat(mgr, m, control, import_id, timeout).await?;
            next_beat = Instant::now() + HEARTBEAT;
        }
        if m.paused.load(Relaxed) {
            continue;
        }
        if let Some(e) = streams.error() {
            return Err(fail(e));
        }
        reconfigure(m, streams, timeout).await?;
        let req = {
            // Taken and marked started under one lock: UNSCHEDULE either withdraws a request
            // still waiting here or sees that the cutover has begun.
            let mut slot = m.cutover.lock();
            let req = slot.take();
            if req.as_ref().is_some_and(|r| r.scheduled) {
                m.scheduled_cutover_running.store(true, Relaxed);
            }
            req
        };
        if let Some(req) = req {
            let r = cutover::cutover(mgr, m, streams, control, import_id, req.force).await;
            m.scheduled_cutover_running.store(false, Relaxed);
            let done = r.is_ok();
            let failed = m.state() == MigrationState::Failed;
            let err = r.as_ref().err().cloned();
            let _ = req.reply.send(r);
            if done {
                return Ok(());
            }
            if failed {
                return Err(err.unwrap_or_else(|| fail("cutover failed")));
            }
            continue;
        }
        let max = streams.batch_size * streams.parallel;
        let n = drain(m, streams, max).await?;
        if n == 0 {
            let wake = m.wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            if m.cutover.lock().is_none() && !m.cancel.load(Relaxed) {
                let _ = tokio::time::timeout(Duration::from_millis(1), wake).await;
            }
        }
    }
}

/// How often live sync proves to the target that the source is alive (the target reaps an
/// import that hears nothing for its `sync_timeout_secs`; a quiet tenant sends no batches) and
/// to itself that the target still answers.
const HEARTBEAT: Duration = Duration::from_secs(2);

/// One heartbeat on the control connection (`TENANT.IMPORT.RESUME` refreshes the import).
/// The target refusing means the import is gone: the migration fails, saying so, and a retry
/// starts a new one. No answer: the control connection is rebuilt until `timeout` has passed
/// without one, then the migration fails (a silent partition, where no connection resets,
/// is caught here rather than after a command timeout).
async fn heartbeat(
    mgr: &MigrationManager,
    m: &Migration,
    control: &mut Connection,
    import_id: &str,
    timeout: Duration,
) -> Res<()> {
    let since = Instant::now();
    loop {
        if m.cancel.load(Relaxed) {
            return Err(fail(CANCELLED));
        }
        let answer = tokio::time::timeout(
            HEARTBEAT.max(Duration::from_secs(3)),
            control.cmd(&["TENANT.IMPORT.RESUME", import_id]),
        )
        .await;
        let last_error = match answer {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(ClientError::Server(msg))) => {
                return Err(fail(format!(
                    "the target dropped the import ({msg}); RESUME or CUTOVER RETRY starts a new one"
                )));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer to a heartbeat".to_string(),
        };
        if since.elapsed() >= timeout {
            return Err(fail(format!(
                "the target has not answered for {} s (sync timeout): {last_error}",
                since.elapsed().as_secs()
            )));
        }
        tracing::warn!(migration = %m.id, error = %last_error, "target heartbeat failed; reconnecting the control connection");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let opts = connect_options(mgr, m).connect_timeout(Duration::from_secs(3));
        if let Ok(Ok(c)) =
            tokio::time::timeout(Duration::from_secs(5), Connection::connect(opts)).await
        {
            *control = c;
        }
    }
}

/// Applies UPDATE PARALLEL: waits until everything sent is acknowledged, then re-routes keys
/// over the new number of streams (sequence numbers continue per stream index).
async fn reconfigure(m: &Arc<Migration>, streams: &mut Streams, timeout: Duration) -> Res<()> {
    let want = m.settings().parallel.clamp(1, 64);
    if want == streams.parallel {
        return Ok(());
    }
    streams.send_all().await?;
    streams.wait_acked(timeout).await?;
    streams.stop();
    let states: Vec<Arc<StreamState>> = (0..want)
        .map(|i| {
            let seq = streams.states.get(i).map_or(0, |s| s.sealed.load(Relaxed));
            Arc::new(StreamState::starting_at(seq))
        })
        .collect();
    let import_id = m.checkpoint.lock().import_id.clone().unwrap_or_default();
    let opts = streams_options(m);
    let epoch = streams.epoch;
    *streams = Streams::start(m, states.clone(), &opts, &import_id, timeout, epoch);
    m.checkpoint.lock().streams = states;
    tracing::info!(migration = %m.id, parallel = want, "streams reconfigured");
    Ok(())
}

fn streams_options(m: &Arc<Migration>) -> ConnectOptions {
    m.connect.clone()
}

/// Ships up to `max` changed keys (oldest first); returns how many.
pub(super) async fn drain(m: &Migration, streams: &mut Streams, max: usize) -> Res<usize> {
    let ks = m.tenant.keyspace();
    let mut large = Vec::new();
    let n = {
        let mut db = ks.lock_async().await;
        if let Some(l) = db.tracking_lag() {
            streams.note_epoch(l.flush_epoch);
        }
        let n = db.drain_changes(max, |k, e| match e {
            None => streams.del(k),
            Some(e) if is_large(e) => large.push(k.to_vec()),
            Some(e) => streams.put(k, e),
        });
        // Published before the lock is released: STATUS never sees these keys nowhere.
        streams.publish_unsealed();
        n
    };
    ship_all_large(m, streams, large).await?;
    if n > 0 {
        streams.send_all().await?;
    }
    Ok(n)
}

/// Tells the target to drop the import (best effort, a few tries). Returns the target's answer
/// when it refused (e.g. because the import is already active).
pub(super) async fn abort_target(mgr: &MigrationManager, m: &Migration) -> Option<String> {
    let import_id = m.progress.lock().import_id.clone()?;
    let opts = connect_options(mgr, m)
        .connect_timeout(Duration::from_secs(2))
        .command_timeout(Duration::from_secs(10));
    for attempt in 0..3 {
        match Connection::connect(opts.clone()).await {
            Ok(mut c) => match c.cmd(&["TENANT.IMPORT.ABORT", &import_id]).await {
                Ok(_) => return None,
                Err(ferrite_client::ClientError::Server(msg)) => {
                    if msg.contains("no such import") {
                        return None;
                    }
                    tracing::warn!(migration = %m.id, error = %msg, "target refused ABORT");
                    return Some(msg);
                }
                Err(e) => tracing::warn!(migration = %m.id, attempt, error = %e, "ABORT failed"),
            },
            Err(e) => {
                tracing::warn!(migration = %m.id, attempt, error = %e, "cannot reach target to abort")
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Some("the target could not be reached".into())
}

/// Drops the checkpoint and change capture (after a cancel or a completion).
pub(super) fn release_checkpoint(m: &Migration) {
    let mut cp = m.checkpoint.lock();
    for s in &cp.streams {
        s.stop.store(true, Relaxed);
        s.notify.notify_waiters();
    }
    *cp = Checkpoint::default();
}

/// Ends the coordinator. Cancel: the source keeps serving as before and the target drops what it
/// staged. Failure: the source keeps serving as before; the checkpoint (change capture, queues,
/// the staged import on the target) is kept so the migration can be retried, until CANCEL.
async fn finish(mgr: &MigrationManager, m: &Migration, result: Res<()>) {
    let handed_over = m.tenant.state() == TenantState::Moved;
    if let Err(e) = result {
        let cancelled = matches!(&e, MigrationError::Failed(msg) if msg == CANCELLED);
        if !handed_over && m.tenant.gate().is_closed() {
            m.tenant.gate().open();
        }
        if cancelled {
            if !handed_over {
                m.tenant.keyspace().lock_async().await.stop_tracking();
                release_checkpoint(m);
                abort_target(mgr, m).await;
            }
            let mut p = m.progress.lock();
            p.state = MigrationState::Cancelled;
            p.phase = MigrationPhase::Stopped;
            p.finished = Some(std::time::Instant::now());
            tracing::info!(migration = %m.id, "migration cancelled; source unchanged, target cleaned up");
        } else if m.state() != MigrationState::Failed {
            cutover::fail_migration(m, &e.to_string());
            tracing::warn!(migration = %m.id, error = %e, "migration failed; checkpoint kept for a retry");
        }
    }
    // Wake a CUTOVER caller that is still waiting.
    if let Some(req) = m.cutover.lock().take() {
        let _ = req.reply.send(Err(MigrationError::WrongState {
            id: m.id.clone(),
            state: m.state().name(),
            op: "cut over",
        }));
    }
}
