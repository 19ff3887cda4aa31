//! A key's entry as the keyspace's table holds it: one allocation per key.
//!
//! An [`Entry`] is one pointer (the table node adds 8 bytes of hash and link). It points at one
//! of two forms, told apart by their first byte:
//!
//! - **compact** (strings of up to [`COMPACT_STR_MAX`] bytes, packed collections): one byte
//!   string holding the metadata, the key and the value's bytes —
//!   `flags | version (6) | modified (6) | [expiry (8)] | key length, key | value length, value`
//!   (lengths as LEB128). A string's value is its CRC-32 (4 bytes) and its bytes; a packed
//!   collection's is its [`crate::pack::Packed`] buffer (count, digest sum, elements). A key of
//!   16 bytes with a 100-byte string takes 135 bytes, one 144-byte malloc chunk; Redis spends
//!   about 72 bytes per key on its bookkeeping before the string.
//! - **open** (everything else, and any entry a writer is changing): a box of the metadata, the
//!   [`Value`] and the key ([`TableKey`]).
//!
//! Readers get views ([`Entry::value`]) of either form. A writer's [`Entry::value_mut`] opens a
//! compact entry (its value becomes a [`Value`] it can change in place); the keyspace's write
//! funnel settles it back into the compact form when the write ends (`Occupied`'s drop calls
//! [`Entry::settle`]). A full collection or a long string stays open, so changing it costs no
//! copy; a small one is copied twice per write, which is about what editing its packed buffer
//! (kept at its exact size, reallocated on every edit) already cost.
//! Two string writes skip the opening: a SET whose value is as long as the old one
//! ([`Entry::replace`]) and an INCR-family result as long as the old counter
//! ([`Entry::set_str_in_place`]) are written over the compact form's bytes, with no allocation.
//!
//! Version and modified time are kept in 48 bits in the compact form (2^48 writes, and
//! milliseconds until the year 10889); an entry whose stamps do not fit stays open rather than
//! lose bits.

use std::mem::ManuallyDrop;
use std::ptr::NonNull;

use crate::digest::{key_digest, key_digest_named};
use crate::encoding::Encoding;
use crate::pack::{self, PackedRef};
use crate::table::{OwnsKey, TableKey};
use crate::value::{PackedKind, StrValue, Value, ValueRef, ValueType};

/// Longest string kept in a compact entry. Longer strings stay open: a write to a compact string
/// copies it twice, and past this the copies would cost more than the ~100 bytes per key saved.
pub const COMPACT_STR_MAX: usize = 1024;

/// What a key costs in its table besides its entry: its share of the 64-byte buckets of seven
/// pointers (`table::ShardedTable`), 11.7–12.7 bytes between 8 and 16 keys per home bucket
/// with the chains' child buckets and the array's slack (checked by the table's tests).
pub const NODE_OVERHEAD: usize = 12;

/// The malloc chunk an allocation of `n` bytes takes (glibc: 8 bytes of header, rounded up to 16,
/// at least 32).
pub const fn malloc_chunk(n: usize) -> usize {
    let c = (n + 8 + 15) & !15;
    if c < 32 { 32 } else { c }
}

/// Per-key bookkeeping of an open entry besides its key's own allocation and its value's
/// estimate: the table's share and the entry's box. It is also the most any entry costs besides
/// those (a compact entry is never bigger than the open one with the same content), which is
/// what memory quotas bound a new key by.
pub const ENTRY_OVERHEAD: usize = NODE_OVERHEAD + malloc_chunk(std::mem::size_of::<Open>());

/// What a key takes outside an open entry's box: nothing when the box holds it, else its own
/// allocation (the bytes plus the allocator's header and rounding; at most `key.len() + 16`).
pub fn key_heap_bytes(key: &[u8]) -> usize {
    if TableKey::is_inline(key) {
        0
    } else {
        key.len() + 16
    }
}

/// First byte of an open entry's box. A compact entry's first byte (its flags) has a kind in
/// its low bits, which is never 0.
const OPEN: u8 = 0;
const KIND_MASK: u8 = 0x07;
const KIND_STR: u8 = 1;
const KIND_LIST: u8 = 2;
const KIND_HASH: u8 = 3;
const KIND_SET_INTS: u8 = 4;
const KIND_SET: u8 = 5;
const KIND_ZSET: u8 = 6;
/// The compact entry has an expiry (8 bytes after the stamps).
const HAS_EXPIRE: u8 = 0x08;
/// A compact string's encoding (as OBJECT ENCODING names it) in bits 4–5.
const ENC_SHIFT: u32 = 4;
/// Largest version or modified time the compact form holds (48 bits).
const STAMP_MAX: u64 = (1 << 48) - 1;
/// Flags, version and modified time.
const FIXED: usize = 13;
/// Bytes of a compact string's CRC, before its bytes.
const CRC: usize = 4;
/// Cache lines [`Entry::prefetch`] asks for: a compact entry of a 100-byte string and a short key
/// (135 bytes, 16-aligned by malloc) spans at most three.
const PREFETCH_LINES: usize = 3;

/// An entry's open form.
#[repr(C)]
struct Open {
    /// Always [`OPEN`]: the first byte (`repr(C)`) of either form says which it is.
    tag: u8,
    /// Absolute expiry in Unix milliseconds; 0 when the key does not expire.
    expire_at: u64,
    /// Unix milliseconds of the last change (kept across migrations; used to resolve conflicts).
    modified: u64,
    /// Keyspace-wide write counter value at the last change (WATCH compares it).
    version: u64,
    value: Value,
    key: TableKey,
}

/// A key's value and metadata, and the key itself: a pointer to its compact or open form (see
/// the module docs). Entries are only made by the keyspace.
pub struct Entry {
    /// A compact form (a `Box<[u8]>` of the length [`compact_len`] reads from it) or a
    /// `Box<Open>`, owned by this entry alone; its first byte says which.
    ptr: NonNull<u8>,
}

