//! Lua scripts and function libraries for the connection's tenant: EVAL, EVALSHA, EVAL_RO,
//! EVALSHA_RO, FCALL, FCALL_RO, SCRIPT and FUNCTION.
//!
//! Each tenant has its own engine (`ferrite_scripting::Engine`: a Lua state, the EVAL script
//! cache, compiled functions), kept in its keyspace (`Db::scripting`) and used only under the
//! keyspace's lock, so a script runs atomically for its tenant while other tenants go on. The
//! function libraries themselves (name → code) are tenant data kept by the keyspace; the engine
//! is rebuilt from them when they changed under it (a restart, an import).
//!
//! A script reaches the data through [`ScriptHost::call`], which runs every command through the
//! same funnel as a client's ([`dispatch::Exec::run`]: write effects for the append-only log and
//! migrations, versions for WATCH, digests) after the same checks (per-command quota, read-only
//! scripts). The whole script is one publication of effects (`begin_atomic`/`end_atomic`), like a
//! transaction. While a script runs, the tenant shows it in `Tenant::scripts()`: its other
//! connections answer `-BUSY` once it has run for `busy-reply-threshold`, SCRIPT KILL and
//! FUNCTION KILL set the kill flag the script's Lua hook reads.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::BytesMut;
use ferrite_commands::{CommandSpec, Garbage, Handler, lookup_indexed};
use ferrite_protocol::{Args, ErrorReply, Protocol, ReplyWriter};
use ferrite_scripting::{
    Engine, EngineLimits, Host, LogLevel, RunError, ScriptFlags, Step, Target,
};
use ferrite_storage::Db;
use ferrite_tenancy::{KillRefused, ScriptKind, Tenant};
use rand::rngs::SmallRng;

use crate::acl_log::Context as AclContext;
use crate::cmd::ServerResult;
use crate::connection::ClientState;
use crate::dispatch::{self, Flow, Held, Keys, Work};
use crate::outline::cold;
use crate::shared::Shared;

/// `redis.REDIS_VERSION_NUM` for the version Ferrite reports.
const VERSION_NUM: u32 = 0x0007_0200;

/// A tenant's engine as its keyspace keeps it, with the version of the libraries it holds.
struct TenantEngine {
    libraries_version: u64,
    engine: Engine,
    /// The script host's argument buffers (`ScriptHost::data`/`ranges`), kept from one script
    /// to the next so a call allocates nothing once they have grown.
    call_data: Vec<u8>,
    call_ranges: Vec<(usize, usize)>,
    /// The command the last `redis.call` ran (see `ScriptHost::last_cmd`), kept from one
    /// script to the next.
    last_cmd: Option<(usize, &'static CommandSpec)>,
}

/// Takes the tenant's engine out of its keyspace (building it, or reloading its libraries if
/// they changed since it was built). Give it back with [`put_engine`].
fn take_engine(db: &mut Db) -> Result<Box<TenantEngine>, ErrorReply> {
    let version = db.scripting().version();
    let mut te = match db
        .scripting_mut()
        .take_engine()
        .and_then(|e| e.downcast::<TenantEngine>().ok())
    {
        Some(te) if te.libraries_version == version => return Ok(te),
        Some(te) => te,
        None => {
            let engine = Engine::new(
                EngineLimits::default(),
                crate::cmd::COMPAT_VERSION,
                VERSION_NUM,
            )
            .map_err(|e| ErrorReply::err(format!("cannot start the Lua engine: {e}")))?;
            Box::new(TenantEngine {
                libraries_version: u64::MAX,
                engine,
                call_data: Vec::new(),
                call_ranges: Vec::new(),
                last_cmd: None,
            })
        }
    };
    te.engine.flush_libraries();
    for (name, code) in db.scripting().libraries() {
        if let Err(e) = te.engine.load_library(code, true) {
            // Code that loaded once loads again; if not (a newer Lua feature?), the library is
            // kept as data and its functions are missing rather than the tenant unusable.
            tracing::warn!(library = %name, error = %e.text(), "cannot load a function library");
        }
    }
    te.libraries_version = version;
    Ok(te)
}

/// Checks that function libraries load (an RDB file's, before it replaces a tenant's data):
/// in a throwaway engine, as redis-server refuses a file whose library does not load.
pub(crate) fn check_libraries<'a>(codes: impl Iterator<Item = &'a [u8]>) -> Result<(), String> {
    let mut engine = Engine::new(
        EngineLimits::default(),
        crate::cmd::COMPAT_VERSION,
        VERSION_NUM,
    )
    .map_err(|e| format!("cannot start the Lua engine: {e}"))?;
    for code in codes {
        engine
            .load_library(code, false)
            .map_err(|e| format!("function library does not load: {}", e.text()))?;
    }
    Ok(())
}

/// Also records the size of the EVAL cache for INFO (which does not take the lock).
fn put_engine(db: &mut Db, tenant: &Tenant, te: Box<TenantEngine>) {
    tenant
        .scripts()
        .set_cached_scripts(te.engine.cache_stats().0);
    db.scripting_mut().put_engine(te);
}

/// Makes the keyspace's libraries those of the engine after FUNCTION LOAD/DELETE/FLUSH/RESTORE,
/// and publishes the change as effects (`FUNCTION FLUSH`, `FUNCTION LOAD REPLACE code`) so the
/// append-only log replays it.
fn store_libraries(db: &mut Db, te: &mut TenantEngine, now: u64, effects: Vec<Vec<Vec<u8>>>) {
    let libs: BTreeMap<String, Vec<u8>> = te.engine.library_codes().into_iter().collect();
    db.set_libraries(libs);
    te.libraries_version = db.scripting().version();
    db.begin_atomic();
    for argv in effects {
        db.propagate(argv);
    }
    db.end_atomic(now);
}

/// What a script reaches the tenant's data through.
struct ScriptHost<'a, 'c> {
    db: &'a mut Db,
    tenant: &'a Tenant,
    now: u64,
    rng: &'a mut SmallRng,
    max_bulk: usize,
    garbage: &'a mut Garbage,
    /// EVAL_RO, FCALL_RO, or declared `no-writes`.
    read_only: bool,
    /// Commands the script ran (charged to the tenant's throttle when it ends).
    calls: u64,
    /// The command (by index) the running call got to run, past every check: INFO
    /// commandstats counts it as a run, or else as a rejection.
    ran: Option<usize>,
    data: Vec<u8>,
    ranges: Vec<(usize, usize)>,
    /// The command the previous call ran: scripts mostly repeat one, and comparing its name
    /// costs less than hashing it (as `dispatch::execute_command` does for clients).
    last_cmd: Option<(usize, &'static CommandSpec)>,
    caller: &'a mut ScriptCaller<'c>,
}

/// Who runs a script, as its calls need to know: the connection's ACL user, whose rules every
/// call is checked against (and `redis.acl_check_cmd` asks about; a refusal is logged in the
/// tenant's ACL log with the connection's description), where the calls' error replies are
/// counted (INFO errorstats counts each failed call, as Redis does), and the calls themselves
/// (INFO commandstats counts a script's `redis.call('set', ...)` as a SET, as Redis does: added
/// when the caller is dropped, once the script or the transaction ended).
///
/// A script call borrows the connection's handles ([`ScriptCaller::borrowed`]: cloning and
/// dropping four `Arc`s per EVALSHA was eight atomic read-modify-writes); EXEC and a script
/// finished on the blocking pool own them ([`Caller`]).
pub struct ScriptCaller<'a> {
    pub user: Option<Cow<'a, Arc<ferrite_tenancy::acl::AclUser>>>,
    shared: Cow<'a, Arc<Shared>>,
    /// The connection is one of the tenant's clients: its errors count for the tenant too.
    tenant_client: bool,
    /// The connection's tenant, whose per-command counters the calls go to when the connection
    /// is one of its clients.
    tenant: Cow<'a, Arc<Tenant>>,
    client: Cow<'a, Arc<crate::shared::ClientInfo>>,
    /// The error text of the last failed call. A script that ends with it (`redis.call`
    /// raised it) has its error counted once, as Redis does (see [`Caller::counted`]).
    last_error: Option<Vec<u8>>,
    /// The calls that ran, by command index, not yet added to INFO commandstats.
    tallies: Vec<(usize, crate::stats::CommandTally)>,
}

