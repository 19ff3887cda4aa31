//! COMMAND, CONFIG, INFO, SHUTDOWN.

use std::sync::Arc;

use bytes::BytesMut;
use ferrite_commands::spec::{self, CommandSpec};
use ferrite_commands::syntax::{self, Arg, Subcommand};
use ferrite_protocol::{Args, ErrorReply, ReplyWriter};
use ferrite_storage::glob::Glob;

use super::ServerResult;
use crate::connection::ClientState;
use crate::dispatch::Flow;
use crate::shared::Shared;
use crate::{config_params, info};

fn command_info(w: &mut ReplyWriter<'_>, s: &CommandSpec) {
    w.array(10);
    w.bulk_str(s.name);
    w.int(i64::from(s.arity));
    let flags: Vec<_> = s.flag_names().collect();
    w.set(flags.len());
    for f in flags {
        w.simple(f);
    }
    w.int(i64::from(s.first_key));
    w.int(i64::from(s.last_key));
    w.int(i64::from(s.step));
    let cats = s.acl_categories();
    w.set(cats.len());
    for c in cats {
        w.simple(&format!("@{c}"));
    }
    w.array(0);
    w.array(0);
    w.array(0);
}

/// One command's `COMMAND DOCS` entry: its name, then a map shaped like Redis 7's, with the
/// argument tree (`redis-cli` builds its hints and `HELP` lines from it) and, for containers
/// such as CLIENT, the subcommands.
fn command_docs(w: &mut ReplyWriter<'_>, s: &CommandSpec) {
    w.bulk_str(s.name);
    let subs: Vec<_> = syntax::subcommands(s.name).collect();
    doc_map(w, s.summary, s.group, syntax::arguments(s.name), &subs);
}