// SAFETY: an `Entry` owns its allocation exclusively, like the `Box<[u8]>` or `Box<Open>` it was
// made from, and gives shared access only through `&self` and mutable access only through
// `&mut self`; what it holds (bytes, `Value`, `TableKey`) is `Send` and `Sync` (checked below).
unsafe impl Send for Entry {}
// SAFETY: see `Send`: `&Entry` only reads.
unsafe impl Sync for Entry {}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Value>();
    send_sync::<TableKey>();
};

/// The metadata of a compact entry and where its parts are (found in one walk of its two
/// length prefixes, [`layout_at`]: every read of a key or a value used to walk them again).
struct Compact<'a> {
    flags: u8,
    bytes: &'a [u8],
    /// Where the key's bytes start, and their length.
    key_at: usize,
    key_len: usize,
    /// Where the value's bytes (a string's CRC and bytes, or the packed buffer) start; they run
    /// to the end.
    payload_at: usize,
}

impl<'a> Compact<'a> {
    fn stamp(&self, at: usize) -> u64 {
        let mut b = [0u8; 8];
        b[..6].copy_from_slice(&self.bytes[at..at + 6]);
        u64::from_le_bytes(b)
    }

    fn version(&self) -> u64 {
        self.stamp(1)
    }

    fn modified(&self) -> u64 {
        self.stamp(7)
    }

    fn expire_at(&self) -> u64 {
        if self.flags & HAS_EXPIRE == 0 {
            return 0;
        }
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.bytes[FIXED..FIXED + 8]);
        u64::from_le_bytes(b)
    }

    fn key(&self) -> &'a [u8] {
        &self.bytes[self.key_at..self.key_at + self.key_len]
    }

    fn payload(&self) -> &'a [u8] {
        &self.bytes[self.payload_at..]
    }

    fn value_type(&self) -> ValueType {
        match packed_kind(self.flags) {
            None => ValueType::String,
            Some(PackedKind::List) => ValueType::List,
            Some(PackedKind::Hash) => ValueType::Hash,
            Some(PackedKind::Set | PackedKind::SetInts) => ValueType::Set,
            Some(PackedKind::ZSet) => ValueType::ZSet,
        }
    }

    fn value(&self) -> ValueRef<'a> {
        let payload = self.payload();
        match packed_kind(self.flags) {
            Some(kind) => ValueRef::of_packed(kind, PackedRef::from_compact(payload)),
            None => {
                let (crc, data) = payload.split_at(CRC);
                let mut b = [0u8; CRC];
                b.copy_from_slice(crc);
                ValueRef::of_str(data, u32::from_le_bytes(b), str_encoding(self.flags))
            }
        }
    }

    fn owned_value(&self) -> Value {
        let payload = self.payload();
        match packed_kind(self.flags) {
            Some(kind) => Value::from_packed(kind, PackedRef::from_compact(payload)),
            None => {
                let (crc, data) = payload.split_at(CRC);
                let mut b = [0u8; CRC];
                b.copy_from_slice(crc);
                Value::from_str_parts(data, u32::from_le_bytes(b), str_encoding(self.flags))
            }
        }
    }
}

/// A compact entry's bytes copied out of its table ([`Entry::compact_form`]), read like the
/// entry: the point-in-time copy's walk copies entries under the keyspace lock (a `memcpy`) and
/// the snapshot encodes them from these after releasing it.
pub struct CompactCopy<'a>(Compact<'a>);

impl<'a> CompactCopy<'a> {
    /// Reads a copy of a compact form; `None` if its layout does not match `bytes` (its lengths
    /// are checked against the slice, so a wrong one cannot make the reads run past it). The
    /// value inside is trusted: only exact copies of this crate's forms are given to it
    /// (`point_in_time::CopiedEntries`).
    pub(crate) fn parse(bytes: &'a [u8]) -> Option<CompactCopy<'a>> {
        fn len_at(bytes: &[u8], mut at: usize) -> Option<(usize, usize)> {
            let mut n = 0usize;
            for shift in (0..usize::BITS).step_by(7) {
                let b = *bytes.get(at)?;
                at += 1;
                n |= usize::from(b & 0x7f).checked_shl(shift)?;
                if b & 0x80 == 0 {
                    return Some((n, at));
                }
            }
            None
        }
        let flags = *bytes.first()?;
        if flags & KIND_MASK == 0 {
            return None;
        }
        let at = FIXED + if flags & HAS_EXPIRE != 0 { 8 } else { 0 };
        let (key_len, key_at) = len_at(bytes, at)?;
        let (payload_len, payload_at) = len_at(bytes, key_at.checked_add(key_len)?)?;
        let min_payload = if packed_kind(flags).is_none() { CRC } else { 1 };
        if payload_at.checked_add(payload_len)? != bytes.len() || payload_len < min_payload {
            return None;
        }
        Some(CompactCopy(Compact {
            flags,
            bytes,
            key_at,
            key_len,
            payload_at,
        }))
    }

    pub fn key(&self) -> &'a [u8] {
        self.0.key()
    }

    pub fn value(&self) -> ValueRef<'a> {
        self.0.value()
    }

    pub fn value_type(&self) -> ValueType {
        self.0.value_type()
    }

    pub fn expire_at(&self) -> Option<u64> {
        let at = self.0.expire_at();
        (at != 0).then_some(at)
    }

    pub fn modified_ms(&self) -> u64 {
        self.0.modified()
    }
}

fn packed_kind(flags: u8) -> Option<PackedKind> {
    Some(match flags & KIND_MASK {
        KIND_LIST => PackedKind::List,
        KIND_HASH => PackedKind::Hash,
        KIND_SET_INTS => PackedKind::SetInts,
        KIND_SET => PackedKind::Set,
        KIND_ZSET => PackedKind::ZSet,
        _ => return None,
    })
}

