//! Cutover: gate the tenant's writes, drain, confirm, hand over, activate, reopen. And what
//! follows: the frozen copy's retention, retrying an unconfirmed activation, and test
//! breakpoints.
//!
//! Ordering is what keeps a tenant writable on at most one server: the source marks the tenant
//! `moved` *before* it asks the target to activate. If the activation cannot be confirmed, the
//! tenant stays unwritable everywhere (clients bounce between MOVED and TRYAGAIN) until CUTOVER
//! RETRY confirms it, or CANCEL gets the target to drop the import (then the source takes it
//! back). It is never taken back while the target might be serving it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_client::{ClientError, Connection, value};

use super::source::{Res, connect_options, drain, fail, release_checkpoint};
use super::stream::Streams;
use super::{
    CutoverResult, Migration, MigrationError, MigrationManager, MigrationPhase, MigrationState,
};
use crate::tenant::TenantState;

/// Steps where a test can park the coordinator (only with `fault_injection` enabled), to inject
/// a real fault (cut the network, kill the target) at that exact moment.
pub const BREAKPOINTS: &[&str] = &[
    "cutover:before_gate",
    "cutover:after_gate",
    "cutover:before_confirm",
    "cutover:after_confirm",
    "cutover:before_activate",
];

/// Parks at `point` if a test armed it, until released (or for at most 60 s).
pub(super) async fn breakpoint(mgr: &MigrationManager, m: &Migration, point: &'static str) {
    if !mgr.settings().fault_injection {
        return;
    }
    if !m.breakpoints.lock().remove(point) {
        return;
    }
    tracing::warn!(migration = %m.id, point, "parked at a fault-injection breakpoint");
    // Register for the release before announcing where we are, so a release sent right after
    // the test sees us parked cannot be missed.
    let release = m.release.notified();
    tokio::pin!(release);
    release.as_mut().enable();
    *m.parked.lock() = Some(point);
    let _ = tokio::time::timeout(Duration::from_secs(60), release).await;
    *m.parked.lock() = None;
}

pub(super) fn fail_migration(m: &Migration, msg: &str) {
    let mut p = m.progress.lock();
    p.state = MigrationState::Failed;
    p.phase = MigrationPhase::Stopped;
    p.error = Some(msg.to_string());
    p.finished = Some(Instant::now());
}

pub(super) fn complete(m: &Migration, keys: u64, downtime_ms: f64) {
    let mut p = m.progress.lock();
    p.state = MigrationState::Completed;
    p.phase = MigrationPhase::Done;
    p.completed_at = Some(ferrite_storage::now_ms());
    p.finished = Some(Instant::now());
    p.downtime_ms = Some(downtime_ms);
    p.keys_migrated = keys;
    p.error = None;
}

