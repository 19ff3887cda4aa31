//! The order-statistics index of large sorted sets: a B+tree of (score, member) whose inner nodes
//! count the elements under each child.
//!
//! Elements are ordered by (score, member) and live in leaves of up to [`LEAF_CAP`], linked both
//! ways so that a range walks on from leaf to leaf. An inner node keeps, per child, the number
//! of elements under it and a lower bound of its keys, so the rank of an element (ZRANK), the
//! element at a rank (ZRANGE by index) and the first element past a bound (score and lex ranges)
//! are all found by one descent: O(log n) with a fan-out of 32, which at 100k elements is four
//! node visits (the skiplist this replaced passed about 33 nodes, a cache miss each). Walking m
//! elements from there costs O(m).
//!
//! Nodes live in two arenas addressed by `u32` (plain safe Rust; a freed node's memory goes back
//! to the allocator at once, its slot to a free list). A member of up to [`INLINE_MEMBER`] bytes
//! is kept inside the leaf, next to its score, so comparing it on a score tie reads no other
//! memory; a longer one has its own allocation. Separators (the lower bounds in inner nodes) are
//! the shortest keys that separate two leaves (usually just a score and an empty member), so
//! they rarely allocate.
//!
//! Removal keeps every leaf other than the root at least a quarter full by merging with or
//! borrowing from a sibling, and inner nodes likewise, so deletion never leaves a sparse tree
//! behind (no rebuild pass, no latency spike). An insertion past the last element of the last
//! leaf (or before the first of the first) splits off a leaf holding only the new element, so
//! ascending inserts fill leaves completely.

use std::cmp::Ordering;

use crate::table::{INLINE_KEY, TableKey};
use crate::value::Score;

/// Elements per leaf at most.
const LEAF_CAP: usize = 32;
/// Children per inner node at most.
const INNER_CAP: usize = 32;
/// Below this many elements a leaf (other than the root) merges with or borrows from a sibling.
const LEAF_MIN: usize = LEAF_CAP / 4;
/// Below this many children an inner node (other than the root) merges or borrows.
const INNER_MIN: usize = INNER_CAP / 4;
/// Inner levels at most: with at least [`INNER_MIN`] children per inner node below the root,
/// 2^32 elements need fewer than 12.
const MAX_HEIGHT: usize = 16;
const NIL: u32 = u32::MAX;

/// Longest member kept inside a leaf: a member is held as a table key is (24 bytes either way).
pub const INLINE_MEMBER: usize = INLINE_KEY;

/// A member as a node holds it: short ones inline, long ones in their own allocation.
type Member = TableKey;

/// What a member costs outside its node: nothing inline, else its allocation (glibc: an 8-byte
/// header, rounded up to 16, at least 32).
pub fn member_heap_bytes(len: usize) -> usize {
    if len <= INLINE_MEMBER {
        0
    } else {
        (len + 8).div_ceil(16).max(2) * 16
    }
}

struct Leaf {
    len: u32,
    prev: u32,
    next: u32,
    scores: [f64; LEAF_CAP],
    members: [Member; LEAF_CAP],
}

impl Leaf {
    fn new() -> Box<Leaf> {
        Box::new(Leaf {
            len: 0,
            prev: NIL,
            next: NIL,
            scores: [0.0; LEAF_CAP],
            members: [const { Member::EMPTY }; LEAF_CAP],
        })
    }

    #[inline]
    fn n(&self) -> usize {
        self.len as usize
    }

    /// Elements before which `before` holds (a prefix).
    #[inline]
    fn partition(&self, mut before: impl FnMut(f64, &[u8]) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.n());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if before(self.scores[mid], self.members[mid].as_bytes()) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn insert_at(&mut self, pos: usize, score: f64, m: Member) {
        let n = self.n();
        self.scores.copy_within(pos..n, pos + 1);
        self.members[pos..=n].rotate_right(1);
        self.scores[pos] = score;
        self.members[pos] = m;
        self.len += 1;
    }

    fn remove_at(&mut self, pos: usize) -> Member {
        let n = self.n();
        self.scores.copy_within(pos + 1..n, pos);
        let m = std::mem::replace(&mut self.members[pos], Member::EMPTY);
        self.members[pos..n].rotate_left(1);
        self.len -= 1;
        m
    }

    /// Appends `from`'s elements `[at..]` to this leaf.
    fn take_tail(&mut self, from: &mut Leaf, at: usize) {
        for i in at..from.n() {
            let n = self.n();
            self.scores[n] = from.scores[i];
            self.members[n] = std::mem::replace(&mut from.members[i], Member::EMPTY);
            self.len += 1;
        }
        from.len = at as u32;
    }
}

struct Inner {
    /// Children in use.
    len: u32,
    /// `scores[i]`, `members[i]` (i ≥ 1): a key ≤ every element under `children[i]` and >
    /// every element under `children[i - 1]` (a bound, not necessarily an element). Slot 0 is
    /// unused: the node's own bound is in its parent.
    scores: [f64; INNER_CAP],
    members: [Member; INNER_CAP],
    /// Elements under each child.
    counts: [u32; INNER_CAP],
    children: [u32; INNER_CAP],
}

impl Inner {
    fn new() -> Box<Inner> {
        Box::new(Inner {
            len: 0,
            scores: [0.0; INNER_CAP],
            members: [const { Member::EMPTY }; INNER_CAP],
            counts: [0; INNER_CAP],
            children: [NIL; INNER_CAP],
        })
    }

    #[inline]
    fn n(&self) -> usize {
        self.len as usize
    }

