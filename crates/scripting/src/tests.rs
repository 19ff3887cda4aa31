//! Engine tests against a small in-memory host. Expected replies were taken from redis-server
//! 7.0.15 where Redis answers the same script.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use ferrite_protocol::{ErrorReply, Protocol, ReplyWriter};

use crate::{Engine, EngineLimits, Host, LogLevel, Step, Target};

#[derive(Default)]
struct FakeHost {
    data: HashMap<Vec<u8>, Vec<u8>>,
    kill: Arc<AtomicBool>,
    logs: Vec<(LogLevel, String)>,
    calls: usize,
}

impl Host for FakeHost {
    fn call(
        &mut self,
        argv: &[&[u8]],
        proto: Protocol,
        out: &mut BytesMut,
    ) -> Result<(), ErrorReply> {
        self.calls += 1;
        let name = String::from_utf8_lossy(argv[0]).to_ascii_lowercase();
        let mut w = ReplyWriter::new(out, proto);
        match (name.as_str(), argv.len()) {
            ("ping", 1) => w.simple("PONG"),
            ("echo", 2) => w.bulk(argv[1]),
            ("get", 2) => w.opt_bulk(self.data.get(argv[1]).map(|v| v.as_slice())),
            ("set", 3) => {
                self.data.insert(argv[1].to_vec(), argv[2].to_vec());
                w.ok()
            }
            ("incr", 2) => {
                let v = self.data.entry(argv[1].to_vec()).or_insert(b"0".to_vec());
                match std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                {
                    Some(n) => {
                        *v = (n + 1).to_string().into_bytes();
                        w.int(n + 1)
                    }
                    None => w.error(&ErrorReply::not_integer()),
                }
            }
            ("hgetall", 2) => {
                w.map(1);
                w.bulk(b"f");
                w.bulk(b"v");
            }
            ("exists", 2) => w.boolean(self.data.contains_key(argv[1])),
            ("lpush", n) if n >= 3 => w.int(n as i64 - 2),
            ("incrbyfloat", 3) => w.double(1.5),
            // `bigreply n size`: an array of n bulk strings of size bytes each.
            ("bigreply", 3) => {
                let n: usize = String::from_utf8_lossy(argv[1]).parse().unwrap_or(0);
                let size: usize = String::from_utf8_lossy(argv[2]).parse().unwrap_or(0);
                let item = vec![b'x'; size];
                w.array(n);
                for i in 0..n {
                    // Distinct strings (Lua interns equal ones).
                    let mut v = item.clone();
                    v.extend_from_slice(i.to_string().as_bytes());
                    w.bulk(&v);
                }
            }
            ("lrange", 4) => {
                w.array(3);
                w.bulk(b"a");
                w.null();
                w.bulk(b"c");
            }
            ("get" | "set" | "incr" | "ping" | "echo", _) => {
                return Err(ErrorReply::err(
                    "Wrong number of args calling Redis command from script",
                ));
            }
            _ => return Err(ErrorReply::err("Unknown Redis command called from script")),
        }
        Ok(())
    }

    fn killed(&self) -> bool {
        self.kill.load(Ordering::Relaxed)
    }

    fn log(&mut self, level: LogLevel, message: &str) {
        self.logs.push((level, message.to_string()));
    }

    /// GET is allowed, SET only on keys starting with "x", anything else is unknown.
    fn acl_check(&self, argv: &[&[u8]]) -> Option<bool> {
        let name = argv.first()?.to_ascii_lowercase();
        match name.as_slice() {
            b"get" => Some(true),
            b"set" => Some(argv.get(1).is_some_and(|k| k.starts_with(b"x"))),
            _ => None,
        }
    }
}

fn engine() -> Engine {
    Engine::new(EngineLimits::default(), "7.0.15", 0x0007000f).expect("engine")
}

/// Runs a script to completion and returns its reply as text.
fn eval_with(
    e: &mut Engine,
    host: &mut FakeHost,
    body: &str,
    keys: &[&str],
    proto: Protocol,
) -> String {
    let (sha, _) = match e.load_script(body.as_bytes(), false) {
        Ok(x) => x,
        Err(err) => return format!("-{}\r\n", err.text()),
    };
    let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
    match e.run(Target::Script(&sha), &keys, &[], proto, host, None) {
        Ok(Step::Done(r)) => String::from_utf8_lossy(&r).into_owned(),
        Ok(Step::Suspended) => panic!("suspended without a deadline"),
        Err(crate::RunError::Reply(err)) => format!("-{}\r\n", err.text()),
    }
}

fn eval(body: &str) -> String {
    eval_with(
        &mut engine(),
        &mut FakeHost::default(),
        body,
        &[],
        Protocol::Resp2,
    )
}

fn eval_bytes(body: &str) -> Vec<u8> {
    let mut e = engine();
    let (sha, _) = e.load_script(body.as_bytes(), false).unwrap();
    match e.run(
        Target::Script(&sha),
        &[],
        &[],
        Protocol::Resp2,
        &mut FakeHost::default(),
        None,
    ) {
        Ok(Step::Done(r)) => r.to_vec(),
        _ => panic!("{body}"),
    }
}

fn sha_of(body: &str) -> String {
    crate::sha1_hex(body.as_bytes())
}

