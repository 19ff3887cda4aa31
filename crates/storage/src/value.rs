//! Values of every type. Each collection keeps its own byte estimate and content digest up to date
//! on every change, so the keyspace can account a write in O(1) whatever the value's size.

use std::cmp::Ordering;

use std::ops::Bound;

use crate::digest::{hash_bytes, hash_pair, hash_scored, mix64, type_tag};
use crate::encoding::{self, Encoding};
pub use crate::list::{ListRef, ListValue};
use crate::ordtree::{self, OrdTree};
use crate::pack::{self, Packed, PackedRef};
use crate::stream::StreamValue;
use crate::table::{Table, TableKey};

/// What a packed collection's one allocation costs besides its bytes: glibc's chunk header (8)
/// and rounding to 16 (8 on average), and the chunks its reallocations leave free between
/// others (measured: with 32 the estimate is within 0.9–1.1 of the RSS growth for every packed
/// shape of `scripts/bench-memory.sh`).
pub(crate) const PACKED_CHUNK: usize = 32;

/// What a full collection costs besides its elements: the box holding its structure.
pub(crate) const FULL_HEADER: usize = 64;

/// Rough per-element bookkeeping cost (allocator headers, pointers, table nodes), so that memory
/// quotas see collections of many tiny elements as the memory they really take.
pub(crate) const ELEM_OVERHEAD: usize = 40;

/// The per-element bookkeeping a collection's estimate counts, for callers that bound what a
/// write may add (memory quotas).
pub const ELEMENT_OVERHEAD: usize = ELEM_OVERHEAD;

/// The largest fixed part of a value's estimate besides its elements (`Value::mem_size`).
pub const VALUE_HEADER_MAX: usize = 96;

/// The data types a key can hold.
pub enum Value {
    Str(StrValue),
    // A collection is held directly: its packed form is one allocation (header and elements),
    // its full form one box.
    List(ListValue),
    Hash(HashValue),
    Set(SetValue),
    ZSet(ZSetValue),
    Stream(Box<StreamValue>),
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}({} elements)",
            self.value_type().name(),
            self.elements()
        )
    }
}

/// The type of a value, as TYPE names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    String,
    List,
    Hash,
    Set,
    ZSet,
    Stream,
}

impl ValueType {
    pub fn name(self) -> &'static str {
        match self {
            ValueType::String => "string",
            ValueType::List => "list",
            ValueType::Hash => "hash",
            ValueType::Set => "set",
            ValueType::ZSet => "zset",
            ValueType::Stream => "stream",
        }
    }

    pub fn from_name(name: &[u8]) -> Option<ValueType> {
        Some(match name.to_ascii_lowercase().as_slice() {
            b"string" => ValueType::String,
            b"list" => ValueType::List,
            b"hash" => ValueType::Hash,
            b"set" => ValueType::Set,
            b"zset" => ValueType::ZSet,
            b"stream" => ValueType::Stream,
            _ => return None,
        })
    }

    /// Stable tag used in digests and on the migration wire.
    pub fn tag(self) -> u64 {
        match self {
            ValueType::String => type_tag::STRING,
            ValueType::List => type_tag::LIST,
            ValueType::Hash => type_tag::HASH,
            ValueType::Set => type_tag::SET,
            ValueType::ZSet => type_tag::ZSET,
            ValueType::Stream => type_tag::STREAM,
        }
    }

    pub fn from_tag(tag: u64) -> Option<ValueType> {
        Some(match tag {
            type_tag::STRING => ValueType::String,
            type_tag::LIST => ValueType::List,
            type_tag::HASH => ValueType::Hash,
            type_tag::SET => ValueType::Set,
            type_tag::ZSET => ValueType::ZSet,
            type_tag::STREAM => ValueType::Stream,
            _ => return None,
        })
    }

    /// An empty value of this type (collections are only empty transiently, e.g. while a
    /// migration streams a large value in chunks).
    pub fn empty_value(self) -> Value {
        match self {
            ValueType::String => Value::Str(StrValue::new(Vec::new())),
            ValueType::List => Value::List(ListValue::default()),
            ValueType::Hash => Value::Hash(HashValue::default()),
            ValueType::Set => Value::Set(SetValue::default()),
            ValueType::ZSet => Value::ZSet(ZSetValue::default()),
            ValueType::Stream => Value::Stream(Box::default()),
        }
    }
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Str(_) => ValueType::String,
            Value::List(_) => ValueType::List,
            Value::Hash(_) => ValueType::Hash,
            Value::Set(_) => ValueType::Set,
            Value::ZSet(_) => ValueType::ZSet,
            Value::Stream(_) => ValueType::Stream,
        }
    }

    pub fn string(data: impl Into<Vec<u8>>) -> Value {
        Value::Str(StrValue::new(data.into()))
    }

    /// A read-only view of the value (what a stored key's [`crate::Entry::value`] returns).
    pub fn view(&self) -> ValueRef<'_> {
        match self {
            Value::Str(s) => ValueRef::Str(s.view()),
            Value::List(l) => ValueRef::List(l.view()),
            Value::Hash(h) => ValueRef::Hash(h.view()),
            Value::Set(s) => ValueRef::Set(s.view()),
            Value::ZSet(z) => ValueRef::ZSet(z.view()),
            Value::Stream(x) => ValueRef::Stream(x),
        }
    }

    /// Digest of the content (without the key name, type or expiry).
    pub fn digest(&self) -> u64 {
        self.view().digest()
    }

    /// Estimated heap bytes.
    pub fn mem_size(&self) -> usize {
        self.view().mem_size()
    }

    /// How the value is kept, as OBJECT ENCODING names it.
    pub fn encoding(&self) -> Encoding {
        self.view().encoding()
    }

    /// Number of elements (1 for strings).
    pub fn elements(&self) -> usize {
        self.view().elements()
    }

    /// True for a collection with no elements; Redis deletes such keys.
    pub fn is_empty_collection(&self) -> bool {
        self.view().is_empty_collection()
    }

    /// Deep copy (COPY, and reading a value out for a migration batch).
    pub fn deep_clone(&self) -> Value {
        match self {
            Value::List(l) => Value::List(l.clone()),
            _ => self.view().to_value(),
        }
    }
}

/// The packed forms a compact keyspace entry (`crate::entry`) keeps inside its own allocation,
/// next to its key: a small collection's [`Packed`] bytes and which collection they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PackedKind {
    List,
    Hash,
    SetInts,
    Set,
    ZSet,
}

impl Value {
    /// A small collection's packed form, if the value is packed.
    pub(crate) fn packed(&self) -> Option<(PackedKind, PackedRef<'_>)> {
        let (kind, p) = match self {
            Value::List(l) => (PackedKind::List, l.as_packed()?),
            Value::Hash(HashValue(HashRepr::Packed(p))) => (PackedKind::Hash, p),
            Value::Set(SetValue(SetRepr::Ints(p))) => (PackedKind::SetInts, p),
            Value::Set(SetValue(SetRepr::Packed(p))) => (PackedKind::Set, p),
            Value::ZSet(ZSetValue(ZRepr::Packed(p))) => (PackedKind::ZSet, p),
            _ => return None,
        };
        Some((kind, p.as_ref()))
    }

    /// The value whose [`Value::packed`] form is `packed` (its own copy, with the digest sum in
    /// its header, computed from the elements when `packed` leaves it out).
    pub(crate) fn from_packed(kind: PackedKind, packed: PackedRef<'_>) -> Value {
        let sum = packed
            .sum()
            .unwrap_or_else(|| ValueRef::of_packed(kind, packed).element_sum());
        let mut buf = Packed::start(packed.body().len());
        buf.extend_from_slice(packed.body());
        let p = Packed::finish(buf, packed.len(), sum);
        match kind {
            PackedKind::List => Value::List(ListValue::of_packed(p)),
            PackedKind::Hash => Value::Hash(HashValue(HashRepr::Packed(p))),
            PackedKind::SetInts => Value::Set(SetValue(SetRepr::Ints(p))),
            PackedKind::Set => Value::Set(SetValue(SetRepr::Packed(p))),
            PackedKind::ZSet => Value::ZSet(ZSetValue(ZRepr::Packed(p))),
        }
    }

    /// A string's bytes, CRC and encoding (a compact entry keeps them next to its key).
    pub(crate) fn str_parts(&self) -> Option<(&[u8], u32, Encoding)> {
        match self {
            Value::Str(s) => Some((s.as_bytes(), s.crc(), s.encoding())),
            _ => None,
        }
    }

    /// The string whose [`Value::str_parts`] these are.
    pub(crate) fn from_str_parts(data: &[u8], crc: u32, enc: Encoding) -> Value {
        Value::Str(StrValue::with(data.to_vec(), crc, enc))
    }
}

