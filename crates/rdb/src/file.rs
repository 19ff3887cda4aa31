//! Whole RDB files: the `REDIS<version>` header, auxiliary fields, function libraries, database
//! selectors, expiry times, key/value pairs and the EOF marker with its CRC-64.
//!
//! [`read`] loads what redis-server 7.x (and older versions) writes, handing out each key as it
//! is read; data only a Redis module understands (`MODULE_AUX`, module values), an opcode or
//! value type it does not know, a truncated file or a bad checksum is an error. Callers that must
//! not half-load a file (a tenant restore) collect the keys into a fresh structure and install
//! it only when `read` returned `Ok`. [`Writer`] writes a file redis-server 7.0 and later load.
//!
//! ```text
//! file   = "REDIS" version:4 digits
//!          (AUX key:string value:string)*
//!          (FUNCTION2 code:string)*
//!          (SELECTDB db:len RESIZEDB keys:len expires:len
//!           ([EXPIRETIME_MS ms:u64 LE] [IDLE len | FREQ u8] type:u8 key:string value)*)*
//!          EOF crc64:u64 LE              (crc of everything before it; 0 = not computed)
//! ```

use std::io::{self, Read, Write};

use crate::{Crc64Digest, Decoder, Encoder, RdbError, Result, Value, types};

/// Opcodes between values (Redis's `RDB_OPCODE_*`).
pub mod opcode {
    /// Redis 7.4 cluster mode: slot id and sizes (a hint, skipped).
    pub const SLOT_INFO: u8 = 244;
    pub const FUNCTION2: u8 = 245;
    pub const FUNCTION_PRE_GA: u8 = 246;
    pub const MODULE_AUX: u8 = 247;
    pub const IDLE: u8 = 248;
    pub const FREQ: u8 = 249;
    pub const AUX: u8 = 250;
    pub const RESIZEDB: u8 = 251;
    pub const EXPIRETIME_MS: u8 = 252;
    pub const EXPIRETIME: u8 = 253;
    pub const SELECTDB: u8 = 254;
    pub const EOF: u8 = 255;
}

/// The newest file version [`read`] accepts: Redis 7.4's (12), whose only additions are the
/// cluster slot hint (skipped) and hashes with field expirations (refused: Ferrite has no field
/// TTLs). DUMP payloads keep [`crate::MAX_READ_VERSION`].
pub const MAX_FILE_VERSION: u16 = 12;

/// One key of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub db: u64,
    pub key: Vec<u8>,
    /// Absolute expiry, Unix milliseconds.
    pub expire_at_ms: Option<u64>,
    pub value: Value,
}

/// What the file said besides its keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileInfo {
    pub version: u16,
    /// `AUX` fields (redis-ver, ctime, used-mem, ...), in file order.
    pub aux: Vec<(Vec<u8>, Vec<u8>)>,
    /// Function libraries (`FUNCTION2`): each library's code, `#!lua name=...` first line and
    /// all, in file order.
    pub functions: Vec<Vec<u8>>,
    /// Keys holding an empty collection, skipped as Redis skips them on load.
    pub empty_keys_skipped: u64,
    /// Whether the file carried a checksum (0 means Redis wrote it with `rdbchecksum no`).
    pub checksum_verified: bool,
}

/// Bytes read from the source at a time.
const READ_CHUNK: usize = 256 * 1024;

