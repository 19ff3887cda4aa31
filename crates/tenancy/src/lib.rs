//! Tenancy for Ferrite: who owns which keyspace, under what limits, and how a tenant moves.
//!
//! - [`registry`]: [`Registry`] of [`Tenant`]s; creation, deletion, authentication.
//! - [`acl`]: ACL users inside a tenant (ACL SETUSER rules, checked per command).
//! - [`credential`]: [`Credential`], the salted hash kept of a tenant password; constant-time
//!   secret comparison.
//! - [`tenant`]: a tenant's keyspace, credentials, ownership [`TenantState`], quotas, stats.
//! - [`gate`]: [`WriteGate`], which pauses one tenant's writes for a cutover.
//! - [`patterns`]: [`PatternSplit`], which key patterns an incremental migration has moved, and
//!   the rule that places a command's keys on one server (or refuses it).
//! - [`scripts`]: a tenant's running script as its other connections see it (busy, kill).
//! - [`throttle`]: per-tenant operation rate limits (delay, then refuse).
//! - [`migration`]: [`MigrationManager`] (source side: snapshot, change stream, cutover,
//!   verify), [`ImportManager`] (target side), and the versioned wire format.
//!
//! This crate knows nothing about client sockets or the config file format.
//!
//! # Migrating a tenant
//!
//! Two servers in this process; a tenant with some keys on the first is moved live to the second,
//! cut over, and verified by checksum:
//!
//! ```
//! use std::time::Duration;
//! use ferrite_storage::Value;
//! use ferrite_tenancy::{CreateOptions, Credential, MigrationConfig, MigrationMode, MigrationPhase};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let source = ferrite_server::start_for_tests().await?;
//! let target = ferrite_server::start_for_tests().await?;
//! let tenant = source.registry().create(
//!     "acme-corp",
//!     CreateOptions {
//!         credential: Some(Credential::from_password(b"s3cret")),
//!         ..Default::default()
//!     },
//! )?;
//! {
//!     let ks = tenant.keyspace();
//!     let mut db = ks.lock();
//!     for i in 0..10_000 {
//!         db.set(format!("key:{i}").as_bytes(), Value::string(format!("value {i}")), None, 0);
//!     }
//! }
//!
//! let manager = source.migrations();
//! let migration = manager
//!     .migrate(
//!         "acme-corp",
//!         &target.addr.to_string(),
//!         MigrationConfig {
//!             mode: MigrationMode::Live,
//!             parallel: 4,
//!             batch_size: 1000,
//!             ..Default::default()
//!         },
//!     )
//!     .await?;
//!
//! // Monitor progress until live sync has caught up.
//! loop {
//!     let status = manager.status(&migration.id).await?;
//!     println!("Progress: {}%", status.progress);
//!     if status.phase == MigrationPhase::LiveSync && status.lag_keys < 100 {
//!         break;
//!     }
//!     tokio::time::sleep(Duration::from_millis(20)).await;
//! }
//!
//! let result = manager.cutover(&migration.id).await?;
//! println!("Migration completed, downtime: {}ms", result.downtime_ms);
//! assert_eq!(result.keys_migrated, 10_000);
//!
//! let verification = manager.verify(&migration.id).await?;
//! assert!(verification.checksum_match);
//! assert_eq!(verification.status, "verified");
//!
//! // The target now serves the tenant; the source answers -MOVED.
//! assert_eq!(target.registry().get("acme-corp").map(|t| t.keyspace().len()), Some(10_000));
//! # source.stop().await;
//! # target.stop().await;
//! # Ok(())
//! # }
//! ```

pub mod acl;
pub mod credential;
pub mod error;
pub mod gate;
pub mod migration;
pub mod patterns;
pub mod registry;
pub mod scripts;
pub mod tenant;
pub mod throttle;

pub use credential::{Credential, InvalidCredential, secrets_equal};
pub use error::TenancyError;
pub use gate::{WriteGate, WritePermit};
pub use migration::{
    AfterRequires, Approval, BackupStatus, ConflictPolicy, ContentionSettings, CutoverResult,
    GroupOp, GroupOutcome, ImportManager, MigrationConfig, MigrationError, MigrationHandle,
    MigrationManager, MigrationMode, MigrationPhase, MigrationSettings, MigrationState,
    MigrationStatus, Priority, StopMode, StopResult, VerifyResult,
};
pub use patterns::{Owner, PatternSplit, Placement};
pub use registry::{CreateOptions, DEFAULT_TENANT, Registry, TenancySettings, TenantStore};
pub use scripts::{KillRefused, RunningScript, ScriptActivity, ScriptKind};
pub use tenant::{
    CommandCounters, Durability, QuotaExceeded, Tenant, TenantLimits, TenantState, valid_tenant_id,
};
pub use throttle::{Admission, Throttle};
