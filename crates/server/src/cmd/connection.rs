//! PING, ECHO, QUIT, HELLO, AUTH, SELECT, RESET, TIME.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ferrite_protocol::{Args, ErrorReply, Protocol, ReplyWriter};
use ferrite_tenancy::migration::MIGRATION_USER;
use ferrite_tenancy::{DEFAULT_TENANT, secrets_equal};

use super::ServerResult;
use crate::connection::ClientState;
use crate::dispatch::Flow;
use crate::errors;
use crate::shared::Shared;

/// Redis version we are compatible with, reported where clients look for one.
pub const COMPAT_VERSION: &str = "7.2.0";

pub fn ping(st: &mut ClientState, args: Args<'_>, out: &mut BytesMut) -> ServerResult {
    let mut w = ReplyWriter::new(out, st.proto);
    if args.len() <= 2 && crate::pubsub::in_resp2_subscribed_mode(st) {
        // A subscribed RESP2 connection gets PING's answer in the shape of a message.
        w.array(2);
        w.bulk(b"pong");
        w.bulk(if args.len() == 2 { args.get(1) } else { b"" });
        return Ok(Flow::Continue);
    }
    match args.len() {
        1 => w.simple("PONG"),
        2 => w.bulk(args.get(1)),
        _ => return Err(ErrorReply::wrong_arity("ping")),
    }
    Ok(Flow::Continue)
}

pub fn echo(st: &mut ClientState, args: Args<'_>, out: &mut BytesMut) -> ServerResult {
    ReplyWriter::new(out, st.proto).bulk(args.get(1));
    Ok(Flow::Continue)
}

pub fn quit(st: &mut ClientState, out: &mut BytesMut) -> ServerResult {
    ReplyWriter::new(out, st.proto).ok();
    st.closing = true;
    Ok(Flow::Close)
}

pub fn time(st: &mut ClientState, out: &mut BytesMut) -> ServerResult {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut w = ReplyWriter::new(out, st.proto);
    w.array(2);
    w.bulk_int(d.as_secs() as i64);
    w.bulk_int(i64::from(d.subsec_micros()));
    Ok(Flow::Continue)
}

pub fn select(st: &mut ClientState, args: Args<'_>, out: &mut BytesMut) -> ServerResult {
    check_select(args.get(1))?;
    ReplyWriter::new(out, st.proto).ok();
    Ok(Flow::Continue)
}

/// SELECT with one database, from a client or a script: 0 is the only index.
pub fn check_select(index: &[u8]) -> Result<(), ErrorReply> {
    match ferrite_protocol::args::parse_i64(index) {
        Some(0) => Ok(()),
        Some(_) => Err(ErrorReply::err("DB index is out of range")),
        None => Err(ErrorReply::not_integer()),
    }
}

/// Whether a connection from `peer` may use the `default` tenant without AUTH: only when no
/// `requirepass` is set, and only from a loopback address (Redis's protected mode, but tenants
/// and the administrator can still log in from anywhere). Never administrator rights.
pub fn anonymous_access(sh: &Shared, peer: &std::net::SocketAddr) -> bool {
    sh.requirepass().is_none() && peer.ip().to_canonical().is_loopback()
}

/// Authenticates: `AUTH <secret>` or `AUTH default <secret>` (administrator: `requirepass`, or
/// the generated administrator secret without it), `AUTH ferrite-migration <token>` (a peer
/// server: TENANT.IMPORT.* only), or `AUTH <tenant> <password>` (binds the connection to the
/// tenant). Nothing but the administrator secret makes a connection administrator. A failed
/// attempt changes nothing; failures count against the client's address (see
/// [`crate::auth_limit`]), and an address past its limit is refused before anything is checked.
pub fn authenticate(
    st: &mut ClientState,
    sh: &Shared,
    command: &[u8],
    user: Option<&[u8]>,
    pass: &[u8],
) -> Result<(), ErrorReply> {
    let ip = st.info.addr.ip();
    let limited_user = user.unwrap_or(b"default");
    if let Err(wait) = sh.auth_limiter.admit(ip, limited_user, Instant::now()) {
        return Err(ErrorReply::err(format!(
            "too many failed authentication attempts from this address; try again in {:.1} seconds",
            wait.as_secs_f64().max(0.1)
        )));
    }
    let result = check_credentials(st, sh, user, pass);
    if let Err(e) = &result
        && e.code() == "WRONGPASS"
    {
        log_failed_login(st, sh, command, user);
        let (limit, max_block) = {
            let c = sh.config.read();
            (
                c.server.auth_failure_limit,
                Duration::from_millis(c.server.auth_block_max_ms),
            )
        };
        if let Some(block) =
            sh.auth_limiter
                .failed(ip, limited_user, limit, max_block, Instant::now())
        {
            // Neither the user name nor the password: either may be a secret typed in the
            // wrong field.
            tracing::warn!(
                client_ip = %ip,
                block_ms = block.as_millis() as u64,
                "repeated failed AUTH attempts from one address: refusing its AUTH for a while"
            );
        }
    }
    result
}

