//! Glob-style matching with Redis's rules (`stringmatchlen`): `*`, `?`, `[abc]`, `[^a]`, `[a-z]`,
//! and `\` to escape, at a bounded cost.
//!
//! Redis matches recursively, trying every split of the string at every `*`: a pattern of a star
//! and 20,000 letters against a 200 KB key name costs 4·10⁹ steps there. Here a pattern is
//! compiled once ([`Glob::new`]) into the pieces between its stars. A piece has a fixed length,
//! so the leftmost place where it fits is always the best one to continue from: the first piece
//! must match the start, the last the end, and each one between is found by one left-to-right
//! search. A piece of plain bytes is found with `memchr::memmem` (linear); a piece with `?` or
//! classes by a bit-parallel search (Shift-And) when it is longer than a machine word, or by
//! trying each position when it is short. The cost of a match is linear in the string for
//! plain patterns and O(string × ⌈piece/64⌉) otherwise, whatever the number of stars.
//!
//! Redis's edge cases are kept: an unterminated class runs to the end of the pattern; `\` at
//! the end of the pattern is a literal backslash; a range may end with `]` (`[a-]` is `a`..`]`);
//! an escaped byte inside a class is compared exactly even when ignoring case; the empty string
//! matches only the empty pattern and the pattern `*` (which KEYS and SCAN treat as "all"); and
//! a pattern with more than 1000 stars before its last piece matches nothing (Redis's nesting
//! limit against abusive patterns).

use memchr::memmem;

/// The most stars Redis follows before giving up on a pattern (its recursion limit).
const MAX_NESTING: usize = 1000;

/// Longest piece searched by trying each position; longer ones use Shift-And.
const SHORT_PIECE: usize = 64;

/// Largest Shift-And tables a pattern may build (bytes); beyond, pieces are searched by trying
/// each position (only patterns of megabytes get there).
const MAX_TABLE_BYTES: usize = 16 << 20;

/// True when `s` matches `pattern` (compiles the pattern: use [`Glob`] to match many strings).
pub fn glob_match(pattern: &[u8], s: &[u8], nocase: bool) -> bool {
    Glob::new(pattern, nocase).matches(s)
}

/// One position of a piece: what byte it accepts.
#[derive(Clone, Copy, Debug)]
enum Unit {
    /// Exactly this byte.
    Byte(u8),
    /// This byte in either case (ignoring case; stored lowercase).
    Fold(u8),
    /// Any byte (`?`).
    Any,
    /// A class: its text `pattern[start..end]` (after `[` and `^`, up to but excluding `]`).
    Class { start: u32, end: u32, negate: bool },
}

/// The text between two stars.
struct Piece {
    units: Vec<Unit>,
    /// The piece is plain bytes (found with memmem).
    finder: Option<memmem::Finder<'static>>,
    /// Shift-And masks, one per byte value, ⌈len/64⌉ words each (long non-plain pieces).
    masks: Option<Vec<u64>>,
}

/// A compiled pattern.
pub struct Glob {
    pattern: Vec<u8>,
    nocase: bool,
    /// The pieces between stars, in order.
    pieces: Vec<Piece>,
    /// The pattern starts with a star (else the first piece must match the start of the string).
    star_first: bool,
    /// The pattern ends with a star (else the last piece must match the end of the string).
    star_last: bool,
    /// The pattern is exactly `*`.
    all: bool,
    /// More stars than Redis follows: nothing matches.
    too_deep: bool,
}

impl std::fmt::Debug for Glob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Glob")
            .field(&String::from_utf8_lossy(&self.pattern))
            .finish()
    }
}

