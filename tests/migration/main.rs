//! End-to-end live migration tests: two (or three) real `ferrite` processes, real TCP, real
//! clients. Every test checks the target's data against what the source held, key by key or by
//! checksum, with writes going on.

#[path = "../common/mod.rs"]
mod common;
mod proxy;
mod util;
mod writers;

mod bad_input;
mod cancel_pause;
mod conflicts;
mod continuous;
mod dns;
mod faults;
mod hot;
mod incremental;
mod live;
mod orchestration;
mod production;
mod reporting;
mod responsive;
mod rollback;
mod streams;

use std::time::Duration;

/// Generous bounds: these tests run on small shared CI machines.
pub const LONG: Duration = Duration::from_secs(300);
pub const SHORT: Duration = Duration::from_secs(30);

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
