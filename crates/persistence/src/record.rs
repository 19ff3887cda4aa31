//! Frame payloads of tenant logs and snapshots (the catalog's are JSON, see [`crate::catalog`]).
//!
//! ```text
//! log header      = 0x10 tenant:bytes incarnation:varint generation:varint created_ms:u64
//! effects         = 0x01 now_ms:u64 n:varint argv{n}           one command / transaction
//! predecessor     = 0x11 generation:varint length:varint     the previous log's generation and
//!                                             length when this one started (log format 2)
//! argv            = argc:varint bytes{argc}
//! snapshot header = 0x20 tenant:bytes incarnation:varint generation:varint version:varint
//!                   created_ms:u64 [keys:varint]
//! entries         = 0x21 n:u32 entry{n}
//! entry           = key:bytes type:u8 expire_ms:u64 modified_ms:u64 value   (storage::codec)
//! snapshot end    = 0x22 entries:varint
//! libraries       = 0x23 n:varint (name:bytes code:bytes){n}   function libraries (FUNCTION LOAD)
//! backup info     = 0x24 description:bytes    a backup's JSON description (second frame of a
//!                                             backup file; see ferrite-server's `backup`)
//! ```
//!
//! `keys` (the number of keys the snapshot holds, so that a loader sizes its table once) was
//! added to the snapshot header after the format's first release, as an optional trailing field:
//! files written before it end their header at `created_ms` and still load (without the hint),
//! and a reader from before it, which ignores what follows `created_ms`, still loads files that
//! carry it. The file format version therefore stays 1. A loader treats the count as a hint
//! only, never trusted past what the file's size can hold ([`reservation`]).

use ferrite_storage::codec::{CodecError, Reader, encode_value, put_bytes, put_varint};
use ferrite_storage::{Argv, CompactCopy, Entry, OwnedArgv, Value, ValueRef, ValueType};

pub const LOG_HEADER: u8 = 0x10;
pub const EFFECTS: u8 = 0x01;
/// The first record of a log (format 2) that succeeded another: that log's generation and the
/// length it had at the switch. The old log is fsynced off the writers' path after the switch, so
/// a crash before that fsync can leave it shorter than its successor says; the loader then
/// stops at the gap instead of replaying the successor after it.
pub const PREDECESSOR: u8 = 0x11;
pub const SNAPSHOT_HEADER: u8 = 0x20;
pub const ENTRIES: u8 = 0x21;
pub const SNAPSHOT_END: u8 = 0x22;
pub const LIBRARIES: u8 = 0x23;
pub const BACKUP_INFO: u8 = 0x24;

/// The header of a log or snapshot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    pub tenant: String,
    pub incarnation: u64,
    pub generation: u64,
    /// Snapshots: the keyspace version they show.
    pub version: u64,
    pub created_ms: u64,
    /// Snapshots: the number of keys they hold, when the writer said (see the module docs);
    /// always `None` for logs.
    pub keys: Option<u64>,
}

/// The fewest bytes one entry takes in an [`ENTRIES`] frame: a key's length (1), the type (1),
/// expiry and modified time (16) and the shortest value (an empty string's length, 1).
pub const MIN_ENTRY_BYTES: u64 = 19;

/// The most keys a snapshot's key count makes a loader reserve room for (about 1.5 GB of
/// table); past it the table grows as keys arrive.
pub const MAX_RESERVE: u64 = 16 << 20;

/// How many keys a loader may reserve room for when a file of `file_size` bytes announces
/// `keys`: never more than the file can hold (each entry takes at least [`MIN_ENTRY_BYTES`]),
/// nor [`MAX_RESERVE`]; so a forged count costs at most a table proportional to the file.
pub fn reservation(keys: Option<u64>, file_size: u64) -> usize {
    let most = (file_size / MIN_ENTRY_BYTES).min(MAX_RESERVE);
    keys.unwrap_or(0).min(most) as usize
}

pub fn put_log_header(buf: &mut Vec<u8>, h: &FileHeader) {
    buf.push(LOG_HEADER);
    put_bytes(buf, h.tenant.as_bytes());
    put_varint(buf, h.incarnation);
    put_varint(buf, h.generation);
    buf.extend_from_slice(&h.created_ms.to_le_bytes());
}

pub fn put_snapshot_header(buf: &mut Vec<u8>, h: &FileHeader) {
    buf.push(SNAPSHOT_HEADER);
    put_bytes(buf, h.tenant.as_bytes());
    put_varint(buf, h.incarnation);
    put_varint(buf, h.generation);
    put_varint(buf, h.version);
    buf.extend_from_slice(&h.created_ms.to_le_bytes());
    if let Some(keys) = h.keys {
        put_varint(buf, keys);
    }
}

