//! Keyspace notifications: the events Redis sends for each command (`notifyKeyspaceEvent` calls
//! in Redis 7.0's sources), built from the request and the keys the write funnel saw the command
//! create, modify or delete (`ferrite_storage::notify`). A key the command did not change gets no
//! event, as in Redis (an SREM of a missing member announces nothing).
//!
//! Not announced: `keymiss` (`m`), `evicted` (Ferrite never evicts) and `xtrim` after an XADD
//! that trimmed. The `xgroup-createconsumer` that XREADGROUP/XCLAIM/XAUTOCLAIM send when they
//! create a consumer is emitted by the stream commands themselves.

use ferrite_protocol::Args;
use ferrite_storage::Db;
use ferrite_storage::notify::KeyChange;
use ferrite_storage::notify::class::*;

/// The changes of one command and the events they give.
struct Events<'a> {
    log: &'a [(Box<[u8]>, KeyChange)],
    out: Vec<(u32, &'static str, &'a [u8])>,
}

impl<'a> Events<'a> {
    fn changed(&self, key: &[u8]) -> bool {
        self.log.iter().any(|(k, _)| **k == *key)
    }

    /// The key is gone after the command.
    fn gone(&self, key: &[u8]) -> bool {
        self.log
            .iter()
            .rev()
            .find(|(k, _)| **k == *key)
            .is_some_and(|(_, c)| *c == KeyChange::Deleted)
    }

    /// `event` if the key changed.
    fn on(&mut self, class: u32, event: &'static str, key: &'a [u8]) {
        if self.changed(key) {
            self.out.push((class, event, key));
        }
    }

    /// `event`, then `del` if that emptied the key (pops, removals).
    fn removal(&mut self, class: u32, event: &'static str, key: &'a [u8]) {
        if self.changed(key) {
            self.out.push((class, event, key));
            if self.gone(key) {
                self.out.push((GENERIC, "del", key));
            }
        }
    }

    /// A STORE destination: `event`, or `del` when the result was empty and the key went.
    fn stored(&mut self, class: u32, event: &'static str, key: &'a [u8]) {
        if self.changed(key) {
            let e = if self.gone(key) {
                (GENERIC, "del")
            } else {
                (class, event)
            };
            self.out.push((e.0, e.1, key));
        }
    }
}

fn has_word(args: &Args<'_>, from: usize, words: &[&str]) -> bool {
    (from..args.len()).any(|i| {
        words
            .iter()
            .any(|w| args.get(i).eq_ignore_ascii_case(w.as_bytes()))
    })
}

/// The argument after the first `word` (STORE destinations).
fn after_word<'a>(args: &Args<'a>, from: usize, word: &str) -> Option<&'a [u8]> {
    (from..args.len().saturating_sub(1))
        .find(|&i| args.get(i).eq_ignore_ascii_case(word.as_bytes()))
        .map(|i| args.get(i + 1))
}

fn end_event(word: &[u8], left: &'static str, right: &'static str) -> &'static str {
    if word.eq_ignore_ascii_case(b"LEFT") {
        left
    } else {
        right
    }
}

