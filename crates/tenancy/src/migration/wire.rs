//! The migration wire format, version 1: batches of records carried as one bulk argument of
//! `TENANT.IMPORT.BATCH`.
//!
//! ```text
//! batch   = "FMB1" version:u16 stream:u16 seq:u64 count:u32 record* crc32:u32   (little endian)
//! record  = PUT    0x01 key type:u8 expire_ms:u64 modified_ms:u64 value
//!         | APPEND 0x02 key type:u8 value          (elements added to an existing value)
//!         | DEL    0x03 key
//!         | FLUSH  0x04 stream:u16 parallel:u16    (delete staged keys routed to this stream)
//! key     = bytes
//! value   = string: bytes | list/set: n:varint bytes{n} | hash: n:varint (bytes bytes){n}
//!         | zset: n:varint (bytes score:f64){n}
//!         | stream: n:varint item{n}   (see ferrite_storage::stream::encode_item)
//! bytes   = len:varint data
//! ```
//! The CRC covers everything before it. A value too large for one record is sent as a PUT with
//! its first chunk followed by APPENDs, so neither side ever holds two copies of a huge value.
//! Records of one key always travel on the same stream ([`route`]), which keeps their order.

use ferrite_storage::stream::{StreamItem, decode_items, encode_item};
use ferrite_storage::{
    Entry, HashValue, ListValue, SetValue, StrValue, Value, ValueRef, ValueType, ZSetValue,
};

/// Version this build speaks. A peer with another version is refused with both numbers.
pub const WIRE_VERSION: u16 = 1;
const MAGIC: &[u8; 4] = b"FMB1";
const HEADER: usize = 4 + 2 + 2 + 8 + 4;

const PUT: u8 = 1;
const APPEND: u8 = 2;
const DEL: u8 = 3;
const FLUSH: u8 = 4;

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

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_varint(buf, b.len() as u64);
    buf.extend_from_slice(b);
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

/// Some elements of a value, copied out under the keyspace lock for chunked sending.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    Bytes(Vec<u8>),
    Items(Vec<Vec<u8>>),
    Pairs(Vec<(Vec<u8>, Vec<u8>)>),
    Scored(Vec<(Vec<u8>, f64)>),
    /// Stream items, already encoded as `n:varint item{n}` (a chunk that stands alone, see
    /// `StreamValue::encode_chunk`), and how many positions of the stream they cover.
    Stream(Vec<u8>, usize),
}

impl Chunk {
    fn encode(&self, buf: &mut Vec<u8>) {
        match self {
            Chunk::Bytes(b) => put_bytes(buf, b),
            Chunk::Items(v) => {
                put_varint(buf, v.len() as u64);
                for i in v {
                    put_bytes(buf, i);
                }
            }
            Chunk::Pairs(v) => {
                put_varint(buf, v.len() as u64);
                for (a, b) in v {
                    put_bytes(buf, a);
                    put_bytes(buf, b);
                }
            }
            Chunk::Scored(v) => {
                put_varint(buf, v.len() as u64);
                for (m, s) in v {
                    put_bytes(buf, m);
                    buf.extend_from_slice(&s.to_le_bytes());
                }
            }
            Chunk::Stream(b, _) => buf.extend_from_slice(b),
        }
    }

