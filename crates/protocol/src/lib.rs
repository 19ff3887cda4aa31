//! RESP framing for Ferrite. No I/O happens here.
//!
//! - [`request`]: a streaming parser for client requests (multibulk and inline) that enforces the
//!   configured limits *before* buffering a declared length, so an oversized or malformed request is
//!   refused early and never grows memory or the stack.
//! - [`reply`]: [`ReplyWriter`] encodes replies straight into the output buffer, for RESP2 or RESP3.
//! - [`error`]: [`ErrorReply`] and the exact Redis error texts.
//! - [`args`]: Redis-compatible parsing of integers, floats and option words.
//! - [`number`]: Redis-compatible formatting of doubles ([`fpconv`]: Redis 7.2's Grisu2 port).
//! - [`frame`]: full RESP2/RESP3 reply decoding (on the `redis-protocol` crate), used by clients.

pub mod args;
pub mod error;
pub mod fpconv;
pub mod frame;
pub mod number;
pub mod reply;
pub mod request;

pub use args::Args;
pub use error::ErrorReply;
pub use reply::{Protocol, ReplyWriter};
pub use request::{Limits, OwnedRequest, ProtocolError, RequestDecoder};
