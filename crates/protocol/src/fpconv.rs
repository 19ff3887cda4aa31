//! A faithful port of `fpconv_dtoa` (deps/fpconv in Redis 7.2), the Grisu2 double-to-text
//! conversion Redis 7.2 uses for scores, RESP3 doubles and Lua numbers passed to `redis.call`.
//!
//! Why a port and not `ryu` or Rust's `{}`: Grisu2 does not always find the shortest or the
//! closest digits (it works in a slightly narrowed interval), and `fpconv` has its own choice of
//! when to write an exponent (`1e-7`, `123456789012345680`, `1.5e+300`), e.g. 1e23 is
//! `99999999999999990000000` there, where the shortest digits give `1e23`. Redis's replies are these exact bytes, so the
//! digit generation and the layout are transcribed step for step, unsigned wrap-around included
//! (every `wrapping_*` below is a C `uint64_t` operation). The unit tests in `number.rs` and the
//! fixture test compare it with redis-server 7.2.6's own answers.
//!
//! Original: Copyright (c) 2013-2019 night-shift, (c) 2009 Florian Loitsch; Boost Software
//! License 1.0 (the notice is kept in Redis's deps/fpconv/fpconv_dtoa.c).

const FRAC_MASK: u64 = 0x000F_FFFF_FFFF_FFFF;
const EXP_MASK: u64 = 0x7FF0_0000_0000_0000;
const HIDDEN_BIT: u64 = 0x0010_0000_0000_0000;
const SIGN_MASK: u64 = 0x8000_0000_0000_0000;
const EXP_BIAS: i32 = 1023 + 52;

/// Room for the longest text `fpconv_dtoa` writes. Its C signature says `char dest[24]`, but a
/// negative 17-digit number just under 1e24 is written as a plain integer of 25 bytes (Redis's
/// callers all pass larger buffers).
pub const MAX_LEN: usize = 32;

const TENS: [u64; 20] = [
    10_000_000_000_000_000_000,
    1_000_000_000_000_000_000,
    100_000_000_000_000_000,
    10_000_000_000_000_000,
    1_000_000_000_000_000,
    100_000_000_000_000,
    10_000_000_000_000,
    1_000_000_000_000,
    100_000_000_000,
    10_000_000_000,
    1_000_000_000,
    100_000_000,
    10_000_000,
    1_000_000,
    100_000,
    10_000,
    1_000,
    100,
    10,
    1,
];

#[derive(Clone, Copy)]
struct Fp {
    frac: u64,
    exp: i32,
}

const NPOWERS: i32 = 87;
const STEPPOWERS: i32 = 8;
const FIRSTPOWER: i32 = -348;
const EXPMAX: i32 = -32;
const EXPMIN: i32 = -60;

