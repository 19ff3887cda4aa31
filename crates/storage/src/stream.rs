//! Streams: an append-only log of entries (an id and field/value pairs) with consumer groups.
//!
//! Entries are kept the way Redis keeps them, in spirit: in *blocks* of packed bytes (Redis's
//! listpacks), each holding up to `stream-node-max-entries` entries or about
//! `stream-node-max-bytes`, kept in a B-tree keyed by the id of the block's first entry (Redis's
//! radix tree). A block stores its first entry's field names once (the *master fields*); an
//! entry with the same field names stores only its values, and every id is stored as a delta
//! from the block's key. Deleting an entry removes its bytes from its block, and a block whose
//! entries are all gone is dropped; like Redis, a block remembers how many entries it has lost,
//! so where blocks end (what approximate trimming removes) follows Redis exactly.
//!
//! Consumer groups are data: each has a last-delivered id, a read counter, a pending entries
//! list (PEL: id → consumer, delivery time, delivery count) and its consumers (each with its own
//! PEL, the time it was last seen and the time it was last active: Redis 7.2's seen-time and
//! active-time). Everything except consumers' seen and active times is part of the value's
//! digest, kept current on every change like the other types; those times are access
//! metadata, like OBJECT IDLETIME, and are neither digested nor propagated.
//!
//! Serialisations (migration wire, persistence) see a stream as a sequence of [`StreamItem`]s:
//! [`StreamValue::items`] reads them, [`encode_item`]/[`decode_item`] put them in bytes and
//! [`StreamValue::apply_item`] rebuilds a stream from them, item by item, so a large stream can
//! be carried in bounded chunks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use crate::digest::mix64;
use crate::encoding;

// ---------------------------------------------------------------------------------------------
// Ids

/// A stream entry id: milliseconds and a sequence number, ordered as a pair.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const MIN: StreamId = StreamId { ms: 0, seq: 0 };
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    pub const fn new(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    pub fn is_zero(self) -> bool {
        self == StreamId::MIN
    }

    /// The id right after this one (None after the last possible id).
    pub fn next(self) -> Option<StreamId> {
        if self.seq < u64::MAX {
            Some(StreamId::new(self.ms, self.seq + 1))
        } else if self.ms < u64::MAX {
            Some(StreamId::new(self.ms + 1, 0))
        } else {
            None
        }
    }

    /// The id right before this one (None before 0-0).
    pub fn prev(self) -> Option<StreamId> {
        if self.seq > 0 {
            Some(StreamId::new(self.ms, self.seq - 1))
        } else if self.ms > 0 {
            Some(StreamId::new(self.ms - 1, u64::MAX))
        } else {
            None
        }
    }

    /// 16 bytes, big endian: the byte order sorts like the ids (Redis's rax keys and RDB PELs).
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.ms.to_be_bytes());
        b[8..].copy_from_slice(&self.seq.to_be_bytes());
        b
    }

    pub fn from_bytes(b: [u8; 16]) -> StreamId {
        let mut ms = [0u8; 8];
        let mut seq = [0u8; 8];
        ms.copy_from_slice(&b[..8]);
        seq.copy_from_slice(&b[8..]);
        StreamId::new(u64::from_be_bytes(ms), u64::from_be_bytes(seq))
    }

    /// Writes `ms-seq` into `buf` without allocating and returns it.
    pub fn format(self, buf: &mut IdText) -> &[u8] {
        let mut n = 0;
        n += write_u64(&mut buf.0[n..], self.ms);
        buf.0[n] = b'-';
        n += 1;
        n += write_u64(&mut buf.0[n..], self.seq);
        &buf.0[..n]
    }
}

/// Room for the text of any id (20 digits, a dash, 20 digits).
pub struct IdText([u8; 41]);

impl Default for IdText {
    fn default() -> Self {
        IdText([0; 41])
    }
}

fn write_u64(out: &mut [u8], mut v: u64) -> usize {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let len = tmp.len() - i;
    out[..len].copy_from_slice(&tmp[i..]);
    len
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

// ---------------------------------------------------------------------------------------------
// Packed bytes inside a block

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_elem(buf: &mut Vec<u8>, e: &[u8]) {
    put_varint(buf, e.len() as u64);
    buf.extend_from_slice(e);
}

/// Reads a varint at `pos` of a block's buffer. Blocks are only ever written by this module, so
/// positions and lengths are trusted (bytes from outside come in through [`decode_item`]).
#[inline]
fn read_varint(buf: &[u8], pos: usize) -> (u64, usize) {
    crate::pack::read_leb128(buf, pos)
}

#[inline]
fn read_elem(buf: &[u8], pos: usize) -> (&[u8], usize) {
    let (n, p) = read_varint(buf, pos);
    let end = p + n as usize;
    (&buf[p..end], end)
}

#[inline]
fn skip_elems(buf: &[u8], mut pos: usize, n: usize) -> usize {
    for _ in 0..n {
        pos = read_elem(buf, pos).1;
    }
    pos
}

/// Entry flag: the entry has the block's master field names (only its values are stored).
const SAME_FIELDS: u8 = 1;

/// Most bytes a block may hold whatever `stream-node-max-bytes` says (Redis's listpack limit).
const BLOCK_MAX_BYTES: usize = 1 << 30;

/// Bookkeeping bytes of a block besides its buffer (B-tree slot, struct).
const BLOCK_OVERHEAD: usize = 64;
/// Per consumer group besides its name (struct, B-tree slots).
const GROUP_OVERHEAD: usize = 128;
/// Per consumer besides its name.
const CONSUMER_OVERHEAD: usize = 96;
/// Per pending entry: the group PEL's node (id, times, consumer reference) and the consumer's.
const PENDING_OVERHEAD: usize = 96;

/// A run of entries packed in one buffer.
#[derive(Clone)]
struct Block {
    /// `nfields:varint field*` (the master fields), then the entries:
    /// `flags:u8 ms_delta:varint seq:varint [nfields:varint] (field value | value)*`
    /// where `seq` is the delta from the block key's sequence when `ms_delta` is 0, else the
    /// sequence itself; elements are `len:varint bytes`.
    buf: Vec<u8>,
    /// Offset of the first entry (right after the master fields).
    entries_at: u32,
    master_fields: u32,
    /// Entries present.
    live: u32,
    /// Entries removed from this block (they still count towards its fullness, as in Redis).
    deleted: u32,
    /// Sum of the digests of the entries present.
    sum: u64,
}

/// Where an entry sits in a block.
#[derive(Clone, Copy)]
struct Slot {
    id: StreamId,
    /// Start of the entry (its flags byte).
    start: usize,
    /// Start of its field/value elements.
    fields_at: usize,
    nfields: usize,
    same: bool,
    /// Start of the next entry.
    end: usize,
}

impl Block {
    fn master_at(&self) -> usize {
        read_varint(&self.buf, 0).1
    }

    /// Decodes the entry starting at `pos`.
    fn slot(&self, key: StreamId, pos: usize) -> Slot {
        let buf = &self.buf;
        let flags = buf[pos];
        let (ms_delta, p) = read_varint(buf, pos + 1);
        let (seq, p) = read_varint(buf, p);
        let id = if ms_delta == 0 {
            StreamId::new(key.ms, key.seq.wrapping_add(seq))
        } else {
            StreamId::new(key.ms.wrapping_add(ms_delta), seq)
        };
        let same = flags & SAME_FIELDS != 0;
        let (nfields, fields_at) = if same {
            (self.master_fields as usize, p)
        } else {
            let (n, p) = read_varint(buf, p);
            (n as usize, p)
        };
        let per = if same { 1 } else { 2 };
        let end = skip_elems(buf, fields_at, nfields * per);
        Slot {
            id,
            start: pos,
            fields_at,
            nfields,
            same,
            end,
        }
    }

    fn slots(&self, key: StreamId) -> impl Iterator<Item = Slot> + '_ {
        let mut pos = self.entries_at as usize;
        std::iter::from_fn(move || {
            if pos >= self.buf.len() {
                return None;
            }
            let s = self.slot(key, pos);
            pos = s.end;
            Some(s)
        })
    }

    fn entry<'a>(&'a self, s: Slot) -> EntryRef<'a> {
        EntryRef {
            id: s.id,
            buf: &self.buf,
            master_at: if s.same { self.master_at() } else { 0 },
            fields_at: s.fields_at,
            nfields: s.nfields,
            same: s.same,
        }
    }

    fn last_id(&self, key: StreamId) -> Option<StreamId> {
        self.slots(key).last().map(|s| s.id)
    }

    /// Whether `fields` (field, value, field, value...) has the master field names.
    fn same_fields(&self, fields: &[&[u8]]) -> bool {
        if fields.len() / 2 != self.master_fields as usize {
            return false;
        }
        let mut pos = self.master_at();
        for pair in fields.chunks_exact(2) {
            let (f, next) = read_elem(&self.buf, pos);
            if f != pair[0] {
                return false;
            }
            pos = next;
        }
        true
    }

    /// Removes the bytes of an entry; the caller fixes the counters.
    fn cut(&mut self, s: Slot) {
        self.buf.drain(s.start..s.end);
        if self.buf.capacity() > self.buf.len() + self.buf.len() / 4 + 16 {
            self.buf.shrink_to_fit();
        }
    }
}

