//! VERIFY: the source's frozen copy against the target as it was at activation: digests per
//! bucket (both maintained incrementally, so this is O(buckets)), key counts, and a sample of
//! keys compared value by value in a canonical encoding.

use ferrite_storage::Keyspace;

use super::target::Target;
use super::wire::canonical_value;
use super::{MigrationError, VerifyResult};

/// How many sampled keys VERIFY compares value by value.
const SAMPLE: usize = 1000;

fn fail(msg: impl Into<String>) -> MigrationError {
    MigrationError::Failed(msg.into())
}

/// Compares the frozen copy with the target's import `import`.
pub(super) async fn verify(
    target: &dyn Target,
    import: &str,
    frozen: &Keyspace,
) -> Result<VerifyResult, MigrationError> {
    let (keys_source, digest, sample) = {
        let mut db = frozen.lock_async().await;
        let keys = db.len() as u64;
        let digest = db.digest().clone();
        let mut rng = rand::rng();
        let mut seen = std::collections::HashSet::new();
        let mut sample = Vec::new();
        let want = SAMPLE.min(db.len());
        let mut tries = 0;
        while sample.len() < want && tries < want * 20 {
            tries += 1;
            // `now` = 0: no lazy expiry, the frozen copy stays exactly as handed over.
            let Some(k) = db.random_key(0, &mut rng) else {
                break;
            };
            if seen.insert(k.clone())
                && let Some(e) = db.peek(&k)
            {
                sample.push((k, canonical_value(e.value(), e.expire_at().unwrap_or(0))));
            }
        }
        (keys, digest, sample)
    };
    let report = target
        .report(import)
        .await
        .map_err(|e| fail(format!("target: {e}")))?;
    let keys_target = report.activation_keys.map_or(-1, |k| k as i64);
    let activated_at = report.activated_at_ms;
    let buckets = report.buckets;
    let mismatched_buckets: Vec<usize> = (0..ferrite_storage::digest::BUCKETS)
        .filter(|&b| buckets.get(b) != Some(&digest.bucket(b)))
        .collect();
    let checksum_match = mismatched_buckets.is_empty() && keys_target == keys_source as i64;

    let (mut matched, mut compared, mut skipped) = (0u64, 0u64, 0u64);
    for part in sample.chunks(200) {
        let keys: Vec<Vec<u8>> = part.iter().map(|(k, _)| k.to_vec()).collect();
        let got = target
            .fetch(import, &keys)
            .await
            .map_err(|e| fail(format!("target: {e}")))?;
        for ((_, want), got) in part.iter().zip(got) {
            // Keys the target changed at or after activation no longer reflect the cutover
            // state, and a key absent now was deleted or expired there since (a key missing at
            // activation would already show in the activation digest): both are skipped.
            let Some((_, bytes)) = got.filter(|(modified, _)| *modified < activated_at) else {
                skipped += 1;
                continue;
            };
            compared += 1;
            if bytes == *want {
                matched += 1;
            }
        }
    }
    let verified = checksum_match && matched == compared;
    Ok(VerifyResult {
        keys_source,
        keys_target: keys_target.max(0) as u64,
        checksum_match,
        sample_matched: matched,
        sample_compared: compared,
        sample_skipped: skipped,
        mismatched_buckets,
        mismatched_patterns: Vec::new(),
        status: if verified { "verified" } else { "mismatch" },
    })
}

/// VERIFY of an incremental migration: each pattern in `indexes`, the keys it owns in the
/// source's copy against what the target recorded when it activated that pattern (key count and
/// digest over the keys living past `VERIFY_HORIZON_MS` after the activation, on both sides; the
/// target's later writes do not count).
pub(super) async fn verify_patterns(
    target: &dyn Target,
    import: &str,
    source: &Keyspace,
    split: &crate::patterns::PatternSplit,
    indexes: &[usize],
) -> Result<VerifyResult, MigrationError> {
    let (mut keys_source, mut keys_target) = (0u64, 0u64);
    let mut mismatched_patterns = Vec::new();
    for &i in indexes {
        let theirs = target
            .pattern_report(import, i)
            .await
            .map_err(|e| fail(format!("target: {e}")))?;
        let (keys, digest) = {
            let db = source.lock_async().await;
            split.digest_of(i, &db, theirs.at_ms + crate::patterns::VERIFY_HORIZON_MS)
        };
        keys_source += keys;
        keys_target += theirs.keys;
        if theirs.keys != keys || theirs.digest != digest {
            mismatched_patterns.push(split.name(i));
        }
    }
    let checksum_match = mismatched_patterns.is_empty();
    Ok(VerifyResult {
        keys_source,
        keys_target,
        checksum_match,
        sample_matched: 0,
        sample_compared: 0,
        sample_skipped: 0,
        mismatched_buckets: Vec::new(),
        mismatched_patterns,
        status: if checksum_match {
            "verified"
        } else {
            "mismatch"
        },
    })
}
