//! The source side of a migration: one coordinator task that reads the keyspace and hands
//! batches to one sender task per stream.
//!
//! Memory stays bounded: each stream holds at most `CHANNEL + WINDOW` batches (sent but not yet
//! acknowledged ones are kept for resending after a reconnect), batches are bounded in keys and
//! bytes, large values are sent in chunks, and change capture holds one entry per changed key.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ferrite_client::{ClientError, ConnectOptions, Connection, value};
use ferrite_storage::{Entry, Value, ValueType};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use super::wire::{BatchWriter, Chunk, WIRE_VERSION, canonical_value, route};
use super::{
    CutoverResult, Migration, MigrationError, MigrationManager, MigrationMode, MigrationPhase,
    MigrationState, VerifyResult,
};
use crate::tenant::TenantState;

/// Values with more elements (or bytes) than this are sent in chunks.
const CHUNK_ELEMENTS: usize = 4096;
const CHUNK_BYTES: usize = 1 << 20;
/// A batch is sealed at this many bytes even if it has fewer keys than BATCH_SIZE.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Batches queued per stream before the coordinator waits.
const CHANNEL: usize = 4;
/// Batches in flight per stream (sent, not yet acknowledged).
const WINDOW: usize = 8;
/// How many sampled keys VERIFY compares value by value.
const VERIFY_SAMPLE: usize = 1000;

/// Stops the coordinator: cancel requested (not an error).
const CANCELLED: &str = "\u{0}cancelled";

type Res<T> = Result<T, MigrationError>;

fn fail(msg: impl Into<String>) -> MigrationError {
    MigrationError::Failed(msg.into())
}

/// A sealed batch on its way to the target.
struct Outgoing {
    seq: u64,
    payload: Vec<u8>,
    keys: u32,
}

/// What a sender shares with the coordinator.
#[derive(Default)]
struct StreamShared {
    acked: AtomicU64,
    error: Mutex<Option<String>>,
    progress: Notify,
    stop: AtomicBool,
}

/// The coordinator's view of all streams.
struct Streams {
    parallel: usize,
    batch_size: usize,
    writers: Vec<BatchWriter>,
    sent: Vec<u64>,
    txs: Vec<mpsc::Sender<Outgoing>>,
    shared: Vec<Arc<StreamShared>>,
    /// Flush epoch of the keyspace we have told the target about.
    epoch: u64,
    rate: u64,
    rate_window: (Instant, u64),
    /// Where UPDATE changes land (RATE and BATCH_SIZE take effect on the next batch).
    migration: Arc<Migration>,
}

impl Streams {
    fn open(
        mgr: &MigrationManager,
        m: &Arc<Migration>,
        import_id: &str,
        start_epoch: u64,
    ) -> Streams {
        let cfg = m.settings();
        let parallel = cfg.parallel.clamp(1, 64);
        let opts = mgr.connect_options(&m.target, &cfg);
        let timeout = cfg.timeout.unwrap_or(mgr.settings().sync_timeout);
        let mut txs = Vec::new();
        let mut shared = Vec::new();
        for i in 0..parallel {
            let (tx, rx) = mpsc::channel(CHANNEL);
            let sh = Arc::new(StreamShared::default());
            tokio::spawn(sender(
                i as u16,
                rx,
                sh.clone(),
                opts.clone(),
                import_id.to_string(),
                m.clone(),
                timeout,
            ));
            txs.push(tx);
            shared.push(sh);
        }
        Streams {
            parallel,
            batch_size: cfg.batch_size.max(1),
            writers: (0..parallel).map(|_| BatchWriter::new()).collect(),
            sent: vec![0; parallel],
            txs,
            shared,
            epoch: start_epoch,
            rate: cfg.rate_bytes_per_sec,
            rate_window: (Instant::now(), 0),
            migration: m.clone(),
        }
    }

    /// Tells the target about a flush of the source keyspace before anything read after it.
    fn note_epoch(&mut self, epoch: u64) {
        if epoch > self.epoch {
            self.epoch = epoch;
            for (s, w) in self.writers.iter_mut().enumerate() {
                w.flush(s as u16, self.parallel as u16);
            }
        }
    }

    fn writer(&mut self, key: &[u8]) -> (usize, &mut BatchWriter) {
        let s = route(key, self.parallel);
        (s, &mut self.writers[s])
    }