#[test]
fn return_values_convert_as_redis_does() {
    assert_eq!(eval("return 1"), ":1\r\n");
    assert_eq!(eval("return 2.7"), ":2\r\n");
    assert_eq!(eval("return -2.7"), ":-2\r\n");
    assert_eq!(eval("return 'x'"), "$1\r\nx\r\n");
    assert_eq!(eval("return true"), ":1\r\n");
    assert_eq!(eval("return false"), "$-1\r\n");
    assert_eq!(eval("return nil"), "$-1\r\n");
    assert_eq!(
        eval("return {1,2.7,'a',nil,4}"),
        "*3\r\n:1\r\n:2\r\n$1\r\na\r\n"
    );
    assert_eq!(eval("return {err='E1 x'}"), "-E1 x\r\n");
    assert_eq!(eval("return {ok='fine\\r\\nx'}"), "+fine  x\r\n");
    assert_eq!(eval("return redis.error_reply('XX hey')"), "-XX hey\r\n");
    assert_eq!(eval("return redis.error_reply('OOPS')"), "-ERR OOPS\r\n");
    assert_eq!(eval("return redis.status_reply('FINE')"), "+FINE\r\n");
    assert_eq!(eval("return {double=3.5}"), "$3\r\n3.5\r\n");
    // RESP3 client: nulls and doubles in RESP3, booleans still 1/null until setresp(3).
    let mut e = engine();
    let mut h = FakeHost::default();
    assert_eq!(
        eval_with(&mut e, &mut h, "return false", &[], Protocol::Resp3),
        "_\r\n"
    );
    assert_eq!(
        eval_with(&mut e, &mut h, "return {double=3.5}", &[], Protocol::Resp3),
        ",3.5\r\n"
    );
    assert_eq!(
        eval_with(
            &mut e,
            &mut h,
            "redis.setresp(3) return {true, false}",
            &[],
            Protocol::Resp3
        ),
        "*2\r\n#t\r\n#f\r\n"
    );
    assert_eq!(
        eval_with(
            &mut e,
            &mut h,
            "redis.setresp(3) return {true, false}",
            &[],
            Protocol::Resp2
        ),
        "*2\r\n:1\r\n:0\r\n"
    );
    assert_eq!(
        eval_with(&mut e, &mut h, "return {map={a=1}}", &[], Protocol::Resp3),
        "%1\r\n$1\r\na\r\n:1\r\n"
    );
    assert_eq!(
        eval_with(
            &mut e,
            &mut h,
            "return {set={a=true}}",
            &[],
            Protocol::Resp2
        ),
        "*1\r\n$1\r\na\r\n"
    );
}

#[test]
fn redis_call_replies_convert_both_ways() {
    let mut e = engine();
    let mut h = FakeHost::default();
    let r = eval_with(
        &mut e,
        &mut h,
        "redis.call('set', KEYS[1], 'v') return redis.call('get', KEYS[1])",
        &["k"],
        Protocol::Resp2,
    );
    assert_eq!(r, "$1\r\nv\r\n");
    assert_eq!(h.data.get(&b"k"[..]), Some(&b"v".to_vec()));
    // A missing key is false; status replies are {ok=...}.
    assert_eq!(eval("return redis.call('get', 'nope') == false"), ":1\r\n");
    assert_eq!(eval("return redis.call('ping')['ok']"), "$4\r\nPONG\r\n");
    // Numbers are passed as Redis 7.2 writes them (fpconv_dtoa); integers as integers.
    assert_eq!(eval("return redis.call('echo', 0.1)"), "$3\r\n0.1\r\n");
    assert_eq!(eval("return redis.call('echo', 1e20)"), "$5\r\n1e+20\r\n");
    assert_eq!(eval("return redis.call('echo', 10)"), "$2\r\n10\r\n");
    // RESP2 arrays with nulls become tables with false.
    assert_eq!(
        eval("local t = redis.call('lrange', 'l', 0, -1) return {t[1], tostring(t[2]), t[3]}"),
        "*3\r\n$1\r\na\r\n$5\r\nfalse\r\n$1\r\nc\r\n"
    );
    // RESP3: map, boolean, double, null.
    assert_eq!(
        eval("redis.setresp(3) local m = redis.call('hgetall', 'h') return m.map.f"),
        "$1\r\nv\r\n"
    );
    assert_eq!(
        eval("redis.setresp(3) return tostring(redis.call('exists', 'x'))"),
        "$5\r\nfalse\r\n"
    );
    assert_eq!(
        eval("redis.setresp(3) return redis.call('incrbyfloat', 'x', '1')['double'] * 2"),
        ":3\r\n"
    );
    assert_eq!(
        eval("redis.setresp(3) return tostring(redis.call('get', 'nope'))"),
        "$3\r\nnil\r\n"
    );
}

#[test]
fn errors_read_as_redis_writes_them() {
    let body = "return redis.call('nosuch')";
    assert_eq!(
        eval(body),
        format!(
            "-ERR Unknown Redis command called from script script: {}, on @user_script:1.\r\n",
            sha_of(body)
        )
    );
    let body = "redis.call('set','s','v') return redis.call('incr','s')";
    assert_eq!(
        eval(body),
        format!(
            "-ERR value is not an integer or out of range script: {}, on @user_script:1.\r\n",
            sha_of(body)
        )
    );
    let body = "error('boom')";
    assert_eq!(
        eval(body),
        format!(
            "-ERR user_script:1: boom script: {}, on @user_script:1.\r\n",
            sha_of(body)
        )
    );
    let body = "error({err='MY custom'})";
    assert_eq!(
        eval(body),
        format!(
            "-MY custom script: {}, on @user_script:1.\r\n",
            sha_of(body)
        )
    );
    // pcall and redis.pcall catch them as Redis 7 does.
    assert_eq!(
        eval("return redis.pcall('get')"),
        "-ERR Wrong number of args calling Redis command from script\r\n"
    );
    assert_eq!(
        eval("local ok, e = pcall(function() redis.call('nosuch') end) return e"),
        "$44\r\nERR Unknown Redis command called from script\r\n"
    );
    assert_eq!(
        eval("return pcall(function() redis.call('nosuch') end)"),
        "$-1\r\n"
    );
    assert_eq!(
        eval("return redis.call()")
            .split(" script:")
            .next()
            .unwrap_or(""),
        "-ERR Please specify at least one argument for this redis lib call"
    );
    assert!(
        eval("return redis.call('get', {})").starts_with(
            "-ERR Lua redis lib command arguments must be strings or integers script:"
        )
    );
    assert!(
        eval("return 1 +")
            .starts_with("-ERR Error compiling script (new function): user_script:1:")
    );
    assert!(eval("redis.setresp(4)").starts_with("-ERR RESP version must be 2 or 3. script:"));
}

