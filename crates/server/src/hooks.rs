//! Start and stop hooks for subsystems that live beside the connection handling (migrations).

use crate::shared::Shared;

pub fn on_start(sh: &std::sync::Arc<Shared>) {
    tokio::spawn(crate::backup::schedule::run(sh.clone()));
}

pub async fn on_stop(sh: &std::sync::Arc<Shared>) {
    // Migrations ending because the server stops are not ended: their records stay as they were.
    sh.migrations.stop_recording();
    if let Some(p) = sh.persistence.clone() {
        // Every acknowledged write is written and fsynced before the process exits.
        let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
    }
}

/// The id of a migration of `tenant` that has not finished, if any.
pub fn running_migration(sh: &Shared, tenant: &str) -> Option<String> {
    sh.migrations.running_for(tenant)
}