/// One entry, borrowed from its block.
#[derive(Clone, Copy)]
pub struct EntryRef<'a> {
    id: StreamId,
    buf: &'a [u8],
    master_at: usize,
    fields_at: usize,
    nfields: usize,
    same: bool,
}

impl<'a> EntryRef<'a> {
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Number of field/value pairs.
    pub fn len(&self) -> usize {
        self.nfields
    }

    pub fn is_empty(&self) -> bool {
        self.nfields == 0
    }

    /// The field/value pairs, in the order they were added.
    pub fn fields(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let (buf, same) = (self.buf, self.same);
        let mut master = self.master_at;
        let mut pos = self.fields_at;
        let mut left = self.nfields;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let f = if same {
                let (f, next) = read_elem(buf, master);
                master = next;
                f
            } else {
                let (f, next) = read_elem(buf, pos);
                pos = next;
                f
            };
            let (v, next) = read_elem(buf, pos);
            pos = next;
            Some((f, v))
        })
    }

    /// This entry's digest (id and fields, in order).
    pub fn digest(&self) -> u64 {
        entry_digest(self.id, self.fields())
    }
}

// ---------------------------------------------------------------------------------------------
// Digests

/// CRC-32 over length-prefixed parts, mixed with the total length: an unambiguous hash of a
/// sequence of byte strings.
struct PartHasher {
    h: crc32fast::Hasher,
    len: u64,
    tag: u64,
}

impl PartHasher {
    fn new(tag: u64) -> Self {
        PartHasher {
            h: crc32fast::Hasher::new(),
            len: 0,
            tag,
        }
    }

    fn part(&mut self, b: &[u8]) -> &mut Self {
        self.h.update(&(b.len() as u32).to_le_bytes());
        self.h.update(b);
        self.len += b.len() as u64 + 4;
        self
    }

    fn id(&mut self, id: StreamId) -> &mut Self {
        self.part(&id.to_bytes())
    }

    fn num(&mut self, n: u64) -> &mut Self {
        self.part(&n.to_le_bytes())
    }

    fn finish(&self) -> u64 {
        let crc = self.h.clone().finalize();
        mix64((u64::from(crc) << 32) ^ self.len ^ self.tag.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
}

fn entry_digest<'a>(id: StreamId, fields: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> u64 {
    let mut h = PartHasher::new(1);
    h.id(id);
    for (f, v) in fields {
        h.part(f).part(v);
    }
    h.finish()
}

fn flat_entry_digest(id: StreamId, fields: &[&[u8]]) -> u64 {
    entry_digest(id, fields.chunks_exact(2).map(|p| (p[0], p[1])))
}

fn group_digest(name: &[u8], last: StreamId, entries_read: i64) -> u64 {
    PartHasher::new(2)
        .part(name)
        .id(last)
        .num(entries_read as u64)
        .finish()
}

fn consumer_digest(group: &[u8], name: &[u8]) -> u64 {
    PartHasher::new(3).part(group).part(name).finish()
}

fn pending_digest(group: &[u8], id: StreamId, n: &Nack) -> u64 {
    PartHasher::new(4)
        .part(group)
        .id(id)
        .part(&n.consumer)
        .num(n.delivery_time)
        .num(n.delivery_count)
        .finish()
}

// ---------------------------------------------------------------------------------------------
// Consumer groups

/// A pending entry: delivered to a consumer of a group and not acknowledged yet.
#[derive(Clone, Debug)]
pub struct Nack {
    delivery_time: u64,
    delivery_count: u64,
    consumer: Arc<[u8]>,
}

impl Nack {
    /// Unix ms of the last delivery.
    pub fn delivery_time(&self) -> u64 {
        self.delivery_time
    }

    pub fn delivery_count(&self) -> u64 {
        self.delivery_count
    }

    /// The consumer it was last delivered to.
    pub fn consumer(&self) -> &[u8] {
        &self.consumer
    }
}

/// A consumer of a group.
#[derive(Clone, Debug, Default)]
pub struct Consumer {
    seen_time: u64,
    /// None: never (Redis's -1).
    active_time: Option<u64>,
    pel: BTreeSet<StreamId>,
}

impl Consumer {
    /// Unix ms of its last read or claim attempt.
    pub fn seen_time(&self) -> u64 {
        self.seen_time
    }

    /// Unix ms of its last successful interaction (Redis 7.2's active-time: a read that was
    /// delivered entries, a claim that claimed); None if it never had one.
    pub fn active_time(&self) -> Option<u64> {
        self.active_time
    }

    pub fn pending_len(&self) -> usize {
        self.pel.len()
    }

    /// Ids pending for this consumer, from `start` on.
    pub fn pending_from(&self, start: StreamId) -> impl Iterator<Item = StreamId> + '_ {
        self.pel.range(start..).copied()
    }
}

/// A consumer group.
#[derive(Clone, Debug)]
pub struct Group {
    last_id: StreamId,
    /// Entries read by the group (Redis's logical read counter), -1 when unknown.
    entries_read: i64,
    pel: BTreeMap<StreamId, Nack>,
    consumers: BTreeMap<Arc<[u8]>, Consumer>,
}

impl Group {
    /// The last id delivered to the group.
    pub fn last_id(&self) -> StreamId {
        self.last_id
    }

    /// The read counter, or None when it is unknown (Redis's -1).
    pub fn entries_read(&self) -> Option<u64> {
        (self.entries_read >= 0).then_some(self.entries_read as u64)
    }

    /// The raw read counter (-1 when unknown), as RDB files and XGROUP SETID carry it.
    pub fn entries_read_raw(&self) -> i64 {
        self.entries_read
    }

    pub fn pending_len(&self) -> usize {
        self.pel.len()
    }

    pub fn pending(&self, id: StreamId) -> Option<&Nack> {
        self.pel.get(&id)
    }

    /// Pending entries with ids in `[start, end]`, ascending.
    pub fn pending_range(
        &self,
        start: StreamId,
        end: StreamId,
    ) -> impl Iterator<Item = (StreamId, &Nack)> {
        let r = if start <= end {
            Some(self.pel.range(start..=end))
        } else {
            None
        };
        r.into_iter().flatten().map(|(id, n)| (*id, n))
    }

    pub fn first_pending(&self) -> Option<StreamId> {
        self.pel.keys().next().copied()
    }

    pub fn last_pending(&self) -> Option<StreamId> {
        self.pel.keys().next_back().copied()
    }

    pub fn consumers_len(&self) -> usize {
        self.consumers.len()
    }

    /// Consumers by name, ascending (as Redis lists them).
    pub fn consumers(&self) -> impl Iterator<Item = (&[u8], &Consumer)> {
        self.consumers.iter().map(|(n, c)| (&**n, c))
    }

    pub fn consumer(&self, name: &[u8]) -> Option<&Consumer> {
        self.consumers.get(name)
    }
}

// ---------------------------------------------------------------------------------------------
// The stream

/// How XADD/XTRIM trim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trim {
    /// Keep at most this many entries.
    MaxLen(u64),
    /// Keep no entry with an id below this one.
    MinId(StreamId),
}

/// A stream value.
#[derive(Clone)]
pub struct StreamValue {
    blocks: BTreeMap<StreamId, Block>,
    length: u64,
    /// The last id ever added (or set by XSETID): new ids must be above it.
    last_id: StreamId,
    /// First entry present (0-0 when empty).
    first_id: StreamId,
    /// Last entry present (0-0 when empty).
    last_entry: StreamId,
    max_deleted: StreamId,
    entries_added: u64,
    groups: BTreeMap<Box<[u8]>, Group>,
    /// Σ entry digests (over blocks).
    entries_sum: u64,
    /// Σ digests of groups, consumers and pending entries.
    groups_sum: u64,
    /// Estimated heap bytes (see `mem_bytes`).
    bytes: usize,
}

impl Default for StreamValue {
    fn default() -> Self {
        StreamValue {
            blocks: BTreeMap::new(),
            length: 0,
            last_id: StreamId::MIN,
            first_id: StreamId::MIN,
            last_entry: StreamId::MIN,
            max_deleted: StreamId::MIN,
            entries_added: 0,
            groups: BTreeMap::new(),
            entries_sum: 0,
            groups_sum: 0,
            bytes: 0,
        }
    }
}

impl fmt::Debug for StreamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Stream({} entries, last {}, {} groups)",
            self.length,
            self.last_id,
            self.groups.len()
        )
    }
}

/// Why a stream could not take an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendError {
    /// The id is not above the stream's last id.
    IdTooSmall,
    /// The fields are larger than a block can hold.
    TooLarge,
}

impl StreamValue {
    pub fn len(&self) -> u64 {
        self.length
    }

    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    pub fn last_id(&self) -> StreamId {
        self.last_id
    }

    /// The first entry's id (0-0 when empty): Redis's recorded-first-entry-id.
    pub fn first_id(&self) -> StreamId {
        self.first_id
    }

    /// The last entry present (None when empty); may be below [`StreamValue::last_id`] after
    /// deletions or XSETID.
    pub fn last_entry_id(&self) -> Option<StreamId> {
        (self.length > 0).then_some(self.last_entry)
    }

    pub fn max_deleted_id(&self) -> StreamId {
        self.max_deleted
    }

    pub fn entries_added(&self) -> u64 {
        self.entries_added
    }