/// Redis's Lua allows 8000 values on a C function's stack (LUAI_MAXCSTACK): `unpack` of 7999
/// values (plus the table) fits, whether returned or passed on to redis.call; 8000 do not.
#[test]
fn unpack_takes_as_many_values_as_redis_s() {
    let fill = |n: u32| format!("local a = {{}} for i = 1, {n} do a[i] = 1 end ");
    assert_eq!(eval(&(fill(7999) + "return #{unpack(a)}")), ":7999\r\n");
    assert_eq!(
        eval(&(fill(7999) + "return redis.call('lpush', 'l', unpack(a))")),
        ":7999\r\n"
    );
    assert_eq!(
        eval(&(fill(3) + "return {unpack(a, 2)}")),
        "*2\r\n:1\r\n:1\r\n"
    );
    assert!(
        eval(&(fill(8000) + "return #{unpack(a)}")).contains("too many results to unpack"),
        "{}",
        eval(&(fill(8000) + "return #{unpack(a)}"))
    );
}

/// Ranges whose count overflows a C int (Lua 5.1's luaB_unpack crashed the server on them) are
/// refused with Lua's message (crates/lua-src carries Redis's fix, CVE-2025-46817); empty and small ranges, nil slots included, are unpack's own.
#[test]
fn unpack_of_a_huge_range_is_refused_not_a_crash() {
    for range in ["-2, 2147483647", "0, 2147483647", "-2147483648, -2"] {
        let reply = eval(&format!("return {{unpack({{1,2,3}}, {range})}}"));
        assert!(
            reply.contains("too many results to unpack"),
            "{range}: {reply}"
        );
    }
    assert_eq!(eval("return {unpack({1,2,3}, -1, -2)}"), "*0\r\n");
    assert_eq!(eval("return {unpack({1,2,3}, 1, -1)}"), "*0\r\n");
    assert_eq!(eval("return select('#', unpack({1,2,3}, -1, 5))"), ":7\r\n");
    assert_eq!(eval("return {unpack({1,2,3}, '2')}"), "*2\r\n:2\r\n:3\r\n");
}

#[test]
fn sandbox_is_redis_7s() {
    assert!(eval("return a").starts_with(
        "-ERR user_script:1: Script attempted to access nonexistent global variable 'a' script:"
    ));
    assert!(
        eval("a=10").starts_with("-ERR user_script:1: Attempt to modify a readonly table script:")
    );
    for trick in [
        "setmetatable(_G, {})",
        "local g = getmetatable(_G) g.__index = {}",
        "redis = function() return 1 end",
        "_G = {}",
        "redis.call = function() return 1 end",
        "cjson.encode = function() return 1 end",
        "cmsgpack.pack = function() return 1 end",
        "bit.lshift = function() return 1 end",
        "string.len = nil",
        "rawset(_G, 'x', 1)",
        "rawset(redis, 'x', 1)",
        "table.insert(redis, 1)",
        "getmetatable('').__index = {}",
        "local s = getmetatable('').__index s.upper = nil",
    ] {
        let r = eval(trick);
        assert!(
            r.contains("Attempt to modify a readonly table"),
            "{trick}: {r}"
        );
    }
    for name in [
        "loadfile", "dofile", "print", "require", "os", "io", "debug", "getfenv", "setfenv",
        "newproxy", "module",
    ] {
        let r = eval(&format!("return {name}"));
        assert!(
            r.contains(&format!(
                "Script attempted to access nonexistent global variable '{name}'"
            )),
            "{name}: {r}"
        );
    }
    // Binary chunks never reach the VM.
    assert!(
        eval("return loadstring(string.dump(function() return 1 end))()")
            .contains("attempt to call a nil value")
    );
    // Code compiled at run time is confined too.
    assert!(eval("loadstring('x = 1')()").contains("Attempt to modify a readonly table"));
    // Reading through the protection works: globals, pairs over them, string methods.
    assert_eq!(eval("return rawget(_G, 'redis') ~= nil"), ":1\r\n");
    assert_eq!(
        eval("local n=0 for k,v in pairs(_G) do n=n+1 end return n"),
        ":35\r\n"
    );
    assert_eq!(eval("return ('abc'):upper()"), "$3\r\nABC\r\n");
    let names = "LOG_DEBUG LOG_NOTICE LOG_VERBOSE LOG_WARNING REDIS_VERSION REDIS_VERSION_NUM REPL_ALL REPL_AOF REPL_NONE REPL_REPLICA REPL_SLAVE acl_check_cmd breakpoint call debug error_reply log pcall replicate_commands set_repl setresp sha1hex status_reply";
    assert_eq!(
        eval(
            "local t={} for k,v in pairs(redis) do t[#t+1]=k end table.sort(t) return table.concat(t, ' ')"
        ),
        format!("${}\r\n{names}\r\n", names.len())
    );
    // KEYS and ARGV are fresh per call and scripts may change them.
    let mut e = engine();
    let mut h = FakeHost::default();
    assert_eq!(
        eval_with(
            &mut e,
            &mut h,
            "KEYS[1] = 'z' return KEYS[1]",
            &["a"],
            Protocol::Resp2
        ),
        "$1\r\nz\r\n"
    );
    assert_eq!(
        eval_with(&mut e, &mut h, "return KEYS[1]", &["a"], Protocol::Resp2),
        "$1\r\na\r\n"
    );
}

