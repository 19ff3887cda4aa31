//! The snapshot part of the persistence benchmark: fills a server with BENCH_KEYS string keys of
//! BENCH_VALUE bytes, measures the write latency of a paced write load (BENCH_RATE writes/s)
//! while idle, then again while a `BGSAVE` runs, and how long the BGSAVE took and how much
//! memory it added. The server is any RESP server: `scripts/bench-persistence.sh` runs it once
//! against `ferrite` and once against `redis-server`, started by the script with the same fsync
//! policy, and builds the table in `docs/benchmarks.md`. Not a test: it prints one JSON object
//! on stdout (progress on stderr).
//!
//! ```sh
//! BENCH_ADDR=127.0.0.1:6379 BENCH_PID=<server pid> cargo bench -p ferrite-server --bench persistence
//! ```
//!
//! Environment: BENCH_ADDR (host:port), BENCH_PID (the server's pid, for its RSS),
//! BENCH_PASSWORD (AUTH for BGSAVE/INFO; empty for none), BENCH_KEYS (1000000), BENCH_VALUE (100),
//! BENCH_RATE (20000), BENCH_IDLE_SECS (5), BENCH_FILL (1: fill first; 0: the keys are there),
//! BENCH_SNAPSHOTS (5: BGSAVEs in a row under one load), BENCH_PAUSE_MS (2000: between them),
//! BENCH_ROUNDS_OUT (a file: every round of the load from the first BGSAVE on, `<seconds since
//! the first BGSAVE was sent> <round trip ms>` a line, with each BGSAVE's window as a comment,
//! to see when in the snapshot the slow ones came).
//!
//! Several snapshots per run, because one is short (0.2 s for 1M keys: ~200 rounds, whose p99
//! is the second-slowest): the write p99 "during a snapshot" is taken over the rounds sent
//! while any of them ran, pooled; the duration reported is the median BGSAVE, the extra memory
//! the largest. The same rate, keys and method on both servers.
//!
//! The write latency is the round trip of each round of SETs a writer sends (every millisecond
//! it pipelines the SETs that are due, about BENCH_RATE/1000 of them): the same measure on both
//! servers. Extra memory is the server's peak RSS during the BGSAVE minus its RSS just before;
//! for redis-server the forked child's copied pages are not in the parent's RSS, so Redis's own
//! count of them (`rdb_last_cow_size` in INFO persistence) is reported next to it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrite_client::{ConnectOptions, Connection, value};

type Res<T> = Result<T, String>;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[bench-persistence] {}", msg.as_ref());
}

/// Nearest-rank percentile of unsorted samples (NaN when there are none).
fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

/// Resident memory of a process in bytes (0 if it cannot be read).
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

struct Opts {
    addr: String,
    password: String,
    pid: u32,
    keys: u64,
    value: usize,
    rate: u64,
    idle: Duration,
    fill: bool,
    snapshots: u64,
    pause: Duration,
}

async fn connect(o: &Opts) -> Res<Connection> {
    let mut opts = ConnectOptions::new(o.addr.clone())
        .resp2()
        .command_timeout(Duration::from_secs(300));
    if !o.password.is_empty() {
        opts = opts.password(o.password.clone());
    }
    Connection::connect(opts)
        .await
        .map_err(|e| format!("connect to {}: {e}", o.addr))
}

