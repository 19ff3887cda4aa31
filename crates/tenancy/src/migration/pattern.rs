//! `MODE incremental`: the cutover of one key pattern (TENANT.MIGRATE.CUTOVER <id> PATTERN).
//!
//! The migration copies and live-syncs the whole tenant as in live mode; what moves one pattern
//! at a time is who serves the keys. A pattern's cutover keeps the guarantees of a cutover,
//! scoped to the pattern's keys ([`crate::patterns::PatternSplit`] says which pattern owns a
//! key):
//!
//! 1. **Gate**: the pattern becomes `gated` (its writes wait at admission, then `-TRYAGAIN`;
//!    reads and every other pattern go on), then the tenant's write gate is closed and opened
//!    once, a barrier that waits for the writes admitted before (they may be writing the
//!    pattern's keys).
//! 2. **Drain**: every captured change is shipped and acknowledged.
//! 3. **Confirm**: the pattern's key count and digest, computed over its keys on both servers,
//!    must match (the drain is repeated a few times if a read expired a key meanwhile).
//! 4. **Hand over**: the pattern becomes `handing_over` (its reads wait too), the target
//!    activates it (it serves those keys from now on and records their digest for VERIFY), then
//!    the source marks it `moved`: commands on its keys are redirected. If the activation cannot
//!    be confirmed the pattern stays unwritable on both (never writable on both) until the same
//!    CUTOVER PATTERN confirms it.
//!
//! The last pattern's cutover is the whole tenant's: the source records the tenant `moved`
//! (durably) before the target activates the last pattern and then the import, exactly as a live
//! cutover hands over. Before any pattern is handed over, CANCEL leaves the source as it was;
//! afterwards it is refused (the target's clients may have written the moved patterns).

use std::time::Duration;

use tokio::time::Instant;

use super::actor::{Io, Work};
use super::api::{CutoverResult, MigrationError, MigrationSettings};
use super::cutover::{Activation, abort, activate, lag_allows, take_back, wait_acked};
use super::source::{drain, send_all};
use super::state::{MigrationPhase, MigrationState};
use super::target::TargetError;
use crate::patterns::{Owner, PatternSplit};
use crate::tenant::Tenant;

type Res<T> = Result<T, MigrationError>;

/// Changed keys taken per drain step; a step that takes fewer has emptied change capture.
const DRAIN_STEP: usize = 100_000;
/// A pattern's confirmation compares the keys living at least this long (ms) on both servers:
/// a key that expires sooner may already be gone from one of them when it computes its digest
/// (and it is about to be gone from both anyway).
const CONFIRM_EXPIRY_MARGIN_MS: u64 = 5_000;
/// A confirmation that finds the pattern's digests differ drains again this many times.
const CONFIRM_ATTEMPTS: usize = 5;

/// Installs `split` on the tenant, or removes it when it has nothing to say (every pattern
/// served here: the tenant is as before the migration).
fn install(tenant: &Tenant, split: &PatternSplit) {
    tenant.set_split(split.is_split().then(|| split.clone()));
}

