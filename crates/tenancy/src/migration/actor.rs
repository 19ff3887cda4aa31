//! One task per migration owns everything about it: its state and phase, the checkpoint, the
//! schedule, a pending cutover, the streams. Operator commands reach it as [`Request`]s with a
//! reply; STATUS reads what it publishes (see [`super::status`]) and never waits on it.
//!
//! The actor never blocks on anything but its own `select`: every wait of a run (the target's
//! replies, back-pressure, acknowledgements, the write gate, a breakpoint) goes through
//! [`Io::serve`], which answers requests and takes link events while it waits. So every request
//! is answered at once, in every state and phase, whatever the target does. A request that
//! stops the run (CANCEL, a failure noticed meanwhile) interrupts the wait: the run unwinds from
//! there (see [`Interrupt`]).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::api::{CutoverResult, MigrationConfig, MigrationError, StopMode, StopResult};
use super::lag::LagTracker;
use super::record::MigrationRecord;
use super::state::{MigrationPhase, MigrationState};
use super::status::{Info, Published};
use super::stream::{BatchMeta, InFlight, LinkEvent, StreamQueues, Streams};
use super::target::{Target, TargetError};
use super::{Env, cutover, source};
use crate::tenant::TenantState;

/// How often the actor publishes rates and checks its timers.
pub(super) const TICK: Duration = Duration::from_millis(100);

pub(super) type Reply<T> = oneshot::Sender<Result<T, MigrationError>>;

/// What an operator (through the manager) asks of a migration.
pub(super) enum Request {
    Pause(Reply<()>),
    Resume(Reply<()>),
    /// RESUME <id> AUTH <password> of a failed migration started with AUTH (after a restart,
    /// which does not keep the password, or after a wrong password): the connection to its
    /// target with this password, and the password (kept in memory only).
    ResumeWith(GivenPassword, Reply<()>),
    /// CANCEL, with `AUTH <password>` the password the target's import is dropped with (a
    /// migration started with AUTH whose password a restart lost).
    Cancel(Option<GivenPassword>, Reply<()>),
    Update {
        parallel: Option<usize>,
        batch_size: Option<usize>,
        rate: Option<u64>,
        reply: Reply<()>,
    },
    Cutover {
        force: bool,
        /// CUTOVER RETRY: after a failure, resume first (or re-ask an unconfirmed activation);
        /// waits for broken links instead of refusing.
        retry: bool,
        /// CUTOVER RETRY AUTH <password>.
        auth: Option<GivenPassword>,
        reply: Reply<CutoverResult>,
    },
    Schedule {
        at_ms: u64,
        force: bool,
        reply: Reply<()>,
    },
    Unschedule(Reply<()>),
    Debug(DebugOp, Reply<Option<&'static str>>),
    /// VERIFY found both sides equal.
    Verified(Reply<()>),
    /// TENANT.MIGRATE.STOP of a continuous sync.
    Stop(StopMode, Reply<StopResult>),
    /// APPROVE, REJECT, PRIORITY, AFTER (see [`super::schedule`]).
    Admission(super::schedule::AdmissionRequest),
    /// `MODE incremental`: CUTOVER <id> PATTERN <glob> (the pattern's index in the list).
    PatternCutover {
        index: usize,
        force: bool,
        reply: Reply<CutoverResult>,
    },
    /// After the cutover, on the old source: ROLLBACK or FINALIZE of its backup.
    Backup(super::rollback::BackupRequest),
}

/// A target password given again with `AUTH <password>` (RESUME, CUTOVER RETRY, CANCEL) of a
/// migration started with AUTH: a connection to the target that logs in with it, and the
/// password itself (kept in memory only, never recorded).
pub(super) struct GivenPassword {
    pub target: Arc<dyn super::target::Target>,
    pub password: String,
}

/// What [`Control::take_password`] replaced.
pub(super) struct PreviousPassword {
    target: Option<Arc<dyn super::target::Target>>,
    password: Option<String>,
}

/// TENANT.MIGRATE.DEBUG.
pub(super) enum DebugOp {
    Break(&'static str),
    Continue,
}

/// A cutover the run will start at its next chance.
pub(super) struct PendingCutover {
    pub force: bool,
    pub retry: bool,
    /// Made by a scheduled cutover (UNSCHEDULE withdraws only those).
    pub scheduled: bool,
    pub reply: Option<Reply<CutoverResult>>,
}

/// `MODE incremental`: a pattern's cutover the run will start at its next chance.
pub(super) struct PendingPattern {
    pub index: usize,
    pub force: bool,
    pub reply: Reply<CutoverResult>,
}

/// A cutover planned for a given time.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    at_ms: u64,
    force: bool,
    /// Not before this (a lag above the limit is retried every half second).
    next_try_ms: u64,
}

/// How long a scheduled cutover waits out a lag above `cutover_max_lag` (or a migration not in
/// live sync yet) before it gives up.
const SCHEDULE_PATIENCE_MS: u64 = 60_000;

/// A link to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Link {
    Control,
    Stream(u16),
}

/// Everything about one migration but the data path: owned by its actor.
pub(super) struct Control {
    pub info: Arc<Info>,
    pub env: Arc<Env>,
    pub cfg: MigrationConfig,
    status: watch::Sender<Published>,
    /// Sealed batches not yet acknowledged, per stream.
    flight: Vec<VecDeque<BatchMeta>>,
    /// Read into the batch builders, not sealed yet: (keys, bytes, since Unix ms).
    unsealed: (u64, u64, u64),
    links_down: BTreeMap<Link, Instant>,
    lag: LagTracker,
    schedule: Option<Schedule>,
    pub pending_cutover: Option<PendingCutover>,
    /// `MODE incremental`: a requested pattern cutover.
    pub pending_pattern: Option<PendingPattern>,
    /// The running cutover was requested by the schedule.
    pub running_scheduled: bool,
    pub pending_cancel: Vec<Reply<()>>,
    pub pending_activation_retry: Option<Reply<CutoverResult>>,
    /// A STOP the run has to carry out (GRACEFUL: at its next chance in live sync; IMMEDIATE:
    /// it interrupts the run), and who waits for its result.
    pub pending_stop: Option<StopMode>,
    pub stop_replies: Vec<Reply<StopResult>>,
    /// The confirmed consistency point a graceful stop reached (then the run ends).
    pub stop_point: Option<StopResult>,
    interrupt: Option<MigrationError>,
    /// A failure that ends the run whatever it is doing (a stream the target refused): raised
    /// by every wait until the run has ended.
    fatal: Option<MigrationError>,
    breakpoints: HashSet<&'static str>,
    release: bool,
    /// The source has handed the tenant over in this run's cutover.
    pub handed_over: bool,
    /// When the write gate closed (fast mode: when the copy began), for downtime.
    pub gate_closed_at: Option<Instant>,
    /// Brought back by [`super::MigrationManager::restore`] after a restart: nothing to resume.
    pub restored: bool,
    /// A restored migration RESUME can start again from scratch (see [`super::restart`]).
    pub restart: Option<super::restart::Restart>,
    /// The connection RESUME, CUTOVER RETRY or CANCEL ... AUTH gave, installed when the run
    /// starts again (or the cancel reaches the target).
    pub replacement_target: Option<Arc<dyn super::target::Target>>,
    /// Started with AUTH and brought back by a restart, which does not keep the password: the
    /// target cannot be logged in to until RESUME, CUTOVER RETRY or CANCEL gives it again.
    pub password_not_kept: bool,
    /// The import a restarted run must drop on the target before it opens a clean one.
    pub stale_import: Option<String>,
    /// Parent of every sender's token: cancelled when the migration ends for good.
    pub cancel: CancellationToken,
    pub events_tx: mpsc::UnboundedSender<LinkEvent>,
    recorded: Option<MigrationState>,
    next_tick: Instant,
    /// Dependencies and approval it waits for before taking a slot.
    pub admission: super::schedule::Admission,
    /// Bytes per second sent (STATUS `bytes_per_sec`, the aggregate view).
    throughput: super::schedule::ByteRate,
    /// A ROLLBACK or FINALIZE the backup's loop carries out at its next chance.
    pub pending_backup: Option<super::rollback::BackupRequest>,
}