    /// The child to descend into: the last one whose bound satisfies `at_or_after_bound`
    /// (which must hold for a prefix of the bounds), else the first.
    #[inline]
    fn child(&self, mut bound_ok: impl FnMut(f64, &[u8]) -> bool) -> usize {
        let (mut lo, mut hi) = (1, self.n());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if bound_ok(self.scores[mid], self.members[mid].as_bytes()) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo - 1
    }

    fn total(&self) -> usize {
        self.counts[..self.n()].iter().map(|&c| c as usize).sum()
    }

    /// Inserts a child at `i` (≥ 1) with its bound.
    fn insert_at(&mut self, i: usize, score: f64, m: Member, child: u32, count: u32) {
        let n = self.n();
        self.scores.copy_within(i..n, i + 1);
        self.members[i..=n].rotate_right(1);
        self.counts.copy_within(i..n, i + 1);
        self.children.copy_within(i..n, i + 1);
        self.scores[i] = score;
        self.members[i] = m;
        self.counts[i] = count;
        self.children[i] = child;
        self.len += 1;
    }

    /// Removes child `i` and its bound (for i = 0, child 1's bound moves to slot 0, where the
    /// caller takes it or leaves it unused).
    fn remove_at(&mut self, i: usize) -> (f64, Member, u32, u32) {
        let n = self.n();
        let out = (
            self.scores[i],
            std::mem::replace(&mut self.members[i], Member::EMPTY),
            self.children[i],
            self.counts[i],
        );
        self.scores.copy_within(i + 1..n, i);
        self.members[i..n].rotate_left(1);
        self.counts.copy_within(i + 1..n, i);
        self.children.copy_within(i + 1..n, i);
        self.len -= 1;
        out
    }
}

#[inline]
fn cmp_elem(s1: f64, m1: &[u8], s2: f64, m2: &[u8]) -> Ordering {
    Score(s1).cmp(&Score(s2)).then_with(|| m1.cmp(m2))
}

/// The shortest key `k` with `(ls, lm) < k <= (rs, rm)`, for the bound between two leaves.
fn separator(ls: f64, lm: &[u8], rs: f64, rm: &[u8]) -> (f64, Member) {
    if Score(ls) < Score(rs) {
        return (rs, Member::EMPTY);
    }
    // Same score: the shortest prefix of `rm` greater than `lm` (`rm` itself at worst).
    let common = lm.iter().zip(rm).take_while(|(a, b)| a == b).count();
    let len = (common + 1).min(rm.len());
    (rs, Member::new(&rm[..len]))
}

/// A B+tree of (score, member) with counts. Members are unique; the caller (the sorted set's
/// member → score table) guarantees it.
pub struct OrdTree {
    leaves: Vec<Option<Box<Leaf>>>,
    inners: Vec<Option<Box<Inner>>>,
    free_leaves: Vec<u32>,
    free_inners: Vec<u32>,
    /// A leaf when `height` is 0, else an inner node.
    root: u32,
    /// Inner levels above the leaves.
    height: usize,
    /// The last leaf (where a walk to the end stops). The first never moves: a split keeps the
    /// left half in place and a merge keeps the left leaf.
    last: u32,
    len: usize,
}

impl Default for OrdTree {
    fn default() -> Self {
        Self::new()
    }
}

/// The inner nodes a descent passed and the child taken in each, root first.
struct Path {
    steps: [(u32, usize); MAX_HEIGHT],
    depth: usize,
}