impl Glob {
    pub fn new(pattern: &[u8], nocase: bool) -> Glob {
        let mut pieces = Vec::new();
        let mut units = Vec::new();
        let mut star_first = false;
        let mut star_last = false;
        let mut stars = 0usize;
        let mut p = 0;
        while p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if pieces.is_empty() && units.is_empty() {
                        star_first = true;
                    } else {
                        pieces.push(std::mem::take(&mut units));
                    }
                    if p == pattern.len() {
                        star_last = true;
                    } else {
                        stars += 1;
                    }
                    continue;
                }
                b'?' => {
                    units.push(Unit::Any);
                    p += 1;
                }
                b'[' => {
                    let (unit, next) = parse_class(pattern, p);
                    units.push(unit);
                    p = next;
                }
                b'\\' if p + 1 < pattern.len() => {
                    units.push(literal(pattern[p + 1], nocase));
                    p += 2;
                }
                c => {
                    units.push(literal(c, nocase));
                    p += 1;
                }
            }
        }
        if !units.is_empty() || pieces.is_empty() {
            pieces.push(units);
        }
        let mut table_budget = MAX_TABLE_BYTES;
        let pieces = pieces
            .into_iter()
            .map(|units| Piece::new(units, pattern, nocase, &mut table_budget))
            .collect();
        Glob {
            pattern: pattern.to_vec(),
            nocase,
            pieces,
            star_first,
            star_last,
            all: pattern == b"*",
            too_deep: stars > MAX_NESTING,
        }
    }

    /// The pattern is `*`: callers may skip matching.
    pub fn matches_all(&self) -> bool {
        self.all
    }

    /// True when `s` matches the pattern.
    pub fn matches(&self, s: &[u8]) -> bool {
        if self.all {
            return true;
        }
        if s.is_empty() {
            return self.pattern.is_empty();
        }
        if self.too_deep {
            return false;
        }
        let n = self.pieces.len();
        let (mut from, mut to) = (0, s.len());
        let mut middle = &self.pieces[..];
        if !self.star_first {
            let first = &self.pieces[0];
            if first.len() > s.len() || !self.fits(first, &s[..first.len()]) {
                return false;
            }
            from = first.len();
            middle = &middle[1..];
            if n == 1 && !self.star_last {
                return from == s.len();
            }
        }
        if !self.star_last {
            let Some((last, rest)) = middle.split_last() else {
                return self.star_last || from == s.len();
            };
            if last.len() > to - from || !self.fits(last, &s[to - last.len()..]) {
                return false;
            }
            to -= last.len();
            middle = rest;
        }
        for piece in middle {
            match self.find(piece, &s[from..to]) {
                Some(at) => from += at + piece.len(),
                None => return false,
            }
        }
        true
    }

    /// Whether `piece` matches `s` exactly (same length).
    fn fits(&self, piece: &Piece, s: &[u8]) -> bool {
        piece.units.iter().zip(s).all(|(u, &c)| self.accepts(*u, c))
    }

    fn accepts(&self, unit: Unit, c: u8) -> bool {
        match unit {
            Unit::Byte(b) => b == c,
            Unit::Fold(b) => b == c.to_ascii_lowercase(),
            Unit::Any => true,
            Unit::Class { start, end, negate } => {
                class_accepts(&self.pattern[start as usize..end as usize], c, self.nocase) != negate
            }
        }
    }

    /// Leftmost position of `piece` in `s`.
    fn find(&self, piece: &Piece, s: &[u8]) -> Option<usize> {
        let m = piece.len();
        if m > s.len() {
            return None;
        }
        if let Some(f) = &piece.finder {
            return f.find(s);
        }
        if let Some(masks) = &piece.masks {
            return shift_and(masks, m, s);
        }
        (0..=s.len() - m).find(|&i| self.fits(piece, &s[i..i + m]))
    }
}

impl Piece {
    fn new(units: Vec<Unit>, pattern: &[u8], nocase: bool, budget: &mut usize) -> Piece {
        let plain: Option<Vec<u8>> = units
            .iter()
            .map(|u| match *u {
                Unit::Byte(b) => Some(b),
                _ => None,
            })
            .collect();
        let finder = plain.map(|bytes| memmem::Finder::new(&bytes).into_owned());
        let words = units.len().div_ceil(64);
        let table = 256 * words * 8;
        let masks =
            (finder.is_none() && units.len() > SHORT_PIECE && table <= *budget).then(|| {
                *budget -= table;
                let mut masks = vec![0u64; 256 * words];
                for (j, u) in units.iter().enumerate() {
                    for c in 0..=255u8 {
                        let hit = match *u {
                            Unit::Byte(b) => b == c,
                            Unit::Fold(b) => b == c.to_ascii_lowercase(),
                            Unit::Any => true,
                            Unit::Class { start, end, negate } => {
                                class_accepts(&pattern[start as usize..end as usize], c, nocase)
                                    != negate
                            }
                        };
                        if hit {
                            masks[c as usize * words + j / 64] |= 1 << (j % 64);
                        }
                    }
                }
                masks
            });
        Piece {
            units,
            finder,
            masks,
        }
    }

    fn len(&self) -> usize {
        self.units.len()
    }
}

fn literal(c: u8, nocase: bool) -> Unit {
    if nocase && c.is_ascii_alphabetic() {
        Unit::Fold(c.to_ascii_lowercase())
    } else {
        Unit::Byte(c)
    }
}