    /// Number of blocks (XINFO's radix-tree-keys).
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Estimated heap bytes: block buffers (their capacity is kept within a quarter of their
    /// length) and the bookkeeping of blocks, groups, consumers and pending entries.
    pub fn mem_bytes(&self) -> usize {
        self.bytes
    }

    /// Digest of the whole value: entries, metadata, groups, consumers and pending entries
    /// (consumers' seen times excluded).
    pub fn digest(&self) -> u64 {
        let meta = PartHasher::new(5)
            .id(self.last_id)
            .id(self.max_deleted)
            .num(self.entries_added)
            .finish();
        mix64(
            self.entries_sum
                .wrapping_add(meta.rotate_left(17))
                .wrapping_add(self.groups_sum.rotate_left(33)),
        )
    }

    /// The id XADD `*` generates at `now_ms`: the time if it is past the last id's, else the
    /// last id's successor (None when the last possible id was used).
    pub fn next_auto_id(&self, now_ms: u64) -> Option<StreamId> {
        if now_ms > self.last_id.ms {
            Some(StreamId::new(now_ms, 0))
        } else {
            self.last_id.next()
        }
    }

    /// Appends an entry; `fields` alternates field and value (XADD's arguments).
    pub fn append(&mut self, id: StreamId, fields: &[&[u8]]) -> Result<(), AppendError> {
        if id <= self.last_id {
            return Err(AppendError::IdTooSmall);
        }
        let total: usize = fields.iter().map(|f| f.len()).sum();
        if total > BLOCK_MAX_BYTES {
            return Err(AppendError::TooLarge);
        }
        self.push_entry(id, fields);
        self.last_id = id;
        self.entries_added += 1;
        Ok(())
    }

    /// Adds an entry above every entry present (the caller checked the order).
    fn push_entry(&mut self, id: StreamId, fields: &[&[u8]]) {
        let total: usize = fields.iter().map(|f| f.len()).sum();
        let (max_bytes, max_entries) = node_limits();
        let new_block = match self.blocks.last_key_value() {
            None => true,
            Some((_, b)) => {
                b.buf.len() + total >= max_bytes
                    || (max_entries > 0 && (b.live + b.deleted) as usize >= max_entries)
            }
        };
        if new_block {
            // The block that was the tail is full: give back its spare room.
            if let Some(mut last) = self.blocks.last_entry() {
                let b = last.get_mut();
                let before = b.buf.capacity();
                b.buf.shrink_to_fit();
                self.bytes = self.bytes + b.buf.capacity() - before;
            }
            let mut buf = Vec::with_capacity(16 + total + fields.len() * 2);
            put_varint(&mut buf, (fields.len() / 2) as u64);
            for pair in fields.chunks_exact(2) {
                put_elem(&mut buf, pair[0]);
            }
            let entries_at = buf.len() as u32;
            self.bytes += BLOCK_OVERHEAD + buf.capacity();
            self.blocks.insert(
                id,
                Block {
                    buf,
                    entries_at,
                    master_fields: (fields.len() / 2) as u32,
                    live: 0,
                    deleted: 0,
                    sum: 0,
                },
            );
        }
        let Some((&key, block)) = self.blocks.iter_mut().next_back() else {
            return;
        };
        let same = block.same_fields(fields);
        let before = block.buf.capacity();
        let need =
            1 + varint_len(id.ms - key.ms) + 10 + fields.iter().map(|f| f.len() + 5).sum::<usize>();
        if block.buf.capacity() - block.buf.len() < need {
            // Grow by a quarter at least, so the spare room stays small.
            block.buf.reserve_exact(need.max(block.buf.len() / 4));
        }
        block.buf.push(if same { SAME_FIELDS } else { 0 });
        let ms_delta = id.ms - key.ms;
        put_varint(&mut block.buf, ms_delta);
        put_varint(
            &mut block.buf,
            if ms_delta == 0 {
                id.seq - key.seq
            } else {
                id.seq
            },
        );
        if same {
            for pair in fields.chunks_exact(2) {
                put_elem(&mut block.buf, pair[1]);
            }
        } else {
            put_varint(&mut block.buf, (fields.len() / 2) as u64);
            for f in fields {
                put_elem(&mut block.buf, f);
            }
        }
        let d = flat_entry_digest(id, fields);
        block.live += 1;
        block.sum = block.sum.wrapping_add(d);
        self.bytes = self.bytes + block.buf.capacity() - before;
        self.entries_sum = self.entries_sum.wrapping_add(d);
        self.length += 1;
        if self.length == 1 {
            self.first_id = id;
        }
        self.last_entry = id;
    }

    /// Entries with ids in `[start, end]`, ascending.
    pub fn range(&self, start: StreamId, end: StreamId) -> Range<'_> {
        let first = self
            .blocks
            .range(..=start)
            .next_back()
            .map(|(k, _)| *k)
            .unwrap_or(StreamId::MIN);
        Range {
            blocks: self.blocks.range(first..),
            cur: None,
            start,
            end,
            done: start > end,
        }
    }

