//! Continuous syncs (`MODE continuous`) between real processes under concurrent writers: a
//! graceful STOP leaves the target exactly as the source was at the instant it reports (checked
//! key by key against what each writer had acknowledged by then, and by digest), an immediate
//! STOP names every key the target may lack, and a continuous sync cuts over like a live one.
//! All with the default settings but MODE (and, for IMMEDIATE, a RATE that builds a backlog).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrite_client::{Client, ConnectOptions, Frame, value};

use crate::common::Server;
use crate::util::*;
use crate::writers::{check_model, writer};
use crate::{LONG, SHORT, now_ms};

/// One acknowledged INCR: the value it returned, when it was sent and when it was answered.
#[derive(Debug, Clone, Copy)]
struct Op {
    value: i64,
    sent_ms: u64,
    acked_ms: u64,
}

/// INCRs keys `<prefix>0..<keys>` round-robin until `stop` (at most `max_ops`), keeping every
/// acknowledged operation.
async fn incr_writer(
    addr: String,
    prefix: String,
    keys: usize,
    stop: Arc<AtomicBool>,
    max_ops: usize,
) -> HashMap<String, Vec<Op>> {
    let mut c = Client::connect(ConnectOptions::new(addr).tenant("acme", "pw"))
        .await
        .expect("writer connects");
    let mut ops: HashMap<String, Vec<Op>> = HashMap::new();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) && n < max_ops {
        let key = format!("{prefix}{}", n % keys);
        let sent_ms = now_ms();
        let reply = c.cmd(&["INCR", &key]).await.expect("INCR");
        let acked_ms = now_ms();
        let value = value::as_int(&reply).expect("INCR returns an integer");
        ops.entry(key).or_default().push(Op {
            value,
            sent_ms,
            acked_ms,
        });
        n += 1;
    }
    ops
}

async fn setup(src: &Server, keys: usize) {
    let mut a = admin(src).await;
    ok(&mut a, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]).await;
    let mut t = tenant_conn(src, "acme", "pw").await;
    let mut cmds: Vec<Vec<String>> = (0..keys)
        .map(|i| s(&["SET", &format!("k{i}"), &format!("{i}-{}", "v".repeat(100))]))
        .collect();
    // A large value (over 4096 elements): copied in chunks, kept up to date by its effects.
    for chunk in 0..5 {
        let mut c = vec!["HSET".to_string(), "bighash".to_string()];
        for j in chunk * 1000..(chunk + 1) * 1000 {
            c.push(format!("f{j}"));
            c.push(format!("v{j}"));
        }
        cmds.push(c);
    }
    load(&mut t, cmds).await;
}

/// The target's copy of string keys, read through TENANT.IMPORT.FETCH (the copy of a stopped
/// sync is not served to clients): the canonical value is the type tag, 8 bytes of expiry, a
/// varint length and the bytes.
async fn fetch_strings(
    d: &mut ferrite_client::Connection,
    import: &str,
    keys: &[String],
) -> HashMap<String, Option<String>> {
    let mut args = vec!["TENANT.IMPORT.FETCH", import];
    args.extend(keys.iter().map(String::as_str));
    let reply = ok(d, &args).await;
    let items = value::as_array(&reply).expect("FETCH array");
    assert_eq!(items.len(), keys.len());
    let mut out = HashMap::new();
    for (k, item) in keys.iter().zip(items) {
        let v = match item {
            Frame::Array { data, .. } if data.len() == 2 => {
                let bytes = value::as_bytes(&data[1])
                    .expect("canonical bytes")
                    .expect("not null");
                let len = usize::from(bytes[9]);
                assert!(len < 128 && bytes.len() == 10 + len, "{k}: {bytes:?}");
                Some(String::from_utf8(bytes[10..].to_vec()).expect("utf-8"))
            }
            _ => None,
        };
        out.insert(k.clone(), v);
    }
    out
}

