//! Lists: packed (`listpack`) while small, a deque of packed nodes (`quicklist`) past
//! `list-max-listpack-size`.

use std::collections::VecDeque;

use crate::digest::{hash_bytes, mix64, poly};
use crate::encoding::{self, Encoding};
use crate::pack::{self, Packed, PackedRef};
use crate::value::{ELEM_OVERHEAD, Either, FULL_HEADER, PACKED_CHUNK};

/// A list with its ordered polynomial digest: packed (`listpack`, one allocation with the count
/// and digest in its header) while it is within `list-max-listpack-size`, a deque of elements
/// past it (reported as Redis's `quicklist`; packed again once it shrinks to half the limit, as
/// Redis 7.2 does).
#[derive(Clone)]
pub struct ListValue(ListRepr);

#[derive(Clone)]
enum ListRepr {
    /// The header's sum is the ordered polynomial hash; Bⁿ is computed from the count.
    Packed(Packed),
    Deque(Box<ListDeque>),
}

#[derive(Clone)]
struct ListDeque {
    items: VecDeque<Box<[u8]>>,
    /// Estimated bytes of the elements.
    bytes: usize,
    /// Σ h(eᵢ)·Bⁱ mod P over positions i from the head.
    poly: u64,
    /// Bⁿ mod P for n = len.
    pow: u64,
}

impl Default for ListValue {
    fn default() -> Self {
        ListValue(ListRepr::Packed(Packed::default()))
    }
}

#[inline]
fn elem_poly(e: &[u8]) -> u64 {
    poly::reduce(hash_bytes(e))
}

/// Start offsets of a packed list's elements (walking backwards or by index needs them).
fn packed_offsets(buf: &[u8]) -> Vec<usize> {
    let mut v = Vec::new();
    let mut it = pack::Iter::new(buf);
    loop {
        let p = it.pos();
        if it.next().is_none() {
            return v;
        }
        v.push(p);
    }
}

/// The deque form of packed elements, with its digest and estimate.
fn unpack_list(p: &Packed) -> Box<ListDeque> {
    let items: VecDeque<Box<[u8]>> = pack::Iter::new(p.body()).map(Box::from).collect();
    Box::new(ListDeque {
        bytes: items.iter().map(|e| e.len() + ELEM_OVERHEAD).sum(),
        pow: poly::pow(poly::B, items.len() as u64),
        poly: p.sum(),
        items,
    })
}

/// The packed form of a deque's elements (`packed_bytes` long).
fn pack_list(d: &ListDeque, packed_bytes: usize) -> Packed {
    let mut buf = Packed::start(packed_bytes);
    for e in &d.items {
        pack::put(&mut buf, e);
    }
    Packed::finish(buf, d.items.len(), d.poly)
}

