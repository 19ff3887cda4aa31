//! The `migration_writer` example (compiled into this test from `examples/`) runs through a
//! real cutover with zero failed operations, and what it wrote is on the target.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferrite_client::{Client, ConnectOptions};

use crate::common::Server;
use crate::writer::{WriterConfig, run_writer};
use crate::{LONG, cutover, migrate_to_live_sync, tenant_with_keys};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_example_writer_sees_no_failure_through_a_cutover() {
    let src = Server::start();
    let dst = Server::start();
    tenant_with_keys(&src, 3000).await;
    let cfg = WriterConfig {
        // A dead address first: the writer moves on to the next one.
        addrs: vec!["127.0.0.1:1".into(), src.addr()],
        tenant: "acme".into(),
        password: "pw".into(),
        keys: 200,
        duration: Some(LONG),
        report_every: Duration::from_millis(100),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (cfg, stop) = (cfg.clone(), stop.clone());
        tokio::spawn(async move {
            let mut lines = Vec::new();
            let report = run_writer(&cfg, &stop, |r| lines.push(r.line())).await;
            (report, lines)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = migrate_to_live_sync(&src, &dst).await;
    cutover(&src, &id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (report, lines) = writer.await.unwrap();
    let report = report.expect("writer started");

    assert_eq!(report.failed, 0, "last error: {:?}", report.last_error);
    assert_eq!(report.mismatches, 0, "last error: {:?}", report.last_error);
    assert!(
        report.writes > 200 && report.reads == report.writes,
        "{}",
        report.line()
    );
    assert_eq!(report.redirects, 1, "{}", report.line());
    assert_eq!(report.addr, dst.addr());
    // The progress lines show the switch from the source to the target.
    let on = |addr: &str| {
        lines
            .iter()
            .any(|l| l.ends_with(&format!("connected to {addr}")))
    };
    assert!(on(&src.addr()) && on(&dst.addr()), "{lines:#?}");

    let mut t = Client::connect(ConnectOptions::new(dst.addr()).tenant("acme", "pw"))
        .await
        .unwrap();
    assert_eq!(report.written.len(), 200);
    for (k, v) in &report.written {
        assert_eq!(t.get(k).await.unwrap().as_ref(), Some(v), "{k}");
    }
    assert_eq!(t.dbsize().await.unwrap(), 3200);
}