impl<'a> ValueRef<'a> {
    /// The view of a packed form kept in a compact entry.
    pub(crate) fn of_packed(kind: PackedKind, p: PackedRef<'a>) -> ValueRef<'a> {
        match kind {
            PackedKind::List => ValueRef::List(ListRef::packed(p)),
            PackedKind::Hash => ValueRef::Hash(HashRef::packed(p)),
            PackedKind::SetInts => ValueRef::Set(SetRef::ints(p)),
            PackedKind::Set => ValueRef::Set(SetRef::packed(p)),
            PackedKind::ZSet => ValueRef::ZSet(ZSetRef::packed(p)),
        }
    }

    /// The view of a string kept in a compact entry.
    pub(crate) fn of_str(data: &'a [u8], crc: u32, enc: Encoding) -> ValueRef<'a> {
        ValueRef::Str(StrRef {
            data,
            crc: Some(crc),
            enc,
        })
    }

    /// The sum (a list's polynomial) of a collection's element hashes that its digest mixes
    /// with its length: kept, or computed from the elements. 0 for strings and streams, whose
    /// digests are not sums.
    pub(crate) fn element_sum(self) -> u64 {
        match self {
            ValueRef::List(l) => l.element_sum(),
            ValueRef::Hash(h) => h.element_sum(),
            ValueRef::Set(s) => s.element_sum(),
            ValueRef::ZSet(z) => z.element_sum(),
            ValueRef::Str(_) | ValueRef::Stream(_) => 0,
        }
    }

    /// Bytes of a packed form's buffer (header and elements), if the value is packed.
    pub(crate) fn packed_len(self) -> Option<usize> {
        let bytes = match self {
            ValueRef::List(l) => return l.packed_len(),
            ValueRef::Hash(HashRef {
                repr: HashReprRef::Packed { .. },
                bytes,
                ..
            })
            | ValueRef::Set(SetRef {
                repr: SetReprRef::Ints { .. } | SetReprRef::Packed { .. },
                bytes,
                ..
            })
            | ValueRef::ZSet(ZSetRef {
                repr: ZReprRef::Packed { .. },
                bytes,
                ..
            }) => bytes,
            _ => return None,
        };
        Some(bytes)
    }
}

/// A read-only view of a value of any type, however it is kept: what a stored key's
/// [`crate::Entry::value`] returns (match on it as on [`Value`]). Views are `Copy` and their
/// methods take `self`, so what they return borrows the key, not the view.
#[derive(Clone, Copy)]
pub enum ValueRef<'a> {
    Str(StrRef<'a>),
    List(ListRef<'a>),
    Hash(HashRef<'a>),
    Set(SetRef<'a>),
    ZSet(ZSetRef<'a>),
    Stream(&'a StreamValue),
}

impl std::fmt::Debug for ValueRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}({} elements)",
            self.value_type().name(),
            self.elements()
        )
    }
}

impl<'a> ValueRef<'a> {
    pub fn value_type(self) -> ValueType {
        match self {
            ValueRef::Str(_) => ValueType::String,
            ValueRef::List(_) => ValueType::List,
            ValueRef::Hash(_) => ValueType::Hash,
            ValueRef::Set(_) => ValueType::Set,
            ValueRef::ZSet(_) => ValueType::ZSet,
            ValueRef::Stream(_) => ValueType::Stream,
        }
    }

    /// Digest of the content (without the key name, type or expiry).
    pub fn digest(self) -> u64 {
        match self {
            ValueRef::Str(s) => s.digest(),
            ValueRef::List(l) => l.digest(),
            ValueRef::Hash(h) => h.digest(),
            ValueRef::Set(s) => s.digest(),
            ValueRef::ZSet(z) => z.digest(),
            ValueRef::Stream(x) => x.digest(),
        }
    }

    /// Estimated heap bytes of an owned value with this content.
    pub fn mem_size(self) -> usize {
        match self {
            ValueRef::Str(s) => s.mem_size(),
            ValueRef::List(l) => l.mem_bytes(),
            ValueRef::Hash(h) => h.mem_bytes(),
            ValueRef::Set(s) => s.mem_bytes(),
            ValueRef::ZSet(z) => z.mem_bytes(),
            ValueRef::Stream(x) => x.mem_bytes() + 96,
        }
    }

    /// How the value is kept, as OBJECT ENCODING names it.
    pub fn encoding(self) -> Encoding {
        match self {
            ValueRef::Str(s) => s.encoding(),
            ValueRef::List(l) => l.encoding(),
            ValueRef::Hash(h) => h.encoding(),
            ValueRef::Set(s) => s.encoding(),
            ValueRef::ZSet(z) => z.encoding(),
            ValueRef::Stream(_) => Encoding::Stream,
        }
    }

    /// Number of elements (1 for strings).
    pub fn elements(self) -> usize {
        match self {
            ValueRef::Str(_) => 1,
            ValueRef::List(l) => l.len(),
            ValueRef::Hash(h) => h.len(),
            ValueRef::Set(s) => s.len(),
            ValueRef::ZSet(z) => z.len(),
            ValueRef::Stream(x) => usize::try_from(x.len()).unwrap_or(usize::MAX),
        }
    }

    /// True for a collection with no elements; Redis deletes such keys.
    pub fn is_empty_collection(self) -> bool {
        match self {
            // A stream may exist without entries (XGROUP CREATE MKSTREAM, XDEL of the last).
            ValueRef::Str(_) | ValueRef::Stream(_) => false,
            _ => self.elements() == 0,
        }
    }

    /// An owned copy of the content (COPY, RENAME, reading a value out for a migration batch).
    pub fn to_value(self) -> Value {
        match self {
            ValueRef::Str(s) => Value::Str(s.to_owned()),
            ValueRef::List(l) => {
                let mut n = ListValue::default();
                for e in l.iter() {
                    n.push_back(e);
                }
                Value::List(n)
            }
            ValueRef::Hash(h) => {
                let mut n = HashValue::default();
                for (f, v) in h.iter() {
                    n.insert(f, v);
                }
                Value::Hash(n)
            }
            ValueRef::Set(s) => {
                let mut n = SetValue::default();
                for m in s.iter() {
                    n.insert(m);
                }
                Value::Set(n)
            }
            ValueRef::ZSet(z) => {
                let mut n = ZSetValue::default();
                for (m, sc) in z.iter() {
                    n.insert(m, sc);
                }
                Value::ZSet(n)
            }
            ValueRef::Stream(x) => Value::Stream(Box::new(x.clone())),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Strings

/// Longest string kept inside the value itself, with no allocation of its own (the value stays
/// 32 bytes either way; a heap string of this size would take a 32-byte malloc chunk).
pub const INLINE_STR: usize = 25;

/// A string value with its CRC kept current.
#[derive(Clone)]
pub struct StrValue {
    repr: StrRepr,
}

/// The two layouts of a string; each variant carries the CRC and the encoding Redis would report
/// so that the whole value is 32 bytes (the tag, length, encoding and 25 bytes fill what a
/// `Vec`, CRC and encoding take).
#[derive(Clone)]
enum StrRepr {
    Inline {
        len: u8,
        enc: Encoding,
        bytes: [u8; INLINE_STR],
        crc: u32,
    },
    Heap {
        data: Vec<u8>,
        crc: u32,
        /// What Redis would call this string's encoding. The bytes are kept the same way
        /// whatever it says: see [`StrValue::encoding`].
        enc: Encoding,
    },
}

/// Longest string Redis embeds in its object header (`OBJ_ENCODING_EMBSTR_SIZE_LIMIT`).
const EMBSTR_MAX: usize = 44;

impl StrValue {
    pub fn new(data: Vec<u8>) -> Self {
        let crc = crate::digest::crc32(&data);
        let enc = StrValue::encoding_of(&data);
        StrValue::with(data, crc, enc)
    }

    /// A copy of `data`; a short one is kept inline without a heap allocation (SET of a short
    /// value: no allocation to make and free again).
    pub fn from_slice(data: &[u8]) -> Self {
        if data.len() > INLINE_STR {
            return StrValue::new(data.to_vec());
        }
        let mut bytes = [0u8; INLINE_STR];
        bytes[..data.len()].copy_from_slice(data);
        StrValue {
            repr: StrRepr::Inline {
                len: data.len() as u8,
                enc: StrValue::encoding_of(data),
                bytes,
                crc: crate::digest::crc32(data),
            },
        }
    }

    /// The encoding Redis would report for a string of these bytes.
    pub(crate) fn encoding_of(data: &[u8]) -> Encoding {
        if encoding::canonical_int(data).is_some() {
            Encoding::Int
        } else if data.len() <= EMBSTR_MAX {
            Encoding::EmbStr
        } else {
            Encoding::Raw
        }
    }

    /// Keeps `data` inline when it is short enough (its allocation is freed), else as it is.
    pub(crate) fn with(data: Vec<u8>, crc: u32, enc: Encoding) -> Self {
        let repr = if data.len() <= INLINE_STR {
            let mut bytes = [0u8; INLINE_STR];
            bytes[..data.len()].copy_from_slice(&data);
            StrRepr::Inline {
                len: data.len() as u8,
                enc,
                bytes,
                crc,
            }
        } else {
            StrRepr::Heap { data, crc, enc }
        };
        StrValue { repr }
    }

    pub(crate) fn crc(&self) -> u32 {
        match &self.repr {
            StrRepr::Inline { crc, .. } | StrRepr::Heap { crc, .. } => *crc,
        }
    }

    /// The bytes as a growable buffer (an inline string moves to the heap, with room for
    /// `extra` more bytes), and the CRC and encoding to update.
    fn heap_mut(&mut self, extra: usize) -> (&mut Vec<u8>, &mut u32, &mut Encoding) {
        if let StrRepr::Inline {
            len,
            enc,
            bytes,
            crc,
        } = &self.repr
        {
            let mut data = Vec::with_capacity(usize::from(*len) + extra);
            data.extend_from_slice(&bytes[..usize::from(*len)]);
            self.repr = StrRepr::Heap {
                data,
                crc: *crc,
                enc: *enc,
            };
        }
        match &mut self.repr {
            StrRepr::Heap { data, crc, enc } => (data, crc, enc),
            StrRepr::Inline { .. } => unreachable!("moved to the heap above"),
        }
    }

    /// The encoding Redis would report for this string: `int` for a canonical 64-bit integer
    /// written whole (SET, INCR), `embstr` for other strings of up to 44 bytes written whole,
    /// `raw` for longer ones and for any string changed in place (APPEND, SETRANGE), as in Redis.
    /// Ferrite keeps every string as its bytes (short ones inside the value): an integer form
    /// would save nothing for the short numbers counters hold, and GET would have to format it
    /// on every read.
    pub fn encoding(&self) -> Encoding {
        match &self.repr {
            StrRepr::Inline { enc, .. } | StrRepr::Heap { enc, .. } => *enc,
        }
    }

    pub fn view(&self) -> StrRef<'_> {
        StrRef {
            data: self.as_bytes(),
            crc: Some(self.crc()),
            enc: self.encoding(),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match &self.repr {
            StrRepr::Inline { len, bytes, .. } => &bytes[..usize::from(*len)],
            StrRepr::Heap { data, .. } => data,
        }
    }

    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }

    pub fn set(&mut self, data: Vec<u8>) {
        *self = StrValue::new(data);
    }

    /// Appends in place; the CRC is extended, not recomputed.
    pub fn append(&mut self, more: &[u8]) {
        let old_len = self.len();
        let mut h = crc32fast::Hasher::new_with_initial_len(self.crc(), old_len as u64);
        let mut tail = crate::digest::crc_hasher();
        tail.update(more);
        h.combine(&tail);
        let new_crc = h.finalize();
        if old_len + more.len() <= INLINE_STR
            && let StrRepr::Inline {
                len,
                enc,
                bytes,
                crc,
            } = &mut self.repr
        {
            bytes[old_len..old_len + more.len()].copy_from_slice(more);
            *len = (old_len + more.len()) as u8;
            *crc = new_crc;
            *enc = Encoding::Raw;
            return;
        }
        let (data, crc, enc) = self.heap_mut(more.len());
        data.extend_from_slice(more);
        *crc = new_crc;
        *enc = Encoding::Raw;
    }

    /// Replaces the bytes with `data` where they lie when it is exactly as long (SET over a
    /// string of the same length: [`crate::Occupied::set_str`]), with the CRC and the encoding
    /// of a string written whole; false, with nothing changed, when it is not.
    pub fn overwrite(&mut self, data: &[u8]) -> bool {
        if data.len() != self.len() {
            return false;
        }
        let new_crc = crate::digest::crc32(data);
        let new_enc = StrValue::encoding_of(data);
        match &mut self.repr {
            StrRepr::Inline {
                len,
                enc,
                bytes,
                crc,
            } => {
                bytes[..usize::from(*len)].copy_from_slice(data);
                (*crc, *enc) = (new_crc, new_enc);
            }
            StrRepr::Heap {
                data: buf,
                crc,
                enc,
            } => {
                buf.copy_from_slice(data);
                (*crc, *enc) = (new_crc, new_enc);
            }
        }
        true
    }

    /// Overwrites from `offset`, zero-padding as SETRANGE does.
    pub fn set_range(&mut self, offset: usize, data: &[u8]) {
        let end = offset + data.len();
        if end <= INLINE_STR
            && let StrRepr::Inline {
                len,
                enc,
                bytes,
                crc,
            } = &mut self.repr
        {
            // SETRANGE past the end zero-pads.
            bytes[usize::from(*len)..].fill(0);
            bytes[offset..end].copy_from_slice(data);
            *len = (*len).max(end as u8);
            *crc = crate::digest::crc32(&bytes[..usize::from(*len)]);
            *enc = Encoding::Raw;
            return;
        }
        let extra = end.saturating_sub(self.len());
        let (buf, crc, enc) = self.heap_mut(extra);
        if buf.len() < end {
            buf.resize(end, 0);
        }
        buf[offset..end].copy_from_slice(data);
        *crc = crate::digest::crc32(buf);
        *enc = Encoding::Raw;
    }

    pub fn digest(&self) -> u64 {
        self.view().digest()
    }

    /// Estimated heap bytes (the keyspace's estimate, [`StrRef::mem_size`]).
    pub fn mem_size(&self) -> usize {
        self.view().mem_size()
    }
}

/// A read-only view of a string (see [`ValueRef`]).
#[derive(Clone, Copy)]
pub struct StrRef<'a> {
    data: &'a [u8],
    /// The CRC-32 of `data` when it is kept (else computed when asked).
    crc: Option<u32>,
    enc: Encoding,
}

impl<'a> StrRef<'a> {
    pub fn as_bytes(self) -> &'a [u8] {
        self.data
    }

    pub fn len(self) -> usize {
        self.data.len()
    }

    pub fn is_empty(self) -> bool {
        self.data.is_empty()
    }

    /// See [`StrValue::encoding`].
    pub fn encoding(self) -> Encoding {
        self.enc
    }

    pub fn digest(self) -> u64 {
        let crc = self.crc.unwrap_or_else(|| crate::digest::crc32(self.data));
        mix64((u64::from(crc) << 32) ^ self.data.len() as u64 ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// Estimated heap bytes of an owned copy: none for a string kept inside the value, else its
    /// buffer (length, not capacity, so that the estimate depends only on the content) and the
    /// allocator's header.
    pub fn mem_size(self) -> usize {
        if self.data.len() <= INLINE_STR {
            0
        } else {
            self.data.len() + 16
        }
    }

    /// An owned copy, with the same encoding.
    pub fn to_owned(self) -> StrValue {
        let crc = self.crc.unwrap_or_else(|| crate::digest::crc32(self.data));
        StrValue::with(self.data.to_vec(), crc, self.enc)
    }
}

// ---------------------------------------------------------------------------------------------
// Hashes

/// A hash (field → value) with its digest: packed (`listpack`, one allocation with the count and
/// digest in its header) while small, a table after.
pub struct HashValue(HashRepr);

enum HashRepr {
    /// Fields and values alternating, in insertion order; the header's sum is the digest sum.
    Packed(Packed),
    Table(Box<HashTable>),
}

struct HashTable {
    /// Field → value. Values of up to `table::INLINE_KEY` (22) bytes sit inside their node, as
    /// fields do (`TableKey`): an HSET that replaces a short value allocates nothing.
    table: Table<TableKey>,
    /// Estimated bytes of the elements.
    bytes: usize,
    sum: u64,
}

impl Default for HashValue {
    fn default() -> Self {
        HashValue(HashRepr::Packed(Packed::default()))
    }
}

/// Position of `field` in a packed hash: (field start, value start, value end).
fn packed_hash_find(buf: &[u8], field: &[u8]) -> Option<(usize, usize, usize)> {
    let mut pos = 0;
    while pos < buf.len() {
        let (f, vs) = pack::read(buf, pos);
        let (_, ve) = pack::read(buf, vs);
        if f == field {
            return Some((pos, vs, ve));
        }
        pos = ve;
    }
    None
}

/// The (field, value) pairs of a packed hash.
fn packed_pairs(buf: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut it = pack::Iter::new(buf);
    std::iter::from_fn(move || Some((it.next()?, it.next()?)))
}

impl HashValue {
    pub fn view(&self) -> HashRef<'_> {
        match &self.0 {
            HashRepr::Packed(p) => HashRef::packed(p.as_ref()),
            HashRepr::Table(t) => HashRef {
                repr: HashReprRef::Table(&t.table),
                bytes: t.bytes,
                sum: Some(t.sum),
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

    pub fn get(&self, field: &[u8]) -> Option<&[u8]> {
        self.view().get(field)
    }

    pub fn contains(&self, field: &[u8]) -> bool {
        self.get(field).is_some()
    }

    /// Moves the elements into a table (past `hash-max-listpack-*`; never undone).
    fn convert_to_table(&mut self) {
        let HashRepr::Packed(p) = &self.0 else {
            return;
        };
        let mut table = Table::with_capacity(p.len() + 1);
        let mut bytes = 0;
        for (f, v) in packed_pairs(p.body()) {
            bytes += f.len() + v.len() + ELEM_OVERHEAD;
            table.insert_new(f.into(), v.into());
        }
        let sum = p.sum();
        self.0 = HashRepr::Table(Box::new(HashTable { table, bytes, sum }));
    }

    /// A hash of `pairs` (a field given twice keeps its last value): what inserting them one by
    /// one gives, with the packed form built once at its final size when there are no repeated
    /// fields (loaders).
    pub fn from_pairs<F: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(F, V)]) -> HashValue {
        let max_value = encoding::hash_max_value();
        let packed = pairs.len() <= hash_max_entries()
            && pairs
                .iter()
                .all(|(f, v)| f.as_ref().len() <= max_value && v.as_ref().len() <= max_value);
        let mut h = HashValue::default();
        if packed {
            let bytes = pairs
                .iter()
                .map(|(f, v)| pack::encoded_len(f.as_ref()) + pack::encoded_len(v.as_ref()))
                .sum();
            let mut buf = Packed::start(bytes);
            let mut sum = 0u64;
            for (i, (f, v)) in pairs.iter().enumerate() {
                let (f, v) = (f.as_ref(), v.as_ref());
                if pairs[..i].iter().any(|(g, _)| g.as_ref() == f) {
                    // A repeated field: insert one by one (rare; only a broken source sends it).
                    for (f, v) in pairs {
                        h.insert(f.as_ref(), v.as_ref());
                    }
                    return h;
                }
                pack::put(&mut buf, f);
                pack::put(&mut buf, v);
                sum = sum.wrapping_add(hash_pair(f, v));
            }
            return HashValue(HashRepr::Packed(Packed::finish(buf, pairs.len(), sum)));
        }
        for (f, v) in pairs {
            h.insert(f.as_ref(), v.as_ref());
        }
        h
    }

    /// Sets a field; returns true when the field is new.
    pub fn insert(&mut self, field: &[u8], value: &[u8]) -> bool {
        if let HashRepr::Packed(p) = &mut self.0 {
            let max_value = encoding::hash_max_value();
            let fits = value.len() <= max_value;
            match packed_hash_find(p.body(), field) {
                Some((_, vs, ve)) if fits => {
                    let old = pack::read(p.body(), vs).0;
                    let sum = p
                        .sum()
                        .wrapping_sub(hash_pair(field, old))
                        .wrapping_add(hash_pair(field, value));
                    p.splice(vs, ve, &[value]);
                    p.set_sum(sum);
                    return false;
                }
                None if fits && field.len() <= max_value && p.len() < hash_max_entries() => {
                    let end = p.body().len();
                    p.splice(end, end, &[field, value]);
                    p.set_len(p.len() + 1);
                    p.set_sum(p.sum().wrapping_add(hash_pair(field, value)));
                    return true;
                }
                _ => self.convert_to_table(),
            }
        }
        let HashRepr::Table(t) = &mut self.0 else {
            unreachable!("converted above")
        };
        // One hash for the lookup and, when the field is new, its insertion.
        let hash = crate::table::hash_key(field);
        match t.table.find_hashed(field, hash) {
            Some(i) => {
                let old = t.table.value_at_mut(i);
                t.sum = t
                    .sum
                    .wrapping_sub(hash_pair(field, old))
                    .wrapping_add(hash_pair(field, value));
                t.bytes = t.bytes + value.len() - old.len();
                *old = value.into();
                false
            }
            None => {
                t.sum = t.sum.wrapping_add(hash_pair(field, value));
                t.bytes += field.len() + value.len() + ELEM_OVERHEAD;
                t.table.insert_new_hashed(field.into(), hash, value.into());
                true
            }
        }
    }

    pub fn remove(&mut self, field: &[u8]) -> bool {
        match &mut self.0 {
            HashRepr::Packed(p) => match packed_hash_find(p.body(), field) {
                Some((fs, vs, ve)) => {
                    let sum = p
                        .sum()
                        .wrapping_sub(hash_pair(field, pack::read(p.body(), vs).0));
                    p.splice_raw(fs, ve, &[]);
                    p.set_len(p.len() - 1);
                    p.set_sum(sum);
                    true
                }
                None => false,
            },
            HashRepr::Table(t) => match t.table.remove(field) {
                Some((f, v)) => {
                    t.sum = t.sum.wrapping_sub(hash_pair(&f, &v));
                    t.bytes -= f.len() + v.len() + ELEM_OVERHEAD;
                    true
                }
                None => false,
            },
        }
    }

    /// Fields and values (insertion order while packed; table order after).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.view().iter()
    }

    /// A cursor walk (see [`Table::scan`]); a packed hash is returned whole, with cursor 0, as
    /// Redis returns a listpack.
    pub fn scan(&self, cursor: u64, count: usize, f: impl FnMut(&[u8], &[u8])) -> u64 {
        self.view().scan(cursor, count, f)
    }

    pub fn random(&self, rng: &mut impl rand::Rng) -> Option<(&[u8], &[u8])> {
        self.view().random(rng)
    }

    pub fn digest(&self) -> u64 {
        self.view().digest()
    }
}

/// `hash-max-listpack-entries`, within what a packed form can count.
fn hash_max_entries() -> usize {
    encoding::hash_max_entries().min(pack::MAX_COUNT)
}

/// A read-only view of a hash (see [`ValueRef`]).
#[derive(Clone, Copy)]
pub struct HashRef<'a> {
    repr: HashReprRef<'a>,
    /// Estimated bytes of the table form's elements (the allocation's length while packed).
    bytes: usize,
    /// The sum of the elements' hashes when it is kept (else computed when asked).
    sum: Option<u64>,
}

#[derive(Clone, Copy)]
enum HashReprRef<'a> {
    Packed { buf: &'a [u8], len: usize },
    Table(&'a Table<TableKey>),
}

impl<'a> HashRef<'a> {
    /// The view of a packed hash's bytes (in its own allocation or a compact entry's).
    pub(crate) fn packed(p: PackedRef<'a>) -> Self {
        HashRef {
            repr: HashReprRef::Packed {
                buf: p.body(),
                len: p.len(),
            },
            bytes: p.alloc_len(),
            sum: p.sum(),
        }
    }

    pub fn len(self) -> usize {
        match self.repr {
            HashReprRef::Packed { len, .. } => len,
            HashReprRef::Table(t) => t.len(),
        }
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    pub fn encoding(self) -> Encoding {
        match self.repr {
            HashReprRef::Packed { .. } => Encoding::Listpack,
            HashReprRef::Table(_) => Encoding::HashTable,
        }
    }

    /// Estimated heap bytes of the elements and their bookkeeping. A packed form counts its
    /// allocation (kept at its exact length) and the allocator's chunk cost, so the estimate
    /// depends on the content only, never on the history of edits; a full form its elements and
    /// its box.
    pub(crate) fn mem_bytes(self) -> usize {
        match self.repr {
            HashReprRef::Packed { .. } => self.bytes + PACKED_CHUNK,
            HashReprRef::Table(_) => self.bytes + FULL_HEADER,
        }
    }

    pub fn get(self, field: &[u8]) -> Option<&'a [u8]> {
        match self.repr {
            HashReprRef::Packed { buf, .. } => {
                packed_hash_find(buf, field).map(|(_, vs, _)| pack::read(buf, vs).0)
            }
            HashReprRef::Table(t) => t.get(field).map(|v| v.as_bytes()),
        }
    }

    pub fn contains(self, field: &[u8]) -> bool {
        self.get(field).is_some()
    }

    /// Fields and values (insertion order while packed; table order after).
    pub fn iter(self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + use<'a> {
        match self.repr {
            HashReprRef::Packed { buf, .. } => Either::Left(packed_pairs(buf)),
            HashReprRef::Table(t) => Either::Right(t.iter().map(|(k, v)| (k, v.as_bytes()))),
        }
    }

    /// A cursor walk (see [`Table::scan`]); a packed hash is returned whole, with cursor 0, as
    /// Redis returns a listpack.
    pub fn scan(self, cursor: u64, count: usize, mut f: impl FnMut(&[u8], &[u8])) -> u64 {
        match self.repr {
            HashReprRef::Packed { buf, .. } => {
                packed_pairs(buf).for_each(|(k, v)| f(k, v));
                0
            }
            HashReprRef::Table(t) => t.scan(cursor, count, |k, v| f(k, v)),
        }
    }

    pub fn random(self, rng: &mut impl rand::Rng) -> Option<(&'a [u8], &'a [u8])> {
        match self.repr {
            HashReprRef::Packed { buf, len } => {
                if len == 0 {
                    return None;
                }
                packed_pairs(buf).nth(rng.random_range(0..len))
            }
            HashReprRef::Table(t) => {
                let i = t.random_index(rng)?;
                Some((t.key_at(i), t.value_at(i)))
            }
        }
    }

    /// The sum of the element hashes: kept, or computed.
    fn element_sum(self) -> u64 {
        self.sum.unwrap_or_else(|| {
            self.iter()
                .fold(0u64, |s, (f, v)| s.wrapping_add(hash_pair(f, v)))
        })
    }

    pub fn digest(self) -> u64 {
        let sum = self.element_sum();
        mix64(sum ^ (self.len() as u64).rotate_left(40) ^ 0x3c6e_f372_fe94_f82b)
    }
}

// ---------------------------------------------------------------------------------------------
// Sets

/// A set of byte strings with its digest: an integer set or packed while small (one allocation
/// each, with the count and digest in its header), a table after.
pub struct SetValue(SetRepr);

enum SetRepr {
    /// Integers only (each exactly as written: see [`encoding::canonical_int`]), sorted by
    /// value, each in a slot of the same width (the body's length over the count): its decimal
    /// text right-aligned, spaces before. Fixed slots allow binary search; the text gives back
    /// the member's own bytes.
    Ints(Packed),
    /// Members in insertion order.
    Packed(Packed),
    Table(Box<SetTable>),
}

struct SetTable {
    table: Table<()>,
    /// Estimated bytes of the elements.
    bytes: usize,
    sum: u64,
}

impl Default for SetValue {
    fn default() -> Self {
        SetValue(SetRepr::Ints(Packed::default()))
    }
}

/// The slot width of an integer set (0 when empty).
#[inline]
fn int_width(p: PackedRef<'_>) -> usize {
    p.body().len().checked_div(p.len()).unwrap_or(0)
}

/// The member in an integer-set slot (its text without the padding).
#[inline]
fn int_slot(slot: &[u8]) -> &[u8] {
    let pad = slot.iter().take_while(|&&c| c == b' ').count();
    &slot[pad..]
}

/// Binary search of an integer set: Ok(index) if present, Err(insertion index) if not.
fn int_search(buf: &[u8], width: usize, x: i64) -> Result<usize, usize> {
    if width == 0 {
        return Err(0);
    }
    let n = buf.len() / width;
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let v = encoding::canonical_int(int_slot(&buf[mid * width..(mid + 1) * width]))
            .unwrap_or(i64::MIN);
        match v.cmp(&x) {
            Ordering::Equal => return Ok(mid),
            Ordering::Less => lo = mid + 1,
            Ordering::Greater => hi = mid,
        }
    }
    Err(lo)
}

fn pad_into(buf: &mut Vec<u8>, text: &[u8], width: usize) {
    buf.extend(std::iter::repeat_n(b' ', width - text.len()));
    buf.extend_from_slice(text);
}

/// `set-max-intset-entries` and `set-max-listpack-entries`, within what a packed form counts.
fn set_max_intset_entries() -> usize {
    encoding::set_max_intset_entries().min(pack::MAX_COUNT)
}
fn set_max_listpack_entries() -> usize {
    encoding::set_max_listpack_entries().min(pack::MAX_COUNT)
}

impl SetValue {
    pub fn view(&self) -> SetRef<'_> {
        match &self.0 {
            SetRepr::Ints(p) => SetRef::ints(p.as_ref()),
            SetRepr::Packed(p) => SetRef::packed(p.as_ref()),
            SetRepr::Table(t) => SetRef {
                repr: SetReprRef::Table(&t.table),
                bytes: t.bytes,
                sum: Some(t.sum),
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

    pub fn contains(&self, m: &[u8]) -> bool {
        self.view().contains(m)
    }

    /// Converts an integer set to the packed form or a table, whichever `extra` more members
    /// of at most `longest` bytes allow (Redis's rule; never undone).
    fn convert(&mut self, extra: usize, longest: usize) {
        let SetRepr::Ints(ints) = &self.0 else {
            if let SetRepr::Packed(p) = &self.0 {
                self.0 = SetRepr::Table(Box::new(set_table(pack::Iter::new(p.body()), p, extra)));
            }
            return;
        };
        let width = int_width(ints.as_ref());
        let slots = ints.body().chunks_exact(width.max(1)).map(int_slot);
        let longest = slots
            .clone()
            .map(<[u8]>::len)
            .max()
            .unwrap_or(0)
            .max(longest);
        let count = ints.len();
        if count + extra <= set_max_listpack_entries()
            && longest <= encoding::set_max_listpack_value()
        {
            let mut buf = Packed::start(slots.clone().map(pack::encoded_len).sum());
            for m in slots {
                pack::put(&mut buf, m);
            }
            self.0 = SetRepr::Packed(Packed::finish(buf, count, ints.sum()));
        } else {
            self.0 = SetRepr::Table(Box::new(set_table(slots, ints, extra)));
        }
    }

    /// A set of `members` (duplicates counted once): what adding them one by one gives, built
    /// in one pass when they are all integers that fit an integer set (sorted, slots as wide as
    /// the longest), and added one by one otherwise (loaders).
    pub fn from_members<M: AsRef<[u8]>>(members: &[M]) -> SetValue {
        if members.len() <= set_max_intset_entries() {
            let ints: Option<Vec<(i64, &[u8])>> = members
                .iter()
                .map(|m| encoding::canonical_int(m.as_ref()).map(|x| (x, m.as_ref())))
                .collect();
            if let Some(mut ints) = ints {
                // The canonical text of equal integers is equal: dropping equal values drops
                // duplicate members.
                ints.sort_unstable_by_key(|&(x, _)| x);
                ints.dedup_by_key(|&mut (x, _)| x);
                let width = ints.iter().map(|(_, m)| m.len()).max().unwrap_or(0);
                let mut buf = Packed::start(ints.len() * width);
                let mut sum = 0u64;
                for (_, m) in &ints {
                    pad_into(&mut buf, m, width);
                    sum = sum.wrapping_add(hash_bytes(m));
                }
                return SetValue(SetRepr::Ints(Packed::finish(buf, ints.len(), sum)));
            }
        }
        let mut s = SetValue::default();
        for m in members {
            s.insert(m.as_ref());
        }
        s
    }

    /// Adds a member; returns true when it was new.
    pub fn insert(&mut self, m: &[u8]) -> bool {
        if let SetRepr::Ints(p) = &mut self.0 {
            match encoding::canonical_int(m) {
                Some(x) => {
                    let width = int_width(p.as_ref());
                    match int_search(p.body(), width, x) {
                        Ok(_) => return false,
                        Err(at) => {
                            let len = p.len();
                            if len < set_max_intset_entries() {
                                if m.len() > width {
                                    // Widen every slot (Redis upgrades an intset's integer size).
                                    let mut wide = Packed::start((len + 1) * m.len());
                                    for slot in p.body().chunks_exact(width.max(1)) {
                                        pad_into(&mut wide, int_slot(slot), m.len());
                                    }
                                    *p = Packed::finish(wide, len, p.sum());
                                }
                                let width = m.len().max(width);
                                let mut slot = Vec::with_capacity(width);
                                pad_into(&mut slot, m, width);
                                p.splice_raw(at * width, at * width, &slot);
                                p.set_len(len + 1);
                                p.set_sum(p.sum().wrapping_add(hash_bytes(m)));
                                return true;
                            }
                            self.convert(1, m.len());
                        }
                    }
                }
                None => self.convert(1, m.len()),
            }
        }
        if let SetRepr::Packed(p) = &mut self.0 {
            if pack::Iter::new(p.body()).any(|e| e == m) {
                return false;
            }
            if p.len() < set_max_listpack_entries() && m.len() <= encoding::set_max_listpack_value()
            {
                p.put(m);
                p.set_len(p.len() + 1);
                p.set_sum(p.sum().wrapping_add(hash_bytes(m)));
                return true;
            }
            self.convert(1, m.len());
        }
        let SetRepr::Table(t) = &mut self.0 else {
            unreachable!("converted above")
        };
        // One hash for the lookup and the insertion.
        let hash = crate::table::hash_key(m);
        if t.table.find_hashed(m, hash).is_some() {
            return false;
        }
        t.sum = t.sum.wrapping_add(hash_bytes(m));
        t.bytes += m.len() + ELEM_OVERHEAD;
        t.table.insert_new_hashed(m.into(), hash, ());
        true
    }

    pub fn remove(&mut self, m: &[u8]) -> bool {
        let p = match &mut self.0 {
            SetRepr::Ints(p) => {
                let width = int_width(p.as_ref());
                match encoding::canonical_int(m).map(|x| int_search(p.body(), width, x)) {
                    Some(Ok(i)) => p.splice_raw(i * width, (i + 1) * width, &[]),
                    _ => return false,
                }
                p
            }
            SetRepr::Packed(p) => {
                let mut it = pack::Iter::new(p.body());
                let found = loop {
                    let start = it.pos();
                    match it.next() {
                        Some(e) if e == m => break Some((start, it.pos())),
                        Some(_) => {}
                        None => break None,
                    }
                };
                let Some((from, to)) = found else {
                    return false;
                };
                p.splice_raw(from, to, &[]);
                p
            }
            SetRepr::Table(t) => {
                if t.table.remove(m).is_none() {
                    return false;
                }
                t.bytes -= m.len() + ELEM_OVERHEAD;
                t.sum = t.sum.wrapping_sub(hash_bytes(m));
                return true;
            }
        };
        p.set_len(p.len() - 1);
        p.set_sum(p.sum().wrapping_sub(hash_bytes(m)));
        true
    }

    /// Members: ascending integers for an integer set, insertion order while packed.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.view().iter()
    }

    /// A cursor walk (see [`Table::scan`]); a compact set is returned whole, with cursor 0.
    pub fn scan(&self, cursor: u64, count: usize, f: impl FnMut(&[u8])) -> u64 {
        self.view().scan(cursor, count, f)
    }

    pub fn random(&self, rng: &mut impl rand::Rng) -> Option<&[u8]> {
        self.view().random(rng)
    }

    /// Removes and returns a random member.
    pub fn pop_random(&mut self, rng: &mut impl rand::Rng) -> Option<Box<[u8]>> {
        let m: Box<[u8]> = match &mut self.0 {
            SetRepr::Table(t) => {
                let i = t.table.random_index(rng)?;
                let (k, ()) = t.table.remove_at(i);
                t.sum = t.sum.wrapping_sub(hash_bytes(&k));
                t.bytes -= k.len() + ELEM_OVERHEAD;
                return Some(k.into());
            }
            _ => self.random(rng)?.into(),
        };
        self.remove(&m);
        Some(m)
    }

    pub fn digest(&self) -> u64 {
        self.view().digest()
    }
}

/// The table form of a compact set's members, with room for `extra` more.
fn set_table<'a>(members: impl Iterator<Item = &'a [u8]>, p: &Packed, extra: usize) -> SetTable {
    let mut table = Table::with_capacity(p.len() + extra);
    let mut bytes = 0;
    for m in members {
        bytes += m.len() + ELEM_OVERHEAD;
        table.insert_new(m.into(), ());
    }
    SetTable {
        table,
        bytes,
        sum: p.sum(),
    }
}

/// A read-only view of a set (see [`ValueRef`]).
#[derive(Clone, Copy)]
pub struct SetRef<'a> {
    repr: SetReprRef<'a>,
    /// Estimated bytes of the table form's elements (the allocation's length while packed).
    bytes: usize,
    /// The sum of the members' hashes when it is kept (else computed when asked).
    sum: Option<u64>,
}

#[derive(Clone, Copy)]
enum SetReprRef<'a> {
    Ints { buf: &'a [u8], width: usize },
    Packed { buf: &'a [u8], len: usize },
    Table(&'a Table<()>),
}

impl<'a> SetRef<'a> {
    /// The view of an integer set's bytes (in its own allocation or a compact entry's).
    pub(crate) fn ints(p: PackedRef<'a>) -> Self {
        SetRef {
            repr: SetReprRef::Ints {
                buf: p.body(),
                width: int_width(p),
            },
            bytes: p.alloc_len(),
            sum: p.sum(),
        }
    }

    /// The view of a packed set's bytes (in its own allocation or a compact entry's).
    pub(crate) fn packed(p: PackedRef<'a>) -> Self {
        SetRef {
            repr: SetReprRef::Packed {
                buf: p.body(),
                len: p.len(),
            },
            bytes: p.alloc_len(),
            sum: p.sum(),
        }
    }

    pub fn len(self) -> usize {
        match self.repr {
            SetReprRef::Ints { buf, width } => buf.len().checked_div(width).unwrap_or(0),
            SetReprRef::Packed { len, .. } => len,
            SetReprRef::Table(t) => t.len(),
        }
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    pub fn encoding(self) -> Encoding {
        match self.repr {
            SetReprRef::Ints { .. } => Encoding::Intset,
            SetReprRef::Packed { .. } => Encoding::Listpack,
            SetReprRef::Table(_) => Encoding::HashTable,
        }
    }

    /// Estimated heap bytes (see [`HashRef::mem_bytes`]).
    pub(crate) fn mem_bytes(self) -> usize {
        match self.repr {
            SetReprRef::Ints { .. } | SetReprRef::Packed { .. } => self.bytes + PACKED_CHUNK,
            SetReprRef::Table(_) => self.bytes + FULL_HEADER,
        }
    }

    pub fn contains(self, m: &[u8]) -> bool {
        match self.repr {
            SetReprRef::Ints { buf, width } => {
                encoding::canonical_int(m).is_some_and(|x| int_search(buf, width, x).is_ok())
            }
            SetReprRef::Packed { buf, .. } => pack::Iter::new(buf).any(|e| e == m),
            SetReprRef::Table(t) => t.contains(m),
        }
    }

    /// Members: ascending integers for an integer set, insertion order while packed.
    pub fn iter(self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        match self.repr {
            SetReprRef::Ints { buf, width } => {
                Either::Left(Either::Left(buf.chunks_exact(width.max(1)).map(int_slot)))
            }
            SetReprRef::Packed { buf, .. } => Either::Left(Either::Right(pack::Iter::new(buf))),
            SetReprRef::Table(t) => Either::Right(t.iter().map(|(k, ())| k)),
        }
    }

    /// A cursor walk (see [`Table::scan`]); a compact set is returned whole, with cursor 0.
    pub fn scan(self, cursor: u64, count: usize, mut f: impl FnMut(&[u8])) -> u64 {
        match self.repr {
            SetReprRef::Table(t) => t.scan(cursor, count, |k, ()| f(k)),
            _ => {
                self.iter().for_each(f);
                0
            }
        }
    }

    pub fn random(self, rng: &mut impl rand::Rng) -> Option<&'a [u8]> {
        match self.repr {
            SetReprRef::Table(t) => {
                let i = t.random_index(rng)?;
                Some(t.key_at(i))
            }
            _ => {
                let n = self.len();
                if n == 0 {
                    return None;
                }
                self.iter().nth(rng.random_range(0..n))
            }
        }
    }

    /// The sum of the member hashes: kept, or computed.
    fn element_sum(self) -> u64 {
        self.sum
            .unwrap_or_else(|| self.iter().fold(0u64, |s, m| s.wrapping_add(hash_bytes(m))))
    }

    pub fn digest(self) -> u64 {
        let sum = self.element_sum();
        mix64(sum ^ (self.len() as u64).rotate_left(40) ^ 0xa54f_f53a_5f1d_36f1)
    }
}

// ---------------------------------------------------------------------------------------------
// Sorted sets

/// A score with a total order (NaN is never stored; commands refuse it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score(pub f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        // -0.0 and 0.0 compare equal, as in Redis.
        self.0.partial_cmp(&other.0).unwrap_or(Ordering::Equal)
    }
}

/// A sorted set: packed (`listpack`, ordered by (score, member); one allocation with the count
/// and digest in its header) while small; past `zset-max-listpack-*`, a member → score table
/// plus an order-statistics B-tree ([`OrdTree`]), so ranks and range starts are found in
/// O(log n). OBJECT ENCODING calls the full form `skiplist`, Redis's name for it.
pub struct ZSetValue(ZRepr);

enum ZRepr {
    /// (member, score as [`score_bytes`] writes it) pairs in (score, member) order.
    Packed(Packed),
    Full(Box<ZFull>),
}

#[derive(Default)]
struct ZFull {
    dict: Table<f64>,
    tree: OrdTree,
    /// Estimated bytes of the elements (see [`zset_element_bytes`]).
    bytes: usize,
    sum: u64,
}

impl Default for ZSetValue {
    fn default() -> Self {
        ZSetValue(ZRepr::Packed(Packed::default()))
    }
}

/// Largest magnitude of an integer score kept in fewer than 8 bytes: every integer up to it is
/// an exact `f64`, so the short form gives back the very score that was written.
const SHORT_SCORE_MAX: f64 = (1u64 << 53) as f64;

/// A packed sorted set's score: an integer (most scores are: counters, timestamps, ranks) in the
/// fewest little-endian two's-complement bytes that hold it (0 to 7: a 3-byte score where the
/// `f64` took 8), anything else (fractions, infinities, -0, integers past 2^53) as the `f64`'s
/// 8 bytes. The length tells the forms apart. Returns the bytes and how many are used.
fn score_bytes(score: f64) -> ([u8; 8], usize) {
    let is_short_int = score.fract() == 0.0
        && score.abs() < SHORT_SCORE_MAX
        && !(score == 0.0 && score.is_sign_negative());
    if !is_short_int {
        return (score.to_le_bytes(), 8);
    }
    let i = score as i64;
    // Bytes beyond the sign: the fewest n with i == sign-extension of its low n bytes.
    let significant = 64 - (if i < 0 { !i } else { i }).leading_zeros() as usize;
    let n = if i == 0 { 0 } else { significant / 8 + 1 };
    (i.to_le_bytes(), n.min(7))
}

/// The score [`score_bytes`] wrote.
#[inline]
fn score_of(bytes: &[u8]) -> f64 {
    if let Ok(b) = <[u8; 8]>::try_from(bytes) {
        return f64::from_le_bytes(b);
    }
    let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
    let mut b = [if negative { 0xff } else { 0 }; 8];
    let n = bytes.len().min(7);
    b[..n].copy_from_slice(&bytes[..n]);
    i64::from_le_bytes(b) as f64
}

/// Walks a packed sorted set: (member, score, start, end) of each element.
fn packed_scored(buf: &[u8]) -> impl Iterator<Item = (&[u8], f64, usize, usize)> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= buf.len() {
            return None;
        }
        let start = pos;
        let (m, next) = pack::read(buf, pos);
        let (s, next) = pack::read(buf, next);
        pos = next;
        Some((m, score_of(s), start, next))
    })
}