/// Why a wait ended early.
pub(super) type Interrupt = MigrationError;

impl Control {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        info: Arc<Info>,
        env: Arc<Env>,
        cfg: MigrationConfig,
        status: watch::Sender<Published>,
        events_tx: mpsc::UnboundedSender<LinkEvent>,
    ) -> Control {
        Control {
            info,
            env,
            cfg,
            status,
            flight: Vec::new(),
            unsealed: (0, 0, 0),
            links_down: BTreeMap::new(),
            lag: LagTracker::default(),
            schedule: None,
            pending_cutover: None,
            pending_pattern: None,
            running_scheduled: false,
            pending_cancel: Vec::new(),
            pending_activation_retry: None,
            pending_stop: None,
            stop_replies: Vec::new(),
            stop_point: None,
            interrupt: None,
            fatal: None,
            breakpoints: HashSet::new(),
            release: false,
            handed_over: false,
            gate_closed_at: None,
            restored: false,
            restart: None,
            replacement_target: None,
            password_not_kept: false,
            stale_import: None,
            cancel: CancellationToken::new(),
            events_tx,
            recorded: None,
            next_tick: Instant::now() + TICK,
            admission: Default::default(),
            throughput: Default::default(),
            pending_backup: None,
        }
    }

    // -- what is published ------------------------------------------------------------------

    /// Changes what STATUS shows (and tells persistence when the state changed).
    pub fn publish(&mut self, f: impl FnOnce(&mut Published)) {
        self.status.send_modify(f);
        let state = self.status.borrow().state;
        if self.recorded != Some(state) {
            self.recorded = Some(state);
            self.persist_record();
        }
    }

    pub fn published(&self) -> watch::Ref<'_, Published> {
        self.status.borrow()
    }

    /// It authenticates to its target with a password given with AUTH: in `cfg` while this
    /// server knows it, or only that one is needed (restored after a restart, before RESUME ...
    /// AUTH gives it again).
    pub fn started_with_auth(&self) -> bool {
        self.cfg.auth.is_some() || self.password_not_kept
    }

    /// It must log in to its target with a password this server does not know (lost with a
    /// restart, not given again yet).
    pub fn password_missing(&self) -> bool {
        self.password_not_kept && self.cfg.auth.is_none() && self.replacement_target.is_none()
    }

    /// Installs a password given again with AUTH (see [`GivenPassword`]); returns what it
    /// replaces, for [`Control::put_back_password`] if the request is refused after all.
    fn take_password(&mut self, given: GivenPassword) -> PreviousPassword {
        PreviousPassword {
            target: self.replacement_target.replace(given.target),
            password: self.cfg.auth.replace(given.password),
        }
    }

    fn put_back_password(&mut self, previous: PreviousPassword) {
        self.replacement_target = previous.target;
        self.cfg.auth = previous.password;
    }

    /// `AUTH <password>` given to a migration that was not started with AUTH (or, for RESUME
    /// and CUTOVER RETRY, is not failed); `op` names the command and what it applies to.
    fn auth_not_applicable(&self, op: &str) -> MigrationError {
        MigrationError::Failed(format!(
            "AUTH applies to {op} that was started with AUTH (a restart of this server does not keep the password); migration {} is {}{}",
            self.info.id,
            self.state().name(),
            if self.started_with_auth() {
                ""
            } else {
                ", started without AUTH"
            }
        ))
    }

    pub fn record(&self) -> MigrationRecord {
        let mut r = MigrationRecord::of(&self.info, &self.status.borrow())
            .with_config(&self.cfg, self.admission.needs_approval);
        // A restored migration's `cfg` has no password: the record must still say one is
        // needed, or the next restart would bring it back asking for none.
        if self.started_with_auth() {
            r.settings.auth = super::record::RecordedAuth::Password;
        }
        r.orchestration.after = self
            .admission
            .after
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        r
    }

    /// Hands the record to persistence now, whatever changed (orchestration decisions).
    pub fn persist_record(&self) {
        if self
            .env
            .recording_stopped
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        if let Some(sink) = self.env.sink.read().clone() {
            sink.record(&self.record());
        }
    }

    /// Hands the record to persistence and waits until it is durable (a pattern handed over
    /// must never be served here again, even after a crash).
    pub fn persist_record_durably(&self) -> Result<(), MigrationError> {
        if self
            .env
            .recording_stopped
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(MigrationError::Failed("the server is stopping".into()));
        }
        match self.env.sink.read().clone() {
            Some(sink) => sink.record_durably(&self.record()).map_err(|e| {
                MigrationError::Failed(format!("the hand-over could not be recorded: {e}"))
            }),
            None => Ok(()),
        }
    }

    pub fn state(&self) -> MigrationState {
        self.status.borrow().state
    }

    pub fn is_paused(&self) -> bool {
        self.state() == MigrationState::Paused
    }

    pub fn set_phase(&mut self, phase: MigrationPhase) {
        self.publish(|p| p.base_phase = phase);
    }

    pub fn wrong_state(&self, op: &'static str) -> MigrationError {
        MigrationError::WrongState {
            id: self.info.id.clone(),
            state: self.state().name(),
            op,
        }
    }

    /// Moves to `next` if the lifecycle allows it.
    pub fn transition(
        &mut self,
        next: MigrationState,
        op: &'static str,
    ) -> Result<(), MigrationError> {
        if !self.state().can_become(next) {
            return Err(self.wrong_state(op));
        }
        self.publish(|p| p.state = next);
        Ok(())
    }

    /// Fails the migration (it stays failed until RESUME, CUTOVER RETRY or CANCEL).
    pub fn fail(&mut self, msg: &str) {
        let msg = msg.to_string();
        self.publish(|p| {
            p.state = MigrationState::Failed;
            p.base_phase = MigrationPhase::Stopped;
            p.error = Some(msg.clone());
            p.last_error = Some(msg);
            p.last_error_at_ms = Some(ferrite_storage::now_ms());
            p.finished = Some(Instant::now());
        });
        self.env.release_claim(&self.info);
    }

    /// The target owns the tenant now.
    pub fn complete(&mut self, keys: u64, downtime_ms: f64) {
        self.publish(|p| {
            p.state = MigrationState::Completed;
            p.base_phase = MigrationPhase::Done;
            p.completed_at_ms = Some(ferrite_storage::now_ms());
            p.finished = Some(Instant::now());
            p.downtime_ms = Some(downtime_ms);
            p.keys_migrated = keys;
            p.error = None;
            p.scheduled_cutover_ms = None;
        });
        let retention = self.info.backup_retention;
        if !retention.is_zero() {
            // The old source as a backup (super::rollback): started by the actor's next loop.
            self.publish(|p| {
                p.backup = Some(super::api::BackupStatus {
                    state: "starting",
                    until_ms: ferrite_storage::now_ms() + retention.as_millis() as u64,
                    ..Default::default()
                })
            });
        }
        self.schedule = None;
        self.env.release_claim(&self.info);
    }

    /// A message worth keeping in `last_error` (a refused cutover, a failed scheduled one).
    pub fn note_error(&mut self, msg: &str) {
        let msg = msg.to_string();
        self.publish(|p| {
            p.error = Some(msg.clone());
            p.last_error = Some(msg);
            p.last_error_at_ms = Some(ferrite_storage::now_ms());
        });
    }

    // -- in flight ----------------------------------------------------------------------------

    /// A new set of streams (a new import, or UPDATE PARALLEL once everything was acknowledged).
    pub fn reset_flight(&mut self, parallel: usize) {
        self.flight = (0..parallel).map(|_| VecDeque::new()).collect();
        self.publish_flight();
    }

    pub fn flight_empty(&self) -> bool {
        self.flight.iter().all(VecDeque::is_empty)
    }

    pub fn sealed(&mut self, stream: usize, meta: BatchMeta) {
        if let Some(q) = self.flight.get_mut(stream) {
            q.push_back(meta);
        }
    }

    /// What sits in the batch builders (published before the keyspace lock is released, so a
    /// change drained from capture is never shown nowhere).
    pub fn set_unsealed(&mut self, (keys, bytes): (u64, u64)) {
        if keys > 0 && self.unsealed.0 == 0 {
            self.unsealed.2 = ferrite_storage::now_ms();
        }
        self.unsealed.0 = keys;
        self.unsealed.1 = bytes;
        self.publish_flight();
    }

    /// Large values not read to their end yet (see [`Published::large_keys_left`]).
    pub fn set_large_left(&mut self, keys: u64, bytes: u64) {
        self.publish(|p| {
            p.large_keys_left = keys;
            p.large_bytes_left = bytes;
        });
    }

    fn publish_flight(&mut self) {
        let mut f = InFlight::default();
        for q in &self.flight {
            for b in q {
                f.keys += b.keys;
                f.bytes += b.bytes;
                f.oldest_ms = Some(f.oldest_ms.map_or(b.sealed_ms, |t| t.min(b.sealed_ms)));
            }
        }
        if self.unsealed.0 > 0 {
            f.keys += self.unsealed.0;
            f.bytes += self.unsealed.1;
            let since = self.unsealed.2;
            f.oldest_ms = Some(f.oldest_ms.map_or(since, |t| t.min(since)));
        }
        self.publish(|p| p.in_flight = f);
    }

    /// Keys acknowledged so far (a cutover's drain watches it move).
    pub fn keys_acked(&self) -> u64 {
        self.status.borrow().keys_acked
    }

    // -- links --------------------------------------------------------------------------------

    pub fn link_down(&mut self, link: Link, error: &str) {
        let now = Instant::now();
        let new_outage = self.links_down.is_empty();
        self.links_down.entry(link).or_insert(now);
        let what = match link {
            Link::Control => error.to_string(),
            Link::Stream(s) => format!("stream {s}: {error}"),
        };
        let timeout = self.reconnect_timeout().as_secs();
        self.publish(|p| {
            p.reconnects += 1;
            if new_outage || p.unreachable_since.is_none() {
                p.unreachable_since = Some((now, ferrite_storage::now_ms()));
                p.last_error_at_ms = Some(ferrite_storage::now_ms());
            }
            p.last_error = Some(what);
            p.reconnect_timeout_secs = timeout;
        });
    }

    pub fn link_up(&mut self, link: Link) {
        if self.links_down.remove(&link).is_some() && self.links_down.is_empty() {
            self.publish(|p| p.unreachable_since = None);
        }
    }

    pub fn links_up(&self) -> bool {
        self.links_down.is_empty()
    }

    /// How long the longest current outage of a link has lasted.
    pub fn down_for(&self) -> Option<Duration> {
        self.links_down.values().min().map(|since| since.elapsed())
    }

    pub fn forget_links(&mut self) {
        self.links_down.clear();
        self.publish(|p| p.unreachable_since = None);
    }

    /// How long an outage may last before the migration fails.
    pub fn reconnect_timeout(&self) -> Duration {
        self.cfg
            .timeout
            .unwrap_or_else(|| self.env.settings.read().reconnect_timeout)
    }

    // -- events and requests ------------------------------------------------------------------

    pub fn on_event(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Sent { bytes } => self.publish(|p| p.bytes_sent += bytes),
            LinkEvent::Acked { stream, seq } => {
                let Some(q) = self.flight.get_mut(usize::from(stream)) else {
                    return;
                };
                let (mut keys, mut bytes) = (0, 0);
                while q.front().is_some_and(|b| b.seq <= seq) {
                    if let Some(b) = q.pop_front() {
                        keys += b.keys;
                        bytes += b.bytes;
                    }
                }
                self.publish(|p| {
                    p.keys_acked += keys;
                    p.bytes_acked += bytes;
                });
                self.publish_flight();
            }
            LinkEvent::Up { stream } => self.link_up(Link::Stream(stream)),
            LinkEvent::Down { stream, error } => self.link_down(Link::Stream(stream), &error),
            LinkEvent::Refused { stream, error } => {
                let msg = match error {
                    TargetError::ImportGone(m) => format!(
                        "the target dropped the import ({m}); RESUME or CUTOVER RETRY starts a new one"
                    ),
                    e => format!("the target refused stream {stream}: {e}"),
                };
                self.fatal.get_or_insert(MigrationError::Failed(msg));
            }
        }
    }

    /// Stops the current run from wherever it waits.
    pub fn interrupt(&mut self, e: MigrationError) {
        self.interrupt.get_or_insert(e);
    }

    pub fn take_interrupt(&mut self) -> Option<MigrationError> {
        self.interrupt.take().or_else(|| self.fatal.clone())
    }

    /// Forgets interrupts once the run they were meant for has ended.
    pub fn clear_interrupts(&mut self) {
        self.interrupt = None;
        self.fatal = None;
    }

    pub fn handle(&mut self, req: Request) {
        match req {
            Request::Pause(reply) => {
                let r = match self.state() {
                    // A pending graceful STOP needs shipping to go on (it would wait for RESUME).
                    MigrationState::Syncing | MigrationState::LiveSync
                        if self.pending_stop.is_none() =>
                    {
                        self.publish(|p| p.state = MigrationState::Paused);
                        if let Some(c) = self.pending_cutover.take_if(|c| !c.scheduled)
                            && let Some(r) = c.reply
                        {
                            let _ = r.send(Err(self.wrong_state("cut over")));
                        }
                        Ok(())
                    }
                    _ => Err(self.wrong_state("pause")),
                };
                let _ = reply.send(r);
            }
            Request::Resume(reply) => {
                let r = match self.state() {
                    MigrationState::Paused => {
                        let next = if self.status.borrow().snapshot_done {
                            MigrationState::LiveSync
                        } else {
                            MigrationState::Syncing
                        };
                        self.publish(|p| p.state = next);
                        Ok(())
                    }
                    MigrationState::Failed => self.retry(),
                    _ => Err(self.wrong_state("resume")),
                };
                let _ = reply.send(r);
            }
            Request::ResumeWith(given, reply) => {
                // Not only after a restart: a RESUME with a wrong password fails its run, and
                // the right one must still be accepted (else only CANCEL would be left).
                let r = if self.state() == MigrationState::Failed && self.started_with_auth() {
                    let previous = self.take_password(given);
                    let r = self.retry();
                    if r.is_err() {
                        self.put_back_password(previous);
                    }
                    r
                } else {
                    Err(self.auth_not_applicable("RESUME of a failed migration"))
                };
                let _ = reply.send(r);
            }
            Request::Cancel(_, reply) if self.pending_stop.is_some() => {
                // The stop ends the sync leaving the source untouched, as CANCEL would; only
                // what the target keeps differs, and that was the operator's first choice.
                let _ = reply.send(Err(self.wrong_state("cancel while a STOP is under way")));
            }
            // Once a pattern was handed over, the target's clients may have written its keys:
            // going back would lose those writes.
            Request::Cancel(_, reply) if self.patterns_handed_over() => {
                let _ = reply.send(Err(MigrationError::WrongState {
                    id: self.info.id.clone(),
                    state: "partly handed over (some patterns are served by the target)",
                    op: "cancel (cut over the remaining patterns; migrate back afterwards if needed)",
                }));
            }
            Request::Cancel(Some(_), reply) if !self.started_with_auth() => {
                let _ = reply.send(Err(self.auth_not_applicable("CANCEL of a migration")));
            }
            // After the hand-over the tenant comes back here only once the target has dropped
            // its import, which needs a login there.
            Request::Cancel(None, reply)
                if self.state() == MigrationState::Failed
                    && self.info.tenant.state() == TenantState::Moved
                    && self.password_missing() =>
            {
                let id = &self.info.id;
                let _ = reply.send(Err(MigrationError::Failed(format!(
                    "cannot cancel migration {id} without its target's password: the tenant was handed over, and it comes back here only once the target drops its import, which needs a login there; it authenticated with AUTH, which is not kept across restarts: TENANT.MIGRATE.CANCEL {id} AUTH <password>"
                ))));
            }
            Request::Cancel(given, reply) => {
                let cancellable = match self.state() {
                    MigrationState::Queued
                    | MigrationState::Waiting
                    | MigrationState::AwaitingApproval
                    | MigrationState::Approved
                    | MigrationState::Syncing
                    | MigrationState::LiveSync
                    | MigrationState::Paused
                    | MigrationState::Failed => Ok(()),
                    MigrationState::CuttingOver if !self.handed_over => Ok(()),
                    MigrationState::CuttingOver => Err(MigrationError::WrongState {
                        id: self.info.id.clone(),
                        state: "cutting_over (the tenant is handed over; the target is being activated)",
                        op: "cancel",
                    }),
                    _ => Err(self.wrong_state("cancel")),
                };
                match cancellable {
                    Ok(()) => {
                        if let Some(given) = given {
                            // Kept if the cancel after a hand-over is refused: a RETRY needs it.
                            self.take_password(given);
                        }
                        self.pending_cancel.push(reply);
                        self.interrupt(MigrationError::Cancelled);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Request::Update {
                parallel,
                batch_size,
                rate,
                reply,
            } => {
                let st = self.state();
                // A failed migration may be updated too: the settings apply when it is retried.
                let r = if st.is_active() || st.is_pending() || st == MigrationState::Failed {
                    if let Some(p) = parallel {
                        self.cfg.parallel = p;
                    }
                    if let Some(b) = batch_size {
                        self.cfg.batch_size = b;
                    }
                    if let Some(r) = rate {
                        self.cfg.rate_bytes_per_sec = r;
                    }
                    let (p, b) = (self.cfg.parallel, self.cfg.batch_size);
                    let own_rate = self.cfg.rate_bytes_per_sec;
                    self.publish(|s| {
                        s.parallel = p;
                        s.batch_size = b;
                        s.rate_bytes_per_sec = own_rate;
                    });
                    Ok(())
                } else {
                    Err(self.wrong_state("update"))
                };
                let _ = reply.send(r);
            }
            Request::Cutover {
                force,
                retry,
                auth,
                reply,
            } => self.request_cutover(force, retry, auth, reply),
            Request::Schedule {
                at_ms,
                force,
                reply,
            } => {
                let r = if let Some(e) = self.conflict_forbids_cutover() {
                    Err(e)
                } else if !matches!(
                    self.state(),
                    MigrationState::Queued
                        | MigrationState::Waiting
                        | MigrationState::AwaitingApproval
                        | MigrationState::Approved
                        | MigrationState::Syncing
                        | MigrationState::LiveSync
                        | MigrationState::Paused
                ) {
                    Err(self.wrong_state("schedule a cutover"))
                } else if at_ms + 1000 < ferrite_storage::now_ms() {
                    // A second of slack for clocks and typing; further back is a mistake.
                    Err(MigrationError::Failed(
                        "the scheduled time is in the past; use CUTOVER without SCHEDULED to cut over now".into(),
                    ))
                } else {
                    self.withdraw_scheduled_request();
                    self.schedule = Some(Schedule {
                        at_ms,
                        force,
                        next_try_ms: at_ms,
                    });
                    self.publish(|p| p.scheduled_cutover_ms = Some(at_ms));
                    Ok(())
                };
                let _ = reply.send(r);
            }
            Request::Unschedule(reply) => {
                let r = if self.schedule.is_none() {
                    Err(MigrationError::Failed(format!(
                        "migration {} has no scheduled cutover",
                        self.info.id
                    )))
                } else if self.running_scheduled {
                    Err(MigrationError::Failed(format!(
                        "the scheduled cutover of {} is already running; it can no longer be withdrawn",
                        self.info.id
                    )))
                } else {
                    self.unschedule();
                    Ok(())
                };
                let _ = reply.send(r);
            }
            Request::Debug(op, reply) => {
                let r = match op {
                    DebugOp::Break(point) => {
                        self.breakpoints.insert(point);
                        None
                    }
                    DebugOp::Continue => {
                        self.release = true;
                        None
                    }
                };
                let _ = reply.send(Ok(r));
            }
            Request::Verified(reply) => {
                let r = self.transition(MigrationState::Verified, "verify");
                let _ = reply.send(r);
            }
            Request::Stop(mode, reply) => self.request_stop(mode, reply),
            Request::Admission(req) => super::schedule::handle(self, req),
            Request::PatternCutover {
                index,
                force,
                reply,
            } => self.request_pattern_cutover(index, force, reply),
            Request::Backup(req) => super::rollback::request(self, req),
        }
    }

    /// STOP: refused at once when it cannot run; IMMEDIATE interrupts the run wherever it
    /// waits; GRACEFUL is left for live sync to carry out at its next chance. A second STOP
    /// joins the first (IMMEDIATE overtakes a GRACEFUL one still looking for its point).
    fn request_stop(&mut self, mode: StopMode, reply: Reply<StopResult>) {
        let refuse = |e: MigrationError, reply: Reply<StopResult>| {
            let _ = reply.send(Err(e));
        };
        if self.info.mode != super::api::MigrationMode::Continuous {
            return refuse(
                MigrationError::Failed(format!(
                    "migration {} is MODE {}: STOP ends a continuous sync (MODE continuous); use TENANT.MIGRATE.CANCEL",
                    self.info.id,
                    self.info.mode.name()
                )),
                reply,
            );
        }
        let st = self.state();
        if self.info.tenant.state() == TenantState::Moved {
            // Handed over (cut over, or its activation unconfirmed): nothing left to stop here.
            return refuse(self.wrong_state("stop"), reply);
        }
        if self.pending_cutover.as_ref().is_some_and(|c| !c.scheduled) {
            return refuse(self.wrong_state("stop while a cutover is pending"), reply);
        }
        match (st, mode) {
            (MigrationState::LiveSync | MigrationState::Stopping, StopMode::Graceful) => {
                self.pending_stop.get_or_insert(StopMode::Graceful);
                self.stop_replies.push(reply);
            }
            (
                MigrationState::Queued
                | MigrationState::Syncing
                | MigrationState::Paused
                | MigrationState::Failed,
                StopMode::Graceful,
            ) => refuse(
                MigrationError::Failed(format!(
                    "migration {} is {}: a graceful stop needs live sync (the target has no complete copy to make consistent{}); STOP IMMEDIATE stops now",
                    self.info.id,
                    st.name(),
                    if st == MigrationState::Paused {
                        ", and a paused sync ships nothing: RESUME first"
                    } else {
                        ""
                    }
                )),
                reply,
            ),
            (
                MigrationState::Queued
                | MigrationState::Syncing
                | MigrationState::LiveSync
                | MigrationState::Paused
                | MigrationState::Failed
                | MigrationState::Stopping,
                StopMode::Immediate,
            ) => {
                self.pending_stop = Some(StopMode::Immediate);
                self.stop_replies.push(reply);
                self.interrupt(MigrationError::Stopped);
            }
            _ => refuse(self.wrong_state("stop"), reply),
        }
    }

    /// A sync whose target takes writes (CONFLICT) cannot be cut over: the two copies differ
    /// by design, so the cutover's confirmation (same keys, same digest) cannot hold, and
    /// handing over would silently drop what the policy kept on either side.
    fn conflict_forbids_cutover(&self) -> Option<MigrationError> {
        self.cfg.conflict.map(|p| {
            MigrationError::Failed(format!(
                "migration {} syncs with CONFLICT {}: its target takes writes too, so the copies differ by design and cannot be confirmed equal; STOP it instead",
                self.info.id,
                p.name()
            ))
        })
    }

    /// `MODE incremental`: some pattern is served by the target, or being handed over to it.
    pub fn patterns_handed_over(&self) -> bool {
        self.info.split().is_some_and(|s| {
            s.owners().iter().any(|o| {
                matches!(
                    o,
                    crate::patterns::Owner::There | crate::patterns::Owner::Handing
                )
            })
        })
    }

    /// CUTOVER <id> PATTERN <glob>: refused at once when it cannot run (as CUTOVER is), else
    /// left for the run to start at its next chance.
    fn request_pattern_cutover(&mut self, index: usize, force: bool, reply: Reply<CutoverResult>) {
        let refuse = |e: MigrationError, reply: Reply<CutoverResult>| {
            let _ = reply.send(Err(e));
        };
        if self.state() != MigrationState::LiveSync {
            refuse(self.wrong_state("cut over a pattern"), reply);
            return;
        }
        if self.pending_pattern.is_some() {
            refuse(
                MigrationError::WrongState {
                    id: self.info.id.clone(),
                    state: "cutting_over",
                    op: "cut over a pattern",
                },
                reply,
            );
            return;
        }
        if let Some(split) = self.info.split()
            && split.owners().get(index) == Some(&crate::patterns::Owner::There)
        {
            refuse(
                MigrationError::Patterns(format!(
                    "pattern '{}' has already moved to {}",
                    split.name(index),
                    self.info.redirect
                )),
                reply,
            );
            return;
        }
        if !self.links_up() {
            refuse(
                MigrationError::Failed(
                    "cannot cut over while the target is unreachable; the source still owns the pattern".into(),
                ),
                reply,
            );
            return;
        }
        if !force {
            let max = self.env.settings.read().cutover_max_lag;
            if let Err(e) = super::cutover::lag_allows(&self.info, &self.status.borrow(), max) {
                refuse(e, reply);
                return;
            }
        }
        self.pending_pattern = Some(PendingPattern {
            index,
            force,
            reply,
        });
    }

    fn unschedule(&mut self) {
        self.schedule = None;
        self.withdraw_scheduled_request();
        self.publish(|p| p.scheduled_cutover_ms = None);
    }

    fn withdraw_scheduled_request(&mut self) {
        if self
            .pending_cutover
            .as_ref()
            .is_some_and(|c| c.scheduled && !self.running_scheduled)
        {
            self.pending_cutover = None;
        }
    }

    /// CUTOVER and CUTOVER RETRY: refused at once when they cannot run; otherwise left for the
    /// run to start at its next chance (never while a large value is being copied).
    fn request_cutover(
        &mut self,
        force: bool,
        retry: bool,
        auth: Option<GivenPassword>,
        reply: Reply<CutoverResult>,
    ) {
        if let Some(e) = self.conflict_forbids_cutover() {
            let _ = reply.send(Err(e));
            return;
        }
        let st = self.state();
        let handed_over = self.info.tenant.state() == TenantState::Moved;
        let refuse = |e: MigrationError, reply: Reply<CutoverResult>| {
            let _ = reply.send(Err(e));
        };
        if auth.is_some() && !(retry && st == MigrationState::Failed && self.started_with_auth()) {
            refuse(
                self.auth_not_applicable("CUTOVER RETRY of a failed migration"),
                reply,
            );
            return;
        }
        if retry && st == MigrationState::Failed && auth.is_none() && self.password_missing() {
            let id = &self.info.id;
            refuse(
                MigrationError::Failed(format!(
                    "migration {id} authenticated to its target with AUTH, which is not kept across restarts: TENANT.MIGRATE.CUTOVER {id} RETRY AUTH <password>"
                )),
                reply,
            );
            return;
        }
        match st {
            MigrationState::Failed if retry && handed_over => {
                if self.pending_activation_retry.is_some() {
                    refuse(self.wrong_state("retry the cutover twice"), reply);
                } else {
                    if let Some(given) = auth {
                        // Installed by `failed` before it asks the target again.
                        self.take_password(given);
                    }
                    self.pending_activation_retry = Some(reply);
                }
            }
            MigrationState::Failed if retry => {
                let previous = auth.map(|given| self.take_password(given));
                match self.retry() {
                    Ok(()) => {
                        self.pending_cutover = Some(PendingCutover {
                            force,
                            retry: true,
                            scheduled: false,
                            reply: Some(reply),
                        })
                    }
                    Err(e) => {
                        if let Some(previous) = previous {
                            self.put_back_password(previous);
                        }
                        refuse(e, reply)
                    }
                }
            }
            MigrationState::LiveSync => {
                if self.pending_cutover.as_ref().is_some_and(|c| !c.scheduled) {
                    refuse(
                        MigrationError::WrongState {
                            id: self.info.id.clone(),
                            state: "cutting_over",
                            op: "cut over",
                        },
                        reply,
                    );
                    return;
                }
                if !retry && !self.links_up() {
                    let msg = format!(
                        "cannot cut over while the target is unreachable ({}); the source still owns the tenant. CUTOVER RETRY waits for it to come back",
                        self.status
                            .borrow()
                            .last_error
                            .clone()
                            .unwrap_or_else(|| "reconnecting".into())
                    );
                    refuse(MigrationError::Failed(msg), reply);
                    return;
                }
                if !force {
                    let max = self.env.settings.read().cutover_max_lag;
                    if let Err(e) =
                        super::cutover::lag_allows(&self.info, &self.status.borrow(), max)
                    {
                        refuse(e, reply);
                        return;
                    }
                }
                // A manual request takes the place of a scheduled one waiting beside it.
                self.pending_cutover = Some(PendingCutover {
                    force,
                    retry,
                    scheduled: false,
                    reply: Some(reply),
                });
            }
            _ => {
                let op = if retry {
                    "retry the cutover"
                } else {
                    "cut over"
                };
                refuse(self.wrong_state(op), reply);
            }
        }
    }

    /// Restarts a failed migration from its checkpoint (same import on the target when it
    /// still has it: only what was not acknowledged is sent again).
    pub fn retry(&mut self) -> Result<(), MigrationError> {
        if self.restored {
            super::restart::may_start_again(self)?;
        }
        if self.info.tenant.state() != TenantState::Active {
            return Err(MigrationError::WrongState {
                id: self.info.id.clone(),
                state: "failed after hand-over",
                op: "resume (use TENANT.MIGRATE.CUTOVER <id> RETRY)",
            });
        }
        self.env.claim(&self.info)?;
        if self.restored {
            super::restart::start_again(self);
        }
        self.publish(|p| {
            p.state = MigrationState::Queued;
            p.base_phase = MigrationPhase::Queued;
            p.finished = None;
        });
        tracing::info!(migration = %self.info.id, "retrying from the checkpoint");
        Ok(())
    }

    /// Periodic work: rates, the reconnect timeout, the schedule.
    pub fn on_tick(&mut self) {
        self.next_tick = Instant::now() + TICK;
        let (lag_keys, acked) = {
            let p = self.status.borrow();
            (super::status::lag(&self.info, &p).0, p.keys_acked)
        };
        self.lag.sample(lag_keys, acked);
        let (rate, trend, lag_rate) = (
            self.lag.keys_per_sec(),
            self.lag.trend(),
            self.lag.lag_rate(),
        );
        self.publish(|p| {
            p.keys_per_sec = rate;
            p.lag_trend = trend;
            p.lag_rate = lag_rate;
        });
        // Give up on a target unreachable for longer than the reconnect timeout.
        let running = matches!(
            self.state(),
            MigrationState::Syncing | MigrationState::LiveSync | MigrationState::Paused
        );
        if running && let Some(since) = self.links_down.values().min().copied() {
            let timeout = self.reconnect_timeout();
            if since.elapsed() >= timeout {
                let last = self
                    .status
                    .borrow()
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "no answer".into());
                self.interrupt(MigrationError::Failed(format!(
                        "gave up after the target was unreachable for {} s (reconnect timeout): {last}; the source still owns the tenant, RESUME retries from the checkpoint",
                        since.elapsed().as_secs()
                    )));
            }
        }
        self.run_schedule();
        let sent = self.status.borrow().bytes_sent;
        let bytes_per_sec = self.throughput.sample(sent);
        let throttle = self.env.slots.factor(self.cfg.priority);
        self.publish(|p| {
            p.bytes_per_sec = bytes_per_sec;
            p.throttle = throttle;
            if throttle >= 1.0 && bytes_per_sec > 0.0 {
                p.free_rate = bytes_per_sec;
            }
        });
    }

    fn run_schedule(&mut self) {
        let Some(s) = self.schedule else { return };
        let now = ferrite_storage::now_ms();
        if now < s.next_try_ms || self.pending_cutover.is_some() || self.running_scheduled {
            return;
        }
        match self.state() {
            MigrationState::LiveSync => {
                self.pending_cutover = Some(PendingCutover {
                    force: s.force,
                    retry: false,
                    scheduled: true,
                    reply: None,
                });
            }
            st if (st.is_pending()
                || matches!(st, MigrationState::Syncing | MigrationState::Paused))
                && now < s.at_ms + SCHEDULE_PATIENCE_MS => {}
            st if st.is_pending()
                || matches!(st, MigrationState::Syncing | MigrationState::Paused) =>
            {
                self.unschedule();
                self.note_error("scheduled cutover failed: the migration never reached live sync");
            }
            other => {
                self.unschedule();
                self.note_error(&format!(
                    "scheduled cutover failed: migration {} is {}",
                    self.info.id,
                    other.name()
                ));
            }
        }
    }

    /// The outcome of a cutover a schedule started.
    pub fn scheduled_outcome(&mut self, r: &Result<CutoverResult, MigrationError>) {
        let Some(s) = self.schedule.as_mut() else {
            return;
        };
        let now = ferrite_storage::now_ms();
        match r {
            Ok(r) => {
                tracing::info!(migration = %self.info.id, downtime_ms = r.downtime_ms, "scheduled cutover completed");
                self.unschedule();
            }
            Err(MigrationError::LagTooHigh { .. } | MigrationError::LargeValuesPending { .. })
                if now < s.at_ms + SCHEDULE_PATIENCE_MS =>
            {
                s.next_try_ms = now + 500;
            }
            Err(e) => {
                let msg = format!("scheduled cutover failed: {e}");
                self.unschedule();
                self.note_error(&msg);
            }
        }
    }

    /// Drops the schedule (CANCEL, the end of the migration).
    pub fn drop_schedule(&mut self) {
        self.schedule = None;
        self.publish(|p| p.scheduled_cutover_ms = None);
    }

    fn take_breakpoint(&mut self, point: &'static str) -> bool {
        self.env.settings.read().fault_injection && self.breakpoints.remove(point)
    }
}

/// The actor's mailboxes.
pub(super) struct Inbox {
    pub requests: mpsc::Receiver<Request>,
    pub events: mpsc::UnboundedReceiver<LinkEvent>,
}

/// What a run waits through: the inbox and the control state, beside the data path.
pub(super) struct Io<'a> {
    pub inbox: &'a mut Inbox,
    pub ctl: &'a mut Control,
}

