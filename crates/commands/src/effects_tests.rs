//! Write effects reproduce what the commands did: a random command stream (clock moving, keys
//! expiring lazily and actively, random and float commands, transactions) is run with a recorder
//! subscribed; replaying the recorded effects on an empty keyspace, with another random seed,
//! must give the same content (digest, and a recomputation from scratch), and every effect must be
//! a deterministic command.

use std::sync::Arc;

use proptest::prelude::*;

use crate::replay::Replayer;
use crate::testing::TestDb;
use ferrite_storage::{EffectRecorder, Effects, Keyspace};

#[derive(Debug, Clone)]
enum Op {
    Cmd(Vec<String>),
    Multi(Vec<Vec<String>>),
    Advance(u64),
    ActiveExpire,
}

/// Keys of one type (`s` strings, `l` lists, `h` hashes, `t` sets, `z` sorted sets, `x` streams),
/// so that most commands meet a key of their type; generic commands take any key.
fn typed(prefix: &'static str) -> impl Strategy<Value = String> {
    (0..3u8).prop_map(move |i| format!("{prefix}{i}"))
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        typed("s"),
        typed("l"),
        typed("h"),
        typed("t"),
        typed("z"),
        typed("x")
    ]
}

fn val() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1".to_string()),
        Just("2.5".to_string()),
        "[a-c]{0,3}",
        (0..100i64).prop_map(|n| n.to_string())
    ]
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// One command. Times are offsets from "now"; `abs` ones are turned into absolute times when run.
fn command() -> impl Strategy<Value = Vec<String>> {
    let ttl = 1..60u64;
    prop_oneof![
        (typed("s"), val()).prop_map(|(k, v)| argv(&["SET", &k, &v])),
        (typed("s"), val(), ttl.clone(), 0..4u8).prop_map(|(k, v, t, how)| {
            let unit = ["EX", "PX", "PXAT", "KEEPTTL"][how as usize];
            match unit {
                "KEEPTTL" => argv(&["SET", &k, &v, "KEEPTTL"]),
                "PXAT" => argv(&["SET", &k, &v, "PXAT", &format!("abs{t}")]),
                _ => argv(&["SET", &k, &v, unit, &t.to_string()]),
            }
        }),
        (typed("s"), val()).prop_map(|(k, v)| argv(&["SET", &k, &v, "NX", "GET"])),
        (typed("s"), val(), ttl.clone()).prop_map(|(k, v, t)| argv(&[
            "SETEX",
            &k,
            &t.to_string(),
            &v
        ])),
        (typed("s"), val(), ttl.clone()).prop_map(|(k, v, t)| argv(&[
            "PSETEX",
            &k,
            &(t * 10).to_string(),
            &v
        ])),
        (typed("s"), ttl.clone(), 0..3u8).prop_map(|(k, t, how)| match how {
            0 => argv(&["GETEX", &k, "EX", &t.to_string()]),
            1 => argv(&["GETEX", &k, "PERSIST"]),
            _ => argv(&["GETEX", &k, "PXAT", "abs-5"]),
        }),
        typed("s").prop_map(|k| argv(&["GETDEL", &k])),
        typed("s").prop_map(|k| argv(&["GET", &k])),
        typed("s").prop_map(|k| argv(&["INCR", &k])),
        (
            typed("s"),
            prop_oneof![Just("0.1"), Just("1.5e3"), Just("-3")]
        )
            .prop_map(|(k, d)| argv(&["INCRBYFLOAT", &k, d])),
        (typed("s"), val()).prop_map(|(k, v)| argv(&["APPEND", &k, &v])),
        (typed("s"), 0..4u8, val()).prop_map(|(k, o, v)| argv(&[
            "SETRANGE",
            &k,
            &o.to_string(),
            &v
        ])),
        (typed("s"), val(), typed("s"), val())
            .prop_map(|(a, x, b, y)| argv(&["MSET", &a, &x, &b, &y])),
        key().prop_map(|k| argv(&["DEL", &k])),
        (key(), key()).prop_map(|(a, b)| argv(&["RENAME", &a, &b])),
        (key(), key()).prop_map(|(a, b)| argv(&["COPY", &a, &b, "REPLACE"])),
        (key(), ttl.clone(), 0..3u8).prop_map(|(k, t, how)| match how {
            0 => argv(&["EXPIRE", &k, &t.to_string()]),
            1 => argv(&["PEXPIRE", &k, &(t * 10).to_string(), "GT"]),
            _ => argv(&["EXPIRE", &k, "-1"]),
        }),
        (key(), ttl.clone()).prop_map(|(k, t)| argv(&["PEXPIREAT", &k, &format!("abs{t}")])),
        key().prop_map(|k| argv(&["PERSIST", &k])),
        (typed("l"), val()).prop_map(|(k, v)| argv(&["LPUSH", &k, &v])),
        typed("l").prop_map(|k| argv(&["RPOP", &k])),
        (typed("l"), typed("l")).prop_map(|(a, b)| argv(&["LMOVE", &a, &b, "LEFT", "RIGHT"])),
        typed("l").prop_map(|k| argv(&["LTRIM", &k, "0", "2"])),
        (typed("h"), val(), val()).prop_map(|(k, f, v)| argv(&["HSET", &k, &f, &v])),
        (typed("h"), val()).prop_map(|(k, f)| argv(&["HDEL", &k, &f])),
        (typed("h"), val()).prop_map(|(k, f)| argv(&["HINCRBY", &k, &f, "3"])),
        (typed("h"), val(), prop_oneof![Just("0.1"), Just("2.25")]).prop_map(|(k, f, d)| argv(&[
            "HINCRBYFLOAT",
            &k,
            &f,
            d
        ])),
        (typed("t"), 0..10u8, 0..10u8, 0..10u8).prop_map(|(k, a, b, c)| argv(&[
            "SADD",
            &k,
            &format!("m{a}"),
            &format!("m{b}"),
            &format!("m{c}")
        ])),
        (typed("t"), val()).prop_map(|(k, m)| argv(&["SREM", &k, &m])),
        (typed("t"), 0..4u8).prop_map(|(k, n)| if n == 0 {
            argv(&["SPOP", &k])
        } else {
            argv(&["SPOP", &k, &n.to_string()])
        }),
        (typed("t"), typed("t"), val()).prop_map(|(a, b, m)| argv(&["SMOVE", &a, &b, &m])),
        (typed("t"), typed("t"), typed("t")).prop_map(|(d, a, b)| argv(&[
            "SUNIONSTORE",
            &d,
            &a,
            &b
        ])),
        (typed("z"), -5..5i64, val()).prop_map(|(k, s, m)| argv(&["ZADD", &k, &s.to_string(), &m])),
        (typed("z"), val()).prop_map(|(k, m)| argv(&["ZINCRBY", &k, "1.5", &m])),
        typed("z").prop_map(|k| argv(&["ZPOPMIN", &k])),
        prop_oneof![
            (typed("s"), 0..64u64, 0..2u8).prop_map(|(k, o, b)| argv(&[
                "SETBIT",
                &k,
                &o.to_string(),
                &b.to_string()
            ])),
            (typed("s"), typed("s"), typed("s"))
                .prop_map(|(d, a, b)| argv(&["BITOP", "OR", &d, &a, &b])),
            (typed("s"), 0..3u8).prop_map(|(k, o)| argv(&[
                "BITFIELD",
                &k,
                "OVERFLOW",
                "SAT",
                "INCRBY",
                "i5",
                &format!("#{o}"),
                "7"
            ])),
            (typed("p"), val()).prop_map(|(k, v)| argv(&["PFADD", &k, &v])),
            (typed("p"), typed("p"), typed("p"))
                .prop_map(|(d, a, b)| argv(&["PFMERGE", &d, &a, &b])),
            (typed("z"), -50..50i64, -50..50i64, val()).prop_map(|(k, lon, lat, m)| argv(&[
                "GEOADD",
                &k,
                &format!("{lon}.25"),
                &format!("{lat}.5"),
                &m
            ])),
            (typed("z"), typed("z")).prop_map(|(d, s)| argv(&[
                "GEOSEARCHSTORE",
                &d,
                &s,
                "FROMLONLAT",
                "0",
                "0",
                "BYRADIUS",
                "3000",
                "km",
                "STOREDIST"
            ])),
            (typed("z"), typed("z"), typed("t")).prop_map(|(d, a, b)| argv(&[
                "ZUNIONSTORE",
                &d,
                "2",
                &a,
                &b,
                "WEIGHTS",
                "0.1",
                "3"
            ])),
            (typed("z"), typed("z"), typed("z")).prop_map(|(d, a, b)| argv(&[
                "ZINTERSTORE",
                &d,
                "2",
                &a,
                &b,
                "AGGREGATE",
                "MAX"
            ])),
            (typed("z"), typed("z"), typed("z")).prop_map(|(d, a, b)| argv(&[
                "ZDIFFSTORE",
                &d,
                "2",
                &a,
                &b
            ])),
            (typed("z"), typed("z"))
                .prop_map(|(a, b)| argv(&["ZMPOP", "2", &a, &b, "MAX", "COUNT", "2"])),
            (typed("l"), typed("l")).prop_map(|(a, b)| argv(&["LMPOP", "2", &a, &b, "LEFT"])),
            (typed("l"), typed("l")).prop_map(|(s, d)| argv(&["SORT", &s, "ALPHA", "STORE", &d])),
            (typed("t"), typed("l"))
                .prop_map(|(s, d)| argv(&["SORT", &s, "BY", "nosort", "STORE", &d])),
        ],
        // Streams have many commands that change state in clock-dependent ways: weigh them up.
        stream_command(),
        stream_command(),
        stream_command(),
    ]
}

