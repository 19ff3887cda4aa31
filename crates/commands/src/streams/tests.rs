//! Table tests: every expected reply was taken from redis-server 7.0 for the same commands
//! (explicit ids, so nothing depends on the clock).

use crate::testing::TestDb;

#[test]
fn core_commands_answer_as_redis() {
    let mut t = TestDb::new();
    t.check(&[
        (&["XADD", "s", "1-1", "a", "1"], "$3\r\n1-1\r\n"),
        (&["XADD", "s", "1-1", "a", "1"], "-ERR The ID specified in XADD is equal or smaller than the target stream top item\r\n"),
        (&["XADD", "s", "1-*", "b", "2"], "$3\r\n1-2\r\n"),
        (&["XADD", "s", "0-0", "a", "1"], "-ERR The ID specified in XADD must be greater than 0-0\r\n"),
        (&["XADD", "s", "5", "c", "3", "d", "4"], "$3\r\n5-0\r\n"),
        (&["XADD", "s", "5-x", "c", "3"], "-ERR Invalid stream ID specified as stream command argument\r\n"),
        (&["XADD", "s", "6-1", "c"], "-ERR wrong number of arguments for 'xadd' command\r\n"),
        (&["XADD", "missing", "NOMKSTREAM", "*", "a", "1"], "$-1\r\n"),
        (&["EXISTS", "missing"], ":0\r\n"),
        (&["XLEN", "s"], ":3\r\n"),
        (&["XLEN", "nope"], ":0\r\n"),
        (&["XRANGE", "s", "-", "+"], "*3\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n*2\r\n$3\r\n1-2\r\n*2\r\n$1\r\nb\r\n$1\r\n2\r\n*2\r\n$3\r\n5-0\r\n*4\r\n$1\r\nc\r\n$1\r\n3\r\n$1\r\nd\r\n$1\r\n4\r\n"),
        (&["XRANGE", "s", "-", "+", "COUNT", "2"], "*2\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n*2\r\n$3\r\n1-2\r\n*2\r\n$1\r\nb\r\n$1\r\n2\r\n"),
        (&["XRANGE", "s", "(1-1", "+"], "*2\r\n*2\r\n$3\r\n1-2\r\n*2\r\n$1\r\nb\r\n$1\r\n2\r\n*2\r\n$3\r\n5-0\r\n*4\r\n$1\r\nc\r\n$1\r\n3\r\n$1\r\nd\r\n$1\r\n4\r\n"),
        (&["XRANGE", "s", "1", "1"], "*2\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n*2\r\n$3\r\n1-2\r\n*2\r\n$1\r\nb\r\n$1\r\n2\r\n"),
        (&["XREVRANGE", "s", "+", "-", "COUNT", "1"], "*1\r\n*2\r\n$3\r\n5-0\r\n*4\r\n$1\r\nc\r\n$1\r\n3\r\n$1\r\nd\r\n$1\r\n4\r\n"),
        (&["XRANGE", "s", "-", "+", "COUNT", "0"], "*-1\r\n"),
        (&["XRANGE", "s", "x", "+"], "-ERR Invalid stream ID specified as stream command argument\r\n"),
        (&["XRANGE", "s", "(-", "+"], "-ERR Invalid stream ID specified as stream command argument\r\n"),
        (&["XDEL", "s", "1-2", "9-9"], ":1\r\n"),
        (&["XLEN", "s"], ":2\r\n"),
        (&["XADD", "s", "MAXLEN", "1", "7-0", "e", "5"], "$3\r\n7-0\r\n"),
        (&["XRANGE", "s", "-", "+"], "*1\r\n*2\r\n$3\r\n7-0\r\n*2\r\n$1\r\ne\r\n$1\r\n5\r\n"),
        (&["XADD", "t", "MAXLEN", "~", "2", "LIMIT", "5", "1-0", "a", "1"], "$3\r\n1-0\r\n"),
        (&["XADD", "t", "MINID", "=", "2", "2-0", "a", "1"], "$3\r\n2-0\r\n"),
        (&["XADD", "t", "LIMIT", "5", "3-0", "a", "1"], "-ERR syntax error, LIMIT cannot be used without specifying a trimming strategy\r\n"),
        (&["XADD", "t", "MAXLEN", "-1", "3-0", "a", "1"], "-ERR The MAXLEN argument must be >= 0.\r\n"),
        (&["XADD", "t", "MAXLEN", "1", "MINID", "1", "4-0", "a", "1"], "-ERR syntax error, MAXLEN and MINID options at the same time are not compatible\r\n"),
        (&["XTRIM", "t", "MINID", "3"], ":1\r\n"),
        (&["XTRIM", "t", "MAXLEN", "0"], ":0\r\n"),
        (&["XLEN", "t"], ":0\r\n"),
        (&["EXISTS", "t"], ":1\r\n"),
        (&["XTRIM", "t", "FOO", "0"], "-ERR syntax error\r\n"),
        (&["SET", "str", "x"], "+OK\r\n"),
        (&["XADD", "str", "*", "a", "1"], "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"),
        (&["XRANGE", "str", "-", "+"], "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"),
        (&["XREAD", "STREAMS", "s", "0"], "*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n7-0\r\n*2\r\n$1\r\ne\r\n$1\r\n5\r\n"),
        (&["XREAD", "COUNT", "1", "STREAMS", "s", "nope", "0", "0"], "*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n7-0\r\n*2\r\n$1\r\ne\r\n$1\r\n5\r\n"),
        (&["XREAD", "STREAMS", "s", "$"], "*-1\r\n"),
        (&["XREAD", "STREAMS", "s"], "-ERR wrong number of arguments for 'xread' command\r\n"),
        (&["XREAD", "STREAMS", "s", "s", "0"], "-ERR Unbalanced 'xread' list of streams: for each stream key an ID or '$' must be specified.\r\n"),
        (&["XSETID", "s", "5-0"], "-ERR The ID specified in XSETID is smaller than the target stream top item\r\n"),
        (&["XSETID", "s", "100-0", "ENTRIESADDED", "1", "MAXDELETEDID", "0-0"], "+OK\r\n"),
        (&["XSETID", "s", "100-0", "ENTRIESADDED", "5", "MAXDELETEDID", "200-0"], "-ERR The ID specified in XSETID is smaller than the provided max_deleted_entry_id\r\n"),
        (&["XSETID", "s", "100-0", "ENTRIESADDED", "5", "MAXDELETEDID", "3-0"], "+OK\r\n"),
        (&["XSETID", "nope", "1-0"], "-ERR no such key\r\n"),
        (&["XADD", "s", "50-0", "a", "1"], "-ERR The ID specified in XADD is equal or smaller than the target stream top item\r\n"),
        (&["XADD", "s", "100-0", "a", "1"], "-ERR The ID specified in XADD is equal or smaller than the target stream top item\r\n"),
        (&["XADD", "s", "100-*", "a", "1"], "$5\r\n100-1\r\n"),
        (&["XINFO", "STREAM", "s"], "*20\r\n$6\r\nlength\r\n:2\r\n$15\r\nradix-tree-keys\r\n:1\r\n$16\r\nradix-tree-nodes\r\n:2\r\n$17\r\nlast-generated-id\r\n$5\r\n100-1\r\n$20\r\nmax-deleted-entry-id\r\n$3\r\n3-0\r\n$13\r\nentries-added\r\n:6\r\n$23\r\nrecorded-first-entry-id\r\n$3\r\n7-0\r\n$6\r\ngroups\r\n:0\r\n$11\r\nfirst-entry\r\n*2\r\n$3\r\n7-0\r\n*2\r\n$1\r\ne\r\n$1\r\n5\r\n$10\r\nlast-entry\r\n*2\r\n$5\r\n100-1\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n"),
    ]);
    t.assert_digest_consistent();
}

