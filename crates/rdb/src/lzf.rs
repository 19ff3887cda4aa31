//! LZF decompression (the format of liblzf, which Redis uses for compressed RDB strings). Every
//! read and copy is bounds-checked: corrupt input is an error, never a panic or an overrun.

use crate::{RdbError, Result};

/// Decompresses `input`, which must expand to exactly `out_len` bytes.
pub fn decompress(input: &[u8], out_len: usize) -> Result<Vec<u8>> {
    let bad = || RdbError::Malformed("corrupt LZF data");
    let mut out: Vec<u8> = Vec::with_capacity(out_len);
    let mut i = 0;
    while i < input.len() {
        let ctrl = usize::from(input[i]);
        i += 1;
        if ctrl < 32 {
            // A literal run of ctrl + 1 bytes.
            let run = ctrl + 1;
            let lit = input.get(i..i + run).ok_or_else(bad)?;
            if out.len() + run > out_len {
                return Err(bad());
            }
            out.extend_from_slice(lit);
            i += run;
        } else {
            // A back reference: copy len + 2 bytes from `distance` bytes back.
            let mut len = ctrl >> 5;
            if len == 7 {
                len += usize::from(*input.get(i).ok_or_else(bad)?);
                i += 1;
            }
            let low = usize::from(*input.get(i).ok_or_else(bad)?);
            i += 1;
            let distance = ((ctrl & 0x1f) << 8) + low + 1;
            let len = len + 2;
            if distance > out.len() || out.len() + len > out_len {
                return Err(bad());
            }
            let start = out.len() - distance;
            // The source may overlap what is being written (a run), so copy byte by byte.
            for k in 0..len {
                let b = out[start + k];
                out.push(b);
            }
        }
    }
    if out.len() != out_len {
        return Err(bad());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_back_references() {
        // Literal 'a', then a reference: ctrl 0xE0 (length 7 + next byte 1 = 8, copies 10),
        // distance ((0) << 8) + 0 + 1 = 1.
        let data = [0x00, b'a', (7 << 5), 1, 0x00];
        assert_eq!(decompress(&data, 11).unwrap(), b"aaaaaaaaaaa");
        assert!(decompress(&data, 12).is_err());
        assert!(decompress(&data[..4], 11).is_err());
        assert!(decompress(&[0x05, b'a'], 6).is_err());
        assert!(
            decompress(&[0x20, 0x05], 10).is_err(),
            "reference before the start"
        );
    }
}