#[test]
fn libraries_answer_as_in_redis() {
    assert_eq!(
        eval("return cjson.encode({1,2,3,{a=1.5,b='x'},true})"),
        "$30\r\n[1,2,3,{\"a\":1.5,\"b\":\"x\"},true]\r\n"
    );
    assert_eq!(eval("return cjson.encode({})"), "$2\r\n{}\r\n");
    assert_eq!(
        eval("return cjson.encode(cjson.decode('[1,null,\"a\",{\"k\":[]}]'))"),
        "$21\r\n[1,null,\"a\",{\"k\":{}}]\r\n"
    );
    assert_eq!(eval("return cjson.encode(1e100)"), "$6\r\n1e+100\r\n");
    assert_eq!(
        eval("local t = {} t[10]=1 return cjson.encode(t)"),
        "$48\r\n[null,null,null,null,null,null,null,null,null,1]\r\n"
    );
    assert_eq!(
        eval("return cjson.decode('{\"a\":null}').a == cjson.null"),
        ":1\r\n"
    );
    assert_eq!(
        eval_bytes("return cmsgpack.pack({1,2,'abc',{x=1}})"),
        b"$11\r\n\x94\x01\x02\xa3abc\x81\xa1x\x01\r\n".to_vec()
    );
    assert_eq!(
        eval("local a,b = cmsgpack.unpack(cmsgpack.pack(5, 'x')) return {a,b}"),
        "*2\r\n:5\r\n$1\r\nx\r\n"
    );
    assert_eq!(eval("return struct.pack('>I2', 258)"), "$2\r\n\x01\x02\r\n");
    assert_eq!(eval("return bit.band(0xff, 0x0f)"), ":15\r\n");
    assert_eq!(eval("return bit.tohex(65535)"), "$8\r\n0000ffff\r\n");
    assert_eq!(
        eval("return redis.sha1hex('')"),
        "$40\r\nda39a3ee5e6b4b0d3255bfef95601890afd80709\r\n"
    );
    assert_eq!(
        eval("return redis.sha1hex('Pizza & Mandolino')"),
        "$40\r\n74822d82031af7493c20eefa13bd07ec4fada82f\r\n"
    );
    assert_eq!(
        eval("return {math.random(100), math.random(100), tostring(math.random())}"),
        "*3\r\n:40\r\n:85\r\n$16\r\n0.35333609737146\r\n"
    );
    assert_eq!(eval("return redis.breakpoint()"), "$-1\r\n");
    assert_eq!(eval("return redis.replicate_commands()"), ":1\r\n");
    assert_eq!(eval("return redis.REDIS_VERSION"), "$6\r\n7.0.15\r\n");
    assert_eq!(eval("return redis.acl_check_cmd('get')"), ":1\r\n");
    // The host's answer for the whole request (command and keys), false as nil.
    assert_eq!(eval("return redis.acl_check_cmd('set', 'xa', 1)"), ":1\r\n");
    assert_eq!(
        eval("return redis.acl_check_cmd('SET', 'ya', 1)"),
        "$-1\r\n"
    );
    assert!(
        eval("return redis.acl_check_cmd('nosuch')")
            .contains("Invalid command passed to redis.acl_check_cmd()")
    );
    assert!(eval("return redis.acl_check_cmd()").contains("Please specify at least one argument"));
    let mut e = engine();
    let mut h = FakeHost::default();
    eval_with(
        &mut e,
        &mut h,
        "redis.log(redis.LOG_WARNING, 'hello', 42)",
        &[],
        Protocol::Resp2,
    );
    assert_eq!(h.logs, vec![(LogLevel::Warning, "hello 42".to_string())]);
}

#[test]
fn shebang_flags_are_parsed_and_cached() {
    let mut e = engine();
    let (_, flags) = e
        .load_script(b"#!lua flags=no-writes\nreturn 1", false)
        .unwrap();
    assert!(flags.no_writes);
    let err = e
        .load_script(b"#!lua flags=nope\nreturn 1", false)
        .unwrap_err();
    assert_eq!(err.text(), "ERR Unexpected flag in script shebang: nope");
    // Line numbers count the shebang line.
    let mut h = FakeHost::default();
    assert!(
        eval_with(&mut e, &mut h, "#!lua\nerror('x')", &[], Protocol::Resp2)
            .contains("user_script:2: x")
    );
}

