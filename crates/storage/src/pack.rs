//! The packed form of small collections (Redis's listpack, in spirit): elements one after the
//! other in one byte buffer, each as a LEB128 length followed by its bytes. Walking is linear,
//! which is what makes it compact; it is only used up to the `*-max-listpack-*` thresholds.

/// Appends an element.
pub(crate) fn put(buf: &mut Vec<u8>, e: &[u8]) {
    buf.reserve_exact(e.len() + 5);
    put_len(buf, e.len());
    buf.extend_from_slice(e);
}

/// The bytes `e` takes in a buffer.
pub(crate) fn encoded_len(e: &[u8]) -> usize {
    len_of_len(e.len()) + e.len()
}

fn len_of_len(mut n: usize) -> usize {
    let mut k = 1;
    while n >= 0x80 {
        n >>= 7;
        k += 1;
    }
    k
}

fn put_len(buf: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        buf.push((n as u8) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

/// The element at `pos` and the position after it. `pos` must be the start of an element of a
/// buffer built by [`put`] (positions never come from outside the value).
#[inline]
pub(crate) fn read(buf: &[u8], mut pos: usize) -> (&[u8], usize) {
    let mut n = 0usize;
    let mut shift = 0;
    loop {
        let b = buf[pos];
        pos += 1;
        n |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    (&buf[pos..pos + n], pos + n)
}

/// Replaces the bytes `[from, to)` with the encoding of `items`.
pub(crate) fn splice(buf: &mut Vec<u8>, from: usize, to: usize, items: &[&[u8]]) {
    let mut enc = Vec::with_capacity(items.iter().map(|e| encoded_len(e)).sum());
    for e in items {
        put(&mut enc, e);
    }
    let grow = enc.len().saturating_sub(to - from);
    buf.reserve_exact(grow);
    buf.splice(from..to, enc);
    if buf.capacity() > buf.len() + buf.len() / 4 + 16 {
        buf.shrink_to_fit();
    }
}

/// Walks the elements of a buffer.
#[derive(Clone)]
pub(crate) struct Iter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iter<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Iter { buf, pos: 0 }
    }

    /// Position of the next element.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let (e, next) = read(self.buf, self.pos);
        self.pos = next;
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_read_splice() {
        let mut b = Vec::new();
        let long = vec![7u8; 300];
        for e in [&b"a"[..], b"", &long, b"xyz"] {
            put(&mut b, e);
        }
        let all: Vec<&[u8]> = Iter::new(&b).collect();
        assert_eq!(all, vec![&b"a"[..], b"", &long[..], b"xyz"]);
        // Replace the long element by two short ones.
        let (_, after_a) = read(&b, 0);
        let (_, after_empty) = read(&b, after_a);
        let (_, after_long) = read(&b, after_empty);
        splice(&mut b, after_empty, after_long, &[b"p", b"q"]);
        let all: Vec<&[u8]> = Iter::new(&b).collect();
        assert_eq!(all, vec![&b"a"[..], b"", b"p", b"q", b"xyz"]);
        assert_eq!(encoded_len(&long), 302);
    }
}