/// Parses the class starting at `pattern[at] == '['` as Redis does; returns it and the index
/// after it. An unterminated class runs to the end of the pattern.
fn parse_class(pattern: &[u8], at: usize) -> (Unit, usize) {
    let mut p = at + 1;
    let negate = pattern.get(p) == Some(&b'^');
    if negate {
        p += 1;
    }
    let start = p;
    loop {
        if p >= pattern.len() {
            return (class(start, pattern.len(), negate), pattern.len());
        }
        match pattern[p] {
            b'\\' if p + 1 < pattern.len() => p += 2,
            b']' => return (class(start, p, negate), p + 1),
            _ if p + 2 < pattern.len() && pattern[p + 1] == b'-' => p += 3,
            _ => p += 1,
        }
    }
}

fn class(start: usize, end: usize, negate: bool) -> Unit {
    Unit::Class {
        start: start as u32,
        end: end as u32,
        negate,
    }
}

/// Whether `c` is in the class text `body` (without brackets and `^`), by Redis's rules.
fn class_accepts(body: &[u8], c: u8, nocase: bool) -> bool {
    let lower = |x: u8| if nocase { x.to_ascii_lowercase() } else { x };
    let mut p = 0;
    while p < body.len() {
        if body[p] == b'\\' && p + 1 < body.len() {
            // Redis compares an escaped byte exactly, even when ignoring case.
            if body[p + 1] == c {
                return true;
            }
            p += 2;
        } else if p + 2 < body.len() && body[p + 1] == b'-' {
            let (mut lo, mut hi) = (body[p], body[p + 2]);
            if lo > hi {
                std::mem::swap(&mut lo, &mut hi);
            }
            if (lower(lo)..=lower(hi)).contains(&lower(c)) {
                return true;
            }
            p += 3;
        } else {
            if lower(body[p]) == lower(c) {
                return true;
            }
            p += 1;
        }
    }
    false
}