    /// Number of elements (bytes for strings).
    pub fn len(&self) -> usize {
        match self {
            Chunk::Bytes(b) => b.len(),
            Chunk::Items(v) => v.len(),
            Chunk::Pairs(v) => v.len(),
            Chunk::Scored(v) => v.len(),
            Chunk::Stream(_, n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn encode_value(buf: &mut Vec<u8>, v: ValueRef<'_>) {
    match v {
        ValueRef::Str(s) => put_bytes(buf, s.as_bytes()),
        ValueRef::List(l) => {
            put_varint(buf, l.len() as u64);
            for e in l.iter() {
                put_bytes(buf, e);
            }
        }
        ValueRef::Hash(h) => {
            put_varint(buf, h.len() as u64);
            for (f, val) in h.iter() {
                put_bytes(buf, f);
                put_bytes(buf, val);
            }
        }
        ValueRef::Set(s) => {
            put_varint(buf, s.len() as u64);
            for m in s.iter() {
                put_bytes(buf, m);
            }
        }
        ValueRef::ZSet(z) => {
            put_varint(buf, z.len() as u64);
            for (m, sc) in z.iter() {
                put_bytes(buf, m);
                buf.extend_from_slice(&sc.to_le_bytes());
            }
        }
        ValueRef::Stream(x) => x.encode_all(buf),
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
        // Streams iterate in id and name order; consumers' seen times are access metadata
        // (not digested), so they are left out.
        ValueRef::Stream(x) => {
            put_varint(&mut buf, x.item_count());
            for item in x.items() {
                let item = match item {
                    StreamItem::Consumer { group, name, .. } => StreamItem::Consumer {
                        group,
                        name,
                        seen_time: 0,
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

const BAD: WireError = WireError::Malformed("truncated record");

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, WireError> {
        let b = *self.data.get(self.pos).ok_or(BAD)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(BAD)?;
        let s = self.data.get(self.pos..end).ok_or(BAD)?;
        self.pos = end;
        Ok(s)
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WireError::Malformed("varint too long"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| BAD)?;
        self.take(n)
    }

    /// A count that cannot exceed the bytes left (each element takes at least one byte), so a
    /// corrupt count cannot make us allocate more than the batch size.
    fn count(&mut self) -> Result<usize, WireError> {
        let n = self.varint()?;
        if n > (self.data.len() - self.pos) as u64 {
            return Err(BAD);
        }
        Ok(n as usize)
    }

    fn ty(&mut self) -> Result<ValueType, WireError> {
        ValueType::from_tag(u64::from(self.u8()?)).ok_or(WireError::Malformed("unknown type"))
    }

    fn value(&mut self, ty: ValueType) -> Result<Value, WireError> {
        Ok(match ty {
            ValueType::String => Value::Str(StrValue::new(self.bytes()?.to_vec())),
            ValueType::List => {
                let n = self.count()?;
                let mut l = ListValue::default();
                for _ in 0..n {
                    l.push_back(self.bytes()?);
                }
                Value::List(Box::new(l))
            }
            ValueType::Hash => {
                let n = self.count()?;
                let mut h = HashValue::default();
                for _ in 0..n {
                    let f = self.bytes()?;
                    let v = self.bytes()?;
                    h.insert(f, v);
                }
                Value::Hash(Box::new(h))
            }
            ValueType::Set => {
                let n = self.count()?;
                let mut s = SetValue::default();
                for _ in 0..n {
                    s.insert(self.bytes()?);
                }
                Value::Set(Box::new(s))
            }
            ValueType::ZSet => {
                let n = self.count()?;
                let mut z = ZSetValue::default();
                for _ in 0..n {
                    let m = self.bytes()?;
                    let s = f64::from_bits(self.u64()?);
                    if s.is_nan() {
                        return Err(WireError::Malformed("NaN score"));
                    }
                    z.insert(m, s);
                }
                Value::ZSet(Box::new(z))
            }
            ValueType::Stream => {
                let (x, used) =
                    decode_items(&self.data[self.pos..]).map_err(WireError::Malformed)?;
                self.pos += used;
                Value::Stream(Box::new(x))
            }
        })
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
            _ => Err(WireError::Malformed("unknown record tag")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_storage::Keyspace;

    fn sample_keyspace() -> Keyspace {
        let ks = Keyspace::new();
        let mut db = ks.lock();
        db.set(b"s", Value::string("hello"), Some(123), 1);
        let mut l = ListValue::default();
        l.push_back(b"a");
        l.push_back(b"b");
        db.set(b"l", Value::List(Box::new(l)), None, 2);
        let mut h = HashValue::default();
        h.insert(b"f", b"v");
        db.set(b"h", Value::Hash(Box::new(h)), None, 3);
        let mut z = ZSetValue::default();
        z.insert(b"m", -1.5);
        db.set(b"z", Value::ZSet(Box::new(z)), None, 4);
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
        w.append(b"l", ValueType::List, &Chunk::Items(vec![b"c".to_vec()]));
        w.del(b"gone");
        w.flush(1, 4);
        let bytes = w.finish(3, 42);
        let b = Batch::parse(&bytes).unwrap();
        assert_eq!((b.stream, b.seq, b.count), (3, 42, 7));
        let recs = b.records().unwrap();
        assert_eq!(recs.len(), 7);
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
            "incompatible migration wire format: batch speaks v9, this server speaks v1"
        );
        assert!(Batch::parse(b"junk").is_err());
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let mut framed = b"FMB1\x01\x00\x00\x00".to_vec();
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