impl Io<'_> {
    /// Drives `fut` while answering requests and taking link events; returns early with an
    /// interrupt (CANCEL, a failure noticed meanwhile), or `None` once `wake` holds. The server
    /// going away (the manager dropped) counts as CANCEL.
    pub async fn serve<F: std::future::Future>(
        &mut self,
        fut: F,
        wake: impl Fn(&Control) -> bool,
    ) -> Result<Option<F::Output>, Interrupt> {
        tokio::pin!(fut);
        loop {
            if let Some(e) = self.ctl.take_interrupt() {
                return Err(e);
            }
            if wake(self.ctl) {
                return Ok(None);
            }
            let tick = self.ctl.next_tick;
            tokio::select! {
                biased;
                req = self.inbox.requests.recv() => match req {
                    Some(r) => self.ctl.handle(r),
                    None => return Err(MigrationError::Cancelled),
                },
                out = &mut fut => return Ok(Some(out)),
                Some(ev) = self.inbox.events.recv() => self.ctl.on_event(ev),
                _ = tokio::time::sleep_until(tick) => self.ctl.on_tick(),
            }
        }
    }

    /// Drives `fut` to its end unless interrupted.
    pub async fn until<F: std::future::Future>(&mut self, fut: F) -> Result<F::Output, Interrupt> {
        match self.serve(fut, |_| false).await? {
            Some(out) => Ok(out),
            None => Err(MigrationError::Failed(
                "internal: wait ended without a result".into(),
            )),
        }
    }

    /// Waits until `wake` holds.
    pub async fn wait(&mut self, wake: impl Fn(&Control) -> bool) -> Result<(), Interrupt> {
        self.serve(std::future::pending::<()>(), wake)
            .await
            .map(|_| ())
    }

    /// Sleeps, serving meanwhile.
    pub async fn sleep(&mut self, d: Duration) -> Result<(), Interrupt> {
        self.until(tokio::time::sleep(d)).await
    }

    /// Takes what is already queued without waiting (between units of work).
    pub fn poll(&mut self) -> Result<(), Interrupt> {
        loop {
            match self.inbox.requests.try_recv() {
                Ok(r) => self.ctl.handle(r),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    return Err(MigrationError::Cancelled);
                }
            }
        }
        while let Ok(ev) = self.inbox.events.try_recv() {
            self.ctl.on_event(ev);
        }
        if Instant::now() >= self.ctl.next_tick {
            self.ctl.on_tick();
        }
        match self.ctl.take_interrupt() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Parks at a fault-injection breakpoint if a test armed it, until released (or a minute),
    /// answering requests meanwhile.
    pub async fn breakpoint(&mut self, point: &'static str) -> Result<(), Interrupt> {
        if !self.ctl.take_breakpoint(point) {
            return Ok(());
        }
        tracing::warn!(migration = %self.ctl.info.id, point, "parked at a fault-injection breakpoint");
        self.ctl.release = false;
        self.ctl.publish(|p| p.parked_at = Some(point));
        let r = self
            .serve(tokio::time::sleep(Duration::from_secs(60)), |c| c.release)
            .await;
        self.ctl.release = false;
        self.ctl.publish(|p| p.parked_at = None);
        r.map(|_| ())
    }
}

