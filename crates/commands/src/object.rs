//! OBJECT: how a key's value is kept (ENCODING, REFCOUNT, IDLETIME, FREQ, HELP), with Redis 7's
//! replies.

use ferrite_protocol::{Args, ErrorReply};
use ferrite_storage::{Encoding, ValueRef};

use crate::ctx::Ctx;
use crate::spec::flags::*;
use crate::spec::{CmdResult, CommandSpec, Creates};

crate::command_family!("generic");

pub const COMMANDS: &[CommandSpec] = &[cmd(
    "object",
    -2,
    READONLY,
    (2, 2, 1),
    Creates::Nothing,
    "Inspects the internals of a value: ENCODING, REFCOUNT, IDLETIME, FREQ, HELP.",
    object,
)];

const HELP: &[&str] = &[
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "IDLETIME <key>",
    "    Return the idle time of the <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP",
    "    Prints this help.",
];

/// What Redis answers for OBJECT REFCOUNT of its shared integer objects (`OBJ_SHARED_REFCOUNT`).
const SHARED_REFCOUNT: i64 = i32::MAX as i64;
/// Redis shares the integers below this (`OBJ_SHARED_INTEGERS`) instead of allocating them.
const SHARED_INTEGERS: i64 = 10_000;

fn object(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    const WITH_KEY: &[&str] = &["ENCODING", "REFCOUNT", "IDLETIME", "FREQ"];
    if args.len() == 2 && args.is(1, "HELP") {
        ctx.w.help(HELP);
        return Ok(());
    }
    if args.len() != 3 || !WITH_KEY.iter().any(|s| args.is(1, s)) {
        return Err(ErrorReply::bad_subcommand(
            "object",
            args.get(1),
            &["ENCODING", "REFCOUNT", "IDLETIME", "FREQ", "HELP"],
        ));
    }
    let now = ctx.now;
    let Some(e) = ctx.db.get(args.get(2), now) else {
        ctx.w.null();
        return Ok(());
    };
    if args.is(1, "ENCODING") {
        ctx.w.bulk(e.value().encoding().name().as_bytes());
    } else if args.is(1, "REFCOUNT") {
        let shared = match e.value() {
            ValueRef::Str(s) if s.encoding() == Encoding::Int => {
                ferrite_storage::encoding::canonical_int(s.as_bytes())
                    .is_some_and(|n| (0..SHARED_INTEGERS).contains(&n))
            }
            _ => false,
        };
        ctx.w.int(if shared { SHARED_REFCOUNT } else { 1 });
    } else if args.is(1, "IDLETIME") {
        // Ferrite records when a key last changed, not when it was last read: the idle time is
        // counted from the last write.
        ctx.w
            .int((now.saturating_sub(e.modified_ms()) / 1000) as i64);
    } else {
        // FREQ: Ferrite never evicts, so there is no LFU policy and nothing counts accesses.
        return Err(ErrorReply::err(
            "An LFU maxmemory policy is not selected, access frequency not tracked. Please note \
             that when switching between policies at runtime LRU and LFU data will take some \
             time to adjust.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::testing::TestDb;

    fn bulk(s: &str) -> String {
        format!("${}\r\n{s}\r\n", s.len())
    }

    #[test]
    fn encodings_as_redis_names_them() {
        let mut t = TestDb::new();
        let long = "x".repeat(45);
        t.check(&[
            (&["SET", "int", "123"], "+OK\r\n"),
            (&["OBJECT", "ENCODING", "int"], &bulk("int")),
            // Redis shares the integers 0..9999 (and reports a huge count for them).
            (&["OBJECT", "REFCOUNT", "int"], ":2147483647\r\n"),
            (&["SET", "big", "12345"], "+OK\r\n"),
            (&["OBJECT", "ENCODING", "big"], &bulk("int")),
            (&["OBJECT", "REFCOUNT", "big"], ":1\r\n"),
            (&["SET", "s", "hello"], "+OK\r\n"),
            (&["OBJECT", "encoding", "s"], &bulk("embstr")),
            (&["OBJECT", "REFCOUNT", "s"], ":1\r\n"),
            (&["APPEND", "s", "!"], ":6\r\n"),
            (&["OBJECT", "ENCODING", "s"], &bulk("raw")),
            (&["SET", "l", &long], "+OK\r\n"),
            (&["OBJECT", "ENCODING", "l"], &bulk("raw")),
            (&["INCR", "n"], ":1\r\n"),
            (&["OBJECT", "ENCODING", "n"], &bulk("int")),
            (&["HSET", "h", "f", "v"], ":1\r\n"),
            (&["OBJECT", "ENCODING", "h"], &bulk("listpack")),
            (&["HSET", "h", "g", &"v".repeat(65)], ":1\r\n"),
            (&["OBJECT", "ENCODING", "h"], &bulk("hashtable")),
            (&["SADD", "si", "1", "2", "3"], ":3\r\n"),
            (&["OBJECT", "ENCODING", "si"], &bulk("intset")),
            (&["SADD", "si", "a"], ":1\r\n"),
            (&["OBJECT", "ENCODING", "si"], &bulk("listpack")),
            (&["ZADD", "z", "1", "a"], ":1\r\n"),
            (&["OBJECT", "ENCODING", "z"], &bulk("listpack")),
            (&["RPUSH", "li", "a"], ":1\r\n"),
            (&["OBJECT", "ENCODING", "li"], &bulk("listpack")),
            (&["RPUSH", "li", &"x".repeat(9000)], ":2\r\n"),
            (&["OBJECT", "ENCODING", "li"], &bulk("quicklist")),
            (&["RPOP", "li"], &bulk(&"x".repeat(9000))),
            (&["OBJECT", "ENCODING", "li"], &bulk("listpack")),
            (&["OBJECT", "ENCODING", "missing"], "$-1\r\n"),
            (&["OBJECT", "IDLETIME", "missing"], "$-1\r\n"),
            (&["OBJECT", "IDLETIME", "s"], ":0\r\n"),
        ]);
    }

    #[test]
    fn errors_and_help() {
        let mut t = TestDb::new();
        t.check(&[
            (&["SET", "k", "v"], "+OK\r\n"),
            (
                &["OBJECT", "FREQ", "k"],
                "-ERR An LFU maxmemory policy is not selected, access frequency not tracked. \
                 Please note that when switching between policies at runtime LRU and LFU data \
                 will take some time to adjust.\r\n",
            ),
            (
                &["OBJECT", "NOPE", "k"],
                "-ERR unknown subcommand 'NOPE'. Try OBJECT HELP.\r\n",
            ),
            (
                &["OBJECT", "ENCODING"],
                "-ERR wrong number of arguments for 'object|encoding' command\r\n",
            ),
            (
                &["OBJECT", "ENCODING", "k", "extra"],
                "-ERR wrong number of arguments for 'object|encoding' command\r\n",
            ),
        ]);
        let help = t.run(&["OBJECT", "HELP"]);
        assert!(help.starts_with("*15\r\n+OBJECT <subcommand>"), "{help}");
    }
}