fn parse_rfc3339_ms(s: &str) -> u64 {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("{s}: {e}"));
    (t.unix_timestamp_nanos() / 1_000_000) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_stop_leaves_the_target_as_the_source_was_at_the_reported_instant() {
    let src = Server::start();
    let dst = Server::start();
    setup(&src, 20_000).await;
    let mut a = admin(&src).await;
    let id = migrate(&mut a, "acme", &dst, &["MODE", "continuous"]).await;
    let st = wait_for(&mut a, &id, LONG, "live sync, caught up", |s| {
        s["state"] == "live_sync" && s["lag_keys"] == "0"
    })
    .await;
    assert_eq!(st["mode"], "continuous");
    assert_eq!(st["catch_up_seconds"], "0.0", "{st:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            tokio::spawn(incr_writer(
                src.addr(),
                format!("w{w}:c"),
                40,
                stop.clone(),
                2_000_000,
            ))
        })
        .collect();
    let mut hot = tenant_conn(&src, "acme", "pw").await;
    // Let the writers run a while, with the large value changing too.
    for i in 0..200 {
        ok(&mut hot, &["HSET", "bighash", &format!("f{i}"), "hot"]).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let during = status(&mut a, &id).await;
    for f in [
        "lag_keys",
        "lag_bytes",
        "lag_seconds",
        "lag_trend",
        "catch_up_seconds",
    ] {
        assert!(during.contains_key(f), "{f} missing from {during:?}");
    }
    let t0 = Instant::now();
    let r = fields(&ok(&mut a, &["TENANT.MIGRATE.STOP", &id, "GRACEFUL"]).await);
    let took = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all: HashMap<String, Vec<Op>> = HashMap::new();
    for w in writers {
        all.extend(w.await.expect("writer"));
    }
    assert_eq!(r["status"], "stopped", "{r:?}");
    assert_eq!(r["mode"], "graceful");
    assert_eq!(r["target_copy"], "kept", "{r:?}");
    assert_eq!(r["possibly_missing_keys"], "0");
    assert!(took < SHORT, "STOP GRACEFUL took {took:?}");
    let at = parse_rfc3339_ms(&r["consistent_as_of"]);

    // The target's copy is exactly what the source held at that instant: its digest ...
    let mut d = admin(&dst).await;
    let dig = fields(&ok(&mut d, &["TENANT.DIGEST", "acme"]).await);
    assert_eq!(dig["digest"], r["digest"], "target {dig:?}, STOP {r:?}");
    assert_eq!(dig["keys"], r["keys"]);
    // ... and key by key: every INCR acknowledged before the instant is in it, none sent after.
    let st = status(&mut a, &id).await;
    assert_eq!(st["state"], "stopped");
    assert_eq!(st["consistent_as_of"], r["consistent_as_of"]);
    assert_eq!(st["lag_keys"], "0");
    let import = st["import_id"].clone();
    let keys: Vec<String> = all.keys().cloned().collect();
    let copy = fetch_strings(&mut d, &import, &keys).await;
    let mut checked = 0;
    let mut after = 0;
    for (k, ops) in &all {
        let low = ops
            .iter()
            .filter(|o| o.acked_ms < at)
            .map(|o| o.value)
            .max()
            .unwrap_or(0);
        // Sent strictly after the instant (a millisecond of slack for the truncation of both
        // clocks to milliseconds): not executed before it.
        let high = ops
            .iter()
            .filter(|o| o.sent_ms > at + 1)
            .map(|o| o.value - 1)
            .min()
            .unwrap_or(i64::MAX);
        after += ops.iter().filter(|o| o.sent_ms > at + 1).count();
        let got: i64 = copy[k]
            .as_deref()
            .map_or(0, |v| v.parse().expect("a counter"));
        assert!(
            low <= got && got <= high,
            "{k}: target {got}, acknowledged before the point {low}, first sent after {high}"
        );
        checked += 1;
    }
    assert_eq!(checked, 120);
    assert!(after > 0, "the writers went on after the point");
    // The source is untouched and serves on, the target still refuses its clients.
    let info = fields(&ok(&mut a, &["TENANT.INFO", "acme"]).await);
    assert_eq!(info["state"], "active");
    ok(&mut hot, &["SET", "after-stop", "1"]).await;
    let info = fields(&ok(&mut d, &["TENANT.INFO", "acme"]).await);
    assert_eq!(info["state"], "importing");
    let e = err(&mut tenant_conn(&dst, "acme", "pw").await, &["GET", "k1"]).await;
    assert!(e.contains("TRYAGAIN"), "{e}");
    let imp = fields(&ok(&mut d, &["TENANT.IMPORT.STATUS", &import]).await);
    assert_eq!(imp["state"], "stopped");
    // It is over: STOP again, CUTOVER and CANCEL are refused, naming the state.
    for cmd in [
        vec!["TENANT.MIGRATE.STOP", id.as_str(), "IMMEDIATE"],
        vec!["TENANT.MIGRATE.CUTOVER", id.as_str()],
        vec!["TENANT.MIGRATE.CANCEL", id.as_str()],
    ] {
        let e = err(&mut a, &cmd).await;
        assert!(e.contains("is stopped"), "{cmd:?}: {e}");
    }

    // A new sync to the same server replaces the stopped copy.
    let again = migrate(&mut a, "acme", &dst, &["MODE", "continuous"]).await;
    wait_for(&mut a, &again, LONG, "the new sync caught up", |s| {
        s["state"] == "live_sync" && s["lag_keys"] == "0"
    })
    .await;
    let imp = fields(&ok(&mut d, &["TENANT.IMPORT.STATUS", &import]).await);
    assert_eq!(imp["state"], "aborted");
    assert_eq!(
        digest_of(&ok(&mut d, &["TENANT.DIGEST", "acme"]).await),
        digest_of(&ok(&mut a, &["TENANT.DIGEST", "acme"]).await)
    );
    ok(&mut a, &["TENANT.MIGRATE.CANCEL", &again]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_immediate_stop_names_every_key_the_target_may_lack() {
    let src = Server::start();
    let dst = Server::start();
    setup(&src, 2_000).await;
    let mut a = admin(&src).await;
    // A low RATE: the writers outpace the sync and a backlog builds.
    let id = migrate(
        &mut a,
        "acme",
        &dst,
        &["MODE", "continuous", "RATE", "20000"],
    )
    .await;
    wait_state(&mut a, &id, "live_sync", LONG).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            tokio::spawn(incr_writer(
                src.addr(),
                format!("m{w}:"),
                25,
                stop.clone(),
                2_000_000,
            ))
        })
        .collect();
    wait_for(&mut a, &id, SHORT, "a backlog", |s| {
        s["lag_keys"].parse::<u64>().unwrap_or(0) >= 10
    })
    .await;
    let sent = now_ms();
    let t0 = Instant::now();
    let r = fields(&ok(&mut a, &["TENANT.MIGRATE.STOP", &id, "IMMEDIATE"]).await);
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "IMMEDIATE took {:?}",
        t0.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    let mut all: HashMap<String, Vec<Op>> = HashMap::new();
    for w in writers {
        all.extend(w.await.expect("writer"));
    }
    assert_eq!(r["mode"], "immediate", "{r:?}");
    assert_eq!(r["consistent_as_of"], "");
    assert_eq!(r["target_copy"], "kept", "{r:?}");
    let missing: u64 = r["possibly_missing_keys"].parse().unwrap();
    assert!(missing > 0, "{r:?}");
    let sample = r["possibly_missing_sample"].clone();

    let st = status(&mut a, &id).await;
    assert_eq!(st["state"], "stopped");
    assert_eq!(st["possibly_missing_keys"], missing.to_string());
    let mut d = admin(&dst).await;
    let keys: Vec<String> = all.keys().cloned().collect();
    let copy = fetch_strings(&mut d, &st["import_id"], &keys).await;
    // Every key whose acknowledged value (before STOP was sent) the target lacks is named.
    let mut behind = 0;
    for (k, ops) in &all {
        let acked = ops
            .iter()
            .filter(|o| o.acked_ms < sent)
            .map(|o| o.value)
            .max()
            .unwrap_or(0);
        let got: i64 = copy[k].as_deref().map_or(0, |v| v.parse().unwrap());
        if got < acked {
            behind += 1;
            assert!(
                sample
                    .split(|c: char| !c.is_alphanumeric() && c != ':')
                    .any(|w| w == k),
                "{k} (target {got}, acknowledged {acked}) not in {sample}"
            );
        }
    }
    assert!(behind > 0, "the RATE left the target behind");
    assert!(
        behind as u64 <= missing,
        "{behind} behind, {missing} reported"
    );
    let info = fields(&ok(&mut a, &["TENANT.INFO", "acme"]).await);
    assert_eq!(info["state"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_continuous_sync_cuts_over_like_a_live_one_with_writers_following() {
    let src = Server::start();
    let dst = Server::start();
    setup(&src, 10_000).await;
    let mut a = admin(&src).await;
    let id = migrate(&mut a, "acme", &dst, &["MODE", "continuous"]).await;
    let far = now_ms() + 3_600_000;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|n| tokio::spawn(writer(n, src.addr(), "acme", stop.clone(), far, false)))
        .collect();
    wait_for(&mut a, &id, LONG, "live sync", |s| {
        s["state"] == "live_sync" && s["lag_keys"].parse::<u64>().unwrap_or(u64::MAX) < 500
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cut = fields(&ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id]).await);
    assert_eq!(cut["status"], "completed", "{cut:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut t = tenant_conn(&dst, "acme", "pw").await;
    let mut redirects = 0;
    for (n, w) in writers.into_iter().enumerate() {
        let (model, ops, moved, _) = w.await.expect("writer");
        assert!(ops > 0);
        redirects += moved;
        check_model(&mut t, n, &model).await;
    }
    assert!(redirects > 0, "writers followed MOVED to the target");
    let v = fields(&ok(&mut a, &["TENANT.MIGRATE.VERIFY", &id]).await);
    assert_eq!(v["status"], "verified", "{v:?}");
    let st = status(&mut a, &id).await;
    assert_eq!(st["mode"], "continuous");
    assert_eq!(st["state"], "verified");
}