async fn info_persistence(c: &mut Connection) -> Res<HashMap<String, String>> {
    let f = c
        .cmd(&["INFO", "persistence"])
        .await
        .map_err(|e| format!("INFO: {e}"))?;
    let text = value::as_string(&f).map_err(|e| format!("INFO reply: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim_end().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn key(i: u64) -> Vec<u8> {
    format!("key:{i:010}").into_bytes()
}

fn value_of(len: usize, tag: u64) -> Vec<u8> {
    let mut v = format!("v{tag}:").into_bytes();
    v.resize(len.max(v.len()), b'x');
    v
}

/// Fills the keyspace over four connections, 1000 SETs per pipeline.
async fn fill(o: &Opts) -> Res<f64> {
    let started = Instant::now();
    let conns = 4u64;
    let mut tasks = Vec::new();
    for w in 0..conns {
        let mut c = connect(o).await?;
        let (keys, len) = (o.keys, o.value);
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < keys {
                let mut batch = Vec::with_capacity(1000);
                while i < keys && batch.len() < 1000 {
                    batch.push(vec![b"SET".to_vec(), key(i), value_of(len, i)]);
                    i += conns;
                }
                let replies = c.pipeline(&batch).await.map_err(|e| e.to_string())?;
                if let Some(Err(e)) = replies.into_iter().find(|r| r.is_err()) {
                    return Err(format!("fill: {e}"));
                }
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// One round of a writer: when it was sent (since the load started) and its round trip.
struct Round {
    at: f64,
    ms: f64,
}

/// What one writer did: its rounds and how many SETs it sent.
type WriterResult = Res<(Vec<Round>, u64)>;

/// A paced write load: `writers` connections, each pipelining the SETs that are due every
/// millisecond (to random existing keys), until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<WriterResult>>,
}

impl Load {
    async fn start(o: &Opts) -> Res<Load> {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let writers = o.rate.div_ceil(10_000).max(1);
        let mut tasks = Vec::new();
        for w in 0..writers {
            let mut c = connect(o).await?;
            let (rate, keys, len, stop) = (o.rate / writers, o.keys, o.value, stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (w + 1);
                let mut rounds = Vec::new();
                let mut sent = 0u64;
                let mut tick = tokio::time::interval(Duration::from_millis(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mine = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let due = (rate as f64 * mine.elapsed().as_secs_f64()) as u64;
                    // At most 100 ms of backlog at once: a stall shows as latency, not as a burst.
                    let n = due.saturating_sub(sent).min((rate / 10).max(1));
                    if n == 0 {
                        continue;
                    }
                    let batch: Vec<Vec<Vec<u8>>> = (0..n)
                        .map(|j| {
                            rng ^= rng >> 12;
                            rng ^= rng << 25;
                            rng ^= rng >> 27;
                            let i = rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % keys.max(1);
                            vec![b"SET".to_vec(), key(i), value_of(len, sent + j)]
                        })
                        .collect();
                    let at = started.elapsed().as_secs_f64();
                    let t = Instant::now();
                    let replies = c.pipeline(&batch).await.map_err(|e| e.to_string())?;
                    rounds.push(Round {
                        at,
                        ms: t.elapsed().as_secs_f64() * 1000.0,
                    });
                    if let Some(Err(e)) = replies.into_iter().find(|r| r.is_err()) {
                        return Err(format!("write: {e}"));
                    }
                    sent = due.max(sent + n);
                }
                Ok((rounds, sent))
            }));
        }
        Ok(Load {
            stop,
            started,
            tasks,
        })
    }

    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    async fn stop(self) -> Res<(Vec<Round>, u64, f64)> {
        self.stop.store(true, Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        let mut all = Vec::new();
        let mut sent = 0;
        for t in self.tasks {
            let (r, n) = t.await.map_err(|e| e.to_string())??;
            all.extend(r);
            sent += n;
        }
        Ok((all, sent, secs))
    }
}

fn latencies(rounds: &[Round], from: f64, to: f64) -> Vec<f64> {
    rounds
        .iter()
        .filter(|r| r.at >= from && r.at <= to)
        .map(|r| r.ms)
        .collect()
}

async fn run(o: &Opts) -> Res<String> {
    let mut admin = connect(o).await?;
    let mut out = Vec::<(String, String)>::new();
    let mut put = |k: &str, v: String| out.push((k.to_string(), v));
    if o.fill {
        log(format!("filling {} keys of {} bytes", o.keys, o.value));
        let secs = fill(o).await?;
        put("fill_secs", format!("{secs:.2}"));
    }
    let dbsize = admin
        .cmd(&["DBSIZE"])
        .await
        .ok()
        .and_then(|f| value::as_int(&f).ok())
        .unwrap_or(-1);
    put("keys", dbsize.to_string());
    // Let a save the fill may have triggered finish before measuring.
    wait_no_save(&mut admin, Duration::from_secs(300)).await?;

    log(format!("idle: {} writes/s for {:?}", o.rate, o.idle));
    let load = Load::start(o).await?;
    tokio::time::sleep(o.idle).await;
    let (rounds, sent, secs) = load.stop().await?;
    let idle = latencies(&rounds, 0.5, f64::MAX);
    put("idle_rate", format!("{:.0}", sent as f64 / secs));
    put("idle_p50_ms", format!("{:.3}", percentile(&idle, 50.0)));
    put("idle_p99_ms", format!("{:.3}", percentile(&idle, 99.0)));
    log(format!(
        "idle: p50 {:.3} ms, p99 {:.3} ms",
        percentile(&idle, 50.0),
        percentile(&idle, 99.0)
    ));

    log(format!(
        "{} BGSAVEs under the same load, {:?} apart",
        o.snapshots, o.pause
    ));
    let load = Load::start(o).await?;
    // The wall clock at the load's time origin: a round's `at` plus this is its wall time (for
    // lining BENCH_ROUNDS_OUT up with traces of the machine).
    let unix_origin = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
        - load.now();
    let mut windows = Vec::new();
    let mut took = Vec::new();
    let mut extra = Vec::new();
    let mut cow = Vec::new();
    let mut before_first = 0;
    let mut statuses = Vec::new();
    for n in 0..o.snapshots {
        tokio::time::sleep(if n == 0 {
            Duration::from_millis(500)
        } else {
            o.pause
        })
        .await;
        let before = rss(o.pid);
        if n == 0 {
            before_first = before;
        }
        let (t0, t1, secs, peak, status) = bgsave(o, &mut admin, &load, before).await?;
        log(format!(
            "BGSAVE {}: {secs:.3} s, +{:.1} MB",
            n + 1,
            peak.saturating_sub(before) as f64 / 1e6
        ));
        windows.push((t0, t1));
        took.push(secs);
        extra.push(peak.saturating_sub(before));
        if let Some(c) = status
            .get("rdb_last_cow_size")
            .and_then(|c| c.parse::<f64>().ok())
        {
            cow.push(c);
        }
        statuses.push(
            status
                .get("rdb_last_bgsave_status")
                .cloned()
                .unwrap_or_default(),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (rounds, sent, secs) = load.stop().await?;
    // The rounds sent while any of the snapshots ran, pooled: one 0.2 s snapshot holds only
    // about 200 rounds, so its p99 is its 2nd-slowest round; several give the p99 some weight.
    let during: Vec<f64> = rounds
        .iter()
        .filter(|r| windows.iter().any(|(t0, t1)| r.at >= *t0 && r.at <= *t1))
        .map(|r| r.ms)
        .collect();
    if let Ok(path) = std::env::var("BENCH_ROUNDS_OUT") {
        let t0 = windows.first().map(|w| w.0).unwrap_or(0.0);
        let mut lines = format!("# first bgsave sent at 0 (unix {:.6})\n", unix_origin + t0);
        for (n, (a, b)) in windows.iter().enumerate() {
            lines.push_str(&format!(
                "# bgsave {} from {:.6} to {:.6}\n",
                n + 1,
                a - t0,
                b - t0
            ));
        }
        for r in rounds.iter().filter(|r| r.at >= t0 - 0.1) {
            lines.push_str(&format!("{:.6} {:.3}\n", r.at - t0, r.ms));
        }
        std::fs::write(&path, lines).map_err(|e| format!("{path}: {e}"))?;
    }
    put("snapshots", o.snapshots.to_string());
    put("snapshot_secs", format!("{:.3}", percentile(&took, 50.0)));
    put(
        "snapshot_secs_max",
        format!("{:.3}", percentile(&took, 100.0)),
    );
    let status = if statuses.iter().all(|s| s == "ok") {
        "ok".to_string()
    } else {
        statuses.join("/")
    };
    put("snapshot_status", status);
    put("rss_before_mb", format!("{:.1}", before_first as f64 / 1e6));
    put(
        "rss_extra_mb",
        format!(
            "{:.1}",
            extra.iter().copied().max().unwrap_or(0) as f64 / 1e6
        ),
    );
    if !cow.is_empty() {
        put("cow_mb", format!("{:.1}", percentile(&cow, 100.0) / 1e6));
    }
    put("snapshot_rate", format!("{:.0}", sent as f64 / secs));
    put("snapshot_rounds", during.len().to_string());
    put(
        "snapshot_p50_ms",
        format!("{:.3}", percentile(&during, 50.0)),
    );
    put(
        "snapshot_p99_ms",
        format!("{:.3}", percentile(&during, 99.0)),
    );
    put(
        "snapshot_max_ms",
        format!("{:.3}", percentile(&during, 100.0)),
    );
    let body: Vec<String> = out
        .iter()
        .map(|(k, v)| match v.parse::<f64>() {
            Ok(n) if n.is_finite() => format!("\"{k}\":{v}"),
            _ => format!("\"{k}\":\"{v}\""),
        })
        .collect();
    Ok(format!("{{{}}}", body.join(",")))
}

/// Runs one BGSAVE while `load` runs and waits for it to end; returns when it was sent and
/// when it was seen done (on the load's clock), how long it took, the peak RSS seen meanwhile
/// (at least `before`), and INFO persistence after it.
async fn bgsave(
    o: &Opts,
    admin: &mut Connection,
    load: &Load,
    before: u64,
) -> Res<(f64, f64, f64, u64, HashMap<String, String>)> {
    // Redis may be rewriting its AOF (its own trigger) and then refuses a BGSAVE: wait for it.
    wait_no_save(admin, Duration::from_secs(300)).await?;
    let last = info_persistence(admin).await?;
    let done_marker = |i: &HashMap<String, String>| {
        (
            i.get("rdb_saves").cloned(),
            i.get("rdb_last_save_time").cloned(),
        )
    };
    let last = done_marker(&last);
    let t0 = load.now();
    let started = Instant::now();
    let reply = admin
        .cmd(&["BGSAVE"])
        .await
        .map_err(|e| format!("BGSAVE: {e}"))?;
    let reply = value::as_string(&reply).unwrap_or_default();
    let mut peak = before;
    let status = loop {
        peak = peak.max(rss(o.pid));
        let i = info_persistence(admin).await?;
        let running = i.get("rdb_bgsave_in_progress").map(String::as_str) == Some("1");
        // The save count where the server has it (`rdb_saves`), else LASTSAVE (a second's
        // resolution: the pause between snapshots is longer).
        let (saves, time) = done_marker(&i);
        let done = match (&saves, &last.0) {
            (Some(now), Some(then)) => now != then,
            _ => time != last.1,
        };
        if !running && done {
            break i;
        }
        if !running && started.elapsed() > Duration::from_secs(5) {
            return Err(format!("BGSAVE ({reply}) did not run: {i:?}"));
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err("BGSAVE still running after 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    Ok((
        t0,
        load.now(),
        started.elapsed().as_secs_f64(),
        peak,
        status,
    ))
}

/// Waits until no BGSAVE / rewrite is running.
async fn wait_no_save(c: &mut Connection, limit: Duration) -> Res<()> {
    let started = Instant::now();
    loop {
        let i = info_persistence(c).await?;
        let busy = |k: &str| i.get(k).map(String::as_str) == Some("1");
        if !busy("rdb_bgsave_in_progress") && !busy("aof_rewrite_in_progress") {
            return Ok(());
        }
        if started.elapsed() > limit {
            return Err("a save is still running".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else is expected.
    let o = Opts {
        addr: std::env::var("BENCH_ADDR").unwrap_or_else(|_| "127.0.0.1:6379".into()),
        password: std::env::var("BENCH_PASSWORD").unwrap_or_default(),
        pid: env_u64("BENCH_PID", 0) as u32,
        keys: env_u64("BENCH_KEYS", 1_000_000),
        value: env_u64("BENCH_VALUE", 100) as usize,
        rate: env_u64("BENCH_RATE", 20_000),
        idle: Duration::from_secs(env_u64("BENCH_IDLE_SECS", 5)),
        fill: env_u64("BENCH_FILL", 1) == 1,
        snapshots: env_u64("BENCH_SNAPSHOTS", 5).max(1),
        pause: Duration::from_millis(env_u64("BENCH_PAUSE_MS", 2000)),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log(format!("runtime: {e}"));
            std::process::exit(1);
        }
    };
    match rt.block_on(run(&o)) {
        Ok(json) => println!("{json}"),
        Err(e) => {
            log(format!("FAILED: {e}"));
            std::process::exit(1);
        }
    }
}
