//! Integration tests of `ferrite-client` against real `ferrite` processes: following a tenant
//! through a live migration, TRYAGAIN on an importing target, the pool across a server restart,
//! errors with context, typed helpers on RESP2 and RESP3, what redis-rs does at cutover, and the
//! `migration_writer` example through a cutover.

#[path = "../common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "../migration/util.rs"]
mod util;
#[allow(dead_code)]
#[path = "../../examples/migration_writer.rs"]
mod writer;

mod commands;
mod errors;
mod migration;
mod pool;
mod redis_rs;
mod writer_example;

use std::time::Duration;

use common::Server;
use util::*;

/// Generous bounds: these tests run on small shared CI machines.
pub const LONG: Duration = Duration::from_secs(120);
pub const SHORT: Duration = Duration::from_secs(30);

/// Creates tenant `acme` (password `pw`) on `src` with `keys` string keys `k0..`.
pub async fn tenant_with_keys(src: &Server, keys: usize) {
    let mut a = admin(src).await;
    ok(&mut a, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]).await;
    let mut t = tenant_conn(src, "acme", "pw").await;
    load(
        &mut t,
        (0..keys)
            .map(|i| s(&["SET", &format!("k{i}"), &format!("v{i}")]))
            .collect(),
    )
    .await;
}

/// Starts migrating `acme` from `src` to `dst` and waits for live sync; returns the id.
pub async fn migrate_to_live_sync(src: &Server, dst: &Server) -> String {
    let mut a = admin(src).await;
    let id = migrate(&mut a, "acme", dst, &[]).await;
    wait_state(&mut a, &id, "live_sync", LONG).await;
    id
}

/// Cuts over, retrying while the lag is above `cutover_max_lag` (writers may be busy).
pub async fn cutover(src: &Server, id: &str) {
    let mut a = admin(src).await;
    let deadline = std::time::Instant::now() + SHORT;
    loop {
        match cmd(&mut a, &["TENANT.MIGRATE.CUTOVER", id]).await {
            Ok(r) => {
                assert_eq!(fields(&r)["status"], "completed");
                return;
            }
            Err(e) if e.to_string().contains("cutover_max_lag") => {
                assert!(std::time::Instant::now() < deadline, "lag never fell: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cutover failed: {e}"),
        }
    }
}
