//! Memory quotas as an adversary tries them: a `MAXMEMORY 1mb` tenant uses every command that
//! creates or grows a key by more than its request (offsets, STORE destinations, RENAME/COPY,
//! APPEND's reallocation, RESTORE's decompression), alone and inside MULTI. Each must be refused
//! with Redis's `-OOM command not allowed when used memory > 'maxmemory'.`, change nothing, and
//! leave the tenant within its limit.

use std::collections::HashMap;

use redis::Value;

use crate::common::Server;

const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";
/// A transaction refused whole at EXEC, as Redis refuses it.
const EXEC_OOM: &str = "EXECABORT Transaction discarded because of: OOM command not allowed when used memory > 'maxmemory'.";
const LIMIT: u64 = 1024 * 1024;

struct Tenant {
    admin: redis::Connection,
    c: redis::Connection,
}

impl Tenant {
    fn new(s: &Server) -> Tenant {
        let mut admin = s.conn();
        let _: () = redis::cmd("TENANT.CREATE")
            .arg(&["small", "PASSWORD", "pw", "MAXMEMORY", "1mb"])
            .query(&mut admin)
            .unwrap();
        let c = s.tenant_conn("small", "pw");
        Tenant { admin, c }
    }

    fn used(&mut self) -> u64 {
        let info: HashMap<String, Value> = redis::cmd("TENANT.INFO")
            .arg("small")
            .query(&mut self.admin)
            .unwrap();
        match &info["memory_used"] {
            Value::Int(n) => *n as u64,
            Value::BulkString(b) => String::from_utf8_lossy(b).parse().unwrap(),
            v => panic!("memory_used: {v:?}"),
        }
    }

    fn run(&mut self, args: &[&[u8]]) -> redis::RedisResult<Value> {
        let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut self.c)
    }

    fn ok(&mut self, args: &[&[u8]]) -> Value {
        match self.run(args) {
            Ok(v) => v,
            Err(e) => panic!("{:?} failed: {e}", show(args)),
        }
    }

    fn digest(&mut self) -> String {
        let v: Value = redis::cmd("TENANT.DIGEST")
            .arg("small")
            .query(&mut self.admin)
            .unwrap();
        format!("{v:?}")
    }

    /// `args` must be refused as over quota and change nothing.
    fn refused(&mut self, args: &[&[u8]]) {
        let before = self.digest();
        match self.run(args) {
            Ok(v) => panic!(
                "{:?} was accepted ({v:?}); tenant now uses {} bytes",
                show(args),
                self.used()
            ),
            Err(e) => assert_eq!(oom_text(&e), OOM, "{:?}", show(args)),
        }
        assert_eq!(self.digest(), before, "{:?} changed the data", show(args));
        let used = self.used();
        assert!(used <= LIMIT, "{:?}: {used} bytes used", show(args));
    }
}

fn show(args: &[&[u8]]) -> Vec<String> {
    args.iter()
        .map(|a| {
            let s = String::from_utf8_lossy(a);
            if s.len() > 40 {
                format!("<{} bytes>", s.len())
            } else {
                s.into_owned()
            }
        })
        .collect()
}

/// A DUMP payload of a string of `n` bytes 'a', LZF-compressed as Redis writes long strings:
/// one literal, then back references of 264 bytes (3 bytes each).
fn compressed_dump(n: usize) -> Vec<u8> {
    let mut lzf = vec![0x00, b'a'];
    let mut left = n - 1;
    while left > 0 {
        let len = left.min(264);
        if len < 9 {
            // Short tail: literal bytes (n is chosen so that this stays under 32).
            lzf.push(len as u8 - 1);
            lzf.extend(std::iter::repeat_n(b'a', len));
        } else {
            lzf.extend([0xE0, (len - 9) as u8, 0x00]);
        }
        left -= len;
    }
    let mut body = vec![0u8]; // RDB type: string
    body.push(0xC3); // encoded string: LZF
    for l in [lzf.len(), n] {
        body.push(0x80); // 32-bit length
        body.extend_from_slice(&(l as u32).to_be_bytes());
    }
    body.extend_from_slice(&lzf);
    body.extend_from_slice(&ferrite_rdb::RDB_VERSION.to_le_bytes());
    let crc = ferrite_rdb::crc64(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    body
}

/// Runs `commands` in MULTI/EXEC and returns EXEC's answer or, when a command was refused as
/// it was queued (EXEC then answers EXECABORT), that refusal, as redis-py reports it.
fn transaction(c: &mut redis::Connection, commands: &[redis::Cmd]) -> redis::RedisResult<Value> {
    let _: () = redis::cmd("MULTI").query(c)?;
    let mut refused = None;
    for cmd in commands {
        match cmd.query::<String>(c) {
            Ok(queued) => assert_eq!(queued, "QUEUED"),
            Err(e) => {
                refused.get_or_insert(e);
            }
        }
    }
    let exec = redis::cmd("EXEC").query(c);
    match (refused, exec) {
        (Some(queued), Err(e)) => {
            assert!(oom_text(&e).starts_with("EXECABORT"), "{e}");
            Err(queued)
        }
        (Some(queued), Ok(v)) => panic!("EXEC ran {v:?} after {queued}"),
        (None, exec) => exec,
    }
}

/// The error line as the server sent it.
fn oom_text(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        _ => e.to_string(),
    }
}

