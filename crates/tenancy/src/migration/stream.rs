//! The transport of a migration: per stream, a batch builder on the actor's side and a sender
//! task that owns the stream's connection and its queue of unacknowledged batches.
//!
//! The actor seals batches and hands them to the sender through a bounded channel (that is the
//! back-pressure). The sender writes up to [`WINDOW`] of them pipelined, reconnects with the
//! default backoff ([`RECONNECT_BACKOFF`]) when the link breaks and then resends only what the
//! target has not applied, and reports what happens as [`LinkEvent`]s. It never decides that
//! the migration has failed: the actor does, from those events. Stopped (its cancellation
//! token), a sender returns its queue, so that nothing read from the keyspace is lost when a
//! failed migration is retried later.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use ferrite_storage::Entry;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::target::{BatchLink, Target, TargetError};
use super::wire::{BatchWriter, route};

/// A batch is sealed at this many bytes even if it has fewer keys than BATCH_SIZE.
pub(super) const MAX_BATCH_BYTES: usize = 1 << 20;
/// Batches in flight per stream (written, not yet acknowledged).
pub(super) const WINDOW: usize = 8;
/// Sealed batches waiting in a stream's channel beyond the window (bounds source memory).
const CHANNEL: usize = 4;
/// Reconnect backoff: the first retry after `.0`, doubling up to `.1` (the default an operator
/// meets; a unit test runs with it).
pub const RECONNECT_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(50), Duration::from_secs(1));
/// A link that acknowledges nothing for this long while batches are in flight is treated as
/// broken and reopened (a slow link still acknowledges within it; a silent partition is usually
/// caught sooner by the control link's heartbeat).
pub(super) const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// A sealed batch on its way to the target.
pub(super) struct Outgoing {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// What a sealed batch carries, kept by the actor until the target acknowledges it (the lag
/// STATUS reports).
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchMeta {
    pub seq: u64,
    pub keys: u64,
    pub bytes: u64,
    /// Unix ms when the batch was sealed.
    pub sealed_ms: u64,
}

/// What the target has not acknowledged yet.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    pub keys: u64,
    pub bytes: u64,
    /// Unix ms of the oldest part.
    pub oldest_ms: Option<u64>,
}

/// What a sender reports to the actor.
#[derive(Debug)]
pub(super) enum LinkEvent {
    /// Bytes written to the target's socket.
    Sent { bytes: u64 },
    /// The target has applied every batch of `stream` up to `seq`.
    Acked { stream: u16, seq: u64 },
    /// The stream's link is open.
    Up { stream: u16 },
    /// The stream's link failed or could not be opened; the sender keeps retrying.
    Down { stream: u16, error: String },
    /// The target refused the stream (the sender stops retrying).
    Refused { stream: u16, error: TargetError },
}

/// Sends one stream's batches until stopped; returns the batches not acknowledged.
async fn sender(
    index: u16,
    target: Arc<dyn Target>,
    import: String,
    mut queue: VecDeque<Outgoing>,
    mut rx: mpsc::Receiver<Outgoing>,
    events: mpsc::UnboundedSender<LinkEvent>,
    stop: CancellationToken,
) -> VecDeque<Outgoing> {
    let report = |e: LinkEvent| {
        let _ = events.send(e);
    };
    let mut link: Option<Box<dyn BatchLink>> = None;
    // Batches at the front of `queue` written to the current link.
    let mut written = 0usize;
    let mut backoff = RECONNECT_BACKOFF.0;
    let mut ack_deadline: Option<Instant> = None;
    'run: loop {
        let Some(l) = link.as_mut() else {
            let opened = tokio::select! {
                biased;
                _ = stop.cancelled() => break 'run,
                r = target.open_stream(&import, index) => r,
            };
            match opened {
                Ok(l) => {
                    let last = l.resume_point();
                    let before = queue.len();
                    while queue.front().is_some_and(|o| o.seq <= last) {
                        queue.pop_front();
                    }
                    if queue.len() < before || last > 0 {
                        report(LinkEvent::Acked {
                            stream: index,
                            seq: last,
                        });
                    }
                    report(LinkEvent::Up { stream: index });
                    written = 0;
                    backoff = RECONNECT_BACKOFF.0;
                    ack_deadline = None;
                    link = Some(l);
                }
                Err(e) if e.is_unreachable() => {
                    report(LinkEvent::Down {
                        stream: index,
                        error: e.to_string(),
                    });
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => break 'run,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF.1);
                }
                Err(e) => {
                    report(LinkEvent::Refused {
                        stream: index,
                        error: e,
                    });
                    stop.cancelled().await;
                    break 'run;
                }
            }
            continue;
        };
        if written < queue.len().min(WINDOW) {
            if written == 0 && !l.is_open() {
                // Closed while idle: reopen rather than lose the batch on it.
                report(LinkEvent::Down {
                    stream: index,
                    error: "the connection was closed while idle".into(),
                });
                link = None;
                continue;
            }
            let wrote = tokio::select! {
                biased;
                _ = stop.cancelled() => break 'run,
                r = l.batch(&queue[written].payload) => r,
            };
            match wrote {
                Ok(()) => {
                    report(LinkEvent::Sent {
                        bytes: queue[written].payload.len() as u64,
                    });
                    written += 1;
                    ack_deadline.get_or_insert_with(|| Instant::now() + ACK_TIMEOUT);
                }
                Err(e) => {
                    report(LinkEvent::Down {
                        stream: index,
                        error: e.to_string(),
                    });
                    link = None;
                }
            }
            continue;
        }
        let far = Instant::now() + Duration::from_secs(86_400);
        tokio::select! {
            biased;
            _ = stop.cancelled() => break 'run,
            acked = l.ack(), if written > 0 => match acked {
                Ok(seq) => {
                    while queue.front().is_some_and(|o| o.seq <= seq) {
                        queue.pop_front();
                        written = written.saturating_sub(1);
                    }
                    report(LinkEvent::Acked { stream: index, seq });
                    ack_deadline = (written > 0).then(|| Instant::now() + ACK_TIMEOUT);
                }
                Err(e) if e.is_unreachable() => {
                    report(LinkEvent::Down { stream: index, error: e.to_string() });
                    link = None;
                }
                Err(e) => {
                    report(LinkEvent::Refused { stream: index, error: e });
                    stop.cancelled().await;
                    break 'run;
                }
            },
            next = rx.recv(), if queue.len() < WINDOW => match next {
                Some(b) => queue.push_back(b),
                None => break 'run,
            },
            _ = tokio::time::sleep_until(ack_deadline.unwrap_or(far)), if ack_deadline.is_some() => {
                report(LinkEvent::Down {
                    stream: index,
                    error: format!("no acknowledgement for {} s", ACK_TIMEOUT.as_secs()),
                });
                link = None;
            }
        }
    }
    // Whatever is still in the channel was read from the keyspace too: keep it.
    rx.close();
    while let Ok(b) = rx.try_recv() {
        queue.push_back(b);
    }
    queue
}

