//! Start and stop hooks for subsystems that live beside the connection handling (migrations).

use crate::shared::Shared;

pub fn on_start(_sh: &std::sync::Arc<Shared>) {}

pub async fn on_stop(_sh: &std::sync::Arc<Shared>) {}

/// The id of a migration of `tenant` that has not finished, if any.
pub fn running_migration(sh: &Shared, tenant: &str) -> Option<String> {
    sh.migrations.running_for(tenant)
}
