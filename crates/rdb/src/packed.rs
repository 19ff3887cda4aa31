//! Redis's packed collection blobs, decoded into elements: listpack, ziplist, intset and zipmap.
//! Integers stored in them come back as their decimal text (what Redis returns for them).
//! Every offset is checked against the blob; a blob whose header disagrees with its content is
//! malformed.

use crate::{RdbError, Result};

fn bad(what: &'static str) -> RdbError {
    RdbError::Malformed(what)
}

fn slice(b: &[u8], at: usize, n: usize) -> Result<&[u8]> {
    at.checked_add(n)
        .and_then(|end| b.get(at..end))
        .ok_or_else(|| bad("packed entry runs past its blob"))
}

fn int_le(b: &[u8]) -> i64 {
    // Sign-extends a little-endian integer of 1..=8 bytes.
    let mut v: u64 = 0;
    for (i, &x) in b.iter().enumerate() {
        v |= u64::from(x) << (8 * i);
    }
    let bits = 8 * b.len() as u32;
    if bits < 64 && v & (1 << (bits - 1)) != 0 {
        v |= u64::MAX << bits;
    }
    v as i64
}

fn text(n: i64) -> Vec<u8> {
    n.to_string().into_bytes()
}

/// Bytes a listpack uses to store an entry's length backwards.
fn backlen_size(n: usize) -> usize {
    match n {
        // Redis's lpEncodeBacklen: 16383 takes 3 bytes, and so on.
        0..=127 => 1,
        128..=16382 => 2,
        16383..=2097150 => 3,
        2097151..=268435454 => 4,
        _ => 5,
    }
}

/// The elements of a listpack.
pub fn listpack(b: &[u8]) -> Result<Vec<Vec<u8>>> {
    let header = slice(b, 0, 6)?;
    let total = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if total != b.len() {
        return Err(bad("listpack size differs from its header"));
    }
    let declared = u16::from_le_bytes([header[4], header[5]]);
    // Sized from the header's count (each element takes at least 2 bytes of the blob, so a
    // forged count allocates no more than the blob could hold).
    let mut out = Vec::with_capacity(usize::from(declared).min(b.len() / 2));
    let mut p = 6;
    loop {
        let first = *b.get(p).ok_or_else(|| bad("listpack without terminator"))?;
        if first == 0xFF {
            if p + 1 != b.len() {
                return Err(bad("data after the listpack terminator"));
            }
            break;
        }
        let (value, size) = match first {
            f if f & 0x80 == 0 => (text(i64::from(f & 0x7f)), 1),
            f if f & 0xC0 == 0x80 => {
                let len = usize::from(f & 0x3f);
                (slice(b, p + 1, len)?.to_vec(), 1 + len)
            }
            f if f & 0xE0 == 0xC0 => {
                let lo = *slice(b, p + 1, 1)?.first().unwrap_or(&0);
                let raw = (i64::from(f & 0x1f) << 8) | i64::from(lo);
                let v = if raw >= 1 << 12 { raw - (1 << 13) } else { raw };
                (text(v), 2)
            }
            f if f & 0xF0 == 0xE0 => {
                let lo = *slice(b, p + 1, 1)?.first().unwrap_or(&0);
                let len = (usize::from(f & 0x0f) << 8) | usize::from(lo);
                (slice(b, p + 2, len)?.to_vec(), 2 + len)
            }
            0xF0 => {
                let l = slice(b, p + 1, 4)?;
                let len = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
                (slice(b, p + 5, len)?.to_vec(), 5 + len)
            }
            0xF1 => (text(int_le(slice(b, p + 1, 2)?)), 3),
            0xF2 => (text(int_le(slice(b, p + 1, 3)?)), 4),
            0xF3 => (text(int_le(slice(b, p + 1, 4)?)), 5),
            0xF4 => (text(int_le(slice(b, p + 1, 8)?)), 9),
            _ => return Err(bad("unknown listpack encoding")),
        };
        out.push(value);
        p += size + backlen_size(size);
    }
    // 65535 means "count unknown, walk it".
    if declared != u16::MAX && usize::from(declared) != out.len() {
        return Err(bad("listpack element count differs from its header"));
    }
    Ok(out)
}

