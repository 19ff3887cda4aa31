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
use mlua::{Function, HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Table, Value, VmState};
use sha1::{Digest, Sha1};

use crate::convert::{self, LuaReply};
use crate::functions::{Libraries, Loading};
use crate::headroom;
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
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A cached EVAL script, by its SHA1 (40 hex digits, any case).
    Script(&'a str),
    /// A function of a loaded library.
    Function(&'a str),
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
    /// Suspend at the first hook after this instant.
    suspend_at: Cell<Option<Instant>>,
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
    /// The heap's memory limit ([`EngineLimits::memory`]), for the callbacks that lift it
    /// while they build a value of bounded size (see `headroom`).
    memory_limit: Cell<usize>,
    rand: RefCell<Rand48>,
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
    /// `run(f, keys, args)`: calls a script under Redis's error handler.
    runner: Function,
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
            suspend_at: Cell::new(None),
            resp3: Cell::new(false),
            killed: Cell::new(false),
            in_run: Cell::new(false),
            reply: RefCell::new(BytesMut::new()),
            arg_bytes: RefCell::new(Vec::new()),
            arg_ends: RefCell::new(Vec::new()),
            memory_limit: Cell::new(limits.memory),
            rand: RefCell::new(Rand48::default()),
        });
        let redis = redis_table(&lua, &state, version, version_num)?;
        lua.globals().raw_set("redis", redis)?;
        install_math_random(&lua, &state)?;
        let error_message = lua.create_function(|_, v: Value| Ok(coded_message(&v)))?;
        let loading = Rc::new(RefCell::new(Loading::default()));
        let register = {
            let loading = loading.clone();
            lua.create_function(move |_, args: MultiValue| {
                crate::functions::register_function(&loading, args)
            })?
        };
        // The real globals table (where the runner sets KEYS/ARGV), the read-only proxy
        // scripts see, the runner, the phase switch.
        let (_globals, env, runner, phase): (Table, Table, Function, Function) = lua
            .load(sandbox::SETUP)
            .set_name("=[sandbox]")
            .call((error_message, register))?;
        install_hook(&lua, &state, &loading)?;
        lua.set_memory_limit(limits.memory)?;
        Ok(Engine {
            lua,
            env,
            runner,
            phase,
            state,
            loading,
            scripts: HashMap::default(),
            cache_bytes: 0,
            clock: 0,
            limits,
            stack: None,
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
        self.state.memory_limit.set(limits.memory);
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

    /// The flags of a cached script, if cached (`sha` in any case).
    pub fn script_flags(&self, sha: &str) -> Option<ScriptFlags> {
        if sha.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.script_flags(&sha.to_ascii_lowercase());
        }
        self.scripts.get(sha).map(|s| s.flags)
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
            Target::Function(name) => {
                let Some(f) = self.libraries.function(name) else {
                    return Err(ErrorReply::err("Function not found").into());
                };
                (f.func.clone(), Rc::<str>::from(name), false)
            }
        };
        let (keys, args) = self.key_and_arg_tables(keys, args).map_err(setup_error)?;
        // The runner sets KEYS/ARGV as globals for EVAL (see `sandbox::SETUP`).
        let call_args = (
            Value::Function(func),
            Value::Table(keys),
            Value::Table(args),
            is_eval,
        );
        self.state.resp3.set(false);
        self.clear_kill().map_err(setup_error)?;
        let state = self.state.clone();
        let runner = self.runner.clone();
        let max_reply = self.limits.max_reply;
        let body = move |y: &Yielder<(), ()>, (): ()| -> BytesMut {
            state.yielder.set(y as *const _);
            let result = runner.call::<(bool, Value)>(call_args);
            state.yielder.set(std::ptr::null());
            let mut out = BytesMut::new();
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
            .suspend_at
            .set(suspend_after.map(|d| Instant::now() + d));
        Ok(self.drive(host))
    }

    /// Continues a suspended run to its end (no further suspension).
    pub fn resume(&mut self, host: &mut dyn Host) -> BytesMut {
        self.state.suspend_at.set(None);
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
                Step::Done(reply)
            }
        }
    }

    /// KEYS and ARGV (or a function's keys and arguments) as two Lua arrays of strings, built
    /// straight from the request's bytes with plain C API calls: no handle per string and no
    /// protected call per element (mlua protects each call that may allocate while a memory
    /// limit is set). Their size is known, so when the heap has room for twice their bound they
    /// are built with the limit lifted (see `headroom`) and unprotected, as mlua itself does
    /// without a limit; otherwise in one protected call, under the limit.
    fn key_and_arg_tables(&self, keys: &[&[u8]], args: &[&[u8]]) -> mlua::Result<(Table, Table)> {
        let fits = |items: &[&[u8]]| c_int::try_from(items.len()).is_ok();
        if !fits(keys) || !fits(args) {
            return Err(mlua::Error::runtime("too many keys or arguments"));
        }
        let bytes = keys.iter().chain(args).map(|a| a.len()).sum();
        let bound = headroom::strings_bound(keys.len() + args.len(), bytes).saturating_add(256);
        let lifted = headroom::lift(&self.lua, self.limits.memory, bound);
        if lifted.is_some() || self.limits.memory == 0 {
            // SAFETY: no allocation can fail while the limit is lifted (or without one), so
            // these C API calls raise no Lua error and need no protected call: the same
            // reasoning as mlua's own unprotected path when no limit is set. They call no
            // metamethods (raw sets) and no Lua code; a collection step they trigger runs no
            // finalizer a script could have set (scripts cannot create userdata with `__gc`).
            // The stack has room for the two tables and one string pushed at a time, and the
            // two tables are popped into handles before the lock on the state is released.
            return self.lua.exec_raw_lua(|raw| unsafe {
                let state = raw.state();
                if mlua::ffi::lua_checkstack(state, 3) == 0 {
                    return Err(mlua::Error::StackError);
                }
                push_string_arrays(state, keys, args);
                let (Value::Table(a), Value::Table(k)) = (raw.pop_value(), raw.pop_value()) else {
                    return Err(mlua::Error::runtime("KEYS/ARGV are not tables"));
                };
                Ok((k, a))
            });
        }
        // SAFETY: the closure runs inside a Lua protected call (`exec_raw`), so an allocation
        // error raised by these C API calls unwinds to that call, not past it; the closure
        // holds only references and integers (nothing whose destructor a longjmp could skip).
        // It makes room on the stack first and leaves exactly the two tables, which `exec_raw`
        // returns.
        unsafe {
            self.lua.exec_raw::<(Table, Table)>((), |state| {
                mlua::ffi::luaL_checkstack(state, 3, c"KEYS/ARGV".as_ptr());
                push_string_arrays(state, keys, args);
            })
        }
    }
}