/// One run's streams, on the actor's side: batch builders, sealing, the senders' channels.
pub(super) struct Streams {
    pub parallel: usize,
    pub batch_size: usize,
    writers: Vec<BatchWriter>,
    txs: Vec<mpsc::Sender<Outgoing>>,
    handles: Vec<JoinHandle<VecDeque<Outgoing>>>,
    /// Last sequence number sealed per stream.
    pub sealed: Vec<u64>,
    stop: CancellationToken,
    /// Flush epoch of the source keyspace the target has been told about.
    pub epoch: u64,
}

/// What stays with a migration between runs: every batch not acknowledged, per stream, and the
/// numbering.
#[derive(Default)]
pub(super) struct StreamQueues {
    pub queues: Vec<VecDeque<Outgoing>>,
    pub sealed: Vec<u64>,
}

impl StreamQueues {
    pub fn new(parallel: usize) -> StreamQueues {
        StreamQueues {
            queues: (0..parallel).map(|_| VecDeque::new()).collect(),
            sealed: vec![0; parallel],
        }
    }
}

impl Streams {
    /// Starts a sender per stream over the queues kept from an earlier run.
    pub fn start(
        target: &Arc<dyn Target>,
        import: &str,
        kept: StreamQueues,
        batch_size: usize,
        epoch: u64,
        events: &mpsc::UnboundedSender<LinkEvent>,
        parent: &CancellationToken,
    ) -> Streams {
        let stop = parent.child_token();
        let parallel = kept.queues.len().max(1);
        let mut txs = Vec::with_capacity(parallel);
        let mut handles = Vec::with_capacity(parallel);
        for (i, queue) in kept.queues.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel(CHANNEL);
            txs.push(tx);
            handles.push(tokio::spawn(sender(
                i as u16,
                target.clone(),
                import.to_string(),
                queue,
                rx,
                events.clone(),
                stop.clone(),
            )));
        }
        Streams {
            parallel,
            batch_size: batch_size.max(1),
            writers: (0..parallel).map(|_| BatchWriter::new()).collect(),
            txs,
            handles,
            sealed: kept.sealed,
            stop,
            epoch,
        }
    }

    /// Stops the senders and collects what they had not delivered, sealing what the builders
    /// hold after it (in sequence order). Returns the queues and the sealed metadata of the
    /// batches sealed here.
    pub async fn stop(mut self) -> (StreamQueues, Vec<(usize, BatchMeta)>) {
        self.stop.cancel();
        let mut queues = Vec::with_capacity(self.parallel);
        for h in std::mem::take(&mut self.handles) {
            queues.push(h.await.unwrap_or_default());
        }
        let mut metas = Vec::new();
        for (s, queue) in queues.iter_mut().enumerate() {
            if let Some((o, meta)) = self.seal(s) {
                queue.push_back(o);
                metas.push((s, meta));
            }
        }
        (
            StreamQueues {
                queues,
                sealed: self.sealed.clone(),
            },
            metas,
        )
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

    pub fn is_empty(&self, s: usize) -> bool {
        self.writers[s].is_empty()
    }

    /// Keys and bytes in the builders (read from the keyspace, not sealed yet).
    pub fn unsealed(&self) -> (u64, u64) {
        self.writers.iter().fold((0, 0), |(k, b), w| {
            (k + u64::from(w.keys), b + w.len() as u64)
        })
    }

    /// Seals stream `s`'s builder into a batch.
    pub fn seal(&mut self, s: usize) -> Option<(Outgoing, BatchMeta)> {
        if self.writers[s].is_empty() {
            return None;
        }
        let w = std::mem::take(&mut self.writers[s]);
        let keys = u64::from(w.keys);
        self.sealed[s] += 1;
        let seq = self.sealed[s];
        let payload = w.finish(s as u16, seq);
        let meta = BatchMeta {
            seq,
            keys,
            bytes: payload.len() as u64,
            sealed_ms: ferrite_storage::now_ms(),
        };
        Some((Outgoing { seq, payload }, meta))
    }

    /// A free place in stream `s`'s channel (the back-pressure; cancel-safe). Owned, so that the
    /// batch can be sealed after the place is certain: an interrupted wait loses nothing.
    pub fn reserve(
        &self,
        s: usize,
    ) -> impl std::future::Future<
        Output = Result<mpsc::OwnedPermit<Outgoing>, mpsc::error::SendError<()>>,
    > + Send
    + 'static {
        self.txs[s].clone().reserve_owned()
    }
}
