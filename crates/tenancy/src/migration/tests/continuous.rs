//! Continuous syncs (`MODE continuous`) against the in-process target: a graceful STOP reaches
//! a point the target confirms while writes go on, IMMEDIATE names what the target may miss,
//! the copy outlives the target's reaper, a new sync replaces it, and a continuous sync cuts
//! over like a live one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::*;
use crate::migration::import::ImportState;

fn continuous() -> MigrationConfig {
    MigrationConfig {
        mode: MigrationMode::Continuous,
        ..Default::default()
    }
}

fn value_of(ks: &ferrite_storage::Keyspace, key: &str) -> Option<Vec<u8>> {
    let db = ks.lock();
    db.peek(key.as_bytes()).and_then(|e| match e.value() {
        ferrite_storage::ValueRef::Str(s) => Some(s.as_bytes().to_vec()),
        _ => None,
    })
}

/// Writes `c<i % 50>` = an increasing counter every millisecond of the clock until `stop`;
/// `last[i % 50]` holds the last value written to each key.
fn spawn_writer(
    t: Arc<Tenant>,
    stop: Arc<AtomicBool>,
    last: Arc<Vec<AtomicU64>>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) && n < 1_000_000 {
            n += 1;
            let slot = (n % 50) as usize;
            write(&t, &format!("c{slot}"), &n.to_string());
            last[slot].store(n, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        n
    })
}

