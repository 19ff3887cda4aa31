//! The generator behind scripts' `math.random`: Redis replaces Lua's (libc `rand`) with the
//! 48-bit linear congruential generator of `lrand48`, so a script sees the same sequence on
//! every platform. One per engine (Redis has one per process; here, one per tenant).

const A: u64 = 0x5_DEEC_E66D;
const C: u64 = 0xB;
const MASK: u64 = (1 << 48) - 1;
const INITIAL: u64 = 0x1234_ABCD_330E;

/// `RAND48_MAX` as Redis defines it (`INT32_MAX`).
pub const MAX: i64 = i32::MAX as i64;

#[derive(Debug, Clone)]
pub struct Rand48(u64);

impl Default for Rand48 {
    fn default() -> Self {
        Rand48(INITIAL)
    }
}

impl Rand48 {
    /// `redisSrand48`: the high 32 bits of the state from the seed, the low 16 fixed.
    pub fn seed(&mut self, seed: i32) {
        self.0 = ((u64::from(seed as u32)) << 16) | 0x330E;
    }

    /// `redisLrand48`: a non-negative 31-bit number.
    pub fn next(&mut self) -> i64 {
        self.0 = (A.wrapping_mul(self.0).wrapping_add(C)) & MASK;
        (self.0 >> 17) as i64
    }

    /// A number in [0, 1), as `math.random()` returns it.
    pub fn unit(&mut self) -> f64 {
        (self.next() % MAX) as f64 / MAX as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_matches_redis() {
        // redis-server 7.0: EVAL "return {math.random(100), math.random(100),
        // tostring(math.random())}" 0 on a fresh server answers 40, 85, "0.35333609737146".
        let mut r = Rand48::default();
        assert_eq!((r.unit() * 100.0).floor() as i64 + 1, 40);
        assert_eq!((r.unit() * 100.0).floor() as i64 + 1, 85);
        assert_eq!(format!("{:.14}", r.unit()), "0.35333609737146");
    }

    #[test]
    fn seeding_restarts_the_sequence() {
        let mut a = Rand48::default();
        let mut b = Rand48::default();
        a.seed(42);
        b.seed(42);
        for _ in 0..10 {
            assert_eq!(a.next(), b.next());
        }
    }
}