    fn put(&mut self, key: &[u8], e: &Entry) {
        self.writer(key).1.put(key, e);
    }

    fn del(&mut self, key: &[u8]) {
        self.writer(key).1.del(key);
    }

    fn is_full(&self, s: usize) -> bool {
        let w = &self.writers[s];
        w.records() as usize >= self.batch_size || w.len() >= MAX_BATCH_BYTES
    }

    fn error(&self) -> Option<String> {
        self.shared.iter().find_map(|s| s.error.lock().clone())
    }

    /// Seals and queues stream `s`'s batch (waits when the stream is CHANNEL batches behind).
    async fn send(&mut self, s: usize) -> Res<()> {
        if self.writers[s].is_empty() {
            return Ok(());
        }
        let w = std::mem::take(&mut self.writers[s]);
        let keys = w.keys;
        self.sent[s] += 1;
        let payload = w.finish(s as u16, self.sent[s]);
        let len = payload.len() as u64;
        let out = Outgoing {
            seq: self.sent[s],
            payload,
            keys,
        };
        if self.txs[s].send(out).await.is_err() {
            return Err(fail(
                self.error()
                    .unwrap_or_else(|| "stream to the target closed".into()),
            ));
        }
        self.throttle(len).await;
        Ok(())
    }

    /// RATE: keeps the average shipping rate at or under the limit.
    async fn throttle(&mut self, bytes: u64) {
        let cfg = self.migration.settings();
        self.batch_size = cfg.batch_size.max(1);
        if cfg.rate_bytes_per_sec != self.rate {
            self.rate = cfg.rate_bytes_per_sec;
            self.rate_window = (Instant::now(), 0);
        }
        if self.rate == 0 {
            return;
        }
        let (start, sent) = &mut self.rate_window;
        *sent += bytes;
        let due = Duration::from_secs_f64(*sent as f64 / self.rate as f64);
        let elapsed = start.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
        if start.elapsed() > Duration::from_secs(10) {
            self.rate_window = (Instant::now(), 0);
        }
    }

    async fn send_full(&mut self) -> Res<()> {
        for s in 0..self.parallel {
            if self.is_full(s) {
                self.send(s).await?;
            }
        }
        Ok(())
    }

    async fn send_all(&mut self) -> Res<()> {
        for s in 0..self.parallel {
            self.send(s).await?;
        }
        Ok(())
    }

    /// Waits until the target has acknowledged everything sent.
    async fn wait_acked(&self, timeout: Duration) -> Res<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        for (s, sh) in self.shared.iter().enumerate() {
            loop {
                let wait = sh.progress.notified();
                tokio::pin!(wait);
                wait.as_mut().enable();
                if let Some(e) = self.error() {
                    return Err(fail(e));
                }
                if sh.acked.load(Relaxed) >= self.sent[s] {
                    break;
                }
                if tokio::time::timeout_at(deadline, wait).await.is_err() {
                    return Err(fail(format!(
                        "the target did not acknowledge stream {s} within {} ms",
                        timeout.as_millis()
                    )));
                }
            }
        }
        Ok(())
    }

    fn stop(&self) {
        for s in &self.shared {
            s.stop.store(true, Relaxed);
            s.progress.notify_waiters();
        }
    }
}

/// Connects a stream and learns where the target stands on it.
async fn connect_stream(
    opts: &ConnectOptions,
    import_id: &str,
    index: u16,
) -> Result<(Connection, u64), ClientError> {
    let mut conn = Connection::connect(opts.clone()).await?;
    let reply = conn.cmd(&["TENANT.IMPORT.RESUME", import_id]).await?;
    let mut last = 0;
    for (k, v) in value::as_pairs(&reply)? {
        if k == index.to_string() {
            last = value::as_int(&v)? as u64;
        }
    }
    Ok((conn, last))
}

