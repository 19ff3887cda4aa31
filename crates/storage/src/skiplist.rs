//! The order-statistics index of large sorted sets: Redis's skiplist with spans, kept in an arena
//! (nodes are addressed by `u32` index, so the structure is plain safe Rust).
//!
//! Elements are ordered by (score, member). Every forward link records its *span*, the number of
//! elements it skips, so the rank of an element (ZRANK), the element at a rank (ZRANGE by index)
//! and the first element past a bound (score and lex ranges) are all found by one descent from
//! the top level: O(log n) expected, and walking m elements from there costs O(m).

use std::cmp::Ordering;

use crate::value::Score;

/// Levels at most (Redis: ZSKIPLIST_MAXLEVEL); 2^32 elements would need about 16 at p = 1/4.
const MAX_LEVEL: usize = 32;
const NIL: u32 = u32::MAX;
/// The header node's index: a sentinel before the first element.
const HEAD: u32 = 0;

#[derive(Clone, Copy)]
struct Level {
    next: u32,
    /// Elements between this node and `next` (counting `next`, not this node).
    span: u32,
}

struct Node {
    score: f64,
    member: Box<[u8]>,
    backward: u32,
    levels: Levels,
}

/// Levels kept inline in the node (15 of 16 nodes have at most two at p = 1/4).
const INLINE_LEVELS: usize = 2;

/// A node's forward links: the first ones inline, so that a descent reads one cache line per
/// node it passes (score and link together), the rest behind a box.
#[derive(Default)]
struct Levels {
    inline: [Level; INLINE_LEVELS],
    more: Box<[Level]>,
}

impl Levels {
    fn new(n: usize) -> Levels {
        let empty = Level { next: NIL, span: 0 };
        Levels {
            inline: [empty; INLINE_LEVELS],
            more: vec![empty; n.saturating_sub(INLINE_LEVELS)].into_boxed_slice(),
        }
    }
}

impl Default for Level {
    fn default() -> Level {
        Level { next: NIL, span: 0 }
    }
}

impl std::ops::Index<usize> for Levels {
    type Output = Level;

    #[inline]
    fn index(&self, i: usize) -> &Level {
        if i < INLINE_LEVELS {
            &self.inline[i]
        } else {
            &self.more[i - INLINE_LEVELS]
        }
    }
}

impl std::ops::IndexMut<usize> for Levels {
    #[inline]
    fn index_mut(&mut self, i: usize) -> &mut Level {
        if i < INLINE_LEVELS {
            &mut self.inline[i]
        } else {
            &mut self.more[i - INLINE_LEVELS]
        }
    }
}

/// A skiplist of (score, member) with spans. Members are unique; the caller (the sorted set's
/// member → score table) guarantees it.
pub struct SkipList {
    nodes: Vec<Node>,
    /// Indices of free arena slots.
    free: Vec<u32>,
    tail: u32,
    level: usize,
    len: usize,
    /// xorshift state for node levels.
    rng: u64,
}

impl Default for SkipList {
    fn default() -> Self {
        Self::new()
    }
}

#[inline]
fn cmp_elem(s1: f64, m1: &[u8], s2: f64, m2: &[u8]) -> Ordering {
    Score(s1).cmp(&Score(s2)).then_with(|| m1.cmp(m2))
}