/// The elements of a ziplist.
pub fn ziplist(b: &[u8]) -> Result<Vec<Vec<u8>>> {
    let header = slice(b, 0, 10)?;
    let total = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if total != b.len() {
        return Err(bad("ziplist size differs from its header"));
    }
    let declared = u16::from_le_bytes([header[8], header[9]]);
    // As in `listpack`: an element takes at least 2 bytes.
    let mut out = Vec::with_capacity(usize::from(declared).min(b.len() / 2));
    let mut p = 10;
    loop {
        let first = *b.get(p).ok_or_else(|| bad("ziplist without terminator"))?;
        if first == 0xFF {
            if p + 1 != b.len() {
                return Err(bad("data after the ziplist terminator"));
            }
            break;
        }
        // The previous entry's length: 1 byte, or 0xFE and 4 bytes.
        p += match first {
            0xFE => 5,
            _ => 1,
        };
        let enc = *b.get(p).ok_or_else(|| bad("ziplist entry cut short"))?;
        let (value, size) = match enc >> 6 {
            0 => {
                let len = usize::from(enc & 0x3f);
                (slice(b, p + 1, len)?.to_vec(), 1 + len)
            }
            1 => {
                let lo = *slice(b, p + 1, 1)?.first().unwrap_or(&0);
                let len = (usize::from(enc & 0x3f) << 8) | usize::from(lo);
                (slice(b, p + 2, len)?.to_vec(), 2 + len)
            }
            2 => {
                let l = slice(b, p + 1, 4)?;
                let len = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
                (slice(b, p + 5, len)?.to_vec(), 5 + len)
            }
            _ => match enc {
                0xC0 => (text(int_le(slice(b, p + 1, 2)?)), 3),
                0xD0 => (text(int_le(slice(b, p + 1, 4)?)), 5),
                0xE0 => (text(int_le(slice(b, p + 1, 8)?)), 9),
                0xF0 => (text(int_le(slice(b, p + 1, 3)?)), 4),
                0xFE => (text(int_le(slice(b, p + 1, 1)?)), 2),
                0xF1..=0xFD => (text(i64::from(enc & 0x0f) - 1), 1),
                _ => return Err(bad("unknown ziplist encoding")),
            },
        };
        out.push(value);
        p += size;
    }
    if declared != u16::MAX && usize::from(declared) != out.len() {
        return Err(bad("ziplist element count differs from its header"));
    }
    Ok(out)
}

/// The members of an intset.
pub fn intset(b: &[u8]) -> Result<Vec<Vec<u8>>> {
    let header = slice(b, 0, 8)?;
    let width = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if !matches!(width, 2 | 4 | 8) {
        return Err(bad("unknown intset encoding"));
    }
    if len.checked_mul(width).and_then(|n| n.checked_add(8)) != Some(b.len()) {
        return Err(bad("intset size differs from its header"));
    }
    Ok(b[8..]
        .chunks_exact(width)
        .map(|c| text(int_le(c)))
        .collect())
}

/// The field/value pairs of a zipmap (hashes of RDB files older than Redis 2.6).
pub fn zipmap(b: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut p = 1; // zmlen
    let mut out = Vec::new();
    let read_len = |p: &mut usize| -> Result<Option<usize>> {
        let first = *b.get(*p).ok_or_else(|| bad("zipmap without terminator"))?;
        match first {
            0xFF => Ok(None),
            254 => {
                let l = slice(b, *p + 1, 4)?;
                *p += 5;
                Ok(Some(u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize))
            }
            n => {
                *p += 1;
                Ok(Some(usize::from(n)))
            }
        }
    };
    while let Some(klen) = read_len(&mut p)? {
        let key = slice(b, p, klen)?.to_vec();
        p += klen;
        let vlen = read_len(&mut p)?.ok_or_else(|| bad("zipmap key without value"))?;
        let free = usize::from(*b.get(p).ok_or_else(|| bad("zipmap cut short"))?);
        p += 1;
        let value = slice(b, p, vlen)?.to_vec();
        p += vlen + free;
        out.push((key, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[Vec<u8>]) -> Vec<String> {
        v.iter()
            .map(|x| String::from_utf8_lossy(x).into_owned())
            .collect()
    }

    #[test]
    fn listpack_entries() {
        // ["a", 5, -1, 1000, "hello"]: str6, uint7, int13 (-1), int13 (1000), str6.
        let mut body = vec![0x81, b'a', 2, 0x05, 1, 0xDF, 0xFF, 2, 0xC3, 0xE8, 2];
        body.extend_from_slice(&[0x85, b'h', b'e', b'l', b'l', b'o', 6, 0xFF]);
        let mut lp = ((body.len() + 6) as u32).to_le_bytes().to_vec();
        lp.extend_from_slice(&5u16.to_le_bytes());
        lp.extend_from_slice(&body);
        assert_eq!(
            strs(&listpack(&lp).unwrap()),
            ["a", "5", "-1", "1000", "hello"]
        );
        let mut short = lp.clone();
        short.truncate(lp.len() - 3);
        assert!(listpack(&short).is_err());
    }

    #[test]
    fn ziplist_entries() {
        // [prevlen][enc][data]: "ab", imm 7, int16 300
        let mut body = vec![0, 0x02, b'a', b'b', 4, 0xF8, 2, 0xC0];
        body.extend_from_slice(&300i16.to_le_bytes());
        body.push(0xFF);
        let mut zl = ((body.len() + 10) as u32).to_le_bytes().to_vec();
        zl.extend_from_slice(&0u32.to_le_bytes());
        zl.extend_from_slice(&3u16.to_le_bytes());
        zl.extend_from_slice(&body);
        assert_eq!(strs(&ziplist(&zl).unwrap()), ["ab", "7", "300"]);
    }

    #[test]
    fn intset_members() {
        let mut b = 2u32.to_le_bytes().to_vec();
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&(-5i16).to_le_bytes());
        b.extend_from_slice(&7i16.to_le_bytes());
        assert_eq!(strs(&intset(&b).unwrap()), ["-5", "7"]);
        b.pop();
        assert!(intset(&b).is_err());
    }
}
