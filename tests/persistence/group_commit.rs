//! Under `appendfsync always` one fsync covers the writes of every connection that ran since the
//! last one (group commit), also once connections have queued for their tenant's keyspace lock.
//! A queue forms behind a holder of that lock (a snapshot's step, as here during a compaction, or
//! a long command). While the lock was handed over in arrival order (tokio's `Mutex`), such a
//! queue never drained under load, since each release went to a waiter that was not running
//! while every connection that became ready queued behind it: each fsync then covered one or two
//! batches, and the writers stayed at that rate until they disconnected (docs/benchmarks.md,
//! "always -P16 SET after a compaction", and "The keyspace lock no longer hands over").

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::common::{Server, resp_command};
use crate::util::*;

/// Writer connections, each sending pipelines of `PIPELINE` SETs, one pipeline at a time, all
/// served by one client thread as redis-benchmark does (a client thread per connection answers
/// each reply too late to keep the lock's queue from draining).
const WRITERS: usize = 50;
const PIPELINE: usize = 16;
/// Keys each writer cycles through.
const KEYS_PER_WRITER: u64 = 2000;
/// How long the compaction under the writers' load may take.
const COMPACTION_LIMIT: Duration = Duration::from_secs(8);
/// How long the writers are measured after the compaction ended.
const MEASURED: Duration = Duration::from_millis(1500);

fn fsyncs(c: &mut redis::Connection) -> u64 {
    info(c, "persistence")
        .get("aof_fsyncs")
        .and_then(|v| v.parse().ok())
        .expect("INFO persistence has aof_fsyncs")
}

/// The writers: `WRITERS` connections on one thread, each sending a pipeline of `PIPELINE` SETs
/// and reading its `+OK`s, until `stop` (or 20 s).
fn run_writers(addr: &str, secret: &str, acked: &Arc<AtomicU64>, stop: &Arc<AtomicBool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        let writers = (0..WRITERS).map(|w| {
            let (addr, secret) = (addr.to_string(), secret.to_string());
            let (acked, stop) = (acked.clone(), stop.clone());
            tokio::spawn(async move {
                let mut sock = tokio::net::TcpStream::connect(&addr)
                    .await
                    .expect("connect");
                sock.set_nodelay(true).expect("nodelay");
                let mut request = resp(&["AUTH", &secret]);
                let expected = b"+OK\r\n".repeat(PIPELINE);
                let mut replies = vec![0u8; expected.len()];
                sock.write_all(&request).await.expect("send AUTH");
                sock.read_exact(&mut replies[..5])
                    .await
                    .expect("AUTH reply");
                assert_eq!(&replies[..5], b"+OK\r\n");
                let mut n = 0u64;
                while !stop.load(Relaxed) && Instant::now() < deadline {
                    request.clear();
                    for _ in 0..PIPELINE {
                        request.extend(resp(&[
                            "SET",
                            &format!("k:{w}:{}", n % KEYS_PER_WRITER),
                            "v",
                        ]));
                        n += 1;
                    }
                    sock.write_all(&request).await.expect("send");
                    sock.read_exact(&mut replies).await.expect("replies");
                    assert_eq!(replies, expected, "{}", String::from_utf8_lossy(&replies));
                    acked.fetch_add(PIPELINE as u64, Relaxed);
                }
            })
        });
        for w in writers.collect::<Vec<_>>() {
            w.await.expect("writer");
        }
    });
}

fn resp(args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    resp_command(&args)
}

#[test]
fn writers_that_queued_behind_a_compaction_still_share_one_fsync() {
    let dir = data_dir();
    // One worker: the default on the 2-core machines this runs on (all cores but one), and the
    // case where every connection's batch and commit share one thread.
    let s = Server::start_in(dir.path(), &["--appendfsync", "always", "--threads", "1"]);
    let mut admin = s.conn();

    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers = {
        let (addr, secret) = (s.addr(), s.admin_secret().to_string());
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || run_writers(&addr, &secret, &acked, &stop))
    };
    // The writers fill their keys, then a compaction's snapshot walks them (its steps take the
    // keyspace lock: the writers queue behind them).
    wait_until("the writers' keys", Duration::from_secs(20), || {
        acked.load(Relaxed) >= 4 * KEYS_PER_WRITER * WRITERS as u64
    });
    // A BGREWRITEAOF is every tenant's snapshot, counted when it ends.
    let compactions = |c: &mut redis::Connection| {
        let i = info(c, "persistence");
        (i["snapshots"].clone(), i["compactions"].clone())
    };
    let before = compactions(&mut admin);
    ok(&mut admin, &["BGREWRITEAOF"]);
    // A snapshot of these 100,000 keys takes well under a second; in the convoy its steps,
    // which take the lock only when nobody waits for it, waited 50 ms each (12 s in one run).
    wait_until("the compaction", COMPACTION_LIMIT, || {
        compactions(&mut admin) != before
    });
    let (sets0, fsyncs0) = (acked.load(Relaxed), fsyncs(&mut admin));
    std::thread::sleep(MEASURED);
    let (sets1, fsyncs1) = (acked.load(Relaxed), fsyncs(&mut admin));
    stop.store(true, Relaxed);
    writers.join().expect("writers' thread");

    let (sets, syncs) = (sets1 - sets0, fsyncs1 - fsyncs0);
    assert!(
        syncs > 0,
        "{sets} SETs acknowledged without an fsync under always"
    );
    let per_fsync = sets as f64 / syncs as f64;
    eprintln!("after the compaction: {sets} SETs, {syncs} fsyncs ({per_fsync:.1} SETs each)");
    // With 50 connections in flight, a group commit covers several of their pipelines (about
    // 100-300 SETs here); the convoy gave 16-32, one or two pipelines.
    assert!(
        per_fsync >= 4.0 * PIPELINE as f64,
        "{sets} SETs took {syncs} fsyncs ({per_fsync:.1} SETs each) after a compaction: the \
         group commit covered only one or two pipelines"
    );
}
