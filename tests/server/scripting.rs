//! Lua scripting and functions through a real server: EVAL/EVALSHA/SCRIPT, FUNCTION/FCALL, the
//! busy-script rules per tenant, hostile scripts, and function libraries as tenant data
//! (digest, restart).

use std::time::{Duration, Instant};

use redis::{Commands, Value};

use crate::common::Server;

fn tenant_conn(s: &Server, id: &str, pw: &str) -> redis::Connection {
    let url = format!("redis://{id}:{pw}@127.0.0.1:{}/", s.port);
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

fn create(s: &Server, args: &[&str]) {
    let _: () = redis::cmd("TENANT.CREATE")
        .arg(args)
        .query(&mut s.conn())
        .unwrap();
}

/// An error reply as Redis sends it: "CODE message".
fn text_of(e: &redis::RedisError) -> String {
    format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or(""))
}

fn err_of(r: redis::RedisResult<Value>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => text_of(&e),
    }
}

fn eval(c: &mut redis::Connection, script: &str, keys: &[&str], args: &[&str]) -> Value {
    redis::cmd("EVAL")
        .arg(script)
        .arg(keys.len())
        .arg(keys)
        .arg(args)
        .query(c)
        .unwrap()
}

fn eval_err(c: &mut redis::Connection, script: &str) -> String {
    err_of(redis::cmd("EVAL").arg(script).arg(0).query(c))
}

const LIB: &str = "#!lua name=mylib\n\
    redis.register_function('incrget', function(keys, args) \
        redis.call('incrby', keys[1], args[1]) return redis.call('get', keys[1]) end)\n\
    redis.register_function{function_name='peek', callback=function(keys) \
        return redis.call('get', keys[1]) end, flags={'no-writes'}}";

#[test]
fn eval_evalsha_and_the_script_cache() {
    let s = Server::start();
    let mut c = s.anon_conn();
    let v = eval(
        &mut c,
        "redis.call('set', KEYS[1], ARGV[1]); return {1, 'two', redis.call('get', KEYS[1]), 3.9, true, false}",
        &["k"],
        &["v"],
    );
    assert_eq!(
        v,
        Value::Array(vec![
            Value::Int(1),
            Value::BulkString(b"two".to_vec()),
            Value::BulkString(b"v".to_vec()),
            Value::Int(3),
            Value::Int(1),
            Value::Nil,
        ])
    );
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return ARGV[1]")
        .query(&mut c)
        .unwrap();
    assert_eq!(sha, "098e0f0d1448c0a81dafe820f66d460eb09263da");
    let v: String = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(0)
        .arg("x")
        .query(&mut c)
        .unwrap();
    assert_eq!(v, "x");
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .arg("0000000000000000000000000000000000000000")
        .query(&mut c)
        .unwrap();
    assert_eq!(exists, [1, 0]);
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut c).unwrap();
    let e = err_of(redis::cmd("EVALSHA").arg(&sha).arg(0).query(&mut c));
    assert!(e.starts_with("NOSCRIPT"), "{e}");
    // Errors as Redis words them.
    let e = err_of(
        redis::cmd("EVAL")
            .arg("return 1")
            .arg(2)
            .arg("a")
            .query(&mut c),
    );
    assert!(
        e.contains("Number of keys can't be greater than number of args"),
        "{e}"
    );
    let e = eval_err(&mut c, "return redis.call('nosuchcommand')");
    assert!(
        e.contains("Unknown Redis command called from script"),
        "{e}"
    );
    let e = eval_err(&mut c, "return redis.call('multi')");
    assert!(
        e.contains("This Redis command is not allowed from script"),
        "{e}"
    );
    let e = err_of(
        redis::cmd("EVAL_RO")
            .arg("return redis.call('set', 'x', 1)")
            .arg(0)
            .query(&mut c),
    );
    assert!(
        e.contains("Write commands are not allowed from read-only scripts"),
        "{e}"
    );
    let e = err_of(
        redis::cmd("EVAL_RO")
            .arg("#!lua\nreturn 1")
            .arg(0)
            .query(&mut c),
    );
    assert!(
        e.contains("Can not execute a script with write flag using *_ro command"),
        "{e}"
    );
    // A command error inside a script reaches the client with the script's place.
    let _: () = c.rpush("list", 1).unwrap();
    let e = eval_err(&mut c, "return redis.call('get', 'list')");
    assert!(e.contains("WRONGTYPE"), "{e}");
    // pcall catches it.
    let v = eval(
        &mut c,
        "local r = redis.pcall('get', 'list'); return r['err']",
        &[],
        &[],
    );
    assert!(
        matches!(v, Value::BulkString(ref b) if b.starts_with(b"WRONGTYPE")),
        "{v:?}"
    );
    // RESP3: maps and doubles come back as such with redis.setresp(3).
    let mut c3 = s.conn3();
    let _: () = c3.hset("h", "f", "v").unwrap();
    let v: Value = redis::cmd("EVAL")
        .arg("redis.setresp(3); return redis.call('hgetall', KEYS[1])")
        .arg(1)
        .arg("h")
        .query(&mut c3)
        .unwrap();
    assert!(matches!(v, Value::Map(ref m) if m.len() == 1), "{v:?}");
}