/// The data path: what a run reads and sends with.
pub(super) struct Work {
    pub target: Arc<dyn Target>,
    pub checkpoint: Checkpoint,
    pub streams: Option<Streams>,
    /// The concurrency slot, held while a run goes on.
    pub permit: Option<super::schedule::SlotPermit>,
    /// The source's copy, kept read-only after cutover for VERIFY and released after retention.
    pub frozen: Option<Arc<ferrite_storage::Keyspace>>,
    /// The delta log's subscription to the tenant's keyspace effects (`super::delta`): taken
    /// with change capture and kept, like it, across a failure (part of the checkpoint).
    pub subscription: Option<ferrite_storage::SinkId>,
    pub rate: source::RateLimiter,
    /// A graceful STOP looking for its consistency point: `Some(None)` asks the next read of
    /// change capture to record, in the same lock hold, the instant, key count and digest it
    /// left the tenant at (`super::stop`).
    pub probe: Option<Option<super::stop::Point>>,
}

impl Work {
    /// From now on reaches the target through the connection a password given again with AUTH
    /// (RESUME, CUTOVER RETRY, CANCEL) installed, if there is one.
    pub fn adopt_given_target(&mut self, ctl: &mut Control) {
        if let Some(target) = ctl.replacement_target.take() {
            self.target = target;
        }
    }