impl OrdTree {
    pub fn new() -> Self {
        OrdTree {
            leaves: vec![Some(Leaf::new())],
            inners: Vec::new(),
            free_leaves: Vec::new(),
            free_inners: Vec::new(),
            root: 0,
            height: 0,
            last: 0,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of nodes a tree of `len` elements takes, about: leaves 70% full on average under
    /// random inserts, plus one inner node per twenty leaves. A function of the length only, so
    /// that the same content has the same estimate whatever its history.
    pub fn node_bytes_per_element() -> usize {
        std::mem::size_of::<Leaf>() * 10 / (LEAF_CAP * 7) + std::mem::size_of::<Inner>() / 400
    }

    #[inline]
    fn leaf(&self, i: u32) -> &Leaf {
        self.leaves[i as usize]
            .as_deref()
            .expect("a linked leaf is live")
    }

    #[inline]
    fn leaf_mut(&mut self, i: u32) -> &mut Leaf {
        self.leaves[i as usize]
            .as_deref_mut()
            .expect("a linked leaf is live")
    }

    #[inline]
    fn inner(&self, i: u32) -> &Inner {
        self.inners[i as usize]
            .as_deref()
            .expect("a linked inner node is live")
    }

    #[inline]
    fn inner_mut(&mut self, i: u32) -> &mut Inner {
        self.inners[i as usize]
            .as_deref_mut()
            .expect("a linked inner node is live")
    }

    fn alloc_leaf(&mut self, leaf: Box<Leaf>) -> u32 {
        match self.free_leaves.pop() {
            Some(i) => {
                self.leaves[i as usize] = Some(leaf);
                i
            }
            None => {
                assert!(self.leaves.len() < NIL as usize, "sorted set too large");
                self.leaves.push(Some(leaf));
                (self.leaves.len() - 1) as u32
            }
        }
    }

    fn alloc_inner(&mut self, inner: Box<Inner>) -> u32 {
        match self.free_inners.pop() {
            Some(i) => {
                self.inners[i as usize] = Some(inner);
                i
            }
            None => {
                assert!(self.inners.len() < NIL as usize, "sorted set too large");
                self.inners.push(Some(inner));
                (self.inners.len() - 1) as u32
            }
        }
    }

    fn free_leaf(&mut self, i: u32) -> Box<Leaf> {
        self.free_leaves.push(i);
        self.leaves[i as usize]
            .take()
            .expect("a leaf is freed once")
    }

    fn free_inner(&mut self, i: u32) -> Box<Inner> {
        self.free_inners.push(i);
        self.inners[i as usize]
            .take()
            .expect("an inner node is freed once")
    }

    /// Descends to the leaf where (score, member) is or would be.
    fn descend(&self, score: f64, member: &[u8]) -> (Path, u32) {
        let mut path = Path {
            steps: [(NIL, 0); MAX_HEIGHT],
            depth: 0,
        };
        let mut node = self.root;
        for _ in 0..self.height {
            let inner = self.inner(node);
            let i = inner.child(|s, m| cmp_elem(s, m, score, member) != Ordering::Greater);
            path.steps[path.depth] = (node, i);
            path.depth += 1;
            node = inner.children[i];
        }
        (path, node)
    }

    /// Inserts an element known to be absent.
    pub fn insert(&mut self, score: f64, member: &[u8]) {
        let (path, leaf_idx) = self.descend(score, member);
        for &(node, i) in &path.steps[..path.depth] {
            self.inner_mut(node).counts[i] += 1;
        }
        self.len += 1;
        let leaf = self.leaf_mut(leaf_idx);
        let pos = leaf.partition(|s, m| cmp_elem(s, m, score, member) == Ordering::Less);
        if leaf.n() < LEAF_CAP {
            leaf.insert_at(pos, score, Member::new(member));
            return;
        }
        // Split: the first `keep` of the CAP + 1 elements stay, the rest move to a new leaf.
        let keep = if pos == LEAF_CAP && leaf.next == NIL {
            LEAF_CAP
        } else if pos == 0 && leaf.prev == NIL {
            1
        } else {
            LEAF_CAP.div_ceil(2)
        };
        let mut right = Leaf::new();
        if pos < keep {
            right.take_tail(leaf, keep - 1);
            leaf.insert_at(pos, score, Member::new(member));
        } else {
            right.take_tail(leaf, keep);
            right.insert_at(pos - keep, score, Member::new(member));
        }
        let (last_s, next) = (leaf.scores[leaf.n() - 1], leaf.next);
        let sep = separator(
            last_s,
            leaf.members[leaf.n() - 1].as_bytes(),
            right.scores[0],
            right.members[0].as_bytes(),
        );
        let (left_count, right_count) = (leaf.len, right.len);
        right.prev = leaf_idx;
        right.next = next;
        let right_idx = self.alloc_leaf(right);
        self.leaf_mut(leaf_idx).next = right_idx;
        if next == NIL {
            self.last = right_idx;
        } else {
            self.leaf_mut(next).prev = right_idx;
        }
        self.insert_child(&path, path.depth, sep, right_idx, left_count, right_count);
    }

    /// After the node at `depth` split into itself (now `left_count` elements) and `right`,
    /// puts `right` into the parent (splitting upwards as needed, growing a new root at the top).
    fn insert_child(
        &mut self,
        path: &Path,
        depth: usize,
        sep: (f64, Member),
        right: u32,
        left_count: u32,
        right_count: u32,
    ) {
        if depth == 0 {
            let mut root = Inner::new();
            root.len = 2;
            root.children[0] = self.root;
            root.counts[0] = left_count;
            root.children[1] = right;
            root.counts[1] = right_count;
            root.scores[1] = sep.0;
            root.members[1] = sep.1;
            self.root = self.alloc_inner(root);
            self.height += 1;
            assert!(self.height < MAX_HEIGHT, "sorted set too deep");
            return;
        }
        let (parent_idx, i) = path.steps[depth - 1];
        let parent = self.inner_mut(parent_idx);
        parent.counts[i] = left_count;
        if parent.n() < INNER_CAP {
            parent.insert_at(i + 1, sep.0, sep.1, right, right_count);
            return;
        }
        // Split the parent: children [keep..] move to a new node, whose bound (child keep's)
        // moves up.
        let keep = INNER_CAP.div_ceil(2);
        let mut new = Inner::new();
        for j in keep..INNER_CAP {
            let k = j - keep;
            new.scores[k] = parent.scores[j];
            new.members[k] = std::mem::replace(&mut parent.members[j], Member::EMPTY);
            new.counts[k] = parent.counts[j];
            new.children[k] = parent.children[j];
        }
        new.len = (INNER_CAP - keep) as u32;
        parent.len = keep as u32;
        let up_score = new.scores[0];
        let up_member = std::mem::replace(&mut new.members[0], Member::EMPTY);
        if i + 1 < keep {
            parent.insert_at(i + 1, sep.0, sep.1, right, right_count);
        } else if i + 1 == keep {
            // The new child is the first of the new node: its bound is the one that moves up.
            new.insert_at(1, up_score, up_member, new.children[0], new.counts[0]);
            new.children[0] = right;
            new.counts[0] = right_count;
            new.members[0] = Member::EMPTY;
            let (l, r) = (parent.total() as u32, new.total() as u32);
            let new_idx = self.alloc_inner(new);
            return self.insert_child(path, depth - 1, sep, new_idx, l, r);
        } else {
            new.insert_at(i + 1 - keep, sep.0, sep.1, right, right_count);
        }
        let (l, r) = (parent.total() as u32, new.total() as u32);
        let new_idx = self.alloc_inner(new);
        self.insert_child(path, depth - 1, (up_score, up_member), new_idx, l, r);
    }

    /// Removes an element; returns whether it was there.
    pub fn remove(&mut self, score: f64, member: &[u8]) -> bool {
        let (path, leaf_idx) = self.descend(score, member);
        let leaf = self.leaf_mut(leaf_idx);
        let pos = leaf.partition(|s, m| cmp_elem(s, m, score, member) == Ordering::Less);
        if pos == leaf.n()
            || cmp_elem(
                leaf.scores[pos],
                leaf.members[pos].as_bytes(),
                score,
                member,
            ) != Ordering::Equal
        {
            return false;
        }
        leaf.remove_at(pos);
        for &(node, i) in &path.steps[..path.depth] {
            self.inner_mut(node).counts[i] -= 1;
        }
        self.len -= 1;
        if self.len == 0 {
            *self = OrdTree::new();
            return true;
        }
        if path.depth > 0 && self.leaf(leaf_idx).n() < LEAF_MIN {
            self.rebalance_leaf(&path, leaf_idx);
        }
        true
    }

    /// A leaf under its minimum merges with a sibling or takes elements from it.
    fn rebalance_leaf(&mut self, path: &Path, leaf_idx: u32) {
        let (parent_idx, i) = path.steps[path.depth - 1];
        let parent = self.inner(parent_idx);
        // The pair (left, right) = (children[b - 1], children[b]).
        let b = if i > 0 { i } else { 1 };
        let (left_idx, right_idx) = (parent.children[b - 1], parent.children[b]);
        debug_assert!(left_idx == leaf_idx || right_idx == leaf_idx);
        let mut right = self.free_leaf(right_idx);
        let left = self.leaf_mut(left_idx);
        let total = left.n() + right.n();
        if total <= LEAF_CAP {
            left.take_tail(&mut right, 0);
            left.next = right.next;
            let next = right.next;
            if next == NIL {
                self.last = left_idx;
            } else {
                self.leaf_mut(next).prev = left_idx;
            }
            let parent = self.inner_mut(parent_idx);
            parent.remove_at(b);
            parent.counts[b - 1] = total as u32;
            if path.depth > 1 && parent.n() < INNER_MIN {
                self.rebalance_inner(path, path.depth - 1);
            } else if path.depth == 1 && parent.n() == 1 {
                self.collapse_root();
            }
            return;
        }
        // Even out the two.
        let want_left = total / 2;
        if left.n() > want_left {
            let mut moved = Leaf::new();
            moved.take_tail(left, want_left);
            moved.take_tail(&mut right, 0);
            right.len = 0;
            right.take_tail(&mut moved, 0);
        } else {
            let take = want_left - left.n();
            for j in 0..take {
                let n = left.n();
                left.scores[n] = right.scores[j];
                left.members[n] = std::mem::replace(&mut right.members[j], Member::EMPTY);
                left.len += 1;
            }
            let rn = right.n();
            right.scores.copy_within(take..rn, 0);
            right.members[..rn].rotate_left(take);
            right.len = (rn - take) as u32;
        }
        let sep = separator(
            left.scores[left.n() - 1],
            left.members[left.n() - 1].as_bytes(),
            right.scores[0],
            right.members[0].as_bytes(),
        );
        let (lc, rc) = (left.len, right.len);
        // Back into its own slot (freed above only to borrow it beside `left`).
        let back = self.alloc_leaf(right);
        debug_assert_eq!(back, right_idx);
        let parent = self.inner_mut(parent_idx);
        parent.counts[b - 1] = lc;
        parent.counts[b] = rc;
        parent.scores[b] = sep.0;
        parent.members[b] = sep.1;
    }

    /// The inner node at `path.steps[depth]` is under its minimum: merge with or borrow from a
    /// sibling.
    fn rebalance_inner(&mut self, path: &Path, depth: usize) {
        let (parent_idx, i) = path.steps[depth - 1];
        let parent = self.inner_mut(parent_idx);
        let b = if i > 0 { i } else { 1 };
        let (left_idx, right_idx) = (parent.children[b - 1], parent.children[b]);
        // The bound between the two, taken out: it goes down into the merged node or is
        // replaced by the new one.
        let (bound_s, bound_m) = (
            parent.scores[b],
            std::mem::replace(&mut parent.members[b], Member::EMPTY),
        );
        let mut right = self.free_inner(right_idx);
        let left = self.inner_mut(left_idx);
        let total = left.n() + right.n();
        if total <= INNER_CAP {
            // Right's first child gets the bound the parent kept for right.
            let ln = left.n();
            for j in 0..right.n() {
                left.scores[ln + j] = right.scores[j];
                left.members[ln + j] = std::mem::replace(&mut right.members[j], Member::EMPTY);
                left.counts[ln + j] = right.counts[j];
                left.children[ln + j] = right.children[j];
            }
            left.scores[ln] = bound_s;
            left.members[ln] = bound_m;
            left.len = total as u32;
            let count = left.total() as u32;
            let parent = self.inner_mut(parent_idx);
            parent.remove_at(b);
            parent.counts[b - 1] = count;
            if depth > 1 && parent.n() < INNER_MIN {
                self.rebalance_inner(path, depth - 1);
            } else if depth == 1 && parent.n() == 1 {
                self.collapse_root();
            }
            return;
        }
        // Rotate children one at a time through the parent's bound.
        let want_left = total / 2;
        let mut bound = (bound_s, bound_m);
        while left.n() < want_left {
            let (_, _, child, count) = right.remove_at(0);
            let ln = left.n();
            left.scores[ln] = bound.0;
            left.members[ln] = bound.1;
            left.counts[ln] = count;
            left.children[ln] = child;
            left.len += 1;
            // Right's new first child's bound moves up.
            bound = (
                right.scores[0],
                std::mem::replace(&mut right.members[0], Member::EMPTY),
            );
        }
        while left.n() > want_left {
            let ln = left.n() - 1;
            let s = left.scores[ln];
            let m = std::mem::replace(&mut left.members[ln], Member::EMPTY);
            let (child, count) = (left.children[ln], left.counts[ln]);
            left.len -= 1;
            // The old bound now separates the moved child from right's old first.
            let old_first = (right.children[0], right.counts[0]);
            right.members[0] = Member::EMPTY;
            right.insert_at(1, bound.0, bound.1, old_first.0, old_first.1);
            right.children[0] = child;
            right.counts[0] = count;
            bound = (s, m);
        }
        let (lc, rc) = (left.total() as u32, right.total() as u32);
        let back = self.alloc_inner(right);
        debug_assert_eq!(back, right_idx);
        let parent = self.inner_mut(parent_idx);
        parent.counts[b - 1] = lc;
        parent.counts[b] = rc;
        parent.scores[b] = bound.0;
        parent.members[b] = bound.1;
    }

    /// A root with one child hands the root over to it.
    fn collapse_root(&mut self) {
        while self.height > 0 && self.inner(self.root).n() == 1 {
            let old = self.free_inner(self.root);
            self.root = old.children[0];
            self.height -= 1;
        }
    }

    /// The number of leading elements for which `before(score, member)` holds. `before` must be
    /// true for a prefix of the order of all (score, member) keys and false afterwards (a bound:
    /// it is also asked about the bounds kept in inner nodes, which need not be elements).
    /// O(log n).
    pub fn count_before(&self, mut before: impl FnMut(f64, &[u8]) -> bool) -> usize {
        let mut node = self.root;
        let mut rank = 0usize;
        for _ in 0..self.height {
            let inner = self.inner(node);
            let i = inner.child(&mut before);
            rank += inner.counts[..i].iter().map(|&c| c as usize).sum::<usize>();
            node = inner.children[i];
        }
        rank + self.leaf(node).partition(before)
    }

    /// 0-based rank of an element, if present. O(log n).
    pub fn rank(&self, score: f64, member: &[u8]) -> Option<usize> {
        let mut node = self.root;
        let mut rank = 0usize;
        for _ in 0..self.height {
            let inner = self.inner(node);
            let i = inner.child(|s, m| cmp_elem(s, m, score, member) != Ordering::Greater);
            rank += inner.counts[..i].iter().map(|&c| c as usize).sum::<usize>();
            node = inner.children[i];
        }
        let leaf = self.leaf(node);
        let pos = leaf.partition(|s, m| cmp_elem(s, m, score, member) == Ordering::Less);
        (pos < leaf.n()
            && cmp_elem(
                leaf.scores[pos],
                leaf.members[pos].as_bytes(),
                score,
                member,
            ) == Ordering::Equal)
            .then_some(rank + pos)
    }

    /// The leaf and position of the element at 0-based `rank` (< len). O(log n).
    fn locate(&self, mut rank: usize) -> (u32, usize) {
        let mut node = self.root;
        for _ in 0..self.height {
            let inner = self.inner(node);
            let mut i = 0;
            while i + 1 < inner.n() && rank >= inner.counts[i] as usize {
                rank -= inner.counts[i] as usize;
                i += 1;
            }
            node = inner.children[i];
        }
        (node, rank)
    }

    /// The element at 0-based `rank`.
    pub fn get(&self, rank: usize) -> Option<(f64, &[u8])> {
        if rank >= self.len {
            return None;
        }
        let (leaf, pos) = self.locate(rank);
        let leaf = self.leaf(leaf);
        Some((leaf.scores[pos], leaf.members[pos].as_bytes()))
    }

    /// Elements with ranks in `[start, end)`, in order (reversible). O(log n) to find the ends.
    pub fn range(&self, start: usize, end: usize) -> Iter<'_> {
        let end = end.min(self.len);
        if start >= end {
            return Iter {
                tree: self,
                front: (NIL, 0),
                back: (NIL, 0),
                left: 0,
            };
        }
        let front = self.locate(start);
        let back = if end == self.len {
            (self.last, self.leaf(self.last).n())
        } else {
            let (leaf, pos) = self.locate(end - 1);
            (leaf, pos + 1)
        };
        Iter {
            tree: self,
            front,
            back,
            left: end - start,
        }
    }

    pub fn iter(&self) -> Iter<'_> {
        self.range(0, self.len)
    }
}