impl SkipList {
    pub fn new() -> Self {
        SkipList {
            nodes: vec![Node {
                score: 0.0,
                member: Box::default(),
                backward: NIL,
                levels: Levels::new(MAX_LEVEL),
            }],
            free: Vec::new(),
            tail: NIL,
            level: 1,
            len: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn random_level(&mut self) -> usize {
        let mut level = 1;
        // p = 1/4 per extra level, as in Redis.
        loop {
            let mut x = self.rng;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.rng = x;
            if x & 3 != 0 || level >= MAX_LEVEL {
                return level;
            }
            level += 1;
        }
    }

    #[inline]
    fn node(&self, i: u32) -> &Node {
        &self.nodes[i as usize]
    }

    /// Inserts an element known to be absent.
    pub fn insert(&mut self, score: f64, member: &[u8]) {
        let mut update = [HEAD; MAX_LEVEL];
        let mut rank = [0u32; MAX_LEVEL];
        let mut x = HEAD;
        for i in (0..self.level).rev() {
            rank[i] = if i == self.level - 1 { 0 } else { rank[i + 1] };
            loop {
                let l = self.node(x).levels[i];
                if l.next == NIL {
                    break;
                }
                let n = self.node(l.next);
                if cmp_elem(n.score, &n.member, score, member) != Ordering::Less {
                    break;
                }
                rank[i] += l.span;
                x = l.next;
            }
            update[i] = x;
        }
        let level = self.random_level();
        if level > self.level {
            for i in self.level..level {
                rank[i] = 0;
                update[i] = HEAD;
                self.nodes[HEAD as usize].levels[i].span = self.len as u32;
            }
            self.level = level;
        }
        let node = Node {
            score,
            member: member.into(),
            backward: if update[0] == HEAD { NIL } else { update[0] },
            levels: Levels::new(level),
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                assert!(self.nodes.len() < NIL as usize, "sorted set too large");
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        for i in 0..level {
            let prev = update[i] as usize;
            let prev_level = self.nodes[prev].levels[i];
            self.nodes[idx as usize].levels[i] = Level {
                next: prev_level.next,
                span: prev_level.span - (rank[0] - rank[i]),
            };
            self.nodes[prev].levels[i] = Level {
                next: idx,
                span: rank[0] - rank[i] + 1,
            };
        }
        for (i, u) in update.iter().enumerate().take(self.level).skip(level) {
            self.nodes[*u as usize].levels[i].span += 1;
        }
        let next0 = self.nodes[idx as usize].levels[0].next;
        if next0 == NIL {
            self.tail = idx;
        } else {
            self.nodes[next0 as usize].backward = idx;
        }
        self.len += 1;
    }

    /// Removes an element; returns whether it was there.
    pub fn remove(&mut self, score: f64, member: &[u8]) -> bool {
        let mut update = [HEAD; MAX_LEVEL];
        let mut x = HEAD;
        for i in (0..self.level).rev() {
            loop {
                let l = self.node(x).levels[i];
                if l.next == NIL {
                    break;
                }
                let n = self.node(l.next);
                if cmp_elem(n.score, &n.member, score, member) != Ordering::Less {
                    break;
                }
                x = l.next;
            }
            update[i] = x;
        }
        let target = self.node(x).levels[0].next;
        if target == NIL {
            return false;
        }
        let t = self.node(target);
        if cmp_elem(t.score, &t.member, score, member) != Ordering::Equal {
            return false;
        }
        for (i, u) in update.iter().enumerate().take(self.level) {
            let u = *u as usize;
            if self.nodes[u].levels[i].next == target {
                let tl = self.nodes[target as usize].levels[i];
                self.nodes[u].levels[i] = Level {
                    next: tl.next,
                    span: self.nodes[u].levels[i].span + tl.span - 1,
                };
            } else {
                self.nodes[u].levels[i].span -= 1;
            }
        }
        let next0 = self.nodes[target as usize].levels[0].next;
        let back = self.nodes[target as usize].backward;
        if next0 == NIL {
            self.tail = back;
        } else {
            self.nodes[next0 as usize].backward = back;
        }
        while self.level > 1 && self.nodes[HEAD as usize].levels[self.level - 1].next == NIL {
            self.level -= 1;
        }
        self.len -= 1;
        let dead = &mut self.nodes[target as usize];
        dead.member = Box::default();
        dead.levels = Levels::default();
        self.free.push(target);
        if self.len == 0 {
            *self = SkipList {
                rng: self.rng,
                ..SkipList::new()
            };
        } else if self.nodes.len() > 64 && self.len * 4 < self.nodes.len() {
            self.compact();
        }
        true
    }

    /// Rebuilds the arena without free slots (after mass deletion), so memory is returned.
    fn compact(&mut self) {
        let items: Vec<(f64, Box<[u8]>)> = {
            let mut v = Vec::with_capacity(self.len);
            let mut x = self.node(HEAD).levels[0].next;
            while x != NIL {
                let n = &mut self.nodes[x as usize];
                v.push((n.score, std::mem::take(&mut n.member)));
                x = n.levels[0].next;
            }
            v
        };
        let rng = self.rng;
        *self = SkipList::new();
        self.rng = rng;
        self.nodes.reserve(items.len());
        for (s, m) in items {
            self.insert(s, &m);
        }
    }

    /// The number of leading elements for which `before(score, member)` holds. `before` must be
    /// true for a prefix of the order and false afterwards (a bound). O(log n).
    pub fn count_before(&self, mut before: impl FnMut(f64, &[u8]) -> bool) -> usize {
        let mut x = HEAD;
        let mut rank = 0usize;
        for i in (0..self.level).rev() {
            loop {
                let l = self.node(x).levels[i];
                if l.next == NIL {
                    break;
                }
                let n = self.node(l.next);
                if !before(n.score, &n.member) {
                    break;
                }
                rank += l.span as usize;
                x = l.next;
            }
        }
        rank
    }

    /// 0-based rank of an element, if present. O(log n).
    pub fn rank(&self, score: f64, member: &[u8]) -> Option<usize> {
        let r = self.count_before(|s, m| cmp_elem(s, m, score, member) == Ordering::Less);
        let (s, m) = self.get(r)?;
        (cmp_elem(s, m, score, member) == Ordering::Equal).then_some(r)
    }

    /// Arena index of the element at 0-based `rank`. O(log n).
    fn index_at(&self, rank: usize) -> u32 {
        if rank >= self.len {
            return NIL;
        }
        let want = rank + 1;
        let mut x = HEAD;
        let mut traversed = 0usize;
        for i in (0..self.level).rev() {
            loop {
                let l = self.node(x).levels[i];
                if l.next == NIL || traversed + l.span as usize > want {
                    break;
                }
                traversed += l.span as usize;
                x = l.next;
            }
            if traversed == want {
                return x;
            }
        }
        NIL
    }

    /// The element at 0-based `rank`.
    pub fn get(&self, rank: usize) -> Option<(f64, &[u8])> {
        let i = self.index_at(rank);
        (i != NIL).then(|| {
            let n = self.node(i);
            (n.score, &*n.member)
        })
    }

    /// Elements with ranks in `[start, end)`, in order (reversible). O(log n) to find the ends.
    pub fn range(&self, start: usize, end: usize) -> Iter<'_> {
        let end = end.min(self.len);
        if start >= end {
            return Iter {
                list: self,
                front: NIL,
                back: NIL,
                left: 0,
            };
        }
        let front = self.index_at(start);
        let back = if end == self.len {
            self.tail
        } else {
            self.index_at(end - 1)
        };
        Iter {
            list: self,
            front,
            back,
            left: end - start,
        }
    }

    pub fn iter(&self) -> Iter<'_> {
        self.range(0, self.len)
    }
}

/// A walk over consecutive elements of a [`SkipList`], from either end.
pub struct Iter<'a> {
    list: &'a SkipList,
    front: u32,
    back: u32,
    left: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], f64);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let n = self.list.node(self.front);
        self.left -= 1;
        self.front = n.levels[0].next;
        Some((&n.member, n.score))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let list = self.list;
        let n = list.node(self.back);
        self.left -= 1;
        self.back = n.backward;
        Some((&n.member, n.score))
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn model_vec(m: &BTreeSet<(Score, Vec<u8>)>) -> Vec<(Vec<u8>, f64)> {
        m.iter().map(|(s, k)| (k.clone(), s.0)).collect()
    }

    fn list_vec(l: &SkipList) -> Vec<(Vec<u8>, f64)> {
        l.iter().map(|(k, s)| (k.to_vec(), s)).collect()
    }

    proptest::proptest! {
        /// Every operation agrees with an ordered set used as the model: order, ranks, selection
        /// by rank, ranges from both ends and bound searches.
        #[test]
        fn matches_ordered_set(ops in proptest::collection::vec((0u8..4, 0u16..200, -5i8..5), 0..600)) {
            let mut l = SkipList::new();
            let mut m: BTreeSet<(Score, Vec<u8>)> = BTreeSet::new();
            for (op, k, s) in ops {
                let member = format!("m{k}").into_bytes();
                let score = f64::from(s);
                let present = m.iter().find(|(_, x)| *x == member).map(|(s, _)| s.0);
                match op {
                    0 => {
                        if let Some(old) = present {
                            proptest::prop_assert!(l.remove(old, &member));
                            m.remove(&(Score(old), member.clone()));
                        }
                        proptest::prop_assert!(!l.remove(score + 0.5, &member));
                    }
                    _ => {
                        if let Some(old) = present {
                            l.remove(old, &member);
                            m.remove(&(Score(old), member.clone()));
                        }
                        l.insert(score, &member);
                        m.insert((Score(score), member.clone()));
                    }
                }
                proptest::prop_assert_eq!(l.len(), m.len());
            }
            let want = model_vec(&m);
            proptest::prop_assert_eq!(list_vec(&l), want.clone());
            let rev: Vec<_> = l.iter().rev().map(|(k, s)| (k.to_vec(), s)).collect();
            let mut want_rev = want.clone();
            want_rev.reverse();
            proptest::prop_assert_eq!(rev, want_rev);
            for (i, (k, s)) in want.iter().enumerate() {
                proptest::prop_assert_eq!(l.rank(*s, k), Some(i));
                proptest::prop_assert_eq!(l.get(i).map(|(s, k)| (k.to_vec(), s)), Some((k.clone(), *s)));
            }
            proptest::prop_assert_eq!(l.rank(0.25, b"absent"), None);
            let n = want.len();
            for (a, b) in [(0, n), (1, 3), (n / 2, n), (n.saturating_sub(2), n + 5), (3, 2)] {
                let got: Vec<_> = l.range(a, b).map(|(k, s)| (k.to_vec(), s)).collect();
                let exp: Vec<_> = want.iter().skip(a).take(b.saturating_sub(a)).cloned().collect();
                proptest::prop_assert_eq!(&got, &exp);
                let got_rev: Vec<_> = l.range(a, b).rev().map(|(k, s)| (k.to_vec(), s)).collect();
                let mut exp_rev = exp.clone();
                exp_rev.reverse();
                proptest::prop_assert_eq!(got_rev, exp_rev);
            }
            for bound in -6..6 {
                let b = f64::from(bound);
                proptest::prop_assert_eq!(
                    l.count_before(|s, _| s < b),
                    want.iter().filter(|(_, s)| *s < b).count()
                );
            }
        }
    }

    #[test]
    fn mass_deletion_compacts_and_empties() {
        let mut l = SkipList::new();
        for i in 0..1000 {
            l.insert(f64::from(i), format!("{i:04}").as_bytes());
        }
        for i in 0..990 {
            assert!(l.remove(f64::from(i), format!("{i:04}").as_bytes()));
        }
        assert!(l.nodes.len() < 100, "arena compacted: {}", l.nodes.len());
        assert_eq!(l.get(0).map(|(s, _)| s), Some(990.0));
        assert_eq!(l.rank(995.0, b"0995"), Some(5));
        for i in 990..1000 {
            assert!(l.remove(f64::from(i), format!("{i:04}").as_bytes()));
        }
        assert!(l.is_empty());
        assert_eq!(l.iter().count(), 0);
        assert_eq!(l.nodes.len(), 1);
    }
}