/// Publishes the events of the command `args` that just ran and changed the keys in `log`.
pub(crate) fn announce(db: &Db, args: Args<'_>, log: &[(Box<[u8]>, KeyChange)]) {
    if log.is_empty() || args.is_empty() {
        return;
    }
    let mut ev = Events {
        log,
        out: Vec::new(),
    };
    // `new` for each key the command created (Redis announces it when the key is added).
    for (i, (k, c)) in log.iter().enumerate() {
        if *c == KeyChange::Created && !log[..i].iter().any(|(p, _)| p == k) {
            ev.out.push((NEW, "new", k));
        }
    }
    let name = args.get(0).to_ascii_lowercase();
    let n = args.len();
    let key = |i: usize| if i < n { args.get(i) } else { &[][..] };
    match name.as_slice() {
        // -- strings
        b"set" | b"setnx" | b"getset" | b"setex" | b"psetex" => {
            ev.on(STRING, "set", key(1));
            let expiry = matches!(name.as_slice(), b"setex" | b"psetex")
                || (name == b"set" && has_word(&args, 3, &["EX", "PX", "EXAT", "PXAT"]));
            if expiry {
                ev.on(GENERIC, "expire", key(1));
            }
        }
        b"mset" | b"msetnx" => {
            for i in (1..n).step_by(2) {
                ev.on(STRING, "set", key(i));
            }
        }
        b"getex" => {
            if ev.gone(key(1)) {
                ev.on(GENERIC, "del", key(1));
            } else if has_word(&args, 2, &["PERSIST"]) {
                ev.on(GENERIC, "persist", key(1));
            } else {
                ev.on(GENERIC, "expire", key(1));
            }
        }
        b"getdel" => ev.on(GENERIC, "del", key(1)),
        b"setrange" => ev.on(STRING, "setrange", key(1)),
        b"append" => ev.on(STRING, "append", key(1)),
        b"incr" | b"decr" | b"incrby" | b"decrby" => ev.on(STRING, "incrby", key(1)),
        b"incrbyfloat" => ev.on(STRING, "incrbyfloat", key(1)),
        b"setbit" | b"bitfield" => ev.on(STRING, "setbit", key(1)),
        b"bitop" => ev.stored(STRING, "set", key(2)),
        b"pfadd" | b"pfmerge" => ev.on(STRING, "pfadd", key(1)),
        // -- keys
        b"del" | b"unlink" => {
            for i in 1..n {
                if ev.gone(key(i)) && !ev.out.iter().any(|(_, e, k)| *e == "del" && *k == key(i)) {
                    ev.out.push((GENERIC, "del", key(i)));
                }
            }
        }
        b"expire" | b"pexpire" | b"expireat" | b"pexpireat" => {
            if ev.gone(key(1)) {
                ev.on(GENERIC, "del", key(1));
            } else {
                ev.on(GENERIC, "expire", key(1));
            }
        }
        b"persist" => ev.on(GENERIC, "persist", key(1)),
        b"rename" | b"renamenx" => {
            ev.on(GENERIC, "rename_from", key(1));
            ev.on(GENERIC, "rename_to", key(2));
        }
        b"copy" => ev.on(GENERIC, "copy_to", key(2)),
        b"restore" => ev.on(GENERIC, "restore", key(1)),
        b"sort" => {
            if let Some(dst) = after_word(&args, 2, "STORE") {
                ev.stored(LIST, "sortstore", dst);
            }
        }
        // -- lists
        b"lpush" | b"lpushx" => ev.on(LIST, "lpush", key(1)),
        b"rpush" | b"rpushx" => ev.on(LIST, "rpush", key(1)),
        b"linsert" => ev.on(LIST, "linsert", key(1)),
        b"lset" => ev.on(LIST, "lset", key(1)),
        b"ltrim" => ev.removal(LIST, "ltrim", key(1)),
        b"lrem" => ev.removal(LIST, "lrem", key(1)),
        b"lpop" => ev.removal(LIST, "lpop", key(1)),
        b"rpop" => ev.removal(LIST, "rpop", key(1)),
        b"blpop" | b"brpop" => {
            let event = if name == b"blpop" { "lpop" } else { "rpop" };
            for i in 1..n.saturating_sub(1) {
                ev.removal(LIST, event, key(i));
            }
        }
        b"rpoplpush" | b"brpoplpush" => moved(&mut ev, key(1), key(2), "rpop", "lpush"),
        b"lmove" | b"blmove" => {
            let pop = end_event(key(3), "lpop", "rpop");
            let push = end_event(key(4), "lpush", "rpush");
            moved(&mut ev, key(1), key(2), pop, push);
        }
        b"lmpop" | b"blmpop" => {
            let at = if name == b"blmpop" { 2 } else { 1 };
            mpop(&mut ev, &args, at, LIST, |w| end_event(w, "lpop", "rpop"));
        }
        // -- sets
        b"sadd" => ev.on(SET, "sadd", key(1)),
        b"srem" => ev.removal(SET, "srem", key(1)),
        b"spop" => ev.removal(SET, "spop", key(1)),
        b"smove" => {
            ev.removal(SET, "srem", key(1));
            ev.on(SET, "sadd", key(2));
        }
        b"sinterstore" => ev.stored(SET, "sinterstore", key(1)),
        b"sunionstore" => ev.stored(SET, "sunionstore", key(1)),
        b"sdiffstore" => ev.stored(SET, "sdiffstore", key(1)),
        // -- hashes
        b"hset" | b"hsetnx" | b"hmset" => ev.on(HASH, "hset", key(1)),
        b"hincrby" => ev.on(HASH, "hincrby", key(1)),
        b"hincrbyfloat" => ev.on(HASH, "hincrbyfloat", key(1)),
        b"hdel" => ev.removal(HASH, "hdel", key(1)),
        // -- sorted sets
        b"zadd" => {
            let event = if has_word(&args, 2, &["INCR"]) {
                "zincr"
            } else {
                "zadd"
            };
            ev.on(ZSET, event, key(1));
        }
        b"zincrby" => ev.on(ZSET, "zincr", key(1)),
        b"zrem" => ev.removal(ZSET, "zrem", key(1)),
        b"zremrangebyscore" => ev.removal(ZSET, "zremrangebyscore", key(1)),
        b"zremrangebyrank" => ev.removal(ZSET, "zremrangebyrank", key(1)),
        b"zremrangebylex" => ev.removal(ZSET, "zremrangebylex", key(1)),
        b"zunionstore" => ev.stored(ZSET, "zunionstore", key(1)),
        b"zinterstore" => ev.stored(ZSET, "zinterstore", key(1)),
        b"zdiffstore" => ev.stored(ZSET, "zdiffstore", key(1)),
        b"zrangestore" => ev.stored(ZSET, "zrangestore", key(1)),
        b"zpopmin" => ev.removal(ZSET, "zpopmin", key(1)),
        b"zpopmax" => ev.removal(ZSET, "zpopmax", key(1)),
        b"bzpopmin" | b"bzpopmax" => {
            let event = if name == b"bzpopmin" {
                "zpopmin"
            } else {
                "zpopmax"
            };
            for i in 1..n.saturating_sub(1) {
                ev.removal(ZSET, event, key(i));
            }
        }
        b"zmpop" | b"bzmpop" => {
            let at = if name == b"bzmpop" { 2 } else { 1 };
            mpop(&mut ev, &args, at, ZSET, |w| {
                if w.eq_ignore_ascii_case(b"MIN") {
                    "zpopmin"
                } else {
                    "zpopmax"
                }
            });
        }
        b"geoadd" => ev.on(ZSET, "zadd", key(1)),
        b"geosearchstore" => ev.stored(ZSET, "geosearchstore", key(1)),
        b"georadius" | b"georadiusbymember" => {
            let dst = after_word(&args, 2, "STORE").or_else(|| after_word(&args, 2, "STOREDIST"));
            if let Some(dst) = dst {
                ev.stored(ZSET, "georadiusstore", dst);
            }
        }
        // -- streams
        b"xadd" => ev.on(STREAM, "xadd", key(1)),
        b"xtrim" => ev.on(STREAM, "xtrim", key(1)),
        b"xdel" => ev.on(STREAM, "xdel", key(1)),
        b"xsetid" => ev.on(STREAM, "xsetid", key(1)),
        b"xgroup" => {
            let sub = key(1).to_ascii_lowercase();
            let event = match sub.as_slice() {
                b"create" => Some("xgroup-create"),
                b"setid" => Some("xgroup-setid"),
                b"destroy" => Some("xgroup-destroy"),
                b"createconsumer" => Some("xgroup-createconsumer"),
                b"delconsumer" => Some("xgroup-delconsumer"),
                _ => None,
            };
            if let Some(event) = event {
                ev.on(STREAM, event, key(2));
            }
        }
        _ => {}
    }
    for (class, event, key) in ev.out {
        db.emit(class, event, key);
    }
}

