//! Glob-style matching with Redis's rules (`stringmatchlen`): `*`, `?`, `[abc]`, `[^a]`, `[a-z]`,
//! and `\` to escape.

/// True when `s` matches `pattern`.
pub fn glob_match(pattern: &[u8], s: &[u8], nocase: bool) -> bool {
    // Iterative matcher with single-star backtracking; bounded O(len(p) * len(s)).
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    let eq = |a: u8, b: u8| {
        if nocase {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    while i < s.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, i));
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    let (matched, next) = class_match(pattern, p, s[i], nocase);
                    if matched {
                        p = next;
                        i += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if eq(pattern[p + 1], s[i]) {
                        p += 2;
                        i += 1;
                        continue;
                    }
                }
                c => {
                    if eq(c, s[i]) {
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, si)) => {
                p = sp;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

/// Matches `c` against the class starting at `pattern[start] == '['`; returns (matched, index
/// after the class). Like Redis, an unterminated class extends to the end of the pattern.
fn class_match(pattern: &[u8], start: usize, c: u8, nocase: bool) -> (bool, usize) {
    let mut p = start + 1;
    let negate = pattern.get(p) == Some(&b'^');
    if negate {
        p += 1;
    }
    let norm = |x: u8| if nocase { x.to_ascii_lowercase() } else { x };
    let c = norm(c);
    let mut matched = false;
    loop {
        let Some(&ch) = pattern.get(p) else {
            return (matched != negate, pattern.len());
        };
        if ch == b']' {
            break;
        }
        if ch == b'\\' && p + 1 < pattern.len() {
            if norm(pattern[p + 1]) == c {
                matched = true;
            }
            p += 2;
        } else if p + 2 < pattern.len() && pattern[p + 1] == b'-' && pattern[p + 2] != b']' {
            let (mut lo, mut hi) = (norm(ch), norm(pattern[p + 2]));
            if lo > hi {
                std::mem::swap(&mut lo, &mut hi);
            }
            if (lo..=hi).contains(&c) {
                matched = true;
            }
            p += 3;
        } else {
            if norm(ch) == c {
                matched = true;
            }
            p += 1;
        }
    }
    (matched != negate, p + 1)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn patterns() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "anything", true),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h*llo", "heeeello", true),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("user:*:name", "user:42:name", true),
            ("user:*:name", "user:42:age", false),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("*a*b*c*", "xxaxxbxxcxx", true),
            ("", "", true),
            ("", "a", false),
            ("[abc", "[abc", false),
            ("[abc", "a", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(
                glob_match(p.as_bytes(), s.as_bytes(), false),
                *want,
                "{p} ~ {s}"
            );
        }
        assert!(glob_match(b"HELLO*", b"hello world", true));
    }
}