fn check_credentials(
    st: &mut ClientState,
    sh: &Shared,
    user: Option<&[u8]>,
    pass: &[u8],
) -> Result<(), ErrorReply> {
    match user {
        None | Some(b"default") => match sh.admin_secret() {
            Some(secret) if secrets_equal(secret.as_bytes(), pass) => {
                st.authenticated = true;
                st.admin = true;
                st.migration_peer = false;
                st.set_acl_user(None);
                st.visit_tenant(sh.registry.default_tenant());
                Ok(())
            }
            Some(_) => Err(ErrorReply::wrong_pass()),
            None if user.is_none() => Err(ErrorReply::err(
                "AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            )),
            None => Err(ErrorReply::wrong_pass()),
        },
        Some(user) if user == MIGRATION_USER.as_bytes() => {
            let token = sh.config.read().tenancy.migration.token.clone();
            if token.is_empty() || !secrets_equal(token.as_bytes(), pass) {
                return Err(ErrorReply::wrong_pass());
            }
            st.authenticated = true;
            st.migration_peer = true;
            st.admin = false;
            st.set_acl_user(None);
            st.visit_tenant(sh.registry.default_tenant());
            Ok(())
        }
        Some(name) => {
            if name == DEFAULT_TENANT.as_bytes() {
                return Err(ErrorReply::wrong_pass());
            }
            let (t, user) = match resolve_user(sh, name) {
                Login::Tenant => {
                    let t = sh
                        .registry
                        .authenticate(name, pass)
                        .map_err(|e| errors::tenancy(&e))?;
                    (t, None)
                }
                Login::AclUser(t, user) => {
                    let u = t
                        .acl()
                        .authenticate(&user, pass)
                        .ok_or_else(ErrorReply::wrong_pass)?;
                    (t, Some(u))
                }
                Login::Unknown => return Err(ErrorReply::wrong_pass()),
            };
            // The password was right, but the tenant is full: refused like a connection past
            // Redis's maxclients, and the connection stays as it was.
            if !st.join_tenant(t) {
                return Err(ErrorReply::err("max number of clients reached"));
            }
            st.authenticated = true;
            st.admin = false;
            st.migration_peer = false;
            st.set_acl_user(user);
            Ok(())
        }
    }
}

/// Logs a failed login in the ACL log of the tenant it tried (see [`crate::acl_log`]): the
/// tenant for its own name and for `<tenant>:<user>`, `default` for the plain name of one of its
/// users; failed logins as the administrator, the migration peer, a user of an unknown tenant or
/// a plain name that is nobody's are logged in `default`'s log for administrators only.
fn log_failed_login(st: &ClientState, sh: &Shared, command: &[u8], user: Option<&[u8]>) {
    let (tenant, username, admin_only): (Arc<str>, &[u8], bool) = match user {
        None => (DEFAULT_TENANT.into(), b"default", true),
        Some(name) if name == b"default" || name == MIGRATION_USER.as_bytes() => {
            (DEFAULT_TENANT.into(), name, true)
        }
        Some(name) => match resolve_user(sh, name) {
            Login::Tenant => (String::from_utf8_lossy(name).into(), name, false),
            Login::AclUser(t, user) => match name.iter().position(|&b| b == b':') {
                // Named as its tenant knows it: `bob`, not `<tenant>:bob`.
                Some(i) => (t.id().into(), &name[i + 1..], false),
                // A plain name that is no user of `default` may be anything typed in the wrong
                // field (a password before its user name): not for `default`'s clients to see.
                None if t.acl().get(&user).is_none() => (DEFAULT_TENANT.into(), name, true),
                None => (t.id().into(), name, false),
            },
            Login::Unknown => (DEFAULT_TENANT.into(), name, true),
        },
    };
    let context = if st.multi.is_some() {
        crate::acl_log::Context::Multi
    } else {
        crate::acl_log::Context::Toplevel
    };
    crate::acl_log::log_failed_login(
        sh, &tenant, admin_only, &st.info, username, command, context,
    );
}

/// Who an AUTH user name names (besides the administrator and the migration peer).
enum Login {
    /// A tenant (`AUTH <tenant> <password>`).
    Tenant,
    /// An ACL user of a tenant: `<tenant>:<user>`, or a plain name that is no tenant's, which
    /// names a user of the `default` tenant (where Redis's own users live).
    AclUser(Arc<ferrite_tenancy::Tenant>, String),
    Unknown,
}

/// Tenant ids never contain ':' (`valid_tenant_id`) and ACL user names may not, so
/// `<tenant>:<user>` is unambiguous; a tenant's own name always means the tenant.
fn resolve_user(sh: &Shared, name: &[u8]) -> Login {
    let Ok(name) = std::str::from_utf8(name) else {
        return Login::Unknown;
    };
    if let Some((tenant, user)) = name.split_once(':') {
        return match sh.registry.get(tenant) {
            Some(t) => Login::AclUser(t, user.to_string()),
            None => Login::Unknown,
        };
    }
    if sh.registry.get(name).is_some() {
        return Login::Tenant;
    }
    Login::AclUser(sh.registry.default_tenant(), name.to_string())
}

pub fn auth(st: &mut ClientState, sh: &Shared, args: Args<'_>, out: &mut BytesMut) -> ServerResult {
    match args.len() {
        2 => authenticate(st, sh, args.get(0), None, args.get(1))?,
        3 => authenticate(st, sh, args.get(0), Some(args.get(1)), args.get(2))?,
        _ => return Err(ErrorReply::syntax()),
    }
    ReplyWriter::new(out, st.proto).ok();
    Ok(Flow::Continue)
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
pub fn hello(
    st: &mut ClientState,
    sh: &Shared,
    args: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    let mut proto = st.proto;
    if args.len() >= 2 {
        proto = match args.int(1) {
            Ok(2) => Protocol::Resp2,
            Ok(3) => Protocol::Resp3,
            Ok(_) => {
                return Err(ErrorReply::coded("NOPROTO", "unsupported protocol version"));
            }
            Err(_) => {
                return Err(ErrorReply::err(
                    "Protocol version is not an integer or out of range",
                ));
            }
        };
    }
    let mut i = 2;
    let mut setname = None;
    let mut creds = None;
    while i < args.len() {
        if args.is(i, "AUTH") && i + 2 < args.len() {
            creds = Some((args.get(i + 1), args.get(i + 2)));
            i += 3;
        } else if args.is(i, "SETNAME") && i + 1 < args.len() {
            setname = Some(args.get(i + 1));
            i += 2;
        } else {
            return Err(ErrorReply::err(format!(
                "Syntax error in HELLO option '{}'",
                args.text(i)
            )));
        }
    }
    if let Some((user, pass)) = creds {
        authenticate(st, sh, args.get(0), Some(user), pass)?;
    }
    if !st.authenticated {
        return Err(ErrorReply::coded(
            "NOAUTH",
            "HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        ));
    }
    if let Some(name) = setname {
        super::client::set_name(st, name)?;
    }
    st.set_proto(proto);
    let mut w = ReplyWriter::new(out, st.proto);
    w.map(8);
    w.bulk_str("server");
    w.bulk_str("ferrite");
    w.bulk_str("version");
    w.bulk_str(COMPAT_VERSION);
    w.bulk_str("proto");
    w.int(if proto == Protocol::Resp3 { 3 } else { 2 });
    w.bulk_str("id");
    w.int(st.visible_id() as i64);
    w.bulk_str("mode");
    w.bulk_str("standalone");
    w.bulk_str("role");
    w.bulk_str("master");
    w.bulk_str("modules");
    w.array(0);
    w.bulk_str("tenant");
    w.bulk_str(st.tenant.id());
    Ok(Flow::Continue)
}

/// RESET: back to a fresh connection (RESP2, default tenant, no transaction, no administrator
/// rights, unauthenticated unless [`anonymous_access`] allows it).
pub fn reset(st: &mut ClientState, sh: &Arc<Shared>, out: &mut BytesMut) -> ServerResult {
    st.multi = None;
    st.watched.clear();
    st.subs = None;
    st.capa_redirect = false;
    st.reply_mode = crate::connection::ReplyMode::On;
    st.set_proto(Protocol::Resp2);
    // Back to an anonymous user of `default` where those are allowed and `default` has room;
    // otherwise an unauthenticated connection (as a fresh one past maxclients never is).
    let default = sh.registry.default_tenant();
    st.authenticated = anonymous_access(sh, &st.info.addr) && st.join_tenant(default.clone());
    if !st.authenticated {
        st.visit_tenant(default);
    }
    st.admin = false;
    st.migration_peer = false;
    st.set_acl_user(None);
    st.info.fields.lock().name.clear();
    ReplyWriter::new(out, st.proto).simple("RESET");
    Ok(Flow::Continue)
}
