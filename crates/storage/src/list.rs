//! Lists: packed (`listpack`: one allocation, the count and digest in its header) while within
//! `list-max-listpack-size`, and past it a deque of packed nodes (Redis's `quicklist`), each node
//! filled up to the same limit, so that a push writes into an end node and a pop takes from one
//! without an allocation per element.
//!
//! A node keeps its entries in the middle of its buffer (a gap on both sides), so pushing at
//! either end writes in place; each entry is its length (LEB128), its bytes and its length again,
//! written backwards, so that the tail node is read from its end as easily as from its start.
//! Both forms keep the list's ordered polynomial digest Σ h(eᵢ)·Bⁱ (the same value whatever the
//! form, so a conversion never changes TENANT.DIGEST) and a size estimate that depends on the
//! content only.

use std::collections::VecDeque;

use crate::digest::{hash_bytes, mix64, poly};
use crate::encoding::{self, Encoding};
use crate::pack::{self, Packed, PackedRef};
use crate::value::{Either, FULL_HEADER, PACKED_CHUNK};

/// Redis's `SIZE_SAFETY_LIMIT`: with an entry-count limit (a positive `list-max-listpack-size`),
/// a packed list or node still holds at most this many bytes.
const SIZE_SAFETY_LIMIT: usize = 8192;

/// What an element of a quicklist costs besides its encoded entry, on average: nodes filled to
/// within one entry of the limit and their 40-byte headers (measured against the RSS growth of
/// one list of a million elements by `scripts/bench-memory.sh`, shape `list1m`).
const QUICK_ELEM_SLACK: usize = 1;

/// A list (see the module docs).
#[derive(Clone)]
pub struct ListValue(ListRepr);

#[derive(Clone)]
enum ListRepr {
    /// The header's sum is the ordered polynomial hash; Bⁿ is computed from the count.
    Packed(Packed),
    Quick(Box<Quick>),
}

/// The quicklist form: nodes of entries, head first.
#[derive(Clone)]
struct Quick {
    nodes: VecDeque<Node>,
    /// Elements over all nodes.
    len: usize,
    /// Estimated bytes of the elements: Σ (entry bytes + [`QUICK_ELEM_SLACK`]).
    bytes: usize,
    /// Σ h(eᵢ)·Bⁱ mod P over positions i from the head.
    poly: u64,
    /// Bⁿ mod P for n = len.
    pow: u64,
}

