//! One tenant's Lua engine: the Lua state with Redis's sandbox and API, the script cache (EVAL
//! bodies by SHA1), the function libraries, and the machinery that runs a script so that it
//! can be suspended and finished on another thread.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::c_int;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};
use ferrite_protocol::{ErrorReply, Protocol};
use mlua::{
    Function, HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Table, Value, VmState, ffi,
};
use sha1::{Digest, Sha1};

use crate::convert::{self, LuaReply};
use crate::functions::{Libraries, Loading};
use crate::rand48::Rand48;
use crate::sandbox;
use crate::shebang::{ScriptFlags, parse_shebang};

/// How often (in Lua VM instructions) the hook looks at the clock and the kill flag: often
/// enough to notice a long script within a fraction of a millisecond, rarely enough to cost
/// nothing measurable.
const HOOK_EVERY: u32 = 10_000;

/// The C stack a script runs on. Lua limits its own C recursion (200 nested C calls), cjson
/// its nesting (1000); the commands a script calls run here too. Only touched pages are
/// committed.
const SCRIPT_STACK_BYTES: usize = 4 << 20;

/// Redis's log levels for `redis.log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug = 0,
    Verbose = 1,
    Notice = 2,
    Warning = 3,
}

/// What a running script reaches the server through.
pub trait Host {
    /// Runs one command for the script (`redis.call`/`redis.pcall`) and writes its reply into
    /// `out` in `proto`. An `Err` is a refusal before the command ran (unknown command, write
    /// in a read-only script, quota): it reaches the script as an error table like a command
    /// error would.
    fn call(
        &mut self,
        argv: &[&[u8]],
        proto: Protocol,
        out: &mut BytesMut,
    ) -> Result<(), ErrorReply>;
    /// Asked from the Lua hook: true stops the script (SCRIPT KILL / FUNCTION KILL).
    fn killed(&self) -> bool;
    /// `redis.log`.
    fn log(&mut self, level: LogLevel, message: &str);
    /// `redis.acl_check_cmd`: whether the user running the script may run this command with
    /// these arguments (its ACL rules: command, keys, channels); `None` for an unknown command.
    fn acl_check(&self, argv: &[&[u8]]) -> Option<bool>;
}

/// Limits of one engine.
#[derive(Debug, Clone, Copy)]
pub struct EngineLimits {
    /// Bytes the Lua heap may use (scripts that allocate past it fail with "not enough memory").
    pub memory: usize,
    /// Bytes of script bodies the EVAL cache may hold; scripts cached by EVAL are evicted
    /// oldest first past it, SCRIPT LOAD is refused past it.
    pub cache_bytes: usize,
    /// Largest reply a script may return.
    pub max_reply: usize,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            memory: 64 << 20,
            cache_bytes: 16 << 20,
            max_reply: 512 << 20,
        }
    }
}

/// Why a script could not be loaded or started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// The reply to send (compile errors, NOSCRIPT, ...).
    Reply(ErrorReply),
}

impl From<ErrorReply> for RunError {
    fn from(e: ErrorReply) -> Self {
        RunError::Reply(e)
    }
}

