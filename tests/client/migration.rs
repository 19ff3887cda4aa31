//! A real live migration between two `ferrite` processes while ferrite-client keeps working:
//! pooled writers, a pipeline writer, and a client that reached the target before the cutover
//! (TRYAGAIN until the tenant is activated there).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrite_client::{
    Client, ClientError, ConnectOptions, Pipeline, Pool, PoolOptions, RedirectPolicy, value,
};

use crate::common::Server;
use crate::util::*;
use crate::{LONG, SHORT, cutover, migrate_to_live_sync, tenant_with_keys};

/// Writes `w{n}:{i % 50}` = `i` through the pool until told to stop; returns the last value
/// acknowledged per key and how many writes were made. Any error fails the test.
async fn pooled_writer(n: usize, pool: Pool, stop: Arc<AtomicBool>) -> (HashMap<String, i64>, u64) {
    let mut last = HashMap::new();
    let mut i = 0i64;
    let deadline = Instant::now() + LONG;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let key = format!("w{n}:{}", i % 50);
        let mut c = pool.get().await.expect("checkout");
        c.set(&key, i.to_string())
            .await
            .unwrap_or_else(|e| panic!("writer {n}: SET {key}: {e}"));
        let back = c
            .get(&key)
            .await
            .unwrap_or_else(|e| panic!("writer {n}: GET {key}: {e}"));
        assert_eq!(back, Some(i.to_string()), "writer {n} reads its own write");
        last.insert(key, i);
        i += 1;
    }
    (last, i as u64)
}