/// Cached powers of ten 10^(-348 + 8i) as 64-bit mantissa and binary exponent (fpconv_powers.h).
#[rustfmt::skip]
const POWERS_TEN: [Fp; 87] = {
    const fn p(frac: u64, exp: i32) -> Fp { Fp { frac, exp } }
    [
        p(18054884314459144840, -1220), p(13451937075301367670, -1193),
        p(10022474136428063862, -1166), p(14934650266808366570, -1140),
        p(11127181549972568877, -1113), p(16580792590934885855, -1087),
        p(12353653155963782858, -1060), p(18408377700990114895, -1034),
        p(13715310171984221708, -1007), p(10218702384817765436, -980),
        p(15227053142812498563, -954),  p(11345038669416679861, -927),
        p(16905424996341287883, -901),  p(12595523146049147757, -874),
        p(9384396036005875287,  -847),  p(13983839803942852151, -821),
        p(10418772551374772303, -794),  p(15525180923007089351, -768),
        p(11567161174868858868, -741),  p(17236413322193710309, -715),
        p(12842128665889583758, -688),  p(9568131466127621947,  -661),
        p(14257626930069360058, -635),  p(10622759856335341974, -608),
        p(15829145694278690180, -582),  p(11793632577567316726, -555),
        p(17573882009934360870, -529),  p(13093562431584567480, -502),
        p(9755464219737475723,  -475),  p(14536774485912137811, -449),
        p(10830740992659433045, -422),  p(16139061738043178685, -396),
        p(12024538023802026127, -369),  p(17917957937422433684, -343),
        p(13349918974505688015, -316),  p(9946464728195732843,  -289),
        p(14821387422376473014, -263),  p(11042794154864902060, -236),
        p(16455045573212060422, -210),  p(12259964326927110867, -183),
        p(18268770466636286478, -157),  p(13611294676837538539, -130),
        p(10141204801825835212, -103),  p(15111572745182864684, -77),
        p(11258999068426240000, -50),   p(16777216000000000000, -24),
        p(12500000000000000000,   3),   p(9313225746154785156,   30),
        p(13877787807814456755,  56),   p(10339757656912845936,  83),
        p(15407439555097886824, 109),   p(11479437019748901445, 136),
        p(17105694144590052135, 162),   p(12744735289059618216, 189),
        p(9495567745759798747,  216),   p(14149498560666738074, 242),
        p(10542197943230523224, 269),   p(15709099088952724970, 295),
        p(11704190886730495818, 322),   p(17440603504673385349, 348),
        p(12994262207056124023, 375),   p(9681479787123295682,  402),
        p(14426529090290212157, 428),   p(10748601772107342003, 455),
        p(16016664761464807395, 481),   p(11933345169920330789, 508),
        p(17782069995880619868, 534),   p(13248674568444952270, 561),
        p(9871031767461413346,  588),   p(14708983551653345445, 614),
        p(10959046745042015199, 641),   p(16330252207878254650, 667),
        p(12166986024289022870, 694),   p(18130221999122236476, 720),
        p(13508068024458167312, 747),   p(10064294952495520794, 774),
        p(14996968138956309548, 800),   p(11173611982879273257, 827),
        p(16649979327439178909, 853),   p(12405201291620119593, 880),
        p(9242595204427927429,  907),   p(13772540099066387757, 933),
        p(10261342003245940623, 960),   p(15290591125556738113, 986),
        p(11392378155556871081, 1013),  p(16975966327722178521, 1039),
        p(12648080533535911531, 1066),
    ]
};

/// The cached power whose product with a number of binary exponent `exp` lands in
/// [`EXPMIN`, `EXPMAX`], and its decimal exponent `k`.
fn find_cachedpow10(exp: i32) -> (Fp, i32) {
    const ONE_LOG_TEN: f64 = 0.301_029_995_663_981_14;
    // C: `const int approx = -(exp + npowers) * one_log_ten;` (a double truncated to int).
    let approx = (f64::from(-(exp + NPOWERS)) * ONE_LOG_TEN) as i32;
    // Every double's `upper.exp` keeps this in 0..87, and the walk below only steps to the
    // neighbour that brings the product into range; `clamp` only keeps a slice index in bounds.
    let mut idx = ((approx - FIRSTPOWER) / STEPPOWERS).clamp(0, NPOWERS - 1);
    loop {
        let current = exp + POWERS_TEN[idx as usize].exp + 64;
        if current < EXPMIN && idx < NPOWERS - 1 {
            idx += 1;
            continue;
        }
        if current > EXPMAX && idx > 0 {
            idx -= 1;
            continue;
        }
        return (POWERS_TEN[idx as usize], FIRSTPOWER + idx * STEPPOWERS);
    }
}

fn build_fp(d: f64) -> Fp {
    let bits = d.to_bits();
    let frac = bits & FRAC_MASK;
    let exp = ((bits & EXP_MASK) >> 52) as i32;
    if exp != 0 {
        Fp {
            frac: frac + HIDDEN_BIT,
            exp: exp - EXP_BIAS,
        }
    } else {
        Fp {
            frac,
            exp: -EXP_BIAS + 1,
        }
    }
}

fn normalize(fp: &mut Fp) {
    // `fp.frac` is never 0 here (zero is answered before Grisu runs), so this ends.
    while fp.frac & HIDDEN_BIT == 0 {
        fp.frac <<= 1;
        fp.exp -= 1;
    }
    let shift = 64 - 52 - 1;
    fp.frac <<= shift;
    fp.exp -= shift;
}