impl ListValue {
    pub fn view(&self) -> ListRef<'_> {
        match &self.0 {
            ListRepr::Packed(p) => ListRef::packed(p.as_ref()),
            ListRepr::Deque(d) => ListRef {
                repr: ListReprRef::Deque(&d.items),
                bytes: d.bytes,
                poly: Some(d.poly),
            },
        }
    }

    pub fn len(&self) -> usize {
        self.view().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn encoding(&self) -> Encoding {
        self.view().encoding()
    }

    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.view().get(i)
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &[u8]> + ExactSizeIterator {
        self.view().iter()
    }

    /// Elements in `[start, end)`.
    pub fn range(
        &self,
        start: usize,
        end: usize,
    ) -> impl DoubleEndedIterator<Item = &[u8]> + ExactSizeIterator {
        self.view().range(start, end)
    }

    /// Whether a packed list of `len` elements in `bytes` bytes is within the limit (`half`:
    /// within half of it, the condition for packing a deque again).
    fn fits_packed(len: usize, bytes: usize, half: bool) -> bool {
        let (max_entries, max_bytes) = encoding::list_max_packed();
        let max_entries = max_entries.min(pack::MAX_COUNT);
        let (e, b) = if half {
            (max_entries / 2, max_bytes / 2)
        } else {
            (max_entries, max_bytes)
        };
        len <= e && bytes <= b
    }

    /// Before adding `e`: unpacks the list if it would pass the limit.
    fn make_room(&mut self, e: &[u8]) {
        if let ListRepr::Packed(p) = &self.0
            && !Self::fits_packed(p.len() + 1, p.body().len() + pack::encoded_len(e), false)
        {
            self.0 = ListRepr::Deque(unpack_list(p));
        }
    }

    /// After removing elements: packs a deque again once it is within half the limit (O(1)
    /// unless the list is already that small).
    fn maybe_pack(&mut self) {
        if let ListRepr::Deque(d) = &self.0 {
            let len = d.items.len();
            let (max_entries, max_bytes) = encoding::list_max_packed();
            // Every element takes at least one byte more packed than its own length, and
            // `bytes` counts ELEM_OVERHEAD more: a lower bound of the packed size, for free.
            let at_least = d.bytes.saturating_sub(len * (ELEM_OVERHEAD - 1));
            if len > max_entries.min(pack::MAX_COUNT) / 2 || at_least > max_bytes / 2 {
                return;
            }
            let packed: usize = d.items.iter().map(|e| pack::encoded_len(e)).sum();
            if packed <= max_bytes / 2 {
                self.0 = ListRepr::Packed(pack_list(d, packed));
            }
        }
    }

    /// A list of `items`, head first: what pushing them one by one gives, with the packed form
    /// built once at its final size (loaders; a push reallocates the buffer).
    pub fn from_elements<E: AsRef<[u8]>>(items: &[E]) -> ListValue {
        let bytes: usize = items.iter().map(|e| pack::encoded_len(e.as_ref())).sum();
        if Self::fits_packed(items.len(), bytes, false) {
            let mut buf = Packed::start(bytes);
            let (mut p, mut pw) = (0u64, 1u64);
            for e in items {
                pack::put(&mut buf, e.as_ref());
                p = poly::add(p, poly::mul(elem_poly(e.as_ref()), pw));
                pw = poly::mul(pw, poly::B);
            }
            return ListValue(ListRepr::Packed(Packed::finish(buf, items.len(), p)));
        }
        let mut l = ListValue::default();
        for e in items {
            l.push_back(e.as_ref());
        }
        l
    }

    pub fn push_back(&mut self, e: &[u8]) {
        self.make_room(e);
        let h = elem_poly(e);
        match &mut self.0 {
            ListRepr::Packed(p) => {
                let pow = poly::pow(poly::B, p.len() as u64);
                p.put(e);
                p.set_len(p.len() + 1);
                p.set_sum(poly::add(p.sum(), poly::mul(h, pow)));
            }
            ListRepr::Deque(d) => {
                d.poly = poly::add(d.poly, poly::mul(h, d.pow));
                d.pow = poly::mul(d.pow, poly::B);
                d.bytes += e.len() + ELEM_OVERHEAD;
                d.items.push_back(e.into());
            }
        }
    }

    pub fn push_front(&mut self, e: &[u8]) {
        self.make_room(e);
        let h = elem_poly(e);
        match &mut self.0 {
            ListRepr::Packed(p) => {
                p.splice(0, 0, &[e]);
                p.set_len(p.len() + 1);
                p.set_sum(poly::add(h, poly::mul(p.sum(), poly::B)));
            }
            ListRepr::Deque(d) => {
                d.poly = poly::add(h, poly::mul(d.poly, poly::B));
                d.pow = poly::mul(d.pow, poly::B);
                d.bytes += e.len() + ELEM_OVERHEAD;
                d.items.push_front(e.into());
            }
        }
    }

    pub fn pop_front(&mut self) -> Option<Box<[u8]>> {
        let e: Box<[u8]> = match &mut self.0 {
            ListRepr::Packed(p) => {
                if p.len() == 0 {
                    return None;
                }
                let (e, next) = pack::read(p.body(), 0);
                let e = Box::from(e);
                p.splice_raw(0, next, &[]);
                p.set_len(p.len() - 1);
                let sum = poly::sub(p.sum(), elem_poly(&e));
                p.set_sum(poly::mul(sum, poly::B_INV));
                e
            }
            ListRepr::Deque(d) => {
                let e = d.items.pop_front()?;
                d.bytes -= e.len() + ELEM_OVERHEAD;
                d.poly = poly::mul(poly::sub(d.poly, elem_poly(&e)), poly::B_INV);
                d.pow = poly::mul(d.pow, poly::B_INV);
                e
            }
        };
        self.maybe_pack();
        Some(e)
    }

    pub fn pop_back(&mut self) -> Option<Box<[u8]>> {
        let e: Box<[u8]> = match &mut self.0 {
            ListRepr::Packed(p) => {
                let last = *packed_offsets(p.body()).last()?;
                let e = Box::from(pack::read(p.body(), last).0);
                p.truncate(last);
                p.set_len(p.len() - 1);
                let pow = poly::pow(poly::B, p.len() as u64);
                p.set_sum(poly::sub(p.sum(), poly::mul(elem_poly(&e), pow)));
                e
            }
            ListRepr::Deque(d) => {
                let e = d.items.pop_back()?;
                d.bytes -= e.len() + ELEM_OVERHEAD;
                d.pow = poly::mul(d.pow, poly::B_INV);
                d.poly = poly::sub(d.poly, poly::mul(elem_poly(&e), d.pow));
                e
            }
        };
        self.maybe_pack();
        Some(e)
    }

    /// Replaces element `i` (which must exist).
    pub fn set(&mut self, i: usize, e: &[u8]) {
        let old: Box<[u8]> = match &mut self.0 {
            ListRepr::Packed(p) => {
                let from = packed_offsets(p.body())[i];
                let (old, to) = pack::read(p.body(), from);
                let old = Box::from(old);
                p.splice(from, to, &[e]);
                old
            }
            ListRepr::Deque(d) => {
                let old = std::mem::replace(&mut d.items[i], e.into());
                d.bytes = d.bytes + e.len() - old.len();
                old
            }
        };
        let delta = poly::sub(elem_poly(e), elem_poly(&old));
        let delta = poly::mul(delta, poly::pow(poly::B, i as u64));
        match &mut self.0 {
            ListRepr::Packed(p) => {
                p.set_sum(poly::add(p.sum(), delta));
                if !Self::fits_packed(p.len(), p.body().len(), false) {
                    self.0 = ListRepr::Deque(unpack_list(p));
                }
            }
            ListRepr::Deque(d) => d.poly = poly::add(d.poly, delta),
        }
    }

    /// Arbitrary edits (LINSERT, LREM, LTRIM): O(n), like the commands themselves.
    pub fn edit<R>(&mut self, f: impl FnOnce(&mut VecDeque<Box<[u8]>>) -> R) -> R {
        let was_packed = matches!(self.0, ListRepr::Packed(_));
        let mut items = match std::mem::take(&mut self.0) {
            ListRepr::Packed(p) => pack::Iter::new(p.body()).map(Box::from).collect(),
            ListRepr::Deque(d) => d.items,
        };
        let r = f(&mut items);
        self.0 = Self::recompute(items, was_packed);
        r
    }

    /// The form of edited elements, with digest and size recomputed: a list that was packed
    /// stays packed while it fits; a deque is packed once within half the limit.
    fn recompute(items: VecDeque<Box<[u8]>>, was_packed: bool) -> ListRepr {
        let mut p = 0u64;
        let mut pw = 1u64;
        let mut bytes = 0;
        let mut packed_bytes = 0;
        for e in &items {
            p = poly::add(p, poly::mul(elem_poly(e), pw));
            pw = poly::mul(pw, poly::B);
            bytes += e.len() + ELEM_OVERHEAD;
            packed_bytes += pack::encoded_len(e);
        }
        let d = ListDeque {
            items,
            bytes,
            poly: p,
            pow: pw,
        };
        // An edit may leave a list that fits again, or one that no longer does.
        if Self::fits_packed(d.items.len(), packed_bytes, !was_packed) {
            ListRepr::Packed(pack_list(&d, packed_bytes))
        } else {
            ListRepr::Deque(Box::new(d))
        }
    }

    pub fn digest(&self) -> u64 {
        self.view().digest()
    }
}

