//! The migration wire format, version 2: batches of records carried as one bulk argument of
//! `TENANT.IMPORT.BATCH`.
//!
//! ```text
//! batch   = "FMB1" version:u16 stream:u16 seq:u64 count:u32 record* crc32:u32   (little endian)
//! record  = PUT    0x01 key type:u8 expire_ms:u64 modified_ms:u64 value
//!         | APPEND 0x02 key type:u8 value          (elements added to an existing value)
//!         | DEL    0x03 key
//!         | FLUSH  0x04 stream:u16 parallel:u16    (delete staged keys routed to this stream)
//!         | EFFECT 0x05 key now_ms:u64 n:varint bytes{n}   (version 2: a write's effect on a
//!                                                  large key, its argv, replayed with the
//!                                                  source's clock)
//! key     = bytes
//! value   = ferrite_storage::codec's value layout: string: bytes | list/set: n:varint bytes{n}
//!         | hash: n:varint (bytes bytes){n} | zset: n:varint (bytes score:f64){n}
//!         | stream: n:varint item{n}
//! bytes   = len:varint data
//! ```
//! The CRC covers everything before it. A value too large for one record is sent as a PUT with
//! its first chunk followed by APPENDs, so the target never holds two copies of a huge value;
//! once it is there, what changes it travels as EFFECT records (`super::delta`). Records of one
//! key always travel on the same stream ([`route`]), which keeps their order. Values are encoded
//! and decoded by `ferrite_storage::codec`, the same layout persistence uses.

use ferrite_storage::codec::{self, CodecError, encode_value, put_bytes, put_varint};
use ferrite_storage::stream::{StreamItem, encode_item};
use ferrite_storage::{Entry, OwnedArgv, Value, ValueRef, ValueType};

/// Version this build speaks. A peer with another version is refused with both numbers.
/// Version 2 added EFFECT records; version 3 stream consumers with Redis 7.2's active-time (a
/// value item a version 2 target cannot read: refused at the start rather than mid-transfer).
pub const WIRE_VERSION: u16 = 3;
const MAGIC: &[u8; 4] = b"FMB1";
const HEADER: usize = 4 + 2 + 2 + 8 + 4;

const PUT: u8 = 1;
const APPEND: u8 = 2;
const DEL: u8 = 3;
const FLUSH: u8 = 4;
const EFFECT: u8 = 5;

/// The stream a key's records travel on.
pub fn route(key: &[u8], parallel: usize) -> usize {
    crc32fast::hash(key) as usize % parallel.max(1)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("batch checksum mismatch (expected {expected:08x}, computed {computed:08x})")]
    Checksum { expected: u32, computed: u32 },
    #[error(
        "incompatible migration wire format: batch speaks v{theirs}, this server speaks v{ours}"
    )]
    Version { theirs: u16, ours: u16 },
    #[error("malformed batch: {0}")]
    Malformed(&'static str),
}

/// Builds one batch.
pub struct BatchWriter {
    buf: Vec<u8>,
    records: u32,
    /// Number of keys (PUT records) in the batch, for progress accounting.
    pub keys: u32,
}