/// A [`ScriptCaller`] that owns its handles.
pub type Caller = ScriptCaller<'static>;

impl Drop for ScriptCaller<'_> {
    fn drop(&mut self) {
        if !self.tallies.is_empty() {
            dispatch::add_tallies(
                &self.shared,
                self.tenant_client.then_some(&**self.tenant),
                self.tallies.drain(..),
            );
        }
    }
}

impl Caller {
    pub fn of(st: &ClientState, sh: &Arc<Shared>) -> Caller {
        ScriptCaller {
            user: st.acl_user.clone().map(Cow::Owned),
            shared: Cow::Owned(sh.clone()),
            tenant_client: st.is_tenant_client(),
            tenant: Cow::Owned(st.tenant.clone()),
            client: Cow::Owned(st.info.clone()),
            last_error: None,
            tallies: Vec::new(),
        }
    }
}

impl<'a> ScriptCaller<'a> {
    /// A caller that borrows the connection's handles (its user, info and tenant) for one
    /// script call.
    fn borrowed(
        user: &'a Option<Arc<ferrite_tenancy::acl::AclUser>>,
        shared: &'a Arc<Shared>,
        tenant_client: bool,
        tenant: &'a Arc<Tenant>,
        client: &'a Arc<crate::shared::ClientInfo>,
    ) -> ScriptCaller<'a> {
        ScriptCaller {
            user: user.as_ref().map(Cow::Borrowed),
            shared: Cow::Borrowed(shared),
            tenant_client,
            tenant: Cow::Borrowed(tenant),
            client: Cow::Borrowed(client),
            last_error: None,
            tallies: Vec::new(),
        }
    }

    /// The same caller owning its handles (a script suspended past its slice moves to the
    /// blocking pool with it).
    fn into_owned(mut self) -> Caller {
        ScriptCaller {
            user: self.user.as_ref().map(|u| Cow::Owned(Arc::clone(u))),
            shared: Cow::Owned(Arc::clone(&self.shared)),
            tenant_client: self.tenant_client,
            tenant: Cow::Owned(Arc::clone(&self.tenant)),
            client: Cow::Owned(Arc::clone(&self.client)),
            last_error: self.last_error.take(),
            tallies: std::mem::take(&mut self.tallies),
        }
    }

    /// Where an ACL refusal of one of the script's calls (or of a command EXEC runs) is logged.
    pub fn audit<'b>(&'b self, tenant: &'b Tenant, context: AclContext) -> dispatch::Audit<'b> {
        dispatch::Audit {
            shared: &self.shared,
            tenant: tenant.id(),
            client: &self.client,
            context,
        }
    }

    /// A call refused before it ran (arity, ACL, read-only script, quota...): INFO
    /// commandstats' `rejected_calls`, as Redis's scriptCall counts it.
    fn count_rejected(&self, index: usize) {
        if let Some(s) = self.shared.cmd_stats.get(index) {
            s.rejected.fetch_add(1, Relaxed);
        }
        if self.tenant_client {
            let per_tenant = self
                .tenant
                .stats
                .command_counters(self.shared.cmd_stats.by_command.len());
            if let Some(c) = per_tenant.get(index) {
                c.rejected.fetch_add(1, Relaxed);
            }
        }
    }

    /// Counts an error reply (without its `-`) of a call the script made.
    fn count(&mut self, tenant: &Tenant, text: &[u8]) {
        self.shared.cmd_stats.errors.count(text);
        if self.tenant_client {
            tenant.stats.errors.count(text);
        }
        self.last_error = Some(text.split(|&b| b == b'\r').next().unwrap_or(text).to_vec());
    }

    /// Counts the reply of a command EXEC ran if it is an error, unless it is a script's error
    /// its failed call counted already.
    pub fn count_exec_reply(&mut self, tenant: &Tenant, reply: &[u8]) {
        if let Some(text) = reply.strip_prefix(b"-")
            && !self.counted(reply)
        {
            self.shared.cmd_stats.errors.count(text);
            if self.tenant_client {
                tenant.stats.errors.count(text);
            }
        }
        self.last_error = None;
    }

    /// Whether a script's error reply (`-...`) is the error of its last failed call, which
    /// [`Caller::count`] counted already.
    pub fn counted(&self, reply: &[u8]) -> bool {
        match (&self.last_error, reply.strip_prefix(b"-")) {
            (Some(last), Some(text)) => text.starts_with(last),
            _ => false,
        }
    }
}

impl Host for ScriptHost<'_, '_> {
    fn call(
        &mut self,
        argv: &[&[u8]],
        proto: Protocol,
        out: &mut BytesMut,
    ) -> Result<(), ErrorReply> {
        let started = std::time::Instant::now();
        self.ran = None;
        let result = self.call_checked(argv, proto, out);
        let failed = match &result {
            Err(e) => {
                self.caller.count(self.tenant, e.text().as_bytes());
                true
            }
            Ok(()) => match out.strip_prefix(b"-") {
                Some(text) => {
                    self.caller.count(self.tenant, text);
                    true
                }
                None => false,
            },
        };
        // INFO commandstats: the call as a run of its command, or a rejection.
        if let Some(index) = self.ran.take() {
            let nanos = started.elapsed().as_nanos() as u64;
            dispatch::tally(&mut self.caller.tallies, index, nanos, failed);
        } else if let Some((index, _)) = argv.first().and_then(|name| lookup_indexed(name)) {
            self.caller.count_rejected(index);
        }
        result
    }

    fn killed(&self) -> bool {
        self.tenant.scripts().kill_requested()
    }

    fn log(&mut self, level: LogLevel, message: &str) {
        let tenant = self.tenant.id();
        match level {
            LogLevel::Debug => tracing::debug!(tenant, "script: {message}"),
            LogLevel::Verbose => tracing::debug!(tenant, "script: {message}"),
            LogLevel::Notice => tracing::info!(tenant, "script: {message}"),
            LogLevel::Warning => tracing::warn!(tenant, "script: {message}"),
        }
    }

    fn acl_check(&self, argv: &[&[u8]]) -> Option<bool> {
        let (index, spec) = lookup_indexed(argv.first()?)?;
        let Some(user) = &self.caller.user else {
            return Some(true);
        };
        let data: Vec<u8> = argv.concat();
        let mut ranges = Vec::with_capacity(argv.len());
        let mut at = 0;
        for a in argv {
            ranges.push((at, at + a.len()));
            at += a.len();
        }
        let args = Args::new(&data, &ranges);
        Some(dispatch::acl_rules(user, index, spec, &args).is_ok())
    }
}

