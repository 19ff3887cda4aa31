//! `ferrite-client`: an async client for Ferrite (and any Redis-protocol server).
//!
//! - [`Connection`]: one connection: HELLO 3 with tenant AUTH (RESP2 fallback), commands,
//!   explicit send/receive for pipelining. Returns bare errors; no redirects.
//! - [`Client`]: follows `-MOVED tenant:<id> <addr>`/`-REDIRECT <addr>` to the tenant's new
//!   server and retries `-TRYAGAIN` with bounded backoff, re-sending only commands the server
//!   refused without running them, and never inside a transaction (MULTI or WATCH), where a
//!   move ends the transaction with [`ClientError::TransactionDiscarded`]; pipelines ([`Client::pipeline`], [`Pipeline`]); typed helpers
//!   for common commands (`get`, `set_with`, `hgetall`, `zrange_withscores`, ... in
//!   [`commands`]); errors with the server and command as context.
//! - [`Pool`]: a bounded pool of `Client`s with a checkout timeout that replaces broken or
//!   server-closed connections on its own (e.g. after a server restart).
//! - [`ClientError`]: errors, with redirects and retryable refusals told apart.
//! - [`value`]: conversions from reply frames to Rust values.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferrite_client::ClientError> {
//! use std::time::Duration;
//! use ferrite_client::{ConnectOptions, Pool, PoolOptions, SetOptions};
//!
//! let pool = Pool::connect(
//!     ConnectOptions::new("127.0.0.1:6379").tenant("acme-corp", "s3cret"),
//!     PoolOptions::new().max_size(8).checkout_timeout(Duration::from_secs(1)),
//! )
//! .await?;
//! let mut c = pool.get().await?;
//! c.set_with("session:1", "alice", SetOptions::new().expire_in(Duration::from_secs(60)))
//!     .await?;
//! assert_eq!(c.get("session:1").await?.as_deref(), Some("alice"));
//! // Anything without a helper:
//! let reply = c.cmd(&["OBJECT", "ENCODING", "session:1"]).await?;
//! # let _ = reply;
//! # Ok(()) }
//! ```

pub mod client;
pub mod commands;
pub mod connection;
pub mod error;
pub mod pool;
mod transaction;
pub mod value;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

pub use client::{Client, Pipeline, RedirectPolicy};
pub use commands::{Expiry, SetCondition, SetOptions, Ttl};
pub use connection::{ConnectOptions, Connection, encode_command};
pub use error::ClientError;
pub use ferrite_protocol::frame::Frame;
pub use pool::{Pool, PoolOptions, PoolStatus, PooledClient};
