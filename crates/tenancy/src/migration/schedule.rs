//! Many migrations as one operation: what decides when a migration starts and how fast it may
//! ship, beside the run itself.
//!
//! - [`Slots`]: the `max_concurrent` slots, handed to the waiting migration of highest
//!   [`Priority`] first (the oldest among equals), and the bandwidth share of each slot holder
//!   (`max_bandwidth_bytes_per_sec` split by the weight of their priorities).
//! - [`admit`]: before a run takes a slot it waits for its dependencies (`AFTER`, state
//!   `waiting`) and, when it needs one, for an approval of its plan (`awaiting_approval` →
//!   `approved`); a failed or cancelled dependency fails it.
//! - [`AdmissionRequest`]: APPROVE, REJECT, PRIORITY and AFTER as requests to the migration's
//!   actor, which owns these decisions like the rest of its state.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};

use super::actor::{Control, Io, Reply, Request};
use super::api::{
    AfterRequires, Approval, MigrationConfig, MigrationError, MigrationStatus, Priority,
};
use super::state::MigrationState;
use super::status::Published;
use super::validate::ValidationReport;
use super::{Entry, MigrationManager};

// -- slots ---------------------------------------------------------------------------------

/// The concurrency slots. A std mutex (`parking_lot`): held for a few map operations, never
/// across an await.
pub(crate) struct Slots {
    state: Mutex<SlotState>,
}

struct SlotState {
    limit: usize,
    /// Migrations holding a slot, and their priority (their bandwidth weight).
    holders: HashMap<String, Priority>,
    waiting: Vec<Waiter>,
    /// Contention management's factor per priority (low, normal, high): the share of their
    /// speed running migrations of that priority keep (1.0: not slowed down).
    factors: [f64; 3],
}

/// The lowest contention factor: a migration keeps at least 1/32 of its speed (and at least
/// [`MIN_THROTTLED_RATE`]), so that it still finishes.
const MIN_FACTOR: f64 = 1.0 / 32.0;
/// Bytes per second a throttled migration may always ship.
const MIN_THROTTLED_RATE: u64 = 32 * 1024;
/// What a factor applies to for a migration that never shipped unthrottled.
const DEFAULT_FREE_RATE: f64 = 8.0 * 1024.0 * 1024.0;

fn slot(p: Priority) -> usize {
    match p {
        Priority::Low => 0,
        Priority::Normal => 1,
        Priority::High => 2,
    }
}

struct Waiter {
    id: String,
    priority: Priority,
    /// Creation order: the tie-breaker among equal priorities (first come, first served).
    seq: u64,
    grant: oneshot::Sender<SlotPermit>,
}

/// A held slot; dropping it frees the slot for the next waiting migration.
pub(crate) struct SlotPermit {
    slots: Arc<Slots>,
    id: String,
    /// False for a permit that never reached its migration (it gave up waiting): nothing to free.
    armed: bool,
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        if self.armed {
            self.slots.release(&self.id);
        }
    }
}

impl Slots {
    pub fn new(limit: usize) -> Arc<Slots> {
        Arc::new(Slots {
            state: Mutex::new(SlotState {
                limit,
                holders: HashMap::new(),
                waiting: Vec::new(),
                factors: [1.0; 3],
            }),
        })
    }

    /// Queues migration `id` for a slot; the receiver gets the permit when it is its turn.
    /// Dropping the receiver gives up the place (or the slot, if it was granted meanwhile).
    pub fn acquire(
        self: &Arc<Self>,
        id: &str,
        priority: Priority,
        seq: u64,
    ) -> oneshot::Receiver<SlotPermit> {
        let (tx, rx) = oneshot::channel();
        let mut st = self.state.lock();
        st.waiting.retain(|w| w.id != id);
        st.waiting.push(Waiter {
            id: id.to_string(),
            priority,
            seq,
            grant: tx,
        });
        self.grant(&mut st);
        rx
    }

    /// Whether a migration created now would start at once.
    pub fn has_room(&self) -> bool {
        let st = self.state.lock();
        st.holders.len() < st.limit && st.waiting.iter().all(|w| w.grant.is_closed())
    }

    /// `max_concurrent` changed: a larger limit starts waiting migrations at once; a smaller one
    /// lets running ones finish and starts none until they are under it.
    pub fn set_limit(self: &Arc<Self>, limit: usize) {
        let mut st = self.state.lock();
        st.limit = limit;
        self.grant(&mut st);
    }

    /// A migration's priority changed (its place in the queue, or its bandwidth weight).
    pub fn set_priority(&self, id: &str, priority: Priority) {
        let mut st = self.state.lock();
        if let Some(p) = st.holders.get_mut(id) {
            *p = priority;
        }
        for w in st.waiting.iter_mut().filter(|w| w.id == id) {
            w.priority = priority;
        }
    }