    /// Entries with ids in `[start, end]`, descending.
    pub fn range_rev(&self, start: StreamId, end: StreamId) -> RevRange<'_> {
        RevRange {
            blocks: self.blocks.range(..=end),
            cur: None,
            slots: Vec::new(),
            start,
            end,
            done: start > end,
        }
    }

    /// The entry with this id.
    pub fn get(&self, id: StreamId) -> Option<EntryRef<'_>> {
        self.range(id, id).next()
    }

    pub fn contains(&self, id: StreamId) -> bool {
        self.get(id).is_some()
    }

    /// Recomputes the cached first/last entry ids after entries went away.
    fn fix_edges(&mut self) {
        if self.length == 0 {
            self.first_id = StreamId::MIN;
            self.last_entry = StreamId::MIN;
            return;
        }
        if let Some((&k, b)) = self.blocks.first_key_value()
            && let Some(s) = b.slots(k).next()
        {
            self.first_id = s.id;
        }
        if let Some((&k, b)) = self.blocks.last_key_value()
            && let Some(id) = b.last_id(k)
        {
            self.last_entry = id;
        }
    }

    /// Removes one entry without touching the metadata; returns whether it existed.
    fn remove_entry(&mut self, id: StreamId) -> bool {
        let Some((&key, block)) = self.blocks.range_mut(..=id).next_back() else {
            return false;
        };
        let Some(slot) = block.slots(key).find(|s| s.id >= id) else {
            return false;
        };
        if slot.id != id {
            return false;
        }
        let d = block.entry(slot).digest();
        let before = block.buf.capacity();
        block.cut(slot);
        block.live -= 1;
        block.deleted += 1;
        block.sum = block.sum.wrapping_sub(d);
        self.entries_sum = self.entries_sum.wrapping_sub(d);
        self.length -= 1;
        if block.live == 0 {
            if let Some(b) = self.blocks.remove(&key) {
                self.bytes -= before + BLOCK_OVERHEAD;
                drop(b);
            }
        } else {
            self.bytes = self.bytes + block.buf.capacity() - before;
        }
        true
    }

    /// XDEL: deletes entries; returns how many existed. Deleting raises the max deleted id.
    pub fn delete(&mut self, ids: &[StreamId]) -> usize {
        let mut n = 0;
        for &id in ids {
            if self.remove_entry(id) {
                n += 1;
                if id > self.max_deleted {
                    self.max_deleted = id;
                }
            }
        }
        if n > 0 {
            self.fix_edges();
        }
        n
    }

    /// Trims the oldest entries as Redis's `streamTrim` does: whole blocks while they fit the
    /// target, then (unless `approx`) entries of the next block; at most `limit` entries when
    /// `limit > 0` (counted in whole blocks). Returns how many entries went.
    pub fn trim(&mut self, how: Trim, approx: bool, limit: u64) -> u64 {
        let mut deleted = 0u64;
        loop {
            if let Trim::MaxLen(max) = how
                && self.length <= max
            {
                break;
            }
            let Some((&key, block)) = self.blocks.first_key_value() else {
                break;
            };
            let entries = u64::from(block.live);
            if limit > 0 && deleted + entries > limit {
                break;
            }
            let remove_block = match how {
                Trim::MaxLen(max) => self.length - entries >= max,
                Trim::MinId(min) => block.last_id(key).is_some_and(|last| last < min),
            };
            if remove_block {
                if let Some(b) = self.blocks.remove(&key) {
                    self.entries_sum = self.entries_sum.wrapping_sub(b.sum);
                    self.bytes -= b.buf.capacity() + BLOCK_OVERHEAD;
                }
                self.length -= entries;
                deleted += entries;
                continue;
            }
            if approx {
                break;
            }
            // A prefix of this block's entries, cut in one go.
            let mut length = self.length;
            let mut cut_end = None;
            let mut sum = 0u64;
            let mut n = 0u32;
            for s in block.slots(key) {
                let stop = match how {
                    Trim::MaxLen(max) => length <= max,
                    Trim::MinId(min) => s.id >= min,
                };
                if stop {
                    break;
                }
                sum = sum.wrapping_add(block.entry(s).digest());
                cut_end = Some(s.end);
                length -= 1;
                n += 1;
            }
            if let (Some(end), Some(block)) = (cut_end, self.blocks.get_mut(&key)) {
                let before = block.buf.capacity();
                let from = block.entries_at as usize;
                block.buf.drain(from..end);
                if block.buf.capacity() > block.buf.len() + block.buf.len() / 4 + 16 {
                    block.buf.shrink_to_fit();
                }
                block.live -= n;
                block.deleted += n;
                block.sum = block.sum.wrapping_sub(sum);
                self.bytes = self.bytes + block.buf.capacity() - before;
                self.entries_sum = self.entries_sum.wrapping_sub(sum);
                self.length = length;
            }
            deleted += u64::from(n);
            break;
        }
        if deleted > 0 {
            self.fix_edges();
        }
        deleted
    }

    /// XSETID: sets the last id, and optionally the added-entries counter and max deleted id
    /// (the caller checked them against the entries, as Redis does).
    pub fn set_meta(
        &mut self,
        last_id: StreamId,
        entries_added: Option<u64>,
        max_deleted: Option<StreamId>,
    ) {
        self.last_id = last_id;
        if let Some(n) = entries_added {
            self.entries_added = n;
        }
        if let Some(m) = max_deleted {
            self.max_deleted = m;
        }
    }

    // -- read counters (Redis's streamEstimateDistanceFromFirstEverEntry and friends) ---------

    /// Whether `[start, end]` may hold a deleted entry (a tombstone), which makes read counters
    /// unknowable.
    pub fn range_has_tombstones(&self, start: StreamId, end: StreamId) -> bool {
        if self.length == 0 || self.max_deleted.is_zero() {
            return false;
        }
        if self.first_id > self.max_deleted {
            return false;
        }
        start <= self.max_deleted && self.max_deleted <= end
    }

    /// The logical read counter of `id` (entries from the first ever added up to it), when it
    /// can be known.
    pub fn estimate_distance(&self, id: StreamId) -> Option<u64> {
        if self.entries_added == 0 {
            return Some(0);
        }
        if self.length == 0 && id <= self.last_id {
            return Some(self.entries_added);
        }
        match id.cmp(&self.last_id) {
            std::cmp::Ordering::Equal => return Some(self.entries_added),
            std::cmp::Ordering::Greater => return None,
            std::cmp::Ordering::Less => {}
        }
        if self.max_deleted.is_zero() || self.max_deleted < self.first_id {
            match id.cmp(&self.first_id) {
                std::cmp::Ordering::Less => return Some(self.entries_added - self.length),
                std::cmp::Ordering::Equal => return Some(self.entries_added - self.length + 1),
                std::cmp::Ordering::Greater => {}
            }
        }
        None
    }

    /// A group's lag (entries not yet delivered to it), when it can be known.
    pub fn lag(&self, g: &Group) -> Option<u64> {
        if self.entries_added == 0 {
            return Some(0);
        }
        if g.entries_read >= 0 && !self.range_has_tombstones(g.last_id, StreamId::MAX) {
            return Some(self.entries_added.saturating_sub(g.entries_read as u64));
        }
        self.estimate_distance(g.last_id)
            .map(|read| self.entries_added.saturating_sub(read))
    }

    // -- consumer groups -----------------------------------------------------------------------

    pub fn groups_len(&self) -> usize {
        self.groups.len()
    }

    /// Groups by name, ascending.
    pub fn groups(&self) -> impl Iterator<Item = (&[u8], &Group)> {
        self.groups.iter().map(|(n, g)| (&**n, g))
    }

    pub fn group(&self, name: &[u8]) -> Option<&Group> {
        self.groups.get(name)
    }

    /// XGROUP CREATE; false if the group exists.
    pub fn create_group(&mut self, name: &[u8], last_id: StreamId, entries_read: i64) -> bool {
        if self.groups.contains_key(name) {
            return false;
        }
        self.groups.insert(
            name.into(),
            Group {
                last_id,
                entries_read,
                pel: BTreeMap::new(),
                consumers: BTreeMap::new(),
            },
        );
        self.groups_sum = self
            .groups_sum
            .wrapping_add(group_digest(name, last_id, entries_read));
        self.bytes += GROUP_OVERHEAD + name.len();
        true
    }

    /// XGROUP DESTROY; false if there was no such group.
    pub fn destroy_group(&mut self, name: &[u8]) -> bool {
        let Some(g) = self.groups.remove(name) else {
            return false;
        };
        let mut sum = group_digest(name, g.last_id, g.entries_read);
        let mut bytes = GROUP_OVERHEAD + name.len();
        for (id, n) in &g.pel {
            sum = sum.wrapping_add(pending_digest(name, *id, n));
            bytes += PENDING_OVERHEAD;
        }
        for c in g.consumers.keys() {
            sum = sum.wrapping_add(consumer_digest(name, c));
            bytes += CONSUMER_OVERHEAD + c.len();
        }
        self.groups_sum = self.groups_sum.wrapping_sub(sum);
        self.bytes -= bytes;
        true
    }

    /// Sets a group's last delivered id and read counter (XGROUP SETID, and reads).
    pub fn set_group_last(&mut self, name: &[u8], last_id: StreamId, entries_read: i64) -> bool {
        let Some(g) = self.groups.get_mut(name) else {
            return false;
        };
        let old = group_digest(name, g.last_id, g.entries_read);
        g.last_id = last_id;
        g.entries_read = entries_read;
        self.groups_sum = self.groups_sum.wrapping_sub(old).wrapping_add(group_digest(
            name,
            last_id,
            entries_read,
        ));
        true
    }

    /// Moves a group's last delivered id forward to `id` as a read does (Redis's
    /// streamReplyWithRange): the read counter counts on when it is known and nothing was
    /// deleted ahead, else it is estimated.
    pub fn advance_group(&mut self, name: &[u8], id: StreamId) {
        let Some(g) = self.groups.get(name) else {
            return;
        };
        if id <= g.last_id {
            return;
        }
        let mut read = g.entries_read;
        if read >= 0 && !self.range_has_tombstones(id, StreamId::MAX) {
            read += 1;
        } else if self.entries_added > 0 {
            read = self.estimate_distance(id).map_or(-1, |n| n as i64);
        }
        self.set_group_last(name, id, read);
    }

    /// Creates a consumer (XGROUP CREATECONSUMER, or on first use); false if it exists or the
    /// group does not.
    pub fn create_consumer(&mut self, group: &[u8], name: &[u8], now: u64) -> bool {
        self.create_consumer_with(group, name, now, None)
    }

    /// Creates a consumer with its seen and active times (a stream being rebuilt); false if it
    /// exists or the group does not.
    pub fn create_consumer_with(
        &mut self,
        group: &[u8],
        name: &[u8],
        seen_time: u64,
        active_time: Option<u64>,
    ) -> bool {
        let Some(g) = self.groups.get_mut(group) else {
            return false;
        };
        if g.consumers.contains_key(name) {
            return false;
        }
        g.consumers.insert(
            Arc::from(name),
            Consumer {
                seen_time,
                active_time,
                pel: BTreeSet::new(),
            },
        );
        self.groups_sum = self.groups_sum.wrapping_add(consumer_digest(group, name));
        self.bytes += CONSUMER_OVERHEAD + name.len();
        true
    }

    /// Records that a consumer was active (not part of the digest).
    pub fn touch_consumer(&mut self, group: &[u8], name: &[u8], now: u64) {
        if let Some(c) = self
            .groups
            .get_mut(group)
            .and_then(|g| g.consumers.get_mut(name))
        {
            c.seen_time = now;
        }
    }

    /// Records that a consumer was delivered or claimed entries (its active-time; not part of
    /// the digest).
    pub fn activate_consumer(&mut self, group: &[u8], name: &[u8], now: u64) {
        if let Some(c) = self
            .groups
            .get_mut(group)
            .and_then(|g| g.consumers.get_mut(name))
        {
            c.active_time = Some(now);
        }
    }

    /// XGROUP DELCONSUMER: deletes a consumer and its pending entries; returns how many were
    /// pending, or None if there was no such consumer.
    pub fn delete_consumer(&mut self, group: &[u8], name: &[u8]) -> Option<usize> {
        let g = self.groups.get_mut(group)?;
        let c = g.consumers.remove(name)?;
        let mut sum = consumer_digest(group, name);
        let mut bytes = CONSUMER_OVERHEAD + name.len();
        for id in &c.pel {
            if let Some(n) = g.pel.remove(id) {
                sum = sum.wrapping_add(pending_digest(group, *id, &n));
                bytes += PENDING_OVERHEAD;
            }
        }
        self.groups_sum = self.groups_sum.wrapping_sub(sum);
        self.bytes -= bytes;
        Some(c.pel.len())
    }

    /// XACK: removes a pending entry; false if it was not pending.
    pub fn ack(&mut self, group: &[u8], id: StreamId) -> bool {
        let Some(g) = self.groups.get_mut(group) else {
            return false;
        };
        let Some(n) = g.pel.remove(&id) else {
            return false;
        };
        if let Some(c) = g.consumers.get_mut(&*n.consumer) {
            c.pel.remove(&id);
        }
        self.groups_sum = self.groups_sum.wrapping_sub(pending_digest(group, id, &n));
        self.bytes -= PENDING_OVERHEAD;
        true
    }

    /// Makes `id` pending for `consumer` with this delivery time and count, creating the entry
    /// or moving it from another consumer (XREADGROUP deliveries, XCLAIM, XAUTOCLAIM). The
    /// consumer is created if missing. False if the group does not exist.
    pub fn set_pending(
        &mut self,
        group: &[u8],
        id: StreamId,
        consumer: &[u8],
        delivery_time: u64,
        delivery_count: u64,
        now: u64,
    ) -> bool {
        if !self.groups.contains_key(group) {
            return false;
        }
        self.create_consumer(group, consumer, now);
        let Some(g) = self.groups.get_mut(group) else {
            return false;
        };
        let Some((cname, c)) = g.consumers.get_key_value(consumer) else {
            return false;
        };
        let cname = cname.clone();
        let _ = c;
        let new = Nack {
            delivery_time,
            delivery_count,
            consumer: cname,
        };
        let add = pending_digest(group, id, &new);
        match g.pel.insert(id, new) {
            Some(old) => {
                self.groups_sum = self
                    .groups_sum
                    .wrapping_sub(pending_digest(group, id, &old));
                if *old.consumer != *consumer
                    && let Some(prev) = g.consumers.get_mut(&*old.consumer)
                {
                    prev.pel.remove(&id);
                }
            }
            None => self.bytes += PENDING_OVERHEAD,
        }
        if let Some(c) = g.consumers.get_mut(consumer) {
            c.pel.insert(id);
        }
        self.groups_sum = self.groups_sum.wrapping_add(add);
        true
    }

    // -- logical items (serialisation) ---------------------------------------------------------

    /// The whole value as items: entries (ascending), then each group followed by its consumers
    /// and its pending entries, then the stream's metadata. [`StreamValue::apply_item`] of
    /// these, in order, on an empty stream rebuilds an equal stream.
    pub fn items(&self) -> impl Iterator<Item = StreamItem<'_>> {
        let entries = self
            .range(StreamId::MIN, StreamId::MAX)
            .map(|e| StreamItem::Entry {
                id: e.id(),
                fields: e.fields().flat_map(|(f, v)| [f, v]).collect(),
            });
        let groups = self.groups.iter().flat_map(|(name, g)| {
            let head = std::iter::once(StreamItem::Group {
                name,
                last_id: g.last_id,
                entries_read: g.entries_read,
            });
            let consumers = g.consumers.iter().map(move |(c, cv)| StreamItem::Consumer {
                group: name,
                name: c,
                seen_time: cv.seen_time,
                active_time: cv.active_time,
            });
            let pending = g.pel.iter().map(move |(id, n)| StreamItem::Pending {
                group: name,
                id: *id,
                consumer: &n.consumer,
                delivery_time: n.delivery_time,
                delivery_count: n.delivery_count,
            });
            head.chain(consumers).chain(pending)
        });
        entries
            .chain(groups)
            .chain(std::iter::once(StreamItem::Meta {
                last_id: self.last_id,
                max_deleted: self.max_deleted,
                entries_added: self.entries_added,
            }))
    }

    /// Number of items [`StreamValue::items`] yields.
    pub fn item_count(&self) -> u64 {
        let groups: u64 = self
            .groups
            .values()
            .map(|g| 1 + g.consumers.len() as u64 + g.pel.len() as u64)
            .sum();
        self.length + groups + 1
    }

    /// The id of the `n`th entry (0-based), skipping whole blocks by their counts.
    fn nth_entry_id(&self, mut n: u64) -> Option<StreamId> {
        for (&k, b) in &self.blocks {
            if n < u64::from(b.live) {
                return b.slots(k).nth(n as usize).map(|s| s.id);
            }
            n -= u64::from(b.live);
        }
        None
    }

    /// Writes every item as `n:varint item{n}` (the value as one record).
    pub fn encode_all(&self, out: &mut Vec<u8>) {
        put_varint(out, self.item_count());
        for it in self.items() {
            encode_item(out, &it);
        }
    }

    /// Writes the items from position `from` (an index into [`StreamValue::items`]) as
    /// `n:varint item{n}`, stopping after `max_items` items or about `max_bytes` bytes; returns
    /// the position to continue from, or None after the last item. Each chunk stands alone: one
    /// that starts inside a group's consumers or pending entries repeats the group, and the
    /// consumers its pending entries name, so it decodes ([`decode_items`]) as a stream of its
    /// own that [`StreamValue::absorb`] adds to what came before.
    pub fn encode_chunk(
        &self,
        from: u64,
        max_items: usize,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Option<u64> {
        let total = self.item_count();
        let max_items = max_items.max(1) as u64;
        let mut body = Vec::new();
        let mut n = 0u64;
        let mut pos = from;
        let full = |n: u64, body: &Vec<u8>| n >= max_items || body.len() >= max_bytes;
        'fill: {
            if pos < self.length
                && let Some(start) = self.nth_entry_id(pos)
            {
                for e in self.range(start, StreamId::MAX) {
                    let fields = e.fields().flat_map(|(f, v)| [f, v]).collect();
                    encode_item(&mut body, &StreamItem::Entry { id: e.id(), fields });
                    n += 1;
                    pos += 1;
                    if full(n, &body) {
                        break 'fill;
                    }
                }
            }
            let mut group_at = self.length;
            for (name, g) in &self.groups {
                let consumers = g.consumers.len() as u64;
                let size = 1 + consumers + g.pel.len() as u64;
                if pos >= group_at + size {
                    group_at += size;
                    continue;
                }
                let mut off = pos - group_at;
                encode_item(
                    &mut body,
                    &StreamItem::Group {
                        name,
                        last_id: g.last_id,
                        entries_read: g.entries_read,
                    },
                );
                n += 1;
                if off == 0 {
                    pos += 1;
                    off = 1;
                    if full(n, &body) {
                        break 'fill;
                    }
                }
                let mut sent: BTreeSet<&[u8]> = BTreeSet::new();
                fn consumer_item<'b>(group: &'b [u8], c: &'b [u8], v: &Consumer) -> StreamItem<'b> {
                    StreamItem::Consumer {
                        group,
                        name: c,
                        seen_time: v.seen_time,
                        active_time: v.active_time,
                    }
                }
                if off <= consumers {
                    for (c, v) in g.consumers.iter().skip((off - 1) as usize) {
                        encode_item(&mut body, &consumer_item(name, c, v));
                        sent.insert(c);
                        n += 1;
                        pos += 1;
                        if full(n, &body) {
                            break 'fill;
                        }
                    }
                    off = consumers + 1;
                }
                for (id, nack) in g.pel.iter().skip((off - 1 - consumers) as usize) {
                    if !sent.contains(&*nack.consumer)
                        && let Some((c, v)) = g.consumers.get_key_value(&*nack.consumer)
                    {
                        encode_item(&mut body, &consumer_item(name, c, v));
                        sent.insert(c);
                        n += 1;
                    }
                    encode_item(
                        &mut body,
                        &StreamItem::Pending {
                            group: name,
                            id: *id,
                            consumer: &nack.consumer,
                            delivery_time: nack.delivery_time,
                            delivery_count: nack.delivery_count,
                        },
                    );
                    n += 1;
                    pos += 1;
                    if full(n, &body) {
                        break 'fill;
                    }
                }
                group_at += size;
            }
            if pos + 1 == total {
                encode_item(
                    &mut body,
                    &StreamItem::Meta {
                        last_id: self.last_id,
                        max_deleted: self.max_deleted,
                        entries_added: self.entries_added,
                    },
                );
                n += 1;
                pos += 1;
            }
        }
        put_varint(out, n);
        out.extend_from_slice(&body);
        (pos < total).then_some(pos)
    }

    /// Adds a chunk written by [`StreamValue::encode_chunk`] (and decoded) to the stream the
    /// earlier chunks built: its entries after the ones present, groups and consumers not yet
    /// present, its pending entries; the metadata only moves forward (the last chunk carries
    /// the source's).
    pub fn absorb(&mut self, chunk: &StreamValue) {
        for item in chunk.items() {
            match item {
                StreamItem::Entry { id, fields } => {
                    if self.length == 0 || id > self.last_entry {
                        self.push_entry(id, &fields);
                        self.last_id = self.last_id.max(id);
                        self.entries_added = self.entries_added.max(self.length);
                    }
                }
                StreamItem::Group {
                    name,
                    last_id,
                    entries_read,
                } => {
                    self.create_group(name, last_id, entries_read);
                }
                StreamItem::Consumer {
                    group,
                    name,
                    seen_time,
                    active_time,
                } => {
                    self.create_consumer_with(group, name, seen_time, active_time);
                }
                StreamItem::Pending {
                    group,
                    id,
                    consumer,
                    delivery_time,
                    delivery_count,
                } => {
                    if self
                        .group(group)
                        .is_some_and(|g| !g.pel.contains_key(&id) && g.consumer(consumer).is_some())
                    {
                        self.set_pending(group, id, consumer, delivery_time, delivery_count, 0);
                    }
                }
                StreamItem::Meta {
                    last_id,
                    max_deleted,
                    entries_added,
                } => {
                    self.last_id = self.last_id.max(last_id);
                    self.max_deleted = self.max_deleted.max(max_deleted);
                    self.entries_added = self.entries_added.max(entries_added);
                }
            }
        }
    }

    /// Adds one item to a stream being rebuilt. Refuses items that contradict what is there
    /// (entries out of order, duplicate groups or consumers, pending entries of unknown groups
    /// or consumers, a last id below the last entry).
    pub fn apply_item(&mut self, item: &StreamItem<'_>) -> Result<(), &'static str> {
        match item {
            StreamItem::Entry { id, fields } => {
                if fields.len() % 2 != 0 {
                    return Err("stream entry with a field without value");
                }
                if self.length > 0 && *id <= self.last_entry {
                    return Err("stream entries out of order");
                }
                self.push_entry(*id, fields);
                if *id > self.last_id {
                    self.last_id = *id;
                }
                self.entries_added = self.entries_added.max(self.length);
            }
            StreamItem::Group {
                name,
                last_id,
                entries_read,
            } => {
                if *entries_read < -1 {
                    return Err("bad stream group read counter");
                }
                if !self.create_group(name, *last_id, *entries_read) {
                    return Err("duplicate stream group");
                }
            }
            StreamItem::Consumer {
                group,
                name,
                seen_time,
                active_time,
            } => {
                if self.group(group).is_none() {
                    return Err("stream consumer of an unknown group");
                }
                if !self.create_consumer_with(group, name, *seen_time, *active_time) {
                    return Err("duplicate stream consumer");
                }
            }
            StreamItem::Pending {
                group,
                id,
                consumer,
                delivery_time,
                delivery_count,
            } => {
                let Some(g) = self.group(group) else {
                    return Err("pending entry of an unknown group");
                };
                let Some(c) = g.consumer(consumer) else {
                    return Err("pending entry of an unknown consumer");
                };
                if g.pel.contains_key(id) {
                    return Err("duplicate pending entry");
                }
                let seen = c.seen_time;
                self.set_pending(group, *id, consumer, *delivery_time, *delivery_count, seen);
            }
            StreamItem::Meta {
                last_id,
                max_deleted,
                entries_added,
            } => {
                if self.length > 0 && *last_id < self.last_entry {
                    return Err("stream last id below its last entry");
                }
                self.last_id = *last_id;
                self.max_deleted = *max_deleted;
                self.entries_added = *entries_added;
            }
        }
        Ok(())
    }
}