#[test]
fn functions_load_call_list_dump_restore() {
    let s = Server::start();
    let mut c = s.anon_conn();
    let name: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(LIB)
        .query(&mut c)
        .unwrap();
    assert_eq!(name, "mylib");
    let e = err_of(redis::cmd("FUNCTION").arg("LOAD").arg(LIB).query(&mut c));
    assert!(e.contains("Library 'mylib' already exists"), "{e}");
    let v: String = redis::cmd("FCALL")
        .arg("incrget")
        .arg(1)
        .arg("n")
        .arg(5)
        .query(&mut c)
        .unwrap();
    assert_eq!(v, "5");
    let v: String = redis::cmd("FCALL_RO")
        .arg("peek")
        .arg(1)
        .arg("n")
        .query(&mut c)
        .unwrap();
    assert_eq!(v, "5");
    let e = err_of(
        redis::cmd("FCALL_RO")
            .arg("incrget")
            .arg(1)
            .arg("n")
            .arg(1)
            .query(&mut c),
    );
    assert!(
        e.contains("Can not execute a script with write flag using *_ro command"),
        "{e}"
    );
    let e = err_of(redis::cmd("FCALL").arg("nope").arg(0).query(&mut c));
    assert!(e.contains("Function not found"), "{e}");
    let list: Value = redis::cmd("FUNCTION")
        .arg("LIST")
        .arg("WITHCODE")
        .query(&mut c)
        .unwrap();
    let text = format!("{list:?}");
    assert!(text.contains("mylib") && text.contains("incrget") && text.contains("no-writes"));
    // DUMP, FLUSH, RESTORE round trip.
    let dump: Vec<u8> = redis::cmd("FUNCTION").arg("DUMP").query(&mut c).unwrap();
    let _: () = redis::cmd("FUNCTION").arg("FLUSH").query(&mut c).unwrap();
    let e = err_of(
        redis::cmd("FCALL")
            .arg("incrget")
            .arg(1)
            .arg("n")
            .arg(1)
            .query(&mut c),
    );
    assert!(e.contains("Function not found"), "{e}");
    let _: () = redis::cmd("FUNCTION")
        .arg("RESTORE")
        .arg(&dump)
        .query(&mut c)
        .unwrap();
    let e = err_of(
        redis::cmd("FUNCTION")
            .arg("RESTORE")
            .arg(&dump)
            .query(&mut c),
    );
    assert!(e.contains("already exists"), "{e}");
    let _: () = redis::cmd("FUNCTION")
        .arg("RESTORE")
        .arg(&dump)
        .arg("REPLACE")
        .query(&mut c)
        .unwrap();
    let mut bad = dump.clone();
    bad[3] ^= 1;
    let e = err_of(
        redis::cmd("FUNCTION")
            .arg("RESTORE")
            .arg(&bad)
            .query(&mut c),
    );
    assert!(e.contains("payload version or checksum are wrong"), "{e}");
    let v: String = redis::cmd("FCALL")
        .arg("incrget")
        .arg(1)
        .arg("n")
        .arg(1)
        .query(&mut c)
        .unwrap();
    assert_eq!(v, "6");
    // A payload from a real redis-server restores here.
    if let Some(mut redis) = RedisServer::start() {
        let mut rc = redis.conn();
        let _: String = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg(
                LIB.replace("mylib", "fromredis")
                    .replace("incrget", "rincr")
                    .replace("'peek'", "'rpeek'"),
            )
            .query(&mut rc)
            .unwrap();
        let payload: Vec<u8> = redis::cmd("FUNCTION").arg("DUMP").query(&mut rc).unwrap();
        let _: () = redis::cmd("FUNCTION")
            .arg("RESTORE")
            .arg(&payload)
            .query(&mut c)
            .unwrap();
        let v: String = redis::cmd("FCALL")
            .arg("rincr")
            .arg(1)
            .arg("r")
            .arg(2)
            .query(&mut c)
            .unwrap();
        assert_eq!(v, "2");
        // And ours restores there.
        let ours: Vec<u8> = redis::cmd("FUNCTION").arg("DUMP").query(&mut c).unwrap();
        let _: () = redis::cmd("FUNCTION")
            .arg("RESTORE")
            .arg(&ours)
            .arg("FLUSH")
            .query(&mut rc)
            .unwrap();
        let v: String = redis::cmd("FCALL")
            .arg("incrget")
            .arg(1)
            .arg("n")
            .arg(2)
            .query(&mut rc)
            .unwrap();
        assert_eq!(v, "2");
        redis.stop();
    }
    let _: () = redis::cmd("FUNCTION")
        .arg("DELETE")
        .arg("mylib")
        .query(&mut c)
        .unwrap();
    let e = err_of(
        redis::cmd("FUNCTION")
            .arg("DELETE")
            .arg("mylib")
            .query(&mut c),
    );
    assert!(e.contains("Library not found"), "{e}");
}

