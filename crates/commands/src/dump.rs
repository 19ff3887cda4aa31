//! DUMP and RESTORE with Redis's payloads (crate `ferrite-rdb`): a value dumped here restores in
//! redis-server and the reverse, for every type and every encoding Redis 7.x writes.

use ferrite_protocol::{Args, ErrorReply};
use ferrite_rdb::dump::PayloadError;
use ferrite_storage::stream::StreamItem;
use ferrite_storage::{
    HashValue, ListValue, SetValue, Slot, StreamId, StreamValue, Value, ValueRef, ZSetValue,
};

use crate::ctx::Ctx;
use crate::spec::flags::*;
use crate::spec::{CmdResult, CommandSpec, Creates, KEY1};

crate::command_family!("generic");

pub const COMMANDS: &[CommandSpec] = &[
    cmd(
        "dump",
        2,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Returns a serialized representation of the value stored at a key.",
        dump,
    ),
    cmd(
        "restore",
        -4,
        WRITE | DENYOOM,
        KEY1,
        Creates::FirstKey,
        "Creates a key from the serialized representation of a value.",
        restore,
    ),
];

/// A stored value as RDB elements.
pub fn to_rdb(v: ValueRef<'_>) -> ferrite_rdb::Value {
    let own = |b: &[u8]| b.to_vec();
    match v {
        ValueRef::Str(s) => ferrite_rdb::Value::String(s.as_bytes().to_vec()),
        ValueRef::List(l) => ferrite_rdb::Value::List(l.iter().map(own).collect()),
        ValueRef::Set(s) => ferrite_rdb::Value::Set(s.iter().map(own).collect()),
        ValueRef::Hash(h) => {
            ferrite_rdb::Value::Hash(h.iter().map(|(f, v)| (own(f), own(v))).collect())
        }
        ValueRef::ZSet(z) => ferrite_rdb::Value::ZSet(z.iter().map(|(m, s)| (own(m), s)).collect()),
        ValueRef::Stream(x) => ferrite_rdb::Value::Stream(Box::new(stream_to_rdb(x))),
    }
}

fn rdb_id(id: StreamId) -> ferrite_rdb::StreamId {
    ferrite_rdb::StreamId {
        ms: id.ms,
        seq: id.seq,
    }
}

fn our_id(id: ferrite_rdb::StreamId) -> StreamId {
    StreamId::new(id.ms, id.seq)
}