#[tokio::test(start_paused = true)]
async fn a_graceful_stop_leaves_the_target_consistent_as_of_the_point_it_reports() {
    let r = rig(MigrationSettings::default());
    let t = tenant(&r, 2000, 10_000);
    let id = start(&r, continuous()).await;
    live(&r, &id).await;
    let s = r.mgr.status(&id).await.unwrap();
    assert_eq!(s.mode, MigrationMode::Continuous);
    assert_eq!(s.catch_up_seconds, Some(0.0), "caught up: {s:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let last: Arc<Vec<AtomicU64>> = Arc::new((0..50).map(|_| AtomicU64::new(0)).collect());
    let writer = spawn_writer(t.clone(), stop.clone(), last.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Every write acknowledged before STOP was asked must be on the target.
    let before: Vec<u64> = last.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    let result = r.mgr.stop(&id, StopMode::Graceful).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(written > 300, "the writer ran during the stop: {written}");

    assert_eq!(result.mode, StopMode::Graceful);
    let at = result.consistent_as_of.expect("a consistency point");
    assert!(at > 0 && result.digest.is_some(), "{result:?}");
    assert_eq!(result.target_kept, Ok(()));
    let copy = target_copy(&r).unwrap();
    assert_eq!(
        copy.state(),
        TenantState::Importing,
        "a stopped copy is not served"
    );
    assert_eq!(
        digest(&copy.keyspace()),
        (result.keys as usize, result.digest.unwrap()),
        "the target holds exactly the reported point"
    );
    for (slot, want) in before.iter().enumerate() {
        let got: u64 = value_of(&copy.keyspace(), &format!("c{slot}"))
            .map(|v| String::from_utf8(v).unwrap().parse().unwrap())
            .unwrap_or(0);
        assert!(
            got >= *want,
            "c{slot}: target {got}, acknowledged before STOP {want}"
        );
    }
    // The source is untouched and kept the writes made after the point.
    assert_eq!(t.state(), TenantState::Active);
    assert!(!t.gate().is_closed());
    assert!(!t.keyspace().lock().is_tracking(), "change capture stopped");
    assert_eq!(r.mgr.running_for("acme"), None);
    assert_ne!(digest(&t.keyspace()), digest(&copy.keyspace()));
    let s = r.mgr.status(&id).await.unwrap();
    assert_eq!(s.state, MigrationState::Stopped, "{s:?}");
    assert_eq!(s.lag_keys, 0);
    assert_eq!(s.stop.as_ref().and_then(|x| x.consistent_as_of), Some(at));
    // The target keeps the copy past its reaper's default (an hour of silence).
    let import = s.import_id.clone().unwrap();
    tokio::time::advance(Duration::from_secs(2 * 3600)).await;
    let server = r.target.server();
    server
        .imports
        .reap(MigrationSettings::default().sync_timeout);
    assert_eq!(
        server.imports.get(&import).unwrap().state(),
        ImportState::Stopped
    );
    assert!(target_copy(&r).is_some());
    // A second STOP, a CANCEL, a CUTOVER: the sync is over.
    let e = r.mgr.stop(&id, StopMode::Immediate).await.unwrap_err();
    assert!(e.to_string().contains("stopped"), "{e}");
    assert!(r.mgr.cancel(&id).await.is_err());
    assert!(r.mgr.cutover(&id).await.is_err());

    // A new sync of the tenant to that server replaces the stopped copy.
    let again = start(&r, continuous()).await;
    live(&r, &again).await;
    assert_eq!(
        server.imports.get(&import).unwrap().state(),
        ImportState::Aborted
    );
    let copy = target_copy(&r).unwrap();
    assert_eq!(digest(&copy.keyspace()), digest(&t.keyspace()));
    r.mgr.cancel(&again).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_immediate_stop_answers_at_once_and_names_what_the_target_may_miss() {
    let r = rig(MigrationSettings::default());
    let t = tenant(&r, 500, 0);
    let id = start(&r, continuous()).await;
    live(&r, &id).await;
    // The target stops answering: the changes below are never acknowledged.
    r.target.set_fault(Fault::Partition);
    for i in 0..40 {
        write(&t, &format!("k{i}"), "changed");
    }
    until(&r, &id, Duration::from_secs(5), "lag", |s| s.lag_keys >= 40).await;
    let before = digest(&t.keyspace());
    let result = answers("STOP IMMEDIATE", r.mgr.stop(&id, StopMode::Immediate))
        .await
        .unwrap();
    assert_eq!(result.mode, StopMode::Immediate);
    assert_eq!(result.consistent_as_of, None);
    assert!(result.missing_keys >= 40, "{result:?}");
    assert!(result.missing_bytes > 0, "{result:?}");
    for i in 0..40 {
        let k = format!("k{i}").into_bytes();
        assert!(
            result.missing_sample.contains(&k),
            "k{i} missing from {result:?}"
        );
    }
    assert!(
        result.target_kept.is_err(),
        "the partitioned target could not be told"
    );
    assert_eq!(digest(&t.keyspace()), before, "source untouched");
    assert_eq!(t.state(), TenantState::Active);
    assert!(!t.keyspace().lock().is_tracking());
    let s = r.mgr.status(&id).await.unwrap();
    assert_eq!(s.state, MigrationState::Stopped);
    assert_eq!(s.stop.map(|x| x.missing_keys), Some(result.missing_keys));
    // Every key the target lacks or holds differently is among those reported.
    r.target.set_fault(Fault::None);
    let copy = target_copy(&r).unwrap();
    for i in 0..500 {
        let k = format!("k{i}");
        if value_of(&copy.keyspace(), &k) != value_of(&t.keyspace(), &k) {
            assert!(
                result.missing_sample.contains(&k.clone().into_bytes()),
                "{k}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn stop_is_refused_where_it_cannot_run_and_changes_nothing() {
    let r = rig(with_breakpoints());
    let t = tenant(&r, 3000, 0);
    // A live migration is cancelled, not stopped.
    let id = start(&r, MigrationConfig::default()).await;
    let e = r.mgr.stop(&id, StopMode::Graceful).await.unwrap_err();
    assert!(e.to_string().contains("MODE continuous"), "{e}");
    r.mgr.cancel(&id).await.unwrap();

    // During the snapshot there is no complete copy to make consistent.
    let id = start(
        &r,
        MigrationConfig {
            batch_size: 100,
            ..continuous()
        },
    )
    .await;
    park(&r, &id, "snapshot:batch").await;
    let e = answers("STOP GRACEFUL", r.mgr.stop(&id, StopMode::Graceful))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("needs live sync"), "{e}");
    assert_eq!(
        r.mgr.status(&id).await.unwrap().state,
        MigrationState::Syncing
    );
    // IMMEDIATE stops it there, parked or not.
    let before = digest(&t.keyspace());
    let result = answers("STOP IMMEDIATE", r.mgr.stop(&id, StopMode::Immediate))
        .await
        .unwrap();
    assert!(
        result.missing_keys > 0,
        "the snapshot was not finished: {result:?}"
    );
    assert_eq!(digest(&t.keyspace()), before);
    assert_eq!(
        r.mgr.status(&id).await.unwrap().state,
        MigrationState::Stopped
    );
    assert_eq!(r.mgr.running_for("acme"), None);
}

#[tokio::test(start_paused = true)]
async fn a_continuous_sync_cuts_over_like_a_live_one() {
    let r = rig(MigrationSettings::default());
    let t = tenant(&r, 2000, 10_000);
    let id = start(&r, continuous()).await;
    live(&r, &id).await;
    for i in 0..100 {
        write(&t, &format!("k{i}"), "changed");
    }
    // However long it has been in sync.
    tokio::time::sleep(Duration::from_secs(600)).await;
    let source = digest(&t.keyspace());
    let result = r.mgr.cutover(&id).await.unwrap();
    assert_eq!(result.keys_migrated, source.0 as u64);
    assert_eq!(t.state(), TenantState::Moved);
    let copy = target_copy(&r).unwrap();
    assert_eq!(copy.state(), TenantState::Active);
    assert_eq!(digest(&copy.keyspace()), source);
    assert_eq!(r.mgr.verify(&id).await.unwrap().status, "verified");
    let e = r.mgr.stop(&id, StopMode::Graceful).await.unwrap_err();
    assert!(
        e.to_string().contains("verified") || e.to_string().contains("cutover"),
        "{e}"
    );
}

/// A hash of `n` fields `f<i>` = `<tag><i>`.
fn hash_of(n: usize, tag: &str) -> Value {
    let mut h = ferrite_storage::HashValue::default();
    for i in 0..n {
        h.insert(format!("f{i}").as_bytes(), format!("{tag}{i}").as_bytes());
    }
    Value::Hash(h)
}

fn set_at(t: &Tenant, key: &str, v: Value, at_ms: u64) {
    t.keyspace().lock().set(key.as_bytes(), v, None, at_ms);
}

fn canonical(t: &Tenant, key: &str) -> Option<Vec<u8>> {
    let ks = t.keyspace();
    let db = ks.lock();
    db.peek(key.as_bytes())
        .map(|e| crate::migration::wire::canonical_value(e.value(), e.expire_at().unwrap_or(0)))
}

/// What `v` looks like in [`canonical`] (the time it was written does not show).
fn canonical_of(v: Value) -> Option<Vec<u8>> {
    let tmp = Tenant::new("tmp", None, Default::default());
    set_at(&tmp, "v", v, 1);
    canonical(&tmp, "v")
}

#[tokio::test(start_paused = true)]
async fn each_conflict_policy_decides_keys_both_sides_changed_large_values_included() {
    use crate::migration::conflict::{CLOCK_SKEW_TOLERANCE_MS, ConflictPolicy};
    for policy in ConflictPolicy::ALL {
        let r = rig(MigrationSettings::default());
        let t = tenant(&r, 100, 0);
        set_at(&t, "big", hash_of(10_000, "src0-"), 1);
        let id = start(
            &r,
            MigrationConfig {
                conflict: Some(policy),
                ..continuous()
            },
        )
        .await;
        live(&r, &id).await;
        let copy = target_copy(&r).unwrap();
        assert_eq!(
            copy.state(),
            TenantState::Active,
            "{policy:?}: served while synced"
        );
        // The target's clients write k0..k9 and replace the large value, now.
        let now = ferrite_storage::now_ms();
        for i in 0..10 {
            set_at(&copy, &format!("k{i}"), Value::string("dst"), now);
        }
        set_at(&copy, "big", hash_of(10, "dst-"), now);
        set_at(&copy, "only-dst", Value::string("mine"), now);
        // The source writes them too: k0..k4 and the large value newer than the target's write,
        // k5..k9 older by more than the clock-skew tolerance; k20 only on the source.
        let newer = now + 5_000;
        let older = now - 2 * CLOCK_SKEW_TOLERANCE_MS;
        for i in 0..5 {
            set_at(&t, &format!("k{i}"), Value::string("src-newer"), newer);
        }
        for i in 5..10 {
            set_at(&t, &format!("k{i}"), Value::string("src-older"), older);
        }
        set_at(&t, "big", hash_of(10_000, "src1-"), newer);
        set_at(&t, "k20", Value::string("src-only"), newer);
        until(&r, &id, Duration::from_secs(60), "changes shipped", |s| {
            s.lag_keys == 0
        })
        .await;
        let import = r.mgr.status(&id).await.unwrap().import_id.unwrap();
        let imp = r.target.server().imports.get(&import).unwrap();
        assert_eq!(imp.conflicts.count(), 11, "{policy:?}");
        let source_wins = |newer_side: bool| match policy {
            ConflictPolicy::SourceWins => true,
            ConflictPolicy::TargetWins => false,
            ConflictPolicy::NewestWins => newer_side,
        };
        for i in 0..10 {
            let k = format!("k{i}");
            let want = if source_wins(i < 5) {
                canonical(&t, &k)
            } else {
                canonical_of(Value::string("dst"))
            };
            assert_eq!(canonical(&copy, &k), want, "{policy:?} {k}");
        }
        let big_want = if source_wins(true) {
            canonical(&t, "big")
        } else {
            canonical_of(hash_of(10, "dst-"))
        };
        assert_eq!(canonical(&copy, "big"), big_want, "{policy:?} big");
        assert_eq!(canonical(&copy, "k20"), canonical(&t, "k20"), "no conflict");
        assert!(
            canonical(&copy, "only-dst").is_some(),
            "the target's own key stays"
        );
        // The source learns the count at the next heartbeat.
        let s = until(
            &r,
            &id,
            Duration::from_secs(10),
            "conflicts reported",
            |s| s.conflicts == 11,
        )
        .await;
        assert_eq!(s.conflict_policy, Some(policy));
        assert!(!s.conflict_sample.is_empty());
        // Such a sync is not cut over.
        let e = r.mgr.cutover(&id).await.unwrap_err();
        assert!(e.to_string().contains("CONFLICT"), "{e}");
        r.mgr.stop(&id, StopMode::Immediate).await.unwrap();
    }
}