/// A real redis-server on a free port, if one is installed.
struct RedisServer {
    child: std::process::Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Option<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(RedisServer { child, port });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn conn(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends EVAL on its own thread; the reply (or error text) comes back on the handle.
fn eval_in_background(
    mut c: redis::Connection,
    script: &'static str,
) -> std::thread::JoinHandle<Result<Value, String>> {
    std::thread::spawn(move || {
        redis::cmd("EVAL")
            .arg(script)
            .arg(0)
            .query::<Value>(&mut c)
            .map_err(|e| text_of(&e))
    })
}

/// Waits until `c` gets -BUSY (the script has run past busy-reply-threshold); returns the error.
fn wait_busy(c: &mut redis::Connection) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.get::<_, Value>("k") {
            Err(e) if e.code() == Some("BUSY") => return text_of(&e),
            other => assert!(Instant::now() < deadline, "never busy: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The default busy-reply-threshold (5000 ms, as Redis): the script's own tenant waits, then
/// gets -BUSY once the script has run 5 s; other tenants are served at once throughout.
#[test]
fn the_default_busy_threshold_is_five_seconds_and_never_stalls_other_tenants() {
    let s = Server::start();
    let threshold: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("busy-reply-threshold")
        .query(&mut s.conn())
        .unwrap();
    assert_eq!(threshold, vec!["busy-reply-threshold", "5000"]);
    create(&s, &["hot", "PASSWORD", "ph"]);
    create(&s, &["calm", "PASSWORD", "pc"]);
    let mut calm = tenant_conn(&s, "calm", "pc");
    let _: () = calm.set("k", "calm").unwrap();
    let mut hot = tenant_conn(&s, "hot", "ph");
    let _: () = hot.set("k", "hot").unwrap();

    let started = Instant::now();
    let looping = eval_in_background(tenant_conn(&s, "hot", "ph"), "while true do end");
    std::thread::sleep(Duration::from_millis(300));
    // The hot tenant's GET waits for the script, until the threshold makes it -BUSY.
    let waiter = {
        let mut c = tenant_conn(&s, "hot", "ph");
        std::thread::spawn(move || {
            let r = c.get::<_, Value>("k").map_err(|e| text_of(&e));
            (r, started.elapsed())
        })
    };
    // Meanwhile the calm tenant is served at once, again and again.
    while started.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        assert_eq!(calm.get::<_, String>("k").unwrap(), "calm");
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "calm tenant waited {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (r, at) = waiter.join().unwrap();
    assert!(matches!(&r, Err(e) if e.starts_with("BUSY")), "{r:?}");
    assert!(
        at >= Duration::from_millis(4500) && at < Duration::from_secs(9),
        "-BUSY after {at:?}, want about 5 s"
    );
    let _: () = redis::cmd("SCRIPT").arg("KILL").query(&mut hot).unwrap();
    assert!(looping.join().unwrap().is_err());
    assert_eq!(hot.get::<_, String>("k").unwrap(), "hot");
}

#[test]
fn a_busy_script_blocks_only_its_tenant_and_script_kill_stops_it() {
    let s = Server::start();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("busy-reply-threshold")
        .arg(200)
        .query(&mut s.conn())
        .unwrap();
    create(&s, &["hot", "PASSWORD", "ph"]);
    create(&s, &["calm", "PASSWORD", "pc"]);
    let mut calm = tenant_conn(&s, "calm", "pc");
    let _: () = calm.set("k", "calm").unwrap();
    let mut hot = tenant_conn(&s, "hot", "ph");
    let _: () = hot.set("k", "hot").unwrap();

    let looping = eval_in_background(tenant_conn(&s, "hot", "ph"), "while true do end");
    let busy = wait_busy(&mut hot);
    assert!(busy.contains("SCRIPT KILL"), "{busy}");
    // The other tenant is served at once while the script runs, many times over.
    let started = Instant::now();
    for _ in 0..50 {
        assert_eq!(calm.get::<_, String>("k").unwrap(), "calm");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the calm tenant waited {:?}",
        started.elapsed()
    );
    // A calm tenant's script runs too (its own engine).
    assert_eq!(
        eval(&mut calm, "return redis.call('get', 'k')", &[], &[]),
        Value::BulkString(b"calm".to_vec())
    );
    // FUNCTION STATS and FUNCTION KILL answer without waiting; FUNCTION KILL does not kill an
    // EVAL.
    let e = err_of(redis::cmd("FUNCTION").arg("KILL").query(&mut hot));
    assert!(e.starts_with("BUSY"), "{e}");
    // The calm tenant cannot kill the hot tenant's script.
    let e = err_of(redis::cmd("SCRIPT").arg("KILL").query(&mut calm));
    assert!(e.starts_with("NOTBUSY"), "{e}");
    let _: () = redis::cmd("SCRIPT").arg("KILL").query(&mut hot).unwrap();
    let r = looping.join().unwrap();
    assert!(
        matches!(&r, Err(e) if e.contains("Script killed by user with SCRIPT KILL")),
        "{r:?}"
    );
    assert_eq!(hot.get::<_, String>("k").unwrap(), "hot");

    // A script that wrote cannot be killed; it runs until it ends by itself.
    let writer = eval_in_background(
        tenant_conn(&s, "hot", "ph"),
        "redis.call('set', 'w', 1) local t = redis.call('time') \
         while true do local n = redis.call('time') if n[1] - t[1] >= 2 then break end end \
         return 'done'",
    );
    wait_busy(&mut hot);
    let e = err_of(redis::cmd("SCRIPT").arg("KILL").query(&mut hot));
    assert!(e.starts_with("UNKILLABLE"), "{e}");
    assert_eq!(
        writer.join().unwrap(),
        Ok(Value::BulkString(b"done".to_vec()))
    );

    // A busy function: FUNCTION STATS shows it, SCRIPT KILL refuses, FUNCTION KILL stops it.
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("#!lua name=spin\nredis.register_function('spin', function() while true do end end)")
        .query(&mut hot)
        .unwrap();
    let mut caller = tenant_conn(&s, "hot", "ph");
    let spinning = std::thread::spawn(move || {
        redis::cmd("FCALL")
            .arg("spin")
            .arg(0)
            .query::<Value>(&mut caller)
            .map_err(|e| text_of(&e))
    });
    wait_busy(&mut hot);
    let stats: Value = redis::cmd("FUNCTION").arg("STATS").query(&mut hot).unwrap();
    assert!(format!("{stats:?}").contains("spin"), "{stats:?}");
    let e = err_of(redis::cmd("SCRIPT").arg("KILL").query(&mut hot));
    assert!(e.starts_with("BUSY") && e.contains("FUNCTION KILL"), "{e}");
    let _: () = redis::cmd("FUNCTION").arg("KILL").query(&mut hot).unwrap();
    let r = spinning.join().unwrap();
    assert!(r.is_err(), "{r:?}");
    assert_eq!(hot.get::<_, String>("k").unwrap(), "hot");
}

#[test]
fn hostile_scripts_are_contained() {
    let s = Server::start();
    create(&s, &["t", "PASSWORD", "p", "MAXKEYS", "10"]);
    let mut c = tenant_conn(&s, "t", "p");
    // No way out of the sandbox.
    for script in [
        "return os.execute('true')",
        "return io.open('/etc/passwd')",
        "return loadfile('/etc/passwd')",
        "return dofile('/etc/passwd')",
        "return require('os')",
        "x = 1",
        "debug.sethook()",
    ] {
        let e = eval_err(&mut c, script);
        assert!(e.starts_with("ERR"), "{script}: {e}");
    }
    // Bytecode is never loaded (loadstring refuses binary chunks, as in Redis).
    assert_eq!(
        eval(
            &mut c,
            "return type(loadstring(string.dump(function() return 1 end)))",
            &[],
            &[]
        ),
        Value::BulkString(b"nil".to_vec())
    );
    // A script cannot go past the tenant's key quota: every write is checked.
    let e = eval_err(
        &mut c,
        "for i = 1, 100 do redis.call('set', 'k' .. i, i) end return 'all'",
    );
    assert!(e.contains("OOM") || e.contains("quota"), "{e}");
    let keys: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(keys, 10);
    // A reply that would be huge is refused, not built without bound: the Lua heap is limited.
    let e = eval_err(
        &mut c,
        "local t = {} for i = 1, 100000000 do t[i] = string.rep('x', 1000) end return t",
    );
    assert!(e.contains("memory"), "{e}");
    // Deep recursion and deeply nested replies end in an error.
    let e = eval_err(&mut c, "local function f() return f() + 1 end return f()");
    assert!(e.starts_with("ERR"), "{e}");
    let e = eval_err(
        &mut c,
        "local t = {} local c = t for i = 1, 100000 do c[1] = {} c = c[1] end return t",
    );
    assert!(e.starts_with("ERR"), "{e}");
    // The server is fine and the tenant usable.
    assert_eq!(eval(&mut c, "return 1", &[], &[]), Value::Int(1));
    let mut admin = s.conn();
    let pong: String = redis::cmd("PING").query(&mut admin).unwrap();
    assert_eq!(pong, "PONG");
}

/// The fast paths of a script call (KEYS/ARGV and command replies built in the Lua heap
/// without mlua's per-call protection when the heap has room for them, no counter flush before
/// EVALSHA, the running-script record refilled in place): the same replies, errors and limits
/// as the protected path, at the default limits.
#[test]
fn script_fast_paths_keep_replies_errors_and_limits() {
    let s = Server::start();
    let mut c = s.conn();
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return redis.call('INCR', KEYS[1])")
        .query(&mut c)
        .unwrap();
    // A pipeline of EVALSHA: every call runs, in order, and INFO counts every one.
    let mut p = redis::pipe();
    for i in 0..200 {
        // Upper-case SHA1s are found too.
        let sha = if i % 2 == 0 {
            sha.clone()
        } else {
            sha.to_uppercase()
        };
        p.cmd("EVALSHA").arg(sha).arg(1).arg("n");
    }
    let replies: Vec<i64> = p.query(&mut c).unwrap();
    assert_eq!(replies, (1..=200).collect::<Vec<i64>>());
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut c)
        .unwrap();
    assert!(stats.contains("cmdstat_evalsha:calls=200,"), "{stats}");
    // ... and the commands the scripts ran, as Redis counts them.
    assert!(stats.contains("cmdstat_incr:calls=200,"), "{stats}");

    // A pipelined round of script calls is warmed by each call's first declared key: counts of
    // every form (none, zero, leading zeros, not a number, negative, more keys than given)
    // answer as they do alone.
    let mut p = redis::pipe();
    p.cmd("EVALSHA").arg(&sha).arg(1).arg("w1");
    p.cmd("EVAL").arg("return #KEYS").arg(0);
    p.cmd("EVAL")
        .arg("return KEYS[2]")
        .arg("02")
        .arg("w1")
        .arg("w2");
    p.cmd("EVAL").arg("return 1").arg("x");
    p.cmd("EVAL").arg("return 1").arg(-1);
    p.cmd("EVAL").arg("return 1").arg(3).arg("w1");
    p.cmd("FCALL").arg("nosuch").arg(1).arg("w1");
    p.cmd("EVALSHA").arg(&sha).arg(1).arg("w1");
    let replies: Vec<Value> = p.ignore_errors().query(&mut c).unwrap();
    let texts: Vec<String> = replies.iter().map(|v| format!("{v:?}")).collect();
    assert_eq!(replies[0], Value::Int(1), "{texts:?}");
    assert_eq!(replies[1], Value::Int(0), "{texts:?}");
    assert_eq!(replies[2], Value::BulkString(b"w2".to_vec()), "{texts:?}");
    assert!(texts[3].contains("not an integer"), "{texts:?}");
    assert!(texts[4].contains("can't be negative"), "{texts:?}");
    assert!(
        texts[5].contains("greater than number of args"),
        "{texts:?}"
    );
    assert!(texts[6].contains("Function not found"), "{texts:?}");
    assert_eq!(replies[7], Value::Int(2), "{texts:?}");

    // A SHA1 of the right length that is not hex (ASCII or not) names no script.
    for bad in [vec![b'z'; 40], vec![0xc3; 40], {
        let mut v = sha.clone().into_bytes();
        v[39] = 0xff;
        v
    }] {
        let e = err_of(
            redis::cmd("EVALSHA")
                .arg(bad)
                .arg(1)
                .arg("w1")
                .query(&mut c),
        );
        assert!(e.starts_with("NOSCRIPT"), "{e}");
    }
    // redis.call remembers its previous command by name: other commands, other cases, a
    // longer name sharing its prefix and an unknown one are each found (or refused) anew.
    let r = eval(
        &mut c,
        "redis.call('incr', KEYS[1]) redis.call('INCRBY', KEYS[1], 5) \
         redis.call('Incr', KEYS[1]) local e = redis.pcall('incrx', KEYS[1]) \
         return {redis.call('get', KEYS[1]), e['err'], redis.call('INCR', KEYS[1])}",
        &["cache"],
        &[],
    );
    assert_eq!(
        r,
        Value::Array(vec![
            Value::BulkString(b"7".to_vec()),
            Value::BulkString(b"ERR Unknown Redis command called from script".to_vec()),
            Value::Int(8),
        ]),
        "{r:?}"
    );
    // Integer replies of every length reach the script as the number they are (a Lua 5.1
    // number is a double: the short ones are read in place, the rest parsed).
    for n in [
        0i64,
        -1,
        42,
        999_999_999_999_999_999,
        -999_999_999_999_999_999,
        i64::MIN,
    ] {
        let _: () = c.set("big", n).unwrap();
        let r = eval(
            &mut c,
            "return redis.call('INCRBY', KEYS[1], 0)",
            &["big"],
            &[],
        );
        assert_eq!(r, Value::Int(n as f64 as i64), "{n}");
    }

    // A script that fails midway keeps what it wrote before the failing command (no rollback,
    // as in Redis) and answers that command's error; the engine goes on.
    let e = err_of(
        redis::cmd("EVAL")
            .arg("redis.call('INCR', KEYS[1]) redis.call('LPUSH', KEYS[1], 'x') return 1")
            .arg(1)
            .arg("n")
            .query(&mut c),
    );
    assert!(e.starts_with("WRONGTYPE"), "{e}");
    assert_eq!(c.get::<_, i64>("n").unwrap(), 201);
    // redis.pcall turns the same failure into a value.
    assert_eq!(
        eval(
            &mut c,
            "local r = redis.pcall('LPUSH', KEYS[1], 'x') return r['err']",
            &["n"],
            &[]
        ),
        Value::BulkString(
            b"WRONGTYPE Operation against a key holding the wrong kind of value".to_vec()
        )
    );

    // A script's reply larger than the connection's output limit is refused, as any reply.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("limits.client_output_buffer_limit")
        .arg(1 << 20)
        .query(&mut c)
        .unwrap();
    let e = err_of(
        redis::cmd("EVAL")
            .arg("return string.rep('x', 2 * 1024 * 1024)")
            .arg(0)
            .query(&mut c),
    );
    assert!(e.contains("output buffer limit"), "{e}");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("limits.client_output_buffer_limit")
        .arg(1u64 << 30)
        .query(&mut c)
        .unwrap();

    // Large arguments and command replies: within the Lua heap limit (64 MB by default) they
    // work... (Lua interns every string, so the four values differ, or they would take the
    // heap's room once.)
    let bigs: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|fill| fill.repeat(20 << 20))
        .collect();
    assert_eq!(
        eval(&mut c, "return #ARGV[1]", &[], &[&bigs[0]]),
        Value::Int(20 << 20)
    );
    for (i, big) in bigs.iter().enumerate() {
        let _: () = c.set(format!("big{i}"), big).unwrap();
    }
    assert_eq!(
        eval(&mut c, "return #redis.call('GET', KEYS[1])", &["big0"], &[]),
        Value::Int(20 << 20)
    );
    // ... and past it they fail with Lua's "not enough memory", leaving the engine usable.
    let e = err_of(
        redis::cmd("EVAL")
            .arg(
                "local t = {} for i = 1, 4 do t[i] = redis.call('GET', KEYS[i]) end \
                 return #t[1] + #t[2] + #t[3] + #t[4]",
            )
            .arg(4)
            .arg(&["big0", "big1", "big2", "big3"])
            .query(&mut c),
    );
    assert!(e.contains("not enough memory"), "{e}");
    let e = err_of(
        redis::cmd("EVAL")
            .arg("return #ARGV[1] + #ARGV[2] + #ARGV[3] + #ARGV[4]")
            .arg(0)
            .arg(&bigs)
            .query(&mut c),
    );
    assert!(e.contains("not enough memory"), "{e}");
    assert_eq!(eval(&mut c, "return 7", &[], &[]), Value::Int(7));

    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
}

/// The `command` array of FUNCTION STATS's running script, if one is shown.
fn running_command(stats: &Value) -> Option<Vec<Vec<u8>>> {
    let pairs: Vec<(&Value, &Value)> = match stats {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|p| Some((p.first()?, p.get(1)?)))
            .collect(),
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        _ => return None,
    };
    for (k, v) in pairs {
        if matches!(k, Value::BulkString(name) if name.as_slice() == b"command") {
            let Value::Array(items) = v else { return None };
            return Some(
                items
                    .iter()
                    .filter_map(|i| match i {
                        Value::BulkString(b) => Some(b.clone()),
                        _ => None,
                    })
                    .collect(),
            );
        }
        if let Some(found) = running_command(v) {
            return Some(found);
        }
    }
    None
}

/// FUNCTION STATS shows exactly the running function's command, after a longer one ran before
/// (the record is refilled in place between scripts), and nothing once it ended or while an
/// EVAL runs.
#[test]
fn function_stats_shows_the_running_command_after_a_longer_one() {
    let s = Server::start();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("busy-reply-threshold")
        .arg(100)
        .query(&mut s.conn())
        .unwrap();
    let mut c = s.conn();
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(
            "#!lua name=stats\n\
             redis.register_function('count', function(k, a) return #k + #a end)\n\
             redis.register_function('spin', function() while true do end end)",
        )
        .query(&mut c)
        .unwrap();
    let n: i64 = redis::cmd("FCALL")
        .arg(&["count", "3", "a", "b", "c", "d", "e", "f"])
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 6);
    let mut caller = s.conn();
    let spinning = std::thread::spawn(move || {
        redis::cmd("FCALL")
            .arg(&["spin", "0"])
            .query::<Value>(&mut caller)
            .map_err(|e| text_of(&e))
    });
    wait_busy(&mut c);
    let stats: Value = redis::cmd("FUNCTION").arg("STATS").query(&mut c).unwrap();
    assert_eq!(
        running_command(&stats),
        Some(vec![b"FCALL".to_vec(), b"spin".to_vec(), b"0".to_vec()]),
        "{stats:?}"
    );
    let _: () = redis::cmd("FUNCTION").arg("KILL").query(&mut c).unwrap();
    assert!(spinning.join().unwrap().is_err());
    let stats: Value = redis::cmd("FUNCTION").arg("STATS").query(&mut c).unwrap();
    assert_eq!(running_command(&stats), None, "{stats:?}");
    // A busy EVAL after that function: FUNCTION STATS answers EVAL's -BUSY (as Redis), not
    // the function's record (an EVAL leaves it in place, unrefilled).
    let mut caller = s.conn();
    let spinning = std::thread::spawn(move || {
        redis::cmd("EVAL")
            .arg(&["while true do end", "0"])
            .query::<Value>(&mut caller)
            .map_err(|e| text_of(&e))
    });
    wait_busy(&mut c);
    let stats = redis::cmd("FUNCTION")
        .arg("STATS")
        .query::<Value>(&mut c)
        .map_err(|e| text_of(&e));
    assert_eq!(
        stats,
        Err("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.".to_string())
    );
    let _: () = redis::cmd("SCRIPT").arg("KILL").query(&mut c).unwrap();
    assert!(spinning.join().unwrap().is_err());
}