/// What [`Engine::run`] runs.
#[derive(Debug)]
pub enum Target<'a> {
    /// A cached EVAL script, by its SHA1 (40 hex digits, any case).
    Script(&'a str),
    /// A cached EVAL script already found ([`Engine::cached_script`]): EVALSHA looks its
    /// script up once, for its flags and the run.
    Cached(Script),
    /// A function of a loaded library.
    Function(&'a str),
}

/// A cached EVAL script as [`Engine::cached_script`] found it: its flags, and what
/// [`Target::Cached`] runs without looking it up again.
#[derive(Debug)]
pub struct Script {
    func: Function,
    sha: Rc<str>,
    flags: ScriptFlags,
}

impl Script {
    pub fn flags(&self) -> ScriptFlags {
        self.flags
    }
}

/// Where a run stands.
#[derive(Debug)]
pub enum Step {
    /// The script finished; its reply (or error reply) in the client's protocol.
    Done(BytesMut),
    /// The script ran past its time on this thread and is suspended; finish it with
    /// [`Engine::resume`] (on any thread).
    Suspended,
}

/// The suspended part of a run.
pub struct Invocation {
    co: Coroutine<(), (), BytesMut, DefaultStack>,
}

/// State the Lua callbacks and the hook share with the run in progress.
struct RunState {
    /// The host of the run in progress, valid only while a resume is on the stack.
    host: Cell<Option<*mut (dyn Host + 'static)>>,
    /// The coroutine's yielder, valid only while the coroutine runs.
    yielder: Cell<*const Yielder<(), ()>>,
    /// When to suspend the run (see [`Suspend`]).
    suspend: Cell<Suspend>,
    /// Command replies are asked for in RESP3 (`redis.setresp(3)`).
    resp3: Cell<bool>,
    /// The kill error was raised: keep raising it at every instruction.
    killed: Cell<bool>,
    /// A run is in progress (redis.call outside a run is an error).
    in_run: Cell<bool>,
    /// Reused buffer for command replies.
    reply: RefCell<BytesMut>,
    /// Reused buffers for a command's arguments (`redis.call`): their bytes one after the
    /// other, and where each ends. A call costs no allocation once they have grown.
    arg_bytes: RefCell<Vec<u8>>,
    arg_ends: RefCell<Vec<usize>>,
    /// The KEYS and ARGV of the run being started (copied: a run may be suspended before its
    /// runner fetches them), as bytes one after the other and where each ends.
    request: RefCell<Request>,
    /// How many items EVAL's kept KEYS and ARGV tables may hold from earlier runs (cleared by
    /// the next refill; see [`fetch_request`]).
    kept_lens: [Cell<usize>; 2],
    /// The globals `KEYS` and `ARGV` are the kept tables (set by [`fetch_request`]; nothing
    /// else sets them, and scripts cannot): a run that refills them sets no global.
    kept_in_globals: Cell<bool>,
    rand: RefCell<Rand48>,
}

/// When the hook suspends a run.
#[derive(Debug, Clone, Copy)]
enum Suspend {
    Never,
    /// After this long; the clock is first read by the first hook (which comes after
    /// [`HOOK_EVERY`] instructions, a few microseconds), so the many runs that never reach a
    /// hook read no clock for it.
    After(Duration),
    /// At the first hook after this instant.
    At(Instant),
}

/// A run's keys and arguments, kept for `fetch_request`.
#[derive(Default)]
struct Request {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    keys: usize,
}

impl RunState {
    /// The host of the running script.
    fn with_host<R>(&self, f: impl FnOnce(&mut dyn Host) -> R) -> Option<R> {
        let host = self.host.get()?;
        // SAFETY: `host` is set by `Engine::drive` from a `&mut dyn Host` that outlives the
        // resume during which Lua code (and so this callback) runs, and is cleared before
        // that resume returns; no other reference to the host is used meanwhile.
        Some(f(unsafe { &mut *host }))
    }
}

struct CachedScript {
    /// Its SHA1 (the cache key), shared with every run's error messages without a copy.
    sha: Rc<str>,
    func: Function,
    flags: ScriptFlags,
    body_len: usize,
    /// Loaded with SCRIPT LOAD (kept) rather than cached by EVAL (evictable).
    loaded: bool,
    /// For eviction: the cache's clock when last used.
    used: u64,
}

/// One tenant's Lua engine.
pub struct Engine {
    lua: Lua,
    /// The globals' read-only proxy (the environment scripts and libraries run in).
    env: Table,
    /// `run(f, false, false)`: runs a library's body under Redis's error handler (FUNCTION
    /// LOAD).
    runner: Function,
    /// What every script run calls (see [`call_script`]).
    callees: Rc<Callees>,
    /// `phase(loading)`: switches the globals to the library-loading API and back.
    phase: Function,
    state: Rc<RunState>,
    loading: Rc<RefCell<Loading>>,
    /// By SHA1. aHash rather than the standard SipHash: EVALSHA looks its script up twice per
    /// call (its flags, then the run), ~260 instructions each with SipHash; aHash keeps
    /// per-process random keys, so the tenant's own cache stays resistant to chosen collisions.
    scripts: HashMap<String, CachedScript, ahash::RandomState>,
    cache_bytes: usize,
    clock: u64,
    limits: EngineLimits,
    stack: Option<DefaultStack>,
    /// A finished run's reply buffer, given back by the caller ([`Engine::recycle`]) for the
    /// next run's reply: a run then allocates no reply buffer.
    spare_reply: Option<BytesMut>,
    running: Option<Invocation>,
    pub(crate) libraries: Libraries,
}

// SAFETY: an `Engine` owns its Lua state and every handle into it (functions, tables, the
// shared `RunState`); none is ever given out. Lua and those handles use non-atomic reference
// counts, which is sound across threads as long as only one thread touches them at a time and
// handing over establishes happens-before: the server keeps an engine inside its tenant's
// keyspace and only uses it while holding that keyspace's lock, and a suspended run moves to
// another thread together with that lock (a channel/spawn hand-over). Lua, mlua (without its
// `send` feature) and the C libraries keep no thread-local state, so a coroutine suspended on
// one thread can be resumed on another.
unsafe impl Send for Engine {}

/// SHA1 of a script body as 40 lower-case hex digits (script cache keys, `redis.sha1hex`).
pub fn sha1_hex(data: &[u8]) -> String {
    let digest = Sha1::digest(data);
    let mut s = String::with_capacity(40);
    for b in digest.iter() {
        s.push(char::from(b"0123456789abcdef"[(b >> 4) as usize]));
        s.push(char::from(b"0123456789abcdef"[(b & 15) as usize]));
    }
    s
}

impl Engine {
    /// A fresh engine: Redis's libraries and API, sandboxed. `version` is what
    /// `redis.REDIS_VERSION` reports.
    pub fn new(limits: EngineLimits, version: &str, version_num: u32) -> mlua::Result<Engine> {
        // SAFETY: the debug library is needed only while the sandbox is built (Redis's error
        // handler keeps `debug.getinfo`); the sandbox removes `debug` from the globals, so
        // scripts never reach it.
        let lua = unsafe {
            Lua::unsafe_new_with(
                StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::DEBUG,
                LuaOptions::new(),
            )
        };
        crate::libs::open(&lua)?;
        let state = Rc::new(RunState {
            host: Cell::new(None),
            yielder: Cell::new(std::ptr::null()),
            suspend: Cell::new(Suspend::Never),
            resp3: Cell::new(false),
            killed: Cell::new(false),
            in_run: Cell::new(false),
            reply: RefCell::new(BytesMut::new()),
            arg_bytes: RefCell::new(Vec::new()),
            arg_ends: RefCell::new(Vec::new()),
            request: RefCell::new(Request::default()),
            kept_lens: [Cell::new(0), Cell::new(0)],
            kept_in_globals: Cell::new(false),
            rand: RefCell::new(Rand48::default()),
        });
        let redis = redis_table(&lua, &state, version, version_num)?;
        lua.globals().raw_set("redis", redis)?;
        install_math_random(&lua, &state)?;
        let error_message = lua.create_function(|_, v: Value| Ok(coded_message(&v)))?;
        let loading = Rc::new(RefCell::new(Loading::default()));
        let fetch = fetch_closure(&lua, &state, lua.globals())?;
        let register = {
            let loading = loading.clone();
            lua.create_function(move |_, args: MultiValue| {
                crate::functions::register_function(&loading, args)
            })?
        };
        // The real globals table, the read-only proxy scripts see, the library runner, the
        // phase switch, Redis's error handler.
        let (_globals, env, runner, phase, handler): (Table, Table, Function, Function, Function) =
            lua.load(sandbox::SETUP)
                .set_name("=[sandbox]")
                .call((error_message, register))?;
        install_hook(&lua, &state, &loading)?;
        lua.set_memory_limit(limits.memory)?;
        Ok(Engine {
            lua,
            env,
            runner,
            callees: Rc::new(Callees { handler, fetch }),
            phase,
            state,
            loading,
            scripts: HashMap::default(),
            cache_bytes: 0,
            clock: 0,
            limits,
            stack: None,
            spare_reply: None,
            running: None,
            libraries: Libraries::default(),
        })
    }

    pub fn limits(&self) -> EngineLimits {
        self.limits
    }

    /// Changes the limits (CONFIG SET); a smaller cache evicts EVAL scripts now.
    pub fn set_limits(&mut self, limits: EngineLimits) {
        self.limits = limits;
        let _ = self.lua.set_memory_limit(limits.memory);
        self.evict(0);
    }

    /// Bytes the Lua heap uses.
    pub fn used_memory(&self) -> usize {
        self.lua.used_memory()
    }

    /// Number of cached scripts and their body bytes.
    pub fn cache_stats(&self) -> (usize, usize) {
        (self.scripts.len(), self.cache_bytes)
    }

    pub(crate) fn lua(&self) -> &Lua {
        &self.lua
    }

    pub(crate) fn env(&self) -> &Table {
        &self.env
    }

    pub(crate) fn loading(&self) -> &Rc<RefCell<Loading>> {
        &self.loading
    }

    pub(crate) fn load_runner(&self) -> &Function {
        &self.runner
    }

    /// Puts the count hook back if a kill left the every-instruction kill hook installed, so
    /// the next script or library load does not die of the previous script's kill.
    pub(crate) fn clear_kill(&self) -> mlua::Result<()> {
        if self.state.killed.replace(false) {
            install_hook(&self.lua, &self.state, &self.loading)?;
        }
        Ok(())
    }

    /// Switches the globals scripts see to the library-loading API (`loading`) and back.
    pub(crate) fn set_phase(&self, loading: bool) {
        let _ = self.phase.call::<()>(loading);
    }

    /// Compiles a script body into the cache (EVAL of an unknown body, SCRIPT LOAD). Returns
    /// its SHA1 and flags. `keep` (SCRIPT LOAD) protects it from eviction.
    pub fn load_script(
        &mut self,
        body: &[u8],
        keep: bool,
    ) -> Result<(String, ScriptFlags), ErrorReply> {
        let sha = sha1_hex(body);
        self.clock += 1;
        if let Some(s) = self.scripts.get_mut(&sha) {
            s.loaded |= keep;
            s.used = self.clock;
            return Ok((sha, s.flags));
        }
        let (flags, shebang_len) = parse_shebang(body).map_err(ErrorReply::err)?;
        if body.len() > self.limits.cache_bytes {
            return Err(ErrorReply::err(
                "script is larger than the script cache (lua-cache-max-bytes)",
            ));
        }
        let func = self.compile(&body[shebang_len..], "@user_script", &sha)?;
        self.evict(body.len());
        if self.cache_bytes + body.len() > self.limits.cache_bytes {
            return Err(ErrorReply::err(
                "script cache is full of SCRIPT LOAD scripts (lua-cache-max-bytes); SCRIPT FLUSH frees it",
            ));
        }
        self.cache_bytes += body.len();
        self.scripts.insert(
            sha.clone(),
            CachedScript {
                sha: Rc::from(sha.as_str()),
                func,
                flags,
                body_len: body.len(),
                loaded: keep,
                used: self.clock,
            },
        );
        Ok((sha, flags))
    }

    /// Compiles Lua source text (never bytecode) in the sandbox's environment.
    pub(crate) fn compile(
        &self,
        code: &[u8],
        chunk_name: &str,
        name: &str,
    ) -> Result<Function, ErrorReply> {
        if code.first() == Some(&0x1b) {
            return Err(ErrorReply::err(format!(
                "Error compiling script (new function): user_script:1: binary chunks are not allowed ({name})"
            )));
        }
        self.lua
            .load(code)
            .set_name(chunk_name)
            .set_mode(mlua::chunk::ChunkMode::Text)
            .set_environment(self.env.clone())
            .into_function()
            .map_err(|e| {
                ErrorReply::err(format!(
                    "Error compiling script (new function): {}",
                    one_line(&error_text(&e))
                ))
            })
    }

    /// Makes room for `incoming` bytes by evicting the least recently used EVAL scripts
    /// (SCRIPT LOAD ones stay, as Redis 7.4 keeps them).
    fn evict(&mut self, incoming: usize) {
        while self.cache_bytes + incoming > self.limits.cache_bytes {
            let victim = self
                .scripts
                .iter()
                .filter(|(_, s)| !s.loaded)
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone());
            let Some(k) = victim else { break };
            if let Some(s) = self.scripts.remove(&k) {
                self.cache_bytes -= s.body_len;
            }
        }
    }

    /// A cached script by its SHA1 in lower case (as EVALSHA sends it, lowered), counted as
    /// used for the cache's eviction order.
    pub fn cached_script(&mut self, sha: &str) -> Option<Script> {
        self.clock += 1;
        let s = self.scripts.get_mut(sha)?;
        s.used = self.clock;
        Some(Script {
            func: s.func.clone(),
            sha: s.sha.clone(),
            flags: s.flags,
        })
    }

    pub fn script_exists(&self, sha: &str) -> bool {
        self.scripts.contains_key(&sha.to_ascii_lowercase())
    }

    /// SCRIPT FLUSH.
    pub fn flush_scripts(&mut self) {
        self.scripts.clear();
        self.cache_bytes = 0;
        let _ = self.lua.gc_collect();
    }

    /// Starts a script. `keys`/`args` become KEYS/ARGV (EVAL) or the function's arguments.
    /// With `suspend_after`, a script still running after that long is suspended
    /// ([`Step::Suspended`]) at its next hook; the caller finishes it with [`Engine::resume`].
    pub fn run(
        &mut self,
        target: Target<'_>,
        keys: &[&[u8]],
        args: &[&[u8]],
        proto: Protocol,
        host: &mut dyn Host,
        suspend_after: Option<Duration>,
    ) -> Result<Step, RunError> {
        if self.running.is_some() {
            return Err(ErrorReply::err("a script is already running").into());
        }
        let (func, name, is_eval) = match target {
            Target::Script(sha) => {
                // Clients send the SHA1 as SCRIPT LOAD answered it, in lower case.
                let sha = if sha.bytes().any(|b| b.is_ascii_uppercase()) {
                    std::borrow::Cow::Owned(sha.to_ascii_lowercase())
                } else {
                    std::borrow::Cow::Borrowed(sha)
                };
                self.clock += 1;
                let Some(s) = self.scripts.get_mut(sha.as_ref()) else {
                    return Err(ErrorReply::coded(
                        "NOSCRIPT",
                        "No matching script. Please use EVAL.",
                    )
                    .into());
                };
                s.used = self.clock;
                (s.func.clone(), s.sha.clone(), true)
            }
            Target::Cached(s) => (s.func, s.sha, true),
            Target::Function(name) => {
                let Some(f) = self.libraries.function(name) else {
                    return Err(ErrorReply::err("Function not found").into());
                };
                (f.func.clone(), Rc::<str>::from(name), false)
            }
        };
        if c_int::try_from(keys.len()).is_err() || c_int::try_from(args.len()).is_err() {
            return Err(ErrorReply::err("too many keys or arguments").into());
        }
        {
            // The runner fetches them as KEYS and ARGV (see `fetch_request`).
            let request = &mut *self.state.request.borrow_mut();
            if request.bytes.capacity() > 64 << 10 {
                // A huge request's buffer is not kept.
                *request = Request::default();
            }
            request.bytes.clear();
            request.ends.clear();
            for item in keys.iter().chain(args) {
                request.bytes.extend_from_slice(item);
                request.ends.push(request.bytes.len());
            }
            request.keys = keys.len();
        }
        self.state.resp3.set(false);
        self.clear_kill().map_err(setup_error)?;
        let state = self.state.clone();
        let callees = self.callees.clone();
        let lua = self.lua.clone();
        let max_reply = self.limits.max_reply;
        let mut out = self.spare_reply.take().unwrap_or_default();
        out.clear();
        let body = move |y: &Yielder<(), ()>, (): ()| -> BytesMut {
            state.yielder.set(y as *const _);
            let result = call_script(&lua, &callees, &func, is_eval);
            state.yielder.set(std::ptr::null());
            finish(result, &name, proto, state.resp3.get(), max_reply, &mut out);
            out
        };
        let stack = match self.stack.take() {
            Some(s) => s,
            None => DefaultStack::new(SCRIPT_STACK_BYTES)
                .map_err(|e| ErrorReply::err(format!("cannot allocate a script stack: {e}")))?,
        };
        self.running = Some(Invocation {
            co: Coroutine::with_stack(stack, body),
        });
        self.state
            .suspend
            .set(suspend_after.map_or(Suspend::Never, Suspend::After));
        Ok(self.drive(host))
    }

    /// Continues a suspended run to its end (no further suspension).
    pub fn resume(&mut self, host: &mut dyn Host) -> BytesMut {
        self.state.suspend.set(Suspend::Never);
        match self.drive(host) {
            Step::Done(reply) => reply,
            // Cannot happen without a suspension deadline; answer rather than loop.
            Step::Suspended => {
                let mut out = BytesMut::new();
                out.extend_from_slice(b"-ERR script suspended twice\r\n");
                out
            }
        }
    }

    /// Gives a run's reply buffer back once its bytes were copied out, for the next run's
    /// reply (a large one is not kept).
    pub fn recycle(&mut self, reply: BytesMut) {
        if reply.capacity() <= 64 << 10 {
            self.spare_reply = Some(reply);
        }
    }

    /// A run is suspended.
    pub fn is_suspended(&self) -> bool {
        self.running.is_some()
    }

    fn drive(&mut self, host: &mut dyn Host) -> Step {
        let Some(run) = self.running.as_mut() else {
            let mut out = BytesMut::new();
            out.extend_from_slice(b"-ERR no script to resume\r\n");
            return Step::Done(out);
        };
        // SAFETY (lifetime erasure): the pointer is only dereferenced while this resume is on
        // the stack (see RunState::with_host) and is cleared right after it.
        let host: *mut (dyn Host + '_) = host;
        let host: *mut (dyn Host + 'static) = unsafe { std::mem::transmute(host) };
        self.state.host.set(Some(host));
        self.state.in_run.set(true);
        let r = run.co.resume(());
        self.state.in_run.set(false);
        self.state.host.set(None);
        match r {
            CoroutineResult::Yield(()) => Step::Suspended,
            CoroutineResult::Return(reply) => {
                if let Some(done) = self.running.take() {
                    self.stack = Some(done.co.into_stack());
                }
                // Lua 5.1 does not collect when an allocation fails: a script stopped at the
                // memory limit leaves a heap full of its garbage, on which the next script (or
                // its compilation) would fail too. A full collection now, only then.
                let limit = self.limits.memory;
                if limit > 0 && self.lua.used_memory() > limit / 4 * 3 {
                    let _ = self.lua.gc_collect();
                }
                Step::Done(reply)
            }
        }
    }
}

/// What every script run calls.
struct Callees {
    /// Redis's error handler (`__redis__err__handler`), the error function scripts run under.
    handler: Function,
    /// `fetch(eval)`: builds the run's KEYS and ARGV (see [`fetch_request`]).
    fetch: Function,
}

/// Runs `func` as Redis's `luaCallFunction` does, with plain C API calls (`mlua`'s
/// `Function::call` costs a handle per argument and result, and a Lua runner function around
/// `xpcall` cost a Lua call, `xpcall`'s own C call and two global sets per run): KEYS and ARGV
/// are built by `fetch` in a protected call of their own (past the heap's memory limit it
/// fails, and the run with it), then `func` — EVAL's `f()`, with KEYS and ARGV set as globals
/// by `fetch`, or a function's `f(keys, args)` — is called by `lua_pcall` with Redis's error
/// handler as its error function, which is what `xpcall(f, handler)` does.
///
/// Returns `(ok, result-or-error)` as `xpcall` would; an error only when KEYS and ARGV could
/// not be built.
fn call_script(
    lua: &Lua,
    callees: &Callees,
    func: &Function,
    is_eval: bool,
) -> mlua::Result<(bool, Value)> {
    lua.exec_raw_lua(|raw| {
        // SAFETY: the stack is checked for room first (at most five slots pushed). The pushes
        // outside the protected calls allocate nothing (references to live values, a boolean),
        // so nothing raises outside them; everything the calls raise is caught by `lua_pcall`.
        // The stack is left as found.
        unsafe {
            let l = raw.state();
            if ffi::lua_checkstack(l, 6) == 0 {
                return Err(mlua::Error::StackError);
            }
            let base = ffi::lua_gettop(l);
            raw.push(&callees.handler)?;
            raw.push(&callees.fetch)?;
            ffi::lua_pushboolean(l, c_int::from(is_eval));
            // KEYS and ARGV at base + 2 and base + 3.
            let status = ffi::lua_pcall(l, 1, 2, 0);
            if status != 0 {
                let message = match raw.pop_value() {
                    Value::String(s) => s.to_string_lossy(),
                    _ => "error in the script runner".to_string(),
                };
                ffi::lua_settop(l, base);
                return Err(if status == ffi::LUA_ERRMEM {
                    mlua::Error::MemoryError(message)
                } else {
                    mlua::Error::RuntimeError(message)
                });
            }
            let nargs = if is_eval {
                ffi::lua_settop(l, base + 1);
                0
            } else {
                2
            };
            raw.push(func)?;
            if !is_eval {
                ffi::lua_insert(l, base + 2);
            }
            let status = ffi::lua_pcall(l, nargs, 1, base + 1);
            let value = raw.pop_value();
            ffi::lua_settop(l, base);
            Ok((status == 0, value))
        }
    })
}

/// A Lua C closure of `f` with the engine's `RunState` as its one upvalue.
fn c_closure(lua: &Lua, state: &Rc<RunState>, f: ffi::lua_CFunction) -> mlua::Result<Function> {
    let state_ptr = Rc::as_ptr(state).cast_mut().cast::<std::ffi::c_void>();
    // SAFETY: in a protected call (an allocation error is caught by it); pushes the state's
    // address as the closure's one upvalue and the closure, which `exec_raw` returns. The
    // state outlives the closure: the engine keeps its `Rc<RunState>` and drops its Lua state
    // (and with it the closure) first.
    unsafe {
        lua.exec_raw::<Function>((), |l| {
            ffi::lua_pushlightuserdata(l, state_ptr);
            ffi::lua_pushcclosure(l, f, 1);
        })
    }
}

/// The `RunState` a C closure made by [`c_closure`] carries.
///
/// # Safety
///
/// `l` must be running such a closure.
unsafe fn closure_state<'a>(l: *mut ffi::lua_State) -> &'a RunState {
    // SAFETY: the upvalue is the `RunState` the engine keeps alive while its Lua state lives;
    // only shared references to it are made (its fields are cells).
    unsafe { &*(ffi::lua_touserdata(l, ffi::lua_upvalueindex(1)) as *const RunState) }
}

/// The most KEYS (or ARGV) an EVAL's kept table is refilled with; a run with more gets a table
/// of its own, so one huge run does not pin a huge array in the heap.
const REUSED_TABLE_MAX: usize = 64;

/// The fetch closure: the engine's `RunState`, the two tables EVAL's KEYS and ARGV are
/// refilled in (see [`fetch_request`]), the real globals table and the names `KEYS` and `ARGV`
/// as its upvalues.
fn fetch_closure(lua: &Lua, state: &Rc<RunState>, globals: Table) -> mlua::Result<Function> {
    let state_ptr = Rc::as_ptr(state).cast_mut().cast::<std::ffi::c_void>();
    // SAFETY: in a protected call (an allocation error is caught by it) whose one argument
    // (stack slot 1) is the globals table; pushes the upvalues and makes the closure of them,
    // then removes the argument so that the closure alone is returned. The state outlives the
    // closure (see `c_closure`).
    unsafe {
        lua.exec_raw::<Function>(globals, |l| {
            ffi::lua_pushlightuserdata(l, state_ptr);
            ffi::lua_createtable(l, 1, 0);
            ffi::lua_createtable(l, 0, 0);
            ffi::lua_pushvalue(l, 1);
            convert::push_bytes(l, b"KEYS");
            convert::push_bytes(l, b"ARGV");
            ffi::lua_pushcclosure(l, fetch_request, 6);
            ffi::lua_remove(l, 1);
        })
    }
}

/// `fetch(eval)`: the run's KEYS and ARGV as two Lua arrays of strings (`luaCreateArray`),
/// built inside a protected call (see [`call_script`]): past the heap's memory limit an
/// allocation raises Lua's memory error, which that call catches. For EVAL they are also set
/// as the globals `KEYS` and `ARGV`.
///
/// For EVAL (`eval` true) the two arrays are the same tables from run to run, refilled
/// in place: Redis builds two new tables per call, whose allocation, collection and freeing
/// cost about as much as the rest of a one-command script's Lua work. That is unobservable:
/// an EVAL script can keep nothing past its run (the globals and every library are read-only),
/// and a table a script changed beyond its refilled items — another key, a metatable — is
/// replaced by a new one (see [`refill`]). Functions get new tables: a library's code can keep
/// references in its own upvalues.
///
/// # Safety
///
/// Called by Lua as the closure made by [`fetch_closure`]. The request's bytes are read
/// through a pointer taken before the first push (no borrow guard is alive when a push raises,
/// so the `longjmp` skips no destructor); nothing changes them while this runs (no Rust code
/// runs).
unsafe extern "C-unwind" fn fetch_request(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: as this function's contract says.
    let state = unsafe { closure_state(l) };
    let (bytes, ends, keys) = {
        let request = state.request.borrow();
        (
            (request.bytes.as_ptr(), request.bytes.len()),
            (request.ends.as_ptr(), request.ends.len()),
            request.keys,
        )
    };
    // SAFETY: the pointers describe the request's buffers, unchanged while this runs; the
    // stack has LUA_MINSTACK free slots in a C function (one argument) and at most four more
    // are used at once (two tables and a name and a value to set, or a string); counts fit a C int
    // (`Engine::run` checks them).
    unsafe {
        let reuse = ffi::lua_toboolean(l, 1) != 0;
        let bytes = std::slice::from_raw_parts(bytes.0, bytes.1);
        let ends = std::slice::from_raw_parts(ends.0, ends.1);
        let keys = keys.min(ends.len());
        // The request's i-th item.
        let item = |i: usize| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            bytes.get(start..ends[i]).unwrap_or_default()
        };
        for (slot, range) in [(2, 0..keys), (3, keys..ends.len())] {
            let count = range.len();
            if reuse && count <= REUSED_TABLE_MAX {
                let kept = &state.kept_lens[slot as usize - 2];
                ffi::lua_pushvalue(l, ffi::lua_upvalueindex(slot));
                // Whatever a memory error leaves half-filled is cleared by the next refill.
                kept.set(kept.get().max(count));
                if refill(l, kept.get(), range.clone().map(item)) {
                    kept.set(count);
                    continue;
                }
                // Changed by a script: a new table from now on.
                state.kept_in_globals.set(false);
                ffi::lua_pop(l, 1);
                ffi::lua_createtable(l, count as c_int, 0);
                ffi::lua_pushvalue(l, -1);
                ffi::lua_replace(l, ffi::lua_upvalueindex(slot));
                kept.set(count);
            } else {
                state.kept_in_globals.set(false);
                ffi::lua_createtable(l, count as c_int, 0);
            }
            for (n, i) in range.enumerate() {
                convert::push_bytes(l, item(i));
                ffi::lua_rawseti_(l, -2, n as c_int + 1);
            }
        }
        if reuse && !state.kept_in_globals.get() {
            // globals.KEYS = keys, globals.ARGV = args (the names are upvalues 5 and 6).
            for (name, table) in [(5, -2), (6, -1)] {
                ffi::lua_pushvalue(l, ffi::lua_upvalueindex(name));
                ffi::lua_pushvalue(l, table - 1);
                ffi::lua_rawset(l, ffi::lua_upvalueindex(4));
            }
            // Both are the kept tables unless one was too big to keep.
            state
                .kept_in_globals
                .set(keys <= REUSED_TABLE_MAX && ends.len() - keys <= REUSED_TABLE_MAX);
        }
    }
    2
}

/// Refills the table on top of the stack with `items` as `t[1..]`, clearing up to `kept`
/// (the most items it may hold from earlier runs); true when it then holds exactly those items
/// and has no metatable — false (the table left on top) when a script changed it otherwise.
///
/// # Safety
///
/// A table on top of `l`'s stack, with room for one more value; in a protected call (the
/// pushes may raise a memory error).
unsafe fn refill<'a>(
    l: *mut ffi::lua_State,
    kept: usize,
    items: impl Iterator<Item = &'a [u8]>,
) -> bool {
    // SAFETY: as the caller promised.
    unsafe {
        let mut count = 0;
        for item in items {
            count += 1;
            convert::push_bytes(l, item);
            ffi::lua_rawseti_(l, -2, count);
        }
        for i in count + 1..=kept as c_int {
            ffi::lua_pushnil(l);
            ffi::lua_rawseti_(l, -2, i);
        }
        // Nothing but those items: no other array slot, nothing in the hash part (where
        // integer keys may live too), no metatable.
        ferrite_lua_isplainarray(l, -1, count) != 0
    }
}

unsafe extern "C-unwind" {
    /// Ferrite's addition to its copy of Lua (`crates/lua-src`, `lapi.c`): whether the table
    /// at `idx` holds only an array `1..n` (every later array slot nil, an empty hash part)
    /// and has no metatable. Reads only; never raises.
    fn ferrite_lua_isplainarray(l: *mut ffi::lua_State, idx: c_int, n: c_int) -> c_int;
}

impl Drop for Engine {
    fn drop(&mut self) {
        // A suspended coroutine must not be unwound (its stack has Lua's C frames): leak it,
        // and with it the Lua state it references. Only happens when a server stops mid-run.
        if let Some(run) = self.running.take() {
            std::mem::forget(run);
        }
    }
}

fn setup_error(e: mlua::Error) -> RunError {
    RunError::Reply(ErrorReply::err(format!(
        "cannot start the script: {}",
        one_line(&error_text(&e))
    )))
}

/// Turns the runner's outcome into the reply (luaCallFunction's error path and
/// luaReplyToRedisReply).
fn finish(
    result: mlua::Result<(bool, Value)>,
    name: &str,
    proto: Protocol,
    resp3_script: bool,
    max_reply: usize,
    out: &mut BytesMut,
) {
    let error = |out: &mut BytesMut, text: &str| {
        out.extend_from_slice(b"-");
        out.extend_from_slice(one_line(text).as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    match result {
        Ok((true, v)) => {
            let start = out.len();
            if let Err(e) = convert::lua_to_reply(&v, out, proto, resp3_script, max_reply) {
                out.truncate(start);
                match e {
                    LuaReply::TooDeep => error(out, "ERR reached lua stack limit"),
                    LuaReply::TooLarge => error(
                        out,
                        &format!("ERR script reply is larger than {max_reply} bytes"),
                    ),
                    LuaReply::Lua(m) => error(out, &format!("ERR {m}")),
                }
            }
        }
        Ok((false, Value::Table(t))) => {
            let text = |k: &str| match t.raw_get::<Value>(k) {
                Ok(Value::String(s)) => Some(s.to_string_lossy()),
                Ok(Value::Integer(i)) => Some(i.to_string()),
                Ok(Value::Number(n)) => Some(format_lua_number(n)),
                _ => None,
            };
            let msg = text("err").unwrap_or_else(|| "ERR unknown error".into());
            match (text("source"), text("line")) {
                (Some(source), Some(line)) => {
                    error(out, &format!("{msg} script: {name}, on {source}:{line}."))
                }
                _ => error(out, &msg),
            }
        }
        Ok((false, v)) => {
            let msg = error_message(&v).unwrap_or_else(|| "execution failure".into());
            error(out, &format!("ERR Error running script {name}, {msg}"));
        }
        Err(e) => error(
            out,
            &format!("ERR Error running script {name}, {}", error_text(&e)),
        ),
    }
}

/// Lua's own `%.14g` rendering of a number (as `tostring` shows it).
fn format_lua_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// An error value for the error handler: its text, and whether it already carries its code.
/// Rust errors raised through mlua (`redis.log`'s, `redis.setresp`'s...) never do: a failed
/// command's error is raised by `redis.call` as Redis's `{err=...}` table itself.
fn coded_message(v: &Value) -> (Option<String>, bool) {
    (error_message(v), false)
}

/// An error value as text: strings as they are, mlua's wrapped Rust errors by their message.
fn error_message(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.to_string_lossy()),
        Value::Error(e) => Some(error_text(e)),
        Value::UserData(_) | Value::Other(_) => None,
        _ => None,
    }
}

/// The message of an mlua error without mlua's decorations ("runtime error: ", tracebacks).
pub(crate) fn error_text(e: &mlua::Error) -> String {
    match e {
        mlua::Error::RuntimeError(m) | mlua::Error::SyntaxError { message: m, .. } => m.clone(),
        mlua::Error::MemoryError(_) => "not enough memory".into(),
        mlua::Error::CallbackError { cause, .. } => error_text(cause),
        mlua::Error::ExternalError(x) => x.to_string(),
        mlua::Error::WithContext { cause, .. } => error_text(cause),
        other => other.to_string(),
    }
}

fn one_line(s: &str) -> String {
    s.trim_end_matches(['\r', '\n']).replace(['\r', '\n'], " ")
}

/// Installs the count hook (again, after a kill switched it to every instruction).
fn install_hook(
    lua: &Lua,
    state: &Rc<RunState>,
    loading: &Rc<RefCell<Loading>>,
) -> mlua::Result<()> {
    let state = state.clone();
    let loading = loading.clone();
    lua.set_hook(
        HookTriggers::new().every_nth_instruction(HOOK_EVERY),
        move |lua, _| hook(lua, &state, &loading),
    )
}

/// The count hook: the kill flag, the suspension deadline, FUNCTION LOAD's time limit.
fn hook(lua: &Lua, state: &RunState, loading: &RefCell<Loading>) -> mlua::Result<VmState> {
    if let Some(deadline) = loading.borrow().deadline {
        if Instant::now() > deadline {
            return Err(mlua::Error::runtime("FUNCTION LOAD timeout"));
        }
        return Ok(VmState::Continue);
    }
    if state.killed.get() || state.with_host(|h| h.killed()).unwrap_or(false) {
        if !state.killed.replace(true) {
            // From now on at every instruction, so `pcall` cannot swallow the kill for long.
            // The sandbox's own Lua (error handler, pcall wrapper, runner) must finish, so
            // the error reaches the reply with the place it happened.
            lua.set_hook(HookTriggers::new().every_nth_instruction(1), |_, debug| {
                if debug.source().source.as_deref() == Some("=[sandbox]") {
                    return Ok(VmState::Continue);
                }
                Err(mlua::Error::runtime(
                    "Script killed by user with SCRIPT KILL...",
                ))
            })?;
        }
        return Err(mlua::Error::runtime(
            "Script killed by user with SCRIPT KILL...",
        ));
    }
    let at = match state.suspend.get() {
        Suspend::Never => None,
        Suspend::After(d) => {
            state.suspend.set(Suspend::At(Instant::now() + d));
            None
        }
        Suspend::At(at) => Some(at),
    };
    if let Some(at) = at {
        let y = state.yielder.get();
        if !y.is_null() && Instant::now() >= at {
            state.suspend.set(Suspend::Never);
            // SAFETY: the yielder pointer is set by the coroutine body while it runs and this
            // hook runs on that coroutine's stack; suspending returns control to the resume
            // in `Engine::drive`, and the coroutine is resumed later from the same point.
            unsafe { (*y).suspend(()) };
        }
    }
    Ok(VmState::Continue)
}

/// `redis.call` and `redis.pcall` as plain Lua C functions (Redis's `luaRedisCallCommand`):
/// the arguments are read straight off the Lua stack, the command runs through the host, and
/// its reply is pushed as Lua values, with no mlua handle per argument or value and no
/// protected call per allocation (they cost more than the command itself: EVALSHA of a
/// one-`redis.call` script spent ~2,500 instructions in mlua's callback machinery).
///
/// Lua code calls these only from inside a protected call (every script run, library load and
/// test goes through one), so a Lua error raised here — a failed `redis.call`, or the heap's
/// memory limit refusing an allocation while the reply is built — unwinds (`longjmp`) to the
/// script's own `pcall`/error handler, as in Redis.
///
/// # Safety (the `longjmp`)
///
/// Lua raises errors with `longjmp`, which skips the frames in between without running their
/// destructors. So the work is split in two: [`run_call`] does everything that owns Rust values
/// (argument buffers, the host's command, borrows of the shared state) and may panic (caught),
/// and returns with all of it dropped; only then are Lua API calls that may raise made, from
/// frames holding plain data (a slice of the kept reply buffer, integers).
fn call_function(lua: &Lua, state: &Rc<RunState>, raise: bool) -> mlua::Result<Function> {
    c_closure(lua, state, if raise { redis_call } else { redis_pcall })
}

unsafe extern "C-unwind" fn redis_call(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: called by Lua as a C closure made by `call_function`.
    unsafe { command(l, true) }
}

unsafe extern "C-unwind" fn redis_pcall(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: called by Lua as a C closure made by `call_function`.
    unsafe { command(l, false) }
}

/// The body of `redis.call` (`raise`) and `redis.pcall`.
///
/// # Safety
///
/// Called by Lua with the closure `call_function` made (its upvalue is a live `RunState`).
unsafe fn command(l: *mut ffi::lua_State, raise: bool) -> c_int {
    // SAFETY: as this function's contract says.
    let state = unsafe { closure_state(l) };
    // Phase one: Rust values, the command, panics caught. Leaves the reply (or the refusal, as
    // an error reply) in `state.reply` and drops everything else.
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `l` is the calling state; only its arguments are read.
        unsafe { run_call(l, state) }
    }));
    if ran.is_err() {
        let mut reply = state.reply.borrow_mut();
        reply.clear();
        reply.extend_from_slice(b"-ERR internal error while running the command\r\n");
    }
    // Phase two: plain data only. The reply's bytes stay where they are (no Rust code runs
    // until this function returns, so nothing touches the buffer meanwhile).
    let (ptr, len) = {
        let reply = state.reply.borrow();
        (reply.as_ptr(), reply.len())
    };
    // SAFETY: `ptr`/`len` describe the kept reply buffer, unchanged until the next call; the
    // stack is grown by `push_reply` as it goes; errors it raises are caught by the script's
    // protected call and skip only frames without destructors (see `call_function`).
    unsafe {
        let reply = std::slice::from_raw_parts(ptr, len);
        let base = ffi::lua_gettop(l);
        match convert::push_reply(l, reply) {
            Ok(true) if raise => ffi::lua_error(l),
            Ok(_) => 1,
            // Back to the arguments (the C function's LUA_MINSTACK free slots are there again)
            // before the message is pushed.
            Err(e) => {
                ffi::lua_settop(l, base);
                convert::push_bytes(
                    l,
                    match e {
                        convert::BadReply::Malformed => b"malformed reply from the server",
                        convert::BadReply::TooDeep => b"reached lua stack limit",
                    },
                );
                ffi::lua_error(l)
            }
        }
    }
}