/// The cutover of pattern `index` (see the module docs). `Ok` with status `pattern_moved`, or
/// `completed` for the last pattern (the run then ends).
pub(super) async fn cutover(
    work: &mut Work,
    io: &mut Io<'_>,
    index: usize,
    force: bool,
) -> Res<CutoverResult> {
    let settings = io.ctl.env.settings.read().clone();
    let tenant = io.ctl.info.tenant.clone();
    let Some(before) = io.ctl.info.split() else {
        return Err(MigrationError::Patterns(
            "the migration has no patterns".into(),
        ));
    };
    if index >= before.patterns().len() || before.owners()[index] == Owner::There {
        return Err(MigrationError::Patterns(format!(
            "pattern '{}' has already moved",
            before.name(index)
        )));
    }
    if !force {
        lag_allows(&io.ctl.info, &io.ctl.published(), settings.cutover_max_lag)?;
    }
    if !io.ctl.links_up() {
        return Err(MigrationError::Failed(
            "a link to the target is down (reconnecting); the source still owns the pattern".into(),
        ));
    }
    io.ctl
        .transition(MigrationState::CuttingOver, "cut over a pattern")?;
    io.ctl.set_phase(MigrationPhase::Cutover);
    // What the split goes back to when the cutover does not hand the pattern over.
    let base = before.with(index, Owner::Here);
    let last = before
        .owners()
        .iter()
        .enumerate()
        .all(|(i, o)| i == index || *o == Owner::There);
    let name = before.name(index);
    let gated_at = Instant::now();
    // A cutover whose activation could not be confirmed left the pattern `handing_over`: its
    // data was confirmed then and has not changed since (nothing could write it).
    let keys = if before.owners()[index] == Owner::Handing {
        None
    } else {
        match gate_and_confirm(work, io, &base, index, &settings).await {
            Ok(keys) => Some(keys),
            Err(e) => {
                install(&tenant, &base);
                return Err(unwind(io, e));
            }
        }
    };
    // (Not after an unconfirmed activation: the target may serve the pattern already, so
    // there is no going back to `here`.)
    if keys.is_some()
        && let Err(e) = io.breakpoint("cutover:after_confirm").await
    {
        install(&tenant, &base);
        return Err(unwind(io, e));
    }
    install(&tenant, &base.with(index, Owner::Handing));
    if last {
        return complete(work, io, &base, index, keys, gated_at, &settings).await;
    }
    // Durable before the target may serve the pattern: a restart of this server keeps
    // redirecting its keys and never serves them as writable again.
    if let Err(e) = io.ctl.persist_record_durably() {
        install(&tenant, &base);
        return Err(unwind(io, e));
    }
    let import = io.ctl.published().import_id.clone().unwrap_or_default();
    let _ = io.breakpoint("cutover:before_activate").await;
    match activate_pattern(work, io, &import, &base, index, settings.activation_timeout).await {
        Ok(there) => {
            install(&tenant, &base.with(index, Owner::There));
            io.ctl.publish(|p| p.state = MigrationState::LiveSync);
            io.ctl.persist_record();
            io.ctl.set_phase(MigrationPhase::LiveSync);
            let downtime_ms = gated_at.elapsed().as_secs_f64() * 1000.0;
            tracing::info!(migration = %io.ctl.info.id, pattern = %name, keys = there.0, downtime_ms, "pattern cut over: its keys are served by the target");
            Ok(CutoverResult {
                status: "pattern_moved",
                downtime_ms,
                keys_migrated: keys.unwrap_or(there.0),
            })
        }
        Err(NotActivated::Refused(reason)) => {
            // The target says the import is gone: it does not serve the pattern.
            install(&tenant, &base);
            Err(abort(
                io,
                &format!("the target refused to take pattern '{name}' over: {reason}"),
            ))
        }
        Err(NotActivated::Unconfirmed(reason)) => {
            let msg = format!(
                "pattern '{name}' handed over but the target did not confirm its activation ({reason}); its keys wait (TRYAGAIN) until TENANT.MIGRATE.CUTOVER {} PATTERN {name} succeeds",
                io.ctl.info.id
            );
            io.ctl.publish(|p| p.state = MigrationState::LiveSync);
            io.ctl.set_phase(MigrationPhase::LiveSync);
            io.ctl.note_error(&msg);
            Err(MigrationError::Failed(msg))
        }
    }
}

/// An error before the hand-over: back to live sync (or stopped, for CANCEL and failures).
fn unwind(io: &mut Io<'_>, e: MigrationError) -> MigrationError {
    match e {
        MigrationError::Cancelled => MigrationError::Cancelled,
        other if io.ctl.state() == MigrationState::CuttingOver => {
            let reason = match other {
                MigrationError::Failed(r) => r,
                o => o.to_string(),
            };
            abort(io, &reason)
        }
        other => other,
    }
}