/// The cutover. On any failure before the hand-over the source keeps the tenant (gate reopened,
/// live sync goes on when the streams still work).
pub(super) async fn cutover(
    mgr: &MigrationManager,
    m: &Arc<Migration>,
    streams: &mut Streams,
    control: &mut Connection,
    import_id: &str,
    force: bool,
) -> Res<CutoverResult> {
    let settings = mgr.settings();
    let ks = m.tenant.keyspace();
    // Changes not yet read plus batches not yet acknowledged: the same lag STATUS reports.
    let lag = ks.lock_async().await.tracking_lag().map_or(0, |l| l.keys)
        + super::stream::in_flight(&streams.states).keys;
    if lag > settings.cutover_max_lag && !force {
        return Err(MigrationError::LagTooHigh {
            lag,
            max: settings.cutover_max_lag,
        });
    }
    m.transition(MigrationState::CuttingOver, "cut over")?;
    m.set_phase(MigrationPhase::Cutover);
    breakpoint(mgr, m, "cutover:before_gate").await;
    let gate = m.tenant.gate();
    // In fast mode the gate has been closed since the copy began: that is the downtime.
    let t0 = match m.mode {
        super::MigrationMode::Fast => m.gate_closed_at.lock().unwrap_or_else(Instant::now),
        _ => Instant::now(),
    };
    *m.gate_closed_at.lock() = Some(t0);
    gate.close_and_drain().await;
    breakpoint(mgr, m, "cutover:after_gate").await;

    // Drain and confirm: the target must hold exactly what the source holds.
    let confirmed = confirm(mgr, m, streams, control, import_id).await;
    let keys = match confirmed {
        Ok(keys) => keys,
        Err(reason) => {
            // Nothing was handed over: the source keeps the tenant.
            gate.open();
            let msg = format!("cutover aborted, the source still owns the tenant: {reason}");
            tracing::warn!(migration = %m.id, error = %reason, "cutover aborted");
            if streams.error().is_some() {
                fail_migration(m, &msg);
            } else {
                m.set_phase(MigrationPhase::LiveSync);
                m.transition(MigrationState::LiveSync, "resume after a refused cutover")?;
                m.progress.lock().error = Some(msg.clone());
            }
            return Err(fail(msg));
        }
    };
    breakpoint(mgr, m, "cutover:after_confirm").await;
    // Last chance to keep the tenant: if the target stopped answering since it confirmed, do
    // not hand over (that would leave the tenant unwritable until the target comes back).
    let alive = tokio::time::timeout(Duration::from_millis(500), control.cmd(&["PING"])).await;
    if !matches!(alive, Ok(Ok(_))) {
        gate.open();
        let msg = "cutover aborted, the source still owns the tenant: the target stopped answering after it confirmed".to_string();
        fail_migration(m, &msg);
        return Err(fail(msg));
    }

    // Hand over: from here the source answers MOVED; then the target is activated. The
    // hand-over is durable first: a source that restarts never serves the tenant again.
    m.tenant.set_moved(&m.redirect);
    if let Err(e) = mgr.inner.registry.persist(&m.tenant) {
        m.tenant.set_state(TenantState::Active);
        gate.open();
        let msg = format!("cutover aborted, the source still owns the tenant: {e}");
        fail_migration(m, &msg);
        return Err(fail(msg));
    }
    ks.lock_async().await.stop_tracking();
    breakpoint(mgr, m, "cutover:before_activate").await;
    match activate(mgr, m, control, import_id, settings.activation_timeout).await {
        Ok(()) => {}
        Err(Activation::Refused(reason)) => {
            // The target says the import is gone or aborted, so it is not serving the tenant:
            // taking the tenant back is safe (once that is durable; until then it stays moved).
            m.tenant.set_state(TenantState::Active);
            if let Err(e) = mgr.inner.registry.persist(&m.tenant) {
                m.tenant.set_moved(&m.redirect);
                gate.open();
                let msg = format!("cutover failed and the tenant could not be taken back: {e}");
                fail_migration(m, &msg);
                return Err(fail(msg));
            }
            ks.lock_async().await.start_tracking();
            gate.open();
            let msg = format!("cutover failed, the source still owns the tenant: {reason}");
            fail_migration(m, &msg);
            return Err(fail(msg));
        }
        Err(Activation::Unconfirmed(reason)) => {
            gate.open();
            let msg = format!(
                "cutover incomplete: the source handed the tenant over but the target did not confirm activation ({reason}); clients get MOVED/TRYAGAIN until TENANT.MIGRATE.CUTOVER {} RETRY succeeds (or CANCEL makes the target drop it and the source take it back)",
                m.id
            );
            fail_migration(m, &msg);
            return Err(fail(msg));
        }
    }
    gate.open();
    let downtime_ms = t0.elapsed().as_secs_f64() * 1000.0;
    complete(m, keys, downtime_ms);
    release_checkpoint(m);
    tracing::info!(migration = %m.id, tenant = %m.tenant.id(), keys, downtime_ms, "cutover completed");
    schedule_release(mgr, m.clone());
    Ok(CutoverResult {
        status: "completed",
        downtime_ms,
        keys_migrated: keys,
    })
}