    /// Stops change capture and the delta log's subscription, and forgets what it tracked.
    pub fn stop_capture(&mut self, db: &mut ferrite_storage::Db, delta: &super::delta::DeltaLog) {
        db.stop_tracking();
        if let Some(id) = self.subscription.take() {
            db.unsubscribe(id);
        }
        delta.clear();
    }
}

/// Where a failed migration resumes from.
#[derive(Default)]
pub(super) struct Checkpoint {
    /// The import on the target the queues belong to.
    pub import_id: Option<String>,
    /// Every sealed, unacknowledged batch per stream (owned by the senders while a run goes on).
    pub queues: StreamQueues,
    /// Next snapshot cursor (every key before it is sealed into a queue or marked changed).
    pub cursor: u64,
    /// The cursor walk has ended (cursor 0 again); only acknowledgements may be outstanding.
    pub scanned: bool,
    pub snapshot_done: bool,
    /// Flush epoch the target knows about.
    pub epoch: u64,
}

/// One migration's task.
pub(super) struct Actor {
    pub inbox: Inbox,
    pub ctl: Control,
    pub work: Work,
}

impl Actor {
    pub async fn run(mut self) {
        loop {
            let mut io = Io {
                inbox: &mut self.inbox,
                ctl: &mut self.ctl,
            };
            let go_on = match io.ctl.state() {
                MigrationState::Queued => {
                    let result = match super::schedule::admit(&mut io).await {
                        Ok(()) => source::run(&mut self.work, &mut io).await,
                        Err(e) => Err(e),
                    };
                    finish(&mut self.work, &mut io, result).await
                }
                MigrationState::Failed => failed(&mut self.work, &mut io).await,
                MigrationState::Completed
                | MigrationState::Verified
                | MigrationState::RolledBack => retain(&mut self.work, &mut io).await,
                // Cancelled and stopped are final: later requests are answered from what was
                // published.
                MigrationState::Cancelled | MigrationState::Stopped => false,
                other => {
                    // Runs end in one of the states above; anything else is a bug, reported.
                    io.ctl.fail(&format!(
                        "internal: the run ended in state {}",
                        other.name()
                    ));
                    true
                }
            };
            if !go_on {
                break;
            }
        }
        self.ctl.cancel.cancel();
    }
}