/// Stream commands (keys `x0`..`x2`): generated ids, approximate trims, consumer groups, and
/// reads and claims that change pending entries at the current time.
fn stream_command() -> impl Strategy<Value = Vec<String>> {
    let group = prop_oneof![Just("g1"), Just("g2")];
    let consumer = prop_oneof![Just("c1"), Just("c2"), Just("c3")];
    let id = (0..6u64, 0..3u64).prop_map(|(ms, seq)| format!("{ms}-{seq}"));
    prop_oneof![
        4 => (typed("x"), val()).prop_map(|(k, v)| argv(&["XADD", &k, "*", "f", &v])),
        1 => (typed("x"), 1..4u8).prop_map(|(k, n)| argv(&[
            "XADD", &k, "MAXLEN", "~", &n.to_string(), "*", "f", "v"
        ])),
        1 => (typed("x"), id.clone()).prop_map(|(k, i)| argv(&["XADD", &k, &i, "a", "b"])),
        1 => (typed("x"), 0..4u8).prop_map(|(k, n)| argv(&["XTRIM", &k, "MAXLEN", &n.to_string()])),
        1 => (typed("x"), id.clone()).prop_map(|(k, i)| argv(&["XTRIM", &k, "MINID", "~", &i])),
        1 => (typed("x"), id.clone()).prop_map(|(k, i)| argv(&["XDEL", &k, &i])),
        1 => (typed("x"), group.clone()).prop_map(|(k, g)| argv(&[
            "XGROUP", "CREATE", &k, g, "0", "MKSTREAM"
        ])),
        1 => (typed("x"), group.clone()).prop_map(|(k, g)| argv(&["XGROUP", "DESTROY", &k, g])),
        1 => (typed("x"), group.clone(), consumer.clone()).prop_map(|(k, g, c)| argv(&[
            "XGROUP", "DELCONSUMER", &k, g, c
        ])),
        1 => (typed("x"), group.clone(), consumer.clone()).prop_map(|(k, g, c)| argv(&[
            "XGROUP", "CREATECONSUMER", &k, g, c
        ])),
        1 => (typed("x"), group.clone(), id.clone()).prop_map(|(k, g, i)| argv(&[
            "XGROUP", "SETID", &k, g, &i
        ])),
        3 => (typed("x"), group.clone(), consumer.clone(), 1..3u8).prop_map(|(k, g, c, n)| argv(&[
            "XREADGROUP", "GROUP", g, c, "COUNT", &n.to_string(), "STREAMS", &k, ">"
        ])),
        1 => (typed("x"), group.clone(), consumer.clone()).prop_map(|(k, g, c)| argv(&[
            "XREADGROUP", "GROUP", g, c, "NOACK", "STREAMS", &k, ">"
        ])),
        1 => (typed("x"), group.clone(), consumer.clone()).prop_map(|(k, g, c)| argv(&[
            "XREADGROUP", "GROUP", g, c, "STREAMS", &k, "0"
        ])),
        1 => (typed("x"), group.clone(), id.clone()).prop_map(|(k, g, i)| argv(&["XACK", &k, g, &i])),
        1 => (typed("x"), group.clone(), consumer.clone(), id.clone()).prop_map(|(k, g, c, i)| argv(&[
            "XCLAIM", &k, g, c, "5", &i
        ])),
        1 => (typed("x"), group.clone(), consumer.clone(), id.clone()).prop_map(|(k, g, c, i)| argv(&[
            "XCLAIM", &k, g, c, "0", &i, "JUSTID"
        ])),
        1 => (typed("x"), group, consumer).prop_map(|(k, g, c)| argv(&[
            "XAUTOCLAIM", &k, g, c, "10", "0", "COUNT", "2"
        ])),
        1 => (typed("x"), 6..9u64).prop_map(|(k, ms)| argv(&[
            "XSETID", &k, &format!("{ms}-0"), "ENTRIESADDED", "100", "MAXDELETEDID", "1-0"
        ])),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        200 => command().prop_map(Op::Cmd),
        20 => proptest::collection::vec(command(), 1..4).prop_map(Op::Multi),
        30 => (1..40u64).prop_map(Op::Advance),
        10 => Just(Op::ActiveExpire),
        1 => Just(Op::Cmd(argv(&["FLUSHDB"]))),
    ]
}