/// Leftmost match of a piece of `m` units in `s` by Shift-And: bit j of the state says that the
/// piece's first j+1 units match the text ending here.
fn shift_and(masks: &[u64], m: usize, s: &[u8]) -> Option<usize> {
    let words = m.div_ceil(64);
    let last = 1u64 << ((m - 1) % 64);
    let mut state = vec![0u64; words];
    for (i, &c) in s.iter().enumerate() {
        let mask = &masks[c as usize * words..(c as usize + 1) * words];
        let mut carry = 1u64;
        for (w, word) in state.iter_mut().enumerate() {
            let shifted = (*word << 1) | carry;
            carry = *word >> 63;
            *word = shifted & mask[w];
        }
        if state[words - 1] & last != 0 {
            return Some(i + 1 - m);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    /// Redis's `stringmatchlen_impl`, transcribed step by step (indices for its pointer and
    /// remaining length), as the reference for the tests.
    fn reference(pat: &[u8], text: &[u8], nocase: bool) -> bool {
        fn go(
            pat: &[u8],
            mut p: usize,
            text: &[u8],
            mut s: usize,
            nocase: bool,
            skip: &mut bool,
            nesting: usize,
        ) -> bool {
            if nesting > 1000 {
                return false;
            }
            let lower = |x: u8| if nocase { x.to_ascii_lowercase() } else { x };
            let len = pat.len();
            while p < len && s < text.len() {
                match pat[p] {
                    b'*' => {
                        while p + 1 < len && pat[p + 1] == b'*' {
                            p += 1;
                        }
                        if p + 1 == len {
                            return true;
                        }
                        while s < text.len() {
                            if go(pat, p + 1, text, s, nocase, skip, nesting + 1) {
                                return true;
                            }
                            if *skip {
                                return false;
                            }
                            s += 1;
                        }
                        *skip = true;
                        return false;
                    }
                    b'?' => s += 1,
                    b'[' => {
                        p += 1;
                        let not = p < len && pat[p] == b'^';
                        if not {
                            p += 1;
                        }
                        let mut matched = false;
                        loop {
                            if len - p >= 2 && pat[p] == b'\\' {
                                p += 1;
                                if pat[p] == text[s] {
                                    matched = true;
                                }
                            } else if p == len {
                                p -= 1;
                                break;
                            } else if pat[p] == b']' {
                                break;
                            } else if len - p >= 3 && pat[p + 1] == b'-' {
                                let (mut lo, mut hi) = (pat[p], pat[p + 2]);
                                if lo > hi {
                                    std::mem::swap(&mut lo, &mut hi);
                                }
                                if (lower(lo)..=lower(hi)).contains(&lower(text[s])) {
                                    matched = true;
                                }
                                p += 2;
                            } else if lower(pat[p]) == lower(text[s]) {
                                matched = true;
                            }
                            p += 1;
                        }
                        if matched == not {
                            return false;
                        }
                        s += 1;
                    }
                    c => {
                        let mut c = c;
                        if c == b'\\' && len - p >= 2 {
                            p += 1;
                            c = pat[p];
                        }
                        if lower(c) != lower(text[s]) {
                            return false;
                        }
                        s += 1;
                    }
                }
                p += 1;
                if s == text.len() {
                    while p < len && pat[p] == b'*' {
                        p += 1;
                    }
                    break;
                }
            }
            p == len && s == text.len()
        }
        go(pat, 0, text, 0, nocase, &mut false, 0)
    }

    #[test]
    fn patterns() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "anything", true),
            ("*", "", true),
            ("**", "", false),
            ("", "", true),
            ("", "a", false),
            ("?", "", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h*llo", "heeeello", true),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[b-a]llo", "hbllo", true),
            ("user:*:name", "user:42:name", true),
            ("user:*:name", "user:42:age", false),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("a\\", "a\\", true),
            ("*a*b*c*", "xxaxxbxxcxx", true),
            ("*a*b*c*", "xxaxxcxxbxx", false),
            ("[abc", "[abc", false),
            ("[abc", "a", true),
            ("a[*]b", "a*b", true),
            ("a[b*", "ab", true),
            ("[a-]", "]", true),
            ("[a-]", "-", false),
            ("[\\]]", "]", true),
            ("[]", "a", false),
            ("a*", "a", true),
            ("*a", "a", true),
            ("*ab", "aab", true),
            ("*aab", "ab", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("?*?", "ab", true),
            ("?*?", "a", false),
            ("*?*?*", "ab", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(
                glob_match(p.as_bytes(), s.as_bytes(), false),
                *want,
                "{p} ~ {s}"
            );
            if !s.is_empty() {
                assert_eq!(
                    reference(p.as_bytes(), s.as_bytes(), false),
                    *want,
                    "reference: {p} ~ {s}"
                );
            }
        }
        assert!(glob_match(b"HELLO*", b"hello world", true));
        assert!(glob_match(b"h[A-Z]llo", b"hello", true));
        assert!(
            !glob_match(b"h[\\E]llo", b"hello", true),
            "escapes are exact"
        );
    }

    #[test]
    fn nesting_is_capped_as_in_redis() {
        let s = vec![b'a'; 2000];
        let within = "a*".repeat(1000) + "a";
        assert!(glob_match(within.as_bytes(), &s, false));
        let beyond = "a*".repeat(1001) + "a";
        assert!(!glob_match(beyond.as_bytes(), &s, false));
        // Trailing stars do not nest.
        let trailing = "a*".repeat(1000) + "*";
        assert!(glob_match(trailing.as_bytes(), &s, false));
    }

    #[test]
    fn adversarial_patterns_cost_linear_time() {
        // Redis's recursive matcher needs ~4·10⁹ steps for each of these.
        let key = vec![b'a'; 200_000];
        let mut plain = b"*".to_vec();
        plain.extend(std::iter::repeat_n(b'a', 20_000));
        plain.push(b'b');
        let mut wild = b"*?".to_vec();
        wild.extend(std::iter::repeat_n(b'a', 20_000));
        wild.push(b'b');
        let mut class = b"*[a]".to_vec();
        class.extend(std::iter::repeat_n(b'a', 20_000));
        class.extend(b"[b]");
        for p in [&plain, &wild, &class] {
            let t = std::time::Instant::now();
            assert!(!glob_match(p, &key, false));
            let mut hit = key.clone();
            hit.push(b'b');
            assert!(glob_match(p, &hit, false));
            assert!(
                t.elapsed() < std::time::Duration::from_secs(2),
                "{:?}",
                t.elapsed()
            );
        }
        // Many stars with many short wild pieces.
        let many = "*a?".repeat(1000) + "*b";
        let t = std::time::Instant::now();
        assert!(!glob_match(many.as_bytes(), &key, false));
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_redis(
            p in proptest::collection::vec(proptest::sample::select(b"ab*?[]^-\\".to_vec()), 0..12),
            s in proptest::collection::vec(proptest::sample::select(b"ab]-*".to_vec()), 1..12),
            nocase: bool,
        ) {
            proptest::prop_assert_eq!(glob_match(&p, &s, nocase), reference(&p, &s, nocase));
        }

        #[test]
        fn long_pieces_agree_with_redis(
            p in proptest::collection::vec(proptest::sample::select(b"ab?*[]".to_vec()), 60..160),
            s in proptest::collection::vec(proptest::sample::select(b"ab".to_vec()), 1..300),
        ) {
            proptest::prop_assert_eq!(glob_match(&p, &s, false), reference(&p, &s, false));
        }
    }
}