impl ScriptHost<'_, '_> {
    /// `redis.call`'s checks (Redis's scriptCall order: unknown command, arity, not allowed
    /// from scripts, ACL, read-only script, quota), then the command.
    fn call_checked(
        &mut self,
        argv: &[&[u8]],
        proto: Protocol,
        out: &mut BytesMut,
    ) -> Result<(), ErrorReply> {
        let name = argv.first().copied().unwrap_or_default();
        let found = match self.last_cmd {
            Some((i, spec)) if name.eq_ignore_ascii_case(spec.name.as_bytes()) => Some((i, spec)),
            _ => lookup_indexed(name),
        };
        let Some((index, spec)) = found else {
            return Err(ErrorReply::err("Unknown Redis command called from script"));
        };
        self.last_cmd = Some((index, spec));
        if !spec.arity_ok(argv.len()) {
            return Err(ErrorReply::err(
                "Wrong number of args calling Redis command from script",
            ));
        }
        // As in Redis 7.2, blocking commands run without blocking, as in MULTI (7.0 refused
        // BLPOP, BRPOP, BRPOPLPUSH, BLMOVE, BZPOPMIN and BZPOPMAX); XREAD / XREADGROUP given
        // BLOCK are still refused.
        if matches!(spec.name, "xread" | "xreadgroup") && blocking_read(argv) {
            return Err(ErrorReply::err(format_args!(
                "{} command is not allowed with BLOCK option from scripts",
                String::from_utf8_lossy(name)
            )));
        }
        self.data.clear();
        self.ranges.clear();
        for a in argv {
            let start = self.data.len();
            self.data.extend_from_slice(a);
            self.ranges.push((start, self.data.len()));
        }
        if let Some(user) = &self.caller.user {
            let args = Args::new(&self.data, &self.ranges);
            let audit = self.caller.audit(self.tenant, AclContext::Lua);
            dispatch::check_acl(user, index, spec, &args, audit)?;
        }
        self.calls += 1;
        let f = match spec.handler {
            Handler::Data(f) => f,
            Handler::Server => {
                self.ran = Some(index);
                if let Some(kind) = match spec.name {
                    "publish" => Some(crate::pubsub::Kind::Plain),
                    "spublish" => Some(crate::pubsub::Kind::Shard),
                    _ => None,
                } {
                    // As in Redis, a script may publish (to its tenant's channels); the
                    // script's own connection, if subscribed, gets the message after the
                    // script's reply.
                    let n = self.caller.shared.pubsub.publish(
                        self.tenant.id(),
                        kind,
                        argv.get(1).copied().unwrap_or_default(),
                        argv.get(2).copied().unwrap_or_default(),
                    );
                    ReplyWriter::new(out, proto).int(n as i64);
                    return Ok(());
                }
                return server_command(spec.name, argv, proto, self.now, out);
            }
        };
        if spec.is_write() && self.read_only {
            return Err(ErrorReply::err(
                "Write commands are not allowed from read-only scripts.",
            ));
        }
        if spec.is_write() {
            self.caller.shared.check_replicas()?;
        }
        let args = Args::new(&self.data, &self.ranges);
        if let Some(split) = self.tenant.active_split() {
            dispatch::place_script_call(self.tenant, &split, spec, args)?;
        }
        if spec.is_write() {
            // Every write of a script is checked like the same command sent alone: a script
            // cannot grow a tenant past its quota (Redis checks only before the first write;
            // stopping a script midway is what a failed command does to it anyway).
            let sh = &self.caller.shared;
            if dispatch::quota_applies(sh, self.tenant) {
                dispatch::check_quota(sh, self.tenant, self.db, self.now, [(spec, args)])?;
            }
            self.tenant.scripts().mark_wrote();
        }
        let mut exec = dispatch::Exec {
            db: self.db,
            now: self.now,
            rng: self.rng,
            proto,
            max_bulk: self.max_bulk,
            garbage: self.garbage,
            // The reply goes to the script, not the client; the script's own reply is limited
            // by the engine.
            reply_limit: usize::MAX,
            from_script: true,
        };
        self.ran = Some(index);
        exec.run(spec, f, args, out)
    }
}

/// XREAD / XREADGROUP with a BLOCK option (before STREAMS, with its argument).
fn blocking_read(argv: &[&[u8]]) -> bool {
    argv.iter()
        .skip(1)
        .take_while(|a| !a.eq_ignore_ascii_case(b"streams"))
        .enumerate()
        .any(|(i, a)| a.eq_ignore_ascii_case(b"block") && i + 2 < argv.len())
}

/// The server commands a script may call: those that only answer (Redis allows them too).
fn server_command(
    name: &str,
    argv: &[&[u8]],
    proto: Protocol,
    now: u64,
    out: &mut BytesMut,
) -> Result<(), ErrorReply> {
    let mut w = ReplyWriter::new(out, proto);
    match name {
        "ping" => match argv.get(1) {
            Some(m) => w.bulk(m),
            None => w.simple("PONG"),
        },
        "echo" => w.bulk(argv.get(1).copied().unwrap_or_default()),
        "select" => {
            crate::cmd::connection::check_select(argv.get(1).copied().unwrap_or_default())?;
            w.ok();
        }
        "wait" => w.int(crate::cmd::diagnostics::wait_answer(
            argv.get(1).copied().unwrap_or_default(),
            argv.get(2).copied().unwrap_or_default(),
        )?),
        "time" => {
            let micros = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(now * 1000, |d| d.as_micros() as u64);
            w.array(2);
            w.bulk_int((micros / 1_000_000) as i64);
            w.bulk_int((micros % 1_000_000) as i64);
        }
        _ => {
            return Err(ErrorReply::err(
                "This Redis command is not allowed from script",
            ));
        }
    }
    Ok(())
}

/// Which command runs a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Eval,
    EvalSha,
    Fcall,
}

/// A script call's KEYS and ARGV (`numkeys key... arg...` split), borrowed from the request:
/// on the stack for the usual few, so a call allocates no list of them.
struct KeysAndArgs<'a> {
    inline: [&'a [u8]; INLINE_ITEMS],
    /// All of them when there are more than [`INLINE_ITEMS`].
    spilled: Vec<&'a [u8]>,
    len: usize,
    keys: usize,
}

/// How many keys and arguments a script call lists without allocating.
const INLINE_ITEMS: usize = 8;

impl<'a> KeysAndArgs<'a> {
    fn items(&self) -> &[&'a [u8]] {
        if self.len <= INLINE_ITEMS {
            &self.inline[..self.len]
        } else {
            &self.spilled
        }
    }

    fn keys(&self) -> &[&'a [u8]] {
        &self.items()[..self.keys]
    }

    fn argv(&self) -> &[&'a [u8]] {
        &self.items()[self.keys..]
    }
}

/// The keys a script call declares (EVAL/FCALL `numkeys key...`); none when malformed (the call
/// itself then fails with the reason).
pub fn declared_keys<'a>(args: &Args<'a>) -> Vec<&'a [u8]> {
    split_keys(args)
        .map(|split| split.keys().to_vec())
        .unwrap_or_default()
}

/// The first key a script call declares (`EVALSHA sha 1 key ...`), if any, without allocating:
/// what `dispatch::warm_batch` warms for each request of a pipelined round.
pub fn first_declared_key<'a>(args: &Args<'a>) -> Option<&'a [u8]> {
    let count = args.get(2);
    // A count of keys: digits, not 0 (a malformed one fails in the call itself).
    if count.is_empty() || count.len() > 10 || !count.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if count.iter().all(|&b| b == b'0') || args.len() < 4 {
        return None;
    }
    Some(args.get(3))
}

/// A count of keys as Redis's parser reads it, else (leading zeros, `+`) as Rust's does.
fn key_count(text: &[u8]) -> Option<i64> {
    ferrite_protocol::args::parse_i64(text).or_else(|| std::str::from_utf8(text).ok()?.parse().ok())
}