#[test]
fn script_writes_reach_watch_and_functions_are_tenant_data() {
    let s = Server::start();
    let mut c = s.anon_conn();
    let mut other = s.anon_conn();
    let _: () = c.set("w", 1).unwrap();
    let _: () = redis::cmd("WATCH").arg("w").query(&mut c).unwrap();
    eval(&mut other, "redis.call('incr', 'w')", &[], &[]);
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: () = redis::cmd("SET").arg("w").arg(100).query(&mut c).unwrap();
    let r: Value = redis::cmd("EXEC").query(&mut c).unwrap();
    assert_eq!(r, Value::Nil, "a script's write must dirty a WATCHed key");

    // Libraries are part of the tenant's digest.
    let digest = |s: &Server| -> String {
        let v: Value = redis::cmd("TENANT.DIGEST")
            .arg("default")
            .arg("FULL")
            .query(&mut s.conn())
            .unwrap();
        let Value::Map(pairs) = v else {
            let Value::Array(items) = v else { panic!() };
            let i = items
                .iter()
                .position(|x| *x == Value::BulkString(b"digest".to_vec()))
                .unwrap();
            return format!("{:?}", items[i + 1]);
        };
        format!(
            "{:?}",
            pairs
                .iter()
                .find(|(k, _)| *k == Value::BulkString(b"digest".to_vec()))
                .unwrap()
                .1
        )
    };
    let before = digest(&s);
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(LIB)
        .query(&mut c)
        .unwrap();
    let with_lib = digest(&s);
    assert_ne!(before, with_lib);
    let _: () = redis::cmd("FUNCTION")
        .arg("DELETE")
        .arg("mylib")
        .query(&mut c)
        .unwrap();
    assert_eq!(digest(&s), before);
    // FLUSHALL keeps libraries (as in Redis), FUNCTION FLUSH drops them.
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(LIB)
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    let v: String = redis::cmd("FCALL")
        .arg("incrget")
        .arg(1)
        .arg("x")
        .arg(3)
        .query(&mut c)
        .unwrap();
    assert_eq!(v, "3");
}

