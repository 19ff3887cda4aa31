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
pub(crate) fn read(buf: &[u8], pos: usize) -> (&[u8], usize) {
    let (n, pos) = read_len(buf, pos);
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
        PackedRef::new(&self.0)
    }

    /// Number of elements.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.0[..4]);
        u32::from_le_bytes(b) as usize
    }

    #[inline]
    pub(crate) fn set_len(&mut self, n: usize) {
        debug_assert!(n <= MAX_COUNT);
        self.0[..4].copy_from_slice(&(n as u32).to_le_bytes());
    }

    /// The collection's digest sum (what its full form keeps in a field).
    #[inline]
    pub(crate) fn sum(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[4..HEADER]);
        u64::from_le_bytes(b)
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

/// Most elements a compact keyspace entry's packed form holds without its digest sum: up to
/// this many, the entry leaves the sum's 8 bytes out and it is recomputed from the elements when
/// asked (at most this many element hashes: a write reads its key's digest before and after);
/// past it the sum is kept, so a write to a larger packed collection never rehashes it whole.
pub(crate) const SUMLESS_MAX: usize = 8;

/// Bytes of a packed form of `count` elements and a `body_len`-byte body inside a compact
/// keyspace entry ([`PackedRef::put_compact`]): the count as LEB128, the sum when kept, the body.
pub(crate) fn compact_len(count: usize, body_len: usize) -> usize {
    len_of_len(count) + if count > SUMLESS_MAX { 8 } else { 0 } + body_len
}

/// A LEB128 number at `pos` of a buffer this crate wrote, and the position after it (the
/// packed forms' lengths, the stream blocks' varints).
#[inline]
pub(crate) fn read_leb128(buf: &[u8], mut pos: usize) -> (u64, usize) {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = buf[pos];
        pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return (v, pos);
        }
        shift += 7;
    }
}

/// A LEB128 length at `pos` and the position after it (in bytes this module wrote, from a
/// `usize`, so it fits one).
#[inline]
fn read_len(buf: &[u8], pos: usize) -> (usize, usize) {
    let (n, pos) = read_leb128(buf, pos);
    (n as usize, pos)
}

/// A packed form wherever it is kept: in the value's own allocation ([`Packed`]: a fixed header,
/// then the body), or inside a compact keyspace entry (`crate::entry`), which holds it next to
/// its key in fewer bytes ([`PackedRef::put_compact`]).
#[derive(Clone, Copy)]
pub(crate) struct PackedRef<'a> {
    len: usize,
    /// The digest sum, when the bytes keep it (else the view computes it from the elements).
    sum: Option<u64>,
    body: &'a [u8],
}

impl<'a> PackedRef<'a> {
    /// Bytes that [`Packed::bytes`] gave (a header, then the body).
    #[inline]
    pub(crate) fn new(bytes: &'a [u8]) -> PackedRef<'a> {
        debug_assert!(bytes.len() >= HEADER);
        let mut count = [0u8; 4];
        count.copy_from_slice(&bytes[..4]);
        let mut sum = [0u8; 8];
        sum.copy_from_slice(&bytes[4..HEADER]);
        PackedRef {
            len: u32::from_le_bytes(count) as usize,
            sum: Some(u64::from_le_bytes(sum)),
            body: &bytes[HEADER..],
        }
    }

    /// Bytes that [`PackedRef::put_compact`] wrote.
    #[inline]
    pub(crate) fn from_compact(bytes: &'a [u8]) -> PackedRef<'a> {
        let (len, mut at) = read_len(bytes, 0);
        let sum = (len > SUMLESS_MAX).then(|| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            at += 8;
            u64::from_le_bytes(b)
        });
        PackedRef {
            len,
            sum,
            body: &bytes[at..],
        }
    }

    /// Writes the compact-entry form: [`compact_len`] bytes. `sum` must be the digest sum of the
    /// elements (it is kept only past [`SUMLESS_MAX`] elements).
    pub(crate) fn put_compact(self, buf: &mut Vec<u8>, sum: impl FnOnce() -> u64) {
        put_len(buf, self.len);
        if self.len > SUMLESS_MAX {
            buf.extend_from_slice(&self.sum.unwrap_or_else(sum).to_le_bytes());
        }
        buf.extend_from_slice(self.body);
    }

    #[inline]
    pub(crate) fn len(self) -> usize {
        self.len
    }

    /// The same content with its digest sum known (computed from the elements by the caller).
    #[inline]
    pub(crate) fn with_sum(self, sum: u64) -> PackedRef<'a> {
        PackedRef {
            sum: Some(sum),
            ..self
        }
    }

    /// The digest sum, if these bytes keep it.
    #[inline]
    pub(crate) fn sum(self) -> Option<u64> {
        self.sum
    }

    #[inline]
    pub(crate) fn body(self) -> &'a [u8] {
        self.body
    }

    /// The length of the [`Packed`] allocation holding this content (header and body), whichever
    /// form these bytes are: what estimates count, so that they depend on the content only.
    #[inline]
    pub(crate) fn alloc_len(self) -> usize {
        HEADER + self.body.len()
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
    fn the_compact_form_keeps_the_sum_only_past_sumless_max() {
        for count in [0, 1, SUMLESS_MAX, SUMLESS_MAX + 1, 200] {
            let mut buf = Packed::start(2 * count);
            for _ in 0..count {
                put(&mut buf, b"x");
            }
            let p = Packed::finish(buf, count, 0xfeed_beef_0000_0001);
            let mut out = Vec::new();
            p.as_ref()
                .put_compact(&mut out, || unreachable!("a Packed keeps its sum"));
            assert_eq!(out.len(), compact_len(count, p.body().len()));
            let back = PackedRef::from_compact(&out);
            let kept = (count > SUMLESS_MAX).then_some(0xfeed_beef_0000_0001);
            assert_eq!(
                (back.len(), back.sum(), back.body(), back.alloc_len()),
                (count, kept, p.body(), p.as_ref().alloc_len())
            );
            // A sum left out is asked for when writing the form with the sum.
            let mut again = Vec::new();
            back.put_compact(&mut again, || 0xfeed_beef_0000_0001);
            assert_eq!(again, out);
        }
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