/// A packed node: entries in `buf[lo..hi]`, free room before and after them.
#[derive(Clone)]
struct Node {
    buf: Box<[u8]>,
    lo: usize,
    hi: usize,
    count: usize,
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

/// The most elements and bytes a packed list or a quicklist node holds, from
/// `list-max-listpack-size` (a count limit keeps Redis's 8 KiB safety limit on bytes).
fn limits() -> (usize, usize) {
    let (entries, bytes) = encoding::list_max_packed();
    (
        entries.min(pack::MAX_COUNT),
        bytes.min(if entries == usize::MAX {
            usize::MAX
        } else {
            SIZE_SAFETY_LIMIT
        }),
    )
}

/// Bytes of `e`'s entry in a node: its length, its bytes and its length again.
#[inline]
fn entry_len(e: &[u8]) -> usize {
    2 * pack::len_of_len(e.len()) + e.len()
}

/// Writes `e`'s entry into `dst` (exactly [`entry_len`] bytes).
#[inline]
fn write_entry(dst: &mut [u8], e: &[u8]) {
    let k = pack::len_of_len(e.len());
    let mut n = e.len();
    for (i, b) in dst[..k].iter_mut().enumerate() {
        *b = (n as u8 & 0x7f) | if i + 1 < k { 0x80 } else { 0 };
        n >>= 7;
    }
    dst[k..k + e.len()].copy_from_slice(e);
    // The same LEB128 bytes in reverse order: read from the end, the low group comes first.
    let (fwd, back) = dst.split_at_mut(k + e.len());
    for (i, b) in back.iter_mut().enumerate() {
        *b = fwd[k - 1 - i];
    }
}

/// The entry ending at `end` of a node's buffer, and its start.
#[inline]
fn read_back(buf: &[u8], end: usize) -> (&[u8], usize) {
    let (mut n, mut shift, mut pos) = (0usize, 0, end);
    loop {
        pos -= 1;
        let b = buf[pos];
        n |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let k = end - pos;
    let start = pos - n;
    (&buf[start..pos], start - k)
}

/// The entry starting at `pos` of a node's buffer, and the position after it.
#[inline]
fn read_fwd(buf: &[u8], pos: usize) -> (&[u8], usize) {
    let (e, next) = pack::read(buf, pos);
    (e, next + pack::len_of_len(e.len()))
}

impl Node {
    /// An empty node of `cap` bytes, its room on the side pushes will come from.
    fn new(cap: usize, at_front: bool) -> Node {
        let at = if at_front { cap } else { 0 };
        Node {
            buf: vec![0; cap].into_boxed_slice(),
            lo: at,
            hi: at,
            count: 0,
        }
    }

    #[inline]
    fn used(&self) -> usize {
        self.hi - self.lo
    }

    /// Whether `e` may join this node under the limits (an empty node takes anything).
    #[inline]
    fn takes(&self, e: &[u8], (max_count, max_bytes): (usize, usize)) -> bool {
        self.count == 0 || (self.count < max_count && self.used() + entry_len(e) <= max_bytes)
    }

    /// Makes room for `need` bytes at the front or the back: a larger buffer (doubling, up to
    /// the byte limit), the entries moved to its other side.
    fn reserve(&mut self, need: usize, front: bool, max_bytes: usize) {
        let room = if front {
            self.lo
        } else {
            self.buf.len() - self.hi
        };
        if room >= need {
            return;
        }
        let used = self.used();
        let cap = (2 * self.buf.len()).max(64).min(max_bytes).max(used + need);
        let mut buf = vec![0; cap].into_boxed_slice();
        let at = if front { cap - used } else { 0 };
        buf[at..at + used].copy_from_slice(&self.buf[self.lo..self.hi]);
        self.buf = buf;
        self.lo = at;
        self.hi = at + used;
    }

    fn push_back(&mut self, e: &[u8], max_bytes: usize) {
        let n = entry_len(e);
        self.reserve(n, false, max_bytes);
        write_entry(&mut self.buf[self.hi..self.hi + n], e);
        self.hi += n;
        self.count += 1;
    }

    fn push_front(&mut self, e: &[u8], max_bytes: usize) {
        let n = entry_len(e);
        self.reserve(n, true, max_bytes);
        write_entry(&mut self.buf[self.lo - n..self.lo], e);
        self.lo -= n;
        self.count += 1;
    }

    fn first(&self) -> (&[u8], usize) {
        read_fwd(&self.buf, self.lo)
    }

    fn last(&self) -> (&[u8], usize) {
        read_back(&self.buf, self.hi)
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut pos = self.lo;
        std::iter::from_fn(move || {
            (pos < self.hi).then(|| {
                let (e, next) = read_fwd(&self.buf, pos);
                pos = next;
                e
            })
        })
    }

    /// Start of entry `i` (< count), walked from the nearer end.
    fn offset(&self, i: usize) -> usize {
        if i <= self.count / 2 {
            let mut pos = self.lo;
            for _ in 0..i {
                pos = read_fwd(&self.buf, pos).1;
            }
            pos
        } else {
            let mut pos = self.hi;
            for _ in i..self.count {
                pos = read_back(&self.buf, pos).1;
            }
            pos
        }
    }
}

impl Quick {
    fn empty() -> Quick {
        Quick {
            nodes: VecDeque::new(),
            len: 0,
            bytes: 0,
            poly: 0,
            pow: 1,
        }
    }

    /// Nodes filled in order from `items` up to `lim` (most elements, bytes), with digest `poly`
    /// (None: computed).
    fn from_iter<'e>(
        items: impl Iterator<Item = &'e [u8]>,
        poly: Option<u64>,
        lim: (usize, usize),
    ) -> Quick {
        let mut q = Quick::empty();
        let (mut p, mut pw) = (0u64, 1u64);
        let mut pending: Vec<&[u8]> = Vec::new();
        let mut pending_bytes = 0;
        let flush = |q: &mut Quick, pending: &mut Vec<&[u8]>, bytes: &mut usize| {
            if pending.is_empty() {
                return;
            }
            let mut n = Node::new(*bytes, false);
            for e in pending.iter() {
                n.push_back(e, *bytes);
            }
            q.nodes.push_back(n);
            pending.clear();
            *bytes = 0;
        };
        for e in items {
            let n = entry_len(e);
            if !pending.is_empty() && (pending.len() >= lim.0 || pending_bytes + n > lim.1) {
                flush(&mut q, &mut pending, &mut pending_bytes);
            }
            pending.push(e);
            pending_bytes += n;
            q.len += 1;
            q.bytes += n + QUICK_ELEM_SLACK;
            if poly.is_none() {
                p = poly::add(p, poly::mul(elem_poly(e), pw));
            }
            pw = poly::mul(pw, poly::B);
        }
        flush(&mut q, &mut pending, &mut pending_bytes);
        q.poly = poly.unwrap_or(p);
        q.pow = pw;
        q
    }

    fn iter(&self) -> QuickIter<'_> {
        self.range(0, self.len)
    }

