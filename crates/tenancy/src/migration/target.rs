//! How a migration reaches its target: one small trait, so that the state machine, checkpoints,
//! retries and every cutover step run the same against a real server ([`super::resp`], RESP over
//! TCP) and an in-process one ([`super::local`], for tests and for faults injected exactly).
//!
//! Calls are plain requests with replies. A [`BatchLink`] is one stream's pipelined connection:
//! batches are written with [`BatchLink::batch`] and acknowledged in order by
//! [`BatchLink::ack`]. Every future here may be dropped at any await (the actor drops them when a
//! CANCEL arrives); an implementation must then leave nothing half-done that a later call could
//! trip over (the RESP one discards a connection whose request was interrupted).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::import::{BeginRequest, Fetched, PatternActivation};

/// The future every [`Target`] call returns.
pub type TargetFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, TargetError>> + Send + 'a>>;

/// Why a call to the target did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The target could not be reached, the connection broke, or no answer came in time: the
    /// same call may succeed later.
    #[error("{0}")]
    Unreachable(String),
    /// The target does not have the import (it restarted, aborted it, or reaped it).
    #[error("{0}")]
    ImportGone(String),
    /// The import is already active there (the target owns the tenant).
    #[error("{0}")]
    ImportActive(String),
    /// The target answered with a refusal; sending the same request again will not help.
    #[error("{0}")]
    Refused(String),
}

impl TargetError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, TargetError::Unreachable(_))
    }

    /// The target refused to log this server in (`WRONGPASS`, `NOAUTH`): asking again with the
    /// same credentials will not help.
    pub fn is_auth_refusal(&self) -> bool {
        match self {
            TargetError::Refused(msg) => {
                let code = msg.split_whitespace().next().unwrap_or("");
                matches!(code, "WRONGPASS" | "NOAUTH")
            }
            _ => false,
        }
    }

    /// Classifies an error reply of a Ferrite target by the texts its `ImportError`s have.
    pub fn from_reply(msg: &str) -> TargetError {
        let text = msg.strip_prefix("ERR ").unwrap_or(msg);
        if text.starts_with("no such import") || text.ends_with(" is aborted") {
            TargetError::ImportGone(text.to_string())
        } else if text.ends_with(" is active") {
            TargetError::ImportActive(text.to_string())
        } else {
            TargetError::Refused(msg.to_string())
        }
    }
}

/// What the target's pre-check (`TENANT.IMPORT.CHECK`) reports.
#[derive(Debug, Clone, Default)]
pub struct TargetCheck {
    /// Memory the target has free, when it can tell.
    pub available_memory: Option<u64>,
}

/// Key count and combined digest of the staged data (`TENANT.IMPORT.PREPARE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    pub keys: u64,
    pub digest: u64,
}

/// The target's record of an activated import, for VERIFY.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    /// Key count at activation (None before activation).
    pub activation_keys: Option<u64>,
    /// Unix ms of the activation (0 before).
    pub activated_at_ms: u64,
    /// The activation digest per bucket.
    pub buckets: Vec<u64>,
    /// Conflicts resolved so far (a continuous sync whose target takes writes), and the latest
    /// keys involved.
    pub conflicts: u64,
    pub conflict_sample: Vec<Vec<u8>>,
}