impl Default for BatchWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchWriter {
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.resize(HEADER, 0);
        BatchWriter {
            buf,
            records: 0,
            keys: 0,
        }
    }

    pub fn records(&self) -> u32 {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// A whole key.
    pub fn put(&mut self, key: &[u8], e: &Entry) {
        self.put_head(
            key,
            e.value_type(),
            e.expire_at().unwrap_or(0),
            e.modified_ms(),
        );
        encode_value(&mut self.buf, e.value());
    }

    /// A key replaced by a partial value: the first chunk of a large value.
    pub fn put_partial(
        &mut self,
        key: &[u8],
        ty: ValueType,
        expire: u64,
        modified: u64,
        chunk: &Chunk,
    ) {
        self.put_head(key, ty, expire, modified);
        chunk.encode(&mut self.buf);
    }

    fn put_head(&mut self, key: &[u8], ty: ValueType, expire: u64, modified: u64) {
        self.buf.push(PUT);
        put_bytes(&mut self.buf, key);
        self.buf.push(ty.tag() as u8);
        self.buf.extend_from_slice(&expire.to_le_bytes());
        self.buf.extend_from_slice(&modified.to_le_bytes());
        self.records += 1;
        self.keys += 1;
    }

    /// More elements of a value started with [`BatchWriter::put_partial`].
    pub fn append(&mut self, key: &[u8], ty: ValueType, chunk: &Chunk) {
        self.buf.push(APPEND);
        put_bytes(&mut self.buf, key);
        self.buf.push(ty.tag() as u8);
        chunk.encode(&mut self.buf);
        self.records += 1;
    }

    pub fn del(&mut self, key: &[u8]) {
        self.buf.push(DEL);
        put_bytes(&mut self.buf, key);
        self.records += 1;
        self.keys += 1;
    }

    /// The effects that changed `key` since it was last shipped, in order, each with the clock
    /// it ran with. Counted as one key.
    pub fn effects(&mut self, key: &[u8], list: &[(u64, OwnedArgv)]) {
        for (now, argv) in list {
            self.buf.push(EFFECT);
            put_bytes(&mut self.buf, key);
            self.buf.extend_from_slice(&now.to_le_bytes());
            put_varint(&mut self.buf, argv.len() as u64);
            for a in argv {
                put_bytes(&mut self.buf, a);
            }
            self.records += 1;
        }
        if !list.is_empty() {
            self.keys += 1;
        }
    }

    pub fn flush(&mut self, stream: u16, parallel: u16) {
        self.buf.push(FLUSH);
        self.buf.extend_from_slice(&stream.to_le_bytes());
        self.buf.extend_from_slice(&parallel.to_le_bytes());
        self.records += 1;
    }

    /// Seals the batch for `stream` with sequence number `seq`.
    pub fn finish(mut self, stream: u16, seq: u64) -> Vec<u8> {
        self.buf[0..4].copy_from_slice(MAGIC);
        self.buf[4..6].copy_from_slice(&WIRE_VERSION.to_le_bytes());
        self.buf[6..8].copy_from_slice(&stream.to_le_bytes());
        self.buf[8..16].copy_from_slice(&seq.to_le_bytes());
        self.buf[16..20].copy_from_slice(&self.records.to_le_bytes());
        let crc = crc32fast::hash(&self.buf);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.buf
    }
}

/// Some elements of a value, encoded for chunked sending (see `source::copy_chunks`).
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    /// Part of a string.
    Bytes(Vec<u8>),
    /// Elements already encoded in the value layout (`n:varint element{n}`; for streams a chunk
    /// that stands alone, see `StreamValue::encode_chunk`), and how many elements (positions of
    /// a stream) they cover.
    Encoded(Vec<u8>, usize),
}

impl Chunk {
    fn encode(&self, buf: &mut Vec<u8>) {
        match self {
            Chunk::Bytes(b) => put_bytes(buf, b),
            Chunk::Encoded(b, _) => buf.extend_from_slice(b),
        }
    }

