//! The sandbox scripts run in, as Redis 7 sets it up (`scriptingInit`, `luaRegisterRedisAPI`,
//! `luaSetErrorMetatable`, `luaSetTableProtectionRecursively`):
//!
//! - the globals are exactly Redis 7.0's (no `print`, `dofile`, `loadfile`, `require`, `os`,
//!   `io`, `debug`, `getfenv`/`setfenv`, `newproxy`, `module`);
//! - reading a global that does not exist is "Script attempted to access nonexistent global
//!   variable"; assigning one, or changing any table reachable from the globals (`redis`,
//!   `string`, `cjson`, ...), or their metatables, is "Attempt to modify a readonly table";
//! - binary chunks are refused (`loadstring(string.dump(f))` yields nil), so no hand-made
//!   bytecode can reach the VM.
//!
//! Redis marks tables read-only with a patch to its copy of Lua. Stock Lua 5.1 has no such
//! flag, so each protected table is replaced by an empty proxy whose metatable reads through to
//! the real table and refuses writes; the raw functions (`rawset`, `setmetatable`, `next`,
//! `table.insert`, ...) are wrapped to see through proxies or refuse them. The running thread's
//! global table is the globals' proxy, so code from `loadstring` is confined the same way.

/// Runs once per engine, after the libraries and the `redis` table are in the globals. Its
/// arguments are the Rust parts of the API; it returns the real (backing) globals table, the
/// read-only proxy scripts see, the runner that runs a library's body under Redis's error
/// handler, the phase switch and that error handler (`Engine::run` calls scripts under it).
pub const SETUP: &str = r#"
local error_message, register_function = ...
local G = _G
local setfenv = setfenv
local string_lib = string
local type, error, tostring, select, next_, rawget_, rawset_ = type, error, tostring, select, next, rawget, rawset
local setmetatable_, getmetatable_, pcall_, xpcall_ = setmetatable, getmetatable, pcall, xpcall
local getinfo = debug.getinfo
local string_byte = string.byte

-- Proxies: proxy -> backing table (weak keys: proxies of metatable views may be collected).
local backing_of = setmetatable_({}, {__mode = 'k'})
local proxy_of = {}
local meta_of = {}
local function unproxy(t) return backing_of[t] or t end

local function readonly() error('Attempt to modify a readonly table', 2) end

-- Redis's error handler (__redis__err__handler): adds where the error happened. Frames of C
-- functions and of this sandbox's own wrappers are skipped, so the place is the script's.
local internal = getinfo(1, 'S').source
local function handler(err)
  local level = 2
  local i = getinfo(level, 'nSl')
  while i and (i.what == 'C' or i.source == internal) do
    level = level + 1
    i = getinfo(level, 'nSl')
  end
  if type(err) == 'userdata' then
    local m, coded = error_message(err)
    if coded then
      err = {err = m}
    else
      err = m or tostring(err)
    end
  end
  if type(err) ~= 'table' or backing_of[err] then
    err = {err = 'ERR ' .. tostring(err)}
  end
  if i then
    err['source'] = i.source
    err['line'] = i.currentline
  end
  return err
end

local redis = G.redis

-- Redis 7's pcall: an error table with a string `err` comes back as that string.
local function pcall_result(ok, ...)
  if ok then return true, ... end
  local e = ...
  if type(e) == 'userdata' then
    local m, coded = error_message(e)
    if m then return false, coded and m or ('ERR ' .. m) end
  end
  if type(e) == 'table' then
    local m = rawget_(unproxy(e), 'err')
    if type(m) == 'string' or type(m) == 'number' then return false, m end
  end
  return false, e
end
G.pcall = function(...) return pcall_result(pcall_(...)) end

