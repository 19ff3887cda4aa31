//! Ferrite's commands: the table ([`spec`]) and the data commands, each run against one locked
//! keyspace through a [`Ctx`]. Nothing here knows about sockets, tenants or migrations; the server
//! decides *whether* a command may run (auth, ownership, quotas, write gates) and this crate
//! decides *what it does*.
//!
//! One module per data type: [`strings`], [`keys`], [`lists`], [`hashes`], [`sets`], [`zsets`];
//! [`bitmaps`] and [`hyperloglog`] work on strings, [`geo`] on sorted sets;
//! [`zset_algebra`] combines and samples sorted sets; [`streams`] is the stream type's commands. [`dump`] serializes values as Redis does;
//! [`blocking`] holds the blocking pops (BLPOP, BZPOPMIN...); [`sort`] is SORT; [`memory`] is MEMORY and MOVE. [`settings`] holds the server-wide values
//! (CONFIG parameters) that commands read.
//! Connection- and server-level commands are described in [`server_specs`] and run by the server.
//! [`syntax`] gives every command's arguments for `COMMAND DOCS`. [`Ctx::run`] runs a data command
//! and publishes its write effects; [`replay`] applies effects back (log loading, tests).

pub mod bitmaps;
pub mod blocking;
pub mod cost;
pub mod ctx;
pub mod dump;
pub mod geo;
pub mod hashes;
pub mod hyperloglog;
pub mod keys;
pub mod lists;
pub mod memory;
mod notify;
pub mod object;
pub mod quota;
pub mod rdb_file;
pub mod replay;
pub mod server_specs;
pub mod sets;
pub mod settings;
pub mod sort;
pub mod spec;
pub mod streams;
pub mod strings;
pub mod syntax;
pub mod testing;
pub mod util;
pub mod zset_algebra;
pub mod zsets;

#[cfg(test)]
mod effects_tests;
#[cfg(test)]
mod model_tests;

pub use ctx::{Ctx, DataFn, Garbage};
pub use spec::{CmdResult, CommandSpec, Creates, Handler, flags, lookup, lookup_indexed};