/// Ends a run: stops the streams (keeping what they had not delivered), then records how it
/// ended. Returns false when the actor should stop (the server is going away).
async fn finish(work: &mut Work, io: &mut Io<'_>, result: Result<(), MigrationError>) -> bool {
    if let Some(streams) = work.streams.take() {
        let (kept, metas) = streams.stop().await;
        for (s, meta) in metas {
            io.ctl.sealed(s, meta);
        }
        io.ctl.set_unsealed((0, 0));
        work.checkpoint.queues = kept;
    }
    while let Ok(ev) = io.inbox.events.try_recv() {
        io.ctl.on_event(ev);
    }
    io.ctl.forget_links();
    io.ctl.set_large_left(0, 0);
    work.permit = None;
    let tenant = io.ctl.info.tenant.clone();
    let shutting_down = io.inbox.requests.is_closed();
    match result {
        Ok(()) => {
            // Completed (the cutover recorded it): the checkpoint has no further use.
            work.checkpoint = Checkpoint::default();
            io.ctl.reset_flight(0);
            io.ctl.clear_interrupts();
            true
        }
        Err(MigrationError::Cancelled) => {
            cancel_cleanup(work, io).await;
            !shutting_down
        }
        Err(MigrationError::Stopped) => {
            super::stop::conclude(work, io).await;
            !shutting_down
        }
        Err(e) => {
            io.ctl.clear_interrupts();
            if tenant.state() == TenantState::Active && tenant.gate().is_closed() {
                tenant.gate().open();
            }
            if io.ctl.state() != MigrationState::Failed {
                let msg = e.to_string();
                tracing::warn!(migration = %io.ctl.info.id, error = %msg, "migration failed; checkpoint kept for a retry");
                io.ctl.fail(&msg);
            }
            let err = io.ctl.published().error.clone().unwrap_or_default();
            if let Some(c) = io.ctl.pending_pattern.take() {
                let _ = c.reply.send(Err(MigrationError::Failed(err.clone())));
            }
            if let Some(c) = io.ctl.pending_cutover.take()
                && let Some(r) = c.reply
            {
                let _ = r.send(Err(MigrationError::Failed(if c.retry {
                    format!("retry stopped before the cutover: {err}")
                } else {
                    err.clone()
                })));
            }
            true
        }
    }
}