#[test]
fn runaway_scripts_are_contained() {
    // Memory: a script that allocates without end fails; the engine keeps working.
    let mut e = Engine::new(
        EngineLimits {
            memory: 8 << 20,
            ..EngineLimits::default()
        },
        "7.0.15",
        0,
    )
    .unwrap();
    let mut h = FakeHost::default();
    let r = eval_with(
        &mut e,
        &mut h,
        "local t = {} local s = 'x' for i = 1, 1e9 do t[i] = s .. i end",
        &[],
        Protocol::Resp2,
    );
    assert!(r.contains("not enough memory"), "{r}");
    assert_eq!(
        eval_with(&mut e, &mut h, "return 1", &[], Protocol::Resp2),
        ":1\r\n"
    );
    // Deep recursion is Lua's stack overflow error, not a crash.
    let r = eval("local function f(n) return f(n + 1) + 1 end return f(1)");
    assert!(r.contains("stack overflow"), "{r}");
    let r = eval("local function f() return pcall(f) end return f()");
    assert!(
        r.starts_with(":") || r.starts_with("-") || r.starts_with("$"),
        "{r}"
    );
    // A table containing itself cannot become a reply.
    assert_eq!(
        eval("local t = {} t[1] = t return t"),
        "-ERR reached lua stack limit\r\n"
    );
    // A reply larger than the limit is refused, not built.
    let mut e = Engine::new(
        EngineLimits {
            max_reply: 1 << 20,
            ..EngineLimits::default()
        },
        "7.0.15",
        0,
    )
    .unwrap();
    let r = eval_with(
        &mut e,
        &mut h,
        "local s = string.rep('x', 1000000) local t = {} for i = 1, 1000 do t[i] = s end return t",
        &[],
        Protocol::Resp2,
    );
    assert_eq!(r, "-ERR script reply is larger than 1048576 bytes\r\n");
}

