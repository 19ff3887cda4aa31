//! Content digests: order-independent, layout-independent checksums of a keyspace, maintained on
//! every write so that reading a tenant's digest costs O(buckets), not O(keys).
//!
//! Canonical encoding (the same on every server, independent of hash seeds and insertion order):
//! - an *element hash* is `crc32` (crc32fast) over a length-prefixed encoding of the element's
//!   parts, mixed together with the total length into 64 bits;
//! - a string's value digest is the element hash of its bytes;
//! - a hash's is the wrapping sum of element hashes of `(field, value)`; a set's of its members;
//!   a sorted set's of `(member, score)` with the score's IEEE-754 bits (-0 folded to +0);
//! - a list is ordered, so its digest is a polynomial `Σ h(eᵢ)·Bⁱ mod 2⁶¹−1` over its element
//!   hashes, which pushes and pops at either end update in O(1);
//! - a key's digest mixes the element hash of its name, its type, its value digest and its
//!   absolute expiry (ms);
//! - keys fall into [`BUCKETS`] buckets by `crc32(name) % BUCKETS`; a bucket's digest is the wrapping
//!   sum of its keys' digests, and the combined digest mixes the bucket digests.
//!
//! Sums make the digest independent of order; bucket digests let two servers locate a difference.

/// Number of digest buckets a keyspace is divided into.
pub const BUCKETS: usize = 256;

/// SplitMix64 finalizer: spreads every input bit over the output.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[inline]
fn finish(crc: u32, len: u64) -> u64 {
    mix64((u64::from(crc) << 32) ^ len ^ 0x9e37_79b9_7f4a_7c15)
}

/// A CRC-32 hasher with the implementation for this CPU already chosen. `crc32fast::hash` and
/// `Hasher::new` detect the CPU's features on every call, which costs as much as the CRC of a
/// short key (callgrind: 37 of about 75 instructions for a 16-byte key); every write computes
/// two or three such CRCs, so the detection is done once and the hasher copied.
#[inline]
pub fn crc_hasher() -> crc32fast::Hasher {
    static PROTOTYPE: std::sync::LazyLock<crc32fast::Hasher> =
        std::sync::LazyLock::new(crc32fast::Hasher::new);
    PROTOTYPE.clone()
}

/// `crc32fast::hash` without its per-call feature detection (see [`crc_hasher`]).
#[inline]
pub fn crc32(data: &[u8]) -> u32 {
    let mut h = crc_hasher();
    h.update(data);
    h.finalize()
}

/// Element hash of one byte string.
#[inline]
pub fn hash_bytes(data: &[u8]) -> u64 {
    finish(crc32(data), data.len() as u64)
}

/// Element hash of a pair (hash field and value): `len(a) as u32 LE ‖ a ‖ b`.
#[inline]
pub fn hash_pair(a: &[u8], b: &[u8]) -> u64 {
    let mut h = crc_hasher();
    h.update(&(a.len() as u32).to_le_bytes());
    h.update(a);
    h.update(b);
    finish(h.finalize(), (a.len() + b.len() + 4) as u64)
}

/// Canonical bytes of a score: IEEE-754 bits, with -0.0 folded into 0.0.
#[inline]
pub fn score_bits(score: f64) -> [u8; 8] {
    let s = if score == 0.0 { 0.0f64 } else { score };
    s.to_bits().to_le_bytes()
}

/// Element hash of a sorted-set member with its score.
#[inline]
pub fn hash_scored(member: &[u8], score: f64) -> u64 {
    hash_pair(member, &score_bits(score))
}

/// Type tags used in key digests (stable on the wire: never renumber).
pub mod type_tag {
    pub const STRING: u64 = 1;
    pub const LIST: u64 = 2;
    pub const HASH: u64 = 3;
    pub const SET: u64 = 4;
    pub const ZSET: u64 = 5;
    pub const STREAM: u64 = 6;
}

/// Bucket of a key name.
#[inline]
pub fn bucket_of(key: &[u8]) -> usize {
    crc32(key) as usize % BUCKETS
}

/// The element hash of a key's name and its bucket, from one CRC: a write needs both.
#[inline]
pub fn name_hash_and_bucket(key: &[u8]) -> (u64, usize) {
    let crc = crc32(key);
    (finish(crc, key.len() as u64), crc as usize % BUCKETS)
}

/// Digest of one key from its parts.
#[inline]
pub fn key_digest(key: &[u8], type_tag: u64, value_digest: u64, expire_at_ms: u64) -> u64 {
    key_digest_named(hash_bytes(key), type_tag, value_digest, expire_at_ms)
}