    /// Node and position of element `i` (< len), walked from the nearer end.
    fn seek(&self, i: usize) -> (usize, usize) {
        if i < self.len / 2 {
            let mut i = i;
            for (k, n) in self.nodes.iter().enumerate() {
                if i < n.count {
                    return (k, n.offset(i));
                }
                i -= n.count;
            }
        } else {
            let mut j = self.len - 1 - i;
            for (k, n) in self.nodes.iter().enumerate().rev() {
                if j < n.count {
                    return (k, n.offset(n.count - 1 - j));
                }
                j -= n.count;
            }
        }
        unreachable!("index {i} within the list's length")
    }

    /// The node holding element `i` (< len) and `i`'s index within it.
    fn node_of(&self, mut i: usize) -> (usize, usize) {
        for (k, n) in self.nodes.iter().enumerate() {
            if i < n.count {
                return (k, i);
            }
            i -= n.count;
        }
        unreachable!("index within the list's length")
    }

    fn range(&self, start: usize, end: usize) -> QuickIter<'_> {
        let front = if start < end {
            self.seek(start)
        } else {
            (0, 0)
        };
        let back = if start >= end {
            (0, 0)
        } else if end == self.len {
            let k = self.nodes.len() - 1;
            (k, self.nodes[k].hi)
        } else {
            self.seek(end)
        };
        QuickIter {
            nodes: &self.nodes,
            front,
            back,
            remaining: end - start,
        }
    }

    /// Replaces node `k` with nodes holding `items`, filled up to the limits.
    fn rebuild_node(&mut self, k: usize, items: &[Vec<u8>]) {
        let built = Quick::from_iter(items.iter().map(|e| &e[..]), Some(0), limits());
        self.nodes.remove(k);
        for (j, n) in built.nodes.into_iter().enumerate() {
            self.nodes.insert(k + j, n);
        }
    }

    fn push_back(&mut self, e: &[u8]) {
        let lim = limits();
        match self.nodes.back_mut() {
            Some(n) if n.takes(e, lim) => n.push_back(e, lim.1),
            _ => {
                let mut n = Node::new(entry_len(e).max(lim.1.min(256)), false);
                n.push_back(e, lim.1);
                self.nodes.push_back(n);
            }
        }
        self.poly = poly::add(self.poly, poly::mul(elem_poly(e), self.pow));
        self.pow = poly::mul(self.pow, poly::B);
        self.bytes += entry_len(e) + QUICK_ELEM_SLACK;
        self.len += 1;
    }

    fn push_front(&mut self, e: &[u8]) {
        let lim = limits();
        match self.nodes.front_mut() {
            Some(n) if n.takes(e, lim) => n.push_front(e, lim.1),
            _ => {
                let mut n = Node::new(entry_len(e).max(lim.1.min(256)), true);
                n.push_front(e, lim.1);
                self.nodes.push_front(n);
            }
        }
        self.poly = poly::add(elem_poly(e), poly::mul(self.poly, poly::B));
        self.pow = poly::mul(self.pow, poly::B);
        self.bytes += entry_len(e) + QUICK_ELEM_SLACK;
        self.len += 1;
    }

    /// Removes the head element, handing it to `f` where it lies (no copy).
    fn pop_front_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let n = self.nodes.front_mut()?;
        let (e, next) = n.first();
        let (h, size) = (elem_poly(e), entry_len(e));
        let r = f(e);
        n.lo = next;
        n.count -= 1;
        if n.count == 0 {
            self.nodes.pop_front();
        }
        self.len -= 1;
        self.bytes -= size + QUICK_ELEM_SLACK;
        self.poly = poly::mul(poly::sub(self.poly, h), poly::B_INV);
        self.pow = poly::mul(self.pow, poly::B_INV);
        Some(r)
    }

    /// Removes the tail element, handing it to `f` where it lies (no copy).
    fn pop_back_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let n = self.nodes.back_mut()?;
        let (e, start) = n.last();
        let (h, size) = (elem_poly(e), entry_len(e));
        let r = f(e);
        n.hi = start;
        n.count -= 1;
        if n.count == 0 {
            self.nodes.pop_back();
        }
        self.len -= 1;
        self.bytes -= size + QUICK_ELEM_SLACK;
        self.pow = poly::mul(self.pow, poly::B_INV);
        self.poly = poly::sub(self.poly, poly::mul(h, self.pow));
        Some(r)
    }

    /// Replaces element `i` (< len), in its node; returns the old one.
    fn set(&mut self, i: usize, e: &[u8]) -> Vec<u8> {
        let (k, at) = self.node_of(i);
        let mut items: Vec<Vec<u8>> = self.nodes[k].iter().map(<[u8]>::to_vec).collect();
        let old = std::mem::replace(&mut items[at], e.to_vec());
        self.rebuild_node(k, &items);
        self.bytes = self.bytes + entry_len(e) - entry_len(&old);
        old
    }

    /// Inserts `e` before element `i` (0 < i < len), in its node.
    fn insert(&mut self, i: usize, e: &[u8]) {
        // The digest: the elements from i on move one place up (× B); the cheaper side is hashed.
        let h_at = poly::mul(elem_poly(e), poly::pow(poly::B, i as u64));
        if i <= self.len / 2 {
            let (mut low, mut pw) = (0u64, 1u64);
            for x in self.range(0, i) {
                low = poly::add(low, poly::mul(elem_poly(x), pw));
                pw = poly::mul(pw, poly::B);
            }
            let high = poly::sub(self.poly, low);
            self.poly = poly::add(poly::add(low, h_at), poly::mul(high, poly::B));
        } else {
            let (mut high, mut pw) = (0u64, self.pow);
            for x in self.range(i, self.len).rev() {
                pw = poly::mul(pw, poly::B_INV);
                high = poly::add(high, poly::mul(elem_poly(x), pw));
            }
            let low = poly::sub(self.poly, high);
            self.poly = poly::add(poly::add(low, h_at), poly::mul(high, poly::B));
        }
        self.pow = poly::mul(self.pow, poly::B);
        let (k, at) = self.node_of(i);
        let mut items: Vec<Vec<u8>> = self.nodes[k].iter().map(<[u8]>::to_vec).collect();
        items.insert(at, e.to_vec());
        self.rebuild_node(k, &items);
        self.bytes += entry_len(e) + QUICK_ELEM_SLACK;
        self.len += 1;
    }

    /// The packed form, if the list is one node within half the limits (Redis 7.2 converts a
    /// shrinking quicklist back then, and not sooner, so that a list at the limit does not
    /// convert on every push and pop).
    fn packed_if_small(&self) -> Option<Packed> {
        let (max_count, max_bytes) = limits();
        let fits = match self.nodes.len() {
            0 => true,
            1 => {
                let n = &self.nodes[0];
                n.count <= max_count / 2 && n.used() <= max_bytes / 2
            }
            _ => false,
        };
        if !fits {
            return None;
        }
        let body: usize = self.iter().map(pack::encoded_len).sum();
        let mut buf = Packed::start(body);
        for e in self.iter() {
            pack::put(&mut buf, e);
        }
        Some(Packed::finish(buf, self.len, self.poly))
    }
}