#[inline]
fn cmp_scored(s1: f64, m1: &[u8], s2: f64, m2: &[u8]) -> Ordering {
    Score(s1).cmp(&Score(s2)).then_with(|| m1.cmp(m2))
}

/// The estimated bytes one element of a full sorted set takes: its member → score table entry
/// (a set's member: the member's length stands for the table's slack, unless the member is too
/// long for the node and has an allocation of its own) and its place in the tree (a share of
/// the nodes, plus the member's allocation when it is too long to sit in the leaf). Measured
/// against the RSS growth of one set of 1M 13-byte members (estimate/RSS 1.06) and of 300k
/// 47-byte members (0.95).
fn zset_element_bytes(m: &[u8]) -> usize {
    let in_table = if TableKey::is_inline(m) {
        m.len()
    } else {
        ordtree::member_heap_bytes(m.len())
    };
    in_table
        + ELEM_OVERHEAD
        + OrdTree::node_bytes_per_element()
        + ordtree::member_heap_bytes(m.len())
}

/// `zset-max-listpack-entries`, within what a packed form counts.
fn zset_max_entries() -> usize {
    encoding::zset_max_entries().min(pack::MAX_COUNT)
}

impl ZSetValue {
    pub fn view(&self) -> ZSetRef<'_> {
        match &self.0 {
            ZRepr::Packed(p) => ZSetRef::packed(p.as_ref()),
            ZRepr::Full(f) => ZSetRef {
                repr: ZReprRef::Full(f),
                bytes: f.bytes,
                sum: Some(f.sum),
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

    pub fn score(&self, m: &[u8]) -> Option<f64> {
        self.view().score(m)
    }

    /// Moves the elements into the table + tree form (never undone).
    fn convert_to_full(&mut self) {
        let ZRepr::Packed(p) = &self.0 else {
            return;
        };
        let mut full = ZFull {
            dict: Table::with_capacity(p.len() + 1),
            tree: OrdTree::new(),
            bytes: 0,
            sum: p.sum(),
        };
        for (m, s, ..) in packed_scored(p.body()) {
            full.dict.insert_new(m.into(), s);
            full.tree.insert(s, m);
            full.bytes += zset_element_bytes(m);
        }
        self.0 = ZRepr::Full(Box::new(full));
    }

    /// A sorted set of `items` (a member given twice keeps its last score): what inserting them
    /// one by one gives, built in one pass (sorted, then packed once) when it stays packed
    /// (loaders; an insert into the packed form moves the elements after it).
    pub fn from_scored<M: AsRef<[u8]>>(items: &[(M, f64)]) -> ZSetValue {
        let packed = items.len() <= zset_max_entries()
            && items
                .iter()
                .all(|(m, s)| m.as_ref().len() <= encoding::zset_max_value() && !s.is_nan());
        if !packed {
            let mut z = ZSetValue::default();
            for (m, s) in items {
                z.insert(m.as_ref(), *s);
            }
            return z;
        }
        // The last occurrence of each member (at most zset-max-listpack-entries of them).
        let mut last: Vec<(&[u8], f64)> = Vec::with_capacity(items.len());
        for (i, (m, s)) in items.iter().enumerate() {
            let m = m.as_ref();
            if !items[i + 1..].iter().any(|(later, _)| later.as_ref() == m) {
                last.push((m, *s));
            }
        }
        last.sort_by(|a, b| cmp_scored(a.1, a.0, b.1, b.0));
        let bytes = last
            .iter()
            .map(|(m, s)| pack::encoded_len(m) + 1 + score_bytes(*s).1)
            .sum();
        let mut buf = Packed::start(bytes);
        let mut sum = 0u64;
        for (m, s) in &last {
            pack::put(&mut buf, m);
            let (score, n) = score_bytes(*s);
            pack::put(&mut buf, &score[..n]);
            sum = sum.wrapping_add(hash_scored(m, *s));
        }
        ZSetValue(ZRepr::Packed(Packed::finish(buf, last.len(), sum)))
    }

    /// Sets a member's score; returns the previous score.
    pub fn insert(&mut self, m: &[u8], score: f64) -> Option<f64> {
        if let ZRepr::Packed(p) = &mut self.0 {
            let found = packed_scored(p.body())
                .find(|(x, ..)| *x == m)
                .map(|(_, s, from, to)| (s, from, to));
            if let Some((o, ..)) = found
                && o.to_bits() == score.to_bits()
            {
                return Some(o);
            }
            let size_after = p.len() + usize::from(found.is_none());
            if size_after <= zset_max_entries() && m.len() <= encoding::zset_max_value() {
                let mut sum = p.sum();
                if let Some((o, from, to)) = found {
                    p.splice_raw(from, to, &[]);
                    sum = sum.wrapping_sub(hash_scored(m, o));
                } else {
                    p.set_len(size_after);
                }
                let at = packed_scored(p.body())
                    .find(|(x, s, ..)| cmp_scored(*s, x, score, m) == Ordering::Greater)
                    .map_or(p.body().len(), |(.., from, _)| from);
                let (bytes, n) = score_bytes(score);
                p.splice(at, at, &[m, &bytes[..n]]);
                p.set_sum(sum.wrapping_add(hash_scored(m, score)));
                return found.map(|(o, ..)| o);
            }
            self.convert_to_full();
        }
        let ZRepr::Full(full) = &mut self.0 else {
            unreachable!("converted above")
        };
        // One hash and one lookup for both the old score and its replacement.
        let hash = crate::table::hash_key(m);
        let old = match full.dict.find_hashed(m, hash) {
            Some(i) => {
                let slot = full.dict.value_at_mut(i);
                let o = *slot;
                if o.to_bits() == score.to_bits() {
                    return Some(o);
                }
                *slot = score;
                full.tree.remove(o, m);
                full.sum = full.sum.wrapping_sub(hash_scored(m, o));
                Some(o)
            }
            None => {
                full.dict.insert_new_hashed(m.into(), hash, score);
                full.bytes += zset_element_bytes(m);
                None
            }
        };
        full.tree.insert(score, m);
        full.sum = full.sum.wrapping_add(hash_scored(m, score));
        old
    }

    pub fn remove(&mut self, m: &[u8]) -> Option<f64> {
        match &mut self.0 {
            ZRepr::Packed(p) => {
                let (_, score, from, to) = packed_scored(p.body()).find(|(x, ..)| *x == m)?;
                p.splice_raw(from, to, &[]);
                p.set_len(p.len() - 1);
                p.set_sum(p.sum().wrapping_sub(hash_scored(m, score)));
                Some(score)
            }
            ZRepr::Full(full) => {
                let (_, score) = full.dict.remove(m)?;
                full.tree.remove(score, m);
                full.bytes -= zset_element_bytes(m);
                full.sum = full.sum.wrapping_sub(hash_scored(m, score));
                Some(score)
            }
        }
    }

    /// Removes the lowest (or, with `max`, the highest) element, first handing it to `f` where
    /// it lies (ZPOPMIN/ZPOPMAX write it into the reply: no copy of the member, no list of
    /// what was popped). None when the set is empty.
    pub fn pop_with<R>(&mut self, max: bool, f: impl FnOnce(&[u8], f64) -> R) -> Option<R> {
        match &mut self.0 {
            ZRepr::Packed(p) => {
                let picked = if max {
                    packed_scored(p.body()).last()
                } else {
                    packed_scored(p.body()).next()
                };
                let (m, score, from, to) = picked?;
                let r = f(m, score);
                let h = hash_scored(m, score);
                p.splice_raw(from, to, &[]);
                p.set_len(p.len() - 1);
                p.set_sum(p.sum().wrapping_sub(h));
                Some(r)
            }
            ZRepr::Full(full) => {
                let rank = if max {
                    full.tree.len().checked_sub(1)?
                } else {
                    0
                };
                let (score, m) = full.tree.get(rank)?;
                let r = f(m, score);
                // The table's own copy of the member, taken out, names it to the tree.
                let (key, _) = full
                    .dict
                    .remove(m)
                    .expect("a sorted set's tree and table hold the same members");
                full.tree.remove(score, &key);
                full.bytes -= zset_element_bytes(&key);
                full.sum = full.sum.wrapping_sub(hash_scored(&key, score));
                Some(r)
            }
        }
    }

    /// Members with 0-based ranks in `[start, end)`, ascending (reverse the iterator for
    /// descending). O(log n + m) past the packed form.
    pub fn range_by_rank(
        &self,
        start: usize,
        end: usize,
    ) -> impl DoubleEndedIterator<Item = (&[u8], f64)> + ExactSizeIterator {
        self.view().range_by_rank(start, end)
    }

    /// Members in order of (score, member).
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&[u8], f64)> + ExactSizeIterator {
        self.view().iter()
    }

    /// The member at a 0-based rank. O(log n) past the packed form.
    pub fn get_by_rank(&self, rank: usize) -> Option<(&[u8], f64)> {
        self.view().get_by_rank(rank)
    }

    /// See [`ZSetRef::count_before`].
    pub fn count_before(&self, before: impl FnMut(f64, &[u8]) -> bool) -> usize {
        self.view().count_before(before)
    }

    /// Rank bounds `[start, end)` of the members whose score lies within the bounds.
    pub fn score_rank_range(&self, min: Bound<f64>, max: Bound<f64>) -> (usize, usize) {
        self.view().score_rank_range(min, max)
    }

    /// Members whose score lies within the bounds, in ascending order. O(log n + m).
    pub fn range_by_score(
        &self,
        min: Bound<f64>,
        max: Bound<f64>,
    ) -> impl DoubleEndedIterator<Item = (&[u8], f64)> + ExactSizeIterator {
        self.view().range_by_score(min, max)
    }

    /// 0-based rank of a member in ascending order. O(log n).
    pub fn rank(&self, m: &[u8]) -> Option<usize> {
        self.view().rank(m)
    }

    /// A cursor walk (see [`Table::scan`]); a packed set is returned whole, with cursor 0.
    pub fn scan(&self, cursor: u64, count: usize, f: impl FnMut(&[u8], f64)) -> u64 {
        self.view().scan(cursor, count, f)
    }

    pub fn digest(&self) -> u64 {
        self.view().digest()
    }
}

/// A read-only view of a sorted set (see [`ValueRef`]).
#[derive(Clone, Copy)]
pub struct ZSetRef<'a> {
    repr: ZReprRef<'a>,
    /// Estimated bytes of the full form's elements (the allocation's length while packed).
    bytes: usize,
    /// The sum of the elements' hashes when it is kept (else computed when asked).
    sum: Option<u64>,
}

