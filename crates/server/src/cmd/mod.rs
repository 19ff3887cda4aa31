//! Server-level commands: connection state, introspection, configuration, transactions and
//! tenancy. Data commands live in `ferrite-commands`.

mod client;
mod connection;
mod introspection;
mod migrate;
mod tenant;
mod transaction;

use std::sync::Arc;

use bytes::BytesMut;
use ferrite_commands::CommandSpec;
use ferrite_protocol::{Args, ErrorReply, ReplyWriter};

use crate::connection::ClientState;
use crate::dispatch::Flow;
use crate::shared::Shared;

pub use connection::{COMPAT_VERSION, anonymous_access};
pub use transaction::queueable_in_multi;

/// Result of a server command: `Err` means nothing was written and the error is the reply.
pub type ServerResult = Result<Flow, ErrorReply>;

/// Runs a server command queued by MULTI, inside EXEC (only those [`queueable_in_multi`]
/// allows: synchronous, and none takes a keyspace lock).
pub fn run_queued(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    name: &str,
    args: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    match name {
        "ping" => connection::ping(st, args, out),
        "echo" => connection::echo(st, args, out),
        "time" => connection::time(st, out),
        "select" => connection::select(st, args, out),
        "info" => introspection::info(st, sh, args, out),
        "config" => introspection::config(st, sh, args, out),
        "client" => client::client(st, sh, args, out),
        "command" => introspection::command(st, args, out),
        "tenant.current" | "tenant.info" => tenant::run(st, sh, name, args, out),
        // EXEC has already consumed the watched keys; queued UNWATCH only answers, as in Redis.
        "unwatch" => transaction::unwatch(st, out),
        _ => Err(ErrorReply::err("Command not allowed inside a transaction")),
    }
}

/// Runs a command whose handler is [`ferrite_commands::Handler::Server`].
pub async fn run_server_command(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    spec: &CommandSpec,
    args: Args<'_>,
    out: &mut BytesMut,
) -> Flow {
    let r = match spec.name {
        "ping" => connection::ping(st, args, out),
        "echo" => connection::echo(st, args, out),
        "quit" => connection::quit(st, out),
        "hello" => connection::hello(st, sh, args, out),
        "auth" => connection::auth(st, sh, args, out),
        "select" => connection::select(st, args, out),
        "reset" => connection::reset(st, sh, out),
        "client" => client::client(st, sh, args, out),
        "command" => introspection::command(st, args, out),
        "config" => introspection::config(st, sh, args, out),
        "info" => introspection::info(st, sh, args, out),
        "time" => connection::time(st, out),
        "shutdown" => introspection::shutdown(st, sh, args, out),
        "multi" => transaction::multi(st, out),
        "discard" => transaction::discard(st, out),
        "watch" => transaction::watch(st, args, out),
        "unwatch" => transaction::unwatch(st, out),
        "exec" => transaction::exec(st, sh, out).await,
        name if name.starts_with("tenant.migrate") || name.starts_with("tenant.import.") => {
            migrate::run(st, sh, name, args, out).await
        }
        name if name.starts_with("tenant.") => tenant::run(st, sh, name, args, out),
        other => Err(ErrorReply::err(format!(
            "command '{other}' is not available on this server"
        ))),
    };
    match r {
        Ok(flow) => flow,
        Err(e) => {
            ReplyWriter::new(out, st.proto).error(&e);
            Flow::Continue
        }
    }
}
