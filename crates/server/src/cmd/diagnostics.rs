//! SLOWLOG, LATENCY, ACL, WAIT and SWAPDB: Redis's diagnostics and compatibility commands, each
//! scoped to the connection's tenant (a tenant sees only its own slow commands, and itself as
//! the only user).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::BytesMut;
use ferrite_commands::spec;
use ferrite_protocol::args::parse_i64;
use ferrite_protocol::{Args, ErrorReply, ReplyWriter};
use rand::RngCore;

use super::ServerResult;
use crate::connection::ClientState;
use crate::dispatch::Flow;
use crate::errors;
use crate::shared::Shared;

pub fn slowlog(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    args: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    let tenant = st.tenant.id().to_string();
    let mut w = ReplyWriter::new(out, st.proto);
    let sub = args.get(1).to_ascii_uppercase();
    match sub.as_slice() {
        b"GET" if args.len() <= 3 => {
            let count = if args.len() == 3 {
                let n = args.int(2)?;
                if n < -1 {
                    return Err(ErrorReply::err(
                        "count should be greater than or equal to -1",
                    ));
                }
                (n >= 0).then_some(n as usize)
            } else {
                Some(10)
            };
            let entries = sh.diagnostics.slowlog(&tenant, count);
            w.array(entries.len());
            for e in entries {
                w.array(6);
                w.int(e.id as i64);
                w.int(e.time as i64);
                w.int(e.micros as i64);
                w.array(e.args.len());
                for a in &e.args {
                    w.bulk(a);
                }
                // Who ran it is hidden from the tenant when it was not one of its clients.
                if e.by_visitor && !st.admin {
                    w.bulk_str("");
                    w.bulk_str("");
                } else {
                    w.bulk_str(&e.client_addr);
                    w.bulk_str(&e.client_name);
                }
            }
        }
        b"LEN" if args.len() == 2 => w.int(sh.diagnostics.slowlog_len(&tenant) as i64),
        b"RESET" if args.len() == 2 => {
            sh.diagnostics.slowlog_reset(&tenant);
            w.ok();
        }
        b"HELP" if args.len() == 2 => w.help(&[
            "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET [<count>]",
            "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
            "    Entries are made of:",
            "    id, timestamp, time in microseconds, arguments array, client IP and port,",
            "    client name",
            "LEN",
            "    Return the length of the slowlog.",
            "RESET",
            "    Reset the slowlog.",
            "HELP",
            "    Print this help.",
        ]),
        _ => {
            return Err(ErrorReply::bad_subcommand(
                "slowlog",
                args.get(1),
                &["GET", "LEN", "RESET", "HELP"],
            ));
        }
    }
    Ok(Flow::Continue)
}