/// Walks a quicklist's elements from both ends.
#[derive(Clone)]
pub struct QuickIter<'a> {
    nodes: &'a VecDeque<Node>,
    /// Node and position of the next element from the front.
    front: (usize, usize),
    /// Node and position just past the next element from the back.
    back: (usize, usize),
    remaining: usize,
}

impl<'a> Iterator for QuickIter<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.remaining == 0 {
            return None;
        }
        let (mut k, mut pos) = self.front;
        while pos >= self.nodes[k].hi {
            k += 1;
            pos = self.nodes[k].lo;
        }
        let (e, next) = read_fwd(&self.nodes[k].buf, pos);
        self.front = (k, next);
        self.remaining -= 1;
        Some(e)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl DoubleEndedIterator for QuickIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let (mut k, mut pos) = self.back;
        while pos <= self.nodes[k].lo {
            k -= 1;
            pos = self.nodes[k].hi;
        }
        let (e, start) = read_back(&self.nodes[k].buf, pos);
        self.back = (k, start);
        self.remaining -= 1;
        Some(e)
    }
}

impl ExactSizeIterator for QuickIter<'_> {}

/// Start offsets of a packed list's elements (walking backwards or by index needs them).
/// Start of the last element of a packed list's body, found by walking it without collecting
/// every offset (RPOP of a short list: no allocation per pop).
fn packed_last_offset(buf: &[u8]) -> Option<usize> {
    let mut it = pack::Iter::new(buf);
    let mut last = None;
    loop {
        let p = it.pos();
        if it.next().is_none() {
            return last;
        }
        last = Some(p);
    }
}

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