    /// The bytes per second slot holder `id` may ship out of `total` (0 = no limit): its weight
    /// over the weights of all holders. 0 for a migration holding no slot.
    pub fn share(&self, id: &str, total: u64) -> u64 {
        if total == 0 {
            return 0;
        }
        let st = self.state.lock();
        let Some(mine) = st.holders.get(id) else {
            return 0;
        };
        let weights: u64 = st.holders.values().map(|p| p.weight()).sum();
        // At least one byte per second: 0 would mean "no limit".
        (u128::from(total) * u128::from(mine.weight()) / u128::from(weights.max(1))).max(1) as u64
    }

    /// Where migration `id` stands in the queue (1 = next), if it waits for a slot.
    pub fn position(&self, id: &str) -> Option<usize> {
        let st = self.state.lock();
        let me = st.waiting.iter().find(|w| w.id == id)?;
        let key = (me.priority, std::cmp::Reverse(me.seq));
        Some(
            1 + st
                .waiting
                .iter()
                .filter(|w| !w.grant.is_closed() && (w.priority, std::cmp::Reverse(w.seq)) > key)
                .count(),
        )
    }

    /// The contention factor of `priority` now.
    pub fn factor(&self, priority: Priority) -> f64 {
        self.state.lock().factors[slot(priority)]
    }

    /// All three factors (low, normal, high).
    pub fn factors(&self) -> [f64; 3] {
        self.state.lock().factors
    }

    /// One step of contention management. Over the threshold: halve the factor of the lowest
    /// priority that has running migrations and is not at the minimum yet. Well under it: double
    /// the factor of the highest priority that is slowed down. Returns the change made.
    pub fn contend(&self, over: bool, under: bool) -> Option<(Priority, f64)> {
        let mut st = self.state.lock();
        if over {
            for p in Priority::ALL {
                let running = st.holders.values().any(|h| *h == p);
                let f = &mut st.factors[slot(p)];
                if running && *f > MIN_FACTOR {
                    *f = (*f / 2.0).max(MIN_FACTOR);
                    return Some((p, *f));
                }
            }
        } else if under {
            for p in Priority::ALL.iter().rev() {
                let f = &mut st.factors[slot(*p)];
                if *f < 1.0 {
                    *f = (*f * 2.0).min(1.0);
                    return Some((*p, *f));
                }
            }
        }
        None
    }

    /// Contention management switched off: every migration at full speed.
    pub fn uncontend(&self) {
        self.state.lock().factors = [1.0; 3];
    }

    fn release(self: &Arc<Self>, id: &str) {
        let mut st = self.state.lock();
        st.holders.remove(id);
        self.grant(&mut st);
    }

    /// Hands free slots to the waiting migrations of highest priority, oldest first.
    fn grant(self: &Arc<Self>, st: &mut SlotState) {
        while st.holders.len() < st.limit {
            st.waiting.retain(|w| !w.grant.is_closed());
            let best = st
                .waiting
                .iter()
                .enumerate()
                .max_by_key(|(_, w)| (w.priority, std::cmp::Reverse(w.seq)))
                .map(|(i, _)| i);
            let Some(i) = best else { break };
            let w = st.waiting.swap_remove(i);
            let permit = SlotPermit {
                slots: self.clone(),
                id: w.id.clone(),
                armed: true,
            };
            match w.grant.send(permit) {
                Ok(()) => {
                    st.holders.insert(w.id, w.priority);
                }
                // It stopped waiting just now: the permit was never held (and must not take
                // this lock again from its drop).
                Err(mut p) => p.armed = false,
            }
        }
    }
}

// -- admission -----------------------------------------------------------------------------

/// VALIDATE for the plan of a migration awaiting approval (run by the actor when it gets
/// there, so the plan describes the target as it is then).
pub(super) type Planner = Box<
    dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<ValidationReport, MigrationError>> + Send>>
        + Send
        + Sync,
>;

/// What a migration waits for before it may take a slot; owned by its actor's [`Control`].
#[derive(Default)]
pub(super) struct Admission {
    /// AFTER: each dependency's id and what it publishes.
    pub after: Vec<(String, watch::Receiver<Published>)>,
    pub needs_approval: bool,
    pub planner: Option<Planner>,
}

/// How often a waiting migration looks at its dependencies (what they publish is read without
/// waiting on them).
const DEPENDENCY_POLL: Duration = Duration::from_millis(100);

enum Dependencies {
    Ready,
    Waiting(Vec<String>),
    Broken(String),
}