/// Phase one of `redis.call`: checks, the arguments as bytes, the command through the host.
/// Leaves its reply — or the refusal, as an error reply — in `state.reply`.
///
/// # Safety
///
/// `l` is the state that called `redis.call`; its stack holds the arguments. Only API calls
/// that cannot raise are made (type checks, reading strings and numbers in place).
unsafe fn run_call(l: *mut ffi::lua_State, state: &RunState) {
    let mut reply = state.reply.borrow_mut();
    if reply.capacity() > 64 << 10 {
        // A huge reply's buffer is not kept.
        *reply = BytesMut::new();
    }
    reply.clear();
    let refuse = |reply: &mut BytesMut, text: &[u8]| {
        reply.extend_from_slice(text);
        reply.extend_from_slice(b"\r\n");
    };
    if !state.in_run.get() {
        return refuse(
            &mut reply,
            b"-ERR redis.call/pcall can only be called inside a script invocation",
        );
    }
    // SAFETY: reading the calling function's own stack slots.
    let n = unsafe { ffi::lua_gettop(l) };
    if n < 1 {
        return refuse(
            &mut reply,
            b"-ERR Please specify at least one argument for this redis lib call",
        );
    }
    // The arguments as bytes (strings as they are, numbers as %.17g), one after the other in
    // buffers the engine keeps, so a call allocates nothing once they have grown.
    let mut bytes = state.arg_bytes.borrow_mut();
    let mut ends = state.arg_ends.borrow_mut();
    if bytes.capacity() > 64 << 10 {
        *bytes = Vec::new();
    }
    bytes.clear();
    ends.clear();
    for i in 1..=n {
        // SAFETY: `i` is a valid index of the calling function's arguments. Strings are read
        // in place (`lua_tolstring` of a string allocates nothing); numbers are read as
        // numbers and formatted here, so no conversion allocates in the Lua heap.
        unsafe {
            match ffi::lua_type(l, i) {
                ffi::LUA_TSTRING => {
                    let mut len = 0usize;
                    let p = ffi::lua_tolstring(l, i, &mut len);
                    if !p.is_null() {
                        bytes.extend_from_slice(std::slice::from_raw_parts(p.cast::<u8>(), len));
                    }
                }
                ffi::LUA_TNUMBER => convert::number_arg(ffi::lua_tonumber(l, i), &mut bytes),
                _ => {
                    return refuse(
                        &mut reply,
                        b"-ERR Lua redis lib command arguments must be strings or integers",
                    );
                }
            }
        }
        ends.push(bytes.len());
    }
    // The slices: on the stack for the usual few arguments.
    let mut inline: [&[u8]; 16] = [&[]; 16];
    let many: Vec<&[u8]>;
    let argv: &[&[u8]] = if ends.len() <= inline.len() {
        let mut start = 0;
        for (slot, &end) in inline.iter_mut().zip(ends.iter()) {
            *slot = &bytes[start..end];
            start = end;
        }
        &inline[..ends.len()]
    } else {
        let mut start = 0;
        many = ends
            .iter()
            .map(|&end| {
                let a = &bytes[start..end];
                start = end;
                a
            })
            .collect();
        &many
    };
    let proto = if state.resp3.get() {
        Protocol::Resp3
    } else {
        Protocol::Resp2
    };
    let called = state
        .with_host(|h| h.call(argv, proto, &mut reply))
        .unwrap_or_else(|| Err(ErrorReply::err("no script is running")));
    if let Err(e) = called {
        // A refusal before the command ran reaches the script as a command error would.
        reply.clear();
        reply.extend_from_slice(b"-");
        reply.extend(
            e.text()
                .bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        reply.extend_from_slice(b"\r\n");
    }
}

/// The `redis` table (luaRegisterRedisAPI), without call/pcall (the sandbox adds their Lua
/// halves).
fn redis_table(
    lua: &Lua,
    state: &Rc<RunState>,
    version: &str,
    version_num: u32,
) -> mlua::Result<Table> {
    let redis = lua.create_table()?;
    redis.raw_set("call", call_function(lua, state, true)?)?;
    redis.raw_set("pcall", call_function(lua, state, false)?)?;
    // Log levels.
    for (name, level) in [
        ("LOG_DEBUG", 0),
        ("LOG_VERBOSE", 1),
        ("LOG_NOTICE", 2),
        ("LOG_WARNING", 3),
    ] {
        redis.raw_set(name, level)?;
    }
    redis.raw_set("REDIS_VERSION_NUM", version_num)?;
    redis.raw_set("REDIS_VERSION", version)?;
    // Replication flags (accepted; Ferrite always journals a script's effects).
    for (name, v) in [
        ("REPL_NONE", 0),
        ("REPL_AOF", 1),
        ("REPL_SLAVE", 2),
        ("REPL_REPLICA", 2),
        ("REPL_ALL", 3),
    ] {
        redis.raw_set(name, v)?;
    }
    {
        let state = state.clone();
        redis.raw_set(
            "log",
            lua.create_function(move |_, args: MultiValue| {
                if args.len() < 2 {
                    return Err(mlua::Error::runtime(
                        "redis.log() requires two arguments or more.",
                    ));
                }
                let level = match &args[0] {
                    Value::Integer(i) => *i as f64,
                    Value::Number(n) => *n,
                    Value::String(s) => s
                        .to_str()
                        .ok()
                        .and_then(|s| s.trim().parse::<f64>().ok())
                        .ok_or_else(|| {
                            mlua::Error::runtime("First argument must be a number (log level).")
                        })?,
                    _ => {
                        return Err(mlua::Error::runtime(
                            "First argument must be a number (log level).",
                        ));
                    }
                };
                let level = match level as i64 {
                    0 => LogLevel::Debug,
                    1 => LogLevel::Verbose,
                    2 => LogLevel::Notice,
                    3 => LogLevel::Warning,
                    _ => return Err(mlua::Error::runtime("Invalid debug level.")),
                };
                let mut msg = String::new();
                for (i, a) in args.iter().skip(1).enumerate() {
                    let piece = match a {
                        Value::String(s) => s.to_string_lossy(),
                        Value::Integer(n) => n.to_string(),
                        Value::Number(n) => format_lua_number(*n),
                        _ => continue,
                    };
                    if i > 0 {
                        msg.push(' ');
                    }
                    msg.push_str(&piece);
                }
                state.with_host(|h| h.log(level, &msg));
                Ok(())
            })?,
        )?;
    }
    {
        let state = state.clone();
        redis.raw_set(
            "setresp",
            lua.create_function(move |_, args: MultiValue| {
                if !state.in_run.get() {
                    return Err(mlua::Error::runtime(
                        "redis.setresp can only be called inside a script invocation",
                    ));
                }
                if args.len() != 1 {
                    return Err(mlua::Error::runtime(
                        "redis.setresp() requires one argument.",
                    ));
                }
                let v = match &args[0] {
                    Value::Integer(i) => *i,
                    Value::Number(n) => *n as i64,
                    _ => 0,
                };
                match v {
                    2 => state.resp3.set(false),
                    3 => state.resp3.set(true),
                    _ => return Err(mlua::Error::runtime("RESP version must be 2 or 3.")),
                }
                Ok(())
            })?,
        )?;
    }
    redis.raw_set(
        "sha1hex",
        lua.create_function(|_, args: MultiValue| {
            if args.len() != 1 {
                return Err(mlua::Error::runtime("wrong number of arguments"));
            }
            let bytes: Vec<u8> = match &args[0] {
                Value::String(s) => s.as_bytes().to_vec(),
                Value::Integer(i) => i.to_string().into_bytes(),
                Value::Number(n) => format_lua_number(*n).into_bytes(),
                _ => Vec::new(),
            };
            Ok(sha1_hex(&bytes))
        })?,
    )?;
    redis.raw_set(
        "error_reply",
        lua.create_function(|lua, args: MultiValue| {
            let text = match (args.len(), args.front()) {
                (1, Some(Value::String(s))) => {
                    let s = s.as_bytes();
                    if s.first() == Some(&b'-') {
                        s.to_vec()
                    } else {
                        let mut v = b"-".to_vec();
                        v.extend_from_slice(&s);
                        v
                    }
                }
                _ => b"-ERR wrong number or type of arguments".to_vec(),
            };
            convert::error_table(lua, &text)
        })?,
    )?;
    redis.raw_set(
        "status_reply",
        lua.create_function(|lua, args: MultiValue| {
            let t = lua.create_table_with_capacity(0, 1)?;
            match (args.len(), args.front()) {
                (1, Some(Value::String(s))) => t.raw_set("ok", s.clone())?,
                _ => return convert::error_table(lua, b"-ERR wrong number or type of arguments"),
            }
            Ok(t)
        })?,
    )?;
    {
        let state = state.clone();
        redis.raw_set(
            "set_repl",
            lua.create_function(move |_, args: MultiValue| {
                if !state.in_run.get() {
                    return Err(mlua::Error::runtime(
                        "redis.set_repl can only be called inside a script invocation",
                    ));
                }
                if args.len() != 1 {
                    return Err(mlua::Error::runtime("redis.set_repl() requires two arguments."));
                }
                let flags = match &args[0] {
                    Value::Integer(i) => *i,
                    Value::Number(n) => *n as i64,
                    _ => 0,
                };
                if flags & !3 != 0 {
                    return Err(mlua::Error::runtime(
                        "Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE.",
                    ));
                }
                // Accepted: a script's effects always go to the write-effects journal whole.
                Ok(())
            })?,
        )?;
    }
    redis.raw_set("replicate_commands", lua.create_function(|_, ()| Ok(true))?)?;
    // The debugger (LDB) is not supported: outside a debugging session Redis's breakpoint
    // answers false and debug does nothing, which is what scripts see here.
    redis.raw_set("breakpoint", lua.create_function(|_, ()| Ok(false))?)?;
    redis.raw_set("debug", lua.create_function(|_, _: MultiValue| Ok(()))?)?;
    let acl_state = state.clone();
    redis.raw_set(
        "acl_check_cmd",
        lua.create_function(move |_, args: MultiValue| {
            if args.is_empty() {
                return Err(mlua::Error::runtime(
                    "Please specify at least one argument for this redis lib call",
                ));
            }
            // The arguments as redis.call takes them: strings, numbers as Redis 7.2 writes them.
            let mut argv: Vec<Vec<u8>> = Vec::with_capacity(args.len());
            for a in args.iter() {
                match a {
                    Value::String(s) => argv.push(s.as_bytes().to_vec()),
                    Value::Integer(i) => {
                        let mut b = Vec::new();
                        convert::number_arg(*i as f64, &mut b);
                        argv.push(b);
                    }
                    Value::Number(n) => {
                        let mut b = Vec::new();
                        convert::number_arg(*n, &mut b);
                        argv.push(b);
                    }
                    _ => {
                        return Err(mlua::Error::runtime(
                            "Lua redis lib command arguments must be strings or integers",
                        ));
                    }
                }
            }
            let argv: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
            match acl_state.with_host(|h| h.acl_check(&argv)).flatten() {
                Some(allowed) => Ok(allowed),
                None => Err(mlua::Error::runtime(
                    "Invalid command passed to redis.acl_check_cmd()",
                )),
            }
        })?,
    )?;
    Ok(redis)
}

/// Redis's `math.random`/`math.randomseed` (rand48, the same sequence everywhere).
fn install_math_random(lua: &Lua, state: &Rc<RunState>) -> mlua::Result<()> {
    let unit = {
        let state = state.clone();
        lua.create_function(move |_, ()| Ok(state.rand.borrow_mut().unit()))?
    };
    let seed = {
        let state = state.clone();
        lua.create_function(move |_, s: f64| {
            state.rand.borrow_mut().seed(s as i64 as i32);
            Ok(())
        })?
    };
    let install: Function = lua
        .load(
            r#"
local unit, seed = ...
local floor, tonumber, type, error, select = math.floor, tonumber, type, error, select
local function checkint(v, n)
  local x = tonumber(v)
  if x == nil then
    error("bad argument #" .. n .. " to 'random' (number expected, got " .. (v == nil and 'no value' or type(v)) .. ")", 3)
  end
  return x >= 0 and floor(x) or -floor(-x)
end
math.random = function(...)
  local n = select('#', ...)
  local r = unit()
  if n == 0 then return r end
  if n == 1 then
    local u = checkint((...), 1)
    if u < 1 then error("bad argument #1 to 'random' (interval is empty)", 2) end
    return floor(r * u) + 1
  end
  if n == 2 then
    local l, u = ...
    l, u = checkint(l, 1), checkint(u, 2)
    if l > u then error("bad argument #2 to 'random' (interval is empty)", 2) end
    return floor(r * (u - l + 1)) + l
  end
  error("wrong number of arguments", 2)
end
math.randomseed = function(s)
  local x = tonumber(s)
  if x == nil then error("bad argument #1 to 'randomseed' (number expected, got " .. (s == nil and 'no value' or type(s)) .. ")", 2) end
  seed(x)
end
"#,
        )
        .set_name("=[sandbox]")
        .into_function()?;
    install.call::<()>((unit, seed))
}