fn kind_flags(kind: PackedKind) -> u8 {
    match kind {
        PackedKind::List => KIND_LIST,
        PackedKind::Hash => KIND_HASH,
        PackedKind::SetInts => KIND_SET_INTS,
        PackedKind::Set => KIND_SET,
        PackedKind::ZSet => KIND_ZSET,
    }
}

fn str_encoding(flags: u8) -> Encoding {
    match (flags >> ENC_SHIFT) & 3 {
        0 => Encoding::Int,
        1 => Encoding::EmbStr,
        _ => Encoding::Raw,
    }
}

fn encoding_flags(enc: Encoding) -> u8 {
    let code = match enc {
        Encoding::Int => 0,
        Encoding::EmbStr => 1,
        _ => 2,
    };
    code << ENC_SHIFT
}

/// Bytes of a compact entry with a key of `key_len` bytes and a value of `payload_len`.
fn compact_len(key_len: usize, payload_len: usize, has_expire: bool) -> usize {
    FIXED
        + if has_expire { 8 } else { 0 }
        + pack::len_of_len(key_len)
        + key_len
        + pack::len_of_len(payload_len)
        + payload_len
}

/// Where the parts of a compact form are: the key's start and length, the value's start, and
/// the form's whole length.
#[derive(Clone, Copy)]
struct Layout {
    key_at: usize,
    key_len: usize,
    payload_at: usize,
    len: usize,
}

/// The layout of the compact form at `p`, read from its flags and its two length prefixes.
///
/// # Safety
/// `p` must point at a live compact form built by [`Entry::compact`]: then its flags say
/// whether the 8 expiry bytes are there, and each length prefix is followed by that many bytes,
/// so every byte read here lies inside the allocation and was initialized when it was built.
unsafe fn layout_at(p: *const u8) -> Layout {
    // SAFETY: (for every read below) see the function's contract.
    let flags = unsafe { *p };
    let at = FIXED + if flags & HAS_EXPIRE != 0 { 8 } else { 0 };
    // SAFETY: the key's length prefix is at `at` (the contract).
    let (key_len, key_at) = unsafe { read_len_at(p, at) };
    // SAFETY: the value's length prefix follows the key's bytes (the contract).
    let (payload_len, payload_at) = unsafe { read_len_at(p, key_at + key_len) };
    Layout {
        key_at,
        key_len,
        payload_at,
        len: payload_at + payload_len,
    }
}

/// The LEB128 length at `p + at` and the position after it.
///
/// # Safety
/// `p + at` must be a length prefix of a live compact form (see [`layout_at`]).
#[inline]
unsafe fn read_len_at(p: *const u8, mut at: usize) -> (usize, usize) {
    let mut n = 0usize;
    let mut shift = 0;
    loop {
        // SAFETY: a prefix's bytes lie inside the form, up to the one without the high bit
        // (the function's contract).
        let b = unsafe { *p.add(at) };
        at += 1;
        n |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return (n, at);
        }
        shift += 7;
    }
}

/// The length of the compact form at `p`.
///
/// # Safety
/// As for [`layout_at`].
unsafe fn compact_len_at(p: *const u8) -> usize {
    // SAFETY: the same contract.
    unsafe { layout_at(p) }.len
}

/// The size of a compact entry's value (CRC and bytes, or the packed buffer), if a value with
/// this content is kept compact.
fn compact_payload_len(value: ValueRef<'_>) -> Option<usize> {
    match value {
        ValueRef::Str(s) if s.len() <= COMPACT_STR_MAX => Some(CRC + s.len()),
        ValueRef::Str(_) => None,
        v => v
            .packed_len()
            .map(|bytes| pack::compact_len(v.elements(), bytes - pack::HEADER)),
    }
}

impl Entry {
    /// A new entry, compact when its value allows. `expire_at` is 0 for no expiry.
    pub(crate) fn new(
        key: &[u8],
        value: Value,
        expire_at: u64,
        modified: u64,
        version: u64,
    ) -> Entry {
        if let Some(e) = Entry::compact(key, &value, expire_at, modified, version) {
            return e;
        }
        Entry::open_from(Open {
            tag: OPEN,
            expire_at,
            modified,
            version,
            value,
            key: TableKey::new(key),
        })
    }

    fn open_from(open: Open) -> Entry {
        Entry {
            ptr: NonNull::from(Box::leak(Box::new(open))).cast(),
        }
    }

    /// The compact form of this content, if it has one.
    fn compact(
        key: &[u8],
        value: &Value,
        expire_at: u64,
        modified: u64,
        version: u64,
    ) -> Option<Entry> {
        if version > STAMP_MAX || modified > STAMP_MAX {
            return None;
        }
        let (flags, payload_len) = if let Some((data, _, enc)) = value.str_parts() {
            if data.len() > COMPACT_STR_MAX {
                return None;
            }
            (KIND_STR | encoding_flags(enc), CRC + data.len())
        } else {
            let (kind, p) = value.packed()?;
            (kind_flags(kind), pack::compact_len(p.len(), p.body().len()))
        };
        let has_expire = expire_at != 0;
        let len = compact_len(key.len(), payload_len, has_expire);
        let mut buf = Vec::with_capacity(len);
        buf.push(flags | if has_expire { HAS_EXPIRE } else { 0 });
        buf.extend_from_slice(&version.to_le_bytes()[..6]);
        buf.extend_from_slice(&modified.to_le_bytes()[..6]);
        if has_expire {
            buf.extend_from_slice(&expire_at.to_le_bytes());
        }
        pack::put_len(&mut buf, key.len());
        buf.extend_from_slice(key);
        pack::put_len(&mut buf, payload_len);
        if let Some((data, crc, _)) = value.str_parts() {
            buf.extend_from_slice(&crc.to_le_bytes());
            buf.extend_from_slice(data);
        } else if let Some((kind, p)) = value.packed() {
            p.put_compact(&mut buf, || ValueRef::of_packed(kind, p).element_sum());
        }
        debug_assert_eq!(buf.len(), len);
        let bytes: Box<[u8]> = buf.into_boxed_slice();
        Some(Entry {
            ptr: NonNull::from(Box::leak(bytes)).cast(),
        })
    }

