//! Tenancy for Ferrite: who owns which keyspace, under what limits, and how a tenant moves.
//!
//! - [`registry`]: [`Registry`] of [`Tenant`]s; creation, deletion, authentication.
//! - [`tenant`]: a tenant's keyspace, credentials, ownership [`TenantState`], quotas, stats.
//! - [`gate`]: [`WriteGate`], which pauses one tenant's writes for a cutover.
//! - [`throttle`]: per-tenant operation rate limits (delay, then refuse).
//! - [`migration`]: [`MigrationManager`] (source side: snapshot, change stream, cutover,
//!   verify), [`ImportManager`] (target side), and the versioned wire format.
//!
//! This crate knows nothing about client sockets or the config file format.

pub mod error;
pub mod gate;
pub mod migration;
pub mod registry;
pub mod tenant;
pub mod throttle;

pub use error::TenancyError;
pub use gate::{WriteGate, WritePermit};
pub use migration::{
    CutoverResult, ImportManager, MigrationConfig, MigrationError, MigrationHandle,
    MigrationManager, MigrationMode, MigrationPhase, MigrationSettings, MigrationState,
    MigrationStatus, VerifyResult,
};
pub use registry::{CreateOptions, DEFAULT_TENANT, Registry, TenancySettings};
pub use tenant::{QuotaExceeded, Tenant, TenantLimits, TenantState, valid_tenant_id};
pub use throttle::{Admission, Throttle};
