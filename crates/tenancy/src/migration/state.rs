//! The lifecycle of a migration: states and the transitions allowed between them.
//!
//! ```text
//! (queued ─▶ waiting ─▶ queued) ─▶ (awaiting_approval ─▶ approved) ─▶ syncing: AFTER and
//!                                                                  APPROVAL, when asked for
//! queued ─▶ syncing ─▶ live_sync ⇄ paused
//!              │  ▲        │   ▲
//!              ▼  │        ▼   │ (cutover refused or rolled back)
//!            paused     cutting_over ─▶ completed ─▶ verified
//! any running state ─▶ failed ─▶ syncing (retry)      any state before cutover ─▶ cancelled
//!
//! continuous syncs, TENANT.MIGRATE.STOP:
//! live_sync ─▶ stopping ─▶ stopped          (GRACEFUL; a refused stop goes back to live_sync)
//! queued | syncing | live_sync | paused | failed ─▶ stopped          (IMMEDIATE)
//!
//! the old source as a backup after cutover, TENANT.MIGRATE.ROLLBACK:
//! completed | verified ─▶ rolled_back   (the new owner handed the tenant back)
//! ```
//! Every change goes through [`MigrationState::can_become`], so an operation that does not fit
//! the current state is refused with an error naming the state.

/// Where a migration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MigrationState {
    /// Waiting for a slot under `max_concurrent`.
    Queued,
    /// Waiting for its dependencies (`AFTER`) to complete; STATUS `waiting_for` names them.
    Waiting,
    /// Its plan (VALIDATE's report) is ready; waiting for APPROVE or REJECT.
    AwaitingApproval,
    /// Approved; waiting for a slot under `max_concurrent`.
    Approved,
    /// Copying the snapshot.
    Syncing,
    /// Snapshot done; shipping changes as they happen.
    LiveSync,
    /// Not shipping (changes are still captured).
    Paused,
    /// Writes gated, final drain, hand-over in progress.
    CuttingOver,
    /// The target owns the tenant.
    Completed,
    /// VERIFY found both sides equal.
    Verified,
    /// Stopped by an error (see `error`); the source still owns the tenant.
    Failed,
    /// Stopped by CANCEL; the source owns the tenant, the target holds nothing.
    Cancelled,
    /// STOP GRACEFUL of a continuous sync: bringing the target to one confirmed point.
    Stopping,
    /// A continuous sync ended by STOP: the source owns the tenant, untouched; the target keeps
    /// its copy as a stopped import (STATUS says as of when, or what it may miss).
    Stopped,
    /// TENANT.MIGRATE.ROLLBACK: the new owner handed the tenant back; this server (the old
    /// source) owns it again, with every write the new owner acknowledged.
    RolledBack,
}

impl MigrationState {
    pub fn name(self) -> &'static str {
        match self {
            MigrationState::Queued => "queued",
            MigrationState::Waiting => "waiting",
            MigrationState::AwaitingApproval => "awaiting_approval",
            MigrationState::Approved => "approved",
            MigrationState::Syncing => "syncing",
            MigrationState::LiveSync => "live_sync",
            MigrationState::Paused => "paused",
            MigrationState::CuttingOver => "cutting_over",
            MigrationState::Completed => "completed",
            MigrationState::Verified => "verified",
            MigrationState::Failed => "failed",
            MigrationState::Cancelled => "cancelled",
            MigrationState::Stopping => "stopping",
            MigrationState::Stopped => "stopped",
            MigrationState::RolledBack => "rolled_back",
        }
    }

    /// Whether the transition `self → next` is allowed.
    pub fn can_become(self, next: MigrationState) -> bool {
        use MigrationState::*;
        matches!(
            (self, next),
            (
                Queued,
                Syncing | Waiting | AwaitingApproval | Cancelled | Failed | Stopped
            ) | (Waiting, Queued | Cancelled | Failed | Stopped)
                | (AwaitingApproval, Approved | Cancelled | Failed | Stopped)
                | (Approved, Syncing | Cancelled | Failed | Stopped)
                | (Syncing, LiveSync | Paused | Failed | Cancelled | Stopped)
                | (
                    LiveSync,
                    Paused | CuttingOver | Failed | Cancelled | Stopping | Stopped
                )
                | (Paused, Syncing | LiveSync | Failed | Cancelled | Stopped)
                | (Stopping, Stopped | LiveSync | Failed)
                | (CuttingOver, Completed | LiveSync | Failed)
                | (Completed, Verified | Completed | RolledBack)
                | (Verified, Verified | RolledBack)
                | (
                    Failed,
                    Syncing | Queued | Cancelled | Completed | LiveSync | Stopped
                )
        )
    }

    /// Still running (occupies a concurrency slot, holds change capture).
    pub fn is_active(self) -> bool {
        use MigrationState::*;
        matches!(self, Syncing | LiveSync | Paused | CuttingOver | Stopping)
    }

    /// Created and not started yet: waiting for a slot, its dependencies or an approval.
    pub fn is_pending(self) -> bool {
        use MigrationState::*;
        matches!(self, Queued | Waiting | AwaitingApproval | Approved)
    }

    pub const ALL: [MigrationState; 15] = [
        MigrationState::Queued,
        MigrationState::Waiting,
        MigrationState::AwaitingApproval,
        MigrationState::Approved,
        MigrationState::Syncing,
        MigrationState::LiveSync,
        MigrationState::Paused,
        MigrationState::CuttingOver,
        MigrationState::Completed,
        MigrationState::Verified,
        MigrationState::Failed,
        MigrationState::Cancelled,
        MigrationState::Stopping,
        MigrationState::Stopped,
        MigrationState::RolledBack,
    ];

    /// Finished for good.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            MigrationState::Verified
                | MigrationState::Cancelled
                | MigrationState::Stopped
                | MigrationState::RolledBack
        )
    }
}