#[test]
fn consumer_groups_answer_as_redis() {
    let mut t = TestDb::new();
    t.check(&[
        (&["XGROUP", "CREATE", "g", "grp", "$"], "-ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.\r\n"),
        (&["XGROUP", "CREATE", "g", "grp", "$", "MKSTREAM"], "+OK\r\n"),
        (&["XGROUP", "CREATE", "g", "grp", "$", "MKSTREAM"], "-BUSYGROUP Consumer Group name already exists\r\n"),
        (&["XADD", "g", "1-0", "f", "1"], "$3\r\n1-0\r\n"),
        (&["XADD", "g", "2-0", "f", "2"], "$3\r\n2-0\r\n"),
        (&["XADD", "g", "3-0", "f", "3"], "$3\r\n3-0\r\n"),
        (&["XGROUP", "CREATE", "g", "old", "0", "ENTRIESREAD", "1"], "+OK\r\n"),
        (&["XREADGROUP", "GROUP", "grp", "alice", "COUNT", "2", "STREAMS", "g", ">"], "*1\r\n*2\r\n$1\r\ng\r\n*2\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n$1\r\n1\r\n*2\r\n$3\r\n2-0\r\n*2\r\n$1\r\nf\r\n$1\r\n2\r\n"),
        (&["XREADGROUP", "GROUP", "grp", "bob", "STREAMS", "g", ">"], "*1\r\n*2\r\n$1\r\ng\r\n*1\r\n*2\r\n$3\r\n3-0\r\n*2\r\n$1\r\nf\r\n$1\r\n3\r\n"),
        (&["XREADGROUP", "GROUP", "grp", "bob", "STREAMS", "g", ">"], "*-1\r\n"),
        (&["XREADGROUP", "GROUP", "grp", "alice", "STREAMS", "g", "0"], "*1\r\n*2\r\n$1\r\ng\r\n*2\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n$1\r\n1\r\n*2\r\n$3\r\n2-0\r\n*2\r\n$1\r\nf\r\n$1\r\n2\r\n"),
        (&["XREADGROUP", "GROUP", "nogrp", "alice", "STREAMS", "g", ">"], "-NOGROUP No such key 'g' or consumer group 'nogrp' in XREADGROUP with GROUP option\r\n"),
        (&["XREADGROUP", "GROUP", "grp", "alice", "STREAMS", "g", "$"], "-ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the history of this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would just return an empty result set.\r\n"),
        (&["XREAD", "STREAMS", "g", ">"], "-ERR The > ID can be specified only when calling XREADGROUP using the GROUP <group> <consumer> option.\r\n"),
        (&["XPENDING", "g", "grp"], "*4\r\n:3\r\n$3\r\n1-0\r\n$3\r\n3-0\r\n*2\r\n*2\r\n$5\r\nalice\r\n$1\r\n2\r\n*2\r\n$3\r\nbob\r\n$1\r\n1\r\n"),
        (&["XPENDING", "g", "nogrp"], "-NOGROUP No such key 'g' or consumer group 'nogrp'\r\n"),
        (&["XPENDING", "nokey", "grp"], "-NOGROUP No such key 'nokey' or consumer group 'grp'\r\n"),
        (&["XACK", "g", "grp", "1-0", "9-0"], ":1\r\n"),
        (&["XACK", "g", "grp", "x"], "-ERR Invalid stream ID specified as stream command argument\r\n"),
        (&["XPENDING", "g", "grp"], "*4\r\n:2\r\n$3\r\n2-0\r\n$3\r\n3-0\r\n*2\r\n*2\r\n$5\r\nalice\r\n$1\r\n1\r\n*2\r\n$3\r\nbob\r\n$1\r\n1\r\n"),
        (&["XCLAIM", "g", "grp", "carol", "0", "2-0", "3-0", "JUSTID"], "*2\r\n$3\r\n2-0\r\n$3\r\n3-0\r\n"),
        (&["XPENDING", "g", "grp"], "*4\r\n:2\r\n$3\r\n2-0\r\n$3\r\n3-0\r\n*1\r\n*2\r\n$5\r\ncarol\r\n$1\r\n2\r\n"),
        (&["XAUTOCLAIM", "g", "grp", "dave", "0", "0", "COUNT", "1", "JUSTID"], "*3\r\n$3\r\n3-0\r\n*1\r\n$3\r\n2-0\r\n*0\r\n"),
        (&["XAUTOCLAIM", "g", "grp", "dave", "0", "0", "COUNT", "0"], "-ERR COUNT must be > 0\r\n"),
        (&["XDEL", "g", "3-0"], ":1\r\n"),
        (&["XAUTOCLAIM", "g", "grp", "erin", "0", "0"], "*3\r\n$3\r\n0-0\r\n*1\r\n*2\r\n$3\r\n2-0\r\n*2\r\n$1\r\nf\r\n$1\r\n2\r\n*1\r\n$3\r\n3-0\r\n"),
        (&["XPENDING", "g", "grp"], "*4\r\n:1\r\n$3\r\n2-0\r\n$3\r\n2-0\r\n*1\r\n*2\r\n$4\r\nerin\r\n$1\r\n1\r\n"),
        (&["XGROUP", "CREATECONSUMER", "g", "grp", "zed"], ":1\r\n"),
        (&["XGROUP", "CREATECONSUMER", "g", "grp", "zed"], ":0\r\n"),
        (&["XGROUP", "DELCONSUMER", "g", "grp", "dave"], ":0\r\n"),
        (&["XGROUP", "DELCONSUMER", "g", "grp", "nobody"], ":0\r\n"),
        (&["XGROUP", "SETID", "g", "grp", "0", "ENTRIESREAD", "0"], "+OK\r\n"),
        (&["XGROUP", "SETID", "g", "nogrp", "0"], "-NOGROUP No such consumer group 'nogrp' for key name 'g'\r\n"),
        (&["XINFO", "GROUPS", "g"], "*2\r\n*12\r\n$4\r\nname\r\n$3\r\ngrp\r\n$9\r\nconsumers\r\n:5\r\n$7\r\npending\r\n:1\r\n$17\r\nlast-delivered-id\r\n$3\r\n0-0\r\n$12\r\nentries-read\r\n:0\r\n$3\r\nlag\r\n$-1\r\n*12\r\n$4\r\nname\r\n$3\r\nold\r\n$9\r\nconsumers\r\n:0\r\n$7\r\npending\r\n:0\r\n$17\r\nlast-delivered-id\r\n$3\r\n0-0\r\n$12\r\nentries-read\r\n:1\r\n$3\r\nlag\r\n$-1\r\n"),
        (&["XGROUP", "DESTROY", "g", "old"], ":1\r\n"),
        (&["XGROUP", "DESTROY", "g", "old"], ":0\r\n"),
        (&["XGROUP", "FOO"], "-ERR unknown subcommand 'FOO'. Try XGROUP HELP.\r\n"),
        (&["XGROUP", "CREATE", "g"], "-ERR wrong number of arguments for 'xgroup|create' command\r\n"),
        (&["XINFO", "GROUPS", "nokey"], "-ERR no such key\r\n"),
        (&["XINFO", "CONSUMERS", "g", "nogrp"], "-NOGROUP No such consumer group 'nogrp' for key name 'g'\r\n"),
        (&["XINFO", "FOO"], "-ERR unknown subcommand 'FOO'. Try XINFO HELP.\r\n"),
        (&["XCLAIM", "g", "grp", "c", "x", "1-0"], "-ERR Invalid min-idle-time argument for XCLAIM\r\n"),
        (&["XCLAIM", "g", "grp", "c", "0", "1-0", "IDLE", "x"], "-ERR Invalid IDLE option argument for XCLAIM\r\n"),
        (&["XCLAIM", "g", "grp", "c", "0", "1-0", "FOO"], "-ERR Unrecognized XCLAIM option 'FOO'\r\n"),
        (&["XAUTOCLAIM", "g", "grp", "c", "0", "0", "COUNT", "0"], "-ERR COUNT must be > 0\r\n"),
        (&["XAUTOCLAIM", "g", "grp", "c", "0", "x"], "-ERR Invalid stream ID specified as stream command argument\r\n"),
        (&["XADD", "g", "4-0", "f", "4"], "$3\r\n4-0\r\n"),
        (&["XREADGROUP", "GROUP", "grp", "z", "NOACK", "STREAMS", "g", ">"], "*1\r\n*2\r\n$1\r\ng\r\n*3\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n$1\r\n1\r\n*2\r\n$3\r\n2-0\r\n*2\r\n$1\r\nf\r\n$1\r\n2\r\n*2\r\n$3\r\n4-0\r\n*2\r\n$1\r\nf\r\n$1\r\n4\r\n"),
        (&["XPENDING", "g", "grp"], "*4\r\n:1\r\n$3\r\n2-0\r\n$3\r\n2-0\r\n*1\r\n*2\r\n$4\r\nerin\r\n$1\r\n1\r\n"),
    ]);
    t.assert_digest_consistent();
}