fn doc_map(
    w: &mut ReplyWriter<'_>,
    summary: &str,
    group: &str,
    args: &[Arg],
    subs: &[&'static Subcommand],
) {
    w.map(3 + usize::from(!args.is_empty()) + usize::from(!subs.is_empty()));
    w.bulk_str("summary");
    w.bulk_str(summary);
    w.bulk_str("since");
    w.bulk_str("1.0.0");
    w.bulk_str("group");
    w.bulk_str(group);
    // Like Redis, a command without arguments has no "arguments" field at all.
    if !args.is_empty() {
        w.bulk_str("arguments");
        doc_args(w, args);
    }
    if !subs.is_empty() {
        w.bulk_str("subcommands");
        w.map(subs.len());
        for sub in subs {
            w.bulk_str(sub.name);
            doc_map(w, sub.summary, group, syntax::arguments(sub.name), &[]);
        }
    }
}

fn doc_args(w: &mut ReplyWriter<'_>, args: &[Arg]) {
    w.array(args.len());
    for a in args {
        let flags: Vec<&str> = [
            (a.optional, "optional"),
            (a.multiple, "multiple"),
            (a.multiple_token, "multiple_token"),
        ]
        .into_iter()
        .filter_map(|(on, f)| on.then_some(f))
        .collect();
        w.map(
            2 + usize::from(a.token.is_some())
                + usize::from(!flags.is_empty())
                + usize::from(!a.args.is_empty()),
        );
        w.bulk_str("name");
        w.bulk_str(&a.name);
        w.bulk_str("type");
        w.bulk_str(a.kind.as_str());
        if let Some(t) = &a.token {
            w.bulk_str("token");
            w.bulk_str(t);
        }
        // Redis sends the flags as a set of status strings.
        if !flags.is_empty() {
            w.bulk_str("flags");
            w.set(flags.len());
            for f in flags {
                w.simple(f);
            }
        }
        if !a.args.is_empty() {
            w.bulk_str("arguments");
            doc_args(w, &a.args);
        }
    }
}

pub fn command(st: &mut ClientState, args: Args<'_>, out: &mut BytesMut) -> ServerResult {
    let all = spec::all();
    let mut w = ReplyWriter::new(out, st.proto);
    if args.len() == 1 {
        w.array(all.len());
        for s in all {
            command_info(&mut w, s);
        }
        return Ok(Flow::Continue);
    }
    let sub = args.get(1).to_ascii_uppercase();
    match sub.as_slice() {
        b"COUNT" if args.len() == 2 => w.int(all.len() as i64),
        b"LIST" => {
            let keep: Box<dyn Fn(&CommandSpec) -> bool> = match args.len() {
                2 => Box::new(|_| true),
                5 if args.is(2, "FILTERBY") => {
                    let value = args.get(4).to_ascii_lowercase();
                    if args.is(3, "MODULE") {
                        Box::new(|_| false)
                    } else if args.is(3, "ACLCAT") {
                        let cat = String::from_utf8_lossy(&value).into_owned();
                        Box::new(move |s| s.acl_categories().contains(&cat.as_str()))
                    } else if args.is(3, "PATTERN") {
                        let glob = Glob::new(&value, true);
                        Box::new(move |s| glob.matches(s.name.as_bytes()))
                    } else {
                        return Err(ErrorReply::syntax());
                    }
                }
                _ => return Err(ErrorReply::syntax()),
            };
            let names: Vec<_> = all.iter().filter(|s| keep(s)).map(|s| s.name).collect();
            w.array(names.len());
            for n in names {
                w.bulk_str(n);
            }
        }
        b"INFO" => {
            if args.len() == 2 {
                w.array(all.len());
                for s in all {
                    command_info(&mut w, s);
                }
            } else {
                w.array(args.len() - 2);
                for name in args.tail(2).iter() {
                    match spec::lookup(name) {
                        Some(s) => command_info(&mut w, s),
                        None => w.null_array(),
                    }
                }
            }
        }
        b"DOCS" => {
            if args.len() == 2 {
                w.map(all.len());
                for s in all {
                    command_docs(&mut w, s);
                }
            } else {
                let found: Vec<_> = args.tail(2).iter().filter_map(spec::lookup).collect();
                w.map(found.len());
                for s in found {
                    command_docs(&mut w, s);
                }
            }
        }
        b"GETKEYS" if args.len() >= 3 => {
            let inner = args.tail(2);
            let Some(s) = spec::lookup(inner.get(0)) else {
                return Err(ErrorReply::err("Invalid command specified"));
            };
            if !s.arity_ok(inner.len()) {
                return Err(ErrorReply::err(
                    "Invalid number of arguments specified for command",
                ));
            }
            let keys = match s.special_keys(&inner) {
                Some(Ok(keys)) => keys,
                // EVAL and FCALL may have no keys (Redis: no-mandatory-keys).
                Some(Err(())) if s.name.starts_with("eval") || s.name.starts_with("fcall") => {
                    Vec::new()
                }
                Some(Err(())) => {
                    return Err(ErrorReply::err("Invalid arguments specified for command"));
                }
                None => {
                    let keys: Vec<_> = s.keys(&inner).collect();
                    if keys.is_empty() {
                        return Err(ErrorReply::err("The command has no key arguments"));
                    }
                    keys
                }
            };
            w.array(keys.len());
            for k in keys {
                w.bulk(k);
            }
        }
        b"HELP" => {
            let lines = [
                "COMMAND [<subcommand> [<arg> ...]]. Subcommands are:",
                "(no subcommand): every command's details",
                "COUNT, LIST, INFO [<name> ...], DOCS [<name> ...], GETKEYS <full-command>",
            ];
            w.help(&lines);
        }
        _ => {
            return Err(ErrorReply::bad_subcommand(
                "command",
                args.get(1),
                &["COUNT", "LIST", "INFO", "DOCS", "GETKEYS", "HELP"],
            ));
        }
    }
    Ok(Flow::Continue)
}

/// Parameters that belong to the connection's tenant rather than to the server: CONFIG GET/SET
/// reads and changes the bound tenant's (an administrator's: the tenant it is bound to), and a
/// tenant may run CONFIG for these alone ([`tenant_may_config`]).
const TENANT_PARAMS: &[&str] = &["notify-keyspace-events"];

/// May a connection that is not an administrator run this CONFIG? Only GET and SET that name
/// per-tenant parameters and nothing else (a GET pattern must not match a server parameter).
pub fn tenant_may_config(args: &Args<'_>) -> bool {
    let sub = args.get(1).to_ascii_uppercase();
    let tenant_only = |name: &[u8]| {
        let g = Glob::new(&name.to_ascii_lowercase(), true);
        TENANT_PARAMS.iter().any(|p| g.matches(p.as_bytes()))
            && !config_params::PARAMS
                .iter()
                .any(|p| g.matches(p.name.as_bytes()))
    };
    match sub.as_slice() {
        b"GET" if args.len() >= 3 => args.tail(2).iter().all(tenant_only),
        b"SET" if args.len() >= 4 && args.len().is_multiple_of(2) => {
            (2..args.len()).step_by(2).all(|i| tenant_only(args.get(i)))
        }
        _ => false,
    }
}

fn tenant_param(st: &ClientState, name: &str) -> String {
    match name {
        "notify-keyspace-events" => {
            ferrite_storage::notify::format_flags(st.tenant.keyspace().key_events().flags())
        }
        _ => String::new(),
    }
}

pub fn config(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    args: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    let sub = args.get(1).to_ascii_uppercase();
    match sub.as_slice() {
        b"GET" if args.len() >= 3 => {
            let cfg = sh.config.read().clone();
            let mut pairs: Vec<(String, String)> = Vec::new();
            let globs: Vec<Glob> = args
                .tail(2)
                .iter()
                .map(|pat| Glob::new(&pat.to_ascii_lowercase(), true))
                .collect();
            if st.admin {
                for p in &config_params::PARAMS {
                    let matched = globs.iter().any(|g| g.matches(p.name.as_bytes()));
                    if matched {
                        pairs.push((p.name.to_string(), (p.get)(&cfg)));
                    }
                }
            }
            for name in TENANT_PARAMS {
                if globs.iter().any(|g| g.matches(name.as_bytes())) {
                    pairs.push((name.to_string(), tenant_param(st, name)));
                }
            }
            ReplyWriter::new(out, st.proto).str_map(&pairs);
        }
        b"SET" if args.len() >= 4 && args.len().is_multiple_of(2) => {
            // The tenant's parameters are checked first and applied only if the server's
            // succeed: all or nothing.
            let mut server_pairs: Vec<&[u8]> = Vec::new();
            let mut events = None;
            for i in (2..args.len()).step_by(2) {
                let name = args.text(i).to_ascii_lowercase();
                if TENANT_PARAMS.contains(&name.as_str()) {
                    let flags =
                        ferrite_storage::notify::parse_flags(&args.text(i + 1)).map_err(|why| {
                            ErrorReply::err(format!(
                                "CONFIG SET failed (possibly related to argument '{name}') - {why}"
                            ))
                        })?;
                    events = Some(flags);
                } else {
                    server_pairs.push(args.get(i));
                    server_pairs.push(args.get(i + 1));
                }
            }
            if !server_pairs.is_empty() {
                let req = ferrite_protocol::OwnedRequest::from_parts(&server_pairs);
                config_params::set(sh, req.args())?;
            }
            if let Some(flags) = events {
                crate::pubsub::set_keyspace_events(sh, &st.tenant, flags);
            }
            ReplyWriter::new(out, st.proto).ok();
        }
        b"RESETSTAT" if args.len() == 2 => {
            sh.cmd_stats.reset();
            for t in sh.registry.list() {
                t.stats.reset_command_counters();
            }
            ReplyWriter::new(out, st.proto).ok();
        }
        b"REWRITE" if args.len() == 2 => {
            return Err(ErrorReply::err(
                "CONFIG REWRITE is not supported: edit ferrite.toml, which this server does not own",
            ));
        }
        b"HELP" if args.len() == 2 => {
            let lines = [
                "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET <pattern> [<pattern> ...]",
                "    Return parameters matching the glob-like <pattern>s and their values.",
                "SET <directive> <value> [<directive> <value> ...]",
                "    Set the configuration <directive>s to <value>s (ferrite.toml is not rewritten).",
                "RESETSTAT",
                "    Reset statistics reported by the INFO command.",
                "HELP",
                "    Print this help.",
            ];
            ReplyWriter::new(out, st.proto).help(&lines);
        }
        _ => {
            return Err(ErrorReply::bad_subcommand(
                "config",
                args.get(1),
                &["GET", "SET", "RESETSTAT", "REWRITE", "HELP"],
            ));
        }
    }
    Ok(Flow::Continue)
}

pub fn info(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    args: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    let sections: Vec<String> = args
        .tail(1)
        .iter()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
        .collect();
    let text = info::render(st, sh, &sections);
    ReplyWriter::new(out, st.proto).verbatim(&text);
    Ok(Flow::Continue)
}

pub async fn shutdown(
    _st: &mut ClientState,
    sh: &Arc<Shared>,
    args: Args<'_>,
    _out: &mut BytesMut,
) -> ServerResult {
    // Redis's rules: SAVE and NOSAVE exclude each other, ABORT stands alone. NOW and FORCE
    // change nothing here (there is no replica to wait for; a failed SAVE refuses).
    let (mut save, mut nosave, mut abort, mut other) = (false, false, false, false);
    for a in args.tail(1).iter() {
        match a.to_ascii_uppercase().as_slice() {
            b"NOSAVE" => nosave = true,
            b"SAVE" => save = true,
            b"NOW" | b"FORCE" => other = true,
            b"ABORT" => abort = true,
            _ => return Err(ErrorReply::syntax()),
        }
    }
    if (save && nosave) || (abort && (save || nosave || other)) {
        return Err(ErrorReply::syntax());
    }
    if abort {
        return Err(ErrorReply::err("No shutdown in progress."));
    }
    super::persistence::before_shutdown(sh, save).await?;
    tracing::info!("SHUTDOWN requested by a client");
    sh.begin_shutdown();
    // Like Redis, the connection closes without a reply on success.
    Ok(Flow::Close)
}