pub fn read_header(payload: &[u8], tag: u8) -> Result<FileHeader, CodecError> {
    let mut r = Reader::new(payload);
    if r.u8()? != tag {
        return Err(CodecError("not a file header"));
    }
    let tenant = String::from_utf8(r.bytes()?.to_vec()).map_err(|_| CodecError("tenant id"))?;
    let incarnation = r.varint()?;
    let generation = r.varint()?;
    let version = if tag == SNAPSHOT_HEADER {
        r.varint()?
    } else {
        0
    };
    let created_ms = r.u64()?;
    // Optional (see the module docs): absent in files written before it existed.
    let keys = if tag == SNAPSHOT_HEADER && !r.is_empty() {
        Some(r.varint()?)
    } else {
        None
    };
    Ok(FileHeader {
        tenant,
        incarnation,
        generation,
        version,
        created_ms,
        keys,
    })
}

/// Appends the payload of an effects frame.
pub fn put_effects<'a>(
    buf: &mut Vec<u8>,
    now: u64,
    count: usize,
    effects: impl Iterator<Item = Argv<'a>>,
) {
    buf.push(EFFECTS);
    buf.extend_from_slice(&now.to_le_bytes());
    put_varint(buf, count as u64);
    for argv in effects {
        put_varint(buf, argv.len() as u64);
        for a in argv.iter() {
            put_bytes(buf, a);
        }
    }
}

/// The payload of a [`PREDECESSOR`] record.
pub fn put_predecessor(buf: &mut Vec<u8>, generation: u64, length: u64) {
    buf.push(PREDECESSOR);
    put_varint(buf, generation);
    put_varint(buf, length);
}

/// Decodes a [`PREDECESSOR`] record into (generation, length).
pub fn read_predecessor(payload: &[u8]) -> Result<(u64, u64), CodecError> {
    let mut r = Reader::new(payload);
    if r.u8()? != PREDECESSOR {
        return Err(CodecError("not a predecessor record"));
    }
    let generation = r.varint()?;
    let length = r.varint()?;
    if !r.is_empty() {
        return Err(CodecError("trailing bytes"));
    }
    Ok((generation, length))
}

/// Decodes an effects frame into (clock, effects).
pub fn read_effects(payload: &[u8]) -> Result<(u64, Vec<OwnedArgv>), CodecError> {
    let mut r = Reader::new(payload);
    if r.u8()? != EFFECTS {
        return Err(CodecError("not an effects record"));
    }
    let now = r.u64()?;
    let n = r.count()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let argc = r.count()?;
        if argc == 0 {
            return Err(CodecError("empty command"));
        }
        let mut argv = Vec::with_capacity(argc);
        for _ in 0..argc {
            argv.push(r.bytes()?.to_vec());
        }
        out.push(argv);
    }
    if !r.is_empty() {
        return Err(CodecError("trailing bytes"));
    }
    Ok((now, out))
}

/// The payload of a [`LIBRARIES`] frame: the tenant's function libraries, name → code.
pub fn put_libraries(buf: &mut Vec<u8>, libraries: &std::collections::BTreeMap<String, Vec<u8>>) {
    buf.push(LIBRARIES);
    put_varint(buf, libraries.len() as u64);
    for (name, code) in libraries {
        put_bytes(buf, name.as_bytes());
        put_bytes(buf, code);
    }
}

pub fn read_libraries(
    payload: &[u8],
) -> Result<std::collections::BTreeMap<String, Vec<u8>>, CodecError> {
    let mut r = Reader::new(payload);
    if r.u8()? != LIBRARIES {
        return Err(CodecError("not a libraries record"));
    }
    let n = r.count()?;
    let mut out = std::collections::BTreeMap::new();
    for _ in 0..n {
        let name =
            String::from_utf8(r.bytes()?.to_vec()).map_err(|_| CodecError("library name"))?;
        out.insert(name, r.bytes()?.to_vec());
    }
    if !r.is_empty() {
        return Err(CodecError("trailing bytes"));
    }
    Ok(out)
}

/// The payload of a [`BACKUP_INFO`] frame.
pub fn put_backup_info(buf: &mut Vec<u8>, description: &[u8]) {
    buf.push(BACKUP_INFO);
    put_bytes(buf, description);
}

pub fn read_backup_info(payload: &[u8]) -> Result<&[u8], CodecError> {
    let mut r = Reader::new(payload);
    if r.u8()? != BACKUP_INFO {
        return Err(CodecError("not a backup description"));
    }
    let d = r.bytes()?;
    if !r.is_empty() {
        return Err(CodecError("trailing bytes"));
    }
    Ok(d)
}

