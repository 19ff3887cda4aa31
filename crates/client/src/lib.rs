//! `ferrite-client`: an async client for Ferrite (and any Redis-protocol server).
//!
//! - [`Connection`]: one connection: HELLO 3 with tenant AUTH (RESP2 fallback), commands,
//!   explicit send/receive for pipelining.
//! - [`ClientError`]: errors, with `-MOVED tenant:<id> <addr>`, `-REDIRECT` and `-TRYAGAIN` told
//!   apart so callers (and the higher-level client) can follow or retry them.
//! - [`Client`]: follows `-MOVED`/`-REDIRECT` to the tenant's new server and retries
//!   `-TRYAGAIN` with bounded backoff, so applications never see a redirect.
//! - [`value`]: conversions from reply frames to Rust values.

pub mod client;
pub mod connection;
pub mod error;
pub mod value;

pub use client::{Client, RedirectPolicy};
pub use connection::{ConnectOptions, Connection, encode_command};
pub use error::ClientError;
pub use ferrite_protocol::frame::Frame;