/// One stream: sends batches pipelined (up to WINDOW unacknowledged), reconnects with backoff
/// when the connection drops, and resends from the target's last applied batch.
async fn sender(
    index: u16,
    mut rx: mpsc::Receiver<Outgoing>,
    shared: Arc<StreamShared>,
    opts: ConnectOptions,
    import_id: String,
    m: Arc<Migration>,
    timeout: Duration,
) {
    let mut conn: Option<Connection> = None;
    let mut unacked: VecDeque<Outgoing> = VecDeque::new();
    let mut closed = false;
    let mut down_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(50);
    let set_error = |e: String| {
        *shared.error.lock() = Some(e);
        shared.progress.notify_waiters();
    };
    loop {
        if shared.stop.load(Relaxed) {
            return;
        }
        let Some(c) = conn.as_mut() else {
            match connect_stream(&opts, &import_id, index).await {
                Ok((mut c, last)) => {
                    while unacked.front().is_some_and(|o| o.seq <= last) {
                        if let Some(o) = unacked.pop_front() {
                            ack(&m, &shared, &o);
                        }
                    }
                    let mut resend_ok = true;
                    for o in &unacked {
                        c.queue(&[
                            b"TENANT.IMPORT.BATCH".as_slice(),
                            import_id.as_bytes(),
                            &o.payload,
                        ]);
                        m.bytes_sent.fetch_add(o.payload.len() as u64, Relaxed);
                    }
                    if c.flush().await.is_err() {
                        resend_ok = false;
                    }
                    if resend_ok {
                        if down_since.take().is_some() {
                            tracing::info!(migration = %m.id, stream = index, resent = unacked.len(), "stream reconnected");
                        }
                        backoff = Duration::from_millis(50);
                        conn = Some(c);
                    }
                }
                Err(e) if !e.is_connection_error() => {
                    set_error(format!("target refused stream {index}: {e}"));
                    return;
                }
                Err(e) => {
                    let since = *down_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= timeout {
                        set_error(format!(
                            "lost the connection to the target for {} s (sync timeout): {e}",
                            since.elapsed().as_secs()
                        ));
                        return;
                    }
                    tracing::warn!(migration = %m.id, stream = index, error = %e, "target connection failed; retrying");
                    m.reconnects.fetch_add(1, Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
            continue;
        };
        // Fill the window.
        let mut write_failed = false;
        while unacked.len() < WINDOW && !closed {
            let next = if unacked.is_empty() {
                tokio::select! {
                    o = rx.recv() => o,
                    _ = shared.progress.notified(), if shared.stop.load(Relaxed) => None,
                }
            } else {
                match rx.try_recv() {
                    Ok(o) => Some(o),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            let Some(o) = next else {
                closed = true;
                break;
            };
            c.queue(&[
                b"TENANT.IMPORT.BATCH".as_slice(),
                import_id.as_bytes(),
                &o.payload,
            ]);
            m.bytes_sent.fetch_add(o.payload.len() as u64, Relaxed);
            unacked.push_back(o);
            if c.flush().await.is_err() {
                write_failed = true;
                break;
            }
        }
        if closed && unacked.is_empty() {
            return;
        }
        if write_failed {
            conn = None;
            continue;
        }
        if unacked.is_empty() {
            continue;
        }
        match c.recv().await {
            Ok(_) => {
                if let Some(o) = unacked.pop_front() {
                    ack(&m, &shared, &o);
                }
            }
            Err(e) if e.is_connection_error() => {
                tracing::warn!(migration = %m.id, stream = index, error = %e, "target connection lost; will resume");
                m.reconnects.fetch_add(1, Relaxed);
                down_since.get_or_insert_with(Instant::now);
                conn = None;
            }
            Err(e) => {
                set_error(format!("target rejected a batch on stream {index}: {e}"));
                return;
            }
        }
    }
}

fn ack(m: &Migration, shared: &StreamShared, o: &Outgoing) {
    shared.acked.store(o.seq, Relaxed);
    m.keys_synced.fetch_add(u64::from(o.keys), Relaxed);
    m.bytes_synced.fetch_add(o.payload.len() as u64, Relaxed);
    shared.progress.notify_waiters();
}

fn is_large(e: &Entry) -> bool {
    e.value().elements() > CHUNK_ELEMENTS || e.value().mem_size() > CHUNK_BYTES
}

/// Reads the next chunk of a large value at `pos` (an index, byte offset or table cursor).
/// Returns the chunk and the next position (None when this was the last chunk).
fn read_chunk(v: &Value, pos: u64) -> (Chunk, Option<u64>) {
    match v {
        Value::Str(s) => {
            let b = s.as_bytes();
            let start = (pos as usize).min(b.len());
            let end = (start + CHUNK_BYTES).min(b.len());
            (
                Chunk::Bytes(b[start..end].to_vec()),
                (end < b.len()).then_some(end as u64),
            )
        }
        Value::List(l) => {
            let start = pos as usize;
            let end = (start + CHUNK_ELEMENTS).min(l.len());
            let items = l.range(start, end).map(<[u8]>::to_vec).collect();
            (Chunk::Items(items), (end < l.len()).then_some(end as u64))
        }
        Value::Hash(h) => {
            let mut items = Vec::new();
            let next = h.scan(pos, CHUNK_ELEMENTS, |f, v| {
                items.push((f.to_vec(), v.to_vec()))
            });
            (Chunk::Pairs(items), (next != 0).then_some(next))
        }
        Value::Set(s) => {
            let mut items = Vec::new();
            let next = s.scan(pos, CHUNK_ELEMENTS, |m| items.push(m.to_vec()));
            (Chunk::Items(items), (next != 0).then_some(next))
        }
        Value::ZSet(z) => {
            let mut items = Vec::new();
            let next = z.scan(pos, CHUNK_ELEMENTS, |m, s| items.push((m.to_vec(), s)));
            (Chunk::Scored(items), (next != 0).then_some(next))
        }
    }
}

/// Ships one large key in chunks, taking the keyspace lock once per chunk. If the key changes
/// meanwhile it is marked changed and will be shipped again whole.
async fn ship_large(m: &Migration, streams: &mut Streams, key: &[u8]) -> Res<()> {
    let ks = m.tenant.keyspace();
    let mut pos: Option<u64> = Some(0);
    let mut first: Option<ValueType> = None;
    while let Some(p) = pos {
        let (chunk, next, ty, expire, modified) = {
            let db = ks.lock();
            if let Some(l) = db.tracking_lag() {
                if l.flush_epoch > streams.epoch {
                    streams.note_epoch(l.flush_epoch);
                    return Ok(());
                }
            }
            let Some(e) = db.peek(key) else {
                return Ok(());
            };
            if first.is_some_and(|t| t != e.value_type()) {
                return Ok(());
            }
            let (chunk, next) = read_chunk(e.value(), p);
            (
                chunk,
                next,
                e.value_type(),
                e.expire_at().unwrap_or(0),
                e.modified_ms(),
            )
        };
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
    Ok(())
}

/// Checks PAUSE / CANCEL / cutover requests; waits while paused.
async fn checkpoint(m: &Migration) -> Res<()> {
    loop {
        if m.cancel.load(Relaxed) {
            return Err(fail(CANCELLED));
        }
        if !m.paused.load(Relaxed) {
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

/// Entry point of the coordinator task.
pub(super) async fn run(mgr: MigrationManager, m: Arc<Migration>, control: Connection) {
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

async fn run_migration(
    mgr: &MigrationManager,
    m: &Arc<Migration>,
    mut control: Connection,
) -> Res<()> {
    m.transition(MigrationState::Syncing, "start")?;
    m.set_phase(MigrationPhase::Connecting);
    let cfg = m.settings();
    let t = &m.tenant;
    let l = t.limits();
    let mut begin: Vec<String> = vec![
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
    if let Some(pw) = t.password() {
        begin.extend(["PASSWORD".into(), pw]);
    }
    let reply = control
        .cmd(&begin)
        .await
        .map_err(|e| super::classify_target_error(&m.target, e))?;
    let import_id = value::as_pairs(&reply)
        .ok()
        .and_then(|p| p.into_iter().find(|(k, _)| k == "import_id"))
        .and_then(|(_, v)| value::as_string(&v).ok())
        .ok_or_else(|| fail("the target did not return an import id"))?;
    m.progress.lock().import_id = Some(import_id.clone());
    tracing::info!(migration = %m.id, import = %import_id, "import opened on target");

    let ks = t.keyspace();
    let epoch = {
        let mut db = ks.lock();
        db.start_tracking();
        m.keys_total.store(db.len() as u64, Relaxed);
        db.tracking_lag().map_or(0, |l| l.flush_epoch)
    };
    if m.mode == MigrationMode::Fast {
        // Fast mode: writes wait at the gate (then get TRYAGAIN) for the whole copy.
        t.gate().close_and_drain().await;
    }
    let mut streams = Streams::open(mgr, m, &import_id, epoch);
    let result = replicate(
        mgr,
        m,
        &mut streams,
        &mut control,
        &import_id,
        cfg.batch_size,
    )
    .await;
    streams.stop();
    if m.mode == MigrationMode::Fast && t.gate().is_closed() {
        t.gate().open();
    }
    result
}

/// Snapshot, then live sync until a cutover completes.
async fn replicate(
    mgr: &MigrationManager,
    m: &Arc<Migration>,
    streams: &mut Streams,
    control: &mut Connection,
    import_id: &str,
    batch_size: usize,
) -> Res<()> {
    let ks = m.tenant.keyspace();
    m.set_phase(MigrationPhase::Snapshot);
    let mut cursor = 0u64;
    loop {
        checkpoint(m).await?;
        if let Some(e) = streams.error() {
            return Err(fail(e));
        }
        let mut large: Vec<Vec<u8>> = Vec::new();
        cursor = {
            let db = ks.lock();
            if let Some(l) = db.tracking_lag() {
                streams.note_epoch(l.flush_epoch);
            }
            db.scan_physical(cursor, batch_size, |k, e| {
                if is_large(e) {
                    large.push(k.to_vec());
                } else {
                    streams.put(k, e);
                }
            })
        };
        streams.send_full().await?;
        for k in large {
            ship_large(m, streams, &k).await?;
        }
        if cursor == 0 {
            break;
        }
    }
    streams.send_all().await?;
    // Live sync starts once the target has acknowledged the whole snapshot.
    let timeout = m.settings().timeout.unwrap_or(mgr.settings().sync_timeout);
    streams.wait_acked(timeout).await?;
    tracing::info!(migration = %m.id, keys = m.keys_total.load(Relaxed), "snapshot shipped; live sync");
    m.set_phase(MigrationPhase::LiveSync);
    {
        let mut p = m.progress.lock();
        if p.state == MigrationState::Syncing {
            p.state = MigrationState::LiveSync;
        }
    }
    if m.mode == MigrationMode::Fast {
        streams.wait_acked(Duration::from_secs(600)).await?;
        let r = cutover(mgr, m, streams, control, import_id, true).await;
        return r.map(|_| ());
    }
    loop {
        checkpoint(m).await?;
        if let Some(e) = streams.error() {
            return Err(fail(e));
        }
        let req = m.cutover.lock().take();
        if let Some(req) = req {
            let r = cutover(mgr, m, streams, control, import_id, req.force).await;
            let done = r.is_ok();
            let fatal =
                matches!(&r, Err(MigrationError::Failed(_))) && m.state() == MigrationState::Failed;
            let err = r.as_ref().err().cloned();
            let _ = req.reply.send(r);
            if done {
                return Ok(());
            }
            if fatal {
                return Err(err.unwrap_or_else(|| fail("cutover failed")));
            }
            continue;
        }
        let max = batch_size * streams.parallel;
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

/// Ships up to `max` changed keys (oldest first); returns how many.
async fn drain(m: &Migration, streams: &mut Streams, max: usize) -> Res<usize> {
    let ks = m.tenant.keyspace();
    let mut large = Vec::new();
    let n = {
        let mut db = ks.lock();
        if let Some(l) = db.tracking_lag() {
            streams.note_epoch(l.flush_epoch);
        }
        db.drain_changes(max, |k, e| match e {
            None => streams.del(k),
            Some(e) if is_large(e) => large.push(k.to_vec()),
            Some(e) => streams.put(k, e),
        })
    };
    for k in large {
        ship_large(m, streams, &k).await?;
    }
    if n > 0 {
        streams.send_all().await?;
    }
    Ok(n)
}

/// The cutover: gate writes, drain, confirm, hand over, activate, reopen.
async fn cutover(
    mgr: &MigrationManager,
    m: &Arc<Migration>,
    streams: &mut Streams,
    control: &mut Connection,
    import_id: &str,
    force: bool,
) -> Res<CutoverResult> {
    let settings = mgr.settings();
    let ks = m.tenant.keyspace();
    let lag = ks.lock().tracking_lag().map_or(0, |l| l.keys);
    if lag > settings.cutover_max_lag && !force {
        return Err(MigrationError::LagTooHigh {
            lag,
            max: settings.cutover_max_lag,
        });
    }
    m.transition(MigrationState::CuttingOver, "cut over")?;
    m.set_phase(MigrationPhase::Cutover);
    let gate = m.tenant.gate();
    let t0 = Instant::now();
    gate.close_and_drain().await;

    // Drain and confirm: the target must hold exactly what the source holds.
    let mut confirmed = None;
    let mut last_err = String::new();
    for _attempt in 0..5 {
        while drain(m, streams, 100_000).await? > 0 {}
        if let Err(e) = streams.wait_acked(Duration::from_secs(10)).await {
            last_err = e.to_string();
            break;
        }
        let (keys, digest, dirty) = {
            let db = ks.lock();
            (
                db.len() as u64,
                db.digest().combined(),
                db.tracking_lag().map_or(0, |l| l.keys),
            )
        };
        if dirty > 0 {
            continue;
        }
        match control.cmd(&["TENANT.IMPORT.PREPARE", import_id]).await {
            Ok(reply) => {
                let pairs = value::as_pairs(&reply).unwrap_or_default();
                let get = |name: &str| {
                    pairs
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                };
                let tkeys = get("keys")
                    .and_then(|v| value::as_int(&v).ok())
                    .unwrap_or(-1);
                let tdigest = get("digest")
                    .and_then(|v| value::as_string(&v).ok())
                    .unwrap_or_default();
                if tkeys == keys as i64 && tdigest == format!("{digest:016x}") {
                    confirmed = Some(keys);
                    break;
                }
                last_err = format!(
                    "target does not match the source at cutover (source {keys} keys, digest {digest:016x}; target {tkeys} keys, digest {tdigest})"
                );
            }
            Err(e) => {
                last_err = format!("target did not confirm: {e}");
                break;
            }
        }
    }
    let Some(keys) = confirmed else {
        // Nothing was handed over: the source keeps the tenant and live sync goes on.
        gate.open();
        m.set_phase(MigrationPhase::LiveSync);
        m.transition(MigrationState::LiveSync, "resume after a refused cutover")?;
        m.progress.lock().error = Some(format!("cutover aborted: {last_err}"));
        tracing::warn!(migration = %m.id, error = %last_err, "cutover aborted; source keeps the tenant");
        return Err(fail(format!(
            "cutover aborted, the source still owns the tenant: {last_err}"
        )));
    };

    // Hand over: from here the source answers MOVED. The target is activated next; until then
    // neither side accepts writes, so there are never two writable owners.
    m.tenant.set_moved(&m.target);
    ks.lock().stop_tracking();
    let activated = activate(mgr, m, control, import_id, settings.activation_timeout).await;
    match activated {
        Ok(()) => {}
        Err(Definitive(reason)) => {
            // The target says the import is gone (not active): it is safe to take the tenant
            // back. The migration fails; the source serves exactly as before.
            m.tenant.set_state(TenantState::Active);
            gate.open();
            let msg = format!("cutover failed, the source still owns the tenant: {reason}");
            fail_migration(m, &msg);
            return Err(fail(msg));
        }
        Err(Unconfirmed(reason)) => {
            // We cannot know whether the target activated: keep the tenant handed over (MOVED)
            // rather than risk two writable owners.
            gate.open();
            let msg = format!(
                "cutover incomplete: the source has handed the tenant over but the target did not confirm activation ({reason}); retry with TENANT.MIGRATE.CUTOVER {} RETRY",
                m.id
            );
            fail_migration(m, &msg);
            return Err(fail(msg));
        }
    }
    gate.open();
    let downtime_ms = t0.elapsed().as_secs_f64() * 1000.0;
    {
        let mut p = m.progress.lock();
        p.state = MigrationState::Completed;
        p.phase = MigrationPhase::Done;
        p.completed_at = Some(ferrite_storage::now_ms());
        p.finished = Some(Instant::now());
        p.downtime_ms = Some(downtime_ms);
        p.keys_migrated = keys;
        p.error = None;
    }
    tracing::info!(migration = %m.id, tenant = %m.tenant.id(), keys, downtime_ms, "cutover completed");
    schedule_release(m.clone(), settings.retention);
    Ok(CutoverResult {
        status: "completed",
        downtime_ms,
        keys_migrated: keys,
    })
}

/// How an activation attempt ended when it did not succeed.
enum ActivateError {
    /// The target refused in a way that proves the tenant is not active there.
    Definitive(String),
    /// The target could not be reached (or answered oddly) for the whole timeout.
    Unconfirmed(String),
}
use ActivateError::{Definitive, Unconfirmed};

async fn activate(
    mgr: &MigrationManager,
    m: &Migration,
    control: &mut Connection,
    import_id: &str,
    timeout: Duration,
) -> Result<(), ActivateError> {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(20);
    let mut reconnect = false;
    loop {
        if reconnect {
            match Connection::connect(mgr.connect_options(&m.target, &m.settings())).await {
                Ok(c) => *control = c,
                Err(e) => {
                    if Instant::now() >= deadline {
                        return Err(Unconfirmed(e.to_string()));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            }
        }
        match control.cmd(&["TENANT.IMPORT.ACTIVATE", import_id]).await {
            Ok(_) => return Ok(()),
            Err(ClientError::Server(msg))
                if msg.contains("no such import") || msg.contains("is aborted") =>
            {
                return Err(Definitive(msg));
            }
            Err(e) => {
                if Instant::now() >= deadline {
                    return Err(Unconfirmed(e.to_string()));
                }
                reconnect = e.is_connection_error();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

fn fail_migration(m: &Migration, msg: &str) {
    let mut p = m.progress.lock();
    p.state = MigrationState::Failed;
    p.phase = MigrationPhase::Stopped;
    p.error = Some(msg.to_string());
    p.finished = Some(Instant::now());
}

/// Frees the frozen copy after the retention period; the MOVED answer stays.
fn schedule_release(m: Arc<Migration>, retention: Duration) {
    let frozen = m.tenant.keyspace();
    tokio::spawn(async move {
        tokio::time::sleep(retention).await;
        if m.tenant.state() == TenantState::Moved && Arc::ptr_eq(&m.tenant.keyspace(), &frozen) {
            let old = m
                .tenant
                .replace_keyspace(Arc::new(ferrite_storage::Keyspace::new()));
            drop(frozen);
            tokio::task::spawn_blocking(move || drop(old));
            tracing::info!(migration = %m.id, tenant = %m.tenant.id(), "frozen copy released after retention");
        }
    });
}

/// Tells the target to drop the import (best effort, a few tries).
pub(super) async fn abort_target(mgr: &MigrationManager, m: &Migration) {
    let Some(import_id) = m.progress.lock().import_id.clone() else {
        return;
    };
    let opts = mgr
        .connect_options(&m.target, &m.settings())
        .connect_timeout(Duration::from_secs(2))
        .command_timeout(Duration::from_secs(10));
    for attempt in 0..3 {
        match Connection::connect(opts.clone()).await {
            Ok(mut c) => match c.cmd(&["TENANT.IMPORT.ABORT", &import_id]).await {
                Ok(_) => return,
                Err(ClientError::Server(msg)) => {
                    tracing::warn!(migration = %m.id, error = %msg, "target refused ABORT");
                    return;
                }
                Err(e) => tracing::warn!(migration = %m.id, attempt, error = %e, "ABORT failed"),
            },
            Err(e) => {
                tracing::warn!(migration = %m.id, attempt, error = %e, "cannot reach target to abort")
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Ends the coordinator: on cancel or failure the source keeps serving as before and the target
/// drops what it staged.
async fn finish(mgr: &MigrationManager, m: &Migration, result: Res<()>) {
    let handed_over = m.tenant.state() == TenantState::Moved;
    match result {
        Ok(()) => {}
        Err(e) => {
            let cancelled = matches!(&e, MigrationError::Failed(msg) if msg == CANCELLED);
            if !handed_over {
                m.tenant.keyspace().lock().stop_tracking();
                if m.tenant.gate().is_closed() {
                    m.tenant.gate().open();
                }
                abort_target(mgr, m).await;
            }
            if cancelled {
                let mut p = m.progress.lock();
                p.state = MigrationState::Cancelled;
                p.phase = MigrationPhase::Stopped;
                p.finished = Some(Instant::now());
                tracing::info!(migration = %m.id, "migration cancelled; source unchanged, target cleaned up");
            } else if m.state() != MigrationState::Failed {
                fail_migration(m, &e.to_string());
                tracing::warn!(migration = %m.id, error = %e, "migration failed");
            }
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

/// VERIFY: digests of the frozen copy and of the target at activation, plus a sample of keys
/// compared value by value (keys the target changed after cutover are skipped and counted).
pub(super) async fn verify(mgr: &MigrationManager, m: &Migration) -> Res<VerifyResult> {
    let st = m.state();
    if !matches!(st, MigrationState::Completed | MigrationState::Verified) {
        return Err(MigrationError::WrongState {
            id: m.id.clone(),
            state: st.name(),
            op: "verify",
        });
    }
    let import_id = m
        .progress
        .lock()
        .import_id
        .clone()
        .ok_or_else(|| fail("no import id recorded"))?;
    let frozen = m.tenant.keyspace();
    let (keys_source, digest, sample) = {
        let mut db = frozen.lock();
        let keys = db.len() as u64;
        let digest = db.digest().clone();
        let mut rng = rand::rng();
        let mut seen = std::collections::HashSet::new();
        let mut sample = Vec::new();
        let want = VERIFY_SAMPLE.min(db.len());
        let mut tries = 0;
        while sample.len() < want && tries < want * 20 {
            tries += 1;
            // No lazy expiry on the frozen copy: it must stay exactly as handed over.
            let Some(k) = db.random_key(0, &mut rng) else {
                break;
            };
            if seen.insert(k.clone()) {
                if let Some(e) = db.peek(&k) {
                    sample.push((k, canonical_value(e.value(), e.expire_at().unwrap_or(0))));
                }
            }
        }
        (keys, digest, sample)
    };
    if keys_source == 0 && m.progress.lock().keys_migrated > 0 {
        return Err(fail(
            "the frozen copy was released after the retention period; nothing to verify against",
        ));
    }
    let mut conn = Connection::connect(mgr.connect_options(&m.target, &m.settings()))
        .await
        .map_err(|e| fail(format!("cannot reach the target: {e}")))?;
    let reply = conn
        .cmd(&["TENANT.IMPORT.STATUS", &import_id])
        .await
        .map_err(|e| fail(format!("target: {e}")))?;
    let pairs = value::as_pairs(&reply).map_err(|e| fail(e.to_string()))?;
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let keys_target = get("activation_keys")
        .and_then(|v| value::as_int(&v).ok())
        .unwrap_or(-1);
    let activated_at = get("activated_at_ms")
        .and_then(|v| value::as_int(&v).ok())
        .unwrap_or(0) as u64;
    let buckets: Vec<String> = get("activation_buckets")
        .and_then(|v| value::as_array(&v).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(|f| value::as_string(f).ok())
        .collect();
    let mismatched_buckets: Vec<usize> = (0..ferrite_storage::digest::BUCKETS)
        .filter(|&b| buckets.get(b) != Some(&format!("{:016x}", digest.bucket(b))))
        .collect();
    let checksum_match = mismatched_buckets.is_empty() && keys_target == keys_source as i64;

    let (mut matched, mut compared, mut skipped) = (0u64, 0u64, 0u64);
    for part in sample.chunks(200) {
        let mut args: Vec<&[u8]> = vec![b"TENANT.IMPORT.FETCH", import_id.as_bytes()];
        args.extend(part.iter().map(|(k, _)| &**k));
        let reply = conn
            .cmd(&args)
            .await
            .map_err(|e| fail(format!("target: {e}")))?;
        let items = value::as_array(&reply).map_err(|e| fail(e.to_string()))?;
        for ((_, want), got) in part.iter().zip(items) {
            let entry = value::as_array(&got).unwrap_or_default();
            let modified = entry
                .first()
                .and_then(|f| value::as_int(f).ok())
                .unwrap_or(0) as u64;
            let bytes = entry.get(1).and_then(|f| value::as_bytes(f).ok().flatten());
            // Keys the target changed at or after activation no longer reflect the cutover
            // state, and a key absent now was deleted or expired there since (a key missing at
            // activation would already show in the activation digest): both are skipped.
            if bytes.is_none() || modified >= activated_at {
                skipped += 1;
                continue;
            }
            compared += 1;
            if bytes.as_deref() == Some(want.as_slice()) {
                matched += 1;
            }
        }
    }
    let verified = checksum_match && matched == compared;
    if verified {
        m.transition(MigrationState::Verified, "verify")?;
    }
    Ok(VerifyResult {
        keys_source,
        keys_target: keys_target.max(0) as u64,
        checksum_match,
        sample_matched: matched,
        sample_compared: compared,
        sample_skipped: skipped,
        mismatched_buckets,
        status: if verified { "verified" } else { "mismatch" },
    })
}