/// Grows a collection with `add` (one batch per call) until the tenant uses more than half its
/// limit: a copy of it cannot fit any more.
fn grow_past_half(t: &mut Tenant, mut add: impl FnMut(&mut redis::Connection, usize)) {
    for batch in 0..400 {
        if t.used() > LIMIT * 55 / 100 {
            return;
        }
        add(&mut t.c, batch);
    }
    panic!("the collection did not grow: {} bytes used", t.used());
}

fn members(batch: usize, width: usize) -> Vec<String> {
    (batch * 100..batch * 100 + 100)
        .map(|i| format!("{i:0width$}"))
        .collect()
}

fn big_set(t: &mut Tenant, key: &str) {
    grow_past_half(t, |c, b| {
        let _: i64 = redis::cmd("SADD")
            .arg(key)
            .arg(members(b, 100))
            .query(c)
            .unwrap();
    });
}

#[test]
fn offsets_cannot_grow_a_string_past_the_quota() {
    let s = Server::start();
    let mut t = Tenant::new(&s);
    // What the issue reproduced: one SETRANGE took a 1 MB tenant to 537 MB.
    t.refused(&[b"SETRANGE", b"k", b"536870000", b"x"]);
    t.refused(&[b"SETBIT", b"k", b"4294967295", b"1"]);
    t.refused(&[b"BITFIELD", b"k", b"SET", b"u8", b"#100000000", b"1"]);
    t.refused(&[b"BITFIELD", b"k", b"INCRBY", b"i64", b"80000000", b"1"]);
    // An existing string grows only within the quota too.
    t.ok(&[b"SET", b"k", b"small"]);
    t.refused(&[b"SETRANGE", b"k", b"2000000", b"x"]);
    t.refused(&[b"SETBIT", b"k", b"16000000", b"1"]);
    // Within the quota the same commands work.
    t.ok(&[b"SETRANGE", b"k", b"1000", b"x"]);
    t.ok(&[b"SETBIT", b"k", b"80000", b"1"]);
    t.ok(&[b"BITFIELD", b"k", b"SET", b"u8", b"#20000", b"1"]);
    assert_eq!(t.ok(&[b"STRLEN", b"k"]), Value::Int(20001));
}

#[test]
fn appends_stop_at_the_quota() {
    let s = Server::start();
    let mut t = Tenant::new(&s);
    let chunk = vec![b'a'; 16 * 1024];
    let mut refused = false;
    for _ in 0..200 {
        match t.run(&[b"APPEND", b"k", &chunk]) {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(oom_text(&e), OOM);
                refused = true;
                break;
            }
        }
        assert!(t.used() <= LIMIT, "{} bytes used", t.used());
    }
    assert!(
        refused,
        "3 MB of appends were all accepted by a 1 MB tenant"
    );
    // Deleting frees the tenant: deletes are never refused.
    t.ok(&[b"DEL", b"k"]);
    t.ok(&[b"APPEND", b"k", &chunk]);
}

