//! Cutover: gate the tenant's writes, drain, confirm, hand over, activate, reopen. And retrying
//! an unconfirmed activation.
//!
//! Ordering is what keeps a tenant writable on at most one server: the source records the
//! hand-over (durably, through [`crate::Registry::mark_moved`]) *before* it asks the target to
//! activate. If the activation cannot be confirmed, the tenant stays unwritable everywhere
//! (clients bounce between MOVED and TRYAGAIN) until CUTOVER RETRY confirms it, or CANCEL gets
//! the target to drop the import (then the source takes it back). It is never taken back while
//! the target might be serving it.
//!
//! The gate is closed only while nothing slow is left: a large value is never copied whole
//! behind it (the run finishes shipping it before it starts a cutover; a large value already
//! copied ships the effects that changed it, `super::delta`; one that must be copied whole
//! again is copied with the gate reopened, then the gate closes again), and the drain is
//! aborted, reopening the gate, as soon as a stream's connection breaks or when the target
//! acknowledges nothing for `redirect_timeout_ms` (the time a writer waits at the gate anyway).

use std::time::Duration;

use tokio::time::Instant;

use super::actor::{Io, PendingCutover, Work};
use super::api::{CutoverResult, MigrationError, MigrationMode};
use super::source::{copy_whole, drain, drain_gated, send_all};
use super::state::{MigrationPhase, MigrationState};
use super::status::{Info, Published};
use super::target::TargetError;

type Res<T> = Result<T, MigrationError>;

/// Steps where a test can park the actor (only with `fault_injection` enabled), to inject a
/// real fault (cut the network, kill the target) at that exact moment. The actor answers
/// requests while parked.
pub const BREAKPOINTS: &[&str] = &[
    "run:connecting",
    "snapshot:batch",
    "large:chunk",
    "cutover:before_gate",
    "cutover:after_gate",
    "cutover:before_confirm",
    "cutover:after_confirm",
    "cutover:before_activate",
];

/// How long the target may take to show it is still there after it confirmed.
const LIVENESS_TIMEOUT: Duration = Duration::from_millis(500);

/// Whether the lag lets a cutover (without FORCE) start: at most `max` keys behind, and no
/// large value still being copied in chunks (the drain would copy the rest of it with the
/// tenant's writes held at the gate).
pub(super) fn lag_allows(info: &Info, p: &Published, max: u64) -> Res<()> {
    if p.large_keys_left > 0 {
        return Err(MigrationError::LargeValuesPending {
            keys: p.large_keys_left,
            bytes: p.large_bytes_left,
        });
    }
    let lag = super::status::lag(info, p).0;
    if lag > max {
        return Err(MigrationError::LagTooHigh { lag, max });
    }
    Ok(())
}