/// [`key_digest`] with the element hash of the name already computed (see
/// [`name_hash_and_bucket`]).
#[inline]
pub fn key_digest_named(
    name_hash: u64,
    type_tag: u64,
    value_digest: u64,
    expire_at_ms: u64,
) -> u64 {
    let k = name_hash;
    let v = mix64(value_digest.wrapping_add(type_tag.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    let e = mix64(expire_at_ms ^ 0x5851_f42d_4c95_7f2d);
    mix64(
        k.wrapping_add(v.rotate_left(21))
            .wrapping_add(e.rotate_left(42)),
    )
}

/// Modular arithmetic for the list polynomial, modulo the Mersenne prime 2^61 − 1.
pub mod poly {
    pub const P: u64 = (1 << 61) - 1;
    /// The polynomial base (any value in 2..P works; fixed forever for compatibility).
    pub const B: u64 = 0x1f3d_5b79_a3c5_e1d7 % P;
    pub const B_INV: u64 = pow(B, P - 2);

    #[inline]
    pub const fn mul(a: u64, b: u64) -> u64 {
        let r = (a as u128) * (b as u128);
        let lo = (r as u64) & P;
        let hi = (r >> 61) as u64;
        let s = lo + hi;
        if s >= P { s - P } else { s }
    }

    #[inline]
    pub const fn add(a: u64, b: u64) -> u64 {
        let s = a + b;
        if s >= P { s - P } else { s }
    }

    #[inline]
    pub const fn sub(a: u64, b: u64) -> u64 {
        if a >= b { a - b } else { a + P - b }
    }

    /// Reduces an arbitrary 64-bit value into the field.
    #[inline]
    pub const fn reduce(x: u64) -> u64 {
        let s = (x & P) + (x >> 61);
        if s >= P { s - P } else { s }
    }

    pub const fn pow(mut base: u64, mut exp: u64) -> u64 {
        let mut acc = 1u64;
        base = reduce(base);
        while exp > 0 {
            if exp & 1 == 1 {
                acc = mul(acc, base);
            }
            base = mul(base, base);
            exp >>= 1;
        }
        acc
    }
}

/// Per-bucket digests and key counts of a keyspace.
#[derive(Clone, PartialEq, Eq)]
pub struct Digest {
    pub sums: Box<[u64; BUCKETS]>,
    pub counts: Box<[u32; BUCKETS]>,
    /// Digest of the keyspace's function libraries (0 without any), mixed into
    /// [`Digest::combined`] so that a copy without them does not compare equal.
    pub libraries: u64,
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digest({:016x}, {} keys)", self.combined(), self.keys())
    }
}

impl Default for Digest {
    fn default() -> Self {
        Digest {
            sums: Box::new([0; BUCKETS]),
            counts: Box::new([0; BUCKETS]),
            libraries: 0,
        }
    }
}

impl Digest {
    #[inline]
    pub fn add(&mut self, bucket: usize, kd: u64) {
        self.sums[bucket] = self.sums[bucket].wrapping_add(kd);
        self.counts[bucket] = self.counts[bucket].wrapping_add(1);
    }

    #[inline]
    pub fn remove(&mut self, bucket: usize, kd: u64) {
        self.sums[bucket] = self.sums[bucket].wrapping_sub(kd);
        self.counts[bucket] = self.counts[bucket].wrapping_sub(1);
    }

    #[inline]
    pub fn replace(&mut self, bucket: usize, old: u64, new: u64) {
        self.sums[bucket] = self.sums[bucket].wrapping_sub(old).wrapping_add(new);
    }

    /// Digest of a bucket as reported to users (mixes the count in).
    pub fn bucket(&self, b: usize) -> u64 {
        mix64(self.sums[b] ^ u64::from(self.counts[b]).rotate_left(32))
    }

    /// The combined digest of all buckets.
    pub fn combined(&self) -> u64 {
        let keys = (0..BUCKETS).fold(0u64, |acc, b| {
            mix64(acc.wrapping_add(self.bucket(b)).wrapping_add(b as u64))
        });
        // A tenant without function libraries keeps the digest of its keys alone.
        match self.libraries {
            0 => keys,
            l => mix64(keys ^ l),
        }
    }

    pub fn keys(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }

    /// Buckets whose digests differ.
    pub fn differing_buckets(&self, other: &Digest) -> Vec<usize> {
        (0..BUCKETS)
            .filter(|&b| self.bucket(b) != other.bucket(b))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_is_inverse() {
        assert_eq!(poly::mul(poly::B, poly::B_INV), 1);
    }

    /// The copied hasher computes what `crc32fast` computes, at every length its
    /// implementations switch at (short tails, 16-, 64- and 128-byte blocks), whole or in parts.
    #[test]
    fn the_copied_hasher_is_crc32fast() {
        let data: Vec<u8> = (0..600u32).map(|i| (i * 31 + 7) as u8).collect();
        for len in (0..300).chain([511, 512, 513, 600]) {
            let d = &data[..len];
            assert_eq!(crc32(d), crc32fast::hash(d), "length {len}");
            let mut h = crc_hasher();
            h.update(&d[..len / 3]);
            h.update(&d[len / 3..]);
            assert_eq!(
                h.finalize(),
                crc32fast::hash(d),
                "length {len} in two parts"
            );
        }
    }

    #[test]
    fn one_crc_gives_name_hash_and_bucket() {
        for key in [&b""[..], b"k", b"key:__rand_int__", &[0xff; 300]] {
            let (name_hash, bucket) = name_hash_and_bucket(key);
            assert_eq!((name_hash, bucket), (hash_bytes(key), bucket_of(key)));
            assert_eq!(
                key_digest_named(name_hash, type_tag::HASH, 7, 1234),
                key_digest(key, type_tag::HASH, 7, 1234)
            );
        }
    }

    #[test]
    fn pair_encoding_is_unambiguous() {
        assert_ne!(hash_pair(b"ab", b"c"), hash_pair(b"a", b"bc"));
        assert_ne!(hash_scored(b"m", 1.0), hash_scored(b"m", 2.0));
        assert_eq!(hash_scored(b"m", 0.0), hash_scored(b"m", -0.0));
    }

    #[test]
    fn digest_is_order_independent() {
        let mut a = Digest::default();
        let mut b = Digest::default();
        let keys: Vec<_> = (0..100).map(|i| format!("k{i}")).collect();
        for k in &keys {
            a.add(bucket_of(k.as_bytes()), hash_bytes(k.as_bytes()));
        }
        for k in keys.iter().rev() {
            b.add(bucket_of(k.as_bytes()), hash_bytes(k.as_bytes()));
        }
        assert_eq!(a.combined(), b.combined());
        b.remove(bucket_of(b"k5"), hash_bytes(b"k5"));
        assert_ne!(a.combined(), b.combined());
        assert_eq!(a.differing_buckets(&b), vec![bucket_of(b"k5")]);
    }
}