fn dependencies(ctl: &Control) -> Dependencies {
    let need = ctl.env.settings.read().after_requires;
    let mut waiting = Vec::new();
    for (id, rx) in &ctl.admission.after {
        let p = rx.borrow();
        match p.state {
            MigrationState::Verified => {}
            MigrationState::Completed if need == AfterRequires::Completed => {}
            // RESUME may still complete it (see `super::restart`).
            MigrationState::Failed if p.interrupted_by_restart => waiting.push(id.clone()),
            MigrationState::Failed => {
                return Dependencies::Broken(format!(
                    "dependency {id} failed: {}",
                    p.error.as_deref().unwrap_or("no reason recorded")
                ));
            }
            MigrationState::Cancelled => {
                let why = match &p.approval {
                    Some(a) if a.decision == "rejected" => format!(
                        "was rejected by {}{}",
                        a.by.as_deref().unwrap_or("an operator"),
                        a.reason
                            .as_deref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    ),
                    _ => "was cancelled".into(),
                };
                return Dependencies::Broken(format!("dependency {id} {why}"));
            }
            _ => waiting.push(id.clone()),
        }
    }
    if waiting.is_empty() {
        Dependencies::Ready
    } else {
        Dependencies::Waiting(waiting)
    }
}

/// Waits for the dependencies, then for an approval if one is needed. Returns once the run may
/// queue for a slot (state `queued` or `approved`).
pub(super) async fn admit(io: &mut Io<'_>) -> Result<(), MigrationError> {
    loop {
        match dependencies(io.ctl) {
            Dependencies::Ready => break,
            Dependencies::Broken(msg) => {
                io.ctl.publish(|p| p.waiting_for.clear());
                tracing::warn!(migration = %io.ctl.info.id, reason = %msg, "a dependency did not complete");
                return Err(MigrationError::Failed(msg));
            }
            Dependencies::Waiting(ids) => {
                if io.ctl.state() != MigrationState::Waiting {
                    io.ctl.transition(MigrationState::Waiting, "wait")?;
                    tracing::info!(migration = %io.ctl.info.id, after = ?ids, "waiting for dependencies");
                }
                if io.ctl.published().waiting_for != ids {
                    io.ctl.publish(|p| p.waiting_for = ids);
                }
                io.sleep(DEPENDENCY_POLL).await?;
            }
        }
    }
    if io.ctl.state() == MigrationState::Waiting {
        io.ctl.publish(|p| {
            p.waiting_for.clear();
            p.state = MigrationState::Queued;
        });
    }
    let approved = io
        .ctl
        .published()
        .approval
        .as_ref()
        .is_some_and(|a| a.decision == "approved");
    if !io.ctl.admission.needs_approval || approved {
        return Ok(());
    }
    io.ctl
        .transition(MigrationState::AwaitingApproval, "await approval")?;
    if let Some(planner) = io.ctl.admission.planner.take() {
        let plan = match io.until(planner()).await? {
            Ok(report) => {
                let mut rows: Vec<(String, String)> = report
                    .checks
                    .iter()
                    .map(|c| (c.name.to_string(), c.detail.clone()))
                    .collect();
                rows.push((
                    "result".into(),
                    if report.ok() { "ok" } else { "failed" }.into(),
                ));
                rows
            }
            Err(e) => vec![("result".into(), format!("failed: {e}"))],
        };
        io.ctl.publish(|p| p.plan = plan);
        io.ctl.persist_record();
    }
    tracing::info!(migration = %io.ctl.info.id, "plan ready; awaiting approval");
    io.wait(|c| c.state() != MigrationState::AwaitingApproval)
        .await
}

/// Admission requests (TENANT.MIGRATE.APPROVE / REJECT, PRIORITY and AFTER of UPDATE).
pub(super) enum AdmissionRequest {
    Approve {
        by: String,
        reply: Reply<()>,
    },
    Reject {
        by: String,
        reason: Option<String>,
        reply: Reply<()>,
    },
    Priority {
        priority: Priority,
        reply: Reply<()>,
    },
    /// Replaces the dependencies of a migration still waiting for them (the manager has
    /// checked for cycles).
    After {
        after: Vec<(String, watch::Receiver<Published>)>,
        reply: Reply<()>,
    },
}

fn decide(ctl: &mut Control, decision: &'static str, by: String, reason: Option<String>) {
    let at = ferrite_storage::now_ms();
    tracing::info!(migration = %ctl.info.id, decision, by = %by, reason = ?reason, "approval decided");
    ctl.publish(|p| {
        p.approval = Some(Approval {
            decision,
            by: Some(by),
            at_ms: Some(at),
            reason,
        })
    });
}