/// What the migration is doing, finer than the state (STATUS `phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MigrationPhase {
    Queued,
    Connecting,
    Snapshot,
    LiveSync,
    /// A link to the target is down and being reopened (the state says whether the snapshot or
    /// live sync was running); STATUS `error` says why and for how long.
    Reconnecting,
    Cutover,
    Done,
    Stopped,
}

impl MigrationPhase {
    pub const ALL: [MigrationPhase; 8] = [
        MigrationPhase::Queued,
        MigrationPhase::Connecting,
        MigrationPhase::Snapshot,
        MigrationPhase::LiveSync,
        MigrationPhase::Reconnecting,
        MigrationPhase::Cutover,
        MigrationPhase::Done,
        MigrationPhase::Stopped,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MigrationPhase::Queued => "queued",
            MigrationPhase::Connecting => "connecting",
            MigrationPhase::Snapshot => "snapshot",
            MigrationPhase::LiveSync => "live_sync",
            MigrationPhase::Reconnecting => "reconnecting",
            MigrationPhase::Cutover => "cutover",
            MigrationPhase::Done => "done",
            MigrationPhase::Stopped => "stopped",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MigrationState::*;

    #[test]
    fn transitions() {
        assert!(Syncing.can_become(LiveSync));
        assert!(LiveSync.can_become(Paused));
        assert!(Paused.can_become(LiveSync));
        assert!(LiveSync.can_become(CuttingOver));
        assert!(CuttingOver.can_become(Completed));
        assert!(
            CuttingOver.can_become(LiveSync),
            "a refused cutover goes back to live sync"
        );
        assert!(Completed.can_become(Verified));
        assert!(
            !Completed.can_become(Paused),
            "PAUSE on a completed migration"
        );
        assert!(
            !Completed.can_become(Cancelled),
            "completed migrations are reversed, not cancelled"
        );
        assert!(!Cancelled.can_become(Syncing));
        assert!(
            !Paused.can_become(CuttingOver),
            "resume before cutting over"
        );
        assert!(Failed.can_become(Syncing), "retry");
        assert!(!Verified.can_become(Failed));
        assert!(LiveSync.can_become(Stopping), "STOP GRACEFUL");
        assert!(Stopping.can_become(Stopped));
        assert!(Stopping.can_become(LiveSync), "a refused graceful stop");
        assert!(Paused.can_become(Stopped), "STOP IMMEDIATE");
        assert!(!Stopped.can_become(Syncing), "stopped is final");
        assert!(
            !Completed.can_become(Stopped),
            "a cut-over sync is not stopped"
        );
        assert!(!Stopping.can_become(CuttingOver));
        assert!(Stopped.is_terminal() && Stopping.is_active());
        assert!(Queued.can_become(Waiting));
        assert!(
            Waiting.can_become(Queued),
            "dependencies done: wait for a slot"
        );
        assert!(
            !Waiting.can_become(Syncing),
            "a slot is taken only from queued or approved"
        );
        assert!(AwaitingApproval.can_become(Approved));
        assert!(AwaitingApproval.can_become(Cancelled), "REJECT");
        assert!(!AwaitingApproval.can_become(Syncing), "not without APPROVE");
        assert!(Approved.can_become(Syncing));
        assert!(Completed.can_become(RolledBack), "ROLLBACK");
        assert!(Verified.can_become(RolledBack), "ROLLBACK after VERIFY");
        assert!(
            !LiveSync.can_become(RolledBack),
            "only a cut-over migration rolls back"
        );
        assert!(!RolledBack.can_become(Completed) && RolledBack.is_terminal());
    }
}
