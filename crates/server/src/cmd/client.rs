//! CLIENT subcommands.

use std::sync::Arc;

use bytes::BytesMut;
use ferrite_protocol::{Args, ErrorReply, ReplyWriter};

use super::ServerResult;
use crate::connection::ClientState;
use crate::dispatch::Flow;
use crate::shared::Shared;

/// Client names may not contain spaces, newlines or other special characters (as in Redis).
pub fn set_name(st: &mut ClientState, name: &[u8]) -> Result<(), ErrorReply> {
    if name.iter().any(|&c| c <= b' ' || c > b'~') {
        return Err(ErrorReply::err(
            "Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    st.info.fields.lock().name = String::from_utf8_lossy(name).into_owned();
    Ok(())
}

pub fn client(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    args: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    let sub = args.get(1).to_ascii_uppercase();
    let proto = st.proto;
    match sub.as_slice() {
        // A tenant's connection has an id within its tenant (see `shared::Viewer`).
        b"ID" if args.len() == 2 => ReplyWriter::new(out, proto).int(st.visible_id() as i64),
        b"SETNAME" if args.len() == 3 => {
            set_name(st, args.get(2))?;
            ReplyWriter::new(out, proto).ok();
        }
        b"GETNAME" if args.len() == 2 => {
            let name = st.info.fields.lock().name.clone();
            let mut w = ReplyWriter::new(out, proto);
            if name.is_empty() {
                w.null();
            } else {
                w.bulk_str(&name);
            }
        }
        b"SETINFO" if args.len() == 4 => {
            let value = args.get(3);
            if value.iter().any(|c| !(b'!'..=b'~').contains(c)) {
                return Err(ErrorReply::err(format!(
                    "{} cannot contain spaces, newlines or special characters.",
                    args.text(2).to_ascii_lowercase()
                )));
            }
            let value = String::from_utf8_lossy(value).into_owned();
            let mut f = st.info.fields.lock();
            if args.is(2, "LIB-NAME") {
                f.lib_name = value;
            } else if args.is(2, "LIB-VER") {
                f.lib_ver = value;
            } else {
                drop(f);
                return Err(ErrorReply::err(format!(
                    "Unrecognized option '{}'",
                    args.text(2)
                )));
            }
            drop(f);
            ReplyWriter::new(out, proto).ok();
        }
        b"CAPA" if args.len() >= 3 => {
            // Valkey 8: a client that understands `-REDIRECT host:port` says so here.
            for i in 2..args.len() {
                if args.is(i, "redirect") {
                    st.capa_redirect = true;
                }
            }
            ReplyWriter::new(out, proto).ok();
        }
        b"LIST" => {
            let mut ids: Option<Vec<u64>> = None;
            let mut i = 2;
            // Every connection is of type "normal"; master, replica and pubsub match none.
            let mut type_matches = true;
            while i < args.len() {
                if args.is(i, "TYPE") && i + 1 < args.len() {
                    type_matches = client_type_is_normal(args.get(i + 1))?;
                    i += 2;
                } else if args.is(i, "ID") && i + 1 < args.len() {
                    let mut v = Vec::new();
                    for j in i + 1..args.len() {
                        let id = args
                            .int(j)
                            .map_err(|_| ErrorReply::err("Invalid client ID"))?;
                        v.push(id as u64);
                    }
                    ids = Some(v);
                    i = args.len();
                } else {
                    return Err(ErrorReply::syntax());
                }
            }
            let clients: Vec<_> = sh.clients.lock().values().cloned().collect();
            let viewer = st.viewer();
            // A tenant connection sees only its own tenant's clients, by their ids within it.
            let mut seen: Vec<(u64, _)> = clients
                .into_iter()
                .filter_map(|c| {
                    let f = c.fields.lock();
                    let visible = c.visible_to(&f, &viewer);
                    let id = c.id_for(&f, &viewer);
                    drop(f);
                    visible.then_some((id, c))
                })
                .collect();
            seen.sort_by_key(|(id, _)| *id);
            let mut text = String::new();
            for (id, c) in seen {
                if !type_matches || ids.as_ref().is_some_and(|ids| !ids.contains(&id)) {
                    continue;
                }
                text.push_str(&c.describe(&viewer));
                text.push('\n');
            }
            ReplyWriter::new(out, proto).verbatim(&text);
        }
        b"INFO" if args.len() == 2 => {
            let mut text = st.info.describe(&st.viewer());
            text.push('\n');
            ReplyWriter::new(out, proto).verbatim(&text);
        }
        b"KILL" if args.len() >= 3 => {
            let killed = kill(st, sh, args)?;
            let mut w = ReplyWriter::new(out, proto);
            if args.len() == 3 {
                // Old form `CLIENT KILL addr`: OK or an error.
                if killed == 0 {
                    return Err(ErrorReply::err("No such client"));
                }
                w.ok();
            } else {
                w.int(killed as i64);
            }
        }
        b"NO-EVICT" | b"NO-TOUCH" if args.len() == 3 => ReplyWriter::new(out, proto).ok(),
        b"REPLY" if args.len() == 3 => {
            use crate::connection::ReplyMode;
            if args.is(2, "on") {
                st.reply_mode = ReplyMode::On;
                ReplyWriter::new(out, proto).ok();
            } else if args.is(2, "off") {
                st.reply_mode = ReplyMode::Off;
            } else if args.is(2, "skip") {
                if st.reply_mode != ReplyMode::Off {
                    st.reply_mode = ReplyMode::SkipNext;
                }
            } else {
                return Err(ErrorReply::syntax());
            }
        }
        b"UNBLOCK" if args.len() == 3 || args.len() == 4 => {
            let n = unblock(st, sh, args)?;
            ReplyWriter::new(out, proto).int(n);
        }
        b"HELP" => {
            let lines = [
                "CLIENT <subcommand> [<arg> ...]. Subcommands are:",
                "ID, SETNAME <name>, GETNAME, SETINFO <LIB-NAME|LIB-VER> <value>,",
                "LIST [TYPE normal] [ID id ...], INFO, KILL <ip:port> | KILL ID <id> | KILL ADDR <ip:port>,",
                "UNBLOCK <clientid> [TIMEOUT|ERROR] (ends a blocking command of a client)",
                "REPLY (ON|OFF|SKIP) (turn this connection's replies on or off, or skip the next one)",
                "CAPA redirect (receive -REDIRECT host:port when a tenant moves)",
            ];
            ReplyWriter::new(out, proto).help(&lines);
        }
        _ => {
            return Err(ErrorReply::bad_subcommand(
                "client",
                args.get(1),
                &[
                    "ID", "SETNAME", "GETNAME", "SETINFO", "CAPA", "LIST", "INFO", "KILL",
                    "UNBLOCK", "NO-EVICT", "NO-TOUCH", "REPLY", "HELP",
                ],
            ));
        }
    }
    Ok(Flow::Continue)
}

/// CLIENT UNBLOCK id [TIMEOUT|ERROR]: 1 if that client was blocked (and is woken), else 0. A
/// tenant reaches only its own tenant's clients.
fn unblock(st: &ClientState, sh: &Shared, args: Args<'_>) -> Result<i64, ErrorReply> {
    let id = args.int(2).map_err(|_| ErrorReply::not_integer())?;
    let mode = if args.len() == 4 {
        if args.is(3, "TIMEOUT") {
            crate::blocking::UnblockMode::Timeout
        } else if args.is(3, "ERROR") {
            crate::blocking::UnblockMode::Error
        } else {
            return Err(ErrorReply::err(
                "CLIENT UNBLOCK reason should be TIMEOUT or ERROR",
            ));
        }
    } else {
        crate::blocking::UnblockMode::Timeout
    };
    // Found by the id the caller knows it by (a tenant's clients have ids within the tenant).
    let viewer = st.viewer();
    let found = sh.clients.lock().values().find_map(|c| {
        let f = c.fields.lock().clone();
        (c.visible_to(&f, &viewer) && c.id_for(&f, &viewer) as i64 == id).then(|| c.clone())
    });
    let Some(c) = found else {
        return Ok(0);
    };
    Ok(crate::blocking::request_unblock(&c, mode) as i64)
}

/// CLIENT KILL <addr> | KILL [ID id] [ADDR addr] [SKIPME yes|no]. Tenants may only kill their
/// own tenant's clients (by their ids within the tenant), never an administrator's session.
fn kill(st: &ClientState, sh: &Shared, args: Args<'_>) -> Result<usize, ErrorReply> {
    let mut id = None;
    let mut addr = None;
    let mut laddr = None;
    let mut user = None;
    let mut type_matches = true;
    let mut skipme = true;
    if args.len() == 3 {
        addr = Some(args.text(2));
        skipme = false;
    } else {
        let mut i = 2;
        while i + 1 < args.len() {
            let v = args.get(i + 1);
            if args.is(i, "ID") {
                match args.int(i + 1) {
                    Ok(n) if n > 0 => id = Some(n as u64),
                    _ => return Err(ErrorReply::err("client-id should be greater than 0")),
                }
            } else if args.is(i, "ADDR") {
                addr = Some(String::from_utf8_lossy(v).into_owned());
            } else if args.is(i, "SKIPME") {
                skipme = match () {
                    _ if args.is(i + 1, "yes") => true,
                    _ if args.is(i + 1, "no") => false,
                    _ => return Err(ErrorReply::syntax()),
                };
            } else if args.is(i, "TYPE") {
                type_matches &= client_type_is_normal(v)?;
            } else if args.is(i, "LADDR") {
                laddr = Some(String::from_utf8_lossy(v).into_owned());
            } else if args.is(i, "USER") {
                user = Some(String::from_utf8_lossy(v).into_owned());
            } else {
                return Err(ErrorReply::syntax());
            }
            i += 2;
        }
        if i != args.len() {
            return Err(ErrorReply::syntax());
        }
    }
    if !type_matches {
        return Ok(0);
    }
    let clients: Vec<_> = sh.clients.lock().values().cloned().collect();
    let viewer = st.viewer();
    let mut n = 0;
    for c in clients {
        let f = c.fields.lock().clone();
        if !c.visible_to(&f, &viewer) {
            continue;
        }
        if laddr.as_ref().is_some_and(|a| *a != c.laddr.to_string()) {
            continue;
        }
        if user.as_ref().is_some_and(|u| **u != *f.tenant) {
            continue;
        }
        if id.is_some_and(|i| i != c.id_for(&f, &viewer)) {
            continue;
        }
        if addr.as_ref().is_some_and(|a| *a != c.addr.to_string()) {
            continue;
        }
        if skipme && c.id == st.id {
            continue;
        }
        c.kill();
        n += 1;
    }
    Ok(n)
}

/// A `TYPE` filter of CLIENT LIST / CLIENT KILL: every Ferrite connection is a normal client, so
/// only `normal` matches; the other types Redis knows match nothing; anything else is an error.
fn client_type_is_normal(t: &[u8]) -> Result<bool, ErrorReply> {
    match t.to_ascii_lowercase().as_slice() {
        b"normal" => Ok(true),
        b"master" | b"replica" | b"slave" | b"pubsub" => Ok(false),
        _ => Err(ErrorReply::err(format!(
            "Unknown client type '{}'",
            String::from_utf8_lossy(t)
        ))),
    }
}