pub fn latency(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    args: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    let tenant = st.tenant.id().to_string();
    let mut w = ReplyWriter::new(out, st.proto);
    let sub = args.get(1).to_ascii_uppercase();
    match sub.as_slice() {
        b"LATEST" if args.len() == 2 => {
            let events = sh.diagnostics.latency(&tenant);
            w.array(events.len());
            for (name, e) in events {
                let (t, ms) = e.samples.back().copied().unwrap_or((0, 0));
                w.array(4);
                w.bulk_str(name);
                w.int(t as i64);
                w.int(ms as i64);
                w.int(e.max as i64);
            }
        }
        b"HISTORY" if args.len() == 3 => {
            let name = args.text(2);
            let events = sh.diagnostics.latency(&tenant);
            match events.into_iter().find(|(n, _)| *n == name) {
                Some((_, e)) => {
                    w.array(e.samples.len());
                    for (t, ms) in e.samples {
                        w.array(2);
                        w.int(t as i64);
                        w.int(ms as i64);
                    }
                }
                None => w.array(0),
            }
        }
        b"RESET" => {
            let names: Vec<String> = args
                .tail(2)
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            w.int(sh.diagnostics.latency_reset(&tenant, &names) as i64);
        }
        b"DOCTOR" if args.len() == 2 => {
            let threshold = sh
                .hot
                .latency_threshold_ms
                .load(std::sync::atomic::Ordering::Relaxed);
            let events = sh.diagnostics.latency(&tenant);
            let text = if threshold == 0 {
                "I'm sorry, Dave, I can't do that. Latency monitoring is disabled in this Ferrite \
                 instance. You may use \"CONFIG SET latency-monitor-threshold <milliseconds>.\" \
                 in order to enable it.\n"
                    .to_string()
            } else if events.is_empty() {
                "Dave, no latency spike was observed during the lifetime of this tenant's \
                 commands. Nothing to report.\n"
                    .to_string()
            } else {
                let mut t = String::from(
                    "Dave, I have observed latency spikes in this tenant's commands.\n\n",
                );
                for (i, (name, e)) in events.iter().enumerate() {
                    let avg = e.samples.iter().map(|(_, ms)| ms).sum::<u64>()
                        / e.samples.len().max(1) as u64;
                    t.push_str(&format!(
                        "{}. {}: {} latency spikes (average {}ms, worst {}ms).\n",
                        i + 1,
                        name,
                        e.samples.len(),
                        avg,
                        e.max
                    ));
                }
                t.push_str(
                    "\nI have a few advices for you:\n- Check SLOWLOG GET for the commands \
                     that took longest; large values and O(N) commands over big collections \
                     are the usual cause.\n",
                );
                t
            };
            w.verbatim(&text);
        }
        b"HELP" if args.len() == 2 => w.help(&[
            "LATENCY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "DOCTOR",
            "    Return a human readable latency analysis report.",
            "HISTORY <event>",
            "    Return time-latency samples for the <event> class.",
            "LATEST",
            "    Return the latest latency samples for all events.",
            "RESET [<event> ...]",
            "    Reset latency data of one or more <event> classes.",
            "    (default: reset all data for all event classes)",
            "HELP",
            "    Prints this help.",
        ]),
        _ => {
            return Err(ErrorReply::bad_subcommand(
                "latency",
                args.get(1),
                &["LATEST", "HISTORY", "RESET", "DOCTOR", "HELP"],
            ));
        }
    }
    Ok(Flow::Continue)
}

/// WAIT numreplicas timeout: Ferrite has no replicas, so no write is ever acknowledged by one:
/// the answer is 0 at once (after Redis's argument checks).
pub fn wait(st: &mut ClientState, args: Args<'_>, out: &mut BytesMut) -> ServerResult {
    let acked = wait_answer(args.get(1), args.get(2))?;
    ReplyWriter::new(out, st.proto).int(acked);
    Ok(Flow::Continue)
}

/// WAIT's answer, from a client or a script (Redis 7.2 lets scripts call it; it never blocks
/// there): Ferrite has no replicas, so none acknowledges, at once.
pub fn wait_answer(numreplicas: &[u8], timeout: &[u8]) -> Result<i64, ErrorReply> {
    parse_i64(numreplicas).ok_or_else(ErrorReply::not_integer)?;
    let timeout = parse_i64(timeout)
        .ok_or_else(|| ErrorReply::err("timeout is not an integer or out of range"))?;
    if timeout < 0 {
        return Err(ErrorReply::err("timeout is negative"));
    }
    Ok(0)
}

/// SWAPDB with one database: swapping database 0 with itself is allowed and changes nothing.
pub fn swapdb(st: &mut ClientState, args: Args<'_>, out: &mut BytesMut) -> ServerResult {
    let a = args
        .int(1)
        .map_err(|_| ErrorReply::err("invalid first DB index"))?;
    let b = args
        .int(2)
        .map_err(|_| ErrorReply::err("invalid second DB index"))?;
    if a != 0 || b != 0 {
        return Err(ErrorReply::err("DB index is out of range"));
    }
    ReplyWriter::new(out, st.proto).ok();
    Ok(Flow::Continue)
}