/// Starts an [`ENTRIES`] payload in `buf` (after a frame header); returns where its count is.
pub fn begin_entries(buf: &mut Vec<u8>) -> usize {
    buf.push(ENTRIES);
    let at = buf.len();
    buf.extend_from_slice(&0u32.to_le_bytes());
    at
}

/// Writes the number of entries of the payload begun with [`begin_entries`].
pub fn end_entries(buf: &mut [u8], count_at: usize, n: u32) {
    buf[count_at..count_at + 4].copy_from_slice(&n.to_le_bytes());
}

/// Appends one entry to an [`ENTRIES`] payload.
pub fn put_entry(buf: &mut Vec<u8>, key: &[u8], e: &Entry) {
    put_entry_parts(
        buf,
        key,
        e.value_type(),
        e.expire_at(),
        e.modified_ms(),
        e.value(),
    );
}

/// Appends one entry copied out of a keyspace ([`ferrite_storage::CopiedEntries`]) to an
/// [`ENTRIES`] payload: the same bytes as [`put_entry`] of the entry it was copied from.
pub fn put_copied_entry(buf: &mut Vec<u8>, e: &CompactCopy<'_>) {
    put_entry_parts(
        buf,
        e.key(),
        e.value_type(),
        e.expire_at(),
        e.modified_ms(),
        e.value(),
    );
}

fn put_entry_parts(
    buf: &mut Vec<u8>,
    key: &[u8],
    ty: ValueType,
    expire_at: Option<u64>,
    modified_ms: u64,
    value: ValueRef<'_>,
) {
    put_bytes(buf, key);
    buf.push(ty.tag() as u8);
    buf.extend_from_slice(&expire_at.unwrap_or(0).to_le_bytes());
    buf.extend_from_slice(&modified_ms.to_le_bytes());
    encode_value(buf, value);
}

/// Appends one entry to an [`ENTRIES`] payload from an owned value (a loader writing what it
/// loads; [`put_entry`] writes a keyspace's entries).
pub fn put_value_entry(
    buf: &mut Vec<u8>,
    key: &[u8],
    value: &Value,
    expire_at: Option<u64>,
    modified_ms: u64,
) {
    put_entry_parts(
        buf,
        key,
        value.value_type(),
        expire_at,
        modified_ms,
        value.view(),
    );
}

/// One decoded entry.
pub struct LoadedEntry<'a> {
    pub key: &'a [u8],
    /// Where `key` is in the payload (a reader that keeps the payload refers to it by this).
    pub key_at: std::ops::Range<usize>,
    pub value: Value,
    pub expire: Option<u64>,
    pub modified: u64,
}

/// Decodes an [`ENTRIES`] frame, calling `f` for each entry.
pub fn read_entries<'a>(
    payload: &'a [u8],
    mut f: impl FnMut(LoadedEntry<'a>),
) -> Result<u64, CodecError> {
    let mut r = Reader::new(payload);
    if r.u8()? != ENTRIES {
        return Err(CodecError("not an entries record"));
    }
    let n = u32::from_le_bytes(r.take(4)?.try_into().map_err(|_| CodecError("truncated"))?);
    if u64::from(n) > r.remaining() as u64 {
        return Err(CodecError("entry count larger than the record"));
    }
    for _ in 0..n {
        let key = r.bytes()?;
        let key_end = r.position();
        let ty: ValueType = r.value_type()?;
        let expire = r.u64()?;
        let modified = r.u64()?;
        let value = r.value(ty)?;
        f(LoadedEntry {
            key,
            key_at: key_end - key.len()..key_end,
            value,
            expire: (expire != 0).then_some(expire),
            modified,
        });
    }
    if !r.is_empty() {
        return Err(CodecError("trailing bytes"));
    }
    Ok(n as u64)
}

pub fn put_snapshot_end(buf: &mut Vec<u8>, entries: u64) {
    buf.push(SNAPSHOT_END);
    put_varint(buf, entries);
}