/// Turns `absN` into the absolute time now + N ms (N may be negative).
fn resolve(argv: &[String], now: u64) -> Vec<String> {
    argv.iter()
        .map(|a| match a.strip_prefix("abs") {
            Some(n) => (now as i64 + n.parse::<i64>().unwrap_or(0)).to_string(),
            None => a.clone(),
        })
        .collect()
}

/// Commands an effect may be: none depends on the clock, randomness or float formatting.
const DETERMINISTIC: &[&str] = &[
    "SET",
    "DEL",
    "PEXPIREAT",
    "PERSIST",
    "INCR",
    "APPEND",
    "SETRANGE",
    "MSET",
    "RENAME",
    "COPY",
    "LPUSH",
    "RPOP",
    "LMOVE",
    "LTRIM",
    "HSET",
    "HDEL",
    "HINCRBY",
    "SADD",
    "SREM",
    "SMOVE",
    "SUNIONSTORE",
    "ZADD",
    "ZINCRBY",
    "ZPOPMIN",
    "FLUSHDB",
    "SETBIT",
    "BITOP",
    "BITFIELD",
    "PFADD",
    "PFMERGE",
    "GEOADD",
    "GEOSEARCHSTORE",
    "ZUNIONSTORE",
    "ZINTERSTORE",
    "ZDIFFSTORE",
    "ZMPOP",
    "LMPOP",
    "SORT",
    "RESTORE",
    "XADD",
    "XTRIM",
    "XDEL",
    "XGROUP",
    "XACK",
    "XCLAIM",
    "XSETID",
];

