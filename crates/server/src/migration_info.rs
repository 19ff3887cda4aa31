//! Migration and import streams as shown in INFO replication: what `ferrite-cli -h <server>
//! INFO replication` shows an operator on either side.

use std::sync::atomic::Ordering::Relaxed;

use crate::connection::ClientState;
use crate::shared::Shared;

/// `field:value` lines (without line endings). Tenant connections see only their own tenant.
pub fn lines(st: &ClientState, sh: &Shared) -> Vec<String> {
    let visible = |tenant: &str| st.admin || tenant == st.tenant.id();
    let migrations: Vec<_> = sh
        .migrations
        .status_all()
        .into_iter()
        .filter(|m| visible(&m.tenant))
        .collect();
    let imports: Vec<_> = sh
        .migrations
        .imports()
        .list()
        .into_iter()
        .filter(|i| visible(&i.tenant_id))
        .collect();
    let mut out = vec![
        format!(
            "migrations_active:{}",
            migrations.iter().filter(|m| m.state.is_active()).count()
        ),
        format!(
            "imports_active:{}",
            imports
                .iter()
                .filter(|i| i.state() == ferrite_tenancy::migration::ImportState::Receiving)
                .count()
        ),
    ];
    for (n, m) in migrations.iter().enumerate() {
        out.push(format!(
            "migration{n}:id={},tenant={},target={},mode={},state={},phase={},keys_synced={},keys_total={},lag_keys={},lag_seconds={:.3},bytes_synced={}",
            m.id,
            m.tenant,
            m.target,
            m.mode.name(),
            m.state.name(),
            m.phase.name(),
            m.keys_synced,
            m.keys_total,
            m.lag_keys,
            m.lag_seconds,
            m.bytes_synced
        ));
    }
    for (n, i) in imports.iter().enumerate() {
        out.push(format!(
            "import{n}:id={},tenant={},migration={},source={},state={},batches={},records={},bytes={},idle_ms={}",
            i.id,
            i.tenant_id,
            i.migration_id,
            i.source_addr,
            i.state().name(),
            i.batches.load(Relaxed),
            i.records.load(Relaxed),
            i.bytes.load(Relaxed),
            i.idle().as_millis()
        ));
    }
    out
}