    #[inline]
    fn is_open(&self) -> bool {
        // SAFETY: both forms are at least one byte long and start with an initialized byte
        // (`Open::tag`, first in its `repr(C)` layout, or a compact form's flags).
        unsafe { *self.ptr.as_ptr() == OPEN }
    }

    #[inline]
    fn as_open(&self) -> Option<&Open> {
        // SAFETY: an entry whose first byte is `OPEN` was made from a `Box<Open>`, which it
        // owns; `&self` lends it for reading.
        self.is_open()
            .then(|| unsafe { &*self.ptr.as_ptr().cast::<Open>() })
    }

    #[inline]
    fn as_open_mut(&mut self) -> Option<&mut Open> {
        // SAFETY: as in `as_open`; `&mut self` lends it exclusively.
        self.is_open()
            .then(|| unsafe { &mut *self.ptr.as_ptr().cast::<Open>() })
    }

    #[inline]
    fn compact_bytes(&self) -> &[u8] {
        debug_assert!(!self.is_open());
        let p = self.ptr.as_ptr();
        // SAFETY: not open, so `p` is a compact form built by `Entry::compact` (the contract of
        // `compact_len_at`), owned by this entry: a `Box<[u8]>` of exactly that length.
        unsafe { std::slice::from_raw_parts(p, compact_len_at(p)) }
    }

    #[inline]
    fn compact_bytes_mut(&mut self) -> &mut [u8] {
        debug_assert!(!self.is_open());
        let p = self.ptr.as_ptr();
        // SAFETY: as in `compact_bytes`; `&mut self` gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(p, compact_len_at(p)) }
    }