#[test]
fn store_destinations_count_what_they_copy() {
    let s = Server::start();
    let mut t = Tenant::new(&s);
    // A set using more than half the quota: every command below writes a copy of it (or more)
    // under another name, in one small request.
    big_set(&mut t, "s");
    t.ok(&[b"SADD", b"few", b"a", b"b", b"c"]);
    t.ok(&[b"SUNIONSTORE", b"copy", b"few"]); // a copy that fits is fine
    t.refused(&[b"SUNIONSTORE", b"d", b"s"]);
    t.refused(&[b"SUNIONSTORE", b"d", b"s", b"few"]);
    t.refused(&[b"SINTERSTORE", b"d", b"s"]);
    t.refused(&[b"SDIFFSTORE", b"d", b"s"]);
    t.refused(&[b"ZUNIONSTORE", b"d", b"1", b"s"]);
    t.refused(&[b"ZINTERSTORE", b"d", b"2", b"s", b"s"]);
    t.refused(&[b"SORT", b"s", b"ALPHA", b"STORE", b"d"]);
    t.refused(&[b"COPY", b"s", b"d"]);
    t.ok(&[b"DEL", b"s"]);
    // Sorted-set sources.
    grow_past_half(&mut t, |c, b| {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg("z");
        for (i, m) in members(b, 100).into_iter().enumerate() {
            cmd.arg(b * 100 + i).arg(m);
        }
        let _: i64 = cmd.query(c).unwrap();
    });
    t.refused(&[b"ZRANGESTORE", b"d", b"z", b"0", b"-1"]);
    t.refused(&[b"ZUNIONSTORE", b"d", b"1", b"z"]);
    t.refused(&[b"ZDIFFSTORE", b"d", b"1", b"z"]);
    t.refused(&[b"COPY", b"z", b"d"]);
    t.ok(&[b"DEL", b"z"]);
    // Geo sources.
    grow_past_half(&mut t, |c, b| {
        let mut cmd = redis::cmd("GEOADD");
        cmd.arg("g");
        for (i, m) in members(b, 100).into_iter().enumerate() {
            cmd.arg(10.0 + i as f64 * 0.001)
                .arg(20.0 + b as f64 * 0.001)
                .arg(m);
        }
        let _: i64 = cmd.query(c).unwrap();
    });
    t.refused(&[
        b"GEOSEARCHSTORE",
        b"d",
        b"g",
        b"FROMLONLAT",
        b"10",
        b"20",
        b"BYRADIUS",
        b"1000",
        b"km",
        b"ASC",
    ]);
    t.refused(&[
        b"GEORADIUS",
        b"g",
        b"10",
        b"20",
        b"1000",
        b"km",
        b"STORE",
        b"d",
    ]);
    t.ok(&[b"DEL", b"g"]);
    // Lists: SORT ... STORE of a list.
    grow_past_half(&mut t, |c, b| {
        let _: i64 = redis::cmd("RPUSH")
            .arg("l")
            .arg(members(b, 100))
            .query(c)
            .unwrap();
    });
    t.refused(&[b"SORT", b"l", b"ALPHA", b"STORE", b"d"]);
    t.refused(&[b"COPY", b"l", b"d"]);
    t.ok(&[b"DEL", b"l"]);
    // BITOP writes a string as long as its longest source.
    t.ok(&[b"SETBIT", b"b", b"5000000", b"1"]);
    t.refused(&[b"BITOP", b"NOT", b"d", b"b"]);
    t.refused(&[b"BITOP", b"OR", b"d", b"b", b"b"]);
    t.refused(&[b"COPY", b"b", b"d"]);
}

#[test]
fn renames_and_restores_count_what_they_create() {
    let s = Server::start();
    let mut t = Tenant::new(&s);
    big_set(&mut t, "s");
    // The issue renamed keys to 10 MB names; the request carries the name, RENAME stores it.
    let long_name = vec![b'n'; 700 * 1024];
    t.ok(&[b"SET", b"k", b"v"]);
    t.refused(&[b"RENAME", b"k", &long_name]);
    t.refused(&[b"RENAMENX", b"k", &long_name]);
    // RESTORE: a DUMP payload of 25 KB that decompresses (LZF) into a 2 MB string.
    let payload = compressed_dump(2 << 20);
    assert!(payload.len() < 32 * 1024, "{}", payload.len());
    t.refused(&[b"RESTORE", b"r", b"0", &payload]);
    let mut adm = s.conn();
    let _: () = redis::cmd("RESTORE")
        .arg("r")
        .arg(0)
        .arg(&payload)
        .query(&mut adm)
        .unwrap();
    assert_eq!(
        redis::cmd("STRLEN")
            .arg("r")
            .query::<i64>(&mut adm)
            .unwrap(),
        2 << 20,
        "the payload is valid: the default tenant (no quota) restores it"
    );
    // A small value restores.
    let _: () = redis::cmd("SET")
        .arg("tiny")
        .arg("hello")
        .query(&mut adm)
        .unwrap();
    let payload: Vec<u8> = redis::cmd("DUMP").arg("tiny").query(&mut adm).unwrap();
    t.ok(&[b"RESTORE", b"r", b"0", &payload]);
    assert_eq!(t.ok(&[b"GET", b"r"]), Value::BulkString(b"hello".to_vec()));
}