/// The quicklist form of packed elements: one node holding them all (as Redis appends the
/// listpack as the first node), which the element that did not fit will follow.
fn unpack_list(p: &Packed) -> Box<Quick> {
    let whole = (usize::MAX, usize::MAX);
    Box::new(Quick::from_iter(
        pack::Iter::new(p.body()),
        Some(p.sum()),
        whole,
    ))
}

impl ListValue {
    pub fn view(&self) -> ListRef<'_> {
        match &self.0 {
            ListRepr::Packed(p) => ListRef::packed(p.as_ref()),
            ListRepr::Quick(q) => ListRef {
                repr: ListReprRef::Quick(q),
                bytes: q.bytes,
                poly: Some(q.poly),
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
    /// within half of it, the condition for packing a quicklist again).
    fn fits_packed(len: usize, bytes: usize, half: bool) -> bool {
        let (max_entries, max_bytes) = limits();
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
            self.0 = ListRepr::Quick(unpack_list(p));
        }
    }

    /// After removing or replacing elements: packs a quicklist again once it is one node within
    /// half the limit (O(1) unless it is that small).
    fn maybe_pack(&mut self) {
        if let ListRepr::Quick(q) = &self.0
            && let Some(p) = q.packed_if_small()
        {
            self.0 = ListRepr::Packed(p);
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
        ListValue(ListRepr::Quick(Box::new(Quick::from_iter(
            items.iter().map(AsRef::as_ref),
            None,
            limits(),
        ))))
    }

    pub fn push_back(&mut self, e: &[u8]) {
        self.make_room(e);
        match &mut self.0 {
            ListRepr::Packed(p) => {
                let h = elem_poly(e);
                let pow = poly::pow(poly::B, p.len() as u64);
                p.put(e);
                p.set_len(p.len() + 1);
                p.set_sum(poly::add(p.sum(), poly::mul(h, pow)));
            }
            ListRepr::Quick(q) => q.push_back(e),
        }
    }

    pub fn push_front(&mut self, e: &[u8]) {
        self.make_room(e);
        match &mut self.0 {
            ListRepr::Packed(p) => {
                let h = elem_poly(e);
                p.splice(0, 0, &[e]);
                p.set_len(p.len() + 1);
                p.set_sum(poly::add(h, poly::mul(p.sum(), poly::B)));
            }
            ListRepr::Quick(q) => q.push_front(e),
        }
    }

    pub fn pop_front(&mut self) -> Option<Box<[u8]>> {
        self.pop_front_with(|e| Box::from(e))
    }

    pub fn pop_back(&mut self) -> Option<Box<[u8]>> {
        self.pop_back_with(|e| Box::from(e))
    }

    /// Removes the head element, handing it to `f` before it is gone (LPOP writes it to the
    /// reply from where it lies, with no copy of its own).
    pub fn pop_front_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let r = match &mut self.0 {
            ListRepr::Packed(p) => {
                if p.len() == 0 {
                    return None;
                }
                let (e, next) = pack::read(p.body(), 0);
                let h = elem_poly(e);
                let r = f(e);
                p.splice_raw(0, next, &[]);
                p.set_len(p.len() - 1);
                p.set_sum(poly::mul(poly::sub(p.sum(), h), poly::B_INV));
                return Some(r);
            }
            ListRepr::Quick(q) => q.pop_front_with(f)?,
        };
        self.maybe_pack();
        Some(r)
    }

    /// Removes the tail element, handing it to `f` before it is gone.
    pub fn pop_back_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let r = match &mut self.0 {
            ListRepr::Packed(p) => {
                let last = packed_last_offset(p.body())?;
                let e = pack::read(p.body(), last).0;
                let h = elem_poly(e);
                let r = f(e);
                p.truncate(last);
                p.set_len(p.len() - 1);
                let pow = poly::pow(poly::B, p.len() as u64);
                p.set_sum(poly::sub(p.sum(), poly::mul(h, pow)));
                return Some(r);
            }
            ListRepr::Quick(q) => q.pop_back_with(f)?,
        };
        self.maybe_pack();
        Some(r)
    }