/// Pushes `keys` and then `args` as two new Lua arrays of strings.
///
/// # Safety
///
/// `state` must have room for three more stack slots, the lengths must fit a C int, and the
/// caller must either be inside a protected call or know that no allocation can fail.
unsafe fn push_string_arrays(state: *mut mlua::ffi::lua_State, keys: &[&[u8]], args: &[&[u8]]) {
    use mlua::ffi;
    for items in [keys, args] {
        // SAFETY: as the caller promised (room on the stack, lengths that fit, errors caught
        // or impossible); the table is at the top when each string is set into it.
        unsafe {
            ffi::lua_createtable(state, items.len() as c_int, 0);
            for (i, item) in items.iter().enumerate() {
                ffi::lua_pushlstring(state, item.as_ptr().cast(), item.len());
                ffi::lua_rawseti(state, -2, i as ffi::lua_Integer + 1);
            }
        }
    }
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

/// An error value for the error handler: its text, and whether it already carries its code
/// (a failed command's error, raised by `redis.call`).
fn coded_message(v: &Value) -> (Option<String>, bool) {
    fn command_error(e: &mlua::Error) -> Option<String> {
        match e {
            mlua::Error::ExternalError(x) => x.downcast_ref::<CommandError>().map(|c| c.0.clone()),
            mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
                command_error(cause)
            }
            _ => None,
        }
    }
    if let Value::Error(e) = v {
        if let Some(text) = command_error(e) {
            return (Some(text), true);
        }
    }
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
    if let Some(at) = state.suspend_at.get() {
        let y = state.yielder.get();
        if !y.is_null() && Instant::now() >= at {
            state.suspend_at.set(None);
            // SAFETY: the yielder pointer is set by the coroutine body while it runs and this
            // hook runs on that coroutine's stack; suspending returns control to the resume
            // in `Engine::drive`, and the coroutine is resumed later from the same point.
            unsafe { (*y).suspend(()) };
        }
    }
    Ok(VmState::Continue)
}