/// The heap's memory limit holds where values are built outside Lua code: a command's reply
/// (`redis.call`, `redis.pcall`) and KEYS/ARGV. Past it the script fails with Lua's "not enough
/// memory", the engine keeps working, and the heap stays within the limit (give or take the
/// few bytes mlua lets past it to raise its own error values).
#[test]
fn the_memory_limit_holds_for_replies_and_keys() {
    let limits = EngineLimits {
        memory: 8 << 20,
        ..EngineLimits::default()
    };
    let within = |used: usize| used <= limits.memory + 1024;
    let mut e = Engine::new(limits, "7.0.15", 0).unwrap();
    let mut h = FakeHost::default();
    // A reply of 16 MiB in 100,000 strings: refused while it is built, by either call.
    for call in ["redis.call", "redis.pcall"] {
        let r = eval_with(
            &mut e,
            &mut h,
            &format!("return #{call}('bigreply', '100000', '160')"),
            &[],
            Protocol::Resp2,
        );
        assert!(r.contains("not enough memory"), "{call}: {r}");
        assert!(within(e.used_memory()), "{}", e.used_memory());
    }
    // Replies that fit, kept until the heap is full: the same error, raised where the script
    // allocates.
    let r = eval_with(
        &mut e,
        &mut h,
        "local keep = {} for i = 1, 1000 do keep[i] = redis.call('bigreply', '1000', '100') end",
        &[],
        Protocol::Resp2,
    );
    assert!(r.contains("not enough memory"), "{r}");
    // Within the limit, the same call works.
    assert_eq!(
        eval_with(
            &mut e,
            &mut h,
            "return #redis.call('bigreply', '1000', '100')",
            &[],
            Protocol::Resp2
        ),
        ":1000\r\n"
    );
    // KEYS and ARGV larger than the heap: refused, nothing crashes.
    // (Distinct: Lua would store equal strings once.)
    let big: Vec<Vec<u8>> = (b'a'..=b'c').map(|c| vec![c; 4 << 20]).collect();
    let keys: Vec<&[u8]> = big.iter().map(Vec::as_slice).collect();
    let (sha, _) = e.load_script(b"return #KEYS", false).unwrap();
    let r = match e.run(
        Target::Script(&sha),
        &keys,
        &[],
        Protocol::Resp2,
        &mut h,
        None,
    ) {
        Ok(Step::Done(r)) => String::from_utf8_lossy(&r).into_owned(),
        other => panic!("{:?}", other.map(|_| ())),
    };
    assert!(r.contains("not enough memory"), "{r}");
    assert!(within(e.used_memory()), "{}", e.used_memory());
    // And the engine still runs scripts (with keys that fit).
    let small: Vec<&[u8]> = vec![b"a", b"b"];
    match e.run(
        Target::Script(&sha),
        &small,
        &[],
        Protocol::Resp2,
        &mut h,
        None,
    ) {
        Ok(Step::Done(r)) => assert_eq!(&r[..], b":2\r\n"),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn a_long_script_is_suspended_and_finished_on_another_thread() {
    let mut e = engine();
    let mut h = FakeHost::default();
    // Inside pcall and inside a sort comparator: C frames on the stack do not matter.
    let body = "redis.call('set', 'a', '1') local ok = pcall(function() local i = 0 while i < 3e6 do i = i + 1 end end) \
                table.sort({3, 2, 1}, function(a, b) local j = 0 while j < 1e5 do j = j + 1 end return a < b end) \
                return redis.call('incr', 'a')";
    let (sha, _) = e.load_script(body.as_bytes(), false).unwrap();
    let step = e
        .run(
            Target::Script(&sha),
            &[],
            &[],
            Protocol::Resp2,
            &mut h,
            Some(Duration::ZERO),
        )
        .unwrap();
    assert!(matches!(step, Step::Suspended));
    assert!(e.is_suspended());
    let (reply, h) = std::thread::spawn(move || {
        let mut h = h;
        let r = e.resume(&mut h);
        (r, h)
    })
    .join()
    .unwrap();
    assert_eq!(&reply[..], b":2\r\n");
    assert_eq!(h.calls, 2);
}

#[test]
fn a_killed_script_stops_even_inside_pcall() {
    let mut e = engine();
    let mut h = FakeHost::default();
    h.kill.store(true, Ordering::Relaxed);
    let body = "while true do pcall(function() while true do end end) end";
    let r = eval_with(&mut e, &mut h, body, &[], Protocol::Resp2);
    assert!(
        r.starts_with("-ERR Script killed by user with SCRIPT KILL..."),
        "{r}"
    );
    h.kill.store(false, Ordering::Relaxed);
    assert_eq!(
        eval_with(&mut e, &mut h, "return 1", &[], Protocol::Resp2),
        ":1\r\n"
    );
}

/// FUNCTION KILL, then FUNCTION LOAD REPLACE of the same library: the load runs (the kill
/// belonged to the killed function only), and so does the function after it.
#[test]
fn a_kill_does_not_outlive_the_killed_function() {
    let mut e = engine();
    let mut h = FakeHost::default();
    let lib = "#!lua name=test\nlocal a = 1 while a > 0 do a = a + 1 if a > 100000 then a = 1 break end end\n\
               redis.register_function('Loop', function() while true do end end)\n\
               redis.register_function('one', function() return 1 end)";
    e.load_library(lib.as_bytes(), false).unwrap();
    h.kill.store(true, Ordering::Relaxed);
    let r = match e.run(
        Target::Function("loop"),
        &[],
        &[],
        Protocol::Resp2,
        &mut h,
        None,
    ) {
        Ok(Step::Done(r)) => String::from_utf8_lossy(&r).into_owned(),
        Ok(Step::Suspended) => panic!("suspended without a deadline"),
        Err(crate::RunError::Reply(err)) => format!("-{}", err.text()),
    };
    assert!(r.starts_with("-ERR Script killed by user"), "{r}");
    h.kill.store(false, Ordering::Relaxed);
    for _ in 0..2 {
        assert_eq!(e.load_library(lib.as_bytes(), true).unwrap(), "test");
    }
    match e.run(
        Target::Function("ONE"),
        &[],
        &[],
        Protocol::Resp2,
        &mut h,
        None,
    ) {
        Ok(Step::Done(r)) => assert_eq!(&r[..], b":1\r\n"),
        _ => panic!("FCALL ONE (case-insensitive) did not run"),
    }
    let names: Vec<String> = e.libraries(|_| true)[0]
        .functions
        .iter()
        .map(|f| f.0.clone())
        .collect();
    assert_eq!(names, ["Loop", "one"]);
}

#[test]
fn the_cache_is_bounded() {
    let mut e = Engine::new(
        EngineLimits {
            cache_bytes: 1000,
            ..EngineLimits::default()
        },
        "7.0.15",
        0,
    )
    .unwrap();
    let (kept, _) = e
        .load_script(format!("return '{}'", "k".repeat(300)).as_bytes(), true)
        .unwrap();
    let mut evalled = Vec::new();
    for i in 0..10 {
        let (sha, _) = e
            .load_script(format!("return '{i:0>200}'").as_bytes(), false)
            .unwrap();
        evalled.push(sha);
    }
    let (n, bytes) = e.cache_stats();
    assert!(bytes <= 1000, "{bytes}");
    assert!(n < 11);
    assert!(
        e.script_exists(&kept),
        "SCRIPT LOAD scripts are not evicted"
    );
    assert!(e.script_exists(evalled.last().unwrap()));
    assert!(!e.script_exists(&evalled[0]));
    // Only SCRIPT LOAD scripts left: a new one that does not fit is refused.
    let err = e
        .load_script("x".repeat(2000).as_bytes(), true)
        .unwrap_err();
    assert!(err.text().contains("larger than the script cache"));
    e.flush_scripts();
    assert_eq!(e.cache_stats(), (0, 0));
    assert!(matches!(
        e.run(Target::Script(&kept), &[], &[], Protocol::Resp2, &mut FakeHost::default(), None),
        Err(crate::RunError::Reply(ref r)) if r.text() == "NOSCRIPT No matching script. Please use EVAL."
    ));
}

#[test]
fn function_libraries() {
    let mut e = engine();
    let mut h = FakeHost::default();
    let lib = "#!lua name=mylib\nredis.register_function('f', function(keys, args) return redis.call('echo', args[1]) end)\n\
               redis.register_function{function_name='g', callback=function(keys) return #keys end, flags={'no-writes'}, description='d'}";
    assert_eq!(e.load_library(lib.as_bytes(), false).unwrap(), "mylib");
    assert_eq!(
        e.load_library(lib.as_bytes(), false).unwrap_err().text(),
        "ERR Library 'mylib' already exists"
    );
    let run = |e: &mut Engine, h: &mut FakeHost, f: &str, keys: &[&[u8]], args: &[&[u8]]| match e
        .run(Target::Function(f), keys, args, Protocol::Resp2, h, None)
    {
        Ok(Step::Done(r)) => String::from_utf8_lossy(&r).into_owned(),
        Ok(Step::Suspended) => panic!(),
        Err(crate::RunError::Reply(err)) => err.text().to_string(),
    };
    assert_eq!(run(&mut e, &mut h, "f", &[], &[b"hi"]), "$2\r\nhi\r\n");
    assert_eq!(run(&mut e, &mut h, "g", &[b"a", b"b"], &[]), ":2\r\n");
    assert_eq!(
        run(&mut e, &mut h, "nosuch", &[], &[]),
        "ERR Function not found"
    );
    assert!(e.function_flags("g").unwrap().no_writes);
    let info = e.libraries(|_| true);
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].functions.len(), 2);
    assert_eq!(
        info[0].functions[1],
        ("g".to_string(), Some("d".to_string()), vec!["no-writes"])
    );
    // Another library may not take the same function name.
    let other = "#!lua name=other\nredis.register_function('f', function() end)";
    assert_eq!(
        e.load_library(other.as_bytes(), false).unwrap_err().text(),
        "ERR Function f already exists"
    );
    // Errors as Redis words them.
    for (code, err) in [
        (
            "#!lua name=l1\nerror('boom')",
            "ERR Error registering functions: ERR user_function:2: Script attempted to access nonexistent global variable 'error'",
        ),
        (
            "#!lua name=l1\nredis.register_function('f', 5)",
            "ERR Error registering functions: ERR second argument to redis.register_function must be a function",
        ),
        (
            "#!lua name=l1\nredis.register_function{function_name='x', callback=function() end, flags={'bad'}}",
            "ERR Error registering functions: ERR unknown flag given",
        ),
        ("#!lua name=l1\nlocal a = 1", "ERR No functions registered"),
        (
            "#!lua name=l3\nredis.call('ping')",
            "ERR Error registering functions: ERR user_function:2: Script attempted to access nonexistent global variable 'call'",
        ),
    ] {
        assert_eq!(
            e.load_library(code.as_bytes(), false).unwrap_err().text(),
            err,
            "{code}"
        );
    }
    assert!(
        e.load_library(b"#!lua name=l3\nreturn 1 +", false)
            .unwrap_err()
            .text()
            .starts_with("ERR Error compiling function: user_function:2:")
    );
    // A library's load time is limited.
    let slow = "#!lua name=slow\nlocal i = 0 while true do i = i + 1 end";
    assert!(
        e.load_library(slow.as_bytes(), false)
            .unwrap_err()
            .text()
            .contains("FUNCTION LOAD timeout")
    );
    // After all that, scripts still see the normal globals.
    assert_eq!(
        eval_with(
            &mut e,
            &mut h,
            "return string.len('abc')",
            &[],
            Protocol::Resp2
        ),
        ":3\r\n"
    );
    // REPLACE swaps the functions; DELETE removes them.
    let v2 = "#!lua name=mylib\nredis.register_function('h', function() return 'v2' end)";
    e.load_library(v2.as_bytes(), true).unwrap();
    assert_eq!(run(&mut e, &mut h, "h", &[], &[]), "$2\r\nv2\r\n");
    assert_eq!(run(&mut e, &mut h, "f", &[], &[]), "ERR Function not found");
    assert_eq!(
        e.library_codes(),
        vec![("mylib".to_string(), v2.as_bytes().to_vec())]
    );
    e.delete_library("mylib").unwrap();
    assert_eq!(
        e.delete_library("mylib").unwrap_err().text(),
        "ERR Library not found"
    );
    assert_eq!(e.function_counts(), (0, 0));
}