/// Answers an admission request (from [`Control::handle`]).
pub(super) fn handle(ctl: &mut Control, req: AdmissionRequest) {
    let st = ctl.state();
    match req {
        AdmissionRequest::Approve { by, reply } => {
            let r = if st == MigrationState::AwaitingApproval {
                decide(ctl, "approved", by, None);
                ctl.transition(MigrationState::Approved, "approve")
            } else {
                Err(ctl.wrong_state("approve"))
            };
            let _ = reply.send(r);
        }
        AdmissionRequest::Reject { by, reason, reply } => {
            if st == MigrationState::AwaitingApproval {
                decide(ctl, "rejected", by, reason);
                // Ends like CANCEL (nothing was staged yet); the reply comes when it has.
                ctl.pending_cancel.push(reply);
                ctl.interrupt(MigrationError::Cancelled);
            } else {
                let _ = reply.send(Err(ctl.wrong_state("reject")));
            }
        }
        AdmissionRequest::Priority { priority, reply } => {
            let r = if st.is_terminal() || matches!(st, MigrationState::Completed) {
                Err(ctl.wrong_state("change the priority"))
            } else {
                ctl.cfg.priority = priority;
                ctl.env.slots.set_priority(&ctl.info.id, priority);
                ctl.publish(|p| p.priority = priority);
                ctl.persist_record();
                tracing::info!(migration = %ctl.info.id, priority = priority.name(), "priority changed");
                Ok(())
            };
            let _ = reply.send(r);
        }
        AdmissionRequest::After { after, reply } => {
            let r = if st == MigrationState::Waiting {
                ctl.admission.after = after;
                ctl.persist_record();
                Ok(())
            } else {
                Err(MigrationError::WrongState {
                    id: ctl.info.id.clone(),
                    state: st.name(),
                    op: "change AFTER (only while waiting for its dependencies)",
                })
            };
            let _ = reply.send(r);
        }
    }
}

/// The rate a migration ships at: the lowest of its own RATE, its share of the server's
/// `max_bandwidth` and what contention management leaves it (0 = no limit).
pub(super) fn effective_rate(ctl: &Control) -> u64 {
    let own = ctl.cfg.rate_bytes_per_sec;
    let total = ctl.env.settings.read().max_bandwidth;
    let share = ctl.env.slots.share(&ctl.info.id, total);
    let factor = ctl.env.slots.factor(ctl.cfg.priority);
    let free_rate = ctl.published().free_rate;
    rate_limit(own, share, factor, free_rate)
}

/// The limit of a migration (0 = none) from its RATE, its bandwidth share, its contention
/// factor and the speed it had unthrottled.
pub(super) fn rate_limit(own: u64, share: u64, factor: f64, free_rate: f64) -> u64 {
    let throttled = if factor >= 1.0 {
        0
    } else {
        let reference = if free_rate > 0.0 {
            free_rate
        } else {
            DEFAULT_FREE_RATE
        };
        ((reference * factor) as u64).max(MIN_THROTTLED_RATE)
    };
    combine_rates(combine_rates(own, share), throttled)
}

/// The lower of two limits where 0 means none.
pub(super) fn combine_rates(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}

/// Whether making `id` depend on `after` closes a cycle, given everyone's dependencies
/// (`deps`: id → what it waits for). Returns the cycle as `a → b → … → a`.
pub(super) fn find_cycle(
    id: &str,
    after: &[String],
    deps: &HashMap<String, Vec<String>>,
) -> Option<String> {
    // Depth-first from each new dependency, following what it waits for, looking for `id`.
    fn walk<'a>(
        at: &'a str,
        goal: &str,
        deps: &'a HashMap<String, Vec<String>>,
        path: &mut Vec<&'a str>,
        seen: &mut std::collections::HashSet<&'a str>,
    ) -> bool {
        path.push(at);
        if at == goal {
            return true;
        }
        if seen.insert(at) {
            for next in deps.get(at).into_iter().flatten() {
                if walk(next, goal, deps, path, seen) {
                    return true;
                }
            }
        }
        path.pop();
        false
    }
    let mut seen = std::collections::HashSet::new();
    for a in after {
        let mut path = vec![id];
        if walk(a, id, deps, &mut path, &mut seen) {
            return Some(path.join(" → "));
        }
    }
    None
}

// -- the manager's side: AFTER, approvals, priorities, groups ----------------------------------

/// A GROUP name: printable, without spaces, at most 128 bytes (it appears in replies and logs).
pub(super) fn check_group_name(name: &str) -> Result<(), MigrationError> {
    let fine = !name.is_empty() && name.len() <= 128 && name.bytes().all(|b| b.is_ascii_graphic());
    if fine {
        Ok(())
    } else {
        Err(MigrationError::Failed(format!(
            "invalid GROUP '{name}': use 1 to 128 printable characters without spaces"
        )))
    }
}

/// What one member of a group answered to an operation on the group.
pub type GroupOutcome = Vec<(String, Result<String, MigrationError>)>;

impl MigrationManager {
    /// The migrations named by AFTER, with what they publish. Unknown ones, repeats and
    /// dependencies that already failed or were cancelled are refused.
    pub(super) fn dependencies_of(
        &self,
        after: &[String],
    ) -> Result<Vec<(String, watch::Receiver<Published>)>, MigrationError> {
        let mut out: Vec<(String, watch::Receiver<Published>)> = Vec::new();
        for id in after {
            let e = self.entry(id)?;
            if out.iter().any(|(o, _)| o == id) {
                return Err(MigrationError::Failed(format!("AFTER names {id} twice")));
            }
            let st = e.status.borrow().state;
            if matches!(st, MigrationState::Failed | MigrationState::Cancelled) {
                return Err(MigrationError::Failed(format!(
                    "dependency {id} is {}: it will never complete",
                    st.name()
                )));
            }
            out.push((id.clone(), e.status.clone()));
        }
        Ok(out)
    }