/// Forward iterator over a range of entries.
pub struct Range<'a> {
    blocks: std::collections::btree_map::Range<'a, StreamId, Block>,
    cur: Option<(StreamId, &'a Block, usize)>,
    start: StreamId,
    end: StreamId,
    done: bool,
}

impl<'a> Iterator for Range<'a> {
    type Item = EntryRef<'a>;

    fn next(&mut self) -> Option<EntryRef<'a>> {
        while !self.done {
            let Some((key, block, pos)) = self.cur else {
                match self.blocks.next() {
                    Some((k, b)) => {
                        self.cur = Some((*k, b, b.entries_at as usize));
                        continue;
                    }
                    None => {
                        self.done = true;
                        break;
                    }
                }
            };
            if pos >= block.buf.len() {
                self.cur = None;
                continue;
            }
            let s = block.slot(key, pos);
            self.cur = Some((key, block, s.end));
            if s.id < self.start {
                continue;
            }
            if s.id > self.end {
                self.done = true;
                break;
            }
            return Some(block.entry(s));
        }
        None
    }
}

/// Backward iterator over a range of entries.
pub struct RevRange<'a> {
    blocks: std::collections::btree_map::Range<'a, StreamId, Block>,
    cur: Option<&'a Block>,
    /// The current block's entries still to visit, in ascending order (popped from the back).
    slots: Vec<Slot>,
    start: StreamId,
    end: StreamId,
    done: bool,
}

