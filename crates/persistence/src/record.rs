//! Frame payloads of tenant logs and snapshots (the catalog's are JSON, see [`crate::catalog`]).
//!
//! ```text
//! log header      = 0x10 tenant:bytes incarnation:varint generation:varint created_ms:u64
//! effects         = 0x01 now_ms:u64 n:varint argv{n}           one command / transaction
//! argv            = argc:varint bytes{argc}
//! snapshot header = 0x20 tenant:bytes incarnation:varint generation:varint version:varint
//!                   created_ms:u64
//! entries         = 0x21 n:u32 entry{n}
//! entry           = key:bytes type:u8 expire_ms:u64 modified_ms:u64 value   (storage::codec)
//! snapshot end    = 0x22 entries:varint
//! libraries       = 0x23 n:varint (name:bytes code:bytes){n}   function libraries (FUNCTION LOAD)
//! backup info     = 0x24 description:bytes    a backup's JSON description (second frame of a
//!                                             backup file; see ferrite-server's `backup`)
//! ```

use ferrite_storage::codec::{CodecError, Reader, encode_value, put_bytes, put_varint};
use ferrite_storage::{Argv, Entry, OwnedArgv, Value, ValueType};

pub const LOG_HEADER: u8 = 0x10;
pub const EFFECTS: u8 = 0x01;
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
    Ok(FileHeader {
        tenant,
        incarnation,
        generation,
        version,
        created_ms,
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
    put_bytes(buf, key);
    buf.push(e.value_type().tag() as u8);
    buf.extend_from_slice(&e.expire_at().unwrap_or(0).to_le_bytes());
    buf.extend_from_slice(&e.modified_ms().to_le_bytes());
    encode_value(buf, e.value());
}

/// One decoded entry.
pub struct LoadedEntry<'a> {
    pub key: &'a [u8],
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
        let ty: ValueType = r.value_type()?;
        let expire = r.u64()?;
        let modified = r.u64()?;
        let value = r.value(ty)?;
        f(LoadedEntry {
            key,
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
        };
        let mut buf = Vec::new();
        put_snapshot_header(&mut buf, &h);
        assert_eq!(read_header(&buf, SNAPSHOT_HEADER).unwrap(), h);
        let mut buf = Vec::new();
        put_log_header(&mut buf, &h);
        let back = read_header(&buf, LOG_HEADER).unwrap();
        assert_eq!((back.generation, back.version), (7, 0));
        assert!(read_header(&buf, SNAPSHOT_HEADER).is_err());
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