/// The cutover. Before the hand-over, any failure (or CANCEL) reopens the gate and leaves the
/// source the owner; live sync goes on unless the migration failed.
pub(super) async fn cutover(
    work: &mut Work,
    io: &mut Io<'_>,
    req: &PendingCutover,
) -> Res<CutoverResult> {
    let settings = io.ctl.env.settings.read().clone();
    let tenant = io.ctl.info.tenant.clone();
    let fast = io.ctl.info.mode == MigrationMode::Fast;
    if !req.force {
        lag_allows(&io.ctl.info, &io.ctl.published(), settings.cutover_max_lag)?;
    }
    if req.retry || fast {
        // A retry waits for broken links to come back (the reconnect timeout still applies).
        io.wait(|c| c.links_up()).await?;
    } else if !io.ctl.links_up() {
        return Err(abort(
            io,
            "a link to the target is down (reconnecting); CUTOVER RETRY waits for it",
        ));
    }
    io.ctl.transition(MigrationState::CuttingOver, "cut over")?;
    io.ctl.set_phase(MigrationPhase::Cutover);
    io.ctl.handed_over = false;
    let confirmed = gate_and_confirm(work, io, fast, &settings).await;
    let (closed, keys) = match confirmed {
        Ok(done) => done,
        Err(e) => {
            // Nothing was handed over: the source keeps the tenant.
            tenant.gate().open();
            return Err(match e {
                MigrationError::Cancelled => MigrationError::Cancelled,
                MigrationError::Failed(reason) if io.ctl.state() == MigrationState::CuttingOver => {
                    abort(io, &reason)
                }
                other => {
                    if io.ctl.state() == MigrationState::CuttingOver {
                        abort(io, &other.to_string())
                    } else {
                        other
                    }
                }
            });
        }
    };

    // Hand over: from here the source answers MOVED; then the target is activated.
    if let Err(e) = record_hand_over(io, &tenant).await {
        tenant.gate().open();
        return Err(abort(
            io,
            &format!("the hand-over could not be recorded: {e}"),
        ));
    }
    release_after_hand_over(work, io, &tenant).await;
    // A breakpoint here cannot be interrupted by CANCEL (refused after the hand-over).
    let _ = io.breakpoint("cutover:before_activate").await;
    let import = io.ctl.published().import_id.clone().unwrap_or_default();
    match activate(work, io, &import, settings.activation_timeout).await {
        Activation::Confirmed => {}
        Activation::Refused(reason) => {
            // The target says the import is gone or aborted, so it is not serving the tenant:
            // taking the tenant back is safe.
            return Err(take_back(io, &reason, "cutover failed").await);
        }
        Activation::Unconfirmed(reason) => {
            tenant.gate().open();
            let msg = format!(
                "cutover incomplete: the source handed the tenant over but the target did not confirm activation ({reason}); clients get MOVED/TRYAGAIN until TENANT.MIGRATE.CUTOVER {} RETRY succeeds (or CANCEL makes the target drop it and the source take it back)",
                io.ctl.info.id
            );
            io.ctl.fail(&msg);
            return Err(MigrationError::Failed(msg));
        }
    }
    tenant.gate().open();
    let downtime_ms = closed.total().as_secs_f64() * 1000.0;
    io.ctl.complete(keys, downtime_ms);
    work.frozen = Some(tenant.keyspace());
    work.checkpoint = Default::default();
    tracing::info!(migration = %io.ctl.info.id, tenant = %tenant.id(), keys, downtime_ms, "cutover completed");
    Ok(CutoverResult {
        status: "completed",
        downtime_ms,
        keys_migrated: keys,
    })
}

/// Records the hand-over ([`crate::Registry::mark_moved`]: moved, and the tenant catalog
/// written and fsynced) on the blocking pool. An fsync can take tens of milliseconds on a busy
/// disk, during which a runtime worker would serve no connection; with one worker no tenant
/// at all. Not interruptible, as before: CANCEL waits until it is recorded or refused.
pub(super) async fn record_hand_over(
    io: &Io<'_>,
    tenant: &std::sync::Arc<crate::Tenant>,
) -> Result<(), crate::TenancyError> {
    let registry = io.ctl.env.registry.clone();
    let (moving, to) = (tenant.clone(), io.ctl.info.redirect.clone());
    let before = tenant.state();
    match tokio::task::spawn_blocking(move || registry.mark_moved(&moving, &to)).await {
        Ok(recorded) => recorded,
        Err(e) => {
            // The write never finished: served here, as when it fails (the target is not
            // activated yet).
            tenant.set_state(before);
            Err(crate::TenancyError::Persist(format!(
                "the catalog write stopped: {e}"
            )))
        }
    }
}

/// Back to live sync after a cutover that did not hand over, saying why.
/// After the hand-over is recorded (whole tenant, or its last pattern): the source stops
/// capturing changes and closes its streams (everything was acknowledged), and CANCEL can no
/// longer interrupt what follows.
pub(super) async fn release_after_hand_over(
    work: &mut Work,
    io: &mut Io<'_>,
    tenant: &crate::Tenant,
) {
    io.ctl.handed_over = true;
    {
        let ks = tenant.keyspace();
        let mut db = ks.lock_async().await;
        work.stop_capture(&mut db, &io.ctl.info.delta);
    }
    if let Some(s) = work.streams.take() {
        let _ = s.stop().await;
    }
    io.ctl.forget_links();
    io.ctl.clear_interrupts();
}