    /// VALIDATE of this migration, for its plan. Holds the manager weakly: the migration's task
    /// must not keep the manager alive (its going away is how the task learns the server stops).
    pub(super) fn planner(&self, tenant: &str, target: &str, cfg: &MigrationConfig) -> Planner {
        let weak = Arc::downgrade(&self.inner);
        let (tenant, target, cfg) = (tenant.to_string(), target.to_string(), cfg.clone());
        Box::new(move || {
            let plan: Pin<Box<dyn Future<Output = _> + Send>> = Box::pin(async move {
                let inner = weak.upgrade().ok_or(MigrationError::Cancelled)?;
                let manager = MigrationManager { inner };
                manager.validate(&tenant, &target, &cfg).await
            });
            plan
        })
    }

    async fn admission(
        &self,
        id: &str,
        op: &'static str,
        make: impl FnOnce(Reply<()>) -> AdmissionRequest,
    ) -> Result<(), MigrationError> {
        self.ask(id, op, |reply| Request::Admission(make(reply)), true)
            .await
    }

    /// APPROVE: a migration awaiting approval goes on (to a slot); `by` says who decided.
    pub async fn approve(&self, id: &str, by: &str) -> Result<(), MigrationError> {
        let by = by.to_string();
        self.admission(id, "approve", |reply| AdmissionRequest::Approve {
            by,
            reply,
        })
        .await
    }

    /// REJECT: a migration awaiting approval ends as cancelled, with who and why in STATUS.
    pub async fn reject(
        &self,
        id: &str,
        by: &str,
        reason: Option<String>,
    ) -> Result<(), MigrationError> {
        let by = by.to_string();
        self.admission(id, "reject", |reply| AdmissionRequest::Reject {
            by,
            reason,
            reply,
        })
        .await
    }

    /// UPDATE PRIORITY: its place in the queue and its bandwidth weight, from now on.
    pub async fn set_priority(&self, id: &str, priority: Priority) -> Result<(), MigrationError> {
        self.admission(id, "change the priority", |reply| {
            AdmissionRequest::Priority { priority, reply }
        })
        .await
    }

    /// UPDATE AFTER: replaces what a migration still waiting for its dependencies waits for.
    /// Unknown ids and cycles are refused and change nothing.
    pub async fn set_after(&self, id: &str, after: Vec<String>) -> Result<(), MigrationError> {
        self.entry(id)?;
        let deps = self.dependencies_of(&after)?;
        {
            let graph = self.inner.after.lock();
            if let Some(cycle) = find_cycle(id, &after, &graph) {
                return Err(MigrationError::DependencyCycle(cycle));
            }
        }
        self.admission(id, "change AFTER", |reply| AdmissionRequest::After {
            after: deps,
            reply,
        })
        .await?;
        tracing::info!(migration = %id, after = ?after, "dependencies changed");
        self.inner.after.lock().insert(id.to_string(), after);
        Ok(())
    }

    /// The migrations of `group`, oldest first.
    pub fn group_members(&self, group: &str) -> Result<Vec<String>, MigrationError> {
        let mut members: Vec<(u64, String)> = self
            .inner
            .migrations
            .lock()
            .values()
            .filter(|e| e.group.as_deref() == Some(group))
            .map(|e| (e.info.seq, e.info.id.clone()))
            .collect();
        if members.is_empty() {
            return Err(MigrationError::UnknownGroup(group.to_string()));
        }
        members.sort();
        Ok(members.into_iter().map(|(_, id)| id).collect())
    }

    /// STATUS of every migration of `group`, oldest first.
    pub fn status_group(&self, group: &str) -> Result<Vec<MigrationStatus>, MigrationError> {
        let ids = self.group_members(group)?;
        let entries: Vec<Entry> = {
            let all = self.inner.migrations.lock();
            ids.iter().filter_map(|id| all.get(id).cloned()).collect()
        };
        Ok(entries.iter().map(|e| self.compose(e)).collect())
    }

    /// PAUSE, RESUME or CANCEL of every migration of `group`: each answers for itself (a
    /// member the operation does not fit says why; the others still get it).
    pub async fn for_group(
        &self,
        group: &str,
        op: GroupOp,
    ) -> Result<GroupOutcome, MigrationError> {
        let mut out = Vec::new();
        for id in self.group_members(group)? {
            let r = match op {
                GroupOp::Pause => self.pause(&id).await,
                GroupOp::Resume => self.resume(&id).await,
                GroupOp::Cancel => self.cancel(&id).await,
            };
            out.push((id, r.map(|()| "OK".to_string())));
        }
        Ok(out)
    }