-- No binary chunks: hand-made bytecode could corrupt the VM.
do
  local loadstring = loadstring
  G.loadstring = function(s, name)
    if type(s) == 'string' and string_byte(s, 1) == 27 then
      return nil, 'binary chunks are not allowed'
    end
    local f, e = loadstring(s, name)
    return f, e
  end
  local concat = table.concat
  G.load = function(reader, name)
    local parts = {}
    if type(reader) ~= 'function' then error("bad argument #1 to 'load' (function expected)", 2) end
    while true do
      local piece = reader()
      if piece == nil or piece == '' then break end
      if type(piece) ~= 'string' then return nil, 'reader function must return a string' end
      parts[#parts + 1] = piece
    end
    return G.loadstring(concat(parts), name)
  end
end

-- The raw functions see through proxies (reads) or refuse them (writes).
do
  local next = next_
  G.next = function(t, k) local a, b = next(unproxy(t), k) return a, b end
  local wrapped_next = G.next
  G.pairs = function(t)
    if type(unproxy(t)) ~= 'table' then error("bad argument #1 to 'pairs' (table expected, got " .. type(t) .. ")", 2) end
    return wrapped_next, t, nil
  end
  local ipairs = ipairs
  G.ipairs = function(t) local a, b, c = ipairs(unproxy(t)) return a, b, c end
  local unpack = unpack
  local function pass(...) return ... end
  -- Only the arguments given are passed on: unpack's results share the C stack limit
  -- (LUAI_MAXCSTACK, 8000) with its arguments, so `unpack(t)` of 7999 values fits, as in Redis.
  G.unpack = function(t, ...) return pass(unpack(unproxy(t), ...)) end
  local rawget = rawget_
  G.rawget = function(t, k) local v = rawget(unproxy(t), k) return v end
  local rawset = rawset_
  G.rawset = function(t, k, v)
    if backing_of[t] then readonly() end
    rawset(t, k, v)
    return t
  end
  local setmetatable = setmetatable_
  G.setmetatable = function(t, mt)
    if backing_of[t] then readonly() end
    setmetatable(t, mt)
    return t
  end
  for _, name in next_, {'insert', 'remove', 'sort', 'setn'} do
    local f = table[name]
    if f then
      table[name] = function(t, ...)
        if backing_of[t] then readonly() end
        return pass(f(t, ...))
      end
    end
  end
  for _, name in next_, {'concat', 'maxn', 'getn', 'foreach', 'foreachi'} do
    local f = table[name]
    if f then table[name] = function(t, ...) return pass(f(unproxy(t), ...)) end end
  end
end

-- Only Redis 7.0's globals remain.
local allowed = {
  string = true, cjson = true, bit = true, cmsgpack = true, math = true, table = true,
  struct = true, redis = true, __redis__err__handler = true, xpcall = true, tostring = true,
  setmetatable = true, next = true, assert = true, tonumber = true, rawequal = true,
  collectgarbage = true, getmetatable = true, rawset = true, pcall = true, coroutine = true,
  type = true, _G = true, select = true, unpack = true, gcinfo = true, pairs = true,
  rawget = true, loadstring = true, ipairs = true, _VERSION = true, load = true, error = true,
}
G.__redis__err__handler = handler
local remove = {}
for k in next_, G do
  if not allowed[k] then remove[#remove + 1] = k end
end
for _, k in next_, remove do rawset_(G, k, nil) end

-- Read-only proxies for every table reachable from the globals (and their metatables).
local function protect(t)
  local p = proxy_of[t]
  if p then return p end
  p = {}
  proxy_of[t] = p
  backing_of[p] = t
  for k, v in next_, t do
    if type(v) == 'table' then rawset_(t, k, protect(v)) end
  end
  -- What getmetatable shows of the proxy: a read-only view, like Redis's protected metatable.
  local shown = {__index = p, __newindex = readonly}
  local view = {}
  backing_of[view] = shown
  setmetatable_(view, {__index = shown, __newindex = readonly, __metatable = view})
  local mt = {__index = t, __newindex = readonly, __metatable = view}
  meta_of[p] = mt
  setmetatable_(p, mt)
  return p
end

-- Missing globals are an error (luaSetErrorMetatable).
setmetatable_(G, {__index = function(_, k)
  error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
end})
local PG = protect(G)

-- What a library's code sees while FUNCTION LOAD runs it: only `redis` with
-- register_function, log and the version (luaEngineInitEngine's library API).
local load_redis = {register_function = register_function, log = rawget_(redis, 'log')}
for _, k in next_, {'LOG_DEBUG', 'LOG_VERBOSE', 'LOG_NOTICE', 'LOG_WARNING', 'REDIS_VERSION', 'REDIS_VERSION_NUM'} do
  load_redis[k] = rawget_(redis, k)
end
setmetatable_(load_redis, getmetatable_(G))
local LOADG = {redis = load_redis}
setmetatable_(LOADG, getmetatable_(G))
protect(LOADG)
local pg_meta = meta_of[PG]
local function phase(loading)
  pg_meta.__index = loading and LOADG or G
end

-- Strings' methods go through the read-only string library, and their metatable is hidden.
do
  local smt = getmetatable_('')
  smt.__index = proxy_of[string_lib]
  local view = {}
  backing_of[view] = smt
  setmetatable_(view, {__index = smt, __newindex = readonly, __metatable = view})
  smt.__metatable = view
end

-- The thread's globals are the proxy: code compiled at run time (loadstring) is confined too.
setfenv(0, PG)

-- Runs a library's body (FUNCTION LOAD) under the error handler. Scripts and functions are
-- run from Rust (`call_script`): `fetch` builds their KEYS and ARGV, and for EVAL sets them
-- as globals here.
local function run(f)
  local ok, r = xpcall_(f, handler)
  return ok, r
end

return G, PG, run, phase, handler
"#;