pub(super) fn abort(io: &mut Io<'_>, reason: &str) -> MigrationError {
    let msg = format!("cutover aborted, the source still owns the tenant: {reason}");
    tracing::warn!(migration = %io.ctl.info.id, error = %reason, "cutover aborted");
    if io.ctl.state() == MigrationState::CuttingOver {
        io.ctl.publish(|p| p.state = MigrationState::LiveSync);
        io.ctl.set_phase(MigrationPhase::LiveSync);
    }
    io.ctl.note_error(&msg);
    MigrationError::Failed(msg)
}

/// How long the gate was closed during one cutover, over every time it closed.
struct Closed {
    before: Duration,
    since: Instant,
}

impl Closed {
    fn total(&self) -> Duration {
        self.before + self.since.elapsed()
    }
}

/// A cutover reopens its gate to copy large values whole at most this many times.
const COPY_ROUNDS: usize = 3;

/// Gates the writes, drains and has the target confirm. A large value that must be copied whole
/// (its effects could not bring the target up to date) is copied with the gate open, then the
/// gate closes again. Returns the gate's closed time and the confirmed key count.
async fn gate_and_confirm(
    work: &mut Work,
    io: &mut Io<'_>,
    fast: bool,
    settings: &super::api::MigrationSettings,
) -> Res<(Closed, u64)> {
    let tenant = io.ctl.info.tenant.clone();
    io.breakpoint("cutover:before_gate").await?;
    // In fast mode the gate has been closed since the copy began: that is the downtime.
    let t0 = match (fast, io.ctl.gate_closed_at) {
        (true, Some(t)) => t,
        _ => Instant::now(),
    };
    let mut closed = Closed {
        before: Duration::ZERO,
        since: t0,
    };
    io.ctl.gate_closed_at = Some(t0);
    io.until(tenant.gate().close_and_drain()).await?;
    io.breakpoint("cutover:after_gate").await?;
    let mut round = 0;
    let keys = loop {
        match confirm(work, io, settings.redirect_timeout, fast).await? {
            Confirmed::Keys(keys) => break keys,
            Confirmed::CopyFirst(large) if round < COPY_ROUNDS => {
                round += 1;
                tracing::info!(migration = %io.ctl.info.id, keys = large.len(), round, "reopening the gate to copy large values whole");
                closed.before += closed.since.elapsed();
                tenant.gate().open();
                copy_whole(work, io, large).await?;
                io.wait(|c| c.flight_empty()).await?;
                closed.since = Instant::now();
                io.ctl.gate_closed_at = Some(closed.since);
                io.until(tenant.gate().close_and_drain()).await?;
            }
            Confirmed::CopyFirst(large) => {
                return Err(MigrationError::Failed(format!(
                    "{} large value(s) kept needing a whole copy ({COPY_ROUNDS} rounds); try again when the writes to them slow down",
                    large.len()
                )));
            }
        }
    };
    io.breakpoint("cutover:after_confirm").await?;
    // Last chance to keep the tenant: if the target stopped answering since it confirmed, do
    // not hand over (that would leave the tenant unwritable until the target comes back).
    let import = io.ctl.published().import_id.clone().unwrap_or_default();
    let alive = io
        .until(tokio::time::timeout(
            LIVENESS_TIMEOUT,
            work.target.resume(&import),
        ))
        .await?;
    if !matches!(alive, Ok(Ok(_))) {
        return Err(MigrationError::Failed(
            "the target stopped answering after it confirmed".into(),
        ));
    }
    Ok((closed, keys))
}

/// What a confirmation found.
enum Confirmed {
    /// The target holds exactly what the source holds: this many keys.
    Keys(u64),
    /// These large keys must first be copied whole (not with the gate closed).
    CopyFirst(Vec<Vec<u8>>),
}