    /// CUTOVER of a group, as a phased rollout: one migration at a time, oldest first, stopping
    /// at the first that does not cut over (the rest are left as they are and say so). Members
    /// already cut over are skipped.
    pub async fn cutover_group(
        &self,
        group: &str,
        force: bool,
    ) -> Result<GroupOutcome, MigrationError> {
        let mut out = Vec::new();
        let mut stopped: Option<String> = None;
        for id in self.group_members(group)? {
            if let Some(failed) = &stopped {
                out.push((
                    id,
                    Err(MigrationError::Failed(format!(
                        "not cut over: the rollout stopped at {failed}"
                    ))),
                ));
                continue;
            }
            let state = self.entry(&id)?.status.borrow().state;
            if matches!(state, MigrationState::Completed | MigrationState::Verified) {
                out.push((id, Ok(format!("already {}", state.name()))));
                continue;
            }
            match self.cutover_with(&id, force).await {
                Ok(r) => out.push((
                    id,
                    Ok(format!("{} (downtime_ms {:.3})", r.status, r.downtime_ms)),
                )),
                Err(e) => {
                    tracing::warn!(group, migration = %id, error = %e, "group cutover stopped");
                    stopped = Some(id.clone());
                    out.push((id, Err(e)));
                }
            }
        }
        Ok(out)
    }
}

/// What the source's own measurements said last (STATUS ALL shows it).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    /// p99 of command latency over the window, in seconds (None: too few commands to say).
    pub p99: Option<f64>,
    /// CPU time over wall time, as a fraction of all cores.
    pub cpu: f64,
}

impl MigrationManager {
    /// Contention management: the server's latency and CPU over the last window. Called about
    /// once a second; each call makes at most one step (see [`Slots::contend`]).
    pub fn observe_load(&self, load: Load) {
        let settings = self.settings().contention;
        *self.inner.load.lock() = Some(load);
        let slots = &self.inner.env.slots;
        if !settings.enabled {
            slots.uncontend();
            return;
        }
        let latency_over = load.p99.is_some_and(|p| p > settings.p99);
        let over = latency_over || load.cpu > settings.cpu;
        let under =
            load.p99.is_none_or(|p| p < settings.p99 * 0.7) && load.cpu < settings.cpu * 0.7;
        if let Some((priority, factor)) = slots.contend(over, under) {
            let p99_ms = load.p99.map(|p| p * 1000.0);
            if over {
                tracing::info!(priority = priority.name(), factor, p99_ms = ?p99_ms, cpu = load.cpu, "contention: slowing migrations down");
            } else {
                tracing::info!(priority = priority.name(), factor, p99_ms = ?p99_ms, cpu = load.cpu, "contention over: speeding migrations up");
            }
        }
    }

    /// The last load measured and the contention factors (low, normal, high).
    pub fn contention(&self) -> (Option<Load>, [f64; 3]) {
        (*self.inner.load.lock(), self.inner.env.slots.factors())
    }
}

/// What [`MigrationManager::for_group`] does to each member.
#[derive(Debug, Clone, Copy)]
pub enum GroupOp {
    Pause,
    Resume,
    Cancel,
}

// -- aggregate view --------------------------------------------------------------------------

/// Bytes per second sent to the target, over the last few seconds (from the running total).
#[derive(Debug, Default)]
pub(super) struct ByteRate {
    samples: std::collections::VecDeque<(tokio::time::Instant, u64)>,
}

/// How far back [`ByteRate`] looks.
const BYTE_RATE_WINDOW: Duration = Duration::from_secs(5);

