//! Server-level commands: connection state, introspection, configuration, transactions and
//! tenancy. Data commands live in `ferrite-commands`.
//!
//! The command table (`ferrite_commands::spec::all`) describes every command; a command whose
//! handler is [`Handler::Server`](ferrite_commands::Handler::Server) is run by the entry of the
//! same name in [`SERVER_COMMANDS`], found by the table index the dispatcher already has (no
//! string matching per call). A unit test checks that the two lists agree both ways.

mod client;
pub(crate) mod connection;
pub(crate) mod diagnostics;
mod introspection;
mod migrate;
mod persistence;
mod tenant;
mod transaction;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use ferrite_commands::Handler;
use ferrite_protocol::{Args, ErrorReply};

use crate::connection::ClientState;
use crate::dispatch::Flow;
use crate::scripting::{self, Call};
use crate::shared::Shared;

pub use connection::{COMPAT_VERSION, anonymous_access};
pub use introspection::tenant_may_config;

/// Result of a server command: `Err` means nothing was written and the error is the reply.
pub type ServerResult = Result<Flow, ErrorReply>;

/// A server command that completes without waiting.
pub type NowFn = fn(&mut ClientState, &Arc<Shared>, Args<'_>, &mut BytesMut) -> ServerResult;

/// The future of a server command that waits (for a tenant, a migration, a peer).
pub type Waiting<'a> = Pin<Box<dyn Future<Output = ServerResult> + Send + 'a>>;

/// A server command that waits.
pub type WaitFn =
    for<'a> fn(&'a mut ClientState, &'a Arc<Shared>, Args<'a>, &'a mut BytesMut) -> Waiting<'a>;

/// How a server command runs.
#[derive(Clone, Copy)]
pub enum Run {
    Now(NowFn),
    Wait(WaitFn),
}

/// The handler of one server command.
pub struct ServerCommand {
    /// The command's name in the command table.
    pub name: &'static str,
    pub run: Run,
    /// May be queued by MULTI and run inside EXEC: it completes without waiting and takes no
    /// keyspace lock (EXEC holds its tenant's).
    pub in_multi: bool,
    /// Runs like a data command of the connection's tenant (PUBLISH, EVAL and the like): it
    /// reads and resets no counters and binds no other tenant, so the batch's counts need not
    /// reach the shared counters before it runs (see `dispatch::Batch`); they are added when
    /// the batch ends, as for data commands. Every other server command sees them first.
    pub like_data: bool,
}

const fn now(name: &'static str, f: NowFn) -> ServerCommand {
    ServerCommand {
        name,
        run: Run::Now(f),
        in_multi: false,
        like_data: false,
    }
}

const fn now_in_multi(name: &'static str, f: NowFn) -> ServerCommand {
    ServerCommand {
        name,
        run: Run::Now(f),
        in_multi: true,
        like_data: false,
    }
}

const fn wait(name: &'static str, f: WaitFn) -> ServerCommand {
    ServerCommand {
        name,
        run: Run::Wait(f),
        in_multi: false,
        like_data: false,
    }
}

/// A server command that runs like a data command (see [`ServerCommand::like_data`]).
const fn like_data(c: ServerCommand) -> ServerCommand {
    ServerCommand {
        like_data: true,
        ..c
    }
}

/// Tenancy commands share one module; each entry names its command for it.
macro_rules! tenancy {
    ($name:literal, $ctor:ident) => {
        $ctor($name, |st, sh, args, out| {
            tenant::run(st, sh, $name, args, out)
        })
    };
}

/// Migration and import commands share one module; each entry names its command for it.
macro_rules! migration {
    ($name:literal) => {
        wait($name, |st, sh, args, out| {
            Box::pin(migrate::run(st, sh, $name, args, out))
        })
    };
}

/// Backup commands share one module (`crate::backup::command`); each entry names its command.
macro_rules! backup {
    ($name:literal) => {
        wait($name, |st, sh, args, out| {
            Box::pin(crate::backup::command::run(st, sh, $name, args, out))
        })
    };
}

/// Every server command's handler.
#[rustfmt::skip]
pub const SERVER_COMMANDS: &[ServerCommand] = &[
    now_in_multi("ping", |st, _, args, out| connection::ping(st, args, out)),
    now_in_multi("echo", |st, _, args, out| connection::echo(st, args, out)),
    now("quit", |st, _, _, out| connection::quit(st, out)),
    now("hello", |st, sh, args, out| connection::hello(st, sh, args, out)),
    now("auth", |st, sh, args, out| connection::auth(st, sh, args, out)),
    now_in_multi("select", |st, _, args, out| connection::select(st, args, out)),
    now("reset", |st, sh, _, out| connection::reset(st, sh, out)),
    // Redis runs SUBSCRIBE, PSUBSCRIBE and the UNSUBSCRIBEs inside EXEC (their confirmations
    // are elements of its reply); SSUBSCRIBE it queues, and answers an error there.
    now_in_multi("subscribe", crate::pubsub::subscribe_channels),
    now_in_multi("unsubscribe", crate::pubsub::unsubscribe_channels),
    now_in_multi("psubscribe", crate::pubsub::subscribe_patterns),
    now_in_multi("punsubscribe", crate::pubsub::unsubscribe_patterns),
    now_in_multi("ssubscribe", crate::pubsub::subscribe_shard),
    now_in_multi("sunsubscribe", crate::pubsub::unsubscribe_shard),
    like_data(now_in_multi("publish", crate::pubsub::publish)),
    like_data(now_in_multi("spublish", crate::pubsub::spublish)),
    now_in_multi("pubsub", crate::pubsub::pubsub),
    now_in_multi("client", client::client),
    now_in_multi("command", |st, _, args, out| introspection::command(st, args, out)),
    now_in_multi("config", introspection::config),
    now_in_multi("info", introspection::info),
    now_in_multi("time", |st, _, _, out| connection::time(st, out)),
    now("monitor", crate::pubsub::monitor),
    wait("shutdown", |st, sh, args, out| Box::pin(introspection::shutdown(st, sh, args, out))),
    wait("save", |st, sh, _, out| Box::pin(persistence::save(st, sh, out))),
    now("bgsave", persistence::bgsave),
    now("bgrewriteaof", |st, sh, _, out| persistence::bgrewriteaof(st, sh, out)),
    now("lastsave", |st, sh, _, out| persistence::lastsave(st, sh, out)),
    now_in_multi("slowlog", diagnostics::slowlog),
    now_in_multi("latency", diagnostics::latency),
    now_in_multi("acl", diagnostics::acl),
    // Clients probe CLUSTER INFO to learn whether a server is a cluster node: a standalone
    // Redis answers this (and a script calling CLUSTER is refused: not allowed from scripts).
    now_in_multi("cluster", |_, _, _, _| {
        Err(ErrorReply::err("This instance has cluster support disabled"))
    }),
    now_in_multi("wait", |st, _, args, out| diagnostics::wait(st, args, out)),
    now_in_multi("swapdb", |st, _, args, out| diagnostics::swapdb(st, args, out)),
    like_data(wait("eval", |st, sh, args, out| Box::pin(scripting::run(st, sh, Call::Eval, false, args, out)))),
    like_data(wait("evalsha", |st, sh, args, out| Box::pin(scripting::run(st, sh, Call::EvalSha, false, args, out)))),
    like_data(wait("eval_ro", |st, sh, args, out| Box::pin(scripting::run(st, sh, Call::Eval, true, args, out)))),
    like_data(wait("evalsha_ro", |st, sh, args, out| Box::pin(scripting::run(st, sh, Call::EvalSha, true, args, out)))),
    like_data(wait("fcall", |st, sh, args, out| Box::pin(scripting::run(st, sh, Call::Fcall, false, args, out)))),
    like_data(wait("fcall_ro", |st, sh, args, out| Box::pin(scripting::run(st, sh, Call::Fcall, true, args, out)))),
    wait("script", |st, sh, args, out| Box::pin(scripting::script(st, sh, args, out))),
    wait("function", |st, sh, args, out| Box::pin(scripting::function(st, sh, args, out))),
    now("multi", |st, _, _, out| transaction::multi(st, out)),
    wait("exec", |st, sh, _, out| Box::pin(transaction::exec(st, sh, out))),
    now("discard", |st, _, _, out| transaction::discard(st, out)),
    wait("watch", |st, sh, args, out| Box::pin(transaction::watch(st, sh, args, out))),
    // EXEC has already consumed the watched keys; a queued UNWATCH only answers, as in Redis.
    now_in_multi("unwatch", |st, _, _, out| transaction::unwatch(st, out)),
    tenancy!("tenant.create", now),
    tenancy!("tenant.delete", now),
    tenancy!("tenant.list", now),
    tenancy!("tenant.info", now_in_multi),
    tenancy!("tenant.use", now),
    tenancy!("tenant.current", now_in_multi),
    tenancy!("tenant.throttle", now),
    tenancy!("tenant.limits", now),
    tenancy!("tenant.suspend", now),
    tenancy!("tenant.resume", now),
    wait("tenant.digest", |st, sh, args, out| Box::pin(tenant::digest(st, sh, args, out))),
    migration!("tenant.migrate"),
    migration!("tenant.migrate.status"),
    migration!("tenant.migrate.pause"),
    migration!("tenant.migrate.resume"),
    migration!("tenant.migrate.cancel"),
    migration!("tenant.migrate.stop"),
    migration!("tenant.migrate.cutover"),
    migration!("tenant.migrate.validate"),
    migration!("tenant.migrate.debug"),
    migration!("tenant.migrate.verify"),
    migration!("tenant.migrate.update"),
    migration!("tenant.migrate.rollback"),
    migration!("tenant.migrate.finalize"),
    migration!("tenant.migrate.approve"),
    migration!("tenant.migrate.reject"),
    migration!("tenant.import.check"),
    migration!("tenant.import.begin"),
    migration!("tenant.import.batch"),
    migration!("tenant.import.resume"),
    migration!("tenant.import.prepare"),
    migration!("tenant.import.activate"),
    migration!("tenant.import.abort"),
    migration!("tenant.import.stop"),
    migration!("tenant.import.backup"),
    migration!("tenant.import.status"),
    migration!("tenant.import.pattern"),
    migration!("tenant.import.fetch"),
    backup!("tenant.backup"),
    backup!("tenant.backup.list"),
    backup!("tenant.backup.info"),
    backup!("tenant.backup.delete"),
    backup!("tenant.backup.jobs"),
    backup!("tenant.restore"),
];

/// The handler of the command at `index` of the command table, if it is a server command.
#[inline]
pub fn handler(index: usize) -> Option<&'static ServerCommand> {
    static BY_INDEX: OnceLock<Vec<Option<&'static ServerCommand>>> = OnceLock::new();
    BY_INDEX
        .get_or_init(|| {
            ferrite_commands::spec::all()
                .iter()
                .map(|spec| match spec.handler {
                    Handler::Server => SERVER_COMMANDS.iter().find(|c| c.name == spec.name),
                    Handler::Data(_) => None,
                })
                .collect()
        })
        .get(index)
        .copied()
        .flatten()
}