    /// Replaces element `i` (which must exist). As in Redis 7.2, a packed list converts when
    /// the new element would not fit beside all the others (the old one counted too), and a
    /// quicklist packs again when the replacement leaves it small.
    pub fn set(&mut self, i: usize, e: &[u8]) {
        if let ListRepr::Packed(p) = &self.0
            && !Self::fits_packed(p.len() + 1, p.body().len() + pack::encoded_len(e), false)
        {
            self.0 = ListRepr::Quick(unpack_list(p));
        }
        let old: Vec<u8> = match &mut self.0 {
            ListRepr::Packed(p) => {
                let from = packed_offsets(p.body())[i];
                let (old, to) = pack::read(p.body(), from);
                let old = old.to_vec();
                p.splice(from, to, &[e]);
                old
            }
            ListRepr::Quick(q) => q.set(i, e),
        };
        let delta = poly::sub(elem_poly(e), elem_poly(&old));
        let delta = poly::mul(delta, poly::pow(poly::B, i as u64));
        match &mut self.0 {
            ListRepr::Packed(p) => p.set_sum(poly::add(p.sum(), delta)),
            ListRepr::Quick(q) => q.poly = poly::add(q.poly, delta),
        }
        self.maybe_pack();
    }

    /// Inserts `e` before element `i` (`i` ≤ len): LINSERT. A packed list converts when it
    /// would pass the limit; a quicklist edits one node.
    pub fn insert(&mut self, i: usize, e: &[u8]) {
        if i == 0 {
            return self.push_front(e);
        }
        if i >= self.len() {
            return self.push_back(e);
        }
        self.make_room(e);
        match &mut self.0 {
            ListRepr::Packed(_) => self.edit(|items| items.insert(i, e.into())),
            ListRepr::Quick(q) => q.insert(i, e),
        }
    }

    /// Arbitrary edits (LREM, LTRIM): O(n), like the commands themselves.
    pub fn edit<R>(&mut self, f: impl FnOnce(&mut VecDeque<Box<[u8]>>) -> R) -> R {
        let was_packed = matches!(self.0, ListRepr::Packed(_));
        let mut items: VecDeque<Box<[u8]>> = self.iter().map(Box::from).collect();
        let r = f(&mut items);
        self.0 = Self::recompute(&items, was_packed);
        r
    }

