//! HyperLogLog commands (PFADD, PFCOUNT, PFMERGE, PFDEBUG, PFSELFTEST) on strings in Redis's exact
//! representation, so that a value written here reads the same in Redis and back (GET/SET of the
//! raw string, DUMP/RESTORE) and the same elements give the same counts:
//!
//! - a 16-byte header: `HYLL`, encoding (0 dense, 1 sparse), 3 unused bytes, and the cached
//!   cardinality as 8 little-endian bytes whose top bit set means "not valid";
//! - 16384 registers of 6 bits (P = 14), packed little-endian (dense, 12304 bytes in all), or
//!   run-length opcodes ZERO `00xxxxxx`, XZERO `01xxxxxx yyyyyyyy` and VAL `1vvvvvxx` (sparse),
//!   promoted to dense past `hll-sparse-max-bytes` or a register above 32;
//! - elements hashed with MurmurHash64A (seed 0xadc83b19), the low 14 bits picking the register;
//! - Ertl's improved estimator, as Redis 5+ computes it.
//!
//! One difference, on purpose: PFCOUNT never writes the cached cardinality back. Redis does, from
//! a read command; here reads never change data (they hold no write permit, and a change would
//! show up in change capture and digests). A cache that arrives valid (RESTORE, SET) is used, and
//! PFADD/PFMERGE invalidate it as Redis does.

use ferrite_protocol::{Args, ErrorReply};
use ferrite_storage::{Slot, Value};
use rand::Rng;

use crate::ctx::Ctx;
use crate::settings::hll_sparse_max_bytes;
use crate::spec::flags::*;
use crate::spec::{ALL_KEYS, CmdResult, CommandSpec, Creates, KEY1};
use crate::util::as_str;

crate::command_family!("hyperloglog");

pub const COMMANDS: &[CommandSpec] = &[
    cmd(
        "pfadd",
        -2,
        WRITE | DENYOOM | FAST,
        KEY1,
        Creates::FirstKey,
        "Adds elements to a HyperLogLog key. Creates the key if it doesn't exist.",
        pfadd,
    ),
    cmd(
        "pfcount",
        -2,
        READONLY,
        ALL_KEYS,
        Creates::Nothing,
        "Returns the approximated cardinality of the set(s) observed by the HyperLogLog key(s).",
        pfcount,
    ),
    cmd(
        "pfmerge",
        -2,
        WRITE | DENYOOM,
        ALL_KEYS,
        Creates::FirstKey,
        "Merges one or more HyperLogLog values into a single key.",
        pfmerge,
    ),
    cmd(
        "pfdebug",
        3,
        WRITE | DENYOOM | ADMIN,
        (2, 2, 1),
        Creates::Nothing,
        "Internal commands for debugging HyperLogLog values: GETREG, DECODE, ENCODING, TODENSE.",
        pfdebug,
    ),
    cmd(
        "pfselftest",
        1,
        ADMIN,
        (0, 0, 0),
        Creates::Nothing,
        "An internal command for testing HyperLogLog values.",
        pfselftest,
    ),
];

const HDR: usize = 16;
const P: u32 = 14;
const Q: u32 = 64 - P;
const REGISTERS: usize = 1 << P;
const BITS: usize = 6;
const REGISTER_MAX: u8 = (1 << BITS) - 1;
pub const DENSE_SIZE: usize = HDR + (REGISTERS * BITS).div_ceil(8);
const DENSE: u8 = 0;
const SPARSE: u8 = 1;
const SPARSE_VAL_MAX_VALUE: u8 = 32;
const SPARSE_VAL_MAX_LEN: usize = 4;
const SPARSE_ZERO_MAX_LEN: usize = 64;
const SPARSE_XZERO_MAX_LEN: usize = 16384;
const ALPHA_INF: f64 = 0.721_347_520_444_481_7;

fn not_hll() -> ErrorReply {
    ErrorReply::coded("WRONGTYPE", "Key is not a valid HyperLogLog string value.")
}

fn corrupt() -> ErrorReply {
    ErrorReply::coded("INVALIDOBJ", "Corrupted HLL object detected")
}