/// Lua's cache of freed small blocks (`lmem.c` in `crates/lua-src`): bounded, given back by a
/// full collection, and given back when the heap limit refuses an allocation, so a full cache
/// never makes a script fail that fits under the limit.
#[test]
fn freed_small_blocks_are_cached_within_bounds_and_given_back_at_the_limit() {
    const CACHE_LIMIT: usize = 64 * 1024;
    let mut e = engine();
    let mut h = FakeHost::default();
    let mut run = |e: &mut Engine, body: &str| eval_with(e, &mut h, body, &[], Protocol::Resp2);
    // Bytes the allocator holds for Lua beyond what Lua counts as live (the cache, plus the
    // rounding of small blocks to their size class).
    let count = "return collectgarbage('count') * 1024";
    let held_beyond_live = |e: &mut Engine, reply: String| {
        let live: usize = reply.trim_start_matches(':').trim().parse().expect(&reply);
        e.used_memory() - live
    };
    let big = "local s = string.rep('x', 30000) return #s";
    // Load every script first (compiling allocates), then empty the cache.
    assert_eq!(run(&mut e, big), ":30000\r\n");
    run(&mut e, count);
    // Two completed collection cycles after the tables are dropped (the cycle under way when
    // they were made may keep them).
    let fill = "local keep = {} for i = 1, 5000 do keep[i] = {} end keep = nil local cycles = 0 \
                for i = 1, 100000 do if collectgarbage('step') then cycles = cycles + 1 \
                if cycles == 2 then break end end end return cycles";
    assert_eq!(run(&mut e, fill), ":2\r\n");
    let collect = "collectgarbage('collect') return collectgarbage('count') * 1024";
    let r = run(&mut e, collect);
    let empty = held_beyond_live(&mut e, r);

    // 5,000 freed tables: far more than the cache may keep.
    assert_eq!(run(&mut e, fill), ":2\r\n");
    let r = run(&mut e, count);
    let cached = held_beyond_live(&mut e, r).saturating_sub(empty);
    assert!(
        (CACHE_LIMIT / 2..=CACHE_LIMIT + 4096).contains(&cached),
        "cached {cached} bytes"
    );

    // The limit leaves less room than the string needs unless the cache is given back.
    let limits = EngineLimits {
        memory: e.used_memory() + 24 * 1024,
        ..e.limits()
    };
    e.set_limits(limits);
    assert_eq!(run(&mut e, big), ":30000\r\n");
    assert!(e.used_memory() <= limits.memory);
    // Beyond what the limit allows, the script still fails as it did.
    assert!(run(&mut e, "return #string.rep('x', 200000)").contains("not enough memory"));

    // A full collection gives the cache back.
    e.set_limits(EngineLimits::default());
    assert_eq!(run(&mut e, fill), ":2\r\n");
    let r = run(&mut e, collect);
    let after = held_beyond_live(&mut e, r);
    assert!(
        after <= empty + 4096,
        "{after} held after a collection, {empty} before"
    );
}

/// Runs a cached script by SHA1 with keys and arguments; its reply as text.
fn run_sha(e: &mut Engine, sha: &str, keys: &[&[u8]], args: &[&[u8]]) -> String {
    match e.run(
        Target::Script(sha),
        keys,
        args,
        Protocol::Resp2,
        &mut FakeHost::default(),
        None,
    ) {
        Ok(Step::Done(r)) => String::from_utf8_lossy(&r).into_owned(),
        Ok(Step::Suspended) => panic!("suspended without a deadline"),
        Err(crate::RunError::Reply(err)) => format!("-{}\r\n", err.text()),
    }
}

