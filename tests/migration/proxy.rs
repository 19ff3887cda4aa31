//! A small TCP proxy between the source and the target, to inject real network faults: cut every
//! connection, refuse new ones, stall (a silent partition: nothing moves, nothing closes), add
//! latency, limit bandwidth. Counts the bytes it forwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

struct Controls {
    refuse: AtomicBool,
    /// Nothing is forwarded (bytes wait in the kernel's buffers, connections stay open).
    stall: AtomicBool,
    latency_ms: AtomicU64,
    /// Bytes per second per direction per connection; 0 = unlimited.
    bandwidth: AtomicU64,
    /// Incremented by `cut()`: connections opened before it close.
    generation: watch::Sender<u64>,
    forwarded: AtomicU64,
    connections: AtomicU64,
}

/// A running proxy (stops when dropped).
pub struct Proxy {
    pub addr: String,
    ctl: Arc<Controls>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.ctl.generation.send_modify(|g| *g += 1);
    }
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr").to_string();
        let (generation, _) = watch::channel(0u64);
        let ctl = Arc::new(Controls {
            refuse: AtomicBool::new(false),
            stall: AtomicBool::new(false),
            latency_ms: AtomicU64::new(0),
            bandwidth: AtomicU64::new(0),
            generation,
            forwarded: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });
        let c = ctl.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if c.refuse.load(Relaxed) {
                    drop(client);
                    continue;
                }
                let c = c.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    // A stalled network completes no new connection either.
                    while c.stall.load(Relaxed) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    c.connections.fetch_add(1, Relaxed);
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let my_gen = *c.generation.borrow();
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pump(cr, sw, c.clone(), my_gen));
                    tokio::spawn(pump(sr, cw, c.clone(), my_gen));
                });
            }
        });
        Proxy { addr, ctl, task }
    }

    /// Closes every connection open now (new ones are accepted unless `refuse` is on).
    pub fn cut(&self) {
        self.ctl.generation.send_modify(|g| *g += 1);
    }

    pub fn refuse(&self, on: bool) {
        self.ctl.refuse.store(on, Relaxed);
    }

    /// A silent partition: nothing is forwarded and nothing is closed until it is lifted.
    pub fn stall(&self, on: bool) {
        self.ctl.stall.store(on, Relaxed);
    }

    pub fn latency(&self, d: Duration) {
        self.ctl.latency_ms.store(d.as_millis() as u64, Relaxed);
    }

    pub fn bandwidth(&self, bytes_per_sec: u64) {
        self.ctl.bandwidth.store(bytes_per_sec, Relaxed);
    }

    pub fn forwarded(&self) -> u64 {
        self.ctl.forwarded.load(Relaxed)
    }

    pub fn connections(&self) -> u64 {
        self.ctl.connections.load(Relaxed)
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    c: Arc<Controls>,
    my_gen: u64,
) {
    let mut gen_rx = c.generation.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if *gen_rx.borrow() != my_gen {
            return;
        }
        if c.stall.load(Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = gen_rx.changed() => return,
        };
        let latency = c.latency_ms.load(Relaxed);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        let bw = c.bandwidth.load(Relaxed);
        if bw > 0 {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / bw as f64)).await;
        }
        if *gen_rx.borrow() != my_gen {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        c.forwarded.fetch_add(n as u64, Relaxed);
    }
}