#[derive(Clone, Copy)]
enum ZReprRef<'a> {
    Packed { buf: &'a [u8], len: usize },
    Full(&'a ZFull),
}

impl<'a> ZSetRef<'a> {
    /// The view of a packed sorted set's bytes (in its own allocation or a compact entry's).
    pub(crate) fn packed(p: PackedRef<'a>) -> Self {
        ZSetRef {
            repr: ZReprRef::Packed {
                buf: p.body(),
                len: p.len(),
            },
            bytes: p.alloc_len(),
            sum: p.sum(),
        }
    }

    pub fn len(self) -> usize {
        match self.repr {
            ZReprRef::Packed { len, .. } => len,
            ZReprRef::Full(f) => f.dict.len(),
        }
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    pub fn encoding(self) -> Encoding {
        match self.repr {
            ZReprRef::Packed { .. } => Encoding::Listpack,
            ZReprRef::Full(_) => Encoding::Skiplist,
        }
    }

    /// Estimated heap bytes (see [`HashRef::mem_bytes`]); the full form's box also holds the
    /// tree's arenas and root leaf.
    pub(crate) fn mem_bytes(self) -> usize {
        match self.repr {
            ZReprRef::Packed { .. } => self.bytes + PACKED_CHUNK,
            ZReprRef::Full(_) => self.bytes + FULL_HEADER + 64,
        }
    }

    pub fn score(self, m: &[u8]) -> Option<f64> {
        match self.repr {
            ZReprRef::Packed { buf, .. } => packed_scored(buf)
                .find(|(x, ..)| *x == m)
                .map(|(_, s, ..)| s),
            ZReprRef::Full(f) => f.dict.get(m).copied(),
        }
    }

    /// Members with 0-based ranks in `[start, end)`, ascending (reverse the iterator for
    /// descending). O(log n + m) past the packed form.
    pub fn range_by_rank(
        self,
        start: usize,
        end: usize,
    ) -> impl DoubleEndedIterator<Item = (&'a [u8], f64)> + ExactSizeIterator + use<'a> {
        match self.repr {
            ZReprRef::Packed { buf, .. } => Either::Left(
                packed_scored(buf)
                    .skip(start)
                    .take(end.saturating_sub(start))
                    .map(|(m, s, ..)| (m, s))
                    .collect::<Vec<_>>()
                    .into_iter(),
            ),
            ZReprRef::Full(f) => Either::Right(f.tree.range(start, end)),
        }
    }

    /// Members in order of (score, member).
    pub fn iter(
        self,
    ) -> impl DoubleEndedIterator<Item = (&'a [u8], f64)> + ExactSizeIterator + use<'a> {
        self.range_by_rank(0, usize::MAX)
    }

    /// The member at a 0-based rank. O(log n) past the packed form.
    pub fn get_by_rank(self, rank: usize) -> Option<(&'a [u8], f64)> {
        match self.repr {
            ZReprRef::Packed { buf, .. } => packed_scored(buf).nth(rank).map(|(m, s, ..)| (m, s)),
            ZReprRef::Full(f) => f.tree.get(rank).map(|(s, m)| (m, s)),
        }
    }

    /// How many leading members (in (score, member) order) satisfy `before`, which must hold for
    /// a prefix of the order and not after it (a range bound). O(log n) past the packed form.
    pub fn count_before(self, mut before: impl FnMut(f64, &[u8]) -> bool) -> usize {
        match self.repr {
            ZReprRef::Packed { buf, .. } => packed_scored(buf)
                .take_while(|(m, s, ..)| before(*s, m))
                .count(),
            ZReprRef::Full(f) => f.tree.count_before(before),
        }
    }

    /// Rank bounds `[start, end)` of the members whose score lies within the bounds.
    pub fn score_rank_range(self, min: Bound<f64>, max: Bound<f64>) -> (usize, usize) {
        let start = self.count_before(|s, _| match min {
            Bound::Included(b) => Score(s) < Score(b),
            Bound::Excluded(b) => Score(s) <= Score(b),
            Bound::Unbounded => false,
        });
        let end = self.count_before(|s, _| match max {
            Bound::Included(b) => Score(s) <= Score(b),
            Bound::Excluded(b) => Score(s) < Score(b),
            Bound::Unbounded => true,
        });
        (start, end.max(start))
    }

    /// Members whose score lies within the bounds, in ascending order. O(log n + m).
    pub fn range_by_score(
        self,
        min: Bound<f64>,
        max: Bound<f64>,
    ) -> impl DoubleEndedIterator<Item = (&'a [u8], f64)> + ExactSizeIterator + use<'a> {
        let (start, end) = self.score_rank_range(min, max);
        self.range_by_rank(start, end)
    }

    /// 0-based rank of a member in ascending order. O(log n).
    pub fn rank(self, m: &[u8]) -> Option<usize> {
        match self.repr {
            ZReprRef::Packed { buf, .. } => packed_scored(buf).position(|(x, ..)| x == m),
            ZReprRef::Full(f) => {
                let score = *f.dict.get(m)?;
                f.tree.rank(score, m)
            }
        }
    }

    /// A cursor walk (see [`Table::scan`]); a packed set is returned whole, with cursor 0.
    pub fn scan(self, cursor: u64, count: usize, mut f: impl FnMut(&[u8], f64)) -> u64 {
        match self.repr {
            ZReprRef::Packed { buf, .. } => {
                packed_scored(buf).for_each(|(m, s, ..)| f(m, s));
                0
            }
            ZReprRef::Full(full) => full.dict.scan(cursor, count, |k, s| f(k, *s)),
        }
    }

    /// The sum of the element hashes: kept, or computed.
    fn element_sum(self) -> u64 {
        self.sum.unwrap_or_else(|| {
            self.iter()
                .fold(0u64, |s, (m, sc)| s.wrapping_add(hash_scored(m, sc)))
        })
    }

    pub fn digest(self) -> u64 {
        let sum = self.element_sum();
        mix64(sum ^ (self.len() as u64).rotate_left(40) ^ 0x1f83_d9ab_fb41_bd6b)
    }
}

/// One of two iterators (the forms of a value walk differently).
pub enum Either<L, R> {
    Left(L),
    Right(R),
}

impl<T, L: Iterator<Item = T>, R: Iterator<Item = T>> Iterator for Either<L, R> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        match self {
            Either::Left(l) => l.next(),
            Either::Right(r) => r.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Either::Left(l) => l.size_hint(),
            Either::Right(r) => r.size_hint(),
        }
    }
}

impl<T, L, R> DoubleEndedIterator for Either<L, R>
where
    L: DoubleEndedIterator<Item = T>,
    R: DoubleEndedIterator<Item = T>,
{
    fn next_back(&mut self) -> Option<T> {
        match self {
            Either::Left(l) => l.next_back(),
            Either::Right(r) => r.next_back(),
        }
    }
}

impl<T, L, R> ExactSizeIterator for Either<L, R>
where
    L: ExactSizeIterator<Item = T>,
    R: ExactSizeIterator<Item = T>,
{
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn packed_scores_round_trip_and_integers_are_short() {
        let mut scores = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            127.0,
            128.0,
            -128.0,
            -129.0,
            200_004.0,
            1.5,
            -2.25,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            f64::MAX,
            SHORT_SCORE_MAX,
            -SHORT_SCORE_MAX,
            SHORT_SCORE_MAX - 1.0,
            1.0 - SHORT_SCORE_MAX,
        ];
        for shift in 0..64 {
            let p = (1u64 << shift) as f64;
            scores.extend([p, -p, p - 1.0, 1.0 - p, p + 1.0]);
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..10_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let bits = f64::from_bits(x);
            if !bits.is_nan() {
                scores.push(bits);
            }
            scores.push((x as i64 >> (x % 60)) as f64);
        }
        for s in scores {
            let (bytes, n) = score_bytes(s);
            let back = score_of(&bytes[..n]);
            assert_eq!(back.to_bits(), s.to_bits(), "{s} through {n} bytes");
            let short =
                s.fract() == 0.0 && s.abs() < SHORT_SCORE_MAX && s.to_bits() != (-0.0f64).to_bits();
            assert_eq!(n < 8, short, "{s}");
        }
        assert_eq!(score_bytes(0.0).1, 0);
        assert_eq!(score_bytes(-1.0).1, 1);
        assert_eq!(score_bytes(127.0).1, 1);
        assert_eq!(score_bytes(128.0).1, 2);
        assert_eq!(score_bytes(200_004.0).1, 3);
        assert_eq!(score_bytes(SHORT_SCORE_MAX - 1.0).1, 7);
    }

    /// Members drawn from a pool larger than the packed limits, some longer than the value
    /// limit, some integers: every form and every conversion is reached.
    fn member(k: u16) -> Vec<u8> {
        match k % 4 {
            0 | 1 => (i64::from(k) - 300).to_string().into_bytes(),
            2 => format!("m{k}").into_bytes(),
            _ if k % 37 == 3 => vec![b'x'; 70 + usize::from(k % 5)],
            _ => format!("{k:05}").into_bytes(),
        }
    }

    proptest::proptest! {
        /// The loaders' one-pass constructors give exactly what element-by-element building
        /// gives: same encoding, same elements in the same order, same digest. Elements come
        /// from small alphabets so that duplicates, integers (canonical or not, like "007"),
        /// -0.0 against 0.0 and every form (intset, packed, table) all occur.
        #[test]
        fn bulk_constructors_equal_building_one_by_one(
            picks in proptest::collection::vec((0u8..40, 0u8..6), 0..200),
        ) {
            let elem = |p: u8| -> Vec<u8> {
                match p % 4 {
                    0 => (i64::from(p) * 1000 - 7000).to_string().into_bytes(),
                    1 => format!("m{p}").into_bytes(),
                    2 if p == 2 => b"007".to_vec(),
                    2 => "x".repeat(usize::from(p) * 3).into_bytes(),
                    _ => p.to_string().into_bytes(),
                }
            };
            let score = |q: u8| [0.0, -0.0, 1.5, -3.0, 1e300, f64::INFINITY][usize::from(q)];
            let elems: Vec<Vec<u8>> = picks.iter().map(|&(p, _)| elem(p)).collect();
            let pairs: Vec<(Vec<u8>, Vec<u8>)> =
                picks.iter().map(|&(p, q)| (elem(p), elem(q.wrapping_mul(7)))).collect();
            let scored: Vec<(Vec<u8>, f64)> =
                picks.iter().map(|&(p, q)| (elem(p), score(q))).collect();
            for n in [0, 1, 3, 8, 40, elems.len()] {
                let n = n.min(elems.len());
                let mut l = ListValue::default();
                elems[..n].iter().for_each(|e| l.push_back(e));
                let bulk = ListValue::from_elements(&elems[..n]);
                proptest::prop_assert_eq!(bulk.encoding(), l.encoding());
                proptest::prop_assert!(bulk.iter().eq(l.iter()));
                proptest::prop_assert_eq!(bulk.digest(), l.digest());
                let mut s = SetValue::default();
                elems[..n].iter().for_each(|e| { s.insert(e); });
                let bulk = SetValue::from_members(&elems[..n]);
                proptest::prop_assert_eq!(bulk.encoding(), s.encoding());
                proptest::prop_assert!(bulk.iter().eq(s.iter()));
                proptest::prop_assert_eq!(bulk.digest(), s.digest());
                let mut h = HashValue::default();
                pairs[..n].iter().for_each(|(f, v)| { h.insert(f, v); });
                let bulk = HashValue::from_pairs(&pairs[..n]);
                proptest::prop_assert_eq!(bulk.encoding(), h.encoding());
                proptest::prop_assert!(bulk.iter().eq(h.iter()));
                proptest::prop_assert_eq!(bulk.digest(), h.digest());
                let mut z = ZSetValue::default();
                scored[..n].iter().for_each(|(m, sc)| { z.insert(m, *sc); });
                let bulk = ZSetValue::from_scored(&scored[..n]);
                proptest::prop_assert_eq!(bulk.encoding(), z.encoding());
                let a: Vec<(Vec<u8>, u64)> =
                    bulk.iter().map(|(m, s)| (m.to_vec(), s.to_bits())).collect();
                let b: Vec<(Vec<u8>, u64)> =
                    z.iter().map(|(m, s)| (m.to_vec(), s.to_bits())).collect();
                proptest::prop_assert_eq!(a, b);
                proptest::prop_assert_eq!(bulk.digest(), z.digest());
            }
        }
    }

    proptest::proptest! {
        /// Hashes against a map, through packed and table forms: lookups, iteration, removal,
        /// and a digest equal to that of the same content built afresh.
        #[test]
        fn hash_matches_model(ops in proptest::collection::vec((0u8..4, 0u16..400, 0u8..3), 0..700)) {
            let mut h = HashValue::default();
            let mut m: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let mut went_table = false;
            for (op, k, v) in ops {
                let f = member(k);
                let val = if v == 2 { vec![b'v'; 80] } else { format!("v{v}").into_bytes() };
                match op {
                    0 => { proptest::prop_assert_eq!(h.remove(&f), m.remove(&f).is_some()); }
                    _ => { proptest::prop_assert_eq!(h.insert(&f, &val), m.insert(f.clone(), val.clone()).is_none()); }
                }
                went_table |= h.encoding() == Encoding::HashTable;
                proptest::prop_assert!(!went_table || h.encoding() == Encoding::HashTable, "never back");
                proptest::prop_assert_eq!(h.len(), m.len());
            }
            for (f, v) in &m {
                proptest::prop_assert_eq!(h.get(f), Some(&v[..]));
            }
            let got: BTreeMap<Vec<u8>, Vec<u8>> = h.iter().map(|(f, v)| (f.to_vec(), v.to_vec())).collect();
            proptest::prop_assert_eq!(&got, &m);
            let mut scanned = BTreeMap::new();
            let mut c = 0;
            loop {
                c = h.scan(c, 7, |f, v| { scanned.insert(f.to_vec(), v.to_vec()); });
                if c == 0 { break; }
            }
            proptest::prop_assert_eq!(&scanned, &m);
            let mut fresh = HashValue::default();
            for (f, v) in &m {
                fresh.insert(f, v);
            }
            proptest::prop_assert_eq!(h.digest(), fresh.digest());
            // The way back from a table: a reload (snapshot, RDB, DUMP/RESTORE) builds the
            // content afresh, packed again when it fits, with the same digest and estimate.
            let pairs: Vec<(&[u8], &[u8])> = h.iter().collect();
            let reloaded = HashValue::from_pairs(&pairs);
            proptest::prop_assert_eq!(reloaded.digest(), h.digest());
            proptest::prop_assert_eq!(reloaded.encoding(), fresh.encoding());
            proptest::prop_assert_eq!(reloaded.view().mem_bytes(), fresh.view().mem_bytes());
            if h.encoding() == fresh.encoding() {
                proptest::prop_assert_eq!(h.view().mem_bytes(), fresh.view().mem_bytes(), "estimate is content only");
            }
            if !m.is_empty() {
                let (f, v) = h.random(&mut rand::rng()).unwrap();
                proptest::prop_assert_eq!(m.get(f).map(|x| &x[..]), Some(v));
            }
        }

        /// Sets against a set, through the integer set, packed and table forms.
        #[test]
        fn set_matches_model(ops in proptest::collection::vec((0u8..4, 0u16..700), 0..1200), ints_only in proptest::bool::ANY) {
            let mut s = SetValue::default();
            let mut m: BTreeSet<Vec<u8>> = BTreeSet::new();
            let mut rng = rand::rng();
            for (op, k) in ops {
                let e = if ints_only { (i64::from(k) * 7919 - 2_000_000).to_string().into_bytes() } else { member(k) };
                match op {
                    0 => { proptest::prop_assert_eq!(s.remove(&e), m.remove(&e)); }
                    1 if k % 9 == 0 => {
                        if let Some(p) = s.pop_random(&mut rng) {
                            proptest::prop_assert!(m.remove(&*p));
                        } else {
                            proptest::prop_assert!(m.is_empty());
                        }
                    }
                    _ => { proptest::prop_assert_eq!(s.insert(&e), m.insert(e.clone())); }
                }
                proptest::prop_assert_eq!(s.len(), m.len());
                if ints_only && s.len() <= 512 {
                    proptest::prop_assert_eq!(s.encoding(), Encoding::Intset);
                }
            }
            for e in &m {
                proptest::prop_assert!(s.contains(e));
            }
            proptest::prop_assert!(!s.contains(b"-0") && !s.contains(b"007"));
            let got: Vec<Vec<u8>> = s.iter().map(<[u8]>::to_vec).collect();
            if s.encoding() == Encoding::Intset {
                let nums: Vec<i64> = got.iter().map(|g| std::str::from_utf8(g).unwrap().parse().unwrap()).collect();
                proptest::prop_assert!(nums.windows(2).all(|w| w[0] < w[1]), "intset is sorted");
            }
            proptest::prop_assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), m.clone());
            let mut fresh = SetValue::default();
            for e in &m {
                fresh.insert(e);
            }
            proptest::prop_assert_eq!(s.digest(), fresh.digest());
            let members: Vec<&[u8]> = s.iter().collect();
            let reloaded = SetValue::from_members(&members);
            proptest::prop_assert_eq!(reloaded.digest(), s.digest());
            proptest::prop_assert_eq!(reloaded.encoding(), fresh.encoding());
            proptest::prop_assert_eq!(reloaded.view().mem_bytes(), fresh.view().mem_bytes());
            if !m.is_empty() {
                proptest::prop_assert!(m.contains(s.random(&mut rng).unwrap()));
            }
        }

        /// Sorted sets against an ordered model, through packed and skiplist forms.
        #[test]
        fn zset_matches_model(ops in proptest::collection::vec((0u8..8, 0u16..300, -4i8..4), 0..700)) {
            let mut z = ZSetValue::default();
            let mut m: BTreeMap<Vec<u8>, f64> = BTreeMap::new();
            for (op, k, sc) in ops {
                let e = member(k);
                let score = f64::from(sc) / 2.0;
                match op {
                    0 => { proptest::prop_assert_eq!(z.remove(&e), m.remove(&e)); }
                    // ZPOPMIN / ZPOPMAX: the model's least or greatest (score, member).
                    4 | 5 => {
                        let order = |a: &(&Vec<u8>, &f64), b: &(&Vec<u8>, &f64)| {
                            Score(*a.1).cmp(&Score(*b.1)).then_with(|| a.0.cmp(b.0))
                        };
                        let want = if op == 5 { m.iter().max_by(order) } else { m.iter().min_by(order) }
                            .map(|(k, s)| (k.clone(), *s));
                        if let Some((k, _)) = &want {
                            m.remove(k);
                        }
                        let got = z.pop_with(op == 5, |k, s| (k.to_vec(), s));
                        proptest::prop_assert_eq!(got, want);
                    }
                    _ => { proptest::prop_assert_eq!(z.insert(&e, score), m.insert(e.clone(), score)); }
                }
                proptest::prop_assert_eq!(z.len(), m.len());
            }
            let mut want: Vec<(Vec<u8>, f64)> = m.iter().map(|(k, s)| (k.clone(), *s)).collect();
            want.sort_by(|a, b| Score(a.1).cmp(&Score(b.1)).then_with(|| a.0.cmp(&b.0)));
            let got: Vec<(Vec<u8>, f64)> = z.iter().map(|(k, s)| (k.to_vec(), s)).collect();
            proptest::prop_assert_eq!(&got, &want);
            let back: Vec<(Vec<u8>, f64)> = z.iter().rev().map(|(k, s)| (k.to_vec(), s)).collect();
            proptest::prop_assert_eq!(back.len(), want.len());
            for (i, (k, s)) in want.iter().enumerate() {
                proptest::prop_assert_eq!(z.rank(k), Some(i));
                proptest::prop_assert_eq!(z.score(k), Some(*s));
                proptest::prop_assert_eq!(z.get_by_rank(i).map(|(k, s)| (k.to_vec(), s)), Some((k.clone(), *s)));
            }
            let (a, b) = z.score_rank_range(Bound::Excluded(-1.0), Bound::Included(1.0));
            proptest::prop_assert_eq!(b - a, want.iter().filter(|(_, s)| *s > -1.0 && *s <= 1.0).count());
            proptest::prop_assert_eq!(z.range_by_rank(2, 5).len(), want.len().saturating_sub(2).min(3));
            let mut fresh = ZSetValue::default();
            for (k, s) in &m {
                fresh.insert(k, *s);
            }
            proptest::prop_assert_eq!(z.digest(), fresh.digest());
            let items: Vec<(&[u8], f64)> = z.iter().collect();
            let reloaded = ZSetValue::from_scored(&items);
            proptest::prop_assert_eq!(reloaded.digest(), z.digest());
            proptest::prop_assert_eq!(reloaded.encoding(), fresh.encoding());
            proptest::prop_assert_eq!(reloaded.view().mem_bytes(), fresh.view().mem_bytes());
            if z.encoding() == fresh.encoding() {
                proptest::prop_assert_eq!(z.view().mem_bytes(), fresh.view().mem_bytes(), "estimate is content only");
            }
        }
    }

    #[test]
    fn encodings_follow_redis_thresholds() {
        let mut h = HashValue::default();
        h.insert(b"f", b"v");
        assert_eq!(h.encoding(), Encoding::Listpack);
        h.insert(b"f", &[b'x'; 65]);
        assert_eq!(h.encoding(), Encoding::HashTable, "value longer than 64");
        h.remove(b"f");
        h.insert(b"g", b"v");
        assert_eq!(h.encoding(), Encoding::HashTable, "never converts back");
        let mut h = HashValue::default();
        for i in 0..128 {
            h.insert(format!("f{i}").as_bytes(), b"v");
        }
        assert_eq!(h.encoding(), Encoding::Listpack);
        h.insert(b"one-more", b"v");
        assert_eq!(h.encoding(), Encoding::HashTable);

        let mut s = SetValue::default();
        for i in 0..512 {
            s.insert(i.to_string().as_bytes());
        }
        assert_eq!(s.encoding(), Encoding::Intset);
        s.insert(b"512");
        assert_eq!(
            s.encoding(),
            Encoding::HashTable,
            "past set-max-intset-entries"
        );
        let mut s = SetValue::default();
        s.insert(b"1");
        s.insert(b"01");
        assert_eq!(
            s.encoding(),
            Encoding::Listpack,
            "01 is not an integer as written"
        );
        for i in 0..126 {
            s.insert(format!("m{i}").as_bytes());
        }
        assert_eq!((s.len(), s.encoding()), (128, Encoding::Listpack));
        s.insert(b"m-last");
        assert_eq!(s.encoding(), Encoding::HashTable);

        let mut z = ZSetValue::default();
        z.insert(b"a", 1.0);
        assert_eq!(z.encoding(), Encoding::Listpack);
        z.insert(&[b'm'; 65], 1.0);
        assert_eq!(z.encoding(), Encoding::Skiplist);

        assert_eq!(StrValue::new(b"12345".to_vec()).encoding(), Encoding::Int);
        assert_eq!(
            StrValue::new(b"012345".to_vec()).encoding(),
            Encoding::EmbStr
        );
        assert_eq!(StrValue::new(vec![b'a'; 44]).encoding(), Encoding::EmbStr);
        assert_eq!(StrValue::new(vec![b'a'; 45]).encoding(), Encoding::Raw);
        let mut a = StrValue::new(b"1".to_vec());
        a.append(b"2");
        assert_eq!(
            a.encoding(),
            Encoding::Raw,
            "APPEND makes a raw string, as in Redis"
        );
    }

    /// A string made from a slice is the string made from a copy of it: same bytes, CRC,
    /// digest and encoding, inline or not, integer or not, at every length around the bounds.
    #[test]
    fn from_slice_is_new_of_a_copy() {
        for len in 0..=(EMBSTR_MAX + 2) {
            for data in [vec![b'7'; len], vec![b'x'; len], vec![b'0'; len]] {
                let a = StrValue::from_slice(&data);
                let b = StrValue::new(data.clone());
                assert_eq!(a.as_bytes(), &data[..]);
                assert_eq!(a.as_bytes(), b.as_bytes());
                assert_eq!(a.crc(), b.crc(), "len {len}");
                assert_eq!(a.digest(), b.digest(), "len {len}");
                assert_eq!(a.encoding(), b.encoding(), "len {len}");
                assert_eq!(
                    matches!(a.repr, StrRepr::Inline { .. }),
                    len <= INLINE_STR,
                    "len {len}"
                );
            }
        }
    }

    #[test]
    fn hash_and_set_digests_ignore_order() {
        let mut a = HashValue::default();
        let mut b = HashValue::default();
        for i in 0..50 {
            a.insert(format!("f{i}").as_bytes(), b"v");
        }
        for i in (0..50).rev() {
            b.insert(format!("f{i}").as_bytes(), b"old");
            b.insert(format!("f{i}").as_bytes(), b"v");
        }
        assert_eq!(a.digest(), b.digest());
        b.insert(b"f3", b"w");
        assert_ne!(a.digest(), b.digest());
        b.insert(b"f3", b"v");
        b.insert(b"extra", b"1");
        b.remove(b"extra");
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.view().mem_bytes(), b.view().mem_bytes());
    }

    #[test]
    fn zset_ranges() {
        let mut z = ZSetValue::default();
        for (m, s) in [("a", 1.0), ("b", 2.0), ("c", 2.0), ("d", 3.0)] {
            z.insert(m.as_bytes(), s);
        }
        let names = |it: Vec<(&[u8], f64)>| {
            it.into_iter()
                .map(|(m, _)| String::from_utf8_lossy(m).into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(
                z.range_by_score(Bound::Excluded(1.0), Bound::Included(2.0))
                    .collect()
            ),
            ["b", "c"]
        );
        assert_eq!(z.rank(b"c"), Some(2));
        z.insert(b"a", 5.0);
        assert_eq!(z.rank(b"a"), Some(3));
        assert_eq!(z.remove(b"b"), Some(2.0));
        assert_eq!(z.len(), 3);
        assert_eq!(
            names(
                z.range_by_score(Bound::Included(3.0), Bound::Excluded(3.0))
                    .collect()
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn packed_collections_are_one_allocation() {
        // The value holds the packed form itself (no box next to it): a collection is 16 bytes
        // (24 for a set, whose compact forms are two), the value stays 32.
        assert_eq!(std::mem::size_of::<HashValue>(), 16);
        assert_eq!(std::mem::size_of::<ListValue>(), 16);
        assert_eq!(std::mem::size_of::<ZSetValue>(), 16);
        assert!(std::mem::size_of::<SetValue>() <= 24);
        // One field of one byte and a one-byte value: a 12-byte header and 4 bytes of body, and
        // the allocator's chunk cost; the digest lives in the header.
        let mut h = HashValue::default();
        h.insert(b"f", b"v");
        assert_eq!(h.view().mem_bytes(), pack::HEADER + 4 + PACKED_CHUNK);
        let mut fresh = HashValue::default();
        fresh.insert(b"f", b"old");
        fresh.insert(b"f", b"v");
        assert_eq!(h.digest(), fresh.digest());
        let mut s = SetValue::default();
        for m in [&b"7"[..], b"-12", b"300"] {
            s.insert(m);
        }
        assert_eq!(s.encoding(), Encoding::Intset);
        assert_eq!(s.view().mem_bytes(), pack::HEADER + 3 * 3 + PACKED_CHUNK);
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![&b"-12"[..], b"7", b"300"]
        );
    }

    #[test]
    fn string_append_keeps_crc() {
        let mut s = StrValue::new(b"hello ".to_vec());
        s.append(b"world");
        assert_eq!(s.digest(), StrValue::new(b"hello world".to_vec()).digest());
        s.set_range(0, b"J");
        assert_eq!(s.as_bytes(), b"Jello world");
        assert_eq!(s.digest(), StrValue::new(b"Jello world".to_vec()).digest());
    }

    #[test]
    fn strings_stay_32_bytes() {
        // Short strings live in the 32 bytes a heap string's Vec, CRC and encoding take, and a
        // value of any type stays 32 bytes (the keyspace entry is 56).
        assert_eq!(std::mem::size_of::<StrValue>(), 32);
        assert_eq!(std::mem::size_of::<Value>(), 32);
    }

    proptest::proptest! {
        /// Strings against a byte vector, across the inline limit both ways: content, digest
        /// (equal to the same bytes written whole), estimate (0 inline, else length + 16).
        #[test]
        fn string_matches_model(
            start in proptest::collection::vec(0u8..4, 0..40),
            ops in proptest::collection::vec((0u8..2, 0usize..40, proptest::collection::vec(0u8..4, 0..12)), 0..12),
        ) {
            let mut s = StrValue::new(start.clone());
            let mut model = start;
            for (op, at, bytes) in ops {
                if op == 0 {
                    s.append(&bytes);
                    model.extend_from_slice(&bytes);
                } else if !bytes.is_empty() {
                    s.set_range(at, &bytes);
                    if model.len() < at + bytes.len() {
                        model.resize(at + bytes.len(), 0);
                    }
                    model[at..at + bytes.len()].copy_from_slice(&bytes);
                }
                proptest::prop_assert_eq!(s.as_bytes(), &model[..]);
                let fresh = StrValue::new(model.clone());
                proptest::prop_assert_eq!(s.digest(), fresh.digest());
                proptest::prop_assert_eq!(s.view().mem_size(), fresh.view().mem_size());
                let expected = if model.len() <= INLINE_STR { 0 } else { model.len() + 16 };
                proptest::prop_assert_eq!(fresh.view().mem_size(), expected);
            }
        }
    }
}