    #[inline]
    fn as_compact(&self) -> Compact<'_> {
        debug_assert!(!self.is_open());
        let p = self.ptr.as_ptr();
        // SAFETY: not open, so `p` is a compact form built by `Entry::compact` (the contract of
        // `layout_at`), owned by this entry: a `Box<[u8]>` of exactly `layout.len` bytes.
        let layout = unsafe { layout_at(p) };
        // SAFETY: as above; `&self` lends it for reading.
        let bytes = unsafe { std::slice::from_raw_parts(p, layout.len) };
        Compact {
            flags: bytes[0],
            bytes,
            key_at: layout.key_at,
            key_len: layout.key_len,
            payload_at: layout.payload_at,
        }
    }

    /// The open form, opening a compact entry first (its value becomes a [`Value`]).
    fn open(&mut self) -> &mut Open {
        if !self.is_open() {
            let c = self.as_compact();
            let open = Open {
                tag: OPEN,
                expire_at: c.expire_at(),
                modified: c.modified(),
                version: c.version(),
                value: c.owned_value(),
                key: TableKey::new(c.key()),
            };
            *self = Entry::open_from(open);
        }
        match self.as_open_mut() {
            Some(o) => o,
            None => unreachable!("opened above"),
        }
    }

    /// Puts an open entry back into the compact form if its value allows (the write funnel does,
    /// when a write ends).
    pub(crate) fn settle(&mut self) {
        let Some(o) = self.as_open() else {
            return;
        };
        if let Some(compact) = Entry::compact(&o.key, &o.value, o.expire_at, o.modified, o.version)
        {
            *self = compact;
        }
    }

    /// Whether the entry is in its compact form (tests and memory checks).
    pub fn is_compact(&self) -> bool {
        !self.is_open()
    }

    /// The key. Every lookup compares keys, so a compact entry's is read without finding where
    /// its value ends.
    #[inline]
    pub fn key(&self) -> &[u8] {
        if let Some(o) = self.as_open() {
            return &o.key;
        }
        let p = self.ptr.as_ptr();
        // SAFETY: not open, so `p` is a live compact form built by `Entry::compact` (the
        // contract of `layout_at`): its flags say where the key's length prefix is, and that
        // many key bytes follow it inside the allocation, which `&self` lends for reading.
        unsafe {
            let at = FIXED + if *p & HAS_EXPIRE != 0 { 8 } else { 0 };
            let (len, start) = read_len_at(p, at);
            std::slice::from_raw_parts(p.add(start), len)
        }
    }

    /// Asks the processor to bring the entry's first [`PREFETCH_LINES`] cache lines in, without
    /// waiting for them: a walk over many entries (each its own allocation, so a cache miss)
    /// prefetches a few ahead of the one it reads, and their misses overlap.
    #[inline]
    pub(crate) fn prefetch(&self) {
        let p = self.ptr.as_ptr().cast_const();
        for line in 0..PREFETCH_LINES {
            // A prefetch never faults, so the lines past a short entry's end cost nothing.
            crate::table::prefetch(p.wrapping_add(line * 64));
        }
    }

    /// The value, as a read-only view (match on [`ValueRef`] as on [`Value`]).
    pub fn value(&self) -> ValueRef<'_> {
        match self.as_open() {
            Some(o) => o.value.view(),
            None => self.as_compact().value(),
        }
    }

    /// The value, to change in place. A compact entry is opened for it; the write funnel
    /// settles it again when the write ends.
    pub fn value_mut(&mut self) -> &mut Value {
        &mut self.open().value
    }

    pub fn value_type(&self) -> ValueType {
        match self.as_open() {
            Some(o) => o.value.value_type(),
            None => self.as_compact().value_type(),
        }
    }

    /// The compact form's bytes (`None` for an open entry): one `memcpy` copies the whole entry.
    /// A point-in-time copy copies them out under the keyspace lock and reads them after
    /// releasing it ([`CompactCopy`]).
    #[inline]
    pub(crate) fn compact_form(&self) -> Option<&[u8]> {
        (!self.is_open()).then(|| self.compact_bytes())
    }

    /// Absolute expiry (Unix ms), 0 when the key does not expire.
    pub(crate) fn expire_raw(&self) -> u64 {
        match self.as_open() {
            Some(o) => o.expire_at,
            None => self.as_compact().expire_at(),
        }
    }

    pub fn expire_at(&self) -> Option<u64> {
        let at = self.expire_raw();
        (at != 0).then_some(at)
    }

    /// Sets or clears the absolute expiry (Unix ms). A time of 0 is treated as 1 ms (already past).
    pub fn set_expire_at(&mut self, at: Option<u64>) {
        let at = at.map_or(0, |t| t.max(1));
        if !self.is_open() {
            let had = self.as_compact().flags & HAS_EXPIRE != 0;
            if had && at != 0 {
                self.compact_bytes_mut()[FIXED..FIXED + 8].copy_from_slice(&at.to_le_bytes());
                return;
            }
            if !had && at == 0 {
                return;
            }
        }
        // The compact form changes length: open it (the funnel settles it).
        self.open().expire_at = at;
    }

    pub fn modified_ms(&self) -> u64 {
        match self.as_open() {
            Some(o) => o.modified,
            None => self.as_compact().modified(),
        }
    }

    pub(crate) fn set_modified(&mut self, ms: u64) {
        if !self.is_open() && ms <= STAMP_MAX {
            self.compact_bytes_mut()[7..13].copy_from_slice(&ms.to_le_bytes()[..6]);
        } else {
            self.open().modified = ms;
        }
    }

    pub fn version(&self) -> u64 {
        match self.as_open() {
            Some(o) => o.version,
            None => self.as_compact().version(),
        }
    }

    pub(crate) fn set_version(&mut self, version: u64) {
        if !self.is_open() && version <= STAMP_MAX {
            self.compact_bytes_mut()[1..7].copy_from_slice(&version.to_le_bytes()[..6]);
        } else {
            self.open().version = version;
        }
    }

    /// Replaces value and expiry together, keeping the key, version and modified time (the
    /// funnel updates those): builds the new form directly, with no opening.
    pub(crate) fn replace(&mut self, value: Value, expire_at: Option<u64>) {
        let at = expire_at.map_or(0, |t| t.max(1));
        if self.overwrite_str(&value, at) {
            return;
        }
        let fresh = Entry::new(self.key(), value, at, self.modified_ms(), self.version());
        *self = fresh;
    }

    /// Writes a string over a compact entry of the same length, in place: a SET of a value as
    /// long as the one it replaces costs no allocation. Same total length and same key mean the
    /// same value length, so only the flags, the expiry and the value's bytes change.
    fn overwrite_str(&mut self, value: &Value, expire_at: u64) -> bool {
        if self.is_open() {
            return false;
        }
        let Some((data, crc, enc)) = value.str_parts() else {
            return false;
        };
        let has_expire = self.as_compact().flags & HAS_EXPIRE != 0;
        if has_expire != (expire_at != 0) || !self.overwrite_compact_payload(data, crc, enc) {
            return false;
        }
        if has_expire {
            self.compact_bytes_mut()[FIXED..FIXED + 8].copy_from_slice(&expire_at.to_le_bytes());
        }
        true
    }

    /// Sets a string key's bytes in place, keeping its expiry, when the entry is a compact
    /// string whose value is as long as `data` (INCR and its kin rewrite a counter this way:
    /// no opening, no allocation). False, with nothing changed, when it is not: the caller then
    /// changes the value through [`Entry::value_mut`]. The write funnel accounts the change as
    /// for any other write (digest, size, version, change capture).
    pub fn set_str_in_place(&mut self, data: &[u8]) -> bool {
        if self.is_open() || self.as_compact().flags & KIND_MASK != KIND_STR {
            return false;
        }
        let crc = crate::digest::crc32(data);
        self.overwrite_compact_payload(data, crc, StrValue::encoding_of(data))
    }

    /// Writes a string's CRC and bytes, and its encoding into the flags (keeping the expiry
    /// bit), over a compact entry whose payload is exactly `CRC + data.len()` bytes long; false,
    /// with nothing written, otherwise. The key's length prefix and the value's are unchanged.
    fn overwrite_compact_payload(&mut self, data: &[u8], crc: u32, enc: Encoding) -> bool {
        debug_assert!(!self.is_open());
        let c = self.as_compact();
        if data.len() > COMPACT_STR_MAX || c.bytes.len() - c.payload_at != CRC + data.len() {
            return false;
        }
        let (start, expire_bit) = (c.payload_at, c.flags & HAS_EXPIRE);
        let bytes = self.compact_bytes_mut();
        bytes[0] = KIND_STR | encoding_flags(enc) | expire_bit;
        bytes[start..start + CRC].copy_from_slice(&crc.to_le_bytes());
        bytes[start + CRC..].copy_from_slice(data);
        true
    }

    /// Takes the entry apart into its value and expiry (RENAME moves a key this way).
    pub fn into_parts(mut self) -> (Value, Option<u64>) {
        self.open();
        let this = ManuallyDrop::new(self);
        // SAFETY: opened above, so `ptr` is a `Box<Open>` this entry owns; `ManuallyDrop`
        // keeps the entry's own drop from freeing it a second time.
        let open = unsafe { Box::from_raw(this.ptr.as_ptr().cast::<Open>()) };
        let at = (open.expire_at != 0).then_some(open.expire_at);
        (open.value, at)
    }

    pub fn is_expired(&self, now: u64) -> bool {
        let at = self.expire_raw();
        at != 0 && at <= now
    }

    /// Digest of this key (name, type, value, expiry).
    pub fn key_digest(&self, key: &[u8]) -> u64 {
        let v = self.value();
        key_digest(key, v.value_type().tag(), v.digest(), self.expire_raw())
    }

    /// [`Entry::key_digest_named`], and the element sum it hashed the elements for when this is
    /// a compact collection that leaves its sum out: a write hands it to
    /// [`Entry::open_with_sum`], so that opening does not hash them again.
    #[cfg(test)]
    pub(crate) fn key_digest_and_sum(&self, name_hash: u64) -> (u64, Option<u64>) {
        let (kd, _, sum) = self.digest_size_and_sum(name_hash, self.key());
        (kd, sum)
    }

    /// What the write funnel reads of a key before and after a write: its digest
    /// ([`Entry::key_digest_named`]), its [`Entry::size`] and, for a compact collection that
    /// leaves its element sum out, that sum (see [`Entry::open_with_sum`]) — from one view of
    /// the value (reading them one by one viewed it four times: about 200 instructions of a
    /// write to a large collection).
    pub(crate) fn digest_size_and_sum(
        &self,
        name_hash: u64,
        key: &[u8],
    ) -> (u64, usize, Option<u64>) {
        let (v, expire, size) = match self.as_open() {
            Some(o) => {
                let v = o.value.view();
                (v, o.expire_at, Entry::estimate(key, v, o.expire_at != 0))
            }
            None => {
                let c = self.as_compact();
                // What `estimate` computes from a compact value's content is this form's
                // length (`Entry::compact` built it from the same lengths).
                let size = NODE_OVERHEAD + malloc_chunk(c.bytes.len());
                if let Some(kind) = packed_kind(c.flags) {
                    let p = PackedRef::from_compact(c.payload());
                    if p.sum().is_none() {
                        let sum = ValueRef::of_packed(kind, p).element_sum();
                        let v = ValueRef::of_packed(kind, p.with_sum(sum));
                        let kd = key_digest_named(
                            name_hash,
                            v.value_type().tag(),
                            v.digest(),
                            c.expire_at(),
                        );
                        return (kd, size, Some(sum));
                    }
                }
                (c.value(), c.expire_at(), size)
            }
        };
        let kd = key_digest_named(name_hash, v.value_type().tag(), v.digest(), expire);
        (kd, size, None)
    }

    /// [`Entry::key_digest_named`] and [`Entry::size`] (see [`Entry::digest_size_and_sum`]).
    pub(crate) fn digest_and_size(&self, name_hash: u64, key: &[u8]) -> (u64, usize) {
        let (kd, size, _) = self.digest_size_and_sum(name_hash, key);
        (kd, size)
    }

    /// Opens a compact collection whose element sum is known: `sum` must be what
    /// [`Entry::key_digest_and_sum`] gave for this entry, unchanged since.
    pub(crate) fn open_with_sum(&mut self, sum: u64) {
        if self.is_open() {
            return;
        }
        let c = self.as_compact();
        let Some(kind) = packed_kind(c.flags) else {
            return;
        };
        let open = Open {
            tag: OPEN,
            expire_at: c.expire_at(),
            modified: c.modified(),
            version: c.version(),
            value: Value::from_packed(kind, PackedRef::from_compact(c.payload()).with_sum(sum)),
            key: TableKey::new(c.key()),
        };
        *self = Entry::open_from(open);
    }

    /// [`Entry::key_digest`] from the name's element hash (the write funnel reads it with the
    /// size: [`Entry::digest_and_size`]).
    #[cfg(test)]
    pub(crate) fn key_digest_named(&self, name_hash: u64) -> u64 {
        let v = self.value();
        key_digest_named(
            name_hash,
            v.value_type().tag(),
            v.digest(),
            self.expire_raw(),
        )
    }

    /// Estimated bytes this key takes: its share of the table, and its entry (the compact
    /// form's malloc chunk, or the open form's box, key and value). What memory quotas, INFO
    /// memory and MEMORY USAGE count. It depends on the content only, not on whether a writer
    /// has the entry open.
    pub fn size(&self, key: &[u8]) -> usize {
        if !self.is_open() {
            // What `estimate` computes from a compact value's content is this form's length
            // (`Entry::compact` built it from the same lengths): read, not recomputed.
            return NODE_OVERHEAD + malloc_chunk(self.as_compact().bytes.len());
        }
        Entry::estimate(key, self.value(), self.expire_raw() != 0)
    }

    /// [`Entry::size`] of an entry with this content.
    pub fn estimate(key: &[u8], value: ValueRef<'_>, has_expire: bool) -> usize {
        match compact_payload_len(value) {
            Some(payload) => {
                NODE_OVERHEAD + malloc_chunk(compact_len(key.len(), payload, has_expire))
            }
            None => ENTRY_OVERHEAD + key_heap_bytes(key) + value.mem_size(),
        }
    }

    /// A copy that owns its value (a snapshot's pre-image).
    pub(crate) fn clone_deep(&self) -> Entry {
        match self.as_open() {
            Some(o) => Entry::open_from(Open {
                tag: OPEN,
                expire_at: o.expire_at,
                modified: o.modified,
                version: o.version,
                value: o.value.deep_clone(),
                key: TableKey::new(&o.key),
            }),
            None => {
                let bytes: Box<[u8]> = self.compact_bytes().into();
                Entry {
                    ptr: NonNull::from(Box::leak(bytes)).cast(),
                }
            }
        }
    }
}

