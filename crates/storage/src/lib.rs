//! The storage engine of one keyspace. It knows nothing about tenants, networks or migrations.
//!
//! - [`table`]: the hash table with a SCAN-stable cursor, used for keys and collection members.
//! - [`value`]: strings, lists, hashes, sets and sorted sets, each maintaining its size estimate
//!   and content digest as it changes; lists are in `list` (packed while small, a quicklist of
//!   packed nodes past `list-max-listpack-size`).
//! - [`entry`]: a key's [`Entry`] as the table holds it: one allocation with the key, its
//!   metadata and (for strings and packed collections) the value's bytes.
//! - [`keyspace`]: [`Keyspace`] (one lock) and [`Db`] (the data under it): the single write funnel
//!   that keeps expiry index, versions, modified times, memory, digests and change tracking exact.
//! - [`stream`]: the stream type (entries in packed blocks, consumer groups and their pending
//!   entries).
//! - [`codec`]: values as their logical elements (files on disk), whatever their memory layout.
//! - [`digest`]: the canonical, order-independent content digest and its buckets.
//! - [`effects`]: write effects, the deterministic commands each change is published as to the
//!   keyspace's subscribers (append-only log, migration delta logs).
//! - [`blocking`]: clients waiting for keys (BLPOP, XREAD BLOCK), served under the lock by the
//!   write that made their key ready, first blocked first served.
//! - [`notify`]: keyspace notifications (`notify-keyspace-events`): changed keys logged by the
//!   funnel, published as Redis's events.
//! - [`glob`]: Redis glob-style pattern matching for KEYS and SCAN MATCH.
//! - [`scripting`]: a keyspace's function libraries (tenant data) and its scripting engine.

pub mod blocking;
pub mod codec;
pub mod digest;
pub mod effects;
pub mod encoding;
pub mod entry;
pub mod glob;
pub mod keyspace;
mod list;
pub mod notify;
pub mod ordtree;
mod pack;
pub mod point_in_time;
pub mod scripting;
pub mod stream;
pub mod table;
pub mod value;

pub use blocking::Waiter;
pub use digest::Digest;
pub use effects::{Argv, EffectRecorder, EffectSink, Effects, OwnedArgv, SinkId};
pub use encoding::Encoding;
pub use entry::{CompactCopy, Entry};
pub use keyspace::{
    Db, DbGuard, Keyspace, KeyspaceStats, Occupied, OwnedDbGuard, Slot, SnapshotRest, TrackingLag,
    Vacant,
};
pub use point_in_time::{CopiedEntries, PointInTimeCopy};
pub use stream::{StreamId, StreamValue};
pub use table::{ShardedTable, Table, TableKey};
pub use value::{
    HashRef, HashValue, ListRef, ListValue, Score, SetRef, SetValue, StrRef, StrValue, Value,
    ValueRef, ValueType, ZSetRef, ZSetValue,
};

/// Current Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