    /// The form of edited elements, with digest and size recomputed: a list that was packed
    /// stays packed while it fits; a quicklist is packed once within half the limit.
    fn recompute(items: &VecDeque<Box<[u8]>>, was_packed: bool) -> ListRepr {
        let packed_bytes: usize = items.iter().map(|e| pack::encoded_len(e)).sum();
        if Self::fits_packed(items.len(), packed_bytes, !was_packed) {
            let mut buf = Packed::start(packed_bytes);
            let (mut p, mut pw) = (0u64, 1u64);
            for e in items {
                pack::put(&mut buf, e);
                p = poly::add(p, poly::mul(elem_poly(e), pw));
                pw = poly::mul(pw, poly::B);
            }
            ListRepr::Packed(Packed::finish(buf, items.len(), p))
        } else {
            ListRepr::Quick(Box::new(Quick::from_iter(
                items.iter().map(|e| &e[..]),
                None,
                limits(),
            )))
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

/// A read-only view of a list (see [`crate::ValueRef`]).
#[derive(Clone, Copy)]
pub struct ListRef<'a> {
    repr: ListReprRef<'a>,
    /// Estimated bytes of the quicklist form's elements (the allocation's length while packed).
    bytes: usize,
    /// The ordered polynomial hash when it is kept (else computed when asked).
    poly: Option<u64>,
}

#[derive(Clone, Copy)]
enum ListReprRef<'a> {
    Packed { buf: &'a [u8], len: usize },
    Quick(&'a Quick),
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
            ListReprRef::Quick(q) => q.len,
        }
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    pub fn encoding(self) -> Encoding {
        match self.repr {
            ListReprRef::Packed { .. } => Encoding::Listpack,
            ListReprRef::Quick(_) => Encoding::Quicklist,
        }
    }

    /// Estimated heap bytes: a packed list's allocation (header and elements) and the
    /// allocator's per-chunk cost, or the quicklist's entries with their share of the nodes
    /// and its box.
    pub(crate) fn mem_bytes(self) -> usize {
        match self.repr {
            ListReprRef::Packed { .. } => self.bytes + PACKED_CHUNK,
            ListReprRef::Quick(_) => self.bytes + FULL_HEADER,
        }
    }

    pub fn get(self, i: usize) -> Option<&'a [u8]> {
        match self.repr {
            ListReprRef::Packed { buf, .. } => pack::Iter::new(buf).nth(i),
            ListReprRef::Quick(q) => (i < q.len).then(|| {
                let (k, pos) = q.seek(i);
                read_fwd(&q.nodes[k].buf, pos).0
            }),
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
            ListReprRef::Quick(q) => Either::Right(q.range(start, end)),
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
                        if n % 2 == 0 {
                            l.insert(i, &e);
                        } else {
                            l.edit(|d| d.insert(i, e.clone().into()));
                        }
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
                check_form(&l);
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

    /// The digest as the list's first form (a deque of elements) computed it: Σ h(eᵢ)·Bⁱ over
    /// the elements from the head, mixed with the length. Every form must give exactly this, so
    /// that TENANT.DIGEST of the same content never changes with the layout.
    fn reference_digest<'e>(items: impl Iterator<Item = &'e [u8]>) -> u64 {
        let (mut p, mut pw, mut n) = (0u64, 1u64, 0u64);
        for e in items {
            p = poly::add(p, poly::mul(poly::reduce(hash_bytes(e)), pw));
            pw = poly::mul(pw, poly::B);
            n += 1;
        }
        mix64(p ^ n.rotate_left(40) ^ 0x2545_f491_4f6c_dd1d)
    }

    /// The invariants of the form: a quicklist's count, estimate and digest match its nodes;
    /// no node is empty; a node passes the limits only when it holds one element; a quicklist
    /// of one node within half the limits has been packed (after a removal; pushes never pack).
    fn check_form(l: &ListValue) {
        assert_eq!(l.digest(), reference_digest(l.iter()));
        let ListRepr::Quick(q) = &l.0 else {
            let (max_count, max_bytes) = limits();
            let p = l.as_packed().unwrap();
            assert!(
                p.len() <= max_count.max(1)
                    && p.body().len() <= max_bytes.max(p.body().len().min(1))
                    || p.len() <= 1
            );
            return;
        };
        let (max_count, max_bytes) = limits();
        assert_eq!(q.len, q.nodes.iter().map(|n| n.count).sum::<usize>());
        let mut bytes = 0;
        for n in &q.nodes {
            assert!(n.count > 0, "no empty node");
            // A node made from a packed list may pass the byte limit by its back-lengths (one
            // or more bytes per entry: the packed form writes each length once).
            let back_lengths: usize = n.iter().map(|e| pack::len_of_len(e.len())).sum();
            assert!(
                n.count == 1 || (n.count <= max_count && n.used() <= max_bytes + back_lengths),
                "node of {} entries, {} bytes",
                n.count,
                n.used()
            );
            assert_eq!(n.iter().count(), n.count);
            bytes += n
                .iter()
                .map(|e| entry_len(e) + QUICK_ELEM_SLACK)
                .sum::<usize>();
        }
        assert_eq!(q.bytes, bytes);
        assert_eq!(q.pow, poly::pow(poly::B, q.len as u64));
    }

    #[test]
    fn every_form_keeps_the_first_forms_digest() {
        let mut l = ListValue::default();
        let mut model: VecDeque<Vec<u8>> = VecDeque::new();
        for i in 0..30_000u32 {
            let e = format!("e{}", i * 7919 % 100_003).into_bytes();
            if i % 3 == 0 {
                l.push_front(&e);
                model.push_front(e);
            } else {
                l.push_back(&e);
                model.push_back(e);
            }
            if i % 5 == 4 {
                assert_eq!(l.pop_back().map(|b| b.to_vec()), model.pop_back());
            }
            if i % 7 == 6 {
                assert_eq!(l.pop_front().map(|b| b.to_vec()), model.pop_front());
            }
        }
        assert_eq!(l.encoding(), Encoding::Quicklist);
        let ListRepr::Quick(q) = &l.0 else { panic!() };
        assert!(q.nodes.len() > 10, "many nodes: {}", q.nodes.len());
        check_form(&l);
        assert_eq!(l.digest(), reference_digest(model.iter().map(|e| &e[..])));
        assert!(l.iter().eq(model.iter().map(|e| &e[..])));
        assert!(l.iter().rev().eq(model.iter().rev().map(|e| &e[..])));
        for i in (0..model.len()).step_by(97).chain([0, model.len() - 1]) {
            assert_eq!(l.get(i), Some(&model[i][..]));
            let r: Vec<&[u8]> = l.range(i, i + 700).collect();
            let want: Vec<&[u8]> = model.iter().skip(i).take(700).map(|e| &e[..]).collect();
            assert_eq!(r, want);
            let r: Vec<&[u8]> = l.range(i, i + 700).rev().collect();
            assert_eq!(r, want.into_iter().rev().collect::<Vec<_>>());
        }
        // Edits in the middle: LSET, LINSERT, and the general edit.
        for (k, i) in [17usize, model.len() / 2, model.len() - 3]
            .into_iter()
            .enumerate()
        {
            let e = vec![b'a' + k as u8; 100 * k + 1];
            l.set(i, &e);
            model[i] = e.clone();
            l.insert(i, &e);
            model.insert(i, e);
            check_form(&l);
        }
        l.edit(|d| d.retain(|e| e.len() != 1));
        model.retain(|e| e.len() != 1);
        check_form(&l);
        assert!(l.iter().eq(model.iter().map(|e| &e[..])));
        let rebuilt = ListValue::from_elements(&model.iter().collect::<Vec<_>>());
        assert_eq!(rebuilt.digest(), l.digest());
        assert_eq!(
            rebuilt.view().mem_bytes(),
            l.view().mem_bytes(),
            "estimate is content only"
        );
        check_form(&rebuilt);
        // Popping down to one small node packs the list again, with the same digest.
        while l.len() > 40 {
            l.pop_back();
            model.pop_back();
        }
        assert_eq!(l.encoding(), Encoding::Listpack);
        assert_eq!(l.digest(), reference_digest(model.iter().map(|e| &e[..])));
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