/// Drains every change, waits for acknowledgements (aborting when a link breaks or nothing is
/// acknowledged for `budget`) and compares key count and digest with the target. In fast mode
/// (the gate closed since the copy began) large values are copied here; otherwise they are
/// handed back to be copied with the gate open. A digest that does not match while large values
/// travel as effects sends them all whole (when in doubt, the whole value).
async fn confirm(work: &mut Work, io: &mut Io<'_>, budget: Duration, fast: bool) -> Res<Confirmed> {
    let ks = io.ctl.info.tenant.keyspace();
    let import = io.ctl.published().import_id.clone().unwrap_or_default();
    let mut last = String::from("no attempt");
    for _attempt in 0..5 {
        if fast {
            while drain(work, io, 100_000).await? > 0 {}
        } else {
            loop {
                let (n, large) = drain_gated(work, io, 100_000).await?;
                if !large.is_empty() {
                    return Ok(Confirmed::CopyFirst(large));
                }
                if n == 0 {
                    break;
                }
            }
        }
        send_all(work, io).await?;
        wait_acked(io, budget).await?;
        let (keys, digest, dirty) = {
            let db = ks.lock_async().await;
            (
                db.len() as u64,
                db.digest().combined(),
                db.tracking_lag().map_or(0, |l| l.keys),
            )
        };
        if dirty > 0 {
            // A read expired a key meanwhile; drain it too.
            continue;
        }
        io.breakpoint("cutover:before_confirm").await?;
        let answer = io
            .until(tokio::time::timeout(budget, work.target.prepare(&import)))
            .await?;
        match answer {
            Ok(Ok(p)) if p.keys == keys && p.digest == digest => {
                return Ok(Confirmed::Keys(keys));
            }
            Ok(Ok(p)) => {
                last = format!(
                    "target does not match the source (source {keys} keys, digest {digest:016x}; target {} keys, digest {:016x})",
                    p.keys, p.digest
                );
                // Values kept up to date by their effects are the first suspects: send them
                // whole (they are marked changed; the next drain hands them back to be copied).
                let suspects = io.ctl.info.delta.invalidate_all();
                if !suspects.is_empty() {
                    tracing::warn!(migration = %io.ctl.info.id, keys = suspects.len(), "{last}; sending the large values whole");
                    let mut db = ks.lock_async().await;
                    let now = ferrite_storage::now_ms();
                    for k in &suspects {
                        db.count_changes_by_effects(k, false);
                        db.mark_changed(k, now);
                    }
                }
            }
            Ok(Err(e)) => {
                return Err(MigrationError::Failed(format!(
                    "target did not confirm: {e}"
                )));
            }
            Err(_) => {
                return Err(MigrationError::Failed(format!(
                    "target did not confirm within {} ms",
                    budget.as_millis()
                )));
            }
        }
    }
    Err(MigrationError::Failed(last))
}

/// How long a stream may take to reconnect during a drain (a connection that was cut while
/// idle is reopened at once, and its batches resent) before the cutover gives up on it.
const DRAIN_RECONNECT_GRACE: Duration = Duration::from_millis(500);

/// Waits until every batch is acknowledged. Gives up when a link stays down longer than a quick
/// reconnect takes, or when no acknowledgement arrives for `budget`.
pub(super) async fn wait_acked(io: &mut Io<'_>, budget: Duration) -> Res<()> {
    let mut acked = io.ctl.keys_acked();
    let mut progress = Instant::now();
    let grace = DRAIN_RECONNECT_GRACE.min(budget);
    loop {
        if io.ctl.flight_empty() {
            return Ok(());
        }
        if let Some(down) = io.ctl.down_for().filter(|d| *d >= grace) {
            let why = io
                .ctl
                .published()
                .last_error
                .clone()
                .unwrap_or_else(|| "a link to the target broke".into());
            return Err(MigrationError::Failed(format!(
                "a link to the target has been down for {} ms during the drain ({why})",
                down.as_millis()
            )));
        }
        if progress.elapsed() >= budget {
            return Err(MigrationError::Failed(format!(
                "the target acknowledged nothing for {} ms during the drain",
                budget.as_millis()
            )));
        }
        let mut left = budget.saturating_sub(progress.elapsed());
        if let Some(down) = io.ctl.down_for() {
            left = left.min(grace.saturating_sub(down));
        }
        let before = acked;
        let links_up = io.ctl.links_up();
        io.serve(tokio::time::sleep(left), move |c| {
            c.flight_empty() || c.links_up() != links_up || c.keys_acked() != before
        })
        .await?;
        let now_acked = io.ctl.keys_acked();
        if now_acked != acked {
            acked = now_acked;
            progress = Instant::now();
        }
    }
}

