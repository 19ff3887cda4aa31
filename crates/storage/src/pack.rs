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

pub(crate) fn len_of_len(mut n: usize) -> usize {
    let mut k = 1;
    while n >= 0x80 {
        n >>= 7;
        k += 1;
    }
    k
}

pub(crate) fn put_len(buf: &mut Vec<u8>, mut n: usize) {
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

/// Bytes of a [`Packed`] header: the element count (u32) and the collection's digest sum
/// (u64), little-endian.
pub(crate) const HEADER: usize = 12;

/// Most elements a [`Packed`] form holds (its count is a u32); the `*-max-listpack-entries`
/// thresholds are capped at this, so a larger collection is converted to its full form.
pub(crate) const MAX_COUNT: usize = u32::MAX as usize;

/// A small collection as one allocation: a [`HEADER`] (element count, digest sum) followed by
/// the elements (its *body*). The value holds this directly, so a small hash, set, sorted set
/// or list costs one malloc chunk and nothing next to it. The buffer is kept at its exact size
/// (no capacity field): every edit reallocates, which glibc does in place when the chunk has
/// room, and the packed forms only live up to the listpack thresholds.
#[derive(Clone)]
pub(crate) struct Packed(Box<[u8]>);

impl Default for Packed {
    fn default() -> Self {
        Packed(Box::new([0; HEADER]))
    }
}

impl Packed {
    /// A buffer to build a body into (the header's room first); see [`Packed::finish`].
    pub(crate) fn start(body_capacity: usize) -> Vec<u8> {
        let mut buf = Vec::with_capacity(HEADER + body_capacity);
        buf.resize(HEADER, 0);
        buf
    }

    /// The packed form of a buffer from [`Packed::start`] holding `count` elements.
    pub(crate) fn finish(buf: Vec<u8>, count: usize, sum: u64) -> Packed {
        debug_assert!(buf.len() >= HEADER && count <= MAX_COUNT);
        let mut p = Packed(buf.into_boxed_slice());
        p.set_len(count);
        p.set_sum(sum);
        p
    }

    /// A read-only view of the same bytes (what a view of the collection is built from).
    #[inline]
    pub(crate) fn as_ref(&self) -> PackedRef<'_> {
        PackedRef(&self.0)
    }

    /// A packed form holding a copy of `bytes` (header and body), as [`Packed::bytes`] gave them.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Packed {
        debug_assert!(bytes.len() >= HEADER);
        Packed(bytes.into())
    }

    /// The whole allocation: header and body (a compact entry keeps them inside its own).
    #[inline]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Number of elements.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.as_ref().len()
    }

    #[inline]
    pub(crate) fn set_len(&mut self, n: usize) {
        debug_assert!(n <= MAX_COUNT);
        self.0[..4].copy_from_slice(&(n as u32).to_le_bytes());
    }

    /// The collection's digest sum (what its full form keeps in a field).
    #[inline]
    pub(crate) fn sum(&self) -> u64 {
        self.as_ref().sum()
    }

    #[inline]
    pub(crate) fn set_sum(&mut self, sum: u64) {
        self.0[4..HEADER].copy_from_slice(&sum.to_le_bytes());
    }

    /// The elements.
    #[inline]
    pub(crate) fn body(&self) -> &[u8] {
        &self.0[HEADER..]
    }

    /// Edits the buffer as a `Vec` (no copy: a boxed slice is a `Vec` whose capacity is its
    /// length), then gives it back at its exact size.
    fn edit(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        let mut v = std::mem::take(&mut self.0).into_vec();
        f(&mut v);
        self.0 = v.into_boxed_slice();
    }

    /// Appends an element to the body.
    pub(crate) fn put(&mut self, e: &[u8]) {
        self.edit(|v| {
            v.reserve_exact(encoded_len(e));
            put_len(v, e.len());
            v.extend_from_slice(e);
        });
    }

    /// Replaces the body's bytes `[from, to)` with `bytes` as they are.
    pub(crate) fn splice_raw(&mut self, from: usize, to: usize, bytes: &[u8]) {
        let (from, to) = (HEADER + from, HEADER + to);
        self.edit(|v| {
            let old_len = v.len();
            let (removed, added) = (to - from, bytes.len());
            if added > removed {
                v.reserve_exact(added - removed);
                v.resize(old_len + added - removed, 0);
                v.copy_within(to..old_len, from + added);
            } else if added < removed {
                v.copy_within(to..old_len, from + added);
                v.truncate(old_len - (removed - added));
            }
            v[from..from + added].copy_from_slice(bytes);
        });
    }

    /// Replaces the body's bytes `[from, to)` with the encoding of `items`.
    pub(crate) fn splice(&mut self, from: usize, to: usize, items: &[&[u8]]) {
        let mut enc = Vec::with_capacity(items.iter().map(|e| encoded_len(e)).sum());
        for e in items {
            put(&mut enc, e);
        }
        self.splice_raw(from, to, &enc);
    }

    /// Drops the body from `at` on.
    pub(crate) fn truncate(&mut self, at: usize) {
        self.edit(|v| v.truncate(HEADER + at));
    }
}

