//! Integration tests of the server core: real `ferrite` processes driven by redis-rs and raw
//! sockets.

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod basics;
mod encodings;
mod large_values;
mod lifecycle;
mod metrics_lint;
mod quota;
mod rdb_files;
mod rdb_interop;
mod scripting;
mod tenancy;