/// Drains every change, waits for acknowledgements and compares key count and digest with the
/// target. Returns the key count, or why the target could not confirm.
async fn confirm(
    mgr: &MigrationManager,
    m: &Arc<Migration>,
    streams: &mut Streams,
    control: &mut Connection,
    import_id: &str,
) -> Result<u64, String> {
    let ks = m.tenant.keyspace();
    let mut last = String::from("no attempt");
    for _attempt in 0..5 {
        loop {
            match drain(m, streams, 100_000).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        if let Err(e) = streams.wait_acked(Duration::from_secs(10)).await {
            return Err(e.to_string());
        }
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
        breakpoint(mgr, m, "cutover:before_confirm").await;
        match control.cmd(&["TENANT.IMPORT.PREPARE", import_id]).await {
            Ok(reply) => {
                let pairs = value::as_pairs(&reply).unwrap_or_default();
                let tkeys = value::field_int(&pairs, "keys").unwrap_or(-1);
                let tdigest = value::field_str(&pairs, "digest").unwrap_or_default();
                if tkeys == keys as i64 && tdigest == format!("{digest:016x}") {
                    return Ok(keys);
                }
                last = format!(
                    "target does not match the source (source {keys} keys, digest {digest:016x}; target {tkeys} keys, digest {tdigest})"
                );
            }
            Err(e) if e.is_connection_error() => {
                // One reconnect attempt: the data streams are healthy, the control link broke.
                match Connection::connect(connect_options(mgr, m)).await {
                    Ok(c) => {
                        *control = c;
                        last = format!("target connection dropped during confirmation: {e}");
                    }
                    Err(e2) => return Err(format!("target did not confirm: {e2}")),
                }
            }
            Err(e) => return Err(format!("target did not confirm: {e}")),
        }
    }
    Err(last)
}

/// How an activation attempt ended when it did not succeed.
pub(super) enum Activation {
    /// The target refused in a way that proves the tenant is not active there.
    Refused(String),
    /// The target could not be reached (or answered oddly) for the whole timeout.
    Unconfirmed(String),
}

pub(super) async fn activate(
    mgr: &MigrationManager,
    m: &Migration,
    control: &mut Connection,
    import_id: &str,
    timeout: Duration,
) -> Result<(), Activation> {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(20);
    let mut reconnect = false;
    loop {
        if reconnect {
            match Connection::connect(connect_options(mgr, m)).await {
                Ok(c) => *control = c,
                Err(e) => {
                    if Instant::now() >= deadline {
                        return Err(Activation::Unconfirmed(e.to_string()));
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
                return Err(Activation::Refused(msg));
            }
            Err(e) => {
                if Instant::now() >= deadline {
                    return Err(Activation::Unconfirmed(e.to_string()));
                }
                reconnect = e.is_connection_error();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// CUTOVER RETRY after an unconfirmed activation: asks the target again.
pub(super) async fn retry_activation(
    mgr: &MigrationManager,
    m: &Arc<Migration>,
) -> Res<CutoverResult> {
    let import_id = m
        .progress
        .lock()
        .import_id
        .clone()
        .ok_or_else(|| fail("no import id recorded"))?;
    let mut control = Connection::connect(connect_options(mgr, m))
        .await
        .map_err(|e| fail(format!("the target is still unreachable: {e}")))?;
    let timeout = mgr.settings().activation_timeout;
    match activate(mgr, m, &mut control, &import_id, timeout).await {
        Ok(()) => {
            let keys = m.tenant.keyspace().len();
            let since = m
                .gate_closed_at
                .lock()
                .map_or(0.0, |t| t.elapsed().as_secs_f64() * 1000.0);
            complete(m, keys, since);
            release_checkpoint(m);
            schedule_release(mgr, m.clone());
            tracing::info!(migration = %m.id, "activation confirmed on retry; cutover completed");
            Ok(CutoverResult {
                status: "completed",
                downtime_ms: since,
                keys_migrated: keys,
            })
        }
        Err(Activation::Refused(reason)) => {
            m.tenant.set_state(TenantState::Active);
            if let Err(e) = mgr.inner.registry.persist(&m.tenant) {
                m.tenant.set_moved(&m.redirect);
                let msg = format!(
                    "the target lost the import but the tenant could not be taken back: {e}"
                );
                fail_migration(m, &msg);
                return Err(fail(msg));
            }
            m.tenant.keyspace().lock_async().await.start_tracking();
            let msg =
                format!("the target lost the import ({reason}); the source owns the tenant again");
            fail_migration(m, &msg);
            Err(fail(msg))
        }
        Err(Activation::Unconfirmed(reason)) => {
            let msg = format!("activation still unconfirmed: {reason}");
            m.progress.lock().error = Some(msg.clone());
            Err(fail(msg))
        }
    }
}

/// Frees the frozen copy after the retention period; the MOVED answer stays. The period is
/// re-read while waiting, so `CONFIG SET tenancy.migration.retention_secs` applies to copies
/// already kept too.
pub(super) fn schedule_release(mgr: &MigrationManager, m: Arc<Migration>) {
    let frozen = m.tenant.keyspace();
    let mgr = mgr.clone();
    let since = Instant::now();
    tokio::spawn(async move {
        loop {
            let retention = mgr.settings().retention;
            let waited = since.elapsed();
            if waited >= retention {
                break;
            }
            tokio::time::sleep((retention - waited).min(Duration::from_secs(1))).await;
        }
        if m.tenant.state() == TenantState::Moved && Arc::ptr_eq(&m.tenant.keyspace(), &frozen) {
            let old = m
                .tenant
                .replace_keyspace(Arc::new(ferrite_storage::Keyspace::new()));
            drop(frozen);
            tokio::task::spawn_blocking(move || drop(old));
            m.frozen_released
                .store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(migration = %m.id, tenant = %m.tenant.id(), "frozen copy released after retention");
        }
    });
}