/// CANCEL before the hand-over: the source stays the owner, untouched; the target is asked to
/// drop its staged import now (briefly), and keeps being asked in the background if it cannot
/// be reached (its own reaper drops the import after `sync_timeout_secs` otherwise).
async fn cancel_cleanup(work: &mut Work, io: &mut Io<'_>) {
    work.adopt_given_target(io.ctl);
    let tenant = io.ctl.info.tenant.clone();
    if tenant.state() != TenantState::Moved && tenant.gate().is_closed() {
        tenant.gate().open();
    }
    {
        let ks = tenant.keyspace();
        let mut db = ks.lock_async().await;
        work.stop_capture(&mut db, &io.ctl.info.delta);
    }
    let import = io
        .ctl
        .published()
        .import_id
        .clone()
        .or_else(|| work.checkpoint.import_id.clone());
    work.checkpoint = Checkpoint::default();
    io.ctl.reset_flight(0);
    io.ctl.drop_schedule();
    io.ctl.clear_interrupts();
    // What STATUS `error` keeps saying after the cancel: the target kept the import.
    let mut import_kept = None;
    if let Some(import) = import {
        let target = work.target.clone();
        let patience = io.ctl.env.settings.read().sync_timeout;
        let id = io.ctl.info.id.clone();
        let left_to_reaper = |why: &str| {
            format!(
                "cancelled here (the source owns the tenant), but the target's import {import} was not dropped: {why}. It stays unwritable there; the target drops it once it has heard nothing from this server for its sync_timeout_secs (3600 by default), or at once with TENANT.IMPORT.ABORT {import} on the target"
            )
        };
        if io.ctl.password_missing() {
            // A login the target is known to refuse would only fill its ACL LOG.
            let why = format!(
                "this migration logged in to it with AUTH, which is not kept across restarts (TENANT.MIGRATE.CANCEL {id} AUTH <password> drops it)"
            );
            tracing::warn!(migration = %id, import = %import, "cancelled without the target's password: its import is left to its reaper");
            import_kept = Some(left_to_reaper(&why));
        } else {
            // Most targets answer at once; a dead or partitioned one is left to the background.
            let quick = tokio::time::timeout(CANCEL_ABORT_WAIT, target.abort(&import)).await;
            match quick {
                Ok(Ok(())) | Ok(Err(TargetError::ImportGone(_))) => {}
                Ok(Err(e)) if !e.is_unreachable() => {
                    tracing::warn!(migration = %id, error = %e, "the target refused to drop the cancelled import");
                    import_kept = Some(left_to_reaper(&format!("it refused: {e}")));
                }
                _ => {
                    tokio::spawn(abort_in_background(target, import, id, patience));
                }
            }
        }
    }
    io.ctl.publish(|p| {
        p.state = MigrationState::Cancelled;
        p.base_phase = MigrationPhase::Stopped;
        p.finished = Some(Instant::now());
        p.error = import_kept;
    });
    io.ctl.env.release_claim(&io.ctl.info);
    tracing::info!(migration = %io.ctl.info.id, "migration cancelled; the source still owns the tenant");
    for r in io.ctl.pending_cancel.drain(..) {
        let _ = r.send(Ok(()));
    }
    if let Some(c) = io.ctl.pending_cutover.take()
        && let Some(r) = c.reply
    {
        let _ = r.send(Err(MigrationError::Cancelled));
    }
    if let Some(r) = io.ctl.pending_activation_retry.take() {
        let _ = r.send(Err(MigrationError::Cancelled));
    }
    if let Some(c) = io.ctl.pending_pattern.take() {
        let _ = c.reply.send(Err(MigrationError::Cancelled));
    }
}