/// Runs `ops` with a recorder subscribed; returns the recorded effects.
fn run_recorded(t: &mut TestDb, ops: &[Op]) -> Vec<(u64, Vec<Vec<Vec<u8>>>)> {
    let recorder = Arc::new(EffectRecorder::default());
    t.keyspace.lock().subscribe(recorder.clone());
    for op in ops {
        match op {
            Op::Cmd(a) => {
                t.run(&resolve(a, t.now));
            }
            Op::Multi(cmds) => {
                let cmds: Vec<Vec<String>> = cmds.iter().map(|a| resolve(a, t.now)).collect();
                t.run_transaction(&cmds);
            }
            Op::Advance(ms) => t.now += ms,
            Op::ActiveExpire => {
                t.keyspace.lock().expire_cycle(t.now, 1000);
            }
        }
    }
    recorder.take()
}

fn replay(batches: &[(u64, Vec<Vec<Vec<u8>>>)]) -> Keyspace {
    let ks = Keyspace::new();
    let mut r = Replayer::new();
    {
        let mut db = ks.lock();
        for (now, effects) in batches {
            r.apply_all(&mut db, &Effects::new(*now, effects))
                .unwrap_or_else(|e| panic!("{e} in {effects:?}"));
        }
    }
    ks
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn replaying_effects_reproduces_the_keyspace(ops in proptest::collection::vec(op(), 1..120)) {
        let mut t = TestDb::new();
        let batches = run_recorded(&mut t, &ops);
        for (_, effects) in &batches {
            prop_assert!(!effects.is_empty(), "empty publication");
            for e in effects {
                let name = String::from_utf8_lossy(&e[0]).to_ascii_uppercase();
                prop_assert!(DETERMINISTIC.contains(&name.as_str()), "effect {:?}", e);
            }
        }
        let replayed = replay(&batches);
        let original = t.keyspace.lock();
        let copy = replayed.lock();
        prop_assert_eq!(copy.len(), original.len());
        prop_assert_eq!(copy.digest(), original.digest(), "ops {:?} effects {:?}", ops, batches);
        prop_assert_eq!(copy.recompute_digest(), copy.digest().clone());
    }
}

