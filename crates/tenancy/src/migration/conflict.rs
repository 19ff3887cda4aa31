//! Conflict resolution for a continuous sync whose target is written directly.
//!
//! By default the target of a continuous sync is an import its clients cannot use, so only the
//! source is ever written. `CONFLICT <policy>` makes the target's copy a tenant its clients use
//! (read and write) while the sync goes on: two servers then accept writes to the same keys, by
//! the operator's choice, and the policy decides, key by key, which write stands when both sides
//! changed a key.
//!
//! A *conflict* is a change from the source to a key the target's own clients changed since the
//! sync last wrote it (the target keeps change capture on the staged keyspace: every write marks
//! the key, and applying a record from the source clears the mark). A key only one side changed
//! is no conflict: the source's changes are applied, the target's stay.
//!
//! - `source_wins`: the source's change is applied (the target's write is lost).
//! - `target_wins`: the source's change is dropped; the key stays the target's (later source
//!   changes to it conflict again, and are dropped again).
//! - `newest_wins`: the later write by modification time wins. The source's time is the key's
//!   modification time on the source, shipped with the value; a deletion (which carries no time)
//!   and a flush count as made when the target applies them. **Clock skew**: the two times come
//!   from two servers' clocks; a difference of up to [`CLOCK_SKEW_TOLERANCE_MS`] cannot order
//!   them, and then the source wins (it is the tenant's owner; its copy is the one every other
//!   rule keeps). So the target's write wins only when it is more than a second newer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;

/// How a continuous sync resolves a key both sides changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictPolicy {
    SourceWins,
    TargetWins,
    NewestWins,
}

impl ConflictPolicy {
    pub const ALL: [ConflictPolicy; 3] = [
        ConflictPolicy::SourceWins,
        ConflictPolicy::TargetWins,
        ConflictPolicy::NewestWins,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ConflictPolicy::SourceWins => "source_wins",
            ConflictPolicy::TargetWins => "target_wins",
            ConflictPolicy::NewestWins => "newest_wins",
        }
    }

    pub fn parse(s: &str) -> Option<ConflictPolicy> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
    }

    /// Whether the source's change (made at `source_ms`) replaces the target's own write (made
    /// at `target_ms`), both Unix ms by their servers' clocks.
    pub fn source_wins(self, source_ms: u64, target_ms: u64) -> bool {
        match self {
            ConflictPolicy::SourceWins => true,
            ConflictPolicy::TargetWins => false,
            ConflictPolicy::NewestWins => {
                target_ms <= source_ms.saturating_add(CLOCK_SKEW_TOLERANCE_MS)
            }
        }
    }
}

/// How much newer (by its own clock) the target's write must be for `newest_wins` to keep it:
/// two servers' clocks are not trusted to order writes closer than this.
pub const CLOCK_SKEW_TOLERANCE_MS: u64 = 1000;

/// Most conflicting key names an import keeps (the latest ones) for STATUS.
pub const CONFLICT_SAMPLE: usize = 10;

/// An import's conflicts: counted, the latest key names kept, and logged sampled (the 1st, 2nd,
/// 4th, 8th… and then every 1000th, each with its key name), so a storm of conflicts cannot
/// flood the log while the first ones are always there.
#[derive(Debug, Default)]
pub struct ConflictLog {
    count: AtomicU64,
    source_won: AtomicU64,
    sample: Mutex<VecDeque<Vec<u8>>>,
}

impl ConflictLog {
    pub fn note(&self, import: &str, policy: ConflictPolicy, key: &[u8], source_won: bool) {
        let n = self.count.fetch_add(1, Relaxed) + 1;
        if source_won {
            self.source_won.fetch_add(1, Relaxed);
        }
        {
            let mut s = self.sample.lock();
            if s.len() == CONFLICT_SAMPLE {
                s.pop_front();
            }
            s.push_back(key.to_vec());
        }
        if n.is_power_of_two() || n.is_multiple_of(1000) {
            tracing::warn!(
                import,
                policy = policy.name(),
                key = %String::from_utf8_lossy(key),
                winner = if source_won { "source" } else { "target" },
                conflicts = n,
                "conflict: both sides changed a key (sampled)"
            );
        }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    pub fn source_won(&self) -> u64 {
        self.source_won.load(Relaxed)
    }

    /// The latest conflicting key names, oldest first.
    pub fn sample(&self) -> Vec<Vec<u8>> {
        self.sample.lock().iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_by_name_and_nothing_else() {
        for p in ConflictPolicy::ALL {
            assert_eq!(ConflictPolicy::parse(p.name()), Some(p));
            assert_eq!(ConflictPolicy::parse(&p.name().to_uppercase()), Some(p));
        }
        for bad in [
            "",
            "source",
            "newest",
            "manual",
            "source_wins ",
            "last_wins",
        ] {
            assert_eq!(ConflictPolicy::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn newest_wins_trusts_a_difference_only_beyond_the_clock_skew_tolerance() {
        let p = ConflictPolicy::NewestWins;
        assert!(p.source_wins(10_000, 9_000), "the source is newer");
        assert!(p.source_wins(10_000, 10_000), "a tie goes to the source");
        assert!(
            p.source_wins(10_000, 10_000 + CLOCK_SKEW_TOLERANCE_MS),
            "within the tolerance the clocks cannot order them: the source"
        );
        assert!(
            !p.source_wins(10_000, 10_001 + CLOCK_SKEW_TOLERANCE_MS),
            "the target is newer by more than the tolerance"
        );
        assert!(p.source_wins(u64::MAX, 0), "no overflow");
        assert!(ConflictPolicy::SourceWins.source_wins(0, u64::MAX));
        assert!(!ConflictPolicy::TargetWins.source_wins(u64::MAX, 0));
    }

    #[test]
    fn the_log_counts_every_conflict_and_keeps_the_latest_names() {
        let log = ConflictLog::default();
        for i in 0..25u32 {
            log.note(
                "imp_1",
                ConflictPolicy::TargetWins,
                format!("k{i}").as_bytes(),
                i % 5 == 0,
            );
        }
        assert_eq!(log.count(), 25);
        assert_eq!(log.source_won(), 5);
        let sample = log.sample();
        assert_eq!(sample.len(), CONFLICT_SAMPLE);
        assert_eq!(sample.first().map(Vec::as_slice), Some(&b"k15"[..]));
        assert_eq!(sample.last().map(Vec::as_slice), Some(&b"k24"[..]));
    }
}