fn get_normalized_boundaries(fp: &Fp) -> (Fp, Fp) {
    let mut upper = Fp {
        frac: (fp.frac << 1) + 1,
        exp: fp.exp - 1,
    };
    while upper.frac & (HIDDEN_BIT << 1) == 0 {
        upper.frac <<= 1;
        upper.exp -= 1;
    }
    let u_shift = 64 - 52 - 2;
    upper.frac <<= u_shift;
    upper.exp -= u_shift;

    let l_shift = if fp.frac == HIDDEN_BIT { 2 } else { 1 };
    let mut lower = Fp {
        frac: (fp.frac << l_shift) - 1,
        exp: fp.exp - l_shift,
    };
    lower.frac <<= lower.exp - upper.exp;
    lower.exp = upper.exp;
    (lower, upper)
}

fn multiply(a: &Fp, b: &Fp) -> Fp {
    const LOMASK: u64 = 0x0000_0000_FFFF_FFFF;
    let ah_bl = (a.frac >> 32) * (b.frac & LOMASK);
    let al_bh = (a.frac & LOMASK) * (b.frac >> 32);
    let al_bl = (a.frac & LOMASK) * (b.frac & LOMASK);
    let ah_bh = (a.frac >> 32) * (b.frac >> 32);
    let mut tmp = (ah_bl & LOMASK) + (al_bh & LOMASK) + (al_bl >> 32);
    // round up
    tmp += 1 << 31;
    Fp {
        frac: ah_bh + (ah_bl >> 32) + (al_bh >> 32) + (tmp >> 32),
        exp: a.exp + b.exp + 64,
    }
}

fn round_digit(digits: &mut [u8], ndigits: usize, delta: u64, mut rem: u64, kappa: u64, frac: u64) {
    while rem < frac
        && delta.wrapping_sub(rem) >= kappa
        && (rem.wrapping_add(kappa) < frac
            || frac.wrapping_sub(rem) > rem.wrapping_add(kappa).wrapping_sub(frac))
    {
        digits[ndigits - 1] = digits[ndigits - 1].wrapping_sub(1);
        rem = rem.wrapping_add(kappa);
    }
}

/// Grisu2's digit loop. Returns how many digits it wrote and adds to `k` the decimal exponent of
/// the last one.
fn generate_digits(
    fp: &Fp,
    upper: &Fp,
    lower: &Fp,
    digits: &mut [u8; DIGITS],
    k: &mut i32,
) -> usize {
    let wfrac = upper.frac.wrapping_sub(fp.frac);
    let mut delta = upper.frac.wrapping_sub(lower.frac);

    let shift = (-upper.exp) as u32; // 32..=60: `upper.exp` is in [EXPMIN, EXPMAX]
    let one_frac = 1u64 << shift;

    let mut part1 = upper.frac >> shift;
    let mut part2 = upper.frac & (one_frac - 1);

    let mut idx = 0usize;
    let mut kappa: i32 = 10;
    // 1000000000
    let mut divp = 10usize;
    while kappa > 0 {
        let div = TENS[divp];
        let digit = part1 / div;
        if (digit != 0 || idx != 0) && idx < DIGITS {
            digits[idx] = digit as u8 + b'0';
            idx += 1;
        }
        part1 -= digit * div;
        kappa -= 1;

        let tmp = (part1 << shift).wrapping_add(part2);
        if tmp <= delta {
            *k += kappa;
            round_digit(digits, idx, delta, tmp, div << shift, wfrac);
            return idx;
        }
        divp += 1;
    }

    // 10
    let mut unit = 18usize;
    loop {
        part2 = part2.wrapping_mul(10);
        delta = delta.wrapping_mul(10);
        kappa -= 1;

        let digit = part2 >> shift;
        if (digit != 0 || idx != 0) && idx < DIGITS {
            digits[idx] = digit as u8 + b'0';
            idx += 1;
        }
        part2 &= one_frac - 1;
        if part2 < delta {
            *k += kappa;
            round_digit(
                digits,
                idx,
                delta,
                part2,
                one_frac,
                wfrac.wrapping_mul(TENS[unit]),
            );
            return idx;
        }
        // Grisu2 ends within 17 digits for every double; the C code's `unit--` would run off its
        // table only past that, so stopping there changes nothing for any real input.
        if unit == 0 {
            *k += kappa;
            return idx;
        }
        unit -= 1;
    }
}

/// Room for the digits: Grisu2 writes at most 17 for a double (C's buffer holds 18).
const DIGITS: usize = 18;