impl<'a> Iterator for RevRange<'a> {
    type Item = EntryRef<'a>;

    fn next(&mut self) -> Option<EntryRef<'a>> {
        while !self.done {
            let Some(s) = self.slots.pop() else {
                match self.blocks.next_back() {
                    Some((k, b)) => {
                        self.cur = Some(b);
                        self.slots.clear();
                        self.slots.extend(b.slots(*k));
                        continue;
                    }
                    None => {
                        self.done = true;
                        break;
                    }
                }
            };
            if s.id > self.end {
                continue;
            }
            if s.id < self.start {
                self.done = true;
                break;
            }
            let block = self.cur?;
            return Some(block.entry(s));
        }
        None
    }
}

/// (`stream-node-max-bytes`, `stream-node-max-entries`) as block limits (0 bytes: the most a
/// block can hold; 0 entries: no limit).
fn node_limits() -> (usize, usize) {
    let bytes = encoding::stream_node_max_bytes();
    let bytes = if bytes == 0 || bytes > BLOCK_MAX_BYTES {
        BLOCK_MAX_BYTES
    } else {
        bytes
    };
    (bytes, encoding::stream_node_max_entries())
}

// ---------------------------------------------------------------------------------------------
// Logical items

/// One logical piece of a stream (see [`StreamValue::items`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem<'a> {
    /// An entry; `fields` alternates field and value.
    Entry { id: StreamId, fields: Vec<&'a [u8]> },
    Group {
        name: &'a [u8],
        last_id: StreamId,
        entries_read: i64,
    },
    Consumer {
        group: &'a [u8],
        name: &'a [u8],
        seen_time: u64,
        /// None: never active (Redis's -1).
        active_time: Option<u64>,
    },
    Pending {
        group: &'a [u8],
        id: StreamId,
        consumer: &'a [u8],
        delivery_time: u64,
        delivery_count: u64,
    },
    Meta {
        last_id: StreamId,
        max_deleted: StreamId,
        entries_added: u64,
    },
}

const ITEM_ENTRY: u8 = 1;
const ITEM_GROUP: u8 = 2;
const ITEM_CONSUMER: u8 = 3;
const ITEM_PENDING: u8 = 4;
const ITEM_META: u8 = 5;
/// A consumer that has been active (Redis 7.2's active-time); one that never was is written as
/// [`ITEM_CONSUMER`], so streams without that time keep the bytes they had before it existed.
const ITEM_ACTIVE_CONSUMER: u8 = 6;

/// Appends an item's bytes:
///
/// ```text
/// entry    = 0x01 id n:varint bytes{n}          (fields and values alternating)
/// group    = 0x02 name:bytes id entries_read:i64 LE
/// consumer = 0x03 group:bytes name:bytes seen_time:u64 LE           (never active)
///          | 0x06 group:bytes name:bytes seen_time:u64 LE active_time:u64 LE
/// pending  = 0x04 group:bytes id consumer:bytes delivery_time:u64 LE delivery_count:varint
/// meta     = 0x05 last_id:id max_deleted:id entries_added:varint
/// id       = ms:u64 BE seq:u64 BE;  bytes = len:varint data
/// ```
pub fn encode_item(buf: &mut Vec<u8>, item: &StreamItem<'_>) {
    match item {
        StreamItem::Entry { id, fields } => {
            buf.push(ITEM_ENTRY);
            buf.extend_from_slice(&id.to_bytes());
            put_varint(buf, fields.len() as u64);
            for f in fields {
                put_elem(buf, f);
            }
        }
        StreamItem::Group {
            name,
            last_id,
            entries_read,
        } => {
            buf.push(ITEM_GROUP);
            put_elem(buf, name);
            buf.extend_from_slice(&last_id.to_bytes());
            buf.extend_from_slice(&entries_read.to_le_bytes());
        }
        StreamItem::Consumer {
            group,
            name,
            seen_time,
            active_time,
        } => {
            buf.push(if active_time.is_some() {
                ITEM_ACTIVE_CONSUMER
            } else {
                ITEM_CONSUMER
            });
            put_elem(buf, group);
            put_elem(buf, name);
            buf.extend_from_slice(&seen_time.to_le_bytes());
            if let Some(t) = active_time {
                buf.extend_from_slice(&t.to_le_bytes());
            }
        }
        StreamItem::Pending {
            group,
            id,
            consumer,
            delivery_time,
            delivery_count,
        } => {
            buf.push(ITEM_PENDING);
            put_elem(buf, group);
            buf.extend_from_slice(&id.to_bytes());
            put_elem(buf, consumer);
            buf.extend_from_slice(&delivery_time.to_le_bytes());
            put_varint(buf, *delivery_count);
        }
        StreamItem::Meta {
            last_id,
            max_deleted,
            entries_added,
        } => {
            buf.push(ITEM_META);
            buf.extend_from_slice(&last_id.to_bytes());
            buf.extend_from_slice(&max_deleted.to_bytes());
            put_varint(buf, *entries_added);
        }
    }
}

/// A bounds-checked reader over untrusted bytes.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

const TRUNCATED: &str = "truncated stream item";

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self.pos.checked_add(n).ok_or(TRUNCATED)?;
        let s = self.data.get(self.pos..end).ok_or(TRUNCATED)?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn u64_le(&mut self) -> Result<u64, &'static str> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn id(&mut self) -> Result<StreamId, &'static str> {
        let mut b = [0u8; 16];
        b.copy_from_slice(self.take(16)?);
        Ok(StreamId::from_bytes(b))
    }

    fn varint(&mut self) -> Result<u64, &'static str> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err("varint overflow");
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint overflow")
    }

    fn bytes(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| TRUNCATED)?;
        self.take(n)
    }
}