/// The error of a count of keys that is not an integer.
#[cold]
fn bad_key_count(command: &[u8]) -> ErrorReply {
    // FCALL words it its own way (functions.c), EVAL as any integer argument.
    if command.len() >= 5 && command[..5].eq_ignore_ascii_case(b"fcall") {
        ErrorReply::err("Bad number of keys provided")
    } else {
        ErrorReply::not_integer()
    }
}

fn split_keys<'a>(args: &Args<'a>) -> Result<KeysAndArgs<'a>, ErrorReply> {
    let Some(n) = key_count(args.get(2)) else {
        return Err(bad_key_count(args.get(0)));
    };
    if n < 0 {
        return Err(ErrorReply::err("Number of keys can't be negative"));
    }
    let rest = args.len().saturating_sub(3);
    if n as u64 > rest as u64 {
        return Err(ErrorReply::err(
            "Number of keys can't be greater than number of args",
        ));
    }
    let mut split = KeysAndArgs {
        inline: [&[]; INLINE_ITEMS],
        spilled: Vec::new(),
        len: rest,
        keys: n as usize,
    };
    let items = (3..args.len()).map(|i| args.get(i));
    if rest <= INLINE_ITEMS {
        for (slot, item) in split.inline.iter_mut().zip(items) {
            *slot = item;
        }
    } else {
        split.spilled = items.collect();
    }
    Ok(split)
}

/// How long a script runs on the connection's worker thread before the rest of it moves to
/// the blocking pool (most scripts finish well within it).
const SCRIPT_SLICE: Duration = Duration::from_millis(1);

/// EVAL, EVALSHA, FCALL and their `_RO` forms.
///
/// The script starts on the connection's worker with the tenant's keyspace locked. One that
/// runs past [`SCRIPT_SLICE`] is suspended by its Lua hook and finished on tokio's blocking
/// pool with the lock (an owned guard) and the engine moved there, so the workers keep serving
/// every other tenant. It takes no long-work slot: a tenant's endless script must not hold the
/// slot other tenants' long commands need (it holds only its own tenant, until SCRIPT KILL).
pub async fn run(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    call: Call,
    ro_command: bool,
    args: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    let split = split_keys(&args)?;
    let (keys, argv) = (split.keys(), split.argv());
    let tenant = st.tenant.clone();
    let epoch = tenant.keyspace_epoch();
    let mut held = Held::take(&mut st.held, epoch);
    // A script that may write holds the tenant's write gate while it runs, like a write
    // command (a cutover waits for it); the _RO forms do not.
    let admitted = dispatch::admit_holding(
        st,
        sh,
        &tenant,
        Work {
            commands: 1,
            writes: !ro_command,
            keys: Keys::Listed(keys),
        },
        &mut held,
    )
    .await?;
    st.batch.tenant_commands += 1;
    if !ro_command {
        st.batch.wrote = true;
    }
    // A free lock is taken at once; only a wait goes through `or_busy` (whose timer costs a
    // clock read and a registration with the runtime's timer on every call).
    let previous = held.as_ref().map(Held::commands);
    let mut waited = admitted.waited;
    let mut db = match held {
        // The lock the batch's previous command kept (see `dispatch::Held`): no keyspace
        // handle is needed (it is a lock and a reference count).
        Some(h) => h.into_guard(),
        None => {
            let ks = tenant.keyspace();
            match ks.try_lock_owned() {
                Some(db) => db,
                None => {
                    waited = true;
                    // Boxed: a wait is rare, and the future of every EVAL/EVALSHA (moved into
                    // a box per call by the command table) would otherwise carry its timer.
                    Box::pin(or_busy(sh, &tenant, ks.lock_owned())).await?
                }
            }
        }
    };
    // The batch's clock (no clock read) unless admission or the lock made it wait.
    let now = if waited {
        ferrite_storage::now_ms()
    } else {
        st.batch.now_ms()
    };
    let max_bulk = sh.hot.max_bulk_len.load(Relaxed) as usize;
    let mut garbage = Garbage::default();
    let mut te = take_engine(&mut db)?;
    let mut caller =
        ScriptCaller::borrowed(&st.acl_user, sh, st.is_tenant_client(), &tenant, &st.info);
    // The script's calls are counted with the batch's runs (see `Batch::lend_tallies`).
    caller.tallies = st.batch.lend_tallies();
    let started = start(
        &mut db,
        &mut te,
        &tenant,
        &mut st.rng,
        max_bulk,
        &mut garbage,
        st.proto,
        (call, ro_command),
        &args,
        (keys, argv),
        (now, Some(SCRIPT_SLICE)),
        &mut caller,
    );
    let (delivered, calls) = match started {
        Err(e) => {
            put_engine(&mut db, &tenant, te);
            return Err(e);
        }
        Ok(Started::Done(reply, calls)) => {
            let delivered = deliver(st.reply_limit, &mut st.error_counted, &caller, &reply, out);
            // The reply's buffer serves the engine's next run.
            te.engine.recycle(reply);
            put_engine(&mut db, &tenant, te);
            // Kept for the batch's next command (given back when the batch ends).
            Held::keep(&mut st.held, epoch, db, previous);
            (delivered, calls)
        }
        Ok(Started::Suspended {
            now,
            read_only,
            calls,
        }) => {
            // Boxed and polled cold: a suspension is rare, and the hand-over to the blocking
            // pool would otherwise sit in the future (and the code) of every script call.
            let owned = caller.into_owned();
            let (delivered, calls, back) = cold(Box::pin(finish_suspended(
                st,
                tenant.clone(),
                db,
                te,
                owned,
                (now, read_only, calls, max_bulk),
                out,
            )))
            .await?;
            caller = back;
            (delivered, calls)
        }
    };
    st.batch.return_tallies(std::mem::take(&mut caller.tallies));
    drop(admitted);
    dispatch::free_later(garbage);
    // The commands the script ran count against the tenant's operation rate as if sent alone
    // (the script itself was admitted as one): the next commands wait for them.
    if calls > 1 {
        let _ = tenant.admit_n(calls - 1, Duration::ZERO);
    }
    delivered?;
    Ok(Flow::Continue)
}

/// Finishes a run suspended past [`SCRIPT_SLICE`] on tokio's blocking pool, with the keyspace
/// lock (an owned guard) and the engine moved there; returns what `run` delivers, the number of
/// calls the script made and the caller (its tallies) back.
async fn finish_suspended(
    st: &mut ClientState,
    tenant: Arc<Tenant>,
    mut db: ferrite_storage::OwnedDbGuard,
    mut te: Box<TenantEngine>,
    caller: Caller,
    (now, read_only, calls, max_bulk): (u64, bool, u64, usize),
    out: &mut BytesMut,
) -> Result<(Result<(), ErrorReply>, u64, Caller), ErrorReply> {
    let job_tenant = tenant.clone();
    let mut rng = st.rng.clone();
    let mut job_caller = caller;
    let job = move || {
        let mut garbage = Garbage::default();
        let mut host = ScriptHost {
            db: &mut db,
            tenant: &job_tenant,
            now,
            rng: &mut rng,
            max_bulk,
            garbage: &mut garbage,
            read_only,
            calls,
            ran: None,
            data: Vec::new(),
            ranges: Vec::new(),
            last_cmd: None,
            caller: &mut job_caller,
        };
        let reply = te.engine.resume(&mut host);
        let calls = host.calls;
        end_run(&mut db, &job_tenant, now);
        put_engine(&mut db, &job_tenant, te);
        drop(db);
        (reply, calls, rng, garbage, job_caller)
    };
    match tokio::task::spawn_blocking(job).await {
        Ok((reply, calls, rng, more_garbage, back)) => {
            st.rng = rng;
            dispatch::free_later(more_garbage);
            let delivered = deliver(st.reply_limit, &mut st.error_counted, &back, &reply, out);
            Ok((delivered, calls, back))
        }
        Err(e) => {
            tracing::error!(tenant = tenant.id(), error = %e, "a script failed");
            tenant.scripts().finish();
            Err(ErrorReply::err("internal error while running the script"))
        }
    }
}