/// The users a connection may see: a tenant connection its own tenant and the tenant's ACL
/// users; an administrator every tenant (the administrator itself is Redis's `default` user)
/// and the ACL users of the tenant it is bound to. ACL users are named as their tenant knows
/// them (`bob`; AUTH names a user of another tenant than `default` as `<tenant>:bob`).
fn visible_users(st: &ClientState, sh: &Shared) -> Vec<String> {
    let mut users: Vec<String> = if st.admin {
        let mut v: Vec<String> = sh
            .registry
            .list()
            .iter()
            .map(|t| t.id().to_string())
            .collect();
        v.push("default".into());
        v
    } else {
        vec![st.tenant.id().to_string()]
    };
    users.extend(st.tenant.acl().names());
    users.sort();
    users.dedup();
    users
}

/// The bound tenant's ACL user `name`, if it is one the connection may see.
fn acl_user(st: &ClientState, name: &str) -> Option<Arc<ferrite_tenancy::acl::AclUser>> {
    st.tenant.acl().get(name)
}

fn acl_line(st: &ClientState, user: &str) -> String {
    match acl_user(st, user) {
        Some(u) => format!("user {user} {}", u.rules().describe()),
        None => format!("user {user} on sanitize-payload #<hidden> ~* &* +@all"),
    }
}

/// ACL SETUSER and DELUSER change the tenant's record: only while it is served here and not
/// being migrated (a migration ships the users when it starts).
fn acl_may_change(st: &ClientState, sh: &Shared) -> Result<(), ErrorReply> {
    crate::dispatch::check_ownership(st, sh, &st.tenant)?;
    if let Some(m) = crate::hooks::running_migration(sh, st.tenant.id()) {
        return Err(ErrorReply::err(format!(
            "tenant '{}' is being migrated ({m}); change its ACL users when the migration ends",
            st.tenant.id()
        )));
    }
    Ok(())
}