/// Gates the pattern, drains, and has the target confirm the pattern's key count and digest.
/// Returns the confirmed key count.
async fn gate_and_confirm(
    work: &mut Work,
    io: &mut Io<'_>,
    base: &PatternSplit,
    index: usize,
    settings: &MigrationSettings,
) -> Res<u64> {
    let tenant = io.ctl.info.tenant.clone();
    io.breakpoint("cutover:before_gate").await?;
    tenant.set_split(Some(base.with(index, Owner::Gated)));
    // The barrier: writes admitted before the pattern was gated hold a permit of the tenant's
    // gate; closing it waits for them, and it opens again at once (other patterns' writes
    // wait only for those).
    let barrier = io.until(tenant.gate().close_and_drain()).await;
    tenant.gate().open();
    barrier?;
    io.breakpoint("cutover:after_gate").await?;
    let gated = base.with(index, Owner::Gated);
    let import = io.ctl.published().import_id.clone().unwrap_or_default();
    let ks = tenant.keyspace();
    let budget = settings.redirect_timeout;
    let mut last = String::from("no attempt");
    for _ in 0..CONFIRM_ATTEMPTS {
        while drain(work, io, DRAIN_STEP).await? >= DRAIN_STEP {}
        send_all(work, io).await?;
        wait_acked(io, budget).await?;
        // Both sides leave out the keys that expire within CONFIRM_EXPIRY_MARGIN: either may
        // have expired them by the time it computes (its own clock runs on).
        let alive_after = ferrite_storage::now_ms() + CONFIRM_EXPIRY_MARGIN_MS;
        let (keys, digest) = {
            let db = ks.lock_async().await;
            gated.digest_of(index, &db, alive_after)
        };
        io.breakpoint("cutover:before_confirm").await?;
        let answer = io
            .until(tokio::time::timeout(
                budget,
                work.target
                    .pattern_prepare(&import, gated.patterns(), index, alive_after),
            ))
            .await?;
        match answer {
            Ok(Ok(p)) if p.keys == keys && p.digest == digest => return Ok(keys),
            Ok(Ok(p)) => {
                last = format!(
                    "the target does not match the source for pattern '{}' (source {keys} keys, digest {digest:016x}; target {} keys, digest {:016x})",
                    gated.name(index),
                    p.keys,
                    p.digest
                );
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

/// Asks the target to serve pattern `index`, retrying what may succeed later until `timeout`.
/// `Ok`: the pattern's key count and digest at activation.
async fn activate_pattern(
    work: &mut Work,
    io: &mut Io<'_>,
    import: &str,
    split: &PatternSplit,
    index: usize,
    timeout: Duration,
) -> Result<(u64, u64), NotActivated> {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = io
            .until(tokio::time::timeout(
                left,
                work.target
                    .pattern_activate(import, split.patterns(), index),
            ))
            .await;
        let err = match attempt {
            Ok(Ok(Ok(p))) => return Ok((p.keys, p.digest)),
            Ok(Ok(Err(TargetError::ImportGone(msg)))) => {
                return Err(NotActivated::Refused(msg));
            }
            Ok(Ok(Err(e))) => e.to_string(),
            Ok(Err(_)) => format!("no answer within {} ms", timeout.as_millis()),
            Err(e) => return Err(NotActivated::Unconfirmed(e.to_string())),
        };
        if Instant::now() + backoff >= deadline {
            return Err(NotActivated::Unconfirmed(err));
        }
        if let Err(e) = io.sleep(backoff).await {
            return Err(NotActivated::Unconfirmed(e.to_string()));
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// How a pattern's activation failed.
enum NotActivated {
    /// The target proved it does not serve the pattern (the import is gone).
    Refused(String),
    /// No confirmation within the activation timeout.
    Unconfirmed(String),
}

/// The last pattern: the whole tenant's hand-over, as a live cutover does it (see
/// [`super::cutover`]): recorded `moved` here before the target activates.
async fn complete(
    work: &mut Work,
    io: &mut Io<'_>,
    base: &PatternSplit,
    index: usize,
    keys: Option<u64>,
    gated_at: Instant,
    settings: &MigrationSettings,
) -> Res<CutoverResult> {
    let tenant = io.ctl.info.tenant.clone();
    let import = io.ctl.published().import_id.clone().unwrap_or_default();
    // From the hand-over on, the source sends every client to the target before the target
    // serves the last pattern: the target must make them wait for it rather than send them
    // back (they would bounce between the two).
    let budget = settings.redirect_timeout;
    let held = io
        .until(tokio::time::timeout(
            budget,
            work.target
                .pattern_hold(&import, base.patterns(), index, true),
        ))
        .await;
    match held {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => {
            install(&tenant, base);
            return Err(abort(
                io,
                &format!("the target refused to hold the last pattern: {e}"),
            ));
        }
        Ok(Err(_)) => {
            install(&tenant, base);
            return Err(abort(io, "the target did not answer before the hand-over"));
        }
        Err(e) => {
            install(&tenant, base);
            return Err(unwind(io, e));
        }
    }
    if let Err(e) = super::cutover::record_hand_over(io, &tenant).await {
        install(&tenant, base);
        // Best effort: the target sends the pattern's clients back here again.
        let _ = tokio::time::timeout(
            budget,
            work.target
                .pattern_hold(&import, base.patterns(), index, false),
        )
        .await;
        return Err(abort(
            io,
            &format!("the hand-over could not be recorded: {e}"),
        ));
    }
    super::cutover::release_after_hand_over(work, io, &tenant).await;
    let _ = io.breakpoint("cutover:before_activate").await;
    // The last pattern first (the target records its digest for VERIFY), then the import.
    let pattern =
        activate_pattern(work, io, &import, base, index, settings.activation_timeout).await;
    let activation = match pattern {
        Ok(_) => activate(work, io, &import, settings.activation_timeout).await,
        Err(NotActivated::Refused(r)) => Activation::Refused(r),
        Err(NotActivated::Unconfirmed(r)) => Activation::Unconfirmed(r),
    };
    match activation {
        Activation::Confirmed => {}
        Activation::Refused(reason) => {
            let e = take_back(io, &reason, "cutover failed").await;
            install(&tenant, base);
            return Err(e);
        }
        Activation::Unconfirmed(reason) => {
            let msg = format!(
                "cutover incomplete: the source handed the tenant over but the target did not confirm activation ({reason}); clients get MOVED/TRYAGAIN until TENANT.MIGRATE.CUTOVER {} RETRY succeeds",
                io.ctl.info.id
            );
            io.ctl.fail(&msg);
            return Err(MigrationError::Failed(msg));
        }
    }
    // The tenant answers MOVED as a whole now; the split has nothing left to say here.
    tenant.set_split(None);
    let downtime_ms = gated_at.elapsed().as_secs_f64() * 1000.0;
    let total = tenant.keyspace().len();
    io.ctl.complete(total, downtime_ms);
    work.frozen = Some(tenant.keyspace());
    work.checkpoint = Default::default();
    tracing::info!(migration = %io.ctl.info.id, tenant = %tenant.id(), pattern = %base.name(index), downtime_ms, "last pattern cut over; migration completed");
    Ok(CutoverResult {
        status: "completed",
        downtime_ms,
        keys_migrated: keys.unwrap_or(0),
    })
}