/// Adds a script's reply to the connection's output, within its output budget
/// (client-output-buffer-limit applies to a script's reply as to any other).
fn deliver(
    reply_limit: usize,
    error_counted: &mut bool,
    caller: &ScriptCaller<'_>,
    reply: &[u8],
    out: &mut BytesMut,
) -> Result<(), ErrorReply> {
    if out.len() + reply.len() > reply_limit {
        return Err(ErrorReply::err(
            "script reply exceeds the client output buffer limit",
        ));
    }
    // An error raised by a call the script made was counted when the call failed.
    *error_counted = caller.counted(reply);
    out.extend_from_slice(reply);
    Ok(())
}

/// EVAL, EVALSHA, FCALL and their `_RO` forms by command name: how they run.
pub fn script_call(name: &str) -> Option<(Call, bool)> {
    Some(match name {
        "eval" => (Call::Eval, false),
        "evalsha" => (Call::EvalSha, false),
        "eval_ro" => (Call::Eval, true),
        "evalsha_ro" => (Call::EvalSha, true),
        "fcall" => (Call::Fcall, false),
        "fcall_ro" => (Call::Fcall, true),
        _ => return None,
    })
}

/// A script queued by MULTI, run by EXEC under the transaction's lock, to its end (as in Redis:
/// atomic with the rest of the transaction). EXEC runs a transaction that holds a script on the
/// blocking pool, so an endless script blocks no I/O thread; the tenant shows busy meanwhile
/// (other clients get -BUSY, SCRIPT KILL stops it). Its reply, or its error, goes to `out`.
#[allow(clippy::too_many_arguments)]
pub fn run_in_transaction(
    db: &mut Db,
    tenant: &Tenant,
    rng: &mut SmallRng,
    max_bulk: usize,
    garbage: &mut Garbage,
    proto: Protocol,
    call: (Call, bool),
    args: Args<'_>,
    out: &mut BytesMut,
    caller: &mut ScriptCaller<'_>,
) -> Result<(), ErrorReply> {
    let split = split_keys(&args)?;
    let mut te = take_engine(db)?;
    let started = start(
        db,
        &mut te,
        tenant,
        rng,
        max_bulk,
        garbage,
        proto,
        call,
        &args,
        (split.keys(), split.argv()),
        (ferrite_storage::now_ms(), None),
        caller,
    );
    put_engine(db, tenant, te);
    match started? {
        Started::Done(reply, calls) => {
            if calls > 1 {
                let _ = tenant.admit_n(calls - 1, Duration::ZERO);
            }
            out.extend_from_slice(&reply);
            Ok(())
        }
        // Not asked to suspend: never happens.
        Started::Suspended { now, .. } => {
            end_run(db, tenant, now);
            Err(ErrorReply::err("internal error while running the script"))
        }
    }
}