impl ByteRate {
    /// Records the running total `bytes` now and returns the rate over the window.
    pub fn sample(&mut self, bytes: u64) -> f64 {
        let now = tokio::time::Instant::now();
        self.samples.push_back((now, bytes));
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > BYTE_RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        match self.samples.front() {
            Some((at, first)) if now.duration_since(*at) >= Duration::from_millis(200) => {
                bytes.saturating_sub(*first) as f64 / now.duration_since(*at).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// Totals over many migrations (STATUS ALL, STATUS GROUP, the aggregate metrics, the CLI's
/// dashboard).
#[derive(Debug, Clone, PartialEq)]
pub struct Totals {
    pub migrations: u64,
    /// How many are in each state (every state, zeros included).
    pub by_state: Vec<(MigrationState, u64)>,
    pub keys_synced: u64,
    pub keys_total: u64,
    pub bytes_synced: u64,
    /// Summed over the running migrations, as each measured them.
    pub keys_per_sec: f64,
    pub bytes_per_sec: f64,
    /// Keys the queued and running migrations have yet to copy (their lag included).
    pub keys_remaining: u64,
    /// When the queued and running migrations will have copied everything at the current total
    /// rate (Unix ms); None while nothing moves and something remains. Cutovers are the
    /// operator's and not included.
    pub estimated_completion: Option<u64>,
}

/// A value of [`Totals::fields`].
#[derive(Debug, Clone, PartialEq)]
pub enum TotalValue {
    Count(u64),
    Text(String),
}

impl Totals {
    pub fn of(all: &[MigrationStatus]) -> Totals {
        let mut t = Totals {
            migrations: all.len() as u64,
            by_state: MigrationState::ALL.iter().map(|s| (*s, 0)).collect(),
            keys_synced: 0,
            keys_total: 0,
            bytes_synced: 0,
            keys_per_sec: 0.0,
            bytes_per_sec: 0.0,
            keys_remaining: 0,
            estimated_completion: None,
        };
        let mut unfinished = false;
        for m in all {
            if let Some((_, n)) = t.by_state.iter_mut().find(|(s, _)| *s == m.state) {
                *n += 1;
            }
            t.keys_synced += m.keys_synced;
            t.keys_total += m.keys_total;
            t.bytes_synced += m.bytes_synced;
            if m.state.is_active() {
                t.keys_per_sec += m.keys_per_sec;
                t.bytes_per_sec += m.bytes_per_sec;
            }
            if m.state.is_active() || m.state.is_pending() {
                unfinished = true;
                t.keys_remaining += m.keys_total.saturating_sub(m.keys_synced) + m.lag_keys;
            }
        }
        let now = ferrite_storage::now_ms();
        t.estimated_completion = if !unfinished {
            None
        } else if t.keys_remaining == 0 {
            Some(now)
        } else if t.keys_per_sec > 0.0 {
            Some(now + (t.keys_remaining as f64 / t.keys_per_sec * 1000.0) as u64)
        } else {
            None
        };
        t
    }

    /// Name and value of each total, in reply order.
    pub fn fields(&self) -> Vec<(String, TotalValue)> {
        use TotalValue::{Count, Text};
        let mut f = vec![("migrations_total".to_string(), Count(self.migrations))];
        for (s, n) in &self.by_state {
            f.push((format!("state_{}", s.name()), Count(*n)));
        }
        f.extend([
            ("keys_synced".to_string(), Count(self.keys_synced)),
            ("keys_total".to_string(), Count(self.keys_total)),
            ("bytes_synced".to_string(), Count(self.bytes_synced)),
            ("keys_remaining".to_string(), Count(self.keys_remaining)),
            (
                "keys_per_sec".to_string(),
                Text(format!("{:.0}", self.keys_per_sec)),
            ),
            (
                "bytes_per_sec".to_string(),
                Text(format!("{:.0}", self.bytes_per_sec)),
            ),
            (
                "estimated_completion".to_string(),
                Text(
                    self.estimated_completion
                        .map(super::rfc3339_ms)
                        .unwrap_or_default(),
                ),
            ),
        ]);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(rx: &mut oneshot::Receiver<SlotPermit>) -> Option<SlotPermit> {
        rx.try_recv().ok()
    }

    #[test]
    fn slots_go_to_the_highest_priority_then_the_oldest() {
        let slots = Slots::new(1);
        let mut first = slots.acquire("m1", Priority::Low, 1);
        let held = granted(&mut first).expect("a free slot is granted at once");
        let mut low = slots.acquire("m2", Priority::Low, 2);
        let mut normal_old = slots.acquire("m3", Priority::Normal, 3);
        let mut normal_new = slots.acquire("m4", Priority::Normal, 4);
        let mut high = slots.acquire("m5", Priority::High, 5);
        assert!(granted(&mut low).is_none());
        assert_eq!(slots.position("m5"), Some(1));
        assert_eq!(slots.position("m2"), Some(4));
        drop(held);
        let h = granted(&mut high).expect("high first");
        assert!(granted(&mut normal_old).is_none());
        drop(h);
        let n = granted(&mut normal_old).expect("then the older normal");
        drop(n);
        let n = granted(&mut normal_new).expect("then the newer normal");
        // Raising the low one while it waits moves it up (nothing else waits, it is next anyway).
        slots.set_priority("m2", Priority::High);
        drop(n);
        assert!(granted(&mut low).is_some());
    }

    #[test]
    fn a_migration_that_stops_waiting_never_holds_a_slot() {
        let slots = Slots::new(1);
        let mut a = slots.acquire("a", Priority::Normal, 1);
        let held = granted(&mut a).unwrap();
        let gone = slots.acquire("b", Priority::High, 2);
        let mut c = slots.acquire("c", Priority::Normal, 3);
        drop(gone);
        drop(held);
        let held_by_c = granted(&mut c);
        assert!(held_by_c.is_some(), "the slot skipped the one that left");
        assert!(!slots.has_room());
        drop(held_by_c);
        assert!(slots.has_room());
    }

    #[test]
    fn a_granted_permit_nobody_received_frees_its_slot() {
        let slots = Slots::new(1);
        let mut a = slots.acquire("a", Priority::Normal, 1);
        let held = granted(&mut a).unwrap();
        let b = slots.acquire("b", Priority::Normal, 2);
        let mut c = slots.acquire("c", Priority::Normal, 3);
        drop(held); // granted to b, which never reads it
        drop(b);
        assert!(granted(&mut c).is_some());
    }

    #[test]
    fn limits_grow_and_shrink() {
        let slots = Slots::new(1);
        let mut a = slots.acquire("a", Priority::Normal, 1);
        let mut b = slots.acquire("b", Priority::Normal, 2);
        let pa = granted(&mut a).unwrap();
        assert!(granted(&mut b).is_none());
        slots.set_limit(2);
        let pb = granted(&mut b).expect("a larger limit starts the waiting one");
        slots.set_limit(1);
        let mut c = slots.acquire("c", Priority::High, 3);
        drop(pa);
        assert!(granted(&mut c).is_none(), "still at the smaller limit");
        drop(pb);
        assert!(granted(&mut c).is_some());
    }

    #[test]
    fn bandwidth_is_shared_by_weight_among_slot_holders() {
        let slots = Slots::new(3);
        let _h = slots.acquire("h", Priority::High, 1);
        let _l = slots.acquire("l", Priority::Low, 2);
        assert_eq!(slots.share("h", 0), 0, "no total, no limit");
        assert_eq!(slots.share("h", 500), 400);
        assert_eq!(slots.share("l", 500), 100);
        assert_eq!(slots.share("nobody", 500), 0);
        let _n = slots.acquire("n", Priority::Normal, 3);
        assert_eq!(slots.share("n", 700), 200);
        slots.set_priority("l", Priority::High);
        assert_eq!(slots.share("l", 1000), 400);
        assert_eq!(
            slots.share("l", 1),
            1,
            "never 0, which would mean unlimited"
        );
    }

    #[test]
    fn contention_slows_the_lowest_priority_first_and_frees_the_highest_first() {
        let slots = Slots::new(3);
        let _h = slots.acquire("h", Priority::High, 1);
        let _l = slots.acquire("l", Priority::Low, 2);
        // Over the threshold: low goes down to the minimum before high is touched; normal has
        // nothing running and is left alone.
        for want in [0.5, 0.25, 0.125, 0.0625, MIN_FACTOR] {
            assert_eq!(slots.contend(true, false), Some((Priority::Low, want)));
        }
        assert_eq!(slots.contend(true, false), Some((Priority::High, 0.5)));
        assert_eq!(slots.factors(), [MIN_FACTOR, 1.0, 0.5]);
        // Neither over nor well under: nothing changes.
        assert_eq!(slots.contend(false, false), None);
        // Well under: high recovers first, then low step by step.
        assert_eq!(slots.contend(false, true), Some((Priority::High, 1.0)));
        assert_eq!(slots.contend(false, true), Some((Priority::Low, 0.0625)));
        for _ in 0..4 {
            slots.contend(false, true);
        }
        assert_eq!(slots.factors(), [1.0; 3]);
        assert_eq!(slots.contend(false, true), None);
        slots.contend(true, false);
        slots.uncontend();
        assert_eq!(slots.factors(), [1.0; 3]);
    }

    #[test]
    fn a_throttled_migration_keeps_a_share_of_its_free_speed() {
        assert_eq!(rate_limit(0, 0, 1.0, 5e6), 0, "not throttled: no limit");
        assert_eq!(rate_limit(0, 0, 0.5, 4e6), 2_000_000);
        assert_eq!(
            rate_limit(1_000_000, 0, 0.5, 4e6),
            1_000_000,
            "RATE is lower"
        );
        assert_eq!(
            rate_limit(0, 0, MIN_FACTOR, 1e5),
            MIN_THROTTLED_RATE,
            "the floor"
        );
        assert_eq!(
            rate_limit(0, 0, 0.5, 0.0),
            (DEFAULT_FREE_RATE * 0.5) as u64,
            "never measured unthrottled"
        );
    }

    #[test]
    fn rates_combine_to_the_lower_limit() {
        assert_eq!(combine_rates(0, 0), 0);
        assert_eq!(combine_rates(0, 5), 5);
        assert_eq!(combine_rates(7, 0), 7);
        assert_eq!(combine_rates(7, 5), 5);
    }

    #[test]
    fn cycles_are_found_with_their_path() {
        let mut deps = HashMap::new();
        deps.insert("b".to_string(), vec!["a".to_string()]);
        deps.insert("c".to_string(), vec!["b".to_string()]);
        assert_eq!(
            find_cycle("a", &["c".into()], &deps).as_deref(),
            Some("a → c → b → a")
        );
        assert_eq!(
            find_cycle("a", &["a".into()], &deps).as_deref(),
            Some("a → a")
        );
        assert_eq!(find_cycle("d", &["c".into()], &deps), None);
    }
}
