//! Redis's RDB encoding of values, independent of any server.
//!
//! - [`Decoder`] reads one value of any type Redis 7.0–7.2 writes (plain string/list/set/zset/hash,
//!   ZSET with string or binary scores, zipmap, ziplist, intset, listpack, quicklist and
//!   quicklist 2, strings stored as integers or LZF-compressed) into a [`Value`] of logical
//!   elements. It reads from any [`std::io::Read`], never trusts a length it has not read the
//!   bytes for (allocation grows with the data actually present), and refuses malformed input
//!   with [`RdbError`] instead of panicking.
//! - [`Encoder`] writes a [`Value`] in encodings every redis-server since 2.x loads (plain
//!   types; Redis converts small ones to its compact encodings on load).
//! - [`dump`] builds and checks DUMP/RESTORE payloads: the value, the RDB version (2 bytes LE) and
//!   a CRC-64 (Jones, as Redis) of everything before it (8 bytes LE).
//!
//! - [`file::read`] reads whole RDB files (header, aux fields, function libraries, SELECTDB,
//!   expiry opcodes, EOF and checksum) with the same decoder; [`file::Writer`] writes them.
//!
//! Streams ([`Stream`]: entries, metadata, consumer groups with their pending entries and
//! consumers) are read in all three of Redis's stream encodings and written as Redis 7.0 writes
//! them; module values are not decoded ([`RdbError::Unsupported`]).

mod decode;
pub mod dump;
mod encode;
pub mod file;
mod lzf;
mod packed;
mod stream;

pub use decode::Decoder;
pub use encode::Encoder;

/// The RDB version this crate writes: Redis 7.0's, so that every 7.x server loads what it writes.
pub const RDB_VERSION: u16 = 10;
/// The newest RDB version it reads (Redis 7.2).
pub const MAX_READ_VERSION: u16 = 11;

/// Value type bytes (Redis's `RDB_TYPE_*`).
pub mod types {
    pub const STRING: u8 = 0;
    pub const LIST: u8 = 1;
    pub const SET: u8 = 2;
    pub const ZSET: u8 = 3;
    pub const HASH: u8 = 4;
    pub const ZSET_2: u8 = 5;
    pub const MODULE: u8 = 6;
    pub const MODULE_2: u8 = 7;
    pub const HASH_ZIPMAP: u8 = 9;
    pub const LIST_ZIPLIST: u8 = 10;
    pub const SET_INTSET: u8 = 11;
    pub const ZSET_ZIPLIST: u8 = 12;
    pub const HASH_ZIPLIST: u8 = 13;
    pub const LIST_QUICKLIST: u8 = 14;
    pub const STREAM_LISTPACKS: u8 = 15;
    pub const HASH_LISTPACK: u8 = 16;
    pub const ZSET_LISTPACK: u8 = 17;
    pub const LIST_QUICKLIST_2: u8 = 18;
    pub const STREAM_LISTPACKS_2: u8 = 19;
    /// Redis 7.2.
    pub const SET_LISTPACK: u8 = 20;
    /// Redis 7.2.
    pub const STREAM_LISTPACKS_3: u8 = 21;
    /// Redis 7.4 hashes with field expirations (release candidate and final forms).
    pub const HASH_METADATA_PRE_GA: u8 = 22;
    pub const HASH_LISTPACK_EX_PRE_GA: u8 = 23;
    pub const HASH_METADATA: u8 = 24;
    pub const HASH_LISTPACK_EX: u8 = 25;

    /// What a value type byte is, for error messages.
    pub fn describe(t: u8) -> &'static str {
        match t {
            STRING => "string",
            LIST | LIST_ZIPLIST | LIST_QUICKLIST | LIST_QUICKLIST_2 => "list",
            SET | SET_INTSET | SET_LISTPACK => "set",
            ZSET | ZSET_2 | ZSET_ZIPLIST | ZSET_LISTPACK => "sorted set",
            HASH | HASH_ZIPMAP | HASH_ZIPLIST | HASH_LISTPACK => "hash",
            STREAM_LISTPACKS | STREAM_LISTPACKS_2 | STREAM_LISTPACKS_3 => "stream",
            MODULE | MODULE_2 => "module value: Ferrite loads no Redis modules",
            HASH_METADATA_PRE_GA | HASH_LISTPACK_EX_PRE_GA | HASH_METADATA | HASH_LISTPACK_EX => {
                "hash with field expirations, Redis 7.4"
            }
            _ => "unknown",
        }
    }

    /// Whether `t` is a value type byte of any Redis version (Redis's `rdbIsObjectType`).
    pub fn is_value_type(t: u8) -> bool {
        t <= MODULE_2 || (HASH_ZIPMAP..=HASH_LISTPACK_EX).contains(&t)
    }
}