impl Default for ListRepr {
    fn default() -> Self {
        ListRepr::Packed(Packed::default())
    }
}

/// A read-only view of a list (see [`ValueRef`]).
#[derive(Clone, Copy)]
pub struct ListRef<'a> {
    repr: ListReprRef<'a>,
    /// Estimated bytes of the deque form's elements (the allocation's length while packed).
    bytes: usize,
    /// The ordered polynomial hash when it is kept (else computed when asked).
    poly: Option<u64>,
}

#[derive(Clone, Copy)]
enum ListReprRef<'a> {
    Packed { buf: &'a [u8], len: usize },
    Deque(&'a VecDeque<Box<[u8]>>),
}

impl<'a> ListRef<'a> {
    /// The view of a packed list's bytes (in its own allocation or a compact entry's).
    pub(crate) fn packed(p: PackedRef<'a>) -> Self {
        ListRef {
            repr: ListReprRef::Packed {
                buf: p.body(),
                len: p.len(),
            },
            bytes: p.alloc_len(),
            poly: p.sum(),
        }
    }

    pub fn len(self) -> usize {
        match self.repr {
            ListReprRef::Packed { len, .. } => len,
            ListReprRef::Deque(d) => d.len(),
        }
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    pub fn encoding(self) -> Encoding {
        match self.repr {
            ListReprRef::Packed { .. } => Encoding::Listpack,
            ListReprRef::Deque(_) => Encoding::Quicklist,
        }
    }

    /// Estimated heap bytes: a packed list's allocation (header and elements) and the
    /// allocator's per-chunk cost, or the deque's elements and its box.
    pub(crate) fn mem_bytes(self) -> usize {
        match self.repr {
            ListReprRef::Packed { .. } => self.bytes + PACKED_CHUNK,
            ListReprRef::Deque(_) => self.bytes + FULL_HEADER,
        }
    }

    pub fn get(self, i: usize) -> Option<&'a [u8]> {
        match self.repr {
            ListReprRef::Packed { buf, .. } => pack::Iter::new(buf).nth(i),
            ListReprRef::Deque(d) => d.get(i).map(|b| &**b),
        }
    }

    pub fn iter(self) -> impl DoubleEndedIterator<Item = &'a [u8]> + ExactSizeIterator + use<'a> {
        self.range(0, usize::MAX)
    }

    /// Elements in `[start, end)`.
    pub fn range(
        self,
        start: usize,
        end: usize,
    ) -> impl DoubleEndedIterator<Item = &'a [u8]> + ExactSizeIterator + use<'a> {
        let end = end.min(self.len());
        let start = start.min(end);
        match self.repr {
            ListReprRef::Packed { buf, .. } => Either::Left(
                pack::Iter::new(buf)
                    .skip(start)
                    .take(end - start)
                    .collect::<Vec<_>>()
                    .into_iter(),
            ),
            ListReprRef::Deque(d) => Either::Right(d.range(start..end).map(|b| &**b)),
        }
    }

    /// The ordered polynomial of the element hashes: kept, or computed.
    pub(crate) fn element_sum(self) -> u64 {
        self.poly.unwrap_or_else(|| {
            let (mut p, mut pw) = (0u64, 1u64);
            for e in self.iter() {
                p = poly::add(p, poly::mul(elem_poly(e), pw));
                pw = poly::mul(pw, poly::B);
            }
            p
        })
    }

    pub fn digest(self) -> u64 {
        let poly = self.element_sum();
        mix64(poly ^ (self.len() as u64).rotate_left(40) ^ 0x2545_f491_4f6c_dd1d)
    }
}

impl ListValue {
    /// The packed form, if the list is packed (a compact keyspace entry keeps it).
    pub(crate) fn as_packed(&self) -> Option<&Packed> {
        match &self.0 {
            ListRepr::Packed(p) => Some(p),
            _ => None,
        }
    }

    /// The list whose packed form is `p`.
    pub(crate) fn of_packed(p: Packed) -> ListValue {
        ListValue(ListRepr::Packed(p))
    }
}

impl ListRef<'_> {
    /// Bytes of the packed form's buffer (header and elements), if the list is packed.
    pub(crate) fn packed_len(self) -> Option<usize> {
        match self.repr {
            ListReprRef::Packed { .. } => Some(self.bytes),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeSet;

    proptest::proptest! {
        /// Lists against a deque, through the packed form and the deque and back (elements up
        /// to 3 KiB cross the 8 KiB packed limit quickly; pops bring the list under half of it).
        #[test]
        fn list_matches_model(ops in proptest::collection::vec((0u8..7, 0u16..3000), 0..400)) {
            let mut l = ListValue::default();
            let mut m: VecDeque<Vec<u8>> = VecDeque::new();
            let mut forms = BTreeSet::new();
            for (op, n) in ops {
                let e = if n % 3 == 0 { vec![b'e'; usize::from(n)] } else { n.to_string().into_bytes() };
                match op {
                    0 => { l.push_back(&e); m.push_back(e); }
                    1 => { l.push_front(&e); m.push_front(e); }
                    2 => { proptest::prop_assert_eq!(l.pop_front().map(|b| b.to_vec()), m.pop_front()); }
                    3 => { proptest::prop_assert_eq!(l.pop_back().map(|b| b.to_vec()), m.pop_back()); }
                    4 if !m.is_empty() => {
                        let i = usize::from(n) % m.len();
                        l.set(i, &e);
                        m[i] = e;
                    }
                    5 if !m.is_empty() => {
                        let i = usize::from(n) % (m.len() + 1);
                        l.edit(|d| d.insert(i, e.clone().into()));
                        m.insert(i, e);
                    }
                    _ => {
                        let keep = usize::from(n) % (m.len() + 1);
                        l.edit(|d| d.truncate(keep));
                        m.truncate(keep);
                    }
                }
                forms.insert(l.encoding().name());
                proptest::prop_assert_eq!(l.len(), m.len());
            }
            let got: Vec<Vec<u8>> = l.iter().map(<[u8]>::to_vec).collect();
            proptest::prop_assert_eq!(&got, &m.iter().cloned().collect::<Vec<_>>());
            let back: Vec<Vec<u8>> = l.iter().rev().map(<[u8]>::to_vec).collect();
            proptest::prop_assert_eq!(back, m.iter().rev().cloned().collect::<Vec<_>>());
            for (i, e) in m.iter().enumerate().step_by(7) {
                proptest::prop_assert_eq!(l.get(i), Some(&e[..]));
            }
            proptest::prop_assert_eq!(l.get(m.len()), None);
            let mid: Vec<Vec<u8>> = l.range(1, 4).map(<[u8]>::to_vec).collect();
            proptest::prop_assert_eq!(mid, m.iter().skip(1).take(3).cloned().collect::<Vec<_>>());
            let mut fresh = ListValue::default();
            for e in &m {
                fresh.push_back(e);
            }
            proptest::prop_assert_eq!(l.digest(), fresh.digest());
            let items: Vec<&[u8]> = l.iter().collect();
            let reloaded = ListValue::from_elements(&items);
            proptest::prop_assert_eq!(reloaded.digest(), l.digest());
            proptest::prop_assert_eq!(reloaded.encoding(), fresh.encoding());
            proptest::prop_assert_eq!(reloaded.view().mem_bytes(), fresh.view().mem_bytes());
            if l.encoding() == fresh.encoding() {
                proptest::prop_assert_eq!(l.view().mem_bytes(), fresh.view().mem_bytes(), "estimate is content only");
            }
        }
    }

    #[test]
    fn lists_pack_unpack_and_pack_again() {
        let mut l = ListValue::default();
        for i in 0..100 {
            l.push_back(format!("element-{i}").as_bytes());
        }
        assert_eq!(l.encoding(), Encoding::Listpack);
        l.push_back(&[b'x'; 9000]);
        assert_eq!(l.encoding(), Encoding::Quicklist, "past 8 KiB");
        l.pop_back();
        assert_eq!(l.encoding(), Encoding::Listpack, "back within half of it");
        let mut big = ListValue::default();
        for i in 0..2000 {
            big.push_front(format!("{i:08}").as_bytes());
        }
        assert_eq!(big.encoding(), Encoding::Quicklist);
        while big.len() > 300 {
            big.pop_front();
        }
        assert_eq!(big.encoding(), Encoding::Listpack);
        assert_eq!(big.get(0), Some(&b"00000299"[..]));
    }

    fn list_from(items: &[&str]) -> ListValue {
        let mut l = ListValue::default();
        for i in items {
            l.push_back(i.as_bytes());
        }
        l
    }

    #[test]
    fn list_digest_tracks_every_operation() {
        let mut l = ListValue::default();
        l.push_back(b"b");
        l.push_front(b"a");
        l.push_back(b"c");
        l.push_back(b"d");
        assert_eq!(l.digest(), list_from(&["a", "b", "c", "d"]).digest());
        l.pop_front();
        l.pop_back();
        assert_eq!(l.digest(), list_from(&["b", "c"]).digest());
        l.set(1, b"x");
        assert_eq!(l.digest(), list_from(&["b", "x"]).digest());
        l.edit(|items| items.insert(1, Box::from(&b"m"[..])));
        assert_eq!(l.digest(), list_from(&["b", "m", "x"]).digest());
        assert_ne!(l.digest(), list_from(&["x", "m", "b"]).digest());
        while l.pop_back().is_some() {}
        assert_eq!(l.digest(), ListValue::default().digest());
    }
}