/// How an activation attempt ended.
pub(super) enum Activation {
    Confirmed,
    /// The target refused in a way that proves the tenant is not active there.
    Refused(String),
    /// The target could not be reached (or answered oddly) for the whole timeout.
    Unconfirmed(String),
}

pub(super) async fn activate(
    work: &mut Work,
    io: &mut Io<'_>,
    import: &str,
    timeout: Duration,
) -> Activation {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = io
            .until(tokio::time::timeout(left, work.target.activate(import)))
            .await;
        let err = match attempt {
            Ok(Ok(Ok(()))) => return Activation::Confirmed,
            Ok(Ok(Err(TargetError::ImportGone(msg)))) => return Activation::Refused(msg),
            // A wrong or missing password (CUTOVER RETRY AUTH) stays wrong for the whole
            // timeout: say so now (the target did not activate, the tenant stays handed over).
            Ok(Ok(Err(e))) if e.is_auth_refusal() => return Activation::Unconfirmed(e.to_string()),
            Ok(Ok(Err(e))) => e.to_string(),
            Ok(Err(_)) => format!("no answer within {} ms", timeout.as_millis()),
            // Interrupted (the server stopping): unconfirmed.
            Err(e) => return Activation::Unconfirmed(e.to_string()),
        };
        if Instant::now() + backoff >= deadline {
            return Activation::Unconfirmed(err);
        }
        if let Err(e) = io.sleep(backoff).await {
            return Activation::Unconfirmed(e.to_string());
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// The target lost the import after the hand-over: the tenant is served here again.
pub(super) async fn take_back(io: &mut Io<'_>, reason: &str, what: &str) -> MigrationError {
    let tenant = io.ctl.info.tenant.clone();
    let msg = match io.ctl.env.registry.reclaim(&tenant) {
        Ok(()) => {
            tenant.keyspace().lock_async().await.start_tracking();
            tenant.gate().open();
            io.ctl.handed_over = false;
            format!("{what}, the source still owns the tenant: {reason}")
        }
        Err(e) => {
            tenant.gate().open();
            format!(
                "{what}: the target lost the import ({reason}) but taking the tenant back could not be recorded ({e}); it stays unwritable until CANCEL"
            )
        }
    };
    io.ctl.fail(&msg);
    MigrationError::Failed(msg)
}

/// CUTOVER RETRY after an unconfirmed activation: asks the target again.
pub(super) async fn retry_activation(work: &mut Work, io: &mut Io<'_>) -> Res<CutoverResult> {
    let import = io
        .ctl
        .published()
        .import_id
        .clone()
        .ok_or_else(|| MigrationError::Failed("no import id recorded".into()))?;
    let timeout = io.ctl.env.settings.read().activation_timeout;
    match activate(work, io, &import, timeout).await {
        Activation::Confirmed => {
            let tenant = io.ctl.info.tenant.clone();
            let keys = tenant.keyspace().len();
            let since = io
                .ctl
                .gate_closed_at
                .map_or(0.0, |t| t.elapsed().as_secs_f64() * 1000.0);
            io.ctl.complete(keys, since);
            work.frozen = Some(tenant.keyspace());
            work.checkpoint = Default::default();
            tracing::info!(migration = %io.ctl.info.id, "activation confirmed on retry; cutover completed");
            Ok(CutoverResult {
                status: "completed",
                downtime_ms: since,
                keys_migrated: keys,
            })
        }
        Activation::Refused(reason) => Err(take_back(
            io,
            &format!("the target lost the import ({reason})"),
            "activation refused",
        )
        .await),
        Activation::Unconfirmed(reason) => {
            let msg = format!("activation still unconfirmed: {reason}");
            io.ctl.note_error(&msg);
            Err(MigrationError::Failed(msg))
        }
    }
}