/// Redis 7.2's consumer times (t_stream.c of 7.2.6): seen-time on every attempt, active-time
/// only when a read delivers entries to acknowledge or a claim claims; XINFO CONSUMERS'
/// `inactive` is -1 until then, XINFO STREAM FULL gives `active-time`.
#[test]
fn consumers_seen_and_active_times_follow_redis_7_2() {
    let mut t = TestDb::new();
    let t0 = t.now;
    let consumer = |t: &mut TestDb, name: &str| {
        let r = t.run(&["XINFO", "CONSUMERS", "s", "g"]);
        let at = r
            .find(&format!("$4\r\nname\r\n${}\r\n{name}\r\n", name.len()))
            .unwrap_or_else(|| panic!("no {name} in {r:?}"));
        let rest = &r[at..];
        let num = |field: &str| -> i64 {
            let f = rest.find(&format!("\r\n{field}\r\n:")).unwrap() + field.len() + 5;
            rest[f..rest[f..].find('\r').unwrap() + f].parse().unwrap()
        };
        (num("idle"), num("inactive"))
    };
    t.check(&[
        (&["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"], "+OK\r\n"),
        (&["XGROUP", "CREATECONSUMER", "s", "g", "made"], ":1\r\n"),
        // Nothing to read: the consumer is created all the same (7.2), never active.
        (
            &["XREADGROUP", "GROUP", "g", "alice", "STREAMS", "s", ">"],
            "*-1\r\n",
        ),
    ]);
    assert_eq!(consumer(&mut t, "made"), (0, -1));
    t.now += 100;
    assert_eq!(consumer(&mut t, "alice"), (100, -1));
    t.run(&["XADD", "s", "1-0", "f", "v"]);
    t.run(&["XADD", "s", "2-0", "f", "v"]);
    t.run(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "alice",
        "COUNT",
        "1",
        "STREAMS",
        "s",
        ">",
    ]);
    assert_eq!(consumer(&mut t, "alice"), (0, 0));
    t.now += 100;
    // Seen, not active: nothing new, its own history, or NOACK deliveries.
    t.run(&["XREADGROUP", "GROUP", "g", "alice", "STREAMS", "s", "0"]);
    t.run(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "bob",
        "NOACK",
        "STREAMS",
        "s",
        ">",
    ]);
    t.run(&["XREADGROUP", "GROUP", "g", "alice", "STREAMS", "s", ">"]);
    assert_eq!(consumer(&mut t, "alice"), (0, 100));
    assert_eq!(consumer(&mut t, "bob"), (0, -1));
    t.now += 50;
    // A claim that claims makes the claimer active; one that claims nothing does not.
    t.run(&["XCLAIM", "s", "g", "carol", "0", "1-0"]);
    t.run(&["XAUTOCLAIM", "s", "g", "made", "1000000", "0"]);
    assert_eq!(consumer(&mut t, "carol"), (0, 0));
    // Seen (7.2 marks the claimer seen, and creates it, before looking for entries).
    assert_eq!(consumer(&mut t, "made"), (0, -1));
    t.run(&["XCLAIM", "s", "g", "dave", "0", "9-0"]);
    assert_eq!(consumer(&mut t, "dave"), (0, -1));
    t.now += 10;
    t.run(&["XAUTOCLAIM", "s", "g", "made", "0", "0"]);
    assert_eq!(consumer(&mut t, "made"), (0, 0));
    assert_eq!(consumer(&mut t, "carol"), (10, 10));
    let full = t.run(&["XINFO", "STREAM", "s", "FULL"]);
    assert!(
        full.contains(&format!(
            "$4\r\nname\r\n$3\r\nbob\r\n$9\r\nseen-time\r\n:{}\r\n$11\r\nactive-time\r\n:-1\r\n",
            t0 + 200
        )),
        "{full:?}"
    );
    assert!(
        full.contains(&format!(
            "$5\r\ncarol\r\n$9\r\nseen-time\r\n:{0}\r\n$11\r\nactive-time\r\n:{0}\r\n",
            t0 + 250
        )),
        "{full:?}"
    );
    t.assert_digest_consistent();
}