fn stream_to_rdb(x: &StreamValue) -> ferrite_rdb::Stream {
    let own = |b: &[u8]| b.to_vec();
    ferrite_rdb::Stream {
        entries: x
            .range(StreamId::MIN, StreamId::MAX)
            .map(|e| ferrite_rdb::StreamEntry {
                id: rdb_id(e.id()),
                fields: e.fields().map(|(f, v)| (own(f), own(v))).collect(),
            })
            .collect(),
        last_id: rdb_id(x.last_id()),
        first_id: rdb_id(x.first_id()),
        max_deleted_id: rdb_id(x.max_deleted_id()),
        entries_added: x.entries_added(),
        groups: x
            .groups()
            .map(|(name, g)| ferrite_rdb::StreamGroup {
                name: own(name),
                last_id: rdb_id(g.last_id()),
                entries_read: g.entries_read_raw(),
                pending: g
                    .pending_range(StreamId::MIN, StreamId::MAX)
                    .map(|(id, p)| ferrite_rdb::StreamPending {
                        id: rdb_id(id),
                        delivery_time: p.delivery_time(),
                        delivery_count: p.delivery_count(),
                        consumer: own(p.consumer()),
                    })
                    .collect(),
                consumers: g
                    .consumers()
                    .map(|(c, v)| ferrite_rdb::StreamConsumer {
                        name: own(c),
                        seen_time: v.seen_time(),
                        active_time: v.active_time(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// A stream read from RDB, rebuilt item by item (the reader checked its consistency; anything
/// the stream still refuses is reported).
fn stream_from_rdb(s: ferrite_rdb::Stream) -> Result<StreamValue, &'static str> {
    let mut x = StreamValue::default();
    for e in &s.entries {
        let fields = e
            .fields
            .iter()
            .flat_map(|(f, v)| [&f[..], &v[..]])
            .collect();
        x.apply_item(&StreamItem::Entry {
            id: our_id(e.id),
            fields,
        })?;
    }
    for g in &s.groups {
        x.apply_item(&StreamItem::Group {
            name: &g.name,
            last_id: our_id(g.last_id),
            entries_read: g.entries_read.max(-1),
        })?;
        for c in &g.consumers {
            x.apply_item(&StreamItem::Consumer {
                group: &g.name,
                name: &c.name,
                seen_time: c.seen_time,
                active_time: c.active_time,
            })?;
        }
        for p in &g.pending {
            x.apply_item(&StreamItem::Pending {
                group: &g.name,
                id: our_id(p.id),
                consumer: &p.consumer,
                delivery_time: p.delivery_time,
                delivery_count: p.delivery_count,
            })?;
        }
    }
    x.apply_item(&StreamItem::Meta {
        last_id: our_id(s.last_id),
        max_deleted: our_id(s.max_deleted_id),
        entries_added: s.entries_added,
    })?;
    Ok(x)
}

/// RDB elements as a stored value (Err for a stream that contradicts itself).
pub fn from_rdb(v: ferrite_rdb::Value) -> Result<Value, &'static str> {
    match v {
        ferrite_rdb::Value::String(s) => Ok(Value::string(s)),
        ferrite_rdb::Value::List(items) => Ok(Value::List(ListValue::from_elements(&items))),
        ferrite_rdb::Value::Set(items) => Ok(Value::Set(SetValue::from_members(&items))),
        ferrite_rdb::Value::Hash(items) => Ok(Value::Hash(HashValue::from_pairs(&items))),
        ferrite_rdb::Value::ZSet(items) => Ok(Value::ZSet(ZSetValue::from_scored(&items))),
        ferrite_rdb::Value::Stream(s) => Ok(Value::Stream(Box::new(stream_from_rdb(*s)?))),
    }
}

fn dump(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    match ctx.db.get(args.get(1), ctx.now) {
        Some(e) => {
            let payload = ferrite_rdb::dump::dump(&to_rdb(e.value()));
            ctx.w.bulk(&payload);
        }
        None => ctx.w.null(),
    }
    Ok(())
}

fn restore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (mut replace, mut absttl) = (false, false);
    let (mut idle, mut freq) = (None::<i64>, None::<i64>);
    let mut j = 4;
    while j < args.len() {
        let more = args.len() - j - 1;
        match args.get(j).to_ascii_uppercase().as_slice() {
            b"REPLACE" => replace = true,
            b"ABSTTL" => absttl = true,
            b"IDLETIME" if more >= 1 && freq.is_none() => {
                let n = args.int(j + 1)?;
                if n < 0 {
                    return Err(ErrorReply::err("Invalid IDLETIME value, must be >= 0"));
                }
                idle = Some(n);
                j += 1;
            }
            b"FREQ" if more >= 1 && idle.is_none() => {
                let n = args.int(j + 1)?;
                if !(0..=255).contains(&n) {
                    return Err(ErrorReply::err(
                        "Invalid FREQ value, must be >= 0 and <= 255",
                    ));
                }
                freq = Some(n);
                j += 1;
            }
            _ => return Err(ErrorReply::syntax()),
        }
        j += 1;
    }
    let (key, now) = (args.get(1), ctx.now);
    if !replace && ctx.db.contains(key, now) {
        return Err(ErrorReply::coded(
            "BUSYKEY",
            "Target key name already exists.",
        ));
    }
    let ttl = args.int(2)?;
    if ttl < 0 {
        return Err(ErrorReply::err("Invalid TTL value, must be >= 0"));
    }
    let value = match ferrite_rdb::dump::restore(args.get(3), ctx.max_bulk as u64) {
        Ok(v) => from_rdb(v).map_err(|_| ErrorReply::err("Bad data format"))?,
        Err(PayloadError::Footer) => {
            return Err(ErrorReply::err(
                "DUMP payload version or checksum are wrong",
            ));
        }
        Err(PayloadError::Value(_)) => return Err(ErrorReply::err("Bad data format")),
    };
    // Ferrite keeps no per-key LRU clock or LFU counter: IDLETIME and FREQ are checked and
    // accepted, as a restore into a server that evicts by neither.
    let _ = (idle, freq);
    let expire_at = match ttl {
        0 => None,
        t if absttl => Some(t as u64),
        t => Some((now as i64).saturating_add(t) as u64),
    };
    let expired = expire_at.is_some_and(|t| t <= now);
    let deleted = if replace {
        match ctx.db.remove(key, now) {
            Some(old) => {
                ctx.garbage.defer(old.value().elements(), old);
                true
            }
            None => false,
        }
    } else {
        false
    };
    if expired {
        // Already expired: nothing is created; the only change is the deleted key.
        if deleted {
            ctx.propagate(&[b"DEL", key]);
        }
        ctx.w.ok();
        return Ok(());
    }
    match ctx.db.entry(key, now) {
        Slot::Vacant(v) => v.insert(value, expire_at),
        Slot::Occupied(mut o) => o.replace(value, expire_at),
    }
    // A relative TTL depends on the clock: the effect carries the absolute time.
    if let (Some(at), false) = (expire_at, absttl) {
        let at = at.to_string();
        let mut argv: Vec<&[u8]> = vec![b"RESTORE", key, at.as_bytes(), args.get(3), b"ABSTTL"];
        if replace {
            argv.push(b"REPLACE");
        }
        ctx.propagate(&argv);
    }
    ctx.w.ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::testing::TestDb;

    #[test]
    fn dump_restore_every_type() {
        let mut t = TestDb::new();
        t.run(&["SET", "s", "hello"]);
        t.run(&["RPUSH", "l", "a", "b", "1"]);
        t.run(&["SADD", "st", "x", "y", "7"]);
        t.run(&["HSET", "h", "f", "v", "g", "12"]);
        t.run(&["ZADD", "z", "1.5", "a", "-inf", "b"]);
        for key in ["s", "l", "st", "h", "z"] {
            let payload = t.run_bytes(&["DUMP", key]);
            // $<len>\r\n<payload>\r\n
            let start = payload.iter().position(|&b| b == b'\n').unwrap() + 1;
            let body = payload[start..payload.len() - 2].to_vec();
            let copy = format!("{key}-copy");
            assert_eq!(
                t.run_bytes(&[
                    b"RESTORE".to_vec(),
                    copy.clone().into_bytes(),
                    b"0".to_vec(),
                    body.clone()
                ]),
                b"+OK\r\n"
            );
            assert_eq!(t.run(&["DUMP", &copy]), t.run(&["DUMP", key]));
            assert_eq!(
                t.run_bytes(&[
                    b"RESTORE".to_vec(),
                    copy.clone().into_bytes(),
                    b"0".to_vec(),
                    body.clone()
                ]),
                b"-BUSYKEY Target key name already exists.\r\n"
            );
            assert_eq!(
                t.run_bytes(&[
                    b"RESTORE".to_vec(),
                    copy.into_bytes(),
                    b"1000".to_vec(),
                    body,
                    b"REPLACE".to_vec()
                ]),
                b"+OK\r\n"
            );
        }
        t.check(&[
            (&["PTTL", "z-copy"], ":1000\r\n"),
            (&["DUMP", "none"], "$-1\r\n"),
            (
                &["RESTORE", "x", "0", "garbage"],
                "-ERR DUMP payload version or checksum are wrong\r\n",
            ),
            (
                &["RESTORE", "s", "-1", "x"],
                "-BUSYKEY Target key name already exists.\r\n",
            ),
            (
                &["RESTORE", "x", "-1", "x"],
                "-ERR Invalid TTL value, must be >= 0\r\n",
            ),
            (
                &["RESTORE", "x", "0", "x", "FREQ", "300"],
                "-ERR Invalid FREQ value, must be >= 0 and <= 255\r\n",
            ),
            (
                &["RESTORE", "x", "0", "x", "IDLETIME", "-1"],
                "-ERR Invalid IDLETIME value, must be >= 0\r\n",
            ),
            (
                &["RESTORE", "x", "0", "x", "IDLETIME", "1", "FREQ", "1"],
                "-ERR syntax error\r\n",
            ),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn a_relative_ttl_is_journaled_as_absttl() {
        use std::sync::Arc;
        let mut t = TestDb::new();
        t.run(&["SET", "s", "hello"]);
        let payload = t.run_bytes(&["DUMP", "s"]);
        let start = payload.iter().position(|&b| b == b'\n').unwrap() + 1;
        let body = payload[start..payload.len() - 2].to_vec();
        let recorder = Arc::new(ferrite_storage::EffectRecorder::default());
        t.keyspace.lock().subscribe(recorder.clone());
        let reply = t.run_bytes(&[
            b"RESTORE".to_vec(),
            b"c".to_vec(),
            b"5000".to_vec(),
            body.clone(),
        ]);
        assert_eq!(reply, b"+OK\r\n");
        let batches = recorder.take();
        let effect = &batches[0].1[0];
        let at = (t.now + 5000).to_string().into_bytes();
        assert_eq!(
            effect,
            &vec![
                b"RESTORE".to_vec(),
                b"c".to_vec(),
                at,
                body,
                b"ABSTTL".to_vec()
            ]
        );
    }

    #[test]
    fn restore_with_past_absttl_creates_nothing() {
        let mut t = TestDb::new();
        t.run(&["SET", "s", "hello"]);
        let payload = t.run_bytes(&["DUMP", "s"]);
        let start = payload.iter().position(|&b| b == b'\n').unwrap() + 1;
        let body = payload[start..payload.len() - 2].to_vec();
        assert_eq!(
            t.run_bytes(&[
                b"RESTORE".to_vec(),
                b"s".to_vec(),
                b"1".to_vec(),
                body,
                b"REPLACE".to_vec(),
                b"ABSTTL".to_vec()
            ]),
            b"+OK\r\n"
        );
        assert_eq!(t.run(&["EXISTS", "s"]), ":0\r\n");
    }

    /// Consumers' active-time (Redis 7.2): read from RDB (RESTORE of a 7.2 payload,
    /// STREAM_LISTPACKS_3, -1 = never) and handed back to the writer; Ferrite's own DUMP is
    /// RDB 10 (STREAM_LISTPACKS_2, which Redis 7.0 loads), without it: RESTORE of such a payload
    /// takes the seen time instead, as Redis 7.2 does.
    #[test]
    fn consumers_active_time_through_rdb() {
        use ferrite_rdb::{Stream, StreamConsumer, StreamGroup, StreamId};
        let consumer = |name: &[u8], active_time| StreamConsumer {
            name: name.to_vec(),
            seen_time: 100,
            active_time,
        };
        let rdb = Stream {
            groups: vec![StreamGroup {
                name: b"g".to_vec(),
                last_id: StreamId::default(),
                entries_read: 0,
                pending: Vec::new(),
                consumers: vec![consumer(b"busy", Some(90)), consumer(b"idle", None)],
            }],
            ..Stream::default()
        };
        let v = super::from_rdb(ferrite_rdb::Value::Stream(Box::new(rdb.clone()))).unwrap();
        let ferrite_storage::Value::Stream(s) = &v else {
            panic!("not a stream");
        };
        let g = s.group(b"g").unwrap();
        assert_eq!(g.consumer(b"busy").unwrap().active_time(), Some(90));
        assert_eq!(g.consumer(b"idle").unwrap().active_time(), None);
        let ferrite_rdb::Value::Stream(back) = super::to_rdb(ferrite_storage::ValueRef::Stream(s))
        else {
            panic!("not a stream");
        };
        assert_eq!(back.groups[0].consumers, rdb.groups[0].consumers);

        let mut t = TestDb::new();
        t.run(&["XGROUP", "CREATE", "x", "g", "$", "MKSTREAM"]);
        t.run(&["XGROUP", "CREATECONSUMER", "x", "g", "c"]);
        let payload = t.run_bytes(&["DUMP", "x"]);
        let start = payload.iter().position(|&b| b == b'\n').unwrap() + 1;
        let body = payload[start..payload.len() - 2].to_vec();
        t.now += 1000;
        t.run_bytes(&[b"RESTORE".to_vec(), b"y".to_vec(), b"0".to_vec(), body]);
        let full = t.run(&["XINFO", "STREAM", "y", "FULL"]);
        let seen = (t.now - 1000).to_string();
        assert!(
            full.contains(&format!(
                "seen-time\r\n:{seen}\r\n$11\r\nactive-time\r\n:{seen}\r\n"
            )),
            "{full:?}"
        );
    }
}