/// A migration target.
pub trait Target: Send + Sync + 'static {
    /// The address the source uses to reach it (for messages).
    fn addr(&self) -> &str;
    /// Checks that the target speaks this wire version and can take `tenant`.
    fn check<'a>(
        &'a self,
        tenant: &'a str,
        source_run_id: &'a str,
    ) -> TargetFuture<'a, TargetCheck>;
    /// Opens an import (or reopens the one of the same migration); returns its id.
    fn begin<'a>(&'a self, req: &'a BeginRequest) -> TargetFuture<'a, String>;
    /// Opens stream `index` of an import.
    fn open_stream<'a>(
        &'a self,
        import: &'a str,
        index: u16,
    ) -> TargetFuture<'a, Box<dyn BatchLink>>;
    /// Where each stream's applied batches end. Also the heartbeat: it tells the target the
    /// source is alive, and the source that the target and its import are.
    fn resume<'a>(&'a self, import: &'a str) -> TargetFuture<'a, Vec<(u16, u64)>>;
    /// Key count and digest of the staged data.
    fn prepare<'a>(&'a self, import: &'a str) -> TargetFuture<'a, Prepared>;
    /// Makes the import live (idempotent).
    fn activate<'a>(&'a self, import: &'a str) -> TargetFuture<'a, ()>;
    /// Drops the import (idempotent; `ImportActive` once activated).
    fn abort<'a>(&'a self, import: &'a str) -> TargetFuture<'a, ()>;
    /// Keeps the import's copy as it is, as a stopped import the reaper leaves alone (a stopped
    /// continuous sync; idempotent).
    fn stop<'a>(&'a self, import: &'a str) -> TargetFuture<'a, ()>;
    /// The activation record (VERIFY).
    fn report<'a>(&'a self, import: &'a str) -> TargetFuture<'a, ImportReport>;
    /// The old source as a backup after a cutover: `TENANT.IMPORT.BACKUP <import> <op...>` on
    /// the new owner (`START <addr> <secs>`, `STATUS`, `CUTOVER`, `END`), answered with the
    /// backup's state. Targets without reverse streams (in-process ones) refuse.
    fn backup<'a>(
        &'a self,
        import: &'a str,
        op: &'a [String],
    ) -> TargetFuture<'a, super::api::BackupStatus> {
        let _ = (import, op);
        Box::pin(async {
            Err(TargetError::Refused(
                "ERR this target keeps no backups".into(),
            ))
        })
    }
    /// Modified time and canonical value of keys in the imported tenant (VERIFY).
    fn fetch<'a>(
        &'a self,
        import: &'a str,
        keys: &'a [Vec<u8>],
    ) -> TargetFuture<'a, Vec<Option<Fetched>>>;
    /// Incremental mode: key count and digest of the keys pattern `index` of `patterns` owns in
    /// the staged data, of those alive after `alive_after` (Unix ms).
    fn pattern_prepare<'a>(
        &'a self,
        import: &'a str,
        patterns: &'a [Vec<u8>],
        index: usize,
        alive_after: u64,
    ) -> TargetFuture<'a, Prepared>;
    /// Incremental mode: serve pattern `index` there from now on (idempotent); returns what
    /// the pattern held at activation.
    fn pattern_activate<'a>(
        &'a self,
        import: &'a str,
        patterns: &'a [Vec<u8>],
        index: usize,
    ) -> TargetFuture<'a, PatternActivation>;
    /// Incremental mode: while the last pattern is handed over, its keys wait there instead of
    /// being sent back (`hold`), or are sent back again (the cutover was aborted).
    fn pattern_hold<'a>(
        &'a self,
        import: &'a str,
        patterns: &'a [Vec<u8>],
        index: usize,
        hold: bool,
    ) -> TargetFuture<'a, ()>;
    /// Incremental mode: what pattern `index` held when it was activated (VERIFY).
    fn pattern_report<'a>(
        &'a self,
        import: &'a str,
        index: usize,
    ) -> TargetFuture<'a, PatternActivation>;
}

/// One stream's connection to the target: batches written in order, acknowledged in order.
pub trait BatchLink: Send {
    /// The last batch the target had applied on this stream when the link opened.
    fn resume_point(&self) -> u64;
    /// Writes one batch (without waiting for its acknowledgement).
    fn batch<'a>(&'a mut self, payload: &'a [u8]) -> TargetFuture<'a, ()>;
    /// The next acknowledgement: the sequence number of the oldest unacknowledged batch. Must be
    /// cancel-safe (the sender selects on it).
    fn ack(&mut self) -> TargetFuture<'_, u64>;
    /// False when the link is known to be closed (checked without blocking before an idle link
    /// is used again, so a cut connection is reopened before a batch is lost on it).
    fn is_open(&mut self) -> bool;
}

/// How the source authenticates to a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetAuth {
    None,
    /// The shared `tenancy.migration.token` (`AUTH ferrite-migration <token>`).
    Token(String),
    /// The target's requirepass (`TENANT.MIGRATE ... AUTH pw`).
    Password(String),
}

/// Makes [`Target`]s from addresses: RESP in production ([`super::resp::RespConnector`]), an
/// in-process map in tests ([`super::local::LocalConnector`]).
pub trait Connector: Send + Sync + 'static {
    fn connect(&self, addr: &str, auth: TargetAuth) -> Arc<dyn Target>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_classified_by_the_import_errors_texts() {
        assert!(matches!(
            TargetError::from_reply("ERR no such import 'imp_1'"),
            TargetError::ImportGone(_)
        ));
        assert!(matches!(
            TargetError::from_reply("ERR import imp_1 is aborted"),
            TargetError::ImportGone(_)
        ));
        assert!(matches!(
            TargetError::from_reply("ERR import imp_1 is active"),
            TargetError::ImportActive(_)
        ));
        assert_eq!(
            TargetError::from_reply("NOPERM no"),
            TargetError::Refused("NOPERM no".into())
        );
    }
}