/// A value as logical elements (no in-memory encoding). Collections keep the order the payload
/// had (lists: head to tail; sorted sets: as stored, usually by score).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(Vec<u8>),
    List(Vec<Vec<u8>>),
    Set(Vec<Vec<u8>>),
    ZSet(Vec<(Vec<u8>, f64)>),
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    Stream(Box<Stream>),
}

/// A stream entry id (milliseconds, sequence).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

/// A stream as logical elements: entries in id order, its metadata and consumer groups (by
/// name, each with its pending entries by id and its consumers by name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stream {
    pub entries: Vec<StreamEntry>,
    pub last_id: StreamId,
    pub first_id: StreamId,
    pub max_deleted_id: StreamId,
    pub entries_added: u64,
    pub groups: Vec<StreamGroup>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    pub id: StreamId,
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamGroup {
    pub name: Vec<u8>,
    pub last_id: StreamId,
    /// The group's read counter, -1 when unknown.
    pub entries_read: i64,
    pub pending: Vec<StreamPending>,
    pub consumers: Vec<StreamConsumer>,
}

/// A pending entry of a group and the consumer it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPending {
    pub id: StreamId,
    /// Unix ms of the last delivery.
    pub delivery_time: u64,
    pub delivery_count: u64,
    pub consumer: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConsumer {
    pub name: Vec<u8>,
    /// Unix ms the consumer was last seen.
    pub seen_time: u64,
    /// Redis 7.2's last successful read or claim; None: never (-1 in
    /// RDB_TYPE_STREAM_LISTPACKS_3). Read from the older forms as the seen time, as Redis 7.2
    /// does; written only by _3.
    pub active_time: Option<u64>,
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::List(_) => "list",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
            Value::Hash(_) => "hash",
            Value::Stream(_) => "stream",
        }
    }
}

/// Why a payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RdbError {
    #[error("unexpected end of data")]
    Truncated,
    #[error("malformed data: {0}")]
    Malformed(&'static str),
    /// An empty list, set, sorted set or hash (Redis refuses it in a DUMP payload and skips
    /// such keys when loading a file).
    #[error("malformed data: empty collection")]
    EmptyKey,
    #[error("value type {0} ({desc}) is not supported", desc = types::describe(*.0))]
    Unsupported(u8),
    /// A file opcode this reader does not know (neither an opcode nor a value type Redis 7.x
    /// writes).
    #[error("unknown RDB opcode or value type {0}")]
    UnknownOpcode(u8),
    /// Data only a Redis module can read (module auxiliary data, module values).
    #[error("the file holds data of a Redis module ({0}); Ferrite loads no modules")]
    Module(&'static str),
    /// Redis 7.0 release candidates' function format, which Redis itself refuses.
    #[error("pre-release function library format (RDB_OPCODE_FUNCTION_PRE_GA) is not supported")]
    FunctionPreGa,
    /// A caller's reason to stop reading (a key it cannot take), as its message.
    #[error("{0}")]
    Refused(String),
    /// An error while reading one key's value, with the key (shortened) for the operator.
    #[error("key '{key}': {source}")]
    AtKey {
        key: String,
        #[source]
        source: Box<RdbError>,
    },
    #[error("string of {0} bytes exceeds the limit")]
    TooLarge(u64),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, RdbError>;

/// Redis's CRC-64 (Jones polynomial, reflected), computed 16 bytes at a time (whole files go
/// through it: the byte-at-a-time table was a tenth of an RDB load).
static CRC64: crc::Crc<u64, crc::Table<16>> =
    crc::Crc::<u64, crc::Table<16>>::new(&crc::CRC_64_REDIS);

/// Redis's CRC-64, as used by DUMP payloads and RDB files.
pub fn crc64(data: &[u8]) -> u64 {
    CRC64.checksum(data)
}

/// An incremental [`crc64`], for files written or read in pieces.
pub struct Crc64Digest(crc::Digest<'static, u64, crc::Table<16>>);

impl Default for Crc64Digest {
    fn default() -> Self {
        Crc64Digest(CRC64.digest())
    }
}

impl Crc64Digest {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finalize(self) -> u64 {
        self.0.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_is_redis_crc64() {
        // Redis's crc64 test vector (src/crc64.c).
        assert_eq!(crc64(b"123456789"), 0xe9c6d914c4b8d9ca);
        let mut d = Crc64Digest::default();
        d.update(b"1234");
        d.update(b"56789");
        assert_eq!(d.finalize(), 0xe9c6d914c4b8d9ca);
    }
}