/// Waits for `lock` (a tenant's keyspace lock), or answers `-BUSY` once the script the tenant
/// runs meanwhile has run for `busy-reply-threshold`. Every command that waits for a tenant's
/// keyspace waits here, so only that tenant's clients see -BUSY.
pub async fn or_busy<F: std::future::Future>(
    sh: &Shared,
    tenant: &Tenant,
    lock: F,
) -> Result<F::Output, ErrorReply> {
    let mut lock = std::pin::pin!(lock);
    loop {
        let wait = match tenant.scripts().running_since() {
            Some((since, kind)) => {
                let threshold = sh.hot.busy_reply_threshold_ms.load(Relaxed);
                let ran = ferrite_storage::now_ms().saturating_sub(since);
                if ran >= threshold {
                    return Err(busy_error(kind));
                }
                Duration::from_millis(threshold - ran)
            }
            // Whatever holds the lock now, a script may start before our turn: look again.
            None => Duration::from_millis(50),
        };
        tokio::select! {
            biased;
            guard = &mut lock => return Ok(guard),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// `-BUSY` if `tenant` runs a script that has run for `busy-reply-threshold` and the command
/// `name` is not one Redis 7.0 flags allow-busy (AUTH, HELLO, MULTI, DISCARD, WATCH, UNWATCH,
/// RESET, QUIT, SHUTDOWN, SCRIPT KILL, FUNCTION KILL, FUNCTION STATS). Ferrite's operator
/// commands (TENANT.*) are never refused: a tenant's script must not lock out its operator.
pub fn refuse_while_busy(
    sh: &Shared,
    tenant: &Tenant,
    name: &str,
    args: &Args<'_>,
) -> Option<ErrorReply> {
    // Every command asks, and almost always no script runs: the rest is out of line.
    let (since, kind) = tenant.scripts().running_since()?;
    refuse_during_script(sh, since, kind, name, args)
}

/// [`refuse_while_busy`] while a script runs (since `since`, of `kind`).
#[cold]
#[inline(never)]
fn refuse_during_script(
    sh: &Shared,
    since: u64,
    kind: ferrite_tenancy::scripts::ScriptKind,
    name: &str,
    args: &Args<'_>,
) -> Option<ErrorReply> {
    let threshold = sh.hot.busy_reply_threshold_ms.load(Relaxed);
    if ferrite_storage::now_ms().saturating_sub(since) < threshold {
        return None;
    }
    let allowed = match name {
        "auth" | "hello" | "multi" | "discard" | "watch" | "unwatch" | "reset" | "quit"
        | "shutdown" => true,
        "script" => args.len() == 2 && args.is(1, "kill"),
        "function" => args.len() == 2 && (args.is(1, "kill") || args.is(1, "stats")),
        _ => name.starts_with("tenant."),
    };
    (!allowed).then(|| busy_error(kind))
}

/// How [`start`] left a script.
enum Started {
    /// Finished: the reply and the number of commands it ran.
    Done(BytesMut, u64),
    /// Suspended after [`SCRIPT_SLICE`]; finish it with `Engine::resume` and [`end_run`].
    Suspended {
        now: u64,
        read_only: bool,
        calls: u64,
    },
}

/// Resolves what to run, checks its flags and runs it for up to [`SCRIPT_SLICE`] with the
/// keyspace locked.
#[allow(clippy::too_many_arguments)]
fn start(
    db: &mut Db,
    te: &mut TenantEngine,
    tenant: &Tenant,
    rng: &mut SmallRng,
    max_bulk: usize,
    garbage: &mut Garbage,
    proto: Protocol,
    (call, ro_command): (Call, bool),
    args: &Args<'_>,
    (keys, argv): (&[&[u8]], &[&[u8]]),
    (now, slice): (u64, Option<Duration>),
    caller: &mut ScriptCaller<'_>,
) -> Result<Started, ErrorReply> {
    let engine = &mut te.engine;
    let name_arg = args.get(1);
    // An EVALSHA's SHA1 in lower case, as the cache keys it (on the stack: no allocation).
    let mut sha_buf = [0u8; 40];
    // EVALSHA's script, found once for its flags and its run.
    let mut cached = None;
    let (name, flags): (Cow<'_, str>, ScriptFlags) = match call {
        Call::Eval => {
            let (sha, flags) = engine.load_script(name_arg, false)?;
            (Cow::Owned(sha), flags)
        }
        Call::EvalSha => {
            let found = if name_arg.len() == sha_buf.len() {
                sha_buf.copy_from_slice(name_arg);
                sha_buf.make_ascii_lowercase();
                // Only ASCII (hex digits) can name a cached script (its SHA1 in lower case).
                if sha_buf.is_ascii() {
                    // SAFETY: the buffer was just checked to be ASCII, which is valid UTF-8
                    // (`is_ascii` reads it a word at a time; `from_utf8` cost ~90 instructions
                    // per call here).
                    let sha = unsafe { std::str::from_utf8_unchecked(&sha_buf) };
                    engine.cached_script(sha).map(|script| (sha, script))
                } else {
                    None
                }
            } else {
                None
            };
            match found {
                Some((sha, script)) => {
                    let flags = script.flags();
                    cached = Some(script);
                    (Cow::Borrowed(sha), flags)
                }
                None => {
                    return Err(ErrorReply::coded(
                        "NOSCRIPT",
                        "No matching script. Please use EVAL.",
                    ));
                }
            }
        }
        Call::Fcall => {
            let name = String::from_utf8_lossy(name_arg).into_owned();
            match engine.function_flags(&name) {
                Some(f) => (Cow::Owned(name), f),
                None => return Err(ErrorReply::err("Function not found")),
            }
        }
    };
    check_flags(&caller.shared, tenant, db, &flags, ro_command)?;
    // A script that declares it may write is refused up front, as Redis does; one without
    // flags (compat) only when it writes.
    if !flags.compat && !flags.no_writes {
        caller.shared.check_replicas()?;
    }
    let kind = match call {
        Call::Fcall => ScriptKind::Function,
        Call::Eval | Call::EvalSha => ScriptKind::Eval,
    };
    tenant
        .scripts()
        .start_with(kind, &name, args.iter(), now, db.current_version());
    let read_only = ro_command || flags.no_writes;
    let target = match (call, cached) {
        (_, Some(script)) => Target::Cached(script),
        (Call::Fcall, None) => Target::Function(&name),
        (Call::Eval | Call::EvalSha, None) => Target::Script(&name),
    };
    // The script's writes reach the keyspace's subscribers as one publication.
    db.begin_atomic();
    let mut host = ScriptHost {
        db,
        tenant,
        now,
        rng,
        max_bulk,
        garbage,
        read_only,
        calls: 0,
        ran: None,
        data: std::mem::take(&mut te.call_data),
        ranges: std::mem::take(&mut te.call_ranges),
        last_cmd: te.last_cmd,
        caller,
    };
    let result = te.engine.run(target, keys, argv, proto, &mut host, slice);
    let calls = host.calls;
    te.last_cmd = host.last_cmd;
    let db = host.db;
    // Modest buffers are kept for the next script; a huge argument's is freed.
    if host.data.capacity() <= 64 << 10 {
        te.call_data = host.data;
        te.call_ranges = host.ranges;
    }
    match result {
        Ok(Step::Done(reply)) => {
            end_run(db, tenant, now);
            Ok(Started::Done(reply, calls))
        }
        Ok(Step::Suspended) => Ok(Started::Suspended {
            now,
            read_only,
            calls,
        }),
        Err(RunError::Reply(e)) => {
            end_run(db, tenant, now);
            Err(e)
        }
    }
}

/// A script ended: its effects are published, the tenant is no longer busy.
fn end_run(db: &mut Db, tenant: &Tenant, now: u64) {
    db.end_atomic(now);
    tenant.scripts().finish();
}

/// Redis's checks of a script's declared flags before it starts (`scriptPrepareForRun`).
fn check_flags(
    sh: &Shared,
    tenant: &Tenant,
    db: &Db,
    flags: &ScriptFlags,
    ro_command: bool,
) -> Result<(), ErrorReply> {
    if flags.compat {
        return Ok(());
    }
    if !flags.no_writes {
        if ro_command {
            return Err(ErrorReply::err(
                "Can not execute a script with write flag using *_ro command.",
            ));
        }
        if !flags.allow_oom && dispatch::out_of_memory(sh, tenant, db) {
            return Err(ErrorReply::coded(
                "OOM",
                "allow-oom flag is not set on the script, can not run it when used memory > 'maxmemory'",
            ));
        }
    }
    Ok(())
}

/// Runs `f` with the tenant's engine under its keyspace lock, admitted like a data command
/// (`writes`: changes the tenant's libraries, so holds its write gate).
async fn with_engine<R>(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    writes: bool,
    f: impl FnOnce(&mut Db, &mut TenantEngine) -> Result<R, ErrorReply>,
) -> Result<R, ErrorReply> {
    let tenant = st.tenant.clone();
    let admitted = dispatch::admit_work(
        st,
        sh,
        &tenant,
        Work {
            commands: 1,
            writes,
            // Function libraries belong to the whole keyspace.
            keys: if writes {
                Keys::Whole
            } else {
                Keys::Listed(&[])
            },
        },
    )
    .await?;
    if writes {
        st.batch.wrote = true;
    }
    let ks = tenant.keyspace();
    let mut db = or_busy(sh, &tenant, ks.lock_async()).await?;
    let mut te = take_engine(&mut db)?;
    let r = f(&mut db, &mut te);
    tenant
        .scripts()
        .set_function_counts(te.engine.function_counts());
    put_engine(&mut db, &tenant, te);
    drop(db);
    drop(admitted);
    r
}

const SCRIPT_HELP: &[&str] = &[
    "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "EXISTS <sha1> [<sha1> ...]",
    "    Return information about the existence of the scripts in the script cache.",
    "FLUSH [ASYNC|SYNC]",
    "    Flush the Lua scripts cache. Very dangerous on replicas.",
    "    When called without the optional mode argument, the behavior is determined by the",
    "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
    "    * ASYNC: Asynchronously flush the scripts cache.",
    "    * SYNC: Synchronously flush the scripts cache.",
    "KILL",
    "    Kill the currently executing Lua script.",
    "LOAD <script>",
    "    Load a script into the scripts cache without executing it.",
    "HELP",
    "    Print this help.",
];

/// SCRIPT LOAD/EXISTS/FLUSH/KILL/HELP.
pub async fn script(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    args: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    let sub = String::from_utf8_lossy(args.get(1)).to_ascii_lowercase();
    let proto = st.proto;
    match (sub.as_str(), args.len()) {
        ("help", 2) => ReplyWriter::new(out, proto).help(SCRIPT_HELP),
        ("kill", 2) => {
            kill(&st.tenant, ScriptKind::Eval)?;
            ReplyWriter::new(out, proto).ok();
        }
        ("load", 3) => {
            let (sha, _) = with_engine(st, sh, false, |_, te| {
                te.engine.load_script(args.get(2), true)
            })
            .await?;
            ReplyWriter::new(out, proto).bulk_str(&sha);
        }
        ("exists", n) if n >= 3 => {
            let found = with_engine(st, sh, false, |_, te| {
                Ok((2..n)
                    .map(|i| {
                        let sha = String::from_utf8_lossy(args.get(i));
                        sha.len() == 40 && te.engine.script_exists(&sha)
                    })
                    .collect::<Vec<_>>())
            })
            .await?;
            let mut w = ReplyWriter::new(out, proto);
            w.array(found.len());
            for f in found {
                w.int(f as i64);
            }
        }
        ("flush", 2 | 3) => {
            if args.len() == 3 && !(args.is(2, "async") || args.is(2, "sync")) {
                return Err(ErrorReply::err(
                    "SCRIPT FLUSH only support SYNC|ASYNC option",
                ));
            }
            with_engine(st, sh, false, |_, te| {
                te.engine.flush_scripts();
                Ok(())
            })
            .await?;
            ReplyWriter::new(out, proto).ok();
        }
        ("debug", _) => return Err(ErrorReply::err("SCRIPT DEBUG is not supported")),
        _ => {
            return Err(ErrorReply::unknown_subcommand(args.get(1), "SCRIPT"));
        }
    }
    Ok(Flow::Continue)
}

/// SCRIPT KILL / FUNCTION KILL, with Redis's refusals. Takes no lock: the script holds it.
fn kill(tenant: &Tenant, kind: ScriptKind) -> Result<(), ErrorReply> {
    tenant.scripts().request_kill(kind).map_err(|e| match e {
        KillRefused::NotBusy => ErrorReply::coded("NOTBUSY", "No scripts in execution right now."),
        KillRefused::Unkillable => ErrorReply::coded(
            "UNKILLABLE",
            "Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.",
        ),
        KillRefused::WrongKind(running) => busy_error(running),
    })
}

/// `-BUSY` for a script of `kind` (Redis's shared.slowevalerr / slowscripterr).
pub fn busy_error(kind: ScriptKind) -> ErrorReply {
    match kind {
        ScriptKind::Eval => ErrorReply::coded(
            "BUSY",
            "Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
        ),
        ScriptKind::Function => ErrorReply::coded(
            "BUSY",
            "Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.",
        ),
    }
}

const FUNCTION_HELP: &[&str] = &[
    "FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "LOAD [REPLACE] <FUNCTION CODE>",
    "    Create a new library with the given library name and code.",
    "DELETE <LIBRARY NAME>",
    "    Delete the given library.",
    "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
    "    Return general information on all the libraries:",
    "    * Library name",
    "    * The engine used to run the Library",
    "    * Library description",
    "    * Functions list",
    "    * Library code (if WITHCODE is given)",
    "    It also possible to get only function that matches a pattern using LIBRARYNAME argument.",
    "STATS",
    "    Return information about the current function running:",
    "    * Function name",
    "    * Command used to run the function",
    "    * Duration in MS that the function is running",
    "    If no function is running, return nil",
    "    In addition, returns a list of available engines.",
    "KILL",
    "    Kill the current running function.",
    "FLUSH [ASYNC|SYNC]",
    "    Delete all the libraries.",
    "    When called without the optional mode argument, the behavior is determined by the",
    "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
    "    * ASYNC: Asynchronously flush the libraries.",
    "    * SYNC: Synchronously flush the libraries.",
    "DUMP",
    "    Return a serialized payload representing the current libraries, can be restored using FUNCTION RESTORE command",
    "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
    "    Restore the libraries represented by the given payload, it is possible to give a restore policy to",
    "    control how to handle existing libraries (default APPEND):",
    "    * FLUSH: delete all existing libraries.",
    "    * APPEND: appends the restored libraries to the existing libraries. On collision, abort.",
    "    * REPLACE: appends the restored libraries to the existing libraries, On collision, replace the old",
    "      libraries with the new libraries (notice that even on this option there is a chance of failure",
    "      in case of functions name collision with another library).",
    "HELP",
    "    Print this help.",
];

/// FUNCTION LOAD/LIST/DELETE/FLUSH/DUMP/RESTORE/KILL/STATS/HELP.
pub async fn function(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    args: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    let sub = String::from_utf8_lossy(args.get(1)).to_ascii_lowercase();
    let proto = st.proto;
    let n = args.len();
    match sub.as_str() {
        "help" if n == 2 => ReplyWriter::new(out, proto).help(FUNCTION_HELP),
        "kill" if n == 2 => {
            kill(&st.tenant, ScriptKind::Function)?;
            ReplyWriter::new(out, proto).ok();
        }
        "stats" if n == 2 => {
            // Redis answers FUNCTION STATS during a busy EVAL with EVAL's -BUSY
            // (`functionStatsCommand`); before the threshold it would answer once the script
            // ended, with no running script, which is what `function_stats` shows meanwhile.
            if let Some((since, ScriptKind::Eval)) = st.tenant.scripts().running_since() {
                let threshold = sh.hot.busy_reply_threshold_ms.load(Relaxed);
                if ferrite_storage::now_ms().saturating_sub(since) >= threshold {
                    return Err(busy_error(ScriptKind::Eval));
                }
            }
            function_stats(st, out);
        }
        "load" if n >= 3 => {
            // Every argument before the code is an option; REPLACE is the only one.
            for i in 2..n - 1 {
                if !args.is(i, "replace") {
                    return Err(ErrorReply::err(format!(
                        "Unknown option given: {}",
                        String::from_utf8_lossy(args.get(i))
                    )));
                }
            }
            let replace = n > 3;
            let code = args.get(n - 1);
            let name = with_engine(st, sh, true, |db, te| {
                let name = te.engine.load_library(code, replace)?;
                let effect = vec![
                    b"FUNCTION".to_vec(),
                    b"LOAD".to_vec(),
                    b"REPLACE".to_vec(),
                    code.to_vec(),
                ];
                store_libraries(db, te, ferrite_storage::now_ms(), vec![effect]);
                Ok(name)
            })
            .await?;
            ReplyWriter::new(out, proto).bulk_str(&name);
        }
        "delete" if n == 3 => {
            let name = String::from_utf8_lossy(args.get(2)).into_owned();
            with_engine(st, sh, true, |db, te| {
                te.engine.delete_library(&name)?;
                let effect = vec![b"FUNCTION".to_vec(), b"DELETE".to_vec(), name.into_bytes()];
                store_libraries(db, te, ferrite_storage::now_ms(), vec![effect]);
                Ok(())
            })
            .await?;
            ReplyWriter::new(out, proto).ok();
        }
        "flush" if n == 2 || n == 3 => {
            if n == 3 && !(args.is(2, "async") || args.is(2, "sync")) {
                return Err(ErrorReply::err(
                    "FUNCTION FLUSH only supports SYNC|ASYNC option",
                ));
            }
            with_engine(st, sh, true, |db, te| {
                te.engine.flush_libraries();
                let effect = vec![b"FUNCTION".to_vec(), b"FLUSH".to_vec()];
                store_libraries(db, te, ferrite_storage::now_ms(), vec![effect]);
                Ok(())
            })
            .await?;
            ReplyWriter::new(out, proto).ok();
        }
        "list" => {
            let mut with_code = false;
            let mut pattern: Option<Vec<u8>> = None;
            let mut i = 2;
            while i < n {
                if args.is(i, "withcode") && !with_code {
                    with_code = true;
                    i += 1;
                } else if args.is(i, "libraryname") && pattern.is_none() {
                    if i + 1 >= n {
                        return Err(ErrorReply::err("library name argument was not given"));
                    }
                    pattern = Some(args.get(i + 1).to_vec());
                    i += 2;
                } else {
                    return Err(ErrorReply::err(format!(
                        "Unknown argument {}",
                        String::from_utf8_lossy(args.get(i))
                    )));
                }
            }
            let libs = with_engine(st, sh, false, |_, te| {
                Ok(te.engine.libraries(|name| match &pattern {
                    Some(p) => ferrite_storage::glob::glob_match(p, name.as_bytes(), false),
                    None => true,
                }))
            })
            .await?;
            write_library_list(&mut ReplyWriter::new(out, proto), &libs, with_code);
        }
        "dump" if n == 2 => {
            let codes = with_engine(st, sh, false, |_, te| Ok(te.engine.library_codes())).await?;
            ReplyWriter::new(out, proto).bulk(&dump_libraries(&codes));
        }
        "restore" if n == 3 || n == 4 => {
            let policy = if n == 4 {
                match String::from_utf8_lossy(args.get(3))
                    .to_ascii_lowercase()
                    .as_str()
                {
                    "flush" => Restore::Flush,
                    "append" => Restore::Append,
                    "replace" => Restore::Replace,
                    _ => {
                        return Err(ErrorReply::err(
                            "Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.",
                        ));
                    }
                }
            } else {
                Restore::Append
            };
            let codes = undump_libraries(args.get(2), sh.hot.max_bulk_len.load(Relaxed))?;
            with_engine(st, sh, true, |db, te| {
                restore_libraries(&mut te.engine, &codes, policy)?;
                let mut effects = vec![vec![b"FUNCTION".to_vec(), b"FLUSH".to_vec()]];
                for (_, code) in te.engine.library_codes() {
                    effects.push(vec![
                        b"FUNCTION".to_vec(),
                        b"LOAD".to_vec(),
                        b"REPLACE".to_vec(),
                        code,
                    ]);
                }
                store_libraries(db, te, ferrite_storage::now_ms(), effects);
                Ok(())
            })
            .await?;
            ReplyWriter::new(out, proto).ok();
        }
        "load" | "delete" | "flush" | "dump" | "restore" | "kill" | "stats" | "help" => {
            return Err(ErrorReply::err(format!(
                "unknown subcommand or wrong number of arguments for '{}'. Try FUNCTION HELP.",
                String::from_utf8_lossy(args.get(1))
            )));
        }
        _ => return Err(ErrorReply::unknown_subcommand(args.get(1), "FUNCTION")),
    }
    Ok(Flow::Continue)
}

fn write_library_list(
    w: &mut ReplyWriter<'_>,
    libs: &[ferrite_scripting::LibraryInfo],
    with_code: bool,
) {
    w.array(libs.len());
    for lib in libs {
        w.map(if with_code { 4 } else { 3 });
        w.bulk_str("library_name");
        w.bulk_str(&lib.name);
        w.bulk_str("engine");
        w.bulk_str(lib.engine);
        w.bulk_str("functions");
        w.array(lib.functions.len());
        for (name, description, flags) in &lib.functions {
            w.map(3);
            w.bulk_str("name");
            w.bulk_str(name);
            w.bulk_str("description");
            match description {
                Some(d) => w.bulk_str(d),
                None => w.null(),
            }
            w.bulk_str("flags");
            w.set(flags.len());
            for f in flags {
                w.bulk_str(f);
            }
        }
        if with_code {
            w.bulk_str("library_code");
            w.bulk(&lib.code);
        }
    }
}

/// FUNCTION STATS, without the keyspace lock (a running function holds it).
fn function_stats(st: &ClientState, out: &mut BytesMut) {
    let activity = st.tenant.scripts();
    let (libraries, functions) = activity.function_counts();
    let mut w = ReplyWriter::new(out, st.proto);
    w.map(2);
    w.bulk_str("running_script");
    match activity.running_function() {
        None => w.null(),
        Some(r) => {
            w.map(3);
            w.bulk_str("name");
            w.bulk_str(&r.name);
            w.bulk_str("command");
            w.array(r.command.len());
            for a in &r.command {
                w.bulk(a);
            }
            w.bulk_str("duration_ms");
            w.int(ferrite_storage::now_ms().saturating_sub(r.started_ms) as i64);
        }
    }
    w.bulk_str("engines");
    w.map(1);
    w.bulk_str("LUA");
    w.map(2);
    w.bulk_str("libraries_count");
    w.int(libraries as i64);
    w.bulk_str("functions_count");
    w.int(functions as i64);
}

/// FUNCTION RESTORE's policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restore {
    Flush,
    Append,
    Replace,
}

/// Applies a restore all or nothing: on any error the libraries are as before.
fn restore_libraries(
    engine: &mut Engine,
    codes: &[Vec<u8>],
    policy: Restore,
) -> Result<(), ErrorReply> {
    let before = engine.library_codes();
    let result = (|| {
        if policy == Restore::Flush {
            engine.flush_libraries();
        }
        for code in codes {
            if policy == Restore::Append {
                // Redis's libraryJoin words this without quotes (FUNCTION LOAD quotes the name).
                if let Ok((name, _)) = ferrite_scripting::functions::parse_library_header(code)
                    && !engine.libraries(|n| n == name).is_empty()
                {
                    return Err(ErrorReply::err(format!("Library {name} already exists")));
                }
            }
            engine.load_library(code, policy != Restore::Append)?;
        }
        Ok(())
    })();
    if result.is_err() {
        engine.flush_libraries();
        for (_, code) in &before {
            let _ = engine.load_library(code, true);
        }
    }
    result
}

/// RDB opcode of a function library in a FUNCTION DUMP payload (`RDB_OPCODE_FUNCTION2`).
const RDB_OPCODE_FUNCTION2: u8 = 245;

/// FUNCTION DUMP's payload, as Redis 7 writes it: each library as `RDB_OPCODE_FUNCTION2` and its
/// code as an RDB string, then the RDB version and a CRC-64 (the DUMP footer).
fn dump_libraries(codes: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (_, code) in codes {
        out.push(RDB_OPCODE_FUNCTION2);
        rdb_len(&mut out, code.len() as u64);
        out.extend_from_slice(code);
    }
    out.extend_from_slice(&ferrite_rdb::RDB_VERSION.to_le_bytes());
    let crc = ferrite_rdb::crc64(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// RDB length encoding.
fn rdb_len(out: &mut Vec<u8>, n: u64) {
    if n < 1 << 6 {
        out.push(n as u8);
    } else if n < 1 << 14 {
        out.push(0x40 | (n >> 8) as u8);
        out.push(n as u8);
    } else if n <= u32::MAX as u64 {
        out.push(0x80);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// Reads a slice and counts what was read (the RDB decoder owns its reader).
struct Counted<'a> {
    data: &'a [u8],
    read: std::rc::Rc<std::cell::Cell<usize>>,
}

impl std::io::Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = std::io::Read::read(&mut self.data, buf)?;
        self.read.set(self.read.get() + n);
        Ok(n)
    }
}

/// The libraries' code from a FUNCTION DUMP payload (Redis's or ours).
fn undump_libraries(payload: &[u8], max_string: u64) -> Result<Vec<Vec<u8>>, ErrorReply> {
    let bad = || ErrorReply::err("payload version or checksum are wrong");
    if payload.len() < 10 {
        return Err(bad());
    }
    let (body, footer) = payload.split_at(payload.len() - 10);
    let version = u16::from_le_bytes([footer[0], footer[1]]);
    if version > ferrite_rdb::MAX_READ_VERSION {
        return Err(bad());
    }
    let mut crc_bytes = [0u8; 8];
    crc_bytes.copy_from_slice(&footer[2..]);
    if ferrite_rdb::crc64(&payload[..payload.len() - 8]) != u64::from_le_bytes(crc_bytes) {
        return Err(bad());
    }
    let read = std::rc::Rc::new(std::cell::Cell::new(0));
    let mut decoder = ferrite_rdb::Decoder::new(
        Counted {
            data: body,
            read: read.clone(),
        },
        max_string,
    );
    let mut codes = Vec::new();
    while read.get() < body.len() {
        let op = decoder.read_u8().map_err(|_| bad())?;
        if op != RDB_OPCODE_FUNCTION2 {
            return Err(ErrorReply::err("given type is not a function"));
        }
        let code = decoder
            .read_string()
            .map_err(|_| ErrorReply::err("failed loading the library payload"))?;
        codes.push(code);
    }
    Ok(codes)
}