/// A list move: the pop on the source, the push on the destination, then `del` if the source
/// was emptied (Redis's order).
fn moved<'a>(
    ev: &mut Events<'a>,
    src: &'a [u8],
    dst: &'a [u8],
    pop: &'static str,
    push: &'static str,
) {
    ev.on(LIST, pop, src);
    ev.on(LIST, push, dst);
    if ev.gone(src) {
        ev.out.push((GENERIC, "del", src));
    }
}

/// LMPOP / ZMPOP (and their blocking forms): `numkeys` at `at`, the keys, then the end word.
fn mpop<'a>(
    ev: &mut Events<'a>,
    args: &Args<'a>,
    at: usize,
    class: u32,
    event: impl Fn(&[u8]) -> &'static str,
) {
    let Some(numkeys) = std::str::from_utf8(args.get(at))
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
    else {
        return;
    };
    let word_at = at + 1 + numkeys;
    if word_at >= args.len() {
        return;
    }
    let e = event(args.get(word_at));
    for i in at + 1..word_at {
        ev.removal(class, e, args.get(i));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ferrite_storage::notify::{Publisher, parse_flags};
    use std::sync::Mutex;

    use crate::testing::TestDb;

    #[derive(Default)]
    struct Sink(Mutex<Vec<String>>);

    impl Publisher for Sink {
        fn publish(&self, channel: &[u8], message: &[u8]) {
            let ch = String::from_utf8_lossy(channel);
            // Keep the keyevent channel only: "<event> <key>".
            if let Some(event) = ch.strip_prefix("__keyevent@0__:") {
                self.0
                    .lock()
                    .unwrap()
                    .push(format!("{event} {}", String::from_utf8_lossy(message)));
            }
        }
    }

    fn events(t: &mut TestDb, flags: &str, argv: &[&str]) -> Vec<String> {
        let sink = Arc::new(Sink::default());
        t.keyspace
            .key_events()
            .configure(parse_flags(flags).unwrap(), Some(sink.clone()));
        t.run(argv);
        sink.0.lock().unwrap().clone()
    }

    #[test]
    fn each_family_announces_redis_event_names() {
        let mut t = TestDb::new();
        let cases: &[(&[&str], &[&str])] = &[
            (&["SET", "s", "1", "EX", "100"], &["set s", "expire s"]),
            (&["INCR", "s"], &["incrby s"]),
            (&["DECRBY", "s", "2"], &["incrby s"]),
            (&["APPEND", "s", "x"], &["append s"]),
            (&["MSET", "a", "1", "b", "2"], &["set a", "set b"]),
            (&["DEL", "a", "nothing", "b"], &["del a", "del b"]),
            (&["RPUSH", "l", "1", "2"], &["rpush l"]),
            (
                &["LMOVE", "l", "m", "LEFT", "RIGHT"],
                &["lpop l", "rpush m"],
            ),
            (&["LPOP", "l"], &["lpop l", "del l"]),
            (&["LPOP", "l"], &[]),
            (&["SADD", "set", "a"], &["sadd set"]),
            (&["SREM", "set", "zz"], &[]),
            (&["SREM", "set", "a"], &["srem set", "del set"]),
            (&["HSET", "h", "f", "v"], &["hset h"]),
            (&["HDEL", "h", "f"], &["hdel h", "del h"]),
            (&["ZADD", "z", "1", "a"], &["zadd z"]),
            (&["ZADD", "z", "INCR", "1", "a"], &["zincr z"]),
            (&["ZUNIONSTORE", "z2", "1", "z"], &["zunionstore z2"]),
            (&["ZINTERSTORE", "z2", "1", "missing"], &["del z2"]),
            (&["EXPIRE", "m", "100"], &["expire m"]),
            (&["PERSIST", "m"], &["persist m"]),
            (&["RENAME", "m", "n"], &["rename_from m", "rename_to n"]),
            (&["EXPIRE", "n", "-1"], &["del n"]),
            (&["XADD", "x", "1-0", "f", "v"], &["xadd x"]),
            (&["XGROUP", "CREATE", "x", "g", "$"], &["xgroup-create x"]),
        ];
        for (argv, want) in cases {
            assert_eq!(&events(&mut t, "EA", argv), want, "{argv:?}");
        }
    }

    #[test]
    fn classes_filter_and_new_keys_are_announced_with_n() {
        let mut t = TestDb::new();
        assert_eq!(
            events(&mut t, "El", &["SET", "k", "v"]),
            Vec::<String>::new()
        );
        assert_eq!(events(&mut t, "E$", &["SET", "k", "v"]), vec!["set k"]);
        assert_eq!(
            events(&mut t, "EAn", &["RPUSH", "fresh", "a"]),
            vec!["new fresh", "rpush fresh"]
        );
        // K or E is needed for anything to be published.
        assert_eq!(
            events(&mut t, "A", &["SET", "k", "w"]),
            Vec::<String>::new()
        );
    }
}