impl OwnsKey for Entry {
    #[inline]
    fn key(&self) -> &[u8] {
        Entry::key(self)
    }

    /// The allocation: a compact entry's key is in its first bytes.
    #[inline]
    fn home(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let p = self.ptr.as_ptr();
        if self.is_open() {
            // SAFETY: an open entry owns the `Box<Open>` it was made from; this is its only free.
            drop(unsafe { Box::from_raw(p.cast::<Open>()) });
        } else {
            // SAFETY: a compact entry owns the `Box<[u8]>` it was made from, whose length
            // `compact_len_at` reads back (its contract holds: built by `Entry::compact`).
            drop(unsafe {
                Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, compact_len_at(p)))
            });
        }
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("key", &String::from_utf8_lossy(self.key()))
            .field("value", &self.value())
            .field("expire_at", &self.expire_at())
            .field("compact", &self.is_compact())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{HashValue, ListValue, SetValue, ZSetValue};

    fn samples() -> Vec<Value> {
        let mut hash = HashValue::default();
        hash.insert(b"field", b"value");
        let mut list = ListValue::default();
        list.push_back(b"a");
        list.push_back(b"bb");
        let mut ints = SetValue::default();
        ints.insert(b"12");
        ints.insert(b"-7");
        let mut set = SetValue::default();
        set.insert(b"member");
        let mut zset = ZSetValue::default();
        zset.insert(b"m", 1.5);
        // Packed past `pack::SUMLESS_MAX` elements: the compact form keeps the sum.
        let mut hash20 = HashValue::default();
        let mut zset9 = ZSetValue::default();
        let mut list12 = ListValue::default();
        let mut ints12 = SetValue::default();
        for i in 0..20i64 {
            hash20.insert(format!("f{i}").as_bytes(), b"v");
            if i < 9 {
                zset9.insert(format!("m{i}").as_bytes(), (i - 4) as f64 * 1e3);
            }
            if i < 12 {
                list12.push_back(format!("e{i}").as_bytes());
                ints12.insert(format!("{}", i * 1000 - 5000).as_bytes());
            }
        }
        let mut big_hash = HashValue::default();
        for i in 0..1000 {
            big_hash.insert(format!("f{i}").as_bytes(), b"v");
        }
        vec![
            Value::string(""),
            Value::string("12345"),
            Value::string(vec![b'x'; 100]),
            Value::string(vec![b'y'; COMPACT_STR_MAX]),
            Value::string(vec![b'z'; COMPACT_STR_MAX + 1]),
            Value::Hash(hash),
            Value::List(list),
            Value::Set(ints),
            Value::Set(set),
            Value::ZSet(zset),
            Value::Hash(hash20),
            Value::ZSet(zset9),
            Value::List(list12),
            Value::Set(ints12),
            Value::Hash(big_hash),
        ]
    }

    #[test]
    fn both_forms_show_the_same_content_and_estimate() {
        for key in [&b"k"[..], b"key:000000000001", &[b'L'; 300]] {
            for value in samples() {
                for expire in [0, 1_700_000_000_123] {
                    let want_digest = crate::digest::key_digest(
                        key,
                        value.value_type().tag(),
                        value.digest(),
                        expire,
                    );
                    let want_enc = value.encoding();
                    let compactable = value
                        .str_parts()
                        .is_some_and(|s| s.0.len() <= COMPACT_STR_MAX)
                        || value.packed().is_some();
                    let mut e = Entry::new(key, value.deep_clone(), expire, 42, 7);
                    assert_eq!(e.is_compact(), compactable, "{e:?}");
                    let size = e.size(key);
                    assert_eq!(
                        size,
                        Entry::estimate(key, e.value(), expire != 0),
                        "a compact entry's size is its length"
                    );
                    for _ in 0..2 {
                        assert_eq!(e.key(), key);
                        assert_eq!(e.key_digest(key), want_digest);
                        assert_eq!(e.value().encoding(), want_enc);
                        assert_eq!(e.expire_raw(), expire);
                        assert_eq!((e.modified_ms(), e.version()), (42, 7));
                        assert_eq!(
                            e.size(key),
                            size,
                            "the estimate does not depend on the form"
                        );
                        let c = e.clone_deep();
                        assert_eq!(
                            (c.key_digest(key), c.is_compact()),
                            (want_digest, e.is_compact())
                        );
                        // Open it (as a writer does), then look again; then settle.
                        let _ = e.value_mut();
                        assert!(!e.is_compact());
                        assert_eq!(e.key_digest(key), want_digest);
                        assert_eq!(e.size(key), size);
                        e.settle();
                        assert_eq!(e.is_compact(), compactable);
                    }
                    let (v, at) = e.into_parts();
                    assert_eq!((v.encoding(), at.unwrap_or(0)), (want_enc, expire));
                }
            }
        }
    }

    #[test]
    fn a_known_sum_opens_a_collection_as_hashing_its_elements_does() {
        for value in samples() {
            let key = b"key:1";
            let name_hash = crate::digest::name_hash_and_bucket(key).0;
            let e = Entry::new(key, value.deep_clone(), 77, 1, 2);
            let (kd, sum) = e.key_digest_and_sum(name_hash);
            assert_eq!(kd, e.key_digest_named(name_hash));
            let sumless =
                e.is_compact() && value.packed().is_some() && value.elements() <= pack::SUMLESS_MAX;
            assert_eq!(sum.is_some(), sumless, "{e:?}");
            if let Some(sum) = sum {
                assert_eq!(sum, value.view().element_sum());
                let mut opened = Entry::new(key, value.deep_clone(), 77, 1, 2);
                opened.open_with_sum(sum);
                assert!(!opened.is_compact());
                assert_eq!(opened.key_digest_named(name_hash), kd);
                // The open value keeps its sum through a change, as one opened by hashing does.
                let mut hashed = Entry::new(key, value.deep_clone(), 77, 1, 2);
                for x in [&mut opened, &mut hashed] {
                    if let Value::Hash(h) = x.value_mut() {
                        h.insert(b"new", b"field");
                    }
                }
                assert_eq!(
                    opened.key_digest_named(name_hash),
                    hashed.key_digest_named(name_hash)
                );
            }
        }
    }

    #[test]
    fn metadata_changes_in_place_and_across_forms() {
        let mut e = Entry::new(b"k", Value::string("v"), 0, 1, 1);
        e.set_version(STAMP_MAX);
        e.set_modified(123);
        assert!(e.is_compact());
        assert_eq!((e.version(), e.modified_ms()), (STAMP_MAX, 123));
        // Setting an expiry changes the compact form's length: it opens, then settles.
        e.set_expire_at(Some(99));
        assert_eq!(e.expire_at(), Some(99));
        e.settle();
        assert!(e.is_compact());
        assert_eq!((e.expire_at(), e.version()), (Some(99), STAMP_MAX));
        e.set_expire_at(Some(100));
        assert!(e.is_compact(), "same length: written in place");
        e.set_expire_at(None);
        e.settle();
        assert_eq!((e.expire_at(), e.is_compact()), (None, true));
        // Stamps past 48 bits are never cut: the entry stays open.
        e.set_version(STAMP_MAX + 1);
        e.settle();
        assert!(!e.is_compact());
        assert_eq!(e.version(), STAMP_MAX + 1);
        e.replace(Value::string("w"), Some(5));
        assert_eq!(
            (e.value().digest(), e.expire_at(), e.version()),
            (Value::string("w").digest(), Some(5), STAMP_MAX + 1)
        );
    }

    #[test]
    fn replacing_keeps_key_and_stamps_in_place_or_not() {
        let key = b"key:1";
        let mut packed = HashValue::default();
        packed.insert(b"f", b"0123456");
        let values = [
            Value::string("abc"),
            Value::string("xyz"),
            Value::string("1234"),
            Value::string("12345"),
            Value::Hash(packed),
            Value::string(vec![b'q'; 11]),
            Value::string(vec![b'r'; 2000]),
            Value::string("def"),
        ];
        for expire in [None, Some(77)] {
            let mut e = Entry::new(key, Value::string("abc"), 0, 5, 9);
            for v in &values {
                let want = (
                    v.value_type(),
                    v.digest(),
                    v.encoding(),
                    Entry::estimate(key, v.view(), expire.is_some()),
                );
                e.replace(v.deep_clone(), expire);
                let got = (
                    e.value_type(),
                    e.value().digest(),
                    e.value().encoding(),
                    e.size(key),
                );
                assert_eq!(got, want);
                assert_eq!(
                    (e.key(), e.expire_at(), e.modified_ms(), e.version()),
                    (&key[..], expire, 5, 9)
                );
            }
        }
    }

    #[test]
    fn a_counter_of_the_same_length_is_rewritten_in_place_as_a_fresh_entry() {
        let key = b"counter:000000012345";
        for expire in [0, 1_700_000_000_123] {
            for (old, new) in [
                ("1", "2"),
                ("9", "8"),
                ("-5", "-4"),
                ("41", "42"),
                ("9223372036854775806", "9223372036854775807"),
                ("abc", "123"), // embstr to int
                ("123", "0x1"), // int to embstr
                ("0.5", "1.5"), // INCRBYFLOAT's results
            ] {
                let mut e = Entry::new(key, Value::string(old), expire, 42, 7);
                let home = e.ptr;
                assert!(e.set_str_in_place(new.as_bytes()), "{old} -> {new}");
                assert_eq!(e.ptr, home, "no new allocation");
                let fresh = Entry::new(key, Value::string(new), expire, 42, 7);
                assert_eq!(e.compact_bytes(), fresh.compact_bytes());
                assert_eq!(e.key_digest(key), fresh.key_digest(key));
                assert_eq!(e.size(key), fresh.size(key));
                assert_eq!(e.size(key), Entry::estimate(key, e.value(), expire != 0));
                assert_eq!(e.value().encoding(), fresh.value().encoding());
                assert_eq!(
                    (e.key(), e.expire_raw(), e.modified_ms(), e.version()),
                    (&key[..], expire, 42, 7)
                );
            }
        }
    }

    #[test]
    fn a_counter_that_cannot_be_rewritten_in_place_is_left_unchanged() {
        let key = b"k";
        let mut packed = HashValue::default();
        packed.insert(b"f", b"v");
        let cases = [
            // Another length: the compact form would change size.
            (Value::string("9"), "10"),
            (Value::string("10"), "9"),
            // Open: a string past the compact limit.
            (
                Value::string(vec![b'7'; COMPACT_STR_MAX + 1]),
                "8".repeat(COMPACT_STR_MAX + 1).leak(),
            ),
        ];
        for (value, new) in cases {
            let mut e = Entry::new(key, value.deep_clone(), 5, 1, 2);
            let before = (e.key_digest(key), e.size(key), e.is_compact());
            assert!(!e.set_str_in_place(new.as_bytes()), "{value:?}");
            assert_eq!((e.key_digest(key), e.size(key), e.is_compact()), before);
        }
        // Not a string, even with a payload as long as the new string's.
        let mut e = Entry::new(key, Value::Hash(packed), 0, 1, 2);
        let c = e.as_compact();
        let same_len = vec![b'1'; c.bytes.len() - c.payload_at - CRC];
        let before = e.key_digest(key);
        assert!(!e.set_str_in_place(&same_len));
        assert_eq!(
            (e.key_digest(key), e.value_type()),
            (before, ValueType::Hash)
        );
        // A stamp past 48 bits keeps the entry open: not rewritten either.
        let mut e = Entry::new(key, Value::string("1"), 0, 1, STAMP_MAX + 1);
        assert!(!e.is_compact());
        assert!(!e.set_str_in_place(b"2"));
        assert_eq!(e.value().digest(), Value::string("1").digest());
    }

    #[test]
    fn a_short_string_key_fits_a_144_byte_chunk() {
        let key = b"key:000000000001";
        let e = Entry::new(key, Value::string(vec![b'v'; 100]), 0, 1_764_800_000_000, 1);
        assert_eq!(e.compact_bytes().len(), 135);
        assert_eq!(e.size(key), NODE_OVERHEAD + 144);
        assert!(e.size(key) <= ENTRY_OVERHEAD + 16 + 100 + 16);
    }
}
