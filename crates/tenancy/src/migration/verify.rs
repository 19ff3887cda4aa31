//! VERIFY: the source's frozen copy against the target as it was at activation: digests per
//! bucket (both maintained incrementally, so this is O(buckets)), key counts, and a sample of
//! keys compared value by value in a canonical encoding.

use std::sync::atomic::Ordering::Relaxed;

use ferrite_client::{Connection, value};

use super::source::{Res, connect_options, fail};
use super::wire::canonical_value;
use super::{Migration, MigrationError, MigrationManager, MigrationState, VerifyResult};

/// How many sampled keys VERIFY compares value by value.
const SAMPLE: usize = 1000;

pub(super) async fn verify(mgr: &MigrationManager, m: &Migration) -> Res<VerifyResult> {
    let st = m.state();
    if !matches!(st, MigrationState::Completed | MigrationState::Verified) {
        return Err(MigrationError::WrongState {
            id: m.id.clone(),
            state: st.name(),
            op: "verify",
        });
    }
    if m.frozen_released.load(Relaxed) {
        return Err(fail(
            "the frozen copy was released after the retention period; nothing to verify against",
        ));
    }
    let import_id = m
        .progress
        .lock()
        .import_id
        .clone()
        .ok_or_else(|| fail("no import id recorded"))?;
    let frozen = m.tenant.keyspace();
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
            if seen.insert(k.clone()) {
                if let Some(e) = db.peek(&k) {
                    sample.push((k, canonical_value(e.value(), e.expire_at().unwrap_or(0))));
                }
            }
        }
        (keys, digest, sample)
    };
    let mut conn = Connection::connect(connect_options(mgr, m))
        .await
        .map_err(|e| fail(format!("cannot reach the target: {e}")))?;
    let reply = conn
        .cmd(&["TENANT.IMPORT.STATUS", &import_id])
        .await
        .map_err(|e| fail(format!("target: {e}")))?;
    let pairs = value::as_pairs(&reply).map_err(|e| fail(e.to_string()))?;
    let keys_target = value::field_int(&pairs, "activation_keys").unwrap_or(-1);
    let activated_at = value::field_int(&pairs, "activated_at_ms").unwrap_or(0) as u64;
    let buckets: Vec<String> = value::field(&pairs, "activation_buckets")
        .and_then(|v| value::as_array(v).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(|f| value::as_string(f).ok())
        .collect();
    let mismatched_buckets: Vec<usize> = (0..ferrite_storage::digest::BUCKETS)
        .filter(|&b| buckets.get(b) != Some(&format!("{:016x}", digest.bucket(b))))
        .collect();
    let checksum_match = mismatched_buckets.is_empty() && keys_target == keys_source as i64;

    let (mut matched, mut compared, mut skipped) = (0u64, 0u64, 0u64);
    for part in sample.chunks(200) {
        let mut args: Vec<&[u8]> = vec![b"TENANT.IMPORT.FETCH", import_id.as_bytes()];
        args.extend(part.iter().map(|(k, _)| &**k));
        let reply = conn
            .cmd(&args)
            .await
            .map_err(|e| fail(format!("target: {e}")))?;
        let items = value::as_array(&reply).map_err(|e| fail(e.to_string()))?;
        for ((_, want), got) in part.iter().zip(items) {
            let entry = value::as_array(&got).unwrap_or_default();
            let modified = entry
                .first()
                .and_then(|f| value::as_int(f).ok())
                .unwrap_or(0) as u64;
            let bytes = entry.get(1).and_then(|f| value::as_bytes(f).ok().flatten());
            // Keys the target changed at or after activation no longer reflect the cutover
            // state, and a key absent now was deleted or expired there since (a key missing at
            // activation would already show in the activation digest): both are skipped.
            if bytes.is_none() || modified >= activated_at {
                skipped += 1;
                continue;
            }
            compared += 1;
            if bytes.as_deref() == Some(want.as_slice()) {
                matched += 1;
            }
        }
    }
    let verified = checksum_match && matched == compared;
    if verified {
        m.transition(MigrationState::Verified, "verify")?;
    }
    Ok(VerifyResult {
        keys_source,
        keys_target: keys_target.max(0) as u64,
        checksum_match,
        sample_matched: matched,
        sample_compared: compared,
        sample_skipped: skipped,
        mismatched_buckets,
        status: if verified { "verified" } else { "mismatch" },
    })
}