/// EVAL's KEYS and ARGV tables are refilled from run to run (not rebuilt): whatever a script
/// did to them — more items, holes, keys in the hash part, a metatable, a huge run — is gone
/// for the next script, which sees exactly its own keys and arguments.
#[test]
fn eval_keys_and_argv_are_only_the_runs_own() {
    let mut e = engine();
    let load = |e: &mut Engine, body: &str| e.load_script(body.as_bytes(), false).unwrap().0;
    // Every entry of both tables, counted, and the first three of each; nil shows as false.
    let show = load(
        &mut e,
        "local n, m = 0, 0
         for _ in pairs(KEYS) do n = n + 1 end
         for _ in pairs(ARGV) do m = m + 1 end
         return {n, m, #KEYS, #ARGV, KEYS[1] or false, KEYS[2] or false, KEYS[3] or false,
                 ARGV[1] or false, ARGV[2] or false, ARGV[3] or false,
                 tostring(getmetatable(KEYS)), tostring(getmetatable(ARGV))}",
    );
    let fresh = |keys: &[&str], args: &[&str]| {
        let mut out = String::from("*12\r\n");
        out += &format!(
            ":{}\r\n:{}\r\n:{}\r\n:{}\r\n",
            keys.len(),
            args.len(),
            keys.len(),
            args.len()
        );
        for list in [keys, args] {
            for i in 0..3 {
                match list.get(i) {
                    Some(v) => out += &format!("${}\r\n{v}\r\n", v.len()),
                    None => out += "$-1\r\n",
                }
            }
        }
        out + "$3\r\nnil\r\n$3\r\nnil\r\n"
    };
    assert_eq!(
        run_sha(&mut e, &show, &[b"a", b"b"], &[b"x"]),
        fresh(&["a", "b"], &["x"])
    );
    let changes = [
        "KEYS[3] = 'more'; ARGV[2] = 'more'",
        "KEYS[1] = nil; ARGV[1] = nil",
        "KEYS.name = 'v'; ARGV.name = 'v'",
        "KEYS[100] = 'far'; ARGV[7] = 'far'",
        "KEYS[2] = nil; KEYS[5] = 'x'; KEYS[5] = nil; KEYS[9] = 'hash part'",
        "setmetatable(KEYS, {__index = function() return 'meta' end}); setmetatable(ARGV, {})",
        "for i = 1, 200 do KEYS[i] = i; ARGV[i] = i end",
        "table.insert(KEYS, 'pushed'); table.remove(ARGV)",
    ];
    for change in changes {
        let changer = load(&mut e, &format!("{change}; return 1"));
        assert_eq!(
            run_sha(&mut e, &changer, &[b"a", b"b"], &[b"x"]),
            ":1\r\n",
            "{change}"
        );
        assert_eq!(
            run_sha(&mut e, &show, &[b"c"], &[b"y", b"z"]),
            fresh(&["c"], &["y", "z"]),
            "after {change}"
        );
        assert_eq!(
            run_sha(&mut e, &show, &[], &[]),
            fresh(&[], &[]),
            "after {change}"
        );
        assert_eq!(
            run_sha(&mut e, &show, &[b"d", b"e"], &[b"w"]),
            fresh(&["d", "e"], &["w"]),
            "after {change}"
        );
    }
    // A run past the kept tables' size gets its own; the next small one is exact again.
    let many: Vec<Vec<u8>> = (0..100).map(|i| format!("k{i}").into_bytes()).collect();
    let many: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
    let count = load(&mut e, "return {#KEYS, #ARGV, KEYS[100], ARGV[100]}");
    assert_eq!(
        run_sha(&mut e, &count, &many, &many),
        "*4\r\n:100\r\n:100\r\n$3\r\nk99\r\n$3\r\nk99\r\n"
    );
    assert_eq!(run_sha(&mut e, &show, &[b"a"], &[]), fresh(&["a"], &[]));
    // A script stopped by an error leaves nothing behind either.
    let failing = load(&mut e, "KEYS[4] = 'x'; error('stop')");
    assert!(run_sha(&mut e, &failing, &[b"a"], &[]).starts_with("-"));
    assert_eq!(run_sha(&mut e, &show, &[b"b"], &[]), fresh(&["b"], &[]));
}

/// A function's keys and arguments are its own tables: a library may keep them (in Redis as
/// here), and a later call does not change what it kept.
#[test]
fn function_arguments_are_new_tables_each_call() {
    let mut e = engine();
    let lib = "#!lua name=keeper\nlocal kept\n\
               redis.register_function('keep', function(keys, args)\n\
                 if kept then return {kept[1], keys[1]} end\n\
                 kept = keys\n\
                 return 'kept'\n\
               end)";
    e.load_library(lib.as_bytes(), false).unwrap();
    let mut call = |keys: &[&[u8]]| match e.run(
        Target::Function("keep"),
        keys,
        &[],
        Protocol::Resp2,
        &mut FakeHost::default(),
        None,
    ) {
        Ok(Step::Done(r)) => String::from_utf8_lossy(&r).into_owned(),
        other => panic!("{other:?}"),
    };
    assert_eq!(call(&[b"first"]), "$4\r\nkept\r\n");
    assert_eq!(call(&[b"second"]), "*2\r\n$5\r\nfirst\r\n$6\r\nsecond\r\n");
    assert_eq!(call(&[b"third"]), "*2\r\n$5\r\nfirst\r\n$5\r\nthird\r\n");
}