/// A failed command inside a script: `redis.call` raises it; Redis raises the error table
/// `{err=...}`, which the error handler rebuilds from this (mlua raises Rust errors as
/// userdata).
#[derive(Debug)]
struct CommandError(String);

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CommandError {}

/// `redis.call` (`raise`) or `redis.pcall`: runs the command through the host and converts the
/// reply; a failure is raised (call) or returned as `{err=...}` (pcall).
fn command_fn(lua: &Lua, state: &Rc<RunState>, raise: bool) -> mlua::Result<Function> {
    let state = state.clone();
    lua.create_function(move |lua, args: MultiValue| {
        let (v, failed) = run_command(lua, &state, args)?;
        if failed && raise {
            if let Value::Table(t) = &v {
                if let Ok(Value::String(s)) = t.raw_get::<Value>("err") {
                    return Err(mlua::Error::external(CommandError(s.to_string_lossy())));
                }
            }
        }
        Ok(v)
    })
}

fn run_command(lua: &Lua, state: &RunState, args: MultiValue) -> mlua::Result<(Value, bool)> {
    {
        if !state.in_run.get() {
            let t = convert::error_table(
                lua,
                b"-ERR redis.call/pcall can only be called inside a script invocation",
            )?;
            return Ok((Value::Table(t), true));
        }
        if args.is_empty() {
            let t = convert::error_table(
                lua,
                b"Please specify at least one argument for this redis lib call",
            )?;
            return Ok((Value::Table(t), true));
        }
        // The arguments as bytes (strings as they are, numbers as %.17g), one after the other
        // in buffers the engine keeps, so a call allocates nothing once they have grown.
        let mut bytes = std::mem::take(&mut *state.arg_bytes.borrow_mut());
        let mut ends = std::mem::take(&mut *state.arg_ends.borrow_mut());
        bytes.clear();
        ends.clear();
        for a in args.iter() {
            match a {
                Value::String(s) => bytes.extend_from_slice(&s.as_bytes()),
                Value::Integer(i) => convert::number_arg(*i as f64, &mut bytes),
                Value::Number(n) => convert::number_arg(*n, &mut bytes),
                _ => {
                    let t = convert::error_table(
                        lua,
                        b"-ERR Lua redis lib command arguments must be strings or integers",
                    )?;
                    return Ok((Value::Table(t), true));
                }
            }
            ends.push(bytes.len());
        }
        // The slices: on the stack for the usual few arguments.
        let mut inline: [&[u8]; 16] = [&[]; 16];
        let many: Vec<&[u8]>;
        let argv: &[&[u8]] = if ends.len() <= inline.len() {
            let mut start = 0;
            for (slot, &end) in inline.iter_mut().zip(&ends) {
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
        let mut reply = std::mem::take(&mut *state.reply.borrow_mut());
        reply.clear();
        let called = state
            .with_host(|h| h.call(argv, proto, &mut reply))
            .unwrap_or_else(|| Err(ErrorReply::err("no script is running")));
        let result = {
            // The reply's Lua value is bounded by the reply's length: built without mlua's
            // per-call protection when the heap has room for it.
            let len = match &called {
                Ok(()) => reply.len(),
                Err(e) => e.text().len(),
            };
            let _lifted = headroom::lift(lua, state.memory_limit.get(), headroom::reply_bound(len));
            match called {
                Ok(()) => convert::reply_to_lua(lua, &reply),
                Err(e) => convert::coded_error_table(lua, e.text().as_bytes())
                    .map(|t| (Value::Table(t), true)),
            }
        };
        // Keep modest buffers for the next call; a huge reply's or argument's is freed.
        if reply.capacity() <= 64 << 10 {
            *state.reply.borrow_mut() = reply;
        }
        if bytes.capacity() <= 64 << 10 {
            *state.arg_bytes.borrow_mut() = bytes;
            *state.arg_ends.borrow_mut() = ends;
        }
        result
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
    redis.raw_set("call", command_fn(lua, state, true)?)?;
    redis.raw_set("pcall", command_fn(lua, state, false)?)?;
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
            // The arguments as redis.call takes them: strings, numbers as %.17g.
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
