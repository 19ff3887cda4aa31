//! Per-key ownership while an incremental migration moves a tenant pattern by pattern.
//!
//! A [`PatternSplit`] is the ordered list of key patterns of one incremental migration and, for
//! each, where its keys are served as this server sees it. A key belongs to the *first* pattern
//! it matches, in the order the operator gave; keys matching none belong to the implicit last
//! pattern `*` (added unless the operator's list already ends with `*`), so every key has
//! exactly one pattern and the migration is complete when every pattern has moved.
//!
//! The split is immutable: a change (a pattern gated, handed over, moved) installs a new one on
//! the tenant ([`crate::Tenant::set_split`]). [`PatternSplit::place`] is the one rule the
//! server's admission applies to the keys of a command (see `dispatch::admit_work`).

use ferrite_storage::digest::{Digest, bucket_of};
use ferrite_storage::glob::Glob;

/// VERIFY of a moved pattern compares the keys that live at least this long after the pattern's
/// activation (an hour, the default retention of the source's copy): a key that expires sooner
/// may be gone from either side by the time VERIFY runs.
pub const VERIFY_HORIZON_MS: u64 = 3_600_000;

/// Most patterns one incremental migration may have (the implicit `*` included).
pub const MAX_PATTERNS: usize = 64;
/// Longest pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 512;

/// Where the keys of one pattern are served, as this server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Served here.
    Here,
    /// Its cutover is draining: reads are served here, writes wait (then `-TRYAGAIN`).
    Gated,
    /// Its cutover is handing it over: reads and writes wait until the other server confirmed.
    Handing,
    /// Served by the other server: commands on its keys are redirected there.
    There,
}

impl Owner {
    pub fn name(self) -> &'static str {
        match self {
            Owner::Here => "here",
            Owner::Gated => "gated",
            Owner::Handing => "handing_over",
            Owner::There => "moved",
        }
    }
}

/// What the admission does with a command, from the keys it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Every key is served here: run it.
    Here,
    /// A key's pattern is being cut over: wait for the split to change, then place again.
    Wait,
    /// Every key is served by the other server: redirect (the first key is named).
    There { key: Vec<u8> },
    /// Keys on both servers: refused (`-CROSSSLOT`), naming a pattern of each side.
    Cross { here: usize, there: usize },
    /// A command without keys that sees or changes the whole keyspace, which is split.
    Whole,
}

/// Why a pattern list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("PATTERNS needs at least one pattern")]
    Empty,
    #[error("too many patterns: at most {MAX_PATTERNS}")]
    TooMany,
    #[error("pattern {0} is longer than {MAX_PATTERN_LEN} bytes")]
    TooLong(usize),
    #[error("pattern '{0}' is given twice")]
    Duplicate(String),
    #[error(
        "pattern '{later}' comes after '*' and would own no key (a key belongs to the first pattern it matches)"
    )]
    AfterStar { later: String },
}