#[test]
fn a_transaction_is_bounded_as_a_whole() {
    let s = Server::start();
    let mut t = Tenant::new(&s);
    // Five SETRANGEs of 300 KB each: every one fits alone, together they do not.
    let before = t.digest();
    let setranges: Vec<redis::Cmd> = (0..5)
        .map(|i| {
            let mut c = redis::cmd("SETRANGE");
            c.arg(format!("k{i}")).arg(300_000).arg("x");
            c
        })
        .collect();
    let e = transaction(&mut t.c, &setranges).unwrap_err();
    assert_eq!(oom_text(&e), EXEC_OOM);
    assert_eq!(t.digest(), before, "a refused EXEC changed the data");
    // A key grown by an earlier command of the transaction counts as grown: SET 400 KB then
    // COPY it twice.
    let mut set = redis::cmd("SET");
    set.arg("a").arg("x".repeat(400 * 1024));
    let mut copy_b = redis::cmd("COPY");
    copy_b.arg("a").arg("b");
    let mut copy_c = redis::cmd("COPY");
    copy_c.arg("a").arg("c");
    let e = transaction(&mut t.c, &[set, copy_b, copy_c]).unwrap_err();
    assert_eq!(oom_text(&e), EXEC_OOM);
    // A STORE of a set the same transaction filled.
    let members: Vec<String> = (0..3000).map(|i| format!("{i:0100}")).collect();
    let mut sadd = redis::cmd("SADD");
    sadd.arg("s").arg(&members);
    let mut d1 = redis::cmd("SUNIONSTORE");
    d1.arg("d1").arg("s");
    let mut d2 = redis::cmd("SUNIONSTORE");
    d2.arg("d2").arg("s");
    let e = transaction(&mut t.c, &[sadd, d1, d2]).unwrap_err();
    assert_eq!(oom_text(&e), EXEC_OOM);
    assert_eq!(t.digest(), before);
    assert!(t.used() <= LIMIT);
    // RENAME inside MULTI, to long names.
    t.ok(&[b"SET", b"k", b"v"]);
    let before = t.digest();
    let mut cmds = Vec::new();
    for i in 0..3 {
        let mut set = redis::cmd("SET");
        set.arg(format!("r{i}")).arg("v");
        let mut rename = redis::cmd("RENAME");
        rename
            .arg(format!("r{i}"))
            .arg(format!("{i}{}", "n".repeat(400 * 1024)));
        cmds.extend([set, rename]);
    }
    // The names are held by the queue already: the third RENAME is refused as it is queued.
    let e = transaction(&mut t.c, &cmds).unwrap_err();
    assert_eq!(oom_text(&e), OOM);
    assert_eq!(t.digest(), before);
    // A transaction within the quota runs.
    let mut setrange = redis::cmd("SETRANGE");
    setrange.arg("k").arg(1000).arg("x");
    let mut strlen = redis::cmd("STRLEN");
    strlen.arg("k");
    let v = transaction(&mut t.c, &[setrange, strlen]).unwrap();
    assert_eq!(v, Value::Array(vec![Value::Int(1001), Value::Int(1001)]));
}

#[test]
fn a_queued_transaction_is_held_to_the_quota() {
    let s = Server::start();
    let mut t = Tenant::new(&s);
    let before = t.digest();
    // 300 SETs of 64 KiB (19 MiB) queued and never executed: the queue is the tenant's memory
    // too, so queuing stops at the quota instead of holding 19 times it.
    let value = vec![b'q'; 64 * 1024];
    let _: () = redis::cmd("MULTI").query(&mut t.c).unwrap();
    let mut queued = 0;
    let mut refused = 0;
    for i in 0..300 {
        match t.run(&[b"SET", format!("k{i}").as_bytes(), &value]) {
            Ok(v) => {
                assert_eq!(v, Value::SimpleString("QUEUED".into()));
                queued += 1;
            }
            Err(e) => {
                assert_eq!(oom_text(&e), OOM);
                refused += 1;
            }
        }
    }
    assert!(
        queued < 16,
        "{queued} SETs of 64 KiB queued under a 1 MiB quota"
    );
    assert_eq!(queued + refused, 300);
    let e = t.run(&[b"EXEC"]).unwrap_err();
    assert!(oom_text(&e).starts_with("EXECABORT"), "{e}");
    assert_eq!(t.digest(), before);
    // The next transaction starts with an empty queue and runs.
    let _: () = redis::cmd("MULTI").query(&mut t.c).unwrap();
    assert_eq!(
        t.ok(&[b"SET", b"a", &value]),
        Value::SimpleString("QUEUED".into())
    );
    assert_eq!(t.ok(&[b"EXEC"]), Value::Array(vec![Value::Okay]));
    assert!(t.used() <= LIMIT);
}
