//! The transport of a migration: one queue and one sender task per stream.
//!
//! A stream's queue holds every sealed batch the target has not acknowledged yet, whether sent
//! or not. It belongs to the migration (not to the sender task), so when a connection drops the
//! sender resumes from the target's last applied batch, and when the whole migration fails and is
//! retried, nothing the source had read is lost: the new senders resend what is still queued.
//! Sequence numbers per stream let the target skip batches it has already applied.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ferrite_client::{ClientError, ConnectOptions, Connection, value};
use ferrite_storage::Entry;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::wire::{BatchWriter, route};
use super::{Migration, MigrationError};

/// A batch is sealed at this many bytes even if it has fewer keys than BATCH_SIZE.
pub(super) const MAX_BATCH_BYTES: usize = 1 << 20;
/// Batches in flight per stream (sent, not yet acknowledged).
const WINDOW: usize = 8;
/// Sealed batches a stream may hold before the coordinator waits (bounds source memory).
const QUEUE_LIMIT: usize = WINDOW + 4;

/// A sealed batch on its way to the target.
pub(super) struct Outgoing {
    pub seq: u64,
    pub payload: Vec<u8>,
    pub keys: u32,
    /// Unix ms when the batch was sealed (the age of what is in flight, for `lag_seconds`).
    pub sealed_ms: u64,
}

/// What the target has not acknowledged yet across a migration's stream queues.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    pub keys: u64,
    pub bytes: u64,
    /// Seal time of the oldest unacknowledged batch.
    pub oldest_ms: Option<u64>,
}

/// Sums the unacknowledged batches of `states` (at most QUEUE_LIMIT per stream: cheap).
pub(super) fn in_flight(states: &[Arc<StreamState>]) -> InFlight {
    let mut f = InFlight::default();
    for st in states {
        let q = st.queue.lock();
        for o in q.iter() {
            f.keys += u64::from(o.keys);
            f.bytes += o.payload.len() as u64;
            f.oldest_ms = Some(f.oldest_ms.map_or(o.sealed_ms, |t| t.min(o.sealed_ms)));
        }
    }
    f
}

/// One stream's state, kept by the migration across reconnects and retries.
#[derive(Default)]
pub(super) struct StreamState {
    /// Last sequence number assigned to a sealed batch.
    pub sealed: AtomicU64,
    /// Last sequence number the target acknowledged.
    pub acked: AtomicU64,
    /// Sealed batches not yet acknowledged, oldest first.
    pub queue: Mutex<VecDeque<Outgoing>>,
    /// Why the sender gave up, if it did.
    pub error: Mutex<Option<String>>,
    /// Woken on acknowledgements, new batches, errors and stop.
    pub notify: Notify,
    pub stop: AtomicBool,
}

impl StreamState {
    /// Continues the numbering of an earlier stream (after UPDATE PARALLEL).
    pub fn starting_at(seq: u64) -> StreamState {
        let s = StreamState::default();
        s.sealed.store(seq, Relaxed);
        s.acked.store(seq, Relaxed);
        s
    }

    fn wake(&self) {
        self.notify.notify_waiters();
    }
}

/// Connects a stream and learns the last batch the target applied on it.
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