fn grisu2(d: f64, digits: &mut [u8; DIGITS], k: &mut i32) -> usize {
    let mut w = build_fp(d);
    let (mut lower, mut upper) = get_normalized_boundaries(&w);
    normalize(&mut w);

    let (cp, ck) = find_cachedpow10(upper.exp);

    w = multiply(&w, &cp);
    upper = multiply(&upper, &cp);
    lower = multiply(&lower, &cp);

    lower.frac = lower.frac.wrapping_add(1);
    upper.frac = upper.frac.wrapping_sub(1);

    *k = -ck;
    generate_digits(&w, &upper, &lower, digits, k)
}

/// fpconv's layout of `digits` × 10^`k`: a plain integer, a plain decimal, or exponent form.
fn emit_digits(digits: &[u8], k: i32, neg: bool, dest: &mut [u8]) -> usize {
    let mut ndigits = digits.len() as i32;
    let mut exp = (k + ndigits - 1).abs();

    // write plain integer
    if k >= 0 && exp < ndigits + 7 {
        let n = digits.len();
        dest[..n].copy_from_slice(digits);
        dest[n..n + k as usize].fill(b'0');
        return n + k as usize;
    }

    // write decimal w/o scientific notation
    if k < 0 && (k > -7 || exp < 4) {
        let n = digits.len();
        let offset = ndigits - k.abs();
        if offset <= 0 {
            // fp < 1.0 -> write leading zero
            let zeros = (-offset) as usize;
            dest[0] = b'0';
            dest[1] = b'.';
            dest[2..2 + zeros].fill(b'0');
            dest[2 + zeros..2 + zeros + n].copy_from_slice(digits);
            return n + 2 + zeros;
        }
        // fp > 1.0
        let offset = offset as usize;
        dest[..offset].copy_from_slice(&digits[..offset]);
        dest[offset] = b'.';
        dest[offset + 1..n + 1].copy_from_slice(&digits[offset..]);
        return n + 1;
    }

    // write decimal w/ scientific notation (a negative number keeps one digit less, as in C)
    ndigits = ndigits.min(18 - i32::from(neg));
    let mut idx = 0;
    dest[idx] = digits[0];
    idx += 1;
    if ndigits > 1 {
        dest[idx] = b'.';
        idx += 1;
        let rest = &digits[1..ndigits as usize];
        dest[idx..idx + rest.len()].copy_from_slice(rest);
        idx += rest.len();
    }
    dest[idx] = b'e';
    idx += 1;
    dest[idx] = if k + ndigits - 1 < 0 { b'-' } else { b'+' };
    idx += 1;

    let mut cent = 0;
    if exp > 99 {
        cent = exp / 100;
        dest[idx] = cent as u8 + b'0';
        idx += 1;
        exp -= cent * 100;
    }
    if exp > 9 {
        let dec = exp / 10;
        dest[idx] = dec as u8 + b'0';
        idx += 1;
        exp -= dec * 10;
    } else if cent != 0 {
        dest[idx] = b'0';
        idx += 1;
    }
    dest[idx] = (exp % 10) as u8 + b'0';
    idx + 1
}

/// `fpconv_dtoa(d, dest)`: writes `d` as Redis 7.2's Grisu2 text into `dest` and returns its
/// length. Zero is `0` (`-0` when negative), NaN `nan`, infinities `inf`, each after a `-` when
/// the sign bit is set, as in C.
pub fn dtoa(d: f64, dest: &mut [u8; MAX_LEN]) -> usize {
    let bits = d.to_bits();
    let mut len = 0;
    let neg = bits & SIGN_MASK != 0;
    if neg {
        dest[0] = b'-';
        len = 1;
    }
    // filter_special
    if d == 0.0 {
        dest[len] = b'0';
        return len + 1;
    }
    if bits & EXP_MASK == EXP_MASK {
        let word = if bits & FRAC_MASK != 0 {
            b"nan"
        } else {
            b"inf"
        };
        dest[len..len + 3].copy_from_slice(word);
        return len + 3;
    }

    let mut digits = [0u8; DIGITS];
    let mut k = 0;
    let ndigits = grisu2(d, &mut digits, &mut k);
    len + emit_digits(&digits[..ndigits], k, neg, &mut dest[len..])
}
