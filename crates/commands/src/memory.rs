//! MEMORY (USAGE, STATS, DOCTOR, MALLOC-STATS, PURGE, HELP) and MOVE: Redis's single-server
//! memory and database commands, answered for the connection's tenant keyspace.

use ferrite_protocol::{Args, ErrorReply};

use crate::ctx::Ctx;
use crate::spec::flags::*;
use crate::spec::{CmdResult, CommandSpec, Creates, KEY1};

crate::command_family!("server");

pub const COMMANDS: &[CommandSpec] = &[
    cmd(
        "memory",
        -2,
        READONLY,
        (2, 2, 1),
        Creates::Nothing,
        "Memory usage of keys and of the tenant: USAGE, STATS, DOCTOR, MALLOC-STATS, PURGE, HELP.",
        memory,
    ),
    // Redis files MOVE under the generic keyspace commands.
    crate::spec::spec(
        "move",
        3,
        WRITE | FAST,
        KEY1,
        Creates::Nothing,
        "generic",
        "Moves a key to another database (only database 0 exists).",
        crate::Handler::Data(move_cmd),
    ),
];

fn memory(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let sub = args.get(1).to_ascii_uppercase();
    match sub.as_slice() {
        b"USAGE" if args.len() == 3 || args.len() == 5 => {
            if args.len() == 5 {
                // SAMPLES: the estimate here is kept exact on every change, so there is
                // nothing to sample; the count is still checked as Redis does.
                if !args.is(3, "SAMPLES") {
                    return Err(ErrorReply::syntax());
                }
                if args.int(4)? < 0 {
                    return Err(ErrorReply::syntax());
                }
            }
            let key = args.get(2);
            match ctx.db.get(key, ctx.now) {
                Some(e) => {
                    let n = e.size(key);
                    ctx.w.int(n as i64);
                }
                None => ctx.w.null(),
            }
        }
        b"STATS" if args.len() == 2 => {
            let (keys, used, expires) =
                (ctx.db.len(), ctx.db.used_bytes(), ctx.db.keys_with_expiry());
            let per_key = used.checked_div(keys).unwrap_or(0);
            let w = &mut *ctx.w;
            // The tenant's own figures: Ferrite counts memory per tenant keyspace (the
            // estimate quotas use). Figures of the process (allocator, peak, clients,
            // replication) are in INFO memory for administrators, not here.
            w.map(6);
            w.bulk_str("total.allocated");
            w.int(used as i64);
            w.bulk_str("keys.count");
            w.int(keys as i64);
            w.bulk_str("keys.bytes-per-key");
            w.int(per_key as i64);
            w.bulk_str("dataset.bytes");
            w.int(used as i64);
            w.bulk_str("db.0");
            w.map(2);
            w.bulk_str("overhead.hashtable.main");
            w.int((keys * std::mem::size_of::<usize>() * 2) as i64);
            w.bulk_str("overhead.hashtable.expires");
            w.int((expires * std::mem::size_of::<usize>() * 3) as i64);
            w.bulk_str("expires.count");
            w.int(expires as i64);
        }
        b"DOCTOR" if args.len() == 2 => {
            let text = if ctx.db.is_empty() {
                "Hi Sam, this instance is empty or is using very little memory, my issues \
                 detector can't be used in these conditions. Please, leave for your mission on \
                 Earth and fill it with some data. The new Sam and I will be back to our \
                 programming as soon as I finished rebooting."
            } else {
                "Hi Sam, I can't find any memory issue in your instance. I can only account for \
                 what occurs on this base."
            };
            ctx.w.verbatim(text);
        }
        b"MALLOC-STATS" if args.len() == 2 => {
            ctx.w
                .verbatim("Stats not supported for the current allocator");
        }
        b"PURGE" if args.len() == 2 => ctx.w.ok(),
        b"HELP" if args.len() == 2 => ctx.w.help(&[
            "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "DOCTOR",
            "    Return memory problems reports.",
            "MALLOC-STATS",
            "    Return internal statistics report from the memory allocator.",
            "PURGE",
            "    Attempt to purge dirty pages for reclamation by the allocator.",
            "STATS",
            "    Return information about the memory usage of the tenant.",
            "USAGE <key> [SAMPLES <count>]",
            "    Return memory in bytes used by <key> and its value.",
            "HELP",
            "    Print this help.",
        ]),
        _ => {
            return Err(ErrorReply::bad_subcommand(
                "memory",
                args.get(1),
                &["USAGE", "STATS", "DOCTOR", "MALLOC-STATS", "PURGE", "HELP"],
            ));
        }
    }
    Ok(())
}

/// MOVE key db with one database: db 0 is the source itself, anything else is out of range.
fn move_cmd(_ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let db = args.int(2)?;
    if i32::try_from(db).is_err() {
        return Err(ErrorReply::not_integer());
    }
    if db != 0 {
        return Err(ErrorReply::err("DB index is out of range"));
    }
    Err(ErrorReply::err(
        "source and destination objects are the same",
    ))
}

#[cfg(test)]
mod tests {
    use crate::testing::TestDb;

    #[test]
    fn memory_and_move() {
        let mut t = TestDb::new();
        t.run(&["SET", "k", "hello"]);
        let usage = t.run(&["MEMORY", "USAGE", "k"]);
        let n: i64 = usage.trim_start_matches(':').trim().parse().unwrap();
        assert!(n > 5 && n < 1000, "{usage}");
        t.check(&[
            (&["MEMORY", "USAGE", "none"], "$-1\r\n"),
            (&["MEMORY", "USAGE", "k", "SAMPLES", "5"], &usage),
            (
                &["MEMORY", "USAGE", "k", "FOO", "5"],
                "-ERR syntax error\r\n",
            ),
            (&["MEMORY", "PURGE"], "+OK\r\n"),
            (
                &["MEMORY", "NOPE"],
                "-ERR unknown subcommand 'NOPE'. Try MEMORY HELP.\r\n",
            ),
            (
                &["MEMORY", "STATS", "x"],
                "-ERR wrong number of arguments for 'memory|stats' command\r\n",
            ),
            (&["MOVE", "k", "1"], "-ERR DB index is out of range\r\n"),
            (
                &["MOVE", "k", "0"],
                "-ERR source and destination objects are the same\r\n",
            ),
            (
                &["MOVE", "k", "x"],
                "-ERR value is not an integer or out of range\r\n",
            ),
        ]);
        let stats = t.run(&["MEMORY", "STATS"]);
        assert!(stats.contains("keys.count\r\n:1\r\n"), "{stats}");
    }
}