    /// Number of elements (bytes for strings).
    pub fn len(&self) -> usize {
        match self {
            Chunk::Bytes(b) => b.len(),
            Chunk::Encoded(_, n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A canonical encoding of a value, independent of the order a server keeps elements in: used to
/// compare sampled keys between servers, value by value.
pub fn canonical_value(v: ValueRef<'_>, expire: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    buf.push(v.value_type().tag() as u8);
    buf.extend_from_slice(&expire.to_le_bytes());
    match v {
        ValueRef::Str(_) | ValueRef::List(_) => encode_value(&mut buf, v),
        ValueRef::Hash(h) => {
            let mut items: Vec<_> = h.iter().collect();
            items.sort_unstable();
            put_varint(&mut buf, items.len() as u64);
            for (f, val) in items {
                put_bytes(&mut buf, f);
                put_bytes(&mut buf, val);
            }
        }
        ValueRef::Set(s) => {
            let mut items: Vec<_> = s.iter().collect();
            items.sort_unstable();
            put_varint(&mut buf, items.len() as u64);
            for m in items {
                put_bytes(&mut buf, m);
            }
        }
        // Sorted sets iterate in (score, member) order on every server already.
        ValueRef::ZSet(_) => encode_value(&mut buf, v),
        // Streams iterate in id and name order; consumers' seen and active times are access
        // metadata (not digested), so they are left out.
        ValueRef::Stream(x) => {
            put_varint(&mut buf, x.item_count());
            for item in x.items() {
                let item = match item {
                    StreamItem::Consumer { group, name, .. } => StreamItem::Consumer {
                        group,
                        name,
                        seen_time: 0,
                        active_time: None,
                    },
                    other => other,
                };
                encode_item(&mut buf, &item);
            }
        }
    }
    buf
}

/// One decoded record, borrowing from the batch.
#[derive(Debug)]
pub enum Record<'a> {
    Put {
        key: &'a [u8],
        ty: ValueType,
        expire: u64,
        modified: u64,
        value: Value,
    },
    Append {
        key: &'a [u8],
        ty: ValueType,
        value: Value,
    },
    Del {
        key: &'a [u8],
    },
    Flush {
        stream: u16,
        parallel: u16,
    },
    Effect {
        key: &'a [u8],
        now: u64,
        argv: Vec<&'a [u8]>,
    },
}

/// A verified batch.
#[derive(Debug)]
pub struct Batch<'a> {
    pub stream: u16,
    pub seq: u64,
    pub count: u32,
    body: &'a [u8],
}

impl<'a> Batch<'a> {
    /// Checks magic, version and CRC.
    pub fn parse(data: &'a [u8]) -> Result<Batch<'a>, WireError> {
        if data.len() < HEADER + 4 || &data[0..4] != MAGIC {
            return Err(WireError::Malformed("bad magic or too short"));
        }
        let version = u16::from_le_bytes([data[4], data[5]]);
        if version != WIRE_VERSION {
            return Err(WireError::Version {
                theirs: version,
                ours: WIRE_VERSION,
            });
        }
        let (payload, crc) = data.split_at(data.len() - 4);
        let expected = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let computed = crc32fast::hash(payload);
        if expected != computed {
            return Err(WireError::Checksum { expected, computed });
        }
        let stream = u16::from_le_bytes([data[6], data[7]]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&data[8..16]);
        let count = u32::from_le_bytes([data[16], data[17], data[18], data[19]]);
        Ok(Batch {
            stream,
            seq: u64::from_le_bytes(seq),
            count,
            body: &payload[HEADER..],
        })
    }

    /// Decodes every record (all-or-nothing: a malformed record fails the whole batch before
    /// anything is applied).
    pub fn records(&self) -> Result<Vec<Record<'a>>, WireError> {
        let mut r = Reader {
            data: self.body,
            pos: 0,
        };
        let mut out = Vec::with_capacity(self.count.min(1 << 16) as usize);
        for _ in 0..self.count {
            out.push(r.record()?);
        }
        if r.pos != self.body.len() {
            return Err(WireError::Malformed("trailing bytes"));
        }
        Ok(out)
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

fn malformed(e: CodecError) -> WireError {
    WireError::Malformed(e.0)
}

impl<'a> Reader<'a> {
    /// Runs `f` on a `ferrite_storage::codec::Reader` at the current position.
    fn codec<T>(
        &mut self,
        f: impl FnOnce(&mut codec::Reader<'a>) -> Result<T, CodecError>,
    ) -> Result<T, WireError> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let mut r = codec::Reader::new(rest);
        let out = f(&mut r).map_err(malformed)?;
        self.pos += r.position();
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        self.codec(|r| r.u8())
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        self.codec(|r| r.u16())
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        self.codec(|r| r.u64())
    }

    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        self.codec(|r| r.bytes())
    }

    fn count(&mut self) -> Result<usize, WireError> {
        self.codec(|r| r.count())
    }

    fn ty(&mut self) -> Result<ValueType, WireError> {
        self.codec(|r| r.value_type())
    }

    fn value(&mut self, ty: ValueType) -> Result<Value, WireError> {
        self.codec(|r| r.value(ty))
    }

    fn record(&mut self) -> Result<Record<'a>, WireError> {
        match self.u8()? {
            PUT => {
                let key = self.bytes()?;
                let ty = self.ty()?;
                let expire = self.u64()?;
                let modified = self.u64()?;
                let value = self.value(ty)?;
                Ok(Record::Put {
                    key,
                    ty,
                    expire,
                    modified,
                    value,
                })
            }
            APPEND => {
                let key = self.bytes()?;
                let ty = self.ty()?;
                let value = self.value(ty)?;
                Ok(Record::Append { key, ty, value })
            }
            DEL => Ok(Record::Del { key: self.bytes()? }),
            FLUSH => Ok(Record::Flush {
                stream: self.u16()?,
                parallel: self.u16()?,
            }),
            EFFECT => {
                let key = self.bytes()?;
                let now = self.u64()?;
                let n = self.count()?;
                let mut argv = Vec::with_capacity(n);
                for _ in 0..n {
                    argv.push(self.bytes()?);
                }
                if argv.is_empty() {
                    return Err(WireError::Malformed("empty effect"));
                }
                Ok(Record::Effect { key, now, argv })
            }
            _ => Err(WireError::Malformed("unknown record tag")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_storage::{HashValue, Keyspace, ListValue, ZSetValue};

    fn sample_keyspace() -> Keyspace {
        let ks = Keyspace::new();
        let mut db = ks.lock();
        db.set(b"s", Value::string("hello"), Some(123), 1);
        let mut l = ListValue::default();
        l.push_back(b"a");
        l.push_back(b"b");
        db.set(b"l", Value::List(l), None, 2);
        let mut h = HashValue::default();
        h.insert(b"f", b"v");
        db.set(b"h", Value::Hash(h), None, 3);
        let mut z = ZSetValue::default();
        z.insert(b"m", -1.5);
        db.set(b"z", Value::ZSet(z), None, 4);
        drop(db);
        ks
    }

    #[test]
    fn round_trip() {
        let ks = sample_keyspace();
        let db = ks.lock();
        let mut w = BatchWriter::new();
        for (k, e) in db.iter() {
            w.put(k, e);
        }
        let mut more = Vec::new();
        put_varint(&mut more, 1);
        put_bytes(&mut more, b"c");
        w.append(b"l", ValueType::List, &Chunk::Encoded(more, 1));
        w.del(b"gone");
        w.flush(1, 4);
        w.effects(
            b"h",
            &[(77, vec![b"HSET".to_vec(), b"h".to_vec(), b"g".to_vec()])],
        );
        let bytes = w.finish(3, 42);
        let b = Batch::parse(&bytes).unwrap();
        assert_eq!((b.stream, b.seq, b.count), (3, 42, 8));
        let recs = b.records().unwrap();
        assert_eq!(recs.len(), 8);
        let Record::Effect { key, now, argv } = &recs[7] else {
            panic!("{:?}", recs[7])
        };
        assert_eq!((*key, *now), (&b"h"[..], 77));
        assert_eq!(argv, &vec![&b"HSET"[..], b"h", b"g"]);
        let Record::Put {
            key, expire, value, ..
        } = &recs
            .iter()
            .find(|r| matches!(r, Record::Put { key: b"s", .. }))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!((*key, *expire), (&b"s"[..], 123));
        assert_eq!(
            canonical_value(value.view(), 0),
            canonical_value(Value::string("hello").view(), 0)
        );
        assert!(matches!(
            recs[6],
            Record::Flush {
                stream: 1,
                parallel: 4
            }
        ));
    }

    #[test]
    fn corruption_and_versions_are_detected() {
        let mut w = BatchWriter::new();
        w.del(b"k");
        let mut bytes = w.finish(0, 1);
        let n = bytes.len();
        bytes[n - 6] ^= 1;
        assert!(matches!(
            Batch::parse(&bytes),
            Err(WireError::Checksum { .. })
        ));
        let mut w = BatchWriter::new();
        w.del(b"k");
        let mut bytes = w.finish(0, 1);
        bytes[4] = 9;
        let e = Batch::parse(&bytes).unwrap_err();
        assert_eq!(
            e.to_string(),
            "incompatible migration wire format: batch speaks v9, this server speaks v3"
        );
        assert!(Batch::parse(b"junk").is_err());
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let mut framed = b"FMB1\x02\x00\x00\x00".to_vec();
            framed.extend_from_slice(&1u64.to_le_bytes());
            framed.extend_from_slice(&5u32.to_le_bytes());
            framed.extend_from_slice(&data);
            let crc = crc32fast::hash(&framed);
            framed.extend_from_slice(&crc.to_le_bytes());
            if let Ok(b) = Batch::parse(&framed) {
                let _ = b.records();
            }
        }
    }
}