pub fn acl(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    args: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    let mut w = ReplyWriter::new(out, st.proto);
    let sub = args.get(1).to_ascii_uppercase();
    match sub.as_slice() {
        b"WHOAMI" if args.len() == 2 => {
            let me = match (&st.acl_user, st.admin) {
                (Some(u), _) => u.name().to_string(),
                (None, true) => "default".to_string(),
                (None, false) => st.tenant.id().to_string(),
            };
            w.bulk_str(&me);
        }
        b"USERS" if args.len() == 2 => {
            let users = visible_users(st, sh);
            w.array(users.len());
            for u in users {
                w.bulk_str(&u);
            }
        }
        b"LIST" if args.len() == 2 => {
            let users = visible_users(st, sh);
            w.array(users.len());
            for u in users {
                w.bulk_str(&acl_line(st, &u));
            }
        }
        b"GETUSER" if args.len() == 3 => {
            let name = args.text(2);
            if let Some(u) = acl_user(st, &name) {
                // Password hashes are never shown (Redis shows them; Ferrite keeps
                // credentials to itself): one "#<hidden>" per password.
                let r = u.rules();
                w.map(6);
                w.bulk_str("flags");
                let mut flags = vec![if r.enabled() { "on" } else { "off" }];
                if r.nopass() {
                    flags.push("nopass");
                }
                flags.push("sanitize-payload");
                w.array(flags.len());
                for f in flags {
                    w.bulk_str(f);
                }
                w.bulk_str("passwords");
                w.array(r.password_count());
                for _ in 0..r.password_count() {
                    w.bulk_str("#<hidden>");
                }
                w.bulk_str("commands");
                w.bulk_str(&r.command_rules());
                w.bulk_str("keys");
                w.bulk_str(&r.key_tokens().join(" "));
                w.bulk_str("channels");
                let channels = r.channel_tokens();
                w.bulk_str(
                    if channels == ["resetchannels"] {
                        String::new()
                    } else {
                        channels.join(" ")
                    }
                    .as_str(),
                );
                w.bulk_str("selectors");
                w.array(0);
                return Ok(Flow::Continue);
            }
            if !visible_users(st, sh).contains(&name) {
                w.null();
                return Ok(Flow::Continue);
            }
            // Password hashes are never shown (Redis shows them; Ferrite keeps tenant
            // credentials to itself).
            w.map(6);
            w.bulk_str("flags");
            w.array(2);
            w.bulk_str("on");
            w.bulk_str("sanitize-payload");
            w.bulk_str("passwords");
            w.array(0);
            w.bulk_str("commands");
            w.bulk_str("+@all");
            w.bulk_str("keys");
            w.bulk_str("~*");
            w.bulk_str("channels");
            w.bulk_str("&*");
            w.bulk_str("selectors");
            w.array(0);
        }
        b"SETUSER" if args.len() >= 3 => {
            acl_may_change(st, sh)?;
            let name = std::str::from_utf8(args.get(2))
                .map_err(|_| ErrorReply::err("Usernames must be valid UTF-8"))?;
            let rules: Vec<String> = (3..args.len())
                .map(|i| {
                    std::str::from_utf8(args.get(i))
                        .map(str::to_string)
                        .map_err(|_| {
                            ErrorReply::err(format!(
                                "Error in ACL SETUSER modifier '{}': Syntax error",
                                args.text(i)
                            ))
                        })
                })
                .collect::<Result<_, _>>()?;
            let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
            let undo = st
                .tenant
                .acl()
                .set_user(name, &rules)
                .map_err(|e| errors::acl(&e))?;
            if let Err(e) = sh.registry.persist(&st.tenant) {
                st.tenant.acl().undo(undo);
                return Err(errors::tenancy(&e));
            }
            w.ok();
        }
        b"DELUSER" if args.len() >= 3 => {
            acl_may_change(st, sh)?;
            let mut undo = Vec::new();
            for i in 2..args.len() {
                let name = args.text(i);
                if name == "default" {
                    for u in undo.into_iter().rev() {
                        st.tenant.acl().undo(u);
                    }
                    return Err(ErrorReply::err("The 'default' user cannot be removed"));
                }
                if let Some(u) = st.tenant.acl().delete(&name) {
                    undo.push(u);
                }
            }
            if !undo.is_empty()
                && let Err(e) = sh.registry.persist(&st.tenant)
            {
                for u in undo.into_iter().rev() {
                    st.tenant.acl().undo(u);
                }
                return Err(errors::tenancy(&e));
            }
            w.int(undo.len() as i64);
        }
        b"DRYRUN" if args.len() >= 4 => {
            let name = args.text(2);
            let user = acl_user(st, &name);
            if user.is_none() && !visible_users(st, sh).contains(&name) {
                return Err(ErrorReply::err(format!("User '{name}' not found")));
            }
            let inner = args.tail(3);
            let Some((index, spec)) = ferrite_commands::lookup_indexed(inner.get(0)) else {
                return Err(ErrorReply::err(format!(
                    "Command '{}' not found",
                    inner.text(0)
                )));
            };
            if !spec.arity_ok(inner.len()) {
                return Err(ErrorReply::wrong_arity(spec.name));
            }
            // Tenants and the administrator are not limited by ACL rules.
            match user.map(|u| u.rules().check(index, spec, &inner)) {
                Some(Err(d)) => w.bulk_str(&errors::acl_denied_verbose(&d)),
                _ => w.ok(),
            }
        }
        b"CAT" if args.len() <= 3 => {
            let all = spec::all();
            if args.len() == 2 {
                let mut cats: Vec<&str> = all.iter().flat_map(|s| s.acl_categories()).collect();
                cats.sort_unstable();
                cats.dedup();
                w.array(cats.len());
                for c in cats {
                    w.bulk_str(c);
                }
            } else {
                let cat = args.text(2).to_ascii_lowercase();
                let names: Vec<&str> = all
                    .iter()
                    .filter(|s| s.acl_categories().contains(&cat.as_str()))
                    .map(|s| s.name)
                    .collect();
                if names.is_empty() {
                    return Err(ErrorReply::err(format!(
                        "Unknown category '{}'",
                        args.text(2)
                    )));
                }
                w.array(names.len());
                for n in names {
                    w.bulk_str(n);
                }
            }
        }
        b"LOG" if args.len() <= 3 => {
            // The connection's tenant's log (see crate::acl_log); entries about logins that
            // named no tenant are shown to administrators only.
            let tenant = st.tenant.id();
            if args.len() == 3 && args.is(2, "RESET") {
                sh.acl_log.reset(tenant, st.admin);
                w.ok();
                return Ok(Flow::Continue);
            }
            let count = if args.len() == 3 {
                // As in Redis, a negative count shows nothing.
                usize::try_from(args.int(2)?.max(0)).unwrap_or(usize::MAX)
            } else {
                10
            };
            let max_len =
                usize::try_from(sh.hot.acllog_max_len.load(Relaxed)).unwrap_or(usize::MAX);
            let entries = sh.acl_log.entries(tenant, count, st.admin, max_len);
            let now = ferrite_storage::now_ms();
            w.array(entries.len());
            for e in entries {
                let d = &e.denial;
                w.map(10);
                w.bulk_str("count");
                w.int(e.count as i64);
                w.bulk_str("reason");
                w.bulk_str(d.reason.name());
                w.bulk_str("context");
                w.bulk_str(d.context.name());
                w.bulk_str("object");
                w.bulk(&d.object);
                w.bulk_str("username");
                w.bulk_str(&d.username);
                w.bulk_str("age-seconds");
                w.double(now.saturating_sub(e.updated_ms) as f64 / 1000.0);
                w.bulk_str("client-info");
                w.bulk_str(&d.client_info);
                w.bulk_str("entry-id");
                w.int(e.entry_id as i64);
                w.bulk_str("timestamp-created");
                w.int(e.created_ms as i64);
                w.bulk_str("timestamp-last-updated");
                w.int(e.updated_ms as i64);
            }
        }
        b"GENPASS" if args.len() <= 3 => {
            let bits = if args.len() == 3 { args.int(2)? } else { 256 };
            if !(1..=4096).contains(&bits) {
                return Err(ErrorReply::err(
                    "ACL GENPASS argument must be the number of bits for the output password, a positive number up to 4096",
                ));
            }
            let chars = (bits as usize).div_ceil(4);
            let mut bytes = vec![0u8; chars.div_ceil(2)];
            rand::rng().fill_bytes(&mut bytes);
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            w.bulk_str(&hex[..chars]);
        }
        b"LOAD" | b"SAVE" => {
            return Err(ErrorReply::err(format!(
                "ACL {} is not supported: ACL users live in their tenant's record (persisted \
                 with the tenant catalog); tenants are managed with TENANT.CREATE, \
                 TENANT.LIMITS and TENANT.DELETE",
                String::from_utf8_lossy(&sub)
            )));
        }
        b"HELP" if args.len() == 2 => w.help(&[
            "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "CAT [<category>]",
            "    List all commands that belong to <category>, or all command categories",
            "    when no category is specified.",
            "GETUSER <username>",
            "    Get the user's details (tenants are users).",
            "SETUSER <username> <attribute> [<attribute> ...]",
            "    Create or modify an ACL user of the connection's tenant.",
            "DELUSER <username> [<username> ...]",
            "    Delete ACL users of the connection's tenant.",
            "DRYRUN <username> <command> [<arg> ...]",
            "    Check whether the user may run the command.",
            "LIST",
            "    Show users in ACL format (a tenant sees only itself).",
            "USERS",
            "    List the names of the users.",
            "WHOAMI",
            "    Return the current connection username.",
            "LOG [<count> | RESET]",
            "    Show the ACL log entries: the connection's tenant's refused commands, keys and",
            "    channels, and failed logins.",
            "GENPASS [<bits>]",
            "    Generate a secure password.",
            "HELP",
            "    Prints this help.",
        ]),
        _ => {
            return Err(ErrorReply::bad_subcommand(
                "acl",
                args.get(1),
                &[
                    "WHOAMI", "USERS", "LIST", "GETUSER", "SETUSER", "DELUSER", "DRYRUN", "CAT",
                    "LOG", "GENPASS", "HELP",
                ],
            ));
        }
    }
    Ok(Flow::Continue)
}