pub fn read_snapshot_end(payload: &[u8]) -> Result<u64, CodecError> {
    let mut r = Reader::new(payload);
    if r.u8()? != SNAPSHOT_END {
        return Err(CodecError("not a snapshot end"));
    }
    r.varint()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copied_entry_is_written_as_its_entry() {
        use ferrite_storage::{CopiedEntries, HashValue, Keyspace, PointInTimeCopy, SetValue};
        let ks = std::sync::Arc::new(Keyspace::new());
        {
            let mut db = ks.lock();
            for i in 0..50u32 {
                let expire = (i % 3 == 0).then_some(ferrite_storage::now_ms() + 100_000);
                db.set(
                    format!("s{i}").as_bytes(),
                    Value::string(vec![b'v'; i as usize * 3]),
                    expire,
                    7,
                );
                let mut h = HashValue::default();
                h.insert(format!("f{i}").as_bytes(), b"x");
                db.set(format!("h{i}").as_bytes(), Value::Hash(h), expire, 7);
                let ints = [i.to_string(), (i + 1).to_string()];
                db.set(
                    format!("i{i}").as_bytes(),
                    Value::Set(SetValue::from_members(&ints)),
                    None,
                    7,
                );
            }
        }
        let mut copy = PointInTimeCopy::open(&ks).expect("open");
        let mut copied = CopiedEntries::default();
        while copy.step_copied(16, &mut copied, |k, _| panic!("{k:?} is not compact")) {}
        assert_eq!(copied.len(), 150);
        let db = ks.lock();
        for e in copied.iter() {
            let (mut from_copy, mut from_entry) = (Vec::new(), Vec::new());
            put_copied_entry(&mut from_copy, &e);
            let live = db.peek(e.key()).expect("the key is there");
            put_entry(&mut from_entry, e.key(), live);
            assert_eq!(from_copy, from_entry);
        }
    }

    #[test]
    fn effects_round_trip() {
        let a: Vec<Vec<u8>> = vec![b"SET".to_vec(), b"k".to_vec(), b"".to_vec()];
        let b: &[&[u8]] = &[b"DEL", b"x"];
        let list = [Argv::Owned(&a), Argv::Borrowed(b)];
        let mut buf = Vec::new();
        put_effects(&mut buf, 42, list.len(), list.iter().copied());
        let (now, back) = read_effects(&buf).unwrap();
        assert_eq!(now, 42);
        assert_eq!(back, vec![a, vec![b"DEL".to_vec(), b"x".to_vec()]]);
        assert!(read_effects(&buf[..buf.len() - 1]).is_err());
    }

    #[test]
    fn headers_round_trip() {
        let h = FileHeader {
            tenant: "acme".into(),
            incarnation: 3,
            generation: 7,
            version: 99,
            created_ms: 5,
            keys: Some(1_000_000),
        };
        let mut buf = Vec::new();
        put_snapshot_header(&mut buf, &h);
        assert_eq!(read_header(&buf, SNAPSHOT_HEADER).unwrap(), h);
        let mut buf = Vec::new();
        put_log_header(&mut buf, &h);
        let back = read_header(&buf, LOG_HEADER).unwrap();
        assert_eq!((back.generation, back.version, back.keys), (7, 0, None));
        assert!(read_header(&buf, SNAPSHOT_HEADER).is_err());
    }

    /// A snapshot header as the first release wrote it (no key count), byte for byte.
    #[test]
    fn a_snapshot_header_without_a_key_count_still_reads() {
        let mut old = vec![SNAPSHOT_HEADER, 4];
        old.extend_from_slice(b"acme");
        old.extend_from_slice(&[3, 7, 99]);
        old.extend_from_slice(&5u64.to_le_bytes());
        let h = read_header(&old, SNAPSHOT_HEADER).unwrap();
        assert_eq!(
            (h.tenant.as_str(), h.generation, h.version),
            ("acme", 7, 99)
        );
        assert_eq!(h.keys, None);
        // What this build writes is the same bytes plus the count at the end.
        let mut new = Vec::new();
        put_snapshot_header(
            &mut new,
            &FileHeader {
                keys: Some(300),
                ..h
            },
        );
        assert_eq!(new[..old.len()], old[..]);
        assert_eq!(new.len(), old.len() + 2);
        // A damaged count (a varint that never ends) is an error, not a guess.
        let mut bad = old.clone();
        bad.extend_from_slice(&[0xff; 11]);
        assert!(read_header(&bad, SNAPSHOT_HEADER).is_err());
    }

    #[test]
    fn a_forged_key_count_reserves_no_more_than_the_file_holds() {
        assert_eq!(reservation(None, 1 << 30), 0);
        assert_eq!(reservation(Some(1000), 1 << 30), 1000);
        // A 1 KB file claiming 2^64-1 keys: room for the 53 entries 1 KB can hold.
        assert_eq!(reservation(Some(u64::MAX), 1024), 1024 / 19);
        // A huge file: never past MAX_RESERVE.
        assert_eq!(reservation(Some(u64::MAX), u64::MAX), MAX_RESERVE as usize);
        assert_eq!(reservation(Some(5), 0), 0);
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = read_effects(&data);
            let _ = read_entries(&data, |_| {});
            let _ = read_header(&data, LOG_HEADER);
            let _ = read_header(&data, SNAPSHOT_HEADER);
            let _ = read_backup_info(&data);
        }
    }
}