/// An empty XREADGROUP poll only marks its consumer seen: it does not offer the key to the
/// clients blocked on it (they would look again and go back to waiting), while a change they
/// could see does: a new consumer, a new entry.
#[test]
fn an_empty_poll_wakes_no_blocked_reader() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    use ferrite_storage::{Db, Waiter};

    struct Counter {
        keys: Vec<Box<[u8]>>,
        offered: AtomicUsize,
    }
    impl Waiter for Counter {
        fn keys(&self) -> &[Box<[u8]>] {
            &self.keys
        }
        fn serve(&self, _: &mut Db, _: &[u8], _: u64) -> bool {
            self.offered.fetch_add(1, Relaxed);
            false
        }
    }
    let mut t = TestDb::new();
    t.run(&["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"]);
    t.run(&["XREADGROUP", "GROUP", "g", "alice", "STREAMS", "s", ">"]);
    let counter = Arc::new(Counter {
        keys: vec![b"s"[..].into()],
        offered: AtomicUsize::new(0),
    });
    let waiter: Arc<dyn Waiter> = counter.clone();
    t.keyspace.lock().block(waiter.clone());
    let offered = |t: &mut TestDb| {
        t.keyspace.lock().serve_blocked(t.now);
        counter.offered.load(Relaxed)
    };
    t.now += 5;
    let idle = |t: &mut TestDb| t.run(&["XINFO", "CONSUMERS", "s", "g"]);
    assert!(idle(&mut t).contains("$4\r\nidle\r\n:5\r\n"));
    assert_eq!(
        t.run(&["XREADGROUP", "GROUP", "g", "alice", "STREAMS", "s", ">"]),
        "*-1\r\n"
    );
    // Seen now, and nobody offered the key.
    assert!(idle(&mut t).contains("$4\r\nidle\r\n:0\r\n"));
    assert_eq!(offered(&mut t), 0);
    t.now += 5;
    t.run(&["XREADGROUP", "GROUP", "g", "bob", "STREAMS", "s", ">"]);
    assert_eq!(offered(&mut t), 1);
    t.run(&["XADD", "s", "*", "f", "v"]);
    assert_eq!(offered(&mut t), 2);
    assert!(t.keyspace.lock().unblock(&waiter));
    t.assert_digest_consistent();
}