/// Checks an operator's pattern list and returns it with the implicit last `*` appended when
/// it does not end with `*` already.
pub fn normalize(patterns: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, PatternError> {
    if patterns.is_empty() {
        return Err(PatternError::Empty);
    }
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(patterns.len() + 1);
    for p in patterns {
        if p.len() > MAX_PATTERN_LEN || p.is_empty() {
            return Err(PatternError::TooLong(out.len() + 1));
        }
        if out.iter().any(|q| q == p) {
            return Err(PatternError::Duplicate(String::from_utf8_lossy(p).into()));
        }
        if out.last().is_some_and(|q| q.as_slice() == b"*") {
            return Err(PatternError::AfterStar {
                later: String::from_utf8_lossy(p).into(),
            });
        }
        out.push(p.clone());
    }
    if out.last().is_none_or(|q| q.as_slice() != b"*") {
        out.push(b"*".to_vec());
    }
    if out.len() > MAX_PATTERNS {
        return Err(PatternError::TooMany);
    }
    Ok(out)
}

/// The ordered patterns of one incremental migration and where each one's keys are served.
#[derive(Debug)]
pub struct PatternSplit {
    /// The migration (for error texts and STATUS).
    pub migration: String,
    /// The other server: the target on the source, the source on the target.
    pub peer: String,
    patterns: Vec<Vec<u8>>,
    globs: Vec<Glob>,
    owners: Vec<Owner>,
}

impl Clone for PatternSplit {
    fn clone(&self) -> Self {
        // The compiled globs are rebuilt from the patterns (`Glob` is not `Clone`).
        PatternSplit {
            migration: self.migration.clone(),
            peer: self.peer.clone(),
            patterns: self.patterns.clone(),
            globs: self.patterns.iter().map(|p| Glob::new(p, false)).collect(),
            owners: self.owners.clone(),
        }
    }
}

impl PatternSplit {
    /// A split with every pattern `owner`; `patterns` as [`normalize`] returns them.
    pub fn new(migration: &str, peer: &str, patterns: Vec<Vec<u8>>, owner: Owner) -> Self {
        let globs = patterns.iter().map(|p| Glob::new(p, false)).collect();
        PatternSplit {
            migration: migration.into(),
            peer: peer.into(),
            owners: vec![owner; patterns.len()],
            patterns,
            globs,
        }
    }

    pub fn patterns(&self) -> &[Vec<u8>] {
        &self.patterns
    }

    pub fn owners(&self) -> &[Owner] {
        &self.owners
    }

    /// The pattern's text (lossy), for messages.
    pub fn name(&self, i: usize) -> String {
        self.patterns
            .get(i)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default()
    }

    /// The index of `pattern` in the list.
    pub fn index_of(&self, pattern: &[u8]) -> Option<usize> {
        self.patterns.iter().position(|p| p.as_slice() == pattern)
    }

    /// The same split with pattern `i` owned by `owner`.
    pub fn with(&self, i: usize, owner: Owner) -> Self {
        let mut s = self.clone();
        if let Some(o) = s.owners.get_mut(i) {
            *o = owner;
        }
        s
    }

    /// The pattern that owns `key`: the first that matches it (the last is `*`, so there is
    /// always one; a list without it owns unmatched keys by its last pattern).
    pub fn pattern_of(&self, key: &[u8]) -> usize {
        self.globs
            .iter()
            .position(|g| g.matches(key))
            .unwrap_or(self.globs.len().saturating_sub(1))
    }

    pub fn owner_of(&self, key: &[u8]) -> Owner {
        self.owners
            .get(self.pattern_of(key))
            .copied()
            .unwrap_or(Owner::Here)
    }

    /// Some pattern is not simply served here: the admission must look at keys.
    pub fn is_split(&self) -> bool {
        self.owners.iter().any(|o| *o != Owner::Here)
    }

    /// Every pattern is served by the other server.
    pub fn all_there(&self) -> bool {
        self.owners.iter().all(|o| *o == Owner::There)
    }

    /// Where a command runs, from its keys (`None`: a command without keys that reads or
    /// changes the whole keyspace). `write`: it may change data.
    ///
    /// - keys on both servers → [`Placement::Cross`] (a gated or handed-over key counts as
    ///   here: it is not served there yet);
    /// - all keys there → [`Placement::There`];
    /// - a key being handed over, or a write to a gated key → [`Placement::Wait`];
    /// - without keys: refused while any pattern is there ([`Placement::Whole`]), waits while a
    ///   pattern is being handed over (or gated, for a write).
    pub fn place(&self, keys: Option<&mut dyn Iterator<Item = &[u8]>>, write: bool) -> Placement {
        let Some(keys) = keys else {
            if self.owners.contains(&Owner::There) {
                return Placement::Whole;
            }
            if self.owners.contains(&Owner::Handing)
                || (write && self.owners.contains(&Owner::Gated))
            {
                return Placement::Wait;
            }
            return Placement::Here;
        };
        let mut here: Option<usize> = None;
        let mut there: Option<(usize, &[u8])> = None;
        let mut wait = false;
        for key in keys {
            let i = self.pattern_of(key);
            match self.owners.get(i).copied().unwrap_or(Owner::Here) {
                Owner::There => {
                    there.get_or_insert((i, key));
                }
                o => {
                    here.get_or_insert(i);
                    wait |= o == Owner::Handing || (write && o == Owner::Gated);
                }
            }
            if let (Some(h), Some((t, _))) = (here, there) {
                return Placement::Cross { here: h, there: t };
            }
        }
        match (here, there) {
            (None, Some((_, key))) => Placement::There { key: key.to_vec() },
            _ if wait => Placement::Wait,
            _ => Placement::Here,
        }
    }

    /// Key count and digest of the keys pattern `i` owns in `db` that are still alive after
    /// `alive_after` (Unix ms; keys without expiry always are). A cutover compares both servers
    /// at their own clock (a key expiring meanwhile only makes it drain again); VERIFY compares
    /// keys that outlive [`VERIFY_HORIZON_MS`] past the activation, which neither side can have
    /// expired since. Walks every key: O(keys) under the caller's lock.
    pub fn digest_of(&self, i: usize, db: &ferrite_storage::Db, alive_after: u64) -> (u64, u64) {
        let mut d = Digest::default();
        let mut keys = 0u64;
        for (k, e) in db.iter() {
            if self.pattern_of(k) == i && e.expire_at().is_none_or(|at| at > alive_after) {
                d.add(bucket_of(k), e.key_digest(k));
                keys += 1;
            }
        }
        (keys, d.combined())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(patterns: &[&str]) -> PatternSplit {
        let list: Vec<Vec<u8>> = patterns.iter().map(|p| p.as_bytes().to_vec()).collect();
        PatternSplit::new(
            "mig_1",
            "10.0.0.2:6379",
            normalize(&list).unwrap(),
            Owner::Here,
        )
    }

    fn place(s: &PatternSplit, keys: &[&str], write: bool) -> Placement {
        let mut it = keys.iter().map(|k| k.as_bytes());
        s.place(Some(&mut it), write)
    }

    #[test]
    fn a_key_belongs_to_the_first_pattern_it_matches() {
        let s = split(&["user:*", "user:admin:*", "order:*"]);
        assert_eq!(s.patterns().len(), 4, "the implicit '*' is added");
        assert_eq!(s.pattern_of(b"user:1"), 0);
        // Also matches the second pattern, but the first one in order wins.
        assert_eq!(s.pattern_of(b"user:admin:7"), 0);
        assert_eq!(s.pattern_of(b"order:9"), 2);
        assert_eq!(
            s.pattern_of(b"session:x"),
            3,
            "unmatched keys: the implicit *"
        );
        assert_eq!(s.pattern_of(b""), 3);
    }

    #[test]
    fn pattern_lists_are_checked() {
        let v = |l: &[&str]| -> Vec<Vec<u8>> { l.iter().map(|p| p.as_bytes().to_vec()).collect() };
        assert_eq!(normalize(&[]), Err(PatternError::Empty));
        assert_eq!(normalize(&v(&["a*", "*"])).unwrap(), v(&["a*", "*"]));
        assert_eq!(normalize(&v(&["*"])).unwrap(), v(&["*"]));
        assert!(matches!(
            normalize(&v(&["a*", "a*"])),
            Err(PatternError::Duplicate(_))
        ));
        assert!(matches!(
            normalize(&v(&["*", "a*"])),
            Err(PatternError::AfterStar { .. })
        ));
        assert!(matches!(
            normalize(&v(&[""])),
            Err(PatternError::TooLong(1))
        ));
        let long = "x".repeat(MAX_PATTERN_LEN + 1);
        assert!(matches!(
            normalize(&v(&["a", &long])),
            Err(PatternError::TooLong(2))
        ));
        let ok = "x".repeat(MAX_PATTERN_LEN);
        assert!(normalize(&v(&[&ok])).is_ok());
        // At the limit with the implicit '*', and one past it.
        let many: Vec<String> = (0..MAX_PATTERNS - 1).map(|i| format!("p{i}:*")).collect();
        let many_ref: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(normalize(&v(&many_ref)).unwrap().len(), MAX_PATTERNS);
        let too_many: Vec<String> = (0..MAX_PATTERNS).map(|i| format!("p{i}:*")).collect();
        let too_ref: Vec<&str> = too_many.iter().map(String::as_str).collect();
        assert_eq!(normalize(&v(&too_ref)), Err(PatternError::TooMany));
    }

    #[test]
    fn placement_by_owner() {
        let s = split(&["user:*", "order:*"]);
        assert!(!s.is_split());
        assert_eq!(place(&s, &["user:1", "order:1"], true), Placement::Here);
        assert_eq!(s.place(None, true), Placement::Here);

        let gated = s.with(0, Owner::Gated);
        assert!(gated.is_split());
        assert_eq!(
            place(&gated, &["user:1"], false),
            Placement::Here,
            "reads go on"
        );
        assert_eq!(place(&gated, &["user:1"], true), Placement::Wait);
        assert_eq!(place(&gated, &["order:1"], true), Placement::Here);
        assert_eq!(gated.place(None, false), Placement::Here);
        assert_eq!(gated.place(None, true), Placement::Wait, "FLUSHDB waits");

        let handing = s.with(0, Owner::Handing);
        assert_eq!(place(&handing, &["user:1"], false), Placement::Wait);
        assert_eq!(handing.place(None, false), Placement::Wait);

        let moved = s.with(0, Owner::There);
        assert_eq!(
            place(&moved, &["user:1", "user:2"], false),
            Placement::There {
                key: b"user:1".to_vec()
            }
        );
        assert_eq!(
            place(&moved, &["order:1", "user:2"], true),
            Placement::Cross { here: 1, there: 0 }
        );
        assert_eq!(
            place(&moved, &["user:2", "x"], false),
            Placement::Cross { here: 2, there: 0 }
        );
        assert_eq!(place(&moved, &["order:1", "x"], true), Placement::Here);
        assert_eq!(moved.place(None, false), Placement::Whole);
        assert_eq!(place(&moved, &[], false), Placement::Here, "no key named");
        // A moved key with a gated one is on two servers: refused, not waited for.
        let both = moved.with(1, Owner::Gated);
        assert_eq!(
            place(&both, &["order:1", "user:1"], true),
            Placement::Cross { here: 1, there: 0 }
        );
        assert!(!moved.all_there());
        assert!(
            moved
                .with(1, Owner::There)
                .with(2, Owner::There)
                .all_there()
        );
    }

    #[test]
    fn pattern_digest_counts_only_owned_keys() {
        use ferrite_storage::{Keyspace, Value};
        let s = split(&["user:*", "user:admin:*"]);
        let ks = Keyspace::new();
        let mut db = ks.lock();
        for k in ["user:1", "user:admin:1", "order:1", "x"] {
            db.set(k.as_bytes(), Value::string(k), None, 0);
        }
        assert_eq!(s.digest_of(0, &db, 0).0, 2);
        assert_eq!(s.digest_of(1, &db, 0).0, 0, "shadowed by user:*");
        assert_eq!(s.digest_of(2, &db, 0).0, 2);
        let before = s.digest_of(0, &db, 0);
        db.set(b"user:1", Value::string("changed"), None, 0);
        assert_ne!(s.digest_of(0, &db, 0), before);
        let other = s.digest_of(2, &db, 0);
        db.set(b"user:2", Value::string("new"), None, 0);
        assert_eq!(
            s.digest_of(2, &db, 0),
            other,
            "another pattern's keys do not count"
        );
        // Keys expiring by `alive_after` are left out; later ones and persistent ones count.
        let with_all = s.digest_of(2, &db, 1_000);
        db.set(b"x2", Value::string("soon"), Some(1_000), 0);
        assert_eq!(s.digest_of(2, &db, 1_000), with_all);
        db.set(b"x3", Value::string("later"), Some(1_001), 0);
        assert_eq!(s.digest_of(2, &db, 1_000).0, with_all.0 + 1);
    }
}