/// Runs the server command at `index` of the command table.
pub async fn run(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    index: usize,
    args: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    match handler(index).map(|c| c.run) {
        Some(Run::Now(f)) => f(st, sh, args, out),
        Some(Run::Wait(f)) => f(st, sh, args, out).await,
        None => Err(not_handled(args)),
    }
}

/// Runs a server command queued by MULTI, inside EXEC (only those marked `in_multi`: they
/// complete at once and never take a keyspace lock).
pub fn run_queued(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    index: usize,
    args: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    match handler(index) {
        Some(ServerCommand {
            run: Run::Now(f),
            in_multi: true,
            ..
        }) => {
            st.inside_exec = true;
            let result = f(st, sh, args, out);
            st.inside_exec = false;
            result
        }
        _ => Err(ErrorReply::err("Command not allowed inside a transaction")),
    }
}

/// A server command of the table without a handler: a bug the unit test below catches.
fn not_handled(args: Args<'_>) -> ErrorReply {
    ErrorReply::err(format!(
        "command '{}' is not available on this server",
        String::from_utf8_lossy(args.get(0)).to_lowercase()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_commands::spec::{all, flags};

    #[test]
    fn every_server_command_of_the_table_has_its_handler_and_no_other() {
        for (i, spec) in all().iter().enumerate() {
            match spec.handler {
                Handler::Server => {
                    let h = handler(i).unwrap_or_else(|| panic!("{} has no handler", spec.name));
                    assert_eq!(h.name, spec.name);
                }
                Handler::Data(_) => assert!(handler(i).is_none(), "{}", spec.name),
            }
        }
        let mut seen = std::collections::HashSet::new();
        for c in SERVER_COMMANDS {
            assert!(seen.insert(c.name), "{} has two handlers", c.name);
            let spec = ferrite_commands::lookup(c.name.as_bytes())
                .unwrap_or_else(|| panic!("handler {} is not in the command table", c.name));
            assert!(matches!(spec.handler, Handler::Server), "{}", c.name);
        }
    }

    #[test]
    fn commands_queued_in_multi_run_at_once_and_are_allowed_there() {
        for c in SERVER_COMMANDS.iter().filter(|c| c.in_multi) {
            assert!(matches!(c.run, Run::Now(_)), "{} waits", c.name);
            let spec = ferrite_commands::lookup(c.name.as_bytes()).unwrap();
            assert!(!spec.has(flags::NO_MULTI), "{} is NO_MULTI", c.name);
        }
    }
}