#[test]
fn functions_and_script_writes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = Server::start_in(dir.path(), &[]);
        let mut c = s.anon_conn();
        let _: String = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg(LIB)
            .query(&mut c)
            .unwrap();
        let _: String = redis::cmd("FCALL")
            .arg("incrget")
            .arg(1)
            .arg("n")
            .arg(2)
            .query(&mut c)
            .unwrap();
        // A random command inside a script is journaled by its effect.
        let _: () = c.sadd("s", &["a", "b", "c"]).unwrap();
        eval(&mut c, "redis.call('spop', 's')", &[], &[]);
        // Compaction writes a snapshot: the libraries must be in it.
        let _: Value = redis::cmd("BGREWRITEAOF").query(&mut s.conn()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let _: String = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("#!lua name=second\nredis.register_function('two', function() return 2 end)")
            .query(&mut c)
            .unwrap();
        s.terminate();
        assert!(s.wait_exit(Duration::from_secs(10)).is_some());
    }
    let s = Server::start_in(dir.path(), &[]);
    let mut c = s.anon_conn();
    let v: String = redis::cmd("FCALL")
        .arg("incrget")
        .arg(1)
        .arg("n")
        .arg(1)
        .query(&mut c)
        .unwrap();
    assert_eq!(v, "3");
    let v: i64 = redis::cmd("FCALL").arg("two").arg(0).query(&mut c).unwrap();
    assert_eq!(v, 2);
    let n: i64 = c.scard("s").unwrap();
    assert_eq!(n, 2);
}
