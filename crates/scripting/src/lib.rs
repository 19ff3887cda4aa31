//! Lua scripting as Redis 7 embeds it: real Lua 5.1 (mlua, vendored), the `redis.*` API, the
//! `cjson`, `cmsgpack`, `struct` and `bit` libraries (the C sources Redis ships), Redis's reply
//! conversion rules in both directions (RESP2 and RESP3), and its sandbox (read-only globals and
//! libraries, no `os`/`io`/`loadfile`/`dofile`/`print`).
//!
//! An [`Engine`] is one tenant's Lua state with its script cache and function libraries. It
//! knows nothing of keyspaces or tenants: a script's `redis.call` goes to the [`Host`] the server
//! passes in, which runs the command through the server's one write funnel and answers in RESP.
//!
//! A script runs on its own stack (a stackful coroutine), so it can be *suspended* at any point
//! where the Lua hook fires — inside `pcall`, `table.sort`, a metamethod — and finished on
//! another thread: the server starts every script on its I/O worker and moves the rest of a long
//! one to the blocking pool (see [`Engine::run`]).

mod convert;
mod engine;
pub mod functions;
mod libs;
mod rand48;
mod sandbox;
pub mod shebang;
#[cfg(test)]
mod tests;

pub use convert::{LuaReply, MAX_REPLY_DEPTH};
pub use engine::{
    Engine, EngineLimits, Host, Invocation, LogLevel, RunError, Script, Step, Target, sha1_hex,
};
pub use functions::{FunctionFlags, LibraryInfo};
pub use shebang::{ScriptFlags, parse_shebang};
