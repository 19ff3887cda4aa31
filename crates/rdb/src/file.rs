//! Reading whole RDB files: the `REDIS<version>` header, auxiliary fields, database selectors,
//! expiry times, key/value pairs and the EOF marker with its CRC-64. This is the reading half of
//! the file format (backups build on it); values go through [`Decoder::read_value`].

use std::io::Read;

use crate::{Crc64Digest, Decoder, MAX_READ_VERSION, RdbError, Result, Value};

/// Opcodes between values (Redis's `RDB_OPCODE_*`).
mod opcode {
    pub const FUNCTION2: u8 = 245;
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
    /// Whether the file carried a checksum (0 means Redis wrote it with `rdbchecksum no`).
    pub checksum_verified: bool,
}

/// Hashes what passes through, for the trailing checksum.
struct Hashing<R> {
    inner: R,
    crc: Crc64Digest,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads a whole RDB file, calling `f` for each key in order. Strings longer than `max_string`
/// are refused.
pub fn read<R: Read>(
    r: R,
    max_string: u64,
    mut f: impl FnMut(Entry) -> Result<()>,
) -> Result<FileInfo> {
    let mut d = Decoder::new(
        Hashing {
            inner: r,
            crc: Crc64Digest::default(),
        },
        max_string,
    );
    let mut magic = [0u8; 9];
    for b in &mut magic {
        *b = d.read_u8()?;
    }
    if &magic[..5] != b"REDIS" || !magic[5..].iter().all(u8::is_ascii_digit) {
        return Err(RdbError::Malformed("not an RDB file"));
    }
    let version: u16 = std::str::from_utf8(&magic[5..])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(RdbError::Malformed("bad RDB version"))?;
    if version == 0 || version > MAX_READ_VERSION {
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
                d.read_length()?;
                d.read_length()?;
            }
            opcode::AUX => {
                let k = d.read_string()?;
                let v = d.read_string()?;
                info.aux.push((k, v));
            }
            opcode::EXPIRETIME_MS => {
                let mut b = [0u8; 8];
                for x in &mut b {
                    *x = d.read_u8()?;
                }
                expire = Some(u64::from_le_bytes(b));
            }
            opcode::EXPIRETIME => {
                let mut b = [0u8; 4];
                for x in &mut b {
                    *x = d.read_u8()?;
                }
                expire = Some(u64::from(u32::from_le_bytes(b)) * 1000);
            }
            opcode::IDLE => {
                d.read_length()?;
            }
            opcode::FREQ => {
                d.read_u8()?;
            }
            opcode::FUNCTION2 | opcode::MODULE_AUX => return Err(RdbError::Unsupported(op)),
            t => {
                let key = d.read_string()?;
                let value = d.read_value(t)?;
                f(Entry {
                    db,
                    key,
                    expire_at_ms: expire.take(),
                    value,
                })?;
            }
        }
    }
    if version >= 5 {
        let Hashing { mut inner, crc } = d.into_inner();
        let expected = crc.finalize();
        let mut footer = [0u8; 8];
        inner
            .read_exact(&mut footer)
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