/// How long CANCEL waits for the target to drop the import before leaving it to the
/// background (CANCEL answers within a second whatever the target does).
const CANCEL_ABORT_WAIT: Duration = Duration::from_millis(500);

/// Keeps asking a target that could not be reached to drop a cancelled import, until it does or
/// `patience` (its own reaper's limit) has passed.
async fn abort_in_background(
    target: Arc<dyn Target>,
    import: String,
    id: String,
    patience: Duration,
) {
    let deadline = Instant::now() + patience;
    let mut backoff = Duration::from_millis(200);
    while Instant::now() < deadline {
        tokio::time::sleep(backoff).await;
        match tokio::time::timeout(Duration::from_secs(5), target.abort(&import)).await {
            Ok(Ok(())) | Ok(Err(TargetError::ImportGone(_))) => {
                tracing::info!(migration = %id, import = %import, "the target dropped the cancelled import");
                return;
            }
            Ok(Err(e)) if !e.is_unreachable() => {
                tracing::warn!(migration = %id, error = %e, "the target refused to drop the cancelled import");
                return;
            }
            _ => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// A failed migration waits for RESUME, CUTOVER RETRY or CANCEL.
async fn failed(work: &mut Work, io: &mut Io<'_>) -> bool {
    let woke = io
        .wait(|c| c.state() != MigrationState::Failed || c.pending_activation_retry.is_some())
        .await;
    match woke {
        Err(MigrationError::Cancelled) => {
            if io.ctl.info.tenant.state() == TenantState::Moved {
                cancel_after_hand_over(work, io).await;
                true
            } else {
                let shutting_down = io.inbox.requests.is_closed();
                cancel_cleanup(work, io).await;
                !shutting_down
            }
        }
        Err(MigrationError::Stopped) => {
            super::stop::conclude(work, io).await;
            true
        }
        Err(_) => true,
        Ok(()) => {
            work.adopt_given_target(io.ctl);
            if let Some(reply) = io.ctl.pending_activation_retry.take() {
                let r = cutover::retry_activation(work, io).await;
                let _ = reply.send(r);
            }
            true
        }
    }
}

/// CANCEL of a migration whose hand-over happened but whose activation was never confirmed:
/// the source takes the tenant back only if the target drops the import (else the tenant could
/// end writable on both).
async fn cancel_after_hand_over(work: &mut Work, io: &mut Io<'_>) {
    work.adopt_given_target(io.ctl);
    let Some(import) = io.ctl.published().import_id.clone() else {
        return;
    };
    let tenant = io.ctl.info.tenant.clone();
    let answer = tokio::time::timeout(CANCEL_ABORT_WAIT, work.target.abort(&import)).await;
    let replies: Vec<_> = io.ctl.pending_cancel.drain(..).collect();
    let outcome: Result<(), MigrationError> = match answer {
        Ok(Ok(())) | Ok(Err(TargetError::ImportGone(_))) => {
            match io.ctl.env.registry.reclaim(&tenant) {
                Ok(()) => {
                    {
                        let ks = tenant.keyspace();
                        let mut db = ks.lock_async().await;
                        work.stop_capture(&mut db, &io.ctl.info.delta);
                    }
                    if tenant.gate().is_closed() {
                        tenant.gate().open();
                    }
                    work.checkpoint = Checkpoint::default();
                    io.ctl.reset_flight(0);
                    io.ctl.publish(|p| {
                        p.state = MigrationState::Cancelled;
                        p.base_phase = MigrationPhase::Stopped;
                        p.finished = Some(Instant::now());
                    });
                    Ok(())
                }
                Err(e) => Err(MigrationError::Failed(format!(
                    "the target dropped the import but taking the tenant back failed: {e}"
                ))),
            }
        }
        Ok(Err(TargetError::ImportActive(_))) => {
            // The target did activate: the migration actually completed.
            let keys = tenant.keyspace().len();
            io.ctl.complete(keys, 0.0);
            work.frozen = Some(tenant.keyspace());
            Err(MigrationError::WrongState {
                id: io.ctl.info.id.clone(),
                state: "completed (the target confirmed it owns the tenant)",
                op: "cancel",
            })
        }
        Ok(Err(e)) => Err(MigrationError::Failed(format!(
            "cannot cancel: the target did not drop the import ({e}); the tenant stays handed over"
        ))),
        Err(_) => Err(MigrationError::Failed(
            "cannot cancel: the tenant was handed over and the target did not answer; the tenant stays handed over (try again when the target is reachable, or CUTOVER RETRY)".into(),
        )),
    };
    for r in replies {
        let _ = r.send(outcome.clone());
    }
}

/// After cutover: the frozen copy is kept for `retention_secs` (re-read while waiting, so
/// CONFIG SET applies to copies already kept), then released; the MOVED answer stays.
async fn retain(work: &mut Work, io: &mut Io<'_>) -> bool {
    if super::rollback::serve_backup(work, io).await.is_err() {
        return !io.inbox.requests.is_closed();
    }
    let since = io.ctl.published().finished.unwrap_or_else(Instant::now);
    while !io.ctl.published().frozen_released {
        let retention = io.ctl.env.settings.read().retention;
        let waited = since.elapsed();
        if waited >= retention {
            release_frozen(work, io);
            break;
        }
        if io
            .sleep((retention - waited).min(Duration::from_secs(1)))
            .await
            .is_err()
        {
            return !io.inbox.requests.is_closed();
        }
    }
    // Nothing left to do but answer (VERIFY's transition, refusals) until the server stops.
    while !io.inbox.requests.is_closed() {
        let _ = io.wait(|_| false).await;
    }
    false
}

pub(super) fn release_frozen(work: &mut Work, io: &mut Io<'_>) {
    let tenant = &io.ctl.info.tenant;
    if let Some(frozen) = work.frozen.take()
        && tenant.state() == TenantState::Moved
        && Arc::ptr_eq(&tenant.keyspace(), &frozen)
    {
        let old = tenant.replace_keyspace(Arc::new(ferrite_storage::Keyspace::new()));
        drop(frozen);
        tokio::task::spawn_blocking(move || drop(old));
        tracing::info!(migration = %io.ctl.info.id, tenant = %tenant.id(), "frozen copy released");
    }
    io.ctl.publish(|p| p.frozen_released = true);
}