/// Sends a stream's queue pipelined (up to WINDOW unacknowledged); reconnects with backoff when
/// the connection drops and resends from the target's last applied batch; gives up (recording
/// why) after `timeout` without a working connection or on a refusal.
pub(super) async fn sender(
    index: u16,
    state: Arc<StreamState>,
    opts: ConnectOptions,
    import_id: String,
    m: Arc<Migration>,
    timeout: Duration,
) {
    let mut conn: Option<Connection> = None;
    // Batches of the queue already written to the current connection.
    let mut in_flight = 0usize;
    let mut down_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(50);
    let give_up = |e: String| {
        *state.error.lock() = Some(e);
        state.wake();
    };
    loop {
        if state.stop.load(Relaxed) {
            return;
        }
        let Some(c) = conn.as_mut() else {
            match connect_stream(&opts, &import_id, index).await {
                Ok((c, last)) => {
                    let mut q = state.queue.lock();
                    while q.front().is_some_and(|o| o.seq <= last) {
                        if let Some(o) = q.pop_front() {
                            ack(&m, &state, &o);
                        }
                    }
                    drop(q);
                    if state.acked.load(Relaxed) < last {
                        state.acked.store(last, Relaxed);
                    }
                    if down_since.take().is_some() {
                        tracing::info!(migration = %m.id, stream = index, "stream reconnected; resuming after batch {last}");
                    }
                    in_flight = 0;
                    backoff = Duration::from_millis(50);
                    conn = Some(c);
                }
                Err(e) if !e.is_connection_error() => {
                    give_up(format!("target refused stream {index}: {e}"));
                    return;
                }
                Err(e) => {
                    let since = *down_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= timeout {
                        give_up(format!(
                            "lost the connection to the target for {} s (sync timeout): {e}",
                            since.elapsed().as_secs()
                        ));
                        return;
                    }
                    tracing::warn!(migration = %m.id, stream = index, error = %e, "target connection failed; retrying");
                    m.reconnects.fetch_add(1, Relaxed);
                    let wake = state.notify.notified();
                    let _ = tokio::time::timeout(backoff, wake).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
            continue;
        };
        // Write what fits in the window.
        let mut wrote = 0;
        {
            let q = state.queue.lock();
            for o in q
                .iter()
                .skip(in_flight)
                .take(WINDOW.saturating_sub(in_flight))
            {
                c.queue(&[
                    b"TENANT.IMPORT.BATCH".as_slice(),
                    import_id.as_bytes(),
                    &o.payload,
                ]);
                m.bytes_sent.fetch_add(o.payload.len() as u64, Relaxed);
                wrote += 1;
            }
        }
        if wrote > 0 {
            if c.flush().await.is_err() {
                m.reconnects.fetch_add(1, Relaxed);
                down_since.get_or_insert_with(Instant::now);
                conn = None;
                continue;
            }
            in_flight += wrote;
        }
        if in_flight == 0 {
            // Nothing to send: wait for a batch (or stop).
            let wake = state.notify.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            if state.queue.lock().is_empty() && !state.stop.load(Relaxed) {
                let _ = tokio::time::timeout(Duration::from_millis(100), wake).await;
            }
            continue;
        }
        match c.recv().await {
            Ok(_) => {
                let done = state.queue.lock().pop_front();
                if let Some(o) = done {
                    ack(&m, &state, &o);
                }
                in_flight -= 1;
            }
            Err(e) if e.is_connection_error() => {
                tracing::warn!(migration = %m.id, stream = index, error = %e, "target connection lost; will resume");
                m.reconnects.fetch_add(1, Relaxed);
                down_since.get_or_insert_with(Instant::now);
                conn = None;
            }
            Err(e) => {
                give_up(format!("target rejected a batch on stream {index}: {e}"));
                return;
            }
        }
    }
}

fn ack(m: &Migration, state: &StreamState, o: &Outgoing) {
    state.acked.store(o.seq, Relaxed);
    m.keys_synced.fetch_add(u64::from(o.keys), Relaxed);
    m.bytes_synced.fetch_add(o.payload.len() as u64, Relaxed);
    state.wake();
}

/// The coordinator's side: batch builders per stream, sealing and queueing, backpressure.
pub(super) struct Streams {
    pub parallel: usize,
    pub batch_size: usize,
    writers: Vec<BatchWriter>,
    pub states: Vec<Arc<StreamState>>,
    /// Flush epoch of the source keyspace the target has been told about.
    pub epoch: u64,
    rate: u64,
    rate_window: (Instant, u64),
    migration: Arc<Migration>,
}

impl Streams {
    /// Builds the coordinator side over existing stream states and starts their senders.
    pub fn start(
        m: &Arc<Migration>,
        states: Vec<Arc<StreamState>>,
        opts: &ConnectOptions,
        import_id: &str,
        timeout: Duration,
        epoch: u64,
    ) -> Streams {
        for (i, st) in states.iter().enumerate() {
            st.stop.store(false, Relaxed);
            *st.error.lock() = None;
            tokio::spawn(sender(
                i as u16,
                st.clone(),
                opts.clone(),
                import_id.to_string(),
                m.clone(),
                timeout,
            ));
        }
        let cfg = m.settings();
        Streams {
            parallel: states.len(),
            batch_size: cfg.batch_size.max(1),
            writers: states.iter().map(|_| BatchWriter::new()).collect(),
            states,
            epoch,
            rate: cfg.rate_bytes_per_sec,
            rate_window: (Instant::now(), 0),
            migration: m.clone(),
        }
    }

    /// Tells the target about a flush of the source keyspace before anything read after it.
    pub fn note_epoch(&mut self, epoch: u64) {
        if epoch > self.epoch {
            self.epoch = epoch;
            for (s, w) in self.writers.iter_mut().enumerate() {
                w.flush(s as u16, self.parallel as u16);
            }
        }
    }

    pub fn writer(&mut self, key: &[u8]) -> (usize, &mut BatchWriter) {
        let s = route(key, self.parallel);
        (s, &mut self.writers[s])
    }

    pub fn put(&mut self, key: &[u8], e: &Entry) {
        self.writer(key).1.put(key, e);
    }

    pub fn del(&mut self, key: &[u8]) {
        self.writer(key).1.del(key);
    }

    pub fn is_full(&self, s: usize) -> bool {
        let w = &self.writers[s];
        w.records() as usize >= self.batch_size || w.len() >= MAX_BATCH_BYTES
    }

    pub fn error(&self) -> Option<String> {
        self.states.iter().find_map(|s| s.error.lock().clone())
    }

    /// Seals stream `s`'s batch into its queue without waiting (used when stopping, so that
    /// nothing read from the keyspace is dropped).
    pub fn seal(&mut self, s: usize) -> u64 {
        if self.writers[s].is_empty() {
            return 0;
        }
        let w = std::mem::take(&mut self.writers[s]);
        let keys = w.keys;
        let st = &self.states[s];
        let seq = st.sealed.fetch_add(1, Relaxed) + 1;
        let payload = w.finish(s as u16, seq);
        let len = payload.len() as u64;
        st.queue.lock().push_back(super::stream::Outgoing {
            seq,
            payload,
            keys,
            sealed_ms: ferrite_storage::now_ms(),
        });
        st.wake();
        len
    }

    /// Publishes what sits in the batch builders (read from the keyspace, not yet queued) for
    /// STATUS: with RATE, the coordinator sleeps between streams while the other builders hold
    /// changes that are neither captured nor in flight any more.
    pub fn publish_unsealed(&self) {
        let (keys, bytes) = self.writers.iter().fold((0u64, 0u64), |(k, b), w| {
            (k + u64::from(w.keys), b + w.len() as u64)
        });
        let m = &self.migration;
        if keys > 0 && m.unsealed_keys.load(Relaxed) == 0 {
            m.unsealed_since_ms
                .store(ferrite_storage::now_ms(), Relaxed);
        }
        m.unsealed_bytes.store(bytes, Relaxed);
        m.unsealed_keys.store(keys, Relaxed);
    }

    pub fn seal_all(&mut self) {
        for s in 0..self.parallel {
            self.seal(s);
        }
    }

    /// Seals and queues stream `s`'s batch, waiting while the stream is QUEUE_LIMIT batches behind.
    pub async fn send(&mut self, s: usize) -> Result<(), MigrationError> {
        if self.writers[s].is_empty() {
            return Ok(());
        }
        loop {
            let st = self.states[s].clone();
            let wake = st.notify.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            if let Some(e) = self.error() {
                return Err(MigrationError::Failed(e));
            }
            if st.queue.lock().len() < QUEUE_LIMIT {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), wake).await;
        }
        let len = self.seal(s);
        self.publish_unsealed();
        self.throttle(len).await;
        Ok(())
    }

    /// RATE and BATCH_SIZE from the migration's current settings (UPDATE takes effect here).
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
        // After an idle spell (PAUSE, no changes) the window restarts: otherwise the unused
        // allowance of the idle time would go out at once as a burst above RATE.
        let (start, sent) = self.rate_window;
        let owed = Duration::from_secs_f64(sent as f64 / self.rate as f64);
        if start.elapsed() > owed + Duration::from_secs(1) {
            self.rate_window = (Instant::now(), 0);
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

    pub async fn send_full(&mut self) -> Result<(), MigrationError> {
        for s in 0..self.parallel {
            if self.is_full(s) {
                self.send(s).await?;
            }
        }
        Ok(())
    }

    pub async fn send_all(&mut self) -> Result<(), MigrationError> {
        for s in 0..self.parallel {
            self.send(s).await?;
        }
        Ok(())
    }

    /// Waits until the target has acknowledged everything sealed.
    pub async fn wait_acked(&self, timeout: Duration) -> Result<(), MigrationError> {
        let deadline = tokio::time::Instant::now() + timeout;
        for (s, st) in self.states.iter().enumerate() {
            loop {
                let wake = st.notify.notified();
                tokio::pin!(wake);
                wake.as_mut().enable();
                if let Some(e) = self.error() {
                    return Err(MigrationError::Failed(e));
                }
                if st.acked.load(Relaxed) >= st.sealed.load(Relaxed) {
                    break;
                }
                if tokio::time::timeout_at(deadline, wake).await.is_err() {
                    return Err(MigrationError::Failed(format!(
                        "the target did not acknowledge stream {s} within {} ms",
                        timeout.as_millis()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Stops the senders (their queues stay with the migration).
    pub fn stop(&self) {
        for s in &self.states {
            s.stop.store(true, Relaxed);
            s.wake();
        }
    }
}