/// The bytes of a [`Packed`] form wherever they are kept: in the value's own allocation, or
/// inside a compact keyspace entry (`crate::entry`), which holds them next to its key.
#[derive(Clone, Copy)]
pub(crate) struct PackedRef<'a>(&'a [u8]);

impl<'a> PackedRef<'a> {
    /// Bytes that [`Packed::bytes`] gave (a header, then the body).
    #[inline]
    pub(crate) fn new(bytes: &'a [u8]) -> PackedRef<'a> {
        debug_assert!(bytes.len() >= HEADER);
        PackedRef(bytes)
    }

    #[inline]
    pub(crate) fn len(self) -> usize {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.0[..4]);
        u32::from_le_bytes(b) as usize
    }

    #[inline]
    pub(crate) fn sum(self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[4..HEADER]);
        u64::from_le_bytes(b)
    }

    #[inline]
    pub(crate) fn body(self) -> &'a [u8] {
        &self.0[HEADER..]
    }

    #[inline]
    pub(crate) fn alloc_len(self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_and_read() {
        let mut b = Vec::new();
        let long = vec![7u8; 300];
        for e in [&b"a"[..], b"", &long, b"xyz"] {
            put(&mut b, e);
        }
        let all: Vec<&[u8]> = Iter::new(&b).collect();
        assert_eq!(all, vec![&b"a"[..], b"", &long[..], b"xyz"]);
        assert_eq!(encoded_len(&long), 302);
    }

    #[test]
    fn packed_header_and_edits() {
        let mut p = Packed::default();
        assert_eq!(
            (p.len(), p.sum(), p.body(), p.as_ref().alloc_len()),
            (0, 0, &[][..], HEADER)
        );
        p.put(b"ab");
        p.put(b"");
        p.set_len(2);
        p.set_sum(u64::MAX - 1);
        assert_eq!(
            Iter::new(p.body()).collect::<Vec<_>>(),
            vec![&b"ab"[..], b""]
        );
        // Grow in the middle, shrink at the front, truncate: the header stays.
        p.splice(3, 3, &[b"xyz"]);
        p.splice(0, 3, &[]);
        assert_eq!(
            Iter::new(p.body()).collect::<Vec<_>>(),
            vec![&b"xyz"[..], b""]
        );
        p.splice_raw(0, 4, b"\x01q");
        assert_eq!(
            Iter::new(p.body()).collect::<Vec<_>>(),
            vec![&b"q"[..], b""]
        );
        p.truncate(2);
        assert_eq!(p.body(), &b"\x01q"[..]);
        assert_eq!(
            (p.len(), p.sum(), p.as_ref().alloc_len()),
            (2, u64::MAX - 1, HEADER + 2)
        );
        let mut b = Packed::start(4);
        put(&mut b, b"abc");
        let q = Packed::finish(b, 1, 7);
        assert_eq!((q.len(), q.sum(), q.body()), (1, 7, &b"\x03abc"[..]));
    }
}