#[test]
fn random_and_clock_commands_journal_what_they_did() {
    let mut t = TestDb::new();
    let now = t.now;
    let ops = vec![
        Op::Cmd(argv(&["SADD", "s", "a", "b", "c"])),
        Op::Cmd(argv(&["SPOP", "s", "2"])),
        Op::Cmd(argv(&["SET", "k", "v", "EX", "10", "NX"])),
        Op::Cmd(argv(&["EXPIRE", "k", "20"])),
        Op::Cmd(argv(&["INCRBYFLOAT", "f", "0.1"])),
        Op::Cmd(argv(&["INCRBYFLOAT", "f", "0.2"])),
        Op::Cmd(argv(&["SET", "k", "v", "NX"])),
        Op::Cmd(argv(&["GET", "missing"])),
    ];
    let batches = run_recorded(&mut t, &ops);
    let texts: Vec<String> = batches
        .iter()
        .flat_map(|(_, e)| e.iter())
        .map(|a| {
            a.iter()
                .map(|x| String::from_utf8_lossy(x).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(texts[0], "SADD s a b c");
    assert!(texts[1].starts_with("SREM s "), "{}", texts[1]);
    assert_eq!(texts[1].split(' ').count(), 4, "two members popped");
    assert_eq!(texts[2], format!("SET k v PXAT {}", now + 10_000));
    assert_eq!(texts[3], format!("PEXPIREAT k {}", now + 20_000));
    assert_eq!(texts[4], "SET f 0.1 KEEPTTL");
    assert_eq!(texts[5], "SET f 0.3 KEEPTTL");
    // SET NX on an existing key changed nothing; GET of a missing key neither.
    assert_eq!(texts.len(), 6, "{texts:?}");
}

#[test]
fn stream_commands_journal_explicit_ids_and_claims() {
    let mut t = TestDb::new();
    let now = t.now;
    let ops = vec![
        Op::Cmd(argv(&["XADD", "x", "*", "f", "v"])),
        Op::Cmd(argv(&["XADD", "x", "MAXLEN", "~", "5", "*", "f", "w"])),
        Op::Cmd(argv(&["XGROUP", "CREATE", "x", "g", "0"])),
        Op::Advance(7),
        Op::Cmd(argv(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "COUNT",
            "1",
            "STREAMS",
            "x",
            ">",
        ])),
        Op::Cmd(argv(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "STREAMS",
            "x",
            "9-0",
        ])),
    ];
    let batches = run_recorded(&mut t, &ops);
    let texts: Vec<String> = batches
        .iter()
        .flat_map(|(_, e)| e.iter())
        .map(|a| {
            a.iter()
                .map(|x| String::from_utf8_lossy(x).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let later = now + 7;
    assert_eq!(
        texts,
        vec![
            format!("XADD x {now}-0 f v"),
            format!("XADD x MAXLEN = 2 {now}-1 f w"),
            "XGROUP CREATE x g 0".to_string(),
            "XGROUP CREATECONSUMER x g c".to_string(),
            format!("XCLAIM x g c 0 {now}-0 TIME {later} RETRYCOUNT 1 FORCE JUSTID LASTID {now}-0"),
            format!("XGROUP SETID x g {now}-0 ENTRIESREAD 1"),
            // Reading the consumer's history delivers the entry again: its count goes up.
            format!("XCLAIM x g c 0 {now}-0 TIME {later} RETRYCOUNT 2 FORCE JUSTID LASTID {now}-0"),
        ]
    );
}

#[test]
fn expiry_is_journaled_as_del_before_the_command_that_saw_it() {
    let mut t = TestDb::new();
    let ops = vec![
        Op::Cmd(argv(&["SET", "k", "v", "PX", "5"])),
        Op::Advance(10),
        Op::Cmd(argv(&["APPEND", "k", "x"])),
        Op::Cmd(argv(&["SET", "j", "v", "PX", "5"])),
        Op::Advance(10),
        Op::ActiveExpire,
    ];
    let batches = run_recorded(&mut t, &ops);
    let names: Vec<Vec<String>> = batches
        .iter()
        .map(|(_, e)| {
            e.iter()
                .map(|a| String::from_utf8_lossy(&a[0]).into_owned())
                .collect()
        })
        .collect();
    assert_eq!(
        names,
        vec![
            vec!["SET".to_string()],
            vec!["DEL".into(), "APPEND".into()],
            vec!["SET".into()],
            vec!["DEL".into()],
        ]
    );
}

#[test]
fn a_transaction_is_one_publication() {
    let mut t = TestDb::new();
    let ops = vec![Op::Multi(vec![
        argv(&["SET", "a", "1"]),
        argv(&["INCR", "a"]),
        argv(&["GET", "a"]),
        argv(&["SPOP", "nothing"]),
    ])];
    let batches = run_recorded(&mut t, &ops);
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].1.len(), 2);
}