/// A walk over consecutive elements of an [`OrdTree`], from either end.
pub struct Iter<'a> {
    tree: &'a OrdTree,
    /// Leaf and position of the next element from the front.
    front: (u32, usize),
    /// Leaf and position just past the next element from the back.
    back: (u32, usize),
    left: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], f64);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let tree = self.tree;
        let mut leaf = tree.leaf(self.front.0);
        if self.front.1 == leaf.n() {
            self.front = (leaf.next, 0);
            leaf = tree.leaf(self.front.0);
        }
        let pos = self.front.1;
        self.front.1 += 1;
        self.left -= 1;
        Some((leaf.members[pos].as_bytes(), leaf.scores[pos]))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl DoubleEndedIterator for Iter<'_> {
    #[inline]
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let tree = self.tree;
        let mut leaf = tree.leaf(self.back.0);
        if self.back.1 == 0 {
            let prev = leaf.prev;
            leaf = tree.leaf(prev);
            self.back = (prev, leaf.n());
        }
        self.back.1 -= 1;
        self.left -= 1;
        let pos = self.back.1;
        Some((leaf.members[pos].as_bytes(), leaf.scores[pos]))
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    type Key = (Score, Vec<u8>);

    impl OrdTree {
        /// Checks every invariant: keys in order and within their bounds, counts, leaf links,
        /// node fill, and that exactly the linked nodes are live.
        fn check(&self) {
            let mut leaves = Vec::new();
            let mut inners = 0;
            let n = self.check_node(self.root, self.height, None, None, &mut leaves, &mut inners);
            assert_eq!(n, self.len);
            assert_eq!(leaves[0], 0, "the first leaf never moves");
            let (mut x, mut prev, mut linked) = (leaves[0], NIL, Vec::new());
            while x != NIL {
                assert_eq!(self.leaf(x).prev, prev);
                linked.push(x);
                prev = x;
                x = self.leaf(x).next;
            }
            assert_eq!(prev, self.last);
            assert_eq!(linked, leaves);
            assert_eq!(self.leaves.iter().flatten().count(), leaves.len());
            assert_eq!(self.inners.iter().flatten().count(), inners);
            assert_eq!(
                self.leaves.len() - self.free_leaves.len(),
                leaves.len(),
                "free list"
            );
            assert_eq!(self.inners.len() - self.free_inners.len(), inners);
        }

        fn check_node(
            &self,
            node: u32,
            level: usize,
            lo: Option<Key>,
            hi: Option<Key>,
            leaves: &mut Vec<u32>,
            inners: &mut usize,
        ) -> usize {
            let is_root = node == self.root && level == self.height;
            let within =
                |k: &Key| lo.as_ref().is_none_or(|l| l <= k) && hi.as_ref().is_none_or(|h| k < h);
            if level == 0 {
                let leaf = self.leaf(node);
                assert!(is_root || leaf.n() >= 1, "empty leaf");
                let keys: Vec<Key> = (0..leaf.n())
                    .map(|j| (Score(leaf.scores[j]), leaf.members[j].as_bytes().to_vec()))
                    .collect();
                assert!(keys.windows(2).all(|w| w[0] < w[1]), "leaf order");
                assert!(keys.iter().all(within), "leaf keys within their bounds");
                assert!(
                    leaf.members[leaf.n()..]
                        .iter()
                        .all(|m| m.as_bytes().is_empty())
                );
                leaves.push(node);
                return leaf.n();
            }
            *inners += 1;
            let inner = self.inner(node);
            if is_root {
                assert!(inner.n() >= 2, "root with one child");
            } else {
                assert!(inner.n() >= INNER_MIN, "inner node under its minimum");
            }
            let bound = |c: usize| (Score(inner.scores[c]), inner.members[c].as_bytes().to_vec());
            let mut total = 0;
            for c in 0..inner.n() {
                let clo = if c == 0 { lo.clone() } else { Some(bound(c)) };
                let chi = if c + 1 < inner.n() {
                    Some(bound(c + 1))
                } else {
                    hi.clone()
                };
                if c > 0 {
                    assert!(within(&bound(c)), "bound within the node's bounds");
                }
                let n = self.check_node(inner.children[c], level - 1, clo, chi, leaves, inners);
                assert_eq!(inner.counts[c] as usize, n, "count of child {c}");
                total += n;
            }
            total
        }
    }

    fn tree_vec(t: &OrdTree) -> Vec<(Vec<u8>, f64)> {
        t.iter().map(|(k, s)| (k.to_vec(), s)).collect()
    }

    fn member(k: u16) -> Vec<u8> {
        // Some long (heap) members, some sharing long prefixes (separators on score ties).
        match k % 7 {
            0 => format!("{k:0>30}").into_bytes(),
            1 => format!("m{k}").into_bytes(),
            _ => format!("member:{k:05}").into_bytes(),
        }
    }

    /// Compares everything the tree answers with an ordered set.
    fn compare(t: &OrdTree, m: &BTreeSet<Key>) -> Result<(), proptest::test_runner::TestCaseError> {
        t.check();
        let want: Vec<(Vec<u8>, f64)> = m.iter().map(|(s, k)| (k.clone(), s.0)).collect();
        proptest::prop_assert_eq!(t.len(), want.len());
        proptest::prop_assert_eq!(tree_vec(t), want.clone());
        let rev: Vec<_> = t.iter().rev().map(|(k, s)| (k.to_vec(), s)).collect();
        proptest::prop_assert_eq!(rev, want.iter().rev().cloned().collect::<Vec<_>>());
        for (i, (k, s)) in want.iter().enumerate() {
            proptest::prop_assert_eq!(t.rank(*s, k), Some(i));
            proptest::prop_assert_eq!(
                t.get(i).map(|(s, k)| (k.to_vec(), s)),
                Some((k.clone(), *s))
            );
            proptest::prop_assert_eq!(t.rank(*s + 0.25, k), None);
        }
        proptest::prop_assert_eq!(t.get(want.len()), None);
        proptest::prop_assert_eq!(t.rank(0.25, b"absent"), None);
        let n = want.len();
        for (a, b) in [
            (0, n),
            (1, 3),
            (n / 3, n / 2 + 40),
            (n / 2, n),
            (n.saturating_sub(2), n + 5),
            (3, 2),
            (n, n + 1),
        ] {
            let exp: Vec<_> = want
                .iter()
                .skip(a)
                .take(b.saturating_sub(a))
                .cloned()
                .collect();
            let got: Vec<_> = t.range(a, b).map(|(k, s)| (k.to_vec(), s)).collect();
            proptest::prop_assert_eq!(&got, &exp);
            proptest::prop_assert_eq!(t.range(a, b).len(), exp.len());
            let got_rev: Vec<_> = t.range(a, b).rev().map(|(k, s)| (k.to_vec(), s)).collect();
            proptest::prop_assert_eq!(got_rev, exp.iter().rev().cloned().collect::<Vec<_>>());
            // Both ends at once, meeting in the middle.
            let mut it = t.range(a, b);
            let mut both = Vec::new();
            let mut tail = Vec::new();
            loop {
                match (it.next(), it.next_back()) {
                    (Some(x), Some(y)) => {
                        both.push((x.0.to_vec(), x.1));
                        tail.push((y.0.to_vec(), y.1));
                    }
                    (Some(x), None) => {
                        both.push((x.0.to_vec(), x.1));
                        break;
                    }
                    (None, _) => break,
                }
            }
            both.extend(tail.into_iter().rev());
            proptest::prop_assert_eq!(both, exp);
        }
        for bound in -12..12 {
            let b = f64::from(bound) / 2.0;
            proptest::prop_assert_eq!(
                t.count_before(|s, _| s < b),
                want.iter().filter(|(_, s)| *s < b).count()
            );
            proptest::prop_assert_eq!(
                t.count_before(|s, _| s <= b),
                want.iter().filter(|(_, s)| *s <= b).count()
            );
        }
        Ok(())
    }

    /// Removes the model's keys in `[from, to)` (ranks) from both.
    fn remove_ranks(
        t: &mut OrdTree,
        m: &mut BTreeSet<Key>,
        from: usize,
        to: usize,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let doomed: Vec<(f64, Vec<u8>)> = t.range(from, to).map(|(k, s)| (s, k.to_vec())).collect();
        let want: Vec<(f64, Vec<u8>)> = m
            .iter()
            .skip(from)
            .take(to.saturating_sub(from))
            .map(|(s, k)| (s.0, k.clone()))
            .collect();
        proptest::prop_assert_eq!(&doomed, &want);
        for (s, k) in doomed {
            proptest::prop_assert!(t.remove(s, &k));
            m.remove(&(Score(s), k));
        }
        Ok(())
    }

    /// One step of the model test: 0 removes a member, 1-3 set its score, 4 removes a rank
    /// range, 5 a score range, 6 a lex range (sets whose scores are all equal only).
    fn step(
        t: &mut OrdTree,
        m: &mut BTreeSet<Key>,
        scores: &mut BTreeMap<Vec<u8>, f64>,
        (op, k, s): (u8, u16, i8),
        same_score: bool,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let member = member(k);
        let score = if same_score { 0.0 } else { f64::from(s) / 2.0 };
        let present = scores.get(&member).copied();
        match op {
            0 => {
                if let Some(old) = present {
                    proptest::prop_assert!(t.remove(old, &member));
                    m.remove(&(Score(old), member.clone()));
                    scores.remove(&member);
                }
                proptest::prop_assert!(!t.remove(score + 0.25, &member));
            }
            4 => {
                let from = usize::from(k) % (m.len() + 1);
                remove_ranks(t, m, from, from + usize::from(k % 40))?;
                scores.retain(|k, s| m.contains(&(Score(*s), k.clone())));
            }
            5 => {
                let (lo, hi) = (score, score + f64::from(k % 3));
                let from = t.count_before(|s, _| s < lo);
                let to = t.count_before(|s, _| s <= hi);
                proptest::prop_assert_eq!(from, m.iter().filter(|(s, _)| s.0 < lo).count());
                remove_ranks(t, m, from, to.min(from + 1 + usize::from(k % 60)))?;
                scores.retain(|k, s| m.contains(&(Score(*s), k.clone())));
            }
            6 if same_score => {
                let lo = member.clone();
                let hi = crate::ordtree::tests::member(k.wrapping_add(s.unsigned_abs().into()));
                let from = t.count_before(|_, x| x < lo.as_slice());
                let to = t.count_before(|_, x| x <= hi.as_slice());
                proptest::prop_assert_eq!(from, m.iter().filter(|(_, x)| *x < lo).count());
                proptest::prop_assert_eq!(to, m.iter().filter(|(_, x)| *x <= hi).count());
                remove_ranks(t, m, from, to.min(from + 1 + usize::from(k % 60)))?;
                scores.retain(|k, s| m.contains(&(Score(*s), k.clone())));
            }
            _ => {
                if let Some(old) = present {
                    proptest::prop_assert!(t.remove(old, &member));
                    m.remove(&(Score(old), member.clone()));
                }
                t.insert(score, &member);
                m.insert((Score(score), member.clone()));
                scores.insert(member, score);
            }
        }
        proptest::prop_assert_eq!(t.len(), m.len());
        Ok(())
    }

    proptest::proptest! {
        /// Every operation agrees with an ordered set used as the model: order, ranks, selection
        /// by rank, ranges from both ends, bound searches, and removals by member, rank, score
        /// and lex ranges; the tree's invariants hold at the end.
        #[test]
        fn matches_ordered_set(
            ops in proptest::collection::vec((0u8..7, 0u16..200, -5i8..5), 0..600),
            same_score in proptest::bool::ANY,
        ) {
            let mut t = OrdTree::new();
            let mut m = BTreeSet::new();
            let mut scores = BTreeMap::new();
            for op in ops {
                step(&mut t, &mut m, &mut scores, op, same_score)?;
            }
            compare(&t, &m)?;
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// The same against trees of a few thousand elements (three levels), checked along the
        /// way; inserts outnumber removals, then a mass deletion by ranks empties it.
        #[test]
        fn matches_ordered_set_deep(
            ops in proptest::collection::vec((0u8..40, 0u16..4000, -5i8..5), 1000..4000),
            same_score in proptest::bool::ANY,
        ) {
            let mut t = OrdTree::new();
            let mut m = BTreeSet::new();
            let mut scores = BTreeMap::new();
            // Start from three levels (at least 33 leaves under the root).
            for k in 0..1500u16 {
                step(&mut t, &mut m, &mut scores, (3, k * 2, (k % 10) as i8 - 5), same_score)?;
            }
            proptest::prop_assert_eq!(t.height, 2);
            for (i, (op, k, s)) in ops.into_iter().enumerate() {
                // Rarely a range removal (each takes up to 40), mostly inserts.
                let op = match op { 0 => 0, 1 if same_score => 4 + 2 * (k % 2) as u8, 1 => 4 + (k % 2) as u8, o => o.min(3) };
                step(&mut t, &mut m, &mut scores, (op, k, s), same_score)?;
                if i % 997 == 0 {
                    t.check();
                }
            }
            compare(&t, &m)?;
            while !m.is_empty() {
                let len = m.len();
                let from = len / 3;
                remove_ranks(&mut t, &mut m, from, from + len / 2 + 1)?;
                t.check();
            }
            compare(&t, &m)?;
            proptest::prop_assert_eq!(t.leaves.len(), 1);
        }
    }

    #[test]
    fn mass_deletion_frees_nodes_and_empties() {
        let mut t = OrdTree::new();
        for i in 0..5000 {
            t.insert(f64::from(i % 100), format!("{i:06}").as_bytes());
        }
        t.check();
        let live = |t: &OrdTree| t.leaves.iter().flatten().count();
        assert!(live(&t) > 100);
        for i in (0..5000).filter(|i| i % 500 != 0) {
            assert!(t.remove(f64::from(i % 100), format!("{i:06}").as_bytes()));
        }
        t.check();
        assert_eq!(t.len(), 10);
        assert_eq!(live(&t), 1, "ten elements fit one leaf");
        assert_eq!(t.height, 0);
        assert_eq!(t.get(0).map(|(s, _)| s), Some(0.0));
        assert_eq!(t.rank(0.0, b"000500"), Some(1));
        for i in (0..5000).step_by(500) {
            assert!(t.remove(f64::from(i % 100), format!("{i:06}").as_bytes()));
        }
        assert!(t.is_empty());
        assert_eq!(t.iter().count(), 0);
        assert_eq!(t.range(0, 10).next_back(), None);
        assert_eq!((t.leaves.len(), t.inners.len()), (1, 0));
    }

    /// Ascending inserts fill leaves completely; descending ones nearly; popping from the front
    /// (ZPOPMIN) and the back (ZPOPMAX) keeps the tree valid down to empty.
    #[test]
    fn ordered_inserts_and_pops() {
        let mut up = OrdTree::new();
        let mut down = OrdTree::new();
        for i in 0..10_000u32 {
            up.insert(f64::from(i), b"m");
            down.insert(-f64::from(i), b"m");
        }
        up.check();
        down.check();
        assert_eq!(up.leaves.iter().flatten().count(), 10_000 / LEAF_CAP + 1);
        assert!(down.leaves.iter().flatten().count() <= 10_000 / (LEAF_CAP - 1) + 1);
        for i in 0..10_000u32 {
            let (s, m) = up.get(0).map(|(s, m)| (s, m.to_vec())).expect("not empty");
            assert_eq!(s, f64::from(i));
            assert!(up.remove(s, &m));
            let (s, m) = down
                .get(down.len() - 1)
                .map(|(s, m)| (s, m.to_vec()))
                .expect("not empty");
            assert_eq!(s, -f64::from(i));
            assert!(down.remove(s, &m));
            if i % 1000 == 0 {
                up.check();
                down.check();
                assert_eq!(up.iter().next().map(|(_, s)| s), Some(f64::from(i + 1)));
            }
        }
        assert!(up.is_empty() && down.is_empty());
    }

    /// Random inserts (nodes of every fill), then pops from both ends down to empty: every
    /// split and every merge or borrow, at each level, with the invariants checked on the way.
    #[test]
    fn random_inserts_then_pops_from_both_ends() {
        let mut t = OrdTree::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut want = BTreeSet::new();
        for i in 0..60_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let score = f64::from((x % 50_000) as u32);
            let member = format!("element:{i:012}");
            t.insert(score, member.as_bytes());
            want.insert((Score(score), member.into_bytes()));
            if i % 7919 == 0 {
                t.check();
            }
        }
        t.check();
        assert_eq!(t.height, 3);
        let mut i = 0;
        while let Some((Score(s), m)) = if i % 2 == 0 {
            want.pop_first()
        } else {
            want.pop_last()
        } {
            let at = if i % 2 == 0 { 0 } else { t.len() - 1 };
            assert_eq!(
                t.get(at).map(|(s, m)| (s, m.to_vec())),
                Some((s, m.clone()))
            );
            assert!(t.remove(s, &m));
            if i % 997 == 0 {
                t.check();
                assert_eq!(t.len(), want.len());
            }
            i += 1;
        }
        assert!(t.is_empty());
    }

    /// Separators between leaves on a score tie are short prefixes, not copies of members.
    #[test]
    fn separators_are_short() {
        assert_eq!(separator(1.0, b"abc", 2.0, b"abd").1.as_bytes(), b"");
        assert_eq!(separator(1.0, b"abc", 1.0, b"abd").1.as_bytes(), b"abd");
        assert_eq!(separator(1.0, b"ab", 1.0, b"abzzzz").1.as_bytes(), b"abz");
        let long_l = [b'x'; 100];
        let mut long_r = [b'x'; 100];
        long_r[99] = b'y';
        assert_eq!(
            separator(0.0, &long_l, 0.0, &long_r).1.as_bytes(),
            &long_r[..]
        );
        assert_eq!(separator(0.0, b"a", -0.0, b"b").1.as_bytes(), b"b");
        assert_eq!(std::mem::size_of::<Member>(), 24);
    }
}