/// A buffered reader that hashes exactly the bytes consumed (so the trailing checksum can be
/// read after the EOF opcode without being hashed itself). Hashing whole consumed chunks keeps
/// the CRC off the per-byte path.
struct HashingReader<R> {
    inner: R,
    buf: Box<[u8]>,
    /// Consumed / filled bytes of `buf`.
    pos: usize,
    filled: usize,
    crc: Crc64Digest,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            buf: vec![0u8; READ_CHUNK].into_boxed_slice(),
            pos: 0,
            filled: 0,
            crc: Crc64Digest::default(),
        }
    }

    /// Refills the (fully consumed) buffer, hashing what was consumed. Returns false at end.
    fn refill(&mut self) -> io::Result<bool> {
        self.crc.update(&self.buf[..self.filled]);
        self.pos = 0;
        self.filled = 0;
        loop {
            match self.inner.read(&mut self.buf) {
                Ok(n) => {
                    self.filled = n;
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The CRC of everything consumed so far, and a reader of the rest (unhashed).
    fn finish(mut self) -> (u64, impl Read) {
        self.crc.update(&self.buf[..self.pos]);
        let rest = io::Cursor::new(self.buf[self.pos..self.filled].to_vec()).chain(self.inner);
        (self.crc.finalize(), rest)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.filled && !self.refill()? {
            return Ok(0);
        }
        let n = out.len().min(self.filled - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }

    /// The decoder reads a few bytes at a time: served straight from the buffer when they are
    /// there.
    #[inline]
    fn read_exact(&mut self, out: &mut [u8]) -> io::Result<()> {
        if let Some(src) = self.buf[..self.filled].get(self.pos..self.pos + out.len()) {
            out.copy_from_slice(src);
            self.pos += out.len();
            return Ok(());
        }
        let mut done = 0;
        while done < out.len() {
            match self.read(&mut out[done..])? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => done += n,
            }
        }
        Ok(())
    }
}

/// Shortened, printable form of a key for error messages.
fn key_for_error(key: &[u8]) -> String {
    const MAX: usize = 64;
    let shown = String::from_utf8_lossy(&key[..key.len().min(MAX)]).into_owned();
    if key.len() > MAX {
        format!("{shown}...")
    } else {
        shown
    }
}

/// Reads a whole RDB file, calling `f` for each key in order (an error from `f` stops the read
/// and is returned). Strings longer than `max_string` are refused. The checksum is checked at
/// the end: a caller that must not half-load keeps what `f` received aside until `Ok`.
pub fn read<R: Read>(
    r: R,
    max_string: u64,
    f: impl FnMut(Entry) -> Result<()>,
) -> Result<FileInfo> {
    read_hinted(r, max_string, |_, _| {}, f)
}

/// [`read`], also telling `resize(db, keys)` each database's key count as the file announces it
/// (`RESIZEDB`, before that database's keys), so a loader can size its table once.
pub fn read_hinted<R: Read>(
    r: R,
    max_string: u64,
    mut resize: impl FnMut(u64, u64),
    mut f: impl FnMut(Entry) -> Result<()>,
) -> Result<FileInfo> {
    let mut d = Decoder::new(HashingReader::new(r), max_string);
    let magic: [u8; 9] = d.read_array()?;
    if &magic[..5] != b"REDIS" || !magic[5..].iter().all(u8::is_ascii_digit) {
        return Err(RdbError::Malformed("not an RDB file"));
    }
    let version: u16 = std::str::from_utf8(&magic[5..])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(RdbError::Malformed("bad RDB version"))?;
    if version == 0 || version > MAX_FILE_VERSION {
        return Err(RdbError::Malformed("unsupported RDB version"));
    }
    let mut info = FileInfo {
        version,
        ..FileInfo::default()
    };
    let (mut db, mut expire) = (0u64, None);
    loop {
        let op = d.read_u8()?;
        match op {
            opcode::EOF => break,
            opcode::SELECTDB => db = d.read_length()?,
            opcode::RESIZEDB => {
                let keys = d.read_length()?;
                d.read_length()?;
                resize(db, keys);
            }
            opcode::SLOT_INFO => {
                for _ in 0..3 {
                    d.read_length()?;
                }
            }
            opcode::AUX => {
                let k = d.read_string()?;
                let v = d.read_string()?;
                info.aux.push((k, v));
            }
            opcode::EXPIRETIME_MS => {
                expire = Some(u64::from_le_bytes(d.read_array()?));
            }
            opcode::EXPIRETIME => {
                expire = Some(u64::from(u32::from_le_bytes(d.read_array()?)) * 1000);
            }
            opcode::IDLE => {
                d.read_length()?;
            }
            opcode::FREQ => {
                d.read_u8()?;
            }
            opcode::FUNCTION2 => info.functions.push(d.read_string()?),
            opcode::FUNCTION_PRE_GA => return Err(RdbError::FunctionPreGa),
            opcode::MODULE_AUX => {
                return Err(RdbError::Module(
                    "module auxiliary data, RDB_OPCODE_MODULE_AUX",
                ));
            }
            t if types::is_value_type(t) => {
                let key = d.read_string()?;
                let value = match d.read_value(t) {
                    Ok(v) => v,
                    Err(RdbError::EmptyKey) => {
                        info.empty_keys_skipped += 1;
                        expire = None;
                        continue;
                    }
                    Err(e) => {
                        return Err(RdbError::AtKey {
                            key: key_for_error(&key),
                            source: Box::new(e),
                        });
                    }
                };
                f(Entry {
                    db,
                    key,
                    expire_at_ms: expire.take(),
                    value,
                })?;
            }
            other => return Err(RdbError::UnknownOpcode(other)),
        }
    }
    if version >= 5 {
        let (expected, mut rest) = d.into_inner().finish();
        let mut footer = [0u8; 8];
        rest.read_exact(&mut footer)
            .map_err(|_| RdbError::Truncated)?;
        let stored = u64::from_le_bytes(footer);
        if stored != 0 {
            if stored != expected {
                return Err(RdbError::Malformed("RDB checksum mismatch"));
            }
            info.checksum_verified = true;
        }
    }
    Ok(info)
}

/// Bytes buffered before they are hashed and written.
const WRITE_CHUNK: usize = 256 * 1024;

/// A buffered writer that hashes what passes through in whole chunks.
struct HashingWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
    crc: Crc64Digest,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            buf: Vec::with_capacity(WRITE_CHUNK),
            crc: Crc64Digest::default(),
            written: 0,
        }
    }

    fn drain(&mut self) -> io::Result<()> {
        self.crc.update(&self.buf);
        self.inner.write_all(&self.buf)?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > WRITE_CHUNK {
            self.drain()?;
        }
        if data.len() >= WRITE_CHUNK {
            self.crc.update(data);
            self.inner.write_all(data)?;
            self.written += data.len() as u64;
        } else {
            self.buf.extend_from_slice(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.drain()?;
        self.inner.flush()
    }
}

/// Writes an RDB file in the order Redis writes one: header, auxiliary fields, function
/// libraries, then each database (SELECTDB + RESIZEDB) with its keys, then EOF and the CRC-64.
/// The version is Redis 7.0's ([`crate::RDB_VERSION`]), so every 7.x server loads the file;
/// values are written in the plain encodings ([`Encoder::write_value`]) that Redis converts to its
/// compact ones on load.
pub struct Writer<W: Write> {
    enc: Encoder<HashingWriter<W>>,
    /// Where the file is: functions may only come before the first database.
    in_db: bool,
}

impl<W: Write> Writer<W> {
    /// Starts a file: writes the header.
    pub fn new(w: W) -> Result<Self> {
        let mut enc = Encoder::new(HashingWriter::new(w));
        enc.write_raw(format!("REDIS{:04}", crate::RDB_VERSION).as_bytes())?;
        Ok(Writer { enc, in_db: false })
    }

    /// An auxiliary field (Redis writes `redis-ver`, `redis-bits`, `ctime`, `used-mem`,
    /// `aof-base`; loaders skip fields they do not know).
    pub fn aux(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.enc.write_u8(opcode::AUX)?;
        self.enc.write_string(key)?;
        self.enc.write_string(value)
    }

    /// A function library's code (as `FUNCTION LOAD` took it). Before the first database.
    pub fn function(&mut self, code: &[u8]) -> Result<()> {
        if self.in_db {
            return Err(RdbError::Malformed(
                "function libraries come before the databases",
            ));
        }
        self.enc.write_u8(opcode::FUNCTION2)?;
        self.enc.write_string_raw(code)
    }

    /// Starts database `db` with `keys` keys of which `expires` have a TTL (Redis's resize
    /// hint: counts written here need only be close).
    pub fn select_db(&mut self, db: u64, keys: u64, expires: u64) -> Result<()> {
        self.in_db = true;
        self.enc.write_u8(opcode::SELECTDB)?;
        self.enc.write_length(db)?;
        self.enc.write_u8(opcode::RESIZEDB)?;
        self.enc.write_length(keys)?;
        self.enc.write_length(expires)
    }

    /// One key of the current database, with its absolute expiry in Unix milliseconds.
    pub fn key(&mut self, key: &[u8], expire_at_ms: Option<u64>, value: &Value) -> Result<()> {
        if !self.in_db {
            self.select_db(0, 0, 0)?;
        }
        if let Some(at) = expire_at_ms {
            self.enc.write_u8(opcode::EXPIRETIME_MS)?;
            self.enc.write_raw(&at.to_le_bytes())?;
        }
        self.enc.write_value_with_key(key, value)
    }

    /// Bytes written so far (before buffering).
    pub fn bytes_written(&self) -> u64 {
        let h = self.enc.inner();
        h.written + h.buf.len() as u64
    }

    /// Writes EOF and the checksum, flushes, and gives the sink back.
    pub fn finish(mut self) -> Result<W> {
        self.enc.write_u8(opcode::EOF)?;
        let mut h = self.enc.into_inner();
        h.drain()?;
        let crc = std::mem::take(&mut h.crc).finalize();
        h.inner.write_all(&crc.to_le_bytes())?;
        h.inner.flush()?;
        Ok(h.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Stream, StreamEntry, StreamId};

    fn sample() -> Vec<Entry> {
        let mut out = Vec::new();
        let mut add = |db, key: &str, expire_at_ms, value| {
            out.push(Entry {
                db,
                key: key.as_bytes().to_vec(),
                expire_at_ms,
                value,
            })
        };
        add(0, "s", None, Value::String(b"hello".to_vec()));
        add(
            0,
            "n",
            Some(1_900_000_000_000),
            Value::String(b"42".to_vec()),
        );
        add(
            0,
            "l",
            None,
            Value::List(vec![b"a".to_vec(), b"1".to_vec()]),
        );
        add(0, "set", None, Value::Set(vec![b"x".to_vec()]));
        add(0, "z", None, Value::ZSet(vec![(b"m".to_vec(), -1.5)]));
        add(
            0,
            "h",
            None,
            Value::Hash(vec![(b"f".to_vec(), b"v".to_vec())]),
        );
        add(
            3,
            "st",
            Some(2_000_000_000_000),
            Value::Stream(Box::new(Stream {
                entries: vec![StreamEntry {
                    id: StreamId { ms: 5, seq: 1 },
                    fields: vec![(b"f".to_vec(), b"v".to_vec())],
                }],
                last_id: StreamId { ms: 5, seq: 1 },
                first_id: StreamId { ms: 5, seq: 1 },
                entries_added: 1,
                ..Stream::default()
            })),
        );
        out
    }

    fn write(entries: &[Entry], functions: &[&[u8]]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new()).unwrap();
        w.aux(b"redis-ver", b"7.0.0").unwrap();
        w.aux(b"redis-bits", b"64").unwrap();
        for f in functions {
            w.function(f).unwrap();
        }
        let mut db = None;
        for e in entries {
            if db != Some(e.db) {
                w.select_db(e.db, 1, 0).unwrap();
                db = Some(e.db);
            }
            w.key(&e.key, e.expire_at_ms, &e.value).unwrap();
        }
        w.finish().unwrap()
    }

    fn read_all(bytes: &[u8]) -> Result<(FileInfo, Vec<Entry>)> {
        let mut out = Vec::new();
        let info = read(bytes, 1 << 20, |e| {
            out.push(e);
            Ok(())
        })?;
        Ok((info, out))
    }

    const LIB: &[u8] = b"#!lua name=mylib\nredis.register_function('f', function() return 1 end)";

    #[test]
    fn files_round_trip() {
        let entries = sample();
        let bytes = write(&entries, &[LIB]);
        assert_eq!(&bytes[..9], b"REDIS0010");
        let (info, back) = read_all(&bytes).unwrap();
        assert_eq!(back, entries);
        assert_eq!(info.version, 10);
        assert!(info.checksum_verified);
        assert_eq!(info.functions, vec![LIB.to_vec()]);
        assert_eq!(info.aux[0], (b"redis-ver".to_vec(), b"7.0.0".to_vec()));
    }

    #[test]
    fn functions_come_before_databases() {
        let mut w = Writer::new(Vec::new()).unwrap();
        w.select_db(0, 0, 0).unwrap();
        assert!(w.function(LIB).is_err());
    }

    /// A file made of `body` after a version 10 header, with a correct footer.
    fn file(body: &[u8]) -> Vec<u8> {
        let mut b = b"REDIS0010".to_vec();
        b.extend_from_slice(body);
        b.push(opcode::EOF);
        let crc = crate::crc64(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn modules_and_unknown_opcodes_are_refused_clearly() {
        let module_aux = file(&[opcode::MODULE_AUX, 0x81, 1, 2, 3, 4, 5, 6, 7, 8]);
        let e = read_all(&module_aux).unwrap_err();
        assert!(matches!(e, RdbError::Module(_)), "{e}");
        assert!(e.to_string().contains("Ferrite loads no modules"), "{e}");
        // A module value (type 7) under key "mk".
        let module_value = file(&[types::MODULE_2, 2, b'm', b'k', 0x81, 1, 2, 3, 4, 5, 6, 7]);
        let e = read_all(&module_value).unwrap_err();
        assert_eq!(
            e.to_string(),
            "key 'mk': value type 7 (module value: Ferrite loads no Redis modules) is not supported"
        );
        let unknown = file(&[200, 1, b'k']);
        assert_eq!(
            read_all(&unknown).unwrap_err().to_string(),
            "unknown RDB opcode or value type 200"
        );
        let hfe = file(&[types::HASH_LISTPACK_EX, 1, b'h', 0]);
        assert!(
            read_all(&hfe)
                .unwrap_err()
                .to_string()
                .contains("hash with field expirations")
        );
        let pre_ga = file(&[opcode::FUNCTION_PRE_GA, 0]);
        assert!(matches!(
            read_all(&pre_ga).unwrap_err(),
            RdbError::FunctionPreGa
        ));
    }

    /// What Redis 7.2 writes that 7.0 does not: RDB version 11, small sets as listpacks
    /// (`RDB_TYPE_SET_LISTPACK`, members strings and integers alike). No redis-server 7.2 is
    /// installed for the tests, so the bytes are made here, as 7.2's `rdbSaveObject` lays them
    /// out: the type, the key, the listpack as one string.
    #[test]
    fn redis_7_2_files_with_listpack_sets_are_read() {
        // ["a", 5, -1, 1000, "hello"]: str6, uint7, int13 (-1), int13 (1000), str6.
        let mut lp_body = vec![0x81, b'a', 2, 0x05, 1, 0xDF, 0xFF, 2, 0xC3, 0xE8, 2];
        lp_body.extend_from_slice(&[0x85, b'h', b'e', b'l', b'l', b'o', 6, 0xFF]);
        let mut lp = ((lp_body.len() + 6) as u32).to_le_bytes().to_vec();
        lp.extend_from_slice(&5u16.to_le_bytes());
        lp.extend_from_slice(&lp_body);
        let mut body = vec![opcode::SELECTDB, 0, types::SET_LISTPACK, 1, b's'];
        body.push(lp.len() as u8);
        body.extend_from_slice(&lp);
        let mut bytes = file(&body);
        bytes[..9].copy_from_slice(b"REDIS0011");
        let n = bytes.len();
        let crc = crate::crc64(&bytes[..n - 8]);
        bytes[n - 8..].copy_from_slice(&crc.to_le_bytes());
        let (info, back) = read_all(&bytes).unwrap();
        assert_eq!(info.version, 11);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].key, b"s");
        let members: Vec<&[u8]> = match &back[0].value {
            Value::Set(m) => m.iter().map(Vec::as_slice).collect(),
            other => panic!("not a set: {other:?}"),
        };
        assert_eq!(
            members,
            [&b"a"[..], b"5", b"-1", b"1000", b"hello"],
            "members in listpack order"
        );
    }

    #[test]
    fn empty_keys_are_skipped_slot_info_is_ignored() {
        // An empty plain list "e" with a TTL (skipped, TTL not carried over), then SLOT_INFO,
        // then a string "k".
        let body = [
            &[opcode::EXPIRETIME_MS][..],
            &5u64.to_le_bytes(),
            &[types::LIST, 1, b'e', 0],
            &[opcode::SLOT_INFO, 1, 2, 3],
            &[types::STRING, 1, b'k', 1, b'v'],
        ]
        .concat();
        let (info, keys) = read_all(&file(&body)).unwrap();
        assert_eq!(info.empty_keys_skipped, 1);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].expire_at_ms, None);
    }

    #[test]
    fn checksum_zero_is_accepted_wrong_is_refused() {
        let mut bytes = write(&sample(), &[]);
        let n = bytes.len();
        bytes[n - 8..].copy_from_slice(&[0; 8]);
        let (info, _) = read_all(&bytes).unwrap();
        assert!(!info.checksum_verified);
        bytes[n - 1] = 1;
        assert!(read_all(&bytes).is_err());
    }

    #[test]
    fn large_files_cross_buffer_boundaries() {
        // Values larger than the read and write chunks, and many small ones.
        let mut entries = vec![Entry {
            db: 0,
            key: b"big".to_vec(),
            expire_at_ms: None,
            value: Value::String(vec![b'x'; 3 * READ_CHUNK + 7]),
        }];
        for i in 0..20_000u32 {
            entries.push(Entry {
                db: 0,
                key: format!("k{i}").into_bytes(),
                expire_at_ms: (i % 3 == 0).then_some(1_900_000_000_000 + u64::from(i)),
                value: Value::List(vec![i.to_string().into_bytes(); 3]),
            });
        }
        let bytes = write(&entries, &[]);
        let mut out = Vec::new();
        read(bytes.as_slice(), 1 << 22, |e| {
            out.push(e);
            Ok(())
        })
        .unwrap();
        assert_eq!(out, entries);
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..30);
        prop_oneof![
            bytes().prop_map(Value::String),
            proptest::collection::vec(bytes(), 1..10).prop_map(Value::List),
            proptest::collection::btree_set(bytes(), 1..10)
                .prop_map(|s| Value::Set(s.into_iter().collect())),
            proptest::collection::btree_map(bytes(), -1e9f64..1e9, 1..10)
                .prop_map(|m| Value::ZSet(m.into_iter().collect())),
            proptest::collection::btree_map(bytes(), bytes(), 1..10)
                .prop_map(|m| Value::Hash(m.into_iter().collect())),
        ]
    }

    /// Key, expiry, value.
    type Keys = Vec<(Vec<u8>, Option<u64>, Value)>;

    fn entries() -> impl Strategy<Value = Keys> {
        proptest::collection::vec(
            (
                proptest::collection::vec(any::<u8>(), 0..12),
                proptest::option::of(any::<u64>()),
                value(),
            ),
            0..8,
        )
    }

    fn write(entries: &Keys) -> Vec<u8> {
        let mut w = Writer::new(Vec::new()).unwrap();
        w.aux(b"ctime", b"1700000000").unwrap();
        w.function(b"#!lua name=l\n").unwrap();
        w.select_db(0, entries.len() as u64, 0).unwrap();
        for (k, at, v) in entries {
            w.key(k, *at, v).unwrap();
        }
        w.finish().unwrap()
    }

    fn load(bytes: &[u8]) -> Result<Keys> {
        let mut out = Vec::new();
        read(bytes, 1 << 16, |e| {
            out.push((e.key, e.expire_at_ms, e.value));
            Ok(())
        })?;
        Ok(out)
    }

    proptest! {
        #[test]
        fn written_files_read_back(es in entries()) {
            prop_assert_eq!(load(&write(&es)).unwrap(), es);
        }

        /// Every proper prefix of a file is an error (never a panic, never a success).
        #[test]
        fn truncated_files_are_refused(es in entries(), cut in any::<usize>()) {
            let bytes = write(&es);
            let cut = cut % bytes.len();
            prop_assert!(load(&bytes[..cut]).is_err());
        }

        /// One byte changed: the checksum refuses it, or (when the change is in the footer
        /// itself) it is refused too; with the checksum fixed up the decoder must still not
        /// panic.
        #[test]
        fn mutated_files_never_panic(es in entries(), at in any::<usize>(), byte in any::<u8>()) {
            let mut bytes = write(&es);
            let at = at % bytes.len();
            let changed = bytes[at] != byte;
            bytes[at] = byte;
            // The header's version digits (a version before 5 has no checksum) and the footer
            // (a zero checksum means "not computed") are left out of the "must fail" check.
            if changed && at >= 9 && at < bytes.len() - 8 {
                prop_assert!(load(&bytes).is_err());
            }
            let n = bytes.len();
            let crc = crate::crc64(&bytes[..n - 8]);
            bytes[n - 8..].copy_from_slice(&crc.to_le_bytes());
            let _ = load(&bytes);
        }

        /// Arbitrary bytes after a valid header, with a valid checksum.
        #[test]
        fn garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut b = b"REDIS0010".to_vec();
            b.extend_from_slice(&body);
            let crc = crate::crc64(&b);
            b.extend_from_slice(&crc.to_le_bytes());
            let _ = load(&b);
        }
    }
}