/// MurmurHash2, 64-bit version, reading 8-byte blocks little-endian (Redis's endian-neutral
/// variant), so the same element picks the same register everywhere.
pub fn murmur_hash64a(data: &[u8], seed: u64) -> u64 {
    const M: u64 = 0xc6a4_a793_5bd1_e995;
    const R: u32 = 47;
    let mut h = seed ^ (data.len() as u64).wrapping_mul(M);
    let mut chunks = data.chunks_exact(8);
    for c in chunks.by_ref() {
        let mut k = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h ^= k;
        h = h.wrapping_mul(M);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, &b) in rest.iter().enumerate() {
            h ^= u64::from(b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> R;
    h = h.wrapping_mul(M);
    h ^= h >> R;
    h
}

/// The register an element falls in and the length of its `000..1` pattern (1..=Q+1).
fn pattern(ele: &[u8]) -> (usize, u8) {
    let hash = murmur_hash64a(ele, 0xadc8_3b19);
    let index = (hash as usize) & (REGISTERS - 1);
    let rest = (hash >> P) | (1u64 << Q);
    (index, rest.trailing_zeros() as u8 + 1)
}

// ---------------------------------------------------------------------------------------------
// Dense registers

fn dense_get(regs: &[u8], i: usize) -> u8 {
    let byte = i * BITS / 8;
    let fb = (i * BITS) & 7;
    let b0 = u16::from(regs.get(byte).copied().unwrap_or(0));
    let b1 = u16::from(regs.get(byte + 1).copied().unwrap_or(0));
    (((b0 >> fb) | (b1 << (8 - fb))) as u8) & REGISTER_MAX
}

fn dense_set(regs: &mut [u8], i: usize, val: u8) {
    let byte = i * BITS / 8;
    let fb = (i * BITS) & 7;
    let v = u16::from(val);
    regs[byte] &= !((u16::from(REGISTER_MAX) << fb) as u8);
    regs[byte] |= (v << fb) as u8;
    if let Some(next) = regs.get_mut(byte + 1) {
        let spill = 8 - fb;
        *next &= !((u16::from(REGISTER_MAX) >> spill) as u8);
        *next |= (v >> spill) as u8;
    }
}

// ---------------------------------------------------------------------------------------------
// Sparse opcodes

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Zero(usize),
    XZero(usize),
    Val(u8, usize),
}

impl Op {
    fn span(self) -> usize {
        match self {
            Op::Zero(n) | Op::XZero(n) | Op::Val(_, n) => n,
        }
    }

    fn width(self) -> usize {
        if matches!(self, Op::XZero(_)) { 2 } else { 1 }
    }
}

/// The opcode at `p`; None when an XZERO is cut off by the end.
fn op_at(v: &[u8], p: usize) -> Option<Op> {
    let b = *v.get(p)?;
    Some(if b & 0xc0 == 0 {
        Op::Zero(usize::from(b & 0x3f) + 1)
    } else if b & 0xc0 == 0x40 {
        let lo = *v.get(p + 1)?;
        Op::XZero(((usize::from(b & 0x3f) << 8) | usize::from(lo)) + 1)
    } else {
        Op::Val(((b >> 2) & 0x1f) + 1, usize::from(b & 0x3) + 1)
    })
}

fn val_op(val: u8, len: usize) -> u8 {
    0x80 | ((val - 1) << 2) | (len as u8 - 1)
}

fn push_zeros(seq: &mut Vec<u8>, len: usize) {
    if len > SPARSE_ZERO_MAX_LEN {
        let l = len - 1;
        seq.push(0x40 | (l >> 8) as u8);
        seq.push((l & 0xff) as u8);
    } else {
        seq.push((len - 1) as u8);
    }
}

/// Walks a sparse body; calls `f(first_register, op)` for each opcode. Err if the opcodes do not
/// cover exactly the 16384 registers.
fn walk_sparse(v: &[u8], mut f: impl FnMut(usize, Op)) -> Result<(), ErrorReply> {
    let (mut p, mut idx) = (HDR, 0usize);
    while p < v.len() {
        let op = op_at(v, p).ok_or_else(corrupt)?;
        if let Op::Val(..) = op
            && idx + op.span() > REGISTERS
        {
            return Err(corrupt());
        }
        f(idx, op);
        idx += op.span();
        p += op.width();
    }
    if idx != REGISTERS {
        return Err(corrupt());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A HyperLogLog value

/// A fresh, empty HyperLogLog: sparse, one XZERO opcode covering all registers, cache valid at 0.
pub fn new_hll() -> Vec<u8> {
    let mut v = vec![0u8; HDR];
    v[..4].copy_from_slice(b"HYLL");
    v[4] = SPARSE;
    let mut left = REGISTERS;
    while left > 0 {
        let n = left.min(SPARSE_XZERO_MAX_LEN);
        push_zeros(&mut v, n);
        left -= n;
    }
    v
}

/// Checks that a string is a HyperLogLog (Redis's isHLLObjectOrReply).
fn check_hll(v: &[u8]) -> Result<(), ErrorReply> {
    if v.len() < HDR || &v[..4] != b"HYLL" || v[4] > SPARSE {
        return Err(not_hll());
    }
    if v[4] == DENSE && v.len() != DENSE_SIZE {
        return Err(not_hll());
    }
    Ok(())
}

fn invalidate_cache(v: &mut [u8]) {
    v[15] |= 0x80;
}

fn cached(v: &[u8]) -> Option<u64> {
    (v[15] & 0x80 == 0).then(|| u64::from_le_bytes(v[8..16].try_into().unwrap_or([0; 8])))
}

/// Converts a sparse HyperLogLog to dense in place.
fn to_dense(v: &mut Vec<u8>) -> Result<(), ErrorReply> {
    if v[4] == DENSE {
        return Ok(());
    }
    let mut dense = vec![0u8; DENSE_SIZE];
    dense[..HDR].copy_from_slice(&v[..HDR]);
    dense[4] = DENSE;
    walk_sparse(v, |first, op| {
        if let Op::Val(val, n) = op {
            for i in first..first + n {
                dense_set(&mut dense[HDR..], i, val);
            }
        }
    })?;
    *v = dense;
    Ok(())
}

/// Sets register `index` to `count` if that raises it (Redis's hllSparseSet, opcode for opcode,
/// so the bytes match what Redis writes). Ok(true) when the register changed.
fn sparse_set(v: &mut Vec<u8>, index: usize, count: u8) -> Result<bool, ErrorReply> {
    if count > SPARSE_VAL_MAX_VALUE {
        return promote_and_set(v, index, count);
    }
    // Find the opcode covering `index`.
    let (mut p, mut first, mut prev) = (HDR, 0usize, None);
    let mut found = None;
    while p < v.len() {
        let op = op_at(v, p).ok_or_else(corrupt)?;
        if index < first + op.span() {
            found = Some(op);
            break;
        }
        prev = Some(p);
        p += op.width();
        first += op.span();
    }
    let op = found.ok_or_else(corrupt)?;
    let last = first + op.span() - 1;
    match op {
        Op::Val(old, _) if old >= count => return Ok(false),
        Op::Val(_, 1) | Op::Zero(1) => {
            v[p] = val_op(count, 1);
            merge_adjacent(v, prev.unwrap_or(HDR));
            invalidate_cache(v);
            return Ok(true);
        }
        _ => {}
    }
    // Split the opcode into up to three: before, the register, after.
    let mut seq = Vec::with_capacity(5);
    match op {
        Op::Zero(_) | Op::XZero(_) => {
            if index != first {
                push_zeros(&mut seq, index - first);
            }
            seq.push(val_op(count, 1));
            if index != last {
                push_zeros(&mut seq, last - index);
            }
        }
        Op::Val(cur, _) => {
            if index != first {
                seq.push(val_op(cur, index - first));
            }
            seq.push(val_op(count, 1));
            if index != last {
                seq.push(val_op(cur, last - index));
            }
        }
    }
    let old_width = op.width();
    if seq.len() > old_width && v.len() + seq.len() - old_width > hll_sparse_max_bytes() {
        return promote_and_set(v, index, count);
    }
    v.splice(p..p + old_width, seq);
    merge_adjacent(v, prev.unwrap_or(HDR));
    invalidate_cache(v);
    Ok(true)
}

/// Joins neighbouring VAL opcodes of equal value, scanning at most five opcodes from `p`.
fn merge_adjacent(v: &mut Vec<u8>, mut p: usize) {
    let mut scan = 5;
    while p < v.len() && scan > 0 {
        scan -= 1;
        let Some(op) = op_at(v, p) else { return };
        let Op::Val(v1, l1) = op else {
            p += op.width();
            continue;
        };
        if let Some(Op::Val(v2, l2)) = (p + 1 < v.len()).then(|| op_at(v, p + 1)).flatten()
            && v1 == v2
            && l1 + l2 <= SPARSE_VAL_MAX_LEN
        {
            v[p + 1] = val_op(v1, l1 + l2);
            v.remove(p);
            continue;
        }
        p += 1;
    }
}

fn promote_and_set(v: &mut Vec<u8>, index: usize, count: u8) -> Result<bool, ErrorReply> {
    to_dense(v)?;
    let changed = raise_dense(v, index, count);
    Ok(changed)
}

fn raise_dense(v: &mut [u8], index: usize, count: u8) -> bool {
    let regs = &mut v[HDR..];
    if count > dense_get(regs, index) {
        dense_set(regs, index, count);
        true
    } else {
        false
    }
}

/// Adds one element; Ok(true) when a register changed.
fn add(v: &mut Vec<u8>, ele: &[u8]) -> Result<bool, ErrorReply> {
    let (index, count) = pattern(ele);
    let changed = if v[4] == DENSE {
        raise_dense(v, index, count)
    } else {
        sparse_set(v, index, count)?
    };
    if changed {
        invalidate_cache(v);
    }
    Ok(changed)
}

/// Raises `max` (one byte per register) to the registers of `v`.
fn merge_into(max: &mut [u8; REGISTERS], v: &[u8]) -> Result<(), ErrorReply> {
    if v[4] == DENSE {
        for (i, m) in max.iter_mut().enumerate() {
            *m = (*m).max(dense_get(&v[HDR..], i));
        }
        Ok(())
    } else {
        walk_sparse(v, |first, op| {
            if let Op::Val(val, n) = op {
                for m in &mut max[first..first + n] {
                    *m = (*m).max(val);
                }
            }
        })
    }
}

fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let (mut y, mut z) = (1.0, x);
    loop {
        x *= x;
        let prev = z;
        z += x * y;
        y += y;
        if prev == z {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let (mut y, mut z) = (1.0, 1.0 - x);
    loop {
        x = x.sqrt();
        let prev = z;
        y *= 0.5;
        z -= (1.0 - x) * (1.0 - x) * y;
        if prev == z {
            return z / 3.0;
        }
    }
}

/// The estimate from a histogram of register values (Redis's hllCount).
fn estimate(histo: &[u32; 64]) -> u64 {
    let m = REGISTERS as f64;
    let mut z = m * tau((m - f64::from(histo[(Q + 1) as usize])) / m);
    for j in (1..=Q as usize).rev() {
        z += f64::from(histo[j]);
        z *= 0.5;
    }
    z += m * sigma(f64::from(histo[0]) / m);
    (ALPHA_INF * m * m / z).round() as u64
}

fn count_registers(max: &[u8; REGISTERS]) -> u64 {
    let mut histo = [0u32; 64];
    for &r in max.iter() {
        histo[usize::from(r & 63)] += 1;
    }
    estimate(&histo)
}

/// The cardinality of one HyperLogLog value (its cache when valid).
fn count(v: &[u8]) -> Result<u64, ErrorReply> {
    if let Some(c) = cached(v) {
        return Ok(c);
    }
    let mut histo = [0u32; 64];
    if v[4] == DENSE {
        for i in 0..REGISTERS {
            histo[usize::from(dense_get(&v[HDR..], i))] += 1;
        }
    } else {
        walk_sparse(v, |_, op| match op {
            Op::Zero(n) | Op::XZero(n) => histo[0] += n as u32,
            Op::Val(val, n) => histo[usize::from(val)] += n as u32,
        })?;
    }
    Ok(estimate(&histo))
}

// ---------------------------------------------------------------------------------------------
// Commands

fn pfadd(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let elements = args.tail(2);
    let updated = match ctx.db.entry(args.get(1), ctx.now) {
        Slot::Occupied(mut o) => {
            let cur = as_str(o.get())?.as_bytes();
            check_hll(cur)?;
            let mut v = cur.to_vec();
            let mut updated = false;
            for e in elements.iter() {
                updated |= add(&mut v, e)?;
            }
            if updated && let Value::Str(s) = o.get_mut().value_mut() {
                s.set(v);
            }
            updated
        }
        Slot::Vacant(slot) => {
            let mut v = new_hll();
            for e in elements.iter() {
                add(&mut v, e)?;
            }
            slot.insert(Value::string(v), None);
            true
        }
    };
    ctx.w.int(i64::from(updated));
    Ok(())
}

/// The HyperLogLog at `key`, checked; None when the key does not exist.
fn read_hll<'d>(ctx: &'d mut Ctx<'_, '_>, key: &[u8]) -> Result<Option<&'d [u8]>, ErrorReply> {
    match ctx.db.get(key, ctx.now) {
        Some(e) => {
            let v = as_str(e)?.as_bytes();
            check_hll(v)?;
            Ok(Some(v))
        }
        None => Ok(None),
    }
}

fn pfcount(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if args.len() == 2 {
        let n = match read_hll(ctx, args.get(1))? {
            Some(v) => count(v)?,
            None => 0,
        };
        ctx.w.int(n as i64);
        return Ok(());
    }
    let mut max = Box::new([0u8; REGISTERS]);
    for key in args.tail(1).iter() {
        if let Some(v) = read_hll(ctx, key)? {
            merge_into(&mut max, v)?;
        }
    }
    ctx.w.int(count_registers(&max) as i64);
    Ok(())
}

fn pfmerge(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let mut max = Box::new([0u8; REGISTERS]);
    let mut use_dense = false;
    // The destination is a source too (Redis reads argv[1..]).
    for key in args.tail(1).iter() {
        if let Some(v) = read_hll(ctx, key)? {
            use_dense |= v[4] == DENSE;
            merge_into(&mut max, v)?;
        }
    }
    let dst = args.get(1);
    let mut v = match ctx.db.get(dst, ctx.now) {
        Some(e) => as_str(e)?.as_bytes().to_vec(),
        None => new_hll(),
    };
    if use_dense {
        to_dense(&mut v)?;
    }
    for (i, &m) in max.iter().enumerate() {
        if m == 0 {
            continue;
        }
        if v[4] == DENSE {
            raise_dense(&mut v, i, m);
        } else {
            sparse_set(&mut v, i, m)?;
        }
    }
    invalidate_cache(&mut v);
    match ctx.db.entry(dst, ctx.now) {
        Slot::Occupied(mut o) => {
            if let Value::Str(s) = o.get_mut().value_mut() {
                s.set(v);
            }
        }
        Slot::Vacant(slot) => slot.insert(Value::string(v), None),
    }
    ctx.w.ok();
    Ok(())
}

fn pfdebug(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let sub = args.get(1).to_ascii_lowercase();
    let key = args.get(2);
    let now = ctx.now;
    let Slot::Occupied(mut o) = ctx.db.entry(key, now) else {
        return Err(ErrorReply::err("The specified key does not exist"));
    };
    let cur = as_str(o.get())?.as_bytes();
    check_hll(cur)?;
    let mut v = cur.to_vec();
    match sub.as_slice() {
        b"getreg" | b"todense" => {
            let was_sparse = v[4] == SPARSE;
            to_dense(&mut v)?;
            if was_sparse && let Value::Str(s) = o.get_mut().value_mut() {
                s.set(v.clone());
            }
            drop(o);
            if sub.as_slice() == b"todense" {
                ctx.w.int(i64::from(was_sparse));
            } else {
                ctx.w.array(REGISTERS);
                for i in 0..REGISTERS {
                    ctx.w.int(i64::from(dense_get(&v[HDR..], i)));
                }
            }
        }
        b"decode" => {
            if v[4] != SPARSE {
                return Err(ErrorReply::err("HLL encoding is not sparse"));
            }
            let mut out = Vec::new();
            let mut p = HDR;
            while let Some(op) = op_at(&v, p) {
                out.push(match op {
                    Op::Zero(n) => format!("z:{n}"),
                    Op::XZero(n) => format!("Z:{n}"),
                    Op::Val(val, n) => format!("v:{val},{n}"),
                });
                p += op.width();
            }
            ctx.w.bulk(out.join(" ").as_bytes());
        }
        b"encoding" => ctx.w.simple(if v[4] == DENSE { "dense" } else { "sparse" }),
        _ => {
            return Err(ErrorReply::err(format!(
                "Unknown PFDEBUG subcommand '{}'",
                args.text(1)
            )));
        }
    }
    Ok(())
}

/// Checks the register packing and the estimator's error on this build (Redis's PFSELFTEST).
fn pfselftest(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    let mut regs = vec![0u8; DENSE_SIZE - HDR];
    let mut model = vec![0u8; REGISTERS];
    for _ in 0..1000 {
        for (i, m) in model.iter_mut().enumerate() {
            let r = ctx.rng.random_range(0..=REGISTER_MAX);
            *m = r;
            dense_set(&mut regs, i, r);
        }
        if let Some(i) = (0..REGISTERS).find(|&i| dense_get(&regs, i) != model[i]) {
            return Err(ErrorReply::err(format!(
                "TESTFAILED Register error at index {i}"
            )));
        }
    }
    // The estimate of n distinct elements stays within 5 standard errors, for sparse and dense.
    let rel_err = 1.04 / (REGISTERS as f64).sqrt();
    let mut sparse = new_hll();
    let mut dense = new_hll();
    to_dense(&mut dense)?;
    let seed: u64 = ctx.rng.random();
    for n in 1..=100_000u64 {
        let ele = (seed ^ n).to_le_bytes();
        add(&mut sparse, &ele)?;
        add(&mut dense, &ele)?;
        if n % 1000 == 0 || n < 100 {
            let (c_sparse, c_dense) = (count(&sparse)?, count(&dense)?);
            if c_sparse != c_dense {
                return Err(ErrorReply::err(format!(
                    "TESTFAILED sparse and dense counts differ at {n}: {c_sparse} vs {c_dense}"
                )));
            }
            let max_err = (n as f64 * rel_err * 5.0).max(1.0);
            if (c_dense as f64 - n as f64).abs() > max_err {
                return Err(ErrorReply::err(format!(
                    "TESTFAILED Too big error. card:{n} abserr:{}",
                    (c_dense as f64 - n as f64).abs()
                )));
            }
        }
    }
    ctx.w.ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    /// Bytes and counts taken from redis-server 7.0 for the same PFADDs: the representation,
    /// the hash and the estimator are Redis's.
    #[test]
    fn values_are_byte_identical_to_redis() {
        let mut v = new_hll();
        for e in ["a", "b", "c", "foo", "bar"] {
            add(&mut v, e.as_bytes()).unwrap();
        }
        let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "48594c4c0100000000000000000000805cb390443e804621804a8e844bfb80425a"
        );
        assert_eq!(count(&v).unwrap(), 5);

        let mut s = new_hll();
        for i in 0..200 {
            add(&mut s, format!("x{i}").as_bytes()).unwrap();
        }
        assert_eq!((s.len(), crc32fast::hash(&s)), (498, 2107110715));
        assert_eq!(count(&s).unwrap(), 198);

        let mut d = new_hll();
        for i in 0..3000 {
            add(&mut d, format!("ele:{i}").as_bytes()).unwrap();
        }
        assert_eq!(d.len(), DENSE_SIZE);
        assert_eq!(&d[..16], b"HYLL\0\0\0\0\0\0\0\0\0\0\0\x80");
        assert_eq!(crc32fast::hash(&d[16..]), 1452081899);
        assert_eq!(count(&d).unwrap(), 2991);
    }

    #[test]
    fn empty_hll_is_redis_bytes() {
        let v = new_hll();
        assert_eq!(v.len(), 18);
        assert_eq!(&v[..5], b"HYLL\x01");
        assert_eq!(&v[16..], &[0x7f, 0xff]);
    }

    #[test]
    fn sparse_and_dense_agree() {
        let mut sparse = new_hll();
        let mut dense = new_hll();
        to_dense(&mut dense).unwrap();
        for i in 0..5000u32 {
            let e = format!("ele:{i}");
            assert_eq!(
                add(&mut sparse, e.as_bytes()).unwrap(),
                add(&mut dense, e.as_bytes()).unwrap()
            );
        }
        let mut s2 = sparse.clone();
        to_dense(&mut s2).unwrap();
        assert_eq!(&s2[HDR..], &dense[HDR..]);
        assert_eq!(count(&sparse).unwrap(), count(&dense).unwrap());
    }

    #[test]
    fn commands() {
        let mut t = TestDb::new();
        t.check(&[
            (&["PFADD", "h", "a", "b", "c"], ":1\r\n"),
            (&["PFADD", "h", "a"], ":0\r\n"),
            (&["PFCOUNT", "h"], ":3\r\n"),
            (&["PFADD", "e"], ":1\r\n"),
            (&["PFADD", "e"], ":0\r\n"),
            (&["PFCOUNT", "e"], ":0\r\n"),
            (&["PFADD", "h2", "c", "d"], ":1\r\n"),
            (&["PFCOUNT", "h", "h2", "missing"], ":4\r\n"),
            (&["PFMERGE", "m", "h", "h2"], "+OK\r\n"),
            (&["PFCOUNT", "m"], ":4\r\n"),
            (&["PFDEBUG", "ENCODING", "m"], "+sparse\r\n"),
            (&["PFDEBUG", "TODENSE", "m"], ":1\r\n"),
            (&["PFDEBUG", "ENCODING", "m"], "+dense\r\n"),
            (&["PFCOUNT", "m"], ":4\r\n"),
            (&["SET", "s", "x"], "+OK\r\n"),
            (
                &["PFADD", "s", "a"],
                "-WRONGTYPE Key is not a valid HyperLogLog string value.\r\n",
            ),
            (
                &["PFCOUNT", "s"],
                "-WRONGTYPE Key is not a valid HyperLogLog string value.\r\n",
            ),
            (
                &["PFDEBUG", "NOPE", "m"],
                "-ERR Unknown PFDEBUG subcommand 'NOPE'\r\n",
            ),
            (
                &["PFDEBUG", "ENCODING", "none"],
                "-ERR The specified key does not exist\r\n",
            ),
            (&["PFSELFTEST"], "+OK\r\n"),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn corrupted_sparse_values_are_refused() {
        let mut t = TestDb::new();
        let mut v = new_hll();
        v[17] = 0xfe; // XZERO 0x7ffe: 32767 registers, too many
        invalidate_cache(&mut v);
        t.run_bytes(&[&b"SET"[..], b"bad", &v]);
        assert_eq!(
            t.run(&["PFCOUNT", "bad"]),
            "-INVALIDOBJ Corrupted HLL object detected\r\n"
        );
        let mut cut = new_hll();
        cut.truncate(17);
        t.run_bytes(&[&b"SET"[..], b"cut", &cut]);
        assert_eq!(
            t.run(&["PFADD", "cut", "x"]),
            "-INVALIDOBJ Corrupted HLL object detected\r\n"
        );
    }

    #[test]
    fn large_cardinalities_stay_accurate() {
        let mut v = new_hll();
        let n = 200_000u32;
        for i in 0..n {
            add(&mut v, &i.to_le_bytes()).unwrap();
        }
        assert_eq!(v[4], DENSE);
        let c = count(&v).unwrap() as f64;
        assert!((c - f64::from(n)).abs() / f64::from(n) < 0.03, "{c}");
    }
}