/// Reads one item from the start of `data`; returns it and the bytes it took. Never panics and
/// never allocates more than the input's size, whatever the bytes.
pub fn decode_item(data: &[u8]) -> Result<(StreamItem<'_>, usize), &'static str> {
    let mut c = Cursor { data, pos: 0 };
    let item = match c.u8()? {
        ITEM_ENTRY => {
            let id = c.id()?;
            let n = c.varint()?;
            // Every element takes at least one byte.
            if n > (data.len() - c.pos) as u64 {
                return Err(TRUNCATED);
            }
            let mut fields = Vec::with_capacity(n as usize);
            for _ in 0..n {
                fields.push(c.bytes()?);
            }
            StreamItem::Entry { id, fields }
        }
        ITEM_GROUP => StreamItem::Group {
            name: c.bytes()?,
            last_id: c.id()?,
            entries_read: c.u64_le()? as i64,
        },
        ITEM_CONSUMER => StreamItem::Consumer {
            group: c.bytes()?,
            name: c.bytes()?,
            seen_time: c.u64_le()?,
            active_time: None,
        },
        ITEM_ACTIVE_CONSUMER => StreamItem::Consumer {
            group: c.bytes()?,
            name: c.bytes()?,
            seen_time: c.u64_le()?,
            active_time: Some(c.u64_le()?),
        },
        ITEM_PENDING => StreamItem::Pending {
            group: c.bytes()?,
            id: c.id()?,
            consumer: c.bytes()?,
            delivery_time: c.u64_le()?,
            delivery_count: c.varint()?,
        },
        ITEM_META => StreamItem::Meta {
            last_id: c.id()?,
            max_deleted: c.id()?,
            entries_added: c.varint()?,
        },
        _ => return Err("unknown stream item"),
    };
    Ok((item, c.pos))
}

/// Reads `n:varint item{n}` (what [`StreamValue::encode_all`] / [`StreamValue::encode_chunk`]
/// write) from the start of `data` into a new stream; returns it and the bytes used.
pub fn decode_items(data: &[u8]) -> Result<(StreamValue, usize), &'static str> {
    let mut c = Cursor { data, pos: 0 };
    let n = c.varint()?;
    if n > (data.len() - c.pos) as u64 {
        return Err(TRUNCATED);
    }
    let mut s = StreamValue::default();
    let mut pos = c.pos;
    for _ in 0..n {
        let (item, used) = decode_item(&data[pos..])?;
        s.apply_item(&item)?;
        pos += used;
    }
    Ok((s, pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64, seq: u64) -> StreamId {
        StreamId::new(ms, seq)
    }

    fn rebuild(s: &StreamValue) -> StreamValue {
        let mut buf = Vec::new();
        for it in s.items() {
            encode_item(&mut buf, &it);
        }
        let mut out = StreamValue::default();
        let mut pos = 0;
        while pos < buf.len() {
            let (it, n) = decode_item(&buf[pos..]).unwrap();
            out.apply_item(&it).unwrap();
            pos += n;
        }
        out
    }

    /// Ships `s` in chunks of `max_items` and rebuilds it as a migration target does.
    fn rebuild_in_chunks(s: &StreamValue, max_items: usize) -> StreamValue {
        let mut pos = Some(0);
        let mut out: Option<StreamValue> = None;
        let mut chunks = 0;
        while let Some(p) = pos {
            let mut buf = Vec::new();
            pos = s.encode_chunk(p, max_items, usize::MAX, &mut buf);
            let (chunk, used) = decode_items(&buf).unwrap();
            assert_eq!(used, buf.len());
            match &mut out {
                None => out = Some(chunk),
                Some(v) => v.absorb(&chunk),
            }
            chunks += 1;
            assert!(chunks <= s.item_count() + 1, "no progress");
        }
        out.unwrap()
    }

    fn same_items(a: &StreamValue, b: &StreamValue) {
        let mut x = Vec::new();
        let mut y = Vec::new();
        a.encode_all(&mut x);
        b.encode_all(&mut y);
        assert!(x == y, "items differ");
        assert_eq!(a.digest(), b.digest());
    }

    #[test]
    fn chunks_rebuild_the_stream() {
        let mut s = StreamValue::default();
        for i in 1..=30u64 {
            s.append(id(i, 0), &[b"f", b"v"]).unwrap();
        }
        s.delete(&[id(3, 0)]);
        for g in [&b"g1"[..], b"g2"] {
            s.create_group(g, StreamId::MIN, 0);
            for i in 1..=20u64 {
                let c = [b'c', (i % 4) as u8];
                s.advance_group(g, id(i, 0));
                s.set_pending(g, id(i, 0), &c, 1000 + i, i, 1000);
            }
            s.create_consumer(g, b"idle", 5);
        }
        for max in [1, 2, 3, 7, 1000] {
            same_items(&rebuild_in_chunks(&s, max), &s);
        }
        // An empty stream is one item (its metadata).
        let e = StreamValue::default();
        same_items(&rebuild_in_chunks(&e, 1), &e);
    }

    /// Digest and size from scratch, to compare with the incremental ones.
    fn check_accounting(s: &StreamValue) {
        let r = rebuild(s);
        assert_eq!(r.digest(), s.digest(), "digest drifted");
        assert_eq!(r.len(), s.len());
        let sum: u64 = s
            .range(StreamId::MIN, StreamId::MAX)
            .fold(0u64, |a, e| a.wrapping_add(e.digest()));
        assert_eq!(sum, s.entries_sum);
        let blocks: usize = s
            .blocks
            .values()
            .map(|b| b.buf.capacity() + BLOCK_OVERHEAD)
            .sum();
        let groups: usize = s
            .groups
            .iter()
            .map(|(n, g)| {
                GROUP_OVERHEAD
                    + n.len()
                    + g.pel.len() * PENDING_OVERHEAD
                    + g.consumers
                        .keys()
                        .map(|c| CONSUMER_OVERHEAD + c.len())
                        .sum::<usize>()
            })
            .sum();
        assert_eq!(s.mem_bytes(), blocks + groups, "memory estimate drifted");
    }

    #[test]
    fn ids_order_format_and_step() {
        assert!(id(1, 5) < id(2, 0));
        assert_eq!(id(1, u64::MAX).next(), Some(id(2, 0)));
        assert_eq!(StreamId::MAX.next(), None);
        assert_eq!(id(2, 0).prev(), Some(id(1, u64::MAX)));
        assert_eq!(StreamId::MIN.prev(), None);
        let mut t = IdText::default();
        assert_eq!(
            StreamId::MAX.format(&mut t),
            b"18446744073709551615-18446744073709551615"
        );
        assert_eq!(id(0, 0).format(&mut t), b"0-0");
        assert_eq!(StreamId::from_bytes(id(7, 9).to_bytes()), id(7, 9));
    }

    #[test]
    fn append_range_and_reverse() {
        let mut s = StreamValue::default();
        for i in 1..=250u64 {
            let v = i.to_string();
            let fields: Vec<&[u8]> = if i % 3 == 0 {
                vec![b"other", v.as_bytes()]
            } else {
                vec![b"a", v.as_bytes(), b"b", b"x"]
            };
            s.append(id(i, 0), &fields).unwrap();
        }
        assert_eq!(s.len(), 250);
        assert_eq!(s.blocks(), 3); // 100 entries per block by default
        assert_eq!(
            s.append(id(250, 0), &[b"a", b"b"]),
            Err(AppendError::IdTooSmall)
        );
        let fwd: Vec<_> = s.range(id(99, 0), id(102, 5)).map(|e| e.id()).collect();
        assert_eq!(fwd, vec![id(99, 0), id(100, 0), id(101, 0), id(102, 0)]);
        let rev: Vec<_> = s.range_rev(id(99, 0), id(102, 5)).map(|e| e.id()).collect();
        assert_eq!(rev, vec![id(102, 0), id(101, 0), id(100, 0), id(99, 0)]);
        let e = s.get(id(3, 0)).unwrap();
        assert_eq!(
            e.fields().collect::<Vec<_>>(),
            vec![(&b"other"[..], &b"3"[..])]
        );
        let e = s.get(id(4, 0)).unwrap();
        assert_eq!(
            e.fields().collect::<Vec<_>>(),
            vec![(&b"a"[..], &b"4"[..]), (&b"b"[..], &b"x"[..])]
        );
        assert!(s.get(id(4, 1)).is_none());
        assert_eq!(s.range(id(300, 0), StreamId::MAX).count(), 0);
        assert_eq!(s.range(id(5, 0), id(4, 0)).count(), 0);
        assert_eq!(s.range_rev(StreamId::MIN, StreamId::MAX).count(), 250);
        check_accounting(&s);
    }

    #[test]
    fn delete_and_edges() {
        let mut s = StreamValue::default();
        for i in 1..=10u64 {
            s.append(id(i, 0), &[b"f", b"v"]).unwrap();
        }
        assert_eq!(s.delete(&[id(1, 0), id(5, 0), id(42, 0)]), 2);
        assert_eq!(s.first_id(), id(2, 0));
        assert_eq!(s.max_deleted_id(), id(5, 0));
        assert_eq!(s.delete(&[id(10, 0)]), 1);
        assert_eq!(s.last_entry_id(), Some(id(9, 0)));
        assert_eq!(s.last_id(), id(10, 0));
        check_accounting(&s);
        let all: Vec<_> = (1..=10).map(|i| id(i, 0)).collect();
        s.delete(&all);
        assert!(s.is_empty());
        assert_eq!(s.blocks(), 0);
        assert_eq!(s.first_id(), StreamId::MIN);
        check_accounting(&s);
    }

    #[test]
    fn trimming_follows_redis_blocks() {
        let fill = |n: u64| {
            let mut s = StreamValue::default();
            for i in 1..=n {
                s.append(id(i, 0), &[b"f", b"v"]).unwrap();
            }
            s
        };
        // Approximate: whole blocks only.
        let mut s = fill(250);
        assert_eq!(s.trim(Trim::MaxLen(120), true, 0), 100);
        assert_eq!(s.len(), 150);
        // Exact: into the block.
        assert_eq!(s.trim(Trim::MaxLen(120), false, 0), 30);
        assert_eq!(s.first_id(), id(131, 0));
        check_accounting(&s);
        // LIMIT counts whole blocks.
        let mut s = fill(250);
        assert_eq!(s.trim(Trim::MaxLen(0), true, 150), 100);
        let mut s = fill(250);
        assert_eq!(s.trim(Trim::MinId(id(105, 0)), false, 0), 104);
        assert_eq!(s.first_id(), id(105, 0));
        assert_eq!(s.trim(Trim::MinId(id(220, 0)), true, 0), 96);
        check_accounting(&s);
        assert_eq!(s.trim(Trim::MaxLen(0), false, 0), 50);
        assert!(s.is_empty());
        check_accounting(&s);
    }

    #[test]
    fn deleted_entries_keep_counting_towards_a_full_block() {
        let mut s = StreamValue::default();
        for i in 1..=100u64 {
            s.append(id(i, 0), &[b"f", b"v"]).unwrap();
        }
        s.delete(&[id(50, 0)]);
        s.append(id(101, 0), &[b"f", b"v"]).unwrap();
        assert_eq!(s.blocks(), 2);
    }

    #[test]
    fn groups_pending_and_digest() {
        let mut s = StreamValue::default();
        for i in 1..=5u64 {
            s.append(id(i, 0), &[b"f", b"v"]).unwrap();
        }
        let d0 = s.digest();
        assert!(s.create_group(b"g", StreamId::MIN, 0));
        assert!(!s.create_group(b"g", StreamId::MIN, 0));
        assert_ne!(s.digest(), d0);
        assert!(s.create_consumer(b"g", b"alice", 10));
        let d1 = s.digest();
        s.touch_consumer(b"g", b"alice", 99);
        assert_eq!(s.digest(), d1, "seen time is not digested");
        for i in 1..=3 {
            s.advance_group(b"g", id(i, 0));
            s.set_pending(b"g", id(i, 0), b"alice", 100, 1, 100);
        }
        let g = s.group(b"g").unwrap();
        assert_eq!(g.last_id(), id(3, 0));
        assert_eq!(g.entries_read(), Some(3));
        assert_eq!(s.lag(g), Some(2));
        assert_eq!(g.pending_len(), 3);
        // Moving to another consumer.
        s.set_pending(b"g", id(2, 0), b"bob", 200, 2, 200);
        let g = s.group(b"g").unwrap();
        assert_eq!(g.consumer(b"alice").unwrap().pending_len(), 2);
        assert_eq!(g.consumer(b"bob").unwrap().pending_len(), 1);
        assert_eq!(g.pending(id(2, 0)).unwrap().consumer(), b"bob");
        check_accounting(&s);
        assert!(s.ack(b"g", id(1, 0)));
        assert!(!s.ack(b"g", id(1, 0)));
        assert_eq!(s.delete_consumer(b"g", b"alice"), Some(1));
        assert_eq!(s.group(b"g").unwrap().pending_len(), 1);
        check_accounting(&s);
        let r = rebuild(&s);
        assert_eq!(
            r.group(b"g").unwrap().consumer(b"bob").unwrap().seen_time(),
            200
        );
        assert!(s.destroy_group(b"g"));
        assert_eq!(s.digest(), {
            let mut t = s.clone();
            t.create_group(b"x", StreamId::MIN, -1);
            t.destroy_group(b"x");
            t.digest()
        });
        check_accounting(&s);
    }

    #[test]
    fn active_time_is_kept_by_every_serialisation_and_not_digested() {
        let mut s = StreamValue::default();
        s.append(id(1, 0), &[b"f", b"v"]).unwrap();
        assert!(s.create_group(b"g", StreamId::MIN, 0));
        assert!(s.create_consumer(b"g", b"idle", 10));
        assert!(s.create_consumer(b"g", b"busy", 10));
        let g = s.group(b"g").unwrap();
        assert_eq!(g.consumer(b"idle").unwrap().active_time(), None);
        let d = s.digest();
        s.activate_consumer(b"g", b"busy", 77);
        assert_eq!(s.digest(), d, "active time is not digested");
        for r in [rebuild(&s), rebuild_in_chunks(&s, 1)] {
            let g = r.group(b"g").unwrap();
            assert_eq!(g.consumer(b"busy").unwrap().active_time(), Some(77));
            assert_eq!(g.consumer(b"busy").unwrap().seen_time(), 10);
            assert_eq!(g.consumer(b"idle").unwrap().active_time(), None);
        }
        // A consumer that was never active keeps the layout written before active times
        // existed (kind 3), so files and wire bytes of such streams are unchanged; an active
        // one is a kind of its own.
        let mut idle = Vec::new();
        encode_item(
            &mut idle,
            &StreamItem::Consumer {
                group: b"g",
                name: b"c",
                seen_time: 5,
                active_time: None,
            },
        );
        assert_eq!(
            idle,
            [&[3u8, 1, b'g', 1, b'c'][..], &5u64.to_le_bytes()].concat()
        );
        let mut active = Vec::new();
        let item = StreamItem::Consumer {
            group: b"g",
            name: b"c",
            seen_time: 5,
            active_time: Some(6),
        };
        encode_item(&mut active, &item);
        assert_eq!(active[0], 6);
        assert_eq!(decode_item(&active).unwrap(), (item, active.len()));
        assert!(decode_item(&active[..active.len() - 1]).is_err());
    }

    #[test]
    fn read_counters_follow_redis() {
        let mut s = StreamValue::default();
        assert_eq!(s.estimate_distance(id(5, 0)), Some(0));
        for i in 1..=5u64 {
            s.append(id(i, 0), &[b"f", b"v"]).unwrap();
        }
        assert_eq!(s.estimate_distance(id(5, 0)), Some(5));
        assert_eq!(s.estimate_distance(id(1, 0)), Some(1));
        assert_eq!(s.estimate_distance(StreamId::MIN), Some(0));
        assert_eq!(s.estimate_distance(id(3, 0)), None);
        assert_eq!(s.estimate_distance(id(6, 0)), None);
        s.delete(&[id(3, 0)]);
        assert!(s.range_has_tombstones(id(2, 0), StreamId::MAX));
        assert!(!s.range_has_tombstones(id(4, 0), StreamId::MAX));
        assert_eq!(s.estimate_distance(StreamId::MIN), None);
    }

    #[test]
    fn items_refuse_contradictions() {
        let mut s = StreamValue::default();
        let e = |ms| StreamItem::Entry {
            id: id(ms, 0),
            fields: vec![b"f", b"v"],
        };
        s.apply_item(&e(5)).unwrap();
        assert!(s.apply_item(&e(5)).is_err());
        assert!(
            s.apply_item(&StreamItem::Consumer {
                group: b"nope",
                name: b"c",
                seen_time: 0,
                active_time: None,
            })
            .is_err()
        );
        assert!(
            s.apply_item(&StreamItem::Meta {
                last_id: id(1, 0),
                max_deleted: StreamId::MIN,
                entries_added: 1
            })
            .is_err()
        );
        assert!(
            s.apply_item(&StreamItem::Entry {
                id: id(9, 0),
                fields: vec![b"odd"]
            })
            .is_err()
        );
    }

    proptest::proptest! {
        #[test]
        fn garbage_items_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut s = StreamValue::default();
            let mut pos = 0;
            while pos < data.len() {
                match decode_item(&data[pos..]) {
                    Ok((it, n)) => {
                        let _ = s.apply_item(&it);
                        pos += n;
                    }
                    Err(_) => break,
                }
            }
        }

        #[test]
        fn random_operations_keep_accounting_exact(ops in proptest::collection::vec((0u8..8, 0u64..40, 0u64..4), 1..120)) {
            let mut s = StreamValue::default();
            let mut now = 1000;
            for (op, a, b) in ops {
                now += 1;
                match op {
                    0 | 1 => {
                        let v = a.to_string();
                        let f: Vec<&[u8]> = if b == 0 { vec![b"k", v.as_bytes()] } else { vec![b"x", b"y", b"k", v.as_bytes()] };
                        let next = s.next_auto_id(a * 3).unwrap();
                        s.append(next, &f).unwrap();
                    }
                    2 => { s.delete(&[id(a * 3, b)]); }
                    3 => { s.trim(Trim::MaxLen(a), b % 2 == 0, 0); }
                    4 => { s.create_group(&[b'g', b as u8], StreamId::MIN, 0); }
                    5 => {
                        let g = [b'g', b as u8];
                        if let Some(e) = s.range(id(a, 0), StreamId::MAX).next().map(|e| e.id()) {
                            s.advance_group(&g, e);
                            s.set_pending(&g, e, &[b'c', (a % 3) as u8], now, b, now);
                        }
                    }
                    6 => {
                        let g = [b'g', b as u8];
                        let first = s.group(&g).and_then(|g| g.first_pending());
                        if let Some(first) = first { s.ack(&g, first); }
                    }
                    _ => { s.delete_consumer(&[b'g', b as u8], &[b'c', (a % 3) as u8]); }
                }
            }
            check_accounting(&s);
            same_items(&rebuild_in_chunks(&s, 3), &s);
        }
    }
}