/// Sends pipelines of 20 INCRs over one client until told to stop; returns the count per key.
async fn pipeline_writer(addr: String, stop: Arc<AtomicBool>) -> (HashMap<String, i64>, Client) {
    let mut c = Client::connect(ConnectOptions::new(addr).tenant("acme", "pw"))
        .await
        .expect("pipeline writer connects");
    let mut counts: HashMap<String, i64> = HashMap::new();
    let mut p = Pipeline::new();
    let deadline = Instant::now() + LONG;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        p.clear();
        for j in 0..20 {
            p.cmd(["INCR".to_string(), format!("p:{j}")]);
        }
        let replies = c.run(&p).await.expect("pipeline ran");
        for (j, r) in replies.into_iter().enumerate() {
            let key = format!("p:{j}");
            let n = value::as_int(&r.unwrap_or_else(|e| panic!("INCR {key}: {e}"))).unwrap();
            let want = counts.entry(key.clone()).or_insert(0);
            *want += 1;
            assert_eq!(n, *want, "{key}: INCRs ran exactly once each, in order");
        }
    }
    (counts, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_keep_working_across_a_cutover_and_count_redirects() {
    let src = Server::start();
    let dst = Server::start();
    tenant_with_keys(&src, 5000).await;

    let pool = Pool::new(
        ConnectOptions::new(src.addr()).tenant("acme", "pw"),
        PoolOptions::new().max_size(4),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|n| tokio::spawn(pooled_writer(n, pool.clone(), stop.clone())))
        .collect();
    let piper = tokio::spawn(pipeline_writer(src.addr(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let id = migrate_to_live_sync(&src, &dst).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = pool.status();
    assert_eq!(before.addr, src.addr());
    assert_eq!(before.redirects, 0);
    cutover(&src, &id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);

    let mut expected = HashMap::new();
    for w in writers {
        let (last, ops) = w.await.expect("pooled writer had no failed operation");
        assert!(ops > 20, "writer made progress: {ops}");
        expected.extend(last);
    }
    let (counts, client) = piper
        .await
        .expect("pipeline writer had no failed operation");
    assert!(
        client.redirects() >= 1,
        "the pipeline client followed MOVED"
    );
    assert_eq!(client.addr(), dst.addr());

    // Every pooled connection followed the tenant; the pool now opens new ones at the target.
    let st = pool.status();
    assert_eq!(st.addr, dst.addr(), "{st:?}");
    assert!(st.redirects >= 1, "{st:?}");
    assert!(
        st.redirects <= st.created,
        "one redirect per connection at most: {st:?}"
    );
    let c = pool.get().await.unwrap();
    assert_eq!(c.addr(), dst.addr());
    drop(c);

    // What the clients were told was written is on the target.
    let mut t = Client::connect(ConnectOptions::new(dst.addr()).tenant("acme", "pw"))
        .await
        .unwrap();
    for (k, v) in &expected {
        assert_eq!(t.get(k).await.unwrap(), Some(v.to_string()), "{k}");
    }
    for (k, n) in &counts {
        assert_eq!(t.get(k).await.unwrap(), Some(n.to_string()), "{k}");
    }
    assert_eq!(t.get("k4999").await.unwrap().as_deref(), Some("v4999"));
    assert_eq!(t.redirects(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn try_again_on_an_importing_target_waits_for_the_cutover() {
    let src = Server::start();
    let dst = Server::start();
    tenant_with_keys(&src, 2000).await;
    let id = migrate_to_live_sync(&src, &dst).await;

    // Too short a redirect timeout: a clear TRYAGAIN error naming the server and command.
    let mut impatient = Client::with_policy(
        ConnectOptions::new(dst.addr()).tenant("acme", "pw"),
        RedirectPolicy::default().redirect_timeout(Duration::from_millis(150)),
    )
    .await
    .expect("AUTH works on the target during the import");
    let t = Instant::now();
    let e = impatient.set("early", "x").await.unwrap_err();
    assert!(e.is_try_again(), "{e:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    assert!(matches!(e.root(), ClientError::TryAgain(_)));
    assert_eq!(
        e.to_string(),
        format!(
            "TRYAGAIN tenant 'acme' is being imported; retry shortly (server {}, command SET)",
            dst.addr()
        )
    );

    // A patient client waits through backoff and succeeds once the cutover activates the tenant.
    let mut patient = Client::with_policy(
        ConnectOptions::new(dst.addr()).tenant("acme", "pw"),
        RedirectPolicy::default().redirect_timeout(SHORT),
    )
    .await
    .unwrap();
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let r = patient.incrby("early-counter", 5).await;
        (r, started.elapsed(), patient)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "the command waits while the tenant is importing"
    );
    cutover(&src, &id).await;
    let (r, waited, patient) = tokio::time::timeout(SHORT, waiting)
        .await
        .expect("finished within the redirect timeout")
        .unwrap();
    assert_eq!(r.expect("succeeded after the cutover"), 5);
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    assert_eq!(
        (patient.addr(), patient.redirects()),
        (dst.addr().as_str(), 0)
    );
    // The write landed on the target, exactly once; the migrated data is there too.
    let mut t = tenant_conn(&dst, "acme", "pw").await;
    assert_eq!(
        value::as_string(&ok(&mut t, &["GET", "early-counter"]).await).unwrap(),
        "5"
    );
    assert_eq!(value::as_int(&ok(&mut t, &["DBSIZE"]).await).unwrap(), 2001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_open_across_the_cutover_is_discarded_not_resent() {
    let src = Server::start();
    let dst = Server::start();
    tenant_with_keys(&src, 1000).await;
    let opts = ConnectOptions::new(src.addr()).tenant("acme", "pw");
    let mut c = Client::connect(opts.clone()).await.unwrap();
    c.set("counter", "10").await.unwrap();
    let mut watcher = Client::connect(opts.clone()).await.unwrap();
    watcher.cmd(&["WATCH", "counter"]).await.unwrap();
    let mut piped = Client::connect(opts).await.unwrap();
    let id = migrate_to_live_sync(&src, &dst).await;

    // MULTI acknowledged and INCRs queued on the source...
    assert_eq!(value::display(&c.cmd(&["MULTI"]).await.unwrap()), "OK");
    for _ in 0..3 {
        assert_eq!(
            value::display(&c.cmd(&["INCR", "counter"]).await.unwrap()),
            "QUEUED"
        );
    }
    assert!(c.in_transaction());
    // ...then the tenant moves before EXEC.
    cutover(&src, &id).await;
    let e = c.cmd(&["EXEC"]).await.unwrap_err();
    assert!(e.is_transaction_discarded(), "{e:?}");
    let refusal = format!("MOVED tenant:acme {}", dst.addr());
    assert_eq!(e.server_message(), Some(refusal.as_str()));
    assert_eq!(
        e.to_string(),
        format!(
            "transaction discarded because the tenant moved to {} (server replied: {refusal}); \
             nothing of it ran; start it again (server {}, command EXEC)",
            dst.addr(),
            src.addr()
        )
    );
    assert!(!c.in_transaction());
    assert_eq!((c.addr(), c.redirects()), (dst.addr().as_str(), 1));

    // No INCR ran anywhere: the target has the value from before the transaction, and the next
    // command goes to the target and works there.
    let mut t = tenant_conn(&dst, "acme", "pw").await;
    assert_eq!(
        value::as_string(&ok(&mut t, &["GET", "counter"]).await).unwrap(),
        "10"
    );
    assert_eq!(c.incr("counter").await.unwrap(), 11);
    // Run again at the new home, the transaction works.
    c.cmd(&["MULTI"]).await.unwrap();
    c.cmd(&["INCR", "counter"]).await.unwrap();
    let r = c.cmd(&["EXEC"]).await.unwrap();
    assert_eq!(value::display(&r), "[12]");

    // A watch set before the cutover: the next command is refused, not followed.
    let e = watcher.cmd(&["GET", "counter"]).await.unwrap_err();
    assert!(e.is_transaction_discarded(), "{e:?}");
    assert_eq!(watcher.addr(), dst.addr());
    assert_eq!(watcher.get("counter").await.unwrap().as_deref(), Some("12"));

    // MULTI ... EXEC as one pipeline: the transaction's refused EXEC is not re-sent alone (the
    // target would answer `ERR EXEC without MULTI` and the INCRs would be lost); the GET after
    // it is re-sent at the target.
    let mut p = Pipeline::new();
    p.cmd(["MULTI"])
        .cmd(["INCR", "counter"])
        .cmd(["EXEC"])
        .cmd(["GET", "counter"]);
    let replies = piped.run(&p).await.unwrap();
    let e = replies[2].as_ref().unwrap_err();
    assert!(e.is_transaction_discarded(), "{e:?}");
    assert_eq!(
        value::display(replies[3].as_ref().unwrap()),
        "12",
        "the INCR in the discarded transaction did not run"
    );
    assert_eq!(piped.addr(), dst.addr());
}
